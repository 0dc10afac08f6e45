"""What a training run shows while it runs, besides its epoch lines: a progress bar where one can
be watched (a terminal, or a Jupyter notebook's widget) and none where it would only fill a log;
and, before the first step, a line saying that the kernels are being compiled, when this machine
has not compiled them yet (Numba compiles each kernel on its first call and caches it on disk).
"""
from __future__ import annotations

import os
import sys

# what a cold first step costs, said before it (README's Set up has the figure measured)
COMPILE_TIME = "up to a minute or two"


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (IPython already imported, never imported here)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython and hasattr(ipython, "get_ipython") else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def choose(progress) -> str | None:
    """The bar to draw: "notebook" (tqdm's widget) in a Jupyter notebook, "terminal" (tqdm on
    stderr) where stderr is a terminal, None elsewhere (a log, a pipe: the epoch lines only).
    progress=None chooses so; True draws a bar even where stderr is no terminal; False none."""
    if progress is False:
        return None
    if in_notebook():
        return "notebook"
    isatty = getattr(sys.stderr, "isatty", None)
    return "terminal" if progress or (isatty is not None and isatty()) else None


def bar(kind, total: int, initial: int, desc: str):
    """A tqdm bar of `kind` (see choose), or None for none."""
    if kind is None:
        return None
    if kind == "notebook":
        from tqdm.auto import tqdm  # the widget; tqdm's text bar where ipywidgets is missing
        return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False)
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False,
                file=sys.stderr, dynamic_ncols=True)


# ---- the compile notice -------------------------------------------------------------------------
def _marker(module: str) -> str:
    """The file that says `module`'s kernels, at its current source, ran a training step here."""
    from .backends import cache
    return os.path.join(cache.base(), "netc-compiled", f"{module}-{cache.key(module)}")


def uncompiled(modules) -> list[str]:
    """Those of the implementation modules (Model.implementation_modules) whose kernels this
    machine has not compiled at their current source: a first run, a new kind, an upgrade."""
    return sorted(m for m in modules if not os.path.exists(_marker(m)))


def compiled(modules):
    """Note that the modules' kernels are compiled (after a step ran); silently nothing where
    the cache folder cannot be written."""
    for m in modules:
        try:
            os.makedirs(os.path.dirname(_marker(m)), exist_ok=True)
            open(_marker(m), "a").close()
        except OSError:
            return


def compile_notice(modules) -> str:
    """The line said before the first step while `modules` (see uncompiled) are not compiled."""
    from .backends import cache
    families = ", ".join(m.rpartition(".")[2] for m in modules)
    return (f"compiling the kernels of {len(modules)} layer famil"
            f"{'y' if len(modules) == 1 else 'ies'} for this machine ({families}): the first "
            f"step waits {COMPILE_TIME}, once; Numba caches them in {cache.base()}")
