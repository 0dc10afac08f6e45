"""The GEMM the kernels call: compiled (netc's own tiles where blas.TILE_ROUTES says, else netc's own
OpenBLAS through LLVM; and that BLAS alone), its NumPy stand-in for
machines without a CBLAS, and the plain-Python form, against NumPy's matmul; and which OpenBLAS
kernels netc's copy loads with."""
import ctypes
import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from netc.runtime.backends.cpu import blas, jit

CASES = [(False, False), (True, False), (False, True), (True, True)]


def operands(ta, tb, dtype, rng):
    m, n, k = 5, 7, 3
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    want = 1.5 * ((a.T if ta else a) @ (b.T if tb else b)) + 0.5 * c
    return a, b, c, want


@pytest.mark.parametrize("ta,tb", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_gemm(ta, tb, dtype):
    import numba
    jit.setup()

    @numba.njit
    def call(ta, tb, a, b, c):
        blas.gemm(ta, tb, 1.5, a, b, 0.5, c)

    @numba.njit
    def call_blas(ta, tb, a, b, c):  # the BLAS itself, where gemm runs netc's tiles
        blas.blas_gemm(ta, tb, 1.5, a, b, 0.5, c)

    for fn in (call, call_blas):
        a, b, c, want = operands(ta, tb, dtype, np.random.default_rng(0))
        fn(ta, tb, a, b, c)
        np.testing.assert_allclose(c, want, rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_compiled_gemm_on_row_blocks():
    """Rows at a stride (a column block of a wider array) and beta = 0 on a garbage output."""
    import numba
    jit.setup()

    @numba.njit
    def call(a, b, c):
        blas.gemm(False, False, 1.0, a[:, 2:5], b, 0.0, c[1:3])

    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 8)), rng.standard_normal((3, 4))
    c = np.full((4, 4), np.nan)
    call(a, b, c)
    np.testing.assert_allclose(c[1:3], a[:, 2:5] @ b, rtol=1e-12)
    assert np.isnan(c[0]).all() and np.isnan(c[3]).all()


def test_a_kernel_calls_the_gemm_by_symbol_whatever_its_operands_layouts():
    """gemm in compiled code is a call of one function per element type (and route), by
    symbol: operands of other layouts compile nothing more, and no GEMM code goes into the
    kernel (it compiled an overload per combination of layouts, 0.6-0.8 s each)."""
    import numba
    from netc.runtime.backends.cpu import linking
    jit.setup()

    @numba.njit
    def two(a, b, c):
        blas.gemm(False, True, 1.0, a, b, 0.0, c)  # C, C, C
        blas.gemm(False, True, 1.0, a[:, :3], b[:, :3], 1.0, c[:, 1:])  # A, A, A

    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal((6, 4)).astype(np.float32)
    c = np.zeros((5, 6), np.float32)
    two(a, b, c)
    want = a @ b.T
    want[:, 1:] += a[:, :3] @ b[:, :3].T[:, :5]
    np.testing.assert_allclose(c, want, rtol=1e-5)
    callee = blas._tiles_at if any(blas.tile_routes()) else blas._blas_at
    # float32's: other tests may have compiled float64's (the BLAS's, where no tiles route)
    single = [sig for sig in callee.overloads if numba.float32 in sig]
    assert len(single) == 1
    name = linking.symbol(callee, single[0])
    ir = next(iter(two.inspect_llvm().values()))
    assert f'declare i32 @"{name}"' in ir or f"declare i32 @{name}" in ir
    assert "cblas" not in ir and "netc_tiles_sgemm" not in ir


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86's CPUs emulated")
@pytest.mark.parametrize("features,routes", [("-avx512f", (True, False, 64, 32)),
                                             ("-avx512f,-avx2,-fma", (False, False, 0, 0))])
def test_the_routes_follow_the_cpu_and_the_shape(tmp_path, features, routes):
    """On AVX2 (emulated here by Numba's CPU settings, which netc's routes follow) a thin
    C = op(A) B and a C = A B^T of few rows run on the tiles, wide ones on the BLAS; on a CPU without AVX2
    the tiles' symbol is never bound, and no compiled GEMM may name it (LLVM ends a process that
    loads code naming an unbound symbol). The same products either way. Without the compiler
    process (conftest), the tiles compile when the first kernel that calls them does, not when
    the backend loads (a new cache here)."""
    script = f"""
import glob, os
import numba, numpy as np
from netc.runtime.backends.cpu import blas, jit
def tiles_compiled():
    return bool(glob.glob(os.path.join(os.environ["NUMBA_CACHE_DIR"], "tiles-*", "*", "*entry*.nbi")))
jit.setup()
assert blas.tile_routes() == {routes!r} and not (blas.own_tiles() or blas.own_tiles_nt())
assert not tiles_compiled()
@numba.njit
def call(a, b, c, w, d, tall, e):
    blas.gemm(False, True, 2.0, a, b, 0.0, c)  # 7 rows: few
    blas.gemm(False, True, 1.0, tall, b, 0.0, e)  # 40 rows: many
    blas.gemm(False, False, 1.0, a, b.T.copy(), 1.0, c)  # n = 4, k = 3: thin
    blas.gemm(False, False, 1.0, a[:, :2], w, 0.0, d)  # n = 70: wide
rng = np.random.default_rng(5)
a, b = rng.standard_normal((7, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
w = rng.standard_normal((2, 70)).astype(np.float32)
c, d = np.zeros((7, 4), np.float32), np.zeros((7, 70), np.float32)
tall, e = rng.standard_normal((40, 3)).astype(np.float32), np.zeros((40, 4), np.float32)
call(a, b, c, w, d, tall, e)
np.testing.assert_allclose(c, 3 * a @ b.T, rtol=1e-5)
np.testing.assert_allclose(e, tall @ b.T, rtol=1e-5)
np.testing.assert_allclose(d, a[:, :2] @ w, rtol=1e-5)
assert tiles_compiled() == {any(routes)!r}
print("ok")
"""
    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": features,
           "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == ["ok"], done.stderr[-2000:]


@pytest.mark.parametrize("ta,tb", CASES)
def test_numpy_stand_in_and_python_form(ta, tb):
    fn = blas._numpy_gemm(ctypes.c_double)
    rng = np.random.default_rng(2)
    a, b, c, want = operands(ta, tb, np.float64, rng)
    ptr = lambda arr: arr.ctypes.data  # noqa: E731
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    fn(blas.ROW_MAJOR, blas.TRANS if ta else blas.NO_TRANS, blas.TRANS if tb else blas.NO_TRANS,
       m, n, k, 1.5, ptr(a), a.shape[1], ptr(b), b.shape[1], 0.5, ptr(c), n)
    np.testing.assert_allclose(c, want, rtol=1e-12)
    a, b, c, want = operands(ta, tb, np.float64, rng)
    blas.gemm(ta, tb, 1.5, a, b, 0.5, c)
    np.testing.assert_allclose(c, want, rtol=1e-12)


def test_environment_is_restored():
    os.environ["NETC_TEST_A"] = "1"
    os.environ.pop("NETC_TEST_B", None)
    with blas._environment(NETC_TEST_A=None, NETC_TEST_B="2"):
        assert "NETC_TEST_A" not in os.environ and os.environ["NETC_TEST_B"] == "2"
    assert os.environ.pop("NETC_TEST_A") == "1" and "NETC_TEST_B" not in os.environ


PROBE = """
import json, os
from threadpoolctl import threadpool_info
import numpy
def threads():
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
before = threads()
from netc.runtime.backends.cpu import blas, jit
jit.setup()
after = threads()
print(json.dumps({"describe": blas.describe(), "numpy_before": before,
                  "numpy_after": {p: n for p, n in after.items() if p in before},
                  "env": [k for k in ("OPENBLAS_NUM_THREADS",) if k in os.environ]}))
"""


def probe(**env):
    environ = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "NETC_BLAS_CORETYPE")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**environ, **env}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


needs_own_openblas = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64")
    or __import__("importlib").util.find_spec("scipy_openblas32") is None,
    reason="netc's own OpenBLAS (scipy-openblas32) on x86-64")


@needs_own_openblas
def test_own_openblas_leaves_numpys_threads_and_follows_the_pins():
    result = probe(OPENBLAS_CORETYPE="Haswell")
    assert "(Haswell kernels, netc's own copy" in result["describe"]
    assert result["numpy_after"] == result["numpy_before"]  # the user's BLAS keeps its threads
    assert result["env"] == []  # OPENBLAS_NUM_THREADS=1 was for netc's copy only
    result = probe(OPENBLAS_CORETYPE="Haswell", NETC_BLAS_CORETYPE="Sandybridge")
    assert "(Sandybridge kernels, netc's own copy" in result["describe"]
    result = probe(OPENBLAS_CORETYPE="Prescott", NETC_BLAS_CORETYPE="auto")  # OpenBLAS's own choice
    assert "netc's own copy" in result["describe"] and "(Prescott kernels" not in result["describe"]


def test_bad_thread_count_warns_and_uses_the_cores(monkeypatch):
    monkeypatch.setattr(jit, "_state", {})
    monkeypatch.setenv("NETC_NUM_THREADS", "two")
    with pytest.warns(RuntimeWarning, match="NETC_NUM_THREADS='two' is not a whole number"):
        n = jit.num_threads()
    assert n >= 1
    monkeypatch.setattr(jit, "_state", {})
    monkeypatch.setenv("NETC_NUM_THREADS", "3")
    assert jit.num_threads() == 3


@needs_own_openblas
def test_unknown_core_name_warns():
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    code = "from netc.runtime.backends.cpu import jit; jit.setup()"
    out = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True,
                         env={**environ, "NETC_BLAS_CORETYPE": "NoSuchCore"}, check=True)
    assert "NETC_BLAS_CORETYPE='NoSuchCore': OpenBLAS runs its" in out.stderr
