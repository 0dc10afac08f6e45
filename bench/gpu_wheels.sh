#!/usr/bin/env bash
# The wheels bench/gpu_run.sh installs on a GPU machine without internet (Python 3.12, x86-64):
# netc's dependencies that such a machine's image (numba, numba-cuda, CuPy, PyTorch) lacks, TBB's
# threads (tbb, with its tcmlib) among them.
#     bash bench/gpu_wheels.sh            -> .whl/
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl lark graphviz scipy-openblas32 tbb tcmlib
ls .whl
