"""The base of every optimizer: the parameters it updates, the learning rate (and a multiplier per
parameter: 0 freezes one), the state it keeps per parameter, and that state as flat arrays for
checkpoints. Two entry points:

    opt.step(grads)       first-order methods: one update from gradients keyed like the params
    opt.iterate(closure)  every method: one iteration, calling closure() -> (loss, grads) as often
                          as it needs (once for first-order methods; line searches, finite
                          differences and Jacobians for full-batch ones); returns the loss
"""
from __future__ import annotations

import numpy as np

from netc.dsl.errors import NetcError


class Optimizer:
    name = "optimizer"
    default_lr = 0.01
    defaults: dict = {}
    full_batch = False

    def __init__(self, params: dict, lr=None, **hyper):
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise NetcError(f"{self.name}: unknown setting(s) {', '.join(sorted(unknown))}",
                            f"{self.name} takes: lr, " + ", ".join(self.defaults))
        self.params = params
        self.hyper = {**self.defaults, **hyper}
        self.lr = self.default_lr if lr is None else float(lr)
        if self.lr < 0:
            raise NetcError(f"{self.name}: lr must be >= 0; received {lr}")
        self.state: dict = {name: {} for name in params}
        self.t = 0
        self.lr_mult: dict = {}  # per-parameter learning-rate multipliers (0 freezes)

    def step(self, grads):
        """One update from gradients (first-order methods)."""
        self.t += 1
        for name, theta in self.params.items():
            g = grads.get(name)
            mult = self.lr_mult.get(name, 1.0)
            if g is None or mult == 0:
                continue
            self.update(theta, g, self.state[name], self.lr * mult)

    def iterate(self, closure) -> float:
        """One iteration from closure() -> (loss, grads); returns the loss before the update."""
        loss, grads = closure()
        self.step(grads)
        return float(loss)

    def update(self, theta, g, state, lr):  # pragma: no cover - subclasses write it
        raise NotImplementedError

    def state_arrays(self) -> dict:
        """Optimizer state as flat name -> array (for checkpoints and exact resume)."""
        out = {"__t": np.array(self.t)}
        for name, st in self.state.items():
            for k, v in st.items():
                out[f"{name}::{k}"] = np.asarray(v)
        return out

    def load_state_arrays(self, arrays: dict):
        self.t = int(arrays.get("__t", 0))
        for key, v in arrays.items():
            if "::" in key and key.split("::", 1)[0] in self.state:
                name, k = key.split("::", 1)
                self.state[name][k] = v.copy() if v.ndim else v.item()
