import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = os.path.join(ROOT, "specs")


@pytest.fixture
def spec_path():
    return lambda name: os.path.join(SPECS, name + ".net")
