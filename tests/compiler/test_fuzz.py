"""The spec language under fuzzing: mutated zoo specs either compile (and then summarise, convert
to JSON and draw) or fail with a netc error, within a time and memory bound: never another
exception, a hang or unbounded memory.

CI runs a few hundred cases in a few seconds; NETC_FUZZ_CASES=20000 runs that many, drawn anew."""
import glob
import json
import os
import re
import resource
import signal
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netc
from netc.compiler import draw, report

from ..conftest import SPECS

# CI runs the same cases each time; NETC_FUZZ_CASES=N runs N new ones
CASES = int(os.environ.get("NETC_FUZZ_CASES", "300"))
SECONDS = 10  # per case, far above what one takes (a machine running other work included)
MEMORY = 2**30  # the most address space one case may add

# the zoo, and what it does not show
CORPUS = [open(p, encoding="utf-8").read() for p in sorted(glob.glob(os.path.join(SPECS, "*.net")))]
CORPUS += [
    "input 8\nFC 6 act=prelu - MAXOUT 3 - LN - ELU 0.5 - LEAKY - DROPOUT 0.1 - OUT 2 sigmoid\n"
    "train loss=bce optimizer=adam betas=[0.9, 0.99] freeze=[fc1]\n",
    "input 8x8x2\nCONV: 3x3 pad=same\nblock b(c, s=1) = RES[CONV 3x3/s c - IN - PRELU - CONV c*2 - GN 2]\n"
    "b(4, name=first) - b(4, s=2) x2 - CONCAT[ID | POOL avg 3x3/1 pad=1 | CONV 1x1 2] - "
    "DENSE[CONV 4] - FLATTEN - OUT 3 softmax\ntrain stochastic_depth=0.2 schedule=cosine\n",
]

# what an insertion puts in: brackets, separators, repeats, names, numbers huge and small, odd
# characters
PIECES = ["[", "]", "(", ")", "|", "-", "->", "→", ",", "=", "*", "/", ":", "\n", " ", "\\\n",
          "#", '"', "x2", "x0", " x10000", "x99999", " x 3", "[" * 60, "]" * 60, "(" * 20,
          "name=conv1", "name=conv2", "name=b1", "name=input", "name=res1", "name=5", ", name=x",
          "act=relu", "act=prelu", "per=pixel", "groups=7", "pad=same", "round=ceil", "drop=0.5",
          "0", "1", "-1", "0.0", "1e400", "9" * 30, "9" * 400, "9" * 5000, "3x3/1000000000000",
          "1000000000000", "0x0", "99999x99999x99999", "\x0c", "\u2028", "\x1c", "\x00", "\t",
          "\r", "é", "CONV", "POOL", "FC 2", "OUT 3", "GAP", "RES[", "CONCAT[", "MEAN[", "DENSE[",
          "ID", "UPSAMPLE 9999999", "DECONV 3x3/2 4", "block b(c) = FC c\n", "b(2)", "input 8\n",
          "input 8x8x1\n", "network N\n", "train lr=0.1\n", "CONV: 3x3\n"]
# what a number becomes: edges of each range, huge, odd
NUMBERS = ["0", "1", "2", "3", "7", "64", "99999", "1000000000000", "9223372036854775807",
           "9223372036854775808", "9" * 30, "9" * 400, "9" * 5000, "0.5", "1e400", "1e-400", "0x0",
           "3x3", "1x1/1000000000000", "99999x99999x99999"]
NUMBER = re.compile(r"#[^\n]*|[0-9]+")
# where a piece goes in: before a word, outside comments
BOUNDARY = re.compile(r"#[^\n]*|(?:\A|(?<=[ \t\n\[(|,=-]))(?=[^ \t\n#])")


def boundaries(text):
    return [m.start() for m in BOUNDARY.finditer(text) if not m.group()] or [0]


def mutate(text, ops):
    """Apply each (operation, place, other place, piece): places are fractions of the text (for
    an insertion and a wrap, of its word boundaries outside comments)."""
    for op, a, b, piece in ops:
        n = len(text)
        i, j = sorted((int(a * n), int(b * n)))
        if op in ("insert", "wrap"):
            at = boundaries(text)
            i, j = sorted((at[int(a * len(at))], at[int(b * len(at))]))
        if op == "delete":
            text = text[:i] + text[min(j, i + 50):]
        elif op == "duplicate":
            text = text[:j] + text[i:min(j, i + 200)] + text[j:]
        elif op == "swap" and j < n:
            text = text[:i] + text[j] + text[i + 1:j] + text[i] + text[j + 1:]
        elif op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "number":
            found = [m for m in NUMBER.finditer(text) if m.group()[0] != "#"]
            if found:
                m = found[int(a * len(found))]
                text = text[:m.start()] + piece + text[m.end():]
        elif op == "tokens":
            words = text.split(" ")
            k, m = int(a * len(words)), int(b * len(words))
            words[k], words[m] = words[m], words[k]
            text = " ".join(words)
        elif op == "wrap":
            text = text[:i] + "[" + text[i:j] + "]" + piece + text[j:]
    return text


class Hang(Exception):
    """A case ran past SECONDS."""


@pytest.fixture(scope="module")
def alarm():
    """SIGALRM raises Hang (the cases set the timer)."""
    def ring(signum, frame):
        raise Hang(f"a case ran past {SECONDS} s")
    previous = signal.signal(signal.SIGALRM, ring)
    yield
    signal.signal(signal.SIGALRM, previous)


def mapped() -> int:
    """The address space this process has mapped, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def bounded(run, text, seconds=SECONDS):
    """run(text) under a timer and a limit on the address space: a hang raises Hang, a runaway
    allocation MemoryError."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    used = mapped()
    limit = used + MEMORY if hard == resource.RLIM_INFINITY else min(used + MEMORY, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return run(text)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def outcome(text):
    """Compile; on success report every way netc can; a NetcError must format."""
    try:
        net = netc.compile(text)
    except netc.NetcError as e:
        return e.format()
    for depth in (None, 1):
        report.summary(net, depth=depth)
        draw.graph(net, depth=depth).source
    json.dumps(report.to_json(net))
    return report.one_line(net)


OPS = st.sampled_from(["delete", "duplicate", "swap", "insert", "tokens", "wrap"])
PLACE = st.floats(0, 1, exclude_max=True)
MUTATION = (st.tuples(OPS, PLACE, PLACE, st.sampled_from(PIECES))
            | st.tuples(st.just("number"), PLACE, PLACE, st.sampled_from(NUMBERS)))


@settings(max_examples=CASES, deadline=None, derandomize="NETC_FUZZ_CASES" not in os.environ,
          database=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(range(len(CORPUS))), st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_specs_end_in_success_or_a_netc_error(alarm, spec, ops):
    bounded(outcome, mutate(CORPUS[spec], ops))


def test_the_bounds_catch_a_hang_and_a_runaway_allocation(alarm):
    before = resource.getrlimit(resource.RLIMIT_AS)
    with pytest.raises(Hang):
        bounded(lambda text: time.sleep(5), "", seconds=0.05)
    # (larger than all that is mapped: a heap that kept freed memory, as the ONNX tests' does
    # while they run, could serve an allocation within it)
    with pytest.raises(MemoryError):
        bounded(lambda text: bytearray(mapped() + 2 * MEMORY), "")
    assert resource.getrlimit(resource.RLIMIT_AS) == before  # lifted after


def test_mutations_keep_the_corpus_honest():
    """The corpus compiles, and the mutator makes what it says."""
    for text in CORPUS:
        netc.compile(text)
    assert mutate("abcdef", [("delete", 0.0, 0.5, "")]) == "def"
    assert mutate("abcdef", [("swap", 0.0, 0.5, "")]) == "dbcaef"
    assert mutate("FC 12 - FC 3 # 4", [("number", 0.6, 0.0, "0")]) == "FC 12 - FC 0 # 4"
    assert mutate("FC 2 - FC 3", [("wrap", 0.0, 0.5, "x2")]) == "[FC 2 ]x2- FC 3"
