"""The structure (structure.py) as .net text in the lecture's notation: a defaults line for what
every CONV (FC) shares, repeated branch units as parametrised blocks (`block res(c, s=1) =
RES[...]`, called `res(128, s=2)`), identical consecutive layers and sub-chains folded (`CONV
3x3 64 x2`, `[CONV 3x3 64 - BN - RELU]x2`), lines wrapped at ~100 columns after a separator.

Numbers a block may take as parameters (filters, units, strides) go through a formatter: Plain
writes them, Template records them in order (units whose texts then agree differ only in those
numbers), Bound writes a block's parameter in place of each that varies."""
from __future__ import annotations

import re

from netc.compiler import registry
from netc.compiler.kinds.activation import Dropout, Elu, Leaky, Maxout
from netc.compiler.kinds.conv import Conv, Deconv
from netc.compiler.kinds.dense import FullyConnected, Output
from netc.compiler.kinds.join import Concat, Identity, Mean
from netc.compiler.kinds.norm import BatchNorm, GroupNorm, LocalResponseNorm
from netc.compiler.kinds.pool import Pool, Upsample
from netc.compiler.kinds.recurrent import Gru, Lstm, Rnn
from netc.compiler.registry import LayerError
from netc.compiler.shapes import window_geometry

from .structure import Ident, Item, items

WIDTH = 100
BLOCK_NAMES = {"RES": "res", Concat.name: "inception", "DENSE": "dense", Mean.name: "join"}
# kinds whose keys are written positionally after the kind (`DROPOUT 0.5`, `LSTM 64`)
POSITIONAL = {Dropout.name: ("p",), LocalResponseNorm.name: ("size",), GroupNorm.name: ("groups",),
              Maxout.name: ("pieces",), Upsample.name: ("scale", "mode"), Leaky.name: ("slope",),
              Elu.name: ("alpha",),
              Rnn.name: ("units",), Lstm.name: ("units",), Gru.name: ("units",)}


class Plain:
    def num(self, value, role):
        return str(value)


class Template:
    def __init__(self):
        self.values = []

    def num(self, value, role):
        self.values.append((role, value))
        return f"<{len(self.values) - 1}>"


class Bound:
    def __init__(self, exprs):
        self.exprs, self.i = exprs, 0

    def num(self, value, role):
        expr = self.exprs[self.i]
        self.i += 1
        return str(value) if expr is None else expr


# ---- values and layers ------------------------------------------------------------------------
def value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        return "x".join(map(str, v))
    return repr(v) if isinstance(v, float) else str(v)


def _pair(p) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


def _pad_words(kernel, pad) -> set:
    """The ways a CONV's padding may be written."""
    words = {_pair(pad)}
    if kernel[0] % 2 and kernel[1] % 2 and pad == ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2):
        words.add("same")
    return words


def token(it: Item, fmt, dflt) -> str:
    if it.kind in (Conv.name, Deconv.name):
        return _filters(it, fmt, dflt.get(it.kind, {}))
    if it.kind in (FullyConnected.name, Output.name):
        return _fc(it, fmt, dflt.get(it.kind, {}))
    if it.kind == Pool.name:
        h = it.hyper
        text = f"POOL {h['mode']} {value(h['kernel'])}"
        stride = h["stride"]
        square = stride[0] == stride[1]
        text += f"/{fmt.num(stride[0], 's')}" if square else f" stride={value(stride)}"
        text += f" pad={_pair(h['pad'])}" if h["pad"] != (0, 0) else ""
        return text + (" round=ceil" if h["round"] == "ceil" and _ceil_counts(it) else "")
    return _generic(it, dflt.get(it.kind, {}))


def _filters(it, fmt, d):
    h, parts = it.hyper, [it.kind]
    (sh, sw), kernel = h["stride"], value(h["kernel"])
    s = fmt.num(sh, "s") if sh == sw else None
    if d.get("kernel") != kernel:
        parts.append(kernel + (f"/{s}" if s is not None and s != "1" else ""))
    elif s is not None and s != "1":
        parts.append(f"stride={s}")
    if s is None:
        parts.append(f"stride={value(h['stride'])}")
    parts.append(fmt.num(h["filters"], "c"))
    if it.kind == Conv.name:
        words = _pad_words(h["kernel"], h["pad"])
        pad = d["pad"] if d.get("pad") in words else "same" if "same" in words else _pair(h["pad"])
        if pad != d.get("pad", "0"):
            parts.append(f"pad={pad}")
        if h["round"] == "ceil" or (h["round"] == "floor" and pad != "same" and not _exact(it)):
            parts.append(f"round={h['round']}")
    else:
        parts += [f"{k}={_pair(h[k])}" for k in ("pad", "outpad") if h[k] != (0, 0)]
    if h["groups"] != 1:
        parts.append(f"groups={h['groups']}")
    return " ".join(parts + _flags(h, d))


def _exact(it) -> bool:
    """Whether the CONV's stride fits its input exactly (round=floor need not be written)."""
    try:
        window_geometry({**it.hyper, "round": "exact"}, it.info.in_shapes[0])
        return True
    except LayerError:
        return False


def _ceil_counts(it) -> bool:
    """Whether a POOL's round=ceil gives another size than floor (else it is left out)."""
    x = it.info.in_shapes[0]
    floor = window_geometry({**it.hyper, "round": "floor"}, x)
    return window_geometry(it.hyper, x)[:2] != floor[:2]


def _flags(h, d) -> list:
    out = []
    if value(h["bias"]) != d.get("bias", "true"):
        out.append(f"bias={value(h['bias'])}")
    if h["act"] != d.get("act", "none"):
        out.append(f"act={h['act']}")
    return out


def _fc(it, fmt, d):
    h = it.hyper
    if it.kind == Output.name:
        act = f" {h['act']}" if h["act"] != "none" else ""
        return f"OUT {fmt.num(h['units'], 'c')}{act}" + (" bias=false" if not h["bias"] else "")
    return " ".join([f"FC {fmt.num(h['units'], 'c')}"] + _flags(h, d))


def _generic(it, d):
    kind, h = registry.get(it.kind), it.hyper
    pos = POSITIONAL.get(it.kind, ())
    parts = [it.kind]
    for key, k in kind.keys.items():
        default = k.parse(k.default, key) if k.default is not None else None
        if key in pos and not (it.kind in (Leaky.name, Elu.name) and h[key] == default):
            parts.append(value(h[key]))
        elif key in h and key not in pos and value(h[key]) != d.get(key, value(default)):
            parts.append(f"{key}={value(h[key])}")
    return " ".join(parts)


# ---- units and chains -------------------------------------------------------------------------
def element(el, fmt, dflt, split=False) -> str:
    """An element's text; `split`: a unit's parallel branches a line each (a block's body)."""
    if isinstance(el, Ident):
        return Identity.name
    if isinstance(el, Item):
        return token(el, fmt, dflt)
    inner = [chain(c, fmt, dflt) for c in el.chains]
    if split and len(inner) > 1:
        text = f"{el.kind}[\n    " + " |\n    ".join(inner) + "]"
    else:
        text = f"{el.kind}[" + " | ".join(inner) + "]"
    if el.kind == "RES" and el.act != "relu":
        text += f" act={el.act}"
    return text


def chain(elements, fmt, dflt) -> str:
    return " - ".join(fold([element(el, fmt, dflt) for el in elements]))


def fold(texts: list) -> list:
    """Consecutive repeats folded, greedily: at each place the run (1 to 32 elements) repeated
    the most elements' worth is written once with xN (`CONV 64 x2`, `[A - B]x3`)."""
    out, i, n = [], 0, len(texts)
    while i < n:
        length, count = 1, 1
        for size in range(1, min(32, (n - i) // 2) + 1):
            times = 1
            while texts[i + times * size:i + (times + 1) * size] == texts[i:i + size]:
                times += 1
            if times > 1 and size * times > (length * count if count > 1 else 0):
                length, count = size, times
        unit = texts[i:i + length]
        if count == 1:
            out.append(unit[0])
        elif length == 1:
            out.append(f"{unit[0]} x{count}")
        else:
            out.append(f"[{' - '.join(fold(unit))}]x{count}")
        i += length * count
    return out


def defaults(elements) -> dict:
    """kind -> {key: written value} for what every CONV (every FC) shares, where it helps."""
    out = {}
    convs = [el.hyper for el in items(elements) if isinstance(el, Item) and el.kind == Conv.name]
    if len(convs) >= 2:
        d = {}
        kernels = {value(h["kernel"]) for h in convs}
        if len(kernels) == 1 and len(convs) >= 3:
            d["kernel"] = kernels.pop()
        pads = set.intersection(*(_pad_words(h["kernel"], h["pad"]) for h in convs))
        if "0" not in pads and pads:
            d["pad"] = "same" if "same" in pads else sorted(pads)[0]
        d.update(_shared(convs))
        out[Conv.name] = d
    fcs = [el.hyper for el in items(elements)
           if isinstance(el, Item) and el.kind == FullyConnected.name]
    if len(fcs) >= 2:
        out[FullyConnected.name] = _shared(fcs)
    norms = [el.hyper for el in items(elements)
             if isinstance(el, Item) and el.kind == BatchNorm.name]
    eps = {h["eps"] for h in norms}
    if len(norms) >= 2 and len(eps) == 1 and eps != {1e-5}:
        out[BatchNorm.name] = {"eps": value(eps.pop())}
    return {k: v for k, v in out.items() if v}


def _shared(hypers) -> dict:
    d = {}
    if not any(h["bias"] for h in hypers):
        d["bias"] = "false"
    acts = {h["act"] for h in hypers}
    if len(acts) == 1 and "none" not in acts:
        d["act"] = acts.pop()
    return d


def defaults_line(kind, d) -> str:
    parts = [d["kernel"]] if "kernel" in d else []
    parts += [f"{k}={v}" for k, v in d.items() if k != "kernel"]
    return f"{kind}: " + " ".join(parts)


def wrap(line: str, indent: str = "") -> list:
    """A long line cut after its separators (` -`, ` |`) into lines of about WIDTH columns."""
    pieces = re.split(r"(?<= -) |(?<= \|) ", line)
    lines, cur = [], pieces[0]
    for p in pieces[1:]:
        if len(cur) + 1 + len(p) > WIDTH:
            lines.append(cur)
            cur = indent + p
        else:
            cur += " " + p
    return lines + [cur]
