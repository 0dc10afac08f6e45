"""The CUDA tests' background run, which tests/cuda/test_simulator.py starts as
`python tests/cuda/background.py FOLDER` and reads back from FOLDER:

1. tests/cuda/gpu under Numba's CUDA simulator, in a process of its own (the simulator is chosen
   when numba loads), recording each kernel launch's argument types (launches.json); its output
   goes to out and err, its exit status to rc;
2. then, here (no simulator in this process), every recorded kernel compiled with those types to
   PTX for a Hopper GPU (sm_90), so that a kernel the simulator accepts but a GPU's compiler would
   refuse is found without a GPU: ptx.json;
3. at its end, however it ended, an empty file named done.

Both take about a minute on one core; run in the background, they overlap the other tests."""
import importlib
import json
import os
import signal
import subprocess
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def simulate(folder) -> int:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1",
           "NETC_RECORD_KERNELS": os.path.join(folder, "launches.json")}
    with open(os.path.join(folder, "out"), "w") as out, open(os.path.join(folder, "err"), "w") as err:
        return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
                                "ignore::RuntimeWarning", os.path.join(ROOT, "tests", "cuda", "gpu")],
                               cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)


def _numba_type(desc):
    import numpy as np
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


def compile_all(record) -> dict:
    """Every kernel of the record compiled to PTX for sm_90: how many launches, distinct kernels
    and compilations, and what failed ("nvvm": false where NVVM is not installed)."""
    from numba.cuda.cudadrv import nvvm
    if not nvvm.is_available():
        return {"nvvm": False}
    from numba import cuda
    with open(record) as f:
        launches = json.load(f)
    out = {"nvvm": True, "launches": len(launches), "kernels": len({(m, n) for m, n, _ in launches}),
           "compiled": 0, "failed": [], "missing": []}
    for module_name, name, args in launches:
        kernels = _kernels(importlib.import_module(module_name), name)
        if not kernels:
            out["missing"].append(f"{module_name}.{name}")
        for kernel in kernels:
            sig = tuple(_numba_type(a) for a in args)
            try:
                cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
                out["compiled"] += 1
            except Exception as e:  # noqa: BLE001 - every failure is reported
                out["failed"].append(f"{module_name}.{name}{sig}: {str(e).splitlines()[0]}")
    return out


def _end_with_parent():
    """End this run, and the simulated pytest with it, when stdin ends: the pytest that started
    it keeps the pipe open while it runs, so the end of stdin is that process's end, however it
    ended (test_simulator.py's stop_in_background handles the orderly ends)."""
    sys.stdin.read()
    if hasattr(os, "killpg"):
        os.killpg(0, signal.SIGKILL)  # (this run's own session: itself and its children)
    os._exit(1)


def main(folder):
    threading.Thread(target=_end_with_parent, daemon=True).start()
    try:
        rc = simulate(folder)
        with open(os.path.join(folder, "rc"), "w") as f:
            f.write(str(rc))
        try:
            result = compile_all(os.path.join(folder, "launches.json"))
        except Exception as e:  # noqa: BLE001 - the test reports it
            result = {"error": f"{type(e).__name__}: {e}"}
        with open(os.path.join(folder, "ptx.json"), "w") as f:
            json.dump(result, f)
    finally:  # what pytest-xdist's workers wait for (the controller started this run)
        open(os.path.join(folder, "done"), "w").close()


if __name__ == "__main__":
    main(sys.argv[1])
