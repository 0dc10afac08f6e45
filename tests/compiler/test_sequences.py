"""Sequences (`input seq TxD`) and the recurrent kinds RNN, LSTM, GRU: their accounting against
the formulas (PyTorch's parameters, MACs per sequence, what backpropagation through time keeps)
and every mistake reported with its line and column."""
import json

import pytest

import netc
from netc.compiler import report
from netc.dsl import ShapeError, SpecError

from .test_errors import points_at

GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}
# values per unit and step that BPTT keeps (gates and states): RNN h; LSTM i, f, g, o, c, h;
# GRU r, z, n, W_hn h + b_hn, h
KEPT = {"RNN": 1, "LSTM": 6, "GRU": 5}


def layer(text, name):
    return netc.compile(text).node(name)


@pytest.mark.parametrize("kind", sorted(GATES))
@pytest.mark.parametrize("t,d,h", [(8, 8, 64), (5, 3, 7), (1, 1, 1)])
def test_parameters_and_macs_follow_the_formulas(kind, t, d, h):
    """G·(H·D + H·H + 2H) parameters, T·G·H·(D + H) MACs, PyTorch's names and layouts."""
    g = GATES[kind]
    n = layer(f"input seq {t}x{d}\n{kind} {h}", kind.lower() + "1")
    assert n.param_count == g * (h * d + h * h + 2 * h)
    assert n.params == {"weight_ih": (g * h, d), "weight_hh": (g * h, h),
                        "bias_ih": (g * h,), "bias_hh": (g * h,)}
    assert n.macs == t * g * h * (d + h)
    assert n.out_shape == (h,)
    assert n.kept == t * h * KEPT[kind]


@pytest.mark.parametrize("kind", sorted(GATES))
def test_bidir_doubles_everything_and_names_the_reverse_direction(kind):
    g, (t, d, h) = GATES[kind], (6, 5, 4)
    one = layer(f"input seq {t}x{d}\n{kind} {h}", kind.lower() + "1")
    two = layer(f"input seq {t}x{d}\n{kind} {h} bidir=true", kind.lower() + "1")
    assert two.param_count == 2 * g * (h * d + h * h + 2 * h) == 2 * one.param_count
    assert two.macs == 2 * t * g * h * (d + h)
    assert two.kept == 2 * one.kept
    assert two.params == {**one.params, "weight_ih_reverse": (g * h, d),
                          "weight_hh_reverse": (g * h, h), "bias_ih_reverse": (g * h,),
                          "bias_hh_reverse": (g * h,)}
    assert two.out_shape == (2 * h,)  # PyTorch's h_n: forward at step T, reverse at step 1
    seq = layer(f"input seq {t}x{d}\n{kind} {h} bidir=true return=seq", kind.lower() + "1")
    assert seq.out_shape == (t, 2 * h)


@pytest.mark.parametrize("kind", sorted(GATES))
def test_bias_false_drops_both_biases(kind):
    g, (t, d, h) = GATES[kind], (3, 5, 4)
    n = layer(f"input seq {t}x{d}\n{kind} {h} bias=false bidir=true", kind.lower() + "1")
    assert n.param_count == 2 * g * (h * d + h * h)
    assert set(n.params) == {"weight_ih", "weight_hh", "weight_ih_reverse", "weight_hh_reverse"}
    assert n.macs == 2 * t * g * h * (d + h)  # the biases are additions, not multiply-adds


def test_return_seq_gives_every_step_and_stacks():
    """LSTM 64 return=seq - LSTM 32: the second reads 8 steps of 64."""
    net = netc.compile("input seq 8x8\nLSTM 64 return=seq - DROPOUT 0.2 - LSTM 32")
    assert [n.out_shape for n in net.nodes] == [(8, 8), (8, 64), (8, 64), (32,)]
    second = net.node("lstm2")
    assert second.in_shapes == ((8, 64),)
    assert second.params["weight_ih"] == (4 * 32, 64)
    assert second.macs == 8 * 4 * 32 * (64 + 32)


@pytest.mark.parametrize("kind", ["FC", "OUT"])
def test_fc_and_out_apply_per_step(kind):
    """On T x H, FC and OUT are the same Linear at every step: weight units x H, T·H·units MACs,
    T x units out."""
    t, h, units = 7, 12, 5
    n = layer(f"input seq {t}x3\nGRU {h} return=seq - {kind} {units}", kind.lower() + "1")
    assert n.params == {"weight": (units, h), "bias": (units,)}
    assert n.macs == t * h * units
    assert n.out_shape == (t, units)


def test_the_lecture_example_adds_up():
    """The README's SeqTest: 18,944 + 25,088 + 1,040 + 170 parameters."""
    net = netc.compile("network SeqTest\ninput seq 8x8\nLSTM 64 return=seq - DROPOUT 0.2 - "
                       "LSTM 32 bidir=true - FC 16 act=relu - OUT 10 softmax")
    assert [n.param_count for n in net.nodes] == [0, 18_944, 0, 25_088, 1_040, 170]
    assert net.total_params == 45_242
    assert net.total_macs == 8 * 4 * 64 * (8 + 64) + 2 * 8 * 4 * 32 * (64 + 32) + 64 * 16 + 160
    assert net.output_shape == (10,)
    text = report.summary(net)
    assert text.splitlines()[0] == "network SeqTest: input seq 8x8"
    row = next(line for line in text.splitlines() if line.startswith("lstm1 "))
    assert row.split()[1:] == ["LSTM", "64", "seq", "8x64", "18,944", "147,456", "512", "-"]


@pytest.mark.parametrize("batch", [1, 32])
def test_training_memory_counts_what_bptt_keeps(batch):
    """The training estimate grows by batch · kept · 4 bytes over the outputs alone."""
    net = netc.compile("input seq 10x6\nLSTM 16 return=seq - GRU 8 bidir=true return=seq - "
                       "RNN 4 - OUT 2")
    kept = 10 * 16 * 6 + 2 * 10 * 8 * 5 + 10 * 4 * 1
    assert net.kept_count == kept
    with_kept = report.memory(net, batch)
    for n in net.nodes:
        n.kept = 0
    without = report.memory(net, batch)
    assert with_kept["training"] - without["training"] == batch * kept * 4
    assert with_kept["activations"] - without["activations"] == batch * kept * 4


def test_json_reports_what_each_layer_keeps_for_backward():
    net = netc.compile("input seq 5x3\nLSTM 4 return=seq - FC 2")
    doc = json.loads(json.dumps(report.to_json(net)))
    assert doc["input_shape"] == [5, 3]
    kept = {layer["name"]: layer["kept_for_backward"] for layer in doc["layers"]}
    assert kept == {"input": 0, "lstm1": 5 * 4 * 6, "fc1": 0}
    assert doc["layers"][1]["output_shape"] == [5, 4]
    assert doc["layers"][1]["param_shapes"]["lstm1.weight_hh"] == [16, 4]


@pytest.mark.parametrize("text,line,col,cls,words,hint", [
    ("input 8x8x1\nLSTM 4", 2, 1, ShapeError,
     "LSTM needs a sequence (T steps x D features) but its input is an image of 8x8x1",
     "input seq TxD"),
    ("input 16\nLSTM 4", 2, 1, ShapeError, "LSTM needs a sequence", "return=seq"),
    ("input seq 8x8\nLSTM 4 return=seq - GAP", 2, 21, ShapeError,
     "GAP needs an image (C x H x W) but its input is a sequence of 8 steps of 4 (made by "
     "lstm1, LSTM)", "return=last"),
    ("input seq 8x8\nLSTM 4 return=sq", 2, 8, SpecError, "`return` must be one of last, seq",
     "did you mean return=seq"),
    ("input seq 8x8\nLSTM 4 retrun=seq", 2, 8, SpecError, "LSTM has no argument `retrun`",
     "did you mean `return`"),
    ("input sq 8x8\nLSTM 4", 1, 7, SpecError, "the only word `input` takes is `seq`",
     "input seq TxD"),
    ("input seq 8x8x2\nLSTM 4", 1, 11, SpecError, "a sequence input is T steps of D features",
     "input seq 8x8"),
    ("input seq 8x8\nBN", 2, 1, ShapeError, "BN does not take a sequence (T x D)", "FLATTEN"),
    ("input seq 8x8\nLSTM 4 return=seq - BN", 2, 21, ShapeError, "BN does not take a sequence",
     None),
    ("input seq 8x8\nCONV 3x3 4", 2, 1, ShapeError, "CONV needs an image (C x H x W)", None),
    ("input seq 8x8\nSOFTMAX", 2, 1, ShapeError, "SOFTMAX does not take a sequence",
     "OUT K softmax"),
    ("input seq 8x8\nLSTM return=seq", 2, 1, SpecError, "LSTM needs the hidden size",
     "LSTM 64"),
    ("input seq 8x8\nLSTM 4 forget_bias=1 bias=false", 2, 8, SpecError,
     "forget_bias sets a bias, and this LSTM has bias=false", "remove one"),
    ("input seq 8x8\nGRU 4 forget_bias=1", 2, 7, SpecError, "GRU has no argument `forget_bias`",
     None),
])
def test_sequence_mistakes(text, line, col, cls, words, hint):
    with pytest.raises(cls) as e:
        netc.compile(text)
    points_at(e.value, text, line, col, words, hint)


@pytest.mark.parametrize("layer,gates", [("LSTM 32 bidir=true", "ifgo"), ("GRU 16", "rzn"),
                                         ("LSTM 8 bias=false return=seq", "ifgo")])
def test_each_gate_has_its_counts_in_the_summary_and_json(layer, gates):
    """The lecture's per-gate counts: H(D + H) + 2H parameters and T H (D + H) MACs per gate and
    direction, which add up to the layer's."""
    net = netc.compile(f"input seq 8x12\n{layer} name=r - OUT 2")
    node = net.node("r")
    parts = report.to_json(net)["layers"][1]["parts"]
    assert [p["part"] for p in parts] == [f"gate {g}" for g in gates]
    hid, dirs, bias = node.hyper["units"], 2 if node.hyper["bidir"] else 1, node.hyper["bias"]
    for p in parts:
        assert p["params"] == dirs * (hid * (12 + hid) + (2 * hid if bias else 0))
        assert p["macs"] == dirs * 8 * hid * (12 + hid)
    assert sum(p["params"] for p in parts) == node.param_count
    assert sum(p["macs"] for p in parts) == node.macs
    text = report.summary(net)
    for p in parts:
        assert any(line.split()[:2] == p["part"].split() and f"{p['params']:,}" in line
                   for line in text.splitlines())


def test_a_plain_rnn_has_no_gate_rows():
    net = netc.compile("input seq 8x12\nRNN 16 - OUT 2")
    assert report.to_json(net)["layers"][1]["parts"] == []
    assert "gate" not in report.summary(net)
