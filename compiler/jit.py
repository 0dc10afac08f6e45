"""Numba kernels that compile on first use, and the threads they run on.

Kernels live beside their layer kind's shape rule (one place per kind), yet `netc summary`, `check`
and `draw` never import numba: the decorator below keeps the plain function and hands it to
`numba.njit(cache=True)` the first time the runtime calls it.

Threads: a parallel kernel splits its batch over Numba's threads with `prange` (one part per
thread, each with its own slice of a workspace), and the BLAS it calls for its GEMMs runs
single-threaded inside each part. One pool of threads, so nothing spins against anything: BLAS's
own threads would otherwise fight Numba's for the cores (a step ran 5x slower that way on 2
cores). Numba's OpenMP layer starts a parallel region in about 2 us; its workqueue fallback takes
about 100 us, which costs small networks dearly (see README, Speed).
"""
from __future__ import annotations

import functools
import os
import warnings

_state: dict = {}

# kernels write `for t in prange(...)`; until numba is loaded this is plain range, and the kernel's
# module gets numba.prange in its place when the kernel compiles (see _LazyKernel.dispatcher)
prange = range


def num_threads() -> int:
    """The threads kernels use: NETC_NUM_THREADS, else the cores this process may use."""
    if "threads" not in _state:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows
            cores = os.cpu_count() or 1
        env = os.environ.get("NETC_NUM_THREADS", "").strip()
        valid = env.isdigit() and int(env) >= 1
        n = int(env) if valid else cores
        if env and not valid:
            warnings.warn(f"NETC_NUM_THREADS={env!r} is not a whole number >= 1: using the {cores} "
                          "cores this process may use", RuntimeWarning, stacklevel=2)
        _state["threads"] = n
    return _state["threads"]


def gemm(ta, tb, alpha, a, b, beta, c):
    """c = alpha op(a) op(b) + beta c (c is not read when beta is 0), with op(x) = x.T where its
    flag is set. a, b, c: 2-D arrays whose elements are contiguous within a row, rows at any
    stride (a column block of a C array will do). Compiled, it calls the BLAS directly (see
    blas.py); this plain version serves Python callers."""
    prod = alpha * ((a.T if ta else a) @ (b.T if tb else b))
    c[...] = prod if beta == 0 else prod + beta * c


def setup():
    """Once, before the first kernel runs: bind the BLAS the kernels call (limited to one thread
    where it is shared with NumPy), then give Numba its thread count."""
    if _state.get("ready"):
        return
    import numba
    from . import blas  # registers gemm's compiled form
    if blas.bind():
        from threadpoolctl import threadpool_limits
        _state["blas_limit"] = threadpool_limits(limits=1, user_api="blas")  # kept for the process
    numba.set_num_threads(min(num_threads(), numba.config.NUMBA_NUM_THREADS))
    _state["ready"] = True


def workers() -> int:
    """How many parts a parallel kernel splits its work into (the size of its workspaces)."""
    setup()
    import numba
    return numba.get_num_threads()


# fastmath flags for kernels that sum: reassociation lets LLVM vectorize a reduction (and with
# it, the branches around it become selects: a ReLU mask's unpredictable branch cost a LeNet
# step 1 ms); NaN and Inf keep their meaning, so bad numbers still show.
REDUCE = {"reassoc", "nsz", "contract"}


def cpu_kernel(fastmath: bool | set = False, parallel: bool = False, inline: bool = False):
    """Decorate a module-level kernel; it becomes `njit(cache=True, nogil=True)` on first call,
    with `parallel` for kernels that split their batch with `prange`. `inline` puts its body into
    every caller at Numba's level, for inner loops called many times over short work: LLVM does
    not inline across the call, and the call then costs as much as the loop."""
    def wrap(fn):
        options = dict(fastmath=fastmath, parallel=parallel)
        if inline:
            options["inline"] = "always"
        return _LazyKernel(fn, options)
    return wrap


class _LazyKernel:
    def __init__(self, fn, options):
        self.py_func, self.options, self._jitted = fn, options, None
        functools.update_wrapper(self, fn)

    def dispatcher(self):
        """The numba dispatcher. Kernels this one calls are swapped in the module's globals for
        their dispatchers first, since numba only calls what it can type."""
        if self._jitted is None:
            setup()
            import numba
            # njit compiles on the first call, so making it first ends any recursion below
            self._jitted = numba.njit(cache=True, nogil=True, **self.options)(self.py_func)
            names = self.py_func.__globals__
            if names.get("prange") is range:
                names["prange"] = numba.prange
            for name, value in list(names.items()):
                if isinstance(value, _LazyKernel):
                    names[name] = value.dispatcher()
        return self._jitted

    def __call__(self, *args):
        return self.dispatcher()(*args)
