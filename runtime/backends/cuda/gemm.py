"""GEMM on the GPU: C = alpha op(A) op(B) + beta C for 2-D device arrays whose rows may lie at any
stride (elements contiguous within a row), C not read where beta is 0.

Through cuBLAS where CuPy is installed (its handle, on the arrays' memory in place: no copy),
else by netc's own kernel: TILE x TILE threads, each computing one value of C while tiles of A
and B pass through shared memory (the simulator's tests run this one). NETC_CUDA_GEMM=own or
=cublas chooses; `describe()` says which runs.
"""
from __future__ import annotations

import os

import numpy as np
from numba import cuda, float32, float64

from .launch import MAX_BLOCKS, SIMULATED, TILE, kernel

_cublas: dict = {}


def _make(dt):
    @kernel()
    def gemm_tiled(ta, tb, alpha, a, b, beta, c):
        sa = cuda.shared.array((TILE, TILE), dt)
        sb = cuda.shared.array((TILE, TILE), dt)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        m, n = c.shape
        k_ = a.shape[0] if ta else a.shape[1]
        for bi in range(cuda.blockIdx.y, (m + TILE - 1) // TILE, cuda.gridDim.y):
            for bj in range(cuda.blockIdx.x, (n + TILE - 1) // TILE, cuda.gridDim.x):
                row, col = bi * TILE + ty, bj * TILE + tx
                acc = dt(0)
                for k0 in range(0, k_, TILE):
                    ka, kb = k0 + tx, k0 + ty
                    va, vb = dt(0), dt(0)
                    if row < m and ka < k_:
                        va = a[ka, row] if ta else a[row, ka]
                    if col < n and kb < k_:
                        vb = b[col, kb] if tb else b[kb, col]
                    sa[ty, tx] = va
                    sb[ty, tx] = vb
                    cuda.syncthreads()
                    for q in range(TILE):
                        acc += sa[ty, q] * sb[q, tx]
                    cuda.syncthreads()
                if row < m and col < n:
                    c[row, col] = alpha * acc + beta * c[row, col] if beta != 0 else alpha * acc
    return gemm_tiled


_TILED = {np.dtype(np.float32): _make(float32), np.dtype(np.float64): _make(float64)}


def _use_cublas() -> bool:
    """Whether cuBLAS runs the GEMMs: CuPy is installed (and not the simulator), unless
    NETC_CUDA_GEMM=own."""
    if "ok" not in _cublas:
        _cublas["ok"] = False
        want = os.environ.get("NETC_CUDA_GEMM", "").strip().lower()
        if want != "own" and not SIMULATED:
            try:
                import cupy
                from cupy_backends.cuda.libs import cublas
                _cublas.update(ok=True, cupy=cupy, lib=cublas,
                               handle=cupy.cuda.device.get_cublas_handle())
            except Exception as e:  # no CuPy, or one that cannot reach this GPU
                if want == "cublas":
                    from netc.dsl.errors import NetcError
                    raise NetcError(f"NETC_CUDA_GEMM=cublas, but CuPy's cuBLAS is not usable: {e}",
                                    "pip install cupy-cuda13x, or unset NETC_CUDA_GEMM") from None
    return _cublas["ok"]


def describe() -> str:
    if _use_cublas():
        return f"cuBLAS (CuPy {_cublas['cupy'].__version__})"
    return "netc's tiled kernel" + (" (NETC_CUDA_GEMM=own)" if os.environ.get(
        "NETC_CUDA_GEMM", "").strip().lower() == "own" else " (CuPy not installed)")


def _pointer(a):
    return a.__cuda_array_interface__["data"][0]


def gemm(ta, tb, alpha, a, b, beta, c):
    """c = alpha op(a) op(b) + beta c, op(x) = x.T where its flag is set."""
    m, n = c.shape
    if m == 0 or n == 0:
        return
    if _use_cublas():
        _gemm_cublas(ta, tb, alpha, a, b, beta, c)
        return
    blocks = (min(MAX_BLOCKS, -(-n // TILE)), min(MAX_BLOCKS, -(-m // TILE)))
    dt = c.dtype.type
    _TILED[np.dtype(c.dtype)][blocks, (TILE, TILE)](ta, tb, dt(alpha), a, b, dt(beta), c)


def _gemm_cublas(ta, tb, alpha, a, b, beta, c):
    """Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: a row-major array with
    leading dimension ld is its transpose in column-major order, so B and A go in swapped, each
    transposed where its flag is not."""
    lib = _cublas["lib"]
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    size = c.dtype.itemsize
    lda, ldb, ldc = (x.strides[0] // size if x.shape[0] > 1 else max(1, x.shape[1])
                     for x in (a, b, c))
    scalars = np.array([alpha, beta], c.dtype)
    fn = lib.sgemm if c.dtype == np.float32 else lib.dgemm
    op = (lib.CUBLAS_OP_N, lib.CUBLAS_OP_T)
    alpha_ptr, beta_ptr = scalars.ctypes.data, scalars.ctypes.data + size
    fn(_cublas["handle"], op[tb], op[ta], n, m, k, alpha_ptr, _pointer(b), ldb, _pointer(a), lda,
       beta_ptr, _pointer(c), ldc)
