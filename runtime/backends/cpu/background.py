"""The parallel launchers of a first run, compiled in a second process while this one works.

A launcher is one call of Numba's threading layer around its part (jit.py, linking.run_parts):
0.1-0.2 s to compile (four of digits.net's took 30 s when Numba linked the part into each, 0.3-0.7
s each as a `prange` around a call by symbol), and nothing of this process is needed for it. So
where a launcher is neither compiled here nor in the cache,
`launch` in jit.py runs its parts one after another on this thread and hands the launcher's
signature to a compiler process (compiler_process.py, run with `python -m`: it imports netc's
kernels and nothing of the caller's), which compiles it into Numba's cache on the other core;
once it says so, the launcher loads from the cache here and the parts run on the threads again.
On a first run, the same process also compiles half of the first step's parts (`ahead`:
jit.compile_ahead takes them from the first, this process from the last). The process starts
with the first launcher or parts it gets; it ends when it has compiled every launcher it was
given and this process has ended (so that work a short run asked for late still
reaches the cache for the next run), or when `stop()` ends it.

Signatures cross the pipe pickled: between this process and the child it started, nothing a
user loads.
"""
from __future__ import annotations

import base64
import os
import pickle
import queue
import subprocess
import sys
import threading

from .. import cache

CHILD = __name__.rpartition(".")[0] + ".compiler_process"  # the child's module (-m)


def new_state() -> dict:
    """This module's state before any compiler process: its child (started by the first request),
    the queue of what the child compiled, the keys asked for, whether the child is gone."""
    return {"child": None, "done": queue.Queue(), "asked": set(), "failed": False}


_state: dict = new_state()

# whether this is the compiler process itself (its parent says so in its environment: the
# package's import, before anything of the child's runs, sets the kernels up): it never starts
# one of its own, and compiles the GEMM tiles itself
IN_COMPILER_PROCESS = os.environ.get("NETC_COMPILER_PROCESS") == "1"


def available() -> bool:
    """Whether launchers may compile in the background: NETC_BACKGROUND_COMPILE=0 turns it
    off (then a launcher compiles where it is first called, as any kernel)."""
    return (os.environ.get("NETC_BACKGROUND_COMPILE", "1").strip() != "0" and not _state["failed"]
            and not IN_COMPILER_PROCESS)


def ask(launcher, sig) -> None:
    """Have the compiler process compile `launcher` for the argument types `sig` (once)."""
    key = (launcher.py_func.__module__, launcher.py_func.__qualname__, sig)
    if key in _state["asked"]:
        return
    _state["asked"].add(key)
    child = _child()
    if child is None:
        return
    try:
        child.stdin.write(encode(key))
        child.stdin.flush()
    except (OSError, ValueError):
        _state["failed"] = True


def ahead(folder, keys) -> None:
    """Have the compiler process compile the parts `keys` ((module, qualname, sig) each, in the
    order a step calls them) from the last, claiming each in `folder` first (claim), until it
    meets one this process has claimed: jit.compile_ahead compiles them from the first."""
    child = _child()
    if child is None:
        return
    try:
        child.stdin.write(encode(("ahead", folder, list(keys))))
        child.stdin.flush()
    except (OSError, ValueError):
        _state["failed"] = True


def tiles(ready) -> None:
    """Have the compiler process compile the GEMM tiles into the cache (its setup does, before it
    reads a line) and call ready() on this process's reader thread once they are there, or once
    that process has ended (ready() then compiles them where it runs); here and now where no
    compiler process starts."""
    _state["tiles"] = ready
    child = _child()
    try:
        child.stdin.write(encode(("tiles",)))
        child.stdin.flush()
    except (AttributeError, OSError, ValueError):  # (no child: None)
        _state["failed"] = True
        _tiles_ready(_state)


def _tiles_ready(state):
    ready = state.pop("tiles", None)
    if ready is not None:
        ready()  # (never raises: blas._bind_tiles's aim keeps its error for launch to raise)


def claim(folder, index) -> bool:
    """Whether this process is the first to claim part `index` of an ahead list (a file created
    in `folder` once, by whichever process gets there first)."""
    try:
        os.close(os.open(os.path.join(folder, str(index)), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except OSError:  # claimed, or the folder gone (the other process is done with the list)
        return False


def finished() -> list:
    """The (module, qualname, sig) the compiler process has compiled since the last call."""
    out = []
    while True:
        try:
            out.append(_state["done"].get_nowait())
        except queue.Empty:
            return out


def _child():
    if _state["child"] is None and not _state["failed"]:
        try:
            _state["child"] = child = subprocess.Popen(
                [sys.executable, "-m", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, bufsize=1,
                env={**os.environ, "NETC_COMPILER_PROCESS": "1", "NUMBA_CACHE_DIR": cache.base()})
        except OSError:
            _state["failed"] = True
            return None
        # (the reader is given this state: a test that swaps _state in and out, as
        # test_parts.py does, must not have an old child's end mark the new state failed)
        _state["reader"] = threading.Thread(target=_read, args=(child, _state), daemon=True)
        _state["reader"].start()
    return _state["child"]


def encode(key) -> str:
    """A (module, qualname, sig) as one line of the pipe."""
    return base64.b64encode(pickle.dumps(key)).decode() + "\n"


def decode(line):
    return pickle.loads(base64.b64decode(line.strip()))


def _read(child, state):
    """The parent's reader of the child's answers (a line per compiled launcher), into `state`,
    the _state that started `child`."""
    for line in child.stdout:
        try:
            message = decode(line)
        except Exception:  # noqa: BLE001 - a bad line: that launcher compiles where it is called
            continue
        if message == ("tiles",):
            _tiles_ready(state)
        else:
            state["done"].put(message)
    state["failed"] = True  # the child ended: the remaining launchers compile here
    _tiles_ready(state)  # (the tiles too, here, where they were not ready)


def stop() -> None:
    """End the compiler process now (what it finished stays in the cache)."""
    child = _state["child"]
    if child is not None and child.poll() is None:
        child.kill()
        child.wait()
