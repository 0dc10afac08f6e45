"""Where a training step's time goes, kernel by kernel: Linux `perf` samples netc's step running
in a loop, and each sample counts for the compiled kernel (or library, or the interpreter) it
fell in. `netc bench` times layers; this names the kernels inside them, as they run in the step
(with the caches as the step leaves them, which a kernel timed alone does not see).

    python bench/kernel_profile.py lenet5 --batch 64
    python bench/kernel_profile.py resnet18-32 --batch 64 --seconds 30
    NETC_NUM_THREADS=1 python bench/kernel_profile.py bench/mlp.net --batch 256

The network: a case of bench/compare.py without its batch (as net_switch.py takes it) or a .net
file. Needs `perf` (linux-tools) and leave to record this process (root, or
/proc/sys/kernel/perf_event_paranoid at 1 or less). Numba's compiled code is named for perf by a
map file (/tmp/perf-PID.map, perf's convention for code compiled at run time) listing the entry
of every compiled kernel; a kernel's share runs from its entry to the next one's, so code LLVM
placed between two entries counts for the first. Threads' samples are added together; the
threads' waiting (the scheduler, TBB's spinning) is its own line.
"""
from __future__ import annotations

import argparse
import collections
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from net_switch import build_step, network  # noqa: E402 - compare.py's cases

# where a thread waits rather than works: the kernel's scheduler, TBB's and OpenBLAS's spinning
WAITING = ("__schedule", "schedule", "do_sched_yield", "__sched_yield", "pv_native_safe_halt",
           "pause", "do_syscall_64", "__x64_sys_sched_yield", "blas_thread_server")


def kernel_entries():
    """{address: name} of every compiled overload of every Numba dispatcher alive in this
    process (module.qualname of its Python function), and of Numba's reference counts."""
    import numba
    entries = {}
    for obj in gc.get_objects():  # (type(), not isinstance: a dead weak proxy raises there)
        if not issubclass(type(obj), numba.core.dispatcher.Dispatcher):
            continue
        fn = obj.py_func
        name = f"{fn.__module__.removeprefix('netc.runtime.backends.')}.{fn.__qualname__}"
        for cres in list(obj.overloads.values()):
            try:
                address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
            except Exception:  # an overload without compiled code of its own
                continue
            if address:
                entries[address] = name
    nrt = _nrt_entries()
    for address, name in nrt.items():
        entries.setdefault(address, name)
    if nrt:  # each a few instructions: a line of its own ends them, unless a kernel comes first
        end = max(nrt) + NRT_FUNCTION_BYTES
        if not any(max(nrt) < address <= end for address in entries):
            entries[end] = UNMAPPED
    return entries


def _nrt_entries():
    """{address: name} of NRT_incref and NRT_decref, the reference counts of Numba's runtime,
    which Numba compiles at run time too, outside any dispatcher: a kernel whose threads share an
    array's reference count spends its time there (bench/HISTORY.md, afternoon of 2026-12-05:
    48% of a step, found only by reading the unnamed addresses' code)."""
    try:
        from numba.core.runtime import nrt
        library = nrt.rtsys.library
    except Exception:  # noqa: BLE001 - another Numba's internals: the map goes without them
        return {}
    entries = {}
    for name in ("NRT_incref", "NRT_decref"):
        try:
            address = library.get_pointer_to_function(name)
        except Exception:  # noqa: BLE001
            continue
        if address:
            entries[address] = f"numba runtime {name} (reference counts)"
    return entries


NRT_FUNCTION_BYTES = 64  # at most, each of NRT_incref and NRT_decref (24 bytes on x86-64)
UNMAPPED = "[unknown]"  # a map line that names nothing: tally() counts it outside the map


def write_map(entries, path, last=1 << 16):
    """perf's map of code compiled at run time: "START SIZE NAME" in hex, each entry running to
    the next one (the last `last` bytes); returns how many it wrote."""
    starts = sorted(entries)
    with open(path, "w") as f:
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else start + last
            f.write(f"{start:x} {end - start:x} {entries[start]}\n")
    return len(starts)


def tally(lines):
    """[(share, what)] from `perf script -F ip,sym,dso` lines ("ADDRESS SYMBOL (DSO)"), largest
    first: netc's kernels by name, the threads' waiting as one line, the interpreter as one,
    anything else by library."""
    counts, total = collections.Counter(), 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        sym, _, dso = line.rpartition(" (")
        sym, dso = sym.strip().partition(" ")[2].strip(), dso.rstrip(")")
        total += 1
        if os.path.basename(dso).startswith("perf-") and dso.endswith(".map"):
            counts[sym if sym and sym != "[unknown]" else "netc code outside the map"] += 1
        elif sym.split("::")[-1] in WAITING or sym in WAITING:
            counts["threads waiting (scheduler, spinning)"] += 1
        elif "libpython" in dso or "python3" in os.path.basename(dso):
            counts["Python interpreter"] += 1
        else:
            counts[os.path.basename(dso) or "?"] += 1
    return [(n / total, what) for what, n in counts.most_common()] if total else []


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("network", help="a bench/compare.py case (without the batch) or a .net file")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0, help="how long perf samples")
    ap.add_argument("--top", type=int, default=25, help="lines to print")
    args = ap.parse_args(argv)
    spec = network(args.network, "kernel_profile")
    perf = shutil.which("perf")
    if perf is None:
        raise SystemExit("kernel_profile: needs Linux perf (apt-get install linux-tools-generic, "
                         "or your distribution's perf package)")
    _, step = build_step(args.network, spec, args.batch, "kernel_profile")
    for _ in range(5):  # compiles or loads every kernel the step calls
        step()
    mapped = write_map(kernel_entries(), f"/tmp/perf-{os.getpid()}.map")
    steps, stop = [0], threading.Event()

    def loop():
        while not stop.is_set():
            step()
            steps[0] += 1
    runner = threading.Thread(target=loop)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        runner.start()
        time.sleep(0.5)
        start, before = time.perf_counter(), steps[0]
        rec = subprocess.run([perf, "record", "-q", "-F", "999", "-p", str(os.getpid()), "-o", data,
                              "--", "sleep", str(args.seconds)], capture_output=True, text=True)
        elapsed, done = time.perf_counter() - start, steps[0] - before
        stop.set()
        runner.join()
        if rec.returncode != 0 or not os.path.exists(data):
            why = (rec.stderr.strip().splitlines() or [f"exit status {rec.returncode}"])[-1]
            raise SystemExit(f"kernel_profile: perf could not record this process ({why}); run it "
                             "as root, or with /proc/sys/kernel/perf_event_paranoid at 1 or less")
        out = subprocess.run([perf, "script", "-i", data, "-F", "ip,sym,dso"], capture_output=True,
                             text=True).stdout.splitlines()
    os.remove(f"/tmp/perf-{os.getpid()}.map")
    rows = tally(out)
    per = elapsed / max(done, 1) * 1e3
    print(f"{args.network}, batch {args.batch}: {done} steps in {elapsed:.1f} s ({per:.2f} ms a "
          f"step while sampled), {len(out)} samples over all threads, {mapped} kernels mapped")
    for share, what in rows[:args.top]:
        print(f"{100 * share:6.1f}%  {what}")


if __name__ == "__main__":
    main()
