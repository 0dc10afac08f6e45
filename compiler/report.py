"""Accounting reports: memory estimates, the summary table, the JSON document, each of a compiled
Net (compiler.graph, which imports this module for Net.summary)."""
from __future__ import annotations

import math

from . import registry, table
from .settings import LBFGS_HISTORY, OPTIMIZER_STATE


def state_per_value(optimizer: str, history: int = LBFGS_HISTORY) -> int:
    if optimizer == "lbfgs":
        return 2 * history + 2  # s and y pairs, the previous gradient and direction
    return OPTIMIZER_STATE[optimizer]


def memory(net, batch: int = 1, optimizer: str = "sgd", itemsize: int = 4,
           frozen=None) -> dict:
    """Bytes for float32 values: parameters, forward activations, and a training estimate.

    training = parameters + buffers + gradients + optimizer state
               + batch * every node's output and what else backward keeps (the gates of
                 every step of a recurrent layer)
               + batch * 2 * the largest output (the gradient flowing back, in and out).
    `frozen`: the layers that do not train (by default those the spec's train section freezes)."""
    trainable = net.trainable(frozen)
    params = net.total_params * itemsize
    buffers = net.buffer_count * itemsize
    grads = trainable * itemsize
    state = state_per_value(optimizer) * trainable * itemsize
    acts = batch * (net.activation_count + net.kept_count) * itemsize
    largest = max(n.activations for n in net.nodes)
    training = params + buffers + grads + state + acts + 2 * batch * largest * itemsize
    return {"itemsize": itemsize, "batch": batch, "optimizer": optimizer,
            "parameters": params, "buffers": buffers, "activations": acts,
            "gradients": grads, "optimizer_state": state, "training": training}


def _hw(shape) -> str:
    """Shapes as the lectures write them: H x W x C; sequences T x D; vectors N."""
    if len(shape) == 3:
        return f"{shape[1]}x{shape[2]}x{shape[0]}"
    return "x".join(map(str, shape))


def _rf(node) -> str:
    rf = node.receptive_field
    if rf is None:
        return "-"
    return f"{rf[0]:g}" if rf[0] == rf[1] else f"{rf[0]:g}x{rf[1]:g}"


def _float(n) -> float:
    """n as a float; an integer beyond a float's range as an infinity."""
    try:
        return float(n)
    except OverflowError:
        return math.inf if n > 0 else -math.inf


def human(n: float, unit: str = "") -> str:
    """1.23G; past 1000T in powers of ten (1.23e+18)."""
    x = _float(n)
    if abs(x) >= 1e15:
        return f"{x:.3g}{unit}"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f}{suffix}{unit}"
    return f"{x:g}{unit}"


def human_bytes(n: float) -> str:
    """1.23 GiB; past 1024 TiB in powers of ten (1.23e+18 B)."""
    x = _float(n)
    if x >= 2**50:
        return f"{x:.3g} B"
    for div, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if x >= div:
            return f"{x / div:.2f} {suffix}"
    return f"{int(x)} B"


def both_bytes(n: float) -> str:
    """Binary and decimal units side by side, for comparing with tools that print MB (10^6
    bytes): "97.49 MiB (102.23 MB)"."""
    x = _float(n)
    for div, suffix in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if 1024 <= x < 1e15 and x >= div:
            return f"{human_bytes(n)} ({x / div:.2f} {suffix})"
    return human_bytes(n)


def _groups(net, depth: int | None):
    """Consecutive nodes as the table shows them: (None, [node]) for a row of its own, (path
    prefix, [nodes]) for the nodes folded at `depth` path segments into one row."""
    out = []
    for node in net.nodes:
        key = node.path[:depth] if depth and len(node.path) > depth else None
        if key is not None and out and out[-1][0] == key:
            out[-1][1].append(node)
        else:
            out.append((key, [node]))
    return out


def _row_name(node, depth: int | None) -> str:
    """The name of the row that shows `node`: its own, or its block's when folded."""
    return ".".join(node.path[:depth]) if depth and len(node.path) > depth else node.name


def _joined(net, join, depth: int | None) -> str:
    """What a join (ADD, CONCAT, MEAN) joins: its branches by name (b1, b2, ...) or, for an input
    from outside its block, the row that shows that input: "(b1, b2, b3, b4)", "(bn2, pool1)"."""
    prefix = join.path[:-1]
    names = []
    for name in join.inputs:
        src = net.node(name)
        inside = src.path[:len(prefix)] == prefix and len(src.path) > len(prefix)
        names.append(src.path[len(prefix)] if inside else _row_name(src, depth))
    return "(" + ", ".join(names) + ")"


def _fold_label(net, key, nodes, depth: int) -> str:
    """A folded row's label: a block call as the spec writes it (`basic(128, s=2)`) and its
    layer count; a branch construct's layer count, outermost join and what that joins (the
    unfolded rows name a call's joins)."""
    label = f"[{len(nodes)} layer{'s' if len(nodes) > 1 else ''}]"
    made = getattr(net, "scopes", {}).get(tuple(key), "")
    if "(" in made:  # a block call
        return f"{made} {label}"
    joins = [n for n in nodes if len(n.inputs) > 1]
    if not joins:
        return label
    top = [j for j in joins if len(j.path) == min(len(j.path) for j in joins)]
    if len(top) == 1:
        return f"{label} {top[0].kind} {_joined(net, top[0], depth)}"
    kinds = sorted({j.kind for j in top})
    return f"{label} {len(top)} x {kinds[0]}" if len(kinds) == 1 else f"{label} {len(top)} joins"


def rows(net, depth: int | None = None):
    """Table rows: one per node, or one per block folded at `depth` path segments."""
    kinds = registry.kinds()
    out = []
    for key, nodes in _groups(net, depth):
        last = nodes[-1]
        if key is None:
            label = kinds[last.kind].label(last.hyper)
            if len(last.inputs) > 1:
                label = f"{label} {_joined(net, last, depth)}"
            parts = kinds[last.kind].parts(last.hyper, last.in_shapes)
        else:
            label, parts = _fold_label(net, key, nodes, depth), []
        out.append({"fold": key, "name": ".".join(key) if key else last.name, "label": label,
                    "layers": len(nodes), "shape": _hw(last.out_shape),
                    "params": sum(n.param_count for n in nodes),
                    "macs": sum(n.macs for n in nodes),
                    "activations": sum(n.activations for n in nodes), "rf": _rf(last),
                    "parts": parts})
    return out


COLUMNS = (table.Column("layer", wrap="."), table.Column("kind", wrap=" "), table.Column("output"),
           table.Column("params", right=True), table.Column("MACs", right=True, drop=3),
           table.Column("activations", right=True, drop=2), table.Column("RF", right=True, drop=1))
LABEL = 20  # the footer's labels: "total params        "
MIN_WIDTH = 40


def summary(net, batch: int = 1, depth: int | None = None, optimizer: str = "sgd", *,
            width: int | None = None) -> str:
    """The lecture's table: layer, output shape, params, MACs, activations, receptive field.

    `width`: fit that many characters (None or 0: no limit; at least MIN_WIDTH): long names and
    labels wrap, then RF, activations and MACs are left out in that order, with a line that says
    so."""
    width = max(width, MIN_WIDTH) if width else None
    body = []
    for r in rows(net, depth):
        body.append((r["name"], r["label"], r["shape"], f"{r['params']:,}", f"{r['macs']:,}",
                     f"{r['activations']:,}", r["rf"]))
        # a layer's parts (an LSTM's gates), indented under it
        body += [("", f"  {part}", "", f"{p:,}", f"{m:,}", "", "") for part, p, m in r["parts"]]
    kept, widths, dropped = table.fit(COLUMNS, body, width)
    lines = table.render(COLUMNS, body, kept, widths)
    rule = "-" * table.table_width(kept, widths)
    seq = "seq " if len(net.input_shape) == 2 else ""
    out = table.wrap_line(f"network {net.name}: input {seq}{_hw(net.input_shape)}", width, 2)
    out += [rule, lines[0], rule] + lines[1:] + [rule]
    if dropped:
        out += table.wrap_line(f"not shown, to fit {width} columns: {', '.join(dropped)}; "
                               "--width 0 (Python: width=0) shows them", width)
    for text in _totals(net, batch, optimizer, rule):
        out += [rule] if text == rule else table.wrap_line(text, width, LABEL)
    return "\n".join(out)


def _totals(net, batch: int, optimizer: str, rule: str) -> list[str]:
    mem = memory(net, batch, optimizer)
    frozen = net.total_params - net.trainable_params
    lines = [f"total params        {net.total_params:>16,}  ({human(net.total_params)})",
             f"trainable params    {net.trainable_params:>16,}"]
    if frozen:
        count = sum(1 for n in net.nodes if n.name in net.frozen)
        patterns = ", ".join(net.train.get("freeze", ()))
        by = f" by freeze=[{patterns}]" if patterns else ""
        lines.append(f"non-trainable params{frozen:>16,}  (frozen{by}: "
                     f"{count} layer{'s' if count > 1 else ''})")
    if net.buffer_count:
        lines.append(f"running statistics  {net.buffer_count:>16,}  (BN mean/var, not parameters)")
    lines += [f"multiply-adds       {net.total_macs:>16,}  ({human(net.total_macs)}MAC per sample)",
              f"other FLOPs         {net.total_flops:>16,}  (bias, activations, pooling, BN ...)",
              f"activations         {net.activation_count:>16,}  (per sample, input included)",
              rule,
              f"memory (float32)    parameters {both_bytes(mem['parameters'] + mem['buffers'])}, "
              f"activations {both_bytes(mem['activations'])} at batch {batch}",
              f"training estimate   {both_bytes(mem['training'])} at batch {batch} "
              f"with {optimizer}: parameters + gradients and optimizer state of the trainable "
              "ones + activations kept for backward"]
    return lines


def one_line(net, batch: int = 1, optimizer: str = "sgd", frozen=None) -> str:
    mem = memory(net, batch, optimizer, frozen=frozen)
    return (f"{net.name}: {net.trainable(frozen):,} params, {human(net.total_macs)}MACs/sample, "
            f"~{human_bytes(mem['training'])} to train at batch {batch} with {optimizer}")


def _layer_json(net, n, depth: int | None) -> dict:
    hyper = {k: (list(v) if isinstance(v, tuple) else v) for k, v in n.hyper.items()}
    return {
        "name": n.name, "path": ".".join(n.path), "kind": n.kind,
        "inputs": [_row_name(net.node(i), depth) for i in n.inputs],
        "output_shape": list(n.out_shape), "params": n.param_count,
        "trainable_params": 0 if n.name in net.frozen else n.param_count,
        "buffers": n.buffer_count, "macs": n.macs, "flops": n.flops,
        "activations": n.activations, "kept_for_backward": n.kept,
        "parts": [{"part": part, "params": p, "macs": m}
                  for part, p, m in registry.kinds()[n.kind].parts(n.hyper, n.in_shapes)],
        "receptive_field": list(n.receptive_field) if n.receptive_field else None,
        "jump": list(n.jump) if n.jump else None, "hyper": hyper,
        "param_shapes": {k: list(v) for k, v in n.param_names().items()},
        "line": n.line}


def _folded_json(net, key, nodes, depth: int) -> dict:
    """A block folded as the table folds it: the sums of its layers, the last one's output, and
    `folded`, the layers it holds; `inputs` name what feeds it from outside."""
    inside = {n.name for n in nodes}
    inputs = [_row_name(net.node(i), depth) for n in nodes for i in n.inputs if i not in inside]
    last = nodes[-1]
    each = [_layer_json(net, n, depth) for n in nodes]
    total = {k: sum(e[k] for e in each) for k in ("params", "trainable_params", "buffers", "macs",
                                                  "flops", "activations", "kept_for_backward")}
    return {"name": ".".join(key), "path": ".".join(key), "kind": "BLOCK",
            "label": _fold_label(net, key, nodes, depth), "inputs": list(dict.fromkeys(inputs)),
            "output_shape": list(last.out_shape), **total, "parts": [],
            "receptive_field": list(last.receptive_field) if last.receptive_field else None,
            "jump": list(last.jump) if last.jump else None, "hyper": {},
            "param_shapes": {k: list(v) for n in nodes for k, v in n.param_names().items()},
            "line": nodes[0].line, "folded": [n.name for n in nodes]}


def to_json(net, batch: int = 1, optimizer: str = "sgd", *, depth: int | None = None) -> dict:
    """The summary as one document; `depth` folds the layers list as the table folds its rows
    (the totals stay the network's). Memory sizes are in bytes."""
    layers = [_layer_json(net, nodes[0], depth) if key is None
              else _folded_json(net, key, nodes, depth) for key, nodes in _groups(net, depth)]
    return {"network": net.name, "input_shape": list(net.input_shape), "depth": depth,
            "layers": layers, "total_params": net.total_params,
            "trainable_params": net.trainable_params,
            "non_trainable_params": net.total_params - net.trainable_params,
            "frozen": [n.name for n in net.nodes if n.name in net.frozen],
            "buffers": net.buffer_count, "total_macs": net.total_macs,
            "total_flops": net.total_flops, "activation_count": net.activation_count,
            "memory": {"unit": "bytes", **memory(net, batch, optimizer)},
            "warnings": [w.format() for w in net.warnings]}
