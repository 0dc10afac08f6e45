"""Whether the CUDA backend can run here, and why not: what was looked for, what to install."""
from __future__ import annotations

import importlib.util

from netc.dsl.errors import NetcError


def require_package():
    """Raise a NetcError unless numba-cuda is installed (numba's own numba.cuda is deprecated)."""
    if importlib.util.find_spec("numba_cuda") is None:
        raise NetcError("the CUDA backend needs the numba-cuda package (NVIDIA's CUDA target for "
                        "Numba), which is not installed",
                        "pip install 'netc[cuda]' (from a clone: pip install -e '.[cuda]'), or use "
                        "the CPU: --device cpu / backend='cpu'")
    _numpy_names()


def _numpy_names():
    """NumPy 2.5 removed np.row_stack (an alias of np.vstack since 2.0), and numba-cuda 0.30
    still registers its GPU version of it when it compiles its first kernel: every compilation
    then fails with "module 'numpy' has no attribute 'row_stack'" (numba-cuda's issue 907; its
    maintainers do not plan to follow newer NumPy). The alias, put back where it is missing, is
    all that numba-cuda reads; it is what np.row_stack was."""
    import numpy as np
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack


def require_gpu():
    """Raise a NetcError unless numba-cuda finds a GPU (or runs its simulator,
    NUMBA_ENABLE_CUDASIM=1)."""
    from numba import cuda
    if cuda.is_available():
        return
    reason = "no CUDA driver or GPU was found"
    try:
        cuda.current_context()
    except Exception as e:  # numba-cuda says what it looked for (the driver library, a device)
        reason = " ".join(str(e).split()).rstrip(" :")
    raise NetcError(f"no usable CUDA GPU: numba-cuda looked for the NVIDIA driver and a device: "
                    f"{reason}",
                    "run on a machine with an NVIDIA GPU and its driver, or use the CPU: --device "
                    "cpu / backend='cpu' (NUMBA_ENABLE_CUDASIM=1 runs the CUDA kernels in Numba's "
                    "simulator, for tests: very slow)")
