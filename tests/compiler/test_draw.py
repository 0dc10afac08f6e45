"""Diagrams (compiler.fold and compiler.draw): folded blocks read as the spec's calls, one edge per
tensor, runs of one call in one box, clusters only for structure, legible bitmaps, Graphviz's
warnings passed on; a Net in a notebook. Checked on the DOT source; the PNG tests need `dot`."""
import os
import re
import shutil
import struct
import subprocess
import sys
from collections import Counter

import pytest

import netc
from netc.compiler import draw, fold, report
from tests.cli.test_draw_unroll import parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed")


def spec(name):
    return netc.compile(os.path.join(ROOT, "specs", name + ".net"))


def dot_of(net, **kw):
    return parse(draw.graph(net, **kw).source)


def clusters(source):
    return {name.strip('"')[len("cluster_"):]
            for name in re.findall(r"subgraph (\S+) \{", source) if "cluster_" in name}


def test_a_folded_block_reads_as_its_call_with_one_edge_per_tensor():
    """ResNet-18 at depth 1: `basic(64) x2`, `basic(128, s=2)` ... and their parameters; the
    tensor that enters a block at its first conv and at its shortcut is one edge, not two."""
    nodes, edges = dot_of(spec("resnet18"), depth=1)
    assert nodes["basic1"]["label"] == "basic(64) x2\n147,968 params"
    assert nodes["basic3"]["label"] == "basic(128, s=2)\n230,144 params"
    assert nodes["basic4"]["label"] == "basic(128)\n295,424 params"
    assert "basic2" not in nodes  # in basic1's run
    pairs = Counter((a, b) for a, b, _ in edges)
    assert pairs[("pool1", "basic1")] == pairs[("basic1", "basic3")] == 1
    assert max(pairs.values()) == 1 and len(edges) == 13


def test_runs_of_one_call_fold_into_one_box():
    """DenseNet-121 at depth 1: its four dense blocks and three transitions, as the spec writes
    them; 16 boxes instead of 58 calls."""
    net = spec("densenet121")
    nodes, _ = dot_of(net, depth=1)
    folded = [a["label"].split("\n")[0] for n, a in nodes.items() if a.get("fillcolor") == "#e6e0f8"]
    assert folded == ["layer() x6", "transition(128)", "layer() x12", "transition(256)",
                      "layer() x24", "transition(512)", "layer() x16"]
    assert len(fold.layout(net, 1).boxes) == 16
    total = sum(int(a["label"].split("\n")[-1].split()[0].replace(",", ""))
                for a in nodes.values() if a.get("fillcolor") == "#e6e0f8")
    assert total == net.total_params - sum(n.param_count for n in net.nodes if len(n.path) == 1)


def test_only_unnamed_chained_calls_with_equal_arguments_merge():
    """b(4) - b(4) is `b(4) x2`; b(4) - b(5) stays two boxes; calls given name= keep their box,
    named first, then the call."""
    net = netc.compile("input 8\nblock b(c) = FC c - RELU\nb(4) - b(4) - b(5) - b(5, name=x) - "
                       "b(5, name=y)")
    nodes, _ = dot_of(net, depth=1)
    labels = [a["label"] for n, a in nodes.items() if n != "input"]
    assert labels == ["b(4) x2\n56 params", "b(5)\n25 params", "x\nb(5)\n30 params",
                      "y\nb(5)\n30 params"]


def test_a_branch_folds_as_its_construct_or_the_one_call_it_holds():
    nodes, _ = dot_of(netc.compile("input 8\nRES[FC 8 - RELU - FC 8] - FC 2"), depth=1)
    assert nodes["res1"]["label"] == "res1\nRES[4 layers]\n144 params"
    nodes, _ = dot_of(spec("googlenet"), depth=3)  # GoogLeNet's branches
    assert nodes["inception3a.concat1.b1.bc1"]["label"] == "bc(64)\n12,416 params"
    assert nodes["inception3a.concat1.b2"]["label"] == "b2\n[6 layers]\n129,472 params"


def test_clusters_show_structure_not_every_short_chain():
    """GoogLeNet: one cluster per inception module (labelled with its call), none around each
    conv-BN-ReLU, each parallel branch or the CONCAT that is the whole module; ResNet-18: one
    per basic block, not its RES[...] too."""
    source = draw.graph(spec("googlenet")).source
    assert clusters(source) == {f"inception{m}" for m in
                                ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")}
    assert 'label="inception3a: inception(64, 96, 128, 16, 32, 32)"' in source
    source = draw.graph(spec("resnet18")).source
    assert clusters(source) == {f"basic{i}" for i in range(1, 9)}
    assert 'label="basic3: basic(128, s=2)"' in source
    # a longer chain, or one with a join, keeps its cluster
    net = netc.compile("input 8\nblock b(c) = FC c - RELU - FC c - RELU\nblock s(c) = FC c - RELU"
                       "\nb(4) - s(4) - RES[FC 4]")
    assert clusters(draw.graph(net).source) == {"b1", "res1"}


def test_a_bitmap_too_tall_folds_and_says_so():
    """Legible depth: every layer where the longest path fits (GoogLeNet's 79 boxes), the
    deepest fold that fits otherwise (DenseNet-121's 427 at depth 2: its dense blocks as runs)."""
    assert fold.legible_depth(spec("googlenet"), draw.LEGIBLE_RANKS) is None
    dense = spec("densenet121")
    assert fold.ranks(dense) == 427 and fold.ranks(dense, 2) <= draw.LEGIBLE_RANKS
    assert fold.legible_depth(dense, draw.LEGIBLE_RANKS) == 2
    chain = netc.compile("input 8\nFC 8 x300")  # nothing to fold: Graphviz's warning tells
    assert fold.legible_depth(chain, draw.LEGIBLE_RANKS) is None


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@needs_dot
def test_densenet_png_stays_legible(tmp_path):
    with pytest.warns(UserWarning, match=r"DenseNet121: 427 layers .* as --depth 2"):
        draw.render(spec("densenet121"), str(tmp_path / "d.png"))
    w, h = png_size(tmp_path / "d.png")
    assert w < 1000 and h < 4000  # was 221x32766, scaled down by Graphviz


def fake_dot(tmp_path, monkeypatch, says):
    """A `dot` on PATH that writes an empty SVG and `says` on stderr."""
    exe = tmp_path / "bin" / "dot"
    exe.parent.mkdir()
    exe.write_text(f"#!/bin/sh\nwhile read -r line; do :; done\necho '<svg/>'\necho '{says}' >&2\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(exe.parent))


def test_graphviz_warnings_reach_the_user(tmp_path, monkeypatch):
    fake_dot(tmp_path, monkeypatch, "Warning: node a, port b unrecognized")
    net = netc.compile("input 8\nFC 2")
    with pytest.warns(UserWarning, match="^Graphviz: node a, port b unrecognized$"):
        draw.render(net, str(tmp_path / "n.svg"))
    assert (tmp_path / "n.svg").read_text() == "<svg/>\n"


def test_a_net_in_a_notebook(tmp_path, monkeypatch):
    """Jupyter shows _repr_svg_ (None without Graphviz: the repr instead); net.summary() is the
    table; compiling never imports graphviz."""
    net = netc.compile("network Tiny\ninput 8\nFC 4 - RELU - FC 2")
    assert net.summary(depth=1) == report.summary(net, depth=1)
    if shutil.which("dot"):
        svg = net._repr_svg_()
        assert "<svg" in svg and "Tiny" in svg
    monkeypatch.setenv("PATH", str(tmp_path))
    assert net._repr_svg_() is None
    code = ("import sys, netc; netc.compile('input 8\\nFC 2')\n"
            "assert 'graphviz' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
