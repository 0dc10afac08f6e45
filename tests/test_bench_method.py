"""bench/compare.py's timing method: interleaved blocks, each started by untimed settling steps,
checked on a fake clock (a benchmark's numbers are only as good as what it counts)."""
import importlib.util
import json
import os
import types
import weakref

import pytest

from .conftest import ROOT


@pytest.fixture()
def compare():
    spec = importlib.util.spec_from_file_location("netc_bench_compare",
                                                  os.path.join(ROOT, "bench", "compare.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports NumPy only: PyTorch is imported by main()
    return module


class Machine:
    """A fake clock and two step functions: a step takes 1 ms, or 4 ms when the other framework
    ran just before it (the cost of a switch, as PyTorch's spinning threads and cold caches put
    on the first steps after it)."""

    def __init__(self):
        self.now, self.last, self.calls = 0.0, None, []

    def step(self, name):
        def run():
            self.now += 1e-3 if self.last in (None, name) else 4e-3
            self.last = name
            self.calls.append(name)
        return run


@pytest.fixture()
def machine(compare, monkeypatch):
    """A Machine whose clock is the one compare.py reads (its own `time`, not the process's)."""
    machine = Machine()
    monkeypatch.setattr(compare, "time", types.SimpleNamespace(perf_counter=lambda: machine.now))
    return machine


def test_settling_steps_are_run_and_not_timed(compare, machine):
    steps = [machine.step("netc"), machine.step("torch")]
    medians = compare.interleave(steps, repeats=10, block=5, warmup=1, settle=2)
    assert medians == pytest.approx([1e-3, 1e-3])
    # one warm-up step each, then per block 2 settling steps and 5 timed ones, alternating
    assert machine.calls == ["netc", "torch"] + (["netc"] * 7 + ["torch"] * 7) * 2


def test_without_settling_the_switch_is_timed(compare, machine):
    steps = [machine.step("netc"), machine.step("torch")]
    # blocks of one step: every timed step follows a switch
    medians = compare.interleave(steps, repeats=6, block=1, warmup=1, settle=0)
    assert medians == pytest.approx([4e-3, 4e-3])


def test_settling_lasts_at_least_its_time(compare, machine):
    """With settle_s, a block's untimed steps go on until that much time has passed (fast steps
    need more of them than slow ones to outlast the other framework's spinning threads)."""
    steps = [machine.step("netc"), machine.step("torch")]
    # after a switch: 4 ms, then 1 ms a step; 7.5 ms need five steps (4, 5, 6, 7, 8 ms in all)
    medians = compare.interleave(steps, repeats=10, block=5, warmup=1, settle=2, settle_s=0.0075)
    assert medians == pytest.approx([1e-3, 1e-3])
    assert machine.calls == ["netc", "torch"] + (["netc"] * 10 + ["torch"] * 10) * 2


def test_conv_switch_reads_its_setting():
    """bench/conv_switch.py's `module.NAME=v,v`: literals where they are literals, names as
    strings, and a clear error for a module it does not know."""
    spec = importlib.util.spec_from_file_location("netc_bench_conv_switch",
                                                  os.path.join(ROOT, "bench", "conv_switch.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from netc.runtime.backends.cpu.conv import direct, winograd
    assert module.parse_setting("winograd.ROWS_MAX_CHANNELS=0,64") == (
        winograd, "ROWS_MAX_CHANNELS", [0, 64])
    assert module.parse_setting("direct.WIDE=True,False,None")[2] == [True, False, None]
    assert module.parse_setting("conv.FORCE=winograd,direct")[2] == ["winograd", "direct"]
    assert direct.WIDE is None  # parsing sets nothing
    with pytest.raises(SystemExit, match="module one of conv, winograd"):
        module.parse_setting("gpu.FORCE=1")
    with pytest.raises(SystemExit, match="(?s)the layer '8x8x3 CONV 3x3 foo'.*`act` must be one of"):
        module.main(["8x8x3 CONV 3x3 foo", "conv.FORCE=direct"])
    with pytest.raises(SystemExit, match="has no setting NOPE"):
        module.main(["8x8x3 CONV 3x3 4", "direct.NOPE=1"])


def test_net_switch_names_its_networks_and_restores_the_setting(capsys, tmp_path):
    """bench/net_switch.py: compare.py's cases by name (without the batch) or a .net file, a clear
    error for a name it does not know; a run times each value and puts the setting back."""
    spec = importlib.util.spec_from_file_location("netc_bench_net_switch",
                                                  os.path.join(ROOT, "bench", "net_switch.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.network("resnet18-32") == module.compare.RESNET_CIFAR
    assert module.network("lenet5") == module.compare.LENET
    with pytest.raises(SystemExit, match="no case 'resnet19'.*resnet18-32"):
        module.network("resnet19")
    with pytest.raises(SystemExit, match="^net_switch: .*conv has no setting NOPE"):
        module.main(["lenet5", "conv.NOPE=1"])
    with pytest.raises(SystemExit, match="^net_switch: no such file '.*nowhere.net'"):
        module.main([str(tmp_path / "nowhere.net"), "conv.CUT_TAPS=True"])
    bad = tmp_path / "bad.net"
    bad.write_text("input 8x8x1\nCONV 3x3 foo\n")
    with pytest.raises(SystemExit, match="(?s)^net_switch: .*bad.net:.*`act` must be one of"):
        module.main([str(bad), "conv.CUT_TAPS=True"])
    from netc.runtime.backends.cpu import conv
    net = tmp_path / "tiny.net"
    net.write_text("input 1x1x3\nCONV 3x3 4 pad=1 - OUT 2 softmax\ntrain loss=cross_entropy\n")
    module.main([str(net), "conv.CUT_TAPS=False,True", "--batch", "2", "--rounds", "2"])
    out = capsys.readouterr().out
    assert "CUT_TAPS =    False: median" in out and "CUT_TAPS =     True: median" in out
    assert conv.CUT_TAPS is True


def _bench_module(name):
    spec = importlib.util.spec_from_file_location(f"netc_bench_{name}",
                                                  os.path.join(ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kernel_profile_maps_each_compiled_kernel_from_its_entry(tmp_path):
    """bench/kernel_profile.py's map for perf: every compiled kernel by its module and name at
    its entry address, each line running to the next entry (the last a fixed length), in
    perf's "START SIZE NAME" hex format."""
    import numpy as np
    from netc.runtime.backends.cpu.common import _fill_cpu
    module = _bench_module("kernel_profile")
    a = np.zeros(5, np.float32)
    _fill_cpu(a, 2.0)  # compiled (or loaded) here, whatever ran before
    gone = weakref.proxy(Machine())  # a dead proxy among the objects it looks at
    entries = module.kernel_entries()
    assert gone is not None
    assert "cpu.common._fill_cpu" in entries.values()
    nrt = {a: n for a, n in entries.items() if n.startswith("numba runtime")}  # (no dispatcher)
    assert sorted(nrt.values()) == ["numba runtime NRT_decref (reference counts)",
                                    "numba runtime NRT_incref (reference counts)"]
    assert entries[max(nrt) + module.NRT_FUNCTION_BYTES] == module.UNMAPPED  # ends them
    assert module.tally([f"{max(nrt) + 100:x} [unknown] (/tmp/perf-1.map)"]) == [
        (1.0, "netc code outside the map")]
    path = tmp_path / "perf-1.map"
    assert module.write_map({0x3000: "b", 0x1000: "a", 0x1800: "c"}, path, last=0x40) == 3
    assert path.read_text().splitlines() == ["1000 800 a", "1800 1800 c", "3000 40 b"]


def test_kernel_profile_names_what_it_cannot_profile(tmp_path):
    """bench/kernel_profile.py: a case it does not know or a .net file that is not there ends
    with its own message (before it needs perf)."""
    module = _bench_module("kernel_profile")
    with pytest.raises(SystemExit, match="^kernel_profile: no case 'resnet19'.*resnet18-32"):
        module.main(["resnet19"])
    with pytest.raises(SystemExit, match="^kernel_profile: no such file '.*nowhere.net'"):
        module.main([str(tmp_path / "nowhere.net")])


def test_kernel_profile_tallies_samples_by_kernel_waiting_python_and_library():
    """perf's samples (`perf script -F ip,sym,dso` lines): a mapped kernel by name, the threads'
    waiting as one line, the interpreter as one, other code by its library; shares of all."""
    module = _bench_module("kernel_profile")
    lines = ["    7f1e07a9b0c4 gemm_tiles (/tmp/perf-12.map)",
             " 7f1e05f13000 [unknown] (/tmp/perf-12.map)",
             " ffffffff82240ddb __schedule ([kernel.kallsyms])",
             " 7f64e0fefb00 tbb::detail::r1::waiter_base::pause (/venv/lib/libtbb.so.12)",
             " 55d0 _PyEval_EvalFrameDefault (/usr/lib/libpython3.11.so.1.0)",
             " 18f0c0 __memset_avx512_unaligned_erms (/usr/lib/x86_64-linux-gnu/libc.so.6)",
             " 7f1e07a9b100 gemm_tiles (/tmp/perf-12.map)", "",
             " 7f1e07a9b2 gemm_tiles (/tmp/perf-12.map)"]
    rows = dict((what, share) for share, what in module.tally(lines))
    assert rows == pytest.approx({"gemm_tiles": 3 / 8, "netc code outside the map": 1 / 8,
                                  "threads waiting (scheduler, spinning)": 2 / 8,
                                  "Python interpreter": 1 / 8, "libc.so.6": 1 / 8})
    assert module.tally([]) == []


def test_compile_times_counts_each_compilation_and_its_own_time(tmp_path, capsys):
    """bench/compile_times.py: a script run under it keeps its arguments and exit status; each
    Numba compilation is one row (a function typed twice, two), the caller's own time leaving
    out the callee's compilation inside it, tallied by function and module."""
    module = _bench_module("compile_times")
    script = tmp_path / "run.py"
    script.write_text("import sys, numba\n"
                      "@numba.njit\ndef inner(x):\n    return x + 1\n"
                      "@numba.njit\ndef outer(x):\n    return inner(x) * 2\n"
                      "assert outer(1) == 4 and inner(1.5) == 2.5\n"
                      "print('args', sys.argv[1:])\nsys.exit(3)\n")
    path = tmp_path / "rows.json"
    assert module.main(["--json", str(path), str(script), "-q", "x"]) == 3
    out, err = capsys.readouterr()
    assert "args ['-q', 'x']" in out
    rows = json.loads(path.read_text())
    names = sorted(name.rsplit(".", 1)[-1] for name, _, _, _ in rows)
    assert names == ["inner", "inner", "outer"]  # inner for int64 (inside outer's) and float64
    (outer,) = [r for r in rows if r[0].endswith("outer")]
    (inside,) = [r for r in rows if r[0].endswith("inner") and "int64" in r[1]]
    assert outer[2] >= inside[2] and outer[3] == pytest.approx(outer[2] - inside[2])
    assert "3 compilations" in err and "inner" in err
    rows = [("m.a", "", 2.0, 1.0), ("m.a", "", 1.0, 1.0), ("n.b", "", 5.0, 0.5)]
    table = module.tally(rows).splitlines()
    assert table[0] == "3 compilations, 2.5 s"
    assert table.index("    2.0  m") < table.index("    0.5  n")
    assert "    2.0      2  m.a" in table


def test_compile_times_names_what_it_cannot_run(tmp_path):
    module = _bench_module("compile_times")
    with pytest.raises(SystemExit, match="^compile_times: no such script: .*nowhere.py"):
        module.main([str(tmp_path / "nowhere.py")])
    with pytest.raises(SystemExit, match="^compile_times: no module named nosuch_module"):
        module.main(["-m", "nosuch_module"])
    with pytest.raises(SystemExit, match="^compile_times: --top takes a number"):
        module.main(["--top", "many", "-m", "json"])
