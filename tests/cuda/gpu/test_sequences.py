"""Sequences (N x T x D) on the CUDA backend against the CPU in float64: FC and OUT per step, the
elementwise layers and joins over steps, the per-step losses, and a per-step classifier's
training run (accuracy over every step, the data set resident on the device). Tiny shapes: the
simulator runs every thread in Python."""
import io

import numpy as np
import pytest

import netc
from netc.runtime import losses, training

from .test_kinds import agree


@pytest.mark.parametrize("inp,chain", [
    ("3x2", "FC 4 act=tanh - OUT 3 softmax"),
    ("3x2", "FC 3 act=prelu - RELU - ELU - LEAKY - TANH - SIGMOID - DROPOUT 0.3 - OUT 2"),
    ("2x2", "RES[FC 2 act=tanh] act=relu - MEAN[ID | FC 2] - FLATTEN - OUT 3 softmax"),
])
def test_sequence_layers_agree_with_the_cpu(inp, chain):
    agree(f"input seq {inp}\n{chain}", batch=2)


@pytest.mark.parametrize("loss", ["cross_entropy", "kl", "multiclass_hinge"])
def test_per_step_losses_agree_with_the_cpu(loss):
    agree("input seq 3x2\nOUT 3 softmax", batch=2, loss=loss)


def test_per_step_accuracy_on_the_device():
    from numba import cuda
    from netc.runtime.backends import registry as backends
    out = np.random.default_rng(0).random((2, 3, 4))
    y = out.argmax(axis=2)
    y[1, 2] = (y[1, 2] + 1) % 4  # 5 of 6 steps right
    rows, labels = losses.step_rows(cuda.to_device(out), cuda.to_device(y))
    assert rows.shape == (6, 4) and labels.shape == (6,)
    assert backends.load("cuda").accuracy(rows, labels, False) == pytest.approx(5 / 6)


def test_a_per_step_classifier_trains_as_on_the_cpu(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 3, 2)).astype(np.float32)
    np.savez(tmp_path / "s.npz", x=x, y=(x[:, :, 0] > 0).astype(np.int64))
    spec = ("input seq 3x2\nFC 4 act=tanh - OUT 2 softmax\n"
            f"train optimizer=adam lr=0.05 batch=4 epochs=1 data=\"{tmp_path / 's.npz'}\"")
    results = [training.train(netc.compile(spec), {"device": device}, str(tmp_path / device),
                              progress=False, stdout=io.StringIO())[0]
               for device in ("cpu", "cuda")]
    cpu, gpu = results
    assert gpu["test_loss"] == pytest.approx(cpu["test_loss"], rel=1e-4)
    assert gpu["test_acc"] == pytest.approx(cpu["test_acc"], abs=1e-9)
    assert 0 <= cpu["test_acc"] <= 1
