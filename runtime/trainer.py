"""The training loop: one run's epochs, steps, checks, checkpoints and scores, from settings that
training.py resolves; everything random is drawn from (seed, epoch, batch), so a resumed run
repeats an uninterrupted one exactly."""
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

from . import data, distributed, ensemble, losses, metrics, optim, runs, schedule
from . import progress as show
from .backends import registry as backends
from .model import Model, read_checkpoint

OPTIMIZER_KEYS = ("momentum", "dampening", "alpha", "betas", "eps", "weight_decay", "history",
                  "damping")
DIVERGED = 1e4  # a step's loss this many times the run's first (or 1, if larger) stops the run


class Trainer:
    def __init__(self, net, cfg: dict, folder: str, progress=True, diagnose=False, out=None,
                 split=None, group=None):
        self.net, self.cfg, self.folder = net, cfg, folder
        # the ranks training this run (distributed.py); rank 0 alone prints and writes files
        self.group = group or distributed.SOLO
        self.diagnose, self.out = diagnose, out or sys.stdout
        self.progress = show.choose(progress if self.group.lead else False)  # progress.py
        seed = cfg["seed"]
        self.model = Model(net, backend=cfg["device"], seed=seed)
        self.device = self.model.device
        self.loss = self.model.loss_name(cfg.get("loss"))
        self.classify = self.loss in losses.CLASS_LABELS or self.loss == "bce"
        # a class per pixel (OUT per=pixel): label maps, pixel accuracy and mean IoU
        self.segment = self.loss in losses.CLASS_LABELS and len(net.output_shape) == 3
        # a class per sample, per pixel or per step (a per-step output's classes are last)
        ds = data.load(cfg["data"], net.input_shape, losses.classes(net.output_shape),
                       self.loss in losses.CLASS_LABELS, seed,
                       label_shape=losses.label_shape(net.output_shape))
        self.train_idx, self.val_idx, self.test_idx = split or data.split(
            ds, cfg["val_split"], cfg["test_split"], seed)
        self.ds = ds
        self.check_batch()
        self.mean, self.std = (data.normalizer(ds.x[self.train_idx]) if cfg["normalize"]
                               else (np.float32(0), np.float32(1)))
        self.model.normalization = (self.mean, self.std)  # saved with every checkpoint
        self.resident = self.keep_on_device()
        if cfg.get("init_from"):
            self.init_from(cfg["init_from"])
        self.opt = self.make_optimizer()
        self.sched = schedule.from_settings(cfg)
        self.epoch, self.batch_pos, self.best, self.best_epoch, self.bad = 0, 0, math.inf, 0, 0
        self.sums = [0.0, 0.0, 0]
        self.first_loss = None  # the run's first step's loss, the scale divergence is seen on
        self.stop, self.interrupted, self.halt = False, False, False  # halt: every rank saw ^C
        self.ahead = False  # the next step compiles its kernels ahead (a first run: run())
        self.board = None  # the TensorBoard log (--tensorboard DIR) while the run runs
        self.widths = None  # the epoch lines' loss columns, set by the first line

    # ---- set-up ------------------------------------------------------------------------------
    def check_batch(self):
        """A network with a BN that sees one value per channel per sample cannot train on a
        batch of one: refuse a batch size of 1 up front (a last batch of one joins the one before
        it, see batches)."""
        bn = self.model.one_value_per_channel
        full = self.cfg["optimizer"] in FULL_BATCH
        n = len(self.train_idx) if full else min(self.cfg["batch"], len(self.train_idx))
        n //= self.group.size  # each rank normalizes over its shard
        if bn and n < 2:
            ranks = " per rank" if self.group.size > 1 else ""
            raise NetcError(f"{bn[0]}: batch normalization needs more than 1 value per channel "
                            f"to train; a batch of {n} sample(s){ranks} of {bn[0]}'s input gives 1",
                            "train on batches of 2 or more (or use LN or GN, which normalize "
                            "each sample on its own)")

    def batches(self, epoch):
        """The epoch's batches of training indices (the same on every rank); a last batch too
        small to give each rank a sample (two where a BN sees one value per sample) joins the
        one before it."""
        order = data.batches(self.train_idx, self.cfg["batch"],
                             np.random.default_rng([self.cfg["seed"], epoch, 1]))
        least = self.group.size * (2 if self.model.one_value_per_channel else 1)
        if len(order) > 1 and len(order[-1]) < least:
            order[-2:] = [np.concatenate(order[-2:])]
        return order

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
        arrays = self.group.share(read_checkpoint, path, "init_from checkpoint")
        state = self.model.state()
        copied = [k for k, v in arrays.items() if k in state and state[k].shape == v.shape]
        if not copied:
            raise DataError(f"init_from: no layer of {path} matches this network by name and shape")
        self.model.load_state({k: arrays[k] for k in copied}, strict=False, source=path)
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
        that holds `out`; of a per-step output, over every step."""
        if not self.classify:
            return None
        out, y = losses.step_rows(out, y)
        return backends.backend_of(out).accuracy(out, y, self.loss == "bce")

    def measure(self, idx, ds_x=None, ds_y=None):
        """(mean loss, accuracy, mean IoU) over samples, in evaluation mode, in batches; the
        accuracy is None where the loss is not a classification's, the mean IoU where the
        output is not per pixel. Each rank measures its shard of the samples; their sums are
        added up."""
        if len(idx) == 0:
            return None, None, None
        k = losses.classes(self.net.output_shape)
        lo, hi = self.group.shard(len(idx))
        sums = self.group.sum(self.sums_over(idx[lo:hi], k, ds_x, ds_y))
        total, correct, n = sums[:3]
        return (total / n, (correct / n if self.classify else None),
                metrics.mean_iou(sums[3:].reshape(k, k).astype(np.int64)) if self.segment
                else None)

    def sums_over(self, idx, k, ds_x=None, ds_y=None):
        """[loss sum, correct, samples, confusion counts (k x k, per pixel outputs only)]."""
        sums = np.zeros(3 + (k * k if self.segment else 0))
        for part in np.array_split(idx, max(1, len(idx) // 512)):
            if len(part) == 0:
                continue
            x, y = self.inputs(part, ds_x, ds_y)
            loss, out = self.model.evaluate(x, y, self.loss)
            sums[:3] += (loss * len(part), (self.accuracy(out, y) or 0.0) * len(part), len(part))
            if self.segment:
                sums[3:] += metrics.confusion(out, y, k).ravel()
        return sums

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

    def check_loss(self, loss, grads, where):
        """Stop on a NaN/Inf loss, or one DIVERGED times the run's first (or 1, if larger), with
        the layer whose gradients blew up or are largest."""
        if self.first_loss is None and math.isfinite(loss):
            self.first_loss = loss
        limit = DIVERGED * max(self.first_loss or 1.0, 1.0)
        if math.isfinite(loss) and loss <= limit:
            return
        culprit, norm = self.blame(grads)
        what = f"the loss became {loss:g}" if not math.isfinite(loss) else \
            f"the loss grew to {loss:.3g}, more than {DIVERGED:g} times its start " \
            f"({self.first_loss:.3g}): training diverged"
        raise NumericsError(f"{where}: {what}; the gradients of layer {culprit} "
                            f"{'blew up' if math.isinf(norm) else 'are the largest'} (norm "
                            f"{norm:g})", self.cure())

    def check_weights(self, grads, where):
        """After an update: stop when a weight became NaN or Inf (one finite check of the
        parameters, which NaN or Inf gradients would have reached too)."""
        if self.device.all_finite(self.model.params.values()):
            return
        culprit, norm = self.blame(grads)
        if not math.isinf(norm):
            culprit = next(k.rsplit(".", 1)[0] for k, v in self.model.params.items()
                           if not self.device.all_finite([v]))
        raise NumericsError(f"{where}: the weights of layer {culprit} became NaN or Inf in the "
                            f"update (its gradients' norm: {norm:g})", self.cure())

    def blame(self, grads):
        """(layer, norm): the first layer in backward order whose gradients are not finite (norm
        inf), else the one whose gradients' norm is largest."""
        norms = {}
        for name, g in grads.items():
            g = self.device.to_host(g)
            layer = name.rsplit(".", 1)[0]
            with np.errstate(all="ignore"):
                v = float(np.sqrt(np.square(g, dtype=np.float64).sum()))
            norms[layer] = max(norms.get(layer, 0.0), v if math.isfinite(v) else math.inf)
        order = [n.name for n in reversed(self.net.nodes) if n.name in norms]  # backward order
        culprit = next((n for n in order if norms[n] == math.inf), max(norms, key=norms.get))
        return culprit, norms[culprit]

    def cure(self) -> str:
        return (f"lower the learning rate (lr={self.opt.lr:g}), or clip the gradients "
                f"(clip_norm=1); {self.kept()}")

    def kept(self) -> str:
        """What a run stopped by an error leaves to continue from."""
        last = os.path.join(self.folder, "last.npz")
        if not os.path.exists(last):
            return "no checkpoint was written before this"
        if os.path.exists(os.path.join(self.folder, "config.json")):
            return f"{last}, the last checkpoint written, is kept: --resume {self.folder} " \
                   "continues from it"
        return f"{last}, the last checkpoint written, is kept"

    def sgd_step(self, idx, epoch, b):
        """One update from the batch `idx`: this rank's shard of it computes its gradients,
        which the group sums over ranks (each weighted by its share of the batch)."""
        group = self.group
        self.model.rng = np.random.default_rng(group.key(self.cfg["seed"], epoch, b, 3))
        lo, hi = group.shard(len(idx))
        x, y = self.shard_inputs(idx, lo, hi, np.random.default_rng([self.cfg["seed"], epoch,
                                                                     b, 2]))
        where = f"epoch {epoch + 1}, step {b + 1}"
        if self.ahead:  # a first run: the steps' kernels compile on both cores first
            self.ahead = False
            self.model.compile_ahead(self.batches_like(x, y, epoch), self.loss,
                                     then=self.opt.rehearse)
        with np.errstate(all="ignore"):  # a blow-up is reported below, with its layer
            loss, grads = self.model.loss_and_grads(x, y, self.loss)
            loss += self.regularize(grads)
            acc = self.accuracy(self.model.last_output, y)
            grads, loss, acc, self.halt = group.reduce_step(
                grads, self.device, (hi - lo) / len(idx), loss, acc, self.interrupted)
            self.check_loss(loss, grads, where)
            self.clip(grads)
            self.opt.step(grads)
        self.check_weights(grads, where)
        return loss, acc

    def shard_inputs(self, idx, lo, hi, rng_aug):
        """The inputs of samples idx[lo:hi]; with augmentation over several ranks, the whole
        batch is augmented and sliced, so that each sample gets the draws it gets in one
        process."""
        if self.resident is not None:
            return tuple(self.device.take(a, idx[lo:hi]) for a in self.resident)
        if self.cfg["augment"] and self.group.size > 1:
            x, y = self.inputs(idx, augment_rng=rng_aug)
            return x[lo:hi], y[lo:hi]
        return self.inputs(idx[lo:hi], augment_rng=rng_aug)

    def batches_like(self, x, y, epoch):
        """(x, y) and a batch of each other size this rank's steps take (a last partial batch:
        some layers choose their kernels by the batch size), made of x's and y's samples."""
        sizes = {hi - lo for lo, hi in (self.group.shard(len(b)) for b in self.batches(epoch))}
        out = [(x, y)]
        for size in sorted(sizes - {len(x), 0}) if len(x) else ():  # (an empty shard: no samples)
            idx = np.arange(size) % len(x)
            out.append((self.device.take(x, idx), None if y is None else self.device.take(y, idx)))
        return out

    def full_batch_step(self, epoch):
        group, n = self.group, len(self.train_idx)
        lo, hi = group.shard(n)
        x, y = self.inputs(self.train_idx[lo:hi])

        def closure():
            self.model.rng = np.random.default_rng(group.key(self.cfg["seed"], epoch, 3))
            loss, grads = self.model.loss_and_grads(x, y, self.loss)
            loss += self.regularize(grads)
            grads, loss, _, _ = group.reduce_step(grads, self.device, (hi - lo) / n, loss, None,
                                                  False)
            return loss, grads

        for it in range(self.cfg["max_iter"]):
            with np.errstate(all="ignore"):
                loss = self.opt.iterate(closure)
            if self.first_loss is None and math.isfinite(loss):
                self.first_loss = loss
            where = f"epoch {epoch + 1}, iteration {it + 1}"
            if not math.isfinite(loss) or loss > DIVERGED * max(self.first_loss, 1.0):
                raise NumericsError(f"{where}: the loss became {loss:g}",
                                    f"lower lr or use another optimizer; {self.kept()}")
            if not self.device.all_finite(self.model.params.values()):
                raise NumericsError(f"{where}: a weight became NaN or Inf",
                                    f"lower lr or use another optimizer; {self.kept()}")
        return loss

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        started = time.perf_counter()
        previous = self._catch_interrupt()
        self.board = runs.TensorBoard(cfg["tensorboard"], self.epoch + 1) \
            if cfg.get("tensorboard") and self.group.lead else None
        cold = show.uncompiled(self.model.implementation_modules())
        self.ahead = bool(cold)
        if cold and self.epoch < cfg["epochs"]:
            self.say(show.compile_notice(cold))
        try:
            while self.epoch < cfg["epochs"] and not self.stop:
                self.run_epoch()
                show.compiled(cold)  # their kernels ran: no notice next time
                cold = []
        except KeyboardInterrupt:
            self.group.average_buffers(self.model)  # as at an epoch's end: see finish_epoch
            self.save("last.npz")
            self.say(f"interrupted in epoch {self.epoch + 1} after step {self.batch_pos}: saved "
                     f"{self.folder}/last.npz; continue with --resume {self.folder}")
            raise
        except runs.WriteError as e:  # a full disk: say what is left to continue from
            error = runs.WriteError(e.message, self.kept())
            self.group.abort(error.format())  # rank 0 alone writes: the others would wait
            raise error from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if self.board is not None:
                self.board.close()
        if cfg["early_stop"] and self.group.lead and os.path.exists(
                os.path.join(self.folder, "best.npz")):
            self.restore("best.npz")
        if cfg["early_stop"]:
            self.group.broadcast_state(self.model)  # rank 0 alone reads the run's files
        test_loss, test_acc, test_miou = self.measure(self.test_idx)
        if self.ds.x_test is not None:
            test_loss, test_acc, test_miou = self.measure(
                np.arange(len(self.ds.x_test)), self.ds.x_test, self.ds.y_test)
        snapshots = self.snapshot_results() if cfg.get("snapshots") and self.group.lead else {}
        result = {"network": self.net.name, "epochs": self.epoch, "seconds": round(
            time.perf_counter() - started + self.cfg.get("_seconds", 0.0), 2),
            "best_epoch": self.best_epoch, "best_val_loss": None if math.isinf(self.best)
            else self.best, "test_loss": test_loss, "test_acc": test_acc,
            **({"test_miou": test_miou} if self.segment else {}),
            "test_samples": int(len(self.ds.x_test) if self.ds.x_test is not None
                                else len(self.test_idx)), **snapshots, **self.group.record}
        if not self.group.lead:
            return result
        runs.write_json(os.path.join(self.folder, "result.json"), result)
        runs.plot({self.net.name: runs.read_metrics(self.folder)},
                  os.path.join(self.folder, "curves.png"), self.net.name)
        return result

    def snapshot_results(self) -> dict:
        """The test scores of the snapshots written so far and of their ensemble (printed too)."""
        cycles = max(0, self.epoch - self.sched.warmup) // self.sched.period  # more on a resume
        done = {k: os.path.join(self.folder, f"snapshot_{k}.npz") for k in range(1, cycles + 1)}
        done = {k: p for k, p in done.items() if os.path.exists(p)}
        x, y = self.test_data()
        if not done or len(y) == 0:
            return {}
        members = ensemble.load(list(done.values()), self.net, self.cfg["device"])
        scores = ensemble.evaluate(members, x, y, self.loss)
        rows = [{"file": os.path.basename(p), "epoch": self.sched.warmup + k * self.sched.period,
                 **as_test(s)} for (k, p), s in zip(done.items(), scores["members"])]
        mean = {"members": len(rows), **as_test(scores["ensemble"])}
        for r in rows:
            self.say(f"{r['file']} (epoch {r['epoch']}): {result_line(r)}")
        self.say(f"snapshot ensemble of {len(rows)}: {result_line(mean)}")
        return {"snapshots": rows, "snapshot_ensemble": mean}

    def _catch_interrupt(self):
        """Ctrl-C sets a flag; the loop stops after the step in progress (never half-way through
        an update) and writes last.npz. A process that ignores Ctrl-C (started by nohup, or as a
        background job of a script) goes on ignoring it."""
        self.interrupted = False
        if (threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
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
            order = self.batches(epoch)
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
                    # the mean over this epoch's steps so far, in training mode (dropout on,
                    # the weights moving); the epoch line re-evaluates with the epoch's weights
                    shown = {"running loss": f"{self.sums[0] / done:.4f}"}
                    if acc is not None:
                        shown["running acc"] = f"{100 * self.sums[1] / done:.1f}%"
                    rate = done / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix({**shown, "lr": f"{lr:.3g}", "rate": f"{rate:,.0f}/s"})
                if self.halting:
                    raise KeyboardInterrupt
            if bar is not None:
                bar.close()
        self.finish_epoch(lr, time.perf_counter() - t0)

    @property
    def halting(self) -> bool:
        """Ctrl-C was pressed: by now, in one process; over several ranks, by the time of the
        last step's Allreduce, which all of them saw (so that all stop after the same step)."""
        return self.halt if self.group.size > 1 else self.interrupted

    def bar(self, total, epoch):
        return show.bar(self.progress, total, self.batch_pos,
                        f"epoch {epoch + 1}/{self.cfg['epochs']}")

    def finish_epoch(self, lr, seconds):
        # each rank's BN statistics come from its shards: averaged, then every rank evaluates
        # its part of the splits with the same weights
        self.group.average_buffers(self.model)
        self.group.check_same(self.model, f"epoch {self.epoch + 1}")
        train_loss, train_acc, train_miou = self.measure(self.train_idx)
        val_loss, val_acc, val_miou = self.measure(self.val_idx)
        self.epoch += 1
        self.batch_pos, self.sums = 0, [0.0, 0.0, 0]
        row = {"epoch": self.epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
               "val_loss": val_loss, "val_acc": val_acc, "seconds": round(seconds, 3),
               "train_miou": train_miou, "val_miou": val_miou}
        if self.group.lead:
            runs.append_metrics(self.folder, row)
        if self.board is not None:
            self.board.add(row)
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
        every = self.cfg.get("save_every")
        if every and self.epoch % every == 0:
            self.save(f"snapshot_e{self.epoch}.npz")
        self.save("last.npz")
        self.say(self.line(row))
        if self.diagnose and self.group.lead:
            self.say(self.diagnostics())
        if self.cfg["early_stop"] and self.bad >= self.cfg["patience"]:
            self.say(f"early stopping: no better validation loss for {self.bad} epochs; "
                     f"best was epoch {self.best_epoch}")
            self.stop = True

    def line(self, r):
        """The epoch's line, in columns that stay aligned over the run: the loss and accuracy
        of the whole training split re-evaluated with the epoch's final weights in evaluation
        mode ("train (eval)", unlike the bar's running figures), then the validation split's.
        A loss column is as wide as its first value (a loss that grows past it shifts)."""
        if self.widths is None:
            self.widths = {k: max(6, len(f"{r[k]:.4f}")) for k in ("train_loss", "val_loss")
                           if r[k] is not None}

        def scores(key, acc, miou):
            text = f"loss {r[key]:{self.widths.get(key, 6)}.4f}"
            if acc is not None:
                text += f" {'pixel acc' if self.segment else 'acc'} {100 * acc:5.1f}%"
            return text + ("" if miou is None else f" mIoU {100 * miou:5.1f}%")
        width = len(str(self.cfg["epochs"]))
        val = "" if r["val_loss"] is None else \
            f" | val {scores('val_loss', r['val_acc'], r.get('val_miou'))}"
        return (f"epoch {r['epoch']:>{width}}/{self.cfg['epochs']}  lr {r['lr']:<8.3g} | train "
                f"(eval) {scores('train_loss', r['train_acc'], r.get('train_miou'))}{val} | "
                f"{r['seconds']:5.1f}s")

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
        if self.group.lead:
            print(text, file=self.out, flush=True)

    def announce(self):
        """The model's one-line summary, then the data's splits and the run's settings."""
        from netc.compiler import report
        cfg, ds = self.cfg, self.ds
        tests = len(self.test_idx) if ds.x_test is None else len(ds.x_test)
        none = "" if tests else (f" (test_split={cfg['test_split']:g} of {len(ds.x)} samples "
                                 "leaves none: the run ends without a test score)")
        self.say(report.one_line(self.net, cfg["batch"], cfg["optimizer"], self.frozen))
        self.say(f"data {ds.name}: {len(self.train_idx)} train, {len(self.val_idx)} validation, "
                 f"{tests} test{none}; {cfg['optimizer']} lr={cfg['lr']:g}, batch {cfg['batch']}, "
                 f"{cfg['epochs']} epochs -> {self.folder}")
        horizon = cfg.get("schedule_horizon")
        if horizon and horizon < cfg["epochs"] and cfg["schedule"] in ("cosine", "cosine_restarts"):
            self.say(f"schedule {cfg['schedule']}: kept as the first run set it, over "
                     f"{horizon} epochs; " + self.past_horizon(horizon))

    def past_horizon(self, horizon) -> str:
        """What the schedule does after the epochs it was set for (a resume with more)."""
        if self.cfg["schedule"] == "cosine":
            return f"epochs {horizon + 1}+ stay at its last rate, {self.sched.lr(horizon - 1):.3g}"
        return f"it goes on restarting every {self.sched.period} epochs"

    # ---- checkpoints and resume --------------------------------------------------------------
    def save(self, name, folder=None):
        if not self.group.lead:
            return
        meta = {"epoch": self.epoch, "batch_pos": self.batch_pos, "best": self.best,
                "best_epoch": self.best_epoch, "bad": self.bad, "sums": self.sums,
                "schedule": self.sched.state(), "first_loss": self.first_loss}
        extra = {f"opt::{k}": v for k, v in self.opt.state_arrays().items()}
        extra["__netc_train__"] = np.array(json.dumps(meta))
        try:
            self.model.save(os.path.join(folder or self.folder, name), extra)
        except NumericsError as e:  # optimizer state blown up with finite weights
            raise NumericsError(f"epoch {self.epoch}: {e.message}", self.cure()) from None

    def restore(self, name):
        path = os.path.join(self.folder, name)
        self.model.load_state(read_checkpoint(path), source=path)

    def resume(self):
        """Continue from last.npz: the weights, the optimizer state, the position in the run. A
        folder with no checkpoint yet (a run killed in its first epoch) starts over."""
        path = os.path.join(self.folder, "last.npz")
        arrays = self.group.share(self.last_checkpoint, path)  # rank 0 reads it
        if arrays is None:
            self.say(f"{self.folder} has no checkpoint yet (its run stopped in its first epoch): "
                     "starting it from the beginning")
            if self.group.lead:
                runs.truncate_metrics(self.folder, 0)
            return
        if str(arrays.get("__netc_hash__")) != self.net.spec_hash:
            raise NetcError(f"--resume: {self.folder} was trained from a different spec")
        if "__netc_train__" not in arrays:
            raise NetcError(f"--resume: {path} holds weights but no training state (was it "
                            "written by Model.save?)", f"start a new run from these weights: "
                            f"--init-from {path}")
        try:
            meta = json.loads(str(arrays["__netc_train__"]))
            self.epoch, self.batch_pos = int(meta["epoch"]), int(meta["batch_pos"])
            self.best, self.best_epoch = float(meta["best"]), int(meta["best_epoch"])
            self.bad, self.sums = int(meta["bad"]), [float(v) for v in meta["sums"]]
            first = meta.get("first_loss")  # absent from checkpoints of older versions
            self.first_loss = None if first is None else float(first)
            self.sched.load(meta["schedule"])
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise DataError(f"--resume: {path}'s training state is damaged ({e!r})",
                            f"start a new run from its weights: --init-from {path}") from None
        self.model.load_state(arrays, source=path)
        self.opt.load_state_arrays({k[5:]: v for k, v in arrays.items() if k.startswith("opt::")},
                                   source=path)
        if self.group.lead:
            runs.truncate_metrics(self.folder, self.epoch)

    def last_checkpoint(self, path):
        """last.npz's arrays; None where the run has no checkpoint yet."""
        if os.path.exists(path):
            return read_checkpoint(path)
        best = os.path.join(self.folder, "best.npz")
        if os.path.exists(best):
            raise NetcError(f"--resume: {self.folder} has best.npz but no last.npz to "
                            f"continue from", f"start a new run from its weights: "
                            f"--init-from {best}")
        return None


def as_test(scores: dict) -> dict:
    """{"loss", "acc"[, "miou"]} as result.json names them: test_loss, test_acc[, test_miou]."""
    return {f"test_{k}": v for k, v in scores.items()}


def result_line(r: dict) -> str:
    """'test loss L, test accuracy A%' (pixel accuracy and mean IoU for a per-pixel output)."""
    if r.get("test_loss") is None:
        return "no test score (no test samples)"
    line = f"test loss {r['test_loss']:.4f}"
    if r.get("test_miou") is not None:
        return line + (f", test pixel accuracy {100 * r['test_acc']:.2f}%, mean IoU "
                       f"{100 * r['test_miou']:.2f}%")
    if r.get("test_acc") is None:
        return line
    return line + f", test accuracy {100 * r['test_acc']:.2f}%"
