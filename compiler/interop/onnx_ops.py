"""The ONNX operators netc imports, one function each: `r` is the reader (onnx_import._Reader),
`node` the ONNX node. HANDLERS make IR layers, or pass a tensor through (Dropout, Identity,
a flatten of what is already a vector), or fold into the layer they feed (a Pad into the
CONV/POOL after it, an Add of a constant into the bias of the FC before it)."""
from __future__ import annotations

import numpy as np

from netc.compiler.registry import LayerError
from netc.compiler.shapes import window_out

from netc.compiler.kinds.activation import Elu, Leaky, PRelu, Relu, Sigmoid, Softmax, Tanh
from netc.compiler.kinds.conv import Conv, Deconv
from netc.compiler.kinds.dense import Flatten, FullyConnected, Output
from netc.compiler.kinds.join import Add, Concat, Mean
from netc.compiler.kinds.norm import BatchNorm, InstanceNorm, LocalResponseNorm
from netc.compiler.kinds.pool import GlobalAvgPool, Pool, Upsample

from . import ir
from .onnx_fold import BATCH


_f = ir.decimal  # a float32 attribute as the number it was written as (1e-05, not 9.99999...)


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _window(r, a, kernel):
    """(stride, pad) of a Conv/ConvTranspose/Pool node: symmetric pads only, no dilation."""
    if len(kernel) != 2:
        r.fail(f"a {len(kernel)}-D window; netc's layers work on 2-D images",
               "netc has CONV/POOL over H x W only")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        r.fail(f"dilations {list(a['dilations'])}; netc has no dilated windows")
    stride = tuple(int(s) for s in a.get("strides", [1, 1]))
    auto = _s(a.get("auto_pad", "NOTSET"))
    if auto == "VALID":
        pads = [0, 0, 0, 0]
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        if stride != (1, 1) or kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
            r.fail(f"auto_pad={auto} with stride {stride} and kernel {kernel} pads one side "
                   "more than the other", "netc pads both sides equally")
        pads = [(kernel[0] - 1) // 2, (kernel[1] - 1) // 2] * 2
    else:
        pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
    explicit = r.padded.get(r.node.input[0])  # zeros a Pad node put around the input
    if explicit:
        pads = [p + q for p, q in zip(pads, explicit)]
    if pads[:2] != pads[2:]:
        if not _ceil(r, kernel, stride, pads):
            r.fail(f"asymmetric pads {pads} (top, left, bottom, right)",
                   "netc pads both sides of each dimension equally (and round=ceil adds what "
                   "a last partial window needs at the bottom and right)")
        return stride, (pads[0], pads[1]), "ceil"
    return stride, (pads[0], pads[1]), "floor"


def _ceil(r, kernel, stride, pads) -> bool:
    """Whether pads that add at the bottom/right only what a last partial window reaches are
    round=ceil (as netc's export writes CONV and max POOL with round=ceil)."""
    x = r.shapes.get(r.node.input[0])
    ceil_ops = ("Conv", "MaxPool") + (("AveragePool",) if r.node.input[0] in r.padded else ())
    if r.node.op_type not in ceil_ops or x is None or len(x) != 4 or None in x[2:]:
        return False
    for w, k, s, b, e in zip(x[2:], kernel, stride, pads[:2], pads[2:]):
        if not b <= e < b + s:
            return False
        try:
            if window_out(w, k, s, b, "ceil")[0] != (w + b + e - k) // s + 1:
                return False
        except LayerError:
            return False
    return True


def _vector(r, tensor, what, n):
    """A constant of n values (or broadcast from one), flattened."""
    v = np.asarray(r.const(tensor, what), np.float32).reshape(-1)
    if v.size == 1:
        return np.full(n, v[0], np.float32)
    if v.size != n:
        r.fail(f"its {what} has {v.size} values; {n} expected")
    return v


def per_channel(r, tensor, what, n, x):
    """A constant of n values (or one) applied to the tensor x along its channels: axis 1 of an
    image, the last axis of a vector or sequence (ONNX would spread a (C,) over an image's W)."""
    shape, rank = np.shape(r.const(tensor, what)), r.rank(x)
    if rank is not None:
        axis = 1 if rank == 4 else rank - 1
        dims = (1,) * (rank - len(shape)) + tuple(shape)
        if len(dims) != rank or any(d != 1 for i, d in enumerate(dims) if i != axis):
            r.fail(f"its {what} has shape {tuple(shape)}, which ONNX spreads over other axes "
                   f"than the channels of its rank-{rank} input",
                   "netc applies it per channel: give it the shape (C, 1, 1) on images")
    return _vector(r, tensor, what, n)


# ---- layers with weights ----------------------------------------------------------------------
def conv(r, node):
    w = r.const(node.input[1], "weight")
    a = r.attrs()
    kernel = tuple(int(k) for k in a.get("kernel_shape", w.shape[2:]))
    stride, pad, rounding = _window(r, a, kernel)
    weights = {"weight": w}
    if len(node.input) > 2 and node.input[2]:
        weights["bias"] = _vector(r, node.input[2], "bias", w.shape[0])
    r.add(Conv.name, {"filters": int(w.shape[0]), "kernel": kernel, "stride": stride, "pad": pad,
                   "groups": int(a.get("group", 1)), "bias": "bias" in weights, "act": "none",
                   "round": rounding}, weights=weights)


def deconv(r, node):
    w = r.const(node.input[1], "weight")
    a = r.attrs()
    if "output_shape" in a:
        r.fail("output_shape is given; netc's DECONV takes pads and output_padding",
               "export with explicit pads")
    kernel = tuple(int(k) for k in a.get("kernel_shape", w.shape[2:]))
    stride, pad, _ = _window(r, a, kernel)
    g = int(a.get("group", 1))
    weights = {"weight": w}
    if len(node.input) > 2 and node.input[2]:
        weights["bias"] = _vector(r, node.input[2], "bias", w.shape[1] * g)
    r.add(Deconv.name, {"filters": int(w.shape[1]) * g, "kernel": kernel, "stride": stride,
                     "pad": pad, "outpad": tuple(int(o) for o in a.get("output_padding", [0, 0])),
                     "groups": g, "bias": "bias" in weights, "act": "none"}, weights=weights)


def gemm(r, node):
    a = r.attrs()
    if a.get("transA", 0):
        r.fail("transA=1: the input transposed is not a netc layer")
    w = np.asarray(r.const(node.input[1], "weight (B)"), np.float32)
    if a.get("alpha", 1.0) != 1.0:  # (a copy of VGG's 103M-value weight only where it scales)
        w = w * np.float32(a["alpha"])
    w = w if a.get("transB", 0) else w.T
    weights = {"weight": w}
    if len(node.input) > 2 and node.input[2]:
        weights["bias"] = _vector(r, node.input[2], "bias (C)", w.shape[0]) * a.get("beta", 1.0)
    r.add(FullyConnected.name, {"units": int(w.shape[0]), "bias": "bias" in weights, "act": "none"},
          weights=weights)


def matmul(r, node):
    w = np.asarray(r.const(node.input[1], "weight"), np.float32)
    if w.ndim != 2:
        r.fail(f"a {w.ndim}-D weight; an FC's is 2-D")
    r.add(FullyConnected.name, {"units": int(w.shape[1]), "bias": False, "act": "none"},
          weights={"weight": w.T})


def batchnorm(r, node):
    a = r.attrs()
    if a.get("training_mode", 0) or any(r.uses[o] for o in node.output[1:]):
        r.fail("batch normalization in training mode", "export the model in eval() mode")
    scale, b, mean, var = (np.asarray(r.const(t, what), np.float32) for t, what in
                           zip(node.input[1:5], ("scale", "B", "mean", "var")))
    args = {"eps": _f(a.get("epsilon", 1e-5))}
    momentum = round(1 - a.get("momentum", 0.9), 6)  # ONNX keeps 1 - PyTorch's momentum
    if momentum != 0.1 and 0 <= momentum <= 1:
        args["momentum"] = momentum
    r.add(BatchNorm.name, args, weights={"weight": scale, "bias": b},
          buffers={"running_mean": mean, "running_var": var})


def instancenorm(r, node):
    a = r.attrs()
    r.add(InstanceNorm.name, {"eps": _f(a.get("epsilon", 1e-5))},
          weights={"weight": r.const(node.input[1], "scale"), "bias": r.const(node.input[2], "B")})


def prelu(r, node):
    slope = np.asarray(r.const(node.input[1], "slope"), np.float32).reshape(-1)
    slope = per_channel(r, node.input[1], "slope", slope.size, node.input[0])
    if r.rank(node.input[0]) == 3 and _per_step_fc(r, node.input[0]):
        fc = r.producer(node.input[0])  # FC act=prelu per step (PRELU takes no sequence)
        fc.args["act"], fc.weights["slope"] = "prelu", np.broadcast_to(
            slope, (fc.args["units"],)).copy()
        r.alias[node.output[0]] = fc.name
        return
    r.add(PRelu.name, {"shared": slope.size == 1}, weights={"weight": slope})


# ---- layers without weights ---------------------------------------------------------------------
def pool(mode):
    def handler(r, node):
        a = r.attrs()
        kernel = tuple(int(k) for k in a["kernel_shape"])
        stride, pad, rounding = _window(r, a, kernel)
        if any(r.uses[o] for o in node.output[1:]):
            r.fail("its indices output is used; netc's POOL gives the values only")
        rounding = "ceil" if a.get("ceil_mode", 0) else rounding
        if mode == "avg":
            _check_divisor(r, a, kernel, stride, pad)
        r.add(Pool.name, {"mode": mode, "kernel": kernel, "stride": stride, "pad": pad,
                       "round": rounding})
    return handler


def _check_divisor(r, a, kernel, stride, pad):
    """netc's POOL avg divides every window by kh*kw; ONNX's AveragePool leaves its own padding
    out of the count (count_include_pad=0), and a ceil_mode window's part past the padding."""
    explicit = r.padded.get(r.node.input[0], (0, 0))  # a Pad node's zeros are counted
    own = any(a.get("pads", ())) or any(p != q for p, q in zip(pad, explicit))  # or auto_pad's
    if own and not a.get("count_include_pad", 0):
        r.fail("average pooling with padding that leaves the padded zeros out of the count "
               "(count_include_pad=0)", "netc's POOL avg counts them: export with "
               "count_include_pad=True, or pad=0")
    if not a.get("ceil_mode", 0):
        return
    x = r.shapes.get(r.node.input[0])
    if x is None or len(x) != 4 or None in x[2:]:
        r.fail("average pooling with ceil_mode=1 on an input of unknown size",
               "run onnx.shape_inference on the model")
    for w, k, s, p in zip(x[2:], kernel, stride, pad):
        try:
            out = window_out(w, k, s, p, "ceil")[0]
        except LayerError:
            return  # a window larger than the input: netc's POOL rule says so, naming the node
        if (out - 1) * s + k > w + 2 * p:
            r.fail(f"average pooling with ceil_mode=1 whose last {k}-wide window reaches past "
                   f"the padded input ({w} + 2*{p}): ONNX divides it by the part inside, netc's "
                   "POOL avg by the whole window", "export with ceil_mode=False, or pad the "
                   "input so that every window fits")


def pad(r, node):
    """Zeros around H and W before a CONV or an average POOL (counted, as netc's POOL avg
    counts its padding): the padding of the layers that read it."""
    a = r.attrs()
    p = [int(v) for v in (r.const(node.input[1], "pads") if len(node.input) > 1 else a["pads"])]
    value = float(r.consts[node.input[2]]) if len(node.input) > 2 and node.input[2] else 0.0
    readers = {n.op_type for n in r.graph.node if node.output[0] in n.input}
    if _s(a.get("mode", "constant")) != "constant" or value != 0 or len(p) != 8 or \
            any(p[i] for i in (0, 1, 4, 5)) or not readers <= {"Conv", "AveragePool"}:
        r.fail("padding is a netc layer only as zeros around H and W read by CONV or average "
               "POOL layers", "netc pads inside CONV and POOL (pad=)")
    r.padded[node.output[0]] = [p[2], p[3], p[6], p[7]]
    r.passthrough()


def lrn(r, node):
    a = r.attrs()
    size = int(a["size"])
    if size % 2 == 0:
        r.fail(f"size={size}: ONNX centres an even window differently from netc's LRN",
               "use an odd size")
    r.add(LocalResponseNorm.name, {"size": size, "alpha": _f(a.get("alpha", 1e-4)),
                                   "beta": _f(a.get("beta", 0.75)),
                  "k": _f(a.get("bias", 1.0))})


def simple(kind, **keys):
    """An operator that is one netc kind; keys: netc key -> (ONNX attribute, its default)."""
    def handler(r, node):
        a = r.attrs()
        r.add(kind, {k: _f(a.get(name, default)) for k, (name, default) in keys.items()})
    return handler


def softmax(r, node):
    rank, axis = r.rank(node.input[0]), r.attrs().get("axis", 1 if r.opset < 13 else -1)
    if rank == 2 and axis in (1, -1):
        r.add(Softmax.name)
    elif rank == 4 and axis in (1, -3) and r.opset >= 13:  # before 13: over C*H*W at once
        r.add(Softmax.name, {"per": "pixel"})
    elif rank == 3 and axis in (2, -1) and _per_step_fc(r, node.input[0]):
        fc = r.producer(node.input[0])  # OUT K softmax on a sequence: the FC per step's
        fc.kind, fc.args["act"] = Output.name, "softmax"
        r.alias[node.output[0]] = fc.name
    else:
        old = " (before opset 13: one softmax over all of C x H x W)" if rank == 4 else ""
        r.fail(f"softmax over axis {axis} of a rank-{rank} tensor{old * (r.opset < 13)}",
               "netc's SOFTMAX is over a vector's features or each pixel's channels")


def _per_step_fc(r, tensor) -> bool:
    """Whether `tensor` is made by an FC applied per step of a sequence and read only here."""
    p = r.producer(tensor)
    return p is not None and p.kind == FullyConnected.name and p.args.get("act", "none") == "none" \
        and r.uses[tensor] == 1


def flatten(r, node):
    if r.attrs().get("axis", 1) != 1:
        r.fail(f"Flatten with axis={r.attrs()['axis']}; netc flattens all but the batch")
    p = r.producer(node.input[0])
    if (p is not None and p.kind == GlobalAvgPool.name) or r.rank(node.input[0]) == 2:
        r.passthrough()  # already a vector
    else:
        r.add(Flatten.name)


def reshape(r, node):
    target = [int(v) for v in r.const(node.input[1], "target shape")]
    if len(target) == 2 and (target[1] == -1 or target[0] in (0, BATCH)):
        return flatten(r, node)
    r.fail(f"reshape to {target}; netc reshapes only to flatten (batch, -1)")


def squeeze(r, node):
    p = r.producer(node.input[0])
    if p is None or p.kind != GlobalAvgPool.name:
        r.fail("Squeeze of a computed tensor is a netc layer only after global pooling")
    r.passthrough()


def add(r, node):
    consts = [t for t in node.input if t in r.consts]
    if not consts:
        if len(node.input) != 2:
            r.fail(f"a sum of {len(node.input)} tensors; netc's residual join adds two")
        return r.add(Add.name, inputs=list(node.input))
    other = next(t for t in node.input if t not in r.consts)
    p = r.producer(other)
    if p is None or p.kind not in (FullyConnected.name, Conv.name) or p.args["bias"] or \
            r.uses[other] != 1:
        r.fail("adding a constant is a netc layer only as the bias of the FC (MatMul) or CONV "
               "before it", "netc adds constants only as biases")
    n = p.args["units"] if p.kind == FullyConnected.name else p.args["filters"]
    p.weights["bias"], p.args["bias"] = per_channel(r, consts[0], "bias", n, other), True
    r.alias[node.output[0]] = p.name


def join(kind):
    def handler(r, node):
        if kind == Concat.name:
            rank, axis = r.rank(node.input[0]), r.attrs().get("axis", 1)
            if axis not in (1, 1 - (rank or 2)):
                r.fail(f"concatenation along axis {axis}; netc concatenates channels (axis 1)")
        r.add(kind, inputs=list(node.input))
    return handler


def normalize(stat):
    """Sub(input, mean) and Div(., std) at the very start, in either order: the input
    normalization (x - mean) / std (x / std - mean is (x - mean * std) / std)."""
    def handler(r, node):
        x, c = node.input
        if r.alias.get(x) != "input" or r.layers or c not in r.consts or \
                getattr(r, stat) is not None:
            r.fail(f"{node.op_type} is a netc layer only as the input normalization "
                   "(x - mean) / std before every other node")
        v = np.asarray(r.consts[c], np.float32)
        v = v.reshape(v.shape[1:]) if v.ndim == len(r.input_shape) + 1 else v
        setattr(r, stat, v * r.std if stat == "mean" and r.std is not None else v)
        r.passthrough()
    return handler


def resize(r, node):
    a = r.attrs()
    mode = _s(a.get("mode", "nearest"))
    resize_op = node.op_type == "Resize"  # Upsample (before opset 10) aligns as "asymmetric"
    coord = _s(a.get("coordinate_transformation_mode", "half_pixel")) if resize_op else \
        "asymmetric"
    nearest = _s(a.get("nearest_mode", "round_prefer_floor")) if resize_op else "floor"
    ins = [t for t in node.input[1:]]
    scales = next((r.consts[t] for t in ins[-2:] if t and t in r.consts and
                   r.consts[t].dtype.kind == "f" and r.consts[t].size == 4), None)
    if scales is None:
        sizes = next((r.consts[t] for t in ins if t and t in r.consts and
                      r.consts[t].dtype.kind == "i"), None)
        shape = r.shapes.get(node.input[0])
        if sizes is None or shape is None or None in shape[1:] or len(sizes) != len(shape):
            r.fail("the scales are not constants", "export with a fixed scale_factor")
        scales = [1.0] + [s / d for s, d in zip(sizes[1:], shape[1:])]
    s = [float(v) for v in scales]
    if len(s) != 4 or s[:2] != [1.0, 1.0] or s[2] != s[3] or not s[2].is_integer() or s[2] < 1:
        r.fail(f"scales {s}; netc's UPSAMPLE scales H and W by one integer")
    half = coord in ("half_pixel", "pytorch_half_pixel")
    if mode == "nearest" and (coord == "asymmetric" and nearest == "floor" or
                              half and nearest.startswith("round")):
        r.add(Upsample.name, {"scale": int(s[2]), "mode": "nearest"})
    elif mode in ("linear", "bilinear") and half:
        r.add(Upsample.name, {"scale": int(s[2]), "mode": "bilinear"})
    else:
        r.fail(f"{node.op_type} mode={mode} with coordinate_transformation_mode={coord}",
               "netc upsamples as PyTorch's interpolate (nearest, or bilinear with "
               "align_corners=False)")


HANDLERS = {
    "Conv": conv, "ConvTranspose": deconv, "Gemm": gemm, "MatMul": matmul,
    "BatchNormalization": batchnorm, "InstanceNormalization": instancenorm, "PRelu": prelu,
    "MaxPool": pool("max"), "AveragePool": pool("avg"),
    "GlobalAveragePool": lambda r, node: r.add(GlobalAvgPool.name), LocalResponseNorm.name: lrn,
    "Relu": simple(Relu.name), "Sigmoid": simple(Sigmoid.name), "Tanh": simple(Tanh.name),
    "LeakyRelu": simple(Leaky.name, slope=("alpha", 0.01)),
    "Elu": simple(Elu.name, alpha=("alpha", 1.0)),
    "Softmax": softmax, "Dropout": lambda r, node: r.passthrough(),
    "Identity": lambda r, node: r.passthrough(), "Flatten": flatten, "Reshape": reshape,
    "Squeeze": squeeze, "Add": add, "Sum": add, "Concat": join(Concat.name),
    "Mean": join(Mean.name), "Pad": pad, "Sub": normalize("mean"), "Div": normalize("std"),
    "Resize": resize, "Upsample": resize,
}
