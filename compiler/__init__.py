"""netc.compiler: spec -> checked graph, shapes, accounting, rendering."""
from __future__ import annotations

import os
import pathlib
import sys

from netc.dsl import parse
from netc.dsl.errors import Source, SpecError
from netc.dsl.parser import MAX_TEXT
from netc.dsl.text import read as text_of

from . import zoo
from .build import build
from .graph import Net, Node
from .registry import LayerKind, kinds, register


def read(spec: str) -> Source:
    """A spec given as a path, a zoo spec's name ('resnet18', 'resnet18.net'; where no such file
    exists), '-' for standard input, or the text itself (of a file or stdin, at most one
    character more than the parser reads, so a huge file is never read whole)."""
    if spec == "-":
        stdin = getattr(sys.stdin, "buffer", None)  # bytes: a file that is not UTF-8 is an error
        text = text_of(stdin, "<stdin>", MAX_TEXT + 1) if stdin else sys.stdin.read(MAX_TEXT + 1)
        return Source(text.removeprefix("\ufeff"), "<stdin>")
    if "\n" not in spec and os.path.exists(spec):
        path, name = pathlib.Path(spec), spec
    elif _looks_like_path(spec):
        path, name = zoo.find(spec), os.path.basename(spec).removesuffix(".net") + ".net"
        if path is None:
            raise SpecError(f"no such spec file: {spec}", _missing_hint(spec))
    else:
        return Source(spec.removeprefix("\ufeff"), "<spec>")
    try:
        with path.open("rb") as f:
            return Source(text_of(f, name, MAX_TEXT + 1), name)
    except OSError as e:
        raise SpecError(f"cannot read {spec}: {e}", "a spec is a UTF-8 text file") from None


def _missing_hint(spec: str) -> str:
    if os.path.isfile(spec + ".net"):
        return f"did you mean {spec}.net?"
    return zoo.suggest(spec) or ("check the path; netc's zoo, by name: " + ", ".join(zoo.names()))


def _looks_like_path(spec: str) -> bool:
    """One line that cannot be a spec's text: a name ending in .net, or a word without spaces (a
    one-line spec is its input statement)."""
    line = spec.strip()
    if not line or "\n" in spec or line.startswith("input"):
        return False
    return line.endswith(".net") or len(line.split()) == 1


def compile(spec: str) -> Net:  # noqa: A001 - the public name users expect
    """Compile a spec (a path, a zoo spec's name, '-' or the text) into a checked Net."""
    source = read(spec)
    ast = parse(source.text, source.filename)
    return build(ast, source)


__all__ = ["compile", "read", "Net", "Node", "LayerKind", "kinds", "register"]
