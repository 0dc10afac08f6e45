"""Where Numba caches netc's compiled kernels: a folder per module and version of its source.

Numba checks a cached function against its own file only, while netc's kernels compile in code
from other files (elementwise.py's math, common.py's row loops, the GEMM tiles): after such a file
changed, a kernel from the cache would keep the old code. So each module's kernels are cached in a
folder named after a hash of its source and of every backend module it imports, directly or not:
an edit or an upgrade recompiles exactly the kernels it can change. The folders lie under
NUMBA_CACHE_DIR where it is set, else under the user's cache folder (~/.cache/netc), or, where
that cannot be written, in a private folder of the temporary one (base()).
"""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import os
import stat
import tempfile
import warnings

import numba

from netc.dsl.errors import NetcError

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = __name__.rpartition(".")[0]  # netc.runtime.backends


def _path(module: str, root: str = HERE, package: str = PACKAGE) -> str | None:
    """The source file of a module of the backends package, or None for any other module."""
    if module != package and not module.startswith(package + "."):
        return None
    rel = module[len(package):].lstrip(".").replace(".", os.sep)
    folder = os.path.join(root, rel)
    for path in (os.path.join(folder, "__init__.py"), folder + ".py"):
        if os.path.isfile(path):
            return path
    return None


def _imports(path: str, module: str, root: str, package: str) -> set:
    """The backend modules that the module at `path` imports (anywhere in its source); parsed
    once per version of the file (every process computes the keys of the modules it loads, whose
    imports overlap: parsing them anew each time took 3 s of a 10 s run)."""
    stat = os.stat(path)
    return _parsed_imports(path, module, root, package, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=None)
def _parsed_imports(path: str, module: str, root: str, package: str, mtime_ns: int, size: int) -> frozenset:
    base = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in _import_statements(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = base.split(".")
            start = ".".join(parts[:len(parts) - node.level + 1]) if node.level else ""
            mod = ".".join(p for p in (start, node.module or "") if p)
            for alias in node.names:  # `from pkg import module` depends on that module alone
                sub = f"{mod}.{alias.name}"
                found.add(sub if _path(sub, root, package) else mod)
    return frozenset(m for m in found if m != module and _path(m, root, package))


def _import_statements(tree):
    """The import statements anywhere in a module (in functions, classes, if/try/with blocks),
    found through the statements alone: ast.walk's visit of every expression node as well was
    most of the time a process spent on the cache keys (0.17 of 0.3 s, importing the CPU
    backend)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            todo.extend(getattr(node, field, ()))


def key(module: str, root: str = HERE, package: str = PACKAGE) -> str:
    """A hash of a module's source and of every backend module it imports, transitively."""
    seen, todo, h = set(), [module], hashlib.sha256()
    while todo:
        name = todo.pop()
        path = _path(name, root, package)
        if name in seen or path is None:
            continue
        seen.add(name)
        todo += sorted(_imports(path, name, root, package))
    for name in sorted(seen):
        h.update(name.encode())
        with open(_path(name, root, package), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def base() -> str:
    """The folder the kernels are cached under: NUMBA_CACHE_DIR, else the user's cache folder;
    where that cannot be written (a read-only home on a cluster's nodes or in a container),
    a private folder in the temporary one, with a warning (once per process)."""
    return _usable(os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "netc"))


@functools.lru_cache(maxsize=None)
def _usable(wanted: str) -> str:
    problem = _unwritable(wanted)
    if problem is None:
        return wanted
    fallback = private_temp()
    if fallback is None:
        raise NetcError(f"cannot write netc's kernel cache at {wanted} ({problem}), nor a private "
                        f"folder in {tempfile.gettempdir()}",
                        "set NUMBA_CACHE_DIR to a folder you may write into")
    warnings.warn(f"cannot write netc's kernel cache at {wanted} ({problem}): the kernels are "
                  f"cached in {fallback}, which the machine may clear; set NUMBA_CACHE_DIR to a "
                  "folder you may write into to keep them", stacklevel=2)
    return fallback


def _unwritable(path: str) -> str | None:
    """Why `path` cannot hold the cache (made where missing), or None where it can."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def private_temp() -> str | None:
    """netc-cache-USER in the temporary folder, made for this user alone (0700); None where it
    cannot be written, or where it is another user's or others may write into it (Numba loads
    machine code from its cache: a folder someone else can write is not used)."""
    uid = getattr(os, "getuid", lambda: None)()
    path = os.path.join(tempfile.gettempdir(), f"netc-cache-{uid if uid is not None else 'user'}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or (uid is not None and (st.st_uid != uid
                                                             or st.st_mode & 0o022)):
        return None
    return None if _unwritable(path) else path


@functools.cache
def folder(module: str) -> str:
    """The cache folder of a backend module's kernels."""
    return os.path.join(base(), f"{module.rpartition('.')[2]}-{key(module)}")


@contextlib.contextmanager
def caching_in(module: str):
    """Within it, a Numba cache made for a function (it reads the folder when made) lies in
    `module`'s folder."""
    saved = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = folder(module)
    try:
        yield
    finally:
        numba.config.CACHE_DIR = saved


def cached(jit, **options):
    """A decorator: jit(cache=True, **options) (numba.njit, cuda.jit), caching in the folder of
    the function's module, tolerantly (tolerant())."""
    def wrap(fn):
        with caching_in(fn.__module__):
            return tolerant(jit(cache=True, **options)(fn))
    return wrap


def tolerant(made):
    """Have the cache of a dispatcher or CFunc (`made`) cost a compile, not the run, where its
    files cannot be read or written: an index or data file that does not unpickle is a miss (and
    is written anew), a full disk or a quota leaves the kernel uncached; a warning says so once
    per process. (Numba raised both: a traceback in the middle of a run.)"""
    files = getattr(getattr(made, "_cache", None), "_cache_file", None)
    if files is not None and not isinstance(files, _Tolerant):
        files.__class__ = _tolerant_class(type(files))
    return made


class _Tolerant:
    """Mixed into Numba's IndexDataCacheFile (or numba-cuda's): see tolerant()."""

    def _load_index(self):
        try:
            return super()._load_index()
        except Exception as e:  # noqa: BLE001 - unpickling a damaged file raises anything
            _damaged(self._index_path, e)
            return {}

    def _load_data(self, name):
        try:
            return super()._load_data(name)
        except OSError:
            raise  # (load() takes it for a missing file: a miss)
        except Exception as e:  # noqa: BLE001 - as above
            _damaged(self._data_path(name), e)
            raise OSError(str(e)) from e

    def save(self, key, data):
        try:
            super().save(key, data)
        except OSError as e:
            _once("unsaved", f"cannot write into netc's kernel cache in {base()} "
                  f"({e.strerror or e}): the kernels compiled now are not kept and compile again "
                  "in the next run; free some space there, or set NUMBA_CACHE_DIR to another "
                  "folder")


@functools.lru_cache(maxsize=None)
def _tolerant_class(cls):
    return type(f"Tolerant{cls.__name__}", (_Tolerant, cls), {})


_warned: set = set()


def _damaged(path, e):
    _once("damaged", f"a damaged file in netc's kernel cache ({path}: {type(e).__name__}: {e}): "
          "its kernels are compiled again and written anew")


def _once(kind, text):
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(text, stacklevel=3)


def njit(**options):
    """numba.njit(cache=True, **options), cached in the folder of the function's module."""
    return cached(numba.njit, **options)


# anything cached otherwise (the GEMM's overload): a folder for the whole package
numba.config.CACHE_DIR = folder(PACKAGE)
