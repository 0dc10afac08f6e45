"""The training vocabulary, in one place: the `train` section's keys and their types, and the names
of the optimizers, losses and schedules (the runtime implements each under the same name; the CLI
offers these names)."""
from __future__ import annotations

import difflib

from netc.dsl.errors import Source, SpecError

from .registry import Bool, Choice, Float, Int, Key, LayerError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw",
              "lbfgs", "cg", "lm", "newton")
# methods that take the whole training split at every step (max_iter steps per epoch)
FULL_BATCH = ("lbfgs", "cg", "lm", "newton")
# optimizer state kept per trainable value, for the memory estimate (PyTorch's implementations;
# lbfgs keeps 2 * history + 2)
OPTIMIZER_STATE = {"sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1, "rmsprop": 1,
                   "adam": 2, "adamw": 2, "cg": 2, "lm": 2, "newton": 2}
LBFGS_HISTORY = 10
LOSSES = ("cross_entropy", "bce", "mse", "mae", "huber", "hinge", "multiclass_hinge", "kl")
# losses whose targets are class indices (cross-entropy also takes probability rows)
CLASS_LABELS = ("cross_entropy", "multiclass_hinge")
SCHEDULES = ("constant", "step", "multistep", "exponential", "plateau", "cosine", "cyclic",
             "cosine_restarts")
DEVICES = ("cpu", "cuda")  # where training runs (the runtime's backends)


class Text(Key):
    doc = "a word or a quoted string"

    def parse(self, value, key):
        if not isinstance(value, str):
            self.fail(value, key)
        return value


class Floats(Key):
    doc = "a list of numbers, e.g. [0.9, 0.999]"

    def parse(self, value, key):
        if not isinstance(value, tuple) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            self.fail(value, key)
        return tuple(value)


class Words(Key):
    doc = "a word or a list of words, e.g. [flip, crop]"

    def parse(self, value, key):
        items = value if isinstance(value, tuple) else (value,)
        if not all(isinstance(v, str) for v in items):
            self.fail(value, key)
        return tuple(items)


TRAIN_KEYS = {
    "optimizer": Choice(OPTIMIZERS), "device": Choice(DEVICES), "lr": Float(low=0.0),
    "batch": Int(), "epochs": Int(),
    "loss": Choice(LOSSES), "data": Text(), "seed": Int(low=0),
    "momentum": Float(low=0.0), "dampening": Float(low=0.0), "alpha": Float(low=0.0),
    "betas": Floats(), "eps": Float(low=0.0), "weight_decay": Float(low=0.0),
    "l1": Float(low=0.0), "l2": Float(low=0.0), "history": Int(), "max_iter": Int(),
    "damping": Float(low=0.0), "huber_delta": Float(low=0.0),
    "clip_norm": Float(low=0.0), "clip_value": Float(low=0.0),
    "schedule": Choice(SCHEDULES), "step_size": Int(), "gamma": Float(low=0.0),
    "milestones": Floats(), "min_lr": Float(low=0.0), "max_lr": Float(low=0.0),
    "cycle": Int(), "factor": Float(low=0.0), "warmup": Int(low=0),
    "warmup_mode": Choice(("constant", "linear")),
    "patience": Int(low=0), "early_stop": Bool(),
    "val_split": Float(low=0.0, high=1.0), "test_split": Float(low=0.0, high=1.0), "folds": Int(),
    "augment": Words(), "normalize": Bool(), "init_from": Text(), "freeze": Words(),
    "lr_mult": Floats(), "stochastic_depth": Float(low=0.0, high=1.0),
    "cycles": Int(), "snapshots": Bool(),
}


def check(args, source: Source) -> dict:
    """Validate the train section's key=value pairs; unknown or repeated keys are errors."""
    out = {}
    for a in args:
        pos = a.pos
        if a.key not in TRAIN_KEYS:
            close = difflib.get_close_matches(a.key, TRAIN_KEYS, n=1)
            raise SpecError(f"unknown train setting `{a.key}`",
                            (f"did you mean `{close[0]}`? " if close else "")
                            + "known: " + ", ".join(TRAIN_KEYS),
                            line=pos.line, column=pos.column, width=pos.width, source=source)
        if a.key in out:
            raise SpecError(f"train setting `{a.key}` is given twice", "keep one of them",
                            line=pos.line, column=pos.column, width=pos.width, source=source)
        value = a.value
        value = getattr(value, "id", value)  # a bare word
        if isinstance(value, tuple):
            value = tuple(getattr(v, "id", v) for v in value)
        try:
            out[a.key] = TRAIN_KEYS[a.key].parse(value, a.key)
        except LayerError as e:
            raise SpecError(f"train: {e.message}", e.hint, line=pos.line, column=pos.column,
                            width=pos.width, source=source) from None
    return out
