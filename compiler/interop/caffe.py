"""Caffe in: a network definition (.prototxt) and optionally its weights (.caffemodel) into the
intermediate form (ir.Network), which write.py turns into lecture notation.

    network = caffe.read("deploy.prototxt", caffemodel="bvlc_alexnet.caffemodel")

Both files are read by protobuf's own parsers (text format and binary) with the message classes
of caffe_schema; each Caffe layer becomes a netc layer (caffe_layers.py holds the rules, type by
type; caffe_reader.py the state they share). What Caffe runs in the TEST phase is imported:
layers included only in TRAIN, data layers, Accuracy and Silence are left out, and a final
Softmax or SoftmaxWithLoss after an InnerProduct becomes OUT softmax. Layers the output does
not depend on (GoogLeNet's auxiliary classifiers in a train_val file) are dropped with a
warning."""
from __future__ import annotations

import difflib
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from netc.compiler.kinds.activation import Softmax
from netc.compiler.kinds.dense import FullyConnected, Output
from . import ir
from .caffe_layers import HANDLERS
from .caffe_reader import Reader, layer_type
from .ir import InteropError

DATA = {"Data", "ImageData", "HDF5Data", "MemoryData", "DummyData", "WindowData", "Input"}
SKIPPED = {"Accuracy", "Silence"}
_TEST = 1  # Caffe's Phase enum: TRAIN = 0, TEST = 1
# the messages whose fields the schema leaves some out (the parameters of layer types netc does
# not read); every other message of caffe_schema has all of Caffe's fields
_OPEN = {"LayerParameter", "V1LayerParameter"}


def read(prototxt_path, caffemodel=None) -> ir.Network:
    """The network of a Caffe prototxt, with its weights from `caffemodel` (matched by layer name)
    if given. Without a caffemodel every layer's `weights` and `buffers` are empty dicts: the
    writer (or the CLI) initializes fresh parameters. Raises InteropError (a NetcError) for a
    missing or unreadable file, a layer type netc has no kind for (all of them listed at once),
    and a Caffe feature netc cannot express (dilation, WITHIN_CHANNEL LRN, ...)."""
    try:
        from .caffe_schema import classes
        net = classes()["NetParameter"]()
    except ImportError:
        raise InteropError("reading Caffe files needs the protobuf package",
                           hint="pip install 'netc[onnx]' (or: pip install protobuf)") from None
    _parse_text(Path(prototxt_path), net)
    active = _active_layers(net)
    _check_types(active, prototxt_path)
    reader = Reader(_read_blobs(Path(caffemodel)) if caffemodel is not None else None)
    _inputs(reader, net, active)
    for layer, kind in active:
        if kind not in DATA and kind not in SKIPPED:
            HANDLERS[kind](reader, layer, kind)
    if not reader.layers:
        raise InteropError(f"{prototxt_path}: no layer to import after the input",
                           hint="give the network's deploy prototxt, with its layers")
    reader.check_missing_weights(caffemodel)
    layers = _fuse_softmax(_prune(reader.layers))
    return ir.Network(name=ir.network_name(net.name or Path(prototxt_path).stem),
                      input_shape=reader.input_shape, layers=layers,
                      mean=reader.mean, std=reader.std)


def _parse_text(path: Path, net) -> None:
    """protobuf's text-format parser. Strict first, so that a misspelt field of a message the
    schema holds whole is an error (Caffe rejects it too); a field a layer has that the schema
    leaves out (another layer type's parameters: data_param ...) is then skipped."""
    from google.protobuf import text_format

    text = _read(path, "prototxt").decode("utf-8", errors="replace")
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as e:
        unknown = re.search(r'Message type "caffe\.(\w+)" has no field named "(\w+)"', str(e))
        if not unknown or unknown[1] not in _OPEN:
            raise _syntax_error(path, text, e, unknown) from None
        net.Clear()
        try:
            text_format.Parse(text, net, allow_unknown_field=True)
        except text_format.ParseError as e:
            raise _syntax_error(path, text, e, None) from None
    if not net.layer and not net.layers:
        raise InteropError(f"{path} holds no layers (no `layer {{ ... }}` blocks)",
                           hint="give the network's deploy or train_val prototxt, not a "
                                "solver file")


def _syntax_error(path, text, e, unknown) -> InteropError:
    """path:line:column, protobuf's message, the line with a caret; for a misspelt field, the
    fields its message has that come close."""
    from .caffe_schema import classes

    line, column = e.GetLine(), e.GetColumn()
    message = str(e).split(" : ", 1)[-1] if line else str(e)
    shown = text.split("\n")[line - 1] if line and line <= text.count("\n") + 1 else ""
    message = message.removeprefix(f"'{shown}': ")  # newer protobufs quote the line
    caret = f"\n    {shown}\n    {' ' * max(column - 1, 0)}^" if shown else ""
    hint = ("a prototxt is protobuf's text format, as Caffe reads it: `name: \"conv1\"`, "
            "`convolution_param { num_output: 96 }`")
    if unknown:
        fields = classes()[unknown[1]].DESCRIPTOR.fields_by_name
        close = difflib.get_close_matches(unknown[2], fields, n=3)
        hint = (f"did you mean {' or '.join(close)}? " if close else "") + \
            f"{unknown[1]}'s fields are " + ", ".join(fields)
    return InteropError(f"{path}:{line}:{column}: {message}{caret}", hint=hint)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InteropError(f"no such {what} file: {path}",
                           hint="check the path (relative paths start in the current "
                                "directory)") from None
    except OSError as e:
        raise InteropError(f"cannot read the {what} file {path}: {e.strerror}") from None


def _active_layers(net) -> list:
    """(layer, its V2 type) of the layers Caffe's TEST phase builds, in file order."""
    v1 = not net.layer
    level, stages = net.state.level, set(net.state.stage)
    return [(layer, layer_type(layer, v1)) for layer in (net.layers if v1 else net.layer)
            if _included(layer, level, stages)]


def _included(layer, level, stages) -> bool:
    """Caffe's rule: included if an `include` rule is met, or, without any, if no `exclude`
    rule is."""
    if layer.include:
        return any(_meets(rule, level, stages) for rule in layer.include)
    return not any(_meets(rule, level, stages) for rule in layer.exclude)


def _meets(rule, level, stages) -> bool:
    return not ((rule.HasField("phase") and rule.phase != _TEST)
                or (rule.HasField("min_level") and level < rule.min_level)
                or (rule.HasField("max_level") and level > rule.max_level)
                or any(s not in stages for s in rule.stage)
                or any(s in stages for s in rule.not_stage))


def _check_types(active, path) -> None:
    """One error for every layer type netc has no kind for: how often, and the first layer."""
    known = set(HANDLERS) | DATA | SKIPPED
    counts, first = Counter(), {}
    for layer, kind in active:
        if kind not in known:
            counts[kind] += 1
            first.setdefault(kind, layer.name)
    if counts:
        listed = "; ".join(f"{kind} ({n} layer{'s' * (n > 1)}, first '{first[kind]}')"
                           for kind, n in counts.items())
        raise InteropError(f"{path}: netc cannot import these Caffe layer types: {listed}",
                           hint="netc imports " + ", ".join(sorted(HANDLERS))
                                + " (and skips data layers, Accuracy, Silence); replace or "
                                  "remove the others in the prototxt")


def _read_blobs(path: Path) -> dict:
    """Layer name -> its blobs as flat float32 arrays with their Caffe shapes, from a binary
    NetParameter (V2 `layer` or V1 `layers`)."""
    from google.protobuf.message import DecodeError

    from .caffe_schema import classes

    model = classes()["NetParameter"]()
    try:
        model.ParseFromString(_read(path, "caffemodel"))
    except DecodeError as e:
        raise InteropError(f"{path} is not a Caffe model (a binary NetParameter): {e}",
                           hint="--caffemodel takes the trained .caffemodel; the network "
                                "itself is the .prototxt") from None
    blobs = {layer.name: [_blob(b) for b in layer.blobs]
             for layer in list(model.layer) + list(model.layers) if layer.blobs}
    if not blobs:
        raise InteropError(f"{path} holds no layer weights",
                           hint="--caffemodel takes the trained .caffemodel (a binary file)")
    return blobs


def _blob(blob):
    data = blob.data if len(blob.data) else blob.double_data
    if blob.HasField("shape"):
        shape = tuple(blob.shape.dim)
    else:  # the legacy 4-D (num, channels, height, width)
        shape = (blob.num, blob.channels, blob.height, blob.width)
    return np.asarray(data, dtype=np.float32), shape


def _inputs(reader, net, active) -> None:
    """The network's one input: top-level `input` with `input_shape` or `input_dim`, an Input
    layer, or a data layer (its label top is marked unusable)."""
    names = list(net.input)
    shapes = [tuple(s.dim) for s in net.input_shape]
    if net.input_dim:
        dims = list(net.input_dim)
        shapes = [tuple(dims[i:i + 4]) for i in range(0, len(dims), 4)]
    for layer, kind in active:
        if kind == "Input":
            names += list(layer.top)
            shapes += [tuple(s.dim) for s in layer.input_param.shape]
        elif kind in DATA:
            names.append(layer.top[0] if layer.top else layer.name)
            reader.labels.update(layer.top[1:])
            shapes.append(_data_shape(reader, layer))
    if len(names) != 1:
        raise InteropError(f"netc networks have one input; the prototxt has {len(names)}"
                           + (f": {', '.join(names)}" if names else ""),
                           hint="declare the input once, e.g. `input: \"data\"` with "
                                "`input_shape { dim: 1 dim: 3 dim: 224 dim: 224 }`")
    shape = shapes[0] if shapes else None
    if not shape:
        raise InteropError(f"the prototxt does not give the shape of its input '{names[0]}'",
                           hint="use the network's deploy prototxt (an Input layer or "
                                "`input_dim`), or add `input_shape { dim: 1 dim: C dim: H "
                                "dim: W }` after `input:`")
    reader.set_input(names[0], shape)


def _data_shape(reader, layer):
    """A data layer's image shape as far as its transform says (crop_size and a mean per
    channel), and its normalization; None where the shape lives in the database."""
    t = layer.transform_param
    if t.mean_value or t.scale != 1:
        mean = np.asarray(t.mean_value or [0.0], dtype=np.float32)
        reader.mean = mean.reshape(-1, 1, 1)
        reader.std = np.full((1, 1, 1), 1.0 / t.scale, dtype=np.float32)
    if t.crop_size and len(t.mean_value) > 1:
        return (1, len(t.mean_value), t.crop_size, t.crop_size)
    return None


def _prune(layers: list) -> list:
    """Only the layers the last one depends on; the others are dropped with a warning."""
    keep, todo = set(), [layers[-1].name]
    by_name = {layer.name: layer for layer in layers}
    while todo:
        name = todo.pop()
        if name in by_name and name not in keep:
            keep.add(name)
            todo += by_name[name].inputs
    dropped = [layer.name for layer in layers if layer.name not in keep]
    if dropped:
        warnings.warn(f"the output '{layers[-1].name}' does not depend on {len(dropped)} "
                      f"layer(s), left out: {', '.join(dropped)} (netc networks have one "
                      f"output)", stacklevel=3)
    return [layer for layer in layers if layer.name in keep]


def _fuse_softmax(layers: list) -> list:
    """A final SOFTMAX after an FC read by nothing else becomes that FC as OUT softmax."""
    last = layers[-1]
    if last.kind != Softmax.name or last.args.get("per", "sample") != "sample":
        return layers
    fc = next(layer for layer in layers if layer.name == last.inputs[0]) \
        if last.inputs[0] != "input" else None
    readers = [layer for layer in layers if fc is not None and fc.name in layer.inputs]
    if fc is None or fc.kind != FullyConnected.name or readers != [last]:
        return layers
    fc.kind, fc.args["act"] = Output.name, "softmax"
    fc.source += f" + {last.source}"
    return layers[:-1]
