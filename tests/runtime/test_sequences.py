"""Sequences (N x T x D) through the layers that take them per step or elementwise (FC, OUT, the
activations, DROPOUT, FLATTEN, ID, RES/ADD, MEAN), against NumPy and by finite differences in
float64; per-step outputs (N x T x K): the loss averaged over every step, the accuracy and the
confusion matrix per step, and the labels they take."""
import numpy as np
import pytest

import netc
from netc.dsl.errors import DataError
from netc.runtime import checks, losses, metrics
from netc.runtime.backends import registry as backends
from netc.runtime.gradcheck import random_targets

from .test_layers import TOL, randomized, reference

CHAINS = [
    ("3x2", "FC 4 act=tanh - OUT 3 softmax"),
    ("4x3", "FC 5 act=relu - LEAKY - ELU - TANH - SIGMOID - RELU - DROPOUT 0.3 - OUT 2"),
    ("3x2", "FC 4 act=prelu - FC 3 act=elu bias=false - OUT 3 sigmoid"),
    ("3x2", "FC 4 act=leaky - FLATTEN - OUT 3 softmax"),
    ("3x2", "RES[FC 2 act=tanh - FC 2] act=relu - OUT 3 softmax"),
    ("4x2", "MEAN[FC 3 | FC 3 act=tanh | FC 3 act=relu - ID] - OUT 2"),
]


def sequences(model, n, seed):
    return np.random.default_rng(seed).standard_normal((n,) + model.net.input_shape)


@pytest.mark.parametrize("inp,chain", CHAINS)
def test_sequence_layers_match_numpy(inp, chain):
    model = randomized(f"input seq {inp}\n{chain}")
    x = sequences(model, 5, 1)
    for train in (False, True):
        if train and "DROPOUT" in chain:  # its masks are checked below
            continue
        got = model.forward(x, train=train)
        assert got.shape == (5,) + model.net.output_shape
        np.testing.assert_allclose(got, reference(model, x, train), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("inp,chain", CHAINS + [
    ("3x2", "RES[FC 2 act=tanh] drop=0.4 act=tanh - MEAN[ID | FC 2] drop_path=0.5 - OUT 3 softmax"),
])
def test_sequence_gradients_by_finite_differences(inp, chain):
    """Training mode (gradcheck fixes the dropout masks by reseeding), the loss per step."""
    for seed in range(2):
        report = netc.gradcheck(f"input seq {inp}\n{chain}", batch=3, seed=seed)
        assert max(report.values()) < TOL, report


@pytest.mark.parametrize("loss", ["kl", "multiclass_hinge", "mse"])
def test_per_step_losses_by_finite_differences(loss):
    report = netc.gradcheck("input seq 3x2\nFC 4 act=tanh - OUT 3 softmax", batch=3, loss=loss)
    assert max(report.values()) < TOL, report


def test_fc_per_step_is_a_linear_on_the_last_axis():
    """PyTorch's nn.Linear on (N, T, D): weight (units, D), shared by the steps."""
    model = randomized("input seq 5x3\nFC 4")
    assert model.net.output_shape == (5, 4) and model.params["fc1.weight"].shape == (4, 3)
    x = sequences(model, 2, 0)
    w, b = model.params["fc1.weight"], model.params["fc1.bias"]
    want = np.array([[w @ x[i, t] + b for t in range(5)] for i in range(2)])
    before = model.forward(x)
    np.testing.assert_allclose(before, want, rtol=1e-12)
    x[1, 3] += 1.0  # one step changes that step's output alone
    moved = ~np.isclose(model.forward(x), before, rtol=0, atol=1e-12)
    assert moved[1, 3].all() and moved.sum() == 4


def test_per_step_cross_entropy_is_the_mean_over_every_step():
    """PyTorch's CrossEntropyLoss on the (N*T, K) rows: the softmax over each step's K units,
    -log p[label], averaged over the N*T steps; dL/dz = (p - onehot) / (N*T)."""
    model = randomized("input seq 4x3\nOUT 5 softmax")
    assert model.net.output_shape == (4, 5)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((2, 4, 3)), rng.integers(0, 5, (2, 4))
    w, b = model.params["out1.weight"], model.params["out1.bias"]
    z = x @ w.T + b
    p = np.exp(z - z.max(axis=2, keepdims=True))
    p /= p.sum(axis=2, keepdims=True)
    np.testing.assert_allclose(p.sum(axis=2), 1)
    np.testing.assert_allclose(model.forward(x), p, rtol=1e-12)
    loss, grads = model.loss_and_grads(x, y)
    picked = np.take_along_axis(p, y[..., None], axis=2)[..., 0]
    assert loss == pytest.approx(-np.log(picked).mean(), rel=1e-12)
    dz = (p - np.eye(5)[y]) / 8
    np.testing.assert_allclose(grads["out1.weight"], np.einsum("ntk,ntd->kd", dz, x), rtol=1e-10)
    np.testing.assert_allclose(grads["out1.bias"], dz.sum(axis=(0, 1)), rtol=1e-10)


@pytest.mark.parametrize("loss", ["cross_entropy", "kl", "multiclass_hinge"])
def test_row_losses_per_step_equal_the_losses_of_the_rows(loss):
    """(N, T, K) with N x T labels is the same loss as its N*T rows with N*T labels."""
    rng = np.random.default_rng(4)
    out = rng.standard_normal((3, 5, 4))
    y = rng.integers(0, 4, (3, 5))
    if loss == "kl":
        y = rng.random((3, 5, 4)) + 0.1
        y /= y.sum(axis=2, keepdims=True)
    cpu = backends.load("cpu")
    value, grad = losses.compute(loss, out, y, loss != "kl", cpu)
    rows = out.reshape(15, 4), y.reshape((15,) + y.shape[2:])
    want, want_grad = losses.compute(loss, *rows, loss != "kl", cpu)
    assert value == pytest.approx(want, rel=1e-12)
    assert grad.shape == out.shape
    np.testing.assert_allclose(grad.reshape(15, 4), want_grad, rtol=1e-12)


def test_per_step_regression_takes_n_x_t_x_k_targets():
    model = randomized("input seq 3x2\nFC 4 act=tanh - OUT 2")
    x = sequences(model, 4, 5)
    target = np.random.default_rng(6).standard_normal((4, 3, 2))
    loss, _ = model.loss_and_grads(x, target)
    assert loss == pytest.approx(np.mean((model.forward(x) - target) ** 2), rel=1e-12)
    with pytest.raises(DataError, match=r"takes targets of shape \(4, 3, 2\).*received \(4, 2\)"):
        model.loss_and_grads(x, target[:, 0])


def test_accuracy_and_confusion_count_every_step():
    rng = np.random.default_rng(7)
    out = rng.random((6, 4, 3))
    y = out.argmax(axis=2)
    y[0, 1] = (y[0, 1] + 1) % 3  # 2 of 24 steps wrong
    y[5, 3] = (y[5, 3] + 2) % 3
    rows, labels = losses.step_rows(out, y)
    assert rows.shape == (24, 3) and labels.shape == (24,)
    assert backends.load("cpu").accuracy(rows, labels, False) == pytest.approx(22 / 24)
    counts = metrics.confusion(out, y, 3)
    want = np.zeros((3, 3), int)
    for t, p in zip(y.reshape(-1), out.argmax(axis=2).reshape(-1)):
        want[t, p] += 1
    assert np.array_equal(counts, want) and counts.sum() == 24 and np.trace(counts) == 22
    vec, labels = rng.random((5, 3)), rng.integers(0, 3, 5)  # other outputs pass through
    assert losses.step_rows(vec, labels)[0] is vec


def test_per_step_labels_are_checked():
    shape = (4, 3)  # 4 steps of 3 classes
    assert losses.classes(shape) == 3 and losses.label_shape(shape) == (4,)
    assert losses.classes((5, 8, 8)) == 5 and losses.label_shape((5, 8, 8)) == (8, 8)
    assert losses.classes((7,)) == 7 and losses.label_shape((7,)) == ()
    y = checks.labels(np.array([[0, 1, 2, 2], [2, 2, 1, 0]]), "cross_entropy", shape, 2,
                      np.float32)
    assert y.dtype == np.int64 and y.shape == (2, 4)
    with pytest.raises(DataError, match=r"per step \(4 steps of 3\).*\(2, 4\) class labels") as e:
        checks.labels(np.array([0, 1]), "cross_entropy", shape, 2, np.float32)
    assert "return=last" in e.value.hint and "N x 4 labels" in e.value.hint
    with pytest.raises(DataError, match=r"labels must lie in 0\.\.2 for an output of 3 classes"):
        checks.labels(np.full((2, 4), 3), "cross_entropy", shape, 2, np.float32)
    with pytest.raises(DataError, match="multiclass_hinge needs class indices of shape"):
        checks.labels(np.zeros((2, 4, 3)), "multiclass_hinge", shape, 2, np.float32)
    soft = np.full((2, 4, 3), 1 / 3)  # probability rows over each step's classes
    assert checks.labels(soft, "kl", shape, 2, np.float64).shape == (2, 4, 3)
    with pytest.raises(DataError, match="kl targets must be probability rows"):
        checks.labels(np.full((2, 4, 3), 0.25), "kl", shape, 2, np.float64)


def test_random_targets_fit_a_per_step_output():
    model = netc.Model("input seq 4x2\nOUT 3 softmax", dtype="float64")
    rng = np.random.default_rng(0)
    labels = random_targets(model, "cross_entropy", 5, rng)
    assert labels.shape == (5, 4) and labels.max() < 3
    soft = random_targets(model, "kl", 5, rng)
    np.testing.assert_allclose(soft.sum(axis=2), 1)
