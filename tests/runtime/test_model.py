"""The Model API: bad inputs get errors naming the argument; checkpoints round-trip."""
import numpy as np
import pytest

import netc
from netc import DataError, NetcError

LENET = "specs/lenet5.net"


@pytest.fixture(scope="module")
def model(request):
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return netc.Model(os.path.join(root, LENET), seed=0)


def error(fn, *args, **kw):
    with pytest.raises(NetcError) as e:
        fn(*args, **kw)
    return e.value


def test_forward_shape_and_probabilities(model):
    p = model.forward(np.random.default_rng(0).standard_normal((3, 1, 32, 32)))
    assert p.shape == (3, 10) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    assert model.forward(np.zeros((1, 32, 32))).shape == (1, 10)  # one sample


def test_param_names_and_layouts(model):
    assert model.params["conv1.weight"].shape == (6, 1, 5, 5)
    assert model.params["fc1.weight"].shape == (84, 120)
    assert set(model.params) == set(model.net.param_shapes())


def test_wrong_input_shape(model):
    e = error(model.forward, np.zeros((2, 1, 28, 28)))
    assert isinstance(e, DataError) and e.message.startswith("x: expected shape (N, 1, 32, 32)")
    assert "(2, 1, 28, 28)" in e.message
    e = error(model.forward, np.zeros((2, 32, 32, 1)))
    assert "transpose(0, 3, 1, 2)" in e.hint


def test_nan_and_dtype(model):
    x = np.zeros((2, 1, 32, 32))
    x[1, 0, 3, 4] = np.nan
    assert "NaN or Inf (first at index (1, 0, 3, 4))" in error(model.forward, x).message
    assert "numeric array" in error(model.forward, np.array([["a"]])).message
    assert "numeric array" in error(model.forward, np.zeros((1, 1, 32, 32), complex)).message


def test_bad_labels(model):
    x = np.zeros((3, 1, 32, 32))
    e = error(model.loss_and_grads, x, np.array([0, 1, 10]))
    assert e.message.startswith("y: labels must lie in 0..9") and "10" in e.message
    assert "3 targets" in error(model.loss_and_grads, x, np.array([0, 1])).message
    assert "integer class labels" in error(model.loss_and_grads, x, np.array([0.5, 1, 2])).message
    assert "NaN" in error(model.loss_and_grads, x, np.array([0, np.inf, 1])).message
    e = error(model.loss_and_grads, x, np.zeros((3, 10)), loss="hinge")
    assert "-1 or +1" in e.message
    assert "unknown loss" in error(model.loss_and_grads, x, np.array([0, 1, 2]), loss="l7").message


def test_bad_model_arguments():
    assert "backend" in error(netc.Model, "input 2\nFC 1", backend="tpu").message
    assert "float32 or float64" in error(netc.Model, "input 2\nFC 1", dtype="int8").message


def test_save_and_load_round_trip(model, tmp_path):
    path = str(tmp_path / "m.npz")
    model.save(path)
    again = netc.Model.load(path)
    x = np.random.default_rng(1).standard_normal((2, 1, 32, 32))
    np.testing.assert_array_equal(again.forward(x), model.forward(x))
    with np.load(path, allow_pickle=False) as f:
        assert "conv1.weight" in f.files and str(f["__netc_hash__"]) == model.net.spec_hash
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary file left


def test_loading_and_moving_draw_no_initial_weights(model, tmp_path, monkeypatch):
    """Model.load, to() and with_state copy the arrays they are given into blank ones: the
    initializers (seconds for VGG-16) are never called, and the arrays are the given ones,
    copies, every one checked."""
    import netc.runtime.model as model_module
    path = str(tmp_path / "m.npz")
    model.save(path)

    def refuse(*a, **k):
        raise AssertionError("initial weights drawn")
    monkeypatch.setattr(model_module, "init_node", refuse)
    x = np.random.default_rng(1).standard_normal((2, 1, 32, 32))
    for other in (netc.Model.load(path), model.to("cpu"),
                  netc.Model.with_state(model.net, model.state())):
        np.testing.assert_array_equal(other.forward(x), model.forward(x))
        for k, v in model.state().items():
            assert other.state()[k] is not v and np.array_equal(other.state()[k], v)
    state = dict(model.state())
    del state["conv1.bias"]
    e = error(netc.Model.with_state, model.net, state, source="my arrays")
    assert "my arrays lacks 1 array(s), e.g. conv1.bias" in e.message
    state["conv1.bias"] = np.full(model.state()["conv1.bias"].shape, np.nan, np.float32)
    assert "NaN" in error(netc.Model.with_state, model.net, state).message


def test_load_refuses_another_network(model, tmp_path):
    path = str(tmp_path / "m.npz")
    model.save(path)
    e = error(netc.Model.load, path, spec="input 32x32x1\nCONV 5x5 6 - FC 10")
    assert "different network" in e.message
    assert "no such checkpoint" in error(netc.Model.load, str(tmp_path / "none.npz")).message
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert "cannot read checkpoint" in error(netc.Model.load, str(tmp_path / "junk.npz")).message


def test_input_gradient_is_not_overwritten_by_the_next_step():
    model = netc.Model("input 6x6x2\nCONV 3x3 3 act=relu - OUT 2 softmax", dtype="float64")
    x, y = np.random.default_rng(0).random((2, 2, 6, 6)), np.array([0, 1])
    _, _, dx = model.loss_and_grads(x, y, input_grad=True)
    kept = dx.copy()
    model.loss_and_grads(3 * x, y, input_grad=True)
    np.testing.assert_array_equal(dx, kept)


def test_workspace_views_are_remembered_until_their_workspace_grows():
    """Context.scratch gives the same view for the same tag, dtype and shape from step to step;
    once the workspace grows, its views of the old array go (nothing keeps it alive), and a
    view of the new one is as asked."""
    from netc.runtime.backends.context import Context, Memory
    memory = Memory()
    ctx = Context(memory, True, None, True)
    small = ctx.scratch("t", (2, 3), np.float32)
    assert ctx.scratch("t", (2, 3), np.dtype(np.float32)) is small
    assert ctx.scratch("t", [2, 3], np.float32) is small  # a shape given as a list
    assert ctx.scratch("t", (3, 2), np.float32).base is small.base  # the same workspace
    big = ctx.scratch("t", (4, 5), np.float32)
    assert big.shape == (4, 5) and big.base is not small.base
    kept = [flat for flat, _ in memory.views.values()]
    assert all(flat is big.base for flat in kept) and len(kept) == 1
    again = ctx.scratch("t", (2, 3), np.float32)
    assert again.shape == (2, 3) and again.base is big.base
    assert ctx.scratch("t", (2, 3), np.float64).dtype == np.float64  # a workspace of its own


def test_steps_reuse_memory_and_nodes_share_workspaces():
    """After the first step, a step allocates nothing new in the model; the kernels' workspaces
    are shared by all nodes (one per tag), not kept per node."""
    model = netc.Model("input 12x12x24\nCONV 3x3 24 pad=1 act=relu - CONV 3x3 24 pad=1 act=relu - "
                       "POOL - CONV 5x5 8 - CONV 2x2 8 - OUT 3 softmax", dtype="float64")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 24, 12, 12)), rng.integers(0, 3, 5)
    model.loss_and_grads(x, y)
    arena = {k: id(v) for k, v in model.memory.arena.items()}
    workspace = {k: id(v) for k, v in model.memory.workspace.items()}
    for _ in range(2):
        model.loss_and_grads(x, y)
    assert {k: id(v) for k, v in model.memory.arena.items()} == arena
    assert {k: id(v) for k, v in model.memory.workspace.items()} == workspace
    pooled = {k: [id(a) for a in v] for k, v in model.memory.pool.arrays.items()}
    model.loss_and_grads(x, y)
    assert {k: [id(a) for a in v] for k, v in model.memory.pool.arrays.items()} == pooled
    tags = {key[0] for key in workspace}
    assert len(workspace) == len(tags)  # one per tag, whichever conv asked
    assert {"v", "m", "cols"} <= tags  # Winograd's (the 3x3 convs) and im2col's (5x5, 2x2)


def test_the_models_large_arrays_start_on_a_cache_line(tmp_path):
    """Memory.empty: from ALIGN_FROM bytes on, an array starts on an ALIGN-byte boundary
    (NumPy's large arrays start 16 bytes into a page), C-ordered and writable, of the shape
    and type asked; smaller ones as NumPy makes them. A CPU model's workspaces, buffers and
    pooled arrays are such arrays."""
    from netc.runtime.backends.context import ALIGN, ALIGN_FROM, Memory
    for shape, dtype in [((64, 6, 28, 28), np.float32), (ALIGN_FROM // 8, np.float64),
                         ([3, 700], np.int32), ((0, ALIGN_FROM), np.float32),
                         (np.array([40, 50]), np.float32), (np.int64(2000), np.float32)]:
        a = Memory.empty(shape, dtype)
        assert a.shape == tuple(np.atleast_1d(shape)) and a.dtype == dtype
        assert a.flags.c_contiguous and a.flags.writeable
        if a.nbytes >= ALIGN_FROM:
            assert a.ctypes.data % ALIGN == 0
        a[...] = 1
        assert (a == 1).all()
    model = netc.Model("input 16x16x3\nCONV 5x5 32 act=relu - POOL - OUT 4 softmax")
    rng = np.random.default_rng(0)
    model.loss_and_grads(rng.standard_normal((8, 3, 16, 16)), rng.integers(0, 4, 8))
    memory = model.memory
    large = [a for a in [*memory.arena.values(), *memory.workspace.values(),
                         *(a for arrays in memory.pool.arrays.values() for a in arrays)]
             if a.nbytes >= ALIGN_FROM]
    assert len(large) >= 4 and all(a.ctypes.data % ALIGN == 0 for a in large)
    # and its large parameters, drawn (init.scaled_normal) or loaded (the backend's from_host)
    path = str(tmp_path / "m.npz")
    model.save(path)
    for m in (model, netc.Model.load(path)):
        weight = m.params["conv1.weight"]
        assert weight.nbytes >= ALIGN_FROM and weight.ctypes.data % ALIGN == 0
    np.testing.assert_array_equal(netc.Model.load(path).params["conv1.weight"],
                                  model.params["conv1.weight"])


def test_drawn_weights_become_the_models_without_a_copy(monkeypatch):
    """A weight drawn at its own aligned block (init.scaled_normal, Memory.empty) is the model's
    array as it is: copied, VGG-11's 133M weights took seconds more and twice the memory. Only
    an array that shares memory with another goes to the backend as a copy."""
    from netc.runtime import init
    from netc.runtime.backends.context import ALIGN_FROM, Memory
    drawn = []
    draw = init.scaled_normal
    monkeypatch.setattr(init, "scaled_normal", lambda *a: drawn.append(draw(*a)) or drawn[-1])
    model = netc.Model("input 32x32x3\nCONV 5x5 64 - FLATTEN - FC 10")
    assert [d.nbytes >= ALIGN_FROM for d in drawn] == [True, True]
    assert model.params["conv1.weight"] is drawn[0] and model.params["fc1.weight"] is drawn[1]
    assert Memory.whole(drawn[0]) and Memory.whole(np.empty(3))
    assert not Memory.whole(drawn[0][1:]) and not Memory.whole(np.empty(10)[:5])


def test_a_checkpoint_reads_into_aligned_arrays_the_loaded_model_keeps(tmp_path, monkeypatch):
    """read_checkpoint reads each array into memory of its own, on a cache line where large,
    with np.load's values (C and Fortran order); Model.load keeps those arrays rather than
    copying them (a VGG-11 checkpoint's load held its 530 MB twice), and from_arrays copies
    unless asked to adopt. What does not fit is copied: another type, a view, a large array
    off a cache line, one array under two names."""
    from netc.runtime import model as model_module
    from netc.runtime.backends.context import ALIGN, ALIGN_FROM, Memory
    from netc.runtime.model import read_checkpoint
    spec = "input 16x16x3\nCONV 3x3 64 - FLATTEN - FC 10"
    model = netc.Model(spec, seed=3)
    path = str(tmp_path / "m.npz")
    model.save(path)
    arrays = read_checkpoint(path)
    with np.load(path) as raw:
        assert set(raw.files) == set(arrays)
        for k in raw.files:
            np.testing.assert_array_equal(arrays[k], raw[k])
            assert arrays[k].dtype == raw[k].dtype
    big = [k for k in model.params if model.params[k].nbytes >= ALIGN_FROM]
    assert big == ["conv1.weight", "fc1.weight"]
    for k in big:
        assert Memory.whole(arrays[k]) and arrays[k].ctypes.data % ALIGN == 0
    # a Fortran-ordered array keeps its values and order
    f = np.asfortranarray(np.arange(24.0).reshape(4, 6))
    np.savez(tmp_path / "f.npz", f=f)
    back = read_checkpoint(str(tmp_path / "f.npz"))["f"]
    np.testing.assert_array_equal(back, f)
    assert back.flags.f_contiguous

    kept = netc.Model.from_arrays(arrays, path, adopt=True)
    assert all(kept.params[k] is arrays[k] for k in big)
    np.testing.assert_array_equal(kept.forward(np.ones((2, 3, 16, 16), np.float32)),
                                  model.forward(np.ones((2, 3, 16, 16), np.float32)))
    copied = netc.Model.from_arrays(read_checkpoint(path), path)
    assert not any(np.shares_memory(copied.params[k], arrays[k]) for k in big)
    read = []
    monkeypatch.setattr(model_module, "read_checkpoint",
                        lambda *a: read.append(read_checkpoint(*a)) or read[-1])
    loaded = netc.Model.load(path)
    assert all(loaded.params[k] is read[0][k] for k in big)

    # what does not fit is a copy
    state = {k: v.copy() for k, v in model.state().items()}
    tries = [np.empty(state["fc1.weight"].shape, np.float32) for _ in range(64)]
    unaligned = next(a for a in tries if a.ctypes.data % ALIGN)  # (NumPy's own: 16 bytes apart)
    assert Memory.whole(unaligned)
    unaligned[...] = state["fc1.weight"]
    state["fc1.weight"] = unaligned
    state["conv1.weight"] = state["conv1.weight"].astype(np.float64)
    m = netc.Model.with_state(model.net, state, adopt=True)
    assert m.params["fc1.weight"] is not unaligned and m.params["conv1.weight"].dtype == np.float32
    twins = netc.Model("input 8\nFC 8 - FC 8", seed=0)
    one = np.ones((8, 8), np.float32)
    m = netc.Model.with_state(twins.net, {**twins.state(), "fc1.weight": one,
                                          "fc2.weight": one}, adopt=True)
    assert m.params["fc1.weight"] is one and m.params["fc2.weight"] is not one


CHAIN = "input 8x8x2\n" + " - ".join(["CONV 3x3 2 pad=1 act=tanh"] * 4) + " - FC 3"
# (a RES whose sum feeds one CONV hands that CONV's reused gradient buffer to both its inputs)
BRANCHES = """input 6x6x2
CONV 3x3 4 pad=1 - RES[CONV 3x3 4 pad=1 act=relu - CONV 3x3 4 pad=1] - CONV 3x3 4 pad=1
RES[CONV 3x3 4 pad=1 - RELU] - CONV 3x3 4 pad=1
CONCAT[CONV 1x1 2 | POOL max 3x3/1 pad=1 | RES[CONV 3x3 4 pad=1]] - FC 3"""


# (a BN's output is dead once the RELU after it has run: RELU keeps its own output alone)
NORMALIZED = ("input 8x8x2\nCONV 3x3 2 pad=1 - BN - RELU - CONV 3x3 2 pad=1 - BN - LEAKY - "
              "CONV 3x3 2 pad=1 - BN - TANH - FC 3")


@pytest.mark.parametrize("spec", [CHAIN, BRANCHES, NORMALIZED],
                         ids=["chain", "branches", "normalized"])
def test_outputs_and_input_gradients_share_arrays_by_shape(monkeypatch, spec):
    """An output is dead once the nodes that read it have run forward, unless a cache keeps it;
    an input gradient once the node before it has run backward: either's array serves a later
    node of the same shape. The four tanh CONVs keep their outputs (tanh's gradient is computed
    from them): four arrays, and one more for the input gradients, which take the outputs'
    arrays as their caches die (before: an array per output and two gradients). CONV - BN -
    RELU three times keeps the CONVs' and the activations' outputs; the BNs' three share one,
    which the gradients take in backward: 7 arrays, not 9 + 2. The numbers are those of a model
    that shares nothing, over steps on different inputs."""
    from netc.runtime.backends import context
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((3, 2) + (8, 8) if spec is not BRANCHES else (3, 2, 6, 6)),
                rng.standard_normal((3, 3))) for _ in range(3)]
    shared = netc.Model(spec, dtype="float64", seed=1)
    got = [shared.loss_and_grads(x, t, loss="mse", input_grad=True) for x, t in batches]
    if spec is not BRANCHES:
        (buffers,) = [v for (shape, _), v in shared.memory.pool.arrays.items()
                      if shape == (3, 2, 8, 8)]
        assert len(buffers) == (5 if spec is CHAIN else 7)
    monkeypatch.setattr(context.Pool, "release", lambda self, arr, live: None)
    alone = netc.Model(spec, dtype="float64", seed=1)
    for (x, t), (loss, grads, dx) in zip(batches, got):
        loss1, grads1, dx1 = alone.loss_and_grads(x, t, loss="mse", input_grad=True)
        assert loss == loss1
        np.testing.assert_array_equal(dx, dx1)
        for name in grads1:
            np.testing.assert_array_equal(grads[name], grads1[name], err_msg=name)


def test_the_pool_keeps_the_last_pass_shapes_only():
    """Batches of other sizes (a last partial batch, an evaluation's chunks) do not each leave
    a set of arrays behind: a pass lets go of the shapes the pass before it did not take; a pass
    that keeps nothing for backward (forward) leaves the pool alone. The numbers stay those of a
    model that shares nothing."""
    spec = "input 6x6x2\nCONV 3x3 3 pad=1 - BN - RELU - OUT 3 softmax"
    rng = np.random.default_rng(0)
    model = netc.Model(spec, dtype="float64", seed=1)
    got, before = [], 0
    for n in (4, 4, 5, 6, 7, 5):
        x, t = rng.standard_normal((n, 2, 6, 6)), rng.integers(0, 3, n)
        model.forward(x)  # (fresh arrays: the pool is untouched)
        got.append((x, t, model.loss_and_grads(x, t)))
        # this pass's shapes, and the pass before's until the next pass starts
        assert {n} <= {shape[0] for shape, _ in model.memory.pool.arrays} <= {0, n, before}
        before = n
    model.evaluate(x, t)
    assert {shape[0] for shape, _ in model.memory.pool.arrays} <= {0, 5}
    alone = netc.Model(spec, dtype="float64", seed=1)
    alone.memory.pool.release = lambda arr, live: None
    for x, t, (loss, grads) in got:
        loss1, grads1 = alone.loss_and_grads(x, t)
        assert loss == loss1
        for name in grads1:
            np.testing.assert_array_equal(grads[name], grads1[name], err_msg=name)


def test_an_output_that_views_a_pooled_array_is_the_callers_own():
    """A network ending in FLATTEN hands back a view of its CONV's pooled output: the caller gets
    a copy, which later passes leave alone."""
    model = netc.Model("input 4x4x2\nCONV 3x3 2 pad=1 - FLATTEN - ID", dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    x1, x2, t = rng.standard_normal((3, 2, 4, 4)), rng.standard_normal((3, 2, 4, 4)), np.zeros((3, 32))
    _, out1 = model.evaluate(x1, t, loss="mse")
    kept = out1.copy()
    model.loss_and_grads(x2, t, loss="mse")
    model.evaluate(x2, t, loss="mse")
    np.testing.assert_array_equal(out1, kept)
    np.testing.assert_allclose(out1, model.forward(x1))


def test_grad_pool_keeps_a_buffer_that_is_still_pending():
    from netc.runtime.backends.context import Memory, Pool
    pool = Pool(Memory()).start()
    a = pool.take((2, 3), np.float64)
    pool.release(a.reshape(6)[:3], live=[a[1]])  # a view of it is still pending somewhere
    assert pool.take((2, 3), np.float64) is not a
    pool.release(a.reshape(6), live=[])  # dead now: the next node of that shape gets it
    pool.release(a, live=[])  # (once)
    assert pool.take((2, 3), np.float64) is a and pool.take((2, 3), np.float64) is not a
    assert pool.take((3, 2), np.float64) is not a  # another shape: another buffer


# ---- the input normalization: part of a trained model, applied by predict() ---------------------
TINY = "input 4x4x1\nCONV 3x3 2 act=relu - OUT 3 softmax"


def test_a_fresh_model_has_no_normalization_and_predict_is_forward():
    m = netc.Model(TINY, seed=1)
    x = np.random.default_rng(0).uniform(0, 16, (5, 1, 4, 4)).astype(np.float32)
    assert m.normalization is None
    np.testing.assert_array_equal(m.predict(x), m.forward(x))


def test_predict_normalizes_then_forward_and_the_checkpoint_keeps_it(tmp_path):
    """Model.load gives the trained model's predictions: the normalization travels with save(),
    load() and to(); forward() stays the network on normalized inputs."""
    m = netc.Model(TINY, seed=1)
    mean, std = np.full((1, 1, 1), 8, np.float32), np.full((1, 1, 1), 4, np.float32)
    m.normalization = (mean, std)
    x = np.random.default_rng(0).uniform(0, 16, (5, 1, 4, 4)).astype(np.float32)
    want = m.forward((x - mean) / std)
    np.testing.assert_allclose(m.predict(x), want, rtol=1e-6)
    assert not np.allclose(m.forward(x), want)
    np.testing.assert_allclose(m.normalize(x), (x - 8) / 4, rtol=1e-6)

    loaded = netc.Model.load(m.save(str(tmp_path / "m.npz")))
    np.testing.assert_array_equal(loaded.normalization[0], mean)
    np.testing.assert_array_equal(loaded.normalization[1], std)
    np.testing.assert_allclose(loaded.predict(x), want, rtol=1e-6)
    np.testing.assert_allclose(loaded.to("cpu").predict(x), want, rtol=1e-6)
    with np.load(tmp_path / "m.npz") as f:  # the keys netc train writes, which netc predict reads
        assert float(f["__netc_norm_mean__"].ravel()[0]) == 8

    m.normalization = None
    with np.load(m.save(str(tmp_path / "plain.npz"))) as f:
        assert "__netc_norm_mean__" not in f
    assert netc.Model.load(str(tmp_path / "plain.npz")).normalization is None


def test_a_bad_normalization_is_refused():
    m = netc.Model(TINY, seed=1)
    e = error(setattr, m, "normalization", (np.zeros(3), 1.0))
    assert isinstance(e, DataError)
    assert "normalization mean has shape (3), which does not fit" in e.message
    assert "std holds 0" in error(setattr, m, "normalization", (0.0, 0.0)).message
    assert "(mean, std) or None" in error(setattr, m, "normalization", 0.5).message
    m.normalization = (0.5, 2)  # one value for every input
    np.testing.assert_allclose(m.normalize(np.ones((1, 1, 4, 4))), 0.25)
