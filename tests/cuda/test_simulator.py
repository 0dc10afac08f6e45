"""The CUDA backend on a machine without a GPU: tests/cuda/gpu runs under Numba's CUDA simulator
in a process of its own (the simulator is chosen when numba loads), recording each kernel
launch's argument types; then every kernel is compiled, with those types, to PTX for a Hopper
GPU (sm_90), so that a kernel the simulator accepts but a GPU's compiler would not fails here.
Both run in the background (background.py), started as soon as the tests are collected (under
pytest-xdist, once, by its controller, whose folder the workers wait on: tests/conftest.py)."""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from ..conftest import ROOT

HERE = os.path.dirname(os.path.abspath(__file__))
NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
pytestmark = pytest.mark.skipif(not NUMBA_CUDA, reason="numba-cuda is not installed")


_run: dict = {}  # the background run: its process, its folder


def shared_folder(run_id) -> str:
    """The background run's folder under pytest-xdist, whose controller starts it
    (tests/conftest.py) and whose workers read it: named by the session's run id."""
    return os.path.join(tempfile.gettempdir(), f"netc-simulated-{run_id}")


def start_in_background(folder=None):
    """Start the background run (background.py: the simulated tests, then the PTX compilation;
    about 70 s on one core): tests/conftest.py calls this once the session's tests are
    collected, where they include this module's, so that it runs on another core while the
    others run. `folder`: where it writes (a new one in the temporary folder if None)."""
    if _run or not NUMBA_CUDA:
        return
    if folder is None:
        folder = tempfile.mkdtemp(prefix="netc-simulated-")
    else:  # (a run killed before its end may have left one: its "done" is not this run's)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
    _run["folder"] = folder
    with open(os.path.join(folder, "log"), "w") as log:  # (its own output, and a traceback)
        # stdin: a pipe this process keeps open, so that the run ends itself when this process
        # ends in a way that skips stop_in_background (SIGTERM, SIGKILL): its own session (see
        # stop) takes it out of this process's group, which such a signal may have been sent to
        _run["proc"] = subprocess.Popen([sys.executable, os.path.join(HERE, "background.py"), folder],
                                        cwd=ROOT, stdin=subprocess.PIPE, stdout=log,
                                        stderr=subprocess.STDOUT,
                                        start_new_session=hasattr(os, "killpg"))
    with open(os.path.join(folder, "pid.new"), "w") as f:  # (for the workers that wait on it)
        f.write(str(_run["proc"].pid))
    os.replace(os.path.join(folder, "pid.new"), os.path.join(folder, "pid"))


def stop_in_background():
    """End the background run if it is still going (the session ended first), and remove its
    folder (conftest, at the session's end)."""
    proc = _run.pop("proc", None)
    if proc is not None:
        if proc.poll() is None:
            if hasattr(os, "killpg"):  # its process group: the simulated pytest it started too
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait()
        proc.stdin.close()
    shutil.rmtree(_run.pop("folder", ""), ignore_errors=True)


WAIT = 900  # seconds a pytest-xdist worker waits for the controller's run (70 s alone)


@pytest.fixture(scope="module")
def background(request):
    """The background run's folder, once it has ended: this process's own run, or in a
    pytest-xdist worker the controller's (which writes "done" in its folder at its end)."""
    run_id = getattr(request.config, "workerinput", {}).get("testrunuid")
    folder = shared_folder(run_id) if run_id else None
    if folder is None or not os.path.isdir(folder):  # (the controller makes it before any test)
        start_in_background()  # (where conftest has not)
        _run["proc"].wait()
        return _run["folder"]
    for _ in range(WAIT * 10):
        if os.path.exists(os.path.join(folder, "done")):
            return folder
        if not _running(_read(folder, "pid")):
            pytest.fail(f"the background run in {folder} ended without finishing\n"
                        + _read(folder, "log"))
        time.sleep(0.1)
    pytest.fail(f"the background run in {folder} did not end in {WAIT} s\n" + _read(folder, "log"))


def _running(pid) -> bool:
    """Whether the process `pid` (a text; empty: not known yet) runs: it exists and, where
    /proc says, is not a zombie that its parent, the controller, has yet to reap."""
    if not pid:
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # (not ours to signal: it exists)
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _read(folder, name):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


def test_the_cuda_backend_under_the_simulator(background):
    rc = _read(background, "rc")
    proc = _run.get("proc")
    assert rc == "0", (f"exit status {rc or 'none'} (background.py's: "
                       f"{proc.returncode if proc else 'run by the controller'})\n"
                       + _read(background, "out")[-8000:] + _read(background, "err")[-3000:]
                       + _read(background, "log")[-3000:])


def test_every_kernel_compiles_for_a_real_gpu(background):
    result = json.loads(_read(background, "ptx.json") or '{"error": "no ptx.json"}')
    assert "error" not in result, result.get("error") + "\n" + _read(background, "log")[-3000:]
    if not result["nvvm"]:
        pytest.skip("NVVM is not installed (pip install nvidia-nvvm)")
    assert result["kernels"] >= 40  # the simulated run launched them all
    assert not result["missing"], "no such kernels: " + ", ".join(result["missing"])
    assert not result["failed"], "\n".join(result["failed"])
    assert result["compiled"] >= result["launches"]
