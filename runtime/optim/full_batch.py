"""Full-batch (small-data) optimizers: L-BFGS, nonlinear conjugate gradient, Levenberg-Marquardt
(Gauss-Newton at damping 0) and regularised Newton. Each works on the parameters as one flat
vector; `iterate(closure)` calls closure() -> (loss, grads) as often as it needs and returns the
new loss."""
from __future__ import annotations

import numpy as np

from netc.dsl.errors import NetcError, NumericsError

from .base import Optimizer


class FullBatch(Optimizer):
    default_lr = 1.0
    defaults = {"max_ls": 25, "c1": 1e-4}
    full_batch = True

    def step(self, grads):
        raise NetcError(f"{self.name} is a full-batch method: it does not step from gradients",
                        "call opt.iterate(closure), with closure() -> (loss, grads) on the whole "
                        "training set")

    def __init__(self, params, lr=None, **hyper):
        super().__init__(params, lr, **hyper)
        self._at = None  # (theta, loss, flat grads) where the closure was last evaluated

    # ---- the parameters as one vector, in float64 on the host (these methods are for small
    # networks: their algebra runs in NumPy whatever backend holds the parameters) ----
    def flat(self):
        to_host = self.backend.to_host
        return np.concatenate([to_host(p).reshape(-1) for p in self.params.values()]).astype(np.float64)

    def assign(self, vec):
        o = 0
        for p in self.params.values():
            self.backend.copy_from_host(p, vec[o:o + p.size].reshape(p.shape).astype(p.dtype))
            o += p.size

    def flat_grads(self, grads):
        to_host = self.backend.to_host
        return np.concatenate([np.asarray(to_host(grads[k]), np.float64).reshape(-1)
                               for k in self.params])

    def evaluate(self, closure, theta):
        self.assign(theta)
        loss, grads = closure()
        if not np.isfinite(loss):
            raise NumericsError(f"{self.name}: the loss became {loss}",
                                "lower lr, or start from smaller weights")
        return float(loss), self.flat_grads(grads)

    def current(self, closure):
        theta = self.flat()
        if self._at is not None and np.array_equal(self._at[0], theta):
            return theta, self._at[1], self._at[2]
        f, g = self.evaluate(closure, theta)
        return theta, f, g

    def line_search(self, closure, theta, f, g, d, t):
        """Backtracking until the Armijo condition f(theta + t d) <= f + c1 t g.d holds."""
        slope = float(g @ d)
        for _ in range(self.hyper["max_ls"]):
            trial = theta + t * d
            try:
                f2, g2 = self.evaluate(closure, trial)
            except NumericsError:
                f2, g2 = np.inf, None
            if f2 <= f + self.hyper["c1"] * t * slope:
                self._at = (trial.copy(), f2, g2)
                return t, trial, f2, g2
            t *= 0.5
        self.assign(theta)
        self._at = (theta.copy(), f, g)
        return 0.0, theta, f, g


class LBFGS(FullBatch):
    """Limited-memory BFGS: the two-loop recursion over the last `history` pairs (s, y), scaled by
    s.y / y.y, with a backtracking line search."""
    name = "lbfgs"
    defaults = {**FullBatch.defaults, "history": 10}

    def __init__(self, params, lr=None, **hyper):
        super().__init__(params, lr, **hyper)
        self.pairs = []

    def state_arrays(self):
        out = super().state_arrays()
        if self.pairs:
            out["lbfgs::s"] = np.stack([s for s, _, _ in self.pairs])
            out["lbfgs::y"] = np.stack([y for _, y, _ in self.pairs])
        return out

    def load_state_arrays(self, arrays, source="checkpoint"):
        super().load_state_arrays(arrays, source)
        if "lbfgs::s" in arrays:
            self.pairs = [(s.copy(), y.copy(), 1.0 / (s @ y))
                          for s, y in zip(arrays["lbfgs::s"], arrays["lbfgs::y"])]

    def direction(self, g):
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            a = rho * (s @ q)
            alphas.append(a)
            q -= a * y
        if self.pairs:
            s, y, _ = self.pairs[-1]
            q *= (s @ y) / (y @ y)
        for (s, y, rho), a in zip(self.pairs, reversed(alphas)):
            q += (a - rho * (y @ q)) * s
        return -q

    def iterate(self, closure):
        self.t += 1
        theta, f, g = self.current(closure)
        d = self.direction(g)
        if g @ d >= 0:  # not a descent direction: forget the curvature pairs
            self.pairs, d = [], -g
        t0 = self.lr if self.pairs else self.lr * min(1.0, 1.0 / max(np.abs(g).sum(), 1e-12))
        t, new, f2, g2 = self.line_search(closure, theta, f, g, d, t0)
        if t > 0:
            s, y = new - theta, g2 - g
            if s @ y > 1e-10:
                self.pairs.append((s, y, 1.0 / (s @ y)))
                self.pairs = self.pairs[-self.hyper["history"]:]
        return f2


class ConjugateGradient(FullBatch):
    """Nonlinear conjugate gradient, Polak-Ribiere+: beta = max(0, g.(g - g_old) / g_old.g_old),
    d = -g + beta*d_old, restarted every `restart` steps (default: the number of parameters) or
    when d is no descent direction; the initial step follows the last one's slope ratio."""
    name = "cg"
    defaults = {**FullBatch.defaults, "restart": 0}

    def __init__(self, params, lr=None, **hyper):
        super().__init__(params, lr, **hyper)
        self.prev = None  # (g, d, t)

    def state_arrays(self):
        out = super().state_arrays()
        if self.prev is not None:
            out["cg::g"], out["cg::d"], out["cg::t"] = self.prev[0], self.prev[1], np.array(self.prev[2])
        return out

    def load_state_arrays(self, arrays, source="checkpoint"):
        super().load_state_arrays(arrays, source)
        if "cg::g" in arrays:
            self.prev = (arrays["cg::g"].copy(), arrays["cg::d"].copy(), float(arrays["cg::t"]))

    def iterate(self, closure):
        self.t += 1
        theta, f, g = self.current(closure)
        restart = self.hyper["restart"] or theta.size
        d, t0 = -g, self.lr * min(1.0, 1.0 / max(np.abs(g).sum(), 1e-12))
        if self.prev is not None and self.t % restart:
            g0, d0, t_old = self.prev
            beta = max(0.0, float(g @ (g - g0)) / max(float(g0 @ g0), 1e-300))
            d = -g + beta * d0
            if g @ d >= 0:
                d = -g
            t0 = min(2 * t_old * float(g0 @ d0) / float(g @ d), 10 * self.lr) if t_old else t0
        t, _, f2, _ = self.line_search(closure, theta, f, g, d, max(t0, 1e-12))
        self.prev = (g, d, t)
        return f2


class LevenbergMarquardt(FullBatch):
    """Levenberg-Marquardt for least squares: solve (J'J + lambda*D) delta = -J'r with Marquardt's
    scaling D = diag(J'J); lambda shrinks 10x after a step that lowers the loss and grows 10x after
    one that does not. damping=0 is Gauss-Newton. Needs `jacobian`: () -> (residuals, J)."""
    name = "lm"
    defaults = {"damping": 1e-3, "max_tries": 12}

    def __init__(self, params, lr=None, jacobian=None, **hyper):
        super().__init__(params, lr, **hyper)
        if jacobian is None:
            raise NetcError("lm needs the residuals' Jacobian",
                            "use it through netc train (loss=mse), or pass jacobian=model.jacobian(x, y)")
        self.jacobian, self.lam = jacobian, self.hyper["damping"]

    def state_arrays(self):
        return {**super().state_arrays(), "lm::lambda": np.array(self.lam)}

    def load_state_arrays(self, arrays, source="checkpoint"):
        super().load_state_arrays(arrays, source)
        if "lm::lambda" in arrays:
            self.lam = float(arrays["lm::lambda"])

    def iterate(self, closure):
        self.t += 1
        theta = self.flat()
        r, jac = self.jacobian()
        f = float(r @ r)
        a = jac.T @ jac
        b = -(jac.T @ r)
        scale = np.maximum(np.diag(a), 1e-12)
        for _ in range(self.hyper["max_tries"]):
            try:
                delta = np.linalg.solve(a + self.lam * np.diag(scale), b)
            except np.linalg.LinAlgError:
                delta = np.linalg.lstsq(a + self.lam * np.diag(scale), b, rcond=None)[0]
            self.assign(theta + delta)
            r2, _ = self.jacobian(residuals_only=True)
            if r2 @ r2 < f:
                self.lam = max(self.lam / 10, 1e-12) if self.lam else 0.0
                return closure()[0]
            self.lam = max(self.lam * 10, 1e-8)
        self.assign(theta)
        return closure()[0]


class Newton(FullBatch):
    """Regularised Newton: solve (H + alpha*I) delta = -g with the Hessian from central differences
    of the gradients, then a backtracking line search from the full step. Refuses networks whose
    Hessian would exceed `max_params`^2 entries."""
    name = "newton"
    defaults = {**FullBatch.defaults, "alpha": 1e-4, "max_params": 3000, "fd_step": 1e-5}

    def hessian(self, closure, theta):
        n, h = theta.size, self.hyper["fd_step"]
        hess = np.empty((n, n))
        for i in range(n):
            e = theta.copy()
            e[i] += h
            gp = self.evaluate(closure, e)[1]
            e[i] -= 2 * h
            gm = self.evaluate(closure, e)[1]
            hess[:, i] = (gp - gm) / (2 * h)
        self.assign(theta)
        return (hess + hess.T) / 2

    def iterate(self, closure):
        self.t += 1
        n = sum(p.size for p in self.params.values())
        if n > self.hyper["max_params"]:
            raise NumericsError(
                f"newton needs the {n:,} x {n:,} Hessian: {n * n * 8 / 2**20:,.1f} MiB in float64 "
                f"and {2 * n:,} gradient evaluations per step; this network has more than "
                f"max_params={self.hyper['max_params']:,} parameters",
                "use lbfgs (it approximates the Hessian from a few gradients), or a smaller network")
        theta, f, g = self.current(closure)
        hess = self.hessian(closure, theta)
        d = np.linalg.solve(hess + self.hyper["alpha"] * np.eye(n), -g)
        if g @ d >= 0:
            d = -g
        return self.line_search(closure, theta, f, g, d, self.lr)[2]
