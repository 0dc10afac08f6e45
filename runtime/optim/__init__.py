"""Optimizers by name: netc.optimizer("adam", model.params, lr=1e-3, ...), and each one's defaults
without building it. The names are compiler/settings.py's; base.py says how they are driven."""
from __future__ import annotations

from netc.dsl.errors import NetcError

from .base import Optimizer
from .first_order import SGD, Adagrad, Adam, AdamW, Momentum, Nesterov, RMSprop
from .full_batch import LBFGS, ConjugateGradient, LevenbergMarquardt, Newton

OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Nesterov, Adagrad, RMSprop, Adam, AdamW,
                                        LBFGS, ConjugateGradient, LevenbergMarquardt, Newton)}


def _class(name):
    if name not in OPTIMIZERS:
        raise NetcError(f"unknown optimizer {name!r}", "one of " + ", ".join(OPTIMIZERS))
    return OPTIMIZERS[name]


def defaults(name: str) -> dict:
    """An optimizer's settings and their defaults, lr first (lm, which takes no step size,
    ignores lr)."""
    cls = _class(name)
    return {"lr": cls.default_lr, **cls.defaults}


def optimizer(name: str, params: dict, **hyper) -> Optimizer:
    """netc.optimizer("adam", model.params, lr=1e-3, ...)."""
    return _class(name)(params, **hyper)


__all__ = ["Optimizer", "OPTIMIZERS", "defaults", "optimizer"]
