"""CONV 3x3/1 by Winograd's minimal filtering F(2x2, 3x3)."""
from __future__ import annotations

import numpy as np

from numba import prange

from ..blas import gemm
from ..common import CHUNK_BYTES, _act_row_cpu, _fill_cpu, _grad_row_cpu, samples_per_chunk
from ..jit import REDUCE, kernel, launch, split_macs


# Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2016) for 3x3 stride-1 convolutions:
# each 2x2 output tile comes from a 4x4 input tile with 16 multiplications per (filter, channel)
# instead of 36, so the GEMMs shrink 2.25x. Per chunk of samples: transform the input tiles,
# V = B^T d B (16 matrices of C x tiles); multiply M = U V by the transformed weights U = G g G^T
# (16 GEMMs of F x C by C x tiles); transform back, Y = A^T M A, adding bias and activation.
# Backward is the exact adjoint of those linear maps: dM = A dY A^T, then dV = U^T dM (scattered
# back through B dV B^T) and dU = dM V^T (gathered through G^T dU G by a kernel after). Every
# pass does the 2.25x fewer multiplications; the transforms are additions only, and G's
# coefficients (1 and 1/2) are exact in float32 too.
_WINO_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
_WINO_GG = np.kron(_WINO_G, _WINO_G)  # (16, 9): vec(G g G^T) = (G (x) G) vec(g), row-major


def _winograd_weights(weight, out, transpose=False):
    """(F, C, 3, 3) weights -> out = U (16, F, C), U = G g G^T for every (filter, channel); with
    transpose, U^T (16, C, F) (forward's GEMM). In parts where there is enough of it: a 512 x 512
    layer's took 22-41 ms on one thread as a float64 product and copies, 4-5 ms so."""
    f, c = weight.shape[:2]
    w = weight.reshape(f, c, 9)
    w = w.transpose(1, 0, 2) if transpose else w
    gg = _gg(weight.dtype)
    launch(_weights_cpu, _weights_part, _transform_parts(gg, f * c, w.shape[0]), w, gg, out)
    return out


def _winograd_weight_grad(du):
    """dU (parts, 16, F, C), each part's sum -> the weight gradient (F, C, 3, 3) = G^T dU G
    summed over the parts: the same map's transpose."""
    _, _, f, c = du.shape
    dg = np.empty((f, c, 9), du.dtype)
    gg = _gg(du.dtype)
    launch(_weight_grad_cpu, _weight_grad_part, _transform_parts(gg, f * c * du.shape[0], f), du,
           gg, dg)
    return dg.reshape(f, c, 3, 3)


_GG = {}


def _gg(dtype):
    """G (x) G in the data's type: the transforms below multiply in it."""
    key = np.dtype(dtype).str
    if key not in _GG:
        _GG[key] = _WINO_GG.astype(dtype)
    return _GG[key]


def _transform_parts(gg, pairs, rows):
    """Parts for a transform of `pairs` (filter, channel) pairs, by its multiply-adds (G (x) G's
    nonzero coefficients each), split over `rows`."""
    return min(split_macs(pairs * int(np.count_nonzero(gg))), rows)


@kernel(parallel=True)
def _weights_cpu(parts, w, gg, out):
    for t in prange(parts):
        _weights_part(np.int64(t), parts, w, gg, out)


@kernel()
def _weights_part(t, parts, w, gg, out):
    """out[:, a, b] = (G (x) G) w[a, b] for w (A, B, 9) and out (16, A, B), for part t's share of
    a: the nine taps of every b gathered into rows, then each output row a sum of them (vectors
    over b) by its nonzero coefficients."""
    na, nb = w.shape[0], w.shape[1]
    taps = np.empty((9, nb), w.dtype)
    for a in range(na * t // parts, na * (t + 1) // parts):
        for b in range(nb):
            for i in range(9):
                taps[i, b] = w[a, b, i]
        for k in range(gg.shape[0]):
            row = out[k, a]
            for b in range(nb):
                row[b] = 0
            for i in range(9):
                g = gg[k, i]
                if g != 0:
                    src = taps[i]
                    for b in range(nb):
                        row[b] += g * src[b]


@kernel(parallel=True)
def _weight_grad_cpu(parts, du, gg, dg):
    for t in prange(parts):
        _weight_grad_part(np.int64(t), parts, du, gg, dg)


@kernel()
def _weight_grad_part(t, parts, du, gg, dg):
    """dg[f, c, :] = (G (x) G)^T (the sum of du[p, :, f, c] over the kernel's parts p), for part
    t's share of the filters: rows over channels, then scattered into each filter's (C, 9)."""
    nf, nc = du.shape[2], du.shape[3]
    acc = np.empty((9, nc), du.dtype)
    for f in range(nf * t // parts, nf * (t + 1) // parts):
        acc[:] = 0
        for p in range(du.shape[0]):
            for k in range(gg.shape[0]):
                src = du[p, k, f]
                for i in range(9):
                    g = gg[k, i]
                    if g != 0:
                        row = acc[i]
                        for c in range(nc):
                            row[c] += g * src[c]
        for c in range(nc):
            for i in range(9):
                dg[f, c, i] = acc[i, c]


def _winograd_workspace(ctx, x, f, oh, ow, tags, depth=0):
    """(samples per chunk, then a per-thread scratch per tag): a chunk of about CHUNK_BYTES of
    transformed input or as much as the transformed weights, whichever is more (every chunk's
    GEMMs read all of them: 16 MiB on 512 x 512 channels; VGG-11 b16's step 0.89x, ResNet-18
    32x32 b64's 0.91x with that, interleaved), and at least `depth` output pixels where the
    thread has them (backward: the weight gradient's GEMMs sum over a chunk's tiles). Channels
    are innermost, so that every transform is vector arithmetic over channels: 'xp' one padded
    sample (Hq, Wq, C), 'v' and 'dv' the transformed input or its gradient (16, tiles, C), 'm'
    the transformed output or its gradient (16, tiles, F), 'o' one sample's output or its
    gradient over whole tiles (F, 2th, 2tw)."""
    n, c = x.shape[:2]
    th, tw = -(-oh // 2), -(-ow // 2)
    chunk = max(CHUNK_BYTES, 16 * c * f * x.itemsize)
    per = samples_per_chunk(n, ctx.workers, 16 * max(c, f) * th * tw * x.itemsize, 4 * th * tw,
                            depth, chunk)
    t, tiles, size = ctx.workers, per * th * tw, x.itemsize
    # the 16 matrices (and the F planes of 'o') are written side by side: strides that are
    # multiples of 4 KiB would put them all in the same L1 sets
    shapes = {"xp": (2 * th + 2, 2 * tw + 2, c), "v": (16, _skew(tiles, c * size), c),
              "dv": (16, _skew(tiles, c * size), c), "m": (16, _skew(tiles, f * size), f),
              "o": (f, 2 * th, _skew(2 * tw, 2 * th * size))}
    return (per,) + tuple(ctx.scratch(tag, (t,) + shapes[tag], x.dtype) for tag in tags)


def _skew(count, unit_bytes):
    """The least count' >= count whose count' * unit_bytes is not close to a multiple of 4 KiB."""
    while not 512 <= (count * unit_bytes) % 4096 <= 3584:
        count += 1
    return count


@kernel(parallel=True)
def _winograd_forward_cpu(parts, x, ut, bias, act, ph, pw, oh, ow, per, xp_ws, v_ws, m_ws, o_ws,
                          y):
    for t in prange(parts):
        _winograd_forward_part(np.int64(t), parts, x, ut, bias, act, ph, pw, oh, ow, per, xp_ws, v_ws, m_ws,
                               o_ws, y)


@kernel()
def _winograd_forward_part(t, parts, x, ut, bias, act, ph, pw, oh, ow, per, xp_ws, v_ws, m_ws,
                           o_ws, y):
    """y = act(conv(x, w) + bias), ut = U^T (16, C, F): V U^T as V times a matrix with
    contiguous rows, the GEMM that netc's tiles run at full speed."""
    n = x.shape[0]
    th, tw = -(-oh // 2), -(-ow // 2)
    lo, hi = n * t // parts, n * (t + 1) // parts
    xp, v, mm, o = xp_ws[t], v_ws[t], m_ws[t], o_ws[t]
    for s in range(lo, hi, per):
        m = min(hi, s + per) - s
        cols = m * th * tw
        _winograd_input_cpu(x, s, m, ph, pw, th, tw, xp, v)
        for k in range(16):  # M = V U^T, tile by tile
            gemm(False, False, 1.0, v[k, :cols], ut[k], 0.0, mm[k, :cols])
        for q in range(m):
            _winograd_out_cpu(mm, q * th * tw, th, tw, o)
            for f in range(o.shape[0]):
                for oy in range(oh):
                    _act_row_cpu(act, o[f, oy], bias[f], y[s + q, f, oy], ow)


@kernel(parallel=True)
def _winograd_backward_cpu(parts, x, u, dy, y, act, ph, pw, per, need_dx, xp_ws, v_ws, m_ws,
                           dv_ws, o_ws, du_ws, db_ws, dx):
    for t in prange(parts):
        _winograd_backward_part(np.int64(t), parts, x, u, dy, y, act, ph, pw, per, need_dx, xp_ws, v_ws,
                                m_ws, dv_ws, o_ws, du_ws, db_ws, dx)


@kernel(fastmath=REDUCE)  # REDUCE: the inlined bias sums vectorize
def _winograd_backward_part(t, parts, x, u, dy, y, act, ph, pw, per, need_dx, xp_ws, v_ws, m_ws,
                            dv_ws, o_ws, du_ws, db_ws, dx):
    n = x.shape[0]
    oh, ow = dy.shape[2], dy.shape[3]
    th, tw = -(-oh // 2), -(-ow // 2)
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
                    db[f] += _grad_row_cpu(act, dy[s + q, f, oy], y[s + q, f, oy], o[f, oy], ow)
            _winograd_grad_out_cpu(o, th, tw, dm, q * th * tw)
        for k in range(16):  # dU += dM^T V
            gemm(True, False, 1.0, dm[k, :cols], v[k, :cols], 1.0, du[k])
        if need_dx:
            for k in range(16):  # dV = dM U
                gemm(False, False, 1.0, dm[k, :cols], u[k], 0.0, dv[k, :cols])
            for q in range(m):
                _winograd_grad_in_cpu(dv, q * th * tw, th, tw, xp)
                _winograd_unpad_cpu(xp, ph, pw, dx[s + q])


@kernel()
def _winograd_input_cpu(x, s, m, ph, pw, th, tw, xp, v):
    """v[:, tiles of sample q, :] = the transformed tiles of samples s..s+m-1 (xp: scratch)."""
    for q in range(m):
        _winograd_pad_cpu(x[s + q], ph, pw, xp)
        _winograd_in_cpu(xp, th, tw, v, q * th * tw)


@kernel()
def _winograd_pad_cpu(img, ph, pw, xp):
    """xp (Hq, Wq, C) = one sample (C, H, W) placed at (ph, pw) on zeros, channels last (flat
    unsigned indices, free of Numba's wraparound checks)."""
    c_, hh, ww = img.shape
    u, out, wq = np.uint64, xp.reshape(-1), xp.shape[1]
    _fill_cpu(out, 0.0)
    for c in range(c_):
        for iy in range(hh):
            src, at = img[c, iy], u(((iy + ph) * wq + pw) * c_ + c)
            for ix in range(u(ww)):
                out[at + ix * u(c_)] = src[ix]


@kernel()
def _winograd_unpad_cpu(xp, ph, pw, img):
    """img (C, H, W) = xp (Hq, Wq, C) from (ph, pw), channels first: _winograd_pad_cpu's adjoint
    for the input gradient."""
    c_, hh, ww = img.shape
    u, src, wq = np.uint64, xp.reshape(-1), xp.shape[1]
    for c in range(c_):
        for iy in range(hh):
            dst, at = img[c, iy], u(((iy + ph) * wq + pw) * c_ + c)
            for ix in range(u(ww)):
                dst[ix] = src[at + ix * u(c_)]


@kernel()
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


@kernel()
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


@kernel()
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


@kernel()
def _winograd_grad_in_cpu(dv, col0, th, tw, dxp):
    """dxp (Hq, Wq, C) = the sum over tiles of B dV B^T placed at (2ty, 2tx) (tiles overlap by
    two rows and columns). Each tile is transformed into a small buffer first (B's 1-D form,
    x -> (x0, x1 - x2 + x3, x1 + x2 - x0, -x3), on columns then rows), then added in place."""
    _fill_cpu(dxp.reshape(-1), 0.0)
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
