"""netc's own GEMM tiles (runtime/backends/cpu/tiles.py) against NumPy in float64, in every geometry
(AVX-512's and AVX2's: both run on either CPU): every tile body (C = op(A) B: 1..rows rows, a
full-width tile or 1..vectors vectors with a masked last one, K over its blocks; C = A B^T: every
nt_rows x nt_cols corner, K over its chunks), both float types, alpha and beta, views with
strided rows, and nothing written outside C; and which GEMMs run on them per CPU."""
import numba
import numpy as np
import pytest

from netc.runtime.backends.cpu import blas, jit, tiles
from netc.runtime.backends.cpu.tiles import GEOMETRIES, gemm_tiles, gemm_tiles_nt

KEYS = sorted(GEOMETRIES)
# (m, n, k) in AVX-512's float32 widths (scaled to the others): rows 1..6 and a remainder, widths
# that end on every vector count, K = 0 and 1, K over AVX2's blocks (k_block)
SHAPES = [(1, 1, 1), (6, 64, 5), (7, 65, 3), (5, 16, 2), (4, 17, 9), (3, 33, 4), (2, 48, 1),
          (9, 63, 6), (12, 130, 11), (13, 200, 0), (11, 10, 7), (8, 40, 600)]
# shapes whose panels pack (tiles.packs: B's rows 4 KiB apart), over K in PACK_K blocks and a
# remainder, with a narrow last panel, and m not a multiple of the rows
PACKED = [(25, 130, 300), (31, 70, 520), (24, 200, 256)]


def tiled(driver, key, *args):
    """driver(*args, key) (gemm_tiles or gemm_tiles_nt) on the overload that the kernels' GEMM
    (tiles.entry) runs: the key a literal, alpha and beta of the arrays' float type, every
    array 2-D of layout 'A'. A plain call from Python types the call anew each time (the key is
    an int64 until `literally` retries it as a literal: 40 ms a call, most of this file's 22 s),
    and one typed by its arguments compiled the driver again for every mix of layouts and for
    float32 arrays with float64 scalars, none of them the one the kernels run (34 compilations,
    ~1.1 s each, of a cold test run: now one a driver, float type and geometry)."""
    real = numba.from_dtype(next(a.dtype for a in args if isinstance(a, np.ndarray)))
    sig = tuple(numba.types.Array(real, 2, "A") if isinstance(a, np.ndarray)
                else real if isinstance(a, float) else numba.typeof(a) for a in args)
    return driver.compile(sig + (numba.types.literal(key),))(*args, key)


def lanes(dtype, key):
    return GEOMETRIES[key].vector_bytes // np.dtype(dtype).itemsize


def check(call, product, m, n, k, dtype, alpha, beta, rng):
    """call(c) on a view inside a bigger C (NaN where beta is 0: C is not read) against
    alpha * product + beta * C in float64, and nothing written outside the view."""
    tol = 1e-5 if dtype == np.float32 else 1e-13
    c_full = rng.standard_normal((m + 2, n + 7)).astype(dtype)
    before = c_full.copy()
    c = c_full[1:m + 1, 2:n + 2]
    if beta == 0.0:
        c[...] = np.nan
    call(c)
    want = alpha * product + (beta * before[1:m + 1, 2:n + 2] if beta else 0.0)
    np.testing.assert_allclose(c, want, rtol=tol, atol=tol * max(1, k),
                               err_msg=f"m={m} n={n} k={k} alpha={alpha} beta={beta}")
    outside = np.ones(c_full.shape, bool)
    outside[1:m + 1, 2:n + 2] = False
    np.testing.assert_array_equal(c_full[outside], before[outside])


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
def test_tiles_against_numpy(dtype, ta, key):
    jit.setup()
    rng = np.random.default_rng(0)
    g = GEOMETRIES[key]
    panel = g.vectors * lanes(dtype, key)
    for (m, n, k), packed in [(s, False) for s in SHAPES] + [(s, True) for s in PACKED]:
        # scale n from 4 vectors of 16 to this geometry's panel, to hit the same bodies
        n = max(1, n * panel // 64)
        ldb = 4096 // np.dtype(dtype).itemsize if packed else n + 5
        assert tiles.packs(m, k, ldb, panel, np.dtype(dtype).itemsize, g.rows) == packed
        for alpha, beta in ((1.0, 0.0), (0.75, 1.0), (-1.5, 0.5)):
            a_full = rng.standard_normal(((k, m + 3) if ta else (m, k + 3))).astype(dtype)
            a = a_full[:, 1:m + 1] if ta else a_full[:, 2:k + 2]  # rows at a stride
            b = rng.standard_normal((k, ldb)).astype(dtype)[:, 3:n + 3]
            product = (a.T if ta else a).astype(np.float64) @ b.astype(np.float64)
            check(lambda c: tiled(gemm_tiles, key, ta, alpha, a, b, beta, c), product, m, n, k, dtype, alpha,
                  beta, rng)


def test_panels_pack_where_b_is_big_and_many_rows_read_it():
    """tiles.packs on the layers that led to it, and each of its conditions alone keeping a
    panel in place."""
    g = GEOMETRIES[64]
    panel = g.vectors * 16
    assert tiles.packs(64, 256, 4096, panel, 4, g.rows)  # the small VGG's FC input gradient
    assert tiles.packs(128, 64, 4096, panel, 4, g.rows)  # ... and weight gradient
    assert not tiles.packs(64, 256, 784, panel, 4, g.rows)  # 3136 bytes apart: the MLP's
    assert not tiles.packs(64, 256, 512, panel, 4, g.rows)  # 2 KiB apart
    assert not tiles.packs(64, 256, panel, panel, 4, g.rows)  # rows no longer than the panel
    assert not tiles.packs(64, 7, 1024, panel, 4, g.rows)  # B stays in L1 (28 KiB)
    assert not tiles.packs(16, 256, 1024, panel, 4, g.rows)  # 3 blocks of rows: LeNet's C2's
    assert tiles.packs(24, 256, 512, panel // 2, 8, g.rows)  # float64: rows of 4 KiB


# (m, n, k) for C = A B^T: every corner of a tile up to 4 x 6 and their remainders, K ending on a
# masked vector, K = 0, and K over one chunk (NT_CHUNK) so that chunks accumulate
NT_SHAPES = [(1, 1, 1), (4, 6, 16), (5, 7, 17), (3, 11, 5), (2, 13, 0), (9, 4, 1500), (8, 12, 64),
             (2, 2, 3), (3, 4, 9), (1, 5, 8), (4, 3, 40)]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inner_product_tiles_against_numpy(dtype, key):
    jit.setup()
    rng = np.random.default_rng(1)
    for m, n, k in NT_SHAPES:
        for alpha, beta in ((1.0, 0.0), (0.75, 1.0), (-1.5, 0.5)):
            a = rng.standard_normal((m, k + 3)).astype(dtype)[:, 1:k + 1]
            b = rng.standard_normal((n, k + 2)).astype(dtype)[:, 2:k + 2]
            product = a.astype(np.float64) @ b.T.astype(np.float64)
            check(lambda c: tiled(gemm_tiles_nt, key, alpha, a, b, beta, c), product, m, n, k, dtype, alpha,
                  beta, rng)


@pytest.mark.parametrize("key", KEYS)
def test_float64_tiles_keep_float64(key):
    """1 + 2^-30 is not a float32: summed in float32 anywhere, the result would be k."""
    jit.setup()
    k = 4096
    a = np.full((1, k), 1.0 + 2.0 ** -30)
    b = np.ones((k, 64))
    c = np.empty((1, 64))
    tiled(gemm_tiles, key, False, 1.0, a, b, 0.0, c)
    np.testing.assert_array_equal(c, k * (1.0 + 2.0 ** -30))
    tiled(gemm_tiles_nt, key, 1.0, a, b.T.copy(), 0.0, c)
    np.testing.assert_array_equal(c, k * (1.0 + 2.0 ** -30))


@pytest.mark.parametrize("key,fma", [(64, "llvm.fma.v16f32"), (32, "llvm.fma.v8f32")])
def test_geometry_sets_the_vectors(key, fma):
    """Each geometry's IR holds vectors of its width: 64 bytes, 16 floats; 32 bytes, 8 (compiled
    afresh: Numba shows no IR of cached code)."""
    jit.setup()
    a, b, c = np.ones((7, 5), np.float32), np.ones((5, 9), np.float32), np.empty((7, 9), np.float32)
    ab, abt = numba.njit(gemm_tiles.py_func), numba.njit(gemm_tiles_nt.py_func)
    ab(False, 1.0, a, b, 0.0, c, key)
    abt(1.0, a, a, 0.0, c[:, :7], key)
    for fn in (ab, abt):
        (text,) = fn.inspect_llvm().values()
        assert fma in text
        assert key == 64 or "llvm.fma.v16f32" not in text


def test_vector_width_and_routes_follow_the_cpu():
    avx512 = {name: True for name in tiles.AVX512 + tiles.AVX2}
    avx2 = {"avx": True, "avx2": True, "fma": True}
    assert tiles.vector_bytes(avx512) == 64 and tiles.vector_bytes(avx2) == 32
    assert tiles.vector_bytes({**avx512, "avx512f": False}) == 32
    assert tiles.vector_bytes({"avx": True, "sse4.2": True}) is None
    assert GEOMETRIES[64] == (64, 6, 4, 4, 6, 0)  # AVX-512's tiles as they were measured
    assert blas.own_tiles(avx512) and blas.own_tiles_nt(avx512)
    assert blas.tile_routes(avx2) == blas.TILE_ROUTES[32] == (True, False, 64, 32)  # thin ones
    assert not blas.own_tiles(avx2) and not blas.own_tiles_nt(avx2)  # (not every shape)
    assert not blas.own_tiles({"avx": True}) and not blas.own_tiles_nt({"avx": True})


def test_numba_cpu_features_set_the_width_the_tiles_take():
    """NUMBA_CPU_FEATURES's +name/-name apply on top of the host's features, as Numba applies
    them to the code it compiles: -avx512f makes an AVX-512 host's kernels AVX2 ones."""
    avx512 = {name: True for name in tiles.AVX512 + tiles.AVX2}
    assert tiles.target_features(avx512, None) == avx512
    assert tiles.vector_bytes(tiles.target_features(avx512, "-avx512f")) == 32
    assert tiles.vector_bytes(tiles.target_features(avx512, " -avx512f, -avx2 ,+sse4.2")) is None
    widened = tiles.target_features({"avx": True, "sse4.2": True}, "+avx2,+fma,junk,,+")
    assert tiles.vector_bytes(widened) == 32 and "junk" not in widened and "" not in widened


@pytest.mark.skipif(tiles.host_vector_bytes() is None, reason="no tiles on this CPU")
def test_the_entry_calls_its_drivers_by_symbol_and_multiplies():
    """The C entry the kernels call declares the two drivers' symbols (linking.py) and holds
    none of their code (compiled into it, they cost 4 s more of every first run), and its
    products are right through both."""
    import ctypes

    from numba import types
    from numba.core.ccallback import CFunc

    from netc.runtime.backends.cpu import linking

    key = tiles.host_vector_bytes()
    sig = tiles.entry_signature(types.float32)
    made = CFunc(tiles._entry(key), (sig.args, sig.return_type), locals={}, options={})
    made.compile()  # (uncached: its code can be read)
    code = made._library.get_llvm_str()
    view, literal = types.Array(types.float32, 2, "A"), types.IntegerLiteral(key)
    for driver, argtypes in ((gemm_tiles_nt, (types.float32, view, view, types.float32, view, literal)),
                             (gemm_tiles, (types.boolean, types.float32, view, view, types.float32,
                                           view, literal))):
        name = linking.symbol(driver, argtypes)
        assert any(line.startswith("declare") and name in line for line in code.splitlines())
        assert driver.overloads[argtypes].fndesc.llvm_func_name not in code
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 9, 13), dtype=np.float32)
    fn = ctypes.CFUNCTYPE(None, *[ctypes.c_ssize_t] * 5 + [ctypes.c_float, ctypes.c_void_p,
                          ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_float,
                          ctypes.c_void_p, ctypes.c_ssize_t])(made.address)
    for tb, bb, want in ((1, b, a @ b.T), (0, np.ascontiguousarray(b.T), a @ b.T)):
        c = np.zeros((9, 9), np.float32)
        fn(0, tb, 9, 9, 13, 1.0, a.ctypes.data, 13, bb.ctypes.data, bb.shape[1], 0.0,
           c.ctypes.data, 9)
        np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)
