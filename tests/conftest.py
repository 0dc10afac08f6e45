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
