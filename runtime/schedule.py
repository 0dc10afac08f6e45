"""Learning-rate schedules, by epoch, with optional warm-up in front of any of them.

    constant      lr
    step          lr * gamma ** (epoch // step_size)
    multistep     lr * gamma ** (number of milestones <= epoch)
    exponential   lr * gamma ** epoch
    cosine        min_lr + (lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2
    cyclic        triangular between lr and max_lr, `cycle` epochs per cycle
    plateau       lr * factor each time the validation loss has not improved for `patience` epochs
    warm-up       the first `warmup` epochs at lr * (epoch + 1) / (warmup + 1) (linear) or at
                  lr * factor (constant), then the schedule from its epoch 0
"""
from __future__ import annotations

import math

from netc.compiler.settings import SCHEDULES
from netc.dsl.errors import NetcError


class Schedule:
    def __init__(self, lr, name="constant", epochs=1, step_size=10, gamma=0.1, milestones=(),
                 min_lr=0.0, max_lr=None, cycle=4, factor=0.1, patience=5, warmup=0,
                 warmup_mode="linear"):
        if name not in SCHEDULES:
            raise NetcError(f"unknown schedule {name!r}", "one of " + ", ".join(SCHEDULES))
        self.base, self.name, self.epochs = lr, name, max(1, epochs)
        self.step_size, self.gamma, self.milestones = step_size, gamma, sorted(milestones)
        self.min_lr, self.max_lr = min_lr, (max_lr if max_lr is not None else 10 * lr)
        self.cycle, self.factor, self.patience = max(2, cycle), factor, patience
        self.warmup, self.warmup_mode = warmup, warmup_mode
        self.plateau_scale, self.best, self.bad = 1.0, math.inf, 0

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
        if self.name == "cosine":
            return self.min_lr + (self.base - self.min_lr) * (1 + math.cos(math.pi * e / span)) / 2
        if self.name == "cyclic":
            half = self.cycle / 2
            pos = e % self.cycle
            frac = pos / half if pos <= half else (self.cycle - pos) / half
            return self.base + (self.max_lr - self.base) * frac
        if self.name == "plateau":
            return self.base * self.plateau_scale
        return self.base

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


def from_settings(cfg: dict) -> Schedule:
    keys = ("step_size", "gamma", "milestones", "min_lr", "max_lr", "cycle", "factor", "patience",
            "warmup", "warmup_mode")
    return Schedule(cfg["lr"], cfg.get("schedule", "constant"), cfg["epochs"],
                    **{k: cfg[k] for k in keys if k in cfg})
