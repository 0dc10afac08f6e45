"""netc train --distributed: K = 2 MPI ranks train what one process trains at the same global
batch (to float32 rounding), rank 0 alone writes, and the errors say what to do.

The MPI runs need mpi4py and an mpiexec (pip install '.[mpi]' brings both); without them those
tests skip. Each rank runs its kernels on one thread, as the CI machine has two cores."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from netc.runtime import distributed

# no BN, no dropout: nothing that depends on how the batch is split. 1249 training samples
# (val_split 0.105) in batches of 40 end with a batch of 9: shards of 4 and 5, unequal
SPEC = """network Tiny
input 8x8x1
CONV 3x3 4 pad=same act=relu - POOL max 2x2/2 - FC 16 act=relu - OUT 10 softmax
train optimizer=adam lr=0.01 batch=40 epochs=2 data=digits val_split=0.105
"""
# each array of the 2-rank run within this fraction of its largest magnitude of the 1-process
# run's, after 2 epochs (64 Adam steps): the shards' gradients are summed in another order than
# one batch's, which moves the float32 weights by a few units in the last place (measured: at
# most 2e-7 of the largest weight)
TOLERANCE = 1e-5
# (the OMPI/PRTE settings let an Open MPI mpiexec, if that is the one found, run as root and
# start more ranks than cores; MPICH's needs none)
ENV = {**os.environ, "NUMBA_NUM_THREADS": "1", "NETC_NUM_THREADS": "1",
       "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "OMPI_MCA_rmaps_base_oversubscribe": "1", "PRTE_MCA_rmaps_default_mapping_policy":
       ":oversubscribe",
       "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR",
                                         os.path.join(os.path.dirname(__file__), "..", "..",
                                                      ".numba_cache"))}


def _mpiexec():
    """The mpiexec beside this Python (the mpich wheel's), else one on PATH; None without
    mpi4py or an mpiexec."""
    if importlib.util.find_spec("mpi4py") is None:
        return None
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="needs mpi4py and mpiexec: "
                               "pip install '.[mpi]'")


def netc(args, cwd, ranks=None, timeout=300):
    """`netc ARGS` in a subprocess, under `mpiexec -n ranks` where given."""
    cmd = [sys.executable, "-m", "netc", *args]
    if ranks:
        cmd = [MPIEXEC, "-n", str(ranks), *cmd]
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.net"
    path.write_text(SPEC)
    return str(path)


def weights(folder):
    with np.load(os.path.join(folder, "last.npz")) as f:
        return {k: f[k] for k in f.files if f[k].dtype.kind == "f"}


def assert_same_run(one, two):
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys()
    for k in a:
        scale = max(float(np.abs(a[k]).max()), 1e-30)
        assert np.abs(a[k] - b[k]).max() <= TOLERANCE * scale, k
    ra, rb = (json.load(open(os.path.join(f, "result.json"))) for f in (one, two))
    assert rb["ranks"] == 2 and rb["epochs"] == ra["epochs"]
    assert rb["test_loss"] == pytest.approx(ra["test_loss"], rel=TOLERANCE)
    assert rb["test_acc"] == pytest.approx(ra["test_acc"], abs=1 / ra["test_samples"])


@needs_mpi
@pytest.mark.parametrize("extra", [[], ["--optimizer", "lbfgs", "--lr", "1", "--epochs", "3"]],
                         ids=["adam", "lbfgs"])
def test_two_ranks_train_what_one_process_trains(spec, tmp_path, extra):
    single = netc(["train", spec, "--out", "one", "--quiet", *extra], tmp_path)
    assert single.returncode == 0, single.stderr
    run = netc(["train", spec, "--out", "two", "--quiet", "--distributed", *extra], tmp_path, 2)
    assert run.returncode == 0, run.stderr
    assert_same_run(str(tmp_path / "one"), str(tmp_path / "two"))
    # rank 0 alone prints and writes: one set of lines, one run folder
    assert run.stdout.count("epoch 1/") == 1 and "on 2 ranks" in run.stdout
    assert sorted(os.listdir(tmp_path)) == ["one", "tiny.net", "two"]
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))


@needs_mpi
def test_resume_on_the_same_ranks(spec, tmp_path):
    whole = netc(["train", spec, "--out", "whole", "--quiet", "--distributed"], tmp_path, 2)
    assert whole.returncode == 0, whole.stderr
    first = netc(["train", spec, "--out", "part", "--epochs", "1", "--quiet", "--distributed"],
                 tmp_path, 2)
    assert first.returncode == 0, first.stderr
    more = netc(["train", spec, "--resume", "part", "--epochs", "2", "--quiet", "--distributed"],
                tmp_path, 2)
    assert more.returncode == 0, more.stderr
    a, b = weights(str(tmp_path / "whole")), weights(str(tmp_path / "part"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    alone = netc(["train", spec, "--resume", "part", "--epochs", "3", "--quiet"], tmp_path)
    assert alone.returncode == 2
    assert "trained on 2 rank(s), and this resume runs on 1" in alone.stderr
    assert "mpiexec -n 2 netc train SPEC --resume part --distributed" in alone.stderr


@needs_mpi
def test_ranks_that_do_not_divide_the_batch(spec, tmp_path):
    run = netc(["train", spec, "--batch", "33", "--quiet", "--distributed"], tmp_path, 2)
    assert run.returncode == 2
    assert run.stderr.count("error: --distributed over 2 ranks") == 1  # rank 0 alone says it
    assert "2 does not divide 33" in run.stderr and "--batch 32 or --batch 34" in run.stderr
    assert "Traceback" not in run.stderr and os.listdir(tmp_path) == ["tiny.net"]


@needs_mpi
def test_an_mpi_launch_without_distributed(spec, tmp_path):
    run = netc(["train", spec, "--quiet"], tmp_path, 2)
    assert run.returncode == 2
    assert run.stderr.count("one of 2 processes an MPI launcher started") == 1
    assert "add --distributed" in run.stderr and os.listdir(tmp_path) == ["tiny.net"]


@needs_mpi
def test_a_launcher_of_another_mpi(spec, tmp_path, monkeypatch):
    # what a process started by another MPI's mpiexec sees: its launcher's size, a world of 1
    monkeypatch.setitem(ENV, "OMPI_COMM_WORLD_SIZE", "2")
    run = netc(["train", spec, "--quiet", "--distributed"], tmp_path)
    assert run.returncode == 2
    assert "the launcher started 2 processes, and MPI sees 1" in run.stderr
    assert "Traceback" not in run.stderr and os.listdir(tmp_path) == ["tiny.net"]


def test_distributed_without_mpi4py(spec, tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from netc.cli import main\n"
            f"sys.exit(main(['train', {spec!r}, '--quiet', '--distributed']))")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "pip install 'netc[mpi]'" in run.stderr
    assert "mpiexec -n 2 netc train SPEC --distributed" in run.stderr
    assert "Traceback" not in run.stderr and os.listdir(tmp_path) == ["tiny.net"]


class Ranks(distributed.Solo):
    def __init__(self, size):
        self.size = size


@pytest.mark.parametrize("size, batch, fits", [(3, 50, "--batch 48 or --batch 51"),
                                               (4, 2, "--batch 4;")])
def test_the_batch_sizes_that_fit(size, batch, fits):
    with pytest.raises(distributed.NetcError) as e:
        distributed.check(Ranks(size), {"batch": batch, "optimizer": "sgd"}, ("lbfgs",))
    assert f"{size} does not divide {batch}" in e.value.message and fits in e.value.hint
    distributed.check(Ranks(size), {"batch": batch, "optimizer": "lbfgs"}, ("lbfgs",))
    with pytest.raises(distributed.NetcError, match="Levenberg"):
        distributed.check(Ranks(2), {"batch": 4, "optimizer": "lm"}, ("lm",))
