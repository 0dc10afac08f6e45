"""The CUDA backend on a machine without a GPU: tests/cuda/gpu runs under Numba's CUDA simulator
in a process of its own (the simulator is chosen when numba loads), recording each kernel
launch's argument types; then every kernel is compiled, with those types, to PTX for a Hopper
GPU (sm_90), so that a kernel the simulator accepts but a GPU's compiler would not fails here.
Both run in the background (background.py), started as soon as the tests are collected."""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from ..conftest import ROOT

HERE = os.path.dirname(os.path.abspath(__file__))
NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
pytestmark = pytest.mark.skipif(not NUMBA_CUDA, reason="numba-cuda is not installed")


_run: dict = {}  # the background run: its process, its folder


def start_in_background():
    """Start the background run (background.py: the simulated tests, then the PTX compilation;
    about 7 minutes on one core): tests/conftest.py calls this once the session's tests are
    collected, where they include this module's, so that it runs on another core while the
    others run."""
    if _run or not NUMBA_CUDA:
        return
    _run["folder"] = folder = tempfile.mkdtemp(prefix="netc-simulated-")
    with open(os.path.join(folder, "log"), "w") as log:  # (its own output, and a traceback)
        # stdin: a pipe this process keeps open, so that the run ends itself when this process
        # ends in a way that skips stop_in_background (SIGTERM, SIGKILL): its own session (see
        # stop) takes it out of this process's group, which such a signal may have been sent to
        _run["proc"] = subprocess.Popen([sys.executable, os.path.join(HERE, "background.py"), folder],
                                        cwd=ROOT, stdin=subprocess.PIPE, stdout=log,
                                        stderr=subprocess.STDOUT,
                                        start_new_session=hasattr(os, "killpg"))


def stop_in_background():
    """End the background run if it is still going (the session ended first), and remove its
    folder (conftest, at the session's end)."""
    proc = _run.pop("proc", None)
    if proc is not None:
        if proc.poll() is None:
            if hasattr(os, "killpg"):  # its process group: the simulated pytest it started too
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait()
        proc.stdin.close()
    shutil.rmtree(_run.pop("folder", ""), ignore_errors=True)


@pytest.fixture(scope="module")
def background():
    """The background run's folder, once it has ended."""
    start_in_background()  # (where conftest has not)
    _run["proc"].wait()
    return _run["folder"]


def _read(folder, name):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


def test_the_cuda_backend_under_the_simulator(background):
    rc = _read(background, "rc")
    assert rc == "0", (f"exit status {rc or 'none'} (background.py's: {_run['proc'].returncode})\n"
                       + _read(background, "out")[-8000:] + _read(background, "err")[-3000:]
                       + _read(background, "log")[-3000:])


def test_every_kernel_compiles_for_a_real_gpu(background):
    result = json.loads(_read(background, "ptx.json") or '{"error": "no ptx.json"}')
    assert "error" not in result, result.get("error") + "\n" + _read(background, "log")[-3000:]
    if not result["nvvm"]:
        pytest.skip("NVVM is not installed (pip install nvidia-nvvm)")
    assert result["kernels"] >= 40  # the simulated run launched them all
    assert not result["missing"], "no such kernels: " + ", ".join(result["missing"])
    assert not result["failed"], "\n".join(result["failed"])
    assert result["compiled"] >= result["launches"]
