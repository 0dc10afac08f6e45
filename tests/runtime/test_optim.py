"""Each optimizer against a plain NumPy transcription of its formula; convergence of the
full-batch methods; schedules."""
import math

import numpy as np
import pytest

import netc
from netc import NetcError, NumericsError
from netc.runtime.schedule import Schedule

rng = np.random.default_rng(0)
THETA0 = rng.standard_normal(5)
GRADS = [rng.standard_normal(5) for _ in range(6)]


def run(name, **hyper):
    p = {"w": THETA0.copy()}
    opt = netc.optimizer(name, p, **hyper)
    for g in GRADS:
        opt.step({"w": g.copy()})
    return p["w"]


def ref_sgd(lr, momentum=0.0, dampening=0.0, nesterov=False, wd=0.0):
    th, v = THETA0.copy(), None
    for g in GRADS:
        g = g + wd * th
        if momentum:
            v = g.copy() if v is None else momentum * v + (1 - dampening) * g
            g = g + momentum * v if nesterov else v
        th = th - lr * g
    return th


def ref_adam(lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decoupled=False):
    th, m, v = THETA0.copy(), 0, 0
    for t, g in enumerate(GRADS, 1):
        if decoupled:
            th = th - lr * wd * th
        else:
            g = g + wd * th
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        th = th - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return th


def ref_adagrad(lr, eps=1e-10):
    th, s = THETA0.copy(), 0
    for g in GRADS:
        s = s + g * g
        th = th - lr * g / (np.sqrt(s) + eps)
    return th


def ref_rmsprop(lr, alpha=0.99, eps=1e-8, momentum=0.0):
    th, v, b = THETA0.copy(), 0, 0
    for g in GRADS:
        v = alpha * v + (1 - alpha) * g * g
        step = g / (np.sqrt(v) + eps)
        if momentum:
            b = momentum * b + step
            step = b
        th = th - lr * step
    return th


@pytest.mark.parametrize("name,hyper,ref", [
    ("sgd", {"lr": 0.1}, lambda: ref_sgd(0.1)),
    ("sgd", {"lr": 0.1, "weight_decay": 0.01}, lambda: ref_sgd(0.1, wd=0.01)),
    ("momentum", {"lr": 0.1}, lambda: ref_sgd(0.1, momentum=0.9)),
    ("sgd", {"lr": 0.1, "momentum": 0.5, "dampening": 0.2}, lambda: ref_sgd(0.1, 0.5, 0.2)),
    ("nesterov", {"lr": 0.1}, lambda: ref_sgd(0.1, momentum=0.9, nesterov=True)),
    ("adagrad", {"lr": 0.5}, lambda: ref_adagrad(0.5)),
    ("rmsprop", {"lr": 0.01}, lambda: ref_rmsprop(0.01)),
    ("rmsprop", {"lr": 0.01, "momentum": 0.9}, lambda: ref_rmsprop(0.01, momentum=0.9)),
    ("adam", {"lr": 0.01}, lambda: ref_adam(0.01)),
    ("adam", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1},
     lambda: ref_adam(0.01, 0.8, 0.99, wd=0.1)),
    ("adamw", {"lr": 0.01}, lambda: ref_adam(0.01, wd=0.01, decoupled=True)),
])
def test_first_order_updates_match_their_formulas(name, hyper, ref):
    np.testing.assert_allclose(run(name, **hyper), ref(), rtol=1e-12, atol=1e-14)


def test_unknown_optimizer_and_settings():
    with pytest.raises(NetcError, match="unknown optimizer"):
        netc.optimizer("adamax", {})
    with pytest.raises(NetcError, match="unknown setting"):
        netc.optimizer("sgd", {}, betas=(0.9, 0.9))


# ---- convergence --------------------------------------------------------------------------------
def least_squares(n=40, d=3, seed=1):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, d))
    y = x @ r.standard_normal((d, 1)) + 0.5 + 0.1 * r.standard_normal((n, 1))
    model = netc.Model(f"input {d}\nOUT 1", dtype="float64", seed=0)
    a = np.hstack([x, np.ones((n, 1))])
    exact = np.linalg.lstsq(a, y, rcond=None)[0]
    return model, x, y, exact


def closure_for(model, x, y, loss=None):
    return lambda: model.loss_and_grads(x, y, loss)


def solution(model):
    return np.concatenate([model.params["out1.weight"].ravel(), model.params["out1.bias"]])


def test_gradient_descent_solves_least_squares():
    model, x, y, exact = least_squares()
    opt = netc.optimizer("sgd", model.params, lr=0.2)
    for _ in range(300):
        opt.step(model.loss_and_grads(x, y)[1])
    np.testing.assert_allclose(solution(model), exact.ravel(), atol=1e-6)


@pytest.mark.parametrize("damping", [1e-3, 0.0])
def test_levenberg_marquardt_reaches_the_normal_equations(damping):
    model, x, y, exact = least_squares()
    opt = netc.optimizer("lm", model.params, damping=damping, jacobian=model.jacobian(x, y))
    for _ in range(3):
        opt.iterate(closure_for(model, x, y))
    np.testing.assert_allclose(solution(model), exact.ravel(), atol=1e-8)


def logistic_problem():
    r = np.random.default_rng(2)
    x = r.standard_normal((60, 2))
    y = (x @ np.array([1.5, -2.0]) + 0.3 * r.standard_normal(60) > 0).astype(float)
    return x, y


def test_logistic_regression_by_sgd():
    x, y = logistic_problem()
    model = netc.Model("input 2\nOUT 1 sigmoid", dtype="float64")
    opt = netc.optimizer("sgd", model.params, lr=0.5)
    for _ in range(200):
        opt.step(model.loss_and_grads(x, y)[1])
    acc = ((model.forward(x)[:, 0] > 0.5) == (y > 0.5)).mean()
    assert acc >= 0.9


@pytest.mark.parametrize("name,iters", [("lbfgs", 25), ("cg", 60)])
def test_quasi_newton_and_cg_reach_the_optimum(name, iters):
    """A convex problem (L2-regularised least squares): the gradient vanishes in few iterations."""
    model, x, y, exact = least_squares(seed=3)
    opt = netc.optimizer(name, model.params)
    for _ in range(iters):
        opt.iterate(closure_for(model, x, y))
    g = model.loss_and_grads(x, y)[1]
    assert max(np.abs(v).max() for v in g.values()) < 1e-6
    np.testing.assert_allclose(solution(model), exact.ravel(), atol=1e-5)


def test_newton_solves_a_quadratic_in_one_step():
    model, x, y, exact = least_squares(seed=4)
    opt = netc.optimizer("newton", model.params, alpha=0.0)
    opt.iterate(closure_for(model, x, y))
    np.testing.assert_allclose(solution(model), exact.ravel(), atol=1e-6)


def test_newton_refuses_large_networks_with_the_memory_it_would_need():
    model = netc.Model("input 100\nFC 50 - OUT 2")
    opt = netc.optimizer("newton", model.params)
    with pytest.raises(NumericsError) as e:
        opt.iterate(lambda: model.loss_and_grads(np.zeros((2, 100)), np.zeros((2, 2))))
    assert "5,152 x 5,152 Hessian" in e.value.message and "202.5 MiB" in e.value.message
    assert "lbfgs" in e.value.hint


def test_xor_with_an_mlp():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
    y = np.array([0, 1, 1, 0])
    model = netc.Model("input 2\nFC 8 act=tanh - OUT 2 softmax", dtype="float64", seed=1)
    opt = netc.optimizer("adam", model.params, lr=0.05)
    for _ in range(300):
        opt.step(model.loss_and_grads(x, y)[1])
    assert (model.forward(x).argmax(axis=1) == y).all()


# ---- schedules ------------------------------------------------------------------------------------
def test_schedule_values():
    assert [Schedule(1.0, "step", 9, step_size=3, gamma=0.5).lr(e) for e in (0, 2, 3, 6)] == \
        [1.0, 1.0, 0.5, 0.25]
    assert [Schedule(1.0, "multistep", 9, milestones=(2, 5), gamma=0.1).lr(e) for e in (1, 2, 5)] \
        == [1.0, pytest.approx(0.1), pytest.approx(0.01)]
    assert Schedule(1.0, "exponential", 9, gamma=0.9).lr(3) == pytest.approx(0.729)
    cos = Schedule(1.0, "cosine", 10, min_lr=0.1)
    assert cos.lr(0) == 1.0 and cos.lr(5) == pytest.approx(0.55)
    last = 0.1 + 0.9 * (1 + math.cos(math.pi * 9 / 10)) / 2  # epoch 9, the horizon's last
    assert cos.lr(9) == pytest.approx(last) and cos.lr(10) == cos.lr(25) == cos.lr(9)
    cyc = Schedule(0.1, "cyclic", 9, max_lr=0.5, cycle=4)
    assert [round(cyc.lr(e), 6) for e in range(5)] == [0.1, 0.3, 0.5, 0.3, 0.1]
    warm = Schedule(1.0, "constant", 9, warmup=3)
    assert [warm.lr(e) for e in range(4)] == [0.25, 0.5, 0.75, 1.0]
    const = Schedule(1.0, "step", 9, step_size=1, gamma=0.5, warmup=2, warmup_mode="constant",
                     factor=0.1)
    assert [const.lr(e) for e in range(4)] == [0.1, 0.1, 1.0, 0.5]


def test_cosine_restarts_against_the_formula():
    s = Schedule(1.0, "cosine_restarts", 12, cycles=3, min_lr=0.1)  # T = 4
    hand = [0.1 + 0.9 * (1 + math.cos(math.pi * (e % 4) / 4)) / 2 for e in range(12)]
    assert [s.lr(e) for e in range(12)] == pytest.approx(hand)
    assert [e for e in range(12) if s.lr(e) == 1.0] == [0, 4, 8]  # the restarts
    assert [s.cycle_end(d) for d in range(1, 13)] == [None] * 3 + [1] + [None] * 3 + [2] + \
        [None] * 3 + [3]
    warm = Schedule(1.0, "cosine_restarts", 8, cycles=2, warmup=2)  # 2 warm-up epochs, T = 3
    assert [warm.lr(e) for e in range(8)] == pytest.approx([1 / 3, 2 / 3, 1, 0.75, 0.25, 1, 0.75,
                                                            0.25])
    assert [warm.cycle_end(d) for d in range(1, 9)] == [None] * 4 + [1, None, None, 2]
    one = Schedule(1.0, "cosine_restarts", 10, min_lr=0.1)  # cycles=1: cosine
    assert [one.lr(e) for e in range(10)] == \
        [Schedule(1.0, "cosine", 10, min_lr=0.1).lr(e) for e in range(10)]
    with pytest.raises(NetcError, match=r"20 epochs do not split into 3 cycles") as e:
        Schedule(1.0, "cosine_restarts", 20, cycles=3)
    assert e.value.hint == "use cycles=2, 4, 5, 10 or 20, or epochs=18 or 21 for 3 cycles"
    with pytest.raises(NetcError, match=r"10 epochs after 2 warm-up epochs do not split") as e:
        Schedule(1.0, "cosine_restarts", 12, cycles=3, warmup=2)
    assert "epochs=11 or 14" in e.value.hint
    with pytest.raises(NetcError, match="cycles must be >= 1"):
        Schedule(1.0, "cosine_restarts", 12, cycles=0)


def test_reduce_on_plateau():
    s = Schedule(1.0, "plateau", 20, factor=0.5, patience=1)
    for loss in (1.0, 0.9, 0.95, 0.95, 0.8):
        s.observe(loss)
    assert s.lr(5) == 0.5
    assert math.isclose(Schedule(1.0).lr(7), 1.0)
