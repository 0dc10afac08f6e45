"""GEMM for the kernels: C = alpha op(A) op(B) + beta C, called from inside Numba code.

Numba's np.dot cannot accumulate (beta) nor take a leading dimension, and costs a Python-level
check per call, so `gemm` calls cblas_?gemm directly: the function's address is given to LLVM under
a fixed name, which keeps the compiled kernels cacheable (the address is looked up again in every
process).

Which CBLAS: netc's own copy of OpenBLAS (the scipy-openblas32 wheel, 32-bit integers), loaded by
netc alone with one thread, since the kernels run it inside their own threads. NumPy's BLAS, and
its thread count, stay the user's. OpenBLAS picks its kernels for the CPU when it loads; an
OPENBLAS_CORETYPE in the environment pins them, for netc's copy too, unless NETC_BLAS_CORETYPE
says otherwise ("auto": OpenBLAS's own choice; or a core name, such as Haswell or SkylakeX).
`describe()` tells what runs. Where netc's own tiles (tiles.py) beat the BLAS, the kernels'
float32 GEMMs run on them instead, whatever the BLAS is pinned to (TILE_ROUTES, per vector width):
on AVX-512 both C = op(A) B and C = A B^T, about twice as fast as OpenBLAS's AVX2 kernels and as
fast or faster than its AVX-512 ones on most of the layers' shapes; on AVX2, where the tiles are a
third of that size, C = op(A) B where n and k are at most 64 (Winograd's products over 64 channels
or fewer), where they ran 10-50% faster than OpenBLAS's Haswell kernels, and the BLAS for the rest
(bench/RESULTS.md, bench/gemm.py).
The tiles are one C-callable function, compiled (or loaded from the cache) by bind() and called
by address as the BLAS is: compiled into every kernel that calls a GEMM, they were compiled once
per kernel, 20 s of a first run's compiling. float64 (gradient checks, tests) runs on the BLAS,
so that no first run waits for a second set of tiles.
Without that wheel: another loaded 32-bit-integer CBLAS (SciPy's OpenBLAS, MKL, Accelerate),
limited to one thread; without any, the same names lead to NumPy through ctypes: slower, and
still correct. `bind()` (from jit.setup(), when the backend loads) gives LLVM the addresses.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import importlib.util
import os
import sys
import threading
import warnings

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import lower_builtin, overload, type_callable

from .. import cache
from . import background, linking, tiles

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
INT_MAX = 2**31 - 1  # CBLAS's int: every dimension and leading dimension must fit
_I32 = types.int32
# per vector width of the tiles (tiles.vector_bytes): whether float32's C = op(A) B and C = A B^T
# run on them rather than on the BLAS, the most n and k of a C = op(A) B that runs on them (0:
# any), and the most rows (m) of a C = A B^T that runs on them where the second is False (0: none).
# AVX2, one thread, tiles / OpenBLAS's Haswell kernels in GFLOP/s (bench/gemm.py): m = 512
# and 2048 by n and k of 16-64, tiles 77-94 against 53-84 (2048x64x16: 51 / 42); with n or k 128
# mixed, 65-95 against 69-89; MLP and FC shapes (n 784-4096) 33-57 against 58-72. C = A B^T of
# at most 32 rows (a CONV's weight gradient over up to 32 filters, an FC's forward at a batch up
# to 32): 1.08-3.35x OpenBLAS's rate on 46 shapes of 1-32 rows, one at 0.98x (bench/RESULTS.md)
TILE_ROUTES = {64: (True, True, 0, 0), 32: (True, False, 64, 32)}


def _signature(real):
    return types.void(_I32, _I32, _I32, _I32, _I32, _I32, real, types.intp, _I32, types.intp, _I32,
                      real, types.intp, _I32)


def gemm(ta, tb, alpha, a, b, beta, c):
    """c = alpha op(a) op(b) + beta c (c is not read when beta is 0), with op(x) = x.T where its
    flag is set. a, b, c: 2-D arrays whose elements are contiguous within a row, rows at any
    stride (a column block of a C array will do). Compiled (inside kernels), it runs netc's
    tiles or calls the BLAS directly (see below); this plain form serves Python callers."""
    prod = alpha * ((a.T if ta else a) @ (b.T if tb else b))
    c[...] = prod if beta == 0 else prod + beta * c


_SGEMM = types.ExternalFunction("netc_cblas_sgemm", _signature(types.float32))
_DGEMM = types.ExternalFunction("netc_cblas_dgemm", _signature(types.float64))
# the tiles' entry (tiles.entry_signature), its pointers declared as addresses (intp), which the
# C calling convention passes alike
_TILES_S = types.ExternalFunction("netc_tiles_sgemm", types.void(*(
    types.intp if isinstance(t, types.CPointer) else t
    for t in tiles.entry_signature(types.float32).args)))
_keep: list = []  # ctypes objects whose addresses LLVM holds
_bound: dict = {}  # what bind() chose, for describe()


@contextlib.contextmanager
def _environment(**values):
    """os.environ with values set (None: removed) for the duration, then as it was."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def _openblas_text(lib, prefix, what):
    """OpenBLAS's get_config / get_corename string, or None for another BLAS."""
    try:
        fn = lib[f"{prefix}openblas_get_{what}"]
    except AttributeError:
        return None
    fn.restype = ctypes.c_char_p
    return fn().decode(errors="replace")


def _lp64_gemm(lib):
    """(sgemm, dgemm, prefix, OpenBLAS's config or None) of a CBLAS with 32-bit integers in lib,
    or None."""
    for prefix in ("scipy_", ""):
        try:
            sgemm, dgemm = lib[f"{prefix}cblas_sgemm"], lib[f"{prefix}cblas_dgemm"]
        except AttributeError:
            continue
        config = _openblas_text(lib, prefix, "config")
        if config is not None and "USE64BITINT" in config:
            return None  # an ILP64 OpenBLAS that kept the plain names
        if config is None and "ILP64" in os.environ.get("MKL_INTERFACE_LAYER", "").upper():
            return None
        return sgemm, dgemm, prefix, config
    return None


def _private_openblas():
    """netc's own OpenBLAS (scipy-openblas32), loaded with one thread and the kernels that
    NETC_BLAS_CORETYPE asks for; None where the wheel is missing."""
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(spec.submodule_search_locations[0], "lib")
    paths = [p for ext in ("so", "dylib", "dll") for p in glob.glob(os.path.join(folder, f"*openblas*.{ext}"))]
    if not paths:
        return None
    core = os.environ.get("NETC_BLAS_CORETYPE", "").strip()
    pin = {"OPENBLAS_CORETYPE": None if core.lower() == "auto" else core} if core else {}
    if hasattr(os, "add_dll_directory"):  # Windows: its runtime libraries lie beside it
        os.add_dll_directory(folder)
    with _environment(OPENBLAS_NUM_THREADS="1", **pin):
        try:
            lib = ctypes.CDLL(paths[0])
        except OSError:
            return None
    chosen = _openblas_text(lib, "scipy_", "corename") or ""
    if core and core.lower() != "auto" and chosen.lower() != core.lower():
        warnings.warn(f"NETC_BLAS_CORETYPE={core!r}: OpenBLAS runs its {chosen} kernels instead (the "
                      "name is unknown to it, or it maps that core to another); names it knows "
                      "include Haswell, SkylakeX, Cooperlake, SapphireRapids, or auto",
                      RuntimeWarning, stacklevel=2)
    return lib, paths[0]


def _shared_blas_paths():
    """Loaded BLAS libraries (SciPy's, MKL, a system OpenBLAS), and Accelerate on macOS."""
    paths = []
    try:
        from threadpoolctl import threadpool_info
        paths += [info["filepath"] for info in threadpool_info() if info["user_api"] == "blas"]
    except Exception:  # pragma: no cover - threadpoolctl's view is only a bonus here
        pass
    if sys.platform == "darwin":
        paths.append(ctypes.util.find_library("Accelerate"))
    return [p for p in paths if p]


def _find_cblas():
    """(sgemm, dgemm, description, private) of a 32-bit-integer CBLAS, netc's own first."""
    private = _private_openblas()
    candidates = [(*private, True)] if private else []
    for path in _shared_blas_paths():
        try:
            candidates.append((ctypes.CDLL(path), path, False))
        except OSError:
            continue
    for lib, path, own in candidates:
        found = _lp64_gemm(lib)
        if found is None:
            continue
        sgemm, dgemm, prefix, config = found
        corename = _openblas_text(lib, prefix, "corename")
        if corename:
            version = (config or "").split(" ")[1:2]
            name = " ".join(["OpenBLAS", *version]) + f" ({corename} kernels"
            name += ", netc's own copy)" if own else ", shared, one thread)"
        else:
            name = "CBLAS (shared, one thread)"
        return sgemm, dgemm, f"{name} [{os.path.normpath(path)}]", own
    return None


def _numpy_gemm(ctype):
    """A cblas_?gemm stand-in (row-major only): gemm's NumPy form on views of the pointers,
    for machines without a 32-bit-integer CBLAS."""
    i32, ptr = ctypes.c_int32, ctypes.c_void_p
    proto = ctypes.CFUNCTYPE(None, i32, i32, i32, i32, i32, i32, ctype, ptr, i32, ptr, i32, ctype, ptr, i32)

    def view(ptr, rows, cols, ld):
        flat = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctype)), ((rows - 1) * ld + cols,))
        return np.lib.stride_tricks.as_strided(flat, (rows, cols), (ld * flat.itemsize, flat.itemsize))

    def call(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        a = view(a, *((k, m) if ta == TRANS else (m, k)), lda)
        b = view(b, *((n, k) if tb == TRANS else (k, n)), ldb)
        gemm(ta == TRANS, tb == TRANS, alpha, a, b, beta, view(c, m, n, ldc))

    return proto(call)


def bind() -> bool:
    """Give LLVM the addresses behind netc_cblas_sgemm / netc_cblas_dgemm (once per process).
    True where the BLAS behind them is shared with NumPy or SciPy: jit.setup() then limits it to
    one thread, as the kernels call it from their own threads."""
    if not _keep:
        found = _find_cblas()
        if found is None:
            found = (_numpy_gemm(ctypes.c_float), _numpy_gemm(ctypes.c_double),
                     "NumPy through ctypes (no CBLAS with 32-bit integers found; slow)", False)
        *fns, _bound["description"], _bound["private"] = found
        _keep.extend(fns)
        for name, fn in zip(("netc_cblas_sgemm", "netc_cblas_dgemm"), fns):
            llvm.add_symbol(name, ctypes.cast(fn, ctypes.c_void_p).value)
        if any(tile_routes()):
            _bind_tiles()
        else:
            TILES_READY.set()
    return not _bound["private"]


# set once the kernels' calls to the tiles reach them (jit.launch waits for it; a call before
# that waits in the trampoline)
TILES_READY = threading.Event()


def _bind_tiles():
    """Give LLVM netc_tiles_sgemm: a trampoline that calls, through a slot, the tiles' compiled
    function (tiles.entry). From the cache, at once. Else, on a first run, the compiler
    process compiles them (background.tiles) while this one goes on (imports, data, compiling
    the first step's kernels, which need only the name: 9 s of digits.net's first run on a
    2-core AVX-512 machine), and the slot is set when they are in the cache. Without the
    compiler process, here, when the first kernel that calls them compiles or loads (linking
    binds _tiles_at first): a float64 run (gradcheck) or a script whose kernels call no float32
    GEMM never compiles them (3.3 s on the Zen 4)."""
    address, slot = _trampoline()
    llvm.add_symbol("netc_tiles_sgemm", address)
    key = tiles.host_vector_bytes()

    entry = tiles.entry(types.float32, key)  # (made here: it sets Numba's cache folder)

    def aim(loaded=False):
        try:
            if not loaded:
                entry.compile()  # from the cache the compiler process wrote, else here
            _keep.append(entry)
            ctypes.c_void_p.from_address(slot).value = entry.address
        except Exception as e:  # noqa: BLE001 - raised by wait_tiles, in the thread that runs
            _tiles_error.append(e)
        TILES_READY.set()

    if tiles.load_cached(entry) or background.IN_COMPILER_PROCESS:
        aim(loaded=entry.address is not None)
    elif background.available():
        background.tiles(aim)
    else:  # compiled here, once a kernel that calls them compiles or loads: none may before
        def aim_or_raise():
            aim()
            if _tiles_error:
                raise _tiles_error[0]
        linking.before_binding(_tiles_at, aim_or_raise)
        TILES_READY.set()


_tiles_error: list = []


def wait_tiles():
    """Wait until the kernels' calls to the tiles reach them (a first run: the compiler process
    compiles them); raise what compiling them raised."""
    TILES_READY.wait()
    if _tiles_error:
        raise _tiles_error[0]


def _trampoline():
    """(address of a function with the tiles' C signature that calls the function whose address
    is in a slot, waiting while the slot is empty; the slot's address), compiled by LLVM here
    (a few milliseconds)."""
    real, i64 = ir.FloatType(), ir.IntType(64)
    ptr = real.as_pointer()
    fnty = ir.FunctionType(ir.VoidType(), [i64] * 5 + [real, ptr, i64, ptr, i64, real, ptr, i64])
    module = ir.Module(name="netc_tiles_trampoline")
    module.triple = llvm.get_process_triple()
    slot = ir.GlobalVariable(module, fnty.as_pointer(), "netc_tiles_slot")
    slot.initializer = ir.Constant(fnty.as_pointer(), None)
    fn = ir.Function(module, fnty, "netc_tiles_trampoline")
    entry, start, call = (fn.append_basic_block(name) for name in ("entry", "wait", "call"))
    builder = ir.IRBuilder(entry)
    builder.branch(start)
    builder.position_at_end(start)
    target = builder.load_atomic(slot, "acquire", 8)
    builder.cbranch(builder.icmp_unsigned("==", target, ir.Constant(fnty.as_pointer(), None)),
                    start, call)
    builder.position_at_end(call)
    builder.call(target, fn.args)
    builder.ret_void()
    compiled = llvm.parse_assembly(str(module))
    machine = llvm.Target.from_triple(module.triple).create_target_machine()
    engine = llvm.create_mcjit_compiler(compiled, machine)
    engine.finalize_object()
    _keep.append(engine)
    return (engine.get_function_address("netc_tiles_trampoline"),
            engine.get_global_value_address("netc_tiles_slot"))


def describe() -> str:
    """What runs the kernels' GEMMs (after bind()): netc's tiles (their geometry) for which
    products, and which BLAS with which kernels."""
    blas = _bound.get("description", "not bound yet")
    ab, abt, most, rows = tile_routes()
    thin = f" where n and k are at most {most}" if most else ""
    routes = [name for name, on in ((f"op(A) B{thin}", ab), ("A B^T", abt),
                                    (f"A B^T of at most {rows} rows", rows and not abt)) if on]
    if not routes:
        return blas
    return (f"netc's own tiles ({tiles.GEOMETRIES[tiles.host_vector_bytes()]}) for "
            f"{' and '.join(routes)}; for the rest, {blas}")


def own_tiles(features=None) -> bool:
    """Whether gemm runs float32's C = op(A) B of every shape on netc's own tiles (tiles.py)
    rather than the BLAS, on this CPU or on one with these features (LLVM's names): TILE_ROUTES
    for its vector width. (On AVX2 only the thin ones run there: the layers' choices that weigh
    the GEMM's speed take the BLAS's.)"""
    ab, _, most, _ = tile_routes(features)
    return ab and not most


def own_tiles_nt(features=None) -> bool:
    """Whether gemm runs C = A B^T (inner products) on netc's own tiles: as own_tiles."""
    return tile_routes(features)[1]


def tile_routes(features=None):
    """Which float32 GEMMs run on netc's tiles on this CPU (or one with these features):
    (C = op(A) B, C = A B^T, the most n and k of an op(A) B that runs there, 0 for any; the most
    rows of an A B^T that runs there where the second is False, 0 for none)."""
    width = tiles.host_vector_bytes() if features is None else tiles.vector_bytes(features)
    return TILE_ROUTES.get(width, (False, False, 0, 0))


def blas_gemm(ta, tb, alpha, a, b, beta, c):
    """gemm, always by the BLAS (compiled; its plain form is gemm's): for benchmarks and tests."""
    gemm(ta, tb, alpha, a, b, beta, c)


@cache.njit(nogil=True)
def _blas_at(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """C (m x n) = alpha op(A) op(B) + beta C by the BLAS, from the operands' addresses and
    leading dimensions, row-major, in elements; alpha's type is theirs (float32 or float64)."""
    if m == 0 or n == 0:
        return
    if max(m, n, k, lda, ldb, ldc) > INT_MAX:
        raise ValueError("a GEMM dimension does not fit CBLAS's 32-bit integers")
    _cblas(np.int32(TRANS if ta else NO_TRANS), np.int32(TRANS if tb else NO_TRANS), np.int32(m),
           np.int32(n), np.int32(k), alpha, a, np.int32(lda), b, np.int32(ldb), beta, c,
           np.int32(ldc))


@cache.njit(nogil=True)
def _tiles_at(ta, tb, ab, abt, most, rows, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """_blas_at for float32, on the tiles where the route says (ab: C = op(A) B where n and k
    are at most `most`, or any if it is 0; abt: C = A B^T, else those of at most `rows` rows).
    Only for a CPU with tile routes: its code names netc_tiles_sgemm, which bind() gives LLVM
    there alone (code naming an unbound symbol ends the process when it loads)."""
    thin = most == 0 or (n <= most and k <= most)
    if (ab and not tb and thin) or (tb and not ta and (abt or m <= rows)):
        if m and n:
            _TILES_S(np.intp(ta), np.intp(tb), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    else:
        _blas_at(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


def _cblas(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """cblas_sgemm or cblas_dgemm, row-major, by alpha's type (in compiled code only)."""
    raise TypeError("_cblas is called from compiled code only")


@overload(_cblas)
def _cblas_overload(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    fn = _SGEMM if alpha == types.float32 else _DGEMM

    def impl(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        fn(np.int32(ROW_MAJOR), ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    return impl


# gemm and blas_gemm in compiled code: no function of their own (an overload compiled one per
# combination of the operands' layouts, 0.6-0.8 s each, four in a first run of digits.net's
# step), but a few instructions in the caller that take the operands' shapes, strides and
# addresses and call _tiles_at or _blas_at by symbol (linking.py), each compiled once per
# element type
@type_callable(gemm)
@type_callable(blas_gemm)
def _type_gemm(context):
    def typer(ta, tb, alpha, a, b, beta, c):
        arrays = (a, b, c)
        if (all(isinstance(x, types.Array) and x.ndim == 2 for x in arrays)
                and c.dtype in (types.float32, types.float64)
                and a.dtype == b.dtype == c.dtype
                and all(isinstance(x, types.Boolean) for x in (ta, tb))
                and all(isinstance(x, types.Number) for x in (alpha, beta))):
            return types.none
    return typer


def _lower_gemm(routes):
    def lower(context, builder, sig, args):
        ta, tb, alpha, a, b, beta, c = args
        real = sig.args[6].dtype
        intp = context.get_value_type(types.intp)
        arrays = [context.make_array(ty)(context, builder, value)
                  for ty, value in ((sig.args[3], a), (sig.args[4], b), (sig.args[6], c))]
        shapes = [cgutils.unpack_tuple(builder, x.shape, 2) for x in arrays]
        size = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(real)))
        lead = [builder.sdiv(cgutils.unpack_tuple(builder, x.strides, 2)[0], size) for x in arrays]
        flag = [context.cast(builder, v, t, types.boolean)
                for v, t in ((ta, sig.args[0]), (tb, sig.args[1]))]
        m, n = shapes[2]
        k = builder.select(flag[0], shapes[0][0], shapes[0][1])
        address = [builder.ptrtoint(x.data, intp) for x in arrays]
        values = [m, n, k, context.cast(builder, alpha, sig.args[2], real), address[0], lead[0],
                  address[1], lead[1], context.cast(builder, beta, sig.args[5], real), address[2],
                  lead[2]]
        i = types.intp
        argtypes = (types.boolean, types.boolean, i, i, i, real, i, i, i, i, real, i, i)
        ab, abt, most, rows = routes(real)
        if not (ab or abt or rows):
            return linking.emit(context, builder, _blas_at, argtypes, [*flag, *values])
        route = [cgutils.true_bit if ab else cgutils.false_bit,
                 cgutils.true_bit if abt else cgutils.false_bit,
                 context.get_constant(types.intp, most), context.get_constant(types.intp, rows)]
        return linking.emit(context, builder, _tiles_at,
                            argtypes[:2] + argtypes[:2] + (i, i) + argtypes[2:],
                            [*flag, *route, *values])
    return lower


_ANY = (types.Boolean, types.Boolean, types.Number, types.Array, types.Array, types.Number,
        types.Array)
lower_builtin(gemm, *_ANY)(_lower_gemm(
    lambda real: tile_routes() if real == types.float32 else (False, False, 0, 0)))
lower_builtin(blas_gemm, *_ANY)(_lower_gemm(lambda real: (False, False, 0, 0)))
