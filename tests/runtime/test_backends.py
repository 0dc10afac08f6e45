"""The backend registry: every kind runs on the CPU, registrations are unique, and a missing
implementation or backend is a clear error."""
import importlib.util
import os

import numpy as np
import pytest

import netc
from netc import NetcError
from netc.compiler import registry
from netc.runtime import optim
from netc.compiler.settings import OPTIMIZERS
from netc.runtime.backends import registry as backends


def test_every_kind_runs_on_the_cpu():
    assert set(registry.kinds()) == backends.implemented("cpu")


needs_numba_cuda = pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                                      reason="numba-cuda is not installed")


@needs_numba_cuda
def test_every_kind_has_a_cuda_implementation():
    assert set(registry.kinds()) == backends.implemented("cuda")


@needs_numba_cuda
def test_without_a_gpu_the_cuda_backend_says_what_it_looked_for():
    from numba import cuda
    if cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(NetcError) as e:
        netc.Model("input 2\nFC 1", backend="cuda")
    assert "no usable CUDA GPU: numba-cuda looked for the NVIDIA driver" in e.value.message
    assert "--device cpu" in e.value.hint


_WITHOUT_ROW_STACK = """
import sys, numpy as np
if "row_stack" in vars(np):
    del np.row_stack            # as NumPy 2.5 has it
if sys.argv[1] == "netc":
    import netc.runtime.backends.cuda.device as device
    device.require_package()
from numba import cuda

def fill(a):
    i = cuda.grid(1)
    if i < a.size:
        a[i] = 1.0

ptx, _ = cuda.compile_ptx(fill, "void(float32[:])", cc=(9, 0))
print("compiled", ".entry" in ptx)
"""


@needs_numba_cuda
def test_the_cuda_backend_compiles_with_a_numpy_that_lacks_row_stack():
    """numba-cuda 0.30 reads np.row_stack, which NumPy 2.5 removed, at its first compilation; the
    backend puts the alias back. Compiled to PTX (NVVM, no GPU needed), in fresh processes."""
    import subprocess
    import sys
    from numba.cuda.cudadrv import nvvm
    if not nvvm.is_available():
        pytest.skip("NVVM is not installed (pip install nvidia-nvvm)")
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    runs = {how: subprocess.run([sys.executable, "-c", _WITHOUT_ROW_STACK, how], env=env,
                                capture_output=True, text=True, timeout=300)
            for how in ("numba-cuda alone", "netc")}
    assert "has no attribute 'row_stack'" in runs["numba-cuda alone"].stderr  # the failure is real
    assert runs["netc"].returncode == 0, runs["netc"].stderr[-3000:]
    assert "compiled True" in runs["netc"].stdout


@needs_numba_cuda
@pytest.mark.parametrize("setting", [None, "1"])
def test_low_occupancy_warnings_are_off_unless_the_user_asks(setting):
    """netc sizes small grids on purpose; numba-cuda's warning at each such launch is off, but a
    NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS of the user's is kept."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS"}
    if setting is not None:
        env["NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS"] = setting
    code = ("import netc.runtime.backends.cuda.launch\nfrom numba import config\n"
            "print('warnings', config.CUDA_LOW_OCCUPANCY_WARNINGS)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["warnings", "0" if setting is None else setting], out.stderr


def test_registering_a_kind_twice_on_a_backend_fails():
    kind = registry.kinds()["RELU"]
    with pytest.raises(ValueError, match="RELU registered twice on cpu"):
        backends.implements(type(kind), "cpu")(type("Again", (backends.Implementation,), {}))


def test_unknown_backend_and_missing_implementation():
    with pytest.raises(NetcError, match="backend must be one of cpu, cuda; received 'tpu'"):
        backends.load("tpu")
    with pytest.raises(NetcError) as e:
        backends.implementation("NOPE", "cpu")
    assert "no implementation on the cpu backend (nor is it a known kind)" in e.value.message
    assert "CONV" in e.value.hint


def test_optimizers_match_the_vocabulary_and_show_defaults_unbuilt():
    assert tuple(optim.OPTIMIZERS) == OPTIMIZERS
    assert optim.defaults("adam") == {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8,
                                      "weight_decay": 0.0}
    assert optim.defaults("lm")["damping"] == 1e-3  # lm cannot be built without a Jacobian
    with pytest.raises(NetcError, match="lm needs the residuals' Jacobian"):
        netc.optimizer("lm", {})


def test_full_batch_methods_refuse_a_gradient_step():
    opt = netc.optimizer("lbfgs", {"w": np.zeros(2)})
    with pytest.raises(NetcError, match="lbfgs is a full-batch method") as e:
        opt.step({"w": np.ones(2)})
    assert "iterate(closure)" in e.value.hint


def test_first_order_iterate_is_one_step():
    p = {"w": np.array([1.0, -2.0])}
    opt = netc.optimizer("sgd", p, lr=0.5)
    loss = opt.iterate(lambda: (3.0, {"w": np.array([2.0, 2.0])}))
    assert loss == 3.0 and p["w"].tolist() == [0.0, -3.0]


def test_numba_caches_each_module_by_its_source_and_what_it_imports(tmp_path):
    """A kernel compiles in code from other files, which Numba's own cache check does not watch:
    a module's kernels are cached in a folder named after its source and every backend module it
    imports, transitively."""
    from netc.runtime.backends import cache
    from netc.runtime.backends.cpu import pool
    pkg = tmp_path / "pk"
    pkg.mkdir()
    nested = ("class K:\n    def f(self):\n        with open('x') as h:\n            try:\n"
              "                pass\n            except OSError:\n                from .c import f\n")
    for name, text in {"__init__": "", "a": "from . import b\n", "b": "from .c import f\n",
                       "c": "f = 1\n", "d": "g = 1\n", "e": nested}.items():
        (pkg / f"{name}.py").write_text(text)

    def key(module):
        return cache.key(f"pk.{module}", str(pkg), "pk")

    a, d, e = key("a"), key("d"), key("e")
    (pkg / "c.py").write_text("f = 2\n")  # a imports b, which imports c; e imports c deep inside
    assert key("a") != a and key("d") == d and key("e") != e
    folder = cache.folder(pool.__name__)
    assert pool._maxpool_cpu._cache._cache_path.startswith(folder)
    assert folder.endswith("pool-" + cache.key(pool.__name__))


def test_an_unwritable_cache_folder_falls_back_to_a_private_temporary_one(tmp_path, monkeypatch):
    """A home that cannot be written (read-only on a cluster's nodes, in a container): the kernels
    are cached in netc-cache-USER in the temporary folder, with one warning; a fallback others
    may write into is not used (Numba loads machine code from it): a NetcError saying what to
    set instead."""
    import tempfile
    import warnings
    from netc.runtime.backends import cache
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # no folder can be made under a file (not even by root)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocked / "cache"))
    with pytest.warns(UserWarning, match="cannot write netc's kernel cache at .*a-file/cache"):
        chosen = cache.base()
    assert chosen == cache.private_temp() and chosen.startswith(str(tmp_path / "tmp"))
    assert os.stat(chosen).st_mode & 0o777 == 0o700
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.base() == chosen  # warned once
    os.chmod(chosen, 0o777)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocked / "other"))
    with pytest.raises(NetcError, match="nor a private folder") as e:
        cache.base()
    assert "NUMBA_CACHE_DIR" in e.value.hint
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "fine"))
    assert cache.base() == str(tmp_path / "fine") and os.path.isdir(tmp_path / "fine")


def test_an_unwritable_home_caches_the_kernels_in_a_private_temporary_folder(tmp_path):
    """No cache folder can be written where netc looks (XDG_CACHE_HOME under a file, no
    NUMBA_CACHE_DIR): a warning line, not a traceback, and the kernels cached in the temporary
    folder's netc-cache-USER, which the next run finds."""
    import subprocess
    import sys
    (tmp_path / "a-file").write_text("")
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "a-file" / "cache"), TMPDIR=str(tmp_path / "tmp"))
    code = ("import sys\nfrom netc.runtime.backends import cache\n"
            "@cache.njit()\ndef twice(x):\n    return 2 * x\n"
            "print(twice(21), sum(twice.stats.cache_hits.values()), cache.base())\n")
    (tmp_path / "probe.py").write_text(code)  # (a function Numba caches needs a file)
    runs = [subprocess.run([sys.executable, str(tmp_path / "probe.py")], env=env,
                           capture_output=True, text=True) for _ in range(2)]
    for done in runs:
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert "cannot write netc's kernel cache at" in done.stderr
    first, second = (done.stdout.split() for done in runs)
    assert first[:2] == ["42", "0"] and second[:2] == ["42", "1"]  # compiled, then loaded
    assert first[2] == second[2] and first[2].startswith(str(tmp_path / "tmp" / "netc-cache-"))


def test_a_damaged_or_unwritable_cache_costs_a_compile_not_the_run(tmp_path, monkeypatch):
    """Numba's cache files as netc's kernels use them (cache.tolerant, which every kernel and
    the tiles' entry get): an index or data file that does not unpickle (a disk that failed, a
    copy cut short) is a miss, with one warning, and is written anew; a save that cannot write
    (a full disk, a quota: here a folder under a file) leaves the kernel uncached, with one
    warning. Numba itself raised both, in the middle of a run."""
    import types
    from numba import types as numba_types
    from numba.core.caching import IndexDataCacheFile
    from netc.runtime.backends import cache
    from netc.runtime.backends.cpu import pool, tiles
    assert isinstance(pool._maxpool_cpu._cache._cache_file, cache._Tolerant)
    assert isinstance(tiles.entry(numba_types.float32, 32)._cache._cache_file, cache._Tolerant)

    def made(folder):
        files = IndexDataCacheFile(str(folder), "fn-1.py311", ("stamp", 1))
        cache.tolerant(types.SimpleNamespace(_cache=types.SimpleNamespace(_cache_file=files)))
        return files

    monkeypatch.setattr(cache, "_warned", set())
    files = made(tmp_path / "c")
    (tmp_path / "c").mkdir()
    files.save("sig", {"code": b"x" * 100})
    assert files.load("sig") == {"code": b"x" * 100}
    index = tmp_path / "c" / "fn-1.py311.nbi"
    index.write_bytes(index.read_bytes()[:20])
    with pytest.warns(UserWarning, match="damaged file in netc's kernel cache .*fn-1.py311.nbi"):
        assert files.load("sig") is None
    files.save("sig", {"code": b"y"})  # written anew
    assert files.load("sig") == {"code": b"y"}
    data, = (tmp_path / "c").glob("*.nbc")
    data.write_bytes(data.read_bytes()[:10])
    assert files.load("sig") is None  # (warned once already)
    files.save("sig", {"code": b"z"})
    assert files.load("sig") == {"code": b"z"}

    (tmp_path / "a-file").write_text("")
    blocked = made(tmp_path / "a-file" / "c")
    with pytest.warns(UserWarning, match="cannot write into netc's kernel cache"):
        blocked.save("sig", {"code": b"x"})
    assert blocked.load("sig") is None
