"""Checks on what users hand to a Model: arrays and labels. Each failure names the argument, what
was expected and what was received; nothing reaches a kernel unchecked."""
from __future__ import annotations

import numpy as np

from netc.dsl.errors import DataError

from . import files, losses


def _shape(s):
    return "(" + ", ".join(map(str, s)) + ")"


def _numeric(a, name):
    try:
        arr = np.asarray(a)
    except Exception as e:  # ragged lists and the like
        raise DataError(f"{name}: cannot be read as an array ({e})") from None
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name}: expected a numeric array; received dtype {arr.dtype}",
                        "convert it with np.asarray(..., dtype=np.float32)")
    return arr


def _finite(arr, name):
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise DataError(f"{name}: contains NaN or Inf (first at index {tuple(int(i) for i in bad)})",
                        "clean or impute the data before training")


def all_finite(a) -> bool:
    """Whether a numeric array holds no NaN or Inf (anything else: True). For floats its min and
    max (NaN wins both, an Inf is one of them), with no temporary of the array's size (VGG's
    first FC: 103 MB of booleans from isfinite)."""
    if a.dtype.kind == "f":
        return not a.size or bool(np.isfinite(a.min()) and np.isfinite(a.max()))
    if a.dtype.kind == "c":
        return bool(np.isfinite(a).all())
    return True


def finite_values(a, name):
    """A saved array (weights, optimizer state, normalization): real numbers, none NaN or Inf."""
    files.numeric(a, name)
    if not all_finite(a):
        bad = int(np.count_nonzero(~np.isfinite(a)))
        raise DataError(f"{name} holds NaN or Inf ({bad} of {a.size} values)",
                        "use an earlier checkpoint (if the run that wrote it diverged, train "
                        "again with a lower lr or clip_norm)")
    return a


def normalization(mean, std, input_shape, name):
    """A saved input normalization as float32 arrays: finite, std > 0, shaped to broadcast over
    one sample of the input (a value, or one per channel or per feature)."""
    mean, std = (np.asarray(v) for v in (mean, std))
    for what, v in (("mean", mean), ("std", std)):
        finite_values(v, f"{name}'s normalization {what}")
        try:
            ok = np.broadcast_shapes(v.shape, tuple(input_shape)) == tuple(input_shape)
        except ValueError:
            ok = False
        if not ok:
            raise DataError(f"{name}'s normalization {what} has shape {_shape(v.shape)}, which "
                            f"does not fit the input {_shape(input_shape)}",
                            "was it saved for another network?")
    if (std <= 0).any():
        raise DataError(f"{name}'s normalization std holds {std.min():g}: the inputs would be "
                        "divided by it", "the std saved with the weights must be positive; "
                        "was the file edited?")
    return mean.astype(np.float32), std.astype(np.float32)


def inputs(x, input_shape, dtype, name="x"):
    """x must be (N,) + the spec's input shape, NCHW for images."""
    arr = _numeric(x, name)
    want = tuple(input_shape)
    if arr.ndim == len(want):
        arr = arr[None]  # a single sample
    if arr.shape[1:] != want or arr.shape[0] < 1:
        hint = "images are NCHW: (batch, channels, height, width)"
        if len(want) == 3 and arr.ndim == 4 and arr.shape[1:] == (want[1], want[2], want[0]):
            hint = "this looks like NHWC: use x.transpose(0, 3, 1, 2)"
        elif len(want) == 1 and arr.ndim > 2 and int(np.prod(arr.shape[1:])) == want[0]:
            hint = f"flatten it: x.reshape(len(x), {want[0]})"
        raise DataError(f"{name}: expected shape (N, {', '.join(map(str, want))}) for the spec's "
                        f"input; received {_shape(arr.shape)}", hint)
    _finite(arr, name)
    return np.ascontiguousarray(arr, dtype=dtype)


def labels(y, loss, out_shape, n, dtype, name="y"):
    """Targets for a loss: class indices for cross-entropy/multiclass hinge (one per sample, a
    label map N x H x W for a per-pixel output, N x T for a per-step one), arrays otherwise."""
    arr = _numeric(y, name)
    k = losses.classes(out_shape)
    per = (n,) + losses.label_shape(out_shape)
    if arr.shape[:1] != (n,):
        raise DataError(f"{name}: expected {n} targets, one per sample of x; received shape "
                        f"{_shape(arr.shape)}")
    _finite(arr, name)
    if loss in losses.CLASS_LABELS and arr.shape == per:
        # class indices: one per sample, per pixel of a per-pixel output, per step
        if arr.dtype.kind == "f":
            if not np.all(arr == np.round(arr)):
                raise DataError(f"{name}: {loss} needs integer class labels; received fractions",
                                "pass class indices 0..K-1 (or one-hot rows for cross_entropy)")
        if arr.min() < 0 or arr.max() >= k:
            raise DataError(f"{name}: labels must lie in 0..{k - 1} for an output of {k} classes; "
                            f"received values from {arr.min()} to {arr.max()}",
                            "check the OUT layer's size and the data's labels")
        return arr.astype(np.int64)
    if loss == "multiclass_hinge":
        raise DataError(f"{name}: multiclass_hinge needs class indices of shape "
                        f"{_shape(per)}; received {_shape(arr.shape)}", _per_step_hint(out_shape))
    want = (n,) + tuple(out_shape)
    if arr.shape != want:
        if arr.shape == (n,) and out_shape == (1,):
            arr = arr.reshape(n, 1)
        elif len(out_shape) == 2:
            what = f"{_shape(per)} class labels" if loss in losses.CLASS_LABELS else \
                f"targets of shape {_shape(want)}"
            raise DataError(f"{name}: the network's output is per step ({out_shape[0]} steps of "
                            f"{k}) and takes {what} for the {loss} loss; received "
                            f"{_shape(arr.shape)}", _per_step_hint(out_shape))
        else:
            per_pixel = len(out_shape) == 3
            raise DataError(f"{name}: expected shape {_shape(want)} for the {loss} loss; received "
                            f"{_shape(arr.shape)}",
                            "a per-pixel output takes label maps of shape "
                            f"{_shape(per)} with cross_entropy"
                            if per_pixel else "class indices need cross_entropy; other losses "
                            "need a target per output")
    if loss == "bce" and (arr.min() < 0 or arr.max() > 1):
        raise DataError(f"{name}: bce targets must lie in [0, 1]; received {arr.min()}..{arr.max()}")
    if loss == "hinge" and not np.all(np.abs(arr) == 1):
        raise DataError(f"{name}: hinge targets must be -1 or +1", "map labels {0, 1} to {-1, +1}")
    classes_axis = -1 if len(out_shape) == 2 else 1  # a per-step output's classes are last
    if loss == "kl" and (arr.min() < 0 or not np.allclose(arr.sum(axis=classes_axis), 1,
                                                          atol=1e-4)):
        raise DataError(f"{name}: kl targets must be probability rows (non-negative, summing to 1)")
    return np.ascontiguousarray(arr, dtype=dtype)


def _per_step_hint(out_shape):
    """How to label a per-step output (T x K), or to get one label per sequence instead."""
    if len(out_shape) != 2:
        return None
    t, k = out_shape
    return (f"a per-step output takes N x {t} labels, a class in 0..{k - 1} per step (N x {t} x "
            f"{k} targets for a regression); for one label per sequence, give the recurrent "
            f"layer before OUT return=last (its default), or FLATTEN before OUT")
