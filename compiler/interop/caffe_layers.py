"""Caffe's layer types as netc layers: one rule per type (HANDLERS), each reading the layer's
parameters, checking what netc can express, computing the output shape as Caffe does, and taking
the layer's blobs from the caffemodel in netc's layouts (Caffe's are PyTorch's)."""
from __future__ import annotations

import math

import numpy as np

from netc.compiler.kinds.activation import Dropout, Elu, Leaky, PRelu, Relu, Sigmoid, Softmax, Tanh
from netc.compiler.kinds.conv import Conv, Deconv
from netc.compiler.kinds.dense import Flatten, FullyConnected
from netc.compiler.kinds.join import Add, Concat
from netc.compiler.kinds.norm import BatchNorm, LocalResponseNorm
from netc.compiler.kinds.pool import GlobalAvgPool, Pool

from .caffe_reader import enum, f32, pair
from .ir import InteropError


def _conv_geometry(r, layer, kind):
    p = layer.convolution_param
    if any(d != 1 for d in p.dilation):
        netc = Deconv.name if kind == "Deconvolution" else Conv.name
        raise InteropError(f"layer '{layer.name}' ({kind}) has dilation "
                           f"{', '.join(map(str, p.dilation))}: netc's {netc} has no dilation",
                           hint="netc cannot express dilated (atrous) convolutions; remove the "
                                "dilation or the layer")
    if not p.num_output:
        raise InteropError(f"layer '{layer.name}' ({kind}) has no num_output",
                           hint="give convolution_param { num_output: N }")
    src = r.bottom(layer, kind)
    x = r.image(layer, kind, src)
    g, f = p.group, p.num_output
    if g < 1 or x[0] % g or f % g:
        raise InteropError(f"layer '{layer.name}' ({kind}): group {g} must divide the input "
                           f"channels ({x[0]}) and num_output ({f})")
    args = {"filters": f, "kernel": pair(layer, kind, p, "kernel", None),
            "stride": pair(layer, kind, p, "stride", 1), "pad": pair(layer, kind, p, "pad", 0),
            "groups": g, "bias": p.bias_term}
    return src, x, args


def convolution(r, layer, kind):
    """CONV; Caffe floors the output size (round=floor where it drops pixels)."""
    src, x, args = _conv_geometry(r, layer, kind)
    (kh, kw), (sh, sw), (ph, pw), f = args["kernel"], args["stride"], args["pad"], args["filters"]
    oh, dh = r.window(layer, kind, x[1], kh, sh, ph, "floor", "height")
    ow, dw = r.window(layer, kind, x[2], kw, sw, pw, "floor", "width")
    if dh or dw:
        args["round"] = "floor"
    specs = [("weight", (f, x[0] // args["groups"], kh, kw))] + [("bias", (f,))] * args["bias"]
    r.add(layer, kind, Conv.name, args, [src], (f, oh, ow), r.weights(layer, kind, specs))


def deconvolution(r, layer, kind):
    """DECONV: output (H - 1)*S - 2P + K; Caffe's weight is C_in x C_out/g x kH x kW."""
    src, x, args = _conv_geometry(r, layer, kind)
    (kh, kw), (sh, sw), (ph, pw), f = args["kernel"], args["stride"], args["pad"], args["filters"]
    out = ((x[1] - 1) * sh - 2 * ph + kh, (x[2] - 1) * sw - 2 * pw + kw)
    if min(out) < 1:
        raise InteropError(f"layer '{layer.name}' ({kind}): the output would be empty "
                           f"({out[0]}x{out[1]})")
    specs = [("weight", (x[0], f // args["groups"], kh, kw))] + [("bias", (f,))] * args["bias"]
    r.add(layer, kind, Deconv.name, args, [src], (f, *out), r.weights(layer, kind, specs))


def pooling(r, layer, kind):
    """POOL max|avg, GAP for global average pooling. Caffe rounds up unless round_mode: FLOOR;
    netc's round= is set where it changes the size."""
    p = layer.pooling_param
    method, src = enum(p, "pool"), r.bottom(layer, kind)
    x = r.image(layer, kind, src)
    if method == "STOCHASTIC":
        raise InteropError(f"layer '{layer.name}' ({kind}) is STOCHASTIC pooling, which netc "
                           f"does not have", hint="use MAX or AVE")
    if p.global_pooling and method == "AVE":
        return r.add(layer, kind, GlobalAvgPool.name, {}, [src], (x[0],))
    if p.global_pooling:
        kernel, stride, pad = x[1:], x[1:], (0, 0)
    else:
        kernel, stride = pair(layer, kind, p, "kernel", None), pair(layer, kind, p, "stride", 1)
        pad = pair(layer, kind, p, "pad", 0)
    out = [_caffe_pool_out(size, k, s, q, enum(p, "round_mode") == "CEIL")
           for size, k, s, q in zip(x[1:], kernel, stride, pad)]
    rounding = next((rounding for rounding in ("floor", "ceil")
                     if _netc_pool_out(r, layer, kind, x, kernel, stride, pad, rounding) == out),
                    None)
    if rounding is None:
        raise InteropError(f"layer '{layer.name}' ({kind}): Caffe's pooled size "
                           f"{out[0]}x{out[1]} is neither netc's rounding down nor up")
    for axis, size, k, s, q, o in zip(("height", "width"), x[1:], kernel, stride, pad, out):
        if method == "AVE" and (o - 1) * s - q + k > size + q:
            raise _overhang(layer, kind, axis, size, k, s, q, o)
    args = {"mode": "max" if method == "MAX" else "avg", "kernel": tuple(kernel),
            "stride": tuple(stride), "pad": tuple(pad)}
    if rounding == "ceil":
        args["round"] = "ceil"
    r.add(layer, kind, Pool.name, args, [src], (x[0], *out))


def _caffe_pool_out(size, k, s, p, ceil) -> int:
    """Caffe's pooled size: (H + 2P - K)/S + 1 rounded up (or down), less one where the last
    window would start in the padding."""
    span = size + 2 * p - k
    out = (-(-span // s) if ceil else span // s) + 1
    if p and (out - 1) * s >= size + p:
        out -= 1
    return out


def _netc_pool_out(r, layer, kind, x, kernel, stride, pad, rounding) -> list:
    return [r.window(layer, kind, size, k, s, q, rounding, axis)[0] for axis, size, k, s, q
            in zip(("height", "width"), x[1:], kernel, stride, pad)]


def _overhang(layer, kind, axis, size, k, s, p, out):
    end = (out - 1) * s - p + k
    return InteropError(
        f"layer '{layer.name}' ({kind}): the last {k}-wide AVE window along the {axis} ends at "
        f"{end}, past the padded input ({axis} {size}, pad {p}); Caffe divides that window by "
        f"the part inside, netc's POOL avg by the whole window, so the results would differ",
        hint="netc can import this average pooling only where every window lies inside the "
             "padded input: change the kernel, stride or padding, or use round_mode: FLOOR")


def inner_product(r, layer, kind):
    """FC (a C x H x W input is flattened, in Caffe's order); weight (units, inputs)."""
    p = layer.inner_product_param
    if p.axis != 1 or not p.num_output:
        raise InteropError(f"layer '{layer.name}' ({kind}) needs num_output and axis 1; "
                           f"received num_output {p.num_output}, axis {p.axis}")
    src = r.bottom(layer, kind)
    n, units = math.prod(r.shape_of(src)), p.num_output
    specs = [("weight", (n, units) if p.transpose else (units, n))]
    w = r.weights(layer, kind, specs + [("bias", (units,))] * p.bias_term)
    if p.transpose and "weight" in w:
        w["weight"] = np.ascontiguousarray(w["weight"].T)
    r.add(layer, kind, FullyConnected.name, {"units": units, "bias": p.bias_term}, [src],
          (units,), w)


def activation(r, layer, kind):
    """ReLU (LEAKY with a negative_slope), Sigmoid, TanH, ELU, PReLU."""
    src = r.bottom(layer, kind)
    x, args, weights = r.shape_of(src), {}, {}
    netc = {"ReLU": Relu.name, "Sigmoid": Sigmoid.name, "TanH": Tanh.name, "ELU": Elu.name,
            "PReLU": PRelu.name}[kind]
    if kind == "ReLU" and layer.relu_param.negative_slope:
        netc, args = Leaky.name, {"slope": f32(layer.relu_param.negative_slope)}
    elif kind == "ELU":
        args = {"alpha": f32(layer.elu_param.alpha)}
    elif kind == "PReLU":
        shared = layer.prelu_param.channel_shared
        args = {"shared": True} if shared else {}
        weights = r.weights(layer, kind, [("weight", (1 if shared else x[0],))])
    r.add(layer, kind, netc, args, [src], x, weights)


def lrn(r, layer, kind):
    """LRN across channels: b = a / (k + alpha/size * sum a^2)^beta, as netc's; k explicit
    (Caffe's default is 1, netc's 2)."""
    p = layer.lrn_param
    src = r.bottom(layer, kind)
    x = r.image(layer, kind, src)
    if enum(p, "norm_region") != "ACROSS_CHANNELS":
        raise InteropError(f"layer '{layer.name}' ({kind}) normalizes WITHIN_CHANNEL: netc's "
                           f"LRN works across channels only")
    if p.local_size % 2 == 0:
        raise InteropError(f"layer '{layer.name}' ({kind}) has an even local_size "
                           f"{p.local_size}; Caffe's LRN needs an odd one")
    args = {"size": p.local_size, "alpha": f32(p.alpha), "beta": f32(p.beta), "k": f32(p.k)}
    r.add(layer, kind, LocalResponseNorm.name, args, [src], x)


def dropout(r, layer, kind):
    src = r.bottom(layer, kind)
    r.add(layer, kind, Dropout.name, {"p": f32(layer.dropout_param.dropout_ratio)}, [src],
          r.shape_of(src))


def concat(r, layer, kind):
    """CONCAT along the channels (axis 1)."""
    p = layer.concat_param
    axis = p.concat_dim if p.HasField("concat_dim") else p.axis
    srcs = [r.bottom(layer, kind, i) for i in range(max(1, len(layer.bottom)))]
    xs = [r.shape_of(s) for s in srcs]
    if axis not in (1, -len(xs[0])) or any(x[1:] != xs[0][1:] for x in xs):  # N x ...: 1 or -3
        raise InteropError(f"layer '{layer.name}' ({kind}) joins along axis {axis} inputs of "
                           + ", ".join("x".join(map(str, x)) for x in xs)
                           + "; netc's CONCAT joins along the channels (axis 1) inputs of one "
                             "height and width")
    r.add(layer, kind, Concat.name, {}, srcs, (sum(x[0] for x in xs), *xs[0][1:]))


def eltwise(r, layer, kind):
    """ADD (a plain sum: act=none) for SUM with unit coefficients."""
    p = layer.eltwise_param
    op = enum(p, "operation")
    if op != "SUM" or any(c != 1 for c in p.coeff):
        raise InteropError(f"layer '{layer.name}' ({kind}) is {op}"
                           + (f" with coefficients {list(p.coeff)}" if op == "SUM" else "")
                           + "; netc joins branches by a plain sum (ADD) only")
    srcs = [r.bottom(layer, kind, i) for i in range(max(1, len(layer.bottom)))]
    xs = [r.shape_of(s) for s in srcs]
    if any(x != xs[0] for x in xs):
        raise InteropError(f"layer '{layer.name}' ({kind}) adds inputs of different shapes: "
                           + ", ".join("x".join(map(str, x)) for x in xs))
    r.add(layer, kind, Add.name, {"act": "none"}, srcs, xs[0])


def batch_norm(r, layer, kind):
    """BN with Caffe's running statistics divided by its moving-average factor (0 -> 0);
    gamma 1 and beta 0 until a Scale layer gives them."""
    src = r.bottom(layer, kind)
    x = r.shape_of(src)
    c = x[0]
    stats = r.weights(layer, kind, [("running_mean", (c,)), ("running_var", (c,)),
                                    ("factor", (1,))])
    weights, buffers = {}, {}
    if stats:
        factor = float(stats["factor"][0])
        scale = 0.0 if factor == 0 else 1.0 / factor
        buffers = {key: (stats[key] * scale).astype(np.float32)
                   for key in ("running_mean", "running_var")}
        weights = {"weight": np.ones(c, np.float32), "bias": np.zeros(c, np.float32)}
    made = r.add(layer, kind, BatchNorm.name, {"eps": f32(layer.batch_norm_param.eps)}, [src], x,
                 weights, buffers)
    r.scalable.add(made.name)


def scale(r, layer, kind):
    """A Scale right after a BatchNorm is that BN's gamma (and beta with bias_term)."""
    p = layer.scale_param
    src = r.bottom(layer, kind)
    read = any(src in other.inputs for other in r.layers)
    if src not in r.scalable or read or len(layer.bottom) != 1 or (p.axis, p.num_axes) != (1, 1):
        raise InteropError(f"layer '{layer.name}' ({kind}) does not directly follow a "
                           f"BatchNorm: netc has no scale layer of its own",
                           hint="netc imports a Scale only as the gamma/beta of the BatchNorm "
                                "just before it (Caffe's BatchNorm + Scale pair)")
    bn = next(made for made in r.layers if made.name == src)
    c = r.shape_of(src)[0]
    specs = [("weight", (c,))] + [("bias", (c,))] * p.bias_term
    bn.weights.update(r.weights(layer, kind, specs))
    bn.source += f" + layer '{layer.name}' ({kind})"
    r.scalable.discard(src)
    for top in layer.top:
        r.tensors[top] = src


def softmax(r, layer, kind):
    """SOFTMAX over the classes (per=pixel on an image); a final one after an InnerProduct
    becomes OUT softmax (caffe.read). SoftmaxWithLoss is read as Softmax."""
    src = r.bottom(layer, kind)
    x = r.shape_of(src)
    if layer.softmax_param.axis not in (1, -len(x)):  # the axis after N
        raise InteropError(f"layer '{layer.name}' ({kind}) takes the softmax along axis "
                           f"{layer.softmax_param.axis}; netc's along the channels (axis 1)")
    r.add(layer, kind, Softmax.name, {"per": "pixel"} if len(x) == 3 else {}, [src], x)


def reshaping(r, layer, kind):
    """Split (every top is its bottom) and Flatten (FLATTEN, nothing on a vector)."""
    src = r.bottom(layer, kind)
    x = r.shape_of(src)
    if kind == "Flatten":
        p = layer.flatten_param
        if (p.axis, p.end_axis) not in ((1, -1), (1, len(x))):
            raise InteropError(f"layer '{layer.name}' ({kind}) flattens axes {p.axis} to "
                               f"{p.end_axis}; netc's FLATTEN flattens C x H x W")
        if len(x) > 1:
            return r.add(layer, kind, Flatten.name, {}, [src], (math.prod(x),))
    for top in layer.top:
        r.tensors[top] = src


HANDLERS = {
    "Convolution": convolution, "Deconvolution": deconvolution, "Pooling": pooling,
    "InnerProduct": inner_product, "ReLU": activation, "Sigmoid": activation,
    "TanH": activation, "ELU": activation, "PReLU": activation, "LRN": lrn,
    "Dropout": dropout, "Concat": concat, "Eltwise": eltwise, "BatchNorm": batch_norm,
    "Scale": scale, "Softmax": softmax, "SoftmaxWithLoss": softmax, "Split": reshaping,
    "Flatten": reshaping,
}
