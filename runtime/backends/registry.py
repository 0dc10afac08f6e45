"""Implementations of the layer kinds, registered per (kind, backend) once (Caffe's
layer_factory, split by backend), and the backends themselves.

A backend is a package under runtime/backends/ whose import registers its implementations and
its Backend object; `load(name)` imports it the first time it is asked for. The autodiff walk
asks `implementation(kind, backend)` for each node.
"""
from __future__ import annotations

import importlib

from netc.compiler import registry as kinds
from netc.dsl.errors import NetcError

from .context import Context, Memory

NAMES = ("cpu",)  # the backends netc has, in the order `netc` tries them

_IMPLEMENTATIONS: dict = {}  # (kind name, backend name) -> implementation
_BACKENDS: dict = {}  # backend name -> its Backend object


class Implementation:
    """How one layer kind runs on one backend. A subclass writes forward and backward; the
    autodiff walk calls them with the node's resolved hyperparameters `h`, its parameters and
    buffers `p` (short name -> array) and a Context (context.py).

        forward(h, p, xs, ctx) -> (y, cache)     xs: one array per input; cache: what backward needs
        backward(h, p, cache, dy, ctx) -> (dxs, grads)
                                                 dxs: one input gradient per input (None where
                                                 ctx.need_dx is false); grads: short name -> array

    A kind that can end the network in softmax or sigmoid may also hand the loss its logits
    (the pre-activation), so that the loss and the activation's gradient fuse:

        logits(cache) -> array or None
        backward_logits(h, p, cache, dz, ctx)    backward from dL/d(logits)

    Where a backend chooses among ways to run a kind, `algorithm` names the way (netc bench).
    """

    kind = ""
    backend = ""

    def logits(self, cache):
        return None

    def algorithm(self, h, xs, batch=None, tiles=None) -> str:
        """How this layer runs at this batch size, where there is a choice ('' where not)."""
        return ""


class Backend:
    """A place to run networks. A backend's package registers one instance; the model asks it for
    its memory, a context per pass, and the two loss primitives (losses.py decides which rule
    and reduction). Subclasses override what differs on their device."""

    name = ""

    def memory(self) -> Memory:
        """What a model keeps between passes (buffers, workspaces, gradient arrays)."""
        return Memory()

    def context(self, memory, train, rng, backward) -> Context:
        return Context(memory, train, rng, backward)

    def pointwise_loss(self, code, out, target, delta, scale):
        """(scale * sum of elementwise.pointwise_loss, its gradient scaled) over all elements."""
        raise NotImplementedError

    def row_loss(self, code, out, target, labels, logits, scale):
        """(scale * sum of a row rule over the rows, its gradient scaled): cross-entropy from
        `labels` or probability rows `target`, KL, multiclass hinge (elementwise.py's codes)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What runs the kernels here ({"threads": ..., "GEMM": ...}; netc bench prints it)."""
        return {}


def implements(kind_class, backend: str):
    """Class decorator: register an implementation of a kind (its compiler class) on a backend;
    registering the same pair twice is a bug."""
    def wrap(cls):
        key = (kind_class.name, backend)
        if key in _IMPLEMENTATIONS:
            raise ValueError(f"{kind_class.name} registered twice on {backend} "
                             f"({type(_IMPLEMENTATIONS[key]).__name__} and {cls.__name__})")
        impl = cls()
        impl.kind, impl.backend = kind_class.name, backend
        _IMPLEMENTATIONS[key] = impl
        return cls
    return wrap


def register_backend(backend):
    """Register a backend object (a Backend subclass instance) under its name."""
    if backend.name in _BACKENDS:
        raise ValueError(f"backend {backend.name} registered twice")
    _BACKENDS[backend.name] = backend
    return backend


def load(name: str):
    """The Backend object called `name`, its package imported (and its implementations
    registered) on first use."""
    if name not in NAMES:
        raise NetcError(f"backend must be one of {', '.join(NAMES)}; received {name!r}",
                        "the CUDA backend is not available yet: use backend='cpu'")
    if name not in _BACKENDS:
        importlib.import_module(f"{__package__}.{name}")
    return _BACKENDS[name]


def implementation(kind: str, backend: str) -> Implementation:
    """The implementation of `kind` on `backend` (loaded with it)."""
    load(backend)
    impl = _IMPLEMENTATIONS.get((kind, backend))
    if impl is None:
        have = sorted(k for k, b in _IMPLEMENTATIONS if b == backend)
        known = kinds.kinds()
        raise NetcError(f"layer kind {kind} has no implementation on the {backend} backend"
                        + ("" if kind in known else " (nor is it a known kind)"),
                        f"{backend} implements: {', '.join(have)}")
    return impl


def implemented(backend: str) -> set:
    """The kinds that have an implementation on `backend`."""
    load(backend)
    return {k for k, b in _IMPLEMENTATIONS if b == backend}
