"""What a run leaves and prints: the schedule across a resume, file modes, the epoch lines,
the curves' ticks, periodic snapshots, the TensorBoard log, and the eval scores (metrics)."""
import io
import os
import struct

import numpy as np
import pytest

import netc
from netc import NetcError
from netc.runtime import metrics, runs, schedule, training
from netc.runtime.model import read_checkpoint

SPEC = """network Tiny
input 8x8x1
FC 16 act=relu - DROPOUT 0.2 - OUT 10 softmax
train optimizer=adam lr=0.01 batch=64 epochs=2 data=digits seed=1
"""


def quiet(folder, spec=SPEC, resume=None, **overrides):
    out = io.StringIO()
    result, folder = training.train(netc.compile(spec), overrides, None if resume else folder,
                                    resume=resume, progress=False, stdout=out)
    return result, folder, out.getvalue()


def test_resuming_with_more_epochs_keeps_the_cosine_schedule(tmp_path):
    _, run, _ = quiet(str(tmp_path / "run"), schedule="cosine", epochs=2)
    _, _, text = quiet(None, resume=run, epochs=4)
    lrs = [r["lr"] for r in runs.read_metrics(run)]
    first = schedule.Schedule(0.01, "cosine", epochs=2)
    # the epochs trained keep their rates; the two added stay at the last one: no jump up
    assert lrs == pytest.approx([first.lr(0), first.lr(1), first.lr(1), first.lr(1)], rel=1e-5)
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    assert "kept as the first run set it, over 2 epochs" in text
    # a second resume keeps the first run's horizon
    quiet(None, resume=run, epochs=5)
    assert runs.read_metrics(run)[-1]["lr"] == pytest.approx(first.lr(1), rel=1e-5)


def test_cosine_past_its_horizon_stays_at_its_last_rate():
    s = schedule.Schedule(0.1, "cosine", epochs=4, warmup=1)
    assert [s.lr(e) for e in (3, 4, 9)] == [s.lr(3)] * 3 and s.lr(3) < s.lr(2)
    r = schedule.Schedule(0.1, "cosine_restarts", epochs=4, cycles=2)
    assert [r.lr(e) for e in range(6)] == [r.lr(0), r.lr(1)] * 3
    resumed = schedule.from_settings({"lr": 0.1, "schedule": "cosine", "epochs": 8,
                                      "schedule_horizon": 4})
    assert resumed.lr(6) == schedule.Schedule(0.1, "cosine", epochs=4).lr(3)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_checkpoints_have_the_mode_of_the_other_run_files(tmp_path, umask):
    old = os.umask(umask)
    try:
        _, run, _ = quiet(str(tmp_path / "run"), epochs=1)
    finally:
        os.umask(old)
    modes = {f: os.stat(os.path.join(run, f)).st_mode & 0o777 for f in os.listdir(run)
             if not f.startswith(".")}
    assert modes["last.npz"] == modes["best.npz"] == modes["metrics.csv"] == 0o666 & ~umask


def test_epoch_lines_stay_aligned_and_say_which_figures_they_are(tmp_path):
    _, run, text = quiet(str(tmp_path / "run"), epochs=10, val_split=0.1)
    lines = [line for line in text.splitlines() if line.startswith("epoch")]
    assert len(lines) == 10 and "train (eval) loss" in lines[0]
    assert lines[0].startswith("epoch  1/10") and lines[9].startswith("epoch 10/10")
    bars = {tuple(i for i, c in enumerate(line) if c == "|") for line in lines}
    assert len(bars) == 1  # every column separator at the same place on every line


def test_the_bar_labels_its_figures_as_running(tmp_path, capsys):
    training.train(netc.compile(SPEC), {"epochs": 1}, str(tmp_path / "run"), progress=True,
                   stdout=io.StringIO())
    err = capsys.readouterr().err
    assert "running loss=" in err and "running acc=" in err and "lr=" in err


def test_a_loss_ten_times_larger_keeps_the_columns(tmp_path):
    from netc.runtime.trainer import Trainer
    net = netc.compile(SPEC)
    t = Trainer(net, training.resolve(net, {"epochs": 100}), str(tmp_path), progress=False)
    row = {"epoch": 1, "lr": 0.01, "train_loss": 12.5, "train_acc": 0.5, "val_loss": 13.25,
           "val_acc": 0.4, "seconds": 1.5}
    lines = [t.line({**row, "epoch": e, "train_loss": v, "val_loss": v, "lr": lr})
             for e, v, lr in ((1, 12.5, 0.01), (9, 0.0123, 1.5e-5), (100, 3.0, 0.1))]
    assert len({tuple(i for i, c in enumerate(line) if c == "|") for line in lines}) == 1


def test_curves_have_whole_epoch_ticks():
    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_acc": 0.5,
             "val_acc": 0.4} for e in (1, 2, 3)]
    fig = runs.figure({"Tiny": rows}, "Tiny")
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)


def test_drawing_leaves_the_users_matplotlib_as_it_was(tmp_path):
    """netc's figures (curves, confusion matrix, sweep plot) neither switch the backend a
    notebook or script chose nor close its figures (they did: matplotlib.use("Agg"))."""
    import subprocess
    import sys
    script = f"""
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
mine = plt.figure()
import importlib
from netc.runtime import metrics, runs
sweep = importlib.import_module("netc.runtime.sweep")
rows = [{{"epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "train_acc": 0.5, "val_acc": 0.4}}]
runs.plot({{"Tiny": rows}}, {str(tmp_path / "curves.png")!r}, "Tiny")
runs.save_figure(metrics.confusion_figure([[3, 1], [0, 4]], "c"), {str(tmp_path / "c.png")!r})
sweep.plot([{{"lr": 0.1, "status": "ok", "val_acc": 0.5}}], {{"lr": [0.1]}}, ("val_acc", True,
           "accuracy"), {str(tmp_path / "s.png")!r}, "S")
print(matplotlib.get_backend(), plt.get_fignums() == [mine.number])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "True"]
    for name in ("curves.png", "c.png", "s.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_every_keeps_snapshots_in_the_checkpoint_format(tmp_path):
    _, run, _ = quiet(str(tmp_path / "run"), epochs=3, save_every=2)
    assert "snapshot_e2.npz" in os.listdir(run) and "snapshot_e3.npz" not in os.listdir(run)
    snap = read_checkpoint(os.path.join(run, "snapshot_e2.npz"))
    assert set(snap) == set(read_checkpoint(os.path.join(run, "last.npz")))
    assert netc.Model.load(os.path.join(run, "snapshot_e2.npz")).num_params == 1210
    with pytest.raises(NetcError, match="save_every is a number of epochs"):
        quiet(str(tmp_path / "bad"), save_every=0)


def events(folder):
    """The scalars of TensorBoard's event files in folder: {tag: [(step, value)]}."""
    from tensorboardX.proto import event_pb2
    found = {}
    for name in sorted(os.listdir(folder)):
        data = open(os.path.join(folder, name), "rb").read()
        pos = 0
        while pos < len(data):  # TFRecord: length, its CRC, the record, its CRC
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                found.setdefault(v.tag, []).append((event.step, v.simple_value))
    return found


def test_tensorboard_log_has_the_metrics_rows(tmp_path):
    pytest.importorskip("tensorboardX")
    board = str(tmp_path / "board")
    _, run, _ = quiet(str(tmp_path / "run"), epochs=2, tensorboard=board)
    scalars = events(board)
    rows = runs.read_metrics(run)
    assert [s for s, _ in scalars["loss/train"]] == [1, 2]
    assert [v for _, v in scalars["acc/val"]] == pytest.approx([r["val_acc"] for r in rows])
    assert [v for _, v in scalars["lr"]] == pytest.approx([r["lr"] for r in rows])


def test_tensorboard_gives_each_run_of_a_comparison_its_own_folder(tmp_path):
    pytest.importorskip("tensorboardX")
    board = tmp_path / "board"
    training.compare(netc.compile(SPEC), {"epochs": 1, "tensorboard": str(board)},
                     ["sgd", "adam"], str(tmp_path / "cmp"), progress=False, stdout=io.StringIO())
    assert sorted(os.listdir(board)) == ["adam", "sgd"]
    assert all(len(events(board / name)["loss/train"]) == 1 for name in ("adam", "sgd"))


def test_tensorboard_without_tensorboardx_is_refused_up_front(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "tensorboard_available", lambda: False)
    with pytest.raises(NetcError, match="tensorboardX, which is not installed"):
        quiet(str(tmp_path / "run"), tensorboard=str(tmp_path / "board"))
    assert not os.path.exists(tmp_path / "run")


def test_per_class_scores_and_top_k():
    counts = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])  # class 2: no labels, no predictions
    s = metrics.per_class(counts)
    assert s["precision"] == pytest.approx([5 / 7, 3 / 4, 0])
    assert s["recall"] == pytest.approx([5 / 6, 3 / 5, 0])
    p, r = 5 / 7, 5 / 6
    assert s["f1"][0] == pytest.approx(2 * p * r / (p + r)) and list(s["support"]) == [6, 5, 0]
    rows = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    labels = np.array([1, 1, 2])
    assert metrics.top_k(rows, labels, 1) == 0.0
    assert metrics.top_k(rows, labels, 2) == pytest.approx(2 / 3)
    assert metrics.top_k(rows, labels, 3) == 1.0
    assert metrics.confusion(rows, labels, 3).tolist() == [[0, 0, 0], [1, 0, 1], [1, 0, 0]]


def test_class_report_leaves_out_a_large_matrix_unless_asked():
    small = metrics.report(np.eye(3, dtype=int) * 4)
    assert small.startswith("confusion matrix") and "   macro     1.000" in small
    big = np.eye(30, dtype=int)
    assert "confusion matrix" not in metrics.report(big)
    assert len(metrics.report(big).splitlines()) == 1 + 30 + 2
    assert metrics.report(big, matrix=True).startswith("confusion matrix")
