"""Data-parallel training over MPI (`mpiexec -n K netc train SPEC --distributed`): every rank
holds the whole model, computes the gradients of its shard of each global batch, and one
in-place Allreduce over a single flat buffer per step sums them, each weighted by its shard's
share of the batch, so that every rank applies the same update to the same weights.

The trainer talks to a group through a few calls; SOLO is the one-process group, whose calls
leave everything as it is, so that a run without --distributed takes no other path:

    shard(n)              this rank's (lo, hi) of n items (contiguous, sizes within one)
    key(*k)               a random stream's seed: k, and the rank where there are several
    reduce_step(...)      the step's weighted gradients, loss, accuracy and interrupt flag, summed
    sum(values)           a float64 vector summed over ranks (evaluation's totals)
    average_buffers(m)    BN running statistics averaged over ranks (each rank keeps its own)
    broadcast_state(m)    rank 0's parameters and buffers to every rank
    check_same(m, where)  a NumericsError if the ranks' weights differ
    settled(fn, *args)    fn's result, or on every rank the error one rank raised in it
    share(fn, *args)      fn's result (or error) on rank 0, sent to every rank: what rank 0
                          alone reads (a run folder's config.json and checkpoints)
    claim(path, resume)   the run folder, claimed by rank 0, its path given to every rank

Only rank 0 (`lead`) prints and writes files; see README, "Beyond one machine"."""
from __future__ import annotations

import contextlib
import os
import sys
import traceback

import numpy as np

from netc.dsl.errors import NetcError, NumericsError

from . import cores, runs

# what MPI launchers set in each process they start: Open MPI, MPICH/Hydra (and Slurm's PMI),
# MVAPICH
SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
INSTALL = ("pip install 'netc[mpi]' (mpi4py, and MPICH's runtime with its mpiexec), then "
           "launch the ranks with it: mpiexec -n 2 netc train SPEC --distributed")


def launched() -> tuple[int, int]:
    """(rank, size) as an MPI launcher set them in the environment; (0, 1) outside one."""
    def first(names):
        return next((int(os.environ[v]) for v in names if os.environ.get(v, "").isdigit()), None)
    size = first(SIZE_VARS)
    return (first(RANK_VARS) or 0, size) if size else (0, 1)


class Solo:
    """One process: the group whose calls change nothing."""

    rank, size, lead = 0, 1, True
    record: dict = {}  # what config.json keeps of the group

    def shard(self, n):
        return 0, n

    def key(self, *k):
        return list(k)

    def reduce_step(self, grads, device, share, loss, acc, interrupted):
        return grads, loss, acc, interrupted

    def sum(self, values):
        return values

    def average_buffers(self, model):
        pass

    def broadcast_state(self, model):
        pass

    def check_same(self, model, where):
        pass

    def settled(self, fn, *args):
        return fn(*args)

    def share(self, fn, *args):
        return fn(*args)

    def claim(self, path, resume):
        return runs.claim(path, resume)

    def refuse(self, path, resume):
        runs.refuse(path, resume)

    def abort(self, text, code=2):
        pass


SOLO = Solo()


class Group(Solo):
    """The ranks of an MPI communicator training one run."""

    def __init__(self, comm):
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.lead = self.rank == 0
        self.record = {"ranks": self.size}
        self._flat = None  # the step's buffer: every gradient, then loss, accuracy, interrupt
        self._layout = None  # [(name, offset, size, shape)] of the gradients in it

    def shard(self, n):
        bounds = np.linspace(0, n, self.size + 1).round().astype(int)
        return int(bounds[self.rank]), int(bounds[self.rank + 1])

    def key(self, *k):
        return [*k, self.rank]

    def reduce_step(self, grads, device, share, loss, acc, interrupted):
        """(grads, loss, acc, interrupted) of the global batch: each rank's (means over its
        shard) times its `share` of the batch, summed in one in-place Allreduce; the gradients
        come back as views of the buffer (copied to the device off the CPU)."""
        from mpi4py import MPI
        flat = self._buffer(grads)
        for name, o, n, shape in self._layout:
            np.multiply(device.to_host(grads[name]), share, out=flat[o:o + n].reshape(shape))
        flat[-3:] = (loss * share, (acc or 0.0) * share, float(interrupted))
        self.comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        out = {name: flat[o:o + n].reshape(shape) for name, o, n, shape in self._layout}
        if device.name != "cpu":
            out = {k: device.from_host(v) for k, v in out.items()}
        return out, float(flat[-3]), (None if acc is None else float(flat[-2])), flat[-1] > 0

    def _buffer(self, grads):
        if self._layout is None:
            self._layout, o = [], 0
            for name, g in grads.items():
                self._layout.append((name, o, int(np.prod(g.shape)), tuple(g.shape)))
                o += self._layout[-1][2]
            dtype = next(iter(grads.values())).dtype if grads else np.float32
            self._flat = np.zeros(o + 3, dtype)
        return self._flat

    def sum(self, values):
        from mpi4py import MPI
        values = np.ascontiguousarray(values, np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, values, op=MPI.SUM)
        return values

    def average_buffers(self, model):
        """BN's running statistics, computed by each rank on its shard, averaged over ranks
        (exact for the means, which are linear in the batch; the variances lack the spread
        between shards), so that evaluation and checkpoints see one set."""
        floats = [k for k, v in model.buffers.items() if v.dtype.kind == "f"]
        if not floats:
            return
        total = self.sum(np.concatenate([model.device.to_host(model.buffers[k]).ravel()
                                         for k in floats])) / self.size
        self._scatter(model, model.buffers, floats, total)

    def broadcast_state(self, model):
        """Rank 0's parameters and buffers, sent to every rank (after rank 0 alone read a
        checkpoint)."""
        names = list(model.params) + list(model.buffers)
        state = model.state()
        flat = np.concatenate([np.asarray(model.device.to_host(state[k]), np.float64).ravel()
                               for k in names]) if names else np.zeros(0)
        self.comm.Bcast(flat, root=0)
        self._scatter(model, model.params, list(model.params), flat)
        self._scatter(model, model.buffers, list(model.buffers),
                      flat[sum(int(np.prod(v.shape)) for v in model.params.values()):])

    @staticmethod
    def _scatter(model, arrays, names, flat):
        o = 0
        for k in names:
            a = arrays[k]
            n = int(np.prod(a.shape))
            model.device.copy_from_host(a, flat[o:o + n].reshape(a.shape).astype(a.dtype))
            o += n

    def check_same(self, model, where):
        """A NumericsError on every rank where the ranks' weights differ (checked once an epoch,
        on a sum, a sum of squares and a strided sum of each parameter)."""
        from mpi4py import MPI
        sums = []
        for v in model.params.values():
            h = np.asarray(model.device.to_host(v), np.float64).ravel()
            sums += [h.sum(), h @ h, h[::7].sum()]
        mine = np.array(sums)
        lo, hi = mine.copy(), mine.copy()
        self.comm.Allreduce(MPI.IN_PLACE, lo, op=MPI.MIN)
        self.comm.Allreduce(MPI.IN_PLACE, hi, op=MPI.MAX)
        if not np.array_equal(lo, hi):
            raise NumericsError(f"{where}: the {self.size} ranks' weights differ (the ranks "
                                "must apply the same update): a bug of netc's, or an MPI whose "
                                "Allreduce gives ranks different sums", "please report it")

    def settled(self, fn, *args):
        """fn(*args) on every rank; where it raised a NetcError on one rank (a file missing on
        one host, say), every rank raises, rank 0 with that rank's message."""
        error = None
        try:
            value = fn(*args)
        except NetcError as e:
            error = e
        errors = self.comm.allgather(None if error is None else (error.message, error.hint))
        if error is not None and (self.lead or not any(errors[:self.rank])):
            raise error
        bad = next(((r, e) for r, e in enumerate(errors) if e), None)
        if bad:
            raise NetcError(f"rank {bad[0]}: {bad[1][0]}", bad[1][1])
        return value

    def share(self, fn, *args):
        """fn(*args) computed on rank 0 and sent to every rank (pickled: once a run, never per
        step); where it raised a NetcError, every rank raises it."""
        value, error = None, None
        if self.lead:
            try:
                value = fn(*args)
            except NetcError as e:
                error = e
        value, message = self.comm.bcast((value, error and (error.message, error.hint)), root=0)
        if error is not None:
            raise error
        if message:
            raise NetcError(*message)
        return value

    def refuse(self, path, resume):
        """runs.refuse on rank 0 (the folder is its), its NetcError raised on every rank."""
        self.share(runs.refuse, path, resume)

    @contextlib.contextmanager
    def claim(self, path, resume):
        """The run folder: rank 0 claims (and locks) it; every rank gets its path, or raises
        rank 0's error."""
        with contextlib.ExitStack() as stack:
            folder, error = None, None
            if self.lead:
                try:
                    folder = stack.enter_context(runs.claim(path, resume))
                except NetcError as e:
                    error = e
            folder, message = self.comm.bcast(
                (folder, error and (error.message, error.hint)), root=0)
            if error is not None:
                raise error
            if message:
                raise NetcError(*message)
            yield folder

    def abort(self, text, code=2):
        """Print `text` and end every rank: what only this rank saw (a full disk on rank 0's
        host, a bug) would otherwise leave the others waiting in the next Allreduce."""
        print(text, file=sys.__stderr__, flush=True)
        self.comm.Abort(code)


def connect() -> Group:
    """The group of the ranks mpiexec started: mpi4py's COMM_WORLD, each rank's kernels given
    its share of its host's cores (unless NETC_NUM_THREADS says), only rank 0 printing, and an
    uncaught exception on any rank ending them all."""
    try:
        from mpi4py import MPI
    except ImportError as e:  # mpi4py missing, or its MPI library
        raise NetcError(f"--distributed trains over MPI with mpi4py, which cannot be imported "
                        f"({e})", INSTALL) from None
    group = Group(MPI.COMM_WORLD)
    started = launched()[1]
    if started > group.size:  # every process alone in its world: the launcher is another MPI's
        raise NetcError(f"--distributed: the launcher started {started} processes, and MPI sees "
                        f"{group.size} in each: its mpiexec belongs to another MPI than the one "
                        f"mpi4py uses ({' '.join(MPI.Get_library_version().split()[:3])})",
                        "launch with that MPI's own mpiexec (pip install 'netc[mpi]' puts "
                        "MPICH's beside python), or build mpi4py against the launcher's MPI: "
                        "pip install --no-binary mpi4py mpi4py")
    host = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks on this host
    local = host.Get_size()
    host.Free()
    os.environ.setdefault("NETC_NUM_THREADS", str(_threads(local)))
    if group.size > 1:
        sys.excepthook = _aborting(group)
    if not group.lead:
        sys.stdout = sys.stderr = open(os.devnull, "w")
    return group


def _threads(local: int) -> int:
    """Threads per rank: the cores the launcher bound this rank to, else the host's cores (at
    most its container's CPU quota: cores.usable) shared among its `local` ranks."""
    usable = cores.usable()
    return usable if cores.affinity() < (os.cpu_count() or 1) else max(1, usable // local)


def _aborting(group):
    def hook(kind, value, tb):
        text = "".join(traceback.format_exception(kind, value, tb))
        group.abort(f"rank {group.rank} of {group.size}: {text.rstrip()}", 1)
    return hook


def check(group, cfg: dict, full_batch: tuple):
    """What --distributed needs of the run's settings: a batch that the ranks divide, and an
    optimizer that needs nothing but gradients."""
    if group is SOLO:
        return
    k, b = group.size, cfg["batch"]
    if cfg["optimizer"] == "lm":
        raise NetcError("--distributed: lm (Levenberg-Marquardt) builds the Jacobian of the "
                        "whole training split on one process, which --distributed does not "
                        "split", "train lm without --distributed, or use lbfgs, cg or newton, "
                        "whose gradients the ranks share")
    if cfg["optimizer"] in full_batch or b % k == 0:
        return
    below, above = b - b % k, b - b % k + k
    fits = " or ".join(f"--batch {v}" for v in (below, above) if v > 0)
    divisors = [d for d in range(2, min(b, 64) + 1) if b % d == 0][:6]
    raise NetcError(f"--distributed over {k} ranks splits each batch of {b} into {k} equal "
                    f"shards, and {k} does not divide {b}",
                    f"{fits}; or a number of ranks that divides {b}"
                    + (f" ({', '.join(map(str, divisors))})" if divisors else ""))


def check_resume(size: int, folder: str):
    """--resume continues a run on as many ranks (`size`) as it started with."""
    try:
        ranks = runs.read_json(os.path.join(folder, "config.json")).get("ranks", 1)
    except (OSError, ValueError, AttributeError):
        return  # saved_settings says what is wrong with it
    if ranks != size:
        raise NetcError(f"--resume: {folder} was trained on {ranks} rank(s), and this resume runs "
                        f"on {size}",
                        f"resume it on the same number: mpiexec -n {ranks} netc train SPEC "
                        f"--resume {folder} --distributed" if ranks > 1 else
                        f"resume it without mpiexec: netc train SPEC --resume {folder}")
