#!/usr/bin/env bash
# A GPU run in one command, on a machine with an NVIDIA GPU (and, maybe, no internet):
#
#     bash bench/gpu_run.sh [RESULTS_DIR]        (default: $OUT where set, else ./gpu-results)
#
# 1. installs what the machine lacks from the wheels in .whl/ (made beforehand, where pip reaches
#    an index, by bench/gpu_wheels.sh), then netc itself (editable, without the network);
# 2. runs the CUDA backend's tests on the GPU (tests/cuda/gpu: every kind, loss and optimizer
#    against the CPU backend in float64, the Model API, training);
# 3. times a training step against PyTorch's CUDA build (bench/compare.py --device cuda);
# 4. trains specs/digits.net on the GPU and on the CPU and reports both test accuracies.
# Each step writes its output under RESULTS_DIR; a step that fails does not stop the next.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-$PWD/gpu-results}}
mkdir -p "$out"
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-/tmp/netc-numba-cache} PYTHONUNBUFFERED=1

{ nvidia-smi; python3 -c "import sys, numpy, numba, numba_cuda, torch
print(sys.version); print('numpy', numpy.__version__, 'numba', numba.__version__,
      'numba-cuda', numba_cuda.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda)
try:
    import cupy; print('cupy', cupy.__version__)
except ImportError: print('cupy: not installed')"; } > "$out/machine.txt" 2>&1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps .whl/*.whl > "$out/install.log" 2>&1
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >> "$out/install.log" 2>&1

echo "== tests on the GPU"
# in parallel where pytest-xdist is installed: most of their time is compiling kernels (81 tests in
# 58 s with -n 6 on an H200's 16-core host)
parallel=(); python3 -c "import xdist" 2>/dev/null && parallel=(-n 6)
timeout 420 python3 -m pytest -q -p no:cacheprovider "${parallel[@]}" tests/cuda/gpu 2>&1 | tee "$out/tests.log" | tail -4
echo "== tests with netc's own GEMM kernel (no cuBLAS)"
NETC_CUDA_GEMM=own timeout 240 python3 -m pytest -q -p no:cacheprovider tests/cuda/gpu/test_kinds.py \
    2>&1 | tee "$out/tests_own_gemm.log" | tail -2
echo "== training step against PyTorch"
timeout 300 python3 bench/compare.py --device cuda --repeats 40 2>&1 | tee "$out/compare.txt"
echo "== digits on the GPU and on the CPU"
for device in cuda cpu; do
    rm -rf "/tmp/digits-$device"
    timeout 240 netc train specs/digits.net --device "$device" --quiet --out "/tmp/digits-$device" \
        2>&1 | tail -1 | tee "$out/digits_$device.txt"
done
