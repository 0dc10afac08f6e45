"""What a training run shows besides its epoch lines: a bar where it can be watched (a terminal,
a notebook), none in a log; a notice before the first step while this machine has not compiled
the kernels yet, and never again after."""
import sys
import types

import netc
from netc.runtime import progress
from netc.runtime.backends import registry as backends

SPEC = """network Tiny
input 8x8x1
CONV 3x3 2 pad=same act=relu - POOL max 2x2/2 - OUT 10 softmax
train optimizer=adam lr=0.01 batch=256 epochs=1 data=digits
"""


class Terminal:
    def isatty(self):
        return True

    def write(self, text):
        pass

    def flush(self):
        pass


def notebook(monkeypatch):
    """IPython as a Jupyter kernel shows it."""
    shell = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def fresh_notes(monkeypatch, folder):
    """Notes of what is compiled kept in `folder`; the kernels stay in the cache they were
    loaded from (the backend is loaded first: its kernels' cache folders are set on import)."""
    backends.load("cpu")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(folder))


def test_the_bar_is_drawn_where_it_can_be_watched(monkeypatch):
    assert progress.choose(None) is None  # pytest's stderr: a file, not a terminal
    assert progress.choose(True) == "terminal" and progress.choose(False) is None
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress.choose(None) == "terminal"
    notebook(monkeypatch)
    assert progress.choose(None) == "notebook" and progress.choose(False) is None
    assert progress.bar(None, 10, 0, "epoch 1/1") is None


def test_the_terminal_bar_and_the_notebook_one():
    from tqdm import tqdm
    from tqdm.auto import tqdm as auto
    shown = progress.bar("terminal", 10, 3, "epoch 1/2")
    assert isinstance(shown, tqdm) and shown.n == 3 and shown.total == 10
    shown.close()
    shown = progress.bar("notebook", 10, 0, "epoch 1/2")  # tqdm's text bar without ipywidgets
    assert isinstance(shown, auto)
    shown.close()


def test_train_from_python_into_a_log_draws_no_bar(capfd, tmp_path, monkeypatch):
    """netc.train()'s default: stderr is not a terminal here, so no bar floods it; the compile
    notice comes once, before the first step, while the machine has no note of the kernels."""
    fresh_notes(monkeypatch, tmp_path / "cache")
    spec = tmp_path / "tiny.net"
    spec.write_text(SPEC)
    netc.train(str(spec), out=str(tmp_path / "a"))
    out, err = capfd.readouterr()
    assert "batch/s" not in err and "epoch 1/1" not in err and "it/s" not in err
    assert "epoch 1/1" in out
    notice = [line for line in out.splitlines() if line.startswith("compiling the kernels")]
    assert len(notice) == 1 and "once; Numba caches them in " + str(tmp_path / "cache") in notice[0]
    assert out.index("compiling the kernels") < out.index("epoch 1/1")
    netc.train(str(spec), out=str(tmp_path / "b"))
    assert "compiling the kernels" not in capfd.readouterr().out


def test_what_is_compiled_is_noted_per_family_and_source(tmp_path, monkeypatch):
    fresh_notes(monkeypatch, tmp_path)
    model = netc.Model(SPEC)
    families = model.implementation_modules()
    assert {"netc.runtime.backends.cpu.conv", "netc.runtime.backends.cpu.pool"} <= families
    assert progress.uncompiled(families) == sorted(families)
    progress.compiled(["netc.runtime.backends.cpu.pool"])
    assert "netc.runtime.backends.cpu.pool" not in progress.uncompiled(families)
    notice = progress.compile_notice(["netc.runtime.backends.cpu.conv"])
    assert "1 layer family for this machine (conv)" in notice and progress.COMPILE_TIME in notice
