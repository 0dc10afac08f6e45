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

from netc.dsl.errors import DataError, NetcError

from .. import checks
from ..backends import registry as backends


class Optimizer:
    """A first-order method names its `rule` (elementwise.update's code), the `slots` of state it
    keeps per parameter (arrays shaped like it, zero at first), and the rule's `coefficients`
    for a step; the base keeps the state and runs the rule on the parameters' backend."""

    name = "optimizer"
    default_lr = 0.01
    defaults: dict = {}
    full_batch = False
    rule = None

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
        # the backend whose arrays the parameters are (their updates run there)
        first = next(iter(params.values()), None)
        self.backend = backends.load("cpu") if first is None else backends.backend_of(first)

    def step(self, grads):
        """One update from gradients (first-order methods): one for each parameter that
        trains (a frozen one, of multiplier 0, may have none), of its shape."""
        for name, theta in self.params.items():
            g = grads.get(name)
            if g is None and self.lr_mult.get(name, 1.0) != 0:
                raise DataError(f"{self.name}.step: no gradient for {name}",
                                "pass the grads dict of loss_and_grads, one per parameter")
            if g is not None and g.shape != theta.shape:
                raise DataError(f"{self.name}.step: the gradient of {name} has shape "
                                f"{tuple(g.shape)}; the parameter has {tuple(theta.shape)}")
        unknown = [k for k in grads if k not in self.params]
        if unknown:
            raise DataError(f"{self.name}.step: {unknown[0]!r} is not a parameter this optimizer "
                            "updates", "build the optimizer on the model's params")
        self.t += 1
        for name, theta in self.params.items():
            mult = self.lr_mult.get(name, 1.0)
            if mult != 0:
                self.update(theta, grads[name], self.state[name], self.lr * mult)

    def iterate(self, closure) -> float:
        """One iteration from closure() -> (loss, grads); returns the loss before the update."""
        loss, grads = closure()
        self.step(grads)
        return float(loss)

    def update(self, theta, g, state, lr):
        first = not any(k in state for k in self.slots())
        for k in self.slots():
            if k not in state:
                state[k] = self.backend.zeros(theta.shape, theta.dtype)
        arrays = [state[k] for k in self.slots()]
        h = self.coefficients(lr, state)
        h = tuple(theta.dtype.type(v) for v in h + (0.0,) * (8 - len(h)))  # one kernel for all rules
        self.backend.update(self.rule, theta, g, *(arrays + [None, None])[:2], h, first)

    def rehearse(self):
        """The backend's update calls of a step, on empty arrays of the parameters' types (so
        the same kernels), changing nothing: for a step recorded to compile its kernels ahead
        (Model.compile_ahead's `then`), where the backend runs none of them. A full-batch
        method (no rule) has nothing to rehearse."""
        if self.rule is None:
            return
        seen = set()
        for theta in self.params.values():
            if theta.dtype in seen:
                continue
            seen.add(theta.dtype)
            empty = self.backend.zeros((0,), theta.dtype)
            slots = [empty] * len(self.slots())
            self.backend.update(self.rule, empty, empty, *(slots + [None, None])[:2],
                                (theta.dtype.type(0),) * 8, True)

    def slots(self) -> tuple:
        """The names of the state arrays the rule keeps per parameter (its s1, s2)."""
        return ()

    def coefficients(self, lr, state) -> tuple:  # pragma: no cover - subclasses write it
        raise NotImplementedError

    def state_arrays(self) -> dict:
        """Optimizer state as flat name -> host array (for checkpoints and exact resume)."""
        out = {"__t": np.array(self.t)}
        for name, st in self.state.items():
            for k, v in st.items():
                out[f"{name}::{k}"] = self.backend.to_host(v) if hasattr(v, "shape") else np.asarray(v)
        return out

    def load_state_arrays(self, arrays: dict, source="checkpoint"):
        """The state of state_arrays back, each array checked (real, finite, shaped like its
        parameter); `source` names them in errors."""
        for key, v in arrays.items():
            checks.finite_values(v, f"{source}'s optimizer state {key}")
            name = key.split("::", 1)[0]
            if v.ndim and name in self.params and v.shape != self.params[name].shape:
                raise DataError(f"{source}'s optimizer state {key} has shape {v.shape}; "
                                f"{name} has {tuple(self.params[name].shape)}")
        self.t = int(arrays.get("__t", 0))
        for key, v in arrays.items():
            if "::" in key and key.split("::", 1)[0] in self.state:
                name, k = key.split("::", 1)
                self.state[name][k] = self.backend.from_host(v) if v.ndim else v.item()
