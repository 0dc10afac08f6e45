"""The CPUs this process may use: the cores it may run on (its affinity: taskset, a cluster's
cpuset) and, in a container or a cgroup limited by CPU time (docker --cpus, a Kubernetes pod's
CPU limit, systemd's CPUQuota), the CPUs' worth of time it is allowed. os.cpu_count() and the
affinity both see every core of the host there, and a thread per core would be throttled: with
a quota of one CPU on a 2-core host, the digits CNN's step took 1.92 ms with two threads on
Numba's OpenMP layer against 1.21 ms with one (PyTorch's, 3.87-4.02 ms against 1.65-1.68;
TBB's, netc's default, 1.22-1.24 against 1.22-1.24: bench/HISTORY.md)."""
from __future__ import annotations

import math
import os
import re


def usable() -> int:
    """The whole CPUs this process may use: its affinity's cores, at most its CPU quota rounded
    down (a thread more than the quota's CPUs is throttled for the rest of each period), at
    least one."""
    cores = affinity()
    quota = cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def affinity() -> int:
    """The cores this process may run on (all of them where the platform cannot say)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_quota(proc: str = "/proc/self") -> float | None:
    """The CPUs' worth of time this process's cgroups allow (quota / period, the smallest over
    its cgroup and the ones above it, cgroup v2's cpu.max or v1's cpu.cfs_quota_us), or None
    where there is no limit or none can be read (not Linux)."""
    try:
        with open(os.path.join(proc, "cgroup")) as f:
            groups = f.read().splitlines()
        with open(os.path.join(proc, "mountinfo")) as f:
            mounts = [_mount(line) for line in f.read().splitlines()]
    except OSError:
        return None
    limits = []
    for line in groups:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        number, controllers, path = parts
        v2 = number == "0" and controllers == ""
        if not v2 and "cpu" not in controllers.split(","):
            continue
        for mount in mounts:
            if mount is None or mount[2] != v2 or not (v2 or "cpu" in mount[3]):
                continue
            root, point = mount[0], mount[1]
            if path != root and not path.startswith(root.rstrip("/") + "/"):
                continue
            folder = os.path.join(point, path[len(root):].lstrip("/"))
            while True:
                limit = _limit(folder, v2)
                if limit is not None:
                    limits.append(limit)
                if os.path.normpath(folder) == os.path.normpath(point):
                    break
                folder = os.path.dirname(folder)
    return min(limits) if limits else None


def _mount(line: str):
    """(root, mount point, cgroup v2?, v1's controllers) of a cgroup line of mountinfo, else
    None. Fields: id parent major:minor root point options [tags] - type source options."""
    fields = line.split()
    dash = fields.index("-") if "-" in fields else -1
    if dash < 6 or len(fields) < dash + 2:
        return None
    kind = fields[dash + 1]
    if kind not in ("cgroup", "cgroup2"):
        return None
    options = fields[dash + 3].split(",") if len(fields) > dash + 3 else []
    return _unescape(fields[3]), _unescape(fields[4]), kind == "cgroup2", options


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _limit(folder: str, v2: bool) -> float | None:
    """The quota in CPUs that cgroup folder sets, or None."""
    try:
        if v2:
            with open(os.path.join(folder, "cpu.max")) as f:
                quota, period = (f.read().split() + ["100000"])[:2]
            if quota == "max":
                return None
        else:
            with open(os.path.join(folder, "cpu.cfs_quota_us")) as f:
                quota = f.read().strip()
            with open(os.path.join(folder, "cpu.cfs_period_us")) as f:
                period = f.read().strip()
        quota, period = int(quota), int(period)
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
