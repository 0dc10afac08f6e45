"""Where a sweep's runs run: one at a time in this process, in a pool of local processes, or on a
Dask or Ray cluster (optional extras). An engine takes the runs' arguments for run_one and calls
report(index, row) as each run ends (with the exception instead of a row when the engine lost it);
on Ctrl-C it cancels the runs not started and lets KeyboardInterrupt through."""
from __future__ import annotations

import importlib
import io
import logging
import os
import signal
import threading
import traceback
import warnings

from netc.dsl.errors import NetcError

LOG = "train.log"  # each run's printed lines, in its folder


def run_one(net, setting, overrides, folder, threads=None) -> dict:
    """One run of a sweep (training.train into `folder`, its lines into LOG there) and its
    row: the best validation figures (metrics.csv), the test scores (result.json), or the error
    that stopped it. `threads`: the kernels' threads in this process (NETC_NUM_THREADS)."""
    from . import runs, training
    if threads:
        os.environ["NETC_NUM_THREADS"] = str(threads)
    log = _LazyLog(os.path.join(folder, LOG))
    # Ctrl-C stops the run (the trainer's own handler stops it after a step), not the process
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        result, _ = training.train(net, {**overrides, **setting}, folder, progress=False,
                                   stdout=log)
    except KeyboardInterrupt:
        kept = os.path.exists(os.path.join(folder, "last.npz"))
        return {"status": "interrupted", "error": f"continue with netc train --resume {folder}"
                if kept else "stopped before its first checkpoint"}
    except NetcError as e:
        log.write(e.format() + "\n")
        return {"status": "failed", "error": e.message}
    except Exception as e:  # a bug of ours: its traceback in the log, the other runs go on
        log.write(traceback.format_exc())
        return {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    finally:
        log.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return _scores(result, runs.read_metrics(folder))


def _scores(result, metrics) -> dict:
    val_acc = [r["val_acc"] for r in metrics if r["val_acc"] is not None]
    val_loss = [r["val_loss"] for r in metrics if r["val_loss"] is not None]
    return {"status": "ok", "best_val_acc": max(val_acc, default=None),
            "best_val_loss": min(val_loss, default=None), "best_epoch": result["best_epoch"],
            "test_loss": result["test_loss"], "test_acc": result["test_acc"],
            "test_miou": result.get("test_miou"), "trained_epochs": result["epochs"],
            "seconds": result["seconds"]}


class _LazyLog(io.TextIOBase):
    """A text file opened at the first write: the run folder must be empty when the run claims
    it, and its first line is written after."""

    def __init__(self, path):
        self.path, self.file = path, None

    def write(self, text):
        if self.file is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.file = open(self.path, "a", encoding="utf-8")
        self.file.write(text)
        self.file.flush()
        return len(text)

    def close(self):
        if self.file is not None:
            self.file.close()
        super().close()


def threads_per_run(workers: int) -> int:
    """The kernels' threads for each of `workers` concurrent runs: the cores (NETC_NUM_THREADS,
    else those this process may use) shared out, at least 1; a warning when they are fewer."""
    from .backends.cpu import jit
    cores = jit.num_threads()
    if workers > cores:
        warnings.warn(f"{workers} workers on {cores} cores: each run gets 1 thread and the runs "
                      "share the cores", stacklevel=3)
    return max(1, cores // workers)


# ---- the engines -------------------------------------------------------------------------------
def serial(tasks, workers, address, report, stdout):
    """--engine local --workers 1: the runs one after the other, in this process."""
    for i, task in enumerate(tasks):
        report(i, run_one(*task))


def local(tasks, workers, address, report, stdout):
    """--engine local: a pool of `workers` processes (spawned: Numba's threads do not survive a
    fork), each run's kernels on cores/workers threads. A run is handed to a process only when
    one is free, so that after Ctrl-C none is left waiting to start."""
    if workers == 1:
        return serial(tasks, workers, address, report, stdout)
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, ProcessPoolExecutor, wait
    threads = threads_per_run(workers)
    print(f"{workers} processes of {threads} thread{'s' * (threads > 1)}", file=stdout)
    pool = ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"),
                               initializer=_ignore_interrupt)
    todo, running = iter(enumerate(tasks)), {}

    def start_next():
        for i, task in todo:
            try:
                running[pool.submit(run_one, *task, threads)] = i
                return
            except BrokenExecutor as e:  # a process was killed (out of memory?): none can start
                report(i, e)
    try:
        for _ in range(workers):
            start_next()
        while running:
            for f in wait(running, return_when=FIRST_COMPLETED)[0]:
                report(running.pop(f), f.exception() or f.result())
                start_next()
    except KeyboardInterrupt:
        _stop(running, report)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ignore_interrupt():
    """A pool's process ignores Ctrl-C between runs (run_one takes it during a run)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop(running, report):
    """After Ctrl-C: pass it on to the pool's processes (it reached them too from a terminal,
    not from `kill -INT`), then record the runs in progress as they stop (each after its step,
    keeping last.npz)."""
    import multiprocessing
    from concurrent.futures import wait
    for child in multiprocessing.active_children():
        os.kill(child.pid, signal.SIGINT)
    wait(running)
    for f, i in running.items():
        try:
            report(i, f.exception() or f.result())
        except KeyboardInterrupt:  # the run's own: the sweep is stopping already
            pass


def dask(tasks, workers, address, report, stdout):
    """--engine dask: the Dask cluster at `address` (its scheduler), else a LocalCluster of
    `workers` processes of one task each. Starting a LocalCluster sets OMP_NUM_THREADS,
    OPENBLAS_NUM_THREADS ... in this process's environment for its workers: put it back after."""
    from dask.distributed import Client, LocalCluster, as_completed
    environment = dict(os.environ)
    try:
        _dask(tasks, workers, address, report, stdout, Client, LocalCluster, as_completed)
    finally:
        os.environ.clear()
        os.environ.update(environment)


def _dask(tasks, workers, address, report, stdout, Client, LocalCluster, as_completed):
    threads = None if address else threads_per_run(workers)
    cluster = None if address else LocalCluster(n_workers=workers, threads_per_worker=1,
                                                dashboard_address=None)
    try:
        client = Client(address or cluster)
    except OSError as e:
        raise _unreachable("Dask scheduler", address, e) from None
    print(f"dask: {client.scheduler.address}", file=stdout)
    futures = {}
    try:
        futures = {client.submit(run_one, *task, threads, pure=False): i
                   for i, task in enumerate(tasks)}
        for f in as_completed(futures):
            report(futures[f], f.exception() or f.result())
    except KeyboardInterrupt:
        client.cancel(list(futures))
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def ray(tasks, workers, address, report, stdout):
    """--engine ray: the Ray cluster at `address`, else a local one of `workers` CPUs (one run
    per CPU)."""
    import ray as ray_
    threads = None if address else threads_per_run(workers)
    try:
        ray_.init(address=address, num_cpus=None if address else workers,
                  include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                  ignore_reinit_error=True)
    except (OSError, ConnectionError) as e:
        raise _unreachable("Ray cluster", address, e) from None
    remote = ray_.remote(num_cpus=1)(run_one)
    refs = {remote.remote(*task, threads): i for i, task in enumerate(tasks)}
    pending = list(refs)
    try:
        while pending:
            done, pending = ray_.wait(pending, num_returns=1)
            try:
                row = ray_.get(done[0])
            except Exception as e:  # the worker died: the run is lost, not the sweep
                row = e
            report(refs[done[0]], row)
    except KeyboardInterrupt:
        for r in pending:
            ray_.cancel(r)
        raise
    finally:
        ray_.shutdown()


def _unreachable(what, address, error):
    return NetcError(f"--address {address}: cannot reach the {what} ({error})",
                     "check the address and that the cluster is running; without --address a "
                     "local one is started")


def _needs(module, engine, run):
    """An engine that checks its package is installed before it is chosen."""
    def chosen():
        try:
            importlib.import_module(module)
        except ImportError:
            raise NetcError(f"--engine {engine} needs {module}, which is not installed",
                            f"pip install 'netc[{engine}]' (from a clone: pip install "
                            f"'.[{engine}]'), or use --engine local") from None
        return run
    return chosen


# name -> a function that returns the engine (once its package is found)
ENGINES = {"local": lambda: local, "dask": _needs("dask.distributed", "dask", dask),
           "ray": _needs("ray", "ray", ray)}
