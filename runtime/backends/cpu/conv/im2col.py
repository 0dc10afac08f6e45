"""CONV by im2col + GEMM: any stride, padding and groups.

Each thread unfolds its samples a chunk at a time (about CHUNK_BYTES, so the chunk stays in cache)
and multiplies; backward's chunks, which the weight gradient's GEMM sums over, span at least
BACKWARD_MIN_DEPTH output pixels (conv/__init__.py); where a thread's share of the batch has
fewer, backward splits by filters instead (_conv_backward_wide_part). When the whole batch's unfolding fits in
KEEP_COLS_BYTES and the layer has fewer than KEEP_COLS_FILTERS filters a group, forward keeps it
for backward instead of unfolding twice (backward then takes forward's chunks). The input
gradient goes back through a channels-last fold (_fold_cpu) or, with groups, through col2im."""
from __future__ import annotations

import numpy as np

from ..blas import gemm
from ..common import (CHUNK_BYTES, _act_row_cpu, _channels_first_cpu, _copy_run_cpu, _fill_cpu,
                      _grad_row_cpu, _valid, samples_per_chunk)
from ..jit import REDUCE, kernel, launcher, run_parts, share


def _workspace(ctx, h, x, f, oh, ow, tags, depth=0):
    """(samples per chunk, then one (threads, size) scratch array per tag): 'cols' holds a
    chunk's unfolded input, 'z'/'d2' its (F, m*oh*ow) GEMM result or output gradient, 'dcols'
    the unfolded input gradient. A chunk is about CHUNK_BYTES of unfolded input, and at least
    `depth` output pixels where the thread has them. A 1x1/1 unpadded conv reads its input in
    place (no cols)."""
    c = x.shape[1]
    k = c * h["kernel"][0] * h["kernel"][1]
    t = ctx.workers
    per = samples_per_chunk(x.shape[0], t, k * oh * ow * x.itemsize, oh * ow, depth, CHUNK_BYTES)
    if _pointwise(h):
        per = 1
    size = {"cols": 0 if _pointwise(h) else k * per * oh * ow, "dcols": k * per * oh * ow,
            "z": f * per * oh * ow, "d2": f * per * oh * ow}
    return (per,) + tuple(ctx.scratch(tag, (t, size[tag]), x.dtype) for tag in tags)


def _pointwise(h):
    return h["kernel"] == (1, 1) and h["stride"] == (1, 1) and h["pad"] == (0, 0)


@launcher
def _conv_forward_cpu(parts, x, w, bias, act, groups, kh, kw, sh, sw, ph, pw, oh, ow, per,
                      cols_ws, kept, z_ws, y):
    run_parts(_conv_forward_part, parts, (
        x, w, bias, act, groups, kh, kw, sh, sw, ph, pw, oh, ow, per, cols_ws, kept, z_ws, y))


@kernel()
def _conv_forward_part(t, parts, x, w, bias, act, groups, kh, kw, sh, sw, ph, pw, oh, ow, per,
                       cols_ws, kept, z_ws, y):
    """y (N, F, oh*ow) = act(conv(x, w) + bias), each thread on its part of the batch."""
    n = x.shape[0]
    f_, k = w.shape
    fg, ln = f_ // groups, oh * ow
    lo, hi = n * t // parts, n * (t + 1) // parts
    for s in range(lo, hi, per):
        e = min(hi, s + per)
        cols = _unfold_cpu(x, s, e, kh, kw, sh, sw, ph, pw, oh, ow, cols_ws, t, kept, True)
        z = z_ws[t, :f_ * (e - s) * ln].reshape(f_, (e - s) * ln)
        for g in range(groups):  # one GEMM per group
            gemm(False, False, 1.0, w[g * fg:(g + 1) * fg], cols[g * k:(g + 1) * k], 0.0,
                 z[g * fg:(g + 1) * fg])
        _epilogue_cpu(z, bias, act, y, s)


@launcher
def _conv_backward_cpu(parts, x, w, dy, y, act, groups, kh, kw, sh, sw, ph, pw, oh, ow, per,
                       need_dx, cols_ws, kept, d2_ws, dcols_ws, wt, dxp_ws, dw_ws, db_ws, dx):
    run_parts(_conv_backward_part, parts, (
        x, w, dy, y, act, groups, kh, kw, sh, sw, ph, pw, oh, ow, per, need_dx, cols_ws, kept,
        d2_ws, dcols_ws, wt, dxp_ws, dw_ws, db_ws, dx))


@kernel(fastmath=REDUCE)  # REDUCE: the inlined bias sums vectorize
def _conv_backward_part(t, parts, x, w, dy, y, act, groups, kh, kw, sh, sw, ph, pw, oh, ow, per,
                        need_dx, cols_ws, kept, d2_ws, dcols_ws, wt, dxp_ws, dw_ws, db_ws, dx):
    """dw_ws[t], db_ws[t]: thread t's weight and bias gradients; dx: the input gradient."""
    n = x.shape[0]
    f_, k = w.shape
    kc, fg, ln = k * groups, f_ // groups, oh * ow
    lo, hi = n * t // parts, n * (t + 1) // parts
    dw, db = dw_ws[t], db_ws[t]
    _fill_cpu(dw.reshape(-1), 0.0)
    _fill_cpu(db, 0.0)
    for s in range(lo, hi, per):
        e = min(hi, s + per)
        m = (e - s) * ln
        cols = _unfold_cpu(x, s, e, kh, kw, sh, sw, ph, pw, oh, ow, cols_ws, t, kept, False)
        d2 = d2_ws[t, :f_ * m].reshape(f_, m)
        _prologue_cpu(dy, y, act, s, d2, db)
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


@launcher
def _conv_backward_wide_cpu(parts, x, w, dy, y, act, kh, kw, sh, sw, ph, pw, oh, ow, need_dx,
                            cols_ws, d2_ws, dcols_ws, wt, dxp_ws, dw, db_ws, dx):
    run_parts(_conv_backward_wide_part, parts, (
        x, w, dy, y, act, kh, kw, sh, sw, ph, pw, oh, ow, need_dx, cols_ws, d2_ws, dcols_ws, wt,
        dxp_ws, dw, db_ws, dx))


@kernel(fastmath=REDUCE)  # REDUCE: the inlined bias sums vectorize
def _conv_backward_wide_part(t, parts, x, w, dy, y, act, kh, kw, sh, sw, ph, pw, oh, ow, need_dx,
                             cols_ws, d2_ws, dcols_ws, wt, dxp_ws, dw, db_ws, dx):
    """Backward split by filters, for a layer whose weights outweigh a thread's share of the
    batch (groups 1): every thread unfolds the whole batch and takes its whole output gradient
    (cheap next to the GEMMs), then the weight gradient of its share of the filters, summed over
    the whole batch, into the one dw (no per-thread copies to add), and the input gradient of
    its share of the samples. db_ws[0]: the bias gradient (the other threads' rows are zero)."""
    n = x.shape[0]
    f_, k = w.shape
    ln = oh * ow
    m = n * ln
    cols = cols_ws[t, :k * m].reshape(k, m)
    zero = np.int64(0)  # (a constant would compile a version of each callee of its own)
    _im2col_cpu(x, zero, n, kh, kw, sh, sw, ph, pw, oh, ow, cols)
    d2 = d2_ws[t, :f_ * m].reshape(f_, m)
    db = db_ws[t]
    _fill_cpu(db, 0.0)
    _prologue_cpu(dy, y, act, zero, d2, db)
    if t > 0:
        _fill_cpu(db, 0.0)
    lo, hi = share(f_, t, parts)
    if hi > lo:
        gemm(False, True, 1.0, d2[lo:hi], cols, 0.0, dw[lo:hi])
    s, e = share(n, t, parts)
    if need_dx and e > s:  # dcols^T = d2^T W' for its samples, folded channels last
        dcols = dcols_ws[t, :k * (e - s) * ln].reshape((e - s) * ln, k)
        gemm(True, False, 1.0, d2[:, s * ln:e * ln], wt, 0.0, dcols)
        _fold_cpu(dcols, kh, kw, sh, sw, ph, pw, oh, ow, dxp_ws[t], dx, s, e)


@kernel(outlined=True)
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


@kernel(outlined=True)
def _epilogue_cpu(zf, bias, act, y, s):
    """y[s + n, f, k] = act(zf[f, n*L + k] + bias[f]) for the chunk's samples n."""
    f_, ml = zf.shape
    ln = y.shape[2]
    for f in range(f_):
        b = bias[f]
        for n in range(ml // ln):
            _act_row_cpu(act, zf[f, n * ln:(n + 1) * ln], b, y[s + n, f], ln)


@kernel(fastmath=REDUCE, outlined=True)
def _prologue_cpu(dy, y, act, s, d2, dbias):
    """d2[f, n*L + k] = dy * act'(z) for the chunk's samples; dbias[f] accumulates it."""
    f_, ml = d2.shape
    ln = dy.shape[2]
    for f in range(f_):
        acc = 0.0
        for n in range(ml // ln):
            acc += _grad_row_cpu(act, dy[s + n, f], y[s + n, f], d2[f, n * ln:(n + 1) * ln], ln)
        dbias[f] += acc


@kernel(outlined=True)
def _im2col_cpu(x, n0, n1, kh, kw, sh, sw, ph, pw, oh, ow, out):
    """out[(c, i, j), (n - n0, y, x)] = x[n, c, y*sh - ph + i, x*sw - pw + j], zero outside,
    for the samples n0 <= n < n1. An output row that the input covers whole is one copy; any
    other is zeroed first, then gets what the input has. Two loops a row rather than a loop for
    each of the zeros before, the copy and the zeros after: it compiled in 1.1 s instead of 1.5-1.6
    and unfolds LeNet-5's second CONV 25% faster. The flat unsigned indices spare every load
    Numba's wraparound check (an index it cannot prove non-negative)."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    ln, m = oh * ow, out.shape[1]
    xf, of = x.reshape(-1), out.reshape(-1)
    u, step = np.uint64, np.uint64(sw)
    for c in range(c_):
        for i in range(kh):
            ylo, yhi = _valid(oh, sh, ph, i, h_)
            for j in range(kw):
                xlo, xhi = _valid(ow, sw, pw, j, w_)
                r = (c * kh + i) * kw + j
                whole = xlo == 0 and xhi == ow
                for n in range(n0, n1):
                    for oy in range(oh):
                        row = u(r * m + (n - n0) * ln + oy * ow)
                        inside = ylo <= oy < yhi
                        if not (inside and whole):
                            for ox in range(u(ow)):
                                of[row + ox] = 0
                        if inside:  # column ox of the run reads x[.., (xlo + ox)*sw - pw + j]
                            src = u(((n * c_ + c) * h_ + oy * sh - ph + i) * w_ + xlo * sw - pw + j)
                            at = row + u(xlo)
                            if sw == 1:
                                _copy_run_cpu(of, at, xf, src, u(xhi - xlo))
                            else:
                                for ox in range(u(xhi - xlo)):
                                    of[at + ox] = xf[src + ox * step]


@kernel(outlined=True)
def _fold_cpu(dcols, kh, kw, sh, sw, ph, pw, oh, ow, dxp, dx, n0, n1):
    """col2im from the transposed unfolding, dcols[(n, oy, ox), (i, j, c)], through a padded
    channels-last image dxp (Hp, Wp*C): for an output pixel and a kernel row i, the kw*C values
    (j, c) land on kw*C consecutive values of dxp's row, so every add is a vector of kw*C
    rather than col2im's rows of ow. Then dx[n0:n1] = dxp's interior, channels first. Kernel
    rows innermost: consecutive adds go to different rows of dxp, where with pixels innermost
    each read part of the row the add before had just written, which the CPU cannot forward
    from its pending store (each value still gets its terms in the same order: a kernel row
    i and an output row oy meet one row of dxp). One thread's 17 samples of LeNet-5's second
    CONV (6 channels, 5x5 on 14x14), Zen 4: 74 -> 62 us; 3 channels 5x5 on 32x32, 4 samples:
    155 -> 116 us; 64 to 256 channels at stride 2 (run 192 to 768 values) the same. Flat
    unsigned indices, as in _im2col_cpu."""
    c_ = dx.shape[1]
    run, kc, wq = kw * c_, dcols.shape[1], dxp.shape[1]
    u = np.uint64
    acc, src = dxp.reshape(-1), dcols.reshape(-1)
    for n in range(n0, n1):
        _fill_cpu(acc, 0.0)
        for oy in range(oh):
            p0 = (n - n0) * oh * ow + oy * ow
            for ox in range(ow):
                for i in range(kh):
                    at, frm = u((oy * sh + i) * wq + ox * sw * c_), u((p0 + ox) * kc + i * run)
                    for k in range(u(run)):
                        acc[at + k] += src[frm + k]
        _channels_first_cpu(acc, wq, ph, pw, dx[n])


@kernel(outlined=True)
def _col2im_cpu(dcols, kh, kw, sh, sw, ph, pw, oh, ow, dx, n0, n1):
    """The adjoint of im2col: fold dcols (C*kh*kw, (n1-n0)*oh*ow) into dx[n0:n1] (N, C, H, W).
    Flat unsigned indices, as in _im2col_cpu (with the image's own, the adds did not vectorize)."""
    c_, h_, w_ = dx.shape[1], dx.shape[2], dx.shape[3]
    u, step = np.uint64, np.uint64(sw)
    for n in range(n0, n1):
        base = (n - n0) * oh * ow
        for c in range(c_):
            img = dx[n, c].reshape(-1)
            _fill_cpu(img, 0.0)
            for i in range(kh):
                ylo, yhi = _valid(oh, sh, ph, i, h_)
                for j in range(kw):
                    xlo, xhi = _valid(ow, sw, pw, j, w_)
                    src = dcols[(c * kh + i) * kw + j]
                    for oy in range(ylo, yhi):  # the run from column xlo
                        at = u((oy * sh - ph + i) * w_ + xlo * sw - pw + j)
                        frm = u(base + oy * ow + xlo)
                        for ox in range(u(xhi - xlo)):
                            img[at + ox * step] += src[frm + ox]
