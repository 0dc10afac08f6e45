"""The shape of the package, checked from its source: the compiler and the language never import
numba, llvmlite or the runtime; no import cycles (imports inside functions count); kind names live
in their kinds; pyproject.toml ships every package."""
import ast
import glob
import os
import subprocess
import sys

import networkx as nx
import pytest

from netc.compiler import registry

from .conftest import ROOT

# source folder -> the package it installs as (pyproject.toml's package-dir)
FOLDERS = {"api": "netc", "dsl": "netc.dsl", "compiler": "netc.compiler", "runtime": "netc.runtime"}
# packages of data only, no code: the model zoo's specs
DATA = {"netc.specs": ("specs", "*.net")}


def modules():
    """{module name: (path, is a package)} for every .py file of the package's source."""
    out = {}
    for folder, package in FOLDERS.items():
        for here, dirs, files in os.walk(os.path.join(ROOT, folder)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            rel = os.path.relpath(here, os.path.join(ROOT, folder))
            prefix = package if rel == "." else package + "." + rel.replace(os.sep, ".")
            for f in files:
                if f.endswith(".py"):
                    name = prefix if f == "__init__.py" else f"{prefix}.{f[:-3]}"
                    out[name] = (os.path.join(here, f), f == "__init__.py")
    return out


MODULES = modules()


def imports(name):
    """The modules `name` imports anywhere in its source (functions included): netc's own by
    module name, others by their top-level package."""
    path, is_package = MODULES[name]
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:  # `from pkg import module` names the module itself
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m if m.startswith("netc") else m.split(".")[0] for m in found}


def graph():
    g = nx.DiGraph()
    for name in MODULES:
        g.add_node(name)
        for target in imports(name):
            g.add_edge(name, target)
    return g


def test_the_package_has_no_import_cycles():
    g = graph().subgraph(MODULES)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + c[:1]) for c in cycles[:5])


@pytest.mark.parametrize("part", ["netc.compiler", "netc.dsl"])
def test_compiler_and_language_never_reach_numba_or_the_runtime(part):
    g = graph()
    for name in [m for m in MODULES if m == part or m.startswith(part + ".")]:
        reached = nx.descendants(g, name)
        bad = sorted(m for m in reached if m in ("numba", "llvmlite")
                     or m == "netc.runtime" or m.startswith("netc.runtime."))
        assert not bad, f"{name} imports {bad} (through {nx.shortest_path(g, name, bad[0])})"


def test_importing_every_compiler_module_loads_no_numba():
    names = [m for m in MODULES if m.startswith(("netc.compiler", "netc.dsl"))]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "bad = [m for m in ('numba', 'llvmlite') if m in sys.modules]\n"
            "bad += [m for m in sys.modules if m.startswith('netc.runtime')]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def docstrings(tree):
    """The string constants that are docstrings (of the module, classes, functions)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def test_kind_names_appear_only_in_their_kinds():
    """Outside compiler/kinds/ (and the language, which spells RES/CONCAT/DENSE), code refers to
    a kind through its class or its attributes, never by a string of its name."""
    names = set(registry.kinds())
    # a foreign format's own words that netc's kinds share, where they name the foreign layer:
    # Caffe's V1 layer-type enum (CONCAT, RELU ...), its "ELU" and "LRN" types
    foreign = {"netc.compiler.interop.caffe_schema": names,
               "netc.compiler.interop.caffe_layers": {"ELU", "LRN"}}
    found = []
    for name, (path, _) in MODULES.items():
        if name.startswith(("netc.compiler.kinds", "netc.dsl")):
            continue
        tree = ast.parse(open(path, encoding="utf-8").read())
        skip = docstrings(tree)
        allowed = names - foreign.get(name, set())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and node.value in allowed and id(node) not in skip):
                found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "kind names written outside their kinds:\n" + "\n".join(found)


def test_pyproject_ships_every_package():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        setup = tomllib.load(f)["tool"]["setuptools"]
    packages = {name for name, (_, is_package) in MODULES.items() if is_package}
    assert set(setup["packages"]) == packages | set(DATA)
    dirs = setup["package-dir"]
    for package, (folder, pattern) in DATA.items():
        assert dirs[package] == folder and setup["package-data"][package] == [pattern]
        assert glob.glob(os.path.join(ROOT, folder, pattern)), package
    for package in packages:
        parent = max((p for p in dirs if package.startswith(p + ".")), key=len, default=None)
        folder = dirs.get(package) or dirs[parent] + package[len(parent):].replace(".", "/")
        assert os.path.isfile(os.path.join(ROOT, folder, "__init__.py")), package
