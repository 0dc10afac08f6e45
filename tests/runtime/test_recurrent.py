"""RNN, LSTM and GRU on the CPU: forward values against the step-by-step NumPy reference
(naive.recurrent, PyTorch's formulas and gate orders), every gradient by central finite
differences in float64, in both directions and both return modes; float32 against float64;
the initialisation; the batch split across threads."""
import numpy as np
import pytest

import netc
from netc.runtime.backends.cpu import jit

from . import naive
from .test_layers import randomized

TOL = 1e-6
VARIANTS = ["RNN 4", "RNN 3 relu return=seq", "RNN 3 bidir=true", "LSTM 4 return=seq",
            "LSTM 3 bidir=true", "LSTM 3 return=seq bidir=true bias=false", "GRU 4",
            "GRU 3 return=seq bidir=true", "GRU 3 bias=false"]


def _layer_params(model, name="rec"):
    return {k.split(".", 1)[1]: v for k, v in model.params.items() if k.startswith(name + ".")}


@pytest.mark.parametrize("layer", VARIANTS)
def test_forward_matches_the_step_by_step_reference(layer):
    model = randomized(f"input seq 5x3\n{layer} name=rec")
    x = np.random.default_rng(4).standard_normal((4, 5, 3))
    node = model.net.node("rec")
    want = naive.recurrent(node.kind, x, _layer_params(model), node.hyper)
    got = model.forward(x)
    assert got.shape == (4,) + node.out_shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("layer", VARIANTS)
def test_gradients_by_finite_differences(layer):
    # FLATTEN after return=seq reaches every step's output; a recurrent layer stacked on one
    # with return=seq checks the input gradient that flows between them
    report = netc.gradcheck(f"input seq 4x3\n{layer} - FLATTEN - FC 3", batch=3, seed=5)
    bad = {k: v for k, v in report.items() if v >= TOL}
    assert not bad, bad


def test_stacked_layers_pass_gradients_between_them():
    report = netc.gradcheck("input seq 4x2\nLSTM 3 return=seq - GRU 3 return=seq bidir=true - "
                            "RNN 2", batch=2, seed=6)
    assert max(report.values()) < TOL, report


def test_return_last_is_the_last_step_each_direction_reads():
    """return=last with bidir: the forward direction's h at step T and the reverse one's at
    step 1 (PyTorch's h_n), which are return=seq's last and first rows of their halves."""
    last = randomized("input seq 6x3\nGRU 4 bidir=true name=rec", seed=7)
    seq = randomized("input seq 6x3\nGRU 4 bidir=true return=seq name=rec", seed=7)
    x = np.random.default_rng(8).standard_normal((2, 6, 3))
    ys, yl = seq.forward(x), last.forward(x)
    np.testing.assert_array_equal(yl[:, :4], ys[:, -1, :4])
    np.testing.assert_array_equal(yl[:, 4:], ys[:, 0, 4:])


def test_float32_agrees_with_float64():
    spec = "input seq 16x8\nLSTM 32 return=seq - GRU 16 bidir=true - OUT 5 softmax"
    m64 = netc.Model(spec, dtype="float64", seed=1)
    m32 = netc.Model(spec, dtype="float32", seed=1)
    for k in m64.params:
        m32.params[k][...] = m64.params[k]
    x = np.random.default_rng(2).standard_normal((9, 16, 8))
    np.testing.assert_allclose(m32.forward(x.astype(np.float32)), m64.forward(x), atol=2e-6)
    y = np.arange(9) % 5
    l64, g64 = m64.loss_and_grads(x, y)[:2]
    l32, g32 = m32.loss_and_grads(x.astype(np.float32), y)[:2]
    assert abs(l32 - l64) < 1e-5
    for k in g64:
        scale = np.abs(g64[k]).max()
        assert np.abs(g32[k] - g64[k]).max() <= 1e-4 * scale + 1e-7, k


def test_the_batch_split_does_not_change_the_numbers(monkeypatch):
    """Each thread runs the whole sequence on its own samples: one part or several give the same
    outputs and gradients (odd batch sizes, more parts than samples)."""
    from netc.runtime.backends.cpu import recurrent
    spec = "input seq 5x3\nLSTM 4 return=seq bidir=true - GRU 3 - OUT 2 softmax"
    x = np.random.default_rng(3).standard_normal((3, 5, 3))
    y = np.array([0, 1, 1])
    results = []
    for parts in (1, 2, 5):
        monkeypatch.setattr(recurrent._Recurrent, "_parts",
                            staticmethod(lambda *shape, parts=parts: parts))
        model = randomized(spec, seed=9)
        loss, grads = model.loss_and_grads(x, y)[:2]
        results.append((model.forward(x), loss, grads))
    for out, loss, grads in results[1:]:
        np.testing.assert_allclose(out, results[0][0], rtol=1e-13, atol=1e-14)
        assert loss == pytest.approx(results[0][1], rel=1e-13)
        for k in grads:
            np.testing.assert_allclose(grads[k], results[0][2][k], rtol=1e-11, atol=1e-13)
    assert jit.workers() >= 1


def test_parameters_are_named_and_shaped_as_pytorch():
    model = netc.Model("input seq 7x5\nLSTM 6 bidir=true return=seq name=enc - GRU 4 name=dec", seed=0)
    shapes = {k: v.shape for k, v in model.params.items()}
    for sfx in ("", "_reverse"):
        assert shapes[f"enc.weight_ih{sfx}"] == (24, 5)
        assert shapes[f"enc.weight_hh{sfx}"] == (24, 6)
        assert shapes[f"enc.bias_ih{sfx}"] == shapes[f"enc.bias_hh{sfx}"] == (24,)
    assert shapes["dec.weight_ih"] == (12, 12) and shapes["dec.weight_hh"] == (12, 4)
    assert "dec.weight_ih_reverse" not in shapes


def test_initialisation_is_uniform_within_one_over_root_h():
    model = netc.Model("input seq 4x10\nLSTM 64 name=a - FC 2", seed=0)
    bound = 1 / np.sqrt(64)
    for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        v = model.params[f"a.{k}"]
        assert np.abs(v).max() <= bound
        assert np.abs(v).max() > 0.95 * bound  # spread over the whole interval
        assert abs(v.std() - bound / np.sqrt(3)) < 0.1 * bound  # a uniform's deviation
    he = netc.Model("input seq 4x10\nGRU 64 init=he name=a - FC 2", seed=0)
    assert np.all(he.params["a.bias_ih"] == 0)
    assert he.params["a.weight_ih"].std() == pytest.approx(np.sqrt(2 / 10), rel=0.1)


def test_forget_bias_sets_the_forget_gate_slice():
    model = netc.Model("input seq 4x3\nLSTM 5 forget_bias=1 name=a - FC 2", seed=0)
    b_ih, b_hh = model.params["a.bias_ih"], model.params["a.bias_hh"]
    np.testing.assert_array_equal(b_ih[5:10], 1)  # i, f, g, o: f is the second
    np.testing.assert_array_equal(b_hh[5:10], 0)
    assert np.abs(b_ih[:5]).max() > 0 and np.abs(b_ih[10:]).max() > 0


def test_a_long_sequence_keeps_finite_gradients():
    """200 steps of a saturating LSTM: BPTT's products stay finite (and small, the lecture's
    vanishing gradient), no NaN."""
    model = netc.Model("input seq 200x2\nLSTM 8 - OUT 1\ntrain loss=mse", dtype="float32", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 200, 2)).astype(np.float32) * 3
    _, grads, dx = model.loss_and_grads(x, np.ones((4, 1), np.float32), input_grad=True)
    assert all(np.isfinite(g).all() for g in grads.values())
    assert np.isfinite(dx).all()
    # the first steps' inputs barely move the last step's output
    assert np.abs(dx[:, 0]).max() < 1e-2 * np.abs(dx[:, -1]).max()


def test_float32_exp_tanh_sigmoid_expm1_are_within_a_few_ulp():
    """elementwise's exp, tanh and expm1 (instructions that vectorize, in float32) and the
    sigmoid against float64 over [-100, 100] and tiny magnitudes; float64 is the library's; NaN
    stays NaN, +-inf saturate."""
    import numba
    from netc.runtime.backends import elementwise as ew

    @numba.njit  # (Numba's own division check: ew.divide needs none)
    def apply(x, out, which):
        for i in range(x.size):
            v = x[i]
            out[i] = (ew.exp(v) if which == 0 else ew.tanh(v) if which == 1 else
                      ew.sigmoid(v) if which == 2 else ew.expm1(v))

    tiny = np.geomspace(1e-30, 1, 20001)
    x = np.concatenate([np.linspace(-100, 100, 400001), tiny, -tiny, [0.0]]).astype(np.float32)
    exact = {0: np.exp, 1: np.tanh, 2: lambda v: 1 / (1 + np.exp(-v)), 3: np.expm1}
    for which, most in ((0, 2.0), (1, 2.0), (2, 3.0), (3, 2.0)):
        got = np.empty_like(x)
        apply(x, got, which)
        x64 = x.astype(np.float64)
        want = exact[which](x64)
        # exp clamps its argument past 87: sigmoid then gives 6e-39 for the denormals below it
        keep = np.abs(x64) < 87 if which != 1 else np.ones(x.size, bool)
        ulp = np.spacing(np.abs(want[keep]).astype(np.float32)).astype(np.float64)
        assert (np.abs(got[keep] - want[keep]) / ulp).max() <= most, which
        if which == 2:
            assert np.abs(got[~keep] - want[~keep]).max() < 1e-37
        got64 = np.empty_like(x64)
        apply(x64, got64, which)
        np.testing.assert_allclose(got64, want, rtol=1e-15, atol=0)
        edge = np.array([np.nan, np.inf, -np.inf], np.float32)
        out = np.empty_like(edge)
        apply(edge, out, which)
        assert np.isnan(out[0])
        if which == 1:
            assert out[1] == 1 and out[2] == -1
        if which == 2:
            assert out[1] == 1 and abs(out[2]) < 1e-37
        if which == 3:
            assert out[1] > 1e38 and out[2] == -1


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("keys,bidir,seq", [("", False, False), (" bidir=true return=seq", True, True),
                                            (" bidir=true", True, False)])
def test_against_pytorch_where_it_is_installed(kind, keys, bidir, seq):
    """The same weights in PyTorch's nn.RNN/LSTM/GRU (batch_first): outputs (return=last is
    h_n) and every parameter's gradient agree in float64. Skipped where torch is not installed
    (CI); the NumPy reference above runs everywhere."""
    torch = pytest.importorskip("torch")
    model = netc.Model(f"input seq 6x3\n{kind} 5{keys} name=r", dtype="float64", seed=1)
    net = getattr(torch.nn, kind)(3, 5, batch_first=True, bidirectional=bidir).double()
    with torch.no_grad():
        for name, p in net.named_parameters():  # weight_ih_l0(_reverse) -> r.weight_ih(_reverse)
            p.copy_(torch.from_numpy(model.params["r." + name.replace("_l0", "")]))
    x = np.random.default_rng(0).standard_normal((4, 6, 3))
    out, h_n = net(torch.from_numpy(x))
    h_n = h_n[0] if kind == "LSTM" else h_n
    want = out if seq else torch.cat(list(h_n), 1)
    got = model.forward(x)
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-12, atol=1e-14)
    w = np.random.default_rng(1).standard_normal(got.shape)
    (want * torch.from_numpy(w)).sum().backward()
    # mse against got - w * size / 2 has dL/dy = w: the same cotangent as PyTorch's
    grads = model.loss_and_grads(x, got - w * got.size / 2, loss="mse")[1]
    for name, p in net.named_parameters():
        np.testing.assert_allclose(grads["r." + name.replace("_l0", "")], p.grad.numpy(),
                                   rtol=1e-10, atol=1e-13)
