"""The model zoo: the .net specs that ship with netc (specs/ in the source, the package data
netc.specs once installed), found by name: `netc summary resnet18`, netc.compile("resnet18.net").
"""
from __future__ import annotations

import difflib
import importlib.resources
import os
import pathlib


def folder():
    """The zoo's folder: the installed package data, or specs/ beside the source's packages (a
    checkout installed in editable mode before the zoo shipped as package data)."""
    try:
        return importlib.resources.files("netc.specs")
    except ModuleNotFoundError:
        return pathlib.Path(__file__).resolve().parent.parent / "specs"


def names() -> list[str]:
    """Every zoo spec's name (its file name without .net), sorted."""
    try:
        entries = list(folder().iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(e.name[:-4] for e in entries if e.name.endswith(".net") and e.is_file())


def find(name: str):
    """The zoo spec called `name` or `name.net` (a bare name, no folder), or None."""
    stem = name[:-4] if name.endswith(".net") else name
    if not stem or os.sep in name or "/" in name or stem not in names():
        return None
    return folder().joinpath(stem + ".net")


def suggest(name: str) -> str | None:
    """The zoo names closest to a path's file name, as 'did you mean ...' (None if none is)."""
    stem = os.path.basename(name)
    stem = stem[:-4] if stem.endswith(".net") else stem
    close = difflib.get_close_matches(stem.lower(), names(), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(close) + " (netc's zoo, by name)?"
