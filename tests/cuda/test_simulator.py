"""The CUDA backend on a machine without a GPU: tests/cuda/gpu runs under Numba's CUDA simulator
in a process of its own (the simulator is chosen when numba loads), recording each kernel
launch's argument types; then every kernel is compiled, with those types, to PTX for a Hopper
GPU (sm_90), so that a kernel the simulator accepts but a GPU's compiler would not fails here."""
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import numpy as np
import pytest

from ..conftest import ROOT

NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
pytestmark = pytest.mark.skipif(not NUMBA_CUDA, reason="numba-cuda is not installed")


_run: dict = {}  # the simulated run: its process, its folder


def start_in_background():
    """Start the simulated run (about 6 minutes on one core, a simulated GPU thread at a time):
    tests/conftest.py calls this once the session's tests are collected, where they include
    this module's, so that it runs on another core while the others run."""
    if _run or not NUMBA_CUDA:
        return
    folder = tempfile.mkdtemp(prefix="netc-simulated-")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1",
           "NETC_RECORD_KERNELS": os.path.join(folder, "launches.json")}
    with open(os.path.join(folder, "out"), "w") as out, open(os.path.join(folder, "err"), "w") as err:
        _run["proc"] = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
             "ignore::RuntimeWarning", os.path.join(ROOT, "tests", "cuda", "gpu")],
            cwd=ROOT, env=env, stdout=out, stderr=err, text=True)
    _run["folder"] = folder


def stop_in_background():
    """End the simulated run if it is still going (the session ended first), and remove its
    folder (conftest, at the session's end)."""
    proc = _run.pop("proc", None)
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()
    shutil.rmtree(_run.pop("folder", ""), ignore_errors=True)


@pytest.fixture(scope="module")
def simulated():
    """(the simulated run's process: returncode, stdout, stderr; the file of recorded kernel
    launches), once it has ended."""
    start_in_background()  # (where conftest has not)
    _run["proc"].wait()
    folder = _run["folder"]
    with open(os.path.join(folder, "out")) as out, open(os.path.join(folder, "err")) as err:
        proc = SimpleNamespace(returncode=_run["proc"].returncode, stdout=out.read(),
                                     stderr=err.read())
    return proc, os.path.join(folder, "launches.json")


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
