"""netc layers that ONNX writes as several operators, read back: the recurrent layers
(Transpose to time-major, RNN/LSTM/GRU, Transpose and Reshape back to batch-major), group and
layer normalization of images (Reshape to (N, G, -1), InstanceNormalization without affine,
Reshape back, Mul and Add per channel), MAXOUT (Reshape to (N, C/p, p, ...), ReduceMax) and
LayerNormalization on vectors. These are the forms netc's own export writes (onnx_export and the
kinds' `onnx` rules). A half-finished pattern waits in `r.pending` (tensor -> what it is) for the
operator that completes it; anything else is the plain operator's rule in onnx_ops."""
from __future__ import annotations

import numpy as np

from netc.compiler.kinds.activation import Maxout
from netc.compiler.kinds.norm import GroupNorm, LayerNorm
from netc.compiler.kinds.recurrent import Gru, Lstm, Rnn, gate_slices

from . import onnx_ops
from .onnx_fold import BATCH


def _pending(r, tensor, *kinds):
    """What the half-finished pattern ending in `tensor` is, if it is one of `kinds`."""
    p = r.pending.get(tensor)
    return p if p is not None and p[0] in kinds else None


def transpose(r, node):
    x = node.input[0]
    perm = list(r.attrs().get("perm", range((r.rank(x) or 0) - 1, -1, -1)))  # default: reversed
    out = node.output[0]
    if perm == [2, 0, 1, 3] and _pending(r, x, "Y"):
        r.pending[out] = ("seq", r.pending[x][1])
    elif perm == [1, 0, 2] and _pending(r, x, "Y_h"):
        r.pending[out] = ("last", r.pending[x][1])
    elif perm == [1, 0, 2] and r.rank(x) == 3:
        r.producer(x)
        r.pending[out] = ("time-major", x)
    else:
        r.fail(f"a transpose by {perm} is a netc layer only around an RNN, LSTM or GRU",
               "netc keeps images NCHW and sequences N x T x D")


def recurrent(kind):
    """ONNX's RNN/LSTM/GRU on a time-major view of a netc sequence: the layer, its gates back in
    PyTorch's order; which output is read later says return=seq or last."""
    def handler(r, node):
        x = _pending(r, node.input[0], "time-major")
        a = r.attrs()
        if x is None:
            r.fail(f"{node.op_type} reads a tensor that is not a batch-major sequence transposed",
                   "netc's recurrent layers read N x T x D")
        extra = [t for t in node.input[4:] if t]
        direction = onnx_ops._s(a.get("direction", "forward"))
        if extra or direction == "reverse" or a.get("clip") or a.get("input_forget", 0) or \
                (kind is Gru and a.get("linear_before_reset", 0) != 1):
            r.fail("initial states, sequence lengths, peepholes, clipping, a reverse-only "
                   "direction or GRU's linear_before_reset=0 have no netc equivalent")
        hidden = int(a.get("hidden_size", 0)) or r.const(node.input[2], "R").shape[-1]
        args = {"units": hidden, "bidir": direction == "bidirectional",
                "bias": len(node.input) > 3 and bool(node.input[3]), "return": "last"}
        if kind is Rnn:
            acts = {onnx_ops._s(v).lower() for v in a.get("activations", [b"Tanh"])}
            if not acts <= {"tanh", "relu"} or len(acts) != 1:
                r.fail(f"activations {sorted(acts)}; netc's RNN takes tanh or relu")
            args["act"] = acts.pop()
        weights = _weights(r, node, kind, hidden, args)
        layer = r.add(kind.name, args, inputs=[x[1]], weights=weights)
        r.pending[node.output[0]] = ("Y", layer)
        if len(node.output) > 1 and node.output[1]:
            r.pending[node.output[1]] = ("Y_h", layer)
    return handler


def _weights(r, node, kind, hidden, args):
    """W, R, B per direction as PyTorch's weight_ih, weight_hh, bias_ih, bias_hh (+ _reverse)."""
    rows = gate_slices(kind, hidden)
    order = [rows[g] for g in kind.onnx_gates]  # ONNX's k-th gate block is PyTorch's onnx_gates[k]

    def pytorch(m):  # ONNX's gate blocks back in PyTorch's order
        out = np.empty_like(m)
        for k, rows_k in enumerate(order):
            out[rows_k] = m[k * hidden:(k + 1) * hidden]
        return out
    w, rr = (np.asarray(r.const(t, what), np.float32) for t, what in
             zip(node.input[1:3], ("W", "R")))
    b = np.asarray(r.const(node.input[3], "B"), np.float32) if args["bias"] else None
    weights = {}
    for d, suffix in enumerate(("", "_reverse")[:w.shape[0]]):
        weights["weight_ih" + suffix] = pytorch(w[d])
        weights["weight_hh" + suffix] = pytorch(rr[d])
        if b is not None:
            gh = w.shape[1]
            weights["bias_ih" + suffix] = pytorch(b[d][:gh])
            weights["bias_hh" + suffix] = pytorch(b[d][gh:])
    return weights


def reshape(r, node):
    x, out = node.input[0], node.output[0]
    target = [int(v) for v in r.const(node.input[1], "target shape")]
    shape = r.shapes.get(x)
    done = _pending(r, x, "seq", "last")
    if done and target == ([0, 0, -1] if done[0] == "seq" else [0, -1]):
        done[1].args["return"] = done[0]
        r.alias[out] = done[1].name
    elif _pending(r, x, "grouped"):
        _group_norm(r, node)
    elif shape and len(shape) == 4 and target[:1] in ([0], [BATCH]) and target[2:] == [-1] and \
            shape[1] % target[1] == 0:
        r.producer(x)
        r.pending[out] = ("groups", x, target[1])
    elif shape and len(target) == len(shape) + 1 and target[0] in (0, BATCH) and \
            shape[1] and target[1] * target[2] == shape[1] and list(target[3:]) == list(shape[2:]):
        r.producer(x)
        r.pending[out] = ("pieces", x, target[2])
    else:
        onnx_ops.reshape(r, node)


def instancenorm(r, node):
    grouped = _pending(r, node.input[0], "groups")
    if grouped is None:
        return onnx_ops.instancenorm(r, node)
    scale, b = (np.asarray(r.const(t, what)) for t, what in zip(node.input[1:3], ("scale", "B")))
    if np.any(scale != 1) or np.any(b != 0):
        r.fail("normalizing channel groups with a scale or shift per group; netc's GN and LN "
               "scale and shift per channel")
    eps = onnx_ops._f(r.attrs().get("epsilon", 1e-5))
    r.pending[node.output[0]] = ("grouped", grouped[1], grouped[2], eps)


def _group_norm(r, node):
    """Normalized groups shaped back to the input's shape: GN (LN for one group), its scale and
    shift 1 and 0 until the Mul and Add after it give them."""
    _, x, groups, eps = r.pending[node.input[0]]
    c = r.shapes[x][1]
    kind, args = (LayerNorm, {"eps": eps}) if groups == 1 else \
        (GroupNorm, {"groups": groups, "eps": eps})
    layer = r.add(kind.name, args, inputs=[x],
                  weights={"weight": np.ones(c, np.float32), "bias": np.zeros(c, np.float32)})
    r.pending[node.output[0]] = ("affine", layer, "weight")


def mul(r, node):
    _affine(r, node, "weight", "Mul")


def add(r, node):
    if any(_pending(r, t, "affine") for t in node.input):
        return _affine(r, node, "bias", "Add")
    onnx_ops.add(r, node)


def _affine(r, node, short, op):
    """A normalization's per-channel scale (Mul) or shift (Add) after it."""
    x = next((t for t in node.input if t not in r.consts), None)
    c = next((t for t in node.input if t in r.consts), None)
    p = _pending(r, x, "affine") if x is not None else None
    if p is None or c is None or r.uses[x] != 1:
        r.fail(f"{op} is a netc layer only as the per-channel scale and shift after a group "
               "normalization (or as an FC's or CONV's bias)")
    layer = p[1]
    layer.weights[short] = onnx_ops.per_channel(r, c, f"{op} constant",
                                                layer.weights[short].size, x)
    r.alias[node.output[0]] = layer.name
    r.pending[node.output[0]] = ("affine", layer, "bias") if short == "weight" else None


def reducemax(r, node):
    grouped = _pending(r, node.input[0], "pieces")
    a = r.attrs()
    axes = [int(v) for v in a.get("axes", r.consts.get(node.input[1] if len(node.input) > 1
                                                       else "", []))]
    if grouped is None or axes != [2] or a.get("keepdims", 1) != 0:
        r.fail("ReduceMax is a netc layer only as MAXOUT: the maximum over groups of channels "
               "reshaped to (N, C/pieces, pieces, ...)")
    r.add(Maxout.name, {"pieces": grouped[2]}, inputs=[grouped[1]])


def layernorm(r, node):
    a = r.attrs()
    if r.rank(node.input[0]) != 2 or a.get("axis", -1) not in (-1, 1):
        r.fail("layer normalization over more than a vector's features",
               "netc's LN on a vector normalizes its features (on images it is GroupNorm(1, C))")
    r.add(LayerNorm.name, {"eps": onnx_ops._f(a.get("epsilon", 1e-5))},
          weights={"weight": r.const(node.input[1], "scale"), "bias": r.const(node.input[2], "B")})


HANDLERS = {
    "Transpose": transpose, **{kind.onnx_op: recurrent(kind) for kind in (Rnn, Lstm, Gru)},
    "Reshape": reshape, "InstanceNormalization": instancenorm, "Mul": mul, "Add": add,
    "ReduceMax": reducemax, "LayerNormalization": layernorm,
}
