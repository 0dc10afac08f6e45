"""Accounting reports: memory estimates, the summary table, the JSON document."""
from __future__ import annotations

import math

from . import registry
from .graph import Net
from .settings import LBFGS_HISTORY, OPTIMIZER_STATE


def state_per_value(optimizer: str, history: int = LBFGS_HISTORY) -> int:
    if optimizer == "lbfgs":
        return 2 * history + 2  # s and y pairs, the previous gradient and direction
    return OPTIMIZER_STATE[optimizer]


def memory(net: Net, batch: int = 1, optimizer: str = "sgd", itemsize: int = 4,
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


def rows(net: Net, depth: int | None = None):
    """Table rows: one per node, or one per block folded at `depth` path segments."""
    kinds = registry.kinds()
    out = []
    for node in net.nodes:
        key = node.path[:depth] if depth and len(node.path) > depth else None
        if key is not None and out and out[-1]["fold"] == key:
            row = out[-1]
            row["params"] += node.param_count
            row["macs"] += node.macs
            row["activations"] += node.activations
            row["shape"], row["rf"], row["layers"] = _hw(node.out_shape), _rf(node), row["layers"] + 1
            continue
        label = kinds[node.kind].label(node.hyper)
        out.append({"fold": key, "name": ".".join(key) if key else node.name,
                    "label": label if key is None else "", "layers": 1,
                    "shape": _hw(node.out_shape), "params": node.param_count, "macs": node.macs,
                    "activations": node.activations, "rf": _rf(node),
                    "parts": kinds[node.kind].parts(node.hyper, node.in_shapes)})
    for row in out:
        if row["fold"] is not None:
            row["label"] = f"[{row['layers']} layers]"
    return out


def summary(net: Net, batch: int = 1, depth: int | None = None, optimizer: str = "sgd") -> str:
    """The lecture's table: layer, output shape, params, MACs, activations, receptive field."""
    table = rows(net, depth)
    head = ("layer", "kind", "output", "params", "MACs", "activations", "RF")
    body = []
    for r in table:
        body.append((r["name"], r["label"], r["shape"], f"{r['params']:,}", f"{r['macs']:,}",
                     f"{r['activations']:,}", r["rf"]))
        if r["fold"] is None:  # a layer's parts (an LSTM's gates), indented under it
            body += [("", f"  {part}", "", f"{p:,}", f"{m:,}", "", "") for part, p, m in r["parts"]]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    right = {3, 4, 5, 6}

    def line(cells):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "-" * len(line(head))
    mem = memory(net, batch, optimizer)
    frozen = net.total_params - net.trainable_params
    seq = "seq " if len(net.input_shape) == 2 else ""
    lines = [f"network {net.name}: input {seq}{_hw(net.input_shape)}", rule, line(head), rule]
    lines += [line(b) for b in body]
    lines += [rule,
              f"total params        {net.total_params:>16,}  ({human(net.total_params)})",
              f"trainable params    {net.trainable_params:>16,}"
              + (f"  (frozen {frozen:,})" if frozen else ""),
              f"running statistics  {net.buffer_count:>16,}  (BN mean/var, not parameters)",
              f"multiply-adds       {net.total_macs:>16,}  ({human(net.total_macs)}MAC per sample)",
              f"other FLOPs         {net.total_flops:>16,}  (bias, activations, pooling, BN ...)",
              f"activations         {net.activation_count:>16,}  (per sample, input included)",
              rule,
              f"memory (float32)    parameters {human_bytes(mem['parameters'] + mem['buffers'])}, "
              f"activations {human_bytes(mem['activations'])} at batch {batch}",
              f"training estimate   {human_bytes(mem['training'])} at batch {batch} with {optimizer} "
              "(params + grads + optimizer state + activations kept for backward)"]
    return "\n".join(lines)


def one_line(net: Net, batch: int = 1, optimizer: str = "sgd", frozen=None) -> str:
    mem = memory(net, batch, optimizer, frozen=frozen)
    return (f"{net.name}: {net.trainable(frozen):,} params, {human(net.total_macs)}MACs/sample, "
            f"~{human_bytes(mem['training'])} to train at batch {batch} with {optimizer}")


def to_json(net: Net, batch: int = 1, optimizer: str = "sgd") -> dict:
    layers = []
    for n in net.nodes:
        hyper = {k: (list(v) if isinstance(v, tuple) else v) for k, v in n.hyper.items()}
        layers.append({
            "name": n.name, "path": ".".join(n.path), "kind": n.kind, "inputs": list(n.inputs),
            "output_shape": list(n.out_shape), "params": n.param_count,
            "trainable_params": 0 if n.name in net.frozen else n.param_count,
            "buffers": n.buffer_count, "macs": n.macs, "flops": n.flops,
            "activations": n.activations, "kept_for_backward": n.kept,
            "parts": [{"part": part, "params": p, "macs": m}
                      for part, p, m in registry.kinds()[n.kind].parts(n.hyper, n.in_shapes)],
            "receptive_field": list(n.receptive_field) if n.receptive_field else None,
            "jump": list(n.jump) if n.jump else None, "hyper": hyper,
            "param_shapes": {k: list(v) for k, v in n.param_names().items()},
            "line": n.line})
    return {"network": net.name, "input_shape": list(net.input_shape), "layers": layers,
            "total_params": net.total_params, "trainable_params": net.trainable_params,
            "buffers": net.buffer_count, "total_macs": net.total_macs,
            "total_flops": net.total_flops, "activation_count": net.activation_count,
            "memory": memory(net, batch, optimizer),
            "warnings": [w.format() for w in net.warnings]}
