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

    buffer(tag, shape, dtype)   an array owned by this node, the same one at every step
    scratch(tag, shape, dtype)  a workspace shared by all nodes, valid during one kernel call
    grad(shape, dtype)          an input gradient's array, reused along the backward pass
    empty(shape, dtype)         a fresh array

A backend subclasses Context to allocate its own memory (`empty`) and may add what its kernels
need (the CPU's thread count).
"""
from __future__ import annotations

import math

import numpy as np


class Memory:
    """What a model keeps from pass to pass: each node's buffers by (node, tag), the kernels'
    workspaces by tag (shared by every node, since no two nodes run at once), and the pool of
    input-gradient arrays. After the first step a training step allocates nothing large but the
    gradients it returns. A backend overrides `empty` to allocate its own memory."""

    def __init__(self):
        self.arena: dict = {}
        self.workspace: dict = {}
        self.grads = GradPool(self)

    @staticmethod
    def empty(shape, dtype):
        return np.empty(shape, dtype)

    @staticmethod
    def owner(arr, arrays: dict):
        """The array of `arrays` (by id) that arr is or views, or None."""
        while arr is not None and id(arr) not in arrays:
            arr = arr.base if isinstance(arr.base, np.ndarray) else None
        return arr

    @staticmethod
    def overlap(a, b) -> bool:
        return np.may_share_memory(a, b)


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

    def scratch(self, tag, shape, dtype):
        """A workspace that lives during one kernel call (an unfolded input, per-thread partial
        gradients ...): one per tag and dtype for the whole model; it grows to the largest size
        asked and is reused between steps."""
        size = math.prod(shape)
        key = (tag, np.dtype(dtype).str)
        flat = self.memory.workspace.get(key)
        if flat is None or flat.size < size:
            flat = self.memory.workspace[key] = self.empty(size, dtype)
        return flat[:size].reshape(shape)

    def grad(self, shape, dtype):
        """An array for the input gradient of the current node (backward)."""
        return self.memory.grads.take(shape, dtype)


class GradPool:
    """The input-gradient arrays of a backward pass, shared between nodes: a node's input
    gradient becomes the next node's dy and is dead once that node has run, so its array goes
    back to the pool for a later node of the same shape (a chain needs two per shape, not one per
    node). The arrays are kept from step to step, and each step takes them in the same order."""

    def __init__(self, memory):
        self.memory = memory
        self.arrays: dict = {}  # (shape, dtype) -> every array of that kind
        self.ids: dict = {}  # id -> array, for every one of them
        self.free: dict = {}

    def start(self):
        self.free = {key: list(arrays) for key, arrays in self.arrays.items()}
        return self

    def take(self, shape, dtype):
        key = (tuple(shape), np.dtype(dtype).str)
        free = self.free.setdefault(key, [])
        if free:
            return free.pop()
        arr = self.memory.empty(shape, dtype)
        self.arrays.setdefault(key, []).append(arr)
        self.ids[id(arr)] = arr
        return arr

    def release(self, arr, live):
        """Give back the pool's array that `arr` is or views, unless an array in `live` may use
        its memory."""
        if arr is None:
            return
        mine = self.memory.owner(arr, self.ids)
        if mine is None or any(o is not None and self.memory.overlap(mine, o) for o in live):
            return
        free = self.free[(tuple(mine.shape), np.dtype(mine.dtype).str)]
        if not any(f is mine for f in free):
            free.append(mine)
