"""`netc train`: the runs it makes (one run, K folds, a comparison of optimizers, bagging) and
their settings: defaults < the spec's train section < the command line, checked before any file
is written. Each run is a trainer.Trainer in a locked run folder (runs.claim)."""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from netc.compiler import Net
from netc.compiler import compile as compile_spec
from netc.compiler.registry import LayerError
from netc.compiler.settings import FULL_BATCH, TRAIN_KEYS
from netc.dsl.errors import NetcError

from . import data, distributed, ensemble, files, optim, runs, schedule
from .backends import registry as backends
from .trainer import Trainer, as_test, result_line

DEFAULTS = {"optimizer": "sgd", "device": "cpu", "batch": 32, "epochs": 10, "seed": 0,
            "val_split": 0.1, "test_split": 0.2, "normalize": True, "schedule": "constant",
            "early_stop": False, "patience": 5, "max_iter": 1, "augment": (), "snapshots": False}


def resolve(net, overrides: dict, need_data: bool = True) -> dict:
    """The run's settings: defaults < the spec's train section < the command line."""
    cfg = {**DEFAULTS, **net.train, **{k: v for k, v in overrides.items() if v is not None}}
    if need_data and "data" not in cfg:
        raise NetcError("no training data: the spec's train section has no `data=` and none was "
                        "given", "add `train data=digits` to the spec, or pass --data")
    if "lr" not in cfg:
        cfg["lr"] = optim.defaults(cfg["optimizer"])["lr"]
    if cfg["optimizer"] == "lm" and cfg.get("loss", "mse") != "mse" and net.train.get("loss"):
        raise NetcError("lm minimises a sum of squares", "use loss=mse with optimizer=lm")
    return cfg


def check(cfg: dict):
    """What the settings need beyond each key's own type, checked before any file is written: a
    device that runs, a schedule that fits the epochs, snapshots with cosine_restarts, a whole
    number for save_every, tensorboardX for tensorboard."""
    backends.load(cfg["device"])
    schedule.from_settings(cfg)
    every = cfg.get("save_every")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise NetcError(f"save_every is a number of epochs (1 or more); received {every!r}",
                        "save_every=5 writes snapshot_e5.npz, snapshot_e10.npz ... in the run "
                        "folder")
    if cfg.get("tensorboard") and not runs.tensorboard_available():
        raise NetcError("--tensorboard writes TensorBoard's event files with tensorboardX, which "
                        "is not installed", "pip install 'netc[tensorboard]' (or pip install "
                        "tensorboardX); metrics.csv has the same figures without it")
    if cfg.get("snapshots") and cfg["schedule"] != "cosine_restarts":
        raise NetcError(f"snapshots=true saves the weights at the end of each cosine_restarts "
                        f"cycle; this run's schedule is {cfg['schedule']}",
                        "add schedule=cosine_restarts cycles=M to the train section (or pass "
                        "--schedule cosine_restarts --cycles M)")


def check_memory(net, cfg: dict):
    """Refuse a run whose training-memory estimate (report.memory) is more than the memory
    available where it would run, naming the largest batch that fits."""
    from netc.compiler import report
    free = backends.load(cfg["device"]).free_memory()
    if free is None:
        return
    frozen = {n.name for n in net.layers_matching(cfg.get("freeze", ()))}

    def need(batch):
        return report.memory(net, batch, cfg["optimizer"], frozen=frozen)["training"]
    if need(cfg["batch"]) <= free:
        return
    fixed = need(0)
    fits = (free - fixed) // (need(1) - fixed) if free > fixed else 0
    raise NetcError(f"training {net.name} at batch {cfg['batch']} with {cfg['optimizer']} needs "
                    f"about {files.human_bytes(need(cfg['batch']))}; {cfg['device']} has "
                    f"{files.human_bytes(free)} available",
                    f"the largest batch that fits is {fits}: --batch {fits}" if fits else
                    f"even batch 1 does not fit (its parameters and state alone take "
                    f"{files.human_bytes(fixed)}): make the network or its input smaller")


RESUME_KEYS = ("epochs", "save_every", "tensorboard")  # what a resume may change


def saved_settings(folder: str, overrides: dict) -> dict:
    """A run's settings from its config.json, checked; a resume may change RESUME_KEYS (more
    epochs continue the schedule of the first run's: see schedule.py)."""
    path = os.path.join(folder, "config.json")
    try:
        saved = runs.read_json(path)
    except (OSError, ValueError) as e:
        raise NetcError(f"--resume: cannot read {path}: {e}",
                        "the run folder is damaged: start a new run (--init-from its "
                        "last.npz keeps the weights)") from None
    settings = saved.get("settings") if isinstance(saved, dict) else None
    if isinstance(saved, dict) and saved.get("bagging"):
        raise NetcError(f"--resume continues one run; {folder} holds a bagging run's members",
                        "train the bagging run again, into a new folder")
    if not isinstance(settings, dict):
        raise NetcError(f"--resume: {path} has no settings",
                        "the run folder is damaged: start a new run (--init-from its last.npz "
                        "keeps the weights)")
    cfg = {**DEFAULTS, **settings, **{k: v for k, v in overrides.items()
                                      if k in RESUME_KEYS and v is not None}}
    if cfg["epochs"] != settings.get("epochs", cfg["epochs"]):
        # the schedule keeps the first run's horizon: the epochs already trained keep their rates
        cfg["schedule_horizon"] = settings.get("schedule_horizon") or settings["epochs"]
    missing = [k for k in ("data", "lr") if k not in cfg]
    if missing:
        raise NetcError(f"--resume: {path}'s settings lack {', '.join(missing)}",
                        "the run folder is damaged: start a new run")
    for k, v in cfg.items():
        if k in TRAIN_KEYS:
            try:
                cfg[k] = TRAIN_KEYS[k].parse(tuple(v) if isinstance(v, list) else v, k)
            except LayerError as e:
                raise NetcError(f"--resume: {path}: {e.message}",
                                "the run folder is damaged: start a new run") from None
    return cfg


# ---- what the CLI and the Python API call --------------------------------------------------------
def train(net, overrides=None, out=None, resume=None, progress=None, diagnose=False,
          stdout=None, group=None):
    """Train `net` (a compiled Net, or a spec's path or text, as netc.compile takes) and return
    (result, folder). With `resume`, continue the run in that folder from its last checkpoint
    (its saved settings; `epochs` may be raised). The folder is locked while the run writes into
    it. `progress`: None draws a bar on a terminal and in a Jupyter notebook, none where stderr
    goes to a file or a pipe (the epoch lines only); True always, False never. `group`: the MPI
    ranks that train the run together (distributed.connect()), None for this process alone."""
    net = _compiled(net)
    group = group or distributed.SOLO
    stdout = stdout or sys.stdout
    overrides = dict(overrides or {})
    if resume or out:  # a folder that cannot take the run is refused before the backend loads
        group.refuse(resume or out, bool(resume))
    if not resume:
        cfg = group.settled(lambda: _checked(net, resolve(net, overrides), group))
    with group.claim(resume or out or runs.default_dir(net.name), bool(resume)) as folder:
        if resume:  # rank 0 reads the run's settings
            saved = group.share(_saved, folder, overrides, group.size)
            cfg = group.settled(_checked, net, saved, group)
        trainer = group.settled(Trainer, net, _plain(cfg), folder, progress, diagnose, stdout,
                                None, group)
        if resume:
            trainer.resume()
        if group.lead:
            write_config(folder, net, cfg, **group.record)
        trainer.announce()
        return trainer.run(), folder


def _saved(folder, overrides, ranks):
    """The settings of the run in `folder`, which a resume on `ranks` ranks continues."""
    distributed.check_resume(ranks, folder)
    return saved_settings(folder, overrides)


def _checked(net, cfg, group=distributed.SOLO):
    """cfg, once its settings are checked together (and with the ranks that train it) and the
    run's memory estimated."""
    check(cfg)
    distributed.check(group, cfg, FULL_BATCH)
    check_memory(net, cfg)
    return cfg


def _compiled(net):
    """A Net as it is; a spec's path or text compiled (what the public functions accept)."""
    return net if isinstance(net, Net) else compile_spec(net)


def write_config(folder, net, cfg, **extra):
    """config.json: the network, its spec and the resolved settings."""
    runs.write_json(os.path.join(folder, "config.json"), {
        "network": net.name, "spec": net.source.text if net.source else None,
        "spec_hash": net.spec_hash, "settings": cfg, **extra})


def part(cfg: dict, name: str) -> dict:
    """The settings of one run of several (a fold, an optimizer, a member): its TensorBoard log
    in a subfolder of the one given, as TensorBoard shows runs side by side."""
    if not cfg.get("tensorboard"):
        return cfg
    return {**cfg, "tensorboard": os.path.join(cfg["tensorboard"], name)}


def _plain(cfg):
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()}


def cross_validate(net, overrides, k, out=None, progress=None, stdout=None):
    """K-fold cross-validation over the training part (the test split is kept apart)."""
    net = _compiled(net)
    stdout = stdout or sys.stdout
    if out:
        runs.refuse(out)
    cfg = _checked(net, resolve(net, overrides))
    with runs.claim(out or runs.default_dir(net.name + "-cv")) as folder:
        probe = Trainer(net, _plain(cfg), folder, False, False, stdout)
        rest = np.concatenate([probe.train_idx, probe.val_idx])
        results = []
        for i, (tr, va) in enumerate(data.folds(rest, k, cfg["seed"])):
            sub = runs.subfolder(folder, f"fold{i + 1}")
            print(f"fold {i + 1}/{k}", file=stdout)
            t = Trainer(net, _plain(part(cfg, f"fold{i + 1}")), sub, progress, False, stdout,
                        split=(tr, va, probe.test_idx))
            t.run()
            results.append(runs.read_metrics(sub)[-1])
        summary = {"folds": k}
        for key in ("val_loss", "val_acc"):
            vals = [r[key] for r in results if r[key] is not None]
            if vals:
                summary[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)),
                                "values": vals}
        runs.write_json(os.path.join(folder, "result.json"), summary)
    for key in ("val_loss", "val_acc"):
        if key in summary:
            print(f"{key}: {summary[key]['mean']:.4f} +- {summary[key]['std']:.4f} over {k} folds",
                  file=stdout)
    return summary, folder


def compare(net, overrides, names, out=None, progress=None, stdout=None):
    """Train the same initial weights with each optimizer; plot their curves together."""
    net = _compiled(net)
    stdout = stdout or sys.stdout
    if out:
        runs.refuse(out)
    check(resolve(net, overrides, need_data=False))
    curves, table = {}, []
    with runs.claim(out or runs.default_dir(net.name + "-compare")) as folder:
        for name in names:
            o = part({**overrides, "optimizer": name}, name)
            if overrides.get("lr") is None:
                o["lr"] = optim.defaults(name)["lr"]  # the spec's lr was tuned for its own
            print(f"--- {name}", file=stdout)
            result, sub = train(net, o, os.path.join(folder, name), progress=progress,
                                stdout=stdout)
            curves[name] = runs.read_metrics(sub)
            table.append((name, result))
        runs.plot(curves, os.path.join(folder, "compare.png"), net.name)
    print(f"{'optimizer':<10} {'test loss':>10} {'test acc':>9} {'best epoch':>11}", file=stdout)
    for name, r in table:
        acc = "" if r["test_acc"] is None else f"{100 * r['test_acc']:.1f}%"
        loss = "-" if r["test_loss"] is None else f"{r['test_loss']:.4f}"
        print(f"{name:<10} {loss:>10} {acc:>9} {r['best_epoch']:>11}", file=stdout)
    return table, folder


def bagging(net, overrides, k, out=None, progress=None, stdout=None):
    """Bootstrap aggregating: train k members, each on a resample of the training split (with
    replacement, of its size; see ensemble.bootstrap) and with the same validation and test
    splits; write each member's final weights (the best ones with early_stop) as member_I.npz,
    and the members' and their ensemble's test scores in result.json."""
    net = _compiled(net)
    stdout = stdout or sys.stdout
    if out:
        runs.refuse(out)
    cfg = _checked(net, resolve(net, overrides))
    with runs.claim(out or runs.default_dir(net.name + "-bagging")) as folder:
        write_config(folder, net, cfg, bagging=k)
        started = time.perf_counter()
        probe = Trainer(net, _plain(cfg), folder, False, False, stdout)
        x, y = probe.test_data()
        if len(y) == 0:
            raise NetcError("--bagging compares the members and their ensemble on the test "
                            "split, and this data leaves none (test_split=0)",
                            "use test_split=0.2, say")
        names, epochs = [], []
        for i in range(1, k + 1):
            print(f"member {i}/{k}", file=stdout)
            sub = runs.subfolder(folder, f"member{i}")
            split = (ensemble.bootstrap(probe.train_idx, cfg["seed"], i), probe.val_idx,
                     probe.test_idx)
            t = Trainer(net, _plain(part(cfg, f"member{i}")), sub, progress, False, stdout,
                        split=split)
            result = t.run()
            names.append(f"member_{i}.npz")
            t.save(names[-1], folder)
            epochs.append((result["epochs"], result["best_epoch"]))
        members = ensemble.load([os.path.join(folder, n) for n in names], net, cfg["device"])
        scores = ensemble.evaluate(members, x, y, probe.loss)
        rows = [{"file": n, "epochs": e, "best_epoch": b, **as_test(s)}
                for n, (e, b), s in zip(names, epochs, scores["members"])]
        summary = {"network": net.name, "bagging": k,
                   "seconds": round(time.perf_counter() - started, 2), "test_samples": len(y),
                   "members": rows, "ensemble": as_test(scores["ensemble"])}
        runs.write_json(os.path.join(folder, "result.json"), summary)
    for r in rows:
        print(f"{r['file']}: {result_line(r)} (best epoch {r['best_epoch']})", file=stdout)
    print(f"ensemble of {k}: {result_line(summary['ensemble'])}; {folder}/", file=stdout)
    return summary, folder
