"""Shape rules: small pure functions with the formula in plain sight (shared by compiler and runtime)."""
from __future__ import annotations

import math

from netc.dsl.parser import MAX_INT

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
                         hint=f"use a kernel of at most {span}, or more padding (pad={-(-(k - w) // 2)})")
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
    rest = (w - k + 2 * p) % s
    # the input sizes v that fit: v = k - 2p (mod s), the nearest below (if the kernel still fits
    # in it) and above w
    below = w - rest if w - rest >= max(1, k - 2 * p) else None
    above = w + (s - rest if rest else s)
    q = _fitting_pad(w, k, s)
    fixes = []
    if q is not None:
        fixes.append(f"pad={q} (({w} - {k} + 2*{q})/{s} + 1 = {(w - k + 2 * q) // s + 1})")
    sizes = " or ".join(str(v) for v in (below, above) if v and v <= MAX_INT)
    if sizes:
        fixes.append(f"an input {axis} of {sizes}")
    fixes.append("round=floor to drop the last pixels as PyTorch does")
    shown = f"{exact:.4g}"
    if float(shown).is_integer():  # rounded to an integer: show the fraction as one
        whole, part = divmod(w - k + 2 * p, s)
        shown = f"{whole + 1} + {part}/{s}"
    return LayerError(
        f"the stride does not fit: ({w} - {k} + 2*{p})/{s} + 1 = {shown} is not an integer "
        f"(input {axis} {w}, filter {k}, pad {p}, stride {s})",
        key="stride", hint="use " + "; or ".join(fixes))


def _fitting_pad(w, k, s):
    """The smallest pad q < k with (w - k + 2q) % s == 0, or None: 2q = k - w (mod s) has the
    solution q = r * (s + 1)/2 for an odd s, and q = r/2 for an even s where r is even."""
    r = (k - w) % s
    q = r * ((s + 1) // 2) % s if s % 2 else (r // 2 if r % 2 == 0 else None)
    return q if q is not None and q < k else None


def divisors(n: int, most: int = 12) -> str:
    """The divisors of n for a hint: by trial division up to sqrt(n), at most 10^5 trials (past
    those, the list shows `...` between the small divisors and their cofactors), and of a long
    list its first and last `most` / 2."""
    root = math.isqrt(n)
    tried = min(root, 10**5)
    small = [d for d in range(1, tried + 1) if n % d == 0]
    large = [n // d for d in reversed(small) if n // d != d]
    shown = [str(d) for d in small] + (["..."] if tried < root else []) + [str(d) for d in large]
    if len(shown) > most:
        shown = shown[:most // 2] + ["..."] + shown[-(most // 2):]
    return ", ".join(shown)


def window_geometry(h, x):
    """(out_h, out_w, dropped_h, dropped_w) of a CONV or POOL window over x = (C, H, W)."""
    (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
    oh, dh = window_out(x[1], kh, sh, ph, h["round"], axis="height")
    ow, dw = window_out(x[2], kw, sw, pw, h["round"], axis="width")
    return oh, ow, dh, dw


def reached_taps(h, x):
    """The CONV that computes what `h` does over x = (C, H, W) with only the kernel's taps that
    reach the input, or None where every tap does: on a plane smaller than the padded window
    (ResNet-18's last stage on 32x32 inputs: 3x3 pad 1 over 1x1 planes), the outer taps read only
    padding, and their products are zeros. Returns (h', rows, cols): h' with the kernel cut to
    the rows and columns (ranges) of taps that some output reads real input through, and the
    padding before them; the same output size, the same windows' real pixels."""
    (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
    oh, ow, _, _ = window_geometry(h, x)

    def reach(k, s, p, size, out):
        used = [i for i in range(k) if any(0 <= o * s - p + i < size for o in range(out))]
        return (used[0], used[-1] + 1) if used else (0, k)

    (r0, r1), (c0, c1) = reach(kh, sh, ph, x[1], oh), reach(kw, sw, pw, x[2], ow)
    if (r0, r1, c0, c1) == (0, kh, 0, kw) or r0 > ph or c0 > pw:
        return None
    # (the cut windows see the same real pixels; 'exact''s check, which measures the far border
    # from the padding before, could count padding there as pixels left out)
    cut = dict(h, kernel=(r1 - r0, c1 - c0), pad=(ph - r0, pw - c0),
               round="floor" if h["round"] == "exact" else h["round"])
    if window_geometry(cut, x)[:2] != (oh, ow):
        return None
    return cut, range(r0, r1), range(c0, c1)


def onnx_pads(h, x, y):
    """ONNX's pads [top, left, bottom, right] for a CONV/POOL window over x giving y: the
    padding, plus at the bottom and right what round=ceil's last partial window reaches past it
    (ONNX's Conv has no ceil mode)."""
    (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
    eh = max(0, (y[1] - 1) * sh + kh - (x[1] + 2 * ph))
    ew = max(0, (y[2] - 1) * sw + kw - (x[2] + 2 * pw))
    return [ph, pw, ph + eh, pw + ew]


def transposed_out(w, k, s, p, outpad):
    """Output size of a transposed convolution: (W - 1)*S - 2P + K + outpad."""
    out = (w - 1) * s - 2 * p + k + outpad
    if out < 1:
        raise LayerError(f"the output would be empty: ({w} - 1)*{s} - 2*{p} + {k} + {outpad} = "
                         f"{out}", key="pad", hint=f"use less padding (at most pad={(w - 1) * s + k - 1 >> 1})")
    return out


def describe(shape) -> str:
    """A shape in words, as the lecture writes it: an image of HxWxC, a sequence of T steps of
    D, a vector of N."""
    if len(shape) == 3:
        return f"an image of {shape[1]}x{shape[2]}x{shape[0]}"
    if len(shape) == 2:
        return f"a sequence of {shape[0]} steps of {shape[1]}"
    return f"a vector of {shape[0]}"
