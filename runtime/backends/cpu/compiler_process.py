"""The compiler process of background.py: `python -m netc.runtime.backends.cpu.compiler_process`
reads a (module, qualname, sig) a line on stdin, compiles that launcher into Numba's cache, and
answers with the same line on stdout; or an ("ahead", folder, keys) line: it compiles those
parts from the last while it can claim them (background.claim), answering each. It ends when stdin does, having compiled everything it was
given, even after its parent has ended (the cache is for the next run)."""
from __future__ import annotations

import importlib
import sys

from . import background, jit
from .background import claim, decode, encode


def serve(lines=sys.stdin, out=sys.stdout):
    background.IN_COMPILER_PROCESS = True  # (set from the environment the parent gives)
    jit.setup()  # (the GEMM tiles compile here: a parent waits for them)
    for line in lines:
        message = decode(line)
        if message == ("tiles",):  # in the cache since setup
            _answer(message, out)
        elif message[0] == "ahead":  # parts of a first step, from the last, while claims hold
            _, folder, keys = message
            for index in range(len(keys) - 1, -1, -1):
                if not claim(folder, index):
                    break
                _compile(keys[index], out)
        else:  # a launcher
            _compile(message, out)


def _compile(key, out):
    """Compile the kernel `key` names ((module, qualname, sig)) into the cache; answer with key."""
    module, name, sig = key
    try:  # (a module this process cannot import, too, must not end it: the rest still compile)
        fn = importlib.import_module(module)
        for part in name.split("."):
            fn = getattr(fn, part)
        fn.compile(sig)
    except Exception:  # noqa: BLE001 - the parent compiles it itself when it calls it
        pass
    _answer(key, out)


def _answer(message, out):
    try:
        out.write(encode(message))
        out.flush()
    except (BrokenPipeError, OSError):  # the parent has ended: compile the rest for the cache
        pass


if __name__ == "__main__":
    serve()
