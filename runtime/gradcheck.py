"""Central finite differences in float64 against the analytic gradients."""
from __future__ import annotations

import numpy as np

from . import losses
from .model import Model


def gradcheck(spec, batch=2, eps=1e-6, seed=0, loss=None, layer=None, max_checks=30, train=True,
              backend="cpu"):
    """The relative error per parameter tensor and for the input, over a sample of `max_checks`
    coordinates each: max|g - n| / max(max|g|, max|n|), g analytic, n numeric. Where a tensor's
    gradient is essentially zero (max below 1e-6, e.g. a bias just before BN) the absolute error
    is reported instead. Dropout masks are fixed by reseeding before every evaluation. On a GPU
    backend, the gradients and the differences are computed there."""
    model = Model(spec, backend=backend, dtype="float64", seed=seed)
    host = model.device.to_host
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch,) + model.net.input_shape)
    y = random_targets(model, model.loss_name(loss), batch, rng)

    def evaluate():
        model.rng = np.random.default_rng(seed + 2)
        return model.loss_and_grads(x, y, loss, train=train, input_grad=True)

    _, grads, dx = evaluate()
    tensors = [(name, model.params[name], host(grads[name])) for name in model.params
               if layer is None or name.rsplit(".", 1)[0] == layer]
    if layer is None:
        tensors.append(("input", x, host(dx)))
    report = {}
    for name, arr, analytic in tensors:
        values = host(arr)  # on the CPU, arr itself
        flat = values.reshape(-1)
        idx = rng.choice(flat.size, size=min(max_checks, flat.size), replace=False)
        numeric = np.empty(len(idx))
        for k, i in enumerate(idx):
            old = flat[i]
            plus, minus = [], []
            for value, out in ((old + eps, plus), (old - eps, minus)):
                flat[i] = value
                if arr is not x:
                    model.device.copy_from_host(arr, values)
                out.append(evaluate()[0])
            flat[i] = old
            if arr is not x:
                model.device.copy_from_host(arr, values)
            numeric[k] = (plus[0] - minus[0]) / (2 * eps)
        a = analytic.reshape(-1)[idx]
        scale = max(np.abs(a).max(), np.abs(numeric).max())
        diff = np.abs(a - numeric).max()
        report[name] = float(diff / scale if scale > 1e-6 else diff)
    return report


def random_targets(model, loss, n, rng):
    """Random targets of the shape the loss takes for the model's output: class indices per
    sample, per pixel or per step; probability rows over the classes for kl."""
    out_shape = model.net.output_shape
    k = losses.classes(out_shape)
    shape = (n,) + out_shape
    if loss in ("cross_entropy", "multiclass_hinge"):  # a class per sample, pixel or step
        return rng.integers(0, k, (n,) + losses.label_shape(out_shape))
    if loss == "bce":
        return rng.integers(0, 2, shape).astype(float)
    if loss == "hinge":
        return rng.choice([-1.0, 1.0], shape)
    if loss == "kl":
        t = rng.random(shape) + 0.1
        return t / t.sum(axis=-1 if len(out_shape) == 2 else 1, keepdims=True)
    return rng.standard_normal(shape)
