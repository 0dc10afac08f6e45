"""Shapes and counts of random chains against an independent calculation; the JSON schema."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netc
from netc.compiler import report
from netc.dsl import ShapeError

conv = st.tuples(st.just("CONV"), st.integers(1, 5), st.integers(1, 3), st.integers(0, 2),
                 st.integers(1, 6), st.sampled_from([1, 2]))
pool = st.tuples(st.just("POOL"), st.integers(1, 3), st.integers(1, 3), st.just(0),
                 st.just(0), st.just(1))


def expected(h, w, c, layers, fc):
    """The lecture's formulas, written out independently of the compiler."""
    params = macs = 0
    acts = h * w * c
    for kind, k, s, p, f, g in layers:
        span = h + 2 * p
        if span < k:
            return None
        if kind == "CONV":
            if (span - k) % s > p:  # real pixels no window would see: a stride that does not fit
                return None
            if c % g or f % g:
                return None
        h = w = (span - k) // s + 1
        if kind == "CONV":
            params += (k * k * c // g + 1) * f
            macs += h * w * f * k * k * c // g
            c = f
        acts += h * w * c
    params += (h * w * c + 1) * fc
    macs += h * w * c * fc
    acts += fc
    return (c, h, w), params, macs, acts


@settings(max_examples=150, deadline=None)
@given(st.integers(4, 20), st.integers(1, 4), st.lists(st.one_of(conv, pool), min_size=1, max_size=5),
       st.integers(1, 12))
def test_random_chains_match_the_formulas(size, channels, layers, fc):
    parts = []
    for kind, k, s, p, f, g in layers:
        if kind == "CONV":
            parts.append(f"CONV {k}x{k}/{s} {f} pad={p} groups={g}")
        else:
            parts.append(f"POOL max {k}x{k}/{s}")
    text = f"input {size}x{size}x{channels}\n" + " - ".join(parts) + f" - FC {fc}\n"
    want = expected(size, size, channels, layers, fc)
    if want is None:
        with pytest.raises(netc.SpecError):
            netc.compile(text)
        return
    net = netc.compile(text)
    shape, params, macs, acts = want
    assert net.nodes[-2].out_shape == shape
    assert (net.total_params, net.total_macs, net.activation_count) == (params, macs, acts)


def test_receptive_field_and_jump():
    net = netc.compile("input 32x32x1\nCONV 3x3 4 - POOL max 2x2/2 - CONV 3x3 4 - CONV 5x5/2 4 round=floor")
    rf = [n.receptive_field for n in net.nodes]
    jump = [n.jump for n in net.nodes]
    assert rf == [(1, 1), (3, 3), (4, 4), (8, 8), (16, 16)]
    assert jump == [(1, 1), (1, 1), (2, 2), (2, 2), (4, 4)]


def test_vector_networks_have_no_receptive_field():
    net = netc.compile("input 10\nFC 4 - OUT 2")
    assert all(n.receptive_field is None for n in net.nodes)


def test_fused_activation_is_counted_once():
    fused = netc.compile("input 8x8x1\nCONV 3x3 4 act=relu")
    apart = netc.compile("input 8x8x1\nCONV 3x3 4 - RELU")
    assert fused.activation_count == 64 + 6 * 6 * 4
    assert apart.activation_count == 64 + 2 * 6 * 6 * 4


def test_bn_and_prelu_params():
    net = netc.compile("input 8x8x3\nCONV 3x3 4 bias=false - BN - PRELU")
    assert net.node("conv1").params == {"weight": (4, 3, 3, 3)}
    assert net.node("bn1").params == {"weight": (4,), "bias": (4,)}
    assert net.node("bn1").buffers == {"running_mean": (4,), "running_var": (4,)}
    assert net.node("prelu1").params == {"weight": (4,)}
    assert net.total_params == 108 + 8 + 4 and net.buffer_count == 8


def test_user_names_key_parameters():
    net = netc.compile("input 8\nFC 4 name=hidden - OUT 2 name=out")
    assert list(net.param_shapes()) == ["hidden.weight", "hidden.bias", "out.weight", "out.bias"]


def test_pad_same_keeps_size_and_halves_with_stride():
    net = netc.compile("input 7x7x1\nCONV 3x3 2 pad=same - CONV 3x3/2 2 pad=same")
    assert [n.out_shape for n in net.nodes[1:]] == [(2, 7, 7), (2, 4, 4)]


def test_pad_full_and_valid():
    net = netc.compile("input 5x5x1\nCONV 3x3 1 pad=full - CONV 3x3 1 pad=valid")
    assert [n.out_shape[1] for n in net.nodes[1:]] == [7, 5]


def test_avg_pool_ceil_mode_like_pytorch():
    # PyTorch: MaxPool2d(3, 2, ceil_mode=True) on 112 -> 56; MaxPool2d(3, 3, 1, ceil_mode=True) on 5
    # -> 2: a third window would start inside the right padding and is dropped
    assert netc.compile("input 112x112x1\nPOOL max 3x3/2 round=ceil").output_shape == (1, 56, 56)
    assert netc.compile("input 14x14x1\nPOOL max 3x3/2 pad=1 round=ceil").output_shape == (1, 8, 8)
    assert netc.compile("input 5x5x1\nPOOL max 3x3/3 pad=1 round=ceil").output_shape == (1, 2, 2)


def test_memory_estimate():
    net = netc.compile("input 4\nFC 3")
    mem = report.memory(net, batch=2, optimizer="adam")
    assert mem["parameters"] == 15 * 4 and mem["gradients"] == 15 * 4
    assert mem["optimizer_state"] == 2 * 15 * 4
    assert mem["activations"] == 2 * 7 * 4
    assert mem["training"] == 15 * 4 * 4 + 2 * 7 * 4 + 2 * 2 * 4 * 4


def test_json_schema(spec_path):
    net = netc.compile(spec_path("resnet18"))
    doc = report.to_json(net, batch=8)
    assert {"network", "input_shape", "layers", "total_params", "trainable_params", "total_macs",
            "activation_count", "memory"} <= set(doc)
    assert doc["input_shape"] == [3, 224, 224]
    keys = {"name", "path", "kind", "inputs", "output_shape", "params", "trainable_params", "macs",
            "activations", "receptive_field", "jump", "hyper"}
    for layer in doc["layers"]:
        assert keys <= set(layer)
    assert doc["layers"][-1]["name"] == net.output and doc["layers"][-1]["output_shape"] == [1000]
    seen = set()
    for layer in doc["layers"]:  # topological: every input appears before its user
        assert set(layer["inputs"]) <= seen
        seen.add(layer["name"])
    assert sum(x["params"] for x in doc["layers"]) == doc["total_params"] == 11_689_512
    assert doc["memory"]["batch"] == 8
    assert math.isclose(doc["memory"]["activations"], 8 * 4 * doc["activation_count"])


def test_shape_error_is_a_spec_error():
    with pytest.raises(ShapeError):
        netc.compile("input 3x3x1\nCONV 5x5 2")
