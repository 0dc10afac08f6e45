"""A training run's folder: config.json, metrics.csv, result.json, best/last checkpoints (written
atomically), the curves' PNG."""
from __future__ import annotations

import csv
import json
import os
import time

from netc.dsl.errors import NetcError

METRICS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "train_miou",
           "val_miou")


def default_dir(name: str) -> str:
    return os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def prepare(path: str, resume: bool = False) -> str:
    if resume:
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise NetcError(f"--resume: {path} is not a netc run folder (no config.json)")
        return path
    if os.path.exists(path) and os.listdir(path):
        raise NetcError(f"--out: {path} exists and is not empty",
                        "choose a new folder, or continue that run with --resume")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise NetcError(f"--out: cannot create {path}: {e.strerror}") from None
    return path


def write_json(path: str, doc: dict):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, default=str)
    os.replace(tmp, path)


def read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def append_metrics(folder: str, row: dict):
    path = os.path.join(folder, "metrics.csv")
    new = not os.path.exists(path)
    with open(path, "a", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if new:
            w.writerow(METRICS)
        w.writerow(["" if row.get(k) is None else (f"{row[k]:.6g}" if isinstance(row[k], float)
                    else row[k]) for k in METRICS])


def read_metrics(folder: str) -> list[dict]:
    path = os.path.join(folder, "metrics.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()}
                for r in csv.DictReader(f)]


def truncate_metrics(folder: str, epochs: int):
    """Keep the rows of the first `epochs` epochs (a resume rewrites what follows)."""
    rows = [r for r in read_metrics(folder) if r["epoch"] <= epochs]
    path = os.path.join(folder, "metrics.csv")
    if os.path.exists(path):
        os.unlink(path)
    for r in rows:
        append_metrics(folder, {**r, "epoch": int(r["epoch"])})


def plot(curves: dict, path: str, title: str):
    """curves: label -> metrics rows. Loss (train dashed, validation solid) and accuracy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
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
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
