"""The test session's own order: the tests that wait for the CUDA tests' background run
(tests/cuda/test_simulator.py) come after every other test, whatever order the command line
names them in, so that the wait overlaps the other tests' work (tests/conftest.py)."""
import subprocess
import sys

from .conftest import ROOT


def test_the_tests_that_wait_for_the_background_run_come_last():
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--collect-only", "tests/cuda/test_simulator.py", "tests/dsl"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    waiting = [i for i, line in enumerate(ids) if line.startswith("tests/cuda/test_simulator.py")]
    assert len(waiting) == 2 and len(ids) > 10  # (the module's two tests, and tests/dsl's)
    assert waiting == [len(ids) - 2, len(ids) - 1], ids[:3] + ids[-3:]
