"""Repeated branch units of the top-level chain as parametrised blocks, as the zoo writes them
(`block res(c, s=1) = RES[CONV 3x3/s c - BN - RELU - CONV 3x3 c - BN]`, `res(128, s=2)`).

Units whose texts agree but for their filters, units and strides (render.Template) make one
block. A number that differs among them becomes a parameter: channels c, c2, ... (or a multiple
of one, `c*4`), strides s, s2, ... (default 1 where some unit has 1); numbers they share stay
written. A run of identical units alone stays inline (`DENSE[...] x6`)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .render import BLOCK_NAMES, Bound, Plain, Template, element
from .structure import Unit


@dataclass
class Param:
    name: str
    role: str       # "c": a channel or unit count; "s": a stride
    values: tuple   # per unit
    default: int | None = None


def find(elements, dflt) -> tuple:
    """(the block definitions' lines, {index in elements: the call written there})."""
    groups = {}
    for i, el in enumerate(elements):
        if isinstance(el, Unit):
            t = Template()
            groups.setdefault(element(el, t, dflt), []).append((i, t.values))
    defs, calls, used = [], {}, Counter()
    for members in groups.values():
        idx = [i for i, _ in members]
        texts = {element(elements[i], Plain(), dflt) for i in idx}
        if len(idx) < 2 or (len(texts) == 1 and idx == list(range(idx[0], idx[0] + len(idx)))):
            continue
        base = BLOCK_NAMES[elements[idx[0]].kind]
        used[base] += 1
        name = base if used[base] == 1 else f"{base}{used[base]}"
        params, exprs = parameters([values for _, values in members])
        signature = ", ".join(p.name + ("" if p.default is None else f"={p.default}")
                              for p in params)
        defs.append(f"block {name}({signature}) = "
                    + element(elements[idx[0]], Bound(exprs), dflt, split=True))
        for k, i in enumerate(idx):
            args = [str(p.values[k]) for p in params if p.default is None]
            args += [f"{p.name}={p.values[k]}" for p in params
                     if p.default is not None and p.values[k] != p.default]
            calls[i] = f"{name}({', '.join(args)})"
    return defs, calls


def parameters(rows) -> tuple:
    """(the parameters, per recorded number its expression or None to write it) from each
    unit's recorded (role, value) list."""
    params, exprs, count = [], [], Counter()
    for j, (role, _) in enumerate(rows[0]):
        col = tuple(row[j][1] for row in rows)
        if len(set(col)) == 1:
            exprs.append(None)
            continue
        same = next((p for p in params if p.values == col), None)
        if same is not None:
            exprs.append(same.name)
            continue
        multiple = next((f"{p.name}*{col[0] // p.values[0]}" for p in params
                         if role == p.role == "c" and _multiple(col, p.values)), None)
        if multiple is not None:
            exprs.append(multiple)
            continue
        count[role] += 1
        name = role if count[role] == 1 else f"{role}{count[role]}"
        params.append(Param(name, role, col, 1 if role == "s" and 1 in col else None))
        exprs.append(name)
    params.sort(key=lambda p: p.default is not None)  # those without a default come first
    return params, exprs


def _multiple(col, base) -> bool:
    k = col[0] // base[0] if base[0] else 0
    return k >= 2 and all(c == b * k for c, b in zip(col, base))
