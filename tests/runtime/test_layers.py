"""One harness over the layer registry: every kind's forward against a plain NumPy reference and
its gradients by central finite differences in float64. Registering a kind enrolls it here."""
import functools

import numpy as np
import pytest

import netc
from netc.compiler import registry
from netc.runtime.backends import registry as backends

from . import naive

KINDS = registry.kinds()
TOL = 1e-6


def randomized(spec, seed=1):
    model = netc.Model(spec, dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    for name, arr in model.params.items():  # move away from the tidy initial values
        arr[...] = rng.standard_normal(arr.shape) * (0.5 if name.endswith("weight") else 0.3)
    for name, arr in model.buffers.items():
        arr[...] = rng.random(arr.shape) + (0.5 if name.endswith("var") else -0.5)
    return model


def reference(model, x, train):
    values = {}
    for node in model.net.nodes:
        xs = [values[i] for i in node.inputs] or [x]
        p = {k: model.params[f"{node.name}.{k}"] for k in node.params}
        p.update({k: model.buffers[f"{node.name}.{k}"] for k in node.buffers})
        values[node.name] = naive.layer(node, p, xs if node.kind in ("ADD", "CONCAT", "MEAN") else xs[0], train)
    return values[model.net.output]


def test_every_kind_has_an_example():
    missing = [k for k, kind in KINDS.items() if not kind.example]
    assert not missing, f"give these kinds an `example`: {missing}"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_forward_matches_numpy_reference(kind):
    inp, chain = KINDS[kind].example
    model = randomized(f"input {inp}\n{chain}")
    x = np.random.default_rng(2).standard_normal((3,) + model.net.input_shape)
    assert kind in {n.kind for n in model.net.nodes}
    for train in (False, True):
        if kind == "DROPOUT" and train:
            continue
        got = model.forward(x, train=train)
        np.testing.assert_allclose(got, reference(model, x, train), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_gradients_by_finite_differences(kind):
    inp, chain = KINDS[kind].example
    report = netc.gradcheck(f"input {inp}\n{chain} - FC 3", batch=3, seed=3)
    bad = {k: v for k, v in report.items() if v >= TOL}
    assert not bad, bad


EXTRA = [
    ("9x9x2", "CONV 3x3/2 4 act=relu round=floor - POOL max 2x2/2 pad=1"),
    ("6x6x2", "CONV 3x3 4 pad=same bias=false act=leaky - POOL max 3x3/2 pad=1 round=ceil"),
    ("5x5x2", "CONV 2x3/1x2 3 pad=1x0 act=elu - LEAKY - FLATTEN"),
    ("6x6x4", "CONV 1x1 4 groups=4 act=sigmoid - BN - GAP - MAXOUT 2"),
    ("10", "FC 6 act=prelu - BN - DROPOUT 0.2 - OUT 3 sigmoid"),
    # BN on the input: no input gradient is wanted from it (its kernel gets an empty dx)
    ("6", "BN - FC 4 act=tanh - BN"),
    ("3x3x2", "BN - CONV 3x3 2 pad=1 act=relu"),
    ("10", "FC 6 act=tanh - LN - GN 3 - OUT 3 softmax"),  # the norms on vectors: LayerNorm(N)
    ("4x4x6", "CONV 3x3 6 pad=1 - GN 3 eps=0.01 - TANH - IN - TANH - LN"),
    # transposed convolutions: strided with outpad, unstrided, rectangular, after a CONV
    ("3x3x2", "DECONV 4x4/2 3 pad=1 act=relu - DECONV 3x3/2 2 pad=1 outpad=1 bias=false act=prelu"),
    ("4x3x2", "CONV 3x3 4 pad=1 - DECONV 2x3/1x2 2 pad=0x1 act=elu"),
    ("3x2x2", "UPSAMPLE 3 bilinear - CONV 3x3 2 - UPSAMPLE 2 - CONCAT[ID | POOL max 2x2/2 - UPSAMPLE 2]"),
    ("5x4x3", "CONV 3x3 4 pad=1 act=relu - OUT 3 softmax per=pixel - FLATTEN"),  # per pixel
    ("6x8x3", "POOL max 2x2/2 - CONV 1x1 2 act=tanh - POOL max 2x2/2"),  # the unrolled 2x2 kernels
    ("7x9x3", "POOL avg 2x2/2 - CONV 1x1 2 act=tanh - POOL avg 2x2/2"),  # ... an odd size dropped
    # round=ceil over odd sizes: a last window past the input, so the general kernels
    ("5x7x2", "POOL max 2x2/2 round=ceil - CONV 1x1 2 - POOL avg 2x2/2 round=ceil"),
    # FractalNet's expansion, nested joins of three branches
    ("4x4x2", "CONV: 3x3 pad=1\nMEAN[MEAN[CONV 2 - CONV 2 | CONV 2] - CONV 2 | ID | CONV 2 act=relu]"),
    # strided and padded convs after the first layer: their input gradient goes through the
    # channels-last fold (conv._fold_cpu)
    ("7x8x2", "CONV 3x3 4 - CONV 3x3/2 3 pad=1 act=relu round=floor - CONV 2x3/2x1 2 pad=1x2"),
    # 3x3/1 over >= 24 channels, >= 64 output pixels: Winograd (conv/winograd.py), with and
    # without the input gradient, uneven padding, the fused activations and PReLU apart
    ("8x10x24", "CONV 3x3 24 pad=1 act=relu - CONV 3x3 3 pad=1x0 act=prelu"),
    ("8x8x24", "CONV 3x3 25 pad=same bias=false act=tanh - CONV 3x3 2 pad=2 act=relu"),
    # round=ceil: the last window runs past the padding (into zeros)
    ("7x8x2", "CONV 3x3 4 - CONV 3x3/3 3 pad=1 act=relu round=ceil - CONV 1x2/3x2 2 round=ceil"),
    # a window over the whole input (dense), then GAP over 1x1 planes: its gradient was a read-only
    # broadcast, which the dense backward once failed to compile on (now a fresh array:
    # test_gap_gradient_is_a_fresh_array)
    ("4x4x3", "CONV 4x4 5 - GAP"),
    # taps that read only padding, left out (conv.CUT_TAPS): 1x1 planes, a strided 2x2
    ("1x1x4", "CONV 3x3 3 pad=1 act=relu - CONV 3x3 2 pad=1 bias=false - GAP"),
    ("2x2x3", "CONV 3x3/2 4 pad=1 act=tanh - CONV 3x3 2 pad=1"),
]

@pytest.mark.parametrize("inp,chain", EXTRA)
def test_more_configurations(inp, chain):
    model = randomized(f"input {inp}\n{chain}")
    x = np.random.default_rng(4).standard_normal((2,) + model.net.input_shape)
    np.testing.assert_allclose(model.forward(x), reference(model, x, False), rtol=1e-10, atol=1e-12)
    report = netc.gradcheck(f"input {inp}\n{chain} - FC 2", batch=4, seed=5)
    assert max(report.values()) < TOL, report


SMALL_RESNET = """input 8x8x3
CONV: pad=same bias=false
block basic(c, s=1) = RES[CONV 3x3/s c - BN - RELU - CONV 3x3 c - BN]
CONV 3x3 4 - BN - RELU - basic(4) - basic(6, s=2) - GAP - OUT 5 softmax"""

SMALL_INCEPTION = """input 6x6x3
CONV: pad=same act=relu
CONCAT[CONV 1x1 2 | CONV 1x1 2 - CONV 3x3 3 | CONV 1x1 1 - CONV 5x5 2 | POOL max 3x3/1 pad=1 - CONV 1x1 2] -
DENSE[CONV 3x3 2] - POOL avg 2x2/2 - FC 4 act=tanh - OUT 3 softmax"""


@pytest.mark.parametrize("spec", [SMALL_RESNET, SMALL_INCEPTION], ids=["resnet", "inception"])
def test_whole_networks_with_branches(spec):
    report = netc.gradcheck(spec, batch=2, seed=6)
    assert max(report.values()) < TOL, report


@pytest.mark.parametrize("spec,weight", [
    ("input 6x6x1\nCONV 3x3 2 act=relu - FC 2", "conv1.weight"),   # im2col's epilogue rows
    ("input 28x28x1\nCONV 5x5 2 act=relu - FC 2", "conv1.weight"),  # the direct CONV's planes
    ("input 6\nFC 3 act=relu - FC 2", "fc1.weight"),                 # the FC's GEMM rows
])
def test_a_nan_goes_through_a_fused_relu(spec, weight):
    """NaN stays NaN through a ReLU fused into a kernel, as through elementwise.act and a RELU
    layer: the fused rows once gave 0 for it, so that a NaN weight left the output finite."""
    model = netc.Model(spec, dtype="float32", seed=0)
    model.params[weight].flat[0] = np.nan
    out = model.forward(np.ones((32,) + model.net.input_shape, np.float32))
    assert np.isnan(out).any()


def test_float32_agrees_with_float64():
    spec = SMALL_RESNET
    m64 = netc.Model(spec, dtype="float64", seed=0)
    m32 = netc.Model(spec, dtype="float32", seed=0)
    x = np.random.default_rng(0).standard_normal((4,) + m64.net.input_shape)
    y = np.random.default_rng(1).integers(0, 5, 4)
    l64, g64 = m64.loss_and_grads(x, y)
    l32, g32 = m32.loss_and_grads(x, y)
    assert g32["out1.weight"].dtype == np.float32
    assert abs(l64 - l32) < 1e-5
    for k in g64:
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("chain", [
    "RES[CONV 3x3 2 pad=1 - CONV 3x3 2 pad=1] drop=0.4 act=tanh",
    "MEAN[CONV 3x3 2 pad=1 | ID | CONV 1x1 2] drop_path=0.5 - CONV 1x1 2",
    "RES[CONV 3x3 2 pad=1]x2 - MEAN[ID | CONV 1x1 2]",
], ids=["res", "mean", "rule"])
def test_dropped_paths_by_finite_differences(chain):
    """Training mode: gradcheck fixes the masks by reseeding; the rule's drops are in effect."""
    rule = "\ntrain stochastic_depth=0.8" if "RES" in chain else ""
    spec = f"input 4x4x2\n{chain} - FC 3{rule}"
    for seed in range(3):  # masks that keep and that drop
        report = netc.gradcheck(spec, batch=4, seed=seed)
        assert max(report.values()) < TOL, report


def test_stochastic_depth_drops_whole_samples_in_training_only():
    model = netc.Model("input 2x2x3\nRES[CONV 1x1 3] drop=0.3 act=none", dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((4000, 3, 2, 2))
    branch = model.forward(x, train=False) - x
    w = (model.forward(x, train=True) - x) / branch  # each sample's weight on the branch
    per_sample = w.reshape(len(x), -1)
    assert np.allclose(per_sample, per_sample[:, :1])  # the whole sample, every value
    assert set(np.round(per_sample[:, 0], 9)) == {0.0, round(1 / 0.7, 9)}
    assert abs((per_sample[:, 0] == 0).mean() - 0.3) < 0.03
    again = model.forward(x, train=True)  # a new mask each step
    assert not np.allclose(again, model.forward(x, train=True))


def test_drop_path_keeps_the_mean_of_at_least_one_branch():
    model = netc.Model("input 5\nMEAN[FC 5 | FC 5 | ID] drop_path=0.6", dtype="float64", seed=1)
    x = np.random.default_rng(1).standard_normal((3000, 5))
    p = model.params
    branches = np.stack([x @ p["mean1.b1.fc1.weight"].T + p["mean1.b1.fc1.bias"],
                         x @ p["mean1.b2.fc1.weight"].T + p["mean1.b2.fc1.bias"], x], axis=1)
    np.testing.assert_allclose(model.forward(x, train=False), branches.mean(axis=1), atol=1e-14)
    y = model.forward(x, train=True)
    subsets = np.array([[i >> k & 1 for k in range(3)] for i in range(1, 8)], float)  # nonempty
    candidates = np.einsum("sk,nkf->nsf", subsets / subsets.sum(1, keepdims=True), branches)
    err = np.abs(candidates - y[:, None]).max(axis=2)
    assert (err.min(axis=1) < 1e-12).all()  # every sample: the mean of a nonempty subset
    kept = subsets[err.argmin(axis=1)].sum(axis=1)
    # P(1 kept) = 3 * 0.4 * 0.6^2 + 0.6^3 (none kept: one is chosen) = 0.648
    assert abs((kept == 1).mean() - 0.648) < 0.03 and abs((kept == 3).mean() - 0.064) < 0.015


def test_dropout_is_inverted_and_training_only():
    model = netc.Model("input 1000\nDROPOUT 0.3", dtype="float64")
    x = np.ones((4, 1000))
    y = model.forward(x, train=True)
    kept = y != 0
    assert np.allclose(y[kept], 1 / 0.7)
    assert abs(kept.mean() - 0.7) < 0.03
    assert np.array_equal(model.forward(x, train=False), x)


def test_batchnorm_running_statistics_follow_pytorch():
    model = netc.Model("input 2x2x3\nBN", dtype="float64")
    x = np.random.default_rng(0).standard_normal((5, 3, 2, 2)) * 2 + 1
    model.forward(x, train=True)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(model.buffers["bn1.running_mean"], 0.1 * mean)
    np.testing.assert_allclose(model.buffers["bn1.running_var"], 0.9 + 0.1 * var)


@pytest.mark.parametrize("grain", [1, 1 << 60], ids=["parts", "one-part"])
def test_batchnorm_far_from_zero(grain, monkeypatch):
    """BN's statistics over values far from zero (1e9 + z, z ~ N(0, 1)) take one pass, summed from
    each channel's first value, so E[d^2] - E[d]^2 does not cancel (summed from zero it would
    lose all of the variance's digits in float64): its output, loss and gradients are those of
    z itself (BN does not see a shift of a channel), with the channels split among the threads
    and as one part; the output also against NumPy."""
    from netc.runtime.backends.cpu import jit
    monkeypatch.setattr(jit, "GRAIN", grain)
    rng = np.random.default_rng(4)
    z = rng.standard_normal((6, 5, 3, 3)) * np.array([1, 0.5, 2, 3, 0.1])[:, None, None]
    target = rng.standard_normal(z.shape)
    runs = []
    for x, tol in ((z, 1e-12), (z + 1e9, 2e-5)):  # (1e9 + z rounds z to 1.2e-7)
        model = netc.Model("input 3x3x5\nBN", dtype="float64", seed=0)
        model.params["bn1.weight"][:] = np.linspace(0.5, 2, 5)
        model.params["bn1.bias"][:] = np.linspace(-1, 1, 5)
        y = model.forward(x, train=True)
        np.testing.assert_allclose(y, naive.batchnorm(x, model.params["bn1.weight"],
                                                      model.params["bn1.bias"], 1e-5), atol=tol)
        runs.append((y,) + model.loss_and_grads(x, target, loss="mse", input_grad=True))
    (y0, loss0, grads0, dx0), (y1, loss1, grads1, dx1) = runs
    np.testing.assert_allclose(y1, y0, atol=2e-5)
    np.testing.assert_allclose(loss1, loss0, rtol=2e-5)
    np.testing.assert_allclose(dx1, dx0, atol=2e-5)
    for name in grads0:
        np.testing.assert_allclose(grads1[name], grads0[name], atol=2e-5)


def test_initializers():
    model = netc.Model("input 400\nFC 300 act=relu - FC 200 act=tanh - FC 100 init=glorot - "
                       "FC 100 init=gaussian - FC 5 init=zeros", seed=0)
    p = model.params
    assert abs(p["fc1.weight"].std() - np.sqrt(2 / 400)) < 0.005      # He
    assert abs(p["fc2.weight"].std() - np.sqrt(1 / 300)) < 0.005      # Xavier 1/n_in
    assert abs(p["fc3.weight"].std() - np.sqrt(2 / 300)) < 0.005      # Glorot 2/(in+out)
    assert abs(p["fc4.weight"].std() - 0.01) < 0.001
    assert not p["fc5.weight"].any() and not p["fc1.bias"].any()
    again = netc.Model(model.net, seed=0)
    assert np.array_equal(again.params["fc1.weight"], p["fc1.weight"])
    assert not np.array_equal(netc.Model(model.net, seed=1).params["fc1.weight"], p["fc1.weight"])


@pytest.mark.parametrize("size", [1, 1000, (1 << 16) * 2 + 5])  # one chunk, several, a short last
def test_weights_drawn_in_chunks_are_the_whole_draws(size):
    """init.scaled_normal draws its normals a chunk at a time: the same numbers as one draw of
    the whole array, scaled and cast (so the seeds give the weights they gave before)."""
    from netc.runtime import init
    shape = (size, 3)
    for dtype in (np.float32, np.float64):
        got = init.scaled_normal(shape, 0.03, np.random.default_rng(7), dtype)
        want = (np.random.default_rng(7).standard_normal(shape) * 0.03).astype(dtype)
        assert got.dtype == dtype and got.shape == shape
        assert np.array_equal(got, want)


# The CPU runs a CONV four ways (conv/: im2col, Winograd F(2x2, 3x3), direct, dense); each must
# give the same outputs and gradients, at odd sizes (partial Winograd tiles; filters, channels and
# taps that do not fill direct's blocks), uneven padding and with every fused activation.
ALGORITHM_CASES = [
    ("8x10x16", "CONV 3x3 5 pad=1 act=relu"),
    ("7x9x16", "CONV 3x3 4 act=tanh"),
    ("9x8x16", "CONV 3x3 3 pad=1x2 act=elu"),
    ("8x8x17", "CONV 3x3 6 pad=2 bias=false act=prelu"),
    ("7x8x16", "CONV 3x3 4 pad=1 act=sigmoid"),
    ("5x6x16", "CONV 3x3 4 pad=1 act=relu"),  # rows under 8: Winograd's other channels-last copy
    ("3x4x5", "CONV 3x4 6 act=relu"),  # a window over the whole input: dense
    ("3x4x5", "CONV 3x4/2 6 bias=false act=prelu"),
    ("12x11x1", "CONV 5x5 6 act=relu"),
    ("9x10x3", "CONV 3x3 9 pad=2 act=leaky"),
    ("6x7x6", "CONV 2x4 3 pad=1x2"),
    ("9x9x2", "CONV 7x7 5 pad=3 act=relu"),
]


@pytest.mark.parametrize("inp,chain", ALGORITHM_CASES)
@pytest.mark.parametrize("algorithm", ["winograd", "winograd-4x4", "winograd-4x4-positions",
                                       "direct", "dense", "im2col-unkept"])
def test_conv_algorithms_agree_with_im2col(monkeypatch, inp, chain, algorithm):
    """(im2col-unkept: im2col unfolding again in backward, as layers too big to keep do;
    winograd-4x4: F(4x4, 3x3), by samples; -positions: by positions.)"""
    from netc.runtime.backends.cpu import conv
    spec = f"input {inp}\n{chain}"
    rng = np.random.default_rng(7)
    results = []
    for force in ("im2col", algorithm):
        monkeypatch.setattr(conv, "FORCE", force.split("-")[0])
        monkeypatch.setattr(conv, "WINOGRAD_TILE", 4 if "4x4" in force else 2)
        monkeypatch.setattr(conv, "WINOGRAD_POSITIONS", force.endswith("positions"))
        monkeypatch.setattr(conv, "KEEP_COLS_BYTES", 0 if force.endswith("unkept") else 32 << 20)
        model = randomized(spec)
        x = rng.standard_normal((3,) + model.net.input_shape) if not results else results[0][0]
        target = rng.standard_normal((3,) + model.net.output_shape) if not results else results[0][1]
        out = model.forward(x)
        _, grads, dx = model.loss_and_grads(x, target, loss="mse", input_grad=True)
        results.append((x, target, out, grads, dx))
    (_, _, out0, grads0, dx0), (_, _, out1, grads1, dx1) = results
    np.testing.assert_allclose(out1, out0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-10, atol=1e-14)
    for name in grads0:
        np.testing.assert_allclose(grads1[name], grads0[name], rtol=1e-10, atol=1e-14, err_msg=name)


# kernels with taps that read only padding: the CONV run with those taps left out must give what
# every tap gives (outputs, the input's and the weights' gradients: zero for the left-out taps)
CUT_CASES = [
    ("1x1x6", "CONV 3x3 4 pad=1 act=relu", "dense 1x1"),            # ResNet's last stage on 32x32
    ("2x2x5", "CONV 3x3/2 4 pad=1 bias=false act=prelu", "dense 2x2"),  # ... and its way in
    ("1x4x3", "CONV 3x3 4 pad=1 act=tanh", "im2col 1x3"),          # rows only
    ("2x3x4", "CONV 5x5 3 pad=2 act=elu", "im2col 3x5"),   # rows only, a 3x5 window
    ("1x1x2", "CONV 4x4/2 3 pad=2 round=ceil", "im2col 3x3"),      # ceil: a last window past it
    ("1x1x30", "CONV 3x3 26 pad=same", "dense 1x1"),
]


@pytest.mark.parametrize("inp,chain,runs_as", CUT_CASES)
def test_left_out_taps_give_what_every_tap_gives(monkeypatch, inp, chain, runs_as):
    from netc.runtime.backends.cpu import conv
    spec = f"input {inp}\n{chain}"
    net = netc.compile(spec)
    (node,) = [n for n in net.nodes if n.kind == "CONV"]
    impl = backends.implementation("CONV", "cpu")
    assert impl.algorithm(node.hyper, node.in_shapes, 3) == runs_as
    rng = np.random.default_rng(8)
    x, target, results = None, None, []
    for cut in (False, True):
        monkeypatch.setattr(conv, "CUT_TAPS", cut)
        model = randomized(spec)
        if x is None:
            x = rng.standard_normal((3,) + model.net.input_shape)
            target = rng.standard_normal((3,) + model.net.output_shape)
        out = model.forward(x)
        _, grads, dx = model.loss_and_grads(x, target, loss="mse", input_grad=True)
        results.append((out, grads, dx))
    (out0, grads0, dx0), (out1, grads1, dx1) = results
    np.testing.assert_allclose(out1, out0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-10, atol=1e-14)
    for name in grads0:
        np.testing.assert_allclose(grads1[name], grads0[name], rtol=1e-10, atol=1e-14, err_msg=name)


def test_reached_taps_of_resnets_last_stage():
    from netc.compiler.shapes import reached_taps
    h = {"kernel": (3, 3), "stride": (1, 1), "pad": (1, 1), "round": "floor"}
    cut, rows, cols = reached_taps(h, (512, 1, 1))
    assert (cut["kernel"], cut["pad"], rows, cols) == ((1, 1), (0, 0), range(1, 2), range(1, 2))
    cut, rows, cols = reached_taps(dict(h, stride=(2, 2)), (256, 2, 2))
    assert (cut["kernel"], cut["pad"], rows, cols) == ((2, 2), (0, 0), range(1, 3), range(1, 3))
    assert reached_taps(h, (256, 2, 2)) is None  # every tap reaches a pixel of a 2x2 plane
    assert reached_taps(h, (64, 8, 8)) is None


@pytest.mark.parametrize("wide", [True, False])
@pytest.mark.parametrize("inp,chain", [("8x10x3", "CONV 3x3 5 pad=1 act=relu"),
                                       ("12x11x1", "CONV 5x5 6 act=tanh"),
                                       ("9x9x2", "CONV 7x7 3 pad=3 bias=false")])
def test_direct_passes_for_either_register_file(monkeypatch, inp, chain, wide):
    """The direct CONV's passes are shaped for AVX-512's 32 vector registers or AVX2's 16
    (direct.wide_passes: nine taps or three for four filters, the weight gradient two filters
    a pass or one): both ways, with filters that do not fill a block of four and taps past
    nine, the outputs and gradients im2col gives."""
    from netc.runtime.backends.cpu import conv
    from netc.runtime.backends.cpu.conv import direct
    monkeypatch.setattr(direct, "WIDE", wide)
    rng = np.random.default_rng(11)
    results = []
    for force in ("im2col", "direct"):
        monkeypatch.setattr(conv, "FORCE", force)
        model = randomized(f"input {inp}\n{chain}")
        x = rng.standard_normal((3,) + model.net.input_shape) if not results else results[0][0]
        target = rng.standard_normal((3,) + model.net.output_shape) if not results else results[0][1]
        out = model.forward(x)
        _, grads, dx = model.loss_and_grads(x, target, loss="mse", input_grad=True)
        results.append((x, target, out, grads, dx))
    assert direct.wide_passes() is wide
    (_, _, out0, g0, dx0), (_, _, out1, g1, dx1) = results
    np.testing.assert_allclose(out1, out0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-10, atol=1e-14)
    for name in g0:
        np.testing.assert_allclose(g1[name], g0[name], rtol=1e-10, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("chain", ["CONV 3x3/2 6 pad=1 act=relu", "CONV 2x3 5 pad=1x0 act=tanh bias=false"])
def test_im2col_backward_split_by_filters_gives_the_same(monkeypatch, chain):
    """Where a thread's share of the batch is shallow, im2col's backward splits by filters
    (wide_backward: each thread unfolds the whole batch, then its filters' weight gradient and
    its samples' input gradient): the same gradients as the split by samples, on threads."""
    from netc.runtime.backends.cpu import conv, jit
    if jit.workers() < 2:
        pytest.skip("one worker: nothing to split")
    spec = f"input 9x9x3\n{chain}"
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 3, 9, 9))
    monkeypatch.setattr(conv, "FORCE", "im2col")
    monkeypatch.setattr(conv, "KEEP_COLS_BYTES", 0)
    monkeypatch.setattr(jit, "GRAIN", 1)  # every layer on every worker
    results, seen = [], []
    real = conv.wide_backward
    monkeypatch.setattr(conv, "wide_backward", lambda *a: seen.append(real(*a)) or seen[-1])
    for filters in (10 ** 9, 1):
        monkeypatch.setattr(conv, "WIDE_MIN_FILTERS", filters)
        model = randomized(spec)
        target = np.random.default_rng(6).standard_normal((5,) + model.net.output_shape)
        loss, grads, dx = model.loss_and_grads(x, target, loss="mse", input_grad=True)
        results.append((loss, grads, dx))
    assert seen == [False, True]  # by samples, then by filters
    (l0, g0, dx0), (l1, g1, dx1) = results
    assert l1 == pytest.approx(l0, rel=1e-13)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-10, atol=1e-14)
    for name in g0:
        np.testing.assert_allclose(g1[name], g0[name], rtol=1e-10, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("algorithm,chain", [("im2col", "CONV 3x3/2 4 pad=1 act=relu"),
                                             ("im2col", "CONV 3x3 5 pad=1 act=tanh"),
                                             ("winograd", "CONV 3x3 5 pad=1 act=tanh"),
                                             ("winograd", "CONV 3x3 4 act=relu")])
def test_backward_chunks_need_not_be_forwards(monkeypatch, algorithm, chain):
    """im2col's and Winograd's backward take their own chunks of samples (at least
    BACKWARD_MIN_DEPTH output pixels; im2col where it unfolds again): a sample a chunk in
    forward, then chunks of 2 or 3 with a short last one in backward, give what one chunk for
    the whole batch gives."""
    from netc.runtime.backends.cpu import conv
    from netc.runtime.backends.cpu.conv import im2col, winograd
    spec = f"input 9x9x3\n{chain}"
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 3, 9, 9))
    monkeypatch.setattr(conv, "FORCE", algorithm)
    monkeypatch.setattr(conv, "KEEP_COLS_BYTES", 0)
    _, oh, ow = randomized(spec).net.output_shape
    pixels = oh * ow
    results = []
    for chunk, depth in ((1 << 30, 0), (1, 2 * pixels), (1, 3 * pixels - 10)):
        monkeypatch.setattr(im2col, "CHUNK_BYTES", chunk)
        monkeypatch.setattr(winograd, "CHUNK_BYTES", chunk)
        monkeypatch.setattr(conv, "BACKWARD_MIN_DEPTH", depth)
        model = randomized(spec)
        assert model._impls[model.net.nodes[-1].name].algorithm(
            model.net.nodes[-1].hyper, [model.net.input_shape]) == algorithm
        target = np.random.default_rng(4).standard_normal((7,) + model.net.output_shape)
        _, grads, dx = model.loss_and_grads(x, target, loss="mse", input_grad=True)
        results.append((model.forward(x), grads, dx))
    for out, grads, dx in results[1:]:
        np.testing.assert_allclose(out, results[0][0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, results[0][2], rtol=1e-10, atol=1e-14)
        for name in grads:
            np.testing.assert_allclose(grads[name], results[0][1][name], rtol=1e-10, atol=1e-14,
                                       err_msg=name)

@pytest.mark.parametrize("inp,chain,tiles,expected", [
    ("32x32x1", "CONV 5x5 6", True, "direct"),                  # LeNet's C1: one channel, long rows
    ("14x14x6", "CONV 5x5 16", True, "im2col"),                 # LeNet's C2: rows too short
    ("32x32x32", "CONV 3x3 32 pad=1", False, "winograd"),       # a small VGG's second layer ...
    ("32x32x32", "CONV 3x3 32 pad=1", True, "winograd"),        # ... with netc's own GEMM tiles
    ("32x32x24", "CONV 3x3 32 pad=1", False, "direct"),         # 24 channels on the BLAS: a tie
    ("32x32x24", "CONV 3x3 32 pad=1", True, "winograd"),
    ("32x32x32", "CONV 3x3 16 pad=1", False, "direct"),         # few filters on the BLAS ...
    ("32x32x32", "CONV 3x3 16 pad=1", True, "winograd"),        # ... not with the tiles
    ("32x32x32", "CONV 3x3 24 pad=1", False, "winograd"),
    ("32x32x32", "CONV 5x5 32 pad=2", False, "direct"),         # not 3x3: no Winograd
    ("32x32x16", "CONV 3x3 32 pad=1", True, "direct"),
    ("16x16x32", "CONV 3x3 64 pad=1", False, "winograd"),       # ... its third: 16x16 planes
    ("32x32x64", "CONV 3x3 64 pad=1", False, "winograd F4"),    # 64 channels, 4x4 tiles
    ("8x8x16", "CONV 3x3 16 pad=1", False, "im2col"),           # 16 channels: a tie, im2col
    ("16x16x24", "CONV 3x3 24 pad=1", False, "winograd"),       # from 24 channels on
    ("32x32x3", "CONV 3x3/2 16 pad=1", True, "im2col"),         # strided
    ("32x32x8", "CONV 3x3 16 pad=1 groups=2", True, "im2col"),  # grouped
    ("5x5x8", "CONV 5x5 16", True, "dense"),                    # the window covers the input
])
def test_conv_algorithm_rule(inp, chain, tiles, expected):
    """The rule README's table gives, on the layers it was measured on."""
    net = netc.compile(f"input {inp}\n{chain}")
    (node,) = [n for n in net.nodes if n.kind == "CONV"]
    assert backends.implementation("CONV", "cpu").algorithm(node.hyper, node.in_shapes, None,
                                                            tiles) == expected


@pytest.mark.parametrize("inp,filters,batch,expected", [
    ("4x4x128", 128, 64, "winograd F4"),  # ResNet-18's last stage at 32x32: wide, a big batch
    ("4x4x512", 512, 16, "im2col"),     # ... a small batch: the weights' transforms would dominate
    ("4x4x512", 512, None, "im2col"),   # a batch of one (summary)
    ("4x4x64", 64, 64, "im2col"),       # too few channels for 4x4 planes
    ("8x8x64", 64, None, "winograd"),   # 64 output pixels: Winograd at any batch
    ("2x2x512", 512, 1024, "im2col"),   # planes under 4x4: not measured, im2col
])
def test_winograd_on_small_planes_takes_the_batch(inp, filters, batch, expected):
    """Below WINOGRAD_MIN_OUTPUT output pixels, Winograd only for 128 channels or more and a
    batch whose output planes add up to WINOGRAD_SMALL_PIXELS."""
    net = netc.compile(f"input {inp}\nCONV 3x3 {filters} pad=1")
    (node,) = [n for n in net.nodes if n.kind == "CONV"]
    assert backends.implementation("CONV", "cpu").algorithm(node.hyper, node.in_shapes, batch,
                                                            True) == expected


@pytest.mark.parametrize("inp,filters,batch,expected", [
    ("16x16x128", 128, 64, "winograd F4"),  # ResNet-18's second stage at 32x32: F(4x4, 3x3)
    ("8x8x256", 256, 16, "winograd F4"),    # 1024 output pixels over the batch: F(4x4) ...
    ("8x8x256", 256, 8, "winograd"),        # ... 512: the weights' transforms would cost more
    ("4x4x512", 512, 64, "winograd F4"),    # ResNet-18's last stage at batch 64: 1024 pixels
    ("16x16x128", 64, 64, "winograd F4"),   # 64 filters
    ("32x32x64", 64, 64, "winograd F4"),    # 64 channels
    ("16x16x128", 128, 2, "winograd"),      # 512 pixels over the batch
    ("8x8x64", 64, 64, "winograd F4"),      # 64 channels on 8x8
    ("32x32x48", 64, 64, "winograd F4"),    # 24 to 63 channels on planes of 8x8 or more ...
    ("16x16x128", 24, 64, "winograd F4"),
    ("8x8x32", 32, 64, "winograd F4"),
    ("16x16x128", 32, 16, "winograd F4"),   # ... for 4096 pixels a batch or more
    ("8x8x32", 32, 16, "winograd"),         # (1024)
    ("16x16x128", 16, 64, "winograd"),      # too few filters
    ("6x6x256", 256, 256, "winograd"),      # 6x6: nine 2x2 tiles take as many products as 4x4's
    ("7x7x256", 256, 256, "winograd F4"),   # 7x7: four 4x4 tiles, sixteen 2x2
])
@pytest.mark.parametrize("tiles", [False, True])
def test_winograd_tile_rule(inp, filters, batch, expected, tiles):
    """F(4x4, 3x3) from WINOGRAD4_MIN_CHANNELS channels and filters (WINOGRAD4_NARROW_CHANNELS on
    planes of WINOGRAD4_NARROW_PLANE pixels, for WINOGRAD4_NARROW_PIXELS a batch), at least
    WINOGRAD4_MIN_PIXELS output pixels over the batch
    and planes its tiles cover with fewer products, whether the GEMMs run on the BLAS or on
    netc's own tiles; netc bench names it."""
    net = netc.compile(f"input {inp}\nCONV 3x3 {filters} pad=1")
    (node,) = [n for n in net.nodes if n.kind == "CONV"]
    got = backends.implementation("CONV", "cpu").algorithm(node.hyper, node.in_shapes, batch,
                                                           tiles)
    assert got == expected


@pytest.mark.parametrize("xshape,filters,parts,expected", [
    ((64, 512, 4, 4), 512, 2, True),     # ResNet-18's last stage at b64: 32 tiles a thread
    ((64, 512, 4, 4), 512, 1, False),    # one thread: nothing to split by positions
    ((16, 256, 8, 8), 256, 2, True),
    ((64, 256, 8, 8), 256, 2, True),     # 128 tiles a thread (MIN_ROWS_4) over 128 channels ...
    ((64, 64, 16, 16), 64, 2, False),    # ... not over 64
    ((128, 256, 8, 8), 256, 2, False),   # 256 tiles a thread
    ((64, 128, 16, 16), 128, 2, False),  # 512 tiles a thread: by samples
    ((256, 256, 8, 8), 256, 2, False),   # 512 tiles a thread
    ((64, 4096, 4, 4), 4096, 16, False),  # 36 x 64 x 4096 values a matrix set: too many
])
def test_winograd_4x4_by_positions_rule(xshape, filters, parts, expected):
    """F(4x4) runs by positions where a thread's share holds fewer than MIN_ROWS_4 tiles, or as
    many over POSITIONS_WIDE_CHANNELS channels and filters (and the batch's transformed tiles fit
    POSITIONS_MAX_VALUES), else by samples."""
    from netc.runtime.backends.cpu import conv
    assert conv.by_positions(xshape, filters, xshape[2], xshape[3], parts) is expected


@pytest.mark.parametrize("group", [1, 3, 8])
def test_winograd_4x4_transforms_take_tiles_in_groups(monkeypatch, group):
    """The F(4x4) transforms take a row's tiles in groups (as many as the scratch, sized for
    TILE_GROUP, holds; here 5 tiles a row: the output's in groups of 2, 3 or all 5, the last
    one partial): outputs and gradients as im2col's, by samples and by positions."""
    from netc.runtime.backends.cpu.conv import winograd
    from netc.runtime.backends.cpu import conv
    spec = "input 19x18x5\nCONV 3x3 7 pad=1 act=relu"
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 5, 19, 18))
    target = rng.standard_normal((2, 7, 19, 18))
    runs = []
    for force, positions in (("im2col", False), ("winograd", False), ("winograd", True)):
        monkeypatch.setattr(conv, "FORCE", force)
        monkeypatch.setattr(conv, "WINOGRAD_TILE", 4)
        monkeypatch.setattr(conv, "WINOGRAD_POSITIONS", positions)
        monkeypatch.setattr(winograd, "TILE_GROUP", group)
        model = randomized(spec)
        out = model.forward(x)
        _, grads, dx = model.loss_and_grads(x, target, loss="mse", input_grad=True)
        _, alone = model.loss_and_grads(x, target, loss="mse")  # no input gradient: no dV
        runs.append((out, grads, dx, alone))
    for out, grads, dx, alone in runs[1:]:
        np.testing.assert_allclose(out, runs[0][0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, runs[0][2], rtol=1e-10, atol=1e-13)
        for name in grads:
            np.testing.assert_allclose(grads[name], runs[0][1][name], rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(alone[name], runs[0][1][name], rtol=1e-10, atol=1e-13)


@functools.cache
def _terms_over_tiles():
    """winograd._terms_cpu over `tiles` tiles dstep and sstep apart, compiled once for every
    count and add (a closure in the test compiled anew for each: 1.4 s of 12)."""
    import numba

    from netc.runtime.backends.cpu.conv import winograd

    @numba.njit
    def run(dst, src, taps, coef, count, add, n, tiles, dstep, sstep, stride):
        u = np.uint64
        for g in range(tiles):
            winograd._terms_cpu(dst, u(1 + g * dstep), src, u(2 + g * sstep), u(stride), taps,
                                coef, count, u(n), u(add))
    return run


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("add", [False, True])
def test_winograd_terms_sum_each_rows_terms(count, add):
    """_terms_cpu (the weights' transforms' inner loop: up to five terms a pass, the rest one
    pass each) against NumPy, for every count of terms, writing or adding, at three offsets."""
    rng = np.random.default_rng(count)
    n, tiles, dstep, sstep, stride = 5, 3, 7, 11, 4
    src = rng.standard_normal(64)
    taps = np.zeros(6, np.int64)
    taps[:count] = rng.permutation(6)[:count]
    coef = np.zeros(6)
    coef[:count] = rng.standard_normal(count)
    dst = rng.standard_normal(40)
    want = dst.copy()
    for g in range(tiles):
        total = sum(coef[e] * src[2 + g * sstep + taps[e] * stride:][:n] for e in range(count))
        want[1 + g * dstep:1 + g * dstep + n] = (want[1 + g * dstep:][:n] if add else 0) + total
    _terms_over_tiles()(dst, src, taps, coef, count, add, n, tiles, dstep, sstep, stride)
    np.testing.assert_allclose(dst, want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["_bt6_cpu", "_b6_cpu", "_b6_cpu add", "_at6_cpu", "_a4_cpu"])
def test_winograd_4x4_one_sided_products(name, dtype):
    """F(4x4)'s transforms, written out (_bt6_cpu: B^T, _b6_cpu: B, written or added, over three
    tiles; _at6_cpu: A^T; _a4_cpu: A), against the matrices' products in NumPy: dst[q + r*dstep
    + i] = (M d)[r] of d[e] = src[p + e*sstep + i], the other values of dst untouched."""
    from netc.runtime.backends.cpu.conv import winograd
    m = {"_bt6_cpu": winograd._WINO4_BT, "_b6_cpu": winograd._WINO4_BT.T,
         "_at6_cpu": winograd._WINO4_AT, "_a4_cpu": winograd._WINO4_AT.T}[name.split()[0]]
    add = name.endswith("add")
    rng = np.random.default_rng(len(name))
    n, p, q, sstep, dstep, tiles, stile, dtile = 5, 3, 2, 7, 11, 3, 40, 61
    src = rng.standard_normal(200).astype(dtype)
    dst = rng.standard_normal(260).astype(dtype)
    want = dst.astype(np.float64)
    for k in range(tiles if name.startswith("_b6") else 1):
        d = np.stack([src[p + k * stile + e * sstep:][:n] for e in range(m.shape[1])])
        for r, row in enumerate(m @ d):
            at = q + k * dtile + r * dstep
            want[at:at + n] = (want[at:at + n] if add else 0) + row
    u = np.uint64
    fn = getattr(winograd, name.split()[0])
    if name.startswith("_b6"):
        fn(dst, u(q), u(dstep), src, u(p), u(sstep), u(n), u(tiles), u(dtile), u(stile), add)
    else:
        fn(dst, u(q), u(dstep), src, u(p), u(sstep), u(n))
    assert dst.dtype == dtype
    np.testing.assert_allclose(dst, want, rtol=1e-6 if dtype == "float32" else 1e-14, atol=1e-5
                               if dtype == "float32" else 1e-13)


def test_winograd_4x4_float32_rounding(monkeypatch):
    """F(4x4, 3x3) in float32 over 128 channels: outputs and gradients within 2e-5 of im2col's in
    float64 and at most 32x F(2x2, 3x3)'s error (relative to each array's largest value; this
    draw 1.1e-5, 3.3e-6 and 2.9e-6 against F(2x2)'s 6.8e-7, 3.4e-7 and 4.0e-7; the output's
    over eight other draws 6.6e-6 to 1.05e-5, 13-25x F(2x2)'s, as before the weights'
    transforms summed in float64: 6.3e-6 to 9.8e-6, 12-22x)."""
    from netc.runtime.backends.cpu import conv
    spec = "input 8x8x128\nCONV 3x3 128 pad=1"
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 128, 8, 8))
    target = rng.standard_normal((3, 128, 8, 8))
    runs = {}
    for name, how, tile, dtype in (("ref", "im2col", 2, "float64"),
                                   ("f2", "winograd", 2, "float32"),
                                   ("f4", "winograd", 4, "float32")):
        monkeypatch.setattr(conv, "FORCE", how)
        monkeypatch.setattr(conv, "WINOGRAD_TILE", tile)
        model, wide = randomized(spec), None
        if dtype == "float32":
            model, wide = netc.Model(spec, dtype="float32"), model
            for k, v in wide.params.items():
                model.params[k][...] = v
        out = model.forward(x.astype(dtype))
        _, grads, dx = model.loss_and_grads(x.astype(dtype), target.astype(dtype), loss="mse",
                                            input_grad=True)
        (weight,) = [v for k, v in grads.items() if k.endswith(".weight")]
        runs[name] = (out, dx, weight)
    for i, what in enumerate(("output", "input gradient", "weight gradient")):
        ref = runs["ref"][i]
        err = {k: np.abs(runs[k][i] - ref).max() / np.abs(ref).max() for k in ("f2", "f4")}
        assert err["f4"] < 2e-5, (what, err)
        assert err["f4"] < 32 * err["f2"] + 1e-7, (what, err)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-13), ("float32", 1e-5)])
@pytest.mark.parametrize("positions", [16, 36])
def test_winograd_weight_transforms_against_numpy(monkeypatch, dtype, tol, positions):
    """U = G g G^T in both layouts (forward's U^T, backward's U) and the weight gradient
    G^T dU G summed over the parts, on every worker (GRAIN 1), against einsum in float64, for
    F(2x2, 3x3) (16 positions) and F(4x4, 3x3) (36); in float32 within an ulp of the float64
    value rounded (the transforms sum in float64 and round once)."""
    from netc.runtime.backends.cpu import jit
    from netc.runtime.backends.cpu.conv import winograd
    monkeypatch.setattr(jit, "GRAIN", 1)
    rng = np.random.default_rng(8)
    f, c = 7, 5
    w = rng.standard_normal((f, c, 3, 3)).astype(dtype)
    g = winograd._WINO_G if positions == 16 else winograd._WINO4_G
    gg = np.einsum("ai,bj->abij", g, g).reshape(positions, 9)  # (G (x) G), written out
    u_ref = np.einsum("kt,fct->kfc", gg, w.reshape(f, c, 9).astype(np.float64))
    u = winograd._winograd_weights(w, np.empty((positions, f, c), dtype))
    ut = winograd._winograd_weights(w, np.empty((positions, c, f), dtype), transpose=True)
    np.testing.assert_allclose(u, u_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(ut, u_ref.transpose(0, 2, 1), rtol=tol, atol=tol)
    du = rng.standard_normal((3, positions, f, c)).astype(dtype)
    dg = winograd._winograd_weight_grad(du)
    dg_ref = np.einsum("kt,kfc->fct", gg, du.astype(np.float64).sum(axis=0)).reshape(f, c, 3, 3)
    assert dg.dtype == np.dtype(dtype)
    np.testing.assert_allclose(dg, dg_ref, rtol=tol, atol=tol)
    if dtype == "float32":
        for got, want in ((u, u_ref), (ut, u_ref.transpose(0, 2, 1)), (dg, dg_ref)):
            np.testing.assert_array_max_ulp(got, want.astype(np.float32), maxulp=1)


@pytest.mark.parametrize("inp,chain", [("7x9x16", "CONV 3x3 5 pad=1 act=relu"),
                                       ("8x6x3", "CONV 3x3 4 pad=2x1")])
def test_winograd_transforms_by_tiles_or_by_rows(monkeypatch, inp, chain):
    """Winograd's input and input-gradient transforms go tile by tile, or a row of tiles at a
    time up to ROWS_MAX_CHANNELS channels: both ways give im2col's output and gradients (odd
    planes, partial tiles, uneven padding)."""
    from netc.runtime.backends.cpu import conv
    from netc.runtime.backends.cpu.conv import winograd
    rng = np.random.default_rng(12)
    results = {}
    for how, rows_max in (("im2col", 64), ("winograd", 0), ("winograd", 64)):
        monkeypatch.setattr(conv, "FORCE", how)
        monkeypatch.setattr(winograd, "ROWS_MAX_CHANNELS", rows_max)
        model = randomized(f"input {inp}\n{chain}")
        if not results:
            x = rng.standard_normal((3,) + model.net.input_shape)
            target = rng.standard_normal((3,) + model.net.output_shape)
        _, grads, dx = model.loss_and_grads(x, target, loss="mse", input_grad=True)
        results[how, rows_max] = (model.forward(x), grads, dx)
    out0, g0, dx0 = results["im2col", 64]
    for key in (("winograd", 0), ("winograd", 64)):
        out, g, dx = results[key]
        np.testing.assert_allclose(out, out0, rtol=1e-12, atol=1e-12, err_msg=str(key))
        np.testing.assert_allclose(dx, dx0, rtol=1e-10, atol=1e-14, err_msg=str(key))
        for name in g0:
            np.testing.assert_allclose(g[name], g0[name], rtol=1e-10, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("c,h,w,ph,pw", [(3, 5, 20, 1, 2), (16, 9, 16, 0, 0), (40, 4, 7, 2, 1),
                                         (1, 2, 33, 0, 3), (40, 30, 31, 1, 2), (20, 30, 30, 0, 1)])
def test_channels_last_copies_against_numpy(c, h, w, ph, pw):
    """The copies between channels-first planes and padded channels-last images (Winograd's pad
    and unpad, the fold's last step): rows shorter and longer than their blocks, a partial last
    block, channels from 1 to 40, every value placed (the pad's border zero, nothing else
    touched); samples above common.PLANES_BLOCK_BYTES go in blocks of channels (40 channels of
    30x31: a partial last block either way; 20 of 30x30 in float64 only)."""
    from netc.runtime.backends.cpu.common import PLANES_BLOCK_BYTES, _channels_first_cpu
    from netc.runtime.backends.cpu.conv import winograd
    rng = np.random.default_rng(9)
    for dtype in (np.float32, np.float64):
        img = rng.standard_normal((c, h, w)).astype(dtype)
        if (c, h) == (40, 30):
            assert img.nbytes > PLANES_BLOCK_BYTES
        xp = np.full((h + 2 * ph + 1, w + 2 * pw + 1, c), np.nan, dtype)
        winograd._winograd_pad_cpu(img, ph, pw, xp)
        want = np.zeros_like(xp)
        want[ph:ph + h, pw:pw + w] = img.transpose(1, 2, 0)
        assert np.array_equal(xp, want)
        back = np.full_like(img, np.nan)
        _channels_first_cpu(xp.reshape(-1), xp.shape[1] * c, ph, pw, back)
        assert np.array_equal(back, img)


@pytest.mark.parametrize("algorithm", ["winograd", "im2col"])
def test_float32_convolution_agrees_with_float64(monkeypatch, algorithm):
    """The kernels' float32 paths (Winograd's transforms, im2col's unfolding) on odd planes, 16
    channels and a fused activation, against im2col in float64: values and gradients within
    float32's rounding."""
    from netc.runtime.backends.cpu import conv
    spec = "input 7x9x16\nCONV 3x3 17 pad=1 act=tanh - CONV 3x3 5 pad=1x0 act=relu"
    x = np.random.default_rng(2).standard_normal((3, 16, 7, 9))
    results = []
    for dtype, force in (("float64", "im2col"), ("float32", algorithm)):
        monkeypatch.setattr(conv, "FORCE", force)
        model = netc.Model(spec, dtype=dtype, seed=0)
        node = model.net.nodes[1]
        assert model._impls[node.name].algorithm(node.hyper, node.in_shapes, 3) == force
        target = np.random.default_rng(3).standard_normal((3,) + model.net.output_shape)
        _, grads, dx = model.loss_and_grads(x.astype(dtype), target.astype(dtype), loss="mse",
                                            input_grad=True)
        results.append((model.forward(x.astype(dtype)), grads, dx))
    (y64, g64, dx64), (y32, g32, dx32) = results
    assert y32.dtype == np.float32 and dx32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx32, dx64, rtol=1e-4, atol=1e-5)
    for name in g64:
        assert g32[name].dtype == np.float32, name
        np.testing.assert_allclose(g32[name], g64[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_samples_per_chunk():
    from netc.runtime.backends.cpu.common import samples_per_chunk
    # about chunk_bytes of workspace: 4 samples of 250 bytes in 1000
    assert samples_per_chunk(64, 2, 250, 16, 0, 1000) == 4
    # at least one sample, however big
    assert samples_per_chunk(64, 2, 5000, 16, 0, 1000) == 1
    # at least `depth` output pixels: 100 pixels at 16 a sample take 7
    assert samples_per_chunk(64, 2, 5000, 16, 100, 1000) == 7
    # at most a worker's share of the batch: 10 samples over 4 workers, 3
    assert samples_per_chunk(10, 4, 1, 16, 0, 1000) == 3


@pytest.mark.parametrize("n,k,u", [(5, 3, 2), (2, 6, 7), (4, 4, 4)])
def test_fc_splits_by_samples_or_units_alike(n, k, u):
    """FC splits its GEMMs over samples, or over units / input features where those outnumber
    the samples: each way against NumPy, values and gradients."""
    model = randomized(f"input {k}\nFC {u}")
    rng = np.random.default_rng(n)
    x, target = rng.standard_normal((n, k)), rng.standard_normal((n, u))
    (name,) = {p.split(".")[0] for p in model.params}
    w, b = model.params[f"{name}.weight"], model.params[f"{name}.bias"]
    out = x @ w.T + b
    np.testing.assert_allclose(model.forward(x), out, rtol=1e-12)
    for _ in range(2):  # the second step, on reused buffers
        loss, grads, dx = model.loss_and_grads(x, target, loss="mse", input_grad=True)
    dz = 2 * (out - target) / out.size
    np.testing.assert_allclose(loss, np.mean((out - target) ** 2), rtol=1e-12)
    np.testing.assert_allclose(grads[f"{name}.weight"], dz.T @ x, rtol=1e-10)
    np.testing.assert_allclose(grads[f"{name}.bias"], dz.sum(0), rtol=1e-10)
    np.testing.assert_allclose(dx, dz @ w, rtol=1e-10)


# FC's forward runs two ways (dense.py: netc's own dot-product loops, or a GEMM); the backward is
# GEMMs either way, with the fused activation's gradient and the bias sums in its kernel. Each
# way against NumPy: odd batches (a last sample paired with itself), unit counts that do not fill
# the nine-unit groups, every activation fused or kept apart (PReLU; none at the output).
FC_CASES = [(17, 30, 13, "relu"), (5, 9, 9, "tanh"), (16, 7, 20, "sigmoid"), (1, 11, 4, "elu"),
            (19, 12, 10, "leaky"), (3, 40, 1, "prelu"), (2, 5, 3, "none"),
            # on a sequence (T x D: "seq 5x4"), per step over the N*T rows (an odd count pairs
            # its last row with itself); dW and db sum over every step, dx is N x T x D
            (3, "seq 5x4", 7, "relu"), (1, "seq 3x10", 9, "tanh"), (4, "seq 7x2", 3, "prelu"),
            (2, "seq 9x3", 11, "none")]


@pytest.mark.parametrize("algorithm", ["dots", "dots-pairs", "gemm"])
@pytest.mark.parametrize("n,k,u,act", FC_CASES)
def test_fc_algorithms_against_numpy(monkeypatch, algorithm, n, k, u, act):
    """(dots: one sample a pass, as with AVX2; dots-pairs: two, as with AVX-512.)"""
    from netc.runtime.backends.cpu import dense
    monkeypatch.setattr(dense, "FORCE", algorithm.split("-")[0])
    monkeypatch.setattr(dense, "PAIRS", algorithm == "dots-pairs")
    model = randomized(f"input {k}\nFC {u} act={act} - FC 3 act=tanh")
    rng = np.random.default_rng(n + u)
    x = rng.standard_normal((n,) + model.net.input_shape)
    target = rng.standard_normal((n,) + model.net.output_shape)
    w, b = model.params["fc1.weight"], model.params["fc1.bias"]
    slope = model.params.get("fc1.slope", 0.01)
    z = x @ w.T + b
    h = naive.act(act, z, slope)
    w2, b2 = model.params["fc2.weight"], model.params["fc2.bias"]
    out = np.tanh(h @ w2.T + b2)
    np.testing.assert_allclose(model.forward(x), out, rtol=1e-12, atol=1e-14)
    for _ in range(2):  # the second step, on reused buffers
        loss, grads, dx = model.loss_and_grads(x, target, loss="mse", input_grad=True)
    dout = 2 * (out - target) / out.size * (1 - out ** 2)
    dh = dout @ w2
    eps = 1e-6  # dh/dz by central differences of the reference activation, elementwise
    dz = dh * (naive.act(act, z + eps, slope) - naive.act(act, z - eps, slope)) / (2 * eps)

    def rows(a):  # a row per sample, or per step of a sequence
        return a.reshape(-1, a.shape[-1])
    assert dx.shape == x.shape
    np.testing.assert_allclose(loss, np.mean((out - target) ** 2), rtol=1e-12)
    np.testing.assert_allclose(grads["fc2.weight"], rows(dout).T @ rows(h), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(grads["fc1.weight"], rows(dz).T @ rows(x), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(grads["fc1.bias"], rows(dz).sum(0), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dx, dz @ w, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("n,k,tiles,expected", [
    (64, 784, False, "dots"),   # an MLP's first layer, rows of 3 KiB, against the BLAS
    (64, 400, False, "dots"),   # LeNet's C5 as an FC
    (64, 120, False, "gemm"),   # rows too short for the 18 sums to pay
    (64, 4096, False, "gemm"),  # nine rows of 16 KiB do not stay in L1
    (1, 4096, False, "dots"),   # a batch too small for a GEMM's packing
    (64, 784, True, "gemm"),    # netc's own tiles beat dots from 16 samples on
    (16, 120, True, "gemm"),
    (15, 784, True, "dots"),
])
def test_fc_algorithm_rule(monkeypatch, n, k, tiles, expected):
    """On a CPU with 64-byte vectors (AVX-512), where the dots loop vectorizes that wide."""
    from netc.runtime.backends.cpu import dense
    monkeypatch.setattr(dense, "wide_vectors", lambda: True)
    net = netc.compile(f"input {k}\nFC 256")
    (node,) = [m for m in net.nodes if m.kind == "FC"]
    assert backends.implementation("FC", "cpu").algorithm(node.hyper, node.in_shapes, n,
                                                          tiles) == expected


@pytest.mark.parametrize("n,k,expected", [(64, 784, "gemm"), (64, 400, "gemm"), (16, 784, "gemm"),
                                          (15, 784, "dots"), (1, 4096, "dots")])
def test_fc_algorithm_rule_with_avx2_vectors(monkeypatch, n, k, expected):
    """With 32-byte vectors the BLAS's GEMM beats the dots loop from DOTS_SMALL_BATCH samples on,
    whatever the rows hold."""
    from netc.runtime.backends.cpu import dense
    monkeypatch.setattr(dense, "wide_vectors", lambda: False)
    assert dense.linear_algorithm(n, k, 4, tiles=False, rows=0) == expected


@pytest.mark.parametrize("n,itemsize,expected", [(1, 4, "gemm"), (15, 4, "gemm"), (32, 4, "gemm"),
                                                 (64, 4, "gemm"), (1, 8, "dots"), (15, 8, "dots")])
def test_fc_algorithm_rule_with_the_avx2_tiles_for_few_rows(monkeypatch, n, itemsize, expected):
    """On AVX2 the tiles run float32's A B^T of up to 32 rows: the GEMM beats the dots at any
    batch there (float64 stays on the BLAS, where the dots win below DOTS_SMALL_BATCH)."""
    from netc.runtime.backends.cpu import dense
    monkeypatch.setattr(dense, "wide_vectors", lambda: False)
    assert dense.linear_algorithm(n, 784, itemsize, tiles=False, rows=32) == expected


@pytest.mark.parametrize("plane", [(1, 1), (3, 2)])
def test_gap_gradient_is_a_fresh_array(plane):
    """GAP's input gradient: dy / (H W) on every pixel, in a C-contiguous array that may be
    written (a broadcast view is read-only, and over 1x1 planes contiguous already: the kernels
    after it then compiled a second, read-only version of themselves, 1.8 s each in ResNet-18's
    first step)."""
    from netc.runtime.backends.cpu.pool import GlobalAvgPool
    dy = np.arange(6, dtype=np.float32).reshape(2, 3)
    (dx,), grads = GlobalAvgPool().backward({}, {}, (2, 3) + plane, dy, None)
    assert grads == {} and dx.shape == (2, 3) + plane and dx.dtype == np.float32
    assert dx.flags.c_contiguous and dx.flags.writeable and dx.flags.owndata
    np.testing.assert_array_equal(dx, np.broadcast_to((dy / (plane[0] * plane[1]))[:, :, None, None],
                                                      dx.shape))

