"""CPU kernels several layer families share: fills, channels-last images back to channels first,
the row epilogue (bias + activation) and prologue (activation gradient + bias sum), the valid
range of a window tap, and the nine-tap dot products of the direct CONV's weight gradient and
FC's forward."""
from __future__ import annotations

import functools

import numpy as np

from .. import elementwise as ew
from .jit import REDUCE, kernel

CHUNK_BYTES = 1 << 20  # the unfolded input of one chunk of samples: about 1 MiB (stays in cache)
# samples (C, H, W) bigger than PLANES_BLOCK_BYTES go to and from channels last in blocks of
# channels (PLANES_FIRST_BLOCK writing planes, PLANES_LAST_BLOCK reading them): each pass over
# the rows then streams a few planes rather than all of them (_channels_first_cpu,
# winograd._channels_last_cpu); smaller ones stay in cache, and blocks ran them as fast or slower
PLANES_BLOCK_BYTES = 128 << 10
PLANES_FIRST_BLOCK = 16
PLANES_LAST_BLOCK = 8
TAPS = 9  # taps per pass of the nine-tap loops


def samples_per_chunk(n, workers, sample_bytes, sample_pixels, depth=0, chunk_bytes=CHUNK_BYTES):
    """Samples a chunk of an unfolding CONV (im2col's unfolded or Winograd's transformed input,
    `sample_bytes` a sample): about chunk_bytes of it, at least one sample, and at least `depth`
    output pixels (`sample_pixels` a sample) where a thread's share of the batch has them; at
    most that share (n over the workers)."""
    per = max(1, chunk_bytes // sample_bytes, -(-depth // sample_pixels))
    return min(-(-n // workers), per)


def window(h):
    """(kh, kw, sh, sw, ph, pw) of a CONV or POOL, the kernels' argument order."""
    (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
    return kh, kw, sh, sw, ph, pw


def part_sum(a, parts):
    """A new array: the sum of the first `parts` per-thread partial results in a workspace `a`,
    added in order (as a sum over the first axis adds them): one part a copy (1.6 us less than
    a sum over one at batch 1, Zen 3), two one add (LeNet-5's gradients, Zen 4: 0.6-1.0 us where
    the sum took 1.2-2.0, 6 us where it took 13 for 48,000 values)."""
    if parts == 1:
        return a[0].copy()
    out = a[0] + a[1]
    for i in range(2, parts):
        out += a[i]
    return out


@functools.lru_cache(maxsize=None)  # (a few names and dtypes; asked once or twice a layer a step)
def act_pair(name, dtype):
    """(code, parameter) of a fused activation, as the kernels take it; the parameter (leaky's
    slope, ELU's alpha) in the data's type."""
    return ew.ACT_CODES[name], np.dtype(dtype).type(ew.FUSED_PARAM.get(name, 0.0))


@kernel()
def _fill_cpu(a, v):
    for i in range(a.size):
        a[i] = v


@kernel(inline=True)
def _copy8_cpu(dst, at, src, frm):
    """dst[at:at+8] = src[frm:frm+8], all eight loaded before any is stored: LLVM's SLP pass then
    makes it one vector load and one store (an element-by-element loop over two arrays that may
    overlap stays scalar, and its vector loop needs 32 values to start)."""
    u = np.uint64
    a0, a1, a2, a3 = src[frm], src[frm + u(1)], src[frm + u(2)], src[frm + u(3)]
    a4, a5, a6, a7 = src[frm + u(4)], src[frm + u(5)], src[frm + u(6)], src[frm + u(7)]
    dst[at], dst[at + u(1)], dst[at + u(2)], dst[at + u(3)] = a0, a1, a2, a3
    dst[at + u(4)], dst[at + u(5)], dst[at + u(6)], dst[at + u(7)] = a4, a5, a6, a7


@kernel(inline=True)
def _copy_run_cpu(dst, at, src, frm, n):
    """dst[at:at+n] = src[frm:frm+n] for flat arrays that do not overlap there (unsigned
    indices): eight at a time, the last eight ending at n (rewriting a few values already copied,
    with the same values) instead of a scalar tail. A row of ten values (LeNet-5's second CONV
    unfolded) takes two vector copies instead of ten scalar ones: its unfolding ran 2.4x faster
    (166 -> 70 us for 32 samples, Zen 3)."""
    v = np.uint64(8)
    if n < v:
        for k in range(n):
            dst[at + k] = src[frm + k]
        return
    k = np.uint64(0)
    while k + v <= n:
        _copy8_cpu(dst, at + k, src, frm + k)
        k += v
    if k < n:
        _copy8_cpu(dst, at + n - v, src, frm + n - v)


@kernel(inline=True)
def _softmax_terms_cpu(z, e, m, s):
    """e (K, P) = exp(z - m) with m[p] = max over k of z[k, p], s[p] = sum over k of e[k, p]: a
    softmax over the K values of each of P pixels before its division, with loops over the
    pixels innermost, so that they vectorize (ew.exp's float32 instructions, 8 pixels at a time
    on AVX2), where a row at a time strides across the pixels and calls the C library's exp for
    each value. m and s: P values of scratch."""
    k_, p_ = z.shape
    for p in range(p_):
        m[p] = z[0, p]
        s[p] = 0.0
    for k in range(1, k_):
        for p in range(p_):
            m[p] = max(m[p], z[k, p])
    for k in range(k_):
        for p in range(p_):
            v = ew.exp(z[k, p] - m[p])
            e[k, p] = v
            s[p] += v


@kernel()
def _channels_first_cpu(src, row, ph, pw, dst):
    """dst (C, H, W) = the interior from (ph, pw) of a channels-last image, src flat with `row`
    values a row (its width times C): dst[c, y, x] = src[(y + ph)*row + (x + pw)*C + c]. Sixteen
    pixels of a row at a time, channel by channel: each channel's loads C apart, its stores
    contiguous (one sample, AVX2 Zen 3: 64 channels of 32x32 28 us instead of 48 channel by
    channel over whole rows, 128 of 16x16 12 instead of 40). Flat unsigned indices, free of
    Numba's wraparound checks. A sample of more than PLANES_BLOCK_BYTES goes through in blocks of
    PLANES_FIRST_BLOCK channels (all of its rows for each block): each pass then writes that
    many planes at once rather than every one, which the memory system streams far better where
    the sample does not stay in cache (one sample of a batch of 64, Zen 4: 64 channels of 32x32
    51 -> 26 us, 128 of 32x32 231 -> 96, 256 of 16x16 101 -> 58)."""
    c_, hh, ww = dst.shape
    u, out, cc = np.uint64, dst.reshape(-1), np.uint64(c_)
    plane = u(hh * ww)
    block = PLANES_FIRST_BLOCK if dst.size * dst.itemsize > PLANES_BLOCK_BYTES else c_
    for c0 in range(0, c_, block):
        c1 = u(min(c0 + block, c_))
        for iy in range(hh):
            for ix0 in range(0, ww, 16):
                n = u(min(16, ww - ix0))
                at, to = u((iy + ph) * row + (pw + ix0) * c_), u(iy * ww + ix0)
                for c in range(u(c0), c1):
                    for k in range(n):
                        out[to + c * plane + k] = src[at + k * cc + c]


@kernel(inline=True)  # called once per output row: a call cost as much as a short row
def _act_row_cpu(act, src, b, dst, count):
    """dst[:count] = act(src[:count] + b), act = (code, parameter): a loop per activation,
    chosen outside it. (One loop choosing by code at every value ran LeNet-5's tanh rows of 28
    values 5x slower: their vector loop never starts, and the scalar rest paid the choice.)"""
    code, a = act
    if code == ew.NONE:
        for k in range(count):
            dst[k] = src[k] + b
    elif code == ew.RELU:  # (NaN stays NaN, as in elementwise.act)
        for k in range(count):
            dst[k] = ew.relu(src[k] + b)
    elif code == ew.TANH:
        for k in range(count):
            dst[k] = ew.tanh(src[k] + b)
    elif code == ew.SIGMOID:
        for k in range(count):
            dst[k] = ew.sigmoid(src[k] + b)
    elif code == ew.ELU:
        for k in range(count):
            dst[k] = ew.elu(src[k] + b, a)
    else:  # leaky, PReLU
        for k in range(count):
            dst[k] = ew.leaky(src[k] + b, a)


@kernel(fastmath=REDUCE, inline=True)
def _grad_row_cpu(act, g, out, dst, count):
    """dst[:count] = g * act'(z) (from out = act(z)); returns its sum (for the bias gradient).
    A loop per activation, as in _act_row_cpu."""
    code, a = act
    acc = 0.0
    if code == ew.NONE:
        for k in range(count):
            dst[k] = g[k]
            acc += g[k]
    elif code == ew.RELU:
        for k in range(count):
            v = g[k] if out[k] > 0 else 0
            dst[k] = v
            acc += v
    elif code == ew.TANH:
        for k in range(count):
            v = g[k] * ew.tanh_grad(out[k])
            dst[k] = v
            acc += v
    elif code == ew.SIGMOID:
        for k in range(count):
            v = g[k] * ew.sigmoid_grad(out[k])
            dst[k] = v
            acc += v
    elif code == ew.ELU:
        for k in range(count):
            v = g[k] * ew.elu_grad(out[k], out[k], a)
            dst[k] = v
            acc += v
    else:  # leaky, PReLU
        for k in range(count):
            v = g[k] * ew.leaky_grad(out[k], a)
            dst[k] = v
            acc += v
    return acc


@kernel()
def _valid(o, s, p, k, size):
    """The first and one-past-last output positions whose tap k lands inside [0, size)."""
    lo = 0
    while lo < o and lo * s - p + k < 0:
        lo += 1
    hi = o
    while hi > lo and (hi - 1) * s - p + k >= size:
        hi -= 1
    return lo, hi


@kernel(fastmath=REDUCE, inline=True)
def _nine_dots_cpu(g0, g1, x, offs, count, out):
    """out[i, j] += sum_p g_i[p] * x[offs[j] + p] for the two vectors g0, g1 and nine
    offsets j, p < count: 18 sums in registers, each load of x feeding two of them."""
    o0, o1, o2, o3, o4, o5, o6, o7, o8 = _offsets(offs)
    z = g0[0] * np.float32(0)  # in the arrays' precision (times an int 0 it would be float64)
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = z
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = b8 = z
    for p in range(np.uint64(count)):
        v0, v1, v2, v3, v4 = x[o0 + p], x[o1 + p], x[o2 + p], x[o3 + p], x[o4 + p]
        v5, v6, v7, v8 = x[o5 + p], x[o6 + p], x[o7 + p], x[o8 + p]
        u, w = g0[p], g1[p]
        a0, a1, a2, a3, a4 = a0 + u * v0, a1 + u * v1, a2 + u * v2, a3 + u * v3, a4 + u * v4
        a5, a6, a7, a8 = a5 + u * v5, a6 + u * v6, a7 + u * v7, a8 + u * v8
        b0, b1, b2, b3, b4 = b0 + w * v0, b1 + w * v1, b2 + w * v2, b3 + w * v3, b4 + w * v4
        b5, b6, b7, b8 = b5 + w * v5, b6 + w * v6, b7 + w * v7, b8 + w * v8
    out[0, 0] += a0; out[0, 1] += a1; out[0, 2] += a2; out[0, 3] += a3; out[0, 4] += a4  # noqa: E702
    out[0, 5] += a5; out[0, 6] += a6; out[0, 7] += a7; out[0, 8] += a8                   # noqa: E702
    out[1, 0] += b0; out[1, 1] += b1; out[1, 2] += b2; out[1, 3] += b3; out[1, 4] += b4  # noqa: E702
    out[1, 5] += b5; out[1, 6] += b6; out[1, 7] += b7; out[1, 8] += b8                   # noqa: E702


@kernel(fastmath=REDUCE, inline=True)
def _nine_dots1_cpu(g0, x, offs, count, out):
    """out[j] += sum_p g0[p] * x[offs[j] + p] for nine offsets j, p < count: _nine_dots_cpu for
    one vector, nine sums in registers. With AVX2's 16 vector registers the two vectors' 18
    sums spill; one vector a pass ran the direct CONV's weight gradient 1.6x as fast (16 -> 16
    channels, 32x32, one sample: 86 us against 136, Zen 3)."""
    o0, o1, o2, o3, o4, o5, o6, o7, o8 = _offsets(offs)
    z = g0[0] * np.float32(0)  # in the arrays' precision
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = z
    for p in range(np.uint64(count)):
        u = g0[p]
        a0, a1, a2 = a0 + u * x[o0 + p], a1 + u * x[o1 + p], a2 + u * x[o2 + p]
        a3, a4, a5 = a3 + u * x[o3 + p], a4 + u * x[o4 + p], a5 + u * x[o5 + p]
        a6, a7, a8 = a6 + u * x[o6 + p], a7 + u * x[o7 + p], a8 + u * x[o8 + p]
    out[0] += a0; out[1] += a1; out[2] += a2; out[3] += a3; out[4] += a4  # noqa: E702
    out[5] += a5; out[6] += a6; out[7] += a7; out[8] += a8                # noqa: E702


@kernel(inline=True)
def _offsets(offs):
    """The nine offsets as unsigned integers: an index that Numba cannot prove non-negative
    gets a wraparound check, which turns every vector load into a gather."""
    return (np.uint64(offs[0]), np.uint64(offs[1]), np.uint64(offs[2]), np.uint64(offs[3]),
            np.uint64(offs[4]), np.uint64(offs[5]), np.uint64(offs[6]), np.uint64(offs[7]),
            np.uint64(offs[8]))
