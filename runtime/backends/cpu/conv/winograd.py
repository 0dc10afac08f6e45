"""CONV 3x3/1 by Winograd's minimal filtering, F(2x2, 3x3) or F(4x4, 3x3)."""
from __future__ import annotations

import numpy as np

from ..blas import gemm
from ..common import (CHUNK_BYTES, PLANES_BLOCK_BYTES, PLANES_LAST_BLOCK, _act_row_cpu,
                      _channels_first_cpu, _fill_cpu, _grad_row_cpu, samples_per_chunk)
from ..jit import REDUCE, kernel, launch, launcher, run_parts, split_macs


# Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2016) for 3x3 stride-1 convolutions:
# each 2x2 output tile comes from a 4x4 input tile with 16 multiplications per (filter, channel)
# instead of 36, so the GEMMs shrink 2.25x. Per chunk of samples: transform the input tiles,
# V = B^T d B (16 matrices of C x tiles); multiply M = U V by the transformed weights U = G g G^T
# (16 GEMMs of F x C by C x tiles); transform back, Y = A^T M A, adding bias and activation.
# Backward is the exact adjoint of those linear maps: dM = A dY A^T, then dV = U^T dM (scattered
# back through B dV B^T) and dU = dM V^T (gathered through G^T dU G by a kernel after). Every
# pass does the 2.25x fewer multiplications; the transforms are additions only. The weights'
# transforms run in the data's type: G's coefficients (1, 1/2, 1/4 in G (x) G) are exact, the
# sums of up to nine products (and of the parts' dU) round as float32 sums do.
_WINO_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
_WINO_GG = np.kron(_WINO_G, _WINO_G)  # (16, 9): vec(G g G^T) = (G (x) G) vec(g), row-major

# F(4x4, 3x3) (the same paper; interpolation points 0, 1, -1, 2, -2 and infinity): each 4x4
# output tile from a 6x6 input tile, 36 multiplications per (filter, channel) where direct takes
# 144 and F(2x2, 3x3) 64, so the GEMMs shrink 4x instead of 2.25x; the transforms have more terms
# (up to six) and G's coefficients (1/6, 1/12, 1/24) round in float32, so the output's rounding
# grows by a small factor (bench/RESULTS.md; cuDNN and oneDNN run it in float32 too). Used where
# the GEMMs are most of the work: many channels (conv.WINOGRAD4_MIN_CHANNELS). Its transforms are
# the products of B^T, B, A^T and A written out (_bt6_cpu, _b6_cpu, _at6_cpu, _a4_cpu), checked
# against these matrices by the tests.
_WINO4_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                      [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], float)
_WINO4_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                     [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
_WINO4_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                      [0, 1, -1, 8, -8, 1]], float)
_WINO4_GG = np.kron(_WINO4_G, _WINO4_G)  # (36, 9)


def _sparse(m):
    """(taps, coefficients, counts) of each row of m: row r is the sum over e < counts[r] of
    coefficients[r, e] times entry taps[r, e] (padded with zeros past the count)."""
    width = max(int(np.count_nonzero(row)) for row in m)
    taps, coef = np.zeros((len(m), width), np.int64), np.zeros((len(m), width))
    counts = np.zeros(len(m), np.int64)
    for r, row in enumerate(m):
        nz = np.flatnonzero(row)
        taps[r, :len(nz)], coef[r, :len(nz)], counts[r] = nz, row[nz], len(nz)
    return taps, coef, counts


def tile_positions(mt):
    """Entries of a transformed tile for output tiles mt x mt: 16 for F(2x2, 3x3), 36 for
    F(4x4, 3x3)."""
    return (mt + 2) ** 2


def _winograd_weights(weight, out, transpose=False):
    """(F, C, 3, 3) weights -> out = U (16, F, C), U = G g G^T for every (filter, channel); with
    transpose, U^T (16, C, F) (forward's GEMM); (36, ...) for F(4x4). In parts where there is
    enough of it: a 512 x 512 layer's took 22-41 ms on one thread as a float64 product and
    copies, 4-7 ms so."""
    f, c = weight.shape[:2]
    # (F, C, 9) contiguous whichever way out is laid: the kernel reads it transposed where asked
    # (a transposed view would be a second compiled kernel, 3 s of a first run)
    w = np.ascontiguousarray(weight).reshape(f, c, 9)
    # the kernel writes out[:, a, b] for every (a, b) unchecked
    kk = out.shape[0]
    a, b = (c, f) if transpose else (f, c)
    assert kk in (16, 36) and out.shape == (kk, a, b) and out.dtype == weight.dtype, (
        out.shape, w.shape)
    assert out.flags.c_contiguous
    launch(_weights_cpu, _weights_part, _transform_parts(kk, f * c, a), w, transpose,
           *_g_terms(kk), out)
    return out


def _winograd_weight_grad(du):
    """dU (parts, 16 or 36, F, C), each part's sum -> the weight gradient (F, C, 3, 3) = G^T dU G
    summed over the parts: the same map's transpose."""
    _, kk, f, c = du.shape
    dg = np.empty((f, c, 9), du.dtype)
    launch(_weight_grad_cpu, _weight_grad_part, _transform_parts(kk, f * c * du.shape[0], f),
           np.ascontiguousarray(du), *_g_terms(kk, columns=True), dg)
    return dg.reshape(f, c, 3, 3)


def _g_terms(positions, columns=False):
    """G's rows (or, with columns, its columns: G^T's rows) as _sparse's (taps, coefficients,
    counts), for a transformed tile of 16 or 36 entries: the weights' transform G g G^T and the
    weight gradient's G^T dU G go one side at a time, each entry of a side a sum of up to three
    terms (G's rows) or five (its columns) in registers, in float64 whatever the data's type
    (rounded once at the end: in float32 throughout, F(4x4)'s output error over 128 channels on
    the rounding test's draw grew from 8.6e-6 to 9.5e-6 of the largest value)."""
    key = (positions, columns)
    if key not in _G_TERMS:
        g = _WINO_G if positions == 16 else _WINO4_G
        _G_TERMS[key] = _sparse(g.T if columns else g)
    return _G_TERMS[key]


_G_TERMS = {}


def _transform_parts(positions, pairs, rows):
    """Parts for a weights' transform of a tile of 16 or 36 entries over `pairs` (filter,
    channel) pairs, by G (x) G's nonzero coefficients a pair, split over `rows`."""
    gg = _WINO_GG if positions == 16 else _WINO4_GG
    return min(split_macs(pairs * int(np.count_nonzero(gg))), rows)


@launcher
def _weights_cpu(parts, w, transpose, taps, coef, count, out):
    run_parts(_weights_part, parts, (w, transpose, taps, coef, count, out))


@kernel()
def _weights_part(t, parts, w, transpose, taps, coef, count, out):
    """out[:, a, b] = vec(G g G^T) for g = w[a, b] as 3x3 (w[b, a] with transpose), w (F, C, 9)
    and out (r*r, A, B) contiguous, for part t's share of a; G's r rows as taps, coef, count
    (_g_terms): the nine taps of every b gathered into rows, then G g (r x 3 rows of B values,
    each a sum of up to three terms) and (G g) G^T (r x r rows): vectors over b, each row one
    pass. F(4x4)'s U^T and U for 512 x 512 on two Zen 4 threads took 4.7-5.9 and 4.2-4.5 ms as
    36 rows of up to nine terms, a pass a term; 3.0-3.2 and 3.0 so (old and new code in turns).
    Gathering 8 a's at a time, so that U^T's reads of w adjoin, was slower (9.3 ms: the gathered
    rows, 2 KiB apart, fall on the same few L1 sets)."""
    na, nb = out.shape[1], out.shape[2]
    sa, sb = (9, 9 * na) if transpose else (9 * nb, 9)  # w's steps along a and b
    r = taps.shape[0]
    u = np.uint64
    ub = u(nb)
    g = np.empty((9, nb), w.dtype)
    half = np.empty((3 * r, nb), np.float64)
    wf, gf, hf, of = w.reshape(-1), g.reshape(-1), half.reshape(-1), out.reshape(-1)
    for a in range(na * t // parts, na * (t + 1) // parts):
        for b in range(nb):
            for i in range(9):
                g[i, b] = wf[a * sa + b * sb + i]
        for p in range(r):  # half[p*3 + j] = (G g)[p, j]
            for j in range(3):
                _terms_cpu(hf, u(p * 3 + j) * ub, gf, u(j) * ub, u(3) * ub, taps[p], coef[p],
                           count[p], ub, u(0))
        for p in range(r):  # out[p*r + q, a] = (G g G^T)[p, q]
            for q in range(r):
                _terms_cpu(of, (u(p * r + q) * u(na) + u(a)) * ub, hf, u(p * 3) * ub, ub, taps[q],
                           coef[q], count[q], ub, u(0))


@launcher
def _weight_grad_cpu(parts, du, taps, coef, count, dg):
    run_parts(_weight_grad_part, parts, (du, taps, coef, count, dg))


@kernel()
def _weight_grad_part(t, parts, du, taps, coef, count, dg):
    """dg[f, c, :] = vec(G^T D G) for D the sum of du[p, :, f, c] over the kernel's parts p as r x r,
    du (P, r*r, F, C) contiguous, for part t's share of the filters; G's three columns as taps,
    coef, count (_g_terms(columns=True)): D G (r x 3 rows over channels, each a sum of up to five
    terms, the parts added in), then G^T (D G) (3 x 3 rows), scattered into each filter's
    (C, 9). F(4x4) for 512 x 512, two Zen 4 threads: one part 4.0 -> 2.7 ms, two 8.1 -> 4.5-7.4
    (as 36 rows of up to nine terms, a pass a term, into nine accumulators)."""
    kk, nf, nc = du.shape[1], du.shape[2], du.shape[3]
    r = 4 if kk == 16 else 6
    u = np.uint64
    uc, plane = u(nc), u(nf * nc)
    half = np.empty((3 * r, nc), np.float64)
    acc = np.empty((9, nc), np.float64)
    df, hf, af = du.reshape(-1), half.reshape(-1), acc.reshape(-1)
    for f in range(nf * t // parts, nf * (t + 1) // parts):
        for p_ in range(du.shape[0]):  # half[p*3 + j] (+)= (D G)[p, j]
            for p in range(r):
                base = (u(p_ * kk + p * r) * u(nf) + u(f)) * uc
                for j in range(3):
                    _terms_cpu(hf, u(p * 3 + j) * uc, df, base, plane, taps[j], coef[j], count[j],
                               uc, u(p_ > 0))
        for i in range(3):  # acc[i*3 + j] = (G^T D G)[i, j]
            for j in range(3):
                _terms_cpu(af, u(i * 3 + j) * uc, hf, u(j) * uc, u(3) * uc, taps[i], coef[i],
                           count[i], uc, u(0))
        for c in range(nc):
            for i in range(9):
                dg[f, c, i] = acc[i, c]


def _winograd_workspace(ctx, x, f, oh, ow, tags, depth=0, mt=2):
    """(samples per chunk, then a per-thread scratch per tag) for output tiles mt x mt (2: F(2x2,
    3x3), 4: F(4x4, 3x3); kk = (mt + 2)^2 entries a transformed tile): a chunk of about
    CHUNK_BYTES of transformed input or as much as the transformed weights, whichever is more
    (every chunk's GEMMs read all of them: 16 MiB on 512 x 512 channels; VGG-11 b16's step 0.89x,
    ResNet-18 32x32 b64's 0.91x with that, interleaved), and at least `depth` output pixels where
    the thread has them (backward: the weight gradient's GEMMs sum over a chunk's tiles). Channels
    are innermost, so that every transform is vector arithmetic over channels: 'xp' one padded
    sample (Hq, Wq, C), 'v' and 'dv' the transformed input or its gradient (kk, tiles, C), 'm'
    the transformed output or its gradient (kk, tiles, F), 'o' one sample's output over whole
    tiles (F, 2th, 2tw; for F(4x4) channels last, (4th, 4tw, F)); in backward, 'g' one sample's
    output gradient times act' (F, >= oh*ow) and 'gt' the same channels-last over whole tiles
    (mt th, mt tw, F); 'rows' for F(2x2) the transforms by rows of tiles, two (16, tw*C) (the
    input's takes 4 (Wq*C) of it), empty above ROWS_MAX_CHANNELS; for F(4x4) one flat scratch
    for the input's six transformed rows (6 Wq*C) or a tile's halfway values (36 max(C, F))."""
    n, c = x.shape[:2]
    kk = tile_positions(mt)
    th, tw = -(-oh // mt), -(-ow // mt)
    chunk = max(CHUNK_BYTES, kk * c * f * x.itemsize)
    # depth in output pixels of 2x2 tiles, that is, a quarter of as many GEMM rows (tiles); F(4x4)
    # takes as many rows (a 4x4 tile's 16 pixels count 4) and at least MIN_ROWS_4 in forward too:
    # ResNet-18's 128-channel 16x16 layer at batch 64 took 3 samples (48 rows) a chunk, its GEMMs
    # then ran at a fraction of their speed (dU's sums over 48 rows)
    if mt == 4:
        depth = max(depth, 4 * MIN_ROWS_4)
    per = samples_per_chunk(n, ctx.workers, kk * max(c, f) * th * tw * x.itemsize, 4 * th * tw,
                            depth, chunk)
    t, tiles, size = ctx.workers, per * th * tw, x.itemsize
    # the kk matrices (and the F planes of 'o' and 'g') are written or read side by side:
    # strides that are multiples of 4 KiB would put them all in the same L1 sets
    if mt == 2:
        o = (f, 2 * th, _skew(2 * tw, 2 * th * size))
        rows = (2, 16, tw * c if c <= ROWS_MAX_CHANNELS else 0)
    else:
        o = (mt * th, mt * tw, f)
        rows = (1, 1, max((mt + 2) * (mt * tw + 2) * c, kk * tile_group(tw) * max(c, f)))
    shapes = {"xp": (mt * th + 2, mt * tw + 2, c), "v": (kk, _skew(tiles, c * size), c),
              "dv": (kk, _skew(tiles, c * size), c), "m": (kk, _skew(tiles, f * size), f),
              "o": o, "gt": (mt * th, mt * tw, f), "g": (f, _skew(oh * ow, size)), "rows": rows}
    return (per,) + tuple(ctx.scratch(tag, (t,) + shapes[tag], x.dtype) for tag in tags)


MIN_ROWS_4 = 128


def _skew(count, unit_bytes):
    """The least count' >= count whose count' * unit_bytes is not close to a multiple of 4 KiB."""
    while not 512 <= (count * unit_bytes) % 4096 <= 3584:
        count += 1
    return count


@launcher
def _winograd_forward_cpu(parts, x, ut, bias, act, ph, pw, oh, ow, per, xp_ws, v_ws, m_ws, o_ws,
                          rows_ws, y):
    run_parts(_winograd_forward_part, parts, (
        x, ut, bias, act, ph, pw, oh, ow, per, xp_ws, v_ws, m_ws, o_ws, rows_ws, y))


@kernel()
def _winograd_forward_part(t, parts, x, ut, bias, act, ph, pw, oh, ow, per, xp_ws, v_ws, m_ws,
                           o_ws, rows_ws, y):
    """y = act(conv(x, w) + bias), ut = U^T (16, C, F): V U^T as V times a matrix with
    contiguous rows, the GEMM that netc's tiles run at full speed."""
    n = x.shape[0]
    th, tw = -(-oh // 2), -(-ow // 2)
    lo, hi = n * t // parts, n * (t + 1) // parts
    xp, v, mm, o, rows = xp_ws[t], v_ws[t], m_ws[t], o_ws[t], rows_ws[t]
    for s in range(lo, hi, per):
        m = min(hi, s + per) - s
        cols = m * th * tw
        _winograd_input_cpu(x, s, m, ph, pw, th, tw, xp, v, rows)
        for k in range(16):  # M = V U^T, tile by tile
            gemm(False, False, 1.0, v[k, :cols], ut[k], 0.0, mm[k, :cols])
        for q in range(m):
            _winograd_out_cpu(mm, q * th * tw, th, tw, o)
            for f in range(o.shape[0]):
                for oy in range(oh):
                    _act_row_cpu(act, o[f, oy], bias[f], y[s + q, f, oy], ow)


@launcher
def _winograd_backward_cpu(parts, x, u, dy, y, act, ph, pw, per, need_dx, xp_ws, v_ws, m_ws,
                           dv_ws, g_ws, gt_ws, rows_ws, du_ws, db_ws, dx):
    run_parts(_winograd_backward_part, parts, (
        x, u, dy, y, act, ph, pw, per, need_dx, xp_ws, v_ws, m_ws, dv_ws, g_ws, gt_ws, rows_ws,
        du_ws, db_ws, dx))


@kernel(fastmath=REDUCE)  # REDUCE: the inlined bias sums vectorize
def _winograd_backward_part(t, parts, x, u, dy, y, act, ph, pw, per, need_dx, xp_ws, v_ws, m_ws,
                            dv_ws, g_ws, gt_ws, rows_ws, du_ws, db_ws, dx):
    n = x.shape[0]
    oh, ow = dy.shape[2], dy.shape[3]
    th, tw = -(-oh // 2), -(-ow // 2)
    lo, hi = n * t // parts, n * (t + 1) // parts
    xp, v, dm, dv, g, gt = xp_ws[t], v_ws[t], m_ws[t], dv_ws[t], g_ws[t], gt_ws[t]
    du, db, rows = du_ws[t], db_ws[t], rows_ws[t]
    _fill_cpu(du.reshape(-1), 0.0)
    _fill_cpu(db, 0.0)
    _fill_cpu(gt.reshape(-1), 0.0)  # the border of whole tiles past (oh, ow) stays zero
    for s in range(lo, hi, per):
        m = min(hi, s + per) - s
        cols = m * th * tw
        _winograd_input_cpu(x, s, m, ph, pw, th, tw, xp, v, rows)
        for q in range(m):
            _winograd_grad_act_cpu(act, dy[s + q], y[s + q], g, db)
            _winograd_grad_out_cpu(g, oh, ow, th, tw, dm, q * th * tw, gt)
        for k in range(16):  # dU += dM^T V
            gemm(True, False, 1.0, dm[k, :cols], v[k, :cols], 1.0, du[k])
        if need_dx:
            for k in range(16):  # dV = dM U
                gemm(False, False, 1.0, dm[k, :cols], u[k], 0.0, dv[k, :cols])
            for q in range(m):
                if rows.size:
                    _winograd_grad_in_rows_cpu(dv, q * th * tw, th, tw, xp, rows)
                else:
                    _winograd_grad_in_cpu(dv, q * th * tw, th, tw, xp)
                _winograd_unpad_cpu(xp, ph, pw, dx[s + q])


@kernel(inline=True)
def _winograd_grad_act_cpu(act, dyq, yq, g, db):
    """g[f, :pixels] = one sample's output gradient times act' (dyq, yq: (F, oh, ow)), and db[f]
    += its sum: whole planes (row by row, 8 to 32 values a call, took 8x as long)."""
    pixels = dyq.shape[1] * dyq.shape[2]
    dyf, yf = dyq.reshape(-1), yq.reshape(-1)
    for f in range(g.shape[0]):
        at = f * pixels
        db[f] += _grad_row_cpu(act, dyf[at:at + pixels], yf[at:at + pixels], g[f], pixels)


@kernel(outlined=True)
def _winograd_input_cpu(x, s, m, ph, pw, th, tw, xp, v, rows):
    """v[:, tiles of sample q, :] = the transformed tiles of samples s..s+m-1 (xp: scratch), by
    rows of tiles where `rows` (scratch) is not empty. Outlined, as are the other steps a part
    takes once a sample or a chunk (padding, transforms in and out, F(4x4)'s sample steps):
    each compiled once rather than again inside every part that calls it (Numba links a plain
    callee into its caller and optimizes the whole again), which took the Winograd tests' cold
    compiling from 75.5 s to 58 s; the calls cost nothing measurable (bench/conv_switch.py
    rounds, before and after in turns, within this VM's 10% noise)."""
    for q in range(m):
        _winograd_pad_cpu(x[s + q], ph, pw, xp)
        if rows.size:
            _winograd_in_rows_cpu(xp, th, tw, v, q * th * tw, rows.reshape(-1))
        else:
            _winograd_in_cpu(xp, th, tw, v, q * th * tw)


@kernel(outlined=True)
def _winograd_pad_cpu(img, ph, pw, xp):
    """xp (Hq, Wq, C) = one sample (C, H, W) placed at (ph, pw) on zeros, channels last: the
    border zeroed, the interior written by _channels_last_cpu (zeroing all of xp first took a
    fifth of the pad's time on 32x32 planes of 32 channels)."""
    c_, hh, ww = img.shape
    hq = xp.shape[0]
    for iy in range(hq):
        row = xp[iy].reshape(-1)
        if iy < ph or iy >= ph + hh:
            _fill_cpu(row, 0.0)
        else:
            _fill_cpu(row[:pw * c_], 0.0)
            _fill_cpu(row[(pw + ww) * c_:], 0.0)
    _channels_last_cpu(img.reshape(c_, -1), hh, ww, ph, pw, xp)


@kernel(outlined=True)
def _channels_last_cpu(src, hh, ww, ph, pw, dst):
    """dst[y + ph, x + pw, c] = src[c, y*ww + x] for y < hh, x < ww: planes (flat, rows of ww)
    to channels last. On rows of 8 or more, channel by channel: each row's loads contiguous,
    its stores C apart (one sample, AVX2 Zen 3: 13 us instead of 51 for 32 channels of 32x32,
    26 instead of 101 for 64 of 32x32, 7 instead of 19 for 256 of 8x8). On shorter rows, whose
    loops are too short for that, 16 channels of a pixel at a time (512 channels of 4x4: 6 us,
    channel by channel 11). Flat unsigned indices, free of Numba's wraparound checks. A sample
    of more than PLANES_BLOCK_BYTES goes through in blocks of PLANES_LAST_BLOCK channels (all of
    its rows for each block): a pass then reads that many planes at once rather than every one,
    which the memory system streams far better where the sample does not stay in cache (one
    sample of a batch of 64, Zen 4: 64 channels of 32x32 114 -> 29 us, 64 of 28x28 81 -> 27, 128
    of 32x32 232 -> 75, 256 of 16x16 158 -> 84)."""
    c_, wq = src.shape[0], dst.shape[1]
    u, out, flat = np.uint64, dst.reshape(-1), src.reshape(-1)
    plane, step = u(src.shape[1]), u(c_)
    if ww >= 8:
        block = PLANES_LAST_BLOCK if src.size * src.itemsize > PLANES_BLOCK_BYTES else c_
        for c0 in range(0, c_, block):
            c1 = u(min(c0 + block, c_))
            for iy in range(hh):
                for c in range(u(c0), c1):
                    at, frm = u(((iy + ph) * wq + pw) * c_) + c, c * plane + u(iy * ww)
                    for ix in range(u(ww)):
                        out[at + ix * step] = flat[frm + ix]
        return
    for iy in range(hh):
        for c0 in range(0, c_, 16):
            c1 = min(c0 + 16, c_)
            for ix in range(ww):
                at = u(((iy + ph) * wq + pw + ix) * c_)
                for c in range(c0, c1):
                    out[at + u(c)] = src[c, iy * ww + ix]


@kernel(outlined=True)
def _winograd_unpad_cpu(xp, ph, pw, img):
    """img (C, H, W) = xp (Hq, Wq, C) from (ph, pw), channels first: _winograd_pad_cpu's adjoint
    for the input gradient."""
    _channels_first_cpu(xp.reshape(-1), xp.shape[1] * xp.shape[2], ph, pw, img)


@kernel()
def _winograd_in_cpu(xp, th, tw, v, col0):
    """v[a*4+b, col0 + ty*tw + tx, :] = (B^T d B)[a, b] for the 4x4 tile d at (2ty, 2tx), one
    of the 16 at a time: each is d[i, j] + s d[i, j'] + s' d[i', j] + s s' d[i', j'] (two taps
    of B^T's row a, two of its row b), vectors over channels by flat unsigned indices. One
    output stream a loop is what LLVM vectorizes: writing all 16 in one loop over channels
    needed too many alias checks and ran scalar (1.5 ms for a 32x32 sample of 64 channels)."""
    u = np.uint64
    c_, wq, cols = u(xp.shape[2]), u(xp.shape[1]), u(v.shape[1])
    src, dst, sign = xp.reshape(-1), v.reshape(-1), _BT_SIGN.astype(xp.dtype)
    for ty in range(th):
        for tx in range(tw):
            at = (u(2 * ty) * wq + u(2 * tx)) * c_  # the tile's top left, channel 0
            j = u(col0 + ty * tw + tx)
            for k in range(16):
                a, b = k // 4, k % 4
                i0, i1, j0, j1 = _BT_TAPS[a, 0], _BT_TAPS[a, 1], _BT_TAPS[b, 0], _BT_TAPS[b, 1]
                p00 = at + (u(i0) * wq + u(j0)) * c_
                p01 = at + (u(i0) * wq + u(j1)) * c_
                p10 = at + (u(i1) * wq + u(j0)) * c_
                p11 = at + (u(i1) * wq + u(j1)) * c_
                s01, s10, s11 = sign[b], sign[a], sign[a] * sign[b]
                out = (u(k) * cols + j) * c_
                for c in range(c_):
                    dst[out + c] = (src[p00 + c] + s01 * src[p01 + c]) + (
                        s10 * src[p10 + c] + s11 * src[p11 + c])


@kernel()
def _winograd_in_rows_cpu(xp, th, tw, v, col0, r):
    """_winograd_in_cpu a row of tiles at a time, for few channels: B^T on the four padded rows
    under the row of tiles, as loops over whole rows of Wq*C values, into r (4 rows of Wq*C);
    then each tile's 16 entries from two values of those (B on the columns) instead of four."""
    u = np.uint64
    c_, wq, cols = u(xp.shape[2]), u(xp.shape[1]), u(v.shape[1])
    src, dst, sign = xp.reshape(-1), v.reshape(-1), _BT_SIGN.astype(xp.dtype)
    run = wq * c_
    for ty in range(th):
        for a in range(4):  # r[a] = d[2ty + i0] + sign[a] d[2ty + i1], whole padded rows
            p0 = u(2 * ty + _BT_TAPS[a, 0]) * run
            p1 = u(2 * ty + _BT_TAPS[a, 1]) * run
            sa, out = sign[a], u(a) * run
            for i in range(run):
                r[out + i] = src[p0 + i] + sa * src[p1 + i]
        for tx in range(tw):
            j = u(col0 + ty * tw + tx)
            for k in range(16):
                a, b = k // 4, k % 4
                q0 = u(a) * run + u(2 * tx + _BT_TAPS[b, 0]) * c_
                q1 = u(a) * run + u(2 * tx + _BT_TAPS[b, 1]) * c_
                sb, out = sign[b], (u(k) * cols + j) * c_
                for c in range(c_):
                    dst[out + c] = r[q0 + c] + sb * r[q1 + c]


# B^T's rows for F(2x2, 3x3), each two taps: row a is d[i0] + sign[a] d[i1]
_BT_TAPS = np.array([[0, 2], [1, 2], [2, 1], [1, 3]])
_BT_SIGN = np.array([-1.0, 1.0, -1.0, -1.0])


@kernel(outlined=True)
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


@kernel(outlined=True)
def _winograd_grad_out_cpu(g, oh, ow, th, tw, dm, col0, gt):
    """dm[:, tile, f] = A g A^T for each 2x2 tile of g (F, >= oh*ow), the output gradient
    (times act') of one sample, its planes flat. g goes channels last first, into gt (2th, 2tw,
    F), whose border past (oh, ow) the caller keeps zero; then each of the 16 outputs, A's row a
    times the tile times A's row b (four taps), is one loop over filters that LLVM vectorizes
    (scalar, reading each filter's plane in turn: 1.5 ms a 32x32 sample of 64 filters; so,
    0.14)."""
    u = np.uint64
    nf, ww = g.shape[0], 2 * tw
    zero = np.int64(0)  # (a constant would compile a version of _channels_last_cpu of its own)
    _channels_last_cpu(g, oh, ow, zero, zero, gt)
    src, dst, coef = gt.reshape(-1), dm.reshape(-1), _WINO_A.astype(g.dtype)
    f_, row, cols = u(nf), u(ww) * u(nf), u(dm.shape[1])
    for ty in range(th):
        for tx in range(tw):
            at = u(2 * ty) * row + u(2 * tx) * f_
            j = u(col0 + ty * tw + tx)
            for k in range(16):
                a, b = k // 4, k % 4
                c00, c01 = coef[a, 0] * coef[b, 0], coef[a, 0] * coef[b, 1]
                c10, c11 = coef[a, 1] * coef[b, 0], coef[a, 1] * coef[b, 1]
                out = (u(k) * cols + j) * f_
                for f in range(f_):
                    dst[out + f] = (c00 * src[at + f] + c01 * src[at + f_ + f]) + (
                        c10 * src[at + row + f] + c11 * src[at + row + f_ + f])


# A = (A^T)^T for F(2x2, 3x3): A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
_WINO_A = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, -1.0]])
# The input's and the input gradient's transforms by whole rows of tiles (_winograd_in_rows_cpu,
# _winograd_grad_in_rows_cpu) up to this many channels; above it, tile by tile. One 32x32
# sample, AVX2 Zen 3: the input gradient's, 32 channels 58-60 us against 82-85, 48 84 against 110,
# 64 106-110 against 115-137 (16x16: 27.6 against 29.0), 96 channels on 16x16 42 against 38, 128
# 60 against 49; the input's, 32 channels 33 against 41, 64 49 against 70 (16x16: 7.5 against
# 9.9, 10.6 against 13.1), 128 on 16x16 28 against 24
ROWS_MAX_CHANNELS = 64
# B's rows (B^T's columns), three taps each (a zero coefficient where fewer): B v's entry r is
# the sum of _B_COEF[r, i] v[_B_TAPS[r, i]]
_B_TAPS = np.array([[0, 1, 2], [1, 2, 3], [0, 1, 2], [1, 2, 3]])
_B_COEF = np.array([[1.0, 0.0, 0.0], [1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [0.0, 0.0, -1.0]])


@kernel(inline=True)
def _b_columns_cpu(src, cols, j, c_, count, coef, out):
    """out[k*count:(k+1)*count] = (B dV)[r, b] (k = 4r + b: the sum over a of B[r, a] dV[a, b],
    at most three taps) for the `count` values of dV (src, flat (16, cols, C)) from column j on:
    one tile's C channels, or a row of tiles side by side. Inlined into both input-gradient
    transforms."""
    u = np.uint64
    for k in range(16):
        r, b = k // 4, k % 4
        p0 = (u(4 * _B_TAPS[r, 0] + b) * cols + j) * c_
        p1 = (u(4 * _B_TAPS[r, 1] + b) * cols + j) * c_
        p2 = (u(4 * _B_TAPS[r, 2] + b) * cols + j) * c_
        c0, c1, c2, at = coef[r, 0], coef[r, 1], coef[r, 2], u(k) * count
        for i in range(count):
            out[at + i] = c0 * src[p0 + i] + c1 * src[p1 + i] + c2 * src[p2 + i]


@kernel(outlined=True)
def _winograd_grad_in_cpu(dv, col0, th, tw, dxp):
    """dxp (Hq, Wq, C) = the sum over tiles of B dV B^T placed at (2ty, 2tx) (tiles overlap by
    two rows and columns). Per tile: B on dV's columns into a small buffer, then B on its rows
    added in place; every entry one loop over channels of at most three taps, which LLVM
    vectorizes (0.44 ms a 32x32 sample of 64 channels as a scalar loop writing all 16)."""
    u = np.uint64
    _fill_cpu(dxp.reshape(-1), 0.0)
    c_, wq, cols = u(dxp.shape[2]), u(dxp.shape[1]), u(dv.shape[1])
    tile = np.empty(16 * dxp.shape[2], dxp.dtype)
    src, dst, coef = dv.reshape(-1), dxp.reshape(-1), _B_COEF.astype(dxp.dtype)
    for ty in range(th):
        for tx in range(tw):
            _b_columns_cpu(src, cols, u(col0 + ty * tw + tx), c_, c_, coef, tile)
            for k in range(16):  # dxp[2ty + r, 2tx + q] += sum over b of tile[4r + b] B[q, b]
                r, q = k // 4, k % 4
                p0 = u(4 * r + _B_TAPS[q, 0]) * c_
                p1 = u(4 * r + _B_TAPS[q, 1]) * c_
                p2 = u(4 * r + _B_TAPS[q, 2]) * c_
                c0, c1, c2 = coef[q, 0], coef[q, 1], coef[q, 2]
                out = (u(2 * ty + r) * wq + u(2 * tx + q)) * c_
                for c in range(c_):
                    dst[out + c] += c0 * tile[p0 + c] + c1 * tile[p1 + c] + c2 * tile[p2 + c]


@kernel(outlined=True)
def _winograd_grad_in_rows_cpu(dv, col0, th, tw, dxp, rows):
    """_winograd_grad_in_cpu a row of tiles at a time, for few channels: B on dV's columns for
    the whole row into rows[0] (16, tw*C), then B on the rows into rows[1], each entry one loop
    over the row's tw*C values (the tiles of a row are side by side in dV); then each tile's 16
    values added into dxp. The tile-by-tile transform's loops over C values were too short to
    pay for their start on 32-64 channels."""
    u = np.uint64
    _fill_cpu(dxp.reshape(-1), 0.0)
    c_, wq, cols = u(dxp.shape[2]), u(dxp.shape[1]), u(dv.shape[1])
    src, dst, coef = dv.reshape(-1), dxp.reshape(-1), _B_COEF.astype(dxp.dtype)
    run = u(tw) * c_
    bd, bdb = rows[0].reshape(-1), rows[1].reshape(-1)
    for ty in range(th):
        _b_columns_cpu(src, cols, u(col0 + ty * tw), c_, run, coef, bd)
        for k in range(16):  # bdb[4r + q] = sum over b of bd[4r + b] B[q, b]
            r, q = k // 4, k % 4
            p0 = u(4 * r + _B_TAPS[q, 0]) * run
            p1 = u(4 * r + _B_TAPS[q, 1]) * run
            p2 = u(4 * r + _B_TAPS[q, 2]) * run
            c0, c1, c2, out = coef[q, 0], coef[q, 1], coef[q, 2], u(k) * run
            for i in range(run):
                bdb[out + i] = c0 * bd[p0 + i] + c1 * bd[p1 + i] + c2 * bd[p2 + i]
        for k in range(16):  # dxp[2ty + r, 2tx + q] += bdb[4r + q, tile tx]
            r, q = k // 4, k % 4
            for tx in range(tw):
                at = (u(2 * ty + r) * wq + u(2 * tx + q)) * c_
                frm = u(k) * run + u(tx) * c_
                for c in range(c_):
                    dst[at + c] += bdb[frm + c]


# F(4x4, 3x3)'s transforms (tiles of 6x6 inputs, 4x4 outputs) one side at a time (_bt6_cpu and
# the others, below), each a loop over C channels (or F filters) that LLVM vectorizes; the
# halfway values of the two one-sided products sit in `tmp`.


@launcher
def _winograd4_forward_cpu(parts, x, ut, bias, act, ph, pw, oh, ow, per, xp_ws, v_ws, m_ws, o_ws,
                           rows_ws, y):
    run_parts(_winograd4_forward_part, parts, (
        x, ut, bias, act, ph, pw, oh, ow, per, xp_ws, v_ws, m_ws, o_ws, rows_ws, y))


@kernel()
def _winograd4_forward_part(t, parts, x, ut, bias, act, ph, pw, oh, ow, per, xp_ws, v_ws, m_ws,
                            o_ws, rows_ws, y):
    """_winograd_forward_part for F(4x4, 3x3), ut (36, C, F): each sample's output channels last
    into o, then its planes into y, with bias and activation in place. Kernels of their own, so
    that a network without such a layer never compiles them (F(2x2)'s parts took 1.5x as long
    to compile with both in one)."""
    n = x.shape[0]
    th, tw = -(-oh // 4), -(-ow // 4)
    lo, hi = n * t // parts, n * (t + 1) // parts
    xp, v, mm, o, tmp = xp_ws[t], v_ws[t], m_ws[t], o_ws[t], rows_ws[t].reshape(-1)
    for s in range(lo, hi, per):
        m = min(hi, s + per) - s
        cols = m * th * tw
        for q in range(m):
            _wino4_sample_in_cpu(x[s + q], ph, pw, th, tw, xp, v, q * th * tw, tmp)
        for k in range(36):  # M = V U^T, tile by tile
            gemm(False, False, 1.0, v[k, :cols], ut[k], 0.0, mm[k, :cols])
        for q in range(m):
            _wino4_sample_out_cpu(mm, q * th * tw, th, tw, bias, act, o, tmp, y[s + q])


@kernel(outlined=True)
def _wino4_sample_in_cpu(img, ph, pw, th, tw, xp, v, col0, tmp):
    """One sample (C, H, W) padded channels last into xp, and its transformed tiles into v from
    column col0."""
    _winograd_pad_cpu(img, ph, pw, xp)
    _wino4_in_cpu(xp, th, tw, v, col0, tmp)


@kernel(outlined=True)
def _wino4_sample_out_cpu(mm, col0, th, tw, bias, act, o, tmp, yq):
    """yq (F, oh, ow) = act(A^T M A + bias) for one sample's tiles, M's columns from col0: channels
    last into o, then its planes into yq, bias and activation in place."""
    _wino4_out_cpu(mm, col0, th, tw, o, tmp)
    zero = np.int64(0)  # (a constant would compile a version of _channels_first_cpu of its own)
    _channels_first_cpu(o.reshape(-1), o.shape[1] * o.shape[2], zero, zero, yq)
    for f in range(yq.shape[0]):
        plane = yq[f].reshape(-1)
        _act_row_cpu(act, plane, bias[f], plane, plane.size)


@launcher
def _winograd4_backward_cpu(parts, x, u, dy, y, act, ph, pw, per, need_dx, xp_ws, v_ws, m_ws,
                            dv_ws, g_ws, gt_ws, rows_ws, du_ws, db_ws, dx):
    run_parts(_winograd4_backward_part, parts, (
        x, u, dy, y, act, ph, pw, per, need_dx, xp_ws, v_ws, m_ws, dv_ws, g_ws, gt_ws, rows_ws,
        du_ws, db_ws, dx))


@kernel(fastmath=REDUCE)  # REDUCE: the inlined bias sums vectorize
def _winograd4_backward_part(t, parts, x, u, dy, y, act, ph, pw, per, need_dx, xp_ws, v_ws, m_ws,
                             dv_ws, g_ws, gt_ws, rows_ws, du_ws, db_ws, dx):
    """_winograd_backward_part for F(4x4, 3x3), u (36, F, C)."""
    n = x.shape[0]
    oh, ow = dy.shape[2], dy.shape[3]
    th, tw = -(-oh // 4), -(-ow // 4)
    lo, hi = n * t // parts, n * (t + 1) // parts
    xp, v, dm, dv, g, gt = xp_ws[t], v_ws[t], m_ws[t], dv_ws[t], g_ws[t], gt_ws[t]
    du, db, tmp = du_ws[t], db_ws[t], rows_ws[t].reshape(-1)
    _fill_cpu(du.reshape(-1), 0.0)
    _fill_cpu(db, 0.0)
    _fill_cpu(gt.reshape(-1), 0.0)  # the border of whole tiles past (oh, ow) stays zero
    for s in range(lo, hi, per):
        m = min(hi, s + per) - s
        cols = m * th * tw
        for q in range(m):
            _wino4_sample_grads_cpu(x[s + q], dy[s + q], y[s + q], act, ph, pw, th, tw, xp, g, gt,
                                    v, dm, q * th * tw, tmp, db)
        for k in range(36):  # dU += dM^T V
            gemm(True, False, 1.0, dm[k, :cols], v[k, :cols], 1.0, du[k])
        if need_dx:
            for k in range(36):  # dV = dM U
                gemm(False, False, 1.0, dm[k, :cols], u[k], 0.0, dv[k, :cols])
            for q in range(m):
                _wino4_grad_in_cpu(dv, q * th * tw, th, tw, xp, tmp)
                _winograd_unpad_cpu(xp, ph, pw, dx[s + q])


@kernel(fastmath=REDUCE, outlined=True)  # REDUCE: the bias sums vectorize
def _wino4_sample_grads_cpu(img, dyq, yq, act, ph, pw, th, tw, xp, g, gt, v, dm, col0, tmp, db):
    """For one sample: its transformed input tiles into v and its transformed output gradient
    (times act') into dm, from column col0; db += its output gradient's sum."""
    _wino4_sample_in_cpu(img, ph, pw, th, tw, xp, v, col0, tmp)
    _winograd_grad_act_cpu(act, dyq, yq, g, db)
    _wino4_grad_out_cpu(g, dyq.shape[1], dyq.shape[2], th, tw, dm, col0, gt, tmp)


@kernel(outlined=True)
def _terms_cpu(dst, at, src, base, stride, taps, coef, count, n, add):
    """dst[at + i] (+)= the sum over e < count of coef[e] * src[base + taps[e]*stride + i], for
    i < n (the weights' transforms' rows): one pass summing up to five terms in registers (G's
    rows have at most three nonzeros, its columns five), each term its own pass beyond that;
    added where `add` (a uint64, 0 or 1: a constant False would be a type of its own, a second
    compiled version). Compiled once for all four transforms' kernels rather than inlined into
    each (they took 3.5-3.9 s each to compile so, 0.4 now, and this 0.7-1 s a version; the
    call a row costs 512 x 512 F(2x2)'s transforms 5-10% and 64 x 64's 0.015-0.05 ms, of a
    step's milliseconds)."""
    u = np.uint64
    done = min(count, 5)
    c0 = coef[0]
    c1 = coef[1] if done > 1 else c0
    c2 = coef[2] if done > 2 else c0
    c3 = coef[3] if done > 3 else c0
    c4 = coef[4] if done > 4 else c0
    o0 = u(taps[0]) * stride
    o1 = u(taps[1]) * stride if done > 1 else o0
    o2 = u(taps[2]) * stride if done > 2 else o0
    o3 = u(taps[3]) * stride if done > 3 else o0
    o4 = u(taps[4]) * stride if done > 4 else o0
    if done == 1:
        if add:
            for i in range(n):
                dst[at + i] += c0 * src[base + o0 + i]
        else:
            for i in range(n):
                dst[at + i] = c0 * src[base + o0 + i]
    elif done == 2:
        if add:
            for i in range(n):
                dst[at + i] += c0 * src[base + o0 + i] + c1 * src[base + o1 + i]
        else:
            for i in range(n):
                dst[at + i] = c0 * src[base + o0 + i] + c1 * src[base + o1 + i]
    elif done == 3:
        if add:
            for i in range(n):
                dst[at + i] += (c0 * src[base + o0 + i] + c1 * src[base + o1 + i]
                               + c2 * src[base + o2 + i])
        else:
            for i in range(n):
                dst[at + i] = (c0 * src[base + o0 + i] + c1 * src[base + o1 + i]
                              + c2 * src[base + o2 + i])
    elif done == 4:
        if add:
            for i in range(n):
                dst[at + i] += (c0 * src[base + o0 + i] + c1 * src[base + o1 + i]
                               + c2 * src[base + o2 + i] + c3 * src[base + o3 + i])
        else:
            for i in range(n):
                dst[at + i] = (c0 * src[base + o0 + i] + c1 * src[base + o1 + i]
                              + c2 * src[base + o2 + i] + c3 * src[base + o3 + i])
    else:
        if add:
            for i in range(n):
                dst[at + i] += (c0 * src[base + o0 + i] + c1 * src[base + o1 + i]
                               + c2 * src[base + o2 + i] + c3 * src[base + o3 + i]
                               + c4 * src[base + o4 + i])
        else:
            for i in range(n):
                dst[at + i] = (c0 * src[base + o0 + i] + c1 * src[base + o1 + i]
                              + c2 * src[base + o2 + i] + c3 * src[base + o3 + i]
                              + c4 * src[base + o4 + i])
    for e in range(done, count):
        pe, ce = base + u(taps[e]) * stride, coef[e]
        for i in range(n):
            dst[at + i] += ce * src[pe + i]


TILE_GROUP = 8


def tile_group(tw):
    """Tiles of a row that the F(4x4) transforms take at once (TILE_GROUP at most): their
    halfway values, 36 x group x channels, are what the 'rows' scratch holds (the kernels read
    the group from its size)."""
    return max(1, min(tw, TILE_GROUP))


@kernel(inline=True)
def _group_of(tmp, tw, channels):
    """The tiles a transform takes at once: as many of a row's tw as tmp holds 36 halfway
    vectors of `channels` values for (the scratch is sized by tile_group)."""
    return max(1, min(tw, tmp.size // (36 * channels)))


# F(4x4)'s transforms one side at a time, as the products of the matrices with six (or four)
# vectors at once: each call reads its vectors once and writes all the products (B^T's six rows
# from six values: 6 reads where the rows' terms one at a time took 22). Each is a kernel of its
# own, called by symbol for one tile (or one run of tiles' values) at a time: its loop then
# checks at each call that what it writes does not overlap what it reads, and vectorizes.
# Compiled into the transforms, or looping over tiles itself, LLVM hoisted that check out of
# the loop over tiles, where it failed, and the loop ran one value at a time (3-4x slower).
# The transforms that call them are inlined into the kernels' parts: a kernel of its own that
# calls by symbol, loaded from Numba's cache and then compiled into a new caller, would not
# pass on the step that binds the symbol (linking.py), and the new caller's cached code would
# end the process that loads it.
_F2, _F4, _F5, _F8 = np.float32(2), np.float32(4), np.float32(5), np.float32(8)


@kernel(inline=True)
def _six_offsets_cpu(base, step):
    """base + e*step for e < 6, unsigned (the six vectors a transform reads or writes)."""
    u = np.uint64
    return base, base + step, base + u(2) * step, base + u(3) * step, base + u(4) * step, \
        base + u(5) * step


@kernel(outlined=True)
def _bt6_cpu(dst, q, dstep, src, p, sstep, n):
    """dst[q + r*dstep + i] = (B^T d)[r], r < 6, of d[e] = src[p + e*sstep + i], e < 6, for i <
    n (F(4x4)'s input transform, one side)."""
    _, p1, p2, p3, p4, p5 = _six_offsets_cpu(p, sstep)
    _, q1, q2, q3, q4, q5 = _six_offsets_cpu(q, dstep)
    for i in range(n):
        d0, d1, d2 = src[p + i], src[p1 + i], src[p2 + i]
        d3, d4, d5 = src[p3 + i], src[p4 + i], src[p5 + i]
        dst[q + i] = _F4 * d0 - _F5 * d2 + d4
        dst[q1 + i] = d3 + d4 - _F4 * (d1 + d2)
        dst[q2 + i] = d4 - d3 + _F4 * (d1 - d2)
        dst[q3 + i] = d4 - d2 + _F2 * (d3 - d1)
        dst[q4 + i] = d4 - d2 - _F2 * (d3 - d1)
        dst[q5 + i] = _F4 * d1 - _F5 * d3 + d5


@kernel(outlined=True)
def _b6_cpu(dst, q, dstep, src, p, sstep, n, tiles, dtile, stile, add):
    """_bt6_cpu with B (B^T's columns: the input gradient's transform), added to dst if `add`,
    for `tiles` tiles: tile k's values from src[p + k*stile ...] into dst[q + k*dtile ...] (the
    input gradient's rows ran 1.5x as fast with this loop inside as with a call a tile)."""
    u = np.uint64
    for k in range(tiles):
        _b6_tile_cpu(dst, q + u(k) * dtile, dstep, src, p + u(k) * stile, sstep, n, add)


@kernel(inline=True)
def _b6_tile_cpu(dst, q, dstep, src, p, sstep, n, add):
    """_b6_cpu for one tile."""
    _, p1, p2, p3, p4, p5 = _six_offsets_cpu(p, sstep)
    _, q1, q2, q3, q4, q5 = _six_offsets_cpu(q, dstep)
    for i in range(n):
        d0, d1, d2 = src[p + i], src[p1 + i], src[p2 + i]
        d3, d4, d5 = src[p3 + i], src[p4 + i], src[p5 + i]
        e0, e1 = _F4 * d0, _F4 * (d2 - d1 + d5) + _F2 * (d4 - d3)
        e2, e3 = -(_F5 * d0 + _F4 * (d1 + d2) + d3 + d4), d1 - d2 + _F2 * (d3 - d4) - _F5 * d5
        e4 = d0 + d1 + d2 + d3 + d4
        if add:  # (the same in every pass of the loop: LLVM makes two loops of it)
            dst[q + i] += e0
            dst[q1 + i] += e1
            dst[q2 + i] += e2
            dst[q3 + i] += e3
            dst[q4 + i] += e4
            dst[q5 + i] += d5
        else:
            dst[q + i] = e0
            dst[q1 + i] = e1
            dst[q2 + i] = e2
            dst[q3 + i] = e3
            dst[q4 + i] = e4
            dst[q5 + i] = d5


@kernel(outlined=True)
def _at6_cpu(dst, q, dstep, src, p, sstep, n):
    """dst[q + r*dstep + i] = (A^T m)[r], r < 4, of m[e] = src[p + e*sstep + i], e < 6 (the
    output's transform, one side)."""
    _, p1, p2, p3, p4, p5 = _six_offsets_cpu(p, sstep)
    _, q1, q2, q3, _, _ = _six_offsets_cpu(q, dstep)
    for i in range(n):
        m1, m2, m3, m4 = src[p1 + i], src[p2 + i], src[p3 + i], src[p4 + i]
        s12, d12, s34, d34 = m1 + m2, m1 - m2, m3 + m4, m3 - m4
        dst[q + i] = src[p + i] + s12 + s34
        dst[q1 + i] = d12 + _F2 * d34
        dst[q2 + i] = s12 + _F4 * s34
        dst[q3 + i] = d12 + _F8 * d34 + src[p5 + i]


@kernel(outlined=True)
def _a4_cpu(dst, q, dstep, src, p, sstep, n):
    """dst[q + r*dstep + i] = (A x)[r], r < 6, of x[e] = src[p + e*sstep + i], e < 4 (the
    output gradient's transform, one side)."""
    _, p1, p2, p3, _, _ = _six_offsets_cpu(p, sstep)
    _, q1, q2, q3, q4, q5 = _six_offsets_cpu(q, dstep)
    for i in range(n):
        x0, x1, x2, x3 = src[p + i], src[p1 + i], src[p2 + i], src[p3 + i]
        e1, o1, e2, o2 = x0 + x2, x1 + x3, x0 + _F4 * x2, _F2 * x1 + _F8 * x3
        dst[q + i] = x0
        dst[q1 + i] = e1 + o1
        dst[q2 + i] = e1 - o1
        dst[q3 + i] = e2 + o2
        dst[q4 + i] = e2 - o2
        dst[q5 + i] = x3


@kernel(inline=True)
def _wino4_in_cpu(xp, th, tw, v, col0, tmp):
    """v[a*6+b, col0 + ty*tw + tx, :] = (B^T d B)[a, b] for the 6x6 tile d at (4ty, 4tx) of xp
    (Hq, Wq, C): B^T on the six padded rows under a row of tiles, whole rows of Wq*C values, into
    tmp (6 Wq*C); then B on the columns of those, tile by tile (each position's entries of
    consecutive tiles lie side by side in v)."""
    u = np.uint64
    c_, wq, cols = u(xp.shape[2]), u(xp.shape[1]), u(v.shape[1])
    src, dst = xp.reshape(-1), v.reshape(-1)
    run = wq * c_
    for ty in range(th):
        _bt6_cpu(tmp, u(0), run, src, u(4 * ty) * run, run, run)
        j = u(col0 + ty * tw)
        for a in range(6):
            for tx in range(tw):
                _bt6_cpu(dst, (u(6 * a) * cols + j + u(tx)) * c_, cols * c_, tmp,
                         u(a) * run + u(4 * tx) * c_, c_, c_)


@kernel(inline=True)
def _wino4_out_cpu(mm, col0, th, tw, ot, tmp):
    """ot (4th, 4tw, F), channels last = A^T M A for every 4x4 tile of one sample: for a group of
    a row's tiles at once (tile_group, from tmp's size), A^T on M's rows into tmp (4 x 6 x group
    vectors of F), then A on the columns, tile by tile."""
    u = np.uint64
    f_, cols, wide = u(mm.shape[2]), u(mm.shape[1]), u(ot.shape[1])
    src, dst = mm.reshape(-1), ot.reshape(-1)
    group = _group_of(tmp, tw, mm.shape[2])
    for ty in range(th):
        for g0 in range(0, tw, group):
            ng = u(min(group, tw - g0))
            j = u(col0 + ty * tw + g0)
            for b in range(6):  # tmp[r, b, g] = sum over a of A^T[r, a] M[a, b] (tile g)
                _at6_cpu(tmp, u(b) * ng * f_, u(6) * ng * f_, src, (u(b) * cols + j) * f_,
                         u(6) * cols * f_, ng * f_)
            for r in range(4):  # ot[4ty + r, 4tx + s] = sum over b of tmp[r, b] A^T[s, b]
                for g in range(ng):
                    _at6_cpu(dst, (u(4 * ty + r) * wide + u(4 * g0) + u(4) * g) * f_, f_, tmp,
                             (u(6 * r) * ng + g) * f_, ng * f_, f_)


@kernel(inline=True)
def _wino4_grad_out_cpu(g, oh, ow, th, tw, dm, col0, gt, tmp):
    """dm[:, tile, f] = A g A^T for each 4x4 tile of g (F, >= oh*ow), the output gradient (times
    act') of one sample: channels last into gt (4th, 4tw, F), whose border past (oh, ow) the
    caller keeps zero; for a group of a row's tiles at once, A on the columns into tmp (4 x 6 x
    group vectors of F), tile by tile, then on the rows."""
    u = np.uint64
    zero = np.int64(0)  # (a constant would compile a version of _channels_last_cpu of its own)
    _channels_last_cpu(g, oh, ow, zero, zero, gt)
    f_, cols, wide = u(g.shape[0]), u(dm.shape[1]), u(gt.shape[1])
    src, dst = gt.reshape(-1), dm.reshape(-1)
    group = _group_of(tmp, tw, g.shape[0])
    for ty in range(th):
        for g0 in range(0, tw, group):
            ng = u(min(group, tw - g0))
            j = u(col0 + ty * tw + g0)
            for r in range(4):  # tmp[r, b, tile] = sum over s of g[r, s] A^T[s, b]
                for k in range(ng):
                    _a4_cpu(tmp, (u(6 * r) * ng + k) * f_, ng * f_, src,
                            (u(4 * ty + r) * wide + u(4 * g0) + u(4) * k) * f_, f_, f_)
            for b in range(6):  # dm[a, b] = sum over r of A^T[r, a] tmp[r, b]
                _a4_cpu(dst, (u(b) * cols + j) * f_, u(6) * cols * f_, tmp, u(b) * ng * f_,
                        u(6) * ng * f_, ng * f_)


@kernel(outlined=True)
def _wino4_grad_in_cpu(dv, col0, th, tw, dxp, tmp):
    """dxp (Hq, Wq, C) = the sum over tiles of B dV B^T placed at (4ty, 4tx) (tiles overlap by
    two rows and columns): for a group of a row's tiles at once, B on dV's columns into tmp (6 x
    6 x group vectors of C), then on the rows, added in place."""
    u = np.uint64
    _fill_cpu(dxp.reshape(-1), 0.0)
    c_, wq, cols = u(dxp.shape[2]), u(dxp.shape[1]), u(dv.shape[1])
    src, dst = dv.reshape(-1), dxp.reshape(-1)
    group = _group_of(tmp, tw, dxp.shape[2])
    for ty in range(th):
        for g0 in range(0, tw, group):
            ng = u(min(group, tw - g0))
            j = u(col0 + ty * tw + g0)
            for a in range(6):  # tmp[a, q, tile] = sum over b of dV[a, b] B^T[b, q]
                _b6_cpu(tmp, u(6 * a) * ng * c_, ng * c_, src, (u(6 * a) * cols + j) * c_,
                        cols * c_, ng * c_, u(1), u(0), u(0), False)
            for q in range(6):  # dxp[4ty + i, 4tx + q] += sum over a of B^T[a, i] tmp[a, q]
                _b6_cpu(dst, (u(4 * ty) * wq + u(4 * g0 + q)) * c_, wq * c_, tmp, u(q) * ng * c_,
                        u(6) * ng * c_, c_, ng, u(4) * c_, c_, True)


def forward_by_positions(ctx, x, ut, bias, act, pad, oh, ow, parts, y):
    """y = act(conv(x, w) + bias) by F(4x4) by positions (below), ut = U^T (36, C, F)."""
    f = ut.shape[2]
    _, xp, o, rows = _winograd_workspace(ctx, x, f, oh, ow, ("xp", "o", "rows"), mt=4)
    v, z = _batch_tiles(ctx, x, f, oh, ow, ("v", "m"))
    th, tw = -(-oh // 4), -(-ow // 4)
    launch(_wino4_in_batch_cpu, _wino4_in_batch_part, parts, x, *pad, th, tw, xp, rows, v)
    launch(_positions_forward_cpu, _positions_forward_part, parts, v, ut, z)
    launch(_wino4_out_batch_cpu, _wino4_out_batch_part, parts, z, bias, act, th, tw, o, rows, y)


def backward_by_positions(ctx, x, u, dy, y, act, pad, need_dx, parts, dx):
    """F(4x4) by positions' backward, u = U (36, F, C): dx where need_dx, u overwritten by dU;
    returns the parts' bias-gradient sums."""
    f, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    _, xp, g, gt, rows = _winograd_workspace(ctx, x, f, oh, ow, ("xp", "g", "gt", "rows"), mt=4)
    v, dm, dv = _batch_tiles(ctx, x, f, oh, ow, ("v", "m", "dv"))
    db = ctx.scratch("db", (xp.shape[0], f), dy.dtype)
    th, tw = -(-oh // 4), -(-ow // 4)
    launch(_wino4_grads_batch_cpu, _wino4_grads_batch_part, parts, x, dy, y, act, *pad, xp, rows,
           g, gt, db, v, dm)
    launch(_positions_backward_cpu, _positions_backward_part, parts, dm, v, u, need_dx, dv)
    if need_dx:
        launch(_wino4_grad_in_batch_cpu, _wino4_grad_in_batch_part, parts, dv, *pad, th, tw, xp,
               rows, dx)
    return db


def _batch_tiles(ctx, x, f, oh, ow, tags):
    """F(4x4) by positions: the whole batch's transformed tiles, (36, N*T, F) for 'm' (the
    output's or its gradient's), else (36, N*T, C) ('v', 'dv': the input's and its gradient's),
    in the scratch that the per-thread chunks of the other Winograd layers use (tags of
    _winograd_workspace: a separate one took ResNet-18's peak memory 14 MB higher)."""
    tiles = x.shape[0] * -(-oh // 4) * -(-ow // 4)
    return tuple(ctx.scratch(tag, (36, tiles, f if tag == "m" else x.shape[1]), x.dtype)
                 for tag in tags)


# F(4x4, 3x3) by positions, for batches of few tiles (ResNet-18's 4x4 planes: one tile a
# sample): split by samples, a thread's GEMMs would sum over its few tiles (dU's 512 x 512 per
# position from 32 rows at batch 64), every thread would read all 36 transformed weight matrices
# (38 MB at 512 x 512), and the threads' dU would be summed after. Instead three passes: the
# samples' transforms into whole-batch matrices (by samples), the 36 GEMMs over the whole batch
# (by positions: each thread reads its positions' weights alone, and dU needs no sum), the
# transforms back (by samples).
@launcher
def _wino4_in_batch_cpu(parts, x, ph, pw, th, tw, xp_ws, rows_ws, v):
    run_parts(_wino4_in_batch_part, parts, (x, ph, pw, th, tw, xp_ws, rows_ws, v))


@kernel()
def _wino4_in_batch_part(t, parts, x, ph, pw, th, tw, xp_ws, rows_ws, v):
    """v (36, N*T, C) = the transformed tiles of part t's share of the samples."""
    n = x.shape[0]
    xp, tmp = xp_ws[t], rows_ws[t].reshape(-1)
    for s in range(n * t // parts, n * (t + 1) // parts):
        _wino4_sample_in_cpu(x[s], ph, pw, th, tw, xp, v, s * th * tw, tmp)


@launcher
def _positions_forward_cpu(parts, v, ut, mm):
    run_parts(_positions_forward_part, parts, (v, ut, mm))


@kernel()
def _positions_forward_part(t, parts, v, ut, mm):
    """mm[k] = v[k] ut[k] for part t's share of the positions k."""
    kk = v.shape[0]
    for k in range(kk * t // parts, kk * (t + 1) // parts):
        gemm(False, False, 1.0, v[k], ut[k], 0.0, mm[k])


@launcher
def _wino4_out_batch_cpu(parts, mm, bias, act, th, tw, o_ws, rows_ws, y):
    run_parts(_wino4_out_batch_part, parts, (mm, bias, act, th, tw, o_ws, rows_ws, y))


@kernel()
def _wino4_out_batch_part(t, parts, mm, bias, act, th, tw, o_ws, rows_ws, y):
    """y[s] = act(A^T M A + bias) for part t's share of the samples, M (36, N*T, F)."""
    n = y.shape[0]
    o, tmp = o_ws[t], rows_ws[t].reshape(-1)
    for s in range(n * t // parts, n * (t + 1) // parts):
        _wino4_sample_out_cpu(mm, s * th * tw, th, tw, bias, act, o, tmp, y[s])


@launcher
def _wino4_grads_batch_cpu(parts, x, dy, y, act, ph, pw, xp_ws, rows_ws, g_ws, gt_ws, db_ws, v,
                           dm):
    run_parts(_wino4_grads_batch_part, parts, (
        x, dy, y, act, ph, pw, xp_ws, rows_ws, g_ws, gt_ws, db_ws, v, dm))


@kernel(fastmath=REDUCE)  # REDUCE: the inlined bias sums vectorize
def _wino4_grads_batch_part(t, parts, x, dy, y, act, ph, pw, xp_ws, rows_ws, g_ws, gt_ws, db_ws,
                            v, dm):
    """For part t's share of the samples: v (36, N*T, C) their transformed input tiles, dm (36,
    N*T, F) their transformed output gradient (times act'), db_ws[t] its sum."""
    n = x.shape[0]
    oh, ow = dy.shape[2], dy.shape[3]
    th, tw = -(-oh // 4), -(-ow // 4)
    xp, tmp, g, gt, db = xp_ws[t], rows_ws[t].reshape(-1), g_ws[t], gt_ws[t], db_ws[t]
    _fill_cpu(db, 0.0)
    _fill_cpu(gt.reshape(-1), 0.0)  # the border of whole tiles past (oh, ow) stays zero
    for s in range(n * t // parts, n * (t + 1) // parts):
        _wino4_sample_grads_cpu(x[s], dy[s], y[s], act, ph, pw, th, tw, xp, g, gt, v, dm,
                                s * th * tw, tmp, db)


@launcher
def _positions_backward_cpu(parts, dm, v, u, need_dx, dv):
    run_parts(_positions_backward_part, parts, (dm, v, u, need_dx, dv))


@kernel()
def _positions_backward_part(t, parts, dm, v, u, need_dx, dv):
    """For part t's share of the positions k: with need_dx, dv[k] = dm[k] u[k]; then u[k] = dU[k]
    = dm[k]^T v[k], in place of the weights it no longer needs (so that the weight gradient
    takes no 36 x F x C scratch of its own)."""
    kk = v.shape[0]
    for k in range(kk * t // parts, kk * (t + 1) // parts):
        if need_dx:
            gemm(False, False, 1.0, dm[k], u[k], 0.0, dv[k])
        gemm(True, False, 1.0, dm[k], v[k], 0.0, u[k])


@launcher
def _wino4_grad_in_batch_cpu(parts, dv, ph, pw, th, tw, xp_ws, rows_ws, dx):
    run_parts(_wino4_grad_in_batch_part, parts, (dv, ph, pw, th, tw, xp_ws, rows_ws, dx))


@kernel()
def _wino4_grad_in_batch_part(t, parts, dv, ph, pw, th, tw, xp_ws, rows_ws, dx):
    """dx[s] = B dV B^T summed over its tiles, for part t's share of the samples."""
    n = dx.shape[0]
    xp, tmp = xp_ws[t], rows_ws[t].reshape(-1)
    for s in range(n * t // parts, n * (t + 1) // parts):
        _wino4_grad_in_cpu(dv, s * th * tw, th, tw, xp, tmp)
        _winograd_unpad_cpu(xp, ph, pw, dx[s])
