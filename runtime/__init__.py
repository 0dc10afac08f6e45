"""netc.runtime: kernels, reverse-mode autodiff, losses, initializers, optimizers, training."""
from . import ensemble
from .gradcheck import gradcheck
from .losses import LOSSES
from .model import Model
from .optim import optimizer
from .schedule import Schedule
from .sweep import sweep
from .training import bagging, compare, cross_validate, train

__all__ = ["Model", "gradcheck", "LOSSES", "optimizer", "Schedule", "train", "cross_validate",
           "compare", "bagging", "ensemble", "sweep"]
