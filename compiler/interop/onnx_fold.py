"""Constant folding for the ONNX reader: the shape arithmetic PyTorch writes around Reshape
(`x.view(x.size(0), -1)`: Shape, Gather, Unsqueeze, Concat) and Constant nodes, computed with
NumPy where every input is a constant. A size that is symbolic (the batch) is BATCH."""
from __future__ import annotations

import numpy as np

BATCH = -(2 ** 40)


def _const_node(r, node):
    a = r.attrs()
    if "value" in a:
        v = r.onnx.numpy_helper.to_array(a["value"])
    else:
        keys = ("value_float", "value_floats", "value_int", "value_ints")
        key = next((k for k in keys if k in a), None)
        if key is None:
            r.fail(f"a Constant of {', '.join(a)}; netc reads tensors and numbers")
        v = np.asarray(a[key], np.float32 if "float" in key else np.int64)
    r.consts[node.output[0]] = v


def _axes(r, node):
    a = r.attrs()
    if "axes" in a:
        return [int(x) for x in a["axes"]]
    if len(node.input) > 1 and node.input[1]:
        return [int(x) for x in r.consts[node.input[1]]]
    return None


def _shape_of(r, node):
    x = node.input[0]
    if x in r.consts:
        dims = list(r.consts[x].shape)
    elif r.shapes.get(x) is not None:
        dims = [BATCH if d is None else d for d in r.shapes[x]]
    else:
        r.fail(f"the shape of {x!r} is unknown", "run onnx.shape_inference on the model")
    a = r.attrs()  # opset 15's start and end slice the shape
    r.consts[node.output[0]] = np.asarray(dims[a.get("start", 0):a.get("end")], np.int64)


def _fold(fn):
    def folder(r, node):
        ins = [r.consts[t] if t else None for t in node.input]
        r.consts[node.output[0]] = np.asarray(fn(r, node, r.attrs(), *ins))
    return folder


def _reshape(r, node, a, x, shape):
    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _squeeze(r, node, a, x, *_):
    axes = _axes(r, node)
    return np.squeeze(x, tuple(axes)) if axes else np.squeeze(x)


FOLDERS = {
    "Constant": _const_node, "Shape": _shape_of,
    "Identity": _fold(lambda r, n, a, x: x),
    "Cast": _fold(lambda r, n, a, x: x.astype(r.onnx.helper.tensor_dtype_to_np_dtype(a["to"]))),
    "Gather": _fold(lambda r, n, a, x, i: np.take(x, i, axis=a.get("axis", 0))),
    "Unsqueeze": _fold(lambda r, n, a, x, *_: np.expand_dims(x, tuple(_axes(r, n)))),
    "Squeeze": _fold(_squeeze),
    "Concat": _fold(lambda r, n, a, *xs: np.concatenate([np.atleast_1d(x) for x in xs],
                                                        axis=a.get("axis", 0))),
    "Reshape": _fold(_reshape),
    "Add": _fold(lambda r, n, a, x, y: x + y), "Sub": _fold(lambda r, n, a, x, y: x - y),
    "Mul": _fold(lambda r, n, a, x, y: x * y),
    "Div": _fold(lambda r, n, a, x, y: x // y if x.dtype.kind == "i" else x / y),
}
