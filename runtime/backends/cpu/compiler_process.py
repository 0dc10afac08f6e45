"""The compiler process of background.py: `python -m netc.runtime.backends.cpu.compiler_process`
reads a (module, qualname, sig) a line on stdin, compiles that launcher into Numba's cache, and
answers with the same line on stdout. It ends when stdin does, having compiled everything it was
given, even after its parent has ended (the cache is for the next run)."""
from __future__ import annotations

import importlib
import sys

from . import jit
from .background import decode, encode


def serve(lines=sys.stdin, out=sys.stdout):
    jit.setup()
    for line in lines:
        key = decode(line)
        module, name, sig = key
        fn = importlib.import_module(module)
        for part in name.split("."):
            fn = getattr(fn, part)
        try:
            fn.compile(sig)
        except Exception:  # noqa: BLE001 - the parent compiles it itself when it calls it
            pass
        try:
            out.write(encode(key))
            out.flush()
        except (BrokenPipeError, OSError):  # the parent has ended: compile the rest for the cache
            pass


if __name__ == "__main__":
    serve()
