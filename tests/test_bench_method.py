"""bench/compare.py's timing method: interleaved blocks, each started by untimed settling steps,
checked on a fake clock (a benchmark's numbers are only as good as what it counts)."""
import importlib.util
import os
import types

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
    from netc.runtime.backends.cpu import conv
    net = tmp_path / "tiny.net"
    net.write_text("input 1x1x3\nCONV 3x3 4 pad=1 - OUT 2 softmax\ntrain loss=cross_entropy\n")
    module.main([str(net), "conv.CUT_TAPS=False,True", "--batch", "2", "--rounds", "2"])
    out = capsys.readouterr().out
    assert "CUT_TAPS =    False: median" in out and "CUT_TAPS =     True: median" in out
    assert conv.CUT_TAPS is True
