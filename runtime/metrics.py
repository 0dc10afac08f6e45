"""Scores of a classifier's predictions beyond the loss (netc eval prints them): the confusion
matrix, per-class precision, recall and F1, top-k accuracy; for per-pixel outputs, the confusion
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


def per_class(counts) -> dict:
    """Per class, from counts[true, predicted]: precision TP / (TP + FP), recall TP / (TP + FN),
    their harmonic mean F1 and the support (how many labels of the class); 0 where a ratio has
    nothing to divide by, as scikit-learn's zero_division=0."""
    counts = np.asarray(counts, np.float64)
    tp = np.diag(counts)
    predicted, support = counts.sum(axis=0), counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        total = precision + recall
        f1 = np.where(total > 0, 2 * precision * recall / total, 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def top_k(rows, labels, k: int) -> float:
    """The fraction of rows (N, K) whose label is among their k highest values."""
    rows, labels = np.asarray(rows), np.asarray(labels).reshape(-1)
    k = min(k, rows.shape[1])
    best = np.argpartition(-rows, k - 1, axis=1)[:, :k]
    return float((best == labels[:, None]).any(axis=1).mean())


MATRIX_CLASSES = 20  # more classes than this: the per-class table, without the matrix


def report(counts, matrix: bool | None = None) -> str:
    """The confusion matrix (rows: true class, columns: predicted; printed up to MATRIX_CLASSES
    classes unless `matrix` says), then per class precision, recall, F1 and support, and their
    macro and support-weighted means."""
    counts = np.asarray(counts)
    k = len(counts)
    lines = []
    if matrix or (matrix is None and k <= MATRIX_CLASSES):
        w = max(len(str(int(counts.max(initial=0)))), len(str(k - 1)), 3)
        lines.append("confusion matrix (rows: true class, columns: predicted)")
        lines.append(" " * 6 + " ".join(f"{c:>{w}}" for c in range(k)))
        lines += [f"{t:>5} " + " ".join(f"{v:>{w}}" for v in row) for t, row in enumerate(counts)]
        lines.append("")
    s = per_class(counts)
    lines.append(f"{'class':>8} {'precision':>9} {'recall':>7} {'F1':>7} {'support':>8}")
    for c in range(k):
        lines.append(f"{c:>8} {s['precision'][c]:9.3f} {s['recall'][c]:7.3f} {s['f1'][c]:7.3f} "
                     f"{s['support'][c]:>8}")
    n = s["support"].sum()
    weights = s["support"] / n if n else np.zeros(k)
    for name, mean in (("macro", np.mean), ("weighted", None)):
        v = [float(mean(s[m])) if mean else float((s[m] * weights).sum())
             for m in ("precision", "recall", "f1")]
        lines.append(f"{name:>8} {v[0]:9.3f} {v[1]:7.3f} {v[2]:7.3f} {n:>8}")
    return "\n".join(lines)


def confusion_figure(counts, title: str):
    """The confusion matrix as an image, each row shaded by its share of the class's labels
    (the counts written in the cells up to MATRIX_CLASSES classes)."""
    from matplotlib.ticker import MaxNLocator

    from .runs import new_figure
    counts = np.asarray(counts)
    k = len(counts)
    support = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    size = min(4 + 0.35 * k, 16)
    fig = new_figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="share of the true class")
    if k <= MATRIX_CLASSES:
        for t in range(k):
            for p in range(k):
                ax.text(p, t, str(counts[t, p]), ha="center", va="center", fontsize=8,
                        color="white" if share[t, p] > 0.5 else "black")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.tight_layout()
    return fig
