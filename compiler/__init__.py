"""netc.compiler: spec -> checked graph, shapes, accounting, rendering."""
from __future__ import annotations

import os
import sys

from netc.dsl import parse
from netc.dsl.errors import Source
from netc.dsl.parser import MAX_TEXT

from .build import build
from .graph import Net, Node
from .registry import LayerKind, kinds, register


def read(spec: str) -> Source:
    """A spec given as a path, '-' for standard input, or the text itself (of a file or stdin,
    at most one character more than the parser reads, so a huge file is never read whole)."""
    if spec == "-":
        return Source(sys.stdin.read(MAX_TEXT + 1), "<stdin>")
    if "\n" not in spec and (spec.endswith(".net") or os.path.exists(spec)):
        from netc.dsl.errors import SpecError
        try:
            with open(spec, encoding="utf-8") as f:
                return Source(f.read(MAX_TEXT + 1), spec)
        except FileNotFoundError:
            raise SpecError(f"no such spec file: {spec}", "check the path") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError(f"cannot read {spec}: {e}", "a spec is a UTF-8 text file") from None
    return Source(spec, "<spec>")


def compile(spec: str) -> Net:  # noqa: A001 - the public name users expect
    """Compile a spec (a path, '-' or the text) into a checked Net."""
    source = read(spec)
    ast = parse(source.text, source.filename)
    return build(ast, source)


__all__ = ["compile", "read", "Net", "Node", "LayerKind", "kinds", "register"]
