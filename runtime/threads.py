"""The runtime's threads. netc splits each batch across worker threads itself and runs BLAS
single-threaded inside them: BLAS's own threads, spinning between calls, would otherwise fight
the workers and Numba's threads for the cores (a step ran 5x slower that way on 2 cores)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

_state: dict = {}
# the least work worth a thread of its own: about as long as handing it over (~50 us)
MIN_MACS = 4_000_000


def count() -> int:
    """Worker threads: NETC_NUM_THREADS, else the cores this process may use."""
    if "count" not in _state:
        env = os.environ.get("NETC_NUM_THREADS")
        try:
            n = int(env) if env else len(os.sched_getaffinity(0))
        except (ValueError, AttributeError):
            n = os.cpu_count() or 1
        _state["count"] = max(1, n)
    return _state["count"]


def pool() -> ThreadPoolExecutor | None:
    """The shared pool (created on first use, with BLAS limited to one thread)."""
    if "pool" not in _state:
        from threadpoolctl import threadpool_limits
        _state["blas_limit"] = threadpool_limits(limits=1, user_api="blas")  # kept for the process
        _state["pool"] = ThreadPoolExecutor(max_workers=count(), thread_name_prefix="netc") \
            if count() > 1 else None
    return _state["pool"]
