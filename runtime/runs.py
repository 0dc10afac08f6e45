"""A training run's folder: config.json, metrics.csv, result.json, best/last checkpoints (written
atomically), the curves' PNG; locked while a process writes into it."""
from __future__ import annotations

import contextlib
import csv
import fnmatch
import json
import os
import secrets
import time
import warnings

from netc.dsl.errors import NetcError

try:
    import fcntl
except ImportError:  # no flock (Windows): run folders are not locked
    fcntl = None

LOCK = ".lock"  # holds the pid of the process writing into the folder, while it does
STALE = ("tmp*.npz.tmp", "*.json.tmp", "*.png.tmp.png")  # what a killed process leaves half-written

METRICS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "train_miou",
           "val_miou")


def default_dir(name: str) -> str:
    return os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


@contextlib.contextmanager
def claim(path: str, resume: bool = False):
    """The run folder at `path`, locked for this process while the block runs: a new run's
    (created; it must be empty, or hold only the config.json of a run killed before its first
    epoch) or, with `resume`, an existing run's. What a killed process left half-written is
    removed first."""
    flag = "--resume" if resume else "--out"
    refuse(path, resume)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise NetcError(f"--out: cannot create {path}: {e.strerror}",
                        "name a folder you may write into with --out (without it, runs go to "
                        "runs/ in the current folder)") from None
    with locked(path, flag):
        left = refuse(path, resume, locked_here=True)
        for f in os.listdir(path):
            if _stale(f):
                os.unlink(os.path.join(path, f))
        if left == ["config.json"] and not resume:
            warnings.warn(f"{path} holds only the config.json of a run stopped before its first "
                          "epoch ended: starting a new run there")
        yield path


def refuse(path: str, resume: bool = False, locked_here: bool = False) -> list:
    """Raise claim()'s NetcError where `path` cannot be a new run's folder (a file, a folder
    another process writes into, one that is not empty) or, with `resume`, an existing run's;
    write nothing. Also called before the backend loads, so that a wrong --out is refused at
    once, before any compiling. The names in the folder that count (neither the lock nor what a
    killed process left half-written). `locked_here`: this process holds the lock (claim)."""
    if resume and not os.path.isdir(path):
        raise NetcError(f"--resume: no such folder: {path}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise NetcError(f"--out: {path} is a file", "name a folder for the run (it is created)")
    holder = None if locked_here else _held(path)
    if holder is not None:
        raise _busy("--resume" if resume else "--out", path, holder)
    try:
        left = [f for f in os.listdir(path) if f != LOCK and not _stale(f)]
    except (FileNotFoundError, NotADirectoryError):
        return []  # (a new folder: claim makes it, or says why it cannot)
    except OSError as e:
        raise NetcError(f"{'--resume' if resume else '--out'}: cannot read {path}: {e.strerror}",
                        "a run needs a folder it may read and write") from None
    if resume and "config.json" not in left:
        raise NetcError(f"--resume: {path} is not a netc run folder (no config.json)")
    if not resume and left and left != ["config.json"]:
        raise NetcError(f"--out: {path} exists and is not empty",
                        "choose a new folder, or continue that run with --resume")
    return left


def subfolder(folder: str, name: str) -> str:
    """A new folder for a part of a run (a fold, a bagging member) inside its claimed folder."""
    path = os.path.join(folder, name)
    with writing(path):
        os.makedirs(path)
    return path


def _holder(fd) -> str:
    """The pid a lock file names (the process holding it)."""
    return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"


def _busy(flag, folder, holder) -> NetcError:
    return NetcError(f"{flag}: {folder} is being written by another netc process (pid {holder})",
                     f"wait for it to end, or stop it (kill {holder}); two runs writing into one "
                     "folder would mix their checkpoints and metrics")


def _held(folder):
    """The pid of the process holding `folder`'s lock, or None (no lock file, none holds it, or
    no flock here): looked at, not taken."""
    try:
        fd = os.open(os.path.join(folder, LOCK), os.O_RDONLY)
    except OSError:
        return None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def _stale(name):
    return any(fnmatch.fnmatch(name, p) for p in STALE)


@contextlib.contextmanager
def locked(folder: str, flag: str = "--out"):
    """An exclusive lock on a run folder while the block runs (flock on its .lock file: the OS
    releases it when the process ends, even by kill -9); a NetcError naming the process that
    holds it. Where the platform or the file system has no flock, the folder is not locked."""
    path = os.path.join(folder, LOCK)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise NetcError(f"{flag}: cannot write into {folder}: permission denied",
                        "a run needs a folder it may write into")
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise NetcError(f"{flag}: cannot write into {folder}: {e.strerror}",
                            "a run needs a folder it may write into") from None
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise _busy(flag, folder, holder) from None
        except OSError:  # a file system without locks
            break
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed the file as it let go: lock the one there now
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError as e:
        os.close(fd)
        raise NetcError(f"{flag}: cannot write into {folder}: {e.strerror}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still locked: a later process makes a new file
        os.close(fd)


class WriteError(NetcError):
    """A file of the run could not be written (a full disk, a folder made read-only)."""


@contextlib.contextmanager
def writing(path: str, hint: str | None = None):
    """A WriteError for an OSError while the block writes `path`."""
    try:
        yield
    except OSError as e:
        raise WriteError(f"cannot write {path}: {e.strerror or e}", hint) from None


def temp_file(folder: str, suffix: str) -> tuple[int, str]:
    """(fd, path) of a new file tmpXXXXXXXX<suffix> in folder, opened for writing with the mode
    open() gives (0666 less the umask), unlike tempfile.mkstemp's 0600: a checkpoint renamed
    from it reads as the run's other files do."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        path = os.path.join(folder, f"tmp{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue


def write_json(path: str, doc: dict):
    tmp = path + ".tmp"
    with writing(path):
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1, default=str)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def append_metrics(folder: str, row: dict):
    path = os.path.join(folder, "metrics.csv")
    new = not os.path.exists(path)
    with writing(path), open(path, "a", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if new:
            w.writerow(METRICS)
        w.writerow(["" if row.get(k) is None else (f"{row[k]:.6g}" if isinstance(row[k], float)
                    else row[k]) for k in METRICS])


class TensorBoard:
    """metrics.csv's figures as TensorBoard scalars (tensorboardX's event writer) in `logdir`,
    one point per epoch: loss/train, loss/val, acc/train, acc/val, miou/..., lr. A resumed run
    drops the points after the epoch it continues from (purge_step)."""

    def __init__(self, logdir: str, first_epoch: int = 1):
        from tensorboardX import SummaryWriter
        with writing(logdir, "--tensorboard needs a folder it may write into"):
            self.writer = SummaryWriter(logdir, purge_step=first_epoch)

    def add(self, row: dict):
        for key, value in row.items():
            if key in ("epoch", "seconds") or value is None:
                continue
            split, _, measure = key.partition("_")  # train_loss: loss/train
            name = key if key == "lr" else f"{measure}/{split}"
            self.writer.add_scalar(name, value, int(row["epoch"]))
        self.writer.flush()

    def close(self):
        self.writer.close()


def tensorboard_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("tensorboardX") is not None


def read_metrics(folder: str) -> list[dict]:
    """metrics.csv's rows, as numbers (None where empty); a row that is not numbers is skipped
    with a warning."""
    path = os.path.join(folder, "metrics.csv")
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        for r in reader:
            try:
                row = {k: (float(r[k]) if r.get(k) not in ("", None) else None) for k in METRICS}
                if row["epoch"] is None:
                    raise ValueError("no epoch")
            except ValueError:
                warnings.warn(f"{path}, line {reader.line_num}: not a row of numbers; skipped")
                continue
            rows.append(row)
    return rows


def truncate_metrics(folder: str, epochs: int):
    """Keep the rows of the first `epochs` epochs (a resume rewrites what follows)."""
    rows = [r for r in read_metrics(folder) if r["epoch"] <= epochs]
    path = os.path.join(folder, "metrics.csv")
    if os.path.exists(path):
        os.unlink(path)
    for r in rows:
        append_metrics(folder, {**r, "epoch": int(r["epoch"])})


def figure(curves: dict, title: str):
    """curves: label -> metrics rows. Loss (train dashed, validation solid) and accuracy over
    whole epochs (the figures the epoch lines print: train re-evaluated after each epoch)."""
    from matplotlib.ticker import MaxNLocator
    fig = new_figure(figsize=(10, 4))
    a, b = fig.subplots(1, 2)
    for i, (label, rows) in enumerate(curves.items()):
        color = f"C{i}"
        ep = [r["epoch"] for r in rows]
        a.plot(ep, [r["train_loss"] for r in rows], "--", color=color, label=f"{label} train")
        if any(r["val_loss"] is not None for r in rows):
            a.plot(ep, [r["val_loss"] for r in rows], color=color, label=f"{label} validation")
        if any(r["train_acc"] is not None for r in rows):
            b.plot(ep, [r["train_acc"] for r in rows], "--", color=color, label=f"{label} train")
            b.plot(ep, [r["val_acc"] for r in rows], color=color, label=f"{label} validation")
    a.set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    b.set(xlabel="epoch", ylabel="accuracy", title=f"{title}: accuracy")
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot(curves: dict, path: str, title: str):
    """The figure of `curves` (see figure) as a PNG at path, written atomically."""
    save_figure(figure(curves, title), path)


def new_figure(**kwargs):
    """A matplotlib Figure (its arguments) drawn by Agg, made without pyplot: netc's figures
    change nothing global (matplotlib.use("Agg") switched a notebook's backend, and closed its
    figures, whenever netc drew) and need no closing; pyplot's import is not paid either."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str):
    """A matplotlib figure as a PNG at path, written atomically; an error names path (never
    the temporary file)."""
    tmp = path + ".tmp.png"
    try:
        with writing(path, "check that its folder exists and may be written"):
            fig.savefig(tmp, dpi=100)
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
