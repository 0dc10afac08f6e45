"""Diagrams with Graphviz: nodes show kind and key hyperparameters, edges the tensor shape,
blocks as clusters (folded into one box with depth=K), recurrent layers as one box or, with
unroll=K, as their cells over the steps (the lecture's unrolled picture)."""
from __future__ import annotations

import os
import shutil
import subprocess

import graphviz

from netc.dsl.errors import NetcError

from . import registry
from .graph import Net
from .report import _hw

FORMATS = ("svg", "png", "pdf", "dot")
# the most steps an unrolled recurrent layer shows (past it: the first K-1, "…", the last)
MAX_UNROLL = 64
# an unrolled layer's x_t, h_t and ellipses: text as wide as a cell, so each sits over its cell
_PLAIN = {"shape": "plaintext", "style": "", "width": "1.1"}
_BACK = "<SUP>&larr;</SUP>"  # the reverse direction's states: h with a left arrow


def graph(net: Net, depth: int | None = None, rankdir: str = "TB",
          unroll: int | None = None) -> graphviz.Digraph:
    """The diagram's Graphviz source. `unroll=K` draws every recurrent layer (RNN, LSTM, GRU)
    as its cells over at most K steps (see `_unrolled`); the rest is drawn as without it."""
    kinds = registry.kinds()
    _check_unroll(net, unroll)
    compound = {"compound": "true"} if unroll else {}  # edges that end at a cluster's border
    dot = graphviz.Digraph(net.name, graph_attr={"rankdir": rankdir, "label": net.name,
                                                 "fontname": "Helvetica", "labelloc": "t",
                                                 **compound},
                           node_attr={"shape": "box", "style": "rounded,filled",
                                      "fontname": "Helvetica", "fontsize": "11"},
                           edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    box = {}  # node name -> the drawn box (itself, or its folded block)
    folded = {}
    for n in net.nodes:
        if depth and len(n.path) > depth:
            key = ".".join(n.path[:depth])
            box[n.name] = key
            folded.setdefault(key, []).append(n)
        else:
            box[n.name] = n.name
    clusters: dict = {}
    ends = {}  # an unrolled layer -> (the node its inputs enter, the node its output leaves)
    for n in net.nodes:
        if box[n.name] != n.name:
            continue
        kind = kinds[n.kind]
        if unroll and kind.sequential:
            ends[n.name] = _unrolled(_cluster(dot, clusters, n.path), n, kind, unroll)
            continue
        text = f"{n.path[-1]}\n{kind.label(n.hyper)}" if n.inputs else f"input\n{_input(n)}"
        _cluster(dot, clusters, n.path[:-1]).node(n.name, text, fillcolor=kind.color)
    for key, members in folded.items():
        params = sum(m.param_count for m in members)
        text = f"{key}\n[{len(members)} layers, {params:,} params]"
        _cluster(dot, clusters, tuple(key.split("."))[:-1]).node(key, text, fillcolor="#e6e0f8")
    for a, b, data in net.graph.edges(data=True):
        if box[a] == box[b]:
            continue
        tail, head, clip = box[a], box[b], {}
        if a in ends:  # from the unrolled layer's border
            tail, clip["ltail"] = ends[a][1], _cluster(dot, clusters, net.node(a).path).name
        if b in ends:  # to the unrolled layer's border
            head, clip["lhead"] = ends[b][0], _cluster(dot, clusters, net.node(b).path).name
        dot.edge(tail, head, label=_hw(data["shape"]), **clip)
    for path in list(clusters):  # every enclosing block gets its cluster too
        for k in range(1, len(path)):
            _cluster(dot, clusters, path[:k])
    for path in sorted(clusters, key=len, reverse=True):  # innermost first: subgraph() copies
        (clusters[path[:-1]] if len(path) > 1 else dot).subgraph(clusters[path])
    return dot


def _input(n) -> str:
    """The input box's size: HxWxC, N, or `seq TxD` for a sequence."""
    return ("seq " if len(n.out_shape) == 2 else "") + _hw(n.out_shape)


def _check_unroll(net: Net, unroll):
    """unroll=K needs 2 <= K <= MAX_UNROLL (a step and the next; more are not legible) and a
    recurrent layer to unroll: asked of a network without one, it is an error rather than a
    plain drawing, since the picture asked for cannot be drawn."""
    if unroll is None:
        return
    if isinstance(unroll, bool) or not isinstance(unroll, int) or not 2 <= unroll <= MAX_UNROLL:
        raise NetcError(f"--unroll K draws K steps of each recurrent layer and needs 2 <= K <= "
                        f"{MAX_UNROLL} (a step and the next, linked by the hidden state; more "
                        f"steps than that are not legible); received {unroll!r}",
                        "e.g. --unroll 4 (in Python, unroll=4): a longer sequence is drawn as "
                        "its first K-1 steps, an ellipsis and its last step")
    kinds = registry.kinds()
    if not any(kinds[n.kind].sequential for n in net.nodes):
        names = "/".join(k.name for k in kinds.values() if k.sequential)
        raise NetcError(f"--unroll applies to {names} layers, and network {net.name} has none",
                        "draw it without --unroll")


def _sub(name, t) -> str:
    """An HTML-like Graphviz label: name with subscript t (h_3 as the lectures write it)."""
    return f"<{name}<SUB>{t}</SUB>>"


def _steps(t_len, k):
    """The steps drawn: all T when T <= K, else the first K-1, None (the ellipsis) and T."""
    return list(range(1, t_len + 1)) if t_len <= k else list(range(1, k)) + [None, t_len]


def _unrolled(cluster, n, kind, k) -> tuple:
    """Draw recurrent layer n as the lecture does, in its dashed cluster: a row of cells, one per
    step (at most k; when T > k the first k-1, an ellipsis and step T), each fed x_t and passing
    h_t (and an LSTM's c_t) to the next; the outputs h_t (every step's with return=seq, the last
    with return=last); a note with the one set of weights every step shares. With bidir=true a
    second row runs right to left, and each output joins both rows. Return the nodes where the
    layer's input enters and its output leaves."""
    t_len, name = n.in_shapes[0][0], n.name
    steps, bidir = _steps(t_len, k), n.hyper["bidir"]
    cluster.graph_attr.update(label=f"{'.'.join(n.path)}: {kind.label(n.hyper)}, unrolled over "
                                    f"T = {t_len} steps", fontname="Helvetica")
    with cluster.subgraph(name=f"{name}/inputs", graph_attr={"rank": "same"}) as xs:
        for t in steps:
            xs.node(f"{name}/x{t or ''}", "…" if t is None else _sub("x", t), **_PLAIN)
        xs.node(f"{name}/weights", _shared(n, bidir), shape="note", style="filled",
                fillcolor="#fff2cc", fontsize="9")  # at the right of the inputs
        xs.edge(f"{name}/x{steps[-1]}", f"{name}/weights", style="invis")
    _cells(cluster, n, kind, steps, backward=False)
    if bidir:
        _cells(cluster, n, kind, steps, backward=True)
    outs = [t for t in steps if t is not None] if n.hyper["return"] == "seq" else [t_len]
    for t in outs:  # return=last with bidir: PyTorch's h_n, forward at step T, reverse at 1
        last = len(outs) == 1 and bidir
        text = f"<[h<SUB>{t}</SUB>; h{_BACK}<SUB>1</SUB>]>" if last else _sub("h", t)
        cluster.node(f"{name}/h{t}", text, **_PLAIN)
        cluster.edge(_cell(name, t), f"{name}/h{t}")
        if bidir:
            cluster.edge(_cell(name, 1 if last else t, True), f"{name}/h{t}")
        if last:  # h_n under step T, below the reverse row
            cluster.edge(_cell(name, t, True), f"{name}/h{t}", style="invis")
    return f"{name}/x{steps[0]}", f"{name}/h{outs[-1]}"


def _cell(name, t, backward=False) -> str:
    """The node of step t's cell (None: the ellipsis) in the forward or the reverse row."""
    return f"{name}{'/reverse' if backward else ''}/" + ("more" if t is None else f"t{t}")


def _cells(cluster, n, kind, steps, backward):
    """One row of cells, x_t into each; the states (h, and c for an LSTM) from step to step:
    left to right, or for the reverse direction right to left under the forward row."""
    name, mark = n.name, _BACK if backward else ""
    prefix = f"{name}/reverse" if backward else name
    with cluster.subgraph(name=f"{prefix}/cells", graph_attr={"rank": "same"}) as row:
        for t in steps:
            if t is None:  # under the inputs' ellipsis
                row.node(_cell(name, t, backward), "…", **_PLAIN)
                cluster.edge(f"{name}/x", _cell(name, t, backward), style="invis")
            else:
                text = f"{kind.name} t={t}" + ("\nreverse" if backward else "")
                row.node(_cell(name, t, backward), text, fillcolor=kind.color)
                cluster.edge(f"{name}/x{t}", _cell(name, t, backward))
            if backward:  # step under step
                cluster.edge(_cell(name, t), _cell(name, t, True), style="invis")
    for a, b in zip(steps, steps[1:]):
        if backward:  # the reverse direction hands step b's state to step a
            passed = b if b is not None else a + 1
        else:
            passed = a if a is not None else b - 1
        for s in kind.states:  # h, and an LSTM's cell state c
            cluster.edge(_cell(name, a, backward), _cell(name, b, backward),
                         _sub(s + mark, passed), dir="back" if backward else "forward",
                         style="bold" if s == "h" else "dashed")


def _shared(n, bidir) -> str:
    """The note on an unrolled layer: its one set of weights, shared by every step."""
    own = [f"{k} {_hw(s)}" for k, s in n.params.items() if not k.endswith("_reverse")]
    text = "one set of weights for every step:\\l" + "\\l".join(own) + "\\l"
    if bidir:
        text += "the reverse row has its own set,\\lthe same shapes (…_reverse)\\l"
    return text + f"({n.param_count:,} parameters)\\l"


def _cluster(dot, clusters, path):
    if not path:
        return dot
    if path not in clusters:
        clusters[path] = graphviz.Digraph(name="cluster_" + ".".join(path),
                                          graph_attr={"label": ".".join(path), "style": "dashed",
                                                      "color": "#999999"})
    return clusters[path]


def render(net: Net, out: str, depth: int | None = None, rankdir: str = "TB",
           unroll: int | None = None) -> str:
    """Write the diagram to `out` (.svg, .png, .pdf or .dot); return the path written.
    `unroll=K`: recurrent layers drawn over K steps (see `graph`)."""
    fmt = os.path.splitext(out)[1].lstrip(".").lower()
    if fmt not in FORMATS:
        raise NetcError(f"cannot draw to {out!r}: unknown format {fmt!r}",
                        f"end the file name in one of: {', '.join('.' + f for f in FORMATS)}")
    if rankdir not in ("LR", "TB"):
        raise NetcError(f"--rankdir must be LR or TB; received {rankdir!r}")
    source = graph(net, depth, rankdir, unroll).source
    tmp = out + ".tmp"
    if fmt == "dot":
        _write(tmp, source.encode())
    else:
        exe = shutil.which("dot")
        if exe is None:
            raise NetcError(f"drawing to .{fmt} needs the Graphviz `dot` program, which is not "
                            "installed", "install Graphviz (Debian/Ubuntu: apt-get install graphviz; "
                            "macOS: brew install graphviz), or draw to a .dot file")
        proc = subprocess.run([exe, f"-T{fmt}"], input=source.encode(), capture_output=True)
        if proc.returncode != 0:  # pragma: no cover - a bug in our DOT, not a user mistake
            raise RuntimeError(proc.stderr.decode())
        _write(tmp, proc.stdout)
    os.replace(tmp, out)
    return out


def _write(path, data: bytes):
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise NetcError(f"cannot write {path}: {e.strerror}", "check the folder exists and is writable") from None
