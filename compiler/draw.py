"""Diagrams with Graphviz: nodes show kind and key hyperparameters, edges the tensor shape,
blocks as clusters (folded into one box with depth=K)."""
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


def graph(net: Net, depth: int | None = None, rankdir: str = "TB") -> graphviz.Digraph:
    kinds = registry.kinds()
    dot = graphviz.Digraph(net.name, graph_attr={"rankdir": rankdir, "label": net.name,
                                                 "fontname": "Helvetica", "labelloc": "t"},
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
    for n in net.nodes:
        if box[n.name] != n.name:
            continue
        kind = kinds[n.kind]
        text = f"{n.path[-1]}\n{kind.label(n.hyper)}" if n.inputs else f"input\n{_hw(n.out_shape)}"
        _cluster(dot, clusters, n.path[:-1]).node(n.name, text, fillcolor=kind.color)
    for key, members in folded.items():
        params = sum(m.param_count for m in members)
        text = f"{key}\n[{len(members)} layers, {params:,} params]"
        _cluster(dot, clusters, tuple(key.split("."))[:-1]).node(key, text, fillcolor="#e6e0f8")
    for a, b, data in net.graph.edges(data=True):
        if box[a] != box[b]:
            dot.edge(box[a], box[b], label=_hw(data["shape"]))
    for path in list(clusters):  # every enclosing block gets its cluster too
        for k in range(1, len(path)):
            _cluster(dot, clusters, path[:k])
    for path in sorted(clusters, key=len, reverse=True):  # innermost first: subgraph() copies
        (clusters[path[:-1]] if len(path) > 1 else dot).subgraph(clusters[path])
    return dot


def _cluster(dot, clusters, path):
    if not path:
        return dot
    if path not in clusters:
        clusters[path] = graphviz.Digraph(name="cluster_" + ".".join(path),
                                          graph_attr={"label": ".".join(path), "style": "dashed",
                                                      "color": "#999999"})
    return clusters[path]


def render(net: Net, out: str, depth: int | None = None, rankdir: str = "TB") -> str:
    """Write the diagram to `out` (.svg, .png, .pdf or .dot); return the path written."""
    fmt = os.path.splitext(out)[1].lstrip(".").lower()
    if fmt not in FORMATS:
        raise NetcError(f"cannot draw to {out!r}: unknown format {fmt!r}",
                        f"end the file name in one of: {', '.join('.' + f for f in FORMATS)}")
    if rankdir not in ("LR", "TB"):
        raise NetcError(f"--rankdir must be LR or TB; received {rankdir!r}")
    source = graph(net, depth, rankdir).source
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
