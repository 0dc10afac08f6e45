"""AST -> graph: expand blocks, repetitions and branches, infer shapes, check everything once.

Validation happens here, once (Caffe's SetUp): arguments, then shapes. The runtime trusts the graph.
"""
from __future__ import annotations

import difflib
import hashlib
from collections import Counter

import networkx as nx

from netc.dsl import ast
from netc.dsl.errors import NetcError, ShapeError, Source, SpecError, SpecWarning
from netc.dsl.parser import MAX_INT, MAX_NESTING

from . import registry, settings
from .graph import Net, Node
from .kinds.conv import Conv
from .kinds.dense import FullyConnected
from .kinds.join import Add, Concat, Input, Mean
from .kinds.norm import BatchNorm, GroupNorm, InstanceNorm, LayerNorm
from .registry import Ident, LayerError
from .shapes import describe

# the most layers a network may have (the compiler's joins and projections count: ResNet-152
# has 465, DenseNet-121 427), and so the most times a chain may repeat
MAX_LAYERS = 10_000
# how deep groups, branches and block calls may nest, together (as `[` in the text)
MAX_DEPTH = MAX_NESTING


class _Scope:
    """A path prefix, the counters that name what is made inside it (conv1, conv2 ...), and the
    names taken in it: {segment: (where, the hint if it is given again)}."""

    def __init__(self, path=()):
        self.path, self.counts, self.taken = tuple(path), Counter(), {}

    def next(self, stem: str) -> str:
        self.counts[stem] += 1
        return f"{stem}{self.counts[stem]}"

    def child(self, segment: str) -> "_Scope":
        return _Scope(self.path + (segment,))


class Builder:
    def __init__(self, spec: ast.Spec, source: Source):
        self.spec, self.source = spec, source
        self.g = nx.DiGraph()
        self.defaults: dict[str, dict] = {}
        self.warnings: list[SpecWarning] = []
        self.calls: list[tuple[str, ast.Pos]] = []  # the block calls being expanded
        self.depth = 0  # groups, branches and block calls being expanded
        self.names: dict[str, tuple] = {}  # every layer's name: (where, as in _Scope.taken)
        self.order: list[str] = []  # the nodes, in the order made
        self.warned: set = set()  # (where, what) of each warning given, to give it once
        self.units: list[tuple[str, bool]] = []  # the residual units' ADDs, whether drop= is written
        self.scopes: dict[tuple, str] = {}  # what made each scope (Net.scopes)

    # ---- errors -----------------------------------------------------------------------------
    def error(self, message, pos, hint=None, cls=SpecError, layer=None, width=None):
        if self.calls:
            hint = (hint + "\n      " if hint else "") + f"inside block {_chain_of(self.calls)}"
        return cls(message, hint, line=pos.line if pos else None,
                   column=pos.column if pos else None,
                   width=width or (pos.width if pos else 1),
                   source=self.source, layer=layer)

    def warn(self, message, pos, what):
        """A warning, once per place and `what`. Inside a block it points at the outermost call,
        where the sizes that cause it are chosen (once per call), and says where the layer is."""
        key = (self.calls[0][1] if self.calls else pos, what)
        if self.calls:
            message += f" (the {what} on line {pos.line}, inside block {_chain_of(self.calls)})"
            pos = self.calls[0][1]
        if key not in self.warned:
            self.warned.add(key)
            self.warnings.append(SpecWarning(message, pos.line, pos.column, self.source.filename))

    # ---- the network ------------------------------------------------------------------------
    def build(self) -> Net:
        spec = self.spec
        if spec.input is None:
            raise self.error("the spec has no `input` line", ast.Pos(1, 1),
                             "add `input HxWxC` (e.g. input 32x32x1) or `input N` for vectors")
        shape = self._input_shape(spec.input, spec.input_pos)
        self._add(Node("input", Input.name, (), {}, (), (), shape, line=spec.input_pos.line,
                       column=spec.input_pos.column))
        self.names["input"] = (spec.input_pos, "`input` is the network's input: choose another name")
        cur, scope = "input", _Scope()
        for st in spec.body:
            if isinstance(st, ast.Default):
                self._default(st)
            else:
                cur = self.chain(st, cur, scope, {})
        if cur == "input":
            raise self.error("the spec has no layers", spec.input_pos,
                             "add a chain of layers, e.g. `CONV 3x3 16 - POOL - FC 10`")
        train = settings.check(spec.train, self.source)
        if "stochastic_depth" in train:
            self._stochastic_depth(train["stochastic_depth"])
        net = Net(spec.name or "network", self.g, cur, self.source, self.warnings, train)
        net.spec_hash, net.scopes = fingerprint(net), self.scopes
        if "freeze" in train:
            try:
                net.frozen = frozenset(n.name for n in net.layers_matching(train["freeze"]))
            except NetcError as e:
                pos = next(a.pos for a in spec.train if a.key == "freeze")
                raise self.error(e.message, pos, e.hint) from None
        return net

    def _stochastic_depth(self, p):
        """Huang et al.'s linear rule: of L residual units, unit l (1..L) drops its branch with
        probability l/L * p, unless it has its own drop=."""
        if not self.units:
            pos = next(a.pos for a in self.spec.train if a.key == "stochastic_depth")
            raise self.error("train: stochastic_depth drops residual units, and the network has "
                             "none", pos, "write residual units as RES[...], or remove the key")
        for l, (name, written) in enumerate(self.units, 1):
            if not written:
                self.g.nodes[name]["node"].hyper["drop"] = l / len(self.units) * p

    def _input_shape(self, dims, pos):
        if dims[0] == "seq":
            if len(dims) != 3 or min(dims[1:]) < 1:
                raise self.error(f"a sequence input is T steps of D features: `input seq TxD`; "
                                 f"received seq {'x'.join(map(str, dims[1:]))}", pos,
                                 "e.g. input seq 8x8 (8 steps of 8 features)")
            return tuple(dims[1:])
        if any(d < 1 for d in dims):
            raise self.error(f"input sizes must be positive; received {'x'.join(map(str, dims))}",
                             pos, "e.g. input 32x32x1")
        if len(dims) == 3:
            h, w, c = dims
            return (c, h, w)
        if len(dims) == 1:
            return dims
        raise self.error(f"input must be HxWxC, N or seq TxD; received {'x'.join(map(str, dims))}",
                         pos, "for a grey image write 28x28x1; for a sequence of T steps of D "
                              "features, seq TxD")

    def _default(self, st: ast.Default):
        kind = self._kind(st.kind, st.pos)
        merged = dict(self.defaults.get(st.kind, {}))
        written = self._written(kind, st.args, {}, st.pos)
        for key, (value, pos) in written.items():
            self._parse(kind, key, value, pos)  # fail early, at the default's line
        merged.update(written)
        self.defaults[st.kind] = merged

    def _kind(self, name, pos):
        try:
            kind = registry.get(name)
        except LayerError as e:
            raise self.error(e.message, pos, e.hint) from None
        if kind.internal:
            raise self.error(f"{name} is made by the compiler, not written in specs", pos,
                             "write RES[...] for a residual unit, CONCAT[a | b] to concatenate")
        return kind

    # ---- chains and elements ----------------------------------------------------------------
    def chain(self, chain: ast.Chain, cur: str, scope: _Scope, env: dict) -> str:
        for el in chain.elements:
            if el.repeat < 1:
                raise self.error("a repeat count must be at least 1", el.repeat_pos, "write x1 or more")
            if el.repeat > MAX_LAYERS:
                raise self.error(f"a repeat count is at most {MAX_LAYERS:,}; received "
                                 f"{el.repeat:,}", el.repeat_pos,
                                 f"a network has at most {MAX_LAYERS:,} layers")
            if isinstance(el.item, ast.Layer) and el.repeat_pos:
                self._spaced_kernel(el)
            for _ in range(el.repeat):
                cur = self.item(el.item, cur, scope, env)
        return cur

    def item(self, item, cur, scope, env):
        if isinstance(item, ast.Layer):
            return self.layer(item, cur, scope, env)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"groups, branches and block calls nest more than {MAX_DEPTH} deep",
                             item.pos, "a block that calls a block nests as a bracket does: "
                             "flatten some of them")
        if isinstance(item, ast.Group):
            cur = self.chain(item.chain, cur, scope, env)
        elif isinstance(item, ast.Call):
            cur = self.call(item, cur, scope, env)
        else:
            cur = self.branch(item, cur, scope, env)
        self.depth -= 1
        return cur

    def layer(self, layer: ast.Layer, cur, scope, env) -> str:
        kind = self._kind(layer.kind, layer.pos)
        written = dict(self.defaults.get(layer.kind, {}))
        written.update(self._written(kind, layer.args, env, layer.pos))
        hyper = {key: self._parse(kind, key, value, pos) for key, (value, pos) in written.items()}
        name = hyper.pop("name", None)
        if name is not None:
            self._claim(scope, name, written["name"][1], name=name)
        return self.node(kind, hyper, [cur], scope, layer.pos, name=name, written=written)

    def _spaced_kernel(self, el: ast.Element):
        """`CONV 3 x 3` would be three CONVs of 3 filters, while it reads as a 3x3 kernel: an
        error where a kind that takes a kernel, written without one, ends in a number N and a
        spaced repeat `x N` of the same number (`CONV 3 x3` and `[CONV 3]x3` repeat)."""
        layer, count, at = el.item, el.repeat, el.repeat_pos
        kind = self._kind(layer.kind, layer.pos)
        if "kernel" not in kind.all_keys() or not layer.args or at.width == len(str(count)) + 1:
            return
        last = layer.args[-1]
        if (last.key is not None or type(last.value) is not int or last.value != count
                or last.pos.line != at.line
                or any(a.key == "kernel" or isinstance(a.value, (ast.Dims, ast.Strided))
                       for a in layer.args)):
            return
        n = count
        name = " ".join([layer.kind] + [a.value.id for a in layer.args
                                        if a.key is None and isinstance(a.value, ast.Name)])
        size = f"`{name} {n}x{n}" + (" F` (F: the number of filters)" if "filters" in
                                     kind.all_keys() else "`")
        raise self.error(f"`{name} {n} x {n}` repeats `{name} {n}` {n} times", last.pos,
                         f"a {n}x{n} kernel is written without spaces: {size}; to repeat the "
                         f"layer, glue the x (`{name} {n} x{n}`) or use brackets "
                         f"(`[{name} {n}]x{n}`)",
                         width=at.column + at.width - last.pos.column)

    # ---- names --------------------------------------------------------------------------------
    def _fresh(self, scope, stem) -> str:
        """The counter's next segment for `stem` in `scope`, past the names given before
        (`CONV name=conv2 - CONV` names the second CONV conv3)."""
        while True:
            segment = scope.next(stem)
            if segment not in scope.taken and ".".join(scope.path + (segment,)) not in self.names:
                return segment

    def _claim(self, scope, segment, pos, name=None, counted=None):
        """Take `segment` in `scope` and, for a layer, its `name`; `counted`: what the counter
        named so (a kind, a block call), None for a name given with name=. A name taken before
        is an error at the second, which says where the first is."""
        for taken, key in ((scope.taken, segment), (self.names, name)):
            if key in taken:
                first, hint = taken[key]
                where = f"line {first.line}" + (f", column {first.column}"
                                                if first.line == pos.line else "")
                raise self.error(f"the name {key!r} is used twice (first on {where})", pos, hint)
        hint = (f"the counter gave {segment!r} to the {counted} on line {pos.line}: choose another "
                "name" if counted else "names must be unique; a repeated layer (x2) or a block "
                "used more than once cannot carry name=")
        scope.taken[segment] = (pos, hint)
        if name is not None:
            self.names[name] = (pos, hint)

    # ---- arguments ----------------------------------------------------------------------------
    def _written(self, kind, args, env, pos) -> dict:
        """Map each written argument to its key: {key: (value, pos)}; a key given twice is an error."""
        out = {}
        for arg in args:
            self._three_sized_kernel(kind, arg, args)
            for key, value in self._keyed(kind, arg, env):
                if key in out:
                    raise self.error(f"{kind.name} argument `{key}` is given twice", arg.pos,
                                     "keep one of them")
                out[key] = (value, arg.pos)
        return out

    def _three_sized_kernel(self, kind, arg, args):
        """`CONV 3x3x64`, `CONV 5x5x3 10` (a filter's size with its depth, as lectures write it):
        an error whose hint is the netc spelling."""
        dims = arg.value.dims if isinstance(arg.value, ast.Strided) else arg.value
        if (arg.key not in (None, "kernel") or "kernel" not in kind.all_keys()
                or not isinstance(dims, ast.Dims) or len(dims.sizes) != 3):
            return
        h, w, c = dims.sizes
        stride = arg.value.stride if isinstance(arg.value, ast.Strided) else None
        stride = f"/{stride.id if isinstance(stride, ast.Name) else stride}" if stride else ""
        if "filters" in kind.all_keys():
            filters = next((a.value for a in args if a.key is None and type(a.value) is int), c)
            hint = (f"the kernel is HxW and the filters are written apart (the input's channels "
                    f"come from the layer before): `{kind.name} {h}x{w}{stride} {filters}`")
        else:
            hint = f"the window is HxW (pooling keeps the channels): `{kind.name} {h}x{w}{stride}`"
        raise self.error(f"{kind.name}: a kernel is HxW; received {h}x{w}x{c}", arg.pos, hint)

    def _keyed(self, kind, arg: ast.Arg, env):
        raw = arg.value
        if isinstance(raw, ast.Strided):
            stride = self.value(raw.stride, env, arg.pos)
            pairs = [("kernel", tuple(raw.dims.sizes)), ("stride", stride)]
        else:
            pairs = [(arg.key, self.value(raw, env, arg.pos))]
        for key, value in pairs:
            if key is None:
                key = kind.positional_key(value)
                if key is None:
                    raise self.error(
                        f"{kind.name} does not take a positional {_type_word(value)} ({_show(value)})",
                        arg.pos, _usage(kind))
            if key not in kind.all_keys():
                close = difflib.get_close_matches(key, kind.all_keys(), n=1)
                hint = (f"did you mean `{close[0]}`? " if close else "") + _usage(kind)
                raise self.error(f"{kind.name} has no argument `{key}`", arg.pos, hint)
            yield key, value

    def _parse(self, kind, key, value, pos):
        try:
            return kind.all_keys()[key].parse(value, key)
        except LayerError as e:
            raise self.error(f"{kind.name}: {e.message}", pos, e.hint) from None

    def value(self, v, env, pos):
        """Resolve a written value: block parameters, products, sizes."""
        if isinstance(v, ast.Name):
            return env.get(v.id, v.id)
        if isinstance(v, ast.Dims):
            return tuple(v.sizes)
        if isinstance(v, ast.Product):
            out = 1
            for f in v.factors:
                f = self.value(f, env, pos)
                if isinstance(f, bool) or not isinstance(f, (int, float)):
                    raise self.error(f"cannot multiply {f!r}: only numbers multiply", pos,
                                     "is a block parameter misspelled?")
                out *= f
                if abs(out) > MAX_INT:
                    raise self.error("the product is too large", pos,
                                     f"numbers are at most 2^63 - 1 ({MAX_INT:,})")
            return out
        if isinstance(v, ast.Strided):
            raise self.error("a strided size (3x3/2) is only a kernel", pos,
                             "give it as a layer's positional kernel, e.g. `CONV 3x3/2 64`")
        if isinstance(v, tuple):
            return tuple(self.value(x, env, pos) for x in v)
        return v

    # ---- nodes ----------------------------------------------------------------------------------
    def node(self, kind, hyper, inputs, scope, pos, name=None, stem=None, written=None) -> str:
        """Make one node: defaults, the kind's rules, shape, counts, receptive field."""
        written = written or {}
        for key, k in kind.all_keys().items():
            if key not in hyper and k.default is not None and key != "name":
                hyper[key] = k.parse(k.default, key)
        xs = tuple(self.g.nodes[i]["node"].out_shape for i in inputs)
        if len(self.g) > MAX_LAYERS:
            raise self.error(f"the network has more than {MAX_LAYERS:,} layers", pos,
                             f"netc compiles at most {MAX_LAYERS:,} (ResNet-152 has 465): is a "
                             "repeat count too large?")
        if name is None:
            segment = self._fresh(scope, stem or kind.name.lower())
            name = ".".join(scope.path + (segment,))
            self._claim(scope, segment, pos, name=name, counted=kind.name)
        else:
            scope.next(kind.name.lower())  # a layer given name= takes its number all the same
            segment = name
        path = scope.path + (segment,)
        for i, x in zip(inputs, xs):
            problem = _unfit_input(kind, x)
            if problem:
                src = self.g.nodes[i]["node"]
                made = "the input" if src.kind == Input.name else f"made by {src.name}, {src.kind}"
                raise self.error(f"{kind.name} {problem[0]} but its input is {describe(x)} "
                                 f"({made})", pos, problem[1], cls=ShapeError, layer=name)
        try:
            hyper = kind.resolve(hyper, xs)
            y = kind.shape(hyper, xs)
            node = Node(name, kind.name, path, hyper, tuple(inputs), xs, tuple(y),
                        params=kind.params(hyper, xs), buffers=kind.buffers(hyper, xs),
                        line=pos.line, column=pos.column)
            node.macs = kind.macs(hyper, xs, y)
            node.flops = kind.flops(hyper, xs, y)
            node.kept = kind.kept(hyper, xs, y)
        except LayerError as e:
            where = written.get(e.key, (None, pos))[1] if e.key else pos
            if e.key == "stride" and "stride" not in written and "kernel" in written:
                where = written["kernel"][1]
            raise self.error(f"{name}: {e.message}", where, e.hint, cls=ShapeError, layer=name) from None
        if any(d < 1 for d in y):
            raise self.error(f"{name}: the output would be empty ({'x'.join(map(str, y))})", pos,
                             "use a smaller kernel or stride, or more padding", cls=ShapeError)
        if any(d > MAX_INT for d in y):
            raise self.error(f"{name}: the output would be too large ({_shape(y)})", pos,
                             f"sizes are at most 2^63 - 1 ({MAX_INT:,})", cls=ShapeError)
        self._receptive_field(node, kind, pos)
        if hasattr(kind, "dropped") and any(kind.dropped(hyper, xs)):
            dh, dw = kind.dropped(hyper, xs)
            self.warn(f"{name}: pooling drops {dh} bottom row(s) and {dw} right column(s) of the "
                      f"{xs[0][1]}x{xs[0][2]} input; pad or round=ceil keeps them", pos, kind.name)
        if kind.name == Conv.name:
            self._padding_only(node, pos)
        self._add(node)
        return name

    def _add(self, node: Node):
        self.g.add_node(node.name, node=node)
        self.order.append(node.name)
        for i in node.inputs:
            self.g.add_edge(i, node.name, shape=self.g.nodes[i]["node"].out_shape)

    def _receptive_field(self, node, kind, pos):
        ins = [self.g.nodes[i]["node"] for i in node.inputs]
        if not ins[0].receptive_field:
            if len(ins[0].out_shape) == 3 and not ins[0].inputs:  # the input image
                ins[0].receptive_field, ins[0].jump = (1, 1), (1, 1)
            else:
                return
        rf = tuple(max(n.receptive_field[d] for n in ins if n.receptive_field) for d in (0, 1))
        jump = ins[0].jump
        win = kind.window(node.hyper, node.in_shapes)
        if win == "global":
            x = node.in_shapes[0]
            rf = (rf[0] + (x[1] - 1) * jump[0], rf[1] + (x[2] - 1) * jump[1]) if len(x) == 3 else rf
        elif win is not None:
            (kh, kw), (sh, sw) = win
            rf = (rf[0] + (kh - 1) * jump[0], rf[1] + (kw - 1) * jump[1])
            jump = (jump[0] * sh, jump[1] * sw)
        # past 2^63 - 1 pixels (larger than any input) both stay there: their numbers stay small
        node.receptive_field = tuple(min(v, MAX_INT) for v in rf)
        node.jump = tuple(min(v, MAX_INT) for v in jump)

    def _padding_only(self, node, pos):
        """A warning where some of a CONV's weights only ever multiply padding (a 3x3 kernel
        with pad=1 on a 1x1 input): they cost parameters and compute and learn nothing."""
        (kh, kw), (sh, sw), (ph, pw) = (node.hyper[k] for k in ("kernel", "stride", "pad"))
        x, y = node.in_shapes[0], node.out_shape
        seen = _reached(x[1], kh, sh, ph, y[1]), _reached(x[2], kw, sw, pw, y[2])
        if seen[0] is None or seen[1] is None or seen == (kh, kw):
            return
        idle = kh * kw - seen[0] * seen[1]
        self.warn(f"{node.name}: {idle} of the {kh}x{kw} kernel's {kh * kw} positions only ever "
                  f"meet padding on its {x[1]}x{x[2]} input (their weights never see the input): "
                  f"a {seen[0]}x{seen[1]} kernel would do with fewer weights, or place the layer "
                  "before a downsampling step", pos, Conv.name)

    # ---- blocks -------------------------------------------------------------------------------
    def call(self, c: ast.Call, cur, scope, env):
        block = self.spec.blocks.get(c.name)
        if block is None:
            known = list(self.spec.blocks)
            close = difflib.get_close_matches(c.name, known, n=1)
            hint = f"did you mean {close[0]}?" if close else (
                f"known blocks: {', '.join(known)}" if known else "define it with `block NAME(params) = chain`")
            if c.name.upper() in registry.kinds():
                hint = f"layer kinds are upper-case: {c.name.upper()}"
            raise self.error(f"unknown block {c.name!r}", c.pos, hint)
        if any(name == c.name for name, _ in self.calls):
            cycle = " -> ".join([n for n, _ in self.calls] + [c.name])
            raise self.error(f"block {c.name} uses itself ({cycle}): blocks cannot be recursive",
                             c.pos, "write the repetition with [chain]xN instead")
        bound, segment = self._bind(block, c, env)
        if segment is None:
            segment = self._fresh(scope, c.name)
            self._claim(scope, segment, c.pos, counted=f"call of block {c.name}")
        else:
            self._claim(scope, segment, next(a.pos for a in c.args if a.key == "name"))
        args = [(f"{a.key}=" if a.key else "") + _written_value(self.value(a.value, env, a.pos))
                for a in c.args if a.key != "name"]
        self.scopes[scope.path + (segment,)] = f"{c.name}({', '.join(args)})"
        self.calls.append((c.name, c.pos))
        out = self.chain(block.body, cur, scope.child(segment), bound)
        self.calls.pop()
        return out

    def _bind(self, block: ast.Block, c: ast.Call, env):
        names = [p.name for p in block.params]
        bound, segment = {}, None
        positional = [a for a in c.args if a.key is None]
        if len(positional) > len(names):
            raise self.error(f"block {block.name} takes {len(names)} argument(s); received "
                             f"{len(positional)}", positional[len(names)].pos,
                             f"its parameters: {', '.join(names) or 'none'}")
        for p, a in zip(block.params, positional):
            bound[p.name] = self.value(a.value, env, a.pos)
        for a in c.args:
            if a.key is None:
                continue
            if a.key == "name":
                try:
                    segment = Ident().parse(self.value(a.value, env, a.pos), "name")
                except LayerError as e:
                    raise self.error(f"block {block.name}: {e.message}", a.pos,
                                     "name= names the block's scope, e.g. name=stage1") from None
                continue
            if a.key not in names:
                close = difflib.get_close_matches(a.key, names, n=1)
                raise self.error(f"block {block.name} has no parameter `{a.key}`", a.pos,
                                 f"did you mean `{close[0]}`?" if close else
                                 f"its parameters: {', '.join(names) or 'none'}")
            if a.key in bound:
                raise self.error(f"block {block.name}: `{a.key}` is given twice", a.pos,
                                 "keep one of them")
            bound[a.key] = self.value(a.value, env, a.pos)
        for p in block.params:
            if p.name not in bound:
                if p.default is None:
                    raise self.error(f"block {block.name} needs `{p.name}`", c.pos,
                                     f"e.g. {block.name}({', '.join(names)}) with values")
                bound[p.name] = self.value(p.default, bound, p.pos)
        return bound, segment

    # ---- branches -----------------------------------------------------------------------------
    def branch(self, br: ast.Branch, cur, scope, env):
        segment = self._fresh(scope, br.kind.lower())
        self._claim(scope, segment, br.pos, counted=br.kind)
        sub = scope.child(segment)
        self.scopes[sub.path] = f"{br.kind}[...]"
        allowed = {ast.RES: {k: Add.keys[k] for k in ("act", "drop")},
                   ast.MEAN: Mean.keys}.get(br.kind, {})
        opts = {}
        for a in br.args:
            if a.key not in allowed:
                raise self.error(f"{br.kind}[...] has no argument `{a.key}`", a.pos,
                                 "RES[...] takes act= and drop=, MEAN[...] drop_path=; CONCAT "
                                 "and DENSE take none")
            try:
                opts[a.key] = allowed[a.key].parse(self.value(a.value, env, a.pos), a.key)
            except LayerError as e:
                raise self.error(e.message, a.pos, e.hint) from None
        if br.kind in (ast.RES, ast.DENSE) and len(br.chains) > 1:
            raise self.error(f"{br.kind}[...] takes one chain; `|` separates the branches of "
                             "CONCAT and MEAN", br.pos, "use CONCAT[a | b] or MEAN[a | b] for "
                             "parallel branches")
        if br.kind == ast.MEAN and len(br.chains) < 2:
            raise self.error("MEAN[...] takes the mean of two or more branches; received one",
                             br.pos, "separate the branches with `|`: MEAN[a | b]")
        concat = registry.get(Concat.name)
        if br.kind in (ast.CONCAT, ast.MEAN):
            self.scopes.update({sub.path + (f"b{i + 1}",): "|" for i in range(len(br.chains))})
            outs = [self.chain(ch, cur, sub.child(f"b{i + 1}"), env) for i, ch in enumerate(br.chains)]
            kind = concat if br.kind == ast.CONCAT else registry.get(Mean.name)
            return self.node(kind, opts, outs, sub, br.pos)
        before = len(self.order)
        y = self.chain(br.chains[0], cur, sub, env)
        if br.kind == ast.DENSE:
            return self.node(concat, {}, [cur, y], sub, br.pos)
        norms = (BatchNorm.name, LayerNorm.name, InstanceNorm.name, GroupNorm.name)
        norm = next((self.g.nodes[n]["node"] for n in self.order[before:]
                     if self.g.nodes[n]["node"].kind in norms), None)
        short = self._shortcut(cur, y, sub, norm, br.pos)
        unit = self.node(registry.get(Add.name), dict(opts), [y, short], sub, br.pos)
        self.units.append((unit, "drop" in opts))
        return unit

    def _shortcut(self, x, y, scope, norm, pos):
        """Identity when shapes agree; else a 1x1 projection with the needed stride, followed by
        the branch's first normalization (`norm`, its node: BN, or GN with its groups ...) where
        the branch has one, as torchvision's downsample follows its norm_layer."""
        xs, ys = self.g.nodes[x]["node"].out_shape, self.g.nodes[y]["node"].out_shape
        if xs == ys:
            return x
        if len(xs) != len(ys):
            raise self.error(f"RES cannot join its input {_shape(xs)} with its branch {_shape(ys)}",
                             pos, "keep the branch an image (no FC/GAP inside RES[...])", cls=ShapeError)
        if len(xs) == 1:
            return self.node(registry.get(FullyConnected.name), {"units": ys[0], "act": "none"},
                             [x], scope, pos, stem="proj")
        s = max(1, round(xs[1] / ys[1])), max(1, round(xs[2] / ys[2]))
        if (xs[1] - 1) // s[0] + 1 != ys[1] or (xs[2] - 1) // s[1] + 1 != ys[2]:
            raise self.error(f"RES cannot join its input {_shape(xs)} with its branch {_shape(ys)}: "
                             "no strided 1x1 projection maps one onto the other", pos,
                             "use pad=same in the branch so that it only divides the size by its stride",
                             cls=ShapeError)
        hyper = {"filters": ys[0], "kernel": (1, 1), "stride": s, "pad": (0, 0),
                 "bias": norm is None, "act": "none", "round": "floor"}
        proj = self.node(registry.get(Conv.name), hyper, [x], scope, pos, stem="proj")
        if norm is not None:
            hyper = {k: v for k, v in norm.hyper.items() if k not in ("name", "init")}
            proj = self.node(registry.get(norm.kind), hyper, [proj], scope, pos,
                             stem="proj_" + norm.kind.lower())
        return proj


def fingerprint(net: Net) -> str:
    """A hash of the architecture (kinds, hyperparameters, shapes): what a checkpoint must match."""
    h = hashlib.sha256()
    for n in net.nodes:
        h.update(repr((n.name, n.kind, n.inputs, sorted((k, repr(v)) for k, v in n.hyper.items()),
                       n.out_shape, sorted(n.params.items()))).encode())
    return h.hexdigest()[:16]


def _unfit_input(kind, x):
    """(what kind needs, how to fix it) where an input of shape x does not fit the kind; None
    where it does."""
    if kind.spatial and len(x) == 1:
        return ("needs an image (C x H x W)",
                f"put {kind.name} before the first FC/GAP/FLATTEN, or use `input HxWxC`")
    if kind.sequential and len(x) != 2:
        return ("needs a sequence (T steps x D features)",
                "read the data as a sequence with `input seq TxD` (data=digits: input seq 8x8, "
                "each row a step)" if len(x) == 3 else
                "a recurrent layer before it gives every step with return=seq (its default, "
                "return=last, gives one vector); a vector input is `input seq TxD` read as a "
                "sequence")
    if len(x) == 2 and not kind.on_sequences:
        return ("needs an image (C x H x W)" if kind.spatial else
                "does not take a sequence (T x D)",
                "use " + kind.sequence_hint if kind.sequence_hint else
                "a sequence goes to RNN, LSTM or GRU, to FC and OUT (per step), to DROPOUT and "
                "the activations, or to FLATTEN")
    return None


def _reached(w, k, s, p, out):
    """How many of a window's k offsets meet the input (of size w, padded by p) at some output
    position (of out, s apart); None where that takes too long to count (out is huge and s > w)."""
    if s <= w:  # the windows' spans on the input overlap: the offsets that meet it are one run
        return max(0, min(k - 1, p + w - 1) - max(0, p - (out - 1) * s) + 1)
    if out > 100_000:
        return None
    return sum(max(0, min(k - 1, p - j * s + w - 1) - max(0, p - j * s) + 1) for j in range(out))


def _chain_of(calls, most=6) -> str:
    """`b (line 4) <- a (line 9)`: the block calls being expanded, innermost first; of a long
    chain, the first and last few."""
    shown = [f"{name} (line {p.line})" for name, p in reversed(calls)]
    if len(shown) > most:
        shown = shown[:most // 2] + [f"... {len(shown) - most} more ..."] + shown[-(most // 2):]
    return " <- ".join(shown)


def _shape(s):
    return "x".join(map(str, s))


def _written_value(v) -> str:
    """A block call's argument as a spec writes it: 3x3, 0.25, relu."""
    return _shape(v) if isinstance(v, tuple) else f"{v:g}" if isinstance(v, float) else str(v)


def _show(v):
    return _shape(v) if isinstance(v, tuple) else repr(v) if isinstance(v, str) else str(v)


def _type_word(v):
    return {tuple: "size", int: "integer", float: "number", str: "word"}.get(type(v), "value")


def _usage(kind) -> str:
    keys = ", ".join(k for k in kind.all_keys())
    return f"{kind.name}: {kind.doc}. Arguments: {keys}" if kind.doc else f"{kind.name} arguments: {keys}"


def build(spec: ast.Spec, source: Source) -> Net:
    return Builder(spec, source).build()
