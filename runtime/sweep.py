"""`netc sweep`: every combination of a grid of train settings as its own training run
(training.train, in a folder named after its settings under one sweep folder), on an engine
(sweep_engines.py: this process, a pool of local processes, a Dask or a Ray cluster), then a table
(sweep.csv), a summary sorted by the validation metric and a plot (sweep.png). The grid is checked,
each combination with the fixed settings, before any run starts."""
from __future__ import annotations

import csv
import difflib
import itertools
import os
import sys

from netc.compiler import Net
from netc.compiler import compile as compile_spec
from netc.compiler.registry import LayerError
from netc.compiler.settings import TRAIN_KEYS
from netc.compiler.settings import check as check_section
from netc.dsl.errors import NetcError, SpecError

from . import runs, training
from .sweep_engines import ENGINES, run_one
from .trainer import OPTIMIZER_KEYS

# the result's columns after the settings' (test_miou only where a run has it)
COLUMNS = ("status", "best_val_acc", "best_val_loss", "best_epoch", "test_loss", "test_acc",
           "test_miou", "trained_epochs", "seconds", "error")
# what the summary sorts by: the first of these that some run has (True: higher is better)
METRICS = (("best_val_acc", True, "best validation accuracy"),
           ("best_val_loss", False, "best validation loss"),
           ("test_acc", True, "test accuracy"), ("test_loss", False, "test loss"))


# ---- the grid ---------------------------------------------------------------------------------
def parse_grid(items) -> dict:
    """--grid's KEY=V1,V2,... words as {key: [values]}, each value read as the spec's train
    section reads it (1e-3, adam, true, [0.9, 0.999], "mnist:data"), and checked."""
    grid = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise NetcError(f"--grid takes KEY=V1,V2,...; received {item!r}",
                            "e.g. --grid lr=1e-3,3e-3,1e-2 batch=32,64")
        if key in grid:
            raise NetcError(f"--grid: {key} is given twice", f"list all its values once: "
                            f"{key}=V1,V2,...")
        _check_key(key)
        grid[key] = [_read_value(key, v) for v in _split(text)]
    return check_grid(grid)


def _split(text: str) -> list:
    """Split at the commas outside brackets: `[0.9,0.99],[0.8,0.9]` is two values."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [p.strip() for p in parts + [text[start:]]]


def _read_value(key: str, text: str):
    """One value as the train section reads `key=text` (its parser, then its check)."""
    from netc.dsl.parser import parse
    if not text:
        raise NetcError(f"--grid {key}: an empty value", f"e.g. --grid {key}=V1,V2")
    try:
        spec = parse(f"train {key}={text}", "--grid")
        return check_section(spec.train, None)[key]
    except SpecError as e:
        raise NetcError(f"--grid {key}={text}: {e.message.removeprefix('train: ')}",
                        e.hint or "values are written as in the spec's train section") from None


def check_grid(grid: dict) -> dict:
    """{key: [values]} checked: train keys (did you mean), values of their type, none twice."""
    if not isinstance(grid, dict) or not grid:
        raise NetcError("a sweep needs a grid: at least one train setting and its values",
                        "e.g. --grid lr=1e-3,3e-3,1e-2 batch=32,64")
    out = {}
    for key, values in grid.items():
        _check_key(key)
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if not values:
            raise NetcError(f"--grid: {key} has no values", f"e.g. {key}=V1,V2")
        try:
            out[key] = [TRAIN_KEYS[key].parse(_plain(v), key) for v in values]
        except LayerError as e:
            raise NetcError(f"--grid: {e.message}", e.hint) from None
        names = [_show(v) for v in out[key]]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise NetcError(f"--grid: {key} lists {', '.join(twice)} twice",
                            "each value once (every combination runs once)")
    return out


def _check_key(key):
    """A train section's key, or an error with the closest one (settings.check's words)."""
    if key not in TRAIN_KEYS:
        close = difflib.get_close_matches(str(key), TRAIN_KEYS, n=1)
        raise NetcError(f"--grid: unknown train setting `{key}`",
                        (f"did you mean `{close[0]}`? " if close else "")
                        + "known: " + ", ".join(TRAIN_KEYS))


def _plain(value):
    return tuple(value) if isinstance(value, list) else value


def combinations(grid: dict) -> list:
    """Every combination of the grid's values, as settings dicts, the last key varying fastest."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*grid.values())]


def _show(value) -> str:
    """A value as a run's name and the table write it: 0.001, 1e-05, adam, true, [0.9,0.999]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return format(value, ".12g") if isinstance(value, float) else str(value)


def run_name(setting: dict) -> str:
    """A run's folder name: its settings, `lr=0.001,batch=32` (a path separator becomes _)."""
    name = ",".join(f"{k}={_show(v)}" for k, v in setting.items())
    for sep in {os.sep, os.altsep or os.sep, "\0"}:
        name = name.replace(sep, "_")
    return name


# ---- what the CLI and the Python API call -------------------------------------------------------
def sweep(net, grid: dict, overrides=None, out=None, engine="local", workers=1, address=None,
          stdout=None) -> list:
    """Train `net` once per combination of `grid` ({train key: [values]}) with `overrides` (the
    settings every run shares, as netc.runtime.train takes them), each run in its own folder
    under `out`; write sweep.csv and sweep.png there, print the summary and return the table's
    rows, best first. engine: "local" (`workers` processes on this machine; 1: in this
    process), "dask" or "ray" (the cluster at `address`, else a local one of `workers`)."""
    net = net if isinstance(net, Net) else compile_spec(net)
    stdout = stdout or sys.stdout
    grid, overrides = check_grid(grid), dict(overrides or {})
    if out:
        runs.refuse(os.path.abspath(out))
    settings = _checked(net, grid, overrides)
    start = _engine(engine, workers, address)
    with runs.claim(os.path.abspath(out or runs.default_dir(net.name + "-sweep"))) as folder:
        runs.write_json(os.path.join(folder, "sweep.json"), {
            "network": net.name, "spec": net.source.text if net.source else None,
            "grid": grid, "settings": overrides, "engine": engine, "workers": workers})
        tasks = [(net, s, training.part(overrides, run_name(s)),
                  os.path.join(folder, run_name(s))) for s in settings]
        rows = [_row(s, "not run") for s in settings]
        sizes = " x ".join(str(len(v)) for v in grid.values())
        print(f"sweep of {net.name}: {len(tasks)} runs ({sizes}) -> {folder}/", file=stdout)
        try:
            start(tasks, workers, address, _reporter(rows, stdout), stdout)
        except KeyboardInterrupt:
            _finish(net, rows, grid, folder, stdout)
            print(f"interrupted: {sum(r['status'] == 'ok' for r in rows)} of {len(rows)} runs "
                  f"finished; the runs stopped keep last.npz (netc train --resume FOLDER "
                  f"continues one)", file=stdout)
            raise
        return _finish(net, rows, grid, folder, stdout)


def _engine(engine, workers, address):
    """The engine's function, once the engine, its workers and address make sense and the
    engine's package is installed."""
    if engine not in ENGINES:
        raise NetcError(f"unknown engine {engine!r}", "engines: " + ", ".join(ENGINES))
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise NetcError(f"workers is a number of processes (1 or more); received {workers!r}")
    if address is not None and engine == "local":
        raise NetcError("--address names a dask or ray cluster; the local engine runs here",
                        "add --engine dask or --engine ray")
    return ENGINES[engine]()


def _checked(net, grid, overrides) -> list:
    """The grid's combinations, each checked with the shared settings as netc train checks a run
    (and its optimizer's keys), before any run starts."""
    clash = [k for k in grid if overrides.get(k) is not None]
    if clash:
        raise NetcError(f"{', '.join(clash)} is set both by the grid and for every run",
                        "give it in one place: drop the flag, or the grid's key")
    settings = combinations(grid)
    for s in settings:
        cfg = training.resolve(net, {**overrides, **s})
        try:
            training.check(cfg)
            training.check_memory(net, cfg)
            _check_optimizer(cfg)
        except NetcError as e:
            raise type(e)(f"{run_name(s)}: {e.message}", e.hint) from None
    return settings


def _check_optimizer(cfg):
    """The optimizer takes the hyperparameters given (Trainer.make_optimizer's check, early)."""
    from . import optim
    known = [k for k in optim.defaults(cfg["optimizer"]) if k != "lr"]
    bad = [k for k in OPTIMIZER_KEYS if k in cfg and k not in known]
    if bad:
        raise NetcError(f"optimizer {cfg['optimizer']} does not take {', '.join(bad)}",
                        f"{cfg['optimizer']} takes: lr, {', '.join(known) or 'nothing else'}")


def _row(setting, status, **fields) -> dict:
    return {"run": run_name(setting), **setting,
            **{c: None for c in COLUMNS}, "status": status, **fields}


def _reporter(rows, stdout):
    """What an engine calls with each finished run: (its index, its row, or the exception that
    kept it from returning one); a line per run; an interrupted run stops the sweep."""
    done = [0]

    def report(i, row):
        if isinstance(row, BaseException):
            row = {**rows[i], "status": "failed", "error": f"{type(row).__name__}: {row}"}
        rows[i] = {**rows[i], **row}
        done[0] += 1
        print(f"[{done[0]}/{len(rows)}] {rows[i]['run']}: {_outcome(rows[i])}", file=stdout,
              flush=True)
        if rows[i]["status"] == "interrupted":
            raise KeyboardInterrupt
    return report


def _outcome(row) -> str:
    if row["status"] != "ok":
        return f"{row['status']}" + (f": {row['error']}" if row.get("error") else "")
    parts = [f"{key.replace('best_', '').replace('_', ' ')} {_fmt(row[key], key)}"
             for key, _, _ in METRICS if row.get(key) is not None]
    return ", ".join(parts + [f"{row['seconds']:.1f}s"])


def _fmt(value, key) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}%" if key.endswith("_acc") else f"{value:.4f}"


# ---- the table, the summary and the plot --------------------------------------------------------
def metric(rows):
    """(column, higher is better, label) of the first METRICS column some finished run has."""
    for key, higher, label in METRICS:
        if any(r["status"] == "ok" and r.get(key) is not None for r in rows):
            return key, higher, label
    return None


def ranked(rows) -> list:
    """Finished runs best first by metric(rows) (ties: the lower validation loss first), then
    those without it, then the others."""
    m = metric(rows)

    def order(r):
        value = r.get(m[0]) if m and r["status"] == "ok" else None
        loss = r.get("best_val_loss")
        return (r["status"] != "ok", value is None,
                0.0 if value is None else (-value if m[1] else value),
                loss is None, 0.0 if loss is None else loss)
    return sorted(rows, key=order)


def _finish(net, rows, grid, folder, stdout) -> list:
    keys, rows = list(grid), ranked(rows)
    write_table(rows, keys, os.path.join(folder, "sweep.csv"))
    print(summary(rows, keys), file=stdout)
    if metric(rows):
        plot(rows, grid, metric(rows), os.path.join(folder, "sweep.png"), net.name)
    print(f"table: {folder}/sweep.csv" + (f", plot: {folder}/sweep.png" if metric(rows) else ""),
          file=stdout)
    return rows


def _columns(rows, keys) -> list:
    return ["run", *keys, *(c for c in COLUMNS
                            if c != "test_miou" or any(r.get(c) is not None for r in rows))]


def write_table(rows, keys, path):
    """sweep.csv: a row per run (best first), its settings and its results."""
    columns = _columns(rows, keys)
    with runs.writing(path), open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        w.writeheader()
        w.writerows({k: "" if r.get(k) is None else _show(r[k]) if k in keys else r[k]
                     for k in columns} for r in rows)


def summary(rows, keys) -> str:
    """The table printed: the settings, the validation and test figures, sorted (see ranked);
    a run that did not finish says why after its settings."""
    m = metric(rows)
    shown = ("best_val_acc", "best_val_loss", "test_acc", "test_loss")
    head = ["#", *keys, *(s.replace("best_", "").replace("_", " ") for s in shown), "epochs",
            "seconds"]
    table = [head]
    for i, r in enumerate(rows, 1):
        cells = [str(i), *(_show(r[k]) for k in keys)]
        if r["status"] == "ok":
            cells += [*(_fmt(r.get(s), s) for s in shown), str(r["trained_epochs"]),
                      f"{r['seconds']:.1f}"]
        else:
            cells.append(r["status"] + (f": {r['error']}" if r.get("error") else ""))
        table.append(cells)
    # the settings' columns fit every row; the figures', the finished runs'
    widths = [max(len(c[j]) for c in table if j <= len(keys) or len(c) == len(head))
              for j in range(len(head))]
    text = [f"sorted by {m[2]} ({'highest' if m[1] else 'lowest'} first)" if m else
            "no run finished"]
    for cells in table:
        line = [c.ljust(w) if 0 < j <= len(keys) else c.rjust(w)
                for j, (c, w) in enumerate(zip(cells, widths))]
        text.append("  ".join(line if len(cells) == len(head) else line[:-1] + cells[-1:])
                    .rstrip())
    return "\n".join(text)


def plot(rows, grid, m, path, title):
    """sweep.png: the metric of each run against the grid's first key, a line per combination
    of the other keys (the legend); a run that did not finish is an x on the axis."""
    key, higher, label = m
    keys, scale = list(grid), (100 if key.endswith("_acc") else 1)
    groups = [_show(v) for v in grid[keys[0]]]
    by = {tuple(_show(r[k]) for k in keys): r for r in rows}
    fig = runs.new_figure(figsize=(7, 4))
    ax = fig.subplots()
    for j, other in enumerate(itertools.product(*([_show(v) for v in grid[k]]
                                                  for k in keys[1:]))):
        got = [by[(value, *other)] for value in groups]
        ys = [scale * r[key] if r["status"] == "ok" and r.get(key) is not None else None
              for r in got]
        ax.plot(range(len(groups)), [float("nan") if y is None else y for y in ys], "o-",
                color=f"C{j % 10}", label=", ".join(f"{k}={v}" for k, v in zip(keys[1:], other)))
        failed = [g for g, r in enumerate(got) if r["status"] != "ok"]
        ax.plot(failed, [0] * len(failed), "x", color=f"C{j % 10}", ms=9, clip_on=False,
                transform=ax.get_xaxis_transform())
    ax.set_xticks(range(len(groups)), groups)
    ax.set(xlabel=keys[0], ylabel=label + (" (%)" if scale == 100 else ""),
           title=f"{title}: {label}, {'higher' if higher else 'lower'} is better"
                 + (" (x: did not finish)" if any(r["status"] != "ok" for r in rows) else ""))
    if len(keys) > 1:
        ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    runs.save_figure(fig, path)


__all__ = ["sweep", "parse_grid", "check_grid", "combinations", "run_name", "ranked", "metric",
           "summary", "write_table", "run_one"]
