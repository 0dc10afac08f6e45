"""Text tables that fit a width, as Keras's and torchinfo's summaries do: long cells wrap (layer
names at their dots, labels at spaces) down to a floor, then the least important columns are left
out and the caller says which."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass

SEP = "  "
FLOORS = (16, 8)  # how narrow a wrapping column may get: before, then after leaving columns out


@dataclass(frozen=True)
class Column:
    title: str
    right: bool = False   # numbers align right
    wrap: str = ""        # where a long cell may break ("." or " "); "" never
    drop: int = 0         # 0 always shown; otherwise the order in which columns are left out


def wrap_cell(text: str, width: int, sep: str) -> list[str]:
    """`text` in lines of at most `width`, broken after `sep` where possible, else anywhere."""
    if len(text) <= width or not sep:
        return [text]
    parts = text.split(sep)
    pieces = [p + sep for p in parts[:-1]] + [parts[-1]]
    lines, cur = [], ""
    for piece in pieces:
        if cur and len(cur + piece.rstrip()) > width:
            lines.append(cur.rstrip())
            cur = ""
        cur += piece
        while len(cur.rstrip()) > width:
            lines.append(cur[:width])
            cur = cur[width:]
    if cur.strip() or not lines:
        lines.append(cur.rstrip())
    return lines


def _widths(columns, lengths, keep, width, floor, budget):
    """Widths of the kept columns within `width`, narrowing a wrapping column a character at a
    time, the one where the fewest cells would wrap first; None if the floor comes first or more
    than `budget` rows would wrap."""
    w = {i: max(lengths[i]) for i in keep}
    excess = sum(w.values()) + len(SEP) * (len(keep) - 1) - width
    while excess > 0:
        narrow = [i for i in keep if columns[i].wrap
                  and w[i] > max(floor, len(columns[i].title))]
        if not narrow:
            return None
        i = min(narrow, key=lambda j: (sum(n >= w[j] for n in lengths[j]), -w[j]))
        w[i] -= 1
        excess -= 1
    wrapped = sum(any(lengths[i][r] > w[i] for i in keep) for r in range(1, len(lengths[0])))
    return w if wrapped <= budget else None


def fit(columns, rows, width: int | None):
    """The kept column indices, their widths, and the titles left out, for `width` characters
    (None: no limit). When nothing fits, the narrowest layout."""
    lengths = [[len(str(c)) for c in col] for col in zip([c.title for c in columns], *rows)]
    keep = list(range(len(columns)))
    if not width:
        return keep, {i: max(n) for i, n in enumerate(lengths)}, []
    order = sorted((c.drop, i) for i, c in enumerate(columns) if c.drop)
    tries = [[i for i in keep if i not in {j for _, j in order[:k]}] for k in range(len(order) + 1)]
    # first a few wrapped rows and as many columns as fit, then every row may wrap
    few = max(2, len(rows) // 10)
    for floor, budget in ((FLOORS[0], few), (FLOORS[0], len(rows)), (FLOORS[1], len(rows))):
        for kept in tries:
            w = _widths(columns, lengths, kept, width, floor, budget)
            if w is not None:
                return kept, w, [columns[i].title for i in keep if i not in kept]
    kept = tries[-1]
    w = _widths(columns, lengths, kept, 10**9, FLOORS[-1], len(rows))
    for i in kept:
        if columns[i].wrap:
            w[i] = max(FLOORS[-1], len(columns[i].title))
    return kept, w, [columns[i].title for i in keep if i not in kept]


def render(columns, rows, kept, widths) -> list[str]:
    """The header and the rows as lines; a row whose wrapped cells need several lines takes them."""
    out = []
    for row in [[c.title for c in columns]] + [list(r) for r in rows]:
        cells = [wrap_cell(str(row[i]), widths[i], columns[i].wrap) for i in kept]
        for k in range(max(map(len, cells))):
            parts = []
            for i, cell in zip(kept, cells):
                text = cell[k] if k < len(cell) else ""
                parts.append(text.rjust(widths[i]) if columns[i].right else text.ljust(widths[i]))
            out.append(SEP.join(parts).rstrip())
    return out


def table_width(kept, widths) -> int:
    return sum(widths[i] for i in kept) + len(SEP) * (len(kept) - 1)


def wrap_line(text: str, width: int | None, indent: int = 0) -> list[str]:
    """One footer line within `width`, continued under a hanging indent."""
    if not width or len(text) <= width:
        return [text]
    return textwrap.wrap(text, width, subsequent_indent=" " * indent, break_on_hyphens=False,
                         break_long_words=False) or [text]
