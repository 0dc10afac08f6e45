"""The state of a Caffe import while its layers are read (caffe_layers.py has the rules per
layer type): the netc layers made so far, their shapes, names, and the caffemodel's blobs.

Caffe works in place (a ReLU whose top is its bottom): a top name stands for the latest layer
that wrote it, so `Reader.tensors` maps each name to the netc layer of its current version."""
from __future__ import annotations

import math
import re

from netc.compiler.registry import LayerError
from netc.compiler.shapes import window_out

from . import ir
from .ir import InteropError


def layer_type(layer, v1: bool) -> str:
    """A layer's type as V2 spells it (V1 files name it by an enum: CONVOLUTION ...)."""
    if not v1:
        return layer.type
    from .caffe_schema import V1_TYPES

    name = layer.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_number[layer.type].name
    return V1_TYPES.get(name, name)


def enum(message, field: str) -> str:
    """The name of an enum field's value (`pool` -> "AVE")."""
    values = message.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number
    return values[getattr(message, field)].name


class Reader:
    """The network being built: its netc layers, their shapes, which layer each Caffe top name
    currently stands for, and the caffemodel's blobs (None: no weights)."""

    def __init__(self, blobs: dict | None):
        self.blobs, self.missing = blobs, []
        self.layers, self.shapes, self.tensors = [], {}, {}
        self.labels, self.used, self.scalable = set(), {"input"}, set()
        self.input_shape, self.mean, self.std = None, None, None

    def set_input(self, top: str, dims: tuple) -> None:
        if len(dims) == 4:
            self.input_shape = tuple(int(d) for d in dims[1:])
        elif len(dims) == 2:
            self.input_shape = (int(dims[1]),)
        else:
            raise InteropError(f"the input '{top}' has {len(dims)} dimensions "
                               f"({' x '.join(map(str, dims))}); netc reads N x C x H x W "
                               f"images or N x D vectors")
        self.tensors[top] = "input"

    def shape_of(self, name: str) -> tuple:
        """The output shape of a netc layer made so far ("input": the input)."""
        return self.input_shape if name == "input" else self.shapes[name]

    def bottom(self, layer, kind, i=0) -> str:
        """The netc layer that produced the layer's i-th bottom (its current version)."""
        if i >= len(layer.bottom):
            raise InteropError(f"layer '{layer.name}' ({kind}) has no bottom {i + 1}",
                               hint="give it a `bottom:` naming an earlier layer's top")
        name = layer.bottom[i]
        if name in self.labels:
            raise InteropError(f"layer '{layer.name}' ({kind}) reads the labels '{name}'; "
                               f"netc networks read only their input")
        if name not in self.tensors:
            raise InteropError(f"layer '{layer.name}' ({kind}) reads '{name}', which no "
                               f"earlier layer writes", hint="check its `bottom:` names")
        return self.tensors[name]

    def add(self, layer, caffe_kind, kind, args, inputs, shape, weights=None, buffers=None):
        name = self._unique(layer.name)
        made = ir.Layer(name, kind, args, list(inputs), weights or {}, buffers or {},
                        source=f"layer '{layer.name}' ({caffe_kind})")
        self.layers.append(made)
        self.shapes[name] = shape
        for top in layer.top:
            self.tensors[top] = name
        return made

    def _unique(self, caffe_name: str) -> str:
        """A netc name (lower-case first letter, letters, digits, _) for a Caffe name
        (`inception_3a/1x1` -> `inception_3a_1x1`), unique."""
        name = re.sub(r"\W", "_", caffe_name, flags=re.ASCII) or "layer"
        name = name[0].lower() + name[1:] if name[0].isalpha() else "l_" + name
        return ir.unique(name, self.used)

    def weights(self, layer, kind, specs) -> dict:
        """The layer's blobs as {key: array of shape} for specs [(key, shape), ...] in Caffe's
        blob order; {} without a caffemodel."""
        if self.blobs is None:
            return {}
        found = self.blobs.get(layer.name)
        if found is None:
            self.missing.append(layer.name)
            return {}
        if len(found) != len(specs):
            raise InteropError(f"layer '{layer.name}' ({kind}) has {len(found)} blobs in the "
                               f"caffemodel; its prototxt needs {len(specs)} "
                               f"({', '.join(key for key, _ in specs)})",
                               hint="use the caffemodel trained with this prototxt")
        out = {}
        for (key, shape), (data, caffe_shape) in zip(specs, found):
            if data.size != math.prod(shape):
                raise InteropError(
                    f"layer '{layer.name}' ({kind}): its {key} in the caffemodel is "
                    f"{'x'.join(map(str, caffe_shape))} ({data.size:,} values); the prototxt "
                    f"needs {'x'.join(map(str, shape))} ({math.prod(shape):,})",
                    hint="use the caffemodel trained with this prototxt")
            out[key] = data.reshape(shape)
        return out

    def check_missing_weights(self, path) -> None:
        if self.missing:
            raise InteropError(f"{path} has no weights for layer(s) "
                               + ", ".join(f"'{n}'" for n in self.missing),
                               hint="layers are matched by name: use the caffemodel trained "
                                    "with this prototxt")

    def window(self, layer, kind, size, k, s, p, rounding, axis) -> tuple:
        try:
            return window_out(size, k, s, p, rounding, axis=axis)
        except LayerError as e:
            raise InteropError(f"layer '{layer.name}' ({kind}): {e.message}", hint=e.hint) \
                from None

    def image(self, layer, kind, src) -> tuple:
        x = self.shape_of(src)
        if len(x) != 3:
            raise InteropError(f"layer '{layer.name}' ({kind}) needs an image (C x H x W); it "
                               f"receives a vector of {x[0]}")
        return x


def pair(layer, kind, p, key, default) -> tuple:
    """(h, w) of a kernel/stride/pad: `key_h`/`key_w` if given, else `key` (one value for both
    or, for convolutions, up to two), else the default."""
    if p.HasField(f"{key}_h") or p.HasField(f"{key}_w"):
        value = (getattr(p, f"{key}_h"), getattr(p, f"{key}_w"))
    else:
        field = "kernel_size" if key == "kernel" else key
        given = getattr(p, field)
        given = list(given) if not isinstance(given, int) else [given] * p.HasField(field)
        if len(given) > 2:
            raise InteropError(f"layer '{layer.name}' ({kind}) has {len(given)} values of "
                               f"{key}: netc's layers are 2-D")
        value = tuple(given * 2)[:2] if given else (default, default)
    if value[0] is None or (key != "pad" and min(value) < 1):
        raise InteropError(f"layer '{layer.name}' ({kind}) needs a {key} of at least 1; "
                           f"received {value}", hint=f"give {key}_size or {key}_h and {key}_w"
                           if key == "kernel" else f"give {key}_h and {key}_w")
    return value


f32 = ir.decimal  # a float32 field as the decimal it was written as (0.1, not 0.100000001...)


