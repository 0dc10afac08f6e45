"""The interface between the autodiff walk (model.py) and a kind's implementation, and the model's
memory behind it.

A Context is made for each pass. Besides its hyperparameters, parameters and inputs, an
implementation receives one and may read or call:

    train      training mode: dropout draws masks, BN uses the batch's statistics
    rng        a NumPy Generator; implementations draw their seeds from it (dropout)
    backward   a backward pass follows this forward: keep what it needs (nothing is kept otherwise)
    node       the name of the node running
    output     the node is the network's output: its value goes to the caller (a fresh array),
               and a kind that fuses its activation keeps the pre-activation apart for the loss
    need_dx    (backward) whether the input gradient is wanted; if not, return None for it
    memo       a dict of this node's, kept from pass to pass for the model's life: what its
               implementation works out from shapes alone (a CONV's algorithm and split), once

    value(shape, dtype)         an array for the node's output, from the pass's pool: once no
                                later node reads it and no cache keeps it, a later node's output
                                or input gradient of the same shape takes it
    buffer(tag, shape, dtype)   an array owned by this node, the same one at every step
    scratch(tag, shape, dtype)  a workspace shared by all nodes, valid during one kernel call
    grad(shape, dtype)          an input gradient's array, from the same pool as value's
    empty(shape, dtype)         a fresh array

A backend subclasses Context to allocate its own memory (`empty`) and may add what its kernels
need (the CPU's thread count).
"""
from __future__ import annotations

import math

import numpy as np


ALIGN = 64  # bytes: a cache line
ALIGN_FROM = 4096  # arrays of at least this many bytes are aligned (a few us more to allocate)


class Memory:
    """What a model keeps from pass to pass: each node's buffers by (node, tag), the kernels'
    workspaces by tag (shared by every node, since no two nodes run at once), and the pool of
    the arrays that die within a pass (outputs and input gradients). After the first step a
    training step allocates nothing large but the gradients it returns. A backend overrides
    `empty` to allocate its own memory."""

    def __init__(self):
        self.arena: dict = {}
        self.workspace: dict = {}
        self.memos: dict = {}  # node -> Context.memo
        self.views: dict = {}  # ((tag, dtype), shape) -> (workspace, its view of that shape)
        self.pool = Pool(self)

    @staticmethod
    def empty(shape, dtype):
        """An uninitialized array; from ALIGN_FROM bytes on, starting on a cache line
        (ALIGN bytes): NumPy's large arrays start 16 bytes into a page, so that every vector of
        AVX-512 a kernel loads from them straddles two lines."""
        dtype = np.dtype(dtype)
        try:
            size = int(math.prod(shape)) * dtype.itemsize
        except TypeError:  # one length
            size = int(shape) * dtype.itemsize
        if size < ALIGN_FROM:
            return np.empty(shape, dtype)
        raw = np.empty(size + ALIGN, np.uint8)
        start = -raw.ctypes.data % ALIGN
        return raw[start:start + size].view(dtype).reshape(shape)

    @staticmethod
    def whole(arr) -> bool:
        """Whether arr is all of the memory it uses: it owns its data, or `empty` made it (the
        aligned view of a block of bytes that no other array sees)."""
        if arr.flags.owndata:
            return True
        base = arr.base
        return (type(base) is np.ndarray and base.dtype == np.uint8 and base.ndim == 1
                and base.flags.owndata and base.nbytes == arr.nbytes + ALIGN
                and arr.flags.c_contiguous)

    @staticmethod
    def owner(arr, arrays: dict):
        """The array of `arrays` (by id) that arr is or views, or None."""
        while arr is not None and id(arr) not in arrays:
            arr = arr.base if isinstance(arr.base, np.ndarray) else None
        return arr

    @staticmethod
    def overlap(a, b) -> bool:
        return np.may_share_memory(a, b)


def dtype_key(dtype) -> str:
    """np.dtype(dtype).str, remembered: a workspace's or pooled array's key, asked a few times a
    layer a step (0.9 us a call on a 2-core Zen 3; a dict's lookup 0.08)."""
    key = _DTYPE_KEYS.get(dtype)
    if key is None:
        key = _DTYPE_KEYS[dtype] = np.dtype(dtype).str
    return key


_DTYPE_KEYS: dict = {}


def span(a) -> tuple:
    """The byte range (lo, hi) that an array's elements occupy: a NumPy array or any array with
    __cuda_array_interface__ (strides of views included)."""
    iface = getattr(a, "__cuda_array_interface__", None) or a.__array_interface__
    lo = hi = iface["data"][0]
    shape, itemsize = iface["shape"], np.dtype(iface["typestr"]).itemsize
    if 0 in shape:
        return lo, lo
    strides = iface.get("strides") or tuple(
        itemsize * math.prod(shape[i + 1:]) for i in range(len(shape)))
    for n, st in zip(shape, strides):
        lo, hi = lo + min(0, st * (n - 1)), hi + max(0, st * (n - 1))
    return lo, hi + itemsize


class Context:
    def __init__(self, memory: Memory, train: bool, rng, backward: bool):
        self.memory, self.train, self.rng, self.backward = memory, train, rng, backward
        self.node, self.output, self.need_dx = None, False, True

    @property
    def memo(self) -> dict:
        memo = self.memory.memos.get(self.node)
        if memo is None:
            memo = {}
            if self.node is not None:  # (no node named: nothing kept)
                self.memory.memos[self.node] = memo
        return memo

    def empty(self, shape, dtype):
        return self.memory.empty(shape, dtype)

    def buffer(self, tag, shape, dtype):
        """An array owned by the current node and reused from step to step (where no backward
        follows, or for the network's output, a fresh one: the caller keeps it)."""
        if not self.backward or (self.output and tag == "y"):
            return self.empty(shape, dtype)
        key = (self.node, tag)
        arr = self.memory.arena.get(key)
        if arr is None or arr.shape != tuple(shape) or arr.dtype != dtype:
            arr = self.memory.arena[key] = self.empty(shape, dtype)
        return arr

    def value(self, shape, dtype):
        """An array for the current node's output (training: from the pool, which the model
        gives it back to once it is dead; otherwise, or for the network's output, a fresh one)."""
        if not self.backward or self.output:
            return self.empty(shape, dtype)
        return self.memory.pool.take(shape, dtype, value=True)

    def scratch(self, tag, shape, dtype):
        """A workspace that lives during one kernel call (an unfolded input, per-thread partial
        gradients ...): one per tag and dtype for the whole model; it grows to the largest size
        asked and is reused between steps."""
        key, shape = (tag, dtype_key(dtype)), tuple(shape)
        flat = self.memory.workspace.get(key)
        shaped = self.memory.views.get((key, shape))  # (the view of the last step, while valid)
        if shaped is not None and shaped[0] is flat:
            return shaped[1]
        size = math.prod(shape)
        if flat is None or flat.size < size:
            flat = self.memory.workspace[key] = self.empty(size, dtype)
            for old in [k for k in self.memory.views if k[0] == key]:  # (they keep the old one)
                del self.memory.views[old]
        view = flat[:size].reshape(shape)
        self.memory.views[(key, shape)] = (flat, view)
        return view

    def grad(self, shape, dtype):
        """An array for the input gradient of the current node (backward)."""
        return self.memory.pool.take(shape, dtype)


# what a cache holds besides arrays and containers (Pool._outputs skips them at once)
_PLAIN = frozenset({int, float, bool, str, type(None), np.int32, np.int64, np.float32, np.float64,
                    np.bool_, np.dtype})


class Pool:
    """The arrays of a training pass that die before its end, shared between nodes by shape and
    dtype: outputs (Context.value) and input gradients (Context.grad). A chain needs two arrays a
    shape, not one a node. The arrays are kept from step to step, and each step takes them in
    the same order.

    An output is dead once every node that reads it has run forward and no cache keeps it (nor
    a view of it): the model counts the holders of each output the pass took (`hold` and `drop`:
    the live values and the caches) and gives it back at zero. A BN's output that a RELU reads
    and no cache keeps is then the next BN's, or, in backward, an input gradient. An input
    gradient is dead once the node before has used it (`release`)."""

    def __init__(self, memory):
        self.memory = memory
        self.arrays: dict = {}  # (shape, dtype) -> every array of that kind
        self.ids: dict = {}  # id -> array, for every one of them
        self.free: dict = {}
        self.values: dict = {}  # id -> array, the outputs taken this pass
        self.holders: dict = {}  # id -> how many live values and caches use that output
        self.used: set = set()  # the (shape, dtype) keys taken this pass

    def start(self):
        """A new pass: every array is free; those of a shape the last pass took none of are
        let go (a batch of another size, an evaluation's chunks: the pool keeps one pass's
        arrays, not one set per batch size ever seen)."""
        for key in [k for k in self.arrays if k not in self.used]:
            for arr in self.arrays.pop(key):
                del self.ids[id(arr)]
        self.used = set()
        self.free = {key: list(arrays) for key, arrays in self.arrays.items()}
        self.values, self.holders = {}, {}
        return self

    def reclaim(self):
        """A backward pass starts: every array that no value or cache holds is free (a second
        backward over the same caches, as the Jacobian's, gets the first one's gradients back)."""
        self.free = {key: [a for a in arrays if self.holders.get(id(a), 0) == 0]
                     for key, arrays in self.arrays.items()}
        return self

    def take(self, shape, dtype, value=False):
        key = (tuple(shape), dtype_key(dtype))
        self.used.add(key)
        free = self.free.setdefault(key, [])
        if free:
            arr = free.pop()
        else:
            arr = self.memory.empty(shape, dtype)
            self.arrays.setdefault(key, []).append(arr)
            self.ids[id(arr)] = arr
        if value:
            self.values[id(arr)] = arr
            self.holders[id(arr)] = 0
        return arr

    def _outputs(self, obj):
        """The outputs taken this pass that the arrays in obj (a value or a cache: arrays in
        tuples, lists, dicts and objects' attributes) are or view. (Called twice a node a pass:
        kept to a few microseconds, by type tests before anything slower.)"""
        values = self.values
        if not values:
            return []
        found, todo, seen = [], [obj], set()
        while todo:
            o = todo.pop()
            t = type(o)
            if t is np.ndarray:
                if id(o) in values:
                    found.append(o)
                    continue
                o = o.base  # a view's base owns its memory
                while type(o) is np.ndarray:
                    if id(o) in values:
                        found.append(o)
                        break
                    o = o.base
            elif t is tuple or t is list:
                todo.extend(o)
            elif t in _PLAIN:
                continue
            elif t is dict:
                todo.extend(o.values())
            elif isinstance(o, np.ndarray) or hasattr(o, "__cuda_array_interface__"):
                mine = self.memory.owner(o, values)  # (an ndarray subclass, a device array)
                if mine is not None:
                    found.append(mine)
            elif isinstance(o, (tuple, list)):  # a namedtuple, a list subclass
                todo.extend(o)
            elif hasattr(o, "__dict__") and id(o) not in seen:
                seen.add(id(o))
                todo.extend(vars(o).values())
        return found

    def hold(self, obj):
        """The outputs obj uses have one more holder."""
        for arr in self._outputs(obj):
            self.holders[id(arr)] += 1

    def drop(self, obj, live=()):
        """The outputs obj uses have one holder less; at none, they are free (unless an array
        in `live` may use their memory)."""
        for arr in self._outputs(obj):
            self.holders[id(arr)] -= 1
            if self.holders[id(arr)] == 0:
                self.release(arr, live)

    def release(self, arr, live):
        """Give back the pool's array that `arr` is or views, unless an array in `live` may use
        its memory or a value or cache holds it."""
        if arr is None:
            return
        mine = self.memory.owner(arr, self.ids)
        if mine is None or self.holders.get(id(mine), 0) > 0:
            return
        overlap = self.memory.overlap
        for o in live:  # (loops, not any() over generators: a few of these a node a step)
            if o is not None and overlap(mine, o):
                return
        free = self.free[(tuple(mine.shape), dtype_key(mine.dtype))]
        for f in free:
            if f is mine:
                return
        free.append(mine)
