"""How the CPU kernels are compiled, and the threads they run on.

Kernels are module-level Numba functions, compiled on first call and cached on disk
(`kernel(...)` gives every one the same options). Threads: a parallel kernel splits its batch over
Numba's threads with `prange` (one part per thread, each with its own slice of a workspace), and
the GEMMs it calls run single-threaded inside each part: one pool of threads, so that nothing
spins against anything (BLAS's own threads would fight Numba's for the cores).
`setup()` runs when the backend loads, before any kernel.
"""
from __future__ import annotations

import os
import warnings

import numba

from .. import cache
from . import blas

_state: dict = {}

# fastmath flags for kernels that sum: reassociation lets LLVM vectorize a reduction (and the
# branches around it become selects); NaN and Inf keep their meaning, so bad numbers still show
REDUCE = {"reassoc", "nsz", "contract"}


def kernel(fastmath=False, parallel=False, inline=False, vector_division=False):
    """numba.njit with netc's options: cached (cache.py), without the GIL; `parallel` for kernels
    that split their batch with prange; `inline` puts the body into every caller at Numba's level,
    for inner loops over short work that a call would cost as much as. `vector_division`: a
    division by zero gives inf or NaN as in NumPy (error_model="numpy") instead of Numba's check
    and exception, a branch per division that keeps a loop from vectorizing (the sigmoid's)."""
    options = dict(nogil=True, fastmath=fastmath, parallel=parallel)
    if vector_division:
        options["error_model"] = "numpy"
    if inline:
        options["inline"] = "always"
    return cache.njit(**options)


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


def setup():
    """Once, before the first kernel runs: bind the BLAS the kernels call (limited to one thread
    where it is shared with NumPy), then give Numba its thread count."""
    if _state.get("ready"):
        return
    if blas.bind():
        from threadpoolctl import threadpool_limits
        _state["blas_limit"] = threadpool_limits(limits=1, user_api="blas")  # kept for the process
    numba.set_num_threads(min(num_threads(), numba.config.NUMBA_NUM_THREADS))
    _state["ready"] = True


def workers() -> int:
    """How many parts a parallel kernel splits its work into (the size of its workspaces)."""
    setup()
    return numba.get_num_threads()
