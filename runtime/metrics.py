"""Scores of a classifier's predictions beyond the loss: for per-pixel outputs, the confusion
matrix of the pixels and the mean intersection over union (mIoU) drawn from it; the confusion
matrix of a per-step output's steps too."""
from __future__ import annotations

import numpy as np


def confusion(out, y, classes) -> np.ndarray:
    """counts[true class, predicted class] over every prediction of out (N, K[, H, W]), against
    the labels y (N[, H, W]), or of a per-step out (N, T, K), the classes last, against y
    (N, T)."""
    out = np.asarray(out)
    pred = out.argmax(axis=2 if out.ndim == 3 else 1)
    return np.bincount(np.asarray(y).reshape(-1) * classes + pred.reshape(-1),
                       minlength=classes * classes).reshape(classes, classes)


def mean_iou(counts) -> float:
    """The mean over classes of TP / (TP + FP + FN), over the classes that occur (in the labels
    or the predictions)."""
    tp = np.diag(counts).astype(np.float64)
    union = counts.sum(axis=0) + counts.sum(axis=1) - tp
    seen = union > 0
    return float((tp[seen] / union[seen]).mean()) if seen.any() else float("nan")
