"""Shape rules: small pure functions with the formula in plain sight (shared by compiler and runtime)."""
from __future__ import annotations

import math

from .registry import LayerError


def resolve_pad(pad, kernel, key="pad"):
    """pad=N | HxW | same | valid | full -> (ph, pw). `same` keeps the size at stride 1."""
    if pad == "valid":
        return (0, 0)
    if pad == "full":
        return (kernel[0] - 1, kernel[1] - 1)
    if pad == "same":
        if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
            raise LayerError(f"pad=same needs an odd kernel to pad both sides equally; "
                             f"received kernel {kernel[0]}x{kernel[1]}", key=key,
                             hint="give the padding as a number, e.g. pad=1")
        return ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
    return pad


def window_out(w, k, s, p, rounding, what="the input", axis="width"):
    """Output size of a sliding window: (W - F + 2P)/S + 1.

    rounding: 'exact' (an error if real input pixels would never be seen: a stride that does not
    fit), 'floor' (drop what does not fit, as PyTorch), 'ceil' (PyTorch's ceil_mode: a last,
    partial window, unless it would start in the padding). Returns (out, dropped) where dropped
    counts the input pixels at the border that no window sees."""
    span = w + 2 * p
    if k > span:
        raise LayerError(f"the {k}x{k} kernel is larger than {what} of {axis} {w}"
                         + (f" padded to {span}" if p else ""), key="kernel",
                         hint=f"use a kernel of at most {span}, or more padding (pad={math.ceil((k - w) / 2)})")
    rest = (span - k) % s
    if rounding == "ceil":
        out = -(-(span - k) // s) + 1
        if (out - 1) * s >= w + p:  # the last window would start inside the right padding
            out -= 1
        return out, 0
    out = (span - k) // s + 1
    dropped = max(0, rest - p)
    if rounding == "exact" and dropped:
        raise _stride_error(w, k, s, p, axis)
    return out, dropped


def _stride_error(w, k, s, p, axis):
    exact = (w - k + 2 * p) / s + 1
    pads = [q for q in range(0, k) if (w - k + 2 * q) % s == 0]
    below = next(v for v in range(w, 0, -1) if (v - k + 2 * p) % s == 0 and v + 2 * p >= k) \
        if any((v - k + 2 * p) % s == 0 and v + 2 * p >= k for v in range(w, 0, -1)) else None
    above = next(v for v in range(w + 1, w + s + 1) if (v - k + 2 * p) % s == 0)
    fixes = []
    if pads:
        q = pads[0]
        fixes.append(f"pad={q} (({w} - {k} + 2*{q})/{s} + 1 = {(w - k + 2 * q) // s + 1})")
    sizes = " or ".join(str(v) for v in (below, above) if v)
    fixes.append(f"an input {axis} of {sizes}")
    fixes.append("round=floor to drop the last pixels as PyTorch does")
    return LayerError(
        f"the stride does not fit: ({w} - {k} + 2*{p})/{s} + 1 = {exact:.4g} is not an integer "
        f"(input {axis} {w}, filter {k}, pad {p}, stride {s})",
        key="stride", hint="use " + "; or ".join(fixes))


def window_geometry(h, x):
    """(out_h, out_w, dropped_h, dropped_w) of a CONV or POOL window over x = (C, H, W)."""
    (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
    oh, dh = window_out(x[1], kh, sh, ph, h["round"], axis="height")
    ow, dw = window_out(x[2], kw, sw, pw, h["round"], axis="width")
    return oh, ow, dh, dw


def transposed_out(w, k, s, p, outpad):
    """Output size of a transposed convolution: (W - 1)*S - 2P + K + outpad."""
    out = (w - 1) * s - 2 * p + k + outpad
    if out < 1:
        raise LayerError(f"the output would be empty: ({w} - 1)*{s} - 2*{p} + {k} + {outpad} = "
                         f"{out}", key="pad", hint=f"use less padding (at most pad={(w - 1) * s + k - 1 >> 1})")
    return out
