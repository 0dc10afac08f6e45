"""The GEMM the kernels call: compiled (NumPy's CBLAS through LLVM), its NumPy stand-in for
machines without a 64-bit CBLAS, and the plain-Python form, against NumPy's matmul."""
import ctypes

import numpy as np
import pytest

from netc.compiler import jit

CASES = [(False, False), (True, False), (False, True), (True, True)]


def operands(ta, tb, dtype, rng):
    m, n, k = 5, 7, 3
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    want = 1.5 * ((a.T if ta else a) @ (b.T if tb else b)) + 0.5 * c
    return a, b, c, want


@pytest.mark.parametrize("ta,tb", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_gemm(ta, tb, dtype):
    import numba
    jit.setup()

    @numba.njit
    def call(ta, tb, a, b, c):
        jit.gemm(ta, tb, 1.5, a, b, 0.5, c)

    a, b, c, want = operands(ta, tb, dtype, np.random.default_rng(0))
    call(ta, tb, a, b, c)
    np.testing.assert_allclose(c, want, rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_compiled_gemm_on_row_blocks():
    """Rows at a stride (a column block of a wider array) and beta = 0 on a garbage output."""
    import numba
    jit.setup()

    @numba.njit
    def call(a, b, c):
        jit.gemm(False, False, 1.0, a[:, 2:5], b, 0.0, c[1:3])

    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 8)), rng.standard_normal((3, 4))
    c = np.full((4, 4), np.nan)
    call(a, b, c)
    np.testing.assert_allclose(c[1:3], a[:, 2:5] @ b, rtol=1e-12)
    assert np.isnan(c[0]).all() and np.isnan(c[3]).all()


@pytest.mark.parametrize("ta,tb", CASES)
def test_numpy_stand_in_and_python_form(ta, tb):
    from netc.compiler import blas
    fn = blas._numpy_gemm(ctypes.c_double)
    rng = np.random.default_rng(2)
    a, b, c, want = operands(ta, tb, np.float64, rng)
    ptr = lambda arr: arr.ctypes.data  # noqa: E731
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    fn(blas.ROW_MAJOR, blas.TRANS if ta else blas.NO_TRANS, blas.TRANS if tb else blas.NO_TRANS,
       m, n, k, 1.5, ptr(a), a.shape[1], ptr(b), b.shape[1], 0.5, ptr(c), n)
    np.testing.assert_allclose(c, want, rtol=1e-12)
    a, b, c, want = operands(ta, tb, np.float64, rng)
    jit.gemm(ta, tb, 1.5, a, b, 0.5, c)
    np.testing.assert_allclose(c, want, rtol=1e-12)
