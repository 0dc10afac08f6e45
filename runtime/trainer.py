"""`netc train`: the training loop. Settings come from the spec's train section, overridden by the
command line; everything random is drawn from (seed, epoch, batch), so a resumed run repeats an
uninterrupted one exactly."""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time

import numpy as np

from netc.compiler import registry
from netc.compiler.settings import FULL_BATCH
from netc.dsl.errors import DataError, NetcError, NumericsError

from . import data, ensemble, losses, metrics, optim, runs, schedule
from .backends import registry as backends
from .model import Model, read_checkpoint

DEFAULTS = {"optimizer": "sgd", "device": "cpu", "batch": 32, "epochs": 10, "seed": 0,
            "val_split": 0.1,
            "test_split": 0.2, "normalize": True, "schedule": "constant", "early_stop": False,
            "patience": 5, "max_iter": 1, "augment": (), "snapshots": False}
OPTIMIZER_KEYS = ("momentum", "dampening", "alpha", "betas", "eps", "weight_decay", "history",
                  "damping")


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
    device that runs, a schedule that fits the epochs, snapshots with cosine_restarts."""
    backends.load(cfg["device"])
    schedule.from_settings(cfg)
    if cfg.get("snapshots") and cfg["schedule"] != "cosine_restarts":
        raise NetcError(f"snapshots=true saves the weights at the end of each cosine_restarts "
                        f"cycle; this run's schedule is {cfg['schedule']}",
                        "add schedule=cosine_restarts cycles=M to the train section (or pass "
                        "--schedule cosine_restarts --cycles M)")


class Trainer:
    def __init__(self, net, cfg: dict, folder: str, progress=True, diagnose=False, out=None,
                 split=None):
        self.net, self.cfg, self.folder = net, cfg, folder
        self.progress, self.diagnose, self.out = progress, diagnose, out or sys.stdout
        seed = cfg["seed"]
        self.model = Model(net, backend=cfg["device"], seed=seed)
        self.device = self.model.device
        self.loss = self.model.loss_name(cfg.get("loss"))
        self.classify = self.loss in losses.CLASS_LABELS or self.loss == "bce"
        # a class per pixel (OUT per=pixel): label maps, pixel accuracy and mean IoU
        self.segment = self.loss in losses.CLASS_LABELS and len(net.output_shape) == 3
        ds = data.load(cfg["data"], net.input_shape, net.output_shape[0],
                       self.loss in losses.CLASS_LABELS, seed,
                       label_shape=net.output_shape[1:] if self.segment else ())
        self.train_idx, self.val_idx, self.test_idx = split or data.split(
            ds, cfg["val_split"], cfg["test_split"], seed)
        self.ds = ds
        self.mean, self.std = (data.normalizer(ds.x[self.train_idx]) if cfg["normalize"]
                               else (np.float32(0), np.float32(1)))
        self.resident = self.keep_on_device()
        if cfg.get("init_from"):
            self.init_from(cfg["init_from"])
        self.opt = self.make_optimizer()
        self.sched = schedule.from_settings(cfg)
        self.epoch, self.batch_pos, self.best, self.best_epoch, self.bad = 0, 0, math.inf, 0, 0
        self.sums = [0.0, 0.0, 0]
        self.stop, self.interrupted = False, False

    # ---- set-up ------------------------------------------------------------------------------
    def make_optimizer(self):
        cfg = self.cfg
        hyper = {k: cfg[k] for k in OPTIMIZER_KEYS if k in cfg}
        name = cfg["optimizer"]
        known = [k for k in optim.defaults(name) if k != "lr"]
        bad = [k for k in hyper if k not in known]
        if bad:
            raise NetcError(f"optimizer {name} does not take {', '.join(bad)}",
                            f"{name} takes: lr, {', '.join(known) or 'nothing else'}")
        if name == "lm":
            x, y = self.inputs(self.train_idx)
            hyper["jacobian"] = self.model.jacobian(x, y)
        opt = optim.optimizer(name, self.model.params, lr=cfg["lr"], **hyper)
        opt.lr_mult = self.lr_multipliers()
        return opt

    def lr_multipliers(self) -> dict:
        """freeze=[pattern ...] sets a multiplier of 0; lr_mult=[m1, m2 ...] scales layer by layer
        in spec order (the layers that have parameters)."""
        mult = {}
        layers = [n for n in self.net.nodes if n.params]
        for i, m in enumerate(self.cfg.get("lr_mult", ())):
            if i < len(layers):
                for short in layers[i].params:
                    mult[f"{layers[i].name}.{short}"] = float(m)
        for n in self.net.layers_matching(self.cfg.get("freeze", ())):
            for short in n.params:
                mult[f"{n.name}.{short}"] = 0.0
        return mult

    @property
    def frozen(self) -> set:
        """The layers this run keeps fixed (freeze=, from the spec or the command line)."""
        return {n.name for n in self.net.layers_matching(self.cfg.get("freeze", ()))}

    def init_from(self, path):
        """Transfer learning: copy the arrays whose layer name and shape match."""
        arrays = read_checkpoint(path, "init_from checkpoint")
        state = self.model.state()
        copied = [k for k, v in arrays.items() if k in state and state[k].shape == v.shape]
        if not copied:
            raise DataError(f"init_from: no layer of {path} matches this network by name and shape")
        self.model.load_state({k: arrays[k] for k in copied}, strict=False)
        self.say(f"init_from {path}: {len(copied)} arrays copied")

    # ---- batches -----------------------------------------------------------------------------
    def keep_on_device(self):
        """On a GPU, the normalized data set in device memory for the run, where it fits and no
        augmentation has to change its batches on the host: then a step copies over nothing but
        the batch's indices. None otherwise."""
        if self.device.name == "cpu" or self.cfg["augment"]:
            return None
        x = ((self.ds.x - self.mean) / self.std).astype(self.model.dtype)
        if not self.device.fits(x.nbytes + self.ds.y.nbytes):
            return None
        return self.device.from_host(x), self.device.from_host(self.ds.y)

    def inputs(self, idx, ds_x=None, ds_y=None, augment_rng=None):
        x = (self.ds.x if ds_x is None else ds_x)[idx]
        y = (self.ds.y if ds_y is None else ds_y)[idx]
        if augment_rng is not None and self.cfg["augment"]:
            x, y = data.augment(x, self.cfg["augment"], augment_rng, y)
        return (x - self.mean) / self.std, y

    def accuracy(self, out, y):
        """The fraction correct (None where the loss is not a classification's), on the backend
        that holds `out`."""
        if not self.classify:
            return None
        return backends.backend_of(out).accuracy(out, y, self.loss == "bce")

    def measure(self, idx, ds_x=None, ds_y=None):
        """(mean loss, accuracy, mean IoU) over samples, in evaluation mode, in batches; the
        accuracy is None where the loss is not a classification's, the mean IoU where the
        output is not per pixel."""
        if len(idx) == 0:
            return None, None, None
        total, correct, n = 0.0, 0.0, 0
        k = self.net.output_shape[0]
        counts = np.zeros((k, k), np.int64)
        for part in np.array_split(idx, max(1, len(idx) // 512)):
            x, y = self.inputs(part, ds_x, ds_y)
            loss, out = self.model.evaluate(x, y, self.loss)
            total += loss * len(part)
            acc = self.accuracy(out, y)
            correct += (acc or 0.0) * len(part)
            n += len(part)
            if self.segment:
                counts += metrics.confusion(out, y, k)
        return (total / n, (correct / n if self.classify else None),
                metrics.mean_iou(counts) if self.segment else None)

    def test_data(self):
        """The test split's raw inputs and targets (the data's own test set where it has one)."""
        if self.ds.x_test is not None:
            return self.ds.x_test, self.ds.y_test
        return self.ds.x[self.test_idx], self.ds.y[self.test_idx]

    # ---- one step ---------------------------------------------------------------------------
    def regularize(self, grads) -> float:
        """L1/L2 (elastic net with both) on the parameters each kind says are regularised (CONV,
        FC, OUT weights; biases, BN and slopes excluded)."""
        l1, l2 = self.cfg.get("l1", 0.0), self.cfg.get("l2", 0.0)
        extra = 0.0
        if l1 or l2:
            kinds = registry.kinds()
            for n in self.net.nodes:
                for short in kinds[n.kind].regularized(n.hyper):
                    key = f"{n.name}.{short}"
                    extra += self.device.penalty(self.model.params[key], grads[key], l1, l2)
        return extra

    def clip(self, grads):
        cv, cn = self.cfg.get("clip_value"), self.cfg.get("clip_norm")
        if cv:
            for g in grads.values():
                self.device.clip_values(g, cv)
        if cn:
            norm = math.sqrt(sum(self.device.sum_squares(g) for g in grads.values()))
            if norm > cn:
                for g in grads.values():
                    self.device.scale(g, cn / norm)

    def check_finite(self, loss, grads, where):
        if math.isfinite(loss) and self.device.all_finite(grads.values()):
            return
        norms = {}
        for name, g in grads.items():
            g = self.device.to_host(g)
            layer = name.rsplit(".", 1)[0]
            bad = not np.isfinite(g).all()
            v = float(np.sqrt(np.square(g, dtype=np.float64).sum())) if not bad else math.inf
            norms[layer] = max(norms.get(layer, 0.0), math.inf if bad else v)
        order = [n.name for n in reversed(self.net.nodes) if n.name in norms]  # backward order
        culprit = next((n for n in order if norms[n] == math.inf), max(norms, key=norms.get))
        raise NumericsError(
            f"{where}: the loss became {loss:g}; the gradients of layer {culprit} blew up "
            f"(norm {norms[culprit]:g})",
            f"lower the learning rate (lr={self.opt.lr:g}), or clip the gradients "
            "(clip_norm=1); the last good checkpoint is kept")

    def sgd_step(self, idx, epoch, b):
        rng_aug = np.random.default_rng([self.cfg["seed"], epoch, b, 2])
        self.model.rng = np.random.default_rng([self.cfg["seed"], epoch, b, 3])
        if self.resident is not None:
            x, y = (self.device.take(a, idx) for a in self.resident)
        else:
            x, y = self.inputs(idx, augment_rng=rng_aug)
        with np.errstate(all="ignore"):  # a blow-up is reported below, with its layer
            loss, grads = self.model.loss_and_grads(x, y, self.loss)
            loss += self.regularize(grads)
        self.check_finite(loss, grads, f"epoch {epoch + 1}, step {b + 1}")
        self.clip(grads)
        self.opt.step(grads)
        return loss, self.accuracy(self.model.last_output, y)

    def full_batch_step(self, epoch):
        x, y = self.inputs(self.train_idx)

        def closure():
            self.model.rng = np.random.default_rng([self.cfg["seed"], epoch, 3])
            loss, grads = self.model.loss_and_grads(x, y, self.loss)
            loss += self.regularize(grads)
            return loss, grads

        for it in range(self.cfg["max_iter"]):
            loss = self.opt.iterate(closure)
            if not math.isfinite(loss):
                raise NumericsError(f"epoch {epoch + 1}: the loss became {loss}",
                                    "lower lr or use another optimizer")
        return loss

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        started = time.perf_counter()
        previous = self._catch_interrupt()
        try:
            while self.epoch < cfg["epochs"] and not self.stop:
                self.run_epoch()
        except KeyboardInterrupt:
            self.save("last.npz")
            self.say(f"interrupted in epoch {self.epoch + 1} after step {self.batch_pos}: saved "
                     f"{self.folder}/last.npz; continue with --resume {self.folder}")
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if cfg["early_stop"] and os.path.exists(os.path.join(self.folder, "best.npz")):
            self.restore("best.npz")
        test_loss, test_acc, test_miou = self.measure(self.test_idx)
        if self.ds.x_test is not None:
            test_loss, test_acc, test_miou = self.measure(
                np.arange(len(self.ds.x_test)), self.ds.x_test, self.ds.y_test)
        snapshots = self.snapshot_results() if cfg.get("snapshots") else {}
        result = {"network": self.net.name, "epochs": self.epoch, "seconds": round(
            time.perf_counter() - started + self.cfg.get("_seconds", 0.0), 2),
            "best_epoch": self.best_epoch, "best_val_loss": None if math.isinf(self.best)
            else self.best, "test_loss": test_loss, "test_acc": test_acc,
            **({"test_miou": test_miou} if self.segment else {}),
            "test_samples": int(len(self.ds.x_test) if self.ds.x_test is not None
                                else len(self.test_idx)), **snapshots}
        runs.write_json(os.path.join(self.folder, "result.json"), result)
        runs.plot({self.net.name: runs.read_metrics(self.folder)},
                  os.path.join(self.folder, "curves.png"), self.net.name)
        return result

    def snapshot_results(self) -> dict:
        """The test scores of the snapshots written so far and of their ensemble (printed too)."""
        done = {k: os.path.join(self.folder, f"snapshot_{k}.npz")
                for k in range(1, self.cfg.get("cycles", 1) + 1)}
        done = {k: p for k, p in done.items() if os.path.exists(p)}
        x, y = self.test_data()
        if not done or len(y) == 0:
            return {}
        members = ensemble.load(list(done.values()), self.net, self.cfg["device"])
        scores = ensemble.evaluate(members, x, y, self.loss)
        rows = [{"file": os.path.basename(p), "epoch": self.sched.warmup + k * self.sched.period,
                 **_as_test(s)} for (k, p), s in zip(done.items(), scores["members"])]
        mean = {"members": len(rows), **_as_test(scores["ensemble"])}
        for r in rows:
            self.say(f"{r['file']} (epoch {r['epoch']}): {result_line(r)}")
        self.say(f"snapshot ensemble of {len(rows)}: {result_line(mean)}")
        return {"snapshots": rows, "snapshot_ensemble": mean}

    def _catch_interrupt(self):
        """Ctrl-C sets a flag; the loop stops after the step in progress (never half-way through
        an update) and writes last.npz."""
        self.interrupted = False
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            self.interrupted = True
        return signal.signal(signal.SIGINT, handler)

    def run_epoch(self):
        cfg, epoch = self.cfg, self.epoch
        lr = self.sched.lr(epoch)
        self.opt.lr = lr
        t0 = time.perf_counter()
        if cfg["optimizer"] in FULL_BATCH:
            self.full_batch_step(epoch)
        else:
            order = data.batches(self.train_idx, cfg["batch"],
                                 np.random.default_rng([cfg["seed"], epoch, 1]))
            bar = self.bar(len(order), epoch)
            for b in range(self.batch_pos, len(order)):
                loss, acc = self.sgd_step(order[b], epoch, b)
                self.sums[0] += loss * len(order[b])
                self.sums[1] += (acc or 0.0) * len(order[b])
                self.sums[2] += len(order[b])
                self.batch_pos = b + 1
                if bar is not None:
                    bar.update(1)
                    done = self.sums[2]
                    shown = {"loss": f"{self.sums[0] / done:.4f}"}
                    if acc is not None:
                        shown["acc"] = f"{100 * self.sums[1] / done:.1f}%"
                    bar.set_postfix(**shown, lr=f"{lr:.3g}",
                                    rate=f"{done / max(time.perf_counter() - t0, 1e-9):,.0f}/s")
                if self.interrupted:
                    raise KeyboardInterrupt
            if bar is not None:
                bar.close()
        self.finish_epoch(lr, time.perf_counter() - t0)

    def bar(self, total, epoch):
        if not self.progress:
            return None
        from tqdm import tqdm
        return tqdm(total=total, initial=self.batch_pos, desc=f"epoch {epoch + 1}/{self.cfg['epochs']}",
                    unit="batch", leave=False, file=sys.stderr, dynamic_ncols=True)

    def finish_epoch(self, lr, seconds):
        train_loss, train_acc, train_miou = self.measure(self.train_idx)
        val_loss, val_acc, val_miou = self.measure(self.val_idx)
        self.epoch += 1
        self.batch_pos, self.sums = 0, [0.0, 0.0, 0]
        row = {"epoch": self.epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
               "val_loss": val_loss, "val_acc": val_acc, "seconds": round(seconds, 3),
               "train_miou": train_miou, "val_miou": val_miou}
        runs.append_metrics(self.folder, row)
        watched = val_loss if val_loss is not None else train_loss
        if watched < self.best - 1e-12:
            self.best, self.best_epoch, self.bad = watched, self.epoch, 0
            self.save("best.npz")
        else:
            self.bad += 1
        self.sched.observe(watched)
        cycle = self.sched.cycle_end(self.epoch) if self.cfg.get("snapshots") else None
        if cycle:  # before last.npz: a resume from last.npz finds the snapshot written
            self.save(f"snapshot_{cycle}.npz")
        self.save("last.npz")
        self.say(self.line(row))
        if self.diagnose:
            self.say(self.diagnostics())
        if self.cfg["early_stop"] and self.bad >= self.cfg["patience"]:
            self.say(f"early stopping: no better validation loss for {self.bad} epochs; "
                     f"best was epoch {self.best_epoch}")
            self.stop = True

    def line(self, r):
        def pct(v, miou=None):
            acc = "" if v is None else f" {'pixel acc' if self.segment else 'acc'} {100 * v:5.1f}%"
            return acc + ("" if miou is None else f" mIoU {100 * miou:5.1f}%")
        val = "" if r["val_loss"] is None else \
            f" | val loss {r['val_loss']:.4f}{pct(r['val_acc'], r.get('val_miou'))}"
        return (f"epoch {r['epoch']:>3}/{self.cfg['epochs']}  lr {r['lr']:.3g} | train loss "
                f"{r['train_loss']:.4f}{pct(r['train_acc'], r.get('train_miou'))}{val} | "
                f"{r['seconds']:.1f}s")

    def diagnostics(self) -> str:
        """Per-layer gradient norms and activation RMS on one training batch."""
        idx = self.train_idx[:min(len(self.train_idx), self.cfg["batch"])]
        x, y = self.inputs(idx)
        self.model.observe = {}
        _, grads = self.model.loss_and_grads(x, y, self.loss, train=False)
        acts, self.model.observe = self.model.observe, None
        lines = ["  layer                      grad norm   activation rms"]
        for n in self.net.nodes:
            if not n.inputs:  # the input
                continue
            g = [grads[f"{n.name}.{k}"] for k in n.params]
            gn = math.sqrt(sum(self.device.sum_squares(v) for v in g)) if g else None
            lines.append(f"  {n.name:<26} {'' if gn is None else f'{gn:.3e}':>9}   {acts[n.name]:.3e}")
        return "\n".join(lines)

    def say(self, text):
        print(text, file=self.out, flush=True)

    # ---- checkpoints and resume --------------------------------------------------------------
    def save(self, name, folder=None):
        meta = {"epoch": self.epoch, "batch_pos": self.batch_pos, "best": self.best,
                "best_epoch": self.best_epoch, "bad": self.bad, "sums": self.sums,
                "schedule": self.sched.state()}
        extra = {f"opt::{k}": v for k, v in self.opt.state_arrays().items()}
        extra["__netc_train__"] = np.array(json.dumps(meta))
        extra["__netc_norm_mean__"] = np.asarray(self.mean)
        extra["__netc_norm_std__"] = np.asarray(self.std)
        self.model.save(os.path.join(folder or self.folder, name), extra)

    def restore(self, name):
        self.model.load_state(read_checkpoint(os.path.join(self.folder, name)))

    def resume(self):
        path = os.path.join(self.folder, "last.npz")
        if not os.path.exists(path):
            raise NetcError(f"--resume: {self.folder} has no last.npz to continue from")
        arrays = read_checkpoint(path)
        if str(arrays.get("__netc_hash__")) != self.net.spec_hash:
            raise NetcError(f"--resume: {self.folder} was trained from a different spec")
        self.model.load_state(arrays)
        self.opt.load_state_arrays({k[5:]: v for k, v in arrays.items() if k.startswith("opt::")})
        meta = json.loads(str(arrays["__netc_train__"]))
        self.epoch, self.batch_pos = meta["epoch"], meta["batch_pos"]
        self.best, self.best_epoch, self.bad = meta["best"], meta["best_epoch"], meta["bad"]
        self.sums = meta["sums"]
        self.sched.load(meta["schedule"])
        runs.truncate_metrics(self.folder, self.epoch)


# ---- what the CLI and the Python API call --------------------------------------------------------
def train(net, overrides=None, out=None, resume=None, progress=True, diagnose=False,
          stdout=None):
    """Train `net` (a compiled Net) and return (result, folder). With `resume`, continue the run
    in that folder from its last checkpoint (its saved settings; `epochs` may be raised)."""
    from netc.compiler import report
    stdout = stdout or sys.stdout
    overrides = dict(overrides or {})
    if resume:
        folder = runs.prepare(resume, resume=True)
        saved = runs.read_json(os.path.join(folder, "config.json"))
        cfg = {**saved["settings"], **{k: v for k, v in overrides.items() if k == "epochs" and v}}
    else:
        cfg = resolve(net, overrides)
        check(cfg)
        folder = runs.prepare(out or runs.default_dir(net.name))
    trainer = Trainer(net, _plain(cfg), folder, progress, diagnose, stdout)
    if resume:
        trainer.resume()
    write_config(folder, net, cfg)
    print(report.one_line(net, cfg["batch"], cfg["optimizer"], trainer.frozen), file=stdout)
    print(f"data {trainer.ds.name}: {len(trainer.train_idx)} train, {len(trainer.val_idx)} "
          f"validation, {len(trainer.test_idx) if trainer.ds.x_test is None else len(trainer.ds.x_test)}"
          f" test; {cfg['optimizer']} lr={cfg['lr']:g}, batch {cfg['batch']}, {cfg['epochs']} "
          f"epochs -> {folder}", file=stdout)
    result = trainer.run()
    return result, folder


def write_config(folder, net, cfg, **extra):
    """config.json: the network, its spec and the resolved settings."""
    runs.write_json(os.path.join(folder, "config.json"), {
        "network": net.name, "spec": net.source.text if net.source else None,
        "spec_hash": net.spec_hash, "settings": cfg, **extra})


def _plain(cfg):
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()}


def _as_test(scores: dict) -> dict:
    """{"loss", "acc"[, "miou"]} as result.json names them: test_loss, test_acc[, test_miou]."""
    return {f"test_{k}": v for k, v in scores.items()}


def result_line(r: dict) -> str:
    """'test loss L, test accuracy A%' (pixel accuracy and mean IoU for a per-pixel output)."""
    line = f"test loss {r['test_loss']:.4f}"
    if r.get("test_miou") is not None:
        return line + (f", test pixel accuracy {100 * r['test_acc']:.2f}%, mean IoU "
                       f"{100 * r['test_miou']:.2f}%")
    if r.get("test_acc") is None:
        return line
    return line + f", test accuracy {100 * r['test_acc']:.2f}%"


def cross_validate(net, overrides, k, out=None, progress=True, stdout=None):
    """K-fold cross-validation over the training part (the test split is kept apart)."""
    stdout = stdout or sys.stdout
    cfg = resolve(net, overrides)
    check(cfg)
    folder = runs.prepare(out or runs.default_dir(net.name + "-cv"))
    probe = Trainer(net, _plain(cfg), folder, False, False, stdout)
    rest = np.concatenate([probe.train_idx, probe.val_idx])
    results = []
    for i, (tr, va) in enumerate(data.folds(rest, k, cfg["seed"])):
        sub = runs.prepare(os.path.join(folder, f"fold{i + 1}"))
        print(f"fold {i + 1}/{k}", file=stdout)
        t = Trainer(net, _plain(cfg), sub, progress, False, stdout, split=(tr, va, probe.test_idx))
        t.run()
        rows = runs.read_metrics(sub)
        results.append(rows[-1])
    summary = {"folds": k}
    for key in ("val_loss", "val_acc"):
        vals = [r[key] for r in results if r[key] is not None]
        if vals:
            summary[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "values": vals}
    runs.write_json(os.path.join(folder, "result.json"), summary)
    for key in ("val_loss", "val_acc"):
        if key in summary:
            print(f"{key}: {summary[key]['mean']:.4f} +- {summary[key]['std']:.4f} over {k} folds",
                  file=stdout)
    return summary, folder


def compare(net, overrides, names, out=None, progress=True, stdout=None):
    """Train the same initial weights with each optimizer; plot their curves together."""
    stdout = stdout or sys.stdout
    check(resolve(net, overrides, need_data=False))
    folder = runs.prepare(out or runs.default_dir(net.name + "-compare"))
    curves, table = {}, []
    for name in names:
        o = {**overrides, "optimizer": name}
        if overrides.get("lr") is None:
            o["lr"] = optim.defaults(name)["lr"]  # the spec's lr was tuned for its own optimizer
        print(f"--- {name}", file=stdout)
        result, sub = train(net, o, os.path.join(folder, name), progress=progress, stdout=stdout)
        curves[name] = runs.read_metrics(sub)
        table.append((name, result))
    runs.plot(curves, os.path.join(folder, "compare.png"), net.name)
    print(f"{'optimizer':<10} {'test loss':>10} {'test acc':>9} {'best epoch':>11}", file=stdout)
    for name, r in table:
        acc = "" if r["test_acc"] is None else f"{100 * r['test_acc']:.1f}%"
        print(f"{name:<10} {r['test_loss']:>10.4f} {acc:>9} {r['best_epoch']:>11}", file=stdout)
    return table, folder


def bagging(net, overrides, k, out=None, progress=True, stdout=None):
    """Bootstrap aggregating: train k members, each on a resample of the training split (with
    replacement, of its size; see ensemble.bootstrap) and with the same validation and test
    splits; write each member's final weights (the best ones with early_stop) as member_I.npz,
    and the members' and their ensemble's test scores in result.json."""
    stdout = stdout or sys.stdout
    cfg = resolve(net, overrides)
    check(cfg)
    folder = runs.prepare(out or runs.default_dir(net.name + "-bagging"))
    write_config(folder, net, cfg, bagging=k)
    started = time.perf_counter()
    probe = Trainer(net, _plain(cfg), folder, False, False, stdout)
    x, y = probe.test_data()
    if len(y) == 0:
        raise NetcError("--bagging compares the members and their ensemble on the test split, "
                        "and this data leaves none (test_split=0)", "use test_split=0.2, say")
    names, epochs = [], []
    for i in range(1, k + 1):
        print(f"member {i}/{k}", file=stdout)
        sub = runs.prepare(os.path.join(folder, f"member{i}"))
        split = (ensemble.bootstrap(probe.train_idx, cfg["seed"], i), probe.val_idx,
                 probe.test_idx)
        t = Trainer(net, _plain(cfg), sub, progress, False, stdout, split=split)
        result = t.run()
        names.append(f"member_{i}.npz")
        t.save(names[-1], folder)
        epochs.append((result["epochs"], result["best_epoch"]))
    members = ensemble.load([os.path.join(folder, n) for n in names], net, cfg["device"])
    scores = ensemble.evaluate(members, x, y, probe.loss)
    rows = [{"file": n, "epochs": e, "best_epoch": b, **_as_test(s)}
            for n, (e, b), s in zip(names, epochs, scores["members"])]
    summary = {"network": net.name, "bagging": k,
               "seconds": round(time.perf_counter() - started, 2), "test_samples": len(y),
               "members": rows,
               "ensemble": _as_test(scores["ensemble"])}
    runs.write_json(os.path.join(folder, "result.json"), summary)
    for r in rows:
        print(f"{r['file']}: {result_line(r)} (best epoch {r['best_epoch']})", file=stdout)
    print(f"ensemble of {k}: {result_line(summary['ensemble'])}; {folder}/", file=stdout)
    return summary, folder
