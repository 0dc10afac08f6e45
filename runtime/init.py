"""Initializers: Gaussian(sigma), Xavier (variance 1/n_in), Glorot (2/(n_in + n_out)), He (2/n_in).
Biases start at 0, BN at gamma=1, beta=0, PReLU slopes at 0.25. He is the default for the ReLU
family, Xavier for tanh/sigmoid/linear; `init=` on a layer chooses."""
from __future__ import annotations

import math

import numpy as np

RELU_FAMILY = {"relu", "leaky", "prelu", "elu"}
_ACT_LAYERS = {"RELU": "relu", "LEAKY": "leaky", "PRELU": "prelu", "ELU": "elu",
               "SIGMOID": "sigmoid", "TANH": "tanh"}
GAUSSIAN_SIGMA = 0.01


def default_scheme(net, node) -> str:
    """he when the layer's activation (fused, or the next activation layer, past a BN) is ReLU-like."""
    act = node.hyper.get("act", "none")
    if act == "none":
        succ = list(net.graph.successors(node.name))
        while len(succ) == 1 and net.node(succ[0]).kind in ("BN", "DROPOUT"):
            succ = list(net.graph.successors(succ[0]))
        if len(succ) == 1:
            nxt = net.node(succ[0])
            act = _ACT_LAYERS.get(nxt.kind, nxt.hyper.get("act", "none") if nxt.kind == "ADD" else "none")
    return "he" if act in RELU_FAMILY else "xavier"


def weight(shape, scheme, rng, dtype):
    fan_in = int(np.prod(shape[1:]))
    fan_out = shape[0] * int(np.prod(shape[2:]))
    if scheme == "zeros":
        return np.zeros(shape, dtype)
    std = {"he": math.sqrt(2.0 / fan_in), "xavier": math.sqrt(1.0 / fan_in),
           "glorot": math.sqrt(2.0 / (fan_in + fan_out)), "gaussian": GAUSSIAN_SIGMA}[scheme]
    return (rng.standard_normal(shape) * std).astype(dtype)


def init_node(net, node, rng, dtype) -> dict:
    """Fresh parameters and buffers for one node, by short name."""
    out = {}
    scheme = node.hyper.get("init") or default_scheme(net, node)
    for name, shape in node.params.items():
        if node.kind == "BN":
            out[name] = (np.ones if name == "weight" else np.zeros)(shape, dtype)
        elif name == "bias":
            out[name] = np.zeros(shape, dtype)
        elif name == "slope" or node.kind == "PRELU":
            out[name] = np.full(shape, 0.25, dtype)
        else:
            out[name] = weight(shape, scheme, rng, dtype)
    for name, shape in node.buffers.items():
        out[name] = (np.ones if name == "running_var" else np.zeros)(shape, dtype)
    return out
