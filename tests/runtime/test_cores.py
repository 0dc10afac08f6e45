"""The CPUs a process may use (netc.runtime.cores): its affinity and its cgroups' CPU quota,
read from a /proc/self and cgroup folders made here, as Linux lays them out."""
import os

from netc.runtime import cores


def fake(tmp_path, cgroup, mounts, limits):
    """A /proc/self with `cgroup` and mountinfo lines (`mounts`: (root, mount point, type,
    options)), and the cgroup files `limits` ({path under tmp_path: text})."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    lines = [f"{20 + i} 1 0:{30 + i} {root} {point.replace(' ', chr(92) + '040')} rw,relatime "
             f"shared:{i} - {kind} {kind} {options}" for i, (root, point, kind, options)
             in enumerate(mounts)]
    lines.insert(0, "19 1 0:5 / /proc rw - proc proc rw")  # not a cgroup: skipped
    (proc / "mountinfo").write_text("\n".join(lines) + "\n")
    for path, text in limits.items():
        (tmp_path / os.path.dirname(path)).mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    return str(proc)


def test_cgroup_v2_takes_the_smallest_limit_up_the_tree(tmp_path):
    point = str(tmp_path / "cg 2")  # (mountinfo escapes the space)
    proc = fake(tmp_path, "0::/kube/pod1/ctr\n", [("/", point, "cgroup2", "rw")],
                {"cg 2/kube/pod1/ctr/cpu.max": "max 100000\n",
                 "cg 2/kube/pod1/cpu.max": "150000 100000\n", "cg 2/cpu.max": "400000 100000\n"})
    assert cores.cpu_quota(proc) == 1.5


def test_cgroup_v2_inside_a_container_and_without_a_limit(tmp_path):
    point = str(tmp_path / "cg")
    proc = fake(tmp_path, "0::/\n", [("/", point, "cgroup2", "rw")], {"cg/cpu.max": "max 100000\n"})
    assert cores.cpu_quota(proc) is None
    (tmp_path / "cg" / "cpu.max").write_text("50000 100000\n")
    assert cores.cpu_quota(proc) == 0.5


def test_cgroup_v1_cpu_controller_mounted_at_the_containers_own_group(tmp_path):
    point = str(tmp_path / "cpu")
    proc = fake(tmp_path, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n",
                [("/docker/abc", point, "cgroup", "rw,cpu,cpuacct"),
                 ("/docker/abc", str(tmp_path / "mem"), "cgroup", "rw,memory")],
                {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n",
                 "mem/cpu.cfs_quota_us": "1000\n", "mem/cpu.cfs_period_us": "100000\n"})
    assert cores.cpu_quota(proc) is None  # no quota (-1); the memory controller's files ignored
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("250000\n")
    assert cores.cpu_quota(proc) == 2.5


def test_no_cgroup_files_no_quota(tmp_path):
    assert cores.cpu_quota(str(tmp_path / "none")) is None
    proc = fake(tmp_path, "0::/a\n", [("/", str(tmp_path / "cg"), "cgroup2", "rw")],
                {"cg/a/cpu.max": "garbled\n"})
    assert cores.cpu_quota(proc) is None


def test_threads_follow_the_affinity_and_the_quota_rounded_down(monkeypatch):
    from netc.runtime.backends.cpu import jit
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    for quota, want in ((None, 4), (8.0, 4), (2.5, 2), (1.0, 1), (0.3, 1)):
        monkeypatch.setattr(cores, "cpu_quota", lambda q=quota: q)
        assert cores.usable() == want
    monkeypatch.delitem(jit._state, "threads", raising=False)
    monkeypatch.delenv("NETC_NUM_THREADS", raising=False)
    assert jit.num_threads() == 1  # (the last quota, 0.3 CPUs)


def test_bench_says_when_a_quota_set_the_threads(monkeypatch):
    from netc.runtime import bench
    from netc.runtime.backends import registry as backends
    cpu = backends.load("cpu")
    monkeypatch.setattr(cores, "cpu_quota", lambda: 1.5)
    assert cpu.describe()["CPU quota"] == 1.5
    monkeypatch.setattr(cores, "cpu_quota", lambda: None)
    assert "CPU quota" not in cpu.describe()
    result = {"batch": 8, "iters": 3, "step": 0.001, "layers": [], "GEMM": "the BLAS",
              "threads": 1, "threading": "tbb"}
    assert bench.format_bench({**result, "CPU quota": 1.5}, "Net").splitlines()[0] == \
        "Net: batch 8, median of 3 steps, 1 thread (tbb, a CPU quota of 1.5 CPUs)"
    assert bench.format_bench(result, "Net").splitlines()[0] == \
        "Net: batch 8, median of 3 steps, 1 thread (tbb)"
