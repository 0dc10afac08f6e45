"""What a diagram shows, before Graphviz: boxes (a layer, or a block folded at a depth, with a run
of one block call repeated in one box, as `layer() x6` reads), one edge per tensor between boxes,
and the scopes worth a cluster: structure (branches, joins, blocks of more than a short chain),
not a frame around every conv-BN-ReLU. Of a compiled Net (compiler.graph, not imported: graph
imports draw, which imports this module)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# a scope holding a plain chain of at most this many boxes gets no cluster
SHORT_CHAIN = 3


@dataclass(eq=False)  # a box is itself: compared by identity
class Box:
    id: str                 # a layer's name, or the dotted path of the folded scope (a run's first)
    scope: tuple            # the scope it is drawn in
    nodes: list = field(default_factory=list)  # the layers it stands for
    key: tuple | None = None                   # the folded scope; None for one layer
    repeat: int = 1                            # calls in the run it stands for


@dataclass
class Picture:
    boxes: list             # in topological order
    box_of: dict            # layer name -> Box
    edges: list             # (tail layer, head layer): one per tensor and box it enters
    clusters: dict          # the scopes drawn as clusters -> their label


def layout(net, depth: int | None = None, unrolled=frozenset()) -> Picture:
    """The boxes at `depth` (None or 0: every layer), their edges and clusters; `unrolled`: the
    layers drawn as clusters of their own (a chain that holds one is not a short chain)."""
    boxes, box_of = _boxes(net, depth)
    edges, seen = [], set()
    for a, b in net.graph.edges:
        if box_of[a] is not box_of[b] and (a, box_of[b].id) not in seen:
            seen.add((a, box_of[b].id))
            edges.append((a, b))
    return Picture(boxes, box_of, edges, _clusters(net, boxes, box_of, edges, unrolled))


def ranks(net, depth: int | None = None) -> int:
    """How many boxes the longest path through the diagram at `depth` passes: its height in
    boxes (its width with rankdir=LR)."""
    boxes, box_of = _boxes(net, depth)
    rank = {}
    for box in boxes:  # in topological order: a box's inputs are ranked before it
        rank[box.id] = 1 + max((rank.get(box_of[i].id, 0) for n in box.nodes for i in n.inputs
                                if box_of[i] is not box), default=0)
    return max(rank.values())


def legible_depth(net, most: int) -> int | None:
    """The deepest fold whose longest path has at most `most` boxes: None (every layer) where the
    whole network fits or has no block, else the depth that shows the most (1 where none fits)."""
    deepest = max(len(n.path) for n in net.nodes)
    if deepest < 2 or ranks(net) <= most:  # no block to fold, or no need
        return None
    return next((d for d in range(deepest - 1, 0, -1) if ranks(net, d) <= most), 1)


def is_call(text) -> bool:
    """Whether a scope's text (Net.scopes) is a block call's."""
    return bool(text) and text.endswith(")")


def named(segment: str, text: str) -> bool:
    """Whether a call's scope has the name given with name= (not the counter's `basic3`)."""
    return not re.fullmatch(re.escape(text.split("(")[0]) + r"\d+", segment)


def _sole(net) -> dict:
    """The scopes whose layers all sit in one inner scope (a block that is one RES[...]), and
    that scope's segment."""
    direct, inner = set(), {}
    for n in net.nodes:
        for k in range(1, len(n.path)):
            if k == len(n.path) - 1:
                direct.add(n.path[:k])
            else:
                inner.setdefault(n.path[:k], set()).add(n.path[k])
    return {p: next(iter(segs)) for p, segs in inner.items() if p not in direct and len(segs) == 1}


def _named_by_call(net, key: tuple, sole: dict) -> tuple:
    """Of the scopes that hold the same layers as `key` (basic1 and its one RES[...], a branch
    and the one call in it), the outermost that is a block call, else the outermost."""
    while len(key) > 1 and key[:-1] in sole:
        key = key[:-1]
    inner = key
    while not is_call(net.scopes.get(inner)) and inner in sole:
        inner += (sole[inner],)
    return inner if is_call(net.scopes.get(inner)) else key


def _boxes(net, depth):
    sole = _sole(net) if depth else {}
    boxes, box_of, by_key = [], {}, {}
    for n in net.nodes:
        if not depth or len(n.path) <= depth:
            box_of[n.name] = Box(n.name, n.path[:-1], [n])
            boxes.append(box_of[n.name])
            continue
        key = _named_by_call(net, n.path[:depth], sole)
        if key not in by_key:
            by_key[key] = Box(".".join(key), key[:-1], key=key)
            boxes.append(by_key[key])
        box_of[n.name] = by_key[key]
        by_key[key].nodes.append(n)
    return _merge_runs(net, boxes, box_of), box_of


def _merge_runs(net, boxes, box_of) -> list:
    """One box for consecutive calls of one block with the same arguments, each fed only by the
    one before (`layer() x6`, `basic(64) x2`)."""
    out = []
    for box in boxes:
        prev = out[-1] if out else None
        if prev is not None and prev.key and box.key and _same_call(net, prev, box) and all(
                box_of[i] in (box, prev) for n in box.nodes for i in n.inputs):
            prev.nodes += box.nodes
            prev.repeat += 1
            for n in box.nodes:
                box_of[n.name] = prev
            continue
        out.append(box)
    return out


def _same_call(net, a: Box, b: Box) -> bool:
    text = net.scopes.get(a.key)
    return (a.scope == b.scope and is_call(text) and text == net.scopes.get(b.key)
            and not named(a.key[-1], text) and not named(b.key[-1], text))


def _clusters(net, boxes, box_of, edges, unrolled) -> dict:
    """The scopes to draw as clusters, outermost first, with their labels: every scope a box sits
    in, but for a branch of CONCAT/MEAN (its fork and join show it), a plain chain of at most
    SHORT_CHAIN boxes, and the one scope inside a drawn one that holds nothing else."""
    sole = _sole(net)
    paths = sorted({b.scope[:k] for b in boxes for k in range(1, len(b.scope) + 1)}, key=len)
    ins, outs = {}, {}
    for a, b in edges:
        ins.setdefault(box_of[b].id, set()).add(box_of[a].id)
        outs.setdefault(box_of[a].id, set()).add(box_of[b].id)
    drawn = {}
    for p in paths:
        text = net.scopes.get(p, "")
        inside = [b.id for b in boxes if b.scope[:len(p)] == p]
        short = _plain_chain(inside, ins, outs) and not unrolled.intersection(inside)
        if text == "|" or short or (p[:-1] in drawn and p[:-1] in sole):
            continue
        drawn[p] = f"{p[-1]}: {text}" if is_call(text) else p[-1]
    return drawn


def _plain_chain(ids, ins, outs) -> bool:
    """Whether boxes `ids` (in order) are a chain of at most SHORT_CHAIN, one into the next."""
    if len(ids) > SHORT_CHAIN:
        return False
    return (all(ins.get(b, set()) == {a} for a, b in zip(ids, ids[1:]))
            and all(outs.get(a, set()) == {b} for a, b in zip(ids, ids[1:])))
