"""The importers' intermediate form: a network as a list of netc layers in topological order,
each with its netc kind, its hyperparameters in netc's resolved form and its weights in netc's
(PyTorch's) layouts. A reader (ONNX, Caffe) produces one; the writer (write.py) folds it into
lecture notation (chains, repeats, RES/CONCAT/DENSE, defaults lines) and maps the weights onto
the written spec's parameter names."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from netc.dsl.errors import NetcError


class InteropError(NetcError):
    """A source network netc cannot express: the message names the operator or layer, where it
    is, and what netc would need."""


def network_name(name: str) -> str:
    """A name the `network` statement takes (letters, digits, _ . -; a letter or _ first)."""
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", name)
    return name if re.match(r"[A-Za-z_]", name) else "net_" + name


def decimal(value) -> float:
    """A float32 field as the decimal it was written as (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(value)))


def unique(base: str, taken: set, avoid=()) -> str:
    """base, or base_2, base_3 ... : the first not in `taken` (nor `avoid`), added to taken."""
    name, k = base, 1
    while name in taken or name in avoid:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


@dataclass
class Layer:
    """One netc layer of an imported network.

    kind: a registered netc kind (CONV, POOL, FC, BN, RELU, ...) or a join: ADD (elementwise
      sum of its inputs, no activation: a following RELU is a separate layer), CONCAT (along
      channels, inputs in order), MEAN.
    args: netc hyperparameters by key, in the resolved form the compiler's Node.hyper has
      (kernel=(3, 3), stride=(2, 2), pad=(1, 1), filters=64, groups=1, bias=True, act="none",
      mode="max", round="floor", units=10, eps=1e-5, ...). Keys at their netc default may be
      left out.
    inputs: the names of the layers it reads, in order; "input" is the network's input.
    weights: short name -> array in netc's layout ("weight" (C_out, C_in/g, kH, kW) for CONV,
      (units, in) for FC, BN's "weight"/"bias"; its "running_mean"/"running_var" go in
      buffers)."""

    name: str
    kind: str
    args: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    weights: dict = field(default_factory=dict)
    buffers: dict = field(default_factory=dict)
    source: str = ""  # where it came from, for messages ("node 'Conv_3' (Conv)", "layer 'conv1'")


@dataclass
class Network:
    """An imported network: its name, netc's input shape ((C, H, W), (D,) or (T, D)), its
    layers in topological order (the last one is the output), and the input normalization the
    source applied first, if any (broadcastable to the input shape), kept as a netc checkpoint
    keeps it."""

    name: str
    input_shape: tuple
    layers: list
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def consumers(self, name: str) -> list:
        return [layer for layer in self.layers if name in layer.inputs]
