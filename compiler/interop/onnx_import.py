"""ONNX in: a graph of standard operators -> ir.Network (netc kinds, netc's resolved
hyperparameters, weights in netc's layouts), for write.py to turn into lecture notation.

The walk goes through the nodes in their (topological) order. Initializers and Constant nodes
are constants; small shape computations on them (Shape/Gather/Unsqueeze/Concat feeding a
Reshape, as PyTorch writes `x.view(x.size(0), -1)`) are folded here. Each operator with a netc
layer becomes one ir.Layer (onnx_ops.py), or several operators make one (onnx_patterns.py:
the recurrent layers, GN and LN on images, MAXOUT); Dropout and Identity pass their input
through. A graph that starts with Sub(const)/Div(const) on its input (netc's own export of a
checkpoint's normalization) gives the network's mean and std. The `onnx` package is imported
only here."""
from __future__ import annotations

import math
import os
import re
from collections import Counter

import numpy as np

from . import ir
from .onnx_fold import FOLDERS
from .onnx_ops import HANDLERS as SINGLE
from .onnx_patterns import HANDLERS as PATTERNS

HANDLERS = {**SINGLE, **PATTERNS}  # an operator's rule; the patterns' where it may be in one

INPUT = "input"


IN_MEMORY = "the ONNX model given"  # what errors call a model given as bytes or a ModelProto


def read(source) -> ir.Network:
    """Read an ONNX model into the intermediate form: a file's path, or the model itself (its
    serialized bytes, or an onnx.ModelProto, which is only read). A file that is missing, bytes
    that are not ONNX, or a model that uses operators netc has no layer for is an
    ir.InteropError."""
    onnx = _onnx()
    if isinstance(source, (bytes, bytearray, memoryview)):
        model, path = _parse(onnx, bytes(source)), IN_MEMORY
    elif isinstance(source, onnx.ModelProto):
        model, path = _nodes(source, IN_MEMORY), IN_MEMORY
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        model = _load(onnx, path)
    else:
        raise ir.InteropError(f"an ONNX model is read from a file's path, its bytes or an "
                              f"onnx.ModelProto; received {type(source).__name__}")
    _check_operators(model.graph)
    return _Reader(onnx, model, path).network()


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ir.InteropError("reading ONNX files needs the `onnx` package",
                              "pip install 'netc[onnx]'") from None
    return onnx


def _load(onnx, path):
    if not os.path.isfile(path):
        raise ir.InteropError(f"no such ONNX file: {path}", "check the path")
    try:
        model = onnx.load(path)
    except Exception as e:  # protobuf's DecodeError and friends: any unreadable file
        raise ir.InteropError(f"{path} is not a readable ONNX model ({type(e).__name__}: {e})",
                              "export it again; an ONNX file is a protobuf ModelProto") from None
    return _nodes(model, path)


def _parse(onnx, data: bytes):
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # (as _load's)
        hint = ("give a serialized ModelProto (model.SerializeToString(), or what "
                "torch.onnx.export wrote into a BytesIO), or the file's path")
        raise ir.InteropError(f"{IN_MEMORY} ({len(data):,} bytes) is not a readable ONNX "
                              f"model ({type(e).__name__}: {e})", hint) from None
    return _nodes(model, IN_MEMORY)


def _nodes(model, where):
    if not model.graph.node:
        raise ir.InteropError(f"{where} holds no ONNX graph nodes",
                              "is it an ONNX model (.onnx)?")
    return model


def _check_operators(graph):
    """One error listing every operator type netc cannot import, with counts and a first node."""
    missing, first = Counter(), {}
    for i, node in enumerate(graph.node):
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        if op not in HANDLERS and op not in FOLDERS:
            missing[op] += 1
            first.setdefault(op, node.name or f"#{i}")
    if missing:
        listed = ", ".join(f"{op} ({n}x, first {first[op]!r})" for op, n in missing.items())
        known = ", ".join(sorted(HANDLERS))
        raise ir.InteropError(f"the ONNX graph uses {len(missing)} operator type(s) netc has no "
                              f"layer for: {listed}", f"netc imports {known}")


class _Reader:
    """The state of the walk: constants, tensor shapes, which layer makes each tensor."""

    def __init__(self, onnx, model, path):
        self.onnx, self.model, self.path = onnx, model, path
        self.graph = model.graph
        self.consts = {t.name: _array(onnx, t) for t in self.graph.initializer}
        self.shapes = _shapes(onnx, model)
        self.alias = {}  # tensor -> the IR layer that makes it ("input": the network's input)
        self.layers, self.names, self._index = [], set(), {}
        self.padded = {}  # tensor -> [top, left, bottom, right] zeros a Pad node added
        self.pending = {}  # tensor -> a pattern of several operators, half read (onnx_patterns)
        self.mean = self.std = None
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                          13)
        self.uses = Counter(i for n in self.graph.node for i in n.input)
        self.uses.update(o.name for o in self.graph.output)

    # ---- the network --------------------------------------------------------------------------
    def network(self) -> ir.Network:
        self.input_name, shape = self._input()
        self.input_shape = shape
        self.alias[self.input_name] = INPUT
        for i, node in enumerate(self.graph.node):
            self.node = node
            self.where = f"node {node.name or '#' + str(i)!r} ({node.op_type})"
            if node.op_type == "Shape" or node.op_type in FOLDERS and \
                    all(t in self.consts or t == "" for t in node.input):
                self._fold(node)
            elif node.op_type in HANDLERS:
                HANDLERS[node.op_type](self, node)
            else:
                self.fail(f"{node.op_type} on computed tensors is not a netc layer",
                          "netc folds it only where every input is a constant")
        outs = [o.name for o in self.graph.output]
        if len(outs) != 1:
            raise ir.InteropError(f"the ONNX graph has {len(outs)} outputs ({', '.join(outs)}); "
                                  "a netc network has one", "export the model with one output")
        last = self.alias.get(outs[0])
        if last is None or last == INPUT:
            raise ir.InteropError(f"the ONNX graph's output {outs[0]!r} is not made by a layer",
                                  "is the graph empty, or its output a constant?")
        layers = _ancestors(self.layers, last)
        mean, std = self.mean, self.std
        if mean is not None or std is not None:  # one of the two alone: the other is neutral
            mean = np.zeros_like(std) if mean is None else mean
            std = np.ones_like(mean) if std is None else std
        return ir.Network(_network_name(self.graph.name, self.path), shape, layers, mean, std)

    def _fold(self, node):
        try:
            FOLDERS[node.op_type](self, node)
        except (ValueError, IndexError) as e:  # NumPy's word on constants that do not fit
            self.fail(f"cannot compute it from its constants: {e}",
                      "is the model valid? onnx.checker.check_model tells")

    def _input(self):
        inits = {t.name for t in self.graph.initializer}
        inputs = [v for v in self.graph.input if v.name not in inits]
        if len(inputs) != 1:
            raise ir.InteropError(f"the ONNX graph has {len(inputs)} inputs "
                                  f"({', '.join(v.name for v in inputs)}); netc networks have one",
                                  "export the model with a single input tensor")
        v = inputs[0]
        dims = tuple(self.dim(d) for d in v.type.tensor_type.shape.dim)
        if len(dims) not in (2, 3, 4) or any(d is None for d in dims[1:]):
            shown = "x".join("?" if d is None else str(d) for d in dims)
            raise ir.InteropError(f"the ONNX input {v.name!r} has shape {shown}; netc needs "
                                  "N x C x H x W, N x D or N x T x D with every size but the "
                                  "batch fixed", "export with a fixed input size")
        return v.name, dims[1:]  # (C, H, W), (D,) or (T, D)

    @staticmethod
    def dim(d):
        return d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None

    # ---- helpers for the operators --------------------------------------------------------------
    def fail(self, message, hint=None):
        raise ir.InteropError(f"{self.where}: {message}", hint)

    def attrs(self, node=None) -> dict:
        node = node or self.node
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def const(self, tensor, what):
        if tensor not in self.consts:
            self.fail(f"its {what} must be a constant (an initializer); received the computed "
                      f"tensor {tensor!r}", "export with the weights as initializers")
        return self.consts[tensor]

    def rank(self, tensor):
        shape = self.shapes.get(tensor)
        return None if shape is None else len(shape)

    def producer(self, tensor):
        """The IR layer that makes `tensor`, or None for the input."""
        name = self.alias.get(tensor)
        if name is None:
            self.fail(f"reads {tensor!r}, which no earlier node makes")
        return None if name == INPUT else self.layers[self._index[name]]

    def add(self, kind, args=None, inputs=None, weights=None, buffers=None):
        """A new IR layer from the current node, reading `inputs` (tensors; the node's first by
        default) and making its first output."""
        node = self.node
        stem = re.sub(r"\W+", "_", node.name or node.output[0]).strip("_") or node.op_type
        name = ir.unique(stem, self.names, avoid=(INPUT,))
        inputs = [node.input[0]] if inputs is None else inputs
        for t in inputs:
            self.producer(t)
        layer = ir.Layer(name, kind, dict(args or {}), [self.alias[t] for t in inputs],
                         {k: np.asarray(v, np.float32) for k, v in (weights or {}).items()},
                         {k: np.asarray(v, np.float32) for k, v in (buffers or {}).items()},
                         source=self.where)
        self._index[name] = len(self.layers)
        self.layers.append(layer)
        self.alias[node.output[0]] = name
        return layer

    def passthrough(self):
        self.producer(self.node.input[0])
        self.alias[self.node.output[0]] = self.alias[self.node.input[0]]


def _array(onnx, tensor):
    return onnx.numpy_helper.to_array(tensor)


BIG_TENSOR = 1 << 14  # values


def _shapes(onnx, model) -> dict:
    """tensor -> dims (None where symbolic), from ONNX shape inference (best effort). It runs
    on a light copy of the model whose large initializers are graph inputs of their type and
    dims (it copies the whole model twice, and reads only their dims: VGG-11's 531 MB took 10 s
    whole, 3.2 s with their bytes taken out and put back, 8 ms so); the small ones stay
    initializers, since some operators' shapes follow from their values (Reshape's target)."""
    graph, light = model.graph, onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    for field in ("node", "input", "output", "value_info"):
        getattr(light.graph, field).extend(getattr(graph, field))
    inputs = {v.name for v in graph.input}
    for t in graph.initializer:  # (large by their dims: ByteSize() serializes a tensor)
        if math.prod(t.dims) <= BIG_TENSOR:
            light.graph.initializer.append(t)
        elif t.name not in inputs:
            light.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type,
                                                                        list(t.dims)))
    try:
        inferred = onnx.shape_inference.infer_shapes(light).graph
    except Exception:  # a model shape inference cannot follow: the walk asks only where needed
        inferred = model.graph
    out = {}
    for v in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        t = v.type.tensor_type
        if t.HasField("shape"):
            out[v.name] = tuple(_Reader.dim(d) for d in t.shape.dim)
    return out


def _ancestors(layers, last):
    """The layers `last` depends on (and it), in order: what does not lead to the output goes."""
    keep, todo, by = set(), [last], {x.name: x for x in layers}
    while todo:
        name = todo.pop()
        if name in keep or name == INPUT:
            continue
        keep.add(name)
        todo.extend(by[name].inputs)
    return [x for x in layers if x.name in keep]


def _network_name(graph_name, path):
    generic = {"", "main_graph", "torch_jit", "torch-jit-export", "graph"}
    if graph_name not in generic:
        name = graph_name
    else:  # the file's name; a model given in memory has none
        name = "imported" if path == IN_MEMORY else os.path.splitext(os.path.basename(path))[0]
    return ir.network_name(name)

