"""Numba kernels that compile on first use.

Kernels live beside their layer kind's shape rule (one place per kind), yet `netc summary`, `check`
and `draw` never import numba: the decorator below keeps the plain function and hands it to
`numba.njit(cache=True)` the first time the runtime calls it.
"""
from __future__ import annotations

import functools


def cpu_kernel(parallel: bool = False, fastmath: bool = False):
    """Decorate a module-level kernel; it becomes `njit(cache=True, parallel=...)` on first call."""
    def wrap(fn):
        return _LazyKernel(fn, dict(parallel=parallel, fastmath=fastmath))
    return wrap


class _LazyKernel:
    def __init__(self, fn, options):
        self.py_func, self.options, self._jitted = fn, options, None
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        if self._jitted is None:
            import numba
            if self.py_func.__globals__.get("prange") is prange:
                self.py_func.__globals__["prange"] = numba.prange  # the kernel's module's name
            self._jitted = numba.njit(cache=True, **self.options)(self.py_func)
        return self._jitted(*args)


def prange(*args):
    """numba.prange inside compiled kernels; plain range when a kernel runs as Python."""
    return range(*args)
