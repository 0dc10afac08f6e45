"""Where a run's compiling goes: every Numba compilation the run makes (in this process), its
own time (less the compilations it started inside) and its count, by function and by module.

    python bench/compile_times.py [--top N] [--json FILE] -m netc.cli train specs/digits.net
    NUMBA_CACHE_DIR=$(mktemp -d) python bench/compile_times.py -m pytest -q tests/runtime
    python bench/compile_times.py script.py ARGS...

With an empty NUMBA_CACHE_DIR it measures a first run; with a warm one, what still compiles
(a cache miss, or a call that is typed anew each time: one function compiled many times).
Compilations in other processes (a pytest's subprocesses, the compiler process of
runtime/backends/cpu/background.py, which tests turn off) are not counted."""
from __future__ import annotations

import collections
import importlib.util
import json
import os
import runpy
import sys
import time


class Recorder:
    """Numba's "numba:compile" events, nested: each compilation's time and its own time."""

    def __init__(self):
        self.rows: list = []  # (function, argument types, seconds, own seconds)
        self._stack: list = []

    def listener(self):
        from numba.core import event
        recorder = self

        class Listener(event.Listener):
            def on_start(self, ev):
                recorder._stack.append([time.perf_counter(), 0.0])

            def on_end(self, ev):
                start, inner = recorder._stack.pop()
                took = time.perf_counter() - start
                if recorder._stack:
                    recorder._stack[-1][1] += took
                fn = getattr(ev.data.get("dispatcher"), "py_func", None)
                name = (f"{fn.__module__}.{fn.__qualname__}" if fn is not None
                        else str(ev.data.get("dispatcher")))
                recorder.rows.append((name, str(ev.data.get("args")), took, took - inner))
        return Listener()


def tally(rows, top=25) -> str:
    """The table: the total, then modules and functions by own time."""
    funcs = collections.defaultdict(lambda: [0, 0.0])
    for name, _, _, own in rows:
        funcs[name][0] += 1
        funcs[name][1] += own
    modules = collections.defaultdict(float)
    for name, (_, own) in funcs.items():
        modules[name.split(".<locals>")[0].rsplit(".", 1)[0]] += own
    lines = [f"{len(rows)} compilations, {sum(r[3] for r in rows):.1f} s", "",
             "  own s  module"]
    lines += [f"{t:7.1f}  {m}" for m, t in sorted(modules.items(), key=lambda x: -x[1])[:top]]
    lines += ["", "  own s  count  function"]
    lines += [f"{t:7.1f}  {n:5d}  {name}"
              for name, (n, t) in sorted(funcs.items(), key=lambda x: -x[1][1])[:top]]
    return "\n".join(lines)


USAGE = ("usage: python bench/compile_times.py [--top N] [--json FILE] (-m MODULE | SCRIPT) "
         "[ARGS...]")


def parse(argv):
    """(top, json path, module or None, the run's argv): this tool's options come first, then
    the run as python takes it (everything after the module or script is the run's)."""
    top, path = 25, None
    while argv and argv[0] in ("--top", "--json"):
        if len(argv) < 2:
            raise SystemExit(f"compile_times: {argv[0]} needs a value\n{USAGE}")
        if argv[0] == "--top":
            try:
                top = int(argv[1])
            except ValueError:
                raise SystemExit(f"compile_times: --top takes a number; received {argv[1]!r}")
        else:
            path = argv[1]
        argv = argv[2:]
    if not argv or argv[0] in ("-h", "--help"):
        raise SystemExit(__doc__ if argv else f"compile_times: nothing to run\n{USAGE}")
    if argv[0] == "-m":
        if len(argv) < 2:
            raise SystemExit(f"compile_times: -m needs a module\n{USAGE}")
        try:
            found = importlib.util.find_spec(argv[1]) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise SystemExit(f"compile_times: no module named {argv[1]}\n{USAGE}")
        return top, path, argv[1], [argv[1]] + argv[2:]
    if not os.path.isfile(argv[0]):
        raise SystemExit(f"compile_times: no such script: {argv[0]} (a module needs -m)\n{USAGE}")
    return top, path, None, list(argv)


def main(argv=None) -> int:
    top, path, module, run_argv = parse(list(sys.argv[1:] if argv is None else argv))
    from numba.core import event
    recorder = Recorder()
    listener = recorder.listener()
    event.register("numba:compile", listener)
    saved = sys.argv
    status = 0
    try:
        sys.argv = run_argv
        if module is not None:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(run_argv[0], run_name="__main__")
    except SystemExit as e:  # the run's own exit: its status is ours, after the table
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:  # (the table also where the run raised, before its traceback)
        sys.argv = saved
        event.unregister("numba:compile", listener)
        print("\n" + tally(recorder.rows, top), file=sys.stderr)
    if path:
        with open(path, "w") as f:
            json.dump(recorder.rows, f)
    return status


if __name__ == "__main__":
    sys.exit(main())
