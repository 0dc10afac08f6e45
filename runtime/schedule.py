"""Learning-rate schedules, by epoch, with optional warm-up in front of any of them.

    constant      lr
    step          lr * gamma ** (epoch // step_size)
    multistep     lr * gamma ** (number of milestones <= epoch)
    exponential   lr * gamma ** epoch
    cosine        min_lr + (lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2
    cyclic        triangular between lr and max_lr, `cycle` epochs per cycle
    cosine_restarts
                  SGDR: the cosine over each of `cycles` cycles of T = epochs / cycles epochs,
                  restarted at lr: min_lr + (lr - min_lr) * (1 + cos(pi * (epoch mod T) / T)) / 2
    plateau       lr * factor each time the validation loss has not improved for `patience` epochs
    warm-up       the first `warmup` epochs at lr * (epoch + 1) / (warmup + 1) (linear) or at
                  lr * factor (constant), then the schedule from its epoch 0 (cosine and
                  cosine_restarts span the epochs after the warm-up)

`epochs` is the schedule's horizon: a run resumed with more epochs keeps its first run's (the
setting schedule_horizon), so the rates of the epochs already trained do not change; past the
horizon cosine stays at its last epoch's rate and cosine_restarts goes on restarting with the
same period.
"""
from __future__ import annotations

import math

from netc.compiler.settings import SCHEDULES
from netc.dsl.errors import NetcError


class Schedule:
    def __init__(self, lr, name="constant", epochs=1, step_size=10, gamma=0.1, milestones=(),
                 min_lr=0.0, max_lr=None, cycle=4, factor=0.1, patience=5, warmup=0,
                 warmup_mode="linear", cycles=1):
        if name not in SCHEDULES:
            raise NetcError(f"unknown schedule {name!r}", "one of " + ", ".join(SCHEDULES))
        self.base, self.name, self.epochs = lr, name, max(1, epochs)
        self.step_size, self.gamma, self.milestones = step_size, gamma, sorted(milestones)
        self.min_lr, self.max_lr = min_lr, (max_lr if max_lr is not None else 10 * lr)
        self.cycle, self.factor, self.patience = max(2, cycle), factor, patience
        self.warmup, self.warmup_mode = warmup, warmup_mode
        self.plateau_scale, self.best, self.bad = 1.0, math.inf, 0
        # cosine_restarts' epochs per cycle
        self.period = restart_period(epochs, warmup, cycles) if name == "cosine_restarts" else None

    def lr(self, epoch: int) -> float:
        """The learning rate for an epoch (0-based)."""
        if epoch < self.warmup:
            if self.warmup_mode == "linear":
                return self.base * (epoch + 1) / (self.warmup + 1)
            return self.base * self.factor
        e = epoch - self.warmup
        span = max(1, self.epochs - self.warmup)
        if self.name == "step":
            return self.base * self.gamma ** (e // self.step_size)
        if self.name == "multistep":
            return self.base * self.gamma ** sum(1 for m in self.milestones if m <= e)
        if self.name == "exponential":
            return self.base * self.gamma ** e
        if self.name in ("cosine", "cosine_restarts"):
            pos, t = (min(e, span - 1), span) if self.name == "cosine" else \
                (e % self.period, self.period)
            return self.min_lr + (self.base - self.min_lr) * (1 + math.cos(math.pi * pos / t)) / 2
        if self.name == "cyclic":
            half = self.cycle / 2
            pos = e % self.cycle
            frac = pos / half if pos <= half else (self.cycle - pos) / half
            return self.base + (self.max_lr - self.base) * frac
        if self.name == "plateau":
            return self.base * self.plateau_scale
        return self.base

    def cycle_end(self, done: int):
        """cosine_restarts: the cycle (1, 2, ...) that ends once `done` epochs are done; None
        between cycle ends and for the other schedules."""
        if self.name != "cosine_restarts" or done <= self.warmup:
            return None
        k, rest = divmod(done - self.warmup, self.period)
        return k if rest == 0 else None

    def observe(self, val_loss: float):
        """reduce-on-plateau: call once per epoch with the validation loss."""
        if self.name != "plateau":
            return
        if val_loss < self.best - 1e-12:
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
            if self.bad > self.patience:
                self.plateau_scale *= self.factor
                self.bad = 0

    def state(self) -> dict:
        return {"plateau_scale": self.plateau_scale, "best": self.best, "bad": self.bad}

    def load(self, state: dict):
        self.plateau_scale = float(state["plateau_scale"])
        self.best, self.bad = float(state["best"]), int(state["bad"])


def restart_period(epochs: int, warmup: int, cycles: int) -> int:
    """cosine_restarts' epochs per cycle: the epochs after the warm-up, split into `cycles`
    cycles of whole epochs."""
    if cycles < 1:
        raise NetcError(f"cycles must be >= 1; received {cycles}",
                        "cycles=M anneals M times (M - 1 restarts)")
    span = epochs - warmup
    if span < cycles or span % cycles:
        after = f" after {warmup} warm-up epochs" if warmup else ""
        plural = "cycles" if cycles > 1 else "cycle"
        fits = [k for k in range(2, span + 1) if span % k == 0][:6]
        low = warmup + span // cycles * cycles
        totals = [e for e in (low, low + cycles) if e - warmup >= cycles]
        raise NetcError(
            f"schedule=cosine_restarts: {span} epochs{after} do not split into {cycles} {plural} "
            f"of whole epochs ({span} / {cycles} = {span / cycles:.4g})",
            (f"use cycles={_either(fits)}, or " if fits else "use ")
            + f"epochs={_either(totals)} for {cycles} {plural}")
    return span // cycles


def _either(values) -> str:
    """'1', '1 or 2', '1, 2 or 3'."""
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def from_settings(cfg: dict) -> Schedule:
    keys = ("step_size", "gamma", "milestones", "min_lr", "max_lr", "cycle", "factor", "patience",
            "warmup", "warmup_mode", "cycles")
    return Schedule(cfg["lr"], cfg.get("schedule", "constant"),
                    cfg.get("schedule_horizon") or cfg["epochs"],
                    **{k: cfg[k] for k in keys if k in cfg})
