"""ONNX import: files PyTorch's exporter wrote for torchvision-style networks (tests/data/onnx/,
made by tests/data/make_onnx.py) read into lecture notation, with the original's totals, netc's
forward pass equal to onnxruntime's, and the same outputs exported again; small graphs built
here for LRN, MatMul + Add, Mean and the errors; full-size networks exported live where torch
is installed."""
import json
import os

import numpy as np
import pytest

import netc
from netc.compiler.interop import ir, onnx_import, write
from netc.compiler.interop.ir import InteropError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "onnx")
FIXTURES = ("vgg", "resnet18", "googlenet", "densenet", "ops")
with open(os.path.join(DATA, "counts.json")) as f:
    COUNTS = json.load(f)


def imported(path):
    return write.write(onnx_import.read(path))


def netc_forward(written, x):
    """netc's forward pass of an imported network, its normalization applied first."""
    model = netc.Model(written.text)
    model.load_state({k: v for k, v in written.arrays.items() if not k.startswith("__")})
    if "__netc_norm_mean__" in written.arrays:
        x = (x - written.arrays["__netc_norm_mean__"]) / written.arrays["__netc_norm_std__"]
    return model.forward(x.astype(np.float32))


def ort_forward(path_or_proto, x):
    data = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def sample(shape, n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n,) + tuple(shape)).astype(np.float32)


@pytest.fixture(scope="module", params=FIXTURES)
def fixture(request):
    path = os.path.join(DATA, f"{request.param}.onnx")
    return request.param, path, imported(path)


def test_totals_equal_the_originals(fixture):
    name, _, written = fixture
    net = netc.compile(written.text)
    assert (net.total_params, net.total_macs) == (COUNTS[name]["params"], COUNTS[name]["macs"])


def test_forward_equals_onnxruntime(fixture):
    _, path, written = fixture
    x = sample((3, 32, 32))
    np.testing.assert_allclose(netc_forward(written, x), ort_forward(path, x),
                               rtol=1e-5, atol=1e-5)


def test_exported_again_gives_the_same_outputs(fixture, tmp_path):
    onnx_export = pytest.importorskip("netc.compiler.interop.onnx_export")
    _, path, written = fixture
    arrays = {k: v for k, v in written.arrays.items() if not k.startswith("__")}
    out = str(tmp_path / "again.onnx")
    onnx_export.export(netc.compile(written.text), arrays, out,
                       mean=written.arrays.get("__netc_norm_mean__"),
                       std=written.arrays.get("__netc_norm_std__"))
    x = sample((3, 32, 32), seed=1)
    np.testing.assert_allclose(ort_forward(out, x), ort_forward(path, x), rtol=1e-5, atol=1e-5)
    # and imported once more, the same spec
    assert imported(out).text.split("\n", 1)[1] == written.text.split("\n", 1)[1]


def test_resnet18_reads_as_the_lecture_writes_it():
    text = imported(os.path.join(DATA, "resnet18.onnx")).text
    assert "block res(c, s=1) = RES[CONV 3x3/s c - BN - RELU - CONV 3x3 c - BN]" in text
    assert "CONV: pad=same bias=false" in text
    assert "res(8) x2 - res(16, s=2) - res(16) -" in text
    assert "GAP - OUT 10" in text
    assert len(text.strip().splitlines()) <= 10
    assert max(len(line) for line in text.splitlines()) <= 100


def test_vgg_and_inception_read_as_the_lecture_writes_them():
    vgg = imported(os.path.join(DATA, "vgg.onnx")).text
    assert "CONV: 3x3 pad=same act=relu" in vgg and "FC: act=relu" in vgg
    assert "CONV 8 x2 - POOL max 2x2/2 - CONV 16 x2" in vgg and "OUT 10 softmax" in vgg
    google = imported(os.path.join(DATA, "googlenet.onnx")).text
    assert "BN: eps=0.001" in google
    assert "block inception(" in google and "= CONCAT[\n" in google
    assert "inception(8, 12, 16, 4, 8) - inception(16, 16, 24, 8, 12)" in google
    dense = imported(os.path.join(DATA, "densenet.onnx")).text
    assert "dense() x3" in dense and "block dense() = DENSE[BN - RELU - CONV 1x1 16" in dense


def test_fused_activations_and_the_other_operators():
    written = imported(os.path.join(DATA, "ops.onnx"))
    text = written.text
    for part in ("CONV 3x3/2 8 act=leaky", "DECONV 4x4/2 8 pad=1 act=prelu", "LEAKY 0.2",
                 "POOL avg 3x3/2 pad=1", "UPSAMPLE 2 nearest", "groups=2", "IN - ELU 0.5",
                 "CONV 1x1/2 4 act=tanh", "UPSAMPLE 2 bilinear", "OUT 6 sigmoid"):
        assert part in text
    np.testing.assert_allclose(written.arrays["__netc_norm_mean__"].ravel(), [0.5, 0.4, 0.3])
    np.testing.assert_allclose(written.arrays["__netc_norm_std__"].ravel(), [0.2, 0.25, 0.3])


def test_checkpoint_loads_with_netc_model(tmp_path):
    written = imported(os.path.join(DATA, "resnet18.onnx"))
    model = netc.Model(written.text)
    arrays = {k: v for k, v in written.arrays.items() if not k.startswith("__")}
    assert set(arrays) == set(model.state())
    model.load_state(arrays)
    assert "res3.res1.proj1.weight" in arrays and "res3.res1.proj_bn1.running_var" in arrays
    path = model.save(str(tmp_path / "m.npz"))
    again = netc.Model.load(path)
    np.testing.assert_array_equal(again.params["res3.res1.conv1.weight"],
                                  arrays["res3.res1.conv1.weight"])


# ---- graphs built here ------------------------------------------------------------------------
def graph_model(nodes, inits, x_shape, y_shape, opset=17):
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()]
    g = helper.make_graph(nodes, "built", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         ["N", *x_shape])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *y_shape])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def save(model, tmp_path, name="m.onnx"):
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


def test_lrn_matmul_add_and_mean(tmp_path):
    rng = np.random.default_rng(0)
    inits = {"w": rng.normal(size=(4, 3, 3, 3)), "a": rng.normal(size=(4, 3, 1, 1)),
             "m": rng.normal(size=(64, 5)), "b": rng.normal(size=5)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("LRN", ["c"], ["l"], size=3, alpha=1e-2, beta=0.75, bias=2.0),
             helper.make_node("Conv", ["x", "a"], ["d"], name="side"),
             helper.make_node("Mean", ["l", "d"], ["e"]),
             helper.make_node("Relu", ["e"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("MatMul", ["f", "m"], ["g"]),
             helper.make_node("Add", ["g", "b"], ["y"])]
    path = save(graph_model(nodes, inits, (3, 4, 4), (5,)), tmp_path)
    written = imported(path)
    assert "MEAN[CONV 3x3 4 - LRN 3 alpha=0.01 | CONV 1x1 4] - RELU - OUT 5" in \
        written.text
    x = sample((3, 4, 4))
    np.testing.assert_allclose(netc_forward(written, x), ort_forward(path, x), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("raw, listed", [(True, False), (False, False), (True, True)],
                         ids=["raw_data", "float_data", "an_input_too"])
def test_large_weights_survive_the_shape_inference(tmp_path, raw, listed):
    """Shape inference runs on a light copy of the model whose large initializers are graph
    inputs of their dims (also where the graph lists them as inputs, as IR 3 did): their
    shapes follow, and the model itself is left as it was (raw_data or float_data, bit for
    bit); the weights read back are the file's."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 300)).astype(np.float32)  # 19200 values: over BIG_TENSOR
    assert w.size > onnx_import.BIG_TENSOR
    tensor = (numpy_helper.from_array(w, "m") if raw else
              helper.make_tensor("m", TensorProto.FLOAT, w.shape, w.reshape(-1).tolist()))
    assert tensor.HasField("raw_data") == raw
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 4])]
    if listed:
        inputs.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, [64, 300]))
    g = helper.make_graph([helper.make_node("Flatten", ["x"], ["f"]),
                           helper.make_node("MatMul", ["f", "m"], ["y"])], "built", inputs,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [tensor])  # (y's shape: inferred from m's)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    before = model.SerializeToString()
    shapes = onnx_import._shapes(onnx, model)
    assert shapes["y"] == (None, 300) and shapes["f"] == (None, 64)
    assert model.SerializeToString() == before  # left as it was
    (after,) = model.graph.initializer
    assert after.HasField("raw_data") == raw
    np.testing.assert_array_equal(numpy_helper.to_array(after), w)
    path = save(model, tmp_path)
    written = imported(path)
    (weight,) = [v for k, v in written.arrays.items() if k.endswith(".weight")]
    np.testing.assert_array_equal(weight, w.T)
    x = sample((4, 4, 4))
    np.testing.assert_allclose(netc_forward(written, x), ort_forward(path, x), rtol=1e-5,
                               atol=1e-5)


def test_every_unsupported_operator_in_one_error(tmp_path):
    nodes = [helper.make_node("Hardmax", ["x"], ["p"], name="t1"),
             helper.make_node("GlobalMaxPool", ["p"], ["q"], name="gmp"),
             helper.make_node("Relu", ["q"], ["r"]),
             helper.make_node("Hardmax", ["r"], ["y"], name="t2")]
    with pytest.raises(InteropError) as e:
        onnx_import.read(save(graph_model(nodes, {}, (3, 4, 4), (3, 1, 1)), tmp_path))
    assert "2 operator type(s)" in e.value.message
    assert "Hardmax (2x, first 't1')" in e.value.message
    assert "GlobalMaxPool (1x, first 'gmp')" in e.value.message


@pytest.mark.parametrize("attrs, needle", [
    ({"pads": [0, 0, 1, 1]}, "asymmetric pads"),
    ({"dilations": [2, 2]}, "dilated"),
])
def test_convolutions_netc_cannot_express(tmp_path, attrs, needle):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="c", **attrs)]
    model = graph_model(nodes, {"w": np.ones((2, 3, 3, 3))}, (3, 6, 6), (2, 4, 4))
    with pytest.raises(InteropError, match=needle) as e:
        onnx_import.read(save(model, tmp_path))
    assert "node 'c' (Conv)" in e.value.message


def test_average_pool_without_the_padding_in_its_count(tmp_path):
    nodes = [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1] * 4,
                              name="ap")]
    with pytest.raises(InteropError, match="count_include_pad"):
        onnx_import.read(save(graph_model(nodes, {}, (3, 4, 4), (3, 4, 4)), tmp_path))


@pytest.mark.parametrize("attrs, needle", [
    ({"strides": [2, 2], "ceil_mode": 1}, "reaches past the padded input"),
    ({"strides": [2, 2], "pads": [1] * 4, "ceil_mode": 1, "count_include_pad": 1},
     "reaches past the padded input"),
    ({"auto_pad": "SAME_UPPER"}, "count_include_pad"),
])
def test_average_pools_netc_divides_otherwise(tmp_path, attrs, needle):
    """ONNX divides a window by its part inside the (counted) padding, netc by kh*kw."""
    nodes = [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], **attrs)]
    with pytest.raises(InteropError, match=needle):
        onnx_import.read(save(graph_model(nodes, {}, (2, 6, 6), (2, 3, 3)), tmp_path))
    # windows that fit the input: ceil_mode is imported, with onnxruntime's result
    nodes = [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                              ceil_mode=1)]
    path = save(graph_model(nodes, {}, (2, 7, 7), (2, 3, 3)), tmp_path)
    x = sample((2, 7, 7))
    np.testing.assert_allclose(netc_forward(imported(path), x), ort_forward(path, x), rtol=1e-5)


@pytest.mark.parametrize("op, shape", [("Add", (4,)), ("PRelu", (4,)), ("Add", (1, 4, 4))])
def test_constants_onnx_spreads_over_the_width_are_refused(tmp_path, op, shape):
    """A (C,) added to an N x C x H x W image broadcasts over W in ONNX, not over channels."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node(op, ["c", "k"], ["y"])]
    inits = {"w": rng.normal(size=(4, 2, 1, 1)), "k": rng.normal(size=shape)}
    with pytest.raises(InteropError, match="spreads over other axes than the channels"):
        onnx_import.read(save(graph_model(nodes, inits, (2, 4, 4), (4, 4, 4)), tmp_path))


def test_softmax_over_channels_before_opset_13_is_refused(tmp_path):
    nodes = [helper.make_node("Softmax", ["x"], ["y"], axis=1)]
    with pytest.raises(InteropError, match="before opset 13"):
        onnx_import.read(save(graph_model(nodes, {}, (3, 2, 2), (3, 2, 2), opset=11), tmp_path))


def test_upsample_linear_refused_and_resize_by_sizes(tmp_path):
    nodes = [helper.make_node("Upsample", ["x", "s"], ["y"], mode="linear")]
    model = graph_model(nodes, {"s": [1, 1, 2, 2]}, (2, 3, 3), (2, 6, 6), opset=9)
    with pytest.raises(InteropError, match="Upsample mode=linear"):  # "asymmetric" corners
        onnx_import.read(save(model, tmp_path))
    # sizes computed from the dynamic batch: Shape -> Gather -> Concat
    nodes = [helper.make_node("Shape", ["x"], ["sh"]),
             helper.make_node("Gather", ["sh", "i"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["n1", "rest"], ["sizes"], axis=0),
             helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor")]
    model = graph_model(nodes, {}, (2, 3, 3), (2, 6, 6))
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in
                                   (("i", 0), ("ax", [0]), ("rest", [2, 6, 6])))
    path = save(model, tmp_path)
    x = sample((2, 3, 3))
    np.testing.assert_allclose(netc_forward(imported(path), x), ort_forward(path, x))


def test_normalization_divided_before_the_mean_is_taken(tmp_path):
    """x / std - mean (x/255 - 0.5) is (x - mean*std) / std."""
    nodes = [helper.make_node("Div", ["x", "s"], ["d"]), helper.make_node("Sub", ["d", "m"], ["e"]),
             helper.make_node("Relu", ["e"], ["y"])]
    inits = {"s": np.full((3, 1, 1), 4.0), "m": [[[0.5]], [[0.25]], [[-1.0]]]}
    path = save(graph_model(nodes, inits, (3, 2, 2), (3, 2, 2)), tmp_path)
    x = sample((3, 2, 2))
    np.testing.assert_allclose(netc_forward(imported(path), x), ort_forward(path, x), rtol=1e-6)


def test_constants_that_do_not_fold_are_named(tmp_path):
    nodes = [helper.make_node("Gather", ["k", "i"], ["g"], name="bad"),
             helper.make_node("Reshape", ["x", "g"], ["y"])]
    model = graph_model(nodes, {"k": [1.0, 2.0]}, (3,), (3,))
    model.graph.initializer.append(numpy_helper.from_array(np.asarray([5], np.int64), "i"))
    with pytest.raises(InteropError, match="node 'bad' \\(Gather\\): cannot compute it"):
        onnx_import.read(save(model, tmp_path))


def test_a_shortcut_netc_cannot_write_is_named(tmp_path):
    rng = np.random.default_rng(0)
    inits = {"w1": rng.normal(size=(3, 3, 3, 3)), "w2": rng.normal(size=(3, 3, 3, 3))}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1] * 4, name="body"),
             helper.make_node("Conv", ["x", "w2"], ["b"], pads=[1] * 4, name="other"),
             helper.make_node("Add", ["a", "b"], ["y"], name="sum")]
    with pytest.raises(InteropError, match="neither is netc's shortcut") as e:
        imported(save(graph_model(nodes, inits, (3, 4, 4), (3, 4, 4)), tmp_path))
    assert "'sum'" in e.value.message


def test_missing_and_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(InteropError, match="no such ONNX file"):
        onnx_import.read(str(tmp_path / "none.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf \xff\xff\xff")
    with pytest.raises(netc.NetcError, match="not a readable ONNX model|no ONNX graph"):
        onnx_import.read(str(bad))


def test_a_model_in_memory_imports_as_its_file_does(tmp_path):
    """netc.import_model takes the model's bytes or its ModelProto too: the same text but the
    network's name (a generic graph name takes the file's; in memory, "imported"), the same
    arrays; the proto is left as it was; what is not a model is an error that says what is."""
    path = os.path.join(DATA, "resnet18.onnx")
    proto = onnx.load(path)
    assert proto.graph.name in ("main_graph", "torch_jit")  # (PyTorch's)
    before = proto.SerializeToString()
    from_file = netc.import_model(path)
    lines = from_file.text.splitlines()
    assert "network resnet18" in lines
    for source in (before, proto):
        got = netc.import_model(source)
        assert got.text.splitlines() == ["network imported" if x == "network resnet18" else x
                                         for x in lines]
        assert got.arrays.keys() == from_file.arrays.keys()
        for k, v in from_file.arrays.items():
            np.testing.assert_array_equal(got.arrays[k], v, err_msg=k)
    assert proto.SerializeToString() == before
    with pytest.raises(InteropError, match="the ONNX model given \\(9 bytes\\) is not a readable") as e:
        netc.import_model(b"\x08\x07junk\xff\xff\xff")
    assert "SerializeToString()" in e.value.hint
    with pytest.raises(InteropError, match="holds no ONNX graph nodes"):
        netc.import_model(onnx.ModelProto())
    with pytest.raises(InteropError, match="a file's path, its bytes or an onnx.ModelProto; "
                                           "received dict"):
        netc.import_model({"graph": None})
    with pytest.raises(netc.NetcError, match="caffemodel goes with a Caffe .prototxt, not an "
                                             "ONNX model$"):
        netc.import_model(before, caffemodel=str(tmp_path / "w.caffemodel"))
    with pytest.raises(netc.NetcError, match="caffemodel goes with a Caffe .prototxt, not an "
                                             "ONNX file$"):
        netc.import_model(path, caffemodel=str(tmp_path / "w.caffemodel"))


def test_writer_takes_any_ir_network():
    """The writer's contract for other readers (Caffe): no weights at all -> text only."""
    layers = [ir.Layer("c1", "CONV", {"filters": 4, "kernel": (3, 3), "pad": (1, 1)}, ["input"]),
              ir.Layer("r1", "RELU", {}, ["c1"]),
              ir.Layer("p1", "POOL", {"mode": "max", "kernel": (2, 2), "stride": (2, 2)}, ["r1"]),
              ir.Layer("f1", "FC", {"units": 3}, ["p1"]),
              ir.Layer("s1", "SOFTMAX", {}, ["f1"])]
    written = write.write(ir.Network("tiny", (1, 8, 8), layers))
    assert written.arrays == {}
    assert "CONV 3x3 4 pad=same act=relu - POOL max 2x2/2 - OUT 3 softmax" in written.text
    assert netc.compile(written.text).total_params == 4 * 9 + 4 + 16 * 4 * 3 + 3


# ---- live, where torch is installed -------------------------------------------------------------
def test_full_size_networks_exported_live(tmp_path):
    torch = pytest.importorskip("torch")
    import sys
    sys.path.insert(0, os.path.dirname(DATA))
    try:
        import make_onnx
    finally:
        sys.path.pop(0)
    for name, make, shape in (("resnet18", lambda: make_onnx.resnet18(64, 1000), (3, 64, 64)),
                              ("vgg", lambda: make_onnx.vgg((64, 128, 256)), (3, 32, 32))):
        torch.manual_seed(0)
        model = make_onnx.randomize(make())
        path = str(tmp_path / f"{name}.onnx")
        counts = make_onnx.export(model, path, shape)
        written = imported(path)
        net = netc.compile(written.text)
        assert (net.total_params, net.total_macs) == (counts["params"], counts["macs"])
        x = sample(shape)
        np.testing.assert_allclose(netc_forward(written, x), ort_forward(path, x),
                                   rtol=1e-4, atol=1e-5)
