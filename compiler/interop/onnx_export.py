"""A compiled network and its weights as an ONNX model: one graph of standard operators (opset 17)
that computes the network's inference pass, the weights as initializers under netc's names.

Each layer kind writes its own operators (LayerKind.onnx) through the Emitter below; this module
walks the graph, names things and assembles the model. The input is `input`, (N, C, H, W) for an
image, (N, D) for a vector, (N, T, D) for a sequence, with a symbolic batch axis N; the output is
`output`, OUT's activation applied. The normalization a checkpoint was trained with, (x - mean) /
std, is the graph's first two nodes unless `raw`."""
from __future__ import annotations

import numpy as np

from netc.compiler import registry
from netc.compiler.kinds.join import Input
from netc.compiler.registry import FUSED_PARAM, LayerError
from netc.dsl.errors import NetcError

from .ir import InteropError, unique

OPSET = 17
PRODUCER = "netc"


class Emitter:
    """What a kind's `onnx` rule writes through: its input tensors (`x`), operators (`op`), its
    parameters (`param`), constants (`const`) and activations (`act`). Node names start with the
    layer's name, so a viewer shows netc's names."""

    def __init__(self, arrays: dict):
        from onnx import ModelProto, helper
        self._helper = helper
        self.arrays, self.nodes = arrays, []
        # the model the initializers are written into, where they stay (a graph made apart and
        # then put in a model is copied whole: VGG-11's 531 MB, 0.86 s)
        self.model = ModelProto()
        self._names: set = set()
        self.layer, self.x, self._count = None, [], 0

    def _fresh(self, base: str) -> str:
        return unique(base, self._names)

    def start(self, layer: str, inputs: list):
        """Begin a layer: its operators are named after it."""
        self.layer, self.x, self._count = layer, list(inputs), 0

    def op(self, op_type: str, inputs, outputs: int = 1, aside: bool = False, **attrs):
        """Append an operator; its output tensor's name (a list when outputs > 1). An input
        may be "" for an optional one left out. The layer's first operator takes its name, the
        others and those `aside` (a Flatten or Transpose before the main one) LAYER/OpType."""
        name = self._fresh(f"{self.layer}/{op_type}" if self._count or aside else self.layer)
        self._count += not aside
        outs = [name] + [self._fresh(f"{name}:{i}") for i in range(1, outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self._helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs[0] if outputs == 1 else outs

    def param(self, short: str, value=None) -> str:
        """The layer's parameter or buffer `short` as an initializer named as netc keys it
        ("conv1.weight"); `value` replaces the stored array (a reshaped or reordered copy)."""
        key = f"{self.layer}.{short}"
        if value is None:
            value = self.arrays[key]
        return self._init(self._fresh(key), np.asarray(value, np.float32))

    def const(self, value, dtype=np.int64, hint: str = "const") -> str:
        """A constant tensor (a shape, pads, scales ...) as an initializer."""
        return self._init(self._fresh(f"{self.layer}/{hint}"), np.asarray(value, dtype))

    def _init(self, name, array):
        array = np.ascontiguousarray(array, array.dtype.newbyteorder("<"))  # (ONNX's order)
        tensor = self.model.graph.initializer.add()
        tensor.name = name
        tensor.data_type = self._helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.raw_data = array.tobytes()
        return name

    def act(self, x: str, act: str, h=None, axis: int = -1, slope: str | None = None) -> str:
        """x through an activation word (a fused act= or an activation layer's): `h` gives a
        layer's own slope or alpha, `slope` a PReLU's slope tensor (shaped to broadcast),
        `axis` the softmax's."""
        h = h or {}
        if act == "none":
            return x
        if act == "relu":
            return self.op("Relu", [x])
        if act == "leaky":
            return self.op("LeakyRelu", [x], alpha=float(h.get("slope", FUSED_PARAM["leaky"])))
        if act == "elu":
            return self.op("Elu", [x], alpha=float(h.get("alpha", FUSED_PARAM["elu"])))
        if act == "sigmoid":
            return self.op("Sigmoid", [x])
        if act == "tanh":
            return self.op("Tanh", [x])
        if act == "softmax":
            return self.op("Softmax", [x], axis=axis)
        if act == "prelu":
            return self.op("PRelu", [x, slope])
        raise LayerError(f"the activation {act!r} has no ONNX mapping")

    def per_channel(self, short: str, rank: int, value=None) -> str:
        """A per-channel parameter (C,) shaped to broadcast over a sample of `rank` axes (C, H, W:
        (C, 1, 1)), the batch axis in front."""
        v = np.asarray(self.arrays[f"{self.layer}.{short}"] if value is None else value)
        return self.param(short, v.reshape(v.shape + (1,) * (rank - 1)))


def export(net, arrays: dict, path: str, mean=None, std=None, raw: bool = False,
           opset: int = OPSET) -> str:
    """Write `net` with `arrays` (its parameters and buffers by netc's keys) to an ONNX file;
    mean/std: the input normalization, applied first unless raw. Returns the path. A kind that
    has no ONNX mapping is an InteropError naming the layer."""
    return save(build(net, arrays, mean, std, raw, opset), path)


def save(model, path: str) -> str:
    """Write a ModelProto (build's) to `path`; returns the path."""
    import onnx
    try:
        onnx.save_model(model, path)
    except OSError as e:
        raise NetcError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def build(net, arrays: dict, mean=None, std=None, raw: bool = False, opset: int = OPSET):
    """The onnx.ModelProto of `net` with `arrays` (see export)."""
    from onnx import IR_VERSION, TensorProto, helper
    missing = [k for k in {**_keys(net)} if k not in arrays]
    if missing:
        raise NetcError(f"the weights lack {len(missing)} array(s) the network needs, e.g. "
                        f"{missing[0]}", "were they saved from another network?")
    g = Emitter(arrays)
    kinds = registry.kinds()
    tensor = {}
    for node in net.nodes:
        g.start(node.name, [tensor[i] for i in node.inputs])
        if node.kind == Input.name:
            tensor[node.name] = _normalized(g, node, mean, std, raw)
            continue
        try:
            tensor[node.name] = kinds[node.kind].onnx(node.hyper, node.in_shapes, g)
        except LayerError as e:
            where = f" (line {node.line})" if node.line else ""
            raise InteropError(f"cannot export layer {node.name}{where} to ONNX: {e.message}",
                               e.hint) from None
    _rename_output(g, tensor[net.output])
    def value(name, shape):  # a float tensor with the batch axis N in front
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N"] + list(shape))
    model = g.model  # (as helper.make_graph and make_model would make it, but in place)
    model.graph.name = net.name or "netc"
    model.graph.node.extend(g.nodes)
    model.graph.input.append(value("input", net.input_shape))
    model.graph.output.append(value("output", net.output_shape))
    model.producer_name = PRODUCER
    model.opset_import.append(helper.make_opsetid("", opset))
    model.ir_version = min(IR_VERSION, 8) if opset <= 17 else IR_VERSION
    model.doc_string = (f"{net.name}: exported by netc from its spec (hash {net.spec_hash}); "
                        + ("inputs are raw (no normalization)" if raw or mean is None else
                           "the input normalization (x - mean) / std is the graph's first nodes"))
    return model


def _keys(net) -> dict:
    out = {}
    for n in net.nodes:
        out.update({f"{n.name}.{k}": s for k, s in {**n.params, **n.buffers}.items()})
    return out


def _normalized(g, node, mean, std, raw) -> str:
    """The input tensor, normalized by the checkpoint's mean and std (shaped to broadcast over
    one sample) unless raw or there is none."""
    if raw or mean is None:
        return "input"
    g.layer = "normalize"
    centered = g.op("Sub", ["input", g.const(mean, np.float32, "mean")])
    return g.op("Div", [centered, g.const(std, np.float32, "std")])


def _rename_output(g, last: str):
    """The network's last tensor becomes `output` (an Identity where it is the input itself or
    feeds another node)."""
    producer = [n for n in g.nodes if last in n.output]
    if not producer or any(last in n.input for n in g.nodes):
        g.layer = "output"
        g.nodes.append(g._helper.make_node("Identity", [last], ["output"], name="output"))
        return
    out = producer[0].output
    out[list(out).index(last)] = "output"

