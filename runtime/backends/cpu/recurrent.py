"""RNN, LSTM and GRU on the CPU (the rules: compiler/kinds/recurrent.py; a cell's math:
elementwise.lstm_cell, gru_cell and their gradients, shared with the GPU).

Forward: the input projections of every step and both directions are one GEMM,
xp (N, T, dirs*G*H) = x W_ih^T + b_ih + b_hh (GRU's candidate without b_hn, which its reset gate
scales). Then each direction's recurrence is one parallel kernel: the samples of a batch are
independent along the whole sequence, so the threads split the batch and each runs every step
on its rows, per step one GEMM h_(t-1) W_hh^T onto the pre-activations and the gates fused in one
pass over them, written over the pre-activations (what backward needs: the gates, and the cell
states of an LSTM, the hidden projections W_hn h + b_hn of a GRU). Both GEMMs take W^T, made
contiguous once per pass: C = A B with B's rows contiguous is the tiles' fast form (tiles.py),
1.4x the inner-product form on the LSTM of bench/compare.py.

Backward through time: one kernel per direction walks the steps back, per step the cell's
gradient and one GEMM dz_t W_hh for the gradient reaching h_(t-1); then every weight gradient is
one GEMM over all N*T rows (dW_ih = dz^T x for both directions at once, dW_hh = dz^T h_prev, the
biases' sums, dx = dz W_ih), split across the threads.

The cells run over a row of units at a time in kernels of their own (_lstm_row ...), where LLVM
vectorizes them with elementwise's exp and tanh: the LSTM's step 20 -> 7 ms (bench/RESULTS.md).
"""
from __future__ import annotations

import numpy as np

from netc.compiler.kinds import recurrent as kinds

from .. import elementwise as ew
from ..registry import Implementation, implements
from .blas import gemm
from .common import act_pair
from .dense import linear_backward
from .jit import kernel, launch, launcher, run_parts, split_macs

_0 = np.float32(0)


class _Recurrent(Implementation):
    """Forward and backward of one recurrent kind; the kinds differ in their cell code."""

    @staticmethod
    def _parts(n, steps, hid, gh):
        """Parts for a recurrence, split by samples: every step's GEMM against W_hh, at most a
        part per sample."""
        return min(split_macs(n * steps * hid * gh), n)

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        n, t, d = x.shape
        hid, dirs = h["units"], 2 if h["bidir"] else 1
        gh = self.rules.gates * hid
        cell, act = ew.CELL_CODES[self.rules.cell], ew.ACT_CODES[h.get("act", "tanh")]
        x2 = np.ascontiguousarray(x.reshape(n * t, d))
        w_ih, bias_in = input_side(self.rules.cell, h, p, x.dtype)
        xp = ctx.buffer("xp", (n, t, dirs * gh), x.dtype)
        # C = A B with B's rows contiguous is the tiles' fast form (tiles.py): W^T, made once
        launch(_project_cpu, _project_part, split_macs(x2.shape[0] * d * dirs * gh), x2,
               np.ascontiguousarray(w_ih.T), bias_in, xp.reshape(n * t, dirs * gh))
        seq = h["return"] == "seq"
        y = ctx.buffer("y", (n, t, dirs * hid) if seq else (n, dirs * hid), x.dtype)
        states = []
        for r in range(dirs):
            sfx = "_reverse" if r else ""
            # with return=seq, h_t goes straight into this direction's columns of y
            hs, hoff = (y, r * hid) if seq else (ctx.buffer(f"hs{r}", (n, t, hid), x.dtype), 0)
            cs = ctx.buffer(f"cs{r}", (n, t, hid), x.dtype) if self.rules.cell == "lstm" else _none3(x.dtype)
            hn = ctx.buffer(f"hn{r}", (n, t, hid), x.dtype) if self.rules.cell == "gru" else _none3(x.dtype)
            b_hn = (p["bias_hh" + sfx][2 * hid:] if self.rules.cell == "gru" and h["bias"]
                    else np.zeros(0, x.dtype))
            launch(_recurrent_forward_cpu, _recurrent_forward_part, self._parts(n, t, hid, gh),
                   cell, act, xp, r * gh, np.ascontiguousarray(p["weight_hh" + sfx].T), b_hn,
                   bool(r), hs, hoff, cs, hn)
            if not seq:  # the last step each direction reads: T for the forward one, 1 for reverse
                y[:, r * hid:(r + 1) * hid] = hs[:, 0 if r else t - 1]
            states.append((r * gh, hs, hoff, cs, hn))
        return y, (x2, x.shape, w_ih, xp, states)

    def backward(self, h, p, cache, dy, ctx):
        x2, xshape, w_ih, gates, states = cache
        n, t, d = xshape
        hid = h["units"]
        gh = self.rules.gates * hid
        cell, act = ew.CELL_CODES[self.rules.cell], ew.ACT_CODES[h.get("act", "tanh")]
        seq = h["return"] == "seq"
        dt = dy.dtype
        dz = ctx.scratch("rnn_dz", (n, t, len(states) * gh), dt)
        dh, dc = ctx.scratch("rnn_dh", (n, hid), dt), ctx.scratch("rnn_dc", (n, hid), dt)
        hprev = ctx.scratch("rnn_hprev", (n, t, hid), dt)
        none = np.zeros(0, dt)
        grads = {}
        dy = np.ascontiguousarray(dy)
        for r, (goff, hs, hoff, cs, hn) in enumerate(states):
            sfx = "_reverse" if r else ""
            gru = self.rules.cell == "gru"
            dzh, zoff = (ctx.scratch("rnn_dzh", (n, t, gh), dt), 0) if gru else (dz, goff)
            dys = dy if seq else _none3(dt)
            dlast = dy if not seq else np.zeros((0, 0), dt)
            launch(_recurrent_backward_cpu, _recurrent_backward_part, self._parts(n, t, hid, gh),
                   cell, act, gates, goff, hs, hoff, cs, hn, p["weight_hh" + sfx], dys, dlast,
                   r * hid, bool(r), dz, dzh, zoff, dh, dc)
            # h_(t-1) for every step (0 before the first step each direction reads)
            mine = hs[:, :, hoff:hoff + hid]
            if r:
                hprev[:, t - 1], hprev[:, :t - 1] = 0, mine[:, 1:]
            else:
                hprev[:, 0], hprev[:, 1:] = 0, mine[:, :t - 1]
            dzh = dzh[:, :, zoff:zoff + gh]
            hidden = {"weight": p["weight_hh" + sfx]}
            if h["bias"] and gru:  # (the other cells' b_hh has b_ih's gradient: summed once)
                hidden["bias"] = none  # linear_backward sums the bias when the key is there
            g = linear_backward(hprev.reshape(n * t, hid), hidden, dzh.reshape(n * t, gh),
                                dzh.reshape(n * t, gh), act_pair("none", dt), ctx,
                                np.zeros((0, hid), dt))
            grads["weight_hh" + sfx] = g["weight"]
            if h["bias"] and gru:
                grads["bias_hh" + sfx] = g["bias"]
        dx = ctx.grad((n * t, d) if ctx.need_dx else (0, d), dt)
        inputs = {"weight": w_ih, **({"bias": none} if h["bias"] else {})}
        dz2 = dz.reshape(n * t, len(states) * gh)
        g = linear_backward(x2, inputs, dz2, dz2, act_pair("none", dt), ctx, dx)
        for r in range(len(states)):
            sfx = "_reverse" if r else ""
            grads["weight_ih" + sfx] = g["weight"][r * gh:(r + 1) * gh]
            if h["bias"]:
                grads["bias_ih" + sfx] = g["bias"][r * gh:(r + 1) * gh]
                if self.rules.cell != "gru":
                    grads["bias_hh" + sfx] = grads["bias_ih" + sfx].copy()
        return [dx.reshape(xshape) if ctx.need_dx else None], grads


@implements(kinds.Rnn, "cpu")
class Rnn(_Recurrent):
    pass


@implements(kinds.Lstm, "cpu")
class Lstm(_Recurrent):
    pass


@implements(kinds.Gru, "cpu")
class Gru(_Recurrent):
    pass


def input_side(cell, h, p, dtype):
    """(W, b): every direction's W_ih stacked (dirs*G*H, D), and the biases added before the
    recurrence: b_ih + b_hh, except on a GRU's candidate rows, where b_hh is the reset gate's to
    scale (b_ih alone); empty for a layer without biases. (The GPU adds the biases in its cell
    kernel by the same rule, on the device.)"""
    hid = h["units"]
    sfxs = ("", "_reverse")[:2 if h["bidir"] else 1]
    w = [p["weight_ih" + s] for s in sfxs]
    w_ih = w[0] if len(w) == 1 else np.concatenate(w)
    if not h["bias"]:
        return w_ih, np.zeros(0, dtype)
    b = []
    for s in sfxs:
        hidden = np.array(p["bias_hh" + s])
        if cell == "gru":
            hidden[2 * hid:] = 0
        b.append(np.asarray(p["bias_ih" + s]) + hidden)
    return w_ih, np.concatenate(b).astype(dtype)


def _none3(dtype):
    return np.zeros((0, 0, 0), dtype)


@launcher
def _recurrent_forward_cpu(parts, cell, act, xp, goff, w_hh_t, b_hn, reverse, hs, hoff, cs, hn):
    run_parts(_recurrent_forward_part, parts, (
        cell, act, xp, goff, w_hh_t, b_hn, reverse, hs, hoff, cs, hn))


@kernel(vector_division=True)
def _recurrent_forward_part(part, parts, cell, act, xp, goff, w_hh_t, b_hn, reverse, hs, hoff, cs,
                            hn):
    """One direction's recurrence. xp (N, T, *) holds, in columns goff .. goff + G*H, each step's
    pre-activations from the input side, and leaves with the gates' values: LSTM i, f, g, o (cs:
    c_t); GRU r, z, n (hn: W_hn h_(t-1) + b_hn); RNN h_t. hs (N, T, *) receives h_t in columns
    hoff .. hoff + H. The threads split the samples and run every step on their own rows;
    `reverse` reads the steps from the last to the first. Each row's cell runs in a kernel of its
    own (_lstm_row ...), where its loop over the units vectorizes."""
    n, steps, _ = xp.shape
    hid, gh = w_hh_t.shape
    zero = np.zeros(hid, xp.dtype)  # the state before the first step
    lo, hi = n * part // parts, n * (part + 1) // parts
    if hi == lo:
        return
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        tp = t + 1 if reverse else t - 1
        z = xp[lo:hi, t, goff:goff + gh]
        if cell == ew.GRU_CELL:
            for i in range(lo, hi):
                hr = hn[i, t]
                for j in range(hid):
                    hr[j] = b_hn[j] if b_hn.size else _0
            if s > 0:
                prev = hs[lo:hi, tp, hoff:hoff + hid]
                gemm(False, False, 1.0, prev, w_hh_t[:, :2 * hid], 1.0, z[:, :2 * hid])
                gemm(False, False, 1.0, prev, w_hh_t[:, 2 * hid:], 1.0, hn[lo:hi, t])
        elif s > 0:
            gemm(False, False, 1.0, hs[lo:hi, tp, hoff:hoff + hid], w_hh_t, 1.0, z)
        for i in range(lo, hi):  # the cell over each row (its own kernel: see _lstm_row)
            zr = xp[i, t]
            hr = hs[i, t, hoff:hoff + hid]
            if cell == ew.LSTM_CELL:
                _lstm_row(zr[goff:goff + hid], zr[goff + hid:goff + 2 * hid],
                          zr[goff + 2 * hid:goff + 3 * hid], zr[goff + 3 * hid:goff + gh],
                          cs[i, tp] if s > 0 else zero, cs[i, t], hr)
            elif cell == ew.GRU_CELL:
                _gru_row(zr[goff:goff + hid], zr[goff + hid:goff + 2 * hid],
                         zr[goff + 2 * hid:goff + gh], hn[i, t],
                         hs[i, tp, hoff:hoff + hid] if s > 0 else zero, hr)
            else:
                _rnn_row(act, zr[goff:goff + hid], hr)


@launcher
def _recurrent_backward_cpu(parts, cell, act, gates, goff, hs, hoff, cs, hn, w_hh, dys, dlast,
                            doff, reverse, dz, dzh, zoff, dh, dc):
    run_parts(_recurrent_backward_part, parts, (
        cell, act, gates, goff, hs, hoff, cs, hn, w_hh, dys, dlast, doff, reverse, dz, dzh, zoff,
        dh, dc))


@kernel(vector_division=True)
def _recurrent_backward_part(part, parts, cell, act, gates, goff, hs, hoff, cs, hn, w_hh, dys,
                             dlast, doff, reverse, dz, dzh, zoff, dh, dc):
    """Backpropagation through time for one direction (the forward kernel's arrays and offsets):
    from the output's gradient (dys (N, T, *), every step's, for return=seq; dlast (N, *), the
    last step's, for return=last; this direction's columns from doff) to dz (N, T, *), the
    pre-activations' gradients from the input side (columns goff ..), and dzh, from the hidden side (columns
    zoff ..; a GRU's candidate differs there, r dxn; for the other cells dzh is dz). dh and dc
    (N, H) carry dL/dh and dL/dc back a step; the threads split the samples."""
    n, steps, _ = gates.shape
    hid = dh.shape[1]
    gh = w_hh.shape[0]
    zero = np.zeros(hid, gates.dtype)
    lo, hi = n * part // parts, n * (part + 1) // parts
    if hi == lo:
        return
    for i in range(lo, hi):
        for j in range(hid):
            dh[i, j] = dlast[i, doff + j] if dlast.shape[0] else _0
            dc[i, j] = _0
    for s in range(steps - 1, -1, -1):
        t = steps - 1 - s if reverse else s
        tp = t + 1 if reverse else t - 1
        for i in range(lo, hi):
            gr, dzr, dhr = gates[i, t], dz[i, t], dh[i]
            if dys.shape[0]:
                _add_row(dhr, dys[i, t, doff:doff + hid])
            g0, g1 = gr[goff:goff + hid], gr[goff + hid:goff + 2 * hid]
            d0, d1 = dzr[goff:goff + hid], dzr[goff + hid:goff + 2 * hid]
            if cell == ew.LSTM_CELL:
                _lstm_grad_row(g0, g1, gr[goff + 2 * hid:goff + 3 * hid],
                               gr[goff + 3 * hid:goff + gh], cs[i, t],
                               cs[i, tp] if s > 0 else zero, dhr, dc[i], d0, d1,
                               dzr[goff + 2 * hid:goff + 3 * hid], dzr[goff + 3 * hid:goff + gh])
            elif cell == ew.GRU_CELL:
                e = dzh[i, t, zoff:zoff + gh]
                _gru_grad_row(g0, g1, gr[goff + 2 * hid:goff + gh], hn[i, t],
                              hs[i, tp, hoff:hoff + hid] if s > 0 else zero, dhr, d0, d1,
                              dzr[goff + 2 * hid:goff + gh], e[:hid], e[hid:2 * hid], e[2 * hid:])
            else:
                _rnn_grad_row(act, g0, dhr, d0)
        if s > 0:
            gemm(False, False, 1.0, dzh[lo:hi, t, zoff:zoff + gh], w_hh, 1.0, dh[lo:hi])


@launcher
def _project_cpu(parts, x, w_t, bias, out):
    run_parts(_project_part, parts, (x, w_t, bias, out))


@kernel()
def _project_part(part, parts, x, w_t, bias, out):
    """out = x w_t + bias (bias may be empty), the rows split across the threads."""
    n = x.shape[0]
    lo, hi = n * part // parts, n * (part + 1) // parts
    if hi > lo:
        gemm(False, False, 1.0, x[lo:hi], w_t, 0.0, out[lo:hi])
        if bias.size:
            for i in range(lo, hi):
                _add_row(out[i], bias)


# One cell over one row of units, each its own kernel: called with the rows' slices, its loop
# vectorizes (inside the step loop, with every row a view of the same arrays, LLVM cannot tell the
# slices apart and leaves it scalar, 10x slower).
@kernel(vector_division=True)
def _lstm_row(z0, z1, z2, z3, c_prev, c, h):
    """The gates' pre-activations z0..z3 (i, f, g, o) become the gates; c and h the new states."""
    for j in range(z0.size):
        z0[j], z1[j], z2[j], z3[j], c[j], h[j] = ew.lstm_cell(z0[j], z1[j], z2[j], z3[j], c_prev[j])


@kernel(vector_division=True)
def _gru_row(z0, z1, z2, hn, h_prev, h):
    for j in range(z0.size):
        z0[j], z1[j], z2[j], h[j] = ew.gru_cell(z0[j], z1[j], z2[j], hn[j], h_prev[j])


@kernel(vector_division=True)
def _rnn_row(act, z, h):
    for j in range(z.size):
        z[j] = h[j] = ew.act(act, z[j], _0)


@kernel()
def _add_row(dst, src):
    for j in range(dst.size):
        dst[j] += src[j]


@kernel(vector_division=True)
def _lstm_grad_row(i, f, g, o, c, c_prev, dh, dc, di, df, dg, do):
    """dh, dc: the gradients reaching h_t and c_t; dc leaves as c_(t-1)'s, dh as 0 (the GEMM
    after adds what reaches h_(t-1) through W_hh)."""
    for j in range(i.size):
        di[j], df[j], dg[j], do[j], dc[j] = ew.lstm_cell_grad(i[j], f[j], g[j], o[j], c[j],
                                                              c_prev[j], dh[j], dc[j])
        dh[j] = _0


@kernel(vector_division=True)
def _gru_grad_row(r, z, n, hn, h_prev, dh, dr, dz, dn, er, ez, en):
    """d* the input side's gradients, e* the hidden side's; dh leaves as the part of h_(t-1)'s
    gradient that skips W_hh (z dh)."""
    for j in range(r.size):
        dr[j], dz[j], dn[j], en[j], dh[j] = ew.gru_cell_grad(r[j], z[j], n[j], hn[j], h_prev[j],
                                                             dh[j])
        er[j], ez[j] = dr[j], dz[j]


@kernel(vector_division=True)
def _rnn_grad_row(act, y, dh, dz):
    for j in range(y.size):
        dz[j] = dh[j] * ew.act_grad(act, y[j], y[j], _0)
        dh[j] = _0
