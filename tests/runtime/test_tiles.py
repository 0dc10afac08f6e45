"""netc's own GEMM tiles (runtime/backends/cpu/tiles.py) against NumPy in float64: every tile body (C = op(A) B:
1-6 rows, a full-width tile or 1-4 vectors with a masked last one; C = A B^T: 1-4 by 1-6), both
float types, alpha and beta, views with strided rows, and nothing written outside C."""
import numpy as np
import pytest

from netc.runtime.backends.cpu import blas, jit
from netc.runtime.backends.cpu.tiles import gemm_tiles, gemm_tiles_nt

# (m, n, k): rows 1..6 and a remainder, widths that end on every vector count, K = 0 and 1
SHAPES = [(1, 1, 1), (6, 64, 5), (7, 65, 3), (5, 16, 2), (4, 17, 9), (3, 33, 4), (2, 48, 1),
          (9, 63, 6), (12, 130, 11), (13, 200, 0), (11, 10, 7)]


def lanes(dtype):
    return 64 // np.dtype(dtype).itemsize


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
def test_tiles_against_numpy(dtype, ta):
    jit.setup()
    rng = np.random.default_rng(0)
    for m, n, k in SHAPES:
        # float64 widths are in vectors of 8, float32's of 16: scale n to hit the same bodies
        n = max(1, n * lanes(dtype) // 16)
        for alpha, beta in ((1.0, 0.0), (0.75, 1.0), (-1.5, 0.5)):
            a_full = rng.standard_normal(((k, m + 3) if ta else (m, k + 3))).astype(dtype)
            a = a_full[:, 1:m + 1] if ta else a_full[:, 2:k + 2]  # rows at a stride
            b = rng.standard_normal((k, n + 5)).astype(dtype)[:, 3:n + 3]
            product = (a.T if ta else a).astype(np.float64) @ b.astype(np.float64)
            check(lambda c: gemm_tiles(ta, alpha, a, b, beta, c), product, m, n, k, dtype, alpha,
                  beta, rng)


# (m, n, k) for C = A B^T: rows 1..4 and cols 1..6 of a tile and their remainders, K ending on a
# masked vector, K = 0, and K over one chunk (NT_CHUNK) so that chunks accumulate
NT_SHAPES = [(1, 1, 1), (4, 6, 16), (5, 7, 17), (3, 11, 5), (2, 13, 0), (9, 4, 1500), (8, 12, 64)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inner_product_tiles_against_numpy(dtype):
    jit.setup()
    rng = np.random.default_rng(1)
    for m, n, k in NT_SHAPES:
        for alpha, beta in ((1.0, 0.0), (0.75, 1.0), (-1.5, 0.5)):
            a = rng.standard_normal((m, k + 3)).astype(dtype)[:, 1:k + 1]
            b = rng.standard_normal((n, k + 2)).astype(dtype)[:, 2:k + 2]
            product = a.astype(np.float64) @ b.T.astype(np.float64)
            check(lambda c: gemm_tiles_nt(alpha, a, b, beta, c), product, m, n, k, dtype, alpha,
                  beta, rng)


def test_float64_tiles_keep_float64():
    """1 + 2^-30 is not a float32: summed in float32 anywhere, the result would be k."""
    jit.setup()
    k = 4096
    a = np.full((1, k), 1.0 + 2.0 ** -30)
    b = np.ones((k, 64))
    c = np.empty((1, 64))
    gemm_tiles(False, 1.0, a, b, 0.0, c)
    np.testing.assert_array_equal(c, k * (1.0 + 2.0 ** -30))
    gemm_tiles_nt(1.0, a, b.T.copy(), 0.0, c)
    np.testing.assert_array_equal(c, k * (1.0 + 2.0 ** -30))


def test_own_tiles_only_with_avx512():
    avx512 = {name: True for name in ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")}
    assert blas.own_tiles(avx512)
    assert not blas.own_tiles({**avx512, "avx512f": False})
    assert not blas.own_tiles({"avx2": True, "fma": True})
