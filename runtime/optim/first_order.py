"""First-order optimizers: each updates arrays in place from gradients, with PyTorch's
hyperparameter names and formulas, and writes only its update (the base keeps the state)."""
from __future__ import annotations

import numpy as np

from .base import Optimizer


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
