"""Kernels split into parts (jit.launch): the work of a small layer runs on the calling thread
alone, a large one's on Numba's threads, one share each. Both ways must give the same numbers:
every kernel here runs once as one part (GRAIN past any layer's work) and once split into as
many parts as there are workers (GRAIN 1), with the same values, gradients and optimizer step."""
from __future__ import annotations

import numpy as np
import pytest

import netc
from netc.runtime.backends.cpu import conv, jit, linking

from .test_layers import randomized

# every parallel kernel: each CONV algorithm (forced below), DECONV, the pools (2x2 unrolled,
# general max, average), both upsamplings, FC by dot products and by GEMM, the elementwise
# activations, PReLU, softmax, dropout, the recurrences and their input projection, the row
# losses; the optimizer's update
IMAGES = ("input 8x8x16\nCONV 3x3 16 pad=1 act=relu - POOL max 2x2/2 - UPSAMPLE 2 bilinear - "
          "CONV 3x3 4 pad=1 act=tanh - POOL avg 3x3/2 pad=1 - DECONV 4x4/2 4 pad=1 act=leaky - "
          "POOL max 3x3/2 - UPSAMPLE 2 - PRELU - FC 20 act=elu - DROPOUT 0.3 - FC 9 act=prelu - "
          "OUT 5 softmax")
SEQUENCES = "input seq 6x5\nLSTM 8 return=seq - GRU 6 return=seq bidir=true - RNN 4 - OUT 3 softmax"
# BN over images and over features, GN, IN and LN over both, the activation layers, ADD with
# and without its activation and with stochastic depth
NORMALIZED = ("input 8x8x16\nCONV 3x3 16 pad=1 - BN - RELU - RES[CONV 3x3 16 pad=1 - BN - LEAKY] - "
              "RES[CONV 3x3 16 pad=1 - GN 4] act=relu drop=0.3 - IN - LN - BN - SIGMOID - FC 12 - "
              "BN - GN 3 - ELU - LN - TANH - OUT 3 softmax")


def _step(spec, grain, monkeypatch, x, y):
    monkeypatch.setattr(jit, "GRAIN", grain)
    model = randomized(spec)
    out = model.forward(x)
    loss, grads, dx = model.loss_and_grads(x, y, input_grad=True)
    opt = netc.optimizer("adam", model.params, lr=0.01)
    opt.step(grads)
    return out, loss, grads, dx, {k: v.copy() for k, v in model.params.items()}


@pytest.mark.skipif(jit.workers() < 2, reason="one worker: nothing to split")
@pytest.mark.parametrize("spec,algorithm", [(IMAGES, "im2col"), (IMAGES, "direct"),
                                            (IMAGES, "winograd"), (IMAGES, "winograd-4"),
                                            (IMAGES, "winograd-4-positions"),
                                            (SEQUENCES, None), (NORMALIZED, None)],
                         ids=["im2col", "direct", "winograd", "winograd-4x4",
                              "winograd-4x4-positions", "recurrent", "normalized"])
def test_one_part_and_many_agree(monkeypatch, spec, algorithm):
    how, tile, split = ((algorithm or "") + "--").split("-")[:3]
    monkeypatch.setattr(conv, "FORCE", how or None)
    monkeypatch.setattr(conv, "WINOGRAD_TILE", int(tile) if tile else None)
    monkeypatch.setattr(conv, "WINOGRAD_POSITIONS", split == "positions" if tile else None)
    net = netc.compile(spec)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7,) + net.input_shape)
    y = rng.integers(0, net.output_shape[-1], 7)
    one = _step(spec, 1 << 60, monkeypatch, x, y)
    many = _step(spec, 1, monkeypatch, x, y)
    for a, b in zip(one[:2], many[:2]):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)
    grads, dx, params = one[2:]
    np.testing.assert_allclose(many[3], dx, rtol=1e-10, atol=1e-13)
    # the parts' gradient sums add in another order; Adam's step divides by their root mean
    # square, which magnifies that rounding
    for got, want, rtol in ((many[2], grads, 1e-10), (many[4], params, 1e-8)):
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("parts", [1, 2, 3, 5])
def test_part_sum_adds_the_parts_in_order_into_a_new_array(parts):
    """part_sum (every per-thread gradient's sum) gives, bit for bit, the sum over the first
    axis of the parts it is given, leaves the rest out and writes nothing of the workspace."""
    from netc.runtime.backends.cpu.common import part_sum
    rng = np.random.default_rng(parts)
    for shape in [(16, 150), (5, 3, 27), (7,)]:
        ws = (rng.standard_normal((6,) + shape)
              * 10.0 ** rng.uniform(-4, 4, (6,) + shape)).astype(np.float32)
        before = ws.copy()
        got = part_sum(ws, parts)
        assert got.shape == shape and got.dtype == np.float32
        assert np.array_equal(got, ws[:parts].sum(axis=0))
        assert np.array_equal(ws, before) and not np.shares_memory(got, ws)


def test_split_takes_one_part_per_grain_up_to_the_workers(monkeypatch):
    monkeypatch.setattr(jit, "GRAIN", 100)
    assert jit.split_macs(100 * jit.MACS_PER_NS) == 1
    assert jit.split(0) == jit.split(99) == 1
    assert jit.split(100 * jit.workers()) == jit.workers()
    assert jit.split(10 ** 12) == jit.workers()
    if jit.workers() > 1:
        assert jit.split(200) == 2


PROBE = '''from netc.runtime.backends.cpu.jit import kernel, launcher, run_parts, share


@launcher
def double_cpu(parts, x, y):
    run_parts(double_part, parts, (x, y))


@kernel()
def double_part(t, parts, x, y):
    lo, hi = share(x.size, t, parts)
    for i in range(lo, hi):
        y[i] = 2 * x[i]
'''


def _fresh_probe(tmp_path, monkeypatch, source):
    """The kernels of `source` as a module no cache has seen, importable here and in the
    compiler process, with background compiling on and a compiler process of its own."""
    import importlib
    import os
    import sys

    name = _probe_module(tmp_path, source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path)] + sys.path))
    monkeypatch.setenv("NETC_BACKGROUND_COMPILE", "1")
    _fresh_state(monkeypatch)
    return importlib.import_module(name)


def _probe_module(tmp_path, source) -> str:
    """`source` as a module of tmp_path under a name no cache has seen; returns the name."""
    import uuid

    name = f"netc_probe_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(source)
    return name


def _fresh_state(monkeypatch):
    """background.py's state as at import (no compiler process yet), for this test alone."""
    from netc.runtime.backends.cpu import background
    state = background.new_state()
    monkeypatch.setattr(background, "_state", state)
    return state


def test_a_compiler_process_that_ends_marks_only_its_own_state_failed(monkeypatch):
    """A child's end makes its parent compile the rest itself (state["failed"]), in the state
    that started the child: a test that swaps background._state in and out (as these do) must
    not find the swapped-in state failed by an earlier child's end (CI saw this once, as a
    compile_ahead that recorded nothing)."""
    from netc.runtime.backends.cpu import background
    monkeypatch.setenv("NETC_BACKGROUND_COMPILE", "1")
    first = _fresh_state(monkeypatch)
    monkeypatch.setattr(background, "CHILD", "this")  # a child that prints and ends at once
    assert background._child() is not None
    second = _fresh_state(monkeypatch)  # swapped in before that child's end is read
    first["reader"].join(60)
    assert not first["reader"].is_alive()
    assert first["failed"] and not second["failed"] and background.available()
    first["child"].wait()


def test_the_compiler_process_answers_every_line_even_for_a_module_it_cannot_import(tmp_path, monkeypatch):
    """serve() compiles what each line names and answers it; a launcher from a module it cannot
    import is answered too (the parent compiles it), and the lines after it are served."""
    import io

    from netc.runtime.backends.cpu import background, compiler_process
    monkeypatch.setattr(background, "IN_COMPILER_PROCESS", False)  # (serve sets it)
    probe = _fresh_probe(tmp_path, monkeypatch, PROBE)
    x = np.zeros(4, np.float32)
    sig = jit._signature(probe.double_part, 0, (1, x, x))
    keys = [("netc_no_such_module", "double_part", sig), (probe.__name__, "nowhere", sig),
            (probe.__name__, "double_part", sig)]
    out = io.StringIO()
    compiler_process.serve([background.encode(k) for k in keys], out)
    assert [background.decode(line) for line in out.getvalue().splitlines()] == keys
    assert list(probe.double_part.overloads) == [sig]


@pytest.mark.skipif(jit.workers() < 2, reason="one worker: no launcher is ever called")
def test_a_new_launcher_compiles_in_the_compiler_process(tmp_path, monkeypatch):
    """A launcher neither compiled nor cached: its work runs as one part here while a second
    process compiles it into the cache, then it loads from there (never compiled here)."""
    import time

    from netc.runtime.backends.cpu import background
    probe = _fresh_probe(tmp_path, monkeypatch, PROBE)
    x = np.arange(1000, dtype=np.float32)
    y = np.zeros_like(x)
    jit.launch(probe.double_cpu, probe.double_part, 2, x, y)
    assert np.array_equal(y, 2 * x) and not probe.double_cpu.overloads  # the parts, here
    deadline = time.time() + 600
    while probe.double_cpu not in jit._ready:
        assert time.time() < deadline, "the compiler process never finished"
        y[:] = 0
        jit.launch(probe.double_cpu, probe.double_part, 2, x, y)
        assert np.array_equal(y, 2 * x)
        time.sleep(0.2)
    y[:] = 0
    jit.launch(probe.double_cpu, probe.double_part, 2, x, y)  # now on both threads
    assert np.array_equal(y, 2 * x)
    assert probe.double_cpu.overloads and not sum(probe.double_cpu._cache_misses.values())
    background.stop()


@jit.kernel()
def _tally_part(t, parts, seen, fail_from):
    seen[t] += parts
    if t >= fail_from:
        raise ValueError("a part past fail_from")


@jit.launcher
def _tally_cpu(parts, seen, fail_from):
    linking.run_parts(_tally_part, parts, (seen, fail_from))


def _check_tally():
    jit.setup()
    for parts in (1, 2, 7):
        seen = np.zeros(8, np.int64)
        _tally_cpu(parts, seen, 100)
        assert seen.tolist() == [parts] * parts + [0] * (8 - parts)
    seen = np.zeros(8, np.int64)
    _tally_cpu(0, seen, 100)
    _tally_cpu(-1, seen, 100)
    assert not seen.any()
    seen = np.zeros(8, np.int64)
    with pytest.raises(ValueError, match="a part past fail_from"):
        _tally_cpu(6, seen, 4)
    assert seen.tolist() == [6] * 6 + [0, 0]  # (the parts after the failing ones ran too)


def test_run_parts_runs_each_part_once_and_raises_what_a_part_raises():
    """run_parts (every launcher's body) calls part(t, parts, ...) once for each t < parts,
    however many threads there are; none for 0 parts (or fewer); a part's exception reaches the
    launcher's caller after every part has run. Here on this process's threading layer (TBB's
    gives each thread one t), and on Numba's workqueue (a thread takes a range of ts), loading
    the launcher this process compiled."""
    import os
    import subprocess
    import sys

    _check_tally()
    code = "from tests.runtime.test_parts import _check_tally; _check_tally(); print('ok')"
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "NETC_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_every_launcher_hands_its_own_arguments_to_its_part():
    """Every parallel kernel is a launcher whose whole body is run_parts of the part of its name
    (linking.run_parts: the part called by symbol on Numba's threads), passing its own arguments
    on unchanged and in order: read from the source of every CPU module. None uses Numba's
    parallel compiler (a prange: 0.5-1 s a launcher to compile, seconds where it compiles the
    part into itself)."""
    import ast
    import pathlib

    launchers = 0
    for path in sorted(pathlib.Path(jit.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "prange"
                    or isinstance(n, ast.alias) and n.name == "prange"], path.name
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            decorators = [ast.unparse(d) for d in fn.decorator_list]
            assert not any("parallel" in d for d in decorators), f"{path.name}: {fn.name}"
            if "launcher" not in decorators:
                continue
            launchers += 1
            params = [a.arg for a in fn.args.args]
            part = fn.name.removesuffix("_cpu") + "_part"
            (call,) = fn.body
            want = (f"run_parts({part}, {params[0]}, ({', '.join(params[1:])}"
                    f"{',' if len(params) == 2 else ''}))")
            assert ast.unparse(call) == want, f"{path.name}: {fn.name}"
            assert part in names, f"{path.name}: {fn.name} has no {part}"
    assert launchers >= 50


def _kernel_sources() -> dict:
    """Every kernel and launcher of the CPU modules' source: name -> (file's name, decorators as
    written, its ast.FunctionDef)."""
    import ast
    import pathlib

    kernels = {}
    for path in sorted(pathlib.Path(jit.__file__).parent.rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef):
                decorators = [ast.unparse(d) for d in fn.decorator_list]
                if any(d.startswith("kernel") or d == "launcher" for d in decorators):
                    kernels[fn.name] = (path.name, decorators, fn)
    return kernels


def test_only_parts_outlined_kernels_and_inlined_ones_call_by_symbol():
    """A kernel that calls by symbol (gemm, run_parts, an outlined kernel) is a part, an outlined
    kernel or a launcher, or is inlined into its callers: a plain kernel's code loaded from
    Numba's cache does not pass on the steps that bind its symbols to a caller compiled later,
    whose own cached code then names a symbol nothing binds, and LLVM ends the process that
    loads it (linking.py). An inlined kernel's calls by symbol are its callers' too, so the rule
    holds for those (a plain kernel with an inlined one that calls an outlined one inside passed
    the direct check). Read from the source of every CPU module."""
    import ast

    def called(fn):
        return {c.func.id for c in ast.walk(fn)
                if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}

    kernels = {name: (path, decorators, called(fn))  # name -> (file, decorators, names it calls)
               for name, (path, decorators, fn) in _kernel_sources().items()}
    by_symbol = {"gemm", "run_parts"} | {name for name, (_, decorators, _) in kernels.items()
                                        if any("outlined=True" in d for d in decorators)}
    # an inlined kernel that calls by symbol puts that call into its callers: theirs too
    inlined = {name for name, (_, decorators, _) in kernels.items()
               if any("inline=True" in d for d in decorators)}
    calling = set()

    def symbols(name):  # what `name` calls by symbol, given the inlined kernels that do so far
        return (kernels[name][2] - {name}) & (by_symbol | (calling & inlined))

    while True:
        more = {name for name in kernels if symbols(name)} - calling
        if not more:
            break
        calling |= more
    wrong = []
    for name in sorted(calling):
        path, decorators, _ = kernels[name]
        allowed = (name.endswith("_part") or "launcher" in decorators
                   or any("inline=True" in d or "outlined=True" in d for d in decorators))
        if not allowed:
            wrong.append(f"{path}: {name} calls {sorted(symbols(name))} by symbol")
    assert not wrong, wrong
    assert len(calling) >= 40


def test_no_kernel_passes_a_constant_int_to_another_compiled_on_its_own():
    """A constant passed to a kernel compiled on its own (not inlined) is typed as that literal
    value, and Numba compiles a version of the callee for it, besides the one for int64 that the
    other callers use (_im2col_cpu four versions for two float types, 1.3 s each; _prologue_cpu,
    _channels_last_cpu and _channels_first_cpu three or four): np.int64(0) instead. Inlined
    kernels may take constants (their code is the caller's). Read from the source of every CPU
    module."""
    import ast

    kernels = _kernel_sources()

    def constant_int(node):
        if isinstance(node, ast.UnaryOp):
            node = node.operand
        return isinstance(node, ast.Constant) and type(node.value) is int

    calls, wrong = 0, []
    for name, (path, _, fn) in sorted(kernels.items()):
        for call in ast.walk(fn):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                    and call.func.id in kernels):
                continue
            callee = kernels[call.func.id][1]
            if any("inline=True" in d for d in callee):
                continue
            calls += 1
            args = call.args + [k.value for k in call.keywords]
            if any(constant_int(a) for a in args):
                wrong.append(f"{path}: {name} calls {ast.unparse(call)}")
    assert not wrong, wrong
    assert calls >= 50


def test_a_launcher_calls_its_part_by_symbol_not_by_its_code(tmp_path, monkeypatch):
    """A launcher's code declares its part's symbol and holds none of the part's code (Numba
    would link the part, and all it calls, into the launcher and optimize the whole again)."""
    import importlib

    from numba import types

    name = _probe_module(tmp_path, PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = importlib.import_module(name)
    x = np.arange(1000, dtype=np.float32)
    y = np.zeros_like(x)
    probe.double_cpu(2, x, y)
    assert np.array_equal(y, 2 * x)
    (sig,) = probe.double_cpu.signatures
    code = probe.double_cpu.inspect_llvm(sig)
    symbol = linking.symbol(probe.double_part, (types.int64, *sig))
    assert any(line.startswith("declare") and symbol in line for line in code.splitlines())
    assert probe.double_part.overloads[(types.int64, *sig)].fndesc.llvm_func_name not in code


LOAD_FIRST = """import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
probe = __import__(sys.argv[2])
x = np.arange(1000, dtype=np.float32)
y = np.zeros_like(x)
probe.double_cpu(2, x, y)  # the launcher first: its part is not compiled nor loaded here yet
print(json.dumps({"right": bool(np.array_equal(y, 2 * x)),
                  "launcher": [sum(probe.double_cpu.stats.cache_hits.values()),
                               sum(probe.double_cpu.stats.cache_misses.values())],
                  "part": [sum(probe.double_part.stats.cache_hits.values()),
                           sum(probe.double_part.stats.cache_misses.values())]}))
"""


def _two_processes(tmp_path, probe, script):
    """Run `script` (argv: the probe's folder, its module name, the run: 1 or 2) in two processes
    one after the other, sharing a Numba cache no other process has seen, on the kernels of
    `probe` (a new module); the JSON each prints last."""
    import json
    import os
    import subprocess
    import sys

    name = _probe_module(tmp_path, probe)
    (tmp_path / "script.py").write_text(script)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), NETC_BACKGROUND_COMPILE="0")
    runs = []
    for run in ("1", "2"):
        done = subprocess.run([sys.executable, str(tmp_path / "script.py"), str(tmp_path), name, run],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


def test_a_cached_launcher_loads_in_a_process_that_never_ran_its_part(tmp_path):
    """The launcher loaded from the cache before anything called its part in that process: its
    reload step (linking.py) loads the part from the cache and binds it first, and the launcher
    runs it."""
    runs = _two_processes(tmp_path, PROBE, LOAD_FIRST)
    assert runs[0] == {"right": True, "launcher": [0, 1], "part": [0, 1]}
    assert runs[1] == {"right": True, "launcher": [1, 0], "part": [1, 0]}


SPECIALIZED_PROBE = '''from netc.runtime.backends.cpu.jit import kernel, launcher, run_parts, share, specialized

K = 0  # (each copy's own)


def scale_each_cpu(parts, x, y):
    run_parts(scale_each_part, parts, (x, y))


def scale_each_part(t, parts, x, y):
    lo, hi = share(x.size, t, parts)
    for i in range(lo, hi):
        y[i] = K * x[i]


MADE = {}
for k in (3, 5):
    part = specialized(kernel(), scale_each_part, f"scale{k}_part", K=k)
    MADE[k] = specialized(launcher, scale_each_cpu, f"scale{k}_cpu", scale_each_part=part), part
'''

SPECIALIZED_RUN = """import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
probe = __import__(sys.argv[2])
x = np.arange(1000, dtype=np.float32)
out = {}
for k, (run, part) in probe.MADE.items():
    y = np.zeros_like(x)
    run(2, x, y)  # the launcher first: in the second process its part loads by its reload step
    out[k] = [bool(np.array_equal(y, k * x)), sum(run.stats.cache_hits.values()),
              sum(part.stats.cache_hits.values()), run is getattr(probe, f"scale{k}_cpu")]
print(json.dumps(out))
"""


def test_specialized_kernels_are_kernels_of_their_own_that_reload_from_the_cache(tmp_path):
    """jit.specialized: copies of a template with a constant of their own (the activations'
    kernels), each set in its module under its name; a copied launcher runs its own copied part,
    and loads from the cache in a process that never compiled either (its reload step finds the
    part by module and name)."""
    runs = _two_processes(tmp_path, SPECIALIZED_PROBE, SPECIALIZED_RUN)
    assert runs[0] == {"3": [True, 0, 0, True], "5": [True, 0, 0, True]}
    assert runs[1] == {"3": [True, 1, 1, True], "5": [True, 1, 1, True]}


OUTLINED_PROBE = '''import numpy as np
from netc.runtime.backends.cpu.jit import kernel


@kernel(outlined=True)
def scaled(x, k, negate):
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = -x[i] * k if negate else x[i] * k
    return out


@kernel()
def caller(x):
    return (scaled(x, 3.0, False).sum() + scaled(x, np.float32(2.0), False)[1:].sum()
            + scaled(x, 1.0, True).sum())
'''

CALLER_FIRST = """import json, sys
import numpy as np
from numba import types
from netc.runtime.backends.cpu import linking
sys.path.insert(0, sys.argv[1])
probe = __import__(sys.argv[2])
x = np.arange(10, dtype=np.float32)
got = float(probe.caller(x))  # the caller first: the helper is neither compiled nor loaded yet
code = probe.caller.inspect_llvm(probe.caller.signatures[0]) if sys.argv[3] == "1" else ""
ours = [(sig, linking.symbol(probe.scaled, sig)) for sig in probe.scaled.signatures]
print(json.dumps({
    "value": got,
    "caller": [sum(probe.caller.stats.cache_hits.values()),
               sum(probe.caller.stats.cache_misses.values())],
    "helper versions": len(ours),
    "declared": [any(line.startswith("declare") and name in line for line in code.splitlines())
                 for _, name in ours],
    "helper code in the caller": [probe.scaled.overloads[sig].fndesc.llvm_func_name in code
                                  for sig, _ in ours]}))
"""


def test_an_outlined_kernel_is_called_by_symbol_and_reloads_with_its_caller(tmp_path):
    """kernel(outlined=True): a kernel that calls it (plainly) declares its symbol, one per
    compiled version, and holds none of its code; a value it returns (an array) comes back; a
    flag given as a constant, False at one call and True at another, compiles one version for
    both (Numba's own dispatch compiles one per literal value: 3 versions here); and the caller,
    loaded from the cache in a process that never compiled the helper, binds it first (its
    reload steps) and gives the same number."""
    runs = _two_processes(tmp_path, OUTLINED_PROBE, CALLER_FIRST)
    want = float(3 * 45 + 2 * 45 - 45)
    assert runs[0] == {"value": want, "caller": [0, 1], "helper versions": 2,
                       "declared": [True, True], "helper code in the caller": [False, False]}
    assert runs[1]["value"] == want and runs[1]["caller"] == [1, 0]
    assert runs[1]["helper versions"] == 2  # both bound by the caller's reload steps


AHEAD_PROBE = PROBE + '''

@launcher
def shift_cpu(parts, x, y):
    run_parts(shift_part, parts, (x, y))


@kernel()
def shift_part(t, parts, x, y):
    lo, hi = share(x.size, t, parts)
    for i in range(lo, hi):
        y[i] = x[i] + 1


@kernel()
def square_part(t, parts, x, y):
    lo, hi = share(x.size, t, parts)
    for i in range(lo, hi):
        y[i] = x[i] * x[i]


@kernel()
def negate_part(t, parts, x, y):
    lo, hi = share(x.size, t, parts)
    for i in range(lo, hi):
        y[i] = -x[i]
'''


def test_a_first_step_compiles_its_parts_ahead_on_two_processes(tmp_path, monkeypatch):
    """recording() notes each part a step launches, running none; compile_ahead then compiles
    them once each: this process from the first, the compiler process from the last, until
    they meet (the claims), then this one loads the other's from the cache. The launchers go to
    the compiler process. Every part then runs, with the right numbers, and compiles nothing."""
    import os
    import time

    from netc.runtime.backends.cpu import background
    probe = _fresh_probe(tmp_path, monkeypatch, AHEAD_PROBE)
    x = np.arange(1, 9, dtype=np.float64)
    ys = [np.zeros_like(x) for _ in range(5)]
    # the compiler process, started and ready (a first run's has started with the step's
    # first launcher by the time its parts are many)
    warm = np.zeros(1, np.float32)  # (float32: the step's parts take float64)
    background.ask(probe.double_cpu, jit._signature(probe.double_cpu, 2, (warm, warm)))
    deadline = time.time() + 600
    while not background._state["done"].qsize():
        assert time.time() < deadline and background.available(), "no compiler process"
        time.sleep(0.1)

    def step():
        jit.launch(probe.double_cpu, probe.double_part, 2, x, ys[0])
        jit.launch(probe.shift_cpu, probe.shift_part, 2, ys[0], ys[1])
        jit.launch(None, probe.square_part, 1, ys[1], ys[2])
        jit.launch(None, probe.negate_part, 1, ys[2], ys[3])
        jit.launch(None, probe.square_part, 1, ys[3], ys[4])  # the same part and types again

    with jit.recording() as calls:
        step()
    assert len(calls) == 5 and not any(y.any() for y in ys)  # noted, nothing ran
    parts = [probe.double_part, probe.shift_part, probe.square_part, probe.negate_part]
    folders, mkdtemp = [], jit.tempfile.mkdtemp
    monkeypatch.setattr(jit.tempfile, "mkdtemp", lambda **kw: folders.append(mkdtemp(**kw)) or folders[-1])
    assert jit.compile_ahead(calls) == 4
    parts.sort(key=lambda p: -jit.compile_cost(p))  # (stable: the record's order where equal)
    here = [p for p in parts if sum(p._cache_misses.values())]  # compiled in this process
    there = [p for p in parts if not sum(p._cache_misses.values())]
    assert here and there and here == parts[:len(here)]  # this one from the largest, it from
    # the smallest
    assert all(p._cache_hits for p in there) and all(len(p.overloads) == 1 for p in parts)
    assert folders and not os.path.exists(folders[0])  # the claims' folder is gone
    step()
    np.testing.assert_array_equal(ys[4], (2 * x + 1) ** 4)
    assert all(len(p.overloads) == 1 for p in parts)  # nothing compiled on the way
    background.stop()


def test_compiling_ahead_leaves_the_model_and_its_numbers_as_they_were(monkeypatch):
    """The record runs a step without its parts, so BN's running statistics, dropout's random
    generator and the output would come out wrong: Model.compile_ahead puts them back, and the
    step after it gives the numbers of a model that never compiled ahead."""
    import netc
    from netc.runtime.backends.cpu import background
    monkeypatch.setenv("NETC_BACKGROUND_COMPILE", "1")
    _fresh_state(monkeypatch)  # (an earlier test's compiler process must not decide this one)
    spec = ("input 8x8x2\nCONV 4 3x3 pad=same - BN - RELU - DROPOUT 0.5 - FC 6 - BN - RELU - "
            "OUT 3 softmax\n")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 2, 8, 8)), rng.integers(0, 3, 4)
    with jit.recording() as calls, np.errstate(all="ignore"):  # (sums of what no part wrote)
        netc.Model(spec, seed=3).loss_and_grads(x, y)
    assert len(calls) >= 16  # forward's CONV, BN, RELU, DROPOUT, FC, BN, RELU, OUT, the loss, backward's
    ahead, plain = netc.Model(spec, seed=3), netc.Model(spec, seed=3)
    buffers = {k: v.copy() for k, v in ahead.buffers.items()}
    recorded, compile_ahead = [], jit.compile_ahead
    monkeypatch.setattr(jit, "compile_ahead", lambda calls: recorded.append(calls) or compile_ahead(calls))
    from netc.runtime import optim
    opt = optim.optimizer("adam", ahead.params)
    ahead.compile_ahead([(x, y), (x[:3], y[:3])], then=opt.rehearse)
    assert recorded and all(len(calls) >= 17 for calls in recorded)  # the steps were recorded,
    assert all(calls[-1][1].py_func.__name__ == "_update2_part" for calls in recorded)  # the
    assert opt.t == 0 and not any(opt.state.values())  # update last, nothing changed, ...
    assert ahead.last_output is None  # ... and left no output behind (as before: no step ran)
    for k, v in buffers.items():
        np.testing.assert_array_equal(ahead.buffers[k], v, err_msg=k)
    for _ in range(2):
        (l1, g1), (l2, g2) = ahead.loss_and_grads(x, y), plain.loss_and_grads(x, y)
        assert l1 == l2
        for k in g2:
            np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)
        for k in plain.buffers:
            np.testing.assert_array_equal(ahead.buffers[k], plain.buffers[k], err_msg=k)
    background.stop()


def test_compile_cost_counts_a_kernel_and_what_it_calls_once():
    """compile_ahead's order: a part's bytecode and its callees', each once, whether named
    directly or through a module (the CONV's backward, which calls the unfolding, its GEMMs'
    prologue and the fold, before the pooling's)."""
    from netc.runtime.backends.cpu import losses, pool
    from netc.runtime.backends.cpu.conv import im2col

    def own(d):
        return len(d.py_func.__code__.co_code)
    assert jit.compile_cost(im2col._conv_backward_part) >= own(im2col._conv_backward_part) + sum(
        own(d) for d in (im2col._unfold_cpu, im2col._im2col_cpu, im2col._prologue_cpu, im2col._fold_cpu))
    assert jit.compile_cost(im2col._conv_backward_part) > 3 * jit.compile_cost(pool._maxpool_back_part)
    ce = losses._cross_entropy_part  # its loss named as ew.cross_entropy_at
    assert jit.compile_cost(ce) > own(ce) + own(losses._rows) + own(losses.ew.cross_entropy_at)
    assert jit.compile_cost(ce, {losses.ew.kl_at}) == jit.compile_cost(ce)  # not the other losses
    seen = {losses._rows}
    assert jit.compile_cost(ce, seen) < jit.compile_cost(ce)  # each once


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_an_optimizers_rehearsal_records_the_update_its_step_will_launch(name):
    """rehearse() under a record notes the update kernel a step calls, with the same argument
    types (so compile_ahead compiles the very kernel), one call per element type, and changes
    nothing: parameters, step count, state."""
    import netc
    from netc.runtime import optim
    model = netc.Model("input 6\nFC 4 - OUT 2 softmax\n", seed=0)
    opt = optim.optimizer(name, model.params, lr=0.1)
    before = {k: v.copy() for k, v in model.params.items()}
    with jit.recording() as rehearsed:
        opt.rehearse()
    assert len(rehearsed) == 1 and opt.t == 0 and not any(opt.state.values())
    for k, v in before.items():
        np.testing.assert_array_equal(model.params[k], v)
    grads = {k: np.ones_like(v) for k, v in model.params.items()}
    with jit.recording() as stepped:
        opt.step(grads)
    (launcher, part, _, args), = rehearsed
    assert {(c[0], c[1]) for c in stepped} == {(launcher, part)}
    assert {jit._signature(part, 0, (1,) + c[3]) for c in stepped} == {
        jit._signature(part, 0, (1,) + args)}


def test_compiling_ahead_where_nothing_compiles_ahead_saves_nothing(monkeypatch):
    """With background compiling off the CPU backend records no step: Model.compile_ahead
    returns 0 without running the step or copying the model's buffers."""
    import netc
    monkeypatch.setenv("NETC_BACKGROUND_COMPILE", "0")
    model = netc.Model("input 6\nFC 4 - BN - OUT 2 softmax\n", seed=0)
    copies = []
    monkeypatch.setattr(model.device, "copy", lambda a: copies.append(a) or a.copy())
    ran = []
    monkeypatch.setattr(model, "loss_and_grads", lambda *a, **k: ran.append(a))
    x, y = np.ones((3, 6)), np.zeros(3, np.int64)
    assert model.compile_ahead([(x, y)]) == 0
    assert not ran and not copies


def test_recording_notes_only_its_own_threads_launches():
    """While one thread records a step (compile_ahead), a model trained in another thread runs
    its kernels: its numbers are those of a step with no record open, and the record holds
    nothing of it."""
    import threading
    spec = "input 12\nFC 8 act=relu - OUT 3 softmax\n"
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((5, 12)), rng.integers(0, 3, 5)
    want = netc.Model(spec, seed=2).loss_and_grads(x, y)
    opened, done, record = threading.Event(), threading.Event(), []

    def recorder():
        with jit.recording() as calls:
            opened.set()
            done.wait(60)
        record.append(list(calls))

    thread = threading.Thread(target=recorder)
    thread.start()
    assert opened.wait(60)
    try:
        got = netc.Model(spec, seed=2).loss_and_grads(x, y)
    finally:
        done.set()
        thread.join(60)
    assert got[0] == want[0] and got[1].keys() == want[1].keys()
    for k in want[1]:
        np.testing.assert_array_equal(got[1][k], want[1][k], err_msg=k)
    assert record == [[]]


def test_compile_ahead_removes_folders_of_processes_gone(tmp_path):
    """A folder compile_ahead left behind when its process was killed (netc-ahead-PID-...) is
    removed by the next compile_ahead; a running process's folder and others' files stay."""
    import os
    import subprocess
    import sys
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f"netc-ahead-{gone}-x1"
    live = tmp_path / f"netc-ahead-{os.getpid()}-x2"
    other = tmp_path / "netc-ahead-notapid"
    for folder in (stale, live, other):
        folder.mkdir()
        (folder / "claim").write_text("1")
    jit._remove_stale_folders(str(tmp_path))
    assert not stale.exists() and live.exists() and other.exists()
