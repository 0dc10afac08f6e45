"""`netc draw --unroll K` (draw.graph/render(..., unroll=K)): each recurrent layer as the lecture
draws it unrolled, checked on the Graphviz source (nodes, edges, clusters), written to files by
the command, and its mistakes."""
import re
import shutil

import pytest

import netc
from netc.cli import main
from netc.compiler import draw

SEQTEST = ("network SeqTest\ninput seq 8x8\nLSTM 64 return=seq - DROPOUT 0.2 - "
           "LSTM 32 bidir=true - FC 16 act=relu - OUT 10 softmax\n")

_ID = r'"(?:[^"\\]|\\.)*"|[\w.]+'
_VALUE = r'"(?:[^"\\]|\\.)*"|<(?:[^<>]|<[^<>]*>)*>|[^\s\]]+'
_STATEMENT = re.compile(rf"^\s*({_ID})(?:\s*->\s*({_ID}))?(?:\s*\[((?:\s*\w+=(?:{_VALUE}))*)\s*\])?"
                        r"\s*$", re.M)


def parse(source):
    """{node id: attributes} and [(tail, head, attributes)] of a DOT source (ids unquoted)."""
    nodes, edges = {}, []
    for m in _STATEMENT.finditer(source):
        attrs = {k: v.strip('"') for k, v in re.findall(rf"(\w+)=({_VALUE})", m.group(3) or "")}
        a, b = m.group(1).strip('"'), (m.group(2) or "").strip('"')
        if b:
            edges.append((a, b, attrs))
        elif a not in ("graph", "node", "edge"):
            nodes[a] = attrs
    return nodes, edges


def unrolled(text, k, **kw):
    return parse(draw.graph(netc.compile(text), unroll=k, **kw).source)


def cells(nodes, layer, reverse=False):
    """The labels of a layer's cell boxes (not the ellipsis), left to right as drawn."""
    prefix = f"{layer}/reverse/t" if reverse else f"{layer}/t"
    return [a["label"] for n, a in nodes.items() if n.startswith(prefix)]


def states(edges, layer, reverse=False):
    """(tail, head, label) of the state edges along one row."""
    row = f"{layer}/reverse/" if reverse else f"{layer}/"
    return [(a.rsplit("/", 1)[1], b.rsplit("/", 1)[1], e["label"]) for a, b, e in edges
            if a.startswith(row) and b.startswith(row) and "label" in e
            and a.count("/") == b.count("/") == row.count("/")]


def test_a_long_sequence_shows_k_minus_1_steps_an_ellipsis_and_the_last():
    """T = 8, K = 4: cells 1, 2, 3, "…", 8; h and c from each to the next; x_t into each; the
    last step's h out (return=last); one note for the shared weights."""
    nodes, edges = unrolled("input seq 8x8\nLSTM 64 - OUT 10 softmax", 4)
    assert cells(nodes, "lstm1") == ["LSTM t=1", "LSTM t=2", "LSTM t=3", "LSTM t=8"]
    assert nodes["lstm1/more"]["label"] == "…"
    assert states(edges, "lstm1") == [
        ("t1", "t2", "<h<SUB>1</SUB>>"), ("t1", "t2", "<c<SUB>1</SUB>>"),
        ("t2", "t3", "<h<SUB>2</SUB>>"), ("t2", "t3", "<c<SUB>2</SUB>>"),
        ("t3", "more", "<h<SUB>3</SUB>>"), ("t3", "more", "<c<SUB>3</SUB>>"),
        ("more", "t8", "<h<SUB>7</SUB>>"), ("more", "t8", "<c<SUB>7</SUB>>")]
    drawn = [(a, b) for a, b, e in edges if e.get("style") != "invis"]
    for t in (1, 2, 3, 8):
        assert nodes[f"lstm1/x{t}"]["label"] == f"<x<SUB>{t}</SUB>>"
        assert (f"lstm1/x{t}", f"lstm1/t{t}") in drawn
    outputs = [n for n in nodes if re.fullmatch(r"lstm1/h\d+", n)]
    assert outputs == ["lstm1/h8"] and ("lstm1/t8", "lstm1/h8") in drawn
    note = nodes["lstm1/weights"]
    assert note["shape"] == "note" and "one set of weights for every step" in note["label"]
    assert "weight_ih 256x8" in note["label"] and "weight_hh 256x64" in note["label"]
    assert "(18,944 parameters)" in note["label"]


def test_the_layer_is_a_dashed_cluster_the_network_enters_and_leaves_at_its_border():
    net = netc.compile("input seq 8x8\nLSTM 64 - OUT 10 softmax")
    source = draw.graph(net, unroll=4).source
    assert "compound=true" in source
    block = re.search(r"subgraph cluster_lstm1 \{\s*graph \[(.*?)\]", source).group(1)
    assert "style=dashed" in block and 'label="lstm1: LSTM 64, unrolled over T = 8 steps"' in block
    _, edges = parse(source)
    assert ("input", "lstm1/x1", {"label": "8x8", "lhead": "cluster_lstm1"}) in edges
    assert ("lstm1/h8", "out1", {"label": "64", "ltail": "cluster_lstm1"}) in edges


def test_a_short_sequence_shows_every_step_and_return_seq_every_output():
    """T = 3 <= K = 5: three cells, no ellipsis; a GRU passes h alone; return=seq: h_1..h_3."""
    nodes, edges = unrolled("input seq 3x2\nGRU 4 return=seq - OUT 2 softmax", 5)
    assert cells(nodes, "gru1") == ["GRU t=1", "GRU t=2", "GRU t=3"]
    assert not any(n.endswith("more") for n in nodes)
    assert states(edges, "gru1") == [("t1", "t2", "<h<SUB>1</SUB>>"),
                                     ("t2", "t3", "<h<SUB>2</SUB>>")]
    assert [nodes[f"gru1/h{t}"]["label"] for t in (1, 2, 3)] == [
        f"<h<SUB>{t}</SUB>>" for t in (1, 2, 3)]
    assert ("gru1/h3", "out1", {"label": "3x4", "ltail": "cluster_gru1"}) in edges


def test_k_equal_to_t_draws_every_step():
    nodes, _ = unrolled("input seq 4x2\nRNN 3 act=relu", 4)
    assert cells(nodes, "rnn1") == [f"RNN t={t}" for t in (1, 2, 3, 4)]
    assert "rnn1/more" not in nodes


def test_bidir_draws_a_reverse_row_right_to_left():
    """The reverse row: the same steps under the forward ones, its states handed from step t+1 to
    step t (edges drawn back); return=last joins forward step T and reverse step 1 (h_n)."""
    nodes, edges = unrolled(SEQTEST, 4)
    assert cells(nodes, "lstm2") == ["LSTM t=1", "LSTM t=2", "LSTM t=3", "LSTM t=8"]
    assert cells(nodes, "lstm2", reverse=True) == [
        f"LSTM t={t}\nreverse" for t in (1, 2, 3, 8)]
    back = [(a, b, e["label"]) for a, b, e in edges
            if a.startswith("lstm2/reverse/") and e.get("dir") == "back"]
    assert [(a, b, label) for a, b, label in back if label.startswith("<h")] == [
        ("lstm2/reverse/t1", "lstm2/reverse/t2", "<h<SUP>&larr;</SUP><SUB>2</SUB>>"),
        ("lstm2/reverse/t2", "lstm2/reverse/t3", "<h<SUP>&larr;</SUP><SUB>3</SUB>>"),
        ("lstm2/reverse/t3", "lstm2/reverse/more", "<h<SUP>&larr;</SUP><SUB>4</SUB>>"),
        ("lstm2/reverse/more", "lstm2/reverse/t8", "<h<SUP>&larr;</SUP><SUB>8</SUB>>")]
    assert len(back) == 8  # and c alongside each h
    assert nodes["lstm2/h8"]["label"] == "<[h<SUB>8</SUB>; h<SUP>&larr;</SUP><SUB>1</SUB>]>"
    drawn = [(a, b) for a, b, e in edges if e.get("style") != "invis"]
    assert [a for a, b in drawn if b == "lstm2/h8"] == ["lstm2/t8", "lstm2/reverse/t1"]
    assert "the reverse row has its own set" in nodes["lstm2/weights"]["label"]
    # return=seq with bidir: each output joins both rows at its step
    nodes, edges = unrolled("input seq 3x2\nGRU 4 return=seq bidir=true", 3)
    for t in (1, 2, 3):
        assert sorted(a for a, b, e in edges if b == f"gru1/h{t}" and e.get("style") != "invis") \
            == [f"gru1/reverse/t{t}", f"gru1/t{t}"]


def test_the_rest_of_the_diagram_is_unchanged():
    """Without unroll a recurrent layer is one box, its edges T x H; with it only the edges at the
    recurrent layers change."""
    net = netc.compile(SEQTEST)
    plain_nodes, plain_edges = parse(draw.graph(net).source)
    assert plain_nodes["input"]["label"] == "input\nseq 8x8"
    assert plain_nodes["lstm1"]["label"] == "lstm1\nLSTM 64 seq"
    assert plain_nodes["lstm2"]["label"] == "lstm2\nLSTM 32 bidir"
    assert [(a, b, e["label"]) for a, b, e in plain_edges] == [
        ("input", "lstm1", "8x8"), ("lstm1", "dropout1", "8x64"), ("dropout1", "lstm2", "8x64"),
        ("lstm2", "fc1", "64"), ("fc1", "out1", "16")]
    assert "compound" not in draw.graph(net).source
    nodes, edges = parse(draw.graph(net, unroll=3).source)
    for name in ("input", "dropout1", "fc1", "out1"):
        assert nodes[name] == plain_nodes[name]
    assert "lstm1" not in nodes and "lstm2" not in nodes
    outer = [(a, b, e["label"]) for a, b, e in edges if "/" not in a + b or "lhead" in e
             or "ltail" in e]
    assert outer == [("input", "lstm1/x1", "8x8"), ("lstm1/h8", "dropout1", "8x64"),
                     ("dropout1", "lstm2/x1", "8x64"), ("lstm2/h8", "fc1", "64"),
                     ("fc1", "out1", "16")]


def test_a_recurrent_layer_in_a_block_unrolls_inside_the_block_cluster():
    spec = "input seq 5x3\nblock enc(h) = GRU h return=seq - RNN h\nenc(6) - OUT 2 softmax"
    source = draw.graph(netc.compile(spec), unroll=2).source
    assert re.search(r'subgraph cluster_enc1 \{.*subgraph "cluster_enc1.gru1" \{', source, re.S)
    nodes, _ = parse(source)
    assert cells(nodes, "enc1.gru1") == ["GRU t=1", "GRU t=5"]
    assert cells(nodes, "enc1.rnn1") == ["RNN t=1", "RNN t=5"]
    # folded by depth=1, the block stays one box
    nodes, _ = parse(draw.graph(netc.compile(spec), depth=1, unroll=2).source)
    assert nodes["enc1"]["label"] == "enc(6)\n282 params"  # the call, as the spec writes it
    assert not any("/" in n for n in nodes)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt", ["svg", "png", "dot"])
def test_the_command_writes_the_unrolled_picture(capsys, tmp_path, fmt):
    if fmt != "dot" and shutil.which("dot") is None:
        pytest.skip("Graphviz dot is not installed")
    spec = tmp_path / "seq.net"
    spec.write_text(SEQTEST)
    out = tmp_path / f"seq.{fmt}"
    assert run(capsys, "draw", str(spec), "-o", str(out), "--unroll", "4") == (0, "", "")
    data = out.read_bytes()
    assert data.startswith({"svg": b"<?xml", "png": b"\x89PNG", "dot": b"digraph"}[fmt])
    if fmt != "png":
        text = data.decode()
        assert text.count("LSTM t=") == 12 and "one set of weights for every step" in text
    assert not (tmp_path / f"seq.{fmt}.tmp").exists()


@pytest.mark.parametrize("k", ["1", "0", "-3", "65"])
def test_unroll_out_of_range_is_an_error(capsys, tmp_path, k):
    spec = tmp_path / "seq.net"
    spec.write_text(SEQTEST)
    out = tmp_path / "x.dot"
    code, _, err = run(capsys, "draw", str(spec), "-o", str(out), f"--unroll={k}")
    assert code == 2 and not out.exists() and "Traceback" not in err
    assert "needs 2 <= K <= 64 (a step and the next" in err and f"received {k}" in err
    assert "e.g. --unroll 4" in err


def test_unroll_needs_an_integer(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["draw", "-", "-o", str(tmp_path / "x.dot"), "--unroll", "four"])
    assert e.value.code == 2 and "invalid int value: 'four'" in capsys.readouterr().err


def test_unroll_without_a_recurrent_layer_is_an_error(capsys, spec_path, tmp_path):
    out = tmp_path / "x.svg"
    code, _, err = run(capsys, "draw", spec_path("lenet5"), "-o", str(out), "--unroll", "4")
    assert code == 2 and not out.exists()
    assert "--unroll applies to RNN/LSTM/GRU layers, and network LeNet5 has none" in err
    assert "hint: draw it without --unroll" in err


def test_python_api_checks_unroll_the_same_way():
    net = netc.compile(SEQTEST)
    for bad in (1, True, 2.0, "4"):
        with pytest.raises(netc.NetcError, match="needs 2 <= K <= 64"):
            draw.graph(net, unroll=bad)
    with pytest.raises(netc.NetcError, match="has none"):
        draw.graph(netc.compile("input 8\nFC 2"), unroll=2)
    assert draw.graph(net, unroll=2).source.count("LSTM t=") == 6  # 1, "…", 8 in three rows
