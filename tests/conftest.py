import contextlib
import ctypes
import os

import pytest

import netc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = os.path.join(ROOT, "specs")

if os.path.realpath(os.path.dirname(netc.__file__)) != os.path.realpath(os.path.join(ROOT, "api")):
    pytest.exit(f"the tests would run netc from {os.path.dirname(netc.__file__)}, not from this "
                f"checkout: install the checkout itself with  python3 -m pip install -e \".[test]\"",
                returncode=4)


@pytest.fixture
def spec_path():
    return lambda name: os.path.join(SPECS, name + ".net")

# pytest-xdist's workers (`-n auto`): each runs its kernels on its share of the cores, at least
# two (the tests of splitting work need two threads), rather than every worker on all of them
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
if _workers > 1 and "NETC_NUM_THREADS" not in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ["NETC_NUM_THREADS"] = str(max(2, (_cores or 2) // _workers))


@contextlib.contextmanager
def kept_freed_memory():
    """Within it, glibc's malloc keeps what is freed for the next allocation. Outside, each block
    over 32 MB comes from the kernel by mmap and goes back by munmap when freed, so each new one
    is fresh pages that the kernel clears at the first touch: the ONNX tests' full-size VGGs
    pass through 6-9 buffers of 500 MB each, and on the 2-core VM that clearing was most of
    their time (the VGGs' and AlexNets' tests 43 s, 29 s of it system time; 19 s and 5 s within
    this; the whole file 57 -> 32 s). Here every block comes from the heap (M_MMAP_MAX 0) and
    nothing freed is given back (M_TRIM_THRESHOLD the largest); at the end glibc's defaults
    again (but for its mmap threshold, which stays where it had risen to: setting the trim
    threshold stops its rising), and the memory kept goes back (malloc_trim). Not for every
    test: a worker would hold its peak to its end, and an allocation served from memory kept
    adds nothing to the address space that test_fuzz.py's limit counts. Where the C library is
    not glibc, it does nothing."""
    try:
        libc = ctypes.CDLL(None)
        mallopt, trim, _ = libc.mallopt, libc.malloc_trim, libc.gnu_get_libc_version
    except (OSError, AttributeError, TypeError):  # (TypeError: Windows' CDLL(None))
        yield
        return
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    mallopt(-4, 0)  # M_MMAP_MAX: no block by mmap
    mallopt(-1, -1)  # M_TRIM_THRESHOLD: (size_t)-1, never trim
    try:
        yield
    finally:
        mallopt(-4, 65536)  # glibc's defaults: DEFAULT_MMAP_MAX
        mallopt(-1, 128 * 1024)  # DEFAULT_TRIM_THRESHOLD
        trim(0)


@pytest.fixture(scope="module")
def freed_memory_kept():
    """kept_freed_memory() from a module's first test that asks to the module's end: for tests
    of networks of hundreds of MB."""
    with kept_freed_memory():
        yield


# the kernels' parallel launchers compile where they are called, as in every test before the
# compiler process (runtime/backends/cpu/background.py), which test_parts.py tests on its own
os.environ.setdefault("NETC_BACKGROUND_COMPILE", "0")


def _background_runs(session):
    """The test modules of this session that start a run of their own in the background."""
    modules = {getattr(item, "module", None) for item in getattr(session, "items", ())}
    return [m for m in modules if hasattr(m, "start_in_background")]


def pytest_collection_modifyitems(session, config, items):
    """The tests that read a background run go last: they wait for it, and with the other
    tests before them the wait overlaps their work (where they came in file order, after
    tests/compiler, pytest sat idle for 170 s of a 530 s warm run on 2 cores)."""
    items.sort(key=lambda item: hasattr(getattr(item, "module", None), "start_in_background"))


def pytest_collection_finish(session):
    """Start the CUDA tests' background run (tests/cuda/test_simulator.py) now, where the session
    includes its tests: it takes minutes on one core, and the other tests run meanwhile. Not
    where no test runs (--collect-only, --setup-plan), nor in a pytest-xdist worker (each would
    start one; the tests' fixture starts it in the worker that runs them)."""
    option = session.config.option
    if (getattr(option, "collectonly", False) or getattr(option, "setupplan", False)
            or hasattr(session.config, "workerinput")):
        return
    for module in _background_runs(session):
        module.start_in_background()


_started_here: list = []  # the modules whose background run this pytest-xdist controller started


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """Under pytest-xdist (`-n`), where the controller collects nothing: start the background
    run as soon as a worker's tests include the simulated ones, in the folder named by the
    session's run id, which the workers' fixture waits on (tests/cuda/test_simulator.py)."""
    option = node.config.option
    if (_started_here or getattr(option, "setupplan", False)
            or getattr(option, "setuponly", False)):
        return
    if any(i.split("::")[0].endswith("cuda/test_simulator.py") for i in ids):
        from .cuda import test_simulator
        test_simulator.start_in_background(
            test_simulator.shared_folder(node.workerinput["testrunuid"]))
        _started_here.append(test_simulator)


def pytest_sessionfinish(session):
    for module in _background_runs(session) + _started_here:
        module.stop_in_background()
    _started_here.clear()
