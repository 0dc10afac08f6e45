"""Optimizers. First-order methods update arrays in place from gradients, with PyTorch's
hyperparameter names and formulas; full-batch methods take a closure returning (loss, grads).

A base class keeps the state per parameter; each subclass writes only its update."""
from __future__ import annotations

import numpy as np

from netc.dsl.errors import NetcError


class Optimizer:
    defaults: dict = {}

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

    name = "optimizer"
    default_lr = 0.01

    def step(self, grads):
        self.t += 1
        for name, theta in self.params.items():
            g = grads.get(name)
            mult = self.lr_mult.get(name, 1.0)
            if g is None or mult == 0:
                continue
            self.update(theta, g, self.state[name], self.lr * mult)

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
                if name in self.state:
                    self.state[name][k] = v.copy() if v.ndim else v.item()


def _decayed(theta, g, wd):
    return g + wd * theta if wd else g


class SGD(Optimizer):
    """v <- mu*v + (1 - dampening)*g (v = g at first); g <- g + mu*v (nesterov) or v;
    theta <- theta - lr*g. Coupled weight decay: g <- g + wd*theta first."""
    name = "sgd"
    defaults = {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}

    def update(self, theta, g, state, lr):
        h = self.hyper
        g = _decayed(theta, g, h["weight_decay"])
        mu = h["momentum"]
        if mu:
            if "v" not in state:
                state["v"] = g.copy()
            else:
                state["v"] *= mu
                state["v"] += (1 - h["dampening"]) * g
            g = g + mu * state["v"] if h["nesterov"] else state["v"]
        theta -= lr * g


class Momentum(SGD):
    name = "momentum"
    defaults = {**SGD.defaults, "momentum": 0.9}


class Nesterov(SGD):
    name = "nesterov"
    defaults = {**SGD.defaults, "momentum": 0.9, "nesterov": True}


class Adagrad(Optimizer):
    """s <- s + g^2; theta <- theta - lr * g / (sqrt(s) + eps)."""
    name = "adagrad"
    defaults = {"eps": 1e-10, "weight_decay": 0.0}

    def update(self, theta, g, state, lr):
        g = _decayed(theta, g, self.hyper["weight_decay"])
        s = state.setdefault("sum", np.zeros_like(theta))
        s += g * g
        theta -= lr * g / (np.sqrt(s) + self.hyper["eps"])


class RMSprop(Optimizer):
    """v <- alpha*v + (1 - alpha)*g^2; theta <- theta - lr * g / (sqrt(v) + eps)
    (with momentum: b <- mu*b + g/(sqrt(v) + eps); theta <- theta - lr*b)."""
    name = "rmsprop"
    default_lr = 0.01
    defaults = {"alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0}

    def update(self, theta, g, state, lr):
        h = self.hyper
        g = _decayed(theta, g, h["weight_decay"])
        v = state.setdefault("square_avg", np.zeros_like(theta))
        v *= h["alpha"]
        v += (1 - h["alpha"]) * g * g
        step = g / (np.sqrt(v) + h["eps"])
        if h["momentum"]:
            b = state.setdefault("buf", np.zeros_like(theta))
            b *= h["momentum"]
            b += step
            step = b
        theta -= lr * step


class Adam(Optimizer):
    """m <- b1*m + (1-b1)*g; v <- b2*v + (1-b2)*g^2; m^ = m/(1-b1^t); v^ = v/(1-b2^t);
    theta <- theta - lr * m^ / (sqrt(v^) + eps)   (eps outside the root, as Kingma & Ba)."""
    name = "adam"
    default_lr = 0.001
    defaults = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    decoupled = False

    def update(self, theta, g, state, lr):
        h = self.hyper
        b1, b2 = h["betas"]
        if self.decoupled:
            theta -= lr * h["weight_decay"] * theta
        else:
            g = _decayed(theta, g, h["weight_decay"])
        m = state.setdefault("m", np.zeros_like(theta))
        v = state.setdefault("v", np.zeros_like(theta))
        state["t"] = t = state.get("t", 0) + 1
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        mhat = m / (1 - b1 ** t)
        vhat = v / (1 - b2 ** t)
        theta -= lr * mhat / (np.sqrt(vhat) + h["eps"])


class AdamW(Adam):
    """Adam with decoupled weight decay: theta <- theta - lr*wd*theta before the Adam step."""
    name = "adamw"
    defaults = {**Adam.defaults, "weight_decay": 0.01}
    decoupled = True


def optimizer(name: str, params: dict, **hyper) -> Optimizer:
    """netc.optimizer("adam", model.params, lr=1e-3, ...)."""
    from .optim_batch import LBFGS, ConjugateGradient, LevenbergMarquardt, Newton
    known = {c.name: c for c in (SGD, Momentum, Nesterov, Adagrad, RMSprop, Adam, AdamW, LBFGS,
                                 ConjugateGradient, LevenbergMarquardt, Newton)}
    if name not in known:
        raise NetcError(f"unknown optimizer {name!r}", "one of " + ", ".join(known))
    return known[name](params, **hyper)


FULL_BATCH = ("lbfgs", "cg", "lm", "newton")
