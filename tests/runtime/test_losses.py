"""Every loss: its value against the textbook formula, its gradient by finite differences."""
import numpy as np
import pytest

import netc
from netc.runtime import losses
from netc.runtime.backends import registry as backends

rng = np.random.default_rng(0)
CPU = backends.load("cpu")


def loss(name, out, y, fused=True, delta=1.0):
    """(value, gradient) of a loss on the CPU backend; `out` is the logits when fused."""
    return losses.compute(name, np.asarray(out), np.asarray(y), fused, CPU, delta)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_values_against_formulas():
    z = rng.standard_normal((5, 4))
    y = np.array([0, 3, 1, 1, 2])
    p = softmax(z)
    assert np.isclose(loss("cross_entropy", z, y)[0], -np.mean(np.log(p[np.arange(5), y])))
    t = rng.integers(0, 2, (5, 4)).astype(float)
    s = 1 / (1 + np.exp(-z))
    assert np.isclose(loss("bce", z, t)[0], -np.mean(t * np.log(s) + (1 - t) * np.log(1 - s)))
    r = rng.standard_normal((5, 4))
    assert np.isclose(loss("mse", z, r)[0], np.mean((z - r) ** 2))
    assert np.isclose(loss("mae", z, r)[0], np.mean(np.abs(z - r)))
    d = np.abs(z - r)
    assert np.isclose(loss("huber", z, r, delta=0.5)[0], np.mean(np.where(d < 0.5, 0.5 * d * d, 0.5 * (d - 0.25))))
    pm = np.sign(r)
    assert np.isclose(loss("hinge", z, pm)[0], np.maximum(0, 1 - pm * z).sum() / 5)
    mc = sum(max(0, z[i, j] - z[i, y[i]] + 1) for i in range(5) for j in range(4) if j != y[i]) / 5
    assert np.isclose(loss("multiclass_hinge", z, y)[0], mc)
    q = softmax(rng.standard_normal((5, 4)))
    assert np.isclose(loss("kl", z, q)[0], np.sum(q * (np.log(q) - np.log(p))) / 5)


def test_cross_entropy_gradient_is_softmax_minus_onehot():
    z = rng.standard_normal((3, 4))
    y = np.array([1, 0, 3])
    onehot = np.eye(4)[y]
    np.testing.assert_allclose(loss("cross_entropy", z, y)[1], (softmax(z) - onehot) / 3)
    np.testing.assert_allclose(loss("cross_entropy", z, onehot)[1], (softmax(z) - onehot) / 3)


def test_cross_entropy_with_labels_keeps_the_dtype_and_nan():
    """Integer labels go through the row kernel (elementwise.cross_entropy_row)."""
    z = rng.standard_normal((4, 3)).astype(np.float32)
    y = np.array([0, 2, 1, 1])
    value, grad = loss("cross_entropy", z, y)
    assert grad.dtype == np.float32
    p = softmax(z.astype(np.float64))
    assert abs(value - -np.mean(np.log(p[np.arange(4), y]))) < 1e-6
    np.testing.assert_allclose(grad, (p - np.eye(3)[y]) / 4, atol=1e-7)
    z[2, 1] = np.nan  # a diverged network shows as a NaN loss
    assert np.isnan(loss("cross_entropy", z, y)[0])


def test_bce_is_stable_for_large_logits():
    value, grad = loss("bce", np.array([[800.0, -800.0]]), np.array([[1.0, 0.0]]))
    assert np.isfinite(value) and value < 1e-12 and np.all(np.isfinite(grad))
    assert np.isfinite(loss("cross_entropy", np.array([[1000.0, -1000.0]]), np.array([1]))[0])


@pytest.mark.parametrize("loss,out", [
    ("cross_entropy", "softmax"), ("cross_entropy", "none"), ("kl", "softmax"), ("kl", "none"),
    ("bce", "sigmoid"), ("bce", "none"), ("mse", "none"), ("mse", "softmax"), ("mae", "none"),
    ("huber", "sigmoid"), ("hinge", "none"), ("multiclass_hinge", "none")])
def test_loss_gradients(loss, out):
    report = netc.gradcheck(f"input 5\nFC 4 act=tanh - OUT 3 {out}", batch=4, loss=loss, seed=2)
    assert max(report.values()) < 1e-6, report


def test_natural_loss_follows_the_output():
    assert netc.Model("input 3\nOUT 2 softmax").loss_name() == "cross_entropy"
    assert netc.Model("input 3\nOUT 2 sigmoid").loss_name() == "bce"
    assert netc.Model("input 3\nOUT 2").loss_name() == "mse"
    assert netc.Model("input 3\nOUT 2\ntrain loss=huber").loss_name() == "huber"


@pytest.mark.parametrize("spec,loss", [("input 5\nFC 3 - SOFTMAX", "cross_entropy"),
                                       ("input 5\nFC 3 - SIGMOID", "bce"),
                                       ("input 3x3x2\nCONV 2x2 1 act=sigmoid", "bce")])
def test_activation_at_the_output_fuses_with_its_loss(spec, loss):
    """An output that ends in a SOFTMAX or SIGMOID layer, or a CONV with act=sigmoid, hands the
    loss its logits: the loss is that of the network's probabilities, not of a second squashing."""
    model = netc.Model(spec, dtype="float64", seed=1)
    r = np.random.default_rng(3)
    x = r.standard_normal((4,) + model.net.input_shape)
    p = model.forward(x)
    if loss == "cross_entropy":
        y = np.array([0, 2, 1, 1])
        want = -np.mean(np.log(p[np.arange(4), y]))
    else:
        y = r.integers(0, 2, p.shape).astype(float)
        want = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert np.isclose(model.loss_and_grads(x, y, loss)[0], want, rtol=1e-12)
    report = netc.gradcheck(spec, batch=3, loss=loss, seed=4)
    assert max(report.values()) < 1e-6, report


@pytest.mark.parametrize("loss", ["cross_entropy", "kl", "multiclass_hinge", "mse"])
def test_per_pixel_outputs_take_a_row_per_pixel(loss):
    """OUT per=pixel: the softmax over each pixel's classes, the loss averaged over all the
    batch's pixels (PyTorch's cross-entropy on N x K x H x W), label maps as targets."""
    spec = "input 5x4x3\nCONV 3x3 4 pad=1 act=relu - OUT 3 softmax per=pixel"
    model = netc.Model(spec, dtype="float64", seed=1)
    r = np.random.default_rng(0)
    x = r.standard_normal((2, 3, 5, 4))
    p = model.forward(x)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-12)
    if loss == "cross_entropy":
        y = r.integers(0, 3, (2, 5, 4))
        want = -np.mean(np.log(np.take_along_axis(p, y[:, None], axis=1)))
        assert np.isclose(model.loss_and_grads(x, y)[0], want, rtol=1e-12)
    report = netc.gradcheck(spec, batch=2, seed=3, loss=loss)
    assert max(report.values()) < 1e-6, report


def test_row_kernels_split_across_threads_give_the_same_numbers():
    """Split into parts (on Numba's threads) the row losses and the softmax give the numbers of
    one part on the calling thread: the same per-sample sums, added in the same order."""
    from netc.runtime.backends import elementwise as ew
    from netc.runtime.backends.cpu import activation, losses as cpu_losses
    rng = np.random.default_rng(0)
    n, k, p = 8, 4, 512
    z = rng.standard_normal((n, k, p))
    labels = rng.integers(0, k, (n, p))
    target = rng.random((n, k, p))
    kernels = [(code, cpu_losses.ROWS[code]) for code in (
        ew.CROSS_ENTROPY, ew.SOFT_CROSS_ENTROPY, ew.KL, ew.MULTICLASS_HINGE)]
    for code, (launcher, part) in kernels + [(ew.CROSS_ENTROPY, cpu_losses.PIXELS)]:
        g1, g2, s1, s2 = np.empty_like(z), np.empty_like(z), np.empty(n), np.empty(n)
        part(0, 1, z, target, labels, True, 1 / (n * p), g1, s1)
        launcher(3, z, target, labels, True, 1 / (n * p), g2, s2)
        assert np.array_equal(s1, s2) and np.array_equal(g1, g2)
        total = cpu_losses.rows(code, z, target, labels, True, 1 / (n * p), np.empty_like(z))
        assert total == cpu_losses._total_cpu(s1, 1 / (n * p))
        assert np.isclose(total, s1.sum() / (n * p), rtol=1e-12)
    for launcher, part in ((activation._softmax_rows_cpu, activation._softmax_rows_part),
                           (activation._softmax_pixels_cpu, activation._softmax_pixels_part)):
        y1, y2 = np.empty_like(z), np.empty_like(z)
        part(0, 1, z, y1)
        launcher(3, z, y2)
        assert np.array_equal(y1, y2)
        np.testing.assert_allclose(y1.sum(axis=1), 1.0)
    d1, d2 = np.empty_like(z), np.empty_like(z)
    activation._softmax_grad_rows_part(0, 1, y1, target, d1)
    activation._softmax_grad_rows_cpu(3, y1, target, d2)
    np.testing.assert_allclose(d1, d2, rtol=1e-12, atol=1e-15)  # fastmath may reassociate


@pytest.mark.parametrize("k, h, w", [(3, 5, 7), (21, 4, 4), (1, 3, 3)])
def test_per_pixel_softmax_and_cross_entropy_in_float32_against_numpy(k, h, w):
    """Per pixel (P > 1), the CPU runs the softmax and the cross-entropy over a sample's pixels
    at once (exps vectorized over the pixels), not a row at a time: the same numbers, to
    float32's precision, as NumPy's float64 ones, for pixel counts that leave the vector loops
    a remainder, many classes, and one class (softmax 1, loss 0); the first sample's logits
    near 200, whose exps overflow float32 unless the pixel's largest is taken off first."""
    from netc.runtime.backends.cpu import activation
    r = np.random.default_rng(k)
    z64 = r.standard_normal((3, k, h, w)) * 8
    z64[0] += 200
    z = z64.astype(np.float32)
    labels = r.integers(0, k, (3, h, w))
    e = np.exp(z.astype(np.float64) - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    y = activation.apply("softmax", z)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, p, rtol=2e-6, atol=1e-7)
    value, grad = loss("cross_entropy", z, labels)
    picked = np.take_along_axis(p, labels[:, None], axis=1)
    assert abs(value - -np.mean(np.log(picked))) < 2e-6 * max(1.0, abs(value))
    onehot = np.moveaxis(np.eye(k)[labels], -1, 1)
    assert grad.dtype == np.float32
    np.testing.assert_allclose(grad, (p - onehot) / labels.size, rtol=2e-6, atol=1e-8)
