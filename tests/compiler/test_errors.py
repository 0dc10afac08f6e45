"""Every mistake in a spec is an error with its line, column and a hint; warnings where due."""
import re

import networkx as nx
import pytest

import netc
from netc.dsl import ShapeError, SpecError


def error(text):
    with pytest.raises(SpecError) as e:
        netc.compile(text)
    return e.value


@pytest.mark.parametrize("text,line,col,words,hint", [
    ("input 8x8x1\nCONVV 3x3 8", 2, 1, "unknown layer kind 'CONVV'", "did you mean CONV"),
    ("input 8x8x1\nCONV 3x3 8 padd=1", 2, 12, "no argument `padd`", "did you mean `pad`"),
    ("input 8x8x1\nCONV 3x3 8 pad=1 pad=2", 2, 18, "`pad` is given twice", "keep one"),
    ("input 8x8x1\nCONV 0x3 8", 2, 6, "`kernel` must be >= 1", "positive"),
    ("input 8x8x1\nCONV 3x3 0", 2, 10, "`filters` must be >= 1", "positive"),
    ("input 8\nFC 0", 2, 4, "`units` must be >= 1", "positive"),
    ("input 0x8x1\nFC 2", 1, 7, "input sizes must be positive", "input"),
    ("input 4x4x1\nCONV 5x5 8", 2, 6, "larger than the input", "pad=1"),
    ("input 8x8x3\nCONV 3x3 8 groups=2", 2, 12, "groups=2 must divide", "common divisors: 1"),
    ("input 8x8x3\nFC 10 - CONV 3x3 4", 2, 9, "needs an image", "before the first FC"),
    ("input 8x8x3\nGAP - POOL", 2, 7, "needs an image", "GAP"),
    ("input 8x8x3\nCONCAT[CONV 3x3 8 | CONV 1x1 4]", 2, 1, "same spatial size", "pad=same"),
    ("input 8x8x3\nRES[GAP]", 2, 1, "RES cannot join", "no FC/GAP"),
    ("input 8x8x3\nCONV 3x3 4 act=relux", 2, 12, "`act` must be one of", "act=relu"),
    ("input 8x8x3\nbasic(3)", 2, 1, "unknown block 'basic'", "block NAME"),
    ("input 8x8x3\nblock b(c) = CONV 3x3 c\nb(3, 4)", 3, 6, "takes 1 argument", "c"),
    ("input 8x8x3\nblock b(c) = CONV 3x3 c\nb(d=3)", 3, 3, "no parameter `d`", None),
    ("input 8x8x3\nblock b(c) = CONV 3x3 c\nb()", 3, 1, "needs `c`", None),
    ("input 8x8x3\nCONV 3x3 4 name=a - CONV 3x3 4 name=a", 2, 32, "used twice", "unique"),
    ("input 8x8x3\nCONV 3x3 4\ntrain optimiser=sgd", 3, 7, "unknown train setting", "optimizer"),
    ("input 8x8x3\nCONV 3x3 4\ntrain lr=fast", 3, 7, "`lr` must be a number", None),
    ("input 8x8x3\nINPUT", 2, 1, "made by the compiler", None),
    ("input 8x8x3\nPOOL max 2x2/2 mode=avg", 2, 16, "`mode` is given twice", None),
    ("input 8x8x3\nCONV 3x3", 2, 1, "needs the number of filters", "CONV 3x3 64"),
    ("input 8x8x3\nCONV 3x3 4 - OUT 3 relu", 2, 20, "`act` must be one of softmax",
     "end with an FC instead: `FC N act=tanh`"),
    ("input 8\nFC 6 - MAXOUT 4", 2, 15, "divisible by 4", None),
    ("input 4x4x6\nGN groups=4", 2, 4, "groups=4 needs a channel count divisible by 4",
     "divisors of 6: 1, 2, 3, 6"),
    ("input 8\nFC 6 - IN", 2, 8, "IN needs an image", None),
    ("input 8x8x3\nRES[CONV 3x3 3 pad=1] act=prelu", 2, 1, "cannot be prelu", "PRELU"),
    ("input 8x8x1\nCONV 3x3 4 - FC 2\ntrain freeze=[\"pool*\"]", 3, 7, "no layer matches 'pool*'",
     "conv1, fc1"),
    ("CONV 3x3 4", 1, 1, "no `input` line", "input HxWxC"),
    ("input 8x8x3\nMEAN[CONV 3x3 4 pad=1 | CONV 3x3 8 pad=1]", 2, 1,
     "MEAN needs branches of one shape; received 8x8x4 vs 8x8x8", "same output channels"),
    ("input 8x8x3\nMEAN[CONV 3x3 4 pad=1]", 2, 1, "two or more branches", "MEAN[a | b]"),
    ("input 8x8x3\nRES[CONV 3x3 3 pad=1 | ID]", 2, 1, "takes one chain", "MEAN[a | b]"),
    ("input 8x8x3\nRES[CONV 3x3 3 pad=1] drop=1", 2, 23, "`drop` must be a probability in [0, 1)",
     None),
    ("input 8x8x3\nMEAN[ID | ID] drop=0.2", 2, 15, "MEAN[...] has no argument `drop`",
     "MEAN[...] drop_path="),
    ("input 8x8x3\nCONCAT[ID | ID] drop_path=0.2", 2, 17, "no argument `drop_path`", None),
    ("input 8x8x3\nCONV 3x3 4\ntrain stochastic_depth=0.5", 3, 7, "the network has none",
     "RES[...]"),
    ("input 8x8x3\nRES[ID]\ntrain stochastic_depth=1.5", 3, 7, "stochastic_depth", None),
])
def test_spec_errors(text, line, col, words, hint):
    points_at(error(text), text, line, col, words, hint)


def points_at(err, text, line, col, words, hint):
    """err is at (line, col), says `words`, hints `hint` (if given), and shows the line with its
    caret under the column."""
    assert (err.line, err.column) == (line, col), err.format()
    assert words in err.message, err.format()
    if hint:
        assert hint in err.hint, err.format()
    shown = err.format().splitlines()
    assert shown[1].strip() == text.splitlines()[line - 1].strip()
    assert shown[2].index("^") - 4 == col - 1


def test_lecture_stride_example():
    """A 7x7 input with a 3x3 filter at stride 3 does not fit: name the layer, show the
    arithmetic, suggest a pad and input sizes that fit."""
    err = error("input 7x7x3\nCONV 3x3/3 4 name=c1")
    assert isinstance(err, ShapeError)
    assert err.message.startswith("c1: ")
    assert "(7 - 3 + 2*0)/3 + 1 = 2.333" in err.message
    assert "pad=1" in err.hint and "6 or 9" in err.hint
    assert (err.line, err.column) == (2, 6)


def test_recursive_blocks():
    err = error("input 8x8x3\nblock a(c) = CONV 3x3 c - b(c)\nblock b(c) = a(c)\na(4)")
    assert "recursive" in err.message and "a -> b -> a" in err.message
    assert (err.line, err.column) == (3, 14)
    assert "inside block" in err.hint


def test_error_inside_block_names_the_call_site():
    err = error("input 8x8x3\nblock b(c) = CONV 3x3 c groups=2\n\nb(4)")
    assert err.line == 2 and "inside block b (line 4)" in err.hint


def test_stride_in_block_with_parameter():
    net = netc.compile("input 8x8x3\nblock b(c, s=1) = CONV 3x3/s c pad=same\nb(4, s=2)")
    assert net.output_shape == (4, 4, 4)


def test_warnings_pool_drops_once_per_place():
    net = netc.compile("input 9x9x3\nPOOL max 2x2/2")
    assert len(net.warnings) == 1 and "drops 1 bottom row" in net.warnings[0].message
    assert (net.warnings[0].line, net.warnings[0].column) == (2, 1)
    assert not netc.compile("input 8x8x1\nPOOL max 2x2/2 - CONV 3x3 2").warnings
    net = netc.compile("input 27x27x3\n[POOL max 2x2/2]x3")  # 27, 13 and 6: the first two drop
    assert len(net.warnings) == 1 and "pool1: pooling drops 1" in net.warnings[0].message


def test_a_receptive_field_larger_than_the_input_is_no_warning():
    """Every deep network's is (ResNet-18's is 435 pixels on 224): the summary shows it."""
    net = netc.compile("input 8x8x1\nCONV 5x5 2 pad=2 - CONV 5x5 2 pad=2")
    assert net.nodes[-1].receptive_field == (9, 9) and not net.warnings


def test_weights_that_only_meet_padding_are_a_warning():
    """A 3x3 kernel with pad=1 on a 1x1 input: 8 of its 9 weights only multiply zeros."""
    net = netc.compile("input 4x4x1\nCONV 3x3 4 pad=1 - POOL - POOL -\n  CONV 3x3 4 pad=1 - "
                       "CONV 5x5 4 pad=2")
    assert [(w.line, w.column) for w in net.warnings] == [(3, 3), (3, 22)]
    assert net.warnings[0].format() == (
        "<spec>:3:3: warning: conv2: 8 of the 3x3 kernel's 9 positions only ever meet padding "
        "on its 1x1 input (their weights never see the input): a 1x1 kernel would do with fewer "
        "weights, or place the layer before a downsampling step")
    assert "24 of the 5x5 kernel's 25" in net.warnings[1].message
    net = netc.compile("input 4x4x1\nCONV 5x5 4 pad=2 - CONV 3x3/2 4 pad=1 - CONV 3x3 4 pad=1")
    assert not net.warnings  # 2x2 at the end: each weight meets a pixel somewhere


def test_warnings_inside_a_block_point_at_its_use():
    """Where the sizes that cause it are chosen: the outermost call, once per call; the message
    says where the layer is."""
    text = ("input 4x4x1\nblock tail(c) = CONV 3x3 c pad=1 - CONV 3x3 c pad=1\n"
            "block stage(c) = POOL - tail(c)\n\nCONV 3x3 4 pad=1 -\n   stage(4) x2")
    net = netc.compile(text)  # the second stage's two CONVs on 1x1 inputs: one warning
    assert [(w.line, w.column) for w in net.warnings] == [(6, 4)]
    assert net.warnings[0].message.endswith(
        "(the CONV on line 2, inside block tail (line 3) <- stage (line 6))")
    assert "stage2.tail1.conv1: 8 of the 3x3 kernel's 9" in net.warnings[0].message


@pytest.mark.parametrize("text,col,words,hint", [
    ("CONV 3 x 3", 6, "`CONV 3 x 3` repeats `CONV 3` 3 times",
     "a 3x3 kernel is written without spaces: `CONV 3x3 F` (F: the number of filters); to repeat "
     "the layer, glue the x (`CONV 3 x3`) or use brackets (`[CONV 3]x3`)"),
    ("CONV 7x 7 - FC 2", 6, "`CONV 7 x 7` repeats `CONV 7` 7 times", "`CONV 7x7 F`"),
    ("POOL max 2 x 2", 10, "`POOL max 2 x 2` repeats `POOL max 2` 2 times",
     "a 2x2 kernel is written without spaces: `POOL max 2x2`; to repeat the layer, glue the x "
     "(`POOL max 2 x2`) or use brackets (`[POOL max 2]x2`)"),
    ("DECONV 2 × 2", 8, "`DECONV 2 x 2` repeats", "`DECONV 2x2 F`"),
])
def test_a_kernel_written_with_spaces_is_an_error(text, col, words, hint):
    err = error("input 8x8x1\n" + text)
    points_at(err, "input 8x8x1\n" + text, 2, col, words, hint)
    caret = err.format().splitlines()[2].strip()
    assert caret == "^" * len(re.search(r"\d+ ?[x\u00d7] ?\d+", text).group())  # N to the count


@pytest.mark.parametrize("text,layers", [
    ("CONV 3x3 64 x 2", 2), ("CONV 64 x 2", 2), ("CONV 3 x3", 3), ("[CONV 3]x3", 3),
    ("CONV 3x3 3 x 3", 3), ("CONV filters=3 x 3", 3), ("FC 3 x 3", 3), ("FC x 3", 3),
    ("CONV 3 x 2", 2), ("UPSAMPLE 2 x 2", 2),
])
def test_repeats_that_are_not_kernels_stay_repeats(text, layers):
    net = netc.compile("input 32x32x1\nCONV: 3x3 pad=same\nFC: 4\n" + text)
    assert len(net.graph) == layers + 1


@pytest.mark.parametrize("text,col,hint", [
    ("CONV 3x3x64", 6, "the kernel is HxW and the filters are written apart (the input's channels "
     "come from the layer before): `CONV 3x3 64`"),
    ("CONV 5x5x1/2 10 pad=2", 6, "`CONV 5x5/2 10`"),
    ("DECONV kernel=2x2x8 8", 8, "`DECONV 2x2 8`"),
    ("POOL max 2x2x1", 10, "the window is HxW (pooling keeps the channels): `POOL 2x2`"),
])
def test_a_kernel_with_a_depth_gets_the_netc_spelling(text, col, hint):
    err = error("input 8x8x1\n" + text)
    points_at(err, "input 8x8x1\n" + text, 2, col, "a kernel is HxW; received", hint)


def test_a_file_that_is_not_utf8(tmp_path):
    """A Latin-1 comment (a file saved in Windows' encoding): the line and column of the byte."""
    path = tmp_path / "latin.net"
    path.write_bytes("input 8x8x1\n# caf\u00e9 au lait\nCONV 3x3 4 - OUT 2\n".encode("latin-1"))
    err = error(str(path))
    assert (err.line, err.column) == (2, 6) and err.source.filename == str(path)
    assert err.message == ("byte 0xe9 is not UTF-8 ('\u00e9' in Latin-1 or Windows-1252): the file "
                           "is not saved as UTF-8")
    assert err.hint.startswith("save it as UTF-8")
    assert err.format().splitlines()[1:3] == ["    # caf\ufffd au lait", "         ^"]


@pytest.mark.parametrize("data", [
    "\ufeffinput 8x8x1\nCONV 3x3 4 - OUT 2\n".encode("utf-8"),  # Notepad's UTF-8
    "input 8x8x1\nCONV 3x3 4 - OUT 2\n".encode("utf-16"),  # Notepad's "Unicode"
])
def test_byte_order_marks_are_read(tmp_path, data):
    path = tmp_path / "bom.net"
    path.write_bytes(data)
    net = netc.compile(str(path))
    assert net.output_shape == (2,) and not net.source.text.startswith("\ufeff")


def test_a_byte_order_mark_takes_no_column():
    err = error("\ufeffinput 0x8x1\nCONV 3x3 4")
    points_at(err, "input 0x8x1\nCONV 3x3 4", 1, 7, "input sizes must be positive", None)


def test_round_floor_accepts_what_exact_refuses():
    net = netc.compile("input 7x7x3\nCONV 3x3/3 4 round=floor")
    assert net.output_shape == (4, 2, 2)


def test_missing_file_is_a_clean_error(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        netc.compile(str(tmp_path / "nope.net"))


def test_stochastic_depth_linear_rule():
    """Huang et al.: unit l of L drops with probability l/L * p; a unit's own drop= stays."""
    net = netc.compile("input 4x4x2\nCONV: 3x3 pad=same\nRES[CONV 2]x3 - RES[CONV 2] drop=0.05 - "
                       "RES[CONV 2]\ntrain stochastic_depth=0.5")
    drops = [n.hyper["drop"] for n in net.nodes if n.kind == "ADD"]
    assert drops == [0.1, 0.2, pytest.approx(0.3), 0.05, 0.5]
    plain = netc.compile("input 4x4x2\nRES[CONV 3x3 2 pad=1]x2")
    assert [n.hyper["drop"] for n in plain.nodes if n.kind == "ADD"] == [0.0, 0.0]
    from netc.compiler import report
    assert "ADD relu drop 0.5" in report.summary(net)


@pytest.mark.parametrize("text,line,col,first,hint", [
    # a name given before the counter reaches it, and after it passed it
    ("input 8x8x1\nCONV 3x3 4 - CONV 3x3 4 name=conv1", 2, 25, 2, "the counter gave 'conv1' to the CONV"),
    ("input 8x8x1\nCONV 3x3 4 name=a -\nCONV 3x3 4 name=a", 3, 12, 2, "unique"),
    ("input 8\nFC 2 name=input", 2, 6, 1, "the network's input"),
    # two block calls with one name= (they would share their layers' names)
    ("input 8\nblock b(c) = FC c\nb(2, name=s) -\nb(2, name=s)", 4, 6, 3, "unique"),
    ("input 8\nblock b(c) = FC c\nb(2) - b(2, name=b1)", 3, 13, 3, "the counter gave 'b1' to the call"),
    # a name inside a block used twice, and one taken in the block's own scope
    ("input 8\nblock b(c) = FC c name=x\nb(2) - b(2)", 2, 19, 2, "block used more than once"),
    ("input 8\nblock b(c) = FC c - FC c name=fc1\nb(2)", 2, 26, 2, "the counter gave 'fc1'"),
    ("input 8\nFC 2 name=res1 -\nRES[FC 2] - FC 2 name=res1", 3, 18, 2, "unique"),
])
def test_every_name_and_path_is_unique(text, line, col, first, hint):
    err = error(text)
    assert (err.line, err.column) == (line, col), err.format()
    assert f"is used twice (first on line {first}" in err.message and hint in err.hint
    assert ("column" in err.message) == (first == line)


def test_every_scope_draws_as_its_own_cluster():
    """Paths a.b and a_b are two scopes, two clusters (Graphviz merges clusters of one name)."""
    import re

    from netc.compiler import draw
    net = netc.compile("input 8\nblock b(c) = FC c - RELU - FC c - RELU\n"
                       "block a(c) = b(c, name=b) - FC c\na(2, name=a) - b(2, name=a_b)")
    names = re.findall(r"subgraph (\S+) \{", draw.graph(net).source)
    assert sorted(names) == ['"cluster_a.b"', "cluster_a", "cluster_a_b"]


def test_the_counter_skips_names_given_before():
    """`CONV name=conv2 - CONV`: the second CONV is conv3 (a layer given name= takes its number
    all the same); the graph has every layer once, with its parameters."""
    net = netc.compile("input 8x8x1\nCONV 3x3 4 pad=1 name=conv2 - CONV 3x3 5 pad=1 - FC 2")
    assert [n.name for n in net.nodes] == ["input", "conv2", "conv3", "fc1"]
    assert net.total_params == (4 * 9 + 4) + (5 * 4 * 9 + 5) + (2 * 5 * 64 + 2)
    assert nx.is_directed_acyclic_graph(net.graph) and len(net.graph.edges) == 3
    net = netc.compile("input 8\nblock b(c) = FC c\nb(2, name=b1) - b(2) - RES[FC 2 name=add1]")
    assert [".".join(n.path) for n in net.nodes[1:]] == [
        "b1.fc1", "b2.fc1", "res1.add1", "res1.add2"]
    net = netc.compile("input 8\nblock b(c) = FC c name=fc1\nb(2) - FC 2")
    assert [n.name for n in net.nodes[1:]] == ["fc1", "fc2"]


def test_block_call_name_must_be_a_name():
    err = error("input 8\nblock b(c) = FC c\nb(4, name=5)")
    assert "`name` must be a name" in err.message and (err.line, err.column) == (3, 6)
    assert "name=stage1" in err.hint


def test_every_activation_check_accepts_is_one_the_runtime_runs():
    """What check accepts, train must run: every act= of a layer, of OUT and of RES[...] (the
    output's too: it is applied apart from the kernel there) is one the runtime applies."""
    from netc.compiler import registry
    from netc.runtime.backends.elementwise import ACT_CODES
    kinds = registry.kinds()
    accepted = {a for k in kinds.values() for key, arg in k.all_keys().items() if key == "act"
                for a in arg.choices}
    accepted |= {k.act for k in kinds.values() if hasattr(k, "act")}
    assert accepted <= set(ACT_CODES) | {"softmax"}
