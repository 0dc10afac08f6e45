"""The per-element math every backend shares: activations and their gradients, the loss rules,
the dropout mask. Each is a scalar (or one-row) function that the kernels call; Numba compiles
it into each caller, for the CPU now and for CUDA kernels too (numba-cuda compiles a function
called from a kernel for the GPU). `inline="always"` puts the body into the caller at Numba's
level: no call per element, and nothing the GPU compiler must link.

Constants are float32 so that they never widen float32 work to float64 (in Numba, as in NumPy,
an int or a float64 constant with a float32 promotes to float64); parameters that are not exact
in float32 (leaky's 0.01) come in from the caller, in the data's type.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.core.extending import _Intrinsic

from netc.compiler.registry import FUSED_PARAM  # noqa: F401  (leaky's slope, ELU's alpha in act=)

from .cache import njit

# the activations a kernel applies by code
NONE, RELU, LEAKY, ELU, SIGMOID, TANH, PRELU = range(7)
ACT_CODES = {"none": NONE, "relu": RELU, "leaky": LEAKY, "elu": ELU, "sigmoid": SIGMOID,
             "tanh": TANH, "prelu": PRELU}

_0, _HALF, _1, _2 = np.float32(0), np.float32(0.5), np.float32(1), np.float32(2)

scalar = njit(inline="always")


# ---- exp, expm1 and tanh that vectorize ---------------------------------------------------------
# A loop that calls the C library's expf stays scalar (LLVM vectorizes such calls only with a vector
# math library, which Numba's LLVM lacks). In float32 these three are arithmetic alone, written as
# LLVM instructions into the caller, so that a kernel's loop over a row runs at the CPU's full
# width (30x the scalar calls for a sigmoid on AVX-512; ELU's expm1 8x), to within 2 ulp (expm1:
# 1.75 at most over [-87, 87]); a GPU kernel compiles the same instructions. float64 keeps the
# target's own functions (the gradchecks' exact values). NaN stays NaN; exp clamps its argument
# to [-87, 88] (what sigmoid and tanh need; expm1 above 88 gives 1.7e38 rather than inf).
_F32 = ir.FloatType()
_I32 = ir.IntType(32)
# e^r for |r| <= ln2/2: the Taylor coefficients of degree 7 down to 0 (error below 6e-9)
_EXP_TAYLOR = [1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 1 / 2, 1, 1]
# (e^x - 1)/x for |x| <= 1: its Taylor coefficients 1/(k+1)!, k = 10 down to 0 (the next term is
# below 3e-9 relative there)
_EXPM1_TAYLOR = [1 / 39916800, 1 / 3628800, 1 / 362880, 1 / 40320, 1 / 5040, 1 / 720, 1 / 120,
                 1 / 24, 1 / 6, 1 / 2, 1]
# tanh(a) = a + a s p(s), s = a^2, for a below 1/2: p's coefficients, of s^6 down to s^0 (the
# series to a^15; the next term is below 1e-8 relative there)
_TANH_TAYLOR = [-929569 / 638512875, 21844 / 6081075, -1382 / 155925, 62 / 2835, -17 / 315,
                2 / 15, -1 / 3]


def _c(v):
    return ir.Constant(_F32, float(np.float32(v)))


def _horner(b, coefficients, x):
    p = _c(coefficients[0])
    for k in coefficients[1:]:
        p = b.fadd(b.fmul(p, x), _c(k))
    return p


def _exp32(b, x):
    """exp(x): x clamped to [-87, 88], x = k ln2 + r with |r| <= ln2/2 (ln2 in two parts, so r is
    exact), e^r by _EXP_TAYLOR, times 2^k made from its exponent bits."""
    x = b.select(b.fcmp_ordered("<", x, _c(-87.0)), _c(-87.0), x)
    x = b.select(b.fcmp_ordered(">", x, _c(88.0)), _c(88.0), x)
    n = b.fptosi(b.fadd(b.fmul(x, _c(1.4426950408889634)), _c(128.5)), _I32)  # 128 + k
    k = b.fsub(b.sitofp(n, _F32), _c(128.0))
    r = b.fsub(b.fsub(x, b.fmul(k, _c(0.693145751953125))), b.fmul(k, _c(1.428606765330187e-06)))
    two_k = b.bitcast(b.mul(b.sub(n, ir.Constant(_I32, 1)), ir.Constant(_I32, 1 << 23)), _F32)
    return b.fmul(_horner(b, _EXP_TAYLOR, r), two_k)


def _tanh32(b, x):
    """tanh(x): below |x| = 1/2 the odd series (_TANH_TAYLOR), above it 1 - 2/(e^2|x| + 1),
    where the cancellation costs at most 2 ulp; the sign put back."""
    negative = b.fcmp_ordered("<", x, _c(0.0))
    a = b.select(negative, b.fsub(_c(0.0), x), x)
    big = b.fsub(_c(1.0), b.fdiv(_c(2.0), b.fadd(_exp32(b, b.fadd(a, a)), _c(1.0))))
    s = b.fmul(a, a)
    small = b.fadd(a, b.fmul(b.fmul(a, s), _horner(b, _TANH_TAYLOR, s)))
    t = b.select(b.fcmp_ordered("<", a, _c(0.5)), small, big)
    return b.select(negative, b.fsub(_c(0.0), t), t)


def _expm1_32(b, x):
    """e^x - 1: below |x| = 1 x times the series of (e^x - 1)/x (_EXPM1_TAYLOR: no cancellation
    near 0), above it exp(x) - 1, where e^x - 1 is at least 0.63 of e^x in size."""
    series = b.fmul(x, _horner(b, _EXPM1_TAYLOR, x))
    big = b.fsub(_exp32(b, x), _c(1.0))
    small = b.fcmp_ordered("<", b.select(b.fcmp_ordered("<", x, _c(0.0)), b.fsub(_c(0.0), x), x),
                           _c(1.0))
    return b.select(small, series, big)


class _Callable(_Intrinsic):
    """An intrinsic that plain Python may call too, as NumPy's function (the CUDA simulator runs
    kernels, and the scalar functions they call, as Python)."""
    PYTHON = {"exp": np.exp, "expm1": np.expm1, "tanh": np.tanh, "divide": np.divide}

    def __call__(self, *args):
        return self.PYTHON[self._name](*args)


def _unary(name, float32_rule, exact):
    """An intrinsic: float32_rule's instructions in float32, the target's `exact` otherwise."""
    def definition(typingctx, x):
        if not isinstance(x, types.Float):
            return None

        def codegen(context, builder, sig, args):
            if sig.args[0] != types.float32:
                return context.get_function(exact, sig)(builder, args)
            y = float32_rule(builder, args[0])
            return builder.select(builder.fcmp_unordered("uno", args[0], args[0]), args[0], y)
        return x(x), codegen
    definition.__name__ = definition.__qualname__ = name
    fn = _Callable(name, definition)
    fn._register()
    return fn


exp = _unary("exp", _exp32, math.exp)
tanh = _unary("tanh", _tanh32, math.tanh)
expm1 = _unary("expm1", _expm1_32, math.expm1)


def _divide(typingctx, a, b):
    """a / b as the CPU divides (IEEE: x/0 is inf or NaN), in the wider of the two types. Numba's
    own division checks for zero (to raise ZeroDivisionError), a branch that keeps a loop from
    vectorizing: a kernel's sigmoid ran 8x slower through it. For divisors that cannot be zero."""
    if not (isinstance(a, types.Float) and isinstance(b, types.Float)):
        return None
    t = typingctx.unify_pairs(a, b)

    def codegen(context, builder, sig, args):
        x, y = (context.cast(builder, v, ty, t) for v, ty in zip(args, sig.args))
        return builder.fdiv(x, y)
    return t(a, b), codegen


divide = _Callable("divide", _divide)
divide._register()


@scalar
def sigmoid(z):
    """1 / (1 + exp(-z)); in float32 exp's argument is clamped, and in float64 exp(-z) = inf
    gives 0: no overflow for either sign."""
    return divide(_1, _1 + exp(-z))


@scalar
def relu(z):
    return z if z > 0 else z * _0


@scalar
def leaky(z, a):
    """Leaky ReLU and PReLU: slope `a` below zero."""
    return z if z > 0 else a * z


@scalar
def elu(z, a):
    return z if z > 0 else a * expm1(z)


@scalar
def act(code, z, a):
    """y = act(z); `a` is leaky's and PReLU's slope, ELU's alpha. NaN stays NaN. (A kernel's loop
    over a row takes one activation per loop, outside it, where it can: common._act_row_cpu.)"""
    if code == RELU:
        return relu(z)
    if code == LEAKY or code == PRELU:
        return leaky(z, a)
    if code == ELU:
        return elu(z, a)
    if code == SIGMOID:
        return sigmoid(z)
    if code == TANH:
        return tanh(z)
    return z


@scalar
def relu_grad(z):
    return _1 if z > 0 else _0


@scalar
def leaky_grad(z, a):
    return _1 if z > 0 else a


@scalar
def elu_grad(z, y, a):
    return _1 if z > 0 else y + a


@scalar
def sigmoid_grad(y):
    return y * (_1 - y)


@scalar
def tanh_grad(y):
    return _1 - y * y


@scalar
def act_grad(code, z, y, a):
    """d act / dz at z, given y = act(z). Where only y is kept (the fused activations), callers
    pass y for z: with a positive slope or alpha, y > 0 exactly where z > 0."""
    if code == RELU:
        return relu_grad(z)
    if code == LEAKY or code == PRELU:
        return leaky_grad(z, a)
    if code == ELU:
        return elu_grad(z, y, a)
    if code == SIGMOID:
        return sigmoid_grad(y)
    if code == TANH:
        return tanh_grad(y)
    return _1


# the elementwise losses, by code: value and gradient of one output o against its target t
MSE, MAE, HUBER, BCE, HINGE = range(5)
POINTWISE = {"mse": MSE, "mae": MAE, "huber": HUBER, "bce": BCE, "hinge": HINGE}


@scalar
def pointwise_loss(code, o, t, delta):
    """(loss, dloss/do) for one output: MSE (o - t)^2; MAE |o - t|; Huber with `delta`; BCE from
    the logit o, stably, max(o, 0) - o t + log(1 + exp(-|o|)); hinge max(0, 1 - t o)."""
    d = o - t
    if code == MSE:
        return d * d, _2 * d
    if code == MAE:
        return abs(d), (_1 if d > 0 else -_1 if d < 0 else d * _0)
    if code == HUBER:
        if abs(d) <= delta:
            return _HALF * d * d, d
        return delta * (abs(d) - _HALF * delta), (delta if d > 0 else -delta)
    if code == BCE:
        return max(o, _0) - o * t + math.log1p(math.exp(-abs(o))), sigmoid(o) - t
    m = _1 - t * o
    return (m, -t) if m > 0 else (m * _0, t * _0)


# the losses computed a row (a sample) at a time, by code
CROSS_ENTROPY, SOFT_CROSS_ENTROPY, KL, MULTICLASS_HINGE = range(4)


@scalar
def softmax_row(z, e):
    """e = exp(z - max z) for one row; returns (max z, sum of e): a softmax before its division,
    and the parts of log-sum-exp."""
    m = z[0]
    for j in range(1, z.size):
        m = max(m, z[j])
    s = 0.0  # sums run in float64
    for j in range(z.size):
        e[j] = math.exp(z[j] - m)
        s += e[j]
    return m, s


@scalar
def cross_entropy_row(z, label, g):
    """-log softmax(z)[label] from the logits z; g = softmax(z) - onehot(label)."""
    m, s = softmax_row(z, g)
    for j in range(z.size):
        g[j] = g[j] / s
    g[label] -= _1
    return math.log(s) + m - z[label]


@scalar
def soft_cross_entropy_row(z, t, g):
    """-sum t log softmax(z) for a row of probabilities t; g = softmax(z) sum(t) - t."""
    m, s = softmax_row(z, g)
    lse = math.log(s) + m
    total, mass = 0.0, 0.0
    for j in range(z.size):
        total += t[j] * (lse - z[j])
        mass += t[j]
    for j in range(z.size):
        g[j] = g[j] / s * mass - t[j]
    return total


@scalar
def kl_row(z, t, g, logits):
    """KL(t || p) = sum t (log t - log p), terms with t = 0 dropped: p = softmax(z) from the
    logits (g = p sum(t) - t), or else z holds log p (g = -t)."""
    total, mass = 0.0, 0.0
    for j in range(z.size):
        mass += t[j]
    lse, s = 0.0, 1.0
    if logits:
        m, s = softmax_row(z, g)
        lse = math.log(s) + m
    for j in range(z.size):
        if t[j] > 0:
            total += t[j] * (math.log(t[j]) - (z[j] - lse))
        g[j] = g[j] / s * mass - t[j] if logits else -t[j]
    return total


@scalar
def multiclass_hinge_row(o, label, g):
    """sum over j != label of max(0, o_j - o_label + 1); g its gradient."""
    total, count = 0.0, 0.0
    for j in range(o.size):
        m = o[j] - o[label] + _1
        if j != label and m > 0:
            total += m
            g[j] = _1
            count += 1.0
        else:
            g[j] = _0
    g[label] = -count
    return total


# the row losses of out (N, K, P)'s row out[i, :, p] (a sample, or a pixel), one signature for
# the four: its gradient into g; only the targets a loss reads are indexed (the others may be
# empty). A kernel that takes one of them as an argument compiles that loss alone.
@scalar
def cross_entropy_at(out, target, labels, i, p, g, logits):
    """Cross-entropy from the label labels[i, p]."""
    return cross_entropy_row(out[i, :, p], labels[i, p], g)


@scalar
def soft_cross_entropy_at(out, target, labels, i, p, g, logits):
    """Cross-entropy from the probability row target[i, :, p]."""
    return soft_cross_entropy_row(out[i, :, p], target[i, :, p], g)


@scalar
def kl_at(out, target, labels, i, p, g, logits):
    """KL from target[i, :, p]: out holds logits, or log-probabilities where `logits` is clear."""
    return kl_row(out[i, :, p], target[i, :, p], g, logits)


@scalar
def multiclass_hinge_at(out, target, labels, i, p, g, logits):
    """Multiclass hinge from the label labels[i, p]."""
    return multiclass_hinge_row(out[i, :, p], labels[i, p], g)


@scalar
def row_loss(code, out, target, labels, i, p, g, logits):
    """The row loss of out[i, :, p] by code (CROSS_ENTROPY, ...), its gradient into g."""
    if code == CROSS_ENTROPY:
        return cross_entropy_at(out, target, labels, i, p, g, logits)
    if code == SOFT_CROSS_ENTROPY:
        return soft_cross_entropy_at(out, target, labels, i, p, g, logits)
    if code == KL:
        return kl_at(out, target, labels, i, p, g, logits)
    return multiclass_hinge_at(out, target, labels, i, p, g, logits)


@scalar
def linear_taps(o, scale, size):
    """(i0, i1, w0, w1): the two input positions that output position o of a linear
    interpolation by an integer `scale` reads, and their weights (PyTorch's align_corners=False:
    the source position (o + 1/2)/scale - 1/2, clamped at 0; i1 past the last is the last)."""
    src = (o + 0.5) / scale - 0.5
    if src < 0:
        src = 0.0
    i0 = int(src)
    i1 = i0 + 1 if i0 < size - 1 else i0
    w1 = src - i0
    return i0, i1, 1.0 - w1, w1


def dropout_args(p, rng, dtype):
    """(seed, threshold, scale) of a dropout mask keeping each value with probability 1 - p: the
    seed drawn from `rng` (a NumPy Generator), for `keep`."""
    kept = 1.0 - p
    seed = np.uint64(rng.integers(0, 2**63))
    threshold = np.uint64(min(int(kept * 2.0**64), 2**64 - 1))
    return seed, threshold, np.dtype(dtype).type(1.0 / kept)


@scalar
def mix(seed, i):
    """A 64-bit hash of (seed, i): SplitMix64's finaliser, the same on every backend."""
    x = np.uint64(seed) + np.uint64(i) * np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@scalar
def keep(seed, i, threshold):
    """Whether dropout keeps element i: mix(seed, i) below threshold = keep probability * 2^64."""
    return mix(seed, i) < threshold


@scalar
def path_weights(seed, threshold, scale, mean, n, w):
    """The weights w[n, k] of sample n's K branches in a join that drops paths. Stochastic depth
    (mean false): the residual branch (k = 0) kept with keep(seed, n) and scaled by `scale` =
    1/(1 - p), the shortcut always 1. Drop-path (mean true): each branch kept with keep(seed,
    n * K + k); if none is, the one mix(~seed, n) picks; each kept branch weighs 1 / (number kept)."""
    k_ = w.shape[1]
    if not mean:
        w[n, 0] = scale if keep(seed, n, threshold) else _0
        for k in range(1, k_):
            w[n, k] = _1
        return
    kept = 0
    for k in range(k_):
        if keep(seed, n * k_ + k, threshold):
            w[n, k] = _1
            kept += 1
        else:
            w[n, k] = _0
    if kept == 0:
        w[n, int(mix(~np.uint64(seed), n) % np.uint64(k_))] = _1
        kept = 1
    for k in range(k_):
        w[n, k] = w[n, k] / np.float32(kept)


# the optimizers' updates, one parameter value at a time, by code; h holds the hyperparameters in
# the data's type, `first`: whether the state is still unset (the first step)
SGD, ADAGRAD, RMSPROP, ADAM = range(4)


@scalar
def update(code, theta, g, s1, s2, h, first):
    """(theta, s1, s2) after one step of an optimizer, PyTorch's formulas:
    SGD      h = (lr, momentum, dampening, weight_decay, nesterov); s1 the momentum buffer
             (g at the first step)
    ADAGRAD  h = (lr, eps, weight_decay); s1 the sum of squares
    RMSPROP  h = (lr, alpha, eps, weight_decay, momentum); s1 the square average, s2 the buffer
    ADAM     h = (lr, beta1, beta2, eps, weight_decay, decoupled, 1 - beta1^t, 1 - beta2^t);
             s1, s2 the moments; with `decoupled` (AdamW) the decay scales theta instead of g."""
    lr = h[0]
    if code == SGD:
        g = g + h[3] * theta
        if h[1] != 0:
            s1 = g if first else h[1] * s1 + (_1 - h[2]) * g
            g = g + h[1] * s1 if h[4] != 0 else s1
        return theta - lr * g, s1, s2
    if code == ADAGRAD:
        g = g + h[2] * theta
        s1 = s1 + g * g
        return theta - lr * g / (math.sqrt(s1) + h[1]), s1, s2
    if code == RMSPROP:
        g = g + h[3] * theta
        s1 = h[1] * s1 + (_1 - h[1]) * g * g
        step = g / (math.sqrt(s1) + h[2])
        if h[4] != 0:
            s2 = h[4] * s2 + step
            step = s2
        return theta - lr * step, s1, s2
    if h[5] != 0:
        theta = theta - lr * h[4] * theta
    else:
        g = g + h[4] * theta
    s1 = h[1] * s1 + (_1 - h[1]) * g
    s2 = h[2] * s2 + (_1 - h[2]) * g * g
    return theta - lr * (s1 / h[6]) / (math.sqrt(s2 / h[7]) + h[3]), s1, s2


# the recurrent cells (compiler/kinds/recurrent.py), one unit of one sample at one step; the
# pre-activations come in with both biases added (GRU's candidate apart: xn = W_in x + b_in and
# hn = W_hn h + b_hn, which its reset gate scales)
RNN_CELL, LSTM_CELL, GRU_CELL = range(3)
CELL_CODES = {"rnn": RNN_CELL, "lstm": LSTM_CELL, "gru": GRU_CELL}  # by the kind's `cell`


@scalar
def lstm_cell(zi, zf, zg, zo, c_prev):
    """(i, f, g, o, c, h): the gates from their pre-activations, c = f c_prev + i g and
    h = o tanh(c)."""
    i = sigmoid(zi)
    f = sigmoid(zf)
    g = tanh(zg)
    o = sigmoid(zo)
    c = f * c_prev + i * g
    return i, f, g, o, c, o * tanh(c)


@scalar
def lstm_cell_grad(i, f, g, o, c, c_prev, dh, dc):
    """(dzi, dzf, dzg, dzo, dc_prev) from dh = dL/dh_t and dc = dL/dc_t from the step after:
    the cell's total gradient is dc + dh o (1 - tanh(c)^2)."""
    tc = tanh(c)
    dc = dc + dh * o * (_1 - tc * tc)
    return (dc * g * i * (_1 - i), dc * c_prev * f * (_1 - f), dc * i * (_1 - g * g),
            dh * tc * o * (_1 - o), dc * f)


@scalar
def gru_cell(ar, az, xn, hn, h_prev):
    """(r, z, n, h): r, z = sigmoid of their pre-activations, n = tanh(xn + r hn),
    h = (1 - z) n + z h_prev."""
    r = sigmoid(ar)
    z = sigmoid(az)
    n = tanh(xn + r * hn)
    return r, z, n, (_1 - z) * n + z * h_prev


@scalar
def gru_cell_grad(r, z, n, hn, h_prev, dh):
    """(dar, daz, dxn, dhn, dh_prev) from dh = dL/dh_t: the pre-activations' gradients (dxn is
    the candidate's from the input side, dhn = r dxn from the hidden side) and the part of
    dL/dh_prev that does not pass through the weights (z dh)."""
    dxn = dh * (_1 - z) * (_1 - n * n)
    return (dxn * hn * r * (_1 - r), dh * (h_prev - n) * z * (_1 - z), dxn, dxn * r, dh * z)
