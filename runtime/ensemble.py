"""Ensembles: several trained networks whose outputs are averaged (the class probabilities, for a
softmax or sigmoid output). Snapshot ensembles (`snapshots=true`: the weights at the end of each
cosine_restarts cycle) and bagging (`netc train --bagging K`: members trained on bootstrap
resamples of the training split) are evaluated here, and so is `netc eval --weights A B ...`.

    members = ensemble.load(["run/snapshot_1.npz", "run/snapshot_2.npz"])
    ensemble.predict(members, x)        # the members' mean output for raw inputs x
    ensemble.evaluate(members, x, y)    # each member's and the ensemble's loss and accuracy
"""
from __future__ import annotations

import numpy as np

from netc.compiler import Net
from netc.dsl.errors import DataError

from . import checks, losses, metrics
from .backends import registry as backends
from .model import Model, read_checkpoint

CHUNK = 512  # samples per forward pass


class Member:
    """A trained network in an ensemble: its Model (with the input normalization it was trained
    with, `Model.normalization`) and a name for reports."""

    def __init__(self, model: Model, name=""):
        self.model, self.name = model, name

    def forward(self, x):
        return self.model.predict(x)


def load(paths, spec=None, backend="cpu") -> list[Member]:
    """Members from netc checkpoints, each with the normalization saved in it. With `spec` (a
    Net, a spec's text or path) each must have been saved from that network; without, each
    brings its own, and all must agree on the input, the output and its activation."""
    text = spec.source.text if isinstance(spec, Net) else spec
    members = [Member(Model.from_arrays(read_checkpoint(path), path, text, backend, adopt=True),
                      path) for path in paths]

    def io(m):
        return (f"input {m.model.net.input_shape}, output {m.model.net.output_shape} "
                f"{m.model.output_act}")
    for m in members[1:]:
        if io(m) != io(members[0]):
            raise DataError(f"{m.name} does not fit in an ensemble with {members[0].name}: "
                            f"expected {io(members[0])}; received {io(m)}",
                            "the members of an ensemble are networks trained for the same task")
    return members


def _members(members) -> list[Member]:
    members = [m if isinstance(m, Member) else Member(m) for m in members]
    if not members:
        raise DataError("an ensemble needs at least one member")
    return members


def outputs(member: Member, x, y=None, loss=None):
    """(outputs, mean loss or None) of one member for checked raw inputs x, CHUNK samples at a
    time; the loss (against y) is Model.evaluate's."""
    outs, total = [], 0.0
    for lo in range(0, len(x), CHUNK):
        part = x[lo:lo + CHUNK]
        if y is None:
            outs.append(member.forward(part))
        else:
            value, out = member.model.evaluate(member.model.normalize(part),
                                               y[lo:lo + CHUNK], loss)
            total += value * len(part)
            outs.append(out)
    return np.concatenate(outs), (None if y is None else total / len(x))


def predict(members, x) -> np.ndarray:
    """The members' mean output for raw inputs x (each member normalizes x as it was trained)."""
    members = _members(members)
    x = checks.inputs(x, members[0].model.net.input_shape, np.float32)
    total = sum(outputs(m, x)[0].astype(np.float64) for m in members)
    return (total / len(members)).astype(members[0].model.dtype)


def evaluate(members, x, y, loss=None) -> dict:
    """Each member's and the ensemble's scores on raw inputs x and targets y:
    {"members": [scores, ...], "ensemble": scores}, with scores {"loss", "acc"} (acc is None
    where the loss is not a classification's; a per-pixel output adds "miou"). The ensemble's
    loss is the loss of the mean output."""
    members = _members(members)
    model = members[0].model
    loss = model.loss_name(loss)
    x = checks.inputs(x, model.net.input_shape, np.float32)
    y = checks.labels(y, loss, model.net.output_shape, len(x), model.dtype)
    scored, total = [], 0.0
    for m in members:
        out, value = outputs(m, x, y, loss)
        scored.append({"loss": value, **_scores(out, y, loss)})
        total = total + out.astype(np.float64)
    mean = (total / len(members)).astype(model.dtype)
    delta = model.net.train.get("huber_delta", 1.0)
    value = loss_of_outputs(mean, y, loss, model.output_act, delta)
    return {"members": scored, "ensemble": {"loss": value, **_scores(mean, y, loss)}}


def _scores(out, y, loss) -> dict:
    """The accuracy (pixel accuracy and mean IoU for a per-pixel output), as the trainer reports
    them; None where the targets are not classes."""
    labels = loss in losses.CLASS_LABELS and y.ndim == out.ndim - 1
    if not (labels or loss == "bce"):
        return {"acc": None}
    scores = {"acc": backends.load("cpu").accuracy(*losses.step_rows(out, y), loss == "bce")}
    if labels and out.ndim == 4:
        scores["miou"] = metrics.mean_iou(metrics.confusion(out, y, out.shape[1]))
    return scores


def loss_of_outputs(out, y, loss, output_act, delta=1.0) -> float:
    """The loss of outputs (after the output activation) as Model.evaluate computes it. Where the
    loss is fused with the activation it reads logits: log p for a softmax, log p - log(1 - p)
    for a sigmoid give back p (p clipped at the dtype's smallest normal number), so
    cross-entropy is -mean(log p[true class])."""
    fused = losses.FUSED.get(loss) == output_act
    if fused:
        tiny = np.finfo(out.dtype).tiny
        logits = np.log(np.maximum(out, tiny))
        if output_act == "sigmoid":
            logits -= np.log(np.maximum(1 - out, tiny))
        out = logits
    value, _ = losses.compute(loss, out, y, fused, backends.load("cpu"), delta)
    return float(value)


def bootstrap(indices, seed: int, member: int) -> np.ndarray:
    """A resample of `indices` with replacement, of the same size, drawn from (seed, member) (a
    stream apart from the batches' and augmentations' draws)."""
    rng = np.random.default_rng([seed, member, 0, 5])
    return rng.choice(np.asarray(indices), size=len(indices), replace=True)
