"""The CUDA backend's tests run under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, in their
own process: see tests/cuda/test_simulator.py) or on a GPU; elsewhere they are not collected.

With NETC_RECORD_KERNELS=FILE, every kernel launch's argument types are written to FILE (JSON), so
that tests/cuda/background.py can compile each kernel, with those types, for a real GPU."""
import atexit
import importlib.util
import json
import os
import sys
import threading


def _runs_here():
    if importlib.util.find_spec("numba_cuda") is None:
        return False
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return True
    from numba import cuda
    return cuda.is_available()


RUNS = _runs_here()


def pytest_ignore_collect(collection_path, config):
    return not RUNS


def _describe(value):
    """A JSON description of a kernel argument's Numba type."""
    import numpy as np
    if hasattr(value, "dtype") and hasattr(value, "ndim") and hasattr(value, "shape"):
        if value.ndim == 0 or isinstance(value, np.generic):
            return ["scalar", str(np.dtype(value.dtype))]
        contiguous = getattr(value, "is_c_contiguous", None)
        c = contiguous() if callable(contiguous) else value.flags["C_CONTIGUOUS"]
        return ["array", str(np.dtype(value.dtype)), value.ndim, "C" if c else "A"]
    if isinstance(value, bool):
        return ["scalar", "bool"]
    if isinstance(value, int):
        return ["scalar", "int64"]
    if isinstance(value, float):
        return ["scalar", "float64"]
    if isinstance(value, tuple):
        return ["tuple", [_describe(v) for v in value]]
    raise TypeError(f"cannot describe a kernel argument of type {type(value).__name__}")


def _host_arrays(args):
    """The positions of the NumPy (host) arrays among a kernel's arguments, tuples' included: on
    a GPU numba-cuda copies each to the device and back at every launch ("Host array used in
    CUDA kernel will incur copy overhead"); the simulator takes them silently."""
    import numpy as np
    found = []
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray) and a.ndim > 0:
            found.append(str(i))
        elif isinstance(a, tuple):
            found += [f"{i}.{j}" for j in _host_arrays(a)]
    return found


if RUNS and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    from numba.cuda.simulator import kernel as _sim

    # The simulator runs each thread of a block as a Python thread, and the launching thread
    # polls them in a loop that holds the GIL between checks: every hand-over to a simulated
    # thread waited for the interpreter's switch interval (5 ms), most of a launch's time. At
    # 50 us the branching networks' test ran in 7.6 s instead of 46 (at 10 us, 8.0; 500 us, 10.1).
    # (Switching that often let two threads of a block each make their own copy of a shared array:
    # the simulator looks one up and then stores it, with no lock, and its own per-line lookup
    # reads the whole stack: wrong GEMMs, one or two failed tests in each run. Hence _shared.)
    sys.setswitchinterval(5e-5)

    import numpy as np
    from numba.cuda.simulator import kernelapi as _api

    _lock = threading.Lock()
    _shared_array = _api.FakeCUDAShared.array

    def _shared(self, shape, dtype, alignment=None):
        """cuda.shared.array under the simulator: one array per line of a kernel, for every
        thread of its launch (as the simulator's own), looked up and made under a lock."""
        if shape == 0 or alignment is not None:  # dynamic shared memory; refused
            return _shared_array(self, shape, dtype, alignment)
        where = sys._getframe(1)
        key = (where.f_code.co_filename, where.f_lineno)
        with _lock:
            arr = self._allocations.get(key)
            if arr is None:
                if isinstance(dtype, _api.types.Type):
                    dtype = _api.numpy_support.as_dtype(dtype)
                arr = self._allocations[key] = np.empty(shape, dtype)
        return arr

    _api.FakeCUDAShared.array = _shared

    _seen: set = set()
    _original = _sim.FakeCUDAKernel.__getitem__
    _record = os.environ.get("NETC_RECORD_KERNELS")

    def _checked(self, config):
        """Every simulated launch: no host array among its arguments (an error naming the
        kernel and the argument), and with NETC_RECORD_KERNELS its argument types noted."""
        launch = _original(self, config)
        fn = self.fn

        def call(*args):
            host = _host_arrays(args)
            if host:
                raise AssertionError(f"kernel {fn.__module__}.{fn.__name__} got a host (NumPy) "
                                     f"array as argument {', '.join(host)}: on a GPU, a copy to "
                                     "the device and back at every launch")
            if _record:
                _seen.add(json.dumps([fn.__module__, fn.__name__, [_describe(a) for a in args]]))
            return launch(*args)
        return call

    _sim.FakeCUDAKernel.__getitem__ = _checked

    if _record:
        @atexit.register
        def _write():
            with open(_record, "w") as f:
                json.dump(sorted(json.loads(s) for s in _seen), f, indent=0)
