"""Every layer kind on the CUDA backend against the CPU backend in float64: the forward output
(evaluation and training), the loss, every parameter's gradient, the input's gradient, and the
state that training updates (BN's running statistics), to a relative 1e-10. The CPU's kernels are
themselves checked against NumPy and by finite differences (tests/runtime/test_layers.py), so this
one registry-driven harness covers each kind the same way; registering a kind enrols it."""
import numpy as np
import pytest

import netc
from netc.compiler import registry
from netc.runtime.gradcheck import random_targets

from ...runtime.test_layers import SMALL_INCEPTION, SMALL_RESNET, randomized

# the CPU tests' small networks at 4x4 (under the simulator, a GEMM's cost grows with its size)
TINY_RESNET = SMALL_RESNET.replace("input 8x8x3", "input 4x4x3")
TINY_INCEPTION = SMALL_INCEPTION.replace("input 6x6x3", "input 4x4x3")

KINDS = registry.kinds()


def pair(spec):
    """A CPU model with random parameters and a CUDA model holding the same ones."""
    cpu = randomized(spec)
    gpu = netc.Model(cpu.net, backend="cuda", dtype="float64")
    gpu.load_state(cpu.state())
    return cpu, gpu


def close(got, want, what):
    got = got if isinstance(got, np.ndarray) else got.copy_to_host()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=what)


def agree(spec, batch=2, loss=None, seed=0):
    cpu, gpu = pair(spec)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch,) + cpu.net.input_shape)
    close(gpu.forward(x), cpu.forward(x), "forward, evaluation mode")
    y = random_targets(cpu, cpu.loss_name(loss), batch, rng)
    results = []
    for model in (cpu, gpu):
        model.rng = np.random.default_rng(seed + 1)  # the same dropout seeds
        results.append(model.loss_and_grads(x, y, loss, train=True, input_grad=True))
    (lc, gc, dxc), (lg, gg, dxg) = results
    assert lg == pytest.approx(lc, rel=1e-10, abs=1e-12)
    assert set(gg) == set(gc)
    for name in gc:
        close(gg[name], gc[name], name)
    close(dxg, dxc, "input gradient")
    for name in cpu.buffers:
        close(gpu.buffers[name], cpu.buffers[name], name)
    close(gpu.last_output, cpu.last_output, "forward, training mode")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_agrees_with_the_cpu(kind):
    inp, chain = KINDS[kind].example
    agree(f"input {inp}\n{chain} - FC 3", batch=3)


@pytest.mark.parametrize("inp,chain", [
    ("7x8x2", "CONV 3x3/2 3 pad=1 act=relu round=floor - POOL max 3x3/2 pad=1 round=ceil"),
    ("6x6x4", "CONV 1x1 4 groups=2 act=sigmoid - BN - POOL avg 2x2/2 - MAXOUT 2"),
    ("5x5x2", "CONV 2x3/1x2 3 pad=1x0 act=elu - LEAKY - DROPOUT 0.3 - GAP"),
    ("10", "FC 6 act=prelu - BN - DROPOUT 0.2 - OUT 3 sigmoid"),
    ("10", "FC 6 act=tanh - LN - GN 3 - OUT 3 softmax"),
    ("3x3x2", "DECONV 4x4/2 3 pad=1 act=relu - DECONV 3x3/2 2 pad=1 outpad=1 bias=false act=prelu"),
    ("3x2x1", "UPSAMPLE 3 bilinear - CONV 3x3 2 - UPSAMPLE 2 - CONCAT[ID | POOL max 2x2/2 - UPSAMPLE 2]"),
    ("3x2x2", "CONV 3x3 3 pad=1 act=relu - OUT 3 softmax per=pixel"),
    # dropped paths: stochastic depth, drop-path (the same masks as the CPU's for a seed)
    ("2x2x2", "RES[CONV 1x1 2] drop=0.5 act=tanh - MEAN[ID | CONV 1x1 2 | ID] drop_path=0.6"),
])
def test_more_configurations_agree(inp, chain):
    agree(f"input {inp}\n{chain} - FC 2", batch=4 if "RES[" in chain else 2)


@pytest.mark.parametrize("loss", ["cross_entropy", "kl"])
def test_per_pixel_output_and_loss_agree(loss):
    agree("input 3x2x2\nCONV 3x3 3 pad=1 act=relu - OUT 3 softmax per=pixel", batch=2, loss=loss)


@pytest.mark.parametrize("spec", [TINY_RESNET, TINY_INCEPTION], ids=["resnet", "inception"])
def test_whole_networks_with_branches_agree(spec):
    agree(spec, batch=2)
