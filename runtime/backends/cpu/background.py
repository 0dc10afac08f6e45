"""The parallel launchers of a first run, compiled in a second process while this one works.

A launcher is one `prange` around one call of its part (jit.py), yet Numba compiles it slowly:
it links the part and everything the part calls into the launcher's module, then optimizes and
emits all of it again (digits.net's first run: 45 s for the parts, 30 more for four launchers).
None of that needs this process. So where a launcher is neither compiled here nor in the cache,
`launch` in jit.py runs its parts one after another on this thread and hands the launcher's
signature to a compiler process (compiler_process.py, run with `python -m`: it imports netc's
kernels and nothing of the caller's), which compiles it into Numba's cache on the other core;
once it says so, the launcher loads from the cache here and the parts run on the threads again.
The process starts with the first launcher it gets; it ends when it has compiled every
launcher it was given and this process has ended (so that work a short run asked for late still
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

CHILD = __name__.rpartition(".")[0] + ".compiler_process"  # the child's module (-m)
_state: dict = {"child": None, "done": queue.Queue(), "asked": set(), "failed": False}


def available() -> bool:
    """Whether launchers may compile in the background: NETC_BACKGROUND_COMPILE=0 turns it
    off (then a launcher compiles where it is first called, as any kernel)."""
    return os.environ.get("NETC_BACKGROUND_COMPILE", "1").strip() != "0" and not _state["failed"]


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
                stderr=subprocess.DEVNULL, text=True, bufsize=1)
        except OSError:
            _state["failed"] = True
            return None
        threading.Thread(target=_read, args=(child,), daemon=True).start()
    return _state["child"]


def encode(key) -> str:
    """A (module, qualname, sig) as one line of the pipe."""
    return base64.b64encode(pickle.dumps(key)).decode() + "\n"


def decode(line):
    return pickle.loads(base64.b64decode(line.strip()))


def _read(child):
    """The parent's reader of the child's answers: a line per compiled launcher."""
    for line in child.stdout:
        try:
            _state["done"].put(decode(line))
        except Exception:  # noqa: BLE001 - a bad line: that launcher compiles where it is called
            continue
    _state["failed"] = True  # the child ended: the remaining launchers compile here


def stop() -> None:
    """End the compiler process now (what it finished stays in the cache)."""
    child = _state["child"]
    if child is not None and child.poll() is None:
        child.kill()
        child.wait()
