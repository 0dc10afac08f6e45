"""RNN, LSTM and GRU on the GPU (the rules: compiler/kinds/recurrent.py; the algorithm and what
is kept are the CPU's, runtime/backends/cpu/recurrent.py; a cell's math: elementwise.lstm_cell,
gru_cell and their gradients, shared with the CPU).

Layout: batch-major (N, T, .), as the layer's input and output. gemm.py takes rows at any stride
(cuBLAS's leading dimension), so a step's rows are plain views (row stride T*width) and nothing
is transposed: time-major buffers would make a step's rows adjacent, but cost a copy of x in and
of y and dx out; here the one extra pass is h_(t-1) shifted into a workspace for dW_hh.

Forward: the input projections of every step and both directions are one GEMM, xp (N, T,
dirs*G*H) = x W_ih^T (with bidir, the two W_ih copied on the device into one buffer: the CPU's
input_side, NumPy, would take the parameters through the host). Then per direction and step, two
launches: one GEMM hz = h_(t-1) W_hh^T over all G*H rows (N, G*H; none at the first step) and
one kernel, a thread per (sample, unit), that adds the biases and hz to the step's
pre-activations and applies the cell, writing the gates over the pre-activations. The biases are
input_side's rule: b_ih + b_hh, but a GRU's candidate keeps b_hn + W_hn h apart for its reset
gate to scale, which is why hz is not accumulated onto the gates. The kernel keeps what backward
needs: the gates, h_t, an LSTM's c_t, a GRU's W_hn h + b_hn.

Backward through time: per direction and step, reversed, two launches: the cell's gradient (dz,
and dzh, the hidden side's, which differs on a GRU's candidate) and one GEMM dh += dzh_t W_hh
for the gradient reaching h_(t-1). Then the weight gradients are GEMMs over all N*T rows:
dW_ih = dz^T x for both directions at once, dW_hh = dzh^T h_prev per direction, the bias sums
(kernels.reduce), dx = dz W_ih.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from netc.compiler.kinds import recurrent as kinds

from ..registry import Implementation, implements
from .gemm import gemm
from .kernels import reduce
from .launch import SIMULATED, device, ew, grid, kernel

# a zero that keeps float32 work in float32; under the simulator a Python float, which takes the
# other operand's type (a NumPy float32 would round float64 work to float32), as launch.ew's
_0 = 0.0 if SIMULATED else np.float32(0)


class _Recurrent(Implementation):
    """Forward and backward of one recurrent kind; the kinds differ in their cell code."""

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        n, t, d = x.shape
        dt = x.dtype
        hid, dirs = h["units"], 2 if h["bidir"] else 1
        gh = self.rules.gates * hid
        cell, act = ew.CELL_CODES[self.rules.cell], ew.ACT_CODES[h.get("act", "tanh")]
        x2 = x.reshape(n * t, d)
        w_ih = _stacked([p["weight_ih" + s] for s in _SUFFIXES[:dirs]], ctx)
        xp = ctx.buffer("xp", (n, t, dirs * gh), dt)
        gemm(False, True, 1.0, x2, w_ih, 0.0, xp.reshape(n * t, dirs * gh))
        seq = h["return"] == "seq"
        y = ctx.buffer("y", (n, t, dirs * hid) if seq else (n, dirs * hid), dt)
        hz = ctx.scratch("rnn_hz", (n, gh), dt)
        states = []
        for r, sfx in enumerate(_SUFFIXES[:dirs]):
            gates = xp[:, :, r * gh:(r + 1) * gh]
            hs = y[:, :, r * hid:(r + 1) * hid] if seq else ctx.buffer(f"hs{r}", (n, t, hid), dt)
            cs = ctx.buffer(f"cs{r}", (n, t, hid), dt) if cell == ew.LSTM_CELL else hs[:0]
            hn = ctx.buffer(f"hn{r}", (n, t, hid), dt) if cell == ew.GRU_CELL else hs[:0]
            w_hh = p["weight_hh" + sfx]
            b_ih, b_hh = p.get("bias_ih" + sfx, w_hh[:0, 0]), p.get("bias_hh" + sfx, w_hh[:0, 0])
            for t_, tp in _steps(t, r):
                if tp >= 0:
                    gemm(False, True, 1.0, hs[:, tp], w_hh, 0.0, hz)
                _cell_forward[grid(n * hid)](cell, act, gates, hz, b_ih, b_hh, t_, tp, hs, cs, hn)
            if not seq:  # the last step each direction reads: T for the forward one, 1 for reverse
                last = hs[:, 0 if r else t - 1]
                _copy_rows[grid(n * hid)](last, y[:, r * hid:(r + 1) * hid])
            states.append((gates, hs, cs, hn))
        return y, (x2, x.shape, w_ih, states)

    def backward(self, h, p, cache, dy, ctx):
        x2, xshape, w_ih, states = cache
        n, t, d = xshape
        dirs, gh, dt = len(states), self.rules.gates * h["units"], dy.dtype
        dz = ctx.scratch("rnn_dz", (n, t, dirs * gh), dt)
        grads = {}
        for r, state in enumerate(states):
            grads.update(self._through_time(h, p, state, dy, r, dz, ctx))
        # the input side, both directions at once, over all N*T rows
        dz2 = dz.reshape(n * t, dirs * gh)
        dw = ctx.buffer("dw_ih", (dirs * gh, d), dt)
        gemm(True, False, 1.0, dz2, x2, 0.0, dw)
        db = reduce(dz2.reshape(n * t, dirs * gh, 1), ctx.buffer("db_ih", (dirs * gh,), dt),
                    ctx=ctx) if h["bias"] else None
        for r, sfx in enumerate(_SUFFIXES[:dirs]):
            grads["weight_ih" + sfx] = dw[r * gh:(r + 1) * gh]
            if db is not None:
                grads["bias_ih" + sfx] = db[r * gh:(r + 1) * gh]
        if not ctx.need_dx:
            return [None], grads
        dx = ctx.grad((n * t, d), dt)
        gemm(False, False, 1.0, dz2, w_ih, 0.0, dx)
        return [dx.reshape(xshape)], grads

    def _through_time(self, h, p, state, dy, r, dz, ctx):
        """Direction r's backpropagation through time into its share of dz (N, T, dirs*G*H),
        and the gradients of its hidden side: {weight_hh, bias_hh} with the direction's
        suffix."""
        gates, hs, cs, hn = state
        n, t, hid = hs.shape
        gh, dt, sfx = self.rules.gates * hid, dy.dtype, _SUFFIXES[r]
        cell, act = ew.CELL_CODES[self.rules.cell], ew.ACT_CODES[h.get("act", "tanh")]
        dzr = dz[:, :, r * gh:(r + 1) * gh]
        # the hidden side's pre-activation gradients (dz's own but on a GRU), also as N*T rows
        # and as the (rows, G*H, 1) view reduce sums: views of contiguous arrays only, since a
        # GPU's device array reshapes no strided view
        if cell == ew.GRU_CELL:
            dzh = ctx.scratch("rnn_dzh", (n, t, gh), dt)
            dzh2, dzh3 = dzh.reshape(n * t, gh), dzh.reshape(n * t, gh, 1)
        else:
            dzh, width = dzr, dz.shape[2]
            dzh2 = dz.reshape(n * t, width)[:, r * gh:(r + 1) * gh]
            dzh3 = dz.reshape(n * t, width, 1)[:, r * gh:(r + 1) * gh]
        dh, dc = ctx.scratch("rnn_dh", (n, hid), dt), ctx.scratch("rnn_dc", (n, hid), dt)
        seq = h["return"] == "seq"
        dys = dy[:, :, r * hid:(r + 1) * hid] if seq else hs[:0]
        dlast = dh[:0] if seq else dy[:, r * hid:(r + 1) * hid]
        w_hh = p["weight_hh" + sfx]
        for i, (t_, tp) in enumerate(reversed(_steps(t, r))):
            _cell_backward[grid(n * hid)](cell, act, gates, hs, cs, hn, dys, dlast, t_, tp, i == 0,
                                          dh, dc, dzr, dzh)
            if tp >= 0:
                gemm(False, False, 1.0, dzh[:, t_], w_hh, 1.0, dh)
        hprev = ctx.scratch("rnn_hprev", (n, t, hid), dt)
        _shift[grid(hprev.size)](hs, bool(r), hprev)
        grads = {"weight_hh" + sfx: ctx.buffer(f"dw_hh{r}", w_hh.shape, dt)}
        gemm(True, False, 1.0, dzh2, hprev.reshape(n * t, hid), 0.0, grads["weight_hh" + sfx])
        if h["bias"]:
            grads["bias_hh" + sfx] = reduce(dzh3, ctx.buffer(f"db_hh{r}", (gh,), dt), ctx=ctx)
        return grads


@implements(kinds.Rnn, "cuda")
class Rnn(_Recurrent):
    pass


@implements(kinds.Lstm, "cuda")
class Lstm(_Recurrent):
    pass


@implements(kinds.Gru, "cuda")
class Gru(_Recurrent):
    pass


_SUFFIXES = ("", "_reverse")


def _steps(t, reverse):
    """[(t, tp)]: the steps in the order a direction reads them, each with the step before it in
    that order (-1 at the first)."""
    order = range(t - 1, -1, -1) if reverse else range(t)
    return [(s, order[i - 1] if i else -1) for i, s in enumerate(order)]


def _stacked(ws, ctx):
    """Every direction's W_ih as one (dirs*G*H, D) array: the parameter itself for one direction,
    else a buffer the two are copied into on the device."""
    if len(ws) == 1:
        return ws[0]
    g = ws[0].shape[0]
    out = ctx.buffer("w_ih", (len(ws) * g, ws[0].shape[1]), ws[0].dtype)
    for r, w in enumerate(ws):
        _copy_rows[grid(w.size)](w, out[r * g:(r + 1) * g])
    return out


@device()
def _pre(gates, hz, b_ih, b_hh, n, t, q, first):
    """Gate row q's pre-activation at step t: x W_ih^T + b_ih + b_hh + h_(t-1) W_hh^T."""
    v = gates[n, t, q]
    if b_ih.size:
        v += b_ih[q] + b_hh[q]
    return v if first else v + hz[n, q]


@kernel()
def _cell_forward(cell, act, gates, hz, b_ih, b_hh, t, tp, hs, cs, hn):
    """Step t of one direction, a thread per (sample, unit): gates[:, t] (the input side's
    pre-activations) leaves with the gates' values (LSTM i, f, g, o; GRU r, z, n; RNN h_t), hs[:, t]
    with h_t, cs with an LSTM's c_t, hn with a GRU's W_hn h_(t-1) + b_hn. hz holds h_(t-1) W_hh^T,
    read unless this is the direction's first step (tp < 0)."""
    n_, hid = hs.shape[0], hs.shape[2]
    first = tp < 0
    for i in range(cuda.grid(1), n_ * hid, cuda.gridsize(1)):
        n, j = i // hid, i % hid
        if cell == ew.LSTM_CELL:
            cp = _0 if first else cs[n, tp, j]
            gi, gf, gg, go, c, hv = ew.lstm_cell(
                _pre(gates, hz, b_ih, b_hh, n, t, j, first),
                _pre(gates, hz, b_ih, b_hh, n, t, hid + j, first),
                _pre(gates, hz, b_ih, b_hh, n, t, 2 * hid + j, first),
                _pre(gates, hz, b_ih, b_hh, n, t, 3 * hid + j, first), cp)
            gates[n, t, j], gates[n, t, hid + j] = gi, gf
            gates[n, t, 2 * hid + j], gates[n, t, 3 * hid + j] = gg, go
            cs[n, t, j] = c
        elif cell == ew.GRU_CELL:
            q = 2 * hid + j  # the candidate: b_hn joins W_hn h, which the reset gate scales
            xn = gates[n, t, q] + b_ih[q] if b_ih.size else gates[n, t, q]
            hnv = _0 if first else hz[n, q]
            if b_hh.size:
                hnv += b_hh[q]
            hp = _0 if first else hs[n, tp, j]
            r, u, c, hv = ew.gru_cell(_pre(gates, hz, b_ih, b_hh, n, t, j, first),
                                      _pre(gates, hz, b_ih, b_hh, n, t, hid + j, first), xn, hnv,
                                      hp)
            gates[n, t, j], gates[n, t, hid + j], gates[n, t, q] = r, u, c
            hn[n, t, j] = hnv
        else:
            hv = ew.act(act, _pre(gates, hz, b_ih, b_hh, n, t, j, first), _0)
            gates[n, t, j] = hv
        hs[n, t, j] = hv


@kernel()
def _cell_backward(cell, act, gates, hs, cs, hn, dys, dlast, t, tp, start, dh, dc, dz, dzh):
    """Step t of one direction's backpropagation through time, a thread per (sample, unit):
    dh, dc (N, H) carry dL/dh_t, dL/dc_t from the step after (at the `start`, the last step read:
    dlast, the output's gradient with return=last, and 0); dys adds the output's gradient at
    step t with return=seq. Writes dz[:, t] (the input side's pre-activation gradients), dzh[:, t]
    (the hidden side's: a GRU's candidate r dxn; dzh is dz for the other cells), dc and the part
    of dL/dh_(t-1) that bypasses W_hh (a GRU's z dh, else 0) into dh."""
    n_, hid = hs.shape[0], hs.shape[2]
    first = tp < 0
    for i in range(cuda.grid(1), n_ * hid, cuda.gridsize(1)):
        n, j = i // hid, i % hid
        if start:
            d = dlast[n, j] if dlast.shape[0] else _0
            dcv = _0
        else:
            d, dcv = dh[n, j], dc[n, j]
        if dys.shape[0]:
            d += dys[n, t, j]
        if cell == ew.LSTM_CELL:
            cp = _0 if first else cs[n, tp, j]
            di, df, dg, do, dcp = ew.lstm_cell_grad(
                gates[n, t, j], gates[n, t, hid + j], gates[n, t, 2 * hid + j],
                gates[n, t, 3 * hid + j], cs[n, t, j], cp, d, dcv)
            dz[n, t, j], dz[n, t, hid + j] = di, df
            dz[n, t, 2 * hid + j], dz[n, t, 3 * hid + j] = dg, do
            dc[n, j] = dcp
            dh[n, j] = _0
        elif cell == ew.GRU_CELL:
            hp = _0 if first else hs[n, tp, j]
            dar, daz, dxn, dhn, dhp = ew.gru_cell_grad(
                gates[n, t, j], gates[n, t, hid + j], gates[n, t, 2 * hid + j], hn[n, t, j], hp, d)
            dz[n, t, j], dz[n, t, hid + j], dz[n, t, 2 * hid + j] = dar, daz, dxn
            dzh[n, t, j], dzh[n, t, hid + j], dzh[n, t, 2 * hid + j] = dar, daz, dhn
            dh[n, j] = dhp
        else:
            yv = gates[n, t, j]
            dz[n, t, j] = d * ew.act_grad(act, yv, yv, _0)
            dh[n, j] = _0


@kernel()
def _shift(hs, reverse, hprev):
    """hprev[:, t] = h_(t-1) in the direction's reading order (hs[:, t-1], or hs[:, t+1] for the
    reverse one), 0 at its first step."""
    n_, t_, hid = hs.shape
    for i in range(cuda.grid(1), hprev.size, cuda.gridsize(1)):
        n, t, j = i // (t_ * hid), (i // hid) % t_, i % hid
        tp = t + 1 if reverse else t - 1
        hprev[n, t, j] = hs[n, tp, j] if 0 <= tp < t_ else _0


@kernel()
def _copy_rows(src, dst):
    """dst = src for 2-D views of any row stride."""
    cols = dst.shape[1]
    for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        dst[i // cols, i % cols] = src[i // cols, i % cols]
