"""The CUDA backend on a machine without a GPU: tests/cuda/gpu runs under Numba's CUDA simulator
in a process of its own (the simulator is chosen when numba loads), recording each kernel
launch's argument types; then every kernel is compiled, with those types, to PTX for a Hopper
GPU (sm_90), so that a kernel the simulator accepts but a GPU's compiler would not fails here."""
import importlib
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                                reason="numba-cuda is not installed")


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """(the simulated run's process, the file of recorded kernel launches)."""
    record = str(tmp_path_factory.mktemp("kernels") / "launches.json")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "NETC_RECORD_KERNELS": record}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-W", "ignore::RuntimeWarning", os.path.join(ROOT, "tests", "cuda", "gpu")],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    return proc, record


def test_the_cuda_backend_under_the_simulator(simulated):
    proc, _ = simulated
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]


def _numba_type(desc):
    from numba import types
    from numba.np.numpy_support import from_dtype
    if desc[0] == "array":
        return types.Array(from_dtype(np.dtype(desc[1])), desc[2], desc[3])
    if desc[0] == "tuple":
        return types.Tuple([_numba_type(d) for d in desc[1]])
    return types.boolean if desc[1] == "bool" else from_dtype(np.dtype(desc[1]))


def _kernels(module, name):
    """The kernels of `module` whose Python function is called `name` (factories make one per
    data type, kept in a dict)."""
    found = []
    for value in vars(module).values():
        for v in (value.values() if isinstance(value, dict) else (value,)):
            fn = getattr(v, "py_func", None)
            if fn is not None and fn.__name__ == name and hasattr(v, "overloads"):
                found.append(v)
    return found


def test_every_kernel_compiles_for_a_real_gpu(simulated):
    proc, record = simulated
    from numba.cuda.cudadrv import nvvm
    if not nvvm.is_available():
        pytest.skip("NVVM is not installed (pip install nvidia-nvvm)")
    from numba import cuda
    launches = json.load(open(record))
    assert len({(m, n) for m, n, _ in launches}) >= 40  # the simulated run launched them all
    failed, compiled = [], 0
    for module_name, name, args in launches:
        module = importlib.import_module(module_name)
        kernels = _kernels(module, name)
        assert kernels, f"{module_name}.{name}: no such kernel"
        for kernel in kernels:
            sig = tuple(_numba_type(a) for a in args)
            try:
                cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
                compiled += 1
            except Exception as e:  # noqa: BLE001 - every failure is reported below
                failed.append(f"{module_name}.{name}{sig}: {str(e).splitlines()[0]}")
    assert not failed, "\n".join(failed)
    assert compiled >= len(launches)
