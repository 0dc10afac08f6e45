"""The Model API on the CUDA backend: device arrays in and out, NumPy in and out, checkpoints
shared with the CPU, moving between backends, optimizers and losses on the device."""
import numpy as np
import pytest
from numba import cuda

import netc
from netc import DataError
from netc.runtime.backends.registry import is_device_array
from netc.runtime.gradcheck import random_targets

from .test_kinds import close, pair

SPEC = "input 6x6x2\nCONV 3x3 3 act=relu - POOL - FC 4 act=tanh - OUT 3 softmax"


def test_device_arrays_in_place_and_numpy_in_and_out():
    cpu, gpu = pair(SPEC)
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6))
    out = gpu.forward(cuda.to_device(x))
    assert is_device_array(out)
    close(out, cpu.forward(x), "device in, device out")
    host = gpu.forward(x)
    assert isinstance(host, np.ndarray)
    close(host, cpu.forward(x), "NumPy in, NumPy out")
    _, grads = gpu.loss_and_grads(cuda.to_device(x), np.array([0, 2]))
    assert all(is_device_array(g) for g in grads.values())


def test_bad_device_inputs_are_clear_errors():
    gpu = netc.Model(SPEC, backend="cuda", dtype="float64")
    with pytest.raises(DataError, match="a CUDA array of float32; this model computes in float64"):
        gpu.forward(cuda.to_device(np.zeros((1, 2, 6, 6), np.float32)))
    with pytest.raises(DataError) as e:
        gpu.forward(cuda.to_device(np.zeros((1, 6, 6, 2))))
    assert "NHWC" in e.value.hint
    bad = np.zeros((1, 2, 6, 6))
    bad[0, 1, 2, 3] = np.inf
    with pytest.raises(DataError, match="NaN or Inf"):
        gpu.forward(cuda.to_device(bad))
    cpu = netc.Model(SPEC)
    with pytest.raises(DataError, match="this model runs on the CPU"):
        cpu.forward(cuda.to_device(np.zeros((1, 2, 6, 6), np.float32)))


def test_checkpoints_and_moving_between_backends(tmp_path):
    cpu, gpu = pair(SPEC)
    x = np.random.default_rng(1).standard_normal((3, 2, 6, 6))
    gpu.save(str(tmp_path / "g.npz"))
    again = netc.Model.load(str(tmp_path / "g.npz"))  # on the CPU
    np.testing.assert_array_equal(again.forward(x), cpu.forward(x))
    on_gpu = netc.Model.load(str(tmp_path / "g.npz"), backend="cuda")
    close(on_gpu.forward(x), cpu.forward(x), "loaded on the GPU")
    back = gpu.to("cpu")
    assert back.backend == "cpu" and isinstance(back.params["conv1.weight"], np.ndarray)
    np.testing.assert_array_equal(back.forward(x), cpu.forward(x))
    close(cpu.to("cuda").forward(x), cpu.forward(x), "to('cuda')")


@pytest.mark.parametrize("name,hyper", [
    ("sgd", {"lr": 0.1, "weight_decay": 0.01}), ("momentum", {"lr": 0.1}),
    ("nesterov", {"lr": 0.1, "dampening": 0.0}), ("adagrad", {"lr": 0.5}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.9}), ("adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01})])
def test_every_optimizer_updates_on_the_device_as_on_the_cpu(name, hyper):
    cpu, gpu = pair("input 5\nFC 4 act=tanh - OUT 3 softmax")
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((2, 5)), np.array([1, 0])
    opts = [netc.optimizer(name, m.params, **hyper) for m in (cpu, gpu)]
    for _ in range(3):
        for model, opt in zip((cpu, gpu), opts):
            opt.step(model.loss_and_grads(x, y)[1])
    for k in cpu.params:
        close(gpu.params[k], cpu.params[k], k)
    state = opts[1].state_arrays()
    assert all(isinstance(v, np.ndarray) for v in state.values())


@pytest.mark.parametrize("name", ["lbfgs", "cg"])
def test_full_batch_methods_drive_device_parameters(name):
    cpu, gpu = pair("input 3\nFC 4 act=tanh - OUT 2")
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    losses = []
    for model in (cpu, gpu):
        opt = netc.optimizer(name, model.params)
        losses.append([opt.iterate(lambda: model.loss_and_grads(x, y)) for _ in range(3)])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-9)
    for k in cpu.params:
        np.testing.assert_allclose(gpu.params[k].copy_to_host(), cpu.params[k], rtol=1e-8)


@pytest.mark.parametrize("loss,out", [
    ("cross_entropy", "softmax"), ("kl", "softmax"), ("kl", "none"), ("bce", "sigmoid"),
    ("mse", "none"), ("mae", "none"), ("huber", "sigmoid"), ("hinge", "none"),
    ("multiclass_hinge", "none")])
def test_every_loss_agrees_with_the_cpu(loss, out):
    cpu, gpu = pair(f"input 5\nFC 4 act=tanh - OUT 3 {out}")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 5))
    y = random_targets(cpu, loss, 4, rng)
    lc, gc = cpu.loss_and_grads(x, y, loss)
    lg, gg = gpu.loss_and_grads(x, y, loss)
    assert lg == pytest.approx(lc, rel=1e-10)
    for k in gc:
        close(gg[k], gc[k], k)
