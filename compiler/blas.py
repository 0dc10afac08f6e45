"""GEMM for the kernels: C = alpha op(A) op(B) + beta C, called from inside Numba code.

Numba's own np.dot goes through SciPy's BLAS, which here is 1.3-2x slower than the OpenBLAS that
NumPy's wheel bundles on the small shapes a layer has (a 32x288x1024 conv GEMM: 260 us against
197 us, one thread), and it cannot accumulate (beta) or take a leading dimension. So `gemm` calls
cblas_?gemm of NumPy's BLAS directly: the function's address is given to LLVM under a fixed name,
which keeps the compiled kernels cacheable (the address is looked up again in every process).
Where no 64-bit-integer CBLAS can be found, the same names lead to NumPy through ctypes: slower,
and still correct.

Imported by jit.setup() only: it needs numba.
"""
from __future__ import annotations

import ctypes
import glob
import os

import numpy as np
from llvmlite import binding as llvm
from numba import types
from numba.extending import overload

from .jit import gemm

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
_I32, _I64 = types.int32, types.int64


def _signature(real):
    return types.void(_I32, _I32, _I32, _I64, _I64, _I64, real, _I64, _I64, _I64, _I64, real, _I64, _I64)


_SGEMM = types.ExternalFunction("netc_cblas_sgemm", _signature(types.float32))
_DGEMM = types.ExternalFunction("netc_cblas_dgemm", _signature(types.float64))
_keep: list = []  # ctypes objects whose addresses LLVM holds


def _find_cblas():
    """(sgemm, dgemm) ctypes functions of a CBLAS with 64-bit integers, NumPy's first."""
    folders = [os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs"),
               os.path.join(os.path.dirname(np.__file__), ".dylibs")]
    candidates = [p for folder in folders for p in sorted(glob.glob(os.path.join(folder, "*blas*")))]
    try:  # and the BLAS libraries already loaded (NumPy's, wherever it lives: conda, system)
        from threadpoolctl import threadpool_info
        candidates += [info["filepath"] for info in threadpool_info() if info["user_api"] == "blas"]
    except Exception:  # pragma: no cover - threadpoolctl's view is only a bonus here
        pass
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_", "64_"), ("", "64_"), ("", "_64")):
            try:
                return lib[f"{prefix}cblas_sgemm{suffix}"], lib[f"{prefix}cblas_dgemm{suffix}"]
            except AttributeError:
                continue
    return None


def _numpy_gemm(ctype):
    """A cblas_?gemm stand-in (row-major only): jit.gemm's NumPy form on views of the pointers,
    for machines without a 64-bit CBLAS."""
    proto = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_int64,
                             ctypes.c_int64, ctypes.c_int64, ctype, ctypes.c_int64, ctypes.c_int64,
                             ctypes.c_int64, ctypes.c_int64, ctype, ctypes.c_int64, ctypes.c_int64)

    def view(ptr, rows, cols, ld):
        flat = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctype)), ((rows - 1) * ld + cols,))
        return np.lib.stride_tricks.as_strided(flat, (rows, cols), (ld * flat.itemsize, flat.itemsize))

    def call(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        a = view(a, *((k, m) if ta == TRANS else (m, k)), lda)
        b = view(b, *((n, k) if tb == TRANS else (k, n)), ldb)
        gemm(ta == TRANS, tb == TRANS, alpha, a, b, beta, view(c, m, n, ldc))

    return proto(call)


def bind():
    """Give LLVM the addresses behind netc_cblas_sgemm / netc_cblas_dgemm (once per process)."""
    if _keep:
        return
    found = _find_cblas()
    if found is None:
        found = (_numpy_gemm(ctypes.c_float), _numpy_gemm(ctypes.c_double))
    _keep.extend(found)
    for name, fn in zip(("netc_cblas_sgemm", "netc_cblas_dgemm"), found):
        llvm.add_symbol(name, ctypes.cast(fn, ctypes.c_void_p).value)


@overload(gemm, jit_options={"cache": True})
def _gemm_overload(ta, tb, alpha, a, b, beta, c):
    fn, real = (_SGEMM, np.float32) if c.dtype == types.float32 else (_DGEMM, np.float64)

    def impl(ta, tb, alpha, a, b, beta, c):
        m, n = c.shape
        k = a.shape[0] if ta else a.shape[1]
        if m == 0 or n == 0:
            return
        fn(ROW_MAJOR, TRANS if ta else NO_TRANS, TRANS if tb else NO_TRANS, m, n, k, real(alpha),
           a.ctypes.data, a.strides[0] // a.itemsize, b.ctypes.data, b.strides[0] // b.itemsize,
           real(beta), c.ctypes.data, c.strides[0] // c.itemsize)
    return impl
