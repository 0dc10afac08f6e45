"""Implementations made of other kinds' implementations on the same backend, so the same on
every backend: OUT per=pixel is the 1x1 CONV it says it is (OUT's kind gives that CONV's
hyperparameters; its weight (units, C) is viewed (units, C, 1, 1))."""
from __future__ import annotations

from netc.compiler.kinds.conv import Conv as ConvKind

from .registry import implementation


class PerPixelOutput:
    """A mixin before a backend's FC implementation: OUT, with per=pixel run by CONV."""

    def forward(self, h, p, xs, ctx):
        if h["per"] == "sample":
            return super().forward(h, p, xs, ctx)
        y, cache = self._conv().forward(self.rules.pixel_conv(h), _as_conv(p), xs, ctx)
        return y, PixelCache(cache)

    def backward(self, h, p, cache, dy, ctx):
        if h["per"] == "sample":
            return super().backward(h, p, cache, dy, ctx)
        return _as_out(p, self._conv().backward(self.rules.pixel_conv(h), _as_conv(p), cache.conv,
                                                dy, ctx))

    def logits(self, cache):
        if isinstance(cache, PixelCache):
            return self._conv().logits(cache.conv)
        return super().logits(cache)

    def backward_logits(self, h, p, cache, dz, ctx, grads=None):
        if h["per"] == "sample":
            return super().backward_logits(h, p, cache, dz, ctx, grads)
        return _as_out(p, self._conv().backward_logits(self.rules.pixel_conv(h), _as_conv(p),
                                                       cache.conv, dz, ctx))

    def algorithm(self, h, xs, batch=None, tiles=None):
        if h["per"] == "sample":
            return super().algorithm(h, xs, batch, tiles)
        return self._conv().algorithm(self.rules.pixel_conv(h), xs, batch, tiles)

    def _conv(self):
        return implementation(ConvKind.name, self.backend)


class PixelCache:
    """What OUT per=pixel keeps: its CONV's cache."""

    def __init__(self, conv):
        self.conv = conv


def _as_conv(p):
    return {**p, "weight": p["weight"].reshape(p["weight"].shape + (1, 1))}


def _as_out(p, result):
    """A CONV's backward result with the weight's gradient in OUT's (units, C) layout."""
    dxs, grads = result
    return dxs, {**grads, "weight": grads["weight"].reshape(p["weight"].shape)}
