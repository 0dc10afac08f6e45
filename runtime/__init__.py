"""netc.runtime: kernels, reverse-mode autodiff, losses, initializers (and training, next)."""
from .gradcheck import gradcheck
from .losses import LOSSES
from .model import Model

__all__ = ["Model", "gradcheck", "LOSSES"]
