"""ONNX export: every kind, every zoo spec at its real input size and a trained model, checked
by onnx's full checker and run by onnxruntime against netc's own forward pass; and each read
back by `netc import`: the same totals and the same outputs."""
import glob
import math
import os

import numpy as np
import pytest

import netc
from netc.cli import main
from netc.compiler import registry
from netc.compiler.interop import onnx_export
from netc.compiler.interop.ir import InteropError
from netc.runtime.backends.context import Memory
from netc.runtime.model import state_shapes

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def randomized(net, seed=1):
    """A model of random parameters and statistics (fresh biases, BN scales/shifts and running
    statistics are 0 and 1, which would hide a swapped or dropped array): weights uniform of He's
    variance, 2/fan-in; biases, means and shifts in [-0.5, 0.5]; BN/LN/GN scales in [0.5, 1.5];
    variances in [0.5, 2]; a fused PReLU's slopes in [0.1, 0.4] (a PRELU layer's, its 1-D
    `weight`, as scales). Drawn as float32 uniforms straight into
    the arrays the model keeps (Model(net)'s normals, then these, took 15 of this file's 84 s)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, shape in state_shapes(net).items():
        a = arrays[key] = Memory.empty(shape, np.float32)
        rng.random(dtype=np.float32, out=a)
        name = key.rsplit(".", 1)[-1]
        if len(shape) > 1:
            bound = math.sqrt(6 / math.prod(shape[1:]))
            lo, hi = -bound, bound
        else:
            lo, hi = {"running_var": (0.5, 2.0), "weight": (0.5, 1.5),
                      "slope": (0.1, 0.4)}.get(name, (-0.5, 0.5))
        a *= hi - lo
        a += lo
    model = netc.Model.with_state(net, arrays, adopt=True)
    return model, model.state()


def session(model):
    """onnxruntime's session on a ModelProto or its serialized bytes."""
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def agree(net, batch=3, seed=1, folder=None, read_back=False):
    """netc's forward pass and onnxruntime's on the exported model, on random inputs; with
    `read_back`, the model imported back too (from a file in `folder`, else from its bytes): its
    spec's totals and its outputs are the original's."""
    model, arrays = randomized(net, seed)
    proto = onnx_export.build(net, arrays)
    data = proto.SerializeToString()  # (once: 2 s for VGG-16's 550 MB)
    onnx.checker.check_model(data, full_check=True)
    x = np.random.default_rng(seed).normal(size=(batch,) + net.input_shape).astype(np.float32)
    want = model.forward(x)
    got = session(data).run(None, {"input": x})[0]
    assert got.shape == want.shape
    close = {"rtol": 1e-5, "atol": 1e-5 * float(np.abs(want).max())}
    np.testing.assert_allclose(got, want, **close)
    if read_back:
        if folder is not None:
            (folder / "m.onnx").write_bytes(data)
        back = netc.import_model(data if folder is None else str(folder / "m.onnx"))
        again = netc.compile(back.text)
        assert (again.total_params, again.total_macs, again.buffer_count) == \
            (net.total_params, net.total_macs, net.buffer_count)
        copy = netc.Model.with_state(again, {k: v for k, v in back.arrays.items()
                                             if not k.startswith("__")})
        np.testing.assert_allclose(copy.forward(x), want, **close)
    return proto


KIND_EXAMPLES = sorted(name for name, k in registry.kinds().items() if k.example)

VARIANTS = {
    "conv round=ceil": "input 7x7x2\nCONV 3x3/2 4 round=ceil pad=1",
    "conv round=floor": "input 8x8x2\nCONV 3x3/2 4 round=floor",
    "avg pool ceil": "input 7x7x2\nPOOL avg 3x3/2 round=ceil",
    "max pool ceil pad": "input 8x8x2\nPOOL max 3x3/2 pad=1 round=ceil",
    "LRN even size": "input 3x3x6\nLRN 4 alpha=0.1 beta=0.7 k=1.5",
    "LSTM bidir stacked": "input seq 5x3\nLSTM 4 bidir=true return=seq - LSTM 3 bidir=true",
    "GRU bidir per step": "input seq 5x3\nGRU 4 bidir=true return=seq - OUT 2 softmax",
    "RNN relu bidir": "input seq 5x3\nRNN 4 relu bidir=true",
    "LSTM bias=false": "input seq 5x3\nLSTM 4 bias=false",
    "OUT per pixel": "input 4x4x3\nCONV 3x3 4 pad=same act=leaky - OUT 3 softmax per=pixel",
    "SOFTMAX per pixel": "input 4x4x3\nCONV 3x3 4 pad=same act=elu - SOFTMAX per=pixel",
    "FC per step, prelu": "input seq 4x3\nFC 5 act=prelu - OUT 2 sigmoid",
    "RES identity and projection": "input 6x6x4\nRES[CONV 3x3 4 pad=1 - BN - RELU - CONV 3x3 4 "
                                   "pad=1 - BN] - RES[CONV 3x3/2 8 pad=1 - BN] - GAP - OUT 3 softmax",
    "DENSE": "input 6x6x4\nDENSE[CONV 3x3 4 pad=1] - DENSE[BN - RELU - CONV 3x3 2 pad=1] - GAP - FC 3",
    "CONCAT with ID": "input 6x6x4\nCONCAT[ID | CONV 1x1 3 | POOL max 3x3/1 pad=1] - FLATTEN - OUT 2",
    "MEAN": "input 6x6x4\nMEAN[CONV 3x3 4 pad=1 | CONV 1x1 4] - GAP - OUT 2",
    "UPSAMPLE both modes": "input 3x3x2\nUPSAMPLE 3 - UPSAMPLE 2 bilinear",
    "MAXOUT on a vector": "input 8\nMAXOUT 4 - FC 2",
    "LN, GN, IN; LN on a vector": "input 4x4x4\nLN - GN groups=2 - IN - FLATTEN - FC 6 - LN",
    "PReLU shared and fused": "input 4x4x4\nPRELU shared=true - CONV 1x1 3 act=prelu - FLATTEN - "
                              "FC 4 act=prelu",
    "DECONV": "input 3x3x4\nDECONV 4x4/2 4 pad=1 - DECONV 3x3/2 2 pad=1 outpad=1 act=sigmoid",
    "RES on a sequence": "input seq 4x3\nLSTM 3 return=seq - RES[FC 3 act=relu] - LSTM 2",
}


# what netc's export writes that its import does not read back (a clear error instead)
NOT_READ_BACK = {"DROPOUT": "not made by a layer", "LRN even size": "Pow"}


def round_trip(label, net, tmp_path, batch=3):
    if label not in NOT_READ_BACK:
        return agree(net, batch, folder=tmp_path, read_back=True)
    agree(net, batch)
    onnx.save_model(onnx_export.build(net, randomized(net)[1]), str(tmp_path / "m.onnx"))
    with pytest.raises(InteropError, match=NOT_READ_BACK[label]):
        netc.import_model(str(tmp_path / "m.onnx"))


@pytest.mark.parametrize("kind", KIND_EXAMPLES)
def test_every_kind_exports_agrees_and_reads_back(kind, tmp_path):
    inp, chain = registry.kinds()[kind].example
    round_trip(kind, netc.compile(f"input {inp}\n{chain}"), tmp_path)


@pytest.mark.parametrize("label", sorted(VARIANTS))
def test_variants_export_agree_and_read_back(label, tmp_path):
    round_trip(label, netc.compile(VARIANTS[label]), tmp_path)


@pytest.mark.parametrize("spec", sorted(glob.glob(os.path.join(ROOT, "specs", "*.net"))),
                         ids=lambda p: os.path.basename(p)[:-4])
def test_every_zoo_spec_at_its_real_size(spec, freed_memory_kept):
    """Random weights (and statistics), one sample at the spec's own input size; read back from
    its bytes (writing VGG-19's 548 MB to a file and reading it took 2-3 s). The memory freed is
    kept for the next (conftest.kept_freed_memory: the VGGs' tests 2.2x as fast)."""
    agree(netc.compile(spec), batch=1, read_back=True)


def test_the_model_reads_as_netc_wrote_it():
    net = netc.compile(os.path.join(ROOT, "specs", "resnet18.net"))
    proto = agree(net, batch=1)
    graph = proto.graph
    assert proto.opset_import[0].version >= 17
    (inp,), (out,) = graph.input, graph.output
    assert inp.name == "input" and out.name == "output"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", 3, 224, 224]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", 1000]
    names = {n.name for n in graph.node}
    assert {"conv1", "bn1", "basic1.res1.conv1", "out1"} <= names  # netc's layer names
    inits = {i.name for i in graph.initializer}
    assert "basic1.res1.conv1.weight" in inits and "bn1.running_var" in inits
    # the batch axis is dynamic: 3 samples through the same file
    x = np.random.default_rng(0).normal(size=(3, 3, 224, 224)).astype(np.float32)
    assert session(proto).run(None, {"input": x})[0].shape == (3, 1000)


def test_trained_model_with_its_normalization(tmp_path):
    """A checkpoint's normalization is the graph's first nodes: onnxruntime on raw inputs gives
    what netc gives on normalized ones; --raw leaves it out."""
    spec = os.path.join(ROOT, "specs", "digits.net")
    result, folder = netc.runtime.train(spec, {"epochs": 1}, out=str(tmp_path / "run"),
                                        progress=False)
    weights = os.path.join(folder, "best.npz")
    ckpt = dict(np.load(weights))
    mean, std = ckpt["__netc_norm_mean__"], ckpt["__netc_norm_std__"]
    assert np.any(mean != 0) and np.any(std != 1)
    model = netc.Model.load(weights)
    x = np.random.default_rng(0).uniform(0, 16, size=(5, 1, 8, 8)).astype(np.float32)
    want = model.forward((x - mean) / std)

    path = tmp_path / "digits.onnx"
    assert main(["export", spec, "--weights", weights, "-o", str(path)]) == 0
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node[:2]] == ["Sub", "Div"]
    got = session(proto).run(None, {"input": x})[0]
    # float32 through three CONVs, summed in other orders than onnxruntime's
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)

    assert main(["export", spec, "--weights", weights, "-o", str(path), "--raw"]) == 0
    raw = onnx.load(str(path))
    assert raw.graph.node[0].op_type != "Sub"
    got = session(raw).run(None, {"input": ((x - mean) / std).astype(np.float32)})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)

    # Python: the same from the checkpoint's path or from its Model, which carries the
    # normalization (Model.normalization; predict() applies it); a Model without one, raw inputs
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-6)
    netc.export_onnx(weights, str(tmp_path / "p.onnx"))
    assert onnx.load(str(tmp_path / "p.onnx")).graph.node[0].op_type == "Sub"
    netc.export_onnx(model, str(tmp_path / "m.onnx"))
    from_model = onnx.load(str(tmp_path / "m.onnx"))
    assert from_model.graph.node[0].op_type == "Sub"
    np.testing.assert_allclose(session(from_model).run(None, {"input": x})[0], want, rtol=1e-4,
                               atol=1e-6)
    model.normalization = None
    netc.export_onnx(model, str(tmp_path / "n.onnx"))
    assert onnx.load(str(tmp_path / "n.onnx")).graph.node[0].op_type != "Sub"


def test_export_without_weights_uses_fresh_ones(capsys, tmp_path):
    spec = os.path.join(ROOT, "specs", "lenet5.net")
    path = tmp_path / "lenet.onnx"
    assert main(["export", spec, "-o", str(path), "--seed", "3"]) == 0
    assert "fresh weights (seed 3)" in capsys.readouterr().out
    net = netc.compile(spec)
    model = netc.Model(net, seed=3)
    x = np.random.default_rng(0).normal(size=(2,) + net.input_shape).astype(np.float32)
    got = session(onnx.load(str(path))).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, model.forward(x), rtol=1e-5, atol=1e-6)


def test_export_errors_are_clear(capsys, tmp_path):
    spec = os.path.join(ROOT, "specs", "digits.net")
    # a checkpoint of another network
    other = netc.Model(netc.compile(os.path.join(ROOT, "specs", "mlp.net")))
    other.save(str(tmp_path / "mlp.npz"))
    assert main(["export", spec, "--weights", str(tmp_path / "mlp.npz"), "-o",
                 str(tmp_path / "x.onnx")]) == 2
    assert "different network" in capsys.readouterr().err
    assert main(["export", spec, "--weights", str(tmp_path / "none.npz"), "-o",
                 str(tmp_path / "x.onnx")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["export", spec, "-o", str(tmp_path / "no" / "dir" / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err


def test_a_kind_without_mapping_is_named(monkeypatch):
    net = netc.compile("input 4x4x2\nCONV 3x3 2 - LRN 3 - FLATTEN - FC 2")
    monkeypatch.delattr(type(registry.get("LRN")), "onnx")
    with pytest.raises(InteropError, match="cannot export layer lrn1 .*line 2.*LRN has no ONNX"):
        onnx_export.build(net, {k: np.array(v) for k, v in netc.Model(net).state().items()})
