"""The summary table and the JSON document: fitting a width, folding, frozen layers, units, joins."""
import json

import pytest

import netc
from netc.compiler import report, table

FROZEN = "input 32x32x3\nCONV 3x3 16 - BN - POOL - FC 10\ntrain freeze=[conv1]\n"


@pytest.fixture(scope="module")
def zoo():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = netc.compile(f"specs/{name}.net")
        return cache[name]
    return get


@pytest.mark.parametrize("name,depth", [("resnet50", None), ("googlenet", None),
                                        ("densenet121", 1), ("vgg16", None), ("lenet5", None)])
@pytest.mark.parametrize("width", [60, 80, 100])
def test_every_line_fits_the_width(zoo, name, depth, width):
    text = report.summary(zoo(name), depth=depth, width=width)
    assert max(len(line) for line in text.splitlines()) <= width, text


def test_columns_are_left_out_last_resort_first_and_said(zoo):
    full = report.summary(zoo("vgg16"))
    assert "not shown" not in full and " RF" in full.splitlines()[2]
    narrow = report.summary(zoo("vgg16"), width=80)
    head = narrow.splitlines()[2].split()
    assert head[:5] == ["layer", "kind", "output", "params", "MACs"] and "RF" not in head
    note = next(line for line in narrow.splitlines() if line.startswith("not shown"))
    assert "activations, RF" in note and "--width 0" in note
    assert report.summary(zoo("vgg16"), width=0) == full


def test_long_names_wrap_at_their_dots_and_read_back(zoo):
    net = zoo("googlenet")
    lines = report.summary(net, width=60).splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("inception3a."))
    first, second = lines[i].split()[0], lines[i + 1].split()[0]
    assert first.endswith(".") and "inception3a.concat1.b1.bc1.conv1".startswith(first + second)
    assert table.wrap_cell("inception3a.concat1.b1.bc1.conv1", 12, ".") == [
        "inception3a.", "concat1.b1.", "bc1.conv1"]
    assert table.wrap_cell("CONV 3x3/2 64 pad=1", 10, " ") == ["CONV 3x3/2", "64 pad=1"]
    assert table.wrap_cell("abcdefghij", 4, ".") == ["abcd", "efgh", "ij"]


def test_the_footer_wraps_under_its_labels(zoo):
    lines = report.summary(zoo("resnet50"), width=72).splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("training estimate"))
    assert lines[i + 1].startswith(" " * 20) and lines[i + 1][20] != " "


def test_frozen_layers_are_not_trainable_and_cost_no_gradients():
    net = netc.compile(FROZEN)
    plain = netc.compile(FROZEN.replace("train freeze=[conv1]\n", ""))
    conv1 = net.node("conv1").param_count
    text = report.summary(net, optimizer="adam")
    assert f"trainable params    {net.total_params - conv1:>16,}" in text
    assert f"non-trainable params{conv1:>16,}  (frozen by freeze=[conv1]: 1 layer)" in text
    assert "non-trainable" not in report.summary(plain)
    saved = report.memory(plain, 1, "adam")["training"] - report.memory(net, 1, "adam")["training"]
    assert saved == conv1 * 4 * (1 + 2)  # its gradient and adam's two moments
    doc = report.to_json(net)
    assert doc["non_trainable_params"] == conv1 and doc["frozen"] == ["conv1"]


def test_running_statistics_only_where_there_are_some(zoo):
    assert "running statistics" not in report.summary(zoo("vgg16"))
    assert "running statistics            53,120" in report.summary(zoo("resnet50"))


def test_memory_units_are_unmistakable(zoo):
    text = report.summary(zoo("resnet50"))
    line = next(s for s in text.splitlines() if s.startswith("memory"))
    assert "parameters 97.69 MiB (102.44 MB)" in line  # (25,557,032 + 53,120) x 4 bytes
    assert report.both_bytes(100) == "100 B" and report.both_bytes(2**20) == "1.00 MiB (1.05 MB)"
    mem = report.to_json(zoo("resnet50"))["memory"]
    assert mem["unit"] == "bytes" and mem["parameters"] == 25_557_032 * 4


def test_joins_name_what_they_join(zoo):
    g = zoo("googlenet")
    row = next(r for r in report.rows(g) if r["name"] == "inception3a.concat1.concat1")
    assert row["label"] == "CONCAT (b1, b2, b3, b4)"
    folded = next(r for r in report.rows(g, depth=1) if r["name"] == "inception3a")
    assert folded["label"] == "inception(64, 96, 128, 16, 32, 32) [20 layers]"
    assert "CONCAT (b1, b2, b3, b4)" in report.summary(g, depth=2)
    inner = next(r for r in report.rows(g, depth=2) if r["name"] == "inception3a.concat1")
    assert inner["label"] == "[20 layers] CONCAT (b1, b2, b3, b4)"
    dense = report.rows(zoo("densenet121"), depth=1)
    assert [r["label"] for r in dense if r["name"] in ("layer1", "layer2")] == [
        "layer() [7 layers]", "layer() [7 layers]"]
    inner = report.rows(zoo("densenet121"), depth=2)
    assert [r["label"] for r in inner if r["name"] in ("layer1.dense1", "layer2.dense1")] == [
        "[7 layers] CONCAT (pool1, conv2)", "[7 layers] CONCAT (layer1.dense1, conv2)"]
    res = next(r for r in report.rows(zoo("resnet50")) if r["name"] == "bottleneck1.res1.add1")
    assert res["label"] == "ADD relu (bn3, proj_bn1)"


def test_json_folds_as_the_table_does(zoo):
    net = zoo("resnet50")
    full, folded = report.to_json(net), report.to_json(net, depth=1)
    assert len(folded["layers"]) == len(report.rows(net, depth=1)) < len(full["layers"])
    assert [e["name"] for e in folded["layers"]] == [r["name"] for r in report.rows(net, depth=1)]
    for key in ("total_params", "total_macs", "activation_count", "memory"):
        assert folded[key] == full[key]
    for key in ("params", "macs", "flops", "activations", "buffers"):
        assert sum(e[key] for e in folded["layers"]) == sum(e[key] for e in full["layers"])
    block = next(e for e in folded["layers"] if e["name"] == "bottleneck2")
    assert block["kind"] == "BLOCK" and block["inputs"] == ["bottleneck1"]
    assert block["folded"][0] == "bottleneck2.res1.conv1" and len(block["folded"]) == 9
    seen = set()
    for entry in folded["layers"]:  # still topological, by the entries' own names
        assert set(entry["inputs"]) <= seen
        seen.add(entry["name"])
    assert json.loads(json.dumps(folded))["depth"] == 1
