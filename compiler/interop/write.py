"""Any imported network (ir.Network) as a .net spec in the lecture's notation and a netc
checkpoint: structure.py finds the chains and branch units, render.py and blocks.py write them,
and the written spec is compiled here to key the weights by the names netc gives.

The weights are matched by structure: netc makes its nodes in the order the spec is written
(a unit's branches, then RES's projection, then the join), which is the order `_made` walks
the structure in, so the compiled nodes and the IR layers pair up one for one; every parameter
and buffer of the compiled network must get exactly one array of its shape, and the totals
must agree."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from netc.compiler import compile as compile_spec
from netc.dsl.errors import NetcError

from netc.compiler.kinds.activation import PRelu
from netc.compiler.kinds.join import Add, Concat, Identity, Mean
from . import blocks, ir, render, structure
from .structure import Ident, Item

NORM_KEYS = ("__netc_norm_mean__", "__netc_norm_std__")


@dataclass
class Written:
    """The spec's text, and its parameters and buffers by the spec's names (float32; with the
    input normalization under NORM_KEYS where the network has one). `arrays` holds no
    parameters where the source had no weights (a Caffe definition without its .caffemodel)."""
    text: str
    arrays: dict = field(default_factory=dict)
    net: object = None  # the text compiled (netc.compiler.Net)


def write(network: ir.Network) -> Written:
    infos = structure.infer(network)
    chain = structure.tree(network, infos)
    text = spec_text(network, chain)
    try:
        net = compile_spec(text)
    except NetcError as e:
        raise ir.InteropError(f"the spec written for {network.name} does not compile: "
                              f"{e.message}", "this is a bug of netc's writer: please report "
                              "it with the source file\n" + text) from None
    arrays = _weights(network, chain, infos, net)
    if network.mean is not None:
        arrays[NORM_KEYS[0]] = np.asarray(network.mean, np.float32)
        arrays[NORM_KEYS[1]] = np.asarray(network.std, np.float32)
    return Written(text, arrays, net)


def spec_text(network: ir.Network, chain: list) -> str:
    dflt = render.defaults(chain)
    defs, calls = blocks.find(chain, dflt)
    lines = [f"network {network.name}", "input " + _input(network.input_shape), ""]
    lines += [render.defaults_line(kind, d) for kind, d in dflt.items()] + [""] * bool(dflt)
    for d in defs:
        for line in d.split("\n"):
            lines += render.wrap(line, "    ")
    lines += [""] * bool(defs)
    texts = [calls.get(i) or render.element(el, render.Plain(), dflt) for i, el in enumerate(chain)]
    lines += render.wrap(" - ".join(render.fold(texts)))
    return "\n".join(lines) + "\n"


def _input(shape) -> str:
    if len(shape) == 3:
        c, h, w = shape
        return f"{h}x{w}x{c}"
    return f"seq {shape[0]}x{shape[1]}" if len(shape) == 2 else str(shape[0])


def _made(chain):
    """(kind netc makes, IR layer or None, IR layers fused into it) in netc's order."""
    for el in chain:
        if isinstance(el, Ident):
            yield Identity.name, None, []
        elif isinstance(el, Item):
            yield el.kind, el.layer, el.fused
        else:
            for c in el.chains:
                yield from _made(c)
            for layer in el.proj:
                yield layer.kind, layer, []
            join = {"RES": Add.name, Mean.name: Mean.name}.get(el.kind, Concat.name)
            yield join, el.join, el.fused


def _weights(network, chain, infos, net) -> dict:
    made, nodes = list(_made(chain)), net.nodes[1:]
    if len(made) != len(nodes) or any(n.kind != m[0] for n, m in zip(nodes, made)):
        raise ir.InteropError(f"the spec written for {network.name} has {len(nodes)} nodes "
                              f"where the structure has {len(made)}",
                              "this is a bug of netc's writer: please report it")
    has = any(layer.weights or layer.buffers for layer in network.layers)
    arrays = {}
    for node, (_, layer, fused) in zip(nodes, made):
        if layer is None:
            continue
        where = layer.source or f"layer {layer.name!r}"
        if node.out_shape != infos[layer.name].out_shape:
            raise ir.InteropError(f"{where}: written as {node.name}, it gives {node.out_shape} "
                                  f"where it should give {infos[layer.name].out_shape}",
                                  "this is a bug of netc's writer: please report it")
        if has:
            arrays.update(_arrays(node, layer, fused, where))
    if has:
        total = sum(a.size for layer in network.layers for a in layer.weights.values())
        if total != net.total_params:
            raise ir.InteropError(f"the source has {total:,} parameters, the written spec "
                                  f"{net.total_params:,}", "this is a bug of netc's writer")
    return arrays


def _arrays(node, layer, fused, where) -> dict:
    """The IR layer's arrays under the compiled node's names, each checked against its shape."""
    src = {**layer.weights, **layer.buffers}
    for f in fused:
        if f.kind == PRelu.name and "weight" in f.weights:
            src["slope"] = f.weights["weight"]
    out = {}
    for short, shape in {**node.params, **node.buffers}.items():
        if short not in src:
            raise ir.InteropError(f"{where}: no {short!r} array for the written spec's "
                                  f"{node.name}.{short} ({'x'.join(map(str, shape))})",
                                  "is the source missing weights?")
        a = np.asarray(src.pop(short), np.float32)
        if a.shape != tuple(shape):
            if a.size != math.prod(shape):
                raise ir.InteropError(f"{where}: its {short!r} has shape {a.shape}; the "
                                      f"written spec's {node.name}.{short} needs {tuple(shape)}")
            a = a.reshape(shape)
        out[f"{node.name}.{short}"] = a
    if src:
        raise ir.InteropError(f"{where}: arrays {', '.join(sorted(src))} have no place in the "
                              f"written spec's {node.name} ({node.kind})")
    return out
