"""A compiled network with parameters: forward, reverse-mode gradients, save and load.

Reverse mode is micrograd's algorithm on the graph: walk the nodes in reverse topological order,
each kind's backward returns one gradient per input, gradients add up where a tensor fans out.
Forward keeps only what each backward needs, and drops it as soon as the backward has run.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import warnings

import numpy as np

from netc.compiler import Net
from netc.compiler import compile as compile_spec
from netc.compiler import registry
from netc.dsl.errors import DataError, NetcError, NumericsError

from . import checks, files, losses, runs
from .backends import registry as backends
from .backends.context import ALIGN, ALIGN_FROM, Memory
from .init import init_node

DTYPES = ("float32", "float64")
NORM_KEYS = ("__netc_norm_mean__", "__netc_norm_std__")  # a checkpoint's input normalization


def read_checkpoint(path: str, what: str = "checkpoint") -> dict:
    """Every array of a netc .npz (read without pickle, its headers checked first), or a
    DataError saying why not."""
    return files.read_npz(path, what)


def check_fits(net, arrays: dict, path: str):
    """A checkpoint fits `net` when its spec hash is net's. A spec that differs from the saved
    one only in what does not change the parameters (their names and shapes: a DROPOUT rate, an
    activation) fits with a warning naming the layers that differ; any other is a DataError."""
    if net.spec_hash == str(arrays["__netc_hash__"]):
        return
    want = {f"{n.name}.{k}": tuple(s) for n in net.nodes for k, s in {**n.params,
                                                                          **n.buffers}.items()}
    have = {k: tuple(v.shape) for k, v in arrays.items() if not k.startswith(("__netc", "opt::"))}
    if want != have:
        odd = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have[k]]
        raise DataError(f"{path} was saved from a different network than the spec given (its "
                        f"arrays differ from the spec's, e.g. {odd[0]})",
                        "use the spec it was trained with (it is stored in the checkpoint)")
    warnings.warn(f"{path} was saved from a spec that differs from the one given in "
                  f"{_changes(net, arrays)}, which leave the parameters as they are: its weights "
                  "run in the spec given")


def _changes(net, arrays: dict) -> str:
    """The layers of `net` whose settings differ from the checkpoint's own spec ('drop1: p 0.2
    -> 0.5'), three at most."""
    try:
        saved = {n.name: n for n in compile_spec(str(arrays["__netc_spec__"])).nodes}
    except (KeyError, NetcError):
        return "its layers' settings"
    found = []
    for n in net.nodes:
        old = saved.get(n.name)
        if old is None or (old.kind, old.inputs, old.hyper) == (n.kind, n.inputs, n.hyper):
            continue
        keys = [k for k in {**old.hyper, **n.hyper} if old.hyper.get(k) != n.hyper.get(k)]
        found.append(f"{n.name} (" + (", ".join(f"{k} {old.hyper.get(k)} -> {n.hyper.get(k)}"
                                                for k in keys) or "its inputs") + ")")
    if not found:
        return "its layers' settings"
    return ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")


def state_shapes(net) -> dict:
    """Every parameter's and buffer's key and shape, in the order of a Model's state(): the
    parameters node by node, then the buffers."""
    return {**{f"{n.name}.{k}": tuple(s) for n in net.nodes for k, s in n.params.items()},
            **{f"{n.name}.{k}": tuple(s) for n in net.nodes for k, s in n.buffers.items()}}


def check_state(shapes: dict, arrays: dict, strict=True, source="checkpoint"):
    """A DataError, `source` naming the arrays, unless `arrays` has every key of `shapes` (key ->
    shape) at its shape and nothing else (but netc's own entries and an optimizer's), each of
    real, finite numbers; with strict False, keys may be missing or extra."""
    missing = [k for k in shapes if k not in arrays]
    if strict and missing:
        raise DataError(f"{source} lacks {len(missing)} array(s), e.g. {missing[0]}",
                        "was it saved from another network?")
    for k, v in arrays.items():
        if k.startswith("__netc") or k.startswith("opt::"):
            continue
        if k not in shapes:
            if strict:
                raise DataError(f"{source} has {k!r}, which this network does not")
            continue
        if v.shape != shapes[k]:
            raise DataError(f"{source}'s {k} has shape {v.shape}; the network needs {shapes[k]}")
        checks.finite_values(v, f"{source}'s {k}")


def write_checkpoint(path: str, net, state: dict, dtype, normalization=None, extra=None) -> str:
    """Write `state` (host arrays keyed like Model.state()) as a netc .npz (no pickle) with the
    spec and its hash, `dtype`'s name, the normalization (mean, std) if any and `extra` arrays;
    the file appears whole or not at all, and never with a NaN or Inf (a NumericsError naming
    the array, the file left as it was). Returns the path."""
    meta = {"__netc_spec__": np.array(net.source.text if net.source else ""),
            "__netc_hash__": np.array(net.spec_hash),
            "__netc_dtype__": np.array(str(dtype))}
    if normalization is not None:
        meta.update(zip(NORM_KEYS, normalization))
    arrays = {**state, **meta, **(extra or {})}
    for k, v in arrays.items():
        if not checks.all_finite(np.asarray(v)):
            raise NumericsError(f"not writing {path}: {k} holds NaN or Inf")
    kept = f"{os.path.basename(path)} was left as it was" if os.path.exists(path) else None
    folder = os.path.dirname(os.path.abspath(path))
    with runs.writing(path, kept):
        fd, tmp = runs.temp_file(folder, ".npz.tmp")  # the mode of the run's other files
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


def _dtype(dtype) -> np.dtype:
    """float32 or float64, given by name or as a NumPy type; a NetcError for anything else."""
    try:
        dt = None if dtype is None or isinstance(dtype, bool) else np.dtype(dtype)
    except (TypeError, ValueError):
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise NetcError(f"dtype must be float32 or float64; received {dtype!r}")
    return dt


class Model:
    def __init__(self, net, backend: str = "cpu", dtype: str = "float32", seed: int = 0,
                 _blank: bool = False):
        if not isinstance(net, Net):
            net = compile_spec(net)
        dtype = _dtype(dtype)
        self.device = backends.load(backend)  # the Backend object: its arrays and their operations
        self.net, self.backend, self.dtype = net, backend, dtype
        self._busy = threading.Lock()  # held by the thread running the graph
        # each node's implementation on this backend
        self._impls = {n.name: backends.implementation(n.kind, backend) for n in net.nodes}
        # the graph as every pass walks it, worked out once (a Net is not changed once built): the
        # nodes in order, how many nodes read each one's output, each one's parameter and buffer
        # names (a step at batch 1 spent a tenth of its time asking networkx and building names)
        self._order = net.nodes
        self._readers = {n: net.graph.out_degree(n) for n in net.graph.nodes}
        self._names = {n.name: ([(k, f"{n.name}.{k}") for k in n.params],
                                [(k, f"{n.name}.{k}") for k in n.buffers]) for n in self._order}
        # the nodes that read another node (whose input gradient a backward pass needs)
        self._inner = {n.name for n in self._order if any(i != "input" for i in n.inputs)}
        # layers normalizing over the batch that see one value per channel per sample: a batch
        # of one cannot train them
        self.one_value_per_channel = [n.name for n in net.nodes if self._impls[n.name]
                                      .batch_statistics and math.prod(n.in_shapes[0][1:]) == 1]
        self.rng = np.random.default_rng(seed)
        self.memory = self.device.memory()  # buffers, workspaces, gradient arrays
        self.observe: dict | None = None  # set to a dict to record each node's output RMS
        self.params: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self._normalization = None  # (mean, std) that predict() applies; see `normalization`
        self.last_output = None  # the network's output for the last training batch (none yet)
        init_rng = np.random.default_rng(seed)  # drawn on the host: the same values on any backend
        seen = set()
        for node in net.nodes:
            if _blank:  # (with_state: every array is written before the model is seen)
                for short, shape in {**node.params, **node.buffers}.items():
                    arrays = self.params if short in node.params else self.buffers
                    arrays[f"{node.name}.{short}"] = self.memory.empty(tuple(shape), self.dtype)
                continue
            for short, value in init_node(net, node, init_rng, self.dtype).items():
                arrays = self.params if short in node.params else self.buffers
                # a fresh array of its own goes to the backend as it is (on the CPU, not copied:
                # VGG-11's 133M weights took 3.2 s more), anything else as a copy; a drawn weight
                # is an aligned view of its own block (Memory.empty)
                own = (Memory.whole(value) and value.flags.c_contiguous
                       and id(value) not in seen)
                seen.add(id(value))
                arrays[f"{node.name}.{short}"] = (self.device.transfer(value) if own
                                                  else self.device.from_host(value))
        out = net.node(net.output)
        self.output_act = registry.kinds()[out.kind].act_of(out.hyper)

    # ---- running the graph ----------------------------------------------------------------------
    def _node_arrays(self, node):
        params, buffers = self._names[node.name]
        p = {k: self.params[name] for k, name in params}
        for k, name in buffers:
            p[k] = self.buffers[name]
        return p

    @contextlib.contextmanager
    def _running(self):
        """Held while one thread runs the graph: the model's workspaces, gradient arrays and
        random generator serve one pass at a time, so a second thread gets an error, never a
        wrong answer."""
        if not self._busy.acquire(blocking=False):
            raise NetcError("this Model is already running in another thread (a Model runs one "
                            "forward or backward pass at a time)",
                            "give each thread its own Model: Model.load(path), or "
                            "model.to(model.backend) for a copy")
        try:
            yield
        finally:
            self._busy.release()

    def _forward(self, x, train, keep, clock=None):
        """Run every node; return (output, caches) - caches only when `keep` (for backward).
        With a `clock` dict, add each node's seconds to clock[name]."""
        if train and self.one_value_per_channel and x.shape[0] < 2:
            raise DataError(f"{self.one_value_per_channel[0]}: expected more than 1 value per "
                            f"channel when training; received a batch of {x.shape[0]} sample, "
                            "and the layer sees one value per channel per sample",
                            "train on batches of 2 or more, or call with train=False")
        ctx = self.device.context(self.memory, train, self.rng, backward=keep)
        # (a pass that keeps nothing for backward takes nothing from the pool: its outputs are
        # fresh arrays, and it leaves the pool as the training steps use it)
        pool = self.memory.pool.start() if keep else None
        values, caches = {}, {}
        remaining = dict(self._readers)
        for node in self._order:
            xs = [values[i] for i in node.inputs] if node.inputs else [x]
            ctx.node, ctx.output = node.name, node.name == self.net.output
            t0 = clock is not None and time.perf_counter()
            y, cache = self._impls[node.name].forward(node.hyper, self._node_arrays(node), xs, ctx)
            if clock is not None:
                self.device.synchronize()  # (a GPU's kernels run asynchronously)
                clock[node.name] = clock.get(node.name, 0.0) + time.perf_counter() - t0
            values[node.name] = y
            if self.observe is not None:
                y_host = self.device.to_host(y)
                self.observe[node.name] = float(np.sqrt(np.mean(np.square(y_host, dtype=np.float64))))
            if keep:
                caches[node.name] = cache
                pool.hold((y, cache))
            for i in node.inputs:  # free what no later node reads (and no cache keeps)
                remaining[i] -= 1
                if remaining[i] == 0:
                    dead = values.pop(i)
                    if keep:
                        pool.drop(dead)
        out = values[self.net.output]
        if keep and pool._outputs(out):  # a view of a pooled output (FLATTEN, ID last): the
            out = self.device.copy(out)  # caller gets its own, which the next pass leaves alone
        return out, caches

    def forward(self, x, train: bool = False):
        """The network's output for x (NCHW, or N x features), after OUT's activation: a NumPy
        array for NumPy input, an array of the backend's otherwise (on CUDA, for any array with
        __cuda_array_interface__, which is read in place)."""
        x, host = self._inputs(x)
        with self._running():
            out = self._forward(x, train, keep=False)[0]
        return self.device.to_host(out) if host else out

    @property
    def normalization(self):
        """(mean, std) as float32 arrays that broadcast over one sample, or None: the input
        normalization the model was trained with, which predict() applies and forward() does not.
        Model.load sets it from the checkpoint (netc train saves the training split's), save()
        writes it back, to() keeps it; a fresh Model has none. Set it to (mean, std) or None."""
        return self._normalization

    @normalization.setter
    def normalization(self, value):
        self._set_normalization(value, "the model")

    def _set_normalization(self, value, name):
        if value is None:
            self._normalization = None
            return
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise NetcError(f"a normalization is (mean, std) or None; received "
                            f"{type(value).__name__}", "e.g. model.normalization = (0.5, 0.25)")
        self._normalization = checks.normalization(*value, self.net.input_shape, name)

    def normalize(self, x):
        """Raw inputs as the network takes them: (x - mean) / std with this model's
        normalization (x itself, checked, without one), a NumPy array of the model's dtype."""
        if backends.is_device_array(x):
            x = backends.backend_of(x).to_host(x)
        x = checks.inputs(x, self.net.input_shape, self.dtype)
        if self._normalization is None:
            return x
        mean, std = self._normalization
        return ((x - mean) / std).astype(self.dtype, copy=False)

    def predict(self, x):
        """The network's output for raw inputs x: normalize(x), then forward (what `netc
        predict` prints). forward() takes inputs already normalized, as training feeds them."""
        if self._normalization is None:
            return self.forward(x)
        host = not backends.is_device_array(x)
        x = self.normalize(x)
        return self.forward(x if host else self.device.transfer(x))

    def _inputs(self, x, name="x"):
        """(the batch as a backend array, whether it came from the host), checked."""
        if backends.is_device_array(x):
            return self.device.device_inputs(x, self.net.input_shape, self.dtype, name), False
        return self.device.transfer(checks.inputs(x, self.net.input_shape, self.dtype, name)), True

    def _labels(self, y, loss, n):
        """The targets as a backend array, checked on the host (they are small). Targets already
        on this backend's device, of the dtype and shape the loss takes (class indices as
        int64), are used as they are: their values are the caller's to check (the trainer checks
        its data set when it loads it)."""
        if backends.is_device_array(y):
            per = (n,) + losses.label_shape(self.net.output_shape)  # per sample, pixel, step
            indices = loss in losses.CLASS_LABELS and tuple(y.shape) == per
            want = np.int64 if indices else self.dtype
            shape = per if indices else (n,) + tuple(self.net.output_shape)
            if self.backend != "cpu" and y.dtype == want and tuple(y.shape) == shape:
                return y
            y = backends.backend_of(y).to_host(y)
        y = checks.labels(y, loss, self.net.output_shape, n, self.dtype)
        return self.device.transfer(y)

    __call__ = forward

    def loss_name(self, loss=None) -> str:
        """The loss to use: the given one, or the output's natural loss."""
        if loss is None:
            loss = self.net.train.get("loss") or losses.natural(self.output_act)
        if loss not in losses.LOSSES:
            raise NetcError(f"unknown loss {loss!r}", "one of " + ", ".join(losses.LOSSES))
        if loss == "bce" and self.output_act == "softmax":
            raise NetcError("bce needs a sigmoid (or linear) output; this network ends in softmax",
                            "use cross_entropy, or `OUT K sigmoid`")
        return loss

    def _loss(self, out, caches, y, loss):
        """(value, dL/dout, fused) from the forward's output and caches."""
        logits = self._impls[self.net.output].logits(caches[self.net.output])
        fused = losses.FUSED.get(loss) == self.output_act and logits is not None
        value, dout = losses.compute(loss, logits if fused else out, y, fused, self.device,
                                     self.net.train.get("huber_delta", 1.0))
        return float(value), dout, fused

    def evaluate(self, x, y, loss=None):
        """(loss, outputs) without gradients, in evaluation mode (outputs on the host for a
        NumPy x)."""
        loss = self.loss_name(loss)
        x, host = self._inputs(x)
        y = self._labels(y, loss, x.shape[0])
        with self._running():
            out, caches = self._forward(x, False, keep=True)
            value = self._loss(out, caches, y, loss)[0]
            return value, (self.device.to_host(out) if host else self.device.copy(out))

    def loss_and_grads(self, x, y, loss=None, train=True, input_grad=False, clock=None):
        """(loss, grads) with grads keyed like params; with input_grad, also dL/dx.
        `clock`: optional (forward, backward) dicts that collect seconds per node."""
        loss = self.loss_name(loss)
        x, _ = self._inputs(x)
        y = self._labels(y, loss, x.shape[0])
        fclock, bclock = clock or (None, None)
        with self._running():
            out, caches = self._forward(x, train, keep=True, clock=fclock)
            value, dout, fused = self._loss(out, caches, y, loss)
            self.last_output = out  # the network's output for this batch (a fresh backend array)
            grads, dx = self._backward(caches, dout, fused, bclock, input_grad)
        return (value, grads, dx) if input_grad else (value, grads)

    def compile_ahead(self, batches, loss=None, then=None) -> int:
        """Compile the kernels that loss_and_grads(x, y, loss) will call for each (x, y) of
        `batches` (batches of other sizes may take other kernels), and those `then()` calls
        (an optimizer's rehearse: its update), before they are called, on every
        core the backend can use (Backend.compile_ahead): the first step of a first run otherwise
        compiles them one after another as it reaches them. The record runs the steps without
        their kernels; BN's running statistics, the random generator and last_output are left
        as they were. Returns how many kernels were compiled."""
        saved = {}

        def steps():  # (a backend that compiles nothing ahead never calls it: nothing to save)
            saved.update(buffers={k: self.device.copy(v) for k, v in self.buffers.items()},
                         state=self.rng.bit_generator.state,
                         last=self.last_output)
            for x, y in batches:
                self.loss_and_grads(x, y, loss)
            if then is not None:
                then()
        try:
            return self.device.compile_ahead(steps)
        finally:
            if saved:
                self.buffers.update(saved["buffers"])
                self.rng.bit_generator.state = saved["state"]
                self.last_output = saved["last"]

    def _backward(self, caches, dout, fused, clock=None, input_grad=False, again=False):
        """(grads, dx) from dL/d(output). Each node's cache is dead after its backward, and the
        outputs it alone kept go back to the pool, unless `again` (another backward over the
        same caches follows)."""
        pool = self.memory.pool.reclaim()  # (the forward pass's outputs that caches keep are held)
        ctx = self.device.context(self.memory, True, self.rng, backward=True)
        pending = {self.net.output: dout}
        grads = {}
        for node in reversed(self._order):
            dy = pending.pop(node.name, None)
            cache = caches.pop(node.name)
            if not node.inputs:  # the input: dy may be a reused array, the caller gets its own
                return grads, None if dy is None else self.device.copy(dy)
            impl = self._impls[node.name]
            p = self._node_arrays(node)
            ctx.node, ctx.output = node.name, False
            # nobody needs the gradient with respect to the data, unless asked
            ctx.need_dx = input_grad or node.name in self._inner
            t0 = clock is not None and time.perf_counter()
            if dy is None:  # no path to the loss
                dxs = [None] * len(node.inputs)
                dps = {k: self.device.zeros(v.shape, v.dtype) for k, v in p.items()}
            elif fused and node.name == self.net.output:
                dxs, dps = impl.backward_logits(node.hyper, p, cache, dy, ctx)
            else:
                dxs, dps = impl.backward(node.hyper, p, cache, dy, ctx)
            if clock is not None:
                self.device.synchronize()
                clock[node.name] = clock.get(node.name, 0.0) + time.perf_counter() - t0
            for short in node.params:
                grads[f"{node.name}.{short}"] = dps[short]
            dead = [dy]
            for i, dx in zip(node.inputs, dxs):
                if dx is not None and i in pending:  # a fan-out: the sum is a new array
                    dead += [pending[i], dx]
                    pending[i] = self.device.add(pending[i], dx)
                elif dx is not None:
                    pending[i] = dx
            live = list(pending.values())
            if not again:
                pool.drop(cache, live)  # the outputs only this cache kept are free
            for arr in dead:
                pool.release(arr, live)
        return grads, None  # pragma: no cover - the input node is always first

    def jacobian(self, x, y):
        """For least squares: a function () -> (residuals, J) at the current parameters, with
        residuals = output - y (flattened) and J their Jacobian (one backward pass per residual);
        residuals_only=True skips J."""
        x, _ = self._inputs(x)
        y = checks.labels(y, "mse", self.net.output_shape, x.shape[0], self.dtype)
        host = self.device.to_host

        def fn(residuals_only=False):
            with self._running():
                out, caches = self._forward(x, False, keep=not residuals_only)
                out = host(out)
                r = (out - y).reshape(-1).astype(np.float64)
                if residuals_only:
                    return r, None
                rows = np.empty((r.size, sum(p.size for p in self.params.values())))
                for i in range(r.size):
                    dout = np.zeros_like(out)
                    dout.flat[i] = 1
                    grads, _ = self._backward(dict(caches), self.device.transfer(dout),
                                              fused=False, again=True)
                    rows[i] = np.concatenate([host(grads[k]).reshape(-1) for k in self.params])
                return r, rows
        return fn

    # ---- checkpoints -------------------------------------------------------------------------------
    def state(self) -> dict:
        return {**self.params, **self.buffers}

    def save(self, path: str, extra: dict | None = None):
        """Write an .npz (no pickle) with the parameters, buffers, the spec and its hash, the
        normalization if any (and `extra` arrays, e.g. training state); the file appears whole
        or not at all, and never with a NaN or Inf (a NumericsError naming the array, the file
        left as it was)."""
        host = {k: self.device.to_host(v) for k, v in self.state().items()}
        return write_checkpoint(path, self.net, host, self.dtype, self._normalization, extra)

    def load_state(self, arrays, strict=True, source="checkpoint", adopt=False):
        """Copy arrays into the parameters and buffers, checking names, shapes and values (real
        and finite); `source` names them in errors (a checkpoint's path). With `adopt`, an array
        that is all of its own memory, C-ordered, of the model's type and (where large) on a
        cache line becomes the model's own instead of a copy: for arrays nobody else holds, as
        read_checkpoint's (a VGG-11 checkpoint's load then holds its 530 MB once, not twice)."""
        mine = self.state()
        check_state({k: tuple(v.shape) for k, v in mine.items()}, arrays, strict, source)
        seen = set()
        for k, v in arrays.items():
            if k not in mine:
                continue
            if adopt and self._adoptable(v, mine[k]) and id(v) not in seen:
                (self.params if k in self.params else self.buffers)[k] = self.device.transfer(v)
            else:
                self.device.copy_from_host(mine[k], np.asarray(v, mine[k].dtype))
            seen.add(id(v))

    @staticmethod
    def _adoptable(v, mine) -> bool:
        """Whether load_state may keep v itself in place of `mine` (see there)."""
        return (isinstance(v, np.ndarray) and v.dtype == mine.dtype and v.shape == mine.shape
                and v.flags.c_contiguous and v.flags.writeable and Memory.whole(v)
                and (v.nbytes < ALIGN_FROM or v.ctypes.data % ALIGN == 0))

    @classmethod
    def with_state(cls, net, arrays: dict, backend: str = "cpu", dtype: str = "float32",
                   source: str = "the state given", adopt: bool = False):
        """A Model whose parameters and buffers are copies of `arrays` (keyed like state(), every
        one of them; checked as load_state checks them, `source` naming them in errors), without
        drawing initial weights first (VGG-16's take seconds); with `adopt`, the arrays that fit
        become the model's own (load_state)."""
        model = cls(net, backend, dtype, _blank=True)
        model.load_state(arrays, strict=True, source=source, adopt=adopt)
        return model

    @classmethod
    def load(cls, path: str, spec=None, backend="cpu", dtype=None):
        """A Model from a checkpoint; its spec comes from the file unless given (then it must
        match), and its `normalization` too (predict() applies it, forward() does not)."""
        return cls.from_arrays(read_checkpoint(path), path, spec, backend, dtype, adopt=True)

    @classmethod
    def from_arrays(cls, arrays: dict, path: str, spec=None, backend="cpu", dtype=None,
                    adopt=False):
        """A Model from a checkpoint's arrays (see read_checkpoint); with `adopt`, those that fit
        become the model's own, not copies (for a dict of arrays nobody else holds)."""
        for key in ("__netc_hash__", "__netc_spec__", "__netc_dtype__"):
            if key in arrays and (arrays[key].dtype.kind != "U" or arrays[key].ndim):
                raise DataError(f"{path}: {key} is damaged (expected a text; received "
                                f"{arrays[key].dtype} of shape {arrays[key].shape})")
        if "__netc_hash__" not in arrays:
            raise DataError(f"{path} is not a netc checkpoint (no spec hash)")
        if spec is None and "__netc_spec__" not in arrays:
            raise DataError(f"{path} does not hold its spec", "give the spec it was trained with")
        net = compile_spec(spec) if spec is not None else compile_spec(str(arrays["__netc_spec__"]))
        check_fits(net, arrays, path)
        if dtype is None and "__netc_dtype__" in arrays:
            dtype = str(arrays["__netc_dtype__"])
        elif dtype is None:  # the weights' own type
            kinds = {v.dtype.name for k, v in arrays.items()
                     if not k.startswith(("__netc", "opt::"))}
            dtype = "float64" if kinds == {"float64"} else "float32"
        model = cls.with_state(net, arrays, backend, dtype, source=path, adopt=adopt)
        if NORM_KEYS[0] in arrays or NORM_KEYS[1] in arrays:  # written by netc train, save()
            model._set_normalization((arrays.get(NORM_KEYS[0], 0.0),
                                      arrays.get(NORM_KEYS[1], 1.0)), path)
        return model

    def to(self, backend: str) -> "Model":
        """This network with these parameters and buffers on another backend ("cpu", "cuda"):
        a new Model (the same dtype and random generator state); self is unchanged."""
        other = Model.with_state(self.net, {k: self.device.to_host(v)
                                            for k, v in self.state().items()},
                                 backend, str(self.dtype))
        other._normalization = self._normalization
        other.rng = np.random.default_rng()
        other.rng.bit_generator.state = self.rng.bit_generator.state
        return other

    def algorithm(self, node: str, batch: int) -> str:
        """How this backend runs a node at a batch size, where it has a choice ('' elsewhere):
        CONV's algorithm, FC's dots or gemm (netc bench shows it)."""
        n = self.net.node(node)
        return self._impls[node].algorithm(n.hyper, n.in_shapes, batch)

    def describe(self) -> dict:
        """What runs this model's kernels: {"threads": ..., "GEMM": ...} on the CPU."""
        return self.device.describe()

    def implementation_modules(self) -> set[str]:
        """The modules of the implementations this model runs (a layer family on its backend):
        where its kernels are, which Numba compiles on their first call."""
        return {type(impl).__module__ for impl in self._impls.values()}

    @property
    def num_params(self) -> int:
        return sum(v.size for v in self.params.values())

    def __repr__(self):
        return (f"Model({self.net.name!r}, backend={self.backend!r}, dtype={self.dtype.name!r}, "
                f"{self.num_params:,} params)")
