"""CONV: 2-D convolution with stride, padding, groups and a fused activation."""
from __future__ import annotations

import math

import numpy as np

from ..jit import REDUCE, cpu_kernel, gemm, prange
from ..registry import (ACTIVATIONS, Bool, Choice, Int, LayerError, LayerKind, Pad, Pair,
                        register)
from ..shapes import resolve_pad, window_out
from .activation import act_backward, act_forward, channel_view


def conv_geometry(h, x):
    """(out_h, out_w, dropped_h, dropped_w) of a CONV or POOL window over x = (C, H, W)."""
    (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
    oh, dh = window_out(x[1], kh, sh, ph, h["round"], axis="height")
    ow, dw = window_out(x[2], kw, sw, pw, h["round"], axis="width")
    return oh, ow, dh, dw


@register
class Conv(LayerKind):
    name = "CONV"
    example = ("5x6x4", "CONV 3x3/2 6 pad=1 groups=2 act=prelu")
    doc = "2-D convolution: `CONV 11x11/4 96`, `CONV 3x3 64 pad=same act=relu`, `groups=G`"
    spatial = True
    keys = {
        "filters": Int(doc="the number of filters, an integer >= 1"),
        "kernel": Pair((3, 3)),
        "stride": Pair((1, 1)),
        "pad": Pad(0),
        "groups": Int(1),
        "bias": Bool(True),
        "act": Choice(ACTIVATIONS, "none"),
        "round": Choice(("exact", "floor", "ceil"), "exact"),
    }
    positional = {tuple: "kernel", int: "filters", str: "act"}

    def resolve(self, h, xs):
        x = xs[0]
        if "filters" not in h:
            raise LayerError("CONV needs the number of filters", key="filters",
                             hint="write it after the kernel, e.g. `CONV 3x3 64`, or set a default "
                                  "with `CONV: 64`")
        if h["pad"] == "same" and h["round"] == "exact":
            h["round"] = "floor"  # 'same' at stride S gives ceil(W/S), as PyTorch's padding=k//2
        h["pad"] = resolve_pad(h["pad"], h["kernel"])
        g = h["groups"]
        if x[0] % g or h["filters"] % g:
            raise LayerError(f"groups={g} must divide the input channels ({x[0]}) and the filters "
                             f"({h['filters']})", key="groups",
                             hint="choose groups among the common divisors: "
                                  + ", ".join(str(d) for d in range(1, x[0] + 1)
                                              if x[0] % d == 0 and h["filters"] % d == 0))
        return h

    def shape(self, h, xs):
        oh, ow, _, _ = conv_geometry(h, xs[0])
        return (h["filters"], oh, ow)

    def params(self, h, xs):
        kh, kw = h["kernel"]
        p = {"weight": (h["filters"], xs[0][0] // h["groups"], kh, kw)}
        if h["bias"]:
            p["bias"] = (h["filters"],)
        if h["act"] == "prelu":
            p["slope"] = (h["filters"],)
        return p

    def macs(self, h, xs, y):
        kh, kw = h["kernel"]
        return math.prod(y) * (xs[0][0] // h["groups"]) * kh * kw

    def flops(self, h, xs, y):
        return math.prod(y) * (int(h["bias"]) + (h["act"] != "none"))

    def window(self, h, xs):
        return h["kernel"], h["stride"]

    def label(self, h):
        kh, kw = h["kernel"]
        s = h["stride"]
        text = f"CONV {kh}x{kw}" + (f"/{s[0]}" if s == (s[0], s[0]) and s[0] > 1 else
                                    "" if s[0] == 1 == s[1] else f"/{s[0]}x{s[1]}")
        text += f" {h['filters']}"
        if h["pad"] != (0, 0):
            text += f" pad={h['pad'][0]}" if h["pad"][0] == h["pad"][1] else f" pad={h['pad'][0]}x{h['pad'][1]}"
        if h["groups"] > 1:
            text += f" g={h['groups']}"
        if h["act"] != "none":
            text += f" {h['act']}"
        return text

    # ---- runtime ------------------------------------------------------------------------------
    # im2col + GEMM inside one parallel kernel: each thread takes a contiguous part of the batch
    # and unfolds it a chunk of samples at a time into its own workspace (so the chunk stays in
    # cache), multiplies by BLAS (single-threaded inside the thread) and writes the result back
    # with the bias and the activation applied. Backward unfolds again instead of keeping the
    # unfolded input; each thread sums its own weight gradient, and the parts are added after.
    def forward(self, h, p, xs, ctx):
        x = np.ascontiguousarray(xs[0])
        n, f = x.shape[0], h["filters"]
        oh, ow = conv_out_hw(h, x.shape)
        w = p["weight"].reshape(f, -1)                                   # (F, C/g*kh*kw)
        fused = h["act"] in ACT_CODES
        y = ctx.buffer("y" if fused else "z", (n, f, oh, ow), x.dtype)
        bias = p.get("bias", np.zeros(f, x.dtype))
        code = ACT_CODES.get(h["act"], 0)
        algorithm = _algorithm(h, x.shape)
        if algorithm == "dense":  # the window covers the input: y = act(x W^T + b), an FC
            from .dense import _linear_forward_cpu
            # (with no activation z is the output: the "y" buffer, fresh where the model's output)
            z = ctx.buffer("y" if h["act"] == "none" else "z", (n, f, 1, 1), x.dtype)
            _linear_forward_cpu(x.reshape(n, -1), w, p.get("bias", np.zeros(0, x.dtype)),
                                ctx.workers, z.reshape(n, f))
            return fused_forward(h, p, z), (x, z, None)
        if algorithm == "winograd":
            per, xp, v, z, o = _winograd_workspace(ctx, x, f, oh, ow, ("xp", "v", "m", "o"))
            _winograd_forward_cpu(x, _winograd_weights(p["weight"]), bias, code, *h["pad"], oh, ow,
                                  per, xp, v, z, o, y)
        elif algorithm == "shift":
            per, xp, z = _shift_workspace(ctx, h, x, f, ("xp", "z"))
            _conv_shift_forward_cpu(x, _taps(p["weight"]), bias, code, *_geometry(h), oh, ow,
                                    per, xp, z, y)
        else:
            per, cols, z = _workspace(ctx, h, x, f, oh, ow, ("cols", "z"))
            size = cols.shape[1] and x.shape[0] * w.shape[1] * h["groups"] * oh * ow
            kept = ctx.buffer("cols", (size if ctx.arena is not None and
                                       size * x.itemsize <= KEEP_COLS_BYTES else 0,), x.dtype)
            _conv_forward_cpu(x, w, bias, code, h["groups"], *_geometry(h), oh, ow, per, cols,
                              kept, z, y.reshape(n, f, oh * ow))
        if fused:
            return y, (x, None, y)
        z = y  # PReLU: its learned slope is applied apart
        y = fused_forward(h, p, z)
        return y, (x, z, y)

    def backward(self, h, p, cache, dy, ctx):
        x, z, y = cache
        f = h["filters"]
        n, _, oh, ow = dy.shape
        w = p["weight"].reshape(f, -1)
        grads = {}
        if y is None:  # dense: z is the pre-activation
            from .dense import _linear_backward_cpu
            dz, grads = fused_backward(h, p, z, fused_forward(h, p, z), dy)
            dz = np.ascontiguousarray(dz).reshape(n, f)
            dx = np.empty(x.shape if ctx.need_dx else (0,) + x.shape[1:], dz.dtype)
            grads["weight"] = np.empty_like(p["weight"])
            _linear_backward_cpu(x.reshape(n, -1), w, dz, ctx.workers, grads["weight"].reshape(f, -1),
                                 dx.reshape(dx.shape[0], -1))
            if "bias" in p:
                grads["bias"] = dz.sum(axis=0)
            return [dx if ctx.need_dx else None], grads
        if z is not None:  # PReLU
            dy, grads = fused_backward(h, p, z, y, dy)
            code = 0
        else:
            code = ACT_CODES[h["act"]]
        dy = np.ascontiguousarray(dy)
        need_dx = bool(ctx.need_dx)
        dx = ctx.buffer("dx", x.shape if need_dx else (0,) + x.shape[1:], dy.dtype)
        algorithm = _algorithm(h, x.shape)
        if algorithm == "winograd":
            u = _winograd_weights(p["weight"])
            per, xp, v, dm, dv, o = _winograd_workspace(ctx, x, f, oh, ow,
                                                        ("xp", "v", "m", "dv", "o"))
            du = ctx.scratch("dw", (xp.shape[0],) + u.shape, dy.dtype)
            db = ctx.scratch("db", (xp.shape[0], f), dy.dtype)
            _winograd_backward_cpu(x, u, dy, y, code, *h["pad"], per, need_dx, xp, v, dm, dv, o,
                                   du, db, dx)
            grads["weight"] = _winograd_weight_grad(du.sum(axis=0))
            if "bias" in p:
                grads["bias"] = db.sum(axis=0)
            return [dx if need_dx else None], grads
        if algorithm == "shift":
            per, xp, d2, dxp = _shift_workspace(ctx, h, x, f, ("xp", "d2", "dxp"))
            kh, kw = h["kernel"]
            dw = ctx.scratch("dw", (xp.shape[0], kh * kw, f, x.shape[1]), dy.dtype)
            db = ctx.scratch("db", (xp.shape[0], f), dy.dtype)
            _conv_shift_backward_cpu(x, _taps(p["weight"]), dy, y, code, *_geometry(h), oh, ow,
                                     per, need_dx, xp, d2, dxp, dw, db, dx)
            grads["weight"] = np.ascontiguousarray(
                dw.sum(axis=0).reshape(kh, kw, f, -1).transpose(2, 3, 0, 1))
            if "bias" in p:
                grads["bias"] = db.sum(axis=0)
            return [dx if need_dx else None], grads
        dy = dy.reshape(n, f, oh * ow)
        per, cols, d2, dcols = _workspace(ctx, h, x, f, oh, ow, ("cols", "d2", "dcols"))
        (kh, kw), (ph, pw), c = h["kernel"], h["pad"], x.shape[1]
        if h["groups"] == 1:  # dx through a channels-last fold (see _fold_cpu)
            wt = np.ascontiguousarray(p["weight"].transpose(0, 2, 3, 1)).reshape(f, -1)
            sh, sw = h["stride"]  # room for the last window even in ceil mode
            dxp = ctx.scratch("dxp", (ctx.workers, x.shape[2] + 2 * ph + kh + sh,
                                      (x.shape[3] + 2 * pw + kw + sw) * c), dy.dtype)
        else:
            wt, dxp = w[:0], ctx.scratch("dxp", (ctx.workers, 0, 0), dy.dtype)
        kept = ctx.buffer("cols", (0,), dy.dtype) if ctx.arena is None else ctx.arena.get(
            (ctx.node, "cols"), np.zeros(0, dy.dtype))  # forward's unfolded input, if it kept it
        t = cols.shape[0]
        dw = ctx.scratch("dw", (t,) + w.shape, dy.dtype)
        db = ctx.scratch("db", (t, f), dy.dtype)
        _conv_backward_cpu(x, w, dy, y.reshape(n, f, oh * ow), code, h["groups"], *_geometry(h),
                           oh, ow, per, need_dx, cols, kept, d2, dcols, wt, dxp, dw, db, dx)
        grads["weight"] = dw.sum(axis=0).reshape(p["weight"].shape)
        if "bias" in p:
            grads["bias"] = db.sum(axis=0)
        return [dx if need_dx else None], grads


def _workspace(ctx, h, x, f, oh, ow, tags):
    """(samples per chunk, then one (threads, size) scratch array per tag): 'cols' holds a
    chunk's unfolded input, 'z'/'d2' its (F, m*oh*ow) GEMM result or output gradient, 'dcols'
    the unfolded input gradient. A 1x1/1 unpadded conv reads its input in place (no cols)."""
    c = x.shape[1]
    k = c * h["kernel"][0] * h["kernel"][1]
    t = ctx.workers
    per = max(1, min(-(-x.shape[0] // t), CHUNK_BYTES // (k * oh * ow * x.itemsize)))
    if _pointwise(h):
        per = 1
    size = {"cols": 0 if _pointwise(h) else k * per * oh * ow, "dcols": k * per * oh * ow,
            "z": f * per * oh * ow, "d2": f * per * oh * ow}
    return (per,) + tuple(ctx.scratch(tag, (t, size[tag]), x.dtype) for tag in tags)


# Stride-1 convolutions over many channels skip im2col: with the input zero-padded to
# (C, Hp*Wp), tap (i, j) of the window reads the same matrix shifted by i*Wp + j, so the layer is
# kh*kw GEMMs of (F x C) by a shifted (C x L) block, summed by the GEMM itself (beta = 1), over a
# "wide" output of L = (oh-1)*Wp + ow columns whose Wp - ow columns past each row are discarded.
# Backward is the same GEMMs transposed; the input gradient accumulates into a padded buffer
# instead of going through col2im. Several samples side by side make one longer L. Measured on
# the small VGG's 32- and 64-channel layers, it is 1.3-1.6x faster than im2col (bench/).
SHIFT_MIN_CHANNELS = 16  # fewer, and the GEMMs (K = C) are too thin to pay
SHIFT_MIN_OUTPUT = 64    # output pixels: fewer, and kh*kw small GEMMs lose to one im2col GEMM
FORCE = None  # "im2col" | "shift" | "winograd" where allowed: for tests and benchmarks


def _algorithm(h, xshape):
    """How a CONV runs on the CPU: dense (its window covers the whole input: an FC), winograd
    (3x3/1), shift (other stride-1 kernels) or im2col."""
    oh, ow, _, _ = conv_geometry(h, xshape[1:])
    dense = h["groups"] == 1 and h["pad"] == (0, 0) and h["kernel"] == tuple(xshape[2:])
    stride1 = h["stride"] == (1, 1) and h["groups"] == 1 and h["kernel"] != (1, 1)
    if FORCE is not None:
        if FORCE == "dense":
            return "dense" if dense else "im2col"
        if FORCE == "im2col" or not stride1:
            return "im2col"
        return "shift" if FORCE == "winograd" and h["kernel"] != (3, 3) else FORCE
    if dense:
        return "dense"
    if not stride1 or xshape[1] < SHIFT_MIN_CHANNELS or oh * ow < SHIFT_MIN_OUTPUT:
        return "im2col"
    return "winograd" if h["kernel"] == (3, 3) else "shift"


def _taps(weight):
    """(F, C, kh, kw) weights as (kh*kw, F, C): one (F x C) matrix per tap."""
    f, c, kh, kw = weight.shape
    return np.ascontiguousarray(weight.transpose(2, 3, 0, 1)).reshape(kh * kw, f, c)


def _shift_workspace(ctx, h, x, f, tags):
    """(samples per chunk, then a (threads, size) scratch per tag): 'xp' the chunk's padded
    input (C, m*Hp*Wp), 'dxp' its gradient, 'z'/'d2' the wide output or its gradient (F, ~m*Hp*Wp)."""
    (ph, pw), (n, c, hh, ww) = h["pad"], x.shape
    img = (hh + 2 * ph) * (ww + 2 * pw)
    per = max(1, min(-(-n // ctx.workers), CHUNK_BYTES // (c * img * x.itemsize)))
    size = {"xp": c * per * img, "dxp": c * per * img, "z": f * per * img, "d2": f * per * img}
    return (per,) + tuple(ctx.scratch(tag, (ctx.workers, size[tag]), x.dtype) for tag in tags)


@cpu_kernel(parallel=True)
def _conv_shift_forward_cpu(x, wt, bias, code, kh, kw, sh, sw, ph, pw, oh, ow, per, xp_ws, z_ws, y):
    """y (N, F, oh, ow) = act(conv(x, w) + bias) for stride 1, from the taps wt (kh*kw, F, C)."""
    n, c_ = x.shape[0], x.shape[1]
    parts, f_ = z_ws.shape[0], wt.shape[1]
    wp = x.shape[3] + 2 * pw
    img = (x.shape[2] + 2 * ph) * wp
    for t in prange(parts):
        lo, hi = n * t // parts, n * (t + 1) // parts
        for s in range(lo, hi, per):
            m = min(hi, s + per) - s
            xp = xp_ws[t, :c_ * m * img].reshape(c_, m * img)
            _pad_cpu(x, s, m, ph, pw, xp)
            wide = (m - 1) * img + (oh - 1) * wp + ow
            z = z_ws[t, :f_ * wide].reshape(f_, wide)
            for i in range(kh):
                for j in range(kw):
                    off = i * wp + j
                    gemm(False, False, 1.0, wt[i * kw + j], xp[:, off:off + wide],
                         0.0 if i + j == 0 else 1.0, z)
            for f in range(f_):
                b = bias[f]
                for q in range(m):
                    for oy in range(oh):
                        _act_row_cpu(code, z[f, q * img + oy * wp:], b, y[s + q, f, oy], ow)


@cpu_kernel(parallel=True, fastmath=REDUCE)  # REDUCE: so the row kernels inline
def _conv_shift_backward_cpu(x, wt, dy, y, code, kh, kw, sh, sw, ph, pw, oh, ow, per, need_dx,
                             xp_ws, d2_ws, dxp_ws, dw_ws, db_ws, dx):
    """Stride-1 backward: dw_ws[t] (kh*kw, F, C) and db_ws[t], thread t's weight and bias
    gradients; dx (unless empty) the input gradient."""
    n, c_, hh, ww = x.shape
    parts, f_ = d2_ws.shape[0], wt.shape[1]
    wp = ww + 2 * pw
    img = (hh + 2 * ph) * wp
    for t in prange(parts):
        lo, hi = n * t // parts, n * (t + 1) // parts
        dw, db = dw_ws[t], db_ws[t]
        _fill_cpu(dw.reshape(-1), 0.0)
        _fill_cpu(db, 0.0)
        for s in range(lo, hi, per):
            m = min(hi, s + per) - s
            xp = xp_ws[t, :c_ * m * img].reshape(c_, m * img)
            _pad_cpu(x, s, m, ph, pw, xp)
            wide = (m - 1) * img + (oh - 1) * wp + ow
            d2 = d2_ws[t, :f_ * wide].reshape(f_, wide)
            _wide_prologue_cpu(dy, y, code, s, m, img, wp, d2, db)
            for i in range(kh):
                for j in range(kw):
                    off = i * wp + j
                    gemm(False, True, 1.0, d2, xp[:, off:off + wide], 1.0, dw[i * kw + j])
            if need_dx:
                dxp = dxp_ws[t, :c_ * m * img].reshape(c_, m * img)
                _fill_cpu(dxp.reshape(-1), 0.0)
                for i in range(kh):
                    for j in range(kw):
                        off = i * wp + j
                        gemm(True, False, 1.0, wt[i * kw + j], d2, 1.0, dxp[:, off:off + wide])
                for c in range(c_):
                    for q in range(m):
                        for iy in range(hh):
                            src, dst = dxp[c, q * img + (iy + ph) * wp + pw:], dx[s + q, c, iy]
                            for ix in range(ww):
                                dst[ix] = src[ix]


@cpu_kernel()
def _pad_cpu(x, s, m, ph, pw, xp):
    """xp (C, m*Hp*Wp) = samples s..s+m-1 of x, zero-padded, side by side."""
    c_, hh, ww = x.shape[1], x.shape[2], x.shape[3]
    wp = ww + 2 * pw
    img = (hh + 2 * ph) * wp
    for c in range(c_):
        row = xp[c]
        for q in range(m):
            base = q * img
            for k in range(ph * wp):
                row[base + k] = 0
                row[base + img - 1 - k] = 0
            for iy in range(hh):
                at = base + (iy + ph) * wp
                src = x[s + q, c, iy]
                for k in range(pw):
                    row[at + k] = 0
                    row[at + wp - 1 - k] = 0
                for ix in range(ww):
                    row[at + pw + ix] = src[ix]


@cpu_kernel(fastmath=REDUCE)
def _wide_prologue_cpu(dy, y, code, s, m, img, wp, d2, dbias):
    """d2 (F, wide) = dy * act'(z) at the valid positions of the wide layout, zero elsewhere;
    dbias[f] accumulates its sum."""
    f_, wide = d2.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for f in range(f_):
        row = d2[f]
        for k in range(wide):
            row[k] = 0
        acc = 0.0
        for q in range(m):
            for oy in range(oh):
                acc += _grad_row_cpu(code, dy[s + q, f, oy], y[s + q, f, oy],
                                     row[q * img + oy * wp:], ow)
        dbias[f] += acc


# Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2016) for 3x3 stride-1 convolutions:
# each 2x2 output tile comes from a 4x4 input tile with 16 multiplications per (filter, channel)
# instead of 36, so the GEMMs shrink 2.25x. Per chunk of samples: transform the input tiles,
# V = B^T d B (16 matrices of C x tiles); multiply M = U V by the transformed weights U = G g G^T
# (16 GEMMs of F x C by C x tiles); transform back, Y = A^T M A, adding bias and activation.
# Backward is the exact adjoint of those linear maps: dM = A dY A^T, then dV = U^T dM (scattered
# back through B dV B^T) and dU = dM V^T (gathered through G^T dU G in NumPy). Every pass does the
# 2.25x fewer multiplications; the transforms are additions only.
_WINO_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


def _winograd_weights(weight):
    """(F, C, 3, 3) weights -> U (16, F, C), U = G g G^T for every (filter, channel)."""
    f, c = weight.shape[:2]
    u = np.einsum("ai,fcij,bj->abfc", _WINO_G, weight.astype(np.float64), _WINO_G)
    return np.ascontiguousarray(u.reshape(16, f, c), dtype=weight.dtype)


def _winograd_weight_grad(du):
    """dU (16, F, C) -> the weight gradient (F, C, 3, 3) = G^T dU G."""
    _, f, c = du.shape
    dg = np.einsum("ai,abfc,bj->fcij", _WINO_G, du.reshape(4, 4, f, c).astype(np.float64), _WINO_G)
    return np.ascontiguousarray(dg, dtype=du.dtype)


def _winograd_workspace(ctx, x, f, oh, ow, tags):
    """(samples per chunk, then a per-thread scratch per tag). Channels are innermost, so that
    every transform is vector arithmetic over channels: 'xp' one padded sample (Hq, Wq, C), 'v' and
    'dv' the transformed input or its gradient (16, tiles, C), 'm' the transformed output or its
    gradient (16, tiles, F), 'o' one sample's output or its gradient over whole tiles (F, 2th, 2tw)."""
    n, c = x.shape[:2]
    th, tw = -(-oh // 2), -(-ow // 2)
    per = max(1, min(-(-n // ctx.workers), CHUNK_BYTES // (16 * max(c, f) * th * tw * x.itemsize)))
    t, tiles, size = ctx.workers, per * th * tw, x.itemsize
    # the 16 matrices (and the F planes of 'o') are written side by side: strides that are
    # multiples of 4 KiB would put them all in the same L1 sets (measured 7x slower)
    shapes = {"xp": (2 * th + 2, 2 * tw + 2, c), "v": (16, _skew(tiles, c * size), c),
              "dv": (16, _skew(tiles, c * size), c), "m": (16, _skew(tiles, f * size), f),
              "o": (f, 2 * th, _skew(2 * tw, 2 * th * size))}
    return (per,) + tuple(ctx.scratch(tag, (t,) + shapes[tag], x.dtype) for tag in tags)


def _skew(count, unit_bytes):
    """The least count' >= count whose count' * unit_bytes is not close to a multiple of 4 KiB."""
    while not 512 <= (count * unit_bytes) % 4096 <= 3584:
        count += 1
    return count


@cpu_kernel(parallel=True)
def _winograd_forward_cpu(x, u, bias, code, ph, pw, oh, ow, per, xp_ws, v_ws, m_ws, o_ws, y):
    n = x.shape[0]
    parts = xp_ws.shape[0]
    th, tw = -(-oh // 2), -(-ow // 2)
    for t in prange(parts):
        lo, hi = n * t // parts, n * (t + 1) // parts
        xp, v, mm, o = xp_ws[t], v_ws[t], m_ws[t], o_ws[t]
        for s in range(lo, hi, per):
            m = min(hi, s + per) - s
            cols = m * th * tw
            _winograd_input_cpu(x, s, m, ph, pw, th, tw, xp, v)
            for k in range(16):  # M = V U^T, tile by tile
                gemm(False, True, 1.0, v[k, :cols], u[k], 0.0, mm[k, :cols])
            for q in range(m):
                _winograd_out_cpu(mm, q * th * tw, th, tw, o)
                for f in range(o.shape[0]):
                    for oy in range(oh):
                        _act_row_cpu(code, o[f, oy], bias[f], y[s + q, f, oy], ow)


@cpu_kernel(parallel=True, fastmath=REDUCE)  # REDUCE: so the row kernels inline
def _winograd_backward_cpu(x, u, dy, y, code, ph, pw, per, need_dx, xp_ws, v_ws, m_ws, dv_ws,
                           o_ws, du_ws, db_ws, dx):
    n, c_, hh, ww = x.shape
    parts = xp_ws.shape[0]
    oh, ow = dy.shape[2], dy.shape[3]
    th, tw = -(-oh // 2), -(-ow // 2)
    for t in prange(parts):
        lo, hi = n * t // parts, n * (t + 1) // parts
        xp, v, dm, dv, o = xp_ws[t], v_ws[t], m_ws[t], dv_ws[t], o_ws[t]
        du, db = du_ws[t], db_ws[t]
        _fill_cpu(du.reshape(-1), 0.0)
        _fill_cpu(db, 0.0)
        _fill_cpu(o.reshape(-1), 0.0)  # the border of whole tiles past (oh, ow) stays zero
        for s in range(lo, hi, per):
            m = min(hi, s + per) - s
            cols = m * th * tw
            _winograd_input_cpu(x, s, m, ph, pw, th, tw, xp, v)
            for q in range(m):
                for f in range(o.shape[0]):
                    for oy in range(oh):
                        db[f] += _grad_row_cpu(code, dy[s + q, f, oy], y[s + q, f, oy], o[f, oy], ow)
                _winograd_grad_out_cpu(o, th, tw, dm, q * th * tw)
            for k in range(16):  # dU += dM^T V
                gemm(True, False, 1.0, dm[k, :cols], v[k, :cols], 1.0, du[k])
            if need_dx:
                for k in range(16):  # dV = dM U
                    gemm(False, False, 1.0, dm[k, :cols], u[k], 0.0, dv[k, :cols])
                for q in range(m):
                    _winograd_grad_in_cpu(dv, q * th * tw, th, tw, xp)
                    for c in range(c_):
                        for iy in range(hh):
                            dst = dx[s + q, c, iy]
                            for ix in range(ww):
                                dst[ix] = xp[iy + ph, ix + pw, c]


@cpu_kernel()
def _winograd_input_cpu(x, s, m, ph, pw, th, tw, xp, v):
    """v[:, tiles of sample q, :] = the transformed tiles of samples s..s+m-1 (xp: scratch)."""
    for q in range(m):
        _winograd_pad_cpu(x[s + q], ph, pw, xp)
        _winograd_in_cpu(xp, th, tw, v, q * th * tw)


@cpu_kernel()
def _winograd_pad_cpu(img, ph, pw, xp):
    """xp (Hq, Wq, C) = one sample (C, H, W) placed at (ph, pw) on zeros, channels last."""
    c_, hh, ww = img.shape
    flat = xp.reshape(-1)
    for k in range(flat.size):
        flat[k] = 0
    for c in range(c_):
        for iy in range(hh):
            src = img[c, iy]
            for ix in range(ww):
                xp[iy + ph, ix + pw, c] = src[ix]


@cpu_kernel()
def _winograd_in_cpu(xp, th, tw, v, col0):
    """v[a*4+b, col0 + ty*tw + tx, :] = (B^T d B)[a, b] for the 4x4 tile d at (2ty, 2tx):
    t = B^T d combines the tile's rows, then v = t B its columns; vectors over channels."""
    for ty in range(th):
        for tx in range(tw):
            d = xp[2 * ty:2 * ty + 4, 2 * tx:2 * tx + 4]
            j = col0 + ty * tw + tx
            for c in range(xp.shape[2]):
                t00, t01, t02, t03 = d[0, 0, c] - d[2, 0, c], d[0, 1, c] - d[2, 1, c], d[0, 2, c] - d[2, 2, c], d[0, 3, c] - d[2, 3, c]
                t10, t11, t12, t13 = d[1, 0, c] + d[2, 0, c], d[1, 1, c] + d[2, 1, c], d[1, 2, c] + d[2, 2, c], d[1, 3, c] + d[2, 3, c]
                t20, t21, t22, t23 = d[2, 0, c] - d[1, 0, c], d[2, 1, c] - d[1, 1, c], d[2, 2, c] - d[1, 2, c], d[2, 3, c] - d[1, 3, c]
                t30, t31, t32, t33 = d[1, 0, c] - d[3, 0, c], d[1, 1, c] - d[3, 1, c], d[1, 2, c] - d[3, 2, c], d[1, 3, c] - d[3, 3, c]
                v[0, j, c], v[1, j, c], v[2, j, c], v[3, j, c] = t00 - t02, t01 + t02, t02 - t01, t01 - t03
                v[4, j, c], v[5, j, c], v[6, j, c], v[7, j, c] = t10 - t12, t11 + t12, t12 - t11, t11 - t13
                v[8, j, c], v[9, j, c], v[10, j, c], v[11, j, c] = t20 - t22, t21 + t22, t22 - t21, t21 - t23
                v[12, j, c], v[13, j, c], v[14, j, c], v[15, j, c] = t30 - t32, t31 + t32, t32 - t31, t31 - t33


@cpu_kernel()
def _winograd_out_cpu(mm, col0, th, tw, o):
    """o (F, 2th, 2tw) = A^T M A for every 2x2 tile of one sample (whole tiles; bias and
    activation come after, on the part inside the output)."""
    for ty in range(th):
        for tx in range(tw):
            j = col0 + ty * tw + tx
            oy, ox = 2 * ty, 2 * tx
            for f in range(mm.shape[2]):
                s0 = mm[0, j, f] + mm[4, j, f] + mm[8, j, f]  # s = A^T M, row 0 ...
                s1 = mm[1, j, f] + mm[5, j, f] + mm[9, j, f]
                s2 = mm[2, j, f] + mm[6, j, f] + mm[10, j, f]
                s3 = mm[3, j, f] + mm[7, j, f] + mm[11, j, f]
                r0 = mm[4, j, f] - mm[8, j, f] - mm[12, j, f]  # ... and row 1
                r1 = mm[5, j, f] - mm[9, j, f] - mm[13, j, f]
                r2 = mm[6, j, f] - mm[10, j, f] - mm[14, j, f]
                r3 = mm[7, j, f] - mm[11, j, f] - mm[15, j, f]
                o[f, oy, ox], o[f, oy, ox + 1] = s0 + s1 + s2, s1 - s2 - s3
                o[f, oy + 1, ox], o[f, oy + 1, ox + 1] = r0 + r1 + r2, r1 - r2 - r3


@cpu_kernel()
def _winograd_grad_out_cpu(g, th, tw, dm, col0):
    """dm[:, tile, f] = A g A^T for each 2x2 tile of g (F, 2th, 2tw), the output gradient
    (times act') of one sample, zero past the output's border."""
    for ty in range(th):
        for tx in range(tw):
            j = col0 + ty * tw + tx
            oy, ox = 2 * ty, 2 * tx
            for f in range(g.shape[0]):
                g00, g01 = g[f, oy, ox], g[f, oy, ox + 1]
                g10, g11 = g[f, oy + 1, ox], g[f, oy + 1, ox + 1]
                u10, u11 = g00 + g10, g01 + g11  # u = A g; rows 0 and 3 are g0 and -g1
                u20, u21 = g00 - g10, g01 - g11
                dm[0, j, f], dm[1, j, f], dm[2, j, f], dm[3, j, f] = g00, g00 + g01, g00 - g01, -g01
                dm[4, j, f], dm[5, j, f], dm[6, j, f], dm[7, j, f] = u10, u10 + u11, u10 - u11, -u11
                dm[8, j, f], dm[9, j, f], dm[10, j, f], dm[11, j, f] = u20, u20 + u21, u20 - u21, -u21
                dm[12, j, f], dm[13, j, f], dm[14, j, f], dm[15, j, f] = -g10, -g10 - g11, g11 - g10, g11


@cpu_kernel()
def _winograd_grad_in_cpu(dv, col0, th, tw, dxp):
    """dxp (Hq, Wq, C) = the sum over tiles of B dV B^T placed at (2ty, 2tx) (tiles overlap by
    two rows and columns). Each tile is transformed into a small buffer first (B's 1-D form,
    x -> (x0, x1 - x2 + x3, x1 + x2 - x0, -x3), on columns then rows), then added in place."""
    flat = dxp.reshape(-1)
    for k in range(flat.size):
        flat[k] = 0
    c_ = dxp.shape[2]
    tile = np.empty((16, c_), dxp.dtype)
    for ty in range(th):
        for tx in range(tw):
            j = col0 + ty * tw + tx
            for c in range(c_):
                v = dv[:, j, c]  # dV[a, b] = v[4a + b]: w = B dV by columns, then w B^T by rows
                w00, w01, w02, w03 = v[0], v[1], v[2], v[3]
                w10, w11, w12, w13 = v[4] - v[8] + v[12], v[5] - v[9] + v[13], v[6] - v[10] + v[14], v[7] - v[11] + v[15]
                w20, w21, w22, w23 = v[4] + v[8] - v[0], v[5] + v[9] - v[1], v[6] + v[10] - v[2], v[7] + v[11] - v[3]
                w30, w31, w32, w33 = -v[12], -v[13], -v[14], -v[15]
                tile[0, c], tile[1, c], tile[2, c], tile[3, c] = w00, w01 - w02 + w03, w01 + w02 - w00, -w03
                tile[4, c], tile[5, c], tile[6, c], tile[7, c] = w10, w11 - w12 + w13, w11 + w12 - w10, -w13
                tile[8, c], tile[9, c], tile[10, c], tile[11, c] = w20, w21 - w22 + w23, w21 + w22 - w20, -w23
                tile[12, c], tile[13, c], tile[14, c], tile[15, c] = w30, w31 - w32 + w33, w31 + w32 - w30, -w33
            for r in range(4):
                for col in range(4):
                    dst, src = dxp[2 * ty + r, 2 * tx + col], tile[4 * r + col]
                    for c in range(c_):
                        dst[c] += src[c]

def _pointwise(h):
    return h["kernel"] == (1, 1) and h["stride"] == (1, 1) and h["pad"] == (0, 0)


@cpu_kernel(parallel=True)
def _conv_forward_cpu(x, w, bias, code, groups, kh, kw, sh, sw, ph, pw, oh, ow, per, cols_ws, kept,
                      z_ws, y):
    """y (N, F, oh*ow) = act(conv(x, w) + bias), each thread on its part of the batch."""
    n, parts = x.shape[0], z_ws.shape[0]
    f_, k = w.shape
    fg, ln = f_ // groups, oh * ow
    for t in prange(parts):
        lo, hi = n * t // parts, n * (t + 1) // parts
        for s in range(lo, hi, per):
            e = min(hi, s + per)
            cols = _unfold_cpu(x, s, e, kh, kw, sh, sw, ph, pw, oh, ow, cols_ws, t, kept, True)
            z = z_ws[t, :f_ * (e - s) * ln].reshape(f_, (e - s) * ln)
            for g in range(groups):  # one GEMM per group
                gemm(False, False, 1.0, w[g * fg:(g + 1) * fg], cols[g * k:(g + 1) * k], 0.0,
                     z[g * fg:(g + 1) * fg])
            _epilogue_cpu(z, bias, code, y, s)


@cpu_kernel(parallel=True, fastmath=REDUCE)  # REDUCE: so the row kernels inline
def _conv_backward_cpu(x, w, dy, y, code, groups, kh, kw, sh, sw, ph, pw, oh, ow, per, need_dx,
                       cols_ws, kept, d2_ws, dcols_ws, wt, dxp_ws, dw_ws, db_ws, dx):
    """dw_ws[t], db_ws[t]: thread t's weight and bias gradients; dx: the input gradient."""
    n, parts = x.shape[0], d2_ws.shape[0]
    f_, k = w.shape
    kc, fg, ln = k * groups, f_ // groups, oh * ow
    for t in prange(parts):
        lo, hi = n * t // parts, n * (t + 1) // parts
        dw, db = dw_ws[t], db_ws[t]
        _fill_cpu(dw.reshape(-1), 0.0)
        _fill_cpu(db, 0.0)
        for s in range(lo, hi, per):
            e = min(hi, s + per)
            m = (e - s) * ln
            cols = _unfold_cpu(x, s, e, kh, kw, sh, sw, ph, pw, oh, ow, cols_ws, t, kept, False)
            d2 = d2_ws[t, :f_ * m].reshape(f_, m)
            _prologue_cpu(dy, y, code, s, d2, db)
            for g in range(groups):  # dw += d2 cols^T, accumulated by the GEMM itself
                gemm(False, True, 1.0, d2[g * fg:(g + 1) * fg], cols[g * k:(g + 1) * k], 1.0,
                     dw[g * fg:(g + 1) * fg])
            if need_dx and groups == 1:  # dcols^T = d2^T W', folded channels last
                dcols = dcols_ws[t, :kc * m].reshape(m, kc)
                gemm(True, False, 1.0, d2, wt, 0.0, dcols)
                _fold_cpu(dcols, kh, kw, sh, sw, ph, pw, oh, ow, dxp_ws[t], dx, s, e)
            elif need_dx:
                dcols = dcols_ws[t, :kc * m].reshape(kc, m)
                for g in range(groups):
                    gemm(True, False, 1.0, w[g * fg:(g + 1) * fg], d2[g * fg:(g + 1) * fg], 0.0,
                         dcols[g * k:(g + 1) * k])
                _col2im_cpu(dcols, kh, kw, sh, sw, ph, pw, oh, ow, dx, s, e)


@cpu_kernel()
def _unfold_cpu(x, s, e, kh, kw, sh, sw, ph, pw, oh, ow, cols_ws, t, kept, fill):
    """Samples s..e-1 unfolded to (C*kh*kw, (e-s)*oh*ow): in `kept` (the whole batch's, chunk
    after chunk) when it is not empty, filled only if `fill` (forward fills it, backward reads
    it), else in thread t's workspace; a 1x1/1 conv (an empty workspace) reads its one sample in
    place."""
    kc, m = x.shape[1] * kh * kw, (e - s) * oh * ow
    if cols_ws.shape[1] == 0:
        return x[s].reshape(kc, m)
    if kept.size:
        cols = kept[kc * s * oh * ow:kc * e * oh * ow].reshape(kc, m)
        if not fill:
            return cols
    else:
        cols = cols_ws[t, :kc * m].reshape(kc, m)
    _im2col_cpu(x, s, e, kh, kw, sh, sw, ph, pw, oh, ow, cols)
    return cols


@cpu_kernel()
def _fill_cpu(a, v):
    for i in range(a.size):
        a[i] = v


# activations applied in the conv kernels (PReLU, with its learned slope, goes through NumPy)
ACT_CODES = {"none": 0, "relu": 1, "leaky": 2, "elu": 3, "sigmoid": 4, "tanh": 5}


@cpu_kernel()
def _act(code, v):
    if code == 1:
        return v if v > 0 else 0.0 * v
    if code == 2:
        return v if v > 0 else 0.01 * v
    if code == 3:
        return v if v > 0 else np.expm1(v)
    if code == 4:
        return 1 / (1 + np.exp(-v)) if v >= 0 else np.exp(v) / (1 + np.exp(v))
    if code == 5:
        return np.tanh(v)
    return v


@cpu_kernel()
def _act_grad_from_y(code, y):
    """act'(z) written with y = act(z) (z itself is not kept)."""
    if code == 1:
        return 1.0 if y > 0 else 0.0
    if code == 2:
        return 1.0 if y > 0 else 0.01
    if code == 3:
        return 1.0 if y > 0 else y + 1.0
    if code == 4:
        return y * (1 - y)
    if code == 5:
        return 1 - y * y
    return 1.0


@cpu_kernel()
def _epilogue_cpu(zf, bias, code, y, s):
    """y[s + n, f, k] = act(zf[f, n*L + k] + bias[f]) for the chunk's samples n."""
    f_, ml = zf.shape
    ln = y.shape[2]
    for f in range(f_):
        b = bias[f]
        for n in range(ml // ln):
            _act_row_cpu(code, zf[f, n * ln:(n + 1) * ln], b, y[s + n, f], ln)


@cpu_kernel(fastmath=REDUCE)
def _prologue_cpu(dy, y, code, s, d2, dbias):
    """d2[f, n*L + k] = dy * act'(z) for the chunk's samples; dbias[f] accumulates it."""
    f_, ml = d2.shape
    ln = dy.shape[2]
    for f in range(f_):
        acc = 0.0
        for n in range(ml // ln):
            acc += _grad_row_cpu(code, dy[s + n, f], y[s + n, f], d2[f, n * ln:(n + 1) * ln], ln)
        dbias[f] += acc


@cpu_kernel()
def _act_row_cpu(code, src, b, dst, count):
    """dst[:count] = act(src[:count] + b); the activation is chosen outside the inner loops."""
    if code == 0:
        for k in range(count):
            dst[k] = src[k] + b
    elif code == 1:
        for k in range(count):
            v = src[k] + b
            dst[k] = v if v > 0 else 0
    else:
        for k in range(count):
            dst[k] = _act(code, src[k] + b)


@cpu_kernel(fastmath=REDUCE)
def _grad_row_cpu(code, g, out, dst, count):
    """dst[:count] = g * act'(z) (from out = act(z)); returns its sum (for the bias gradient)."""
    acc = 0.0
    if code == 0:
        for k in range(count):
            dst[k] = g[k]
            acc += g[k]
    elif code == 1:
        for k in range(count):
            v = g[k] if out[k] > 0 else 0
            dst[k] = v
            acc += v
    else:
        for k in range(count):
            v = g[k] * _act_grad_from_y(code, out[k])
            dst[k] = v
            acc += v
    return acc


CHUNK_BYTES = 1 << 20  # the unfolded input of one chunk of samples: about 1 MiB
# a layer whose whole batch unfolds into at most this keeps it from forward to backward instead of
# unfolding twice (LeNet's convolutions: 4-5 MB each at batch 64; 10% of a step)
KEEP_COLS_BYTES = 32 << 20


def _geometry(h):
    (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
    return kh, kw, sh, sw, ph, pw


def conv_out_hw(h, xshape):
    oh, ow, _, _ = conv_geometry(h, xshape[1:])
    return oh, ow


def fused_forward(h, p, z):
    """The activation fused into a CONV/FC (PReLU's slope is the layer's `slope` parameter)."""
    slope = channel_view(p["slope"], z.ndim) if "slope" in p else None
    return act_forward(h["act"], z, slope)


def fused_backward(h, p, z, y, dy):
    if h["act"] == "none":
        return dy, {}
    slope = channel_view(p["slope"], z.ndim) if "slope" in p else None
    dz, dslope = act_backward(h["act"], z, y, dy, slope)
    return dz, ({"slope": dslope} if dslope is not None else {})


@cpu_kernel()
def _valid(o, s, p, k, size):
    """The first and one-past-last output positions whose tap k lands inside [0, size)."""
    lo = 0
    while lo < o and lo * s - p + k < 0:
        lo += 1
    hi = o
    while hi > lo and (hi - 1) * s - p + k >= size:
        hi -= 1
    return lo, hi


@cpu_kernel()
def _im2col_cpu(x, n0, n1, kh, kw, sh, sw, ph, pw, oh, ow, out):
    """out[(c, i, j), (n - n0, y, x)] = x[n, c, y*sh - ph + i, x*sw - pw + j], zero outside,
    for the samples n0 <= n < n1. (The bounds test inside the innermost loop vectorizes better
    than loops split at the borders, as measured.)"""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    ln = oh * ow
    for c in range(c_):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for n in range(n0, n1):
                    base = (n - n0) * ln
                    for oy in range(oh):
                        iy = oy * sh - ph + i
                        dst = out[r, base + oy * ow:base + (oy + 1) * ow]
                        if iy < 0 or iy >= h_:
                            for ox in range(ow):
                                dst[ox] = 0
                            continue
                        src = x[n, c, iy]
                        if sw == 1:
                            for ox in range(ow):
                                ix = ox - pw + j
                                dst[ox] = src[ix] if 0 <= ix < w_ else 0
                        else:
                            for ox in range(ow):
                                ix = ox * sw - pw + j
                                dst[ox] = src[ix] if 0 <= ix < w_ else 0


@cpu_kernel()
def _fold_cpu(dcols, kh, kw, sh, sw, ph, pw, oh, ow, dxp, dx, n0, n1):
    """col2im from the transposed unfolding, dcols[(n, oy, ox), (i, j, c)], through a padded
    channels-last image dxp (Hp, Wp*C): for an output pixel and a kernel row i, the kw*C values
    (j, c) land on kw*C consecutive values of dxp's row, so every add is a vector of kw*C
    (for LeNet's second layer, 8x faster than col2im's rows of ow). Then dx[n0:n1] = dxp's
    interior, channels first."""
    c_, hh, ww = dx.shape[1], dx.shape[2], dx.shape[3]
    run = kw * c_
    for n in range(n0, n1):
        for r in range(dxp.shape[0]):
            row = dxp[r]
            for k in range(row.size):
                row[k] = 0
        for oy in range(oh):
            p0 = (n - n0) * oh * ow + oy * ow
            for i in range(kh):
                row = dxp[oy * sh + i]
                for ox in range(ow):
                    src, at = dcols[p0 + ox], ox * sw * c_
                    for k in range(run):
                        row[at + k] += src[i * run + k]
        for c in range(c_):
            for iy in range(hh):
                src, dst = dxp[iy + ph], dx[n, c, iy]
                for ix in range(ww):
                    dst[ix] = src[(ix + pw) * c_ + c]


@cpu_kernel()
def _col2im_cpu(dcols, kh, kw, sh, sw, ph, pw, oh, ow, dx, n0, n1):
    """The adjoint of im2col: fold dcols (C*kh*kw, (n1-n0)*oh*ow) into dx[n0:n1] (N, C, H, W)."""
    c_, h_, w_ = dx.shape[1], dx.shape[2], dx.shape[3]
    for n in range(n0, n1):
        base = (n - n0) * oh * ow
        for c in range(c_):
            img = dx[n, c]
            for iy in range(h_):
                for ix in range(w_):
                    img[iy, ix] = 0
            for i in range(kh):
                ylo, yhi = _valid(oh, sh, ph, i, h_)
                for j in range(kw):
                    xlo, xhi = _valid(ow, sw, pw, j, w_)
                    src = dcols[(c * kh + i) * kw + j]
                    for oy in range(ylo, yhi):
                        row = img[oy * sh - ph + i]
                        at = base + oy * ow
                        for ox in range(xlo, xhi):
                            row[ox * sw - pw + j] += src[at + ox]
