"""The layer-kind registry: one class per kind, registered once (Caffe's layer_factory).

A kind says, in one place, everything about it that holds before anything runs: how its arguments
are read, its shape rule, its parameter, MAC and FLOP counts, its receptive-field window, its
diagram label and colour, how its parameters are initialised and which are regularised, and the
standard ONNX operators that compute it (`onnx`, written through interop.onnx_export's Emitter,
which holds the onnx package: nothing here imports it). How it runs is the runtime's: one implementation per backend, registered
against the kind in runtime/backends/. Nothing here imports numba.
"""
from __future__ import annotations

import difflib
import importlib
import math


class LayerError(Exception):
    """Raised by a kind's rules; the builder turns it into a positioned ShapeError/SpecError.

    `key` names the argument at fault, so the caret can point at it."""

    def __init__(self, message, hint=None, key=None, syntax=False):
        super().__init__(message)
        self.message, self.hint, self.key, self.syntax = message, hint, key, syntax


# ---- argument types ------------------------------------------------------------------------
class Key:
    """One argument of a kind: how a written value becomes a hyperparameter."""

    doc = "a value"

    def __init__(self, default=None, doc=None):
        self.default = default
        if doc:
            self.doc = doc

    def parse(self, value, key):
        return value

    def fail(self, value, key):
        shown = _show(value)
        raise LayerError(f"`{key}` must be {self.doc}; received {shown}", key=key)


def _show(value):
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return repr(value) if isinstance(value, str) else str(value)


class Int(Key):
    def __init__(self, default=None, low=1, doc=None):
        super().__init__(default, doc or f"an integer >= {low}")
        self.low = low

    def parse(self, value, key):
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(value, key)
        if value < self.low:
            raise LayerError(f"`{key}` must be >= {self.low}; received {value}", key=key,
                             hint="sizes, counts and strides are positive")
        return value


class Float(Key):
    def __init__(self, default=None, low=None, high=None, doc=None):
        super().__init__(default, doc or "a number" + (
            f" in [{low}, {high})" if low is not None and high is not None else ""))
        self.low, self.high = low, high

    def parse(self, value, key):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(value, key)
        if (self.low is not None and value < self.low) or (self.high is not None and value >= self.high):
            self.fail(value, key)
        return float(value)


class Bool(Key):
    doc = "true or false"

    def parse(self, value, key):
        if value in ("true", "false"):
            return value == "true"
        if isinstance(value, bool):
            return value
        self.fail(value, key)


class Choice(Key):
    def __init__(self, choices, default=None, hint=None):
        super().__init__(default, "one of " + ", ".join(choices))
        self.choices, self.hint = tuple(choices), hint

    def parse(self, value, key):
        if value not in self.choices:
            close = difflib.get_close_matches(str(value), self.choices, n=1)
            raise LayerError(f"`{key}` must be one of {', '.join(self.choices)}; received "
                             f"{_show(value)}", key=key,
                             hint=f"did you mean {key}={close[0]}?" if close else self.hint)
        return value


class Ident(Key):
    doc = "a name (letters, digits, _)"

    def parse(self, value, key):
        if not isinstance(value, str) or not value.replace("_", "a").isalnum():
            self.fail(value, key)
        return value


class Pair(Key):
    """A size per spatial dimension: `3x3`, or `3` for a square."""

    def __init__(self, default=None, low=1, doc=None):
        super().__init__(default, doc or f"a size like 3x3 (each >= {low})")
        self.low = low

    def parse(self, value, key):
        if isinstance(value, int) and not isinstance(value, bool):
            value = (value, value)
        if not (isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)):
            self.fail(value, key)
        if min(value) < self.low:
            raise LayerError(f"`{key}` must be >= {self.low}; received {_show(value)}", key=key,
                             hint="sizes, counts and strides are positive")
        return value


class Pad(Key):
    doc = "an integer >= 0, HxW, same, valid or full"

    def parse(self, value, key):
        if value in ("same", "valid", "full"):
            return value
        return Pair(low=0, doc=self.doc).parse(value, key)


ACTIVATIONS = ("relu", "leaky", "prelu", "elu", "sigmoid", "tanh", "none")
FUSED_PARAM = {"leaky": 0.01, "elu": 1.0}  # leaky's slope and ELU's alpha where act= fuses them
INITS = ("he", "xavier", "glorot", "gaussian", "zeros")


# ---- the kind base class -------------------------------------------------------------------
class LayerKind:
    """Base of every kind. Subclasses set `name`, `keys`, `positional` and override the rules."""

    name = ""
    doc = ""
    keys: dict = {}
    # which key a positional argument fills, by the type of its value
    positional: dict = {}
    # joins take several inputs (ADD, CONCAT); every other kind takes one
    join = False
    # the output is the input's shape, elementwise (activations, dropout, BN ...)
    elementwise = False
    # these kinds need an image (C, H, W) input
    spatial = False
    # made by the compiler (INPUT, ADD, CONCAT), never written in a spec
    internal = False
    # these kinds take a sequence (T x D, `input seq`): the recurrent layers need one, and FC,
    # OUT, DROPOUT, the activations without parameters ... apply per step
    sequential = False
    on_sequences = False
    sequence_hint = ""  # what to write instead where a sequence reaches a kind that takes none
    # (input, chain): a small network that exercises the kind, for the test harness and docs
    example: tuple = ()

    COMMON = {"name": Ident(), "init": Choice(INITS)}

    def all_keys(self):
        return {**self.COMMON, **self.keys}

    def positional_key(self, value):
        for typ, key in self.positional.items():
            if isinstance(value, typ) and not (typ is int and isinstance(value, bool)):
                return key
        return None

    # -- rules: h is the dict of hyperparameters, xs the input shapes (tuples) --
    def resolve(self, h, xs):
        """Check the hyperparameters against the input and fill derived ones (pad=same ...)."""
        return h

    def shape(self, h, xs):
        return xs[0]

    def params(self, h, xs):
        """Trainable parameter shapes by short name ('weight', 'bias', ...)."""
        return {}

    def buffers(self, h, xs):
        """State that is saved but not trained (BN running statistics)."""
        return {}

    def macs(self, h, xs, y):
        return 0

    def flops(self, h, xs, y):
        """Floating-point operations that are not multiply-adds (reported apart from MACs)."""
        return math.prod(y)

    def window(self, h, xs):
        """(kernel, stride) per spatial dimension for the receptive field; None: pointwise;
        'global': every output sees the whole input."""
        return None

    def parts(self, h, xs):
        """[(part, params, MACs)]: how the counts split among the layer's parts, where the
        lecture counts them apart (a recurrent layer's gates); the summary shows them under it."""
        return []

    def kept(self, h, xs, y):
        """Values per sample that the backward pass keeps beyond the output (a recurrent layer's
        gates at every step); the training-memory estimate counts them."""
        return 0

    def label(self, h):
        return self.name

    # the diagram's fill colour
    color = "#ffffff"

    def act_of(self, h):
        """The activation this layer ends with ('none' if none): its fused `act=`, or what an
        activation layer applies. The output layer's decides the natural loss."""
        return h.get("act", "none")

    def act_on_input(self, h):
        """The activation this layer applies straight to its input (an activation layer, ADD's
        act), not after weights of its own: what decides the initialisation of the layer before."""
        return self.act_of(h) if self.elementwise or self.join else "none"

    # BN and DROPOUT leave the choice of initialisation to the activation after them
    init_passthrough = False

    def init_rule(self, short, h=None):
        """How a parameter or buffer starts: "weights" (drawn by the layer's scheme: He for the
        ReLU family, Xavier otherwise, or its `init=`), "zeros", "ones", a constant, or
        ("uniform", bound) for uniform in [-bound, bound]. `h`: the layer's hyperparameters."""
        return "zeros" if short == "bias" else "weights"

    def initialized(self, h, values):
        """The fresh parameters (short name -> array), adjusted where a rule per parameter
        cannot say it all (an LSTM's forget-gate bias)."""
        return values

    def regularized(self, h):
        """The parameters that l1/l2 penalise (weights; not biases, nor BN's scale and shift)."""
        return ()

    def onnx(self, h, xs, g):
        """Write the ONNX operators that compute this layer in inference mode through the
        emitter `g` (g.x: the input tensors' names; g.op, g.param, g.const, g.act) and return
        the output tensor's name. The shapes in xs exclude the batch axis, which ONNX has first."""
        raise LayerError(f"{self.name} has no ONNX mapping yet",
                         hint="export a network without it, or open an issue for the mapping")


_REGISTRY: dict[str, LayerKind] = {}


def register(cls):
    """Class decorator: register a kind once; a second registration of the name is a bug."""
    kind = cls()
    if not kind.name:
        raise TypeError(f"{cls.__name__} has no name")
    if kind.name in _REGISTRY:
        raise ValueError(f"layer kind {kind.name} registered twice "
                         f"({type(_REGISTRY[kind.name]).__name__} and {cls.__name__})")
    _REGISTRY[kind.name] = kind
    return cls


def kinds() -> dict:
    importlib.import_module("netc.compiler.kinds")  # registers the built-in kinds
    return dict(_REGISTRY)


def get(name: str) -> LayerKind:
    known = kinds()
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, [k for k in known if not known[k].internal], n=1,
                                      cutoff=0.5)
    listed = ", ".join(sorted(k for k in known if not known[k].internal))
    raise LayerError(f"unknown layer kind {name!r}",
                     hint=(f"did you mean {close[0]}? " if close else "") + f"Known kinds: {listed}")
