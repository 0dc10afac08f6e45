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


def pytest_sessionfinish(session):
    for module in _background_runs(session):
        module.stop_in_background()
