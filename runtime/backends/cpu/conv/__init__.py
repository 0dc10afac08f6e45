"""CONV on the CPU. Each pass is one kernel of the algorithm `algorithm` picks from the layer's
shape (README's table), split into parts (jit.launch; one, on the calling thread, for a small
layer): every part takes a contiguous share of the batch, with its own workspace, runs its GEMMs
single-threaded, and writes the result back with bias and activation applied; each part sums its
own weight gradient, and the parts' sums are added after.

    dense      the window covers the whole input: one GEMM, as an FC (dense.py)
    direct     stride 1 over few channels on long rows: taps on a wide output grid (direct.py)
    winograd   3x3/1 over enough channels and pixels: F(2x2, 3x3), or F(4x4, 3x3) over many
               channels (winograd.py)
    im2col     everything else: unfold, then GEMM (im2col.py)
"""
from __future__ import annotations

import numpy as np

from netc.compiler.kinds.conv import Conv as ConvKind
from netc.compiler.shapes import reached_taps, window_geometry

from ...registry import Implementation, implements
from ..activation import fused_backward, fused_forward, in_kernel
from ..blas import own_tiles
from ..common import act_pair, part_sum, window
from ..dense import linear_backward, linear_forward
from . import deconv  # noqa: F401 - registers DECONV, the family's transpose
from ..jit import launch, split_macs
from .direct import (_direct_backward_cpu, _direct_backward_part, _direct_forward_cpu,
                     _direct_forward_part, _direct_plan, _direct_weights, _direct_workspace,
                     wide_passes)
from .im2col import (_conv_backward_cpu, _conv_backward_part, _conv_backward_wide_cpu,
                     _conv_backward_wide_part, _conv_forward_cpu, _conv_forward_part,
                     _pointwise, _workspace)
from .winograd import (MIN_ROWS_4, _winograd4_backward_cpu, _winograd4_backward_part,
                       _winograd4_forward_cpu, _winograd4_forward_part, _winograd_backward_cpu,
                       _winograd_backward_part, _winograd_forward_cpu, _winograd_forward_part,
                       _winograd_weight_grad, _winograd_weights, _winograd_workspace,
                       backward_by_positions, forward_by_positions, tile_positions)

# fewer input channels, and its GEMMs (K = C) are too thin to pay for the transforms: forward +
# backward of a 3x3 CONV, C = F, batch 32-128 (bench/winograd_channels.py, AVX2, two runs), im2col
# took 0.89-1.16x Winograd's time at 16 channels (a tie: median 0.96), 1.06-1.09x at 24, 1.15-1.23x
# at 32. (Below 24, the first run also compiles no Winograd kernels: digits.net's 16-channel CONV)
WINOGRAD_MIN_CHANNELS = 24
WINOGRAD_MIN_OUTPUT = 64    # output pixels: fewer, and 16 small GEMMs lose to one im2col GEMM ...
# ... unless the layer is wide and the batch holds enough of them: the 16 GEMMs grow with the
# batch, the weights' transforms do not. 3x3/1 on 4x4 planes, forward + backward, im2col's time
# over Winograd's (interleaved, AVX-512): 512 channels 1.51x at batch 64, 0.85x at 16; 256
# channels 1.49x at 64, 1.03x at 16; 128 channels 1.27x at 64; 64 channels 0.97x at 64
WINOGRAD_SMALL_CHANNELS = 128
WINOGRAD_SMALL_PIXELS = 1024  # output pixels over the whole batch
WINOGRAD_SMALL_OUTPUT = 16  # ... on planes of at least 4x4 (smaller ones were not measured; on
# 1x1, Winograd does 16 products an output pixel against im2col's 9)
# direct runs over up to this many input channels, on planes whose rows, as long as the padded
# input's, add up to DIRECT_MIN_PASS values; where Winograd applies it wins above
# DIRECT_MAX_CHANNELS_TILES with netc's own GEMM tiles (AVX-512) and above
# DIRECT_MAX_CHANNELS_BLAS on the BLAS: 3x3 over C = F channels on 32x32 with the input's gradient,
# forward + backward, AVX2 (OpenBLAS's Haswell kernels), direct's time over Winograd's: 32
# channels 1.28-1.29x (batch 16, 64), 24 channels 1.00 (batch 32)
DIRECT_MAX_CHANNELS = 32
DIRECT_MAX_CHANNELS_TILES = 16
DIRECT_MAX_CHANNELS_BLAS = 24
# ... and on the BLAS, direct up to DIRECT_MAX_CHANNELS for at most this many filters, where
# Winograd's GEMMs (F columns) are thin: 3x3 on 32x32 with the input's gradient, batch 32, AVX2,
# direct's time over Winograd's (two runs, nine rounds): 32 -> 16 channels 0.69-0.78x,
# 24 -> 16 0.81x; 32 -> 24 1.07x, 32 -> 32 0.84-1.14x (the small VGG's step: Winograd 66-68 ms,
# direct 70-73, in one process)
DIRECT_FEW_FILTERS = 16
DIRECT_MIN_PASS = 512
# a layer whose whole batch unfolds into at most this, with fewer than KEEP_COLS_FILTERS filters a
# group, keeps the unfolding from forward to backward instead of unfolding twice. An unfolded value
# serves one multiply-add a filter: from 256 filters on, unfolding again costs a few percent of
# the layer's backward (ResNet-18 32x32 b64's six such layers: 434-491 ms kept, 507-511 not) and
# keeping costs memory (84 MiB of its 650)
KEEP_COLS_BYTES = 32 << 20
# im2col's and Winograd's backward take chunks of at least this many output pixels where a
# thread has them: the weight gradient's GEMMs sum over them, and a shallower sum re-reads and
# re-writes the whole weight gradient for little work. ResNet-18 32x32 b64's 512-filter 4x4
# layers (im2col): 310-360 ms a backward in chunks of 1 MiB of unfolded input, 3 samples; 84-122
# ms in chunks of 512 pixels. Winograd's 8x8 layers (256 -> 512 channels, 2 samples a chunk
# before, 8 now): 4-7% off a step of that layer alone (interleaved A/B, batch 16 and 64)
BACKWARD_MIN_DEPTH = 512
# where a thread's share holds fewer pixels than that, im2col's backward splits by filters from
# this many on (wide_backward)
WIDE_MIN_FILTERS = 64
KEEP_COLS_FILTERS = 256
# Winograd's 4x4 output tiles, F(4x4, 3x3), from this many input channels and filters on and for
# at least WINOGRAD4_MIN_PIXELS output pixels over the batch, where they take fewer GEMM
# multiply-adds (36 a 4x4 tile against 64 for four 2x2 tiles: planes of 4x4, 7x7, 8x8, 14x14,
# ...; not 5x5 or 6x6, which four 2x2 tiles or nine cover with as few). Fewer channels: the
# transforms' extra terms cost what the smaller GEMMs save; fewer pixels: the weights'
# transforms (2.25x the values, forward, backward and the weight gradient's) do. A layer's step
# (forward + backward), F(4x4) over F(2x2), one process alternating (bench/RESULTS.md), AVX2 Zen 3
# (OpenBLAS's GEMMs), with the transforms taking a row's tiles at once: 64 channels 32x32 b64
# 0.80x, 16x16 b64 0.84x, b8 0.93x, 8x8 b64 0.96x; 128 on 16x16 b64 0.73x; 32 channels 0.80-1.10x
# (not taken). AVX-512 Emerald Rapids (netc's own tiles; before the tiles at once): 128 on 16x16
# b64 0.73x, 256 on 8x8 b64 0.89x, 512 on 4x4 b128 0.99x, 64 on 32x32 b64 0.82x. Where the batch
# has few tiles (by positions, below), two threads: 1024 pixels 0.82x (512 on 4x4, b64), 0.85x
# (256 on 8x8, b16), 0.87x (256 on 4x4, b64), 0.89x (128 on 8x8, b16); 512 pixels 0.93-0.95x; 256
# pixels 1.16x (256 on 8x8, b4); one thread: 1024 pixels 0.91x, 256 1.45x
WINOGRAD4_MIN_CHANNELS = 64
WINOGRAD4_MIN_PIXELS = 1024
# ... and from WINOGRAD4_NARROW_CHANNELS on planes of at least WINOGRAD4_NARROW_PLANE pixels and
# WINOGRAD4_NARROW_PIXELS over the batch. With the transforms written out (winograd._bt6_cpu and
# the others: half their time before), Zen 4, AVX-512 / AVX2's kernels on the same host
# (bench/RESULTS.md): 24 channels 32x32 b64 0.66 / 1.00x, 16x16 b64 0.75 / 0.86x, b16 0.77 /
# 0.86x, 8x8 b64 0.79 / 0.98x; 32 channels 8x8 b64 0.85 / 0.91x, 16x16 b16 0.88 / 0.86x, 32x32
# b16 0.70 / 0.85x; at 1024 pixels a batch (8x8 b16) 0.98 / 0.98x, on 4x4 planes 1.07 / 0.97x:
# not taken. (Before, summing their terms in registers, AVX2 Zen 3: from 32 channels on 16x16,
# 8x8 b64 1.06x.)
WINOGRAD4_NARROW_CHANNELS = 24
WINOGRAD4_NARROW_PLANE = 64
WINOGRAD4_NARROW_PIXELS = 4096
WINOGRAD_TILE = None  # 2 or 4: force the output tile where Winograd runs (tests, benchmarks)
# F(4x4) by positions (winograd.py: the whole batch's transforms, then the 36 GEMMs split among
# the threads) where a thread's share of the batch holds fewer than MIN_ROWS_4 tiles, and the
# batch's transformed tiles are at most POSITIONS_MAX_VALUES a matrix set. By samples, 512
# channels on 4x4 at b64 took 1.00-1.10x F(2x2)'s time (each thread's dU summed over 32 rows and
# all 36 transformed weight matrices read by each thread); by positions 0.82x
POSITIONS_MAX_VALUES = 8 << 20
# ... and where a thread's share holds just MIN_ROWS_4 tiles, over this many channels and filters:
# two threads, Zen 4, a layer's step by positions over by samples: 256 on 8x8 b64 0.81-0.89x
# (AVX2's kernels 0.91x; ResNet-18's third stage, which then needs no per-thread dU, 18 MiB),
# 128 on 8x8 b64 0.91x (0.87x), 256 on 16x16 b16 (VGG-11's) 0.91x, 128 -> 256 there 0.91x; but
# 64 on 16x16 b64 and on 32x32 b16 1.14x; 256 tiles a thread tie (256 on 8x8 b128 0.98x), 512
# do not (128 on 16x16 b64 1.26x)
POSITIONS_WIDE_CHANNELS = 128
WINOGRAD_POSITIONS = None  # True / False: force it where F(4x4) runs (tests, benchmarks)
FORCE = None  # "im2col" | "winograd" | "direct" | "dense" where allowed: for tests and benchmarks
# taps that read only padding are left out (_reached); False: every tap runs (tests, benchmarks).
# ResNet-18 on 32x32 (ImageNet stem), batch 16, its last stage's 3x3 CONVs over 1x1 planes
# (see bench/RESULTS.md)
CUT_TAPS = True


def algorithm(h, xshape, tiles=None):
    """How a CONV runs on the CPU for an input of shape xshape (N, C, H, W), the batch
    included: dense, winograd, direct or im2col. `tiles`: whether the GEMMs run on netc's own
    tiles (by default, whether this CPU has them)."""
    oh, ow, _, _ = window_geometry(h, xshape[1:])
    dense = h["groups"] == 1 and h["pad"] == (0, 0) and h["kernel"] == tuple(xshape[2:])
    direct = h["stride"] == (1, 1) and h["groups"] == 1
    winograd = direct and h["kernel"] == (3, 3)
    if FORCE is not None:
        allowed = {"dense": dense, "winograd": winograd, "direct": direct}.get(FORCE, True)
        return FORCE if allowed else "im2col"
    if dense:
        return "dense"
    winograd = winograd and xshape[1] >= WINOGRAD_MIN_CHANNELS and (
        oh * ow >= WINOGRAD_MIN_OUTPUT or (xshape[1] >= WINOGRAD_SMALL_CHANNELS
                                           and oh * ow >= WINOGRAD_SMALL_OUTPUT
                                           and xshape[0] * oh * ow >= WINOGRAD_SMALL_PIXELS))
    long_rows = oh * (xshape[3] + 2 * h["pad"][1]) >= DIRECT_MIN_PASS
    if direct and xshape[1] <= DIRECT_MAX_CHANNELS and long_rows:
        tiles = own_tiles() if tiles is None else tiles
        if not tiles and h["filters"] <= DIRECT_FEW_FILTERS:
            return "direct"
        if not (winograd and xshape[1] > (DIRECT_MAX_CHANNELS_TILES if tiles
                                          else DIRECT_MAX_CHANNELS_BLAS)):
            return "direct"
    return "winograd" if winograd else "im2col"


def winograd_tile(xshape, filters, oh, ow):
    """The output tile (2: F(2x2, 3x3); 4: F(4x4, 3x3)) of a Winograd CONV of input xshape (N, C,
    H, W) into (oh, ow) planes: the same rule whether the GEMMs run on the BLAS or on netc's own
    tiles (measured on both: WINOGRAD4_MIN_CHANNELS)."""
    if WINOGRAD_TILE is not None:
        return WINOGRAD_TILE
    narrow = min(xshape[1], filters)
    if narrow < WINOGRAD4_MIN_CHANNELS and not (
            narrow >= WINOGRAD4_NARROW_CHANNELS and oh * ow >= WINOGRAD4_NARROW_PLANE
            and xshape[0] * oh * ow >= WINOGRAD4_NARROW_PIXELS):
        return 2
    if xshape[0] * oh * ow < WINOGRAD4_MIN_PIXELS:
        return 2
    four = tile_positions(4) * -(-oh // 4) * -(-ow // 4)
    two = tile_positions(2) * -(-oh // 2) * -(-ow // 2)
    return 4 if 4 * four <= 3 * two else 2


def _reached(h, p, xshape, ctx, w=None):
    """(h, p, cut) of the CONV that runs: where some of the kernel's taps read only padding (a 3x3
    over 1x1 planes), the kernel cut to the taps that reach the input (compiler.shapes.
    reached_taps) and its weights sliced to them (or `w`, forward's slice, in backward); else h
    and p as they are, and cut None. The cut is worked out once per shape (ctx.memo)."""
    key = ("taps", xshape)
    if key not in ctx.memo:
        ctx.memo[key] = reached_taps(h, xshape[1:]) if CUT_TAPS else None
    cut = ctx.memo[key]
    if cut is None:
        return h, p, None
    hc, rows, cols = cut
    if w is None:
        full = p["weight"]
        w = np.empty(full.shape[:2] + hc["kernel"], full.dtype)
        _copy_taps(full, w, _taps(full, rows, cols), False)
    return hc, dict(p, weight=w), cut


def _taps(w, rows, cols):
    """The flat indices, in a (kh*kw) plane of w's kernel, of the taps rows x cols, row by row."""
    return [r * w.shape[3] + c for r in rows for c in cols]


def _copy_taps(full, cut, taps, back):
    """cut's taps from full (back: full's from cut, zero elsewhere), a tap at a time: each one
    strided copy of F*C values (NumPy's copy of the 4-d slice, runs of 2 values, took 1.8 ms for
    512 x 256 x 2 x 2 of 3 x 3; tap by tap 0.4, as fast as the one tap of 1x1 planes a tap)."""
    f = full.reshape(full.shape[0] * full.shape[1], -1)
    c = cut.reshape(f.shape[0], -1)
    if back:
        f[...] = 0
    for k, tap in enumerate(taps):
        if back:
            f[:, tap] = c[:, k]
        else:
            c[:, k] = f[:, tap]


def _plan(h, xshape, ctx):
    """(oh, ow, algorithm, parts, Winograd's output tile or None, whether F(4x4) runs by
    positions) of a CONV for an input of shape xshape: worked out once per shape for the node
    (ctx.memo; at batch 1 they took 6% of LeNet-5's step), the same for forward and backward."""
    key = ("plan", xshape, FORCE, WINOGRAD_TILE, WINOGRAD_POSITIONS)
    plan = ctx.memo.get(key)
    if plan is None:
        oh, ow, _, _ = window_geometry(h, xshape[1:])
        how = algorithm(h, xshape)
        mt = winograd_tile(xshape, h["filters"], oh, ow) if how == "winograd" else None
        parts = _parts(h, xshape, h["filters"], oh, ow)
        plan = ctx.memo[key] = (oh, ow, how, parts, mt,
                                mt == 4 and by_positions(xshape, h["filters"], oh, ow, parts))
    return plan


def by_positions(xshape, filters, oh, ow, parts):
    """Whether an F(4x4) CONV runs by positions (WINOGRAD_POSITIONS) rather than by samples."""
    if WINOGRAD_POSITIONS is not None:
        return WINOGRAD_POSITIONS
    tiles = xshape[0] * -(-oh // 4) * -(-ow // 4)
    share = -(-tiles // parts)
    few = share < MIN_ROWS_4 or (share == MIN_ROWS_4
                                 and min(xshape[1], filters) >= POSITIONS_WIDE_CHANNELS)
    return (parts > 1 and few
            and tile_positions(4) * tiles * max(xshape[1], filters) <= POSITIONS_MAX_VALUES)


def _parts(h, xshape, f, oh, ow):
    """Parts for both passes of a CONV, split by samples, from its forward multiply-adds: the
    same in both, since im2col's kept unfolding is laid out by forward's chunks of samples."""
    n, c = xshape[0], xshape[1]
    macs = n * f * oh * ow * c * h["kernel"][0] * h["kernel"][1] // h["groups"]
    return min(split_macs(macs), n)


@implements(ConvKind, "cpu")
class Conv(Implementation):
    """The cache is (input, pre-activation where the activation runs apart, output, im2col's
    kept unfolding, the weights cut to the taps that reach the input or None)."""

    def algorithm(self, h, xs, batch=None, tiles=None):
        xshape = (batch or 1,) + tuple(xs[0])
        cut = reached_taps(h, xshape[1:]) if CUT_TAPS else None
        if cut is None:
            how = algorithm(h, xshape, tiles)
            if how == "winograd":  # "winograd F4": F(4x4, 3x3)
                oh, ow, _, _ = window_geometry(h, xshape[1:])
                how += " F4" if winograd_tile(xshape, h["filters"], oh, ow) == 4 else ""
            return how
        (kh, kw) = cut[0]["kernel"]
        return f"{algorithm(cut[0], xshape, tiles)} {kh}x{kw}"

    def forward(self, h, p, xs, ctx):
        x = np.ascontiguousarray(xs[0])
        h, p, cut = _reached(h, p, x.shape, ctx)
        w_cut = p["weight"] if cut is not None else None  # (for backward)
        n, f = x.shape[0], h["filters"]
        oh, ow, how, parts, mt, positions = _plan(h, x.shape, ctx)
        w = p["weight"].reshape(f, -1)
        inside = in_kernel(h, ctx)
        apart = inside == "none" and h["act"] != "none"
        y = ctx.buffer("z", (n, f, oh, ow), x.dtype) if apart else ctx.value((n, f, oh, ow), x.dtype)
        bias = p.get("bias", np.zeros(f, x.dtype))
        act = act_pair(inside, x.dtype)
        kept = None
        if how == "dense":
            linear_forward(x.reshape(n, -1), w, p.get("bias"), act, y.reshape(n, f))
        elif how == "direct":
            offs, margin, plane = _direct_plan(h, x.shape)
            xp, acc = _direct_workspace(ctx, x, f, plane, margin, ("xp", "acc"))
            launch(_direct_forward_cpu, _direct_forward_part, parts, x, _direct_weights(p["weight"]),
                   bias, act, *h["pad"], offs, oh, ow, wide_passes(), xp, acc, y)
        elif how == "winograd":
            ut = ctx.scratch("u", (tile_positions(mt), x.shape[1], f), x.dtype)
            _winograd_weights(p["weight"], ut, transpose=True)
            if positions:
                forward_by_positions(ctx, x, ut, bias, act, h["pad"], oh, ow, parts, y)
            else:
                per, xp, v, z, o, rows = _winograd_workspace(ctx, x, f, oh, ow,
                                                             ("xp", "v", "m", "o", "rows"), mt=mt)
                kernels = ((_winograd_forward_cpu, _winograd_forward_part) if mt == 2
                           else (_winograd4_forward_cpu, _winograd4_forward_part))
                launch(*kernels, parts, x, ut, bias, act, *h["pad"], oh, ow, per, xp, v, z, o,
                       rows, y)
        else:
            per, cols, z = _workspace(ctx, h, x, f, oh, ow, ("cols", "z"))
            size = cols.shape[1] and x.shape[0] * w.shape[1] * h["groups"] * oh * ow
            keep = (ctx.backward and size * x.itemsize <= KEEP_COLS_BYTES
                    and f // h["groups"] < KEEP_COLS_FILTERS)
            kept = ctx.buffer("cols", (size if keep else 0,), x.dtype)
            launch(_conv_forward_cpu, _conv_forward_part, parts, x, w, bias, act, h["groups"],
                   *window(h), oh, ow, per, cols, kept, z, y.reshape(n, f, oh * ow))
        if not apart:
            return y, (x, None, y, kept, w_cut)
        z = y
        y = fused_forward(h, p, z)
        return y, (x, z, y, kept, w_cut)

    def logits(self, cache):
        return cache[1]

    def backward(self, h, p, cache, dy, ctx):
        z, y = cache[1], cache[2]
        if z is None:  # the forward kernel applied the activation: its kernel takes the gradient
            return self._backward(h, p, cache, dy, h["act"], {}, ctx)
        dz, grads = fused_backward(h, p, z, y, dy)
        return self._backward(h, p, cache, dz, "none", grads, ctx)

    def backward_logits(self, h, p, cache, dz, ctx):
        return self._backward(h, p, cache, dz, "none", {}, ctx)

    def _backward(self, h, p, cache, dy, inside, grads, ctx):
        x, _, y, kept, w_cut = cache
        full = p["weight"].shape
        h, p, cut = _reached(h, p, x.shape, ctx, w_cut)
        dx, grads = self._taps_backward(h, p, x, y, kept, dy, inside, grads, ctx)
        if cut is not None:  # the left-out taps' gradient: zero (they read only padding)
            dw = np.empty(full, grads["weight"].dtype)
            _copy_taps(dw, grads["weight"].reshape(p["weight"].shape),
                       _taps(dw, cut[1], cut[2]), True)
            grads["weight"] = dw
        return dx, grads

    def _taps_backward(self, h, p, x, y, kept, dy, inside, grads, ctx):
        f = h["filters"]
        n, _, oh, ow = dy.shape
        need_dx = bool(ctx.need_dx)
        act = act_pair(inside, dy.dtype)
        _, _, how, parts, mt, positions = _plan(h, x.shape, ctx)
        dy = np.ascontiguousarray(dy)
        dx = ctx.grad(x.shape if need_dx else (0,) + x.shape[1:], dy.dtype)
        if how == "dense":
            k = x[0].size
            grads.update(linear_backward(x.reshape(n, k), p, dy, y, act, ctx,
                                         dx.reshape(dx.shape[0], k)))
            return [dx if need_dx else None], grads
        if how == "direct":
            offs, margin, plane = _direct_plan(h, x.shape)
            xp, g, acc = _direct_workspace(ctx, x, f, plane, margin, ("xp", "g", "acc"))
            dw = ctx.scratch("dw", (xp.shape[0], g.shape[1], x.shape[1], len(offs)), dy.dtype)
            db = ctx.scratch("db", (xp.shape[0], f), dy.dtype)
            launch(_direct_backward_cpu, _direct_backward_part, parts, x,
                   _direct_weights(p["weight"], transpose=True), dy, y, act, *h["pad"], offs, margin,
                   need_dx, wide_passes(), xp, g, acc, dw, db, dx)
            kk = h["kernel"][0] * h["kernel"][1]
            grads["weight"] = part_sum(dw, parts)[:f, :, :kk].reshape(p["weight"].shape)
        elif how == "winograd":
            u = _winograd_weights(p["weight"], ctx.scratch("u", (tile_positions(mt), f, x.shape[1]),
                                                           dy.dtype))
            if positions:
                db = backward_by_positions(ctx, x, u, dy, y, act, h["pad"], need_dx, parts, dx)
                du = u[None]  # (u became dU)
            else:
                per, xp, v, dm, dv, g, gt, rows = _winograd_workspace(
                    ctx, x, f, oh, ow, ("xp", "v", "m", "dv", "g", "gt", "rows"),
                    BACKWARD_MIN_DEPTH, mt)
                du = ctx.scratch("dw", (xp.shape[0],) + u.shape, dy.dtype)[:parts]
                db = ctx.scratch("db", (xp.shape[0], f), dy.dtype)
                kernels = ((_winograd_backward_cpu, _winograd_backward_part) if mt == 2
                           else (_winograd4_backward_cpu, _winograd4_backward_part))
                launch(*kernels, parts, x, u, dy, y, act, *h["pad"], per, need_dx, xp, v, dm, dv,
                       g, gt, rows, du, db, dx)
            grads["weight"] = _winograd_weight_grad(du)
        else:
            db = _backward_im2col(h, p, x, dy, y, act, need_dx, kept, grads, dx, ctx, parts)
        if "bias" in p:
            grads["bias"] = part_sum(db, parts)
        return [dx if need_dx else None], grads


def _backward_im2col(h, p, x, dy, y, act, need_dx, kept, grads, dx, ctx, parts):
    """im2col's backward in `parts`: fills grads["weight"] and dx; returns the per-part bias
    sums."""
    n, f, oh, ow = dy.shape
    w = p["weight"].reshape(f, -1)
    dy = dy.reshape(n, f, oh * ow)
    (kh, kw), (ph, pw), c = h["kernel"], h["pad"], x.shape[1]
    if h["groups"] == 1:  # dx through a channels-last fold (see _fold_cpu)
        wt = np.ascontiguousarray(p["weight"].transpose(0, 2, 3, 1)).reshape(f, -1)
        sh, sw = h["stride"]  # room for the last window even in ceil mode
        dxp = ctx.scratch("dxp", (ctx.workers, x.shape[2] + 2 * ph + kh + sh,
                                  (x.shape[3] + 2 * pw + kw + sw) * c), dy.dtype)
    else:
        wt, dxp = w[:0], ctx.scratch("dxp", (ctx.workers, 0, 0), dy.dtype)
    t = ctx.workers
    db = ctx.scratch("db", (t, f), dy.dtype)
    if wide_backward(h, n, f, oh * ow, parts, kept.size):
        k, m = w.shape[1], n * oh * ow
        cols = ctx.scratch("cols", (t, k * m), dy.dtype)
        d2 = ctx.scratch("d2", (t, f * m), dy.dtype)
        dcols = ctx.scratch("dcols", (t, k * -(-n // parts) * oh * ow), dy.dtype)
        dw = np.empty(w.shape, dy.dtype)
        launch(_conv_backward_wide_cpu, _conv_backward_wide_part, parts, x, w, dy,
               y.reshape(n, f, oh * ow), act, *window(h), oh, ow, need_dx, cols, d2, dcols, wt, dxp,
               dw, db, dx)
        grads["weight"] = dw.reshape(p["weight"].shape)
        return db
    depth = BACKWARD_MIN_DEPTH if kept.size == 0 else 0  # a kept unfolding has forward's chunks
    per, cols, d2, dcols = _workspace(ctx, h, x, f, oh, ow, ("cols", "d2", "dcols"), depth)
    dw = ctx.scratch("dw", (t,) + w.shape, dy.dtype)
    launch(_conv_backward_cpu, _conv_backward_part, parts, x, w, dy, y.reshape(n, f, oh * ow), act,
           h["groups"], *window(h), oh, ow, per, need_dx, cols, kept, d2, dcols, wt, dxp, dw, db,
           dx)
    grads["weight"] = part_sum(dw, parts).reshape(p["weight"].shape)
    return db


def wide_backward(h, n, f, pixels, parts, kept) -> bool:
    """Whether im2col's backward splits by filters (_conv_backward_wide_part) rather than by
    samples: where a thread's share of the batch holds fewer than BACKWARD_MIN_DEPTH output
    pixels (its weight gradient would sum over too few), with WIDE_MIN_FILTERS filters or more
    (each thread unfolds the whole batch: cheap next to its share of the GEMMs from there on),
    one group, an unfolding not kept, and more than one part."""
    return (parts > 1 and h["groups"] == 1 and not kept and not _pointwise(h)
            and f >= WIDE_MIN_FILTERS and -(-n // parts) * pixels < BACKWARD_MIN_DEPTH)
