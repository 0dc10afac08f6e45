"""First-order optimizers, with PyTorch's hyperparameter names and formulas. Each names its rule in
elementwise.update (run over every value by its backend's kernel, on the device that holds the
parameters), the state arrays the rule keeps, and the rule's coefficients for a step."""
from __future__ import annotations

from ..backends import elementwise as ew
from .base import Optimizer


class SGD(Optimizer):
    """v <- mu*v + (1 - dampening)*g (v = g at first); g <- g + mu*v (nesterov) or v;
    theta <- theta - lr*g. Coupled weight decay: g <- g + wd*theta first."""
    name = "sgd"
    rule = ew.SGD
    defaults = {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}

    def slots(self):
        return ("v",) if self.hyper["momentum"] else ()

    def coefficients(self, lr, state):
        h = self.hyper
        return lr, h["momentum"], h["dampening"], h["weight_decay"], float(h["nesterov"])


class Momentum(SGD):
    name = "momentum"
    defaults = {**SGD.defaults, "momentum": 0.9}


class Nesterov(SGD):
    name = "nesterov"
    defaults = {**SGD.defaults, "momentum": 0.9, "nesterov": True}


class Adagrad(Optimizer):
    """s <- s + g^2; theta <- theta - lr * g / (sqrt(s) + eps)."""
    name = "adagrad"
    rule = ew.ADAGRAD
    defaults = {"eps": 1e-10, "weight_decay": 0.0}

    def slots(self):
        return ("sum",)

    def coefficients(self, lr, state):
        return lr, self.hyper["eps"], self.hyper["weight_decay"]


class RMSprop(Optimizer):
    """v <- alpha*v + (1 - alpha)*g^2; theta <- theta - lr * g / (sqrt(v) + eps)
    (with momentum: b <- mu*b + g/(sqrt(v) + eps); theta <- theta - lr*b)."""
    name = "rmsprop"
    rule = ew.RMSPROP
    defaults = {"alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0}

    def slots(self):
        return ("square_avg", "buf") if self.hyper["momentum"] else ("square_avg",)

    def coefficients(self, lr, state):
        h = self.hyper
        return lr, h["alpha"], h["eps"], h["weight_decay"], h["momentum"]


class Adam(Optimizer):
    """m <- b1*m + (1-b1)*g; v <- b2*v + (1-b2)*g^2; m^ = m/(1-b1^t); v^ = v/(1-b2^t);
    theta <- theta - lr * m^ / (sqrt(v^) + eps)   (eps outside the root, as Kingma & Ba)."""
    name = "adam"
    rule = ew.ADAM
    default_lr = 0.001
    defaults = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    decoupled = False

    def slots(self):
        return ("m", "v")

    def coefficients(self, lr, state):
        h = self.hyper
        b1, b2 = h["betas"]
        state["t"] = t = state.get("t", 0) + 1  # steps taken by this parameter
        return lr, b1, b2, h["eps"], h["weight_decay"], float(self.decoupled), 1 - b1 ** t, 1 - b2 ** t


class AdamW(Adam):
    """Adam with decoupled weight decay: theta <- theta - lr*wd*theta before the Adam step."""
    name = "adamw"
    defaults = {**Adam.defaults, "weight_decay": 0.01}
    decoupled = True
