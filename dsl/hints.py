"""Friendly messages for slips that a parser state alone cannot tell apart: a layer written in
Keras's or PyTorch's notation, a size written with spaces (`3 x 3`), a character pasted from a
document. Each takes the line of a syntax error and the column it is at, and returns
(column, width, message, hint), or None when the slip is not that one."""
from __future__ import annotations

import re
import unicodedata

# ---- Keras and PyTorch layers -----------------------------------------------------------------
# a framework's layer -> (netc's kind, what its positional arguments are); None: not netc's
# (PyTorch's in_channels, in_features: netc takes them from the layer before)
_LAYERS = {
    "Conv2D": ("CONV", ("filters", "kernel")), "Convolution2D": ("CONV", ("filters", "kernel")),
    "Conv2d": ("CONV", (None, "filters", "kernel")),
    "Conv2DTranspose": ("DECONV", ("filters", "kernel")),
    "ConvTranspose2d": ("DECONV", (None, "filters", "kernel")),
    "Dense": ("FC", ("units",)), "Linear": ("FC", (None, "units")),
    "MaxPool2d": ("POOL max", ("kernel", "stride")),
    "MaxPooling2D": ("POOL max", ("kernel", "stride")),
    "AvgPool2d": ("POOL avg", ("kernel", "stride")),
    "AveragePooling2D": ("POOL avg", ("kernel", "stride")),
    "BatchNorm2d": ("BN", ()), "BatchNorm1d": ("BN", ()), "BatchNormalization": ("BN", ()),
    "Dropout": ("DROPOUT", ("p",)), "ReLU": ("RELU", ()), "Flatten": ("FLATTEN", ()),
    "GlobalAveragePooling2D": ("GAP", ()), "AdaptiveAvgPool2d": ("GAP", ()),
}
# the frameworks' keywords -> netc's
_KEYWORDS = {"kernel_size": "kernel", "pool_size": "kernel", "strides": "stride",
             "stride": "stride", "padding": "pad", "filters": "filters", "out_channels": "filters",
             "units": "units", "out_features": "units", "rate": "p", "p": "p", "activation": "act"}
_NEAR = 100  # how far from an error's column its slip is looked for
_CALL = re.compile(r"((?:[A-Za-z_]\w*\.)*)([A-Za-z_]\w*)[ \t]*\(")
_VALUE = re.compile(r"""\s*(?:(\d+)|(\d*\.\d+(?:e-?\d+)?)|[(\[]\s*(\d+)\s*,\s*(\d+)\s*,?\s*[)\]]
                        |['"](\w+)['"])\s*$""", re.X)


def framework_call(line: str, column: int):
    """`Conv2D(64, 3)`, `nn.Conv2d(1, 6, 5)`, `CONV(64, 3)`: the netc spelling."""
    start = max(0, column - 1 - _NEAR)  # a call near the column (in bounded time on any line)
    for m in _CALL.finditer(line, start, min(len(line), column + _NEAR)):
        if not m.start() <= column - 1 <= m.end() - 1:
            continue
        prefix, name = m.groups()
        if name[0].islower() and not prefix or len(prefix + name) > 40:
            return None  # a block call, or no layer's name
        args, end = _arguments(line, m.end())
        shown = line[m.start():end].strip()
        shown = shown if len(shown) <= 30 else f"{prefix}{name}(...)"  # the line is shown too
        if name in _LAYERS:
            where = "PyTorch" if re.search("[0-9]d$|^Linear$", name) else (
                "Keras" if re.search("2D|^Dense$|Normalization|Transpose", name) else
                "Keras and PyTorch")
            return (m.start() + 1, len(prefix) + len(name), f"`{shown}` is {where} notation",
                    f"in netc: `{_spelling(name, args)}`")
        hint = ("a layer's arguments follow its kind, without parentheses or commas: "
                "`CONV 3x3 64`, `FC 10`, `POOL max 2x2/2`")
        if name.isupper():
            return (m.end(), 1, f"`{name}(`: netc layers take no parentheses", hint)
        return (m.start() + 1, len(prefix) + len(name), f"`{shown}` is Python, not the .net "
                "language", hint + "; a block is used as `name(args)` with a lower-case name")
    return None


def _arguments(line, start):
    """The top-level arguments of the call whose `(` ends at `start`, and where the call ends."""
    depth, args, cur = 0, [], ""
    for i in range(start, len(line)):
        ch = line[i]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            if depth == 0:
                return [a for a in args + [cur] if a.strip()], i + 1
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(cur)
            cur = ""
            continue
        cur += ch
    return [a for a in args + [cur] if a.strip()], len(line)


def _spelling(name, args):
    """What netc writes for a framework's layer with these arguments (the example's numbers
    where an argument is not a plain number)."""
    kind, slots = _LAYERS[name]
    got = {}
    for i, text in enumerate(args):
        key, _, value = text.rpartition("=") if re.match(r"\s*\w+\s*=", text) else ("", "", text)
        key = _KEYWORDS.get(key.strip()) if key else (slots[i] if i < len(slots) else None)
        m = _VALUE.match(value)
        if key and m:
            n, f, a, b, word = m.groups()
            got[key] = n or f or (f"{a}x{b}" if a else word)
    example = {"CONV": {"kernel": "3", "filters": "64"}, "DECONV": {"kernel": "2", "filters": "64"},
               "FC": {"units": "10"}, "POOL max": {"kernel": "2"}, "POOL avg": {"kernel": "2"},
               "DROPOUT": {"p": "0.5"}}.get(kind, {})
    h = {**example, **got}
    text = kind
    if "kernel" in h:
        k = h["kernel"] if "x" in h["kernel"] else f"{h['kernel']}x{h['kernel']}"
        default = k.split("x")[0] if kind.startswith("POOL") else "1"  # as in both frameworks
        stride = h.get("stride", default).split("x")[0]
        text += f" {k}" + (f"/{stride}" if stride != default else "")
    for key in ("filters", "units", "p"):
        if key in h:
            text += f" {h[key]}"
    if h.get("pad", "valid") not in ("valid", "0"):
        text += f" pad={h['pad']}"
    if h.get("act", "linear") not in ("linear", "None"):
        text += f" act={h['act']}"
    return text


# ---- sizes written with spaces -----------------------------------------------------------------
_SPACED = re.compile(r"([A-Z][A-Z0-9_]*)((?:[ \t]+[a-z]\w*)?)[ \t]+(\d+)([ \t]*[x×][ \t]*)(\d+)"
                     r"[ \t]*$")


def spaced_size(line: str, column: int):
    """`CONV 3 x 3 64`: the x repeats the layer, and what follows is an error."""
    m = _SPACED.search(line[max(0, column - 1 - _NEAR):column - 1])
    if not m:
        return None
    kind, word, a, x, b = m.groups()
    if a != b and not (x[0] in " \t" and x[-1] in " \t"):
        return None  # `FC 10 x2 64`: a repeat with arguments after it (the catalogue's)
    rest = re.match(r"[^-→\]|#\n]*", line[column - 1:]).group().rstrip()
    fixed = f"{kind}{word} {a}x{b}" + ("" if rest.startswith("/") or not rest else " ") + rest
    at = max(0, column - 1 - _NEAR) + m.start(3)
    return (at + 1, m.end(5) - m.start(3), f"`{a}{m.group(4)}{b}` is read as a repeat "
            f"(x{b}), so `{rest.split()[0] if rest else '...'}` cannot follow it",
            f"a size is written without spaces: `{fixed}`")


# ---- pasted characters -------------------------------------------------------------------------
_QUOTES = "\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb"


def odd_character(ch: str):
    """(message, hint) for a character the grammar does not read."""
    if ch in _QUOTES:
        return (f"unexpected character '{ch}' (a typographic quote)",
                'strings take straight double quotes: `data="train.npz"`')
    if ch in "'\u2018\u2019`":
        return f"unexpected character {ch!r}", 'strings take double quotes: `data="train.npz"`'
    if ch == "\u2212":
        return ("unexpected character '\u2212' (U+2212 MINUS SIGN)",
                "write `-`: a separator between layers, or the sign of an exponent (1e-3)")
    if ord(ch) < 128:
        return None
    name = unicodedata.name(ch, "a character with no name")
    return (f"unexpected character {ch!r} (U+{ord(ch):04X} {name})",
            "outside comments and strings netc reads ASCII, plus the separators → and the "
            "pasted dashes and arrows README lists: was it pasted from a document? Retype it")
