"""The error hierarchy shared by every layer of netc.

Every error a user can cause is a NetcError: it says what was wrong, where, and how to fix it.
Spec errors carry a source position and print the line with a caret under the culprit.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """A spec's text and the name it was read from (a path, or '<stdin>')."""

    text: str
    filename: str = "<spec>"

    def lines(self) -> list:
        """The lines as the parser counts them: split at "\\n" only (str.splitlines would also
        split at \\x0c, \\x1c, \\u2028 ..., which the grammar treats as characters of a line)."""
        return self.text.split("\n")

    def line(self, lineno: int) -> str:
        lines = self.lines()
        return lines[lineno - 1].rstrip("\r") if 0 < lineno <= len(lines) else ""


class NetcError(Exception):
    """Base of every error netc reports to a user (never a bug of ours)."""

    kind = "error"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def format(self) -> str:
        text = f"{self.kind}: {self.message}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text

    def __str__(self) -> str:
        return self.format()


class SpecError(NetcError):
    """A mistake in a .net spec, with its position."""

    def __init__(self, message, hint=None, *, line=None, column=None, width=1,
                 source: Source | None = None, layer: str | None = None):
        super().__init__(message, hint)
        self.line, self.column, self.width = line, column, max(1, width)
        self.source, self.layer = source, layer

    def at(self, source: Source) -> "SpecError":
        """Attach the source if the error was raised without it."""
        if self.source is None:
            self.source = source
        return self

    def format(self) -> str:
        where = self.source.filename if self.source else "<spec>"
        if self.line is not None:
            where += f":{self.line}:{self.column}"
        text = f"{where}: {self.kind}: {self.message}"
        if self.source is not None and self.line is not None:
            src, col, end = _shown(self.source.line(self.line), self.column)
            caret = " " * (col - 1) + "^" * min(self.width, max(1, end - col + 1))
            text += f"\n    {src}\n    {caret}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text


_SHOWN = 100  # the most characters of a line shown above a caret


def _shown(line: str, column: int) -> tuple:
    """(text, column, end) of the line as shown above a caret: one column per character (a tab
    or a control character such as \\x0c or \\u2028 as a space); of a long line, the part around
    the column, cut ends marked with ... (`end`: the last column of the line's own text)."""
    start = max(0, min(column - 1 - _SHOWN // 3, len(line) - _SHOWN))
    text = "".join(c if c.isprintable() else " " for c in line[start:start + _SHOWN])
    if start:
        text, column = "..." + text, column - start + 3
    end = len(text)
    return text + ("..." if start + _SHOWN < len(line) else ""), column, end


class SpecSyntaxError(SpecError):
    """The text does not follow the grammar."""


class ShapeError(SpecError):
    """Shapes that do not fit: a kernel larger than its input, a stride that does not divide, ..."""


class DataError(NetcError):
    """Arrays or files given to netc that do not fit the network."""


class NumericsError(NetcError):
    """Training produced NaN or Inf, or a method cannot run at this size."""


@dataclass(frozen=True)
class SpecWarning:
    """A lecture would frown, but the spec is valid (pooling that drops pixels, ...)."""

    message: str
    line: int | None = None
    column: int | None = None
    filename: str = "<spec>"

    def format(self) -> str:
        where = self.filename + (f":{self.line}:{self.column}" if self.line else "")
        return f"{where}: warning: {self.message}"
