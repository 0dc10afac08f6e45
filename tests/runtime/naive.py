"""Plain NumPy reference implementations, written with loops and formulas, independent of the
kernels (STUMPY's tests/naive.py). Keyed by layer kind; every registered kind needs one."""
import numpy as np


def act(name, z, slope=0.01):
    return {"none": lambda: z, "relu": lambda: np.maximum(z, 0),
            "leaky": lambda: np.where(z > 0, z, slope * z),
            "prelu": lambda: np.where(z > 0, z, slope * z),
            "elu": lambda: np.where(z > 0, z, np.exp(z) - 1),
            "sigmoid": lambda: 1 / (1 + np.exp(-z)), "tanh": lambda: np.tanh(z),
            "softmax": lambda: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)}[name]()


def conv(x, w, b, stride, pad, groups, out_hw=None):
    """out_hw: the output's size where round=ceil makes it larger than the formula's floor; the
    last windows then reach past the padding, into zeros."""
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0] + kh), (pad[1], pad[1] + kw)))
    oh = (h + 2 * pad[0] - kh) // stride[0] + 1
    ow = (wd + 2 * pad[1] - kw) // stride[1] + 1
    oh, ow = out_hw or (oh, ow)
    y = np.zeros((n, f, oh, ow))
    fg = f // groups
    for o in range(f):
        g = o // fg
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, i * stride[0]:i * stride[0] + kh,
                           j * stride[1]:j * stride[1] + kw]
                y[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3)) + (b[o] if b is not None else 0)
    return y


def deconv(x, w, b, stride, pad, groups, out_hw):
    """The transposed convolution by its definition: each input pixel adds its value times the
    kernel into the output patch at (y*S - P, x*S - P); out_hw includes outpad."""
    n, c, h, wd = x.shape
    _, fg, kh, kw = w.shape
    oh, ow = out_hw
    y = np.zeros((n, fg * groups, oh + kh + 2 * pad[0], ow + kw + 2 * pad[1]))
    cg = c // groups
    for ci in range(c):
        g = ci // cg
        for i in range(h):
            for j in range(wd):
                y0, x0 = i * stride[0], j * stride[1]
                y[:, g * fg:(g + 1) * fg, y0:y0 + kh, x0:x0 + kw] += \
                    x[:, ci, i, j][:, None, None, None] * w[ci][None]
    y = y[:, :, pad[0]:pad[0] + oh, pad[1]:pad[1] + ow]
    return y + (b.reshape(1, -1, 1, 1) if b is not None else 0)


def pool(x, mode, k, s, pad, oh, ow):
    n, c, h, w = x.shape
    fill = -np.inf if mode == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0] + k[0]), (pad[1], pad[1] + k[1])),
                constant_values=fill)
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]]
            y[:, :, i, j] = win.max(axis=(2, 3)) if mode == "max" else win.sum(axis=(2, 3)) / (k[0] * k[1])
    return y


def lrn(x, size, alpha, beta, k):
    y = np.empty_like(x)
    c = x.shape[1]
    for ch in range(c):
        lo, hi = max(0, ch - size // 2), min(c, ch + (size - 1) // 2 + 1)
        s = k + alpha / size * (x[:, lo:hi] ** 2).sum(axis=1)
        y[:, ch] = x[:, ch] / s ** beta
    return y


def batchnorm(x, gamma, beta, eps, mean=None, var=None):
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    if mean is None:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(shape) \
        + beta.reshape(shape)


def groupnorm(x, groups, gamma, beta, eps):
    """Each sample's channels in `groups` groups, each group normalized over its values."""
    y = np.empty_like(x)
    n, c = x.shape[:2]
    per = c // groups
    for i in range(n):
        for g in range(groups):
            v = x[i, g * per:(g + 1) * per]
            y[i, g * per:(g + 1) * per] = (v - v.mean()) / np.sqrt(v.var() + eps)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return y * gamma.reshape(shape) + beta.reshape(shape)


def upsample(x, s, mode):
    """Nearest by repetition; bilinear from the source position (o + 1/2)/s - 1/2 (clamped at 0)
    of each output row and column, as two 1-D interpolation matrices."""
    if mode == "nearest":
        return x.repeat(s, axis=2).repeat(s, axis=3)

    def matrix(size):
        m = np.zeros((size * s, size))
        for o in range(size * s):
            src = max((o + 0.5) / s - 0.5, 0.0)
            i0 = int(np.floor(src))
            i1 = min(i0 + 1, size - 1)
            m[o, i0] += 1 - (src - i0)
            m[o, i1] += src - i0
        return m
    return np.einsum("yi,ncij,xj->ncyx", matrix(x.shape[2]), x, matrix(x.shape[3]))


def maxout(x, pieces):
    out = np.empty((x.shape[0], x.shape[1] // pieces) + x.shape[2:])
    for c in range(out.shape[1]):
        out[:, c] = x[:, c * pieces:(c + 1) * pieces].max(axis=1)
    return out


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def recurrent(kind, x, p, h):
    """RNN/LSTM/GRU over x (N, T, D) as PyTorch's nn.RNN/LSTM/GRU write them, one step at a
    time: gate orders i, f, g, o and r, z, n; the reverse direction reads t = T-1 .. 0."""
    n, steps, _ = x.shape
    hid = h["units"]
    outs, lasts = [], []
    for sfx in ("", "_reverse")[:2 if h["bidir"] else 1]:
        w_ih, w_hh = p["weight_ih" + sfx], p["weight_hh" + sfx]
        b_ih = p.get("bias_ih" + sfx, np.zeros(w_ih.shape[0]))
        b_hh = p.get("bias_hh" + sfx, np.zeros(w_ih.shape[0]))
        hs, c = np.zeros((n, hid)), np.zeros((n, hid))
        out = np.zeros((n, steps, hid))
        for t in (range(steps - 1, -1, -1) if sfx else range(steps)):
            gi, gh = x[:, t] @ w_ih.T + b_ih, hs @ w_hh.T + b_hh
            if kind == "RNN":
                hs = act(h["act"], gi + gh)
            elif kind == "LSTM":
                i, f, g, o = np.split(gi + gh, 4, axis=1)
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                hs = _sigmoid(o) * np.tanh(c)
            else:
                (ir, iz, i_n), (hr, hz, h_n) = np.split(gi, 3, axis=1), np.split(gh, 3, axis=1)
                r, z = _sigmoid(ir + hr), _sigmoid(iz + hz)
                cand = np.tanh(i_n + r * h_n)
                hs = (1 - z) * cand + z * hs
            out[:, t] = hs
        outs.append(out)
        lasts.append(hs)
    return np.concatenate(outs, axis=2) if h["return"] == "seq" else np.concatenate(lasts, axis=1)


def layer(node, p, x, train):
    """The reference output of one compiled node on input x (a list for joins)."""
    h, kind = node.hyper, node.kind
    if kind == "CONV":
        z = conv(x, p["weight"], p.get("bias"), h["stride"], h["pad"], h["groups"],
                 node.out_shape[1:])
        return act(h["act"], z, p["slope"].reshape(1, -1, 1, 1) if "slope" in p else 0.01)
    if kind == "DECONV":
        z = deconv(x, p["weight"], p.get("bias"), h["stride"], h["pad"], h["groups"],
                   node.out_shape[1:])
        return act(h["act"], z, p["slope"].reshape(1, -1, 1, 1) if "slope" in p else 0.01)
    if kind == "OUT" and h["per"] == "pixel":  # the FC at every pixel, softmax over its units
        z = np.einsum("uc,nchw->nuhw", p["weight"], x)
        z = z + (p["bias"].reshape(1, -1, 1, 1) if "bias" in p else 0)
        return act(h["act"], z)
    if kind in ("FC", "OUT") and x.ndim == 3:  # a sequence: the same FC at every step
        n, t, _ = x.shape
        z = np.einsum("ud,ntd->ntu", p["weight"], x) + p.get("bias", 0)
        steps = z.reshape(n * t, -1)  # the activation (a softmax too) over each step's units
        return act(h["act"], steps, p.get("slope", 0.01)).reshape(n, t, -1)
    if kind in ("FC", "OUT"):
        z = x.reshape(len(x), -1) @ p["weight"].T + p.get("bias", 0)
        return act(h["act"], z, p.get("slope", 0.01))
    if kind == "POOL":
        return pool(x, h["mode"], h["kernel"], h["stride"], h["pad"], *node.out_shape[1:])
    if kind == "GAP":
        return x.mean(axis=(2, 3))
    if kind == "FLATTEN":
        return x.reshape(len(x), -1)
    if kind == "BN":
        if train:
            return batchnorm(x, p["weight"], p["bias"], h["eps"])
        return batchnorm(x, p["weight"], p["bias"], h["eps"], p["running_mean"], p["running_var"])
    if kind in ("LN", "IN", "GN"):
        groups = {"LN": 1, "IN": x.shape[1]}.get(kind) or h["groups"]
        return groupnorm(x, groups, p["weight"], p["bias"], h["eps"])
    if kind == "LRN":
        return lrn(x, h["size"], h["alpha"], h["beta"], h["k"])
    if kind == "UPSAMPLE":
        return upsample(x, h["scale"], h["mode"])
    if kind == "ID":
        return x
    if kind == "MAXOUT":
        return maxout(x, h["pieces"])
    if kind == "DROPOUT":
        return x  # evaluation mode; training is checked statistically
    if kind == "PRELU":
        return act("prelu", x, p["weight"].reshape((1, -1) + (1,) * (x.ndim - 2)))
    if kind == "LEAKY":
        return act("leaky", x, h["slope"])
    if kind in ("RELU", "ELU", "SIGMOID", "TANH", "SOFTMAX"):
        return act(kind.lower(), x)
    if kind == "ADD":
        return act(h["act"], sum(x))
    if kind == "MEAN":
        return sum(x) / len(x)  # evaluation, or training without drop_path
    if kind == "CONCAT":
        return np.concatenate(x, axis=1)
    if kind in ("RNN", "LSTM", "GRU"):
        return recurrent(kind, x, p, h)
    if kind == "INPUT":
        return x
    raise KeyError(f"no NumPy reference for kind {kind}: add one to tests/runtime/naive.py")
