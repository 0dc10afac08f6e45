"""Implementations of the layer kinds, registered per (kind, backend) once (Caffe's
layer_factory, split by backend), and the backends themselves.

A backend is a package under runtime/backends/ whose import registers its implementations and
its Backend object; `load(name)` imports it the first time it is asked for. The autodiff walk
asks `implementation(kind, backend)` for each node.
"""
from __future__ import annotations

import importlib

import numpy as np

from netc.compiler import registry as kinds
from netc.dsl.errors import NetcError

from .context import Context, Memory

NAMES = ("cpu", "cuda")  # the backends netc has

_IMPLEMENTATIONS: dict = {}  # (kind name, backend name) -> implementation
_BACKENDS: dict = {}  # backend name -> its Backend object


class Implementation:
    """How one layer kind runs on one backend. A subclass writes forward and backward; the
    autodiff walk calls them with the node's resolved hyperparameters `h`, its parameters and
    buffers `p` (short name -> array) and a Context (context.py).

        forward(h, p, xs, ctx) -> (y, cache)     xs: one array per input; cache: what backward needs
                                                 (arrays in tuples, lists, dicts or objects'
                                                 attributes: the model looks there for the outputs
                                                 a cache keeps, which the pool then does not reuse)
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
    rules = None  # the kind's LayerKind (set on registration)
    batch_statistics = False  # whether training normalizes each channel over the batch (BN)

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

    def require(self):
        """Raise a NetcError (what was looked for, what to install or use instead) unless this
        backend can run here."""

    # ---- arrays: what the model and the optimizers do with the backend's arrays ----
    def from_host(self, a):
        """A backend array holding a copy of NumPy array a."""
        raise NotImplementedError

    def to_host(self, a) -> np.ndarray:
        """A NumPy copy of a backend array (a NumPy array itself on the CPU)."""
        raise NotImplementedError

    def transfer(self, a):
        """The backend's array for a checked NumPy batch (on the CPU, the array itself)."""
        raise NotImplementedError

    def device_inputs(self, x, shape, dtype, name):
        """A batch given as a device array (__cuda_array_interface__), checked, used in place."""
        raise NotImplementedError

    def copy(self, a):
        raise NotImplementedError

    def zeros(self, shape, dtype):
        raise NotImplementedError

    def copy_from_host(self, dst, src):
        """dst[...] = src for a backend array dst and a NumPy array src of its shape and dtype."""
        raise NotImplementedError

    def add(self, a, b):
        """A new array a + b (gradients meeting where a tensor fans out)."""
        raise NotImplementedError

    # ---- what training does to arrays (trainer.py) ----
    def take(self, a, idx):
        """The rows a[idx] (idx: a NumPy array of indices): a batch of a resident data set."""
        raise NotImplementedError

    def fits(self, nbytes) -> bool:
        """Whether a data set of nbytes may stay in this backend's memory for a run."""
        return True

    def free_memory(self) -> int | None:
        """Bytes a run may still allocate where this backend keeps its arrays (None where
        unknown); the host's by default."""
        from ..files import available_memory
        return available_memory()

    def penalty(self, w, g, l1, l2) -> float:
        """g += l1 sign(w) + l2 w in place; returns l1 sum|w| + l2/2 sum w^2."""
        raise NotImplementedError

    def clip_values(self, g, limit):
        """g clipped to [-limit, limit] in place."""
        raise NotImplementedError

    def sum_squares(self, a) -> float:
        raise NotImplementedError

    def scale(self, a, factor):
        """a *= factor in place."""
        raise NotImplementedError

    def all_finite(self, arrays) -> bool:
        raise NotImplementedError

    def accuracy(self, out, y, binary) -> float:
        """The fraction of correct predictions: argmax(out) == y per sample (out (N, K)) or per
        pixel (out (N, K, H, W), y (N, H, W)), or, for binary outputs (bce), (out > 0.5) ==
        (y > 0.5) per value. A per-step output (N, T, K) comes as rows: losses.step_rows."""
        raise NotImplementedError

    def update(self, rule, theta, g, s1, s2, h, first):
        """One optimizer step in place: elementwise.update(rule, ...) over every value of theta,
        with state arrays s1, s2 (None where the rule keeps fewer)."""
        raise NotImplementedError

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

    def synchronize(self):
        """Wait for the work queued so far (a GPU's kernels run asynchronously)."""

    def compile_ahead(self, step) -> int:
        """Where this backend compiles its kernels as a step first calls them: learn from
        `step()` (a training step, run with nothing executed that matters: the model restores
        what it changes) which kernels of which argument types the step calls, and compile them
        before it runs, on more than one core. Returns how many were compiled; 0 by default."""
        return 0

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
        impl.rules = kinds.get(kind_class.name)  # the kind's static rules (compiler/kinds)
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
        raise NetcError(f"backend must be one of {', '.join(NAMES)}; received {name!r}")
    _import(name).require()
    return _BACKENDS[name]


def _import(name: str):
    """The Backend object called `name`, its package imported (what it needs installed is
    checked; the device is not)."""
    if name not in _BACKENDS:
        importlib.import_module(f"{__package__}.{name}")
    return _BACKENDS[name]


def is_device_array(a) -> bool:
    """Whether `a` is a GPU's array: one with __cuda_array_interface__ (CuPy, PyTorch's CUDA
    tensors, Numba's device arrays), or an array of Numba's CUDA simulator."""
    return not isinstance(a, np.ndarray) and (hasattr(a, "__cuda_array_interface__")
                                              or getattr(a, "__cuda_ndarray__", False))


def backend_of(array):
    """The backend whose array `array` is: a NumPy array is the CPU's, a device array the GPU's."""
    if isinstance(array, np.ndarray):
        return load("cpu")
    if is_device_array(array):
        return load("cuda")
    raise NetcError(f"expected a NumPy or a CUDA array; received {type(array).__name__}")


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
    """The kinds that have an implementation on `backend` (whether or not it can run here)."""
    _import(backend)
    return {k for k, b in _IMPLEMENTATIONS if b == backend}
