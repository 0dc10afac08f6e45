"""The graph IR: a networkx DiGraph with one Node per layer; edges carry tensor shapes."""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import networkx as nx

from netc.dsl.errors import NetcError


@dataclass
class Node:
    """One layer of the compiled network. Shapes exclude the batch: (C, H, W) for images, (T, D)
    for sequences (T steps of D features), (N,) for vectors."""

    name: str                 # unique; parameters are keyed "<name>.weight", "<name>.bias"
    kind: str                 # a registered kind (CONV, POOL, ..., INPUT, ADD, CONCAT)
    path: tuple               # ("stage3", "basic2", "conv1"): blocks and branches it sits in
    hyper: dict               # resolved hyperparameters (kernel, stride, pad as pairs ...)
    inputs: tuple             # names of the input nodes, in order
    in_shapes: tuple
    out_shape: tuple
    params: dict = field(default_factory=dict)   # trainable: short name -> shape
    buffers: dict = field(default_factory=dict)  # saved, not trained (running statistics)
    macs: int = 0
    flops: int = 0
    kept: int = 0                                # values backward keeps beyond the output
    receptive_field: tuple | None = None         # (h, w) in input pixels; None for vectors
    jump: tuple | None = None                    # cumulative stride (h, w)
    line: int | None = None
    column: int | None = None

    @property
    def param_count(self) -> int:
        return sum(math.prod(s) for s in self.params.values())

    @property
    def buffer_count(self) -> int:
        return sum(math.prod(s) for s in self.buffers.values())

    @property
    def activations(self) -> int:
        return math.prod(self.out_shape)

    def param_names(self):
        return {f"{self.name}.{k}": s for k, s in self.params.items()}


class Net:
    """A compiled network: the graph, its nodes in topological order, and its totals."""

    def __init__(self, name: str, graph: nx.DiGraph, output: str, source=None, warnings=(),
                 train=None, spec_hash: str = ""):
        self.name, self.graph, self.output = name, graph, output
        self.source, self.warnings = source, list(warnings)
        self.train = dict(train or {})
        self.spec_hash = spec_hash
        # the layers the train section's freeze=[...] keeps fixed (set by the builder)
        self.frozen: frozenset = frozenset()
        # what made each scope (set by the builder): a block call as the spec writes it with its
        # arguments' values (("basic3",): "basic(128, s=2)"), "RES[...]" and the like for a
        # branch construct, "|" for one of the parallel branches of CONCAT[...] or MEAN[...]
        self.scopes: dict[tuple, str] = {}

    @property
    def nodes(self) -> list[Node]:
        """Nodes in topological order (insertion order is one: inputs come first)."""
        return [self.graph.nodes[n]["node"] for n in self.graph.nodes]

    def node(self, name: str) -> Node:
        return self.graph.nodes[name]["node"]

    @property
    def input(self) -> Node:
        return self.node(next(iter(self.graph.nodes)))  # (without building the whole list)

    @property
    def input_shape(self) -> tuple:
        return self.input.out_shape

    @property
    def output_shape(self) -> tuple:
        return self.node(self.output).out_shape

    def param_shapes(self) -> dict:
        """Every trainable parameter, "<layer>.<short>" -> shape, in topological order."""
        out = {}
        for n in self.nodes:
            out.update(n.param_names())
        return out

    @property
    def total_params(self) -> int:
        """All parameters, as torchvision counts them (running statistics are not parameters)."""
        return sum(n.param_count for n in self.nodes)

    @property
    def trainable_params(self) -> int:
        """Parameters outside the layers the spec's train section freezes."""
        return self.trainable()

    def trainable(self, frozen=None) -> int:
        """Parameters outside the `frozen` layers (by default, the spec's own)."""
        frozen = self.frozen if frozen is None else frozen
        return sum(n.param_count for n in self.nodes if n.name not in frozen)

    def layers_matching(self, patterns) -> list:
        """The layers with parameters whose name or path matches one of the glob patterns
        (freeze=[conv*, stage1.*]), in order; a pattern that matches none is an error."""
        layers = [n for n in self.nodes if n.params]
        hit = set()
        for pattern in patterns:
            found = {n.name for n in layers if fnmatch.fnmatch(n.name, pattern)
                     or fnmatch.fnmatch(".".join(n.path), pattern)}
            if not found:
                raise NetcError(f"freeze: no layer matches {pattern!r}",
                                "layers: " + ", ".join(n.name for n in layers))
            hit |= found
        return [n for n in layers if n.name in hit]

    @property
    def buffer_count(self) -> int:
        """Saved state that is not a parameter: BN's running mean and variance."""
        return sum(n.buffer_count for n in self.nodes)

    @property
    def total_macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    @property
    def total_flops(self) -> int:
        return sum(n.flops for n in self.nodes)

    @property
    def activation_count(self) -> int:
        return sum(n.activations for n in self.nodes)

    @property
    def kept_count(self) -> int:
        """Values per sample that backward keeps beyond the layers' outputs (a recurrent layer's
        gates and states at every step)."""
        return sum(n.kept for n in self.nodes)

    def summary(self, *args, **options) -> str:
        """The lecture's table as text, as `netc summary` prints it: compiler.report.summary,
        with its options (batch=, depth=, optimizer=, width=)."""
        from .report import summary
        return summary(self, *args, **options)

    def draw(self, out: str, depth: int | None = None, rankdir: str = "TB",
             unroll: int | None = None) -> str:
        """Write the diagram to `out` (.svg, .png, .pdf, .dot), as `netc draw` does
        (compiler.draw.render); return the path."""
        from .draw import render
        return render(self, out, depth, rankdir, unroll)

    def _repr_svg_(self):
        """The diagram, in a notebook (Jupyter asks for it); None where Graphviz is missing, and
        the notebook shows the repr instead."""
        try:
            from .draw import svg
        except ImportError:  # the graphviz Python package
            return None
        return svg(self)

    def __repr__(self):
        return (f"Net({self.name!r}, {len(self.graph)} nodes, {self.trainable_params:,} params, "
                f"{self.total_macs:,} MACs)")
