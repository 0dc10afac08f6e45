"""Diagrams with Graphviz: nodes show kind and key hyperparameters, edges the tensor shape,
blocks with structure as clusters (with depth=K folded into boxes that read as the spec's calls:
what is drawn is fold.layout's), recurrent layers as one box or, with unroll=K, as their cells
over the steps (the lecture's unrolled picture). Of a compiled Net (compiler.graph, which
imports this module for Net.draw and a notebook's picture, so this one does not import it)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import warnings

import graphviz

from netc.dsl.errors import NetcError

from . import fold, registry
from .report import _hw

FORMATS = ("svg", "png", "pdf", "dot")
# a .png whose longest path passes more boxes than this (about 11,000 pixels) is drawn folded
LEGIBLE_RANKS = 100
# the most steps an unrolled recurrent layer shows (past it: the first K-1, "…", the last)
MAX_UNROLL = 64
# an unrolled layer's x_t, h_t and ellipses: text as wide as a cell, so each sits over its cell
_PLAIN = {"shape": "plaintext", "style": "", "width": "1.1"}
_BACK = "<SUP>&larr;</SUP>"  # the reverse direction's states: h with a left arrow


def graph(net, depth: int | None = None, rankdir: str = "TB",
          unroll: int | None = None) -> graphviz.Digraph:
    """The diagram's Graphviz source: blocks deeper than `depth` folded into one box each (see
    fold.layout). `unroll=K` draws every recurrent layer (RNN, LSTM, GRU) as its cells over at
    most K steps (see `_unrolled`); the rest is drawn as without it."""
    kinds = registry.kinds()
    _check_unroll(net, unroll)
    compound = {"compound": "true"} if unroll else {}  # edges that end at a cluster's border
    dot = graphviz.Digraph(net.name, graph_attr={"rankdir": rankdir, "label": net.name,
                                                 "fontname": "Helvetica", "labelloc": "t",
                                                 **compound},
                           node_attr={"shape": "box", "style": "rounded,filled",
                                      "fontname": "Helvetica", "fontsize": "11"},
                           edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    unrolled = {n.name for n in net.nodes if unroll and kinds[n.kind].sequential}
    pic = fold.layout(net, depth, unrolled)
    clusters = {p: _new_cluster(p, label) for p, label in pic.clusters.items()}
    ends = {}  # an unrolled layer -> (the node its inputs enter, the node its output leaves)
    for box in pic.boxes:
        home = _home(dot, clusters, box.scope)
        if box.key is not None:
            home.node(box.id, _folded(net, box), fillcolor="#e6e0f8")
            continue
        n = box.nodes[0]
        kind = kinds[n.kind]
        if n.name in unrolled:
            clusters[n.path] = _new_cluster(n.path, "")
            ends[n.name] = _unrolled(clusters[n.path], n, kind, unroll)
            continue
        text = f"{n.path[-1]}\n{kind.label(n.hyper)}" if n.inputs else f"input\n{_input(n)}"
        home.node(n.name, text, fillcolor=kind.color)
    for a, b in pic.edges:
        tail, head, clip = pic.box_of[a].id, pic.box_of[b].id, {}
        if a in ends:  # from the unrolled layer's border
            tail, clip["ltail"] = ends[a][1], clusters[net.node(a).path].name
        if b in ends:  # to the unrolled layer's border
            head, clip["lhead"] = ends[b][0], clusters[net.node(b).path].name
        dot.edge(tail, head, label=_hw(net.graph.edges[a, b]["shape"]), **clip)
    for path in sorted(clusters, key=len, reverse=True):  # innermost first: subgraph() copies
        _home(dot, clusters, path[:-1]).subgraph(clusters[path])
    return dot


def _folded(net, box) -> str:
    """A folded box's label, as the spec reads: the block call (`basic(128, s=2)`, `layer() x6`,
    after the name given with name=), or a branch construct and its size; then its parameters."""
    text, segment = net.scopes.get(box.key, ""), box.key[-1]
    if fold.is_call(text):
        lines = [segment] if fold.named(segment, text) else []
        lines.append(text + (f" x{box.repeat}" if box.repeat > 1 else ""))
    else:
        construct = text[:-len("[...]")] if text.endswith("[...]") else ""
        lines = [segment, f"{construct}[{len(box.nodes)} layers]"]
    params = sum(n.param_count for n in box.nodes)
    return "\n".join(lines + [f"{params:,} params"])


def _home(dot, clusters, path):
    """Where a box in scope `path` is drawn: the innermost drawn cluster around it, or the top."""
    for k in range(len(path), 0, -1):
        if path[:k] in clusters:
            return clusters[path[:k]]
    return dot


def _new_cluster(path, label):
    return graphviz.Digraph(name="cluster_" + ".".join(path),
                            graph_attr={"label": label, "style": "dashed", "color": "#999999"})


def _input(n) -> str:
    """The input box's size: HxWxC, N, or `seq TxD` for a sequence."""
    return ("seq " if len(n.out_shape) == 2 else "") + _hw(n.out_shape)


def _check_unroll(net, unroll):
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


def render(net, out: str, depth: int | None = None, rankdir: str = "TB",
           unroll: int | None = None) -> str:
    """Write the diagram to `out` (.svg, .png, .pdf or .dot); return the path written.
    `depth`: fold blocks deeper than K; 0 draws every layer; None draws every layer too, but for
    a .png whose longest path passes more than LEGIBLE_RANKS boxes, drawn folded as deep as keeps
    it legible (a warning says so). Graphviz's own warnings become Python warnings (the command
    prints them as `warning:` lines). `unroll=K`: recurrent layers drawn over K steps."""
    fmt = os.path.splitext(out)[1].lstrip(".").lower()
    if fmt not in FORMATS:
        raise NetcError(f"cannot draw to {out!r}: unknown format {fmt!r}",
                        f"end the file name in one of: {', '.join('.' + f for f in FORMATS)}")
    if rankdir not in ("LR", "TB"):
        raise NetcError(f"--rankdir must be LR or TB; received {rankdir!r}")
    if depth is None and fmt == "png":
        depth = fold.legible_depth(net, LEGIBLE_RANKS)
        if depth is not None:
            warnings.warn(f"{net.name}: {fold.ranks(net)} layers from input to output make a .png "
                          f"too {'wide' if rankdir == 'LR' else 'tall'} to read: drawn with blocks "
                          f"folded, as --depth {depth} (--depth 0 draws every layer; an .svg "
                          "zooms)", stacklevel=2)
    source = graph(net, depth, rankdir, unroll).source
    data = source.encode() if fmt == "dot" else _dot(source, fmt)
    _write(out, data)
    return out


def svg(net) -> str | None:
    """The diagram as SVG text, folded as a .png would be (a notebook's picture); None where
    Graphviz's `dot` is not installed."""
    if shutil.which("dot") is None:
        return None
    return _dot(graph(net, fold.legible_depth(net, LEGIBLE_RANKS)).source, "svg").decode()


def _dot(source: str, fmt: str) -> bytes:
    """Graphviz's `dot` output for `source`; what it says on stderr, as warnings."""
    exe = shutil.which("dot")
    if exe is None:
        raise NetcError(f"drawing to .{fmt} needs the Graphviz `dot` program, which is not "
                        "installed", "install Graphviz (Debian/Ubuntu: apt-get install graphviz; "
                        "macOS: brew install graphviz), or draw to a .dot file")
    proc = subprocess.run([exe, f"-T{fmt}"], input=source.encode(), capture_output=True)
    if proc.returncode != 0:  # pragma: no cover - a bug in our DOT, not a user mistake
        raise RuntimeError(proc.stderr.decode())
    for line in proc.stderr.decode(errors="replace").splitlines():
        if line.strip():
            warnings.warn(_graphviz_says(line.strip()), stacklevel=3)
    return proc.stdout


def _graphviz_says(line: str) -> str:
    """A line of dot's stderr as a netc warning, with what to do where we know it."""
    text = "Graphviz: " + re.sub(r"^(dot: |Warning: )+", "", line)
    if "too large" in line:
        text += " (fold blocks with --depth K, or draw to .svg, which is not scaled)"
    return text


def _write(out: str, data: bytes):
    """Write `out` whole or not at all: a temporary file beside it, then renamed."""
    tmp = out + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
    except OSError as e:
        raise NetcError(f"cannot write {out}: {e.strerror}",
                        "check the folder exists and is writable") from None
    os.replace(tmp, out)
