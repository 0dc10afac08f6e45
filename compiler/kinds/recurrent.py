"""RNN, LSTM and GRU: recurrent layers over a sequence (T steps of D features, `input seq TxD`).

One set of parameters serves every step. Per direction, with G gates of H units each (RNN 1,
LSTM 4, GRU 3) and PyTorch's names, layouts and gate orders (LSTM: i, f, g, o; GRU: r, z, n), so
that weights move between the two:

    weight_ih (G*H, D)   weight_hh (G*H, H)   bias_ih (G*H)   bias_hh (G*H)

and for bidir=true the same again with the suffix `_reverse` (the direction that reads the
sequence from its last step to its first). The step rules (h_0 = c_0 = 0):

    RNN   h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)                    act: tanh | relu
    LSTM  i, f, g, o = sigma, sigma, tanh, sigma of (W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
          c_t = f * c_{t-1} + i * g        h_t = o * tanh(c_t)
    GRU   r, z = sigma(W_i{r,z} x_t + b_i{r,z} + W_h{r,z} h_{t-1} + b_h{r,z})
          n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn))
          h_t = (1 - z) * n + z * h_{t-1}

return=last (the default) gives the last step's hidden state (H; with bidir, the forward
direction's at step T and the reverse one's at step 1, concatenated: PyTorch's h_n); return=seq
gives every step's (T x H, or T x 2H with bidir), for stacking or per-step outputs.

Initialisation as PyTorch's: every parameter uniform in [-1/sqrt(H), 1/sqrt(H)]; `init=` draws
the weights by a scheme instead (biases 0). LSTM's forget_bias=b sets the forget gate's slice of
bias_ih to b and of bias_hh to 0 (Jozefowicz et al. 2015 use 1).
"""
from __future__ import annotations

import math

import numpy as np

from ..registry import Bool, Choice, Float, Int, LayerError, LayerKind, register

RETURNS = ("last", "seq")


class _Recurrent(LayerKind):
    cell = ""  # the cell's rule, for the runtime: rnn, lstm, gru
    gates = 1
    gate_names: tuple = ()
    states = ("h",)  # what one step hands the next
    sequential = True  # its input must be a sequence (T x D)
    on_sequences = True
    color = "#d9d2e9"
    keys = {
        "units": Int(doc="the hidden size H, an integer >= 1"),
        "return": Choice(RETURNS, "last",
                         hint="return=last gives the last step's hidden state, return=seq every "
                              "step's"),
        "bidir": Bool(False),
        "bias": Bool(True),
    }
    positional = {int: "units"}
    # per unit and step beyond the multiply-adds: the two bias adds per gate value, the gates'
    # activations and the state update (counted in flops)
    step_flops = 0

    def resolve(self, h, xs):
        if "units" not in h:
            raise LayerError(f"{self.name} needs the hidden size", key="units",
                             hint=f"write it after the kind, e.g. `{self.name} 64`")
        return h

    def directions(self, h):
        return 2 if h["bidir"] else 1

    def shape(self, h, xs):
        t = xs[0][0]
        width = self.directions(h) * h["units"]
        return (t, width) if h["return"] == "seq" else (width,)

    def params(self, h, xs):
        gh, d, hid = self.gates * h["units"], xs[0][1], h["units"]
        p = {}
        for suffix in ("", "_reverse")[:self.directions(h)]:
            p["weight_ih" + suffix] = (gh, d)
            p["weight_hh" + suffix] = (gh, hid)
            if h["bias"]:
                p["bias_ih" + suffix] = (gh,)
                p["bias_hh" + suffix] = (gh,)
        return p

    def macs(self, h, xs, y):
        t, d = xs[0]
        return self.directions(h) * t * self.gates * h["units"] * (d + h["units"])

    def parts(self, h, xs):
        """Each gate's share (both directions): H(D + H) weights and 2H biases, T H (D + H)
        MACs per direction."""
        (t, d), hid, k = xs[0], h["units"], self.directions(h)
        params = k * (hid * (d + hid) + (2 * hid if h["bias"] else 0))
        return [(f"gate {g}", params, k * t * hid * (d + hid)) for g in self.gate_names]

    def flops(self, h, xs, y):
        t = xs[0][0]
        bias = 2 * self.gates if h["bias"] else 0
        return self.directions(h) * t * h["units"] * (bias + self.step_flops)

    def kept(self, h, xs, y):
        """Values per sample that backpropagation through time keeps beyond the output: every
        step's gates and hidden (and cell) state, per direction."""
        t = xs[0][0]
        return self.directions(h) * t * h["units"] * self.kept_per_unit

    kept_per_unit = 1

    def label(self, h):
        parts = [self.name, str(h["units"])]
        if h.get("act", "tanh") != "tanh":
            parts.append(h["act"])
        if h["bidir"]:
            parts.append("bidir")
        if h["return"] == "seq":
            parts.append("seq")
        return " ".join(parts)

    def init_rule(self, short, h=None):
        """PyTorch's: uniform in +-1/sqrt(H) for every parameter, unless init= chooses a scheme
        for the weights (then the biases start at 0)."""
        if h is not None and not h.get("init"):
            return ("uniform", 1.0 / math.sqrt(h["units"]))
        return "zeros" if short.startswith("bias") else "weights"

    def regularized(self, h):
        return tuple(k for k in self.params(h, ((1, 1),)) if k.startswith("weight"))

    # ONNX's operator, its gate order (PyTorch's gate names) and attributes
    onnx_op, onnx_gates, onnx_attrs = "RNN", ("h",), {}

    def onnx(self, h, xs, g):
        """ONNX's RNN/LSTM/GRU on the sequence time-major (T, N, D), the gates reordered, both
        directions' weights stacked; then back to batch-major: every step's (N, T, dirs*H) or
        the last state's (N, dirs*H), PyTorch's h_n."""
        suffixes = ("", "_reverse")[:self.directions(h)]
        rows = gate_slices(self, h["units"])
        order = [rows[gate] for gate in self.onnx_gates]

        def stacked(short):
            return np.stack([np.concatenate([g.arrays[f"{g.layer}.{short}{s}"][r] for r in order])
                             for s in suffixes])
        inputs = [g.op("Transpose", [g.x[0]], perm=[1, 0, 2], aside=True),
                  g.const(stacked("weight_ih"), "float32", "W"),
                  g.const(stacked("weight_hh"), "float32", "R")]
        if h["bias"]:
            inputs.append(g.const(np.concatenate([stacked("bias_ih"), stacked("bias_hh")], 1),
                                  "float32", "B"))
        attrs = dict(self.onnx_attrs)
        if self.name == "RNN":
            attrs["activations"] = [h["act"].capitalize()] * len(suffixes)
        ys = g.op(self.onnx_op, inputs, outputs=2, hidden_size=h["units"],
                  direction="bidirectional" if h["bidir"] else "forward", **attrs)
        if h["return"] == "seq":
            steps = g.op("Transpose", [ys[0]], perm=[2, 0, 1, 3])
            return g.op("Reshape", [steps, g.const([0, 0, -1], hint="shape")])
        last = g.op("Transpose", [ys[1]], perm=[1, 0, 2])
        return g.op("Reshape", [last, g.const([0, -1], hint="shape")])


@register
class Rnn(_Recurrent):
    name = "RNN"
    example = ("seq 3x2", "RNN 4")
    doc = ("a plain (Elman) recurrent layer: h_t = act(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh), "
           "act tanh or relu; `RNN 64`, `RNN 64 return=seq bidir=true`")
    cell = "rnn"
    gates = 1
    gate_names = ("h",)

    def parts(self, h, xs):
        return []  # one gate: the layer's own row says it
    keys = {**_Recurrent.keys, "act": Choice(("tanh", "relu"), "tanh")}
    positional = {int: "units", str: "act"}
    step_flops = 1
    kept_per_unit = 1  # h_t (its activation's gradient is taken from it)


@register
class Lstm(_Recurrent):
    name = "LSTM"
    example = ("seq 3x2", "LSTM 4")
    doc = ("long short-term memory: gates i, f, g, o; c_t = f*c_(t-1) + i*g, h_t = o*tanh(c_t); "
           "`LSTM 128`, `LSTM 128 return=seq`, forget_bias=1")
    cell = "lstm"
    gates = 4
    gate_names = ("i", "f", "g", "o")
    states = ("h", "c")
    onnx_op, onnx_gates = "LSTM", ("i", "o", "f", "g")  # ONNX: i, o, f, c
    keys = {**_Recurrent.keys, "forget_bias": Float(0.0, doc="a number (the forget gate's bias)")}
    step_flops = 4 + 3 + 2  # four activations, c = f*c + i*g, h = o*tanh(c)
    kept_per_unit = 4 + 2  # the four gates, c_t and h_t

    def resolve(self, h, xs):
        h = super().resolve(h, xs)
        if h["forget_bias"] and not h["bias"]:
            raise LayerError("forget_bias sets a bias, and this LSTM has bias=false",
                             key="forget_bias", hint="remove one of them")
        return h

    def label(self, h):
        return super().label(h) + (f" forget_bias {h['forget_bias']:g}" if h["forget_bias"] else "")

    def initialized(self, h, values):
        """forget_bias=b: the forget gate's slice of bias_ih is b, of bias_hh 0 (they add up)."""
        if h["forget_bias"]:
            f = gate_slices(self, h["units"])["f"]
            for name, v in values.items():
                if name.startswith("bias_"):
                    v[f] = h["forget_bias"] if name.startswith("bias_ih") else 0
        return values


@register
class Gru(_Recurrent):
    name = "GRU"
    example = ("seq 3x2", "GRU 4")
    doc = ("gated recurrent unit: gates r, z, n; n = tanh(W_in x + b_in + r*(W_hn h + b_hn)), "
           "h_t = (1-z)*n + z*h_(t-1); `GRU 64`")
    cell = "gru"
    gates = 3
    gate_names = ("r", "z", "n")
    onnx_op, onnx_gates, onnx_attrs = "GRU", ("z", "r", "n"), {"linear_before_reset": 1}
    step_flops = 3 + 1 + 3  # three activations, r*(W_hn h + b_hn), (1-z)*n + z*h
    kept_per_unit = 3 + 1 + 1  # the three gates, W_hn h + b_hn and h_t


def gate_slices(kind, units):
    """{gate name: slice of the G*H rows} in PyTorch's order (LSTM: i, f, g, o; GRU: r, z, n)."""
    return {g: slice(k * units, (k + 1) * units) for k, g in enumerate(kind.gate_names)}
