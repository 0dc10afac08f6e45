"""How the CPU kernels are compiled, and the threads they run on.

Kernels are module-level Numba functions, compiled on first call and cached on disk (`kernel(...)`
gives every one the same options). Threads: work that splits is written as a serial *part*,
`part(t, parts, ...)`, which does the t-th of `parts` shares (its samples, units or elements, with
its own slice of a workspace), and a *launcher* (`launcher()`), `run_parts(part, parts, (...))`,
which runs the parts on Numba's threads (linking.run_parts: the threading layer called directly,
the part called by address rather than compiled in again). No kernel uses Numba's parallel
compiler: lowering a prange is the slowest thing Numba compiles (a whole kernel's body under
prange took 2-4x the time of the same body compiled serially), and even a prange around one call
of the part took 0.3-0.7 s a launcher to compile, run_parts' launcher 0.1-0.2 s. `launch()` runs
the part alone on the calling thread where the work is too small to pay for a parallel region
(`split()`: a grain measured in bench/grain.py), so that small layers never wake the other
threads, which on a busy machine may not be running, and never compile their launcher. The
GEMMs a part calls run single-threaded: one pool of threads, so that nothing spins against
anything (BLAS's own threads would fight Numba's for the cores).

The threads are Intel TBB's where the `tbb` wheel is installed (`threading_layer()`): a TBB
parallel region ends when its work is done, the calling thread taking the parts of a worker that
has not started, whereas an OpenMP region waits at its barrier for every thread of its team; on a
machine whose other core is busy, that wait is a scheduler time slice, about 8 ms, per region
(bench/grain.py: an FC forward of 1.3 ms on one thread took 7.9 ms split on OpenMP threads, 1.3
on TBB's). Elsewhere Numba's own choice (OpenMP, else its workqueue). `setup()` runs when the
backend loads, before any kernel.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import os
import shutil
import sys
import tempfile
import threading
import time
import types
import warnings

import numba

from ...cores import usable as usable_cores
from .. import cache
from . import background, blas, linking
from .linking import run_parts  # noqa: F401  (the launchers' call of their parts)

_state: dict = {}
_recording = threading.local()  # .calls: recording()'s list, in the thread that records
_recorders = 0  # how many threads record now (launch asks its thread only then)
_recorders_lock = threading.Lock()

# the least work, in estimated nanoseconds on one thread, that a second thread pays for: below it a
# kernel runs on the calling thread alone. bench/grain.py (2-core Zen 3, TBB): an FC forward of
# 15 us ran 0.76x as fast split in two, one of 76 us 1.38x; an elementwise tanh of 53 us 1.18x
GRAIN = 30_000
# a GEMM-bound kernel's multiply-adds per nanosecond on one thread (bench/grain.py's FC forward:
# 2.1M in 76 us on AVX2)
MACS_PER_NS = 28

# fastmath flags for kernels that sum: reassociation lets LLVM vectorize a reduction (and the
# branches around it become selects); NaN and Inf keep their meaning, so bad numbers still show
REDUCE = {"reassoc", "nsz", "contract"}


def kernel(fastmath=False, inline=False, vector_division=False, outlined=False):
    """numba.njit with netc's options: cached (cache.py), without the GIL; `inline` puts the body
    into every caller at Numba's level, for inner loops over short work that a call would cost
    as much as. `vector_division`: a
    division by zero gives inf or NaN as in NumPy (error_model="numpy") instead of Numba's check
    and exception, a branch per division that keeps a loop from vectorizing (the sigmoid's).
    `outlined`: other kernels call it by symbol, compiled once (linking.outlined), rather than
    compiling its code into each of them."""
    options = dict(nogil=True, fastmath=fastmath)
    if vector_division:
        options["error_model"] = "numpy"
    if inline:
        options["inline"] = "always"
    jit = cache.njit(**options)
    return (lambda fn: linking.outlined(jit(fn))) if outlined else jit


def launcher(fn):
    """A launcher: `run_parts(_x_part, parts, (a, b, ...))` for a launcher `_x_cpu(parts, a, b,
    ...)`, compiled as any kernel (not by Numba's parallel compiler). Its part is called by
    symbol (linking.py), not compiled into it: a launcher linked its part and all it calls and
    optimized the whole again, which took as long as compiling the part (the im2col CONV's
    forward launcher 6 s, digits.net's seven launchers 24.6 s; 0.6-1.8 s each with the part
    called by symbol under a prange, 6.9 s; without the prange, see linking.run_parts)."""
    return kernel()(fn)


def specialized(decorate, template, name, **bound):
    """A kernel made from the plain function `template` for constants known before any call:
    a copy of it named `name`, whose globals are its module's with `bound` set (an activation's
    code, which its loop then folds; the part its launcher runs), decorated (kernel(...),
    launcher) and set in the module as `name`, where Numba's cache, linking's reload steps and
    the compiler process find kernels by module and name. Each copy compiles only where a
    network calls it (an activation's loop 0.2 s; the five in one kernel, 1.4 s). Made after the
    module's other names: the copy sees its module's globals as they were then."""
    module = sys.modules[template.__module__]
    scope = {**vars(module), **bound}
    fn = types.FunctionType(template.__code__, scope, name, template.__defaults__,
                            template.__closure__)
    fn.__qualname__, fn.__doc__ = name, template.__doc__
    made = decorate(fn)
    setattr(module, name, made)
    return made


def specialized_pairs(part, run, name, codes, **options):
    """{label: (launcher, part)} for each label, code of `codes`: the copy of the part template
    `part` with CODE = code (a kernel(**options)) named name.format(label) + "_part", and of the
    launcher template `run` that runs it, named name.format(label) + "_cpu" (specialized)."""
    made = {}
    for label, code in codes.items():
        each = specialized(kernel(**options), part, name.format(label) + "_part", CODE=code)
        made[label] = (specialized(launcher, run, name.format(label) + "_cpu",
                                   **{part.__name__: each}), each)
    return made


def num_threads() -> int:
    """The threads kernels use: NETC_NUM_THREADS, else the CPUs this process may use (its cores,
    at most its container's CPU quota: netc.runtime.cores)."""
    if "threads" not in _state:
        cores = usable_cores()
        env = os.environ.get("NETC_NUM_THREADS", "").strip()
        valid = env.isdigit() and int(env) >= 1
        n = int(env) if valid else cores
        if env and not valid:
            warnings.warn(f"NETC_NUM_THREADS={env!r} is not a whole number >= 1: using the {cores} "
                          "cores this process may use", RuntimeWarning, stacklevel=2)
        _state["threads"] = n
    return _state["threads"]


def threading_layer() -> str:
    """The threading layer the kernels get: "tbb" where the tbb wheel's library loads (its
    library lies outside the loader's path, in the environment's lib folder: loaded here by its
    path, so that Numba's TBB layer finds it), else Numba's own choice ("default"). A
    NUMBA_THREADING_LAYER in the environment is the user's and is kept."""
    if "layer" not in _state:
        _state["layer"] = numba.config.THREADING_LAYER
        tbb = _load_tbb()  # also where the user asks for tbb: Numba would not find its library
        if tbb and not os.environ.get("NUMBA_THREADING_LAYER"):
            _state["layer"] = numba.config.THREADING_LAYER = "tbb"
    return _state["layer"]


def _load_tbb() -> bool:
    try:
        files = importlib.metadata.files("tbb") or []
    except importlib.metadata.PackageNotFoundError:
        return False
    names = ("libtbb.so.12", "libtbb.12.dylib", "tbb12.dll")
    paths = [str(f.locate()) for f in files if os.path.basename(str(f)) in names]
    for path in paths:
        try:
            ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
            import numba.np.ufunc.tbbpool  # noqa: F401 - fails where the library does not fit
            return True
        except (OSError, ImportError):
            continue
    return False


def setup():
    """Once, before the first kernel runs: bind the BLAS the kernels call (limited to one thread
    where it is shared with NumPy), choose the threading layer, then give Numba its thread
    count."""
    if _state.get("ready"):
        return
    threading_layer()
    if blas.bind():
        from threadpoolctl import threadpool_limits
        _state["blas_limit"] = threadpool_limits(limits=1, user_api="blas")  # kept for the process
    numba.set_num_threads(min(num_threads(), numba.config.NUMBA_NUM_THREADS))
    _state["workers"] = numba.get_num_threads()
    _state["ready"] = True


def workers() -> int:
    """How many parts a parallel kernel splits its work into (the size of its workspaces): the
    thread count setup() gave Numba, kept, since asking Numba costs 8 us a call and a step asks
    once or twice a layer (the MLP's step: 3% of it)."""
    n = _state.get("workers")
    if n is None:
        setup()
        n = _state["workers"]
    return n


def split(ns) -> int:
    """How many parts to split work of about `ns` nanoseconds (on one thread) into: one per
    GRAIN of it, at most one per worker, at least one."""
    return int(max(1, min(workers(), ns // GRAIN)))


def split_macs(macs) -> int:
    """split() for a GEMM-bound kernel's multiply-adds."""
    return split(macs // MACS_PER_NS)


def launch(launcher, part, parts, *args):
    """part(t, parts, *args) for every t < parts: by `launcher` (run_parts: Numba's threads take
    the ts), or, for one part, by `part` on this thread alone (no parallel region: the launcher
    is not even compiled). A launcher neither compiled nor cached yet is
    compiled by a second process (background.py) while its parts run here one after another
    (the same parts, so the same numbers, and every per-part sum the caller adds is written).
    While recording() records in this thread, nothing runs: the call is noted."""
    if _recorders:  # (a thread-local's missing attribute costs an exception: asked only then)
        calls = getattr(_recording, "calls", None)
        if calls is not None:
            calls.append((launcher, part, parts, args))
            return
    if not blas.TILES_READY.is_set() or blas._tiles_error:  # a first run: the compiler
        blas.wait_tiles()  # process is compiling them
    if parts > 1 and (launcher in _ready or _prepare(launcher, parts, args)):
        launcher(parts, *args)
        return
    for t in range(parts):
        part(t, parts, *args)
    if _to_ask:
        _hand_over()  # after the parts ran: the child finds them in the cache


_ready: set = set()  # the launchers compiled or loaded in this process
_pending: dict = {}  # (module, qualname) -> a launcher the compiler process is compiling
_to_ask: list = []  # (launcher, signature) just found uncompiled, for launch to hand over


def _hand_over():
    """Give the compiler process the launchers in _to_ask (another thread may be emptying the
    list at the same time: a model trained while another compiles ahead)."""
    while True:
        try:
            launcher, sig = _to_ask.pop(0)
        except IndexError:
            return
        background.ask(launcher, sig)


def _prepare(launcher, parts, args) -> bool:
    """Whether `launcher` can run now without compiling here: compiled in this process, in the
    cache (then loaded), just compiled by the compiler process, or background compiling off (or
    its process gone: then it compiles at its call, as any kernel)."""
    _collect()
    if launcher in _ready:
        return True
    key = (launcher.py_func.__module__, launcher.py_func.__qualname__)
    if key in _pending and background.available():
        return False
    _pending.pop(key, None)
    if launcher.overloads or not background.available():
        _ready.add(launcher)
        return True
    sig = _signature(launcher, parts, args)
    if _load_cached(launcher, sig):
        _ready.add(launcher)
        return True
    _pending[key] = launcher
    _to_ask.append((launcher, sig))
    return False


def _collect():
    """Take in what the compiler process has compiled since the last call: its launchers are
    loaded (from the cache it wrote), its parts noted for compile_ahead."""
    for module, name, sig in background.finished():
        done = _pending.pop((module, name), None)
        if done is not None:
            done.compile(sig)  # from the cache the compiler process wrote
            _ready.add(done)
        else:
            _compiled_there.add((module, name, sig))


_compiled_there: set = set()  # (module, qualname, sig) of the parts the compiler process compiled


@contextlib.contextmanager
def recording():
    """Within it, launch() in this thread runs nothing and notes each call: (launcher, part,
    parts, args); other threads' launches run as usual (a model trained in one thread while
    another's first step is recorded gets its numbers).
    Yields that list. For compile_ahead: a training step run within it calls every part it
    will call, with the same argument types, in a fraction of a second (kernels called outside
    launch, all small, compile and run as usual, on arrays the parts did not write)."""
    global _recorders
    calls = _recording.calls = []
    with _recorders_lock:
        _recorders += 1
    try:
        yield calls
    finally:
        _recording.calls = None
        with _recorders_lock:
            _recorders -= 1


def compile_ahead(calls) -> int:
    """Compile the parts and launchers of `calls` (recording()'s) before they run, on two
    processes: this one takes the parts not yet compiled nor cached from the first, the
    compiler process from the last, each claiming one at a time (background.claim) until they
    meet; then this one loads the other's from the cache. Launchers go to the compiler process
    as launch() hands them over. A first run compiled its parts one after another on this
    thread alone, as the step reached them. Returns how many parts were compiled; where
    background compiling is off, compiles nothing (the step compiles them as it reaches them)."""
    if not background.available():
        return 0
    parts, seen = [], set()
    for launcher, part, n, args in calls:
        sig = _signature(part, 0, (n,) + args)  # part(t, parts, *args)
        if (part, sig) not in seen:
            seen.add((part, sig))
            if sig not in part.overloads and not _load_cached(part, sig):
                parts.append((part, sig))
        if n > 1 and launcher not in _ready:
            _prepare(launcher, n, args)
    parts.sort(key=lambda item: -compile_cost(item[0]))
    keys = [(p.py_func.__module__, p.py_func.__qualname__, sig) for p, sig in parts]
    folder = None
    if parts:
        _remove_stale_folders(tempfile.gettempdir())
        folder = tempfile.mkdtemp(prefix=f"netc-ahead-{os.getpid()}-")
    try:
        if parts:
            background.ahead(folder, keys)
        _hand_over()
        mine = 0
        while mine < len(parts) and background.claim(folder, mine):
            _compile_quietly(*parts[mine])
            mine += 1
        while background.available() and any(k not in _compiled_there for k in keys[mine:]):
            time.sleep(0.01)
            _collect()
        for part, sig in parts[mine:]:
            _compile_quietly(part, sig)  # from the compiler process's cache (here where it failed)
    finally:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
    return len(parts)


def _remove_stale_folders(where):
    """Remove compile_ahead's folders (netc-ahead-PID-...) left in `where` by a process that no
    longer runs (killed before its `finally`: SIGKILL, out of memory)."""
    for name in os.listdir(where):
        pid = name.split("-")[2] if name.startswith("netc-ahead-") and name.count("-") >= 3 else ""
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(os.path.join(where, name), ignore_errors=True)


def _running(pid) -> bool:
    """Whether a process with this id runs (or is another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def compile_cost(dispatcher, seen=None) -> int:
    """A guess at how long `dispatcher` takes to compile, for compile_ahead's order: the
    bytecode of its function and of the kernels its code names (directly or as a module's
    attribute), each counted once. The largest go first, taken by this process; the compiler
    process, busy with the tiles at first, takes the smallest from the end. In the order the
    step called them, the compiler process took digits.net's CONV backward (4-5 s) last and
    this one sat idle waiting for it, 2 s and more."""
    seen = set() if seen is None else seen
    if dispatcher in seen:
        return 0
    seen.add(dispatcher)
    code = dispatcher.py_func.__code__
    names = set(code.co_names).union(*(c.co_names for c in code.co_consts
                                       if isinstance(c, types.CodeType)))
    scope = dispatcher.py_func.__globals__
    named = [scope.get(n) for n in names]
    named += [getattr(m, n, None) for m in named if isinstance(m, types.ModuleType) for n in names]
    return len(code.co_code) + sum(compile_cost(d, seen) for d in named
                                   if isinstance(d, numba.core.dispatcher.Dispatcher))


def _compile_quietly(part, sig):
    """part.compile(sig); an error is left to the real step, which may not call that part (the
    record took its branches on values no part wrote) and raises it where it does."""
    try:
        part.compile(sig)
    except Exception:  # noqa: BLE001 - see above
        pass


def _load_cached(dispatcher, sig) -> bool:
    """Install `dispatcher`'s overload for `sig` from Numba's cache, as Dispatcher.compile
    installs what it loads; False where the cache has none."""
    cres = dispatcher._cache.load_overload(sig, dispatcher.targetctx)
    if cres is None:
        return False
    dispatcher.targetctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
    dispatcher.add_overload(cres)
    return True


def _signature(launcher, parts, args):
    """The argument types Numba's dispatcher gives launcher(parts, *args)."""
    return tuple(launcher.typeof_pyval(a) for a in (parts,) + args)


@kernel(inline=True)
def share(size, t, parts):
    """The t-th of `parts` near-equal shares of range(size): (lo, hi). A loop over values runs
    over the share's slices from 0, not `for i in range(lo, hi)`: Numba cannot tell that such an
    i is never negative, checks every index for wraparound, and the loop does not vectorize (a
    ReLU layer ran 8x slower, a tanh layer 10x, at 20 ns a value)."""
    return size * t // parts, size * (t + 1) // parts
