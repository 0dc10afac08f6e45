"""RNN, LSTM and GRU on the CUDA backend against the CPU's in float64 (forward, loss, every
parameter's gradient and the input's), beyond test_kinds' one-direction `return=last` examples:
both directions, every step's output, no biases, ReLU; and one float32 run, so that the kernels
are also compiled for float32 (tests/cuda/test_simulator.py). Tiny shapes: the simulator runs
every thread in Python, and a recurrence launches four kernels a step."""
import numpy as np
import pytest

import netc

from ...runtime.test_layers import randomized
from .test_kinds import agree


@pytest.mark.parametrize("chain", [
    "LSTM 2 bidir=true",
    "GRU 3 bidir=true return=seq",
    "RNN 2 relu return=seq bias=false",
    "RNN 3 bidir=true",
    "LSTM 2 return=seq - GRU 2 bias=false",  # stacked: the second's dx reaches the first
])
def test_recurrent_layers_agree_with_the_cpu(chain):
    agree(f"input seq 3x2\n{chain} - FC 2", batch=2)


def test_recurrent_layers_agree_in_float32():
    spec = "input seq 3x2\nGRU 2 bidir=true return=seq - LSTM 2 - FC 2"
    state = randomized(spec).state()
    cpu, gpu = (netc.Model(spec, backend=b, dtype="float32") for b in ("cpu", "cuda"))
    for model in (cpu, gpu):
        model.load_state(state)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 2)).astype(np.float32)
    y = rng.standard_normal((2, 2)).astype(np.float32)
    (lc, gc, dxc), (lg, gg, dxg) = (m.loss_and_grads(x, y, "mse", input_grad=True)
                                    for m in (cpu, gpu))
    assert lg == pytest.approx(lc, rel=1e-5)
    for name in gc:
        got = gg[name].copy_to_host()
        assert got.dtype == np.float32, name
        np.testing.assert_allclose(got, gc[name], rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(dxg.copy_to_host(), dxc, rtol=1e-4, atol=1e-6)
