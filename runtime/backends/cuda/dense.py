"""FC, OUT and FLATTEN on the GPU: one GEMM each way, with the bias and the activation (or its
gradient, and the bias sums) in one more kernel."""
from __future__ import annotations

from numba import cuda

from netc.compiler.kinds import dense as kinds

from ..composed import PerPixelOutput
from ..registry import Implementation, implements
from .activation import fused_backward, fused_forward
from .gemm import gemm
from .kernels import reduce
from .launch import ew, grid, kernel


def in_kernel(h, ctx):
    """The activation applied inside the layer's own kernels (see cpu/activation.in_kernel)."""
    name = h["act"]
    fusable = name in ew.ACT_CODES and name != "prelu"
    return name if fusable and not (ctx.output and name != "none") else "none"


def act_pair(name, dtype):
    return ew.ACT_CODES[name], dtype.type(ew.FUSED_PARAM.get(name, 0.0))


@implements(kinds.FullyConnected, "cuda")
class FullyConnected(Implementation):
    """On a sequence (N, T, D) each of the N*T steps is a row (as on the CPU): the output is
    (N, T, units), the activation (a softmax too) per step."""

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        x2 = rows(x)
        inside = in_kernel(h, ctx)
        apart = inside == "none" and h["act"] != "none"
        z = ctx.buffer("z" if apart else "y", (x2.shape[0], h["units"]), x.dtype)
        w = p["weight"]
        gemm(False, True, 1.0, x2, w, 0.0, z)
        bias = p.get("bias", w[:0, 0])
        code, a = act_pair(inside, x.dtype)
        _bias_act_rows[grid(z.size)](z, bias, code, a)
        if not apart:
            return unrows(z, x.shape), (x.shape, x2, None, z, inside)
        y = fused_forward(h, p, z, ctx)
        return unrows(y, x.shape), (x.shape, x2, z, y, "none")

    def backward(self, h, p, cache, dy, ctx):
        z, y = cache[2], cache[3]
        dy = dy.reshape(y.shape)
        dz, grads = fused_backward(h, p, z, y, dy, ctx) if z is not None else (dy, {})
        return self.backward_logits(h, p, cache, dz, ctx, grads)

    def logits(self, cache):
        return None if cache[2] is None else unrows(cache[2], cache[0])

    def backward_logits(self, h, p, cache, dz, ctx, grads=None):
        xshape, x2, _, y, inside = cache
        grads = grads or {}
        dz = dz.reshape(y.shape)
        w = p["weight"]
        if inside != "none":  # the activation's gradient, from the output
            code, a = act_pair(inside, dz.dtype)
            d = ctx.scratch("dz", dz.shape, dz.dtype)
            _act_grad_rows[grid(dz.size)](dz, y, code, a, d)
            dz = d
        grads["weight"] = ctx.buffer("dw", w.shape, w.dtype)
        gemm(True, False, 1.0, dz, x2, 0.0, grads["weight"])
        if "bias" in p:
            grads["bias"] = reduce(dz.reshape(dz.shape[0], dz.shape[1], 1),
                                   ctx.buffer("db", (dz.shape[1],), dz.dtype), ctx=ctx)
        if not ctx.need_dx:
            return [None], grads
        dx = ctx.grad(x2.shape, dz.dtype)
        gemm(False, False, 1.0, dz, w, 0.0, dx)
        return [dx.reshape(xshape)], grads


@implements(kinds.Output, "cuda")
class Output(PerPixelOutput, FullyConnected):
    """OUT: an FC, or with per=pixel the 1x1 CONV it is (composed.py)."""


@implements(kinds.Flatten, "cuda")
class Flatten(Implementation):
    def forward(self, h, p, xs, ctx):
        x = xs[0]
        return x.reshape(x.shape[0], x.size // x.shape[0]), x.shape

    def backward(self, h, p, shape, dy, ctx):
        return [dy.reshape(shape)], {}


def rows(x):
    """The rows an FC maps: (N*T, D), a row per step, for a sequence (N, T, D); (N, features)
    for vectors and flattened images."""
    if x.ndim == 3:
        return x.reshape(x.shape[0] * x.shape[1], x.shape[2])
    return x.reshape(x.shape[0], x.size // x.shape[0])


def unrows(a, xshape):
    """rows' inverse on the output side: (N*T, units) back to (N, T, units) for a sequence
    input of shape xshape; a's own shape otherwise."""
    return a.reshape(xshape[0], xshape[1], a.shape[1]) if len(xshape) == 3 else a


@kernel()
def _bias_act_rows(z, bias, code, a):
    """z[r, u] = act(z[r, u] + bias[u]) (bias may be empty)."""
    u_ = z.shape[1]
    for i in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        r, u = i // u_, i % u_
        v = z[r, u] + bias[u] if bias.size else z[r, u]
        z[r, u] = ew.act(code, v, a)


@kernel()
def _act_grad_rows(dy, y, code, a, dz):
    u_ = dy.shape[1]
    for i in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        r, u = i // u_, i % u_
        dz[r, u] = dy[r, u] * ew.act_grad(code, y[r, u], y[r, u], a)
