"""Numba kernels that compile on first use.

Kernels live beside their layer kind's shape rule (one place per kind), yet `netc summary`, `check`
and `draw` never import numba: the decorator below keeps the plain function and hands it to
`numba.njit(cache=True)` the first time the runtime calls it.
"""
from __future__ import annotations

import functools


def cpu_kernel(fastmath: bool = False):
    """Decorate a module-level kernel; it becomes `njit(cache=True, nogil=True)` on first call.
    Kernels are serial: the runtime splits batches across its own worker threads (nogil lets them
    run side by side), so no second thread pool (Numba's OpenMP, BLAS's) competes for the cores."""
    def wrap(fn):
        return _LazyKernel(fn, dict(fastmath=fastmath))
    return wrap


class _LazyKernel:
    def __init__(self, fn, options):
        self.py_func, self.options, self._jitted = fn, options, None
        functools.update_wrapper(self, fn)

    def dispatcher(self):
        """The numba dispatcher. Kernels this one calls are swapped in the module's globals for
        their dispatchers first, since numba only calls what it can type."""
        if self._jitted is None:
            import numba
            # njit compiles on the first call, so making it first ends any recursion below
            self._jitted = numba.njit(cache=True, nogil=True, **self.options)(self.py_func)
            names = self.py_func.__globals__
            for name, value in list(names.items()):
                if isinstance(value, _LazyKernel):
                    names[name] = value.dispatcher()
        return self._jitted

    def __call__(self, *args):
        return self.dispatcher()(*args)
