"""Sizes, counts and depths have limits with clear errors; hints and reports take bounded time
for any size the language lets through, and format any number."""
import gc
import json
import signal
import sys

import pytest

import netc
from netc.compiler import report
from netc.compiler.registry import LayerError
from netc.compiler.shapes import divisors, window_out
from netc.dsl import ShapeError, SpecError

BIG = 2**63 - 1
build = sys.modules["netc.compiler.build"]  # (netc.compiler.build is also the function)


def error(text):
    with pytest.raises(SpecError) as e:
        netc.compile(text)
    return e.value


def quick(text, seconds=2.0):
    """The error compiling `text` gives, within `seconds` of this process's CPU time (a hang
    fails the test; so does a wait, past 30 times that on the clock). Neither the time spent
    waiting for a core on a busy machine counts nor a collection of the garbage earlier tests
    left (a 1 s wall-clock limit rang in a pytest-xdist worker, inside a garbage collector's
    callback, for a compile that takes 0.02 s)."""
    def ring(signum, frame):
        raise TimeoutError(f"compiling took more than {seconds} s of CPU time"
                           if signum == signal.SIGPROF else
                           f"compiling waited more than {30 * seconds} s")
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    previous = {sig: signal.signal(sig, ring) for sig in (signal.SIGPROF, signal.SIGALRM)}
    try:
        signal.setitimer(signal.ITIMER_PROF, seconds)
        signal.setitimer(signal.ITIMER_REAL, 30 * seconds)
        try:
            return error(text)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if collecting:
            gc.enable()


def test_a_huge_stride_is_explained_at_once():
    """The hint's pads and input sizes that fit are solved for, not searched."""
    err = quick("input 8x8x4\nCONV 3x3/1000000000000 4")
    assert "(8 - 3 + 2*0)/1000000000000 + 1 = 1 + 5/1000000000000 is not an integer" in err.message
    assert "an input height of 3 or 1000000000003" in err.hint
    err = quick(f"input {BIG}x8x1\nCONV 3x3/1000000007 4")
    assert f"an input height of {BIG - (BIG - 3) % 1000000007};" in err.hint  # none above fits


@pytest.mark.parametrize("text,hint", [
    ("input 8x8x1000000000000\nCONV 3x3 1000000000000 groups=7",
     "common divisors: 1, 2, 4, 5, 8, 10, ..., 100000000000, 125000000000, 200000000000, "
     "250000000000, 500000000000, 1000000000000"),
    (f"input 4x4x{BIG}\nCONV 3x3 {BIG} groups=5 pad=1", "1, 7, 49, 73, 127, 337, ..."),
    (f"input 4x4x{BIG}\nDECONV 3x3 {BIG} groups=5", f"1317624576693539401, {BIG}"),
    ("input 4x4x1000000000000\nGN groups=7", "divisors of 1000000000000: 1, 2, 4, 5, 8, 10, ..."),
])
def test_huge_channel_counts_list_their_divisors_at_once(text, hint):
    assert hint in quick(text).hint


def test_divisors():
    assert divisors(12) == "1, 2, 3, 4, 6, 12"
    assert divisors(360) == "1, 2, 3, 4, 5, 6, ..., 60, 72, 90, 120, 180, 360"
    assert divisors(999999999989) == "1, ..., 999999999989"  # a prime past the trials


def test_a_kernel_larger_than_its_input_hint_is_integer_arithmetic():
    with pytest.raises(LayerError) as e:
        window_out(8, 10**400, 1, 0, "floor")
    assert f"pad={(10**400 - 8) // 2}" in e.value.hint


def test_reports_format_numbers_of_any_size():
    assert report.human(1.5e12) == "1.50T" and report.human(2.5e17) == "2.5e+17"
    assert report.human(10**400) == "inf" and report.human_bytes(10**400) == "inf B"
    assert report.human_bytes(3 * 2**40) == "3.00 TiB" and report.human_bytes(2**60) == "1.15e+18 B"
    net = netc.compile(f"input {BIG}x{BIG}x{BIG}\nCONV 3x3 {BIG} - POOL - FC {BIG} - FC {BIG}")
    text = report.summary(net, batch=10**300)
    assert "multiply-adds" in text and "e+" in report.one_line(net)
    assert json.loads(json.dumps(report.to_json(net)))["total_params"] == net.total_params


def test_sizes_stay_below_two_to_the_63():
    err = error("input 2x2x1\n" + " - ".join(["UPSAMPLE 1000000000"] * 3))
    assert isinstance(err, ShapeError) and "upsample3: the output would be too large" in err.message
    err = error("input 8\nblock b(c) = FC c*c*c\nb(3000000)")
    assert "the product is too large" in err.message and (err.line, err.column) == (2, 17)
    assert "1.8e308" not in error("input 8\nblock b(a) = LEAKY a*a\nb(1e200)").hint


def test_the_receptive_field_saturates():
    net = netc.compile("input 8x8x1\n" + " - ".join(
        ["CONV 2x2/1000000000000000000 1 pad=1 round=floor"] * 30) + " - UPSAMPLE 2 bilinear")
    assert net.nodes[-1].receptive_field == (BIG, BIG)
    assert "9.22337e+18" in report.summary(net)


def test_repeat_counts_are_at_most_max_layers():
    err = quick("input 8\nFC 2 x1000000", seconds=0.5)
    assert "a repeat count is at most 10,000; received 1,000,000" in err.message
    assert (err.line, err.column) == (2, 6)


def test_networks_have_at_most_max_layers(monkeypatch):
    monkeypatch.setattr(build, "MAX_LAYERS", 50)
    assert len(netc.compile("input 8\nFC 2 x50").graph) == 51
    err = error("input 8\n[FC 2 - [FC 3]x10]x5")
    assert "more than 50 layers" in err.message and (err.line, err.column) == (2, 10)
    # blocks that double: 2^40 layers, refused after 50
    doubling = "".join(f"block d{i}() = d{i + 1} - d{i + 1}\n" for i in range(40))
    err = quick(doubling + "block d40() = FC 2\ninput 4\nd0", seconds=0.5)
    assert "more than 50 layers" in err.message and "inside block d40" in err.hint


def test_block_calls_nest_at_most_max_depth():
    chain = "".join(f"block b{i}(c) = b{i + 1}(c)\n" for i in range(200))
    err = quick(chain + "block b200(c) = FC c\ninput 4\nb0(2)")
    assert f"nest more than {build.MAX_DEPTH} deep" in err.message
    assert (err.line, err.column) == (build.MAX_DEPTH, 16)
    nested = "input 4\n" + "RES[" * build.MAX_DEPTH + "FC 4" + "]" * build.MAX_DEPTH
    assert len(netc.compile(nested).graph) == 2 + build.MAX_DEPTH  # within the recursion limit
    deep = "".join(f"block g{i}() = [[g{i + 1}]]\n" for i in range(20)) + "block g20() = FC 2\n"
    assert "nest more than" in quick(deep + "input 4\ng0").message
    assert netc.compile(deep.replace("[[", "[").replace("]]", "]") + "input 4\ng0")


@pytest.mark.parametrize("text,line,col,words", [
    ("input 4\n" + "[" * 200 + "FC 2" + "]" * 200, 2, 51, "brackets nested more than 50 deep"),
    ("input 4\n" + "RES[" * 200 + "FC 4" + "]" * 200, 2, 204, "brackets nested more than 50 deep"),
    ("input 8\nFC 64 x 100000000", 2, 7, "a repeat count is at most 10,000; received 100,000,000"),
    ("".join(f"block b{i}() = b{i + 1}\n" for i in range(400)) + "block b400() = FC 2\ninput 4\nb0",
     50, 15, f"groups, branches and block calls nest more than {build.MAX_DEPTH} deep"),
])
def test_unreasonable_specs_are_quick_positioned_errors(text, line, col, words):
    """Issue 19's: 200 nested `[` or `RES[`, 400 chained blocks, a repeat of 10^8. The hint's
    chain of block calls shows its first and last three."""
    err = quick(text, seconds=1.0)
    assert (err.line, err.column) == (line, col) and words in err.message, err.format()
    assert len(err.format()) < 800
    if "block" in words:
        assert err.hint.endswith("inside block b49 (line 49) <- b48 (line 48) <- b47 (line 47) <- "
                                 "... 44 more ... <- b2 (line 2) <- b1 (line 1) <- b0 (line 403)")


@pytest.mark.parametrize("line,words", [
    ("A" * 900_000 + " 3 x 3 4", "`3 x 3` is read as a repeat (x3), so `4` cannot follow it"),
    ("A" * 900_000 + "(", "unexpected '('"),
    ("Conv2D(" * 100_000, "`Conv2D(...)` is Keras notation"),
    ("\u00e9" * 900_000, "unexpected character '\u00e9'"),
])
def test_hints_for_slips_take_bounded_time_on_any_line(line, words):
    """The slips (Keras layers, sizes with spaces) are looked for near the error's column."""
    assert words in quick("input 8\n" + line, seconds=2.0).message
