"""Training on the CUDA backend: the same run as on the CPU (losses, accuracies, checkpoints), with
the data set kept in device memory or its batches copied over (augmentation), the penalties and
the clipping on the device; and the command line's --device."""
import io
import json

import numpy as np
import pytest

import netc
from netc.cli import main
from netc.runtime import runs, training

SPEC = """network Tiny
input 3x3x1
CONV 2x2 2 act=relu - POOL max 2x2/2 - FC 4 act=tanh - DROPOUT 0.2 - OUT 3 softmax
train optimizer=adam lr=0.05 batch=8 epochs=2 seed=1 data="{data}"
"""


@pytest.fixture
def spec(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 3, 3)).astype(np.float32)
    y = (x[:, :2].sum(axis=(1, 2)) > 0).astype(np.int64) + (x[:, 2, 2] > 1)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    return SPEC.format(data=tmp_path / "d.npz")


def run(spec, folder, **overrides):
    result, out = training.train(netc.compile(spec), overrides, str(folder), progress=False,
                                stdout=io.StringIO())
    return result, runs.read_metrics(out)


@pytest.mark.parametrize("extra", [{}, {"augment": ("flip",), "l1": 0.01, "l2": 0.01,
                                        "clip_norm": 0.5, "clip_value": 0.2}],
                         ids=["resident", "augmented-regularised-clipped"])
def test_a_run_on_the_gpu_follows_the_cpu(spec, tmp_path, extra):
    cpu, rows_cpu = run(spec, tmp_path / "cpu", device="cpu", **extra)
    gpu, rows_gpu = run(spec, tmp_path / "gpu", device="cuda", **extra)
    for a, b in zip(rows_cpu, rows_gpu):
        for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    assert gpu["test_acc"] == pytest.approx(cpu["test_acc"], abs=1e-9)
    back = netc.Model.load(str(tmp_path / "gpu" / "last.npz"))
    ref = netc.Model.load(str(tmp_path / "cpu" / "last.npz"))
    for k in ref.params:
        np.testing.assert_allclose(back.params[k], ref.params[k], rtol=1e-3, atol=1e-5)


def test_the_command_line_trains_on_the_device(spec, tmp_path, capsys):
    path = tmp_path / "s.net"
    path.write_text(spec)
    out = tmp_path / "run"
    assert main(["train", str(path), "--device", "cuda", "--epochs", "1", "--out", str(out),
                 "--quiet"]) == 0, capsys.readouterr().err
    assert json.load(open(out / "config.json"))["settings"]["device"] == "cuda"
    assert main(["eval", str(path), "--weights", str(out / "last.npz"), "--device", "cuda"]) == 0
    assert "samples: loss" in capsys.readouterr().out
