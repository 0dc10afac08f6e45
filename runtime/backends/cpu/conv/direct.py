"""CONV at stride 1 computed directly on a "wide" output grid, without unfolding or transforms.

Pad one sample's planes to (Hp, Wp) and compute the output on a grid whose rows are as long as
the padded input's: output (oy, X) of tap (ky, kx) reads the padded plane at a fixed offset
ky*Wp + kx from position oy*Wp + X, so for every tap

    wide[f, p] += w[f, c, ky, kx] * xpad[c, p + ky*Wp + kx]      for p < oh*Wp

is one contiguous multiply-add over the plane (the Wp - ow columns past the output are computed
and dropped). With AVX-512's 32 vector registers a pass does nine taps for four filters: each
input load feeding four multiply-adds and each output load and store carrying nine; with AVX2's
16, where those 36 weights spill, three taps for four filters (12 weights; see wide_passes).
These loops are what LLVM vectorizes to the CPU's full width, whatever the BLAS runs. A kernel's
taps are padded with zero weights to a multiple of nine, and the filters to a multiple of four.

Backward: the output gradient goes on the same wide grid (zero past column ow) after a margin of
zeros, so that the input gradient is the same correlation run the other way (offsets
margin - ky*Wp - kx, weights with filters and channels swapped) and the weight gradient is dot
products of the gradient plane with the shifted input planes, nine taps for two filters a pass
with AVX-512's registers, for one with AVX2's.
"""
from __future__ import annotations

import functools

import numpy as np

from ..common import (TAPS, _act_row_cpu, _copy_run_cpu, _fill_cpu, _grad_row_cpu, _nine_dots1_cpu,
                      _nine_dots_cpu, _offsets)
from ..jit import REDUCE, kernel, launcher, run_parts
from ..dense import wide_vectors

BLOCK = 4  # filters per pass: what _nine_taps_cpu spells out by name, for TAPS taps
WIDE = None  # passes for 32 vector registers (True) or 16 (False); None: by the CPU


def wide_passes() -> bool:
    """Whether the passes are shaped for AVX-512's 32 vector registers: nine taps for four
    filters (36 weights), the weight gradient's dot products two filters at a time (18 sums).
    Else, for AVX2's 16 registers, three taps for four filters and the dot products one filter
    at a time: where the wide passes spilled, these ran 1.4x and 1.6x as fast (16 -> 16
    channels on 32x32, one sample, Zen 3: forward 68 us against 97, the weight gradient 86
    against 136)."""
    return wide_vectors() if WIDE is None else WIDE


def _direct_plan(h, xshape):
    """(offsets of the taps in the padded plane, padded to a multiple of TAPS with zeros; the
    margin before backward's output gradient; the plane's length)."""
    return _plan(h["kernel"], h["pad"], xshape[2], xshape[3])


@functools.lru_cache(maxsize=256)  # (each step asks it twice a layer: 14 us a call at batch 1)
def _plan(kernel, pad, height, width):
    # (offs stays writable, as the kernels' signature has it: nobody writes it)
    (kh, kw), (ph, pw) = kernel, pad
    hp, wp = height + 2 * ph, width + 2 * pw
    offs = (np.arange(kh)[:, None] * wp + np.arange(kw)[None, :]).ravel()
    offs = np.concatenate([offs, np.zeros(-len(offs) % TAPS, np.int64)])
    return offs, (kh - 1) * wp + kw - 1, hp * wp + wp  # one spare row: the last taps' reach


def _direct_weights(weight, transpose=False):
    """(F, C, kh, kw) -> (blocks, C, groups, BLOCK, TAPS) for _taps_cpu, zero-padded; with
    transpose, filters and channels swap places (the input gradient's correlation)."""
    w = weight.reshape(weight.shape[0], weight.shape[1], -1)
    if transpose:
        w = w.transpose(1, 0, 2)
    f, c, taps = w.shape
    fp, tp = -(-f // BLOCK) * BLOCK, -(-taps // TAPS) * TAPS
    out = np.zeros((fp, c, tp), weight.dtype)
    out[:f, :, :taps] = w
    return np.ascontiguousarray(
        out.reshape(fp // BLOCK, BLOCK, c, tp // TAPS, TAPS).transpose(0, 2, 3, 1, 4))


def _direct_workspace(ctx, x, f, plane, margin, tags):
    """Per-thread scratch: 'xp' one sample's padded planes, 'acc' four output planes on the
    wide grid (or four padded input-gradient planes) and one more (the activation's output, or
    the output gradient times act' before it goes on the wide grid), 'g' the output gradient on
    the wide grid after the margin, for every filter (rounded up to even: the weight gradient
    takes two a pass)."""
    c = x.shape[1]
    shapes = {"xp": (c, plane), "acc": (BLOCK + 1, plane),
              "g": (f + f % 2, margin + plane)}
    return tuple(ctx.scratch("direct_" + tag, (ctx.workers,) + shapes[tag], x.dtype)
                 for tag in tags)


@launcher
def _direct_forward_cpu(parts, x, wk, bias, act, ph, pw, offs, oh, ow, wide, xp_ws, acc_ws, y):
    run_parts(_direct_forward_part, parts, (
        x, wk, bias, act, ph, pw, offs, oh, ow, wide, xp_ws, acc_ws, y))


@kernel()
def _direct_forward_part(t, parts, x, wk, bias, act, ph, pw, offs, oh, ow, wide, xp_ws, acc_ws,
                         y):
    """y (N, F, oh, ow) = act(conv(x, w) + bias) at stride 1, each thread on its part of the
    batch; wk from _direct_weights, wide: wide_passes()."""
    n, c_, hh, ww = x.shape
    f_ = y.shape[1]
    wp = ww + 2 * pw
    count = oh * wp
    lo, hi = n * t // parts, n * (t + 1) // parts
    xp, acc = xp_ws[t], acc_ws[t]
    if lo < hi:
        _fill_cpu(xp.reshape(-1), 0.0)  # the border stays zero
    for s in range(lo, hi):
        _pad_planes_cpu(x[s], ph, pw, xp)
        for b in range(wk.shape[0]):
            rows = min(BLOCK, f_ - BLOCK * b)  # the block's filters
            _zero_rows_cpu(acc, rows, count)
            _taps_cpu(xp, offs, wk[b], acc, count, wide, rows)
            for i in range(rows):  # act over the whole wide plane
                _act_row_cpu(act, acc[i], bias[BLOCK * b + i], acc[BLOCK], count)
                _rows_cpu(acc[BLOCK], wp, y[s, BLOCK * b + i].reshape(-1), ow, oh, ow)


@launcher
def _direct_backward_cpu(parts, x, wt, dy, y, act, ph, pw, offs, margin, need_dx, wide, xp_ws,
                         g_ws, acc_ws, dw_ws, db_ws, dx):
    run_parts(_direct_backward_part, parts, (
        x, wt, dy, y, act, ph, pw, offs, margin, need_dx, wide, xp_ws, g_ws, acc_ws, dw_ws, db_ws,
        dx))


@kernel(fastmath=REDUCE)  # REDUCE: the inlined bias sums vectorize
def _direct_backward_part(t, parts, x, wt, dy, y, act, ph, pw, offs, margin, need_dx, wide, xp_ws,
                          g_ws, acc_ws, dw_ws, db_ws, dx):
    """dw_ws[t] (F rounded up to even, C, taps rounded up to a multiple of nine), db_ws[t]:
    thread t's weight and bias gradients; dx the input gradient (wt: _direct_weights(w,
    transpose=True)); wide: wide_passes()."""
    n, c_, hh, ww = x.shape
    f_, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    wp = ww + 2 * pw
    count, plane = oh * wp, (hh + 2 * ph) * wp
    back = margin - offs
    lo, hi = n * t // parts, n * (t + 1) // parts
    xp, g, acc, dw, db = xp_ws[t], g_ws[t], acc_ws[t], dw_ws[t], db_ws[t]
    if lo < hi:
        _fill_cpu(xp.reshape(-1), 0.0)
        _fill_cpu(g.reshape(-1), 0.0)  # the margin, the columns past ow, the filters past F
    _fill_cpu(dw.reshape(-1), 0.0)
    _fill_cpu(db, 0.0)
    for s in range(lo, hi):
        _pad_planes_cpu(x[s], ph, pw, xp)
        for f in range(f_):  # act' over the whole plane, then onto the wide grid
            db[f] += _grad_row_cpu(act, dy[s, f].reshape(-1), y[s, f].reshape(-1), acc[BLOCK],
                                   oh * ow)
            _rows_cpu(acc[BLOCK], ow, g[f, margin:], wp, oh, ow)
        if wide:
            for f in range(0, g.shape[0], 2):
                _tap_dots_cpu(g[f, margin:], g[f + 1, margin:], xp, offs, count, dw[f:f + 2])
        else:
            for f in range(f_):
                _tap_dots1_cpu(g[f, margin:], xp, offs, count, dw[f])
        if need_dx:
            for b in range(wt.shape[0]):
                rows = min(BLOCK, c_ - BLOCK * b)  # the block's input channels
                _zero_rows_cpu(acc, rows, plane)
                _taps_cpu(g[:f_], back, wt[b], acc, plane, wide, rows)
                for i in range(rows):
                    _rows_cpu(acc[i, ph * wp + pw:], wp, dx[s, BLOCK * b + i].reshape(-1), ww,
                              hh, ww)


@kernel()
def _zero_rows_cpu(acc, rows, count):
    """acc[i, :count] = 0 for the rows _taps_cpu adds to for a block of `rows` filters or
    channels: two where it has two or fewer (its two-row passes), else all four (the spare
    row after them is written before it is read). LeNet-5's first CONV filled 5 x 1056 values
    a block where its passes add to 4 x 896 and 2 x 896."""
    for i in range(2 if rows <= 2 else BLOCK):
        _fill_cpu(acc[i, :count], 0.0)


@kernel()
def _rows_cpu(src, src_row, dst, dst_row, rows, count):
    """dst[r*dst_row + k] = src[r*src_row + k] for r < rows, k < count: a plane onto or off the
    wide grid. The activation and its gradient run over whole planes and this copies their rows,
    rather than running row by row: a row of 28 values is too short for the vector loop (at 8
    values x 4 a pass, it never starts), so LeNet-5's tanh ran scalar. The rows' copies eight
    values at a time (common._copy_run_cpu): 384 planes of 28x28 in 53 us instead of 70, of 10x10
    11 instead of 17. Unsigned indices, as in _im2col_cpu."""
    u = np.uint64
    for r in range(rows):
        _copy_run_cpu(dst, u(r * dst_row), src, u(r * src_row), u(count))


@kernel(outlined=True)
def _pad_planes_cpu(img, ph, pw, xp):
    """xp (C, >= Hp*Wp) = img (C, H, W) placed at (ph, pw); the border is left as it is (zero)."""
    c_, hh, ww = img.shape
    wp = ww + 2 * pw
    for c in range(c_):
        _rows_cpu(img[c].reshape(-1), ww, xp[c, ph * wp + pw:], wp, hh, ww)


@kernel(fastmath=REDUCE, outlined=True)
def _taps_cpu(planes, offs, wk, acc, count, wide, rows):
    """acc[i, p] += sum_c sum_t wk[c, t // 9, i, t % 9] * planes[c, offs[t] + p] for p < count:
    four output planes i from every input plane c (one call per block of four filters, so that
    the slices below are made and released inside the function, not once per call); nine taps
    a pass if wide, else three (wide_passes), for the block's first two planes alone where it
    has `rows` <= 2 (a last block of two filters: LeNet-5's C1 has six). Outlined, as are the
    weight gradient's dots and the padding: compiled once, not again inside both parts (the
    parts 1.3 -> 0.9 s and 2.2 -> 1.7 s to compile; one layer's forward + backward, medians of
    3 x 7 rounds in turns with the code before: 5x5 from 1 channel to 6 0.74 -> 0.78 ms, 6 to
    16 1.67 -> 1.52, 3x3 16 to 16 at 16x16 2.57 -> 1.95, batch 64, Zen 4)."""
    for c in range(planes.shape[0]):
        for j in range(wk.shape[1]):
            if wide and rows <= 2:
                _nine_taps2_cpu(planes[c], offs[TAPS * j:TAPS * j + TAPS], wk[c, j], acc, count)
            elif wide:
                _nine_taps_cpu(planes[c], offs[TAPS * j:TAPS * j + TAPS], wk[c, j], acc, count)
            elif rows <= 2:
                for q in range(0, TAPS, 3):
                    _three_taps2_cpu(planes[c], offs[TAPS * j + q:TAPS * j + q + 3], wk[c, j], q,
                                     acc, count)
            else:
                for q in range(0, TAPS, 3):
                    _three_taps_cpu(planes[c], offs[TAPS * j + q:TAPS * j + q + 3], wk[c, j], q,
                                    acc, count)


@kernel(fastmath=REDUCE, inline=True)
def _three_taps_cpu(x, offs, k, q, acc, count):
    """acc[i, p] += sum_j k[i, q + j] * x[offs[j] + p] for four rows i, three taps j, p <
    count: _nine_taps_cpu's pass with 12 weights, which AVX2's 16 vector registers hold."""
    u = np.uint64
    o0, o1, o2 = u(offs[0]), u(offs[1]), u(offs[2])
    a0, a1, a2 = k[0, q], k[0, q + 1], k[0, q + 2]
    b0, b1, b2 = k[1, q], k[1, q + 1], k[1, q + 2]
    c0, c1, c2 = k[2, q], k[2, q + 1], k[2, q + 2]
    d0, d1, d2 = k[3, q], k[3, q + 1], k[3, q + 2]
    for p in range(u(count)):
        v0, v1, v2 = x[o0 + p], x[o1 + p], x[o2 + p]
        acc[0, p] += a0 * v0 + a1 * v1 + a2 * v2
        acc[1, p] += b0 * v0 + b1 * v1 + b2 * v2
        acc[2, p] += c0 * v0 + c1 * v1 + c2 * v2
        acc[3, p] += d0 * v0 + d1 * v1 + d2 * v2


@kernel(fastmath=REDUCE, inline=True)
def _three_taps2_cpu(x, offs, k, q, acc, count):
    """_three_taps_cpu for the first two rows i alone."""
    u = np.uint64
    o0, o1, o2 = u(offs[0]), u(offs[1]), u(offs[2])
    a0, a1, a2 = k[0, q], k[0, q + 1], k[0, q + 2]
    b0, b1, b2 = k[1, q], k[1, q + 1], k[1, q + 2]
    for p in range(u(count)):
        v0, v1, v2 = x[o0 + p], x[o1 + p], x[o2 + p]
        acc[0, p] += a0 * v0 + a1 * v1 + a2 * v2
        acc[1, p] += b0 * v0 + b1 * v1 + b2 * v2


@kernel(fastmath=REDUCE, inline=True)
def _nine_taps_cpu(x, offs, k, acc, count):
    """acc[i, p] += sum_j k[i, j] * x[offs[j] + p] for four rows i, nine taps j, p < count.
    The 36 weights are taken out as values before the loop, so that they stay in registers
    (read through a view inside the loop, they kept LLVM from vectorizing it). Inlined into
    _taps_cpu: called, it cost as much as its loop on 16x16 planes."""
    o = _offsets(offs)
    a, b = _nine_weights_cpu(k, 0), _nine_weights_cpu(k, 1)
    c, d = _nine_weights_cpu(k, 2), _nine_weights_cpu(k, 3)
    for p in range(np.uint64(count)):
        v = _nine_values_cpu(x, o, p)
        acc[0, p] += _nine_sum_cpu(a, v)
        acc[1, p] += _nine_sum_cpu(b, v)
        acc[2, p] += _nine_sum_cpu(c, v)
        acc[3, p] += _nine_sum_cpu(d, v)


@kernel(fastmath=REDUCE, inline=True)
def _nine_taps2_cpu(x, offs, k, acc, count):
    """_nine_taps_cpu for the first two rows i alone (18 weights)."""
    o = _offsets(offs)
    a, b = _nine_weights_cpu(k, 0), _nine_weights_cpu(k, 1)
    for p in range(np.uint64(count)):
        v = _nine_values_cpu(x, o, p)
        acc[0, p] += _nine_sum_cpu(a, v)
        acc[1, p] += _nine_sum_cpu(b, v)


@kernel(inline=True)
def _nine_weights_cpu(k, i):
    """Row i's nine weights, as values."""
    return k[i, 0], k[i, 1], k[i, 2], k[i, 3], k[i, 4], k[i, 5], k[i, 6], k[i, 7], k[i, 8]


@kernel(inline=True)
def _nine_values_cpu(x, o, p):
    """x at the nine offsets o (unsigned) past p."""
    return (x[o[0] + p], x[o[1] + p], x[o[2] + p], x[o[3] + p], x[o[4] + p], x[o[5] + p],
            x[o[6] + p], x[o[7] + p], x[o[8] + p])


@kernel(fastmath=REDUCE, inline=True)
def _nine_sum_cpu(w, v):
    """sum_j w[j] * v[j] as three partial sums of three: shorter chains of dependent
    multiply-adds."""
    return ((w[0] * v[0] + w[1] * v[1] + w[2] * v[2]) + (w[3] * v[3] + w[4] * v[4] + w[5] * v[5])
            + (w[6] * v[6] + w[7] * v[7] + w[8] * v[8]))


@kernel(fastmath=REDUCE, outlined=True)
def _tap_dots_cpu(g0, g1, planes, offs, count, out):
    """out[i, c, t] += sum_p g_i[p] * planes[c, offs[t] + p] for the gradient planes g0, g1 of
    two filters, every input plane c and tap t, p < count."""
    for c in range(planes.shape[0]):
        for j in range(out.shape[2] // TAPS):
            _nine_dots_cpu(g0, g1, planes[c], offs[TAPS * j:TAPS * j + TAPS], count,
                           out[:, c, TAPS * j:TAPS * j + TAPS])


@kernel(fastmath=REDUCE, outlined=True)
def _tap_dots1_cpu(g0, planes, offs, count, out):
    """out[c, t] += sum_p g0[p] * planes[c, offs[t] + p] for one filter's gradient plane g0,
    every input plane c and tap t, p < count: _tap_dots_cpu a filter at a time."""
    for c in range(planes.shape[0]):
        for j in range(out.shape[1] // TAPS):
            _nine_dots1_cpu(g0, planes[c], offs[TAPS * j:TAPS * j + TAPS], count,
                            out[c, TAPS * j:TAPS * j + TAPS])
