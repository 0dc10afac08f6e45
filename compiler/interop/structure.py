"""An imported network's DAG as the lecture's nested structure: chains of layers and branch
units (RES, CONCAT, DENSE, MEAN), for render.py to write and write.py to map weights by.

Each layer's shape is inferred with netc's own kind rules first, so that what netc cannot
express fails here, naming the source layer. The structure is read backwards from the output:
a join's branches start at its immediate dominator (the fork every path to it passes), so any
nesting of forks and joins is found; a layer read by two branches that do not join that way
is an error. Then activations fuse into the CONV/FC/ADD before them, and the last FC with its
softmax becomes OUT."""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from netc.compiler import registry
from netc.compiler.registry import FUSED_PARAM, LayerError

from netc.compiler.kinds.activation import Elu, Leaky, PRelu, Relu, Sigmoid, Softmax, Tanh
from netc.compiler.kinds.conv import Conv, Deconv
from netc.compiler.kinds.dense import Flatten, FullyConnected, Output
from netc.compiler.kinds.join import Add, Concat, Mean
from netc.compiler.kinds.norm import BatchNorm, GroupNorm, InstanceNorm, LayerNorm
from . import ir

INPUT = "input"
JOINS = (Add.name, Concat.name, Mean.name)
NORMS = (BatchNorm.name, LayerNorm.name, InstanceNorm.name, GroupNorm.name)
FUSES_INTO = (Conv.name, Deconv.name, FullyConnected.name)
ACT_WORDS = {Relu.name: "relu", Leaky.name: "leaky", PRelu.name: "prelu", Elu.name: "elu",
             Sigmoid.name: "sigmoid", Tanh.name: "tanh"}


@dataclass
class Info:
    """A layer's netc hyperparameters (defaults filled, resolved) and shapes."""
    hyper: dict
    in_shapes: tuple
    out_shape: tuple


@dataclass
class Item:
    """One written layer: its IR layer, the kind written (FC's may be OUT), the resolved
    hyperparameters (with a fused act=), and the activation layers fused into it."""
    layer: ir.Layer
    kind: str
    hyper: dict
    info: Info
    fused: list = field(default_factory=list)


@dataclass
class Ident:
    """ID: a branch that passes its input through (CONCAT[ID | ...])."""
    shape: tuple


@dataclass
class Unit:
    """A branch unit: RES (chains: [body]; proj: the shortcut's IR layers, which netc makes
    itself), CONCAT and MEAN (a chain per branch), DENSE ([body]); join: the IR join layer."""
    kind: str
    chains: list
    join: ir.Layer
    proj: list = field(default_factory=list)
    act: str = "none"
    fused: list = field(default_factory=list)


def infer(network: ir.Network) -> dict:
    """name -> Info for every layer, by netc's kind rules (an error names the source layer)."""
    infos = {INPUT: Info({}, (), tuple(network.input_shape))}
    for layer in network.layers:
        where = layer.source or f"layer {layer.name!r}"
        try:
            kind = registry.get(layer.kind)
            xs = tuple(infos[i].out_shape for i in layer.inputs)
        except (LayerError, KeyError) as e:
            raise ir.InteropError(f"{where}: " + (e.message if isinstance(e, LayerError) else
                                  f"reads {e.args[0]!r}, which no earlier layer makes")) from None
        hyper = dict(layer.args)
        if layer.kind == Add.name:
            hyper.setdefault("act", "none")
        for key, k in kind.all_keys().items():
            if key not in hyper and k.default is not None and key != "name":
                hyper[key] = k.parse(k.default, key)
        try:
            _fits(kind, xs)
            hyper = kind.resolve(hyper, xs)
            infos[layer.name] = Info(hyper, xs, tuple(kind.shape(hyper, xs)))
        except LayerError as e:
            raise ir.InteropError(f"{where}: netc's {layer.kind} cannot take it: {e.message}",
                                  e.hint) from None
    return infos


def _fits(kind, xs):
    for x in xs:
        if (kind.spatial and len(x) != 3) or (kind.sequential and len(x) != 2) or \
                (len(x) == 2 and not kind.on_sequences):
            shown = "x".join(map(str, x))
            raise LayerError(f"its input is {shown}, a shape {kind.name} does not take",
                             "netc's image layers come before the first FC/GAP/FLATTEN")


def tree(network: ir.Network, infos: dict) -> list:
    """The network as a chain of Items, Idents and Units (see the module's docstring)."""
    if not network.layers:
        raise ir.InteropError("the network has no layers")
    g = nx.DiGraph()
    g.add_node(INPUT)
    for layer in network.layers:
        g.add_node(layer.name)
        g.add_edges_from((i, layer.name) for i in layer.inputs)
    parser = _Parser(network, infos, nx.immediate_dominators(g, INPUT))
    chain = parser.back(network.layers[-1].name, INPUT)
    seen = parser.seen
    for layer in network.layers:
        if layer.name not in seen:
            raise ir.InteropError(f"{layer.source or layer.name}: its output does not lead to "
                                  "the network's output", "a netc network has one output")
    return _fuse(chain, network, infos, last=True)


class _Parser:
    def __init__(self, network, infos, idom):
        self.net, self.infos, self.idom = network, infos, idom
        self.by = {x.name: x for x in network.layers}
        self.seen = set()

    def take(self, layer):
        if layer.name in self.seen:
            raise ir.InteropError(f"{layer.source or layer.name}: read by branches that do not "
                                  "join as nested forks and joins", "netc writes branches as "
                                  "RES[...], CONCAT[a | b], DENSE[...] and MEAN[a | b]")
        self.seen.add(layer.name)

    def back(self, name, stop) -> list:
        """The chain from `stop`'s output to `name`'s output, read backwards."""
        out = []
        while name != stop:
            layer = self.by[name]
            self.take(layer)
            if layer.kind in JOINS:
                fork = self.idom[name]
                out.append(self.unit(layer, [self.back(i, fork) for i in layer.inputs], fork))
                name = fork
            else:
                info = self.infos[name]
                out.append(Item(layer, layer.kind, dict(info.hyper), info))
                name = layer.inputs[0]
        return out[::-1]

    def unit(self, join, chains, fork):
        x = self.infos[fork].out_shape
        ident = [Ident(x)]
        if join.kind == Mean.name:
            return Unit(Mean.name, [c or ident for c in chains], join)
        if join.kind == Concat.name:
            if len(chains) == 2 and not chains[0] and chains[1]:
                return Unit("DENSE", [chains[1]], join)
            return Unit(Concat.name, [c or ident for c in chains], join)
        if len(chains) != 2:
            raise ir.InteropError(f"{join.source or join.name}: a sum of {len(chains)} branches; "
                                  "netc's RES adds two")
        for s in (1, 0):
            body, short = chains[1 - s], chains[s]
            if not short:
                return Unit("RES", [body or ident], join)
            if _is_projection(short, body, x, self.infos[join.name].out_shape):
                return Unit("RES", [body], join, proj=[it.layer for it in short])
        raise ir.InteropError(
            f"{join.source or join.name}: adds two computed branches, and neither is netc's "
            "shortcut (the input itself, or the 1x1 strided projection RES makes when shapes "
            "differ: CONV 1x1 with the needed stride, bias-free and followed by the body's first "
            "normalization where the body has one)", "netc writes residual units as RES[...]")


def _is_projection(short, body, x, y):
    """Whether `short` is the shortcut netc's RES makes from x to the body's output y."""
    if x == y or len(x) != len(y) or not all(isinstance(it, Item) for it in short):
        return False
    if len(x) == 1:
        h = short[0].hyper
        return (len(short) == 1 and short[0].kind == FullyConnected.name and h["units"] == y[0]
                and h["bias"]
                and h["act"] == "none")
    s = max(1, round(x[1] / y[1])), max(1, round(x[2] / y[2]))
    norm = next((it for it in items(body) if isinstance(it, Item) and it.kind in NORMS), None)
    h = short[0].hyper
    conv = (short[0].kind == Conv.name and h["kernel"] == (1, 1) and h["stride"] == s
            and h["pad"] == (0, 0) and h["groups"] == 1 and h["act"] == "none"
            and h["filters"] == y[0] and h["bias"] == (norm is None))
    if norm is None:
        return conv and len(short) == 1
    return (conv and len(short) == 2 and short[1].kind == norm.kind
            and _norm_keys(short[1].hyper) == _norm_keys(norm.hyper))


def _norm_keys(h):
    return {k: v for k, v in h.items() if k not in ("name", "init")}


def items(chain):
    """Every Item, Ident and Unit of a chain, nested ones included, in the order netc makes
    their nodes."""
    for el in chain:
        if isinstance(el, Unit):
            for c in el.chains:
                yield from items(c)
            yield el
        else:
            yield el


def _act(item):
    """The act= word an activation Item can fuse as (leaky and ELU only with the parameter
    act= implies), or None."""
    word = ACT_WORDS.get(item.kind)
    if word in FUSED_PARAM and item.hyper.get("slope", item.hyper.get("alpha")) != \
            FUSED_PARAM[word]:
        return None
    return word


def _fuse(chain, network, infos, last=False):
    """Fold activations into the CONV/DECONV/FC or RES before them, and the final FC with its
    softmax/sigmoid into OUT; drop FLATTENs that netc's FC does itself."""
    out = []
    for el in chain:
        if isinstance(el, Unit):
            el.chains = [_fuse(c, network, infos) for c in el.chains]
        prev = out[-1] if out else None
        word = _act(el) if isinstance(el, Item) else None
        owner = prev.layer if isinstance(prev, Item) else prev.join if isinstance(prev, Unit) \
            else None
        if word and owner is not None and len(network.consumers(owner.name)) == 1:
            if isinstance(prev, Item) and prev.kind in FUSES_INTO and \
                    prev.hyper["act"] == "none" and (word != "prelu" or not el.hyper["shared"]):
                prev.hyper["act"] = word
                prev.fused.append(el.layer)
                continue
            if isinstance(prev, Unit) and prev.kind == "RES" and prev.act == "none" and \
                    word != "prelu":
                prev.act = word
                prev.fused.append(el.layer)
                continue
        out.append(el)
    out = [el for i, el in enumerate(out) if not _redundant_flatten(el, out[i + 1:i + 2])]
    if last and out and isinstance(out[-1], Item):
        _to_out(out)
    return out


def _redundant_flatten(el, after):
    if not isinstance(el, Item) or el.kind != Flatten.name:
        return False
    return len(el.info.in_shapes[0]) == 1 or (
        bool(after) and isinstance(after[0], Item) and after[0].kind == FullyConnected.name
        and len(el.info.in_shapes[0]) == 3)


def _to_out(out):
    """The network's last FC (+ its softmax or sigmoid) as OUT."""
    end = out[-1]
    if end.kind in (Softmax.name, Sigmoid.name) and end.hyper.get("per", "sample") == "sample" and \
            len(out) > 1 and isinstance(out[-2], Item) and out[-2].kind == FullyConnected.name and \
            out[-2].hyper["act"] == "none" and len(out[-2].info.out_shape) == 1:
        fc = out[-2]
        fc.kind, fc.hyper = Output.name, {**fc.hyper, "act": end.kind.lower(), "per": "sample"}
        fc.fused.append(end.layer)
        out.pop()
    elif end.kind == FullyConnected.name and end.hyper["act"] in ("none", "sigmoid"):
        end.kind, end.hyper = Output.name, {**end.hyper, "per": "sample"}
