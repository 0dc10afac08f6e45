"""Nothing lost, nothing silent (issue 18, the runtime's side): the run folder's lock, NaN/Inf
weights and divergence, concurrent use of a Model, damaged checkpoints and run folders, a full
disk, the memory a run needs, misuse of the optimizers."""
import errno
import io
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import netc
from netc import DataError, NetcError, NumericsError
from netc.runtime import files, runs, trainer, training

SPEC = """network Tiny
input 8x8x1
CONV 3x3 4 pad=same act=relu - POOL max 2x2/2 - FC 16 act=relu - OUT 10 softmax
train optimizer=adam lr=0.01 batch=64 epochs=1 data=digits seed=1
"""
BN_SPEC = "input 8x8x1\nFC 8 - BN - OUT 10 softmax\ntrain data=digits batch=64 epochs=1\n"


def quiet(folder, spec=SPEC, resume=False, **overrides):
    return training.train(netc.compile(spec), overrides, None if resume else str(folder),
                         resume=str(folder) if resume else None, progress=False,
                         stdout=io.StringIO())


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished one-epoch run (its folder is only read)."""
    return quiet(tmp_path_factory.mktemp("done") / "run")[1]


def damaged(src, dst, **changes):
    """A copy of checkpoint src with some arrays replaced (None: removed), written with NumPy."""
    arrays = files.read_npz(src)
    for k, v in changes.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    np.savez(dst, **arrays)
    return str(dst)


# ---- the run folder's lock -----------------------------------------------------------------------
@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of a run folder (as a netc run writing into it does)."""
    folder = tmp_path / "held"
    folder.mkdir()
    code = ("import fcntl, os, sys\n"
            f"fd = os.open({str(folder / runs.LOCK)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, str(os.getpid()).encode())\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    yield folder, p.pid
    p.stdin.close()
    p.wait(10)


def test_a_folder_written_by_another_process_is_refused(holder, done, tmp_path):
    folder, pid = holder
    with pytest.raises(NetcError, match=f"being written by another netc process \\(pid {pid}\\)"):
        quiet(folder)
    for name in ("config.json", "last.npz"):  # a run folder: --resume is refused the same way
        os.link(os.path.join(done, name), folder / name)
    with pytest.raises(NetcError, match=f"--resume: .* \\(pid {pid}\\)") as e:
        quiet(folder, resume=True)
    assert f"kill {pid}" in e.value.hint
    with pytest.raises(NetcError, match=f"pid {pid}"):
        training.cross_validate(netc.compile(SPEC), {}, 2, str(folder), False, io.StringIO())
    with pytest.raises(NetcError, match=f"pid {pid}"):
        training.bagging(netc.compile(SPEC), {}, 2, str(folder), False, io.StringIO())


def test_the_lock_is_held_during_the_run_and_let_go_after(tmp_path):
    folder = tmp_path / "run"
    seen = []
    original = trainer.Trainer.run_epoch

    def look(self):  # a second claim of the folder while this run writes into it
        with pytest.raises(NetcError, match=f"pid {os.getpid()}"):
            with runs.claim(str(folder), resume=True):
                pass
        seen.append(True)
        return original(self)
    trainer.Trainer.run_epoch = look
    try:
        quiet(folder)
    finally:
        trainer.Trainer.run_epoch = original
    assert seen and not os.path.exists(folder / runs.LOCK)
    quiet(folder, resume=True, epochs=2)  # free again


# ---- NaN and Inf weights, divergence -------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_checkpoints_with_nan_or_inf_are_refused_on_load(done, tmp_path, bad):
    w = files.read_npz(os.path.join(done, "last.npz"))["conv1.weight"].copy()
    w[0, 0, 1, 1] = bad
    path = damaged(os.path.join(done, "last.npz"), tmp_path / "bad.npz", **{"conv1.weight": w})
    with pytest.raises(DataError, match=r"conv1\.weight holds NaN or Inf \(1 of 36 values\)"):
        netc.Model.load(path)
    with pytest.raises(DataError, match=r"conv1\.weight holds NaN or Inf"):
        quiet(tmp_path / "transfer", init_from=path)


def test_resume_refuses_a_last_npz_with_nan_optimizer_state(done, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("config.json", "metrics.csv"):
        os.link(os.path.join(done, name), folder / name)
    arrays = files.read_npz(os.path.join(done, "last.npz"))
    v = arrays["opt::conv1.weight::v"].copy()
    v[0] = np.inf
    damaged(os.path.join(done, "last.npz"), folder / "last.npz", **{"opt::conv1.weight::v": v})
    with pytest.raises(DataError, match=r"optimizer state conv1\.weight::v holds NaN or Inf"):
        quiet(folder, resume=True, epochs=2)


def test_a_weight_turned_nan_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    net = netc.compile(SPEC)
    folder = runs.subfolder(str(tmp_path), "run")
    t = trainer.Trainer(net, training.resolve(net, {"epochs": 2}), folder, False, out=io.StringIO())
    step, calls = t.opt.step, []

    def poison(grads):  # an update that leaves one NaN in fc1 (a ReLU would hide it downstream)
        step(grads)
        calls.append(1)
        if len(calls) == 25:  # in the second epoch (20 steps an epoch)
            t.model.params["fc1.weight"][3, 5] = np.nan
    t.opt.step = poison
    with pytest.raises(NumericsError, match=r"epoch 2, step 5: the weights of layer fc1 became "
                                            r"NaN or Inf") as e:
        t.run()
    assert "lower the learning rate" in e.value.hint and "last.npz" in e.value.hint
    kept = netc.Model.load(os.path.join(folder, "last.npz"))  # epoch 1's, loads: finite
    assert np.isfinite(kept.params["fc1.weight"]).all()


def test_nan_in_the_first_epoch_says_no_checkpoint_exists(tmp_path):
    net = netc.compile(SPEC)
    t = trainer.Trainer(net, training.resolve(net, {}), runs.subfolder(str(tmp_path), "r"), False,
                        out=io.StringIO())
    loss_and_grads = t.model.loss_and_grads

    def nan_loss(*args, **kw):
        loss, grads = loss_and_grads(*args, **kw)
        grads["conv1.weight"][0] = np.inf
        return float("nan"), grads
    t.model.loss_and_grads = nan_loss
    with pytest.raises(NumericsError, match="epoch 1, step 1: the loss became nan; the gradients "
                                            "of layer conv1 blew up") as e:
        t.run()
    assert "no checkpoint was written" in e.value.hint and "is kept" not in e.value.hint


def test_divergence_stops_the_run_and_no_checkpoint_holds_inf(tmp_path):
    with pytest.raises(NumericsError, match="training diverged") as e:
        quiet(tmp_path / "run", lr=1e6, epochs=3)
    assert "lower the learning rate (lr=1e+06)" in e.value.hint
    for name in os.listdir(tmp_path / "run"):
        if name.endswith(".npz"):
            netc.Model.load(str(tmp_path / "run" / name))  # finite, or refused


def test_save_never_writes_nan_over_a_good_file(tmp_path):
    model = netc.Model(SPEC)
    path = model.save(str(tmp_path / "m.npz"))
    before = open(path, "rb").read()
    model.params["out1.bias"][2] = np.nan
    with pytest.raises(NumericsError, match=r"not writing .*m\.npz: out1\.bias holds NaN"):
        model.save(path)
    model.params["out1.bias"][2] = 0
    with pytest.raises(NumericsError, match="opt::w::v holds NaN"):
        model.save(path, {"opt::w::v": np.array([np.inf])})
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["m.npz"]


def test_optimizer_state_blown_up_stops_at_the_checkpoint(tmp_path):
    net = netc.compile(SPEC)
    t = trainer.Trainer(net, training.resolve(net, {}), runs.subfolder(str(tmp_path), "r"), False,
                        out=io.StringIO())
    step = t.opt.step

    def overflow(grads):
        step(grads)
        t.opt.state["fc1.weight"]["v"][0, 0] = np.inf
    t.opt.step = overflow
    with pytest.raises(NumericsError, match=r"epoch 1: not writing .*best\.npz: "
                                            r"opt::fc1\.weight::v holds NaN or Inf"):
        t.run()


# ---- one Model, two threads ----------------------------------------------------------------------
def test_a_model_used_from_two_threads_raises():
    model = netc.Model(SPEC)
    x = np.zeros((4, 1, 8, 8), np.float32)
    impl = model._impls["conv1"]
    inside, release = threading.Event(), threading.Event()
    forward = impl.forward

    def slow(*args):
        inside.set()
        release.wait(10)
        return forward(*args)
    impl.forward = slow  # (the implementation is shared: put back below whatever happens)
    worker = threading.Thread(target=model.forward, args=(x,))
    worker.start()
    try:
        assert inside.wait(10)
        for call in (lambda: model.forward(x), lambda: model.loss_and_grads(x, [0, 1, 2, 3]),
                     lambda: model.evaluate(x, [0, 1, 2, 3])):
            with pytest.raises(NetcError, match="already running in another thread"):
                call()
    finally:
        release.set()
        worker.join()
        del impl.forward
    assert model.forward(x).shape == (4, 10)  # free again


# ---- damaged checkpoints and run folders ---------------------------------------------------------
def test_damaged_checkpoints_are_clean_errors(done, tmp_path):
    last = os.path.join(done, "last.npz")
    with pytest.raises(DataError, match=r"conv1\.bias: expected real numbers; received values of "
                                        r"type <U1"):
        netc.Model.load(damaged(last, tmp_path / "s.npz", **{"conv1.bias": np.array(list("abcd"))}))
    with pytest.raises(DataError, match="expected real numbers; received complex"):
        netc.Model.load(damaged(last, tmp_path / "c.npz",
                                **{"conv1.bias": np.zeros(4, complex)}))
    model = netc.Model.load(damaged(last, tmp_path / "d.npz", __netc_dtype__=None))
    assert model.dtype == np.float32  # no dtype entry: the weights' own
    with pytest.raises(DataError, match="__netc_hash__ is damaged"):
        netc.Model.load(damaged(last, tmp_path / "h.npz", __netc_hash__=np.zeros(3)))
    open(tmp_path / "t.npz", "w").write("hello\n")
    with pytest.raises(DataError) as e:
        netc.Model.load(str(tmp_path / "t.npz"))
    assert "not an .npz archive" in e.value.message and "pickle" not in str(e.value)


def test_resume_from_a_model_save_checkpoint_says_so(done, tmp_path):
    folder = tmp_path / "saved"
    folder.mkdir()
    os.link(os.path.join(done, "config.json"), folder / "config.json")
    netc.Model.load(os.path.join(done, "last.npz")).save(str(folder / "last.npz"))
    with pytest.raises(NetcError, match="holds weights but no training state") as e:
        quiet(folder, resume=True)
    assert f"--init-from {folder}/last.npz" in e.value.hint


@pytest.mark.parametrize("text,match", [
    ("{\"settings\": {\"epochs\": 2", "cannot read .*config.json"),
    ("[1, 2]", "config.json has no settings"),
    ("{\"settings\": {\"epochs\": 2}}", "settings lack data, lr"),
    ("{\"settings\": {\"data\": \"digits\", \"lr\": \"fast\"}}", "`lr` must be"),
])
def test_resume_with_a_damaged_config_is_a_clean_error(tmp_path, text, match):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(NetcError, match=match):
        quiet(tmp_path, resume=True)


def test_a_garbage_row_in_metrics_is_skipped_with_a_warning(done, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("config.json", "last.npz", "best.npz"):
        os.link(os.path.join(done, name), folder / name)
    rows = open(os.path.join(done, "metrics.csv")).read()
    (folder / "metrics.csv").write_text(rows + "garbage,\x00,??\n")
    with pytest.warns(UserWarning, match="metrics.csv, line 3: not a row of numbers"):
        result, _ = quiet(folder, resume=True, epochs=2)
    assert [r["epoch"] for r in runs.read_metrics(str(folder))] == [1, 2]


def test_killed_runs_leave_folders_that_can_be_reused_or_resumed(tmp_path, capsys):
    net = netc.compile(SPEC)
    folder = tmp_path / "killed"
    folder.mkdir()
    training.write_config(str(folder), net, training.resolve(net, {}))
    (folder / "tmpk1l2m3.npz.tmp").write_bytes(b"PK\x03\x04half")  # kill -9 during a save
    out = io.StringIO()
    training.train(net, {}, resume=str(folder), progress=False, stdout=out)
    assert "has no checkpoint yet" in out.getvalue()
    assert not any(f.endswith(".tmp") for f in os.listdir(folder))
    again = tmp_path / "again"
    again.mkdir()
    training.write_config(str(again), net, training.resolve(net, {}))
    (again / "config.json.tmp").write_text("{")
    with pytest.warns(UserWarning, match="holds only the config.json"):
        quiet(again)
    assert sorted(os.listdir(again)) == ["best.npz", "config.json", "curves.png", "last.npz",
                                         "metrics.csv", "result.json"]


def test_resume_without_last_but_with_best_points_to_init_from(done, tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("config.json", "best.npz"):
        os.link(os.path.join(done, name), folder / name)
    with pytest.raises(NetcError, match="has best.npz but no last.npz") as e:
        quiet(folder, resume=True)
    assert "--init-from" in e.value.hint


# ---- the file system -----------------------------------------------------------------------------
def test_out_must_be_a_folder_we_may_write(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NetcError, match="--out: .*file is a file"):
        quiet(tmp_path / "file")
    real_open = os.open

    def read_only(path, *args, **kw):
        if str(path).endswith(runs.LOCK):
            raise PermissionError(errno.EROFS, "Read-only file system")
        return real_open(path, *args, **kw)
    monkeypatch.setattr(runs.os, "open", read_only)
    with pytest.raises(NetcError, match="cannot write into .*ro: Read-only file system"):
        quiet(tmp_path / "ro")


def test_a_full_disk_keeps_the_previous_last_npz(tmp_path, monkeypatch):
    from netc.runtime import model as model_module
    folder = tmp_path / "full"
    quiet(folder, epochs=1)
    before = open(folder / "last.npz", "rb").read()
    real = np.savez

    def full(f, **arrays):
        real(f, **arrays)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(model_module.np, "savez", full)
    with pytest.raises(runs.WriteError, match="No space left on device") as e:
        quiet(folder, resume=True, epochs=2)
    assert "last.npz, the last checkpoint written, is kept" in e.value.hint
    assert f"--resume {folder}" in e.value.hint
    assert open(folder / "last.npz", "rb").read() == before
    assert not any(f.endswith(".tmp") for f in os.listdir(folder))
    monkeypatch.undo()
    quiet(folder, resume=True, epochs=2)


# ---- splits without a test sample ----------------------------------------------------------------
def test_no_test_split_finishes_without_a_test_score(tmp_path):
    out = io.StringIO()
    result, folder = training.train(netc.compile(SPEC), {"test_split": 0.0}, str(tmp_path / "r"),
                                   progress=False, stdout=out)
    assert result["test_loss"] is None and result["test_samples"] == 0
    assert "0 test (test_split=0 of 1797 samples leaves none" in out.getvalue()
    assert trainer.result_line(result) == "no test score (no test samples)"
    assert json.load(open(os.path.join(folder, "result.json")))["test_acc"] is None


# ---- memory --------------------------------------------------------------------------------------
def test_a_run_that_cannot_fit_is_refused_up_front(tmp_path, monkeypatch):
    from netc.compiler import report
    net = netc.compile(SPEC)
    need = report.memory(net, 64, "adam")["training"]
    fixed = report.memory(net, 0, "adam")["training"]
    per = report.memory(net, 1, "adam")["training"] - fixed
    monkeypatch.setattr(files, "available_memory", lambda: fixed + 10 * per + per // 2)
    with pytest.raises(NetcError, match="at batch 64 with adam needs about") as e:
        quiet(tmp_path / "r")
    assert need > fixed + 10 * per and e.value.hint.endswith("--batch 10")
    assert not os.path.exists(tmp_path / "r")
    monkeypatch.setattr(files, "available_memory", lambda: fixed // 2)
    with pytest.raises(NetcError) as e:
        quiet(tmp_path / "r")
    assert "even batch 1 does not fit" in e.value.hint


def test_a_huge_network_is_refused_before_allocating(tmp_path):
    spec = "input 8x8x1\nFC 1000000000\nOUT 10 softmax\ntrain data=digits\n"
    with pytest.raises(NetcError, match="needs about .* GiB; cpu has"):
        quiet(tmp_path / "r", spec)


# ---- misuse of the API ---------------------------------------------------------------------------
def test_batch_norm_needs_more_than_one_value_per_channel_to_train(tmp_path):
    model = netc.Model(BN_SPEC)
    x = np.random.default_rng(0).random((1, 1, 8, 8)).astype(np.float32)
    with pytest.raises(DataError, match="bn1: expected more than 1 value per channel when "
                                        "training"):
        model.loss_and_grads(x, [3])
    with pytest.raises(DataError, match="more than 1 value per channel"):
        model.forward(x, train=True)
    assert model.forward(x).shape == (1, 10)  # evaluation mode uses the running statistics
    with pytest.raises(NetcError, match="bn1: batch normalization needs more than 1 value"):
        quiet(tmp_path / "one", BN_SPEC, batch=1)
    # 1,258 training samples in batches of 37: the last one, of 1, joins the one before it
    result, folder = quiet(tmp_path / "r", BN_SPEC, batch=37)
    assert result["epochs"] == 1


def test_optimizer_step_checks_its_gradients():
    params = {"w": np.zeros((2, 3)), "b": np.zeros(3)}
    opt = netc.optimizer("adam", params)
    with pytest.raises(DataError, match=r"the gradient of w has shape \(3, 2\); the parameter "
                                        r"has \(2, 3\)"):
        opt.step({"w": np.ones((3, 2)), "b": np.ones(3)})
    with pytest.raises(DataError, match="no gradient for b"):
        opt.step({"w": np.ones((2, 3))})
    with pytest.raises(DataError, match="'v' is not a parameter"):
        opt.step({"w": np.ones((2, 3)), "b": np.ones(3), "v": np.ones(1)})
    assert not params["w"].any() and opt.t == 0  # nothing moved
    opt.lr_mult = {"b": 0.0}  # a frozen parameter may have no gradient
    opt.step({"w": np.ones((2, 3))})
    assert params["w"].all() and not params["b"].any()


def test_model_dtype_may_be_a_numpy_type():
    assert netc.Model(SPEC, dtype=np.float32).dtype == np.float32
    assert netc.Model(SPEC, dtype=np.dtype("float64")).dtype == np.float64
    for bad in (np.float16, None, "f8x"):
        with pytest.raises(NetcError, match="dtype must be float32 or float64"):
            netc.Model(SPEC, dtype=bad)
