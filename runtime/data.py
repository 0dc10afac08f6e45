"""Data for training: built-in digits, MNIST/Fashion-MNIST IDX folders, .npz, CSV, synthetic,
the adding problem; deterministic splits, shuffled batches, K folds, augmentation and
normalization.

    data=digits                 the built-in UCI 8x8 digits (1,797 images, 10 classes)
    data=mnist:DIR              IDX files (train-images-idx3-ubyte[.gz] ...) in DIR; fashion:DIR too
    data="file.npz"             arrays x and y (optionally x_test and y_test)
    data="file.csv"             numeric CSV with a header; the label column is `label`
    data="file.csv#target"      ... or the column named after '#'
    data=synthetic              random inputs labelled by a random linear teacher (benchmarks)
    data=shapes                 built-in segmentation data: 32x32x3 images of circles, squares and
                                triangles with their label maps (data.shapes)
    data="adding:T"             the adding problem, sequences of T steps of 2 (data.adding)

With a sequence input (`input seq TxD`), images are read row by row, a row per step: digits are
8 steps of 8 features, MNIST 28 steps of 28; a .npz's x is N x T x D, its y N (a class or target
per sequence), N x T (a class per step, for a per-step output) or N x T x K (per-step targets).
"""
from __future__ import annotations

import csv
import gzip
import math
import os
import zlib
from dataclasses import dataclass

import numpy as np

from netc.compiler.shapes import describe
from netc.dsl.errors import DataError

from . import files

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Dataset:
    x: np.ndarray            # float32 (N, ...) in the spec's input shape
    y: np.ndarray            # int64 labels (N,) or float targets (N, K)
    name: str
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def load(source: str, input_shape: tuple, outputs: int, classify: bool, seed: int = 0,
         size: int = 1024, label_shape: tuple = ()) -> Dataset:
    """Read a data source and fit it to the spec's input; check labels against the output
    (`outputs`: its number of classes, or of values; `label_shape`: a sample's labels, (H, W)
    for a per-pixel output, (T,) for a per-step one). `size`: the samples that synthetic,
    shapes and adding draw."""
    if source == "shapes":
        ds = shapes(size, seed)
    elif source == "digits":
        with np.load(os.path.join(HERE, "data", "digits.npz"), allow_pickle=False) as f:
            ds = Dataset(f["x"].astype(np.float32) / 16.0, f["y"].astype(np.int64), "digits")
    elif source == "synthetic":
        ds = synthetic(input_shape, outputs, classify, size, seed)
    elif source in ("mnist", "fashion"):
        raise DataError(f"data={source} needs the folder that holds its four IDX files: "
                        f"data={source}:DIR", f"{source} is not built in (netc downloads nothing); "
                        "data=digits is")
    elif source.split(":", 1)[0] in ("mnist", "fashion"):
        ds = idx_folder(source.split(":", 1)[1], source.split(":", 1)[0])
    elif source.split(":", 1)[0] == "adding":
        t = adding_steps(source, input_shape)
        if classify or outputs != 1:
            raise DataError(f"data={source} is a regression with one target per sequence (the "
                            "sum of two values); this network "
                            + ("is a classifier" if classify else f"has {outputs} outputs"),
                            "end the network with `OUT 1` (no activation: loss mse)")
        ds = adding(t, size, seed)
    else:
        path, _, column = source.partition("#")
        if not os.path.exists(path):
            raise DataError(f"data: no such file or folder: {path}",
                            "data=digits uses the built-in digits; mnist:DIR reads IDX files")
        if path.endswith(".npz"):
            ds = npz(path)
        elif path.endswith(".csv"):
            ds = csv_file(path, column or "label")
        else:
            raise DataError(f"data: cannot read {path!r}", "use a .npz (x, y), a .csv, mnist:DIR, "
                            "fashion:DIR, digits, synthetic or adding:T")
    ds.x = fit_shape(ds.x, input_shape, "data x")
    if ds.x_test is not None:
        ds.x_test = fit_shape(ds.x_test, input_shape, "data x_test")
    for x, y, what in ((ds.x, ds.y, "y"), (ds.x_test, ds.y_test, "y_test")):
        if x is not None:
            check(x, y, outputs, classify, what, label_shape)
    return ds


def fit_shape(x, input_shape, name):
    """Accept (N, H, W) for one-channel images, flattened vectors for an `input N` spec, and,
    for an `input seq TxD` spec, N x T x D or one-channel images (N, 1, T, D) read row by row:
    a row of D pixels per step."""
    want = tuple(input_shape)
    if x.shape[1:] == want:
        return np.ascontiguousarray(x, np.float32)
    if len(want) == 3 and want[0] == 1 and x.shape[1:] == want[1:]:
        return np.ascontiguousarray(x[:, None], np.float32)
    if len(want) == 1 and int(np.prod(x.shape[1:])) == want[0]:
        return np.ascontiguousarray(x.reshape(len(x), -1), np.float32)
    if len(want) == 3 and x.ndim == 4 and x.shape[1:] == (want[1], want[2], want[0]):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32)
    if len(want) == 2 and x.ndim == 4 and x.shape[1:] == (1,) + want:
        return np.ascontiguousarray(x[:, 0], np.float32)
    if len(want) == 2:
        raise DataError(f"{name}: samples of shape {tuple(x.shape[1:])} do not fit the spec's "
                        f"input seq {want[0]}x{want[1]} ({want[0]} steps of {want[1]} features)",
                        _sequence_hint(x.shape[1:]))
    shown = "x".join(map(str, (want[1], want[2], want[0]))) if len(want) == 3 else str(want[0])
    raise DataError(f"{name}: samples of shape {tuple(x.shape[1:])} do not fit the spec's input "
                    f"{shown}", "change the spec's `input` line to the data's size")


def _sequence_hint(sample):
    """How a sample's shape reads as a sequence: T x D as it is, one-channel images of H x W
    row by row (H steps of W), a vector not at all."""
    if len(sample) == 3 and sample[0] == 1:
        sample = sample[1:]
    if len(sample) == 2:
        t, d = sample
        return (f"these samples are {t} steps of {d} (images are read row by row, a row per "
                f"step): write the spec's input as `input seq {t}x{d}`")
    if len(sample) == 1:
        return (f"a sequence input takes N x T x D arrays; x holds vectors of {sample[0]}: "
                f"reshape it to (N, T, D) with T*D = {sample[0]}, or write `input {sample[0]}`")
    return ("a sequence input takes N x T x D arrays (T steps of D features), or one-channel "
            "images read row by row")


def check(x, y, outputs, classify, what, label_shape=()):
    """`label_shape`: a label's shape, () for a class per sample, (H, W) for a label map."""
    if len(x) != len(y):
        raise DataError(f"data: {len(x)} samples but {len(y)} labels ({what})")
    if not np.isfinite(x).all():
        raise DataError("data: the inputs contain NaN or Inf", "clean or impute the data first")
    if classify:
        if y.shape[1:] != tuple(label_shape):
            raise DataError(f"data: the network's output wants {_labels_wanted(label_shape)}; "
                            f"{what} has shape {y.shape}", _labels_hint(label_shape, y.shape))
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            raise DataError(f"data: classification needs integer labels; {what} has shape "
                            f"{y.shape} and dtype {y.dtype}")
        if len(y) and (y.min() < 0 or y.max() >= outputs):
            raise DataError(f"data: labels run from {y.min()} to {y.max()} but the network has "
                            f"{outputs} outputs", f"make the OUT layer `OUT {int(y.max()) + 1} ...`")


def _labels_wanted(label_shape):
    if not label_shape:
        return "a class per sample"
    if len(label_shape) == 1:
        return f"a class per step, N x {label_shape[0]} labels"
    return "a label map of " + "x".join(map(str, label_shape)) + " per sample"


def _labels_hint(label_shape, received):
    if len(label_shape) == 1:
        return (f"a per-step output (OUT K after a sequence) takes N x {label_shape[0]} labels; "
                "for one label per sequence, give the recurrent layer before OUT return=last "
                "(its default), or FLATTEN before OUT")
    if not label_shape and len(received) == 2:
        return ("a class per step needs a per-step output: a recurrent layer with return=seq "
                "before OUT")
    return ("per-pixel outputs (OUT per=pixel) take N x H x W label maps of the output's size"
            if label_shape else "give one class index per sample")


SHAPE_CLASSES = ("background", "circle", "square", "triangle")


def shapes(n, seed, size=32):
    """Segmentation data, drawn from the seed: n images of size x size x 3, each one to three
    circles, squares and triangles (of random size, place and colour, later ones in front) on a
    noisy background of a random colour, with their label maps (SHAPE_CLASSES' indices)."""
    rng = np.random.default_rng([seed, 7])
    yy, xx = np.mgrid[0:size, 0:size]
    x = np.empty((n, 3, size, size), np.float32)
    y = np.zeros((n, size, size), np.int64)
    for i in range(n):
        x[i] = rng.random(3)[:, None, None] * 0.6 + 0.3 * rng.standard_normal((3, size, size))
        for _ in range(rng.integers(1, 4)):
            cls = rng.integers(1, 4)
            r = rng.integers(size // 8, size // 4 + 1)
            cy, cx = rng.integers(r, size - r, 2)
            if cls == 1:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            elif cls == 2:
                mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
            else:  # pointing up: half as wide as it is tall at each row
                mask = (yy >= cy - r) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - cy + r) / 2)
            x[i][:, mask] = (rng.random(3) * 1.4 - 0.2)[:, None]
            y[i][mask] = cls
    return Dataset(x, y, "shapes")


def synthetic(input_shape, outputs, classify, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + tuple(input_shape)).astype(np.float32)
    teacher = rng.standard_normal((int(np.prod(input_shape)), outputs))
    scores = x.reshape(n, -1) @ teacher
    y = scores.argmax(axis=1) if classify else scores.astype(np.float32)
    return Dataset(x, y, "synthetic")


def adding_steps(source, input_shape):
    """T of data="adding:T", checked against the spec's input, which must be `input seq Tx2`."""
    text = source.split(":", 1)[1] if ":" in source else ""
    if not text.isdigit() or int(text) < 2:
        raise DataError(f"data={source}: the adding problem needs its number of steps, a whole "
                        f"number T >= 2: data=\"adding:T\"",
                        'e.g. data="adding:50" with `input seq 50x2`')
    t = int(text)
    if tuple(input_shape) != (t, 2):
        raise DataError(f"data={source} gives sequences of {t} steps of 2 features (a value and "
                        f"a marker); the spec's input is {describe(input_shape)}",
                        f"write the spec's input line as `input seq {t}x2`")
    return t


def adding(t, n, seed):
    """The adding problem (Hochreiter & Schmidhuber 1997), in the variant of Le, Jaitly and
    Hinton 2015 (the IRNN paper): n sequences of t steps of 2 features, a value uniform in
    [0, 1) and a marker, 0 or 1. Exactly two markers are 1, one at a uniform step of the first
    half (steps 0 .. t//2 - 1) and one at a uniform step of the second (t//2 .. t - 1); the
    target (n x 1) is the sum of the two marked values. Drawn from the seed.

    A regression for `input seq Tx2 - ... - OUT 1` with loss mse. The targets (a sum of two
    uniform values) have mean 1 and variance 1/6, so predicting the constant 1 scores an MSE of
    1/6 = 0.167: a network has learned something below it."""
    rng = np.random.default_rng([seed, 11])
    x = np.zeros((n, t, 2), np.float32)
    x[:, :, 0] = rng.random((n, t))
    rows = np.arange(n)
    first, second = rng.integers(0, t // 2, n), rng.integers(t // 2, t, n)
    x[rows, first, 1] = 1
    x[rows, second, 1] = 1
    y = (x[rows, first, 0] + x[rows, second, 0]).reshape(n, 1)
    return Dataset(x, y.astype(np.float32), f"adding:{t}")


def npz(path):
    arrays = files.read_npz(path, "data file")
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"data: {path} must hold arrays named x and y; it has "
                        f"{', '.join(arrays) or 'none'}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        has, lacks = ("x_test", "y_test") if "x_test" in arrays else ("y_test", "x_test")
        raise DataError(f"data: {path} has {has} but no {lacks}",
                        "a test set needs both its inputs (x_test) and its labels (y_test)")
    for name, a in arrays.items():
        if name in ("x", "y", "x_test", "y_test"):
            files.numeric(a, f"data: {path}: {name}")
            if a.ndim == 0:
                raise DataError(f"data: {path}: {name} is a single number; expected one row "
                                "per sample")

    def labels(y):
        return y.astype(np.int64) if y.dtype.kind in "biu" else y
    test = arrays.get("x_test")
    return Dataset(arrays["x"].astype(np.float32), labels(arrays["y"]), os.path.basename(path),
                   None if test is None else test.astype(np.float32),
                   None if test is None else labels(arrays["y_test"]))


def csv_file(path, column):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"data: cannot read {path}: {e}") from None
    if len(rows) < 2:
        raise DataError(f"data: {path} has no data rows", "the first row names the columns")
    header = [h.strip() for h in rows[0]]
    if column not in header:
        raise DataError(f"data: {path} has no column named {column!r}; its columns: "
                        f"{', '.join(header)}", f'name the label column: data="{path}#COLUMN"')
    for line, r in enumerate(rows[1:], 2):
        if r and len(r) != len(header):
            raise DataError(f"data: {path}, line {line}: {len(r)} values; the header names "
                            f"{len(header)} columns", "give every row a value for each column")
    try:
        table = np.array([[float(v) for v in r] for r in rows[1:] if r], dtype=np.float64)
    except ValueError as e:
        raise DataError(f"data: {path}: every value must be a number ({e})") from None
    if not len(table):
        raise DataError(f"data: {path} has no data rows", "the first row names the columns")
    k = header.index(column)
    y = table[:, k]
    x = np.delete(table, k, axis=1).astype(np.float32)
    return Dataset(x, y.astype(np.int64) if np.all(y == np.round(y)) else y.astype(np.float32),
                   os.path.basename(path))


def _idx(path, dims):
    """The array of an IDX file of unsigned bytes with `dims` dimensions (raw or gzipped); the
    sizes in its header are checked against the memory available before the values are read."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(4 + 4 * dims)
            if len(raw) < 4 or raw[:3] != b"\0\0\x08":
                raise DataError(f"data: {path} is not an IDX file of unsigned bytes")
            if raw[3] != dims:
                raise DataError(f"data: {path} declares {raw[3]} dimensions; expected {dims}",
                                "images have 3 dimensions (N, H, W), labels 1")
            if len(raw) < 4 + 4 * dims:
                raise DataError(f"data: {path}'s header is cut short: {dims} dimensions declared, "
                                f"{len(raw) - 4} of their {4 * dims} bytes of sizes present",
                                "the file is corrupted or truncated: download it again")
            shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
            size, free = math.prod(shape), files.available_memory()
            if free is not None and size > free:
                raise DataError(f"data: {path}'s header claims {'x'.join(map(str, shape))} "
                                f"bytes ({files.human_bytes(size)}); this machine has "
                                f"{files.human_bytes(free)} available",
                                "the file is corrupted, or too large for this machine")
            body = _read_at_most(f, size + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"data: cannot read {path}: {e}",
                        "the file is corrupted or truncated: download it again") from None
    if len(body) != size:
        raise DataError(f"data: {path} holds {len(body)} bytes of values; its header says "
                        f"{'x'.join(map(str, shape))} = {size}",
                        "the file is corrupted or truncated: download it again")
    return np.frombuffer(body, np.uint8).reshape(shape)


def _read_at_most(f, n, chunk=1 << 24):
    """Up to n bytes of f, read in chunks (a header's size is not trusted for an allocation)."""
    parts = []
    while n > 0:
        part = f.read(min(n, chunk))
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def idx_folder(folder, name):
    if not os.path.isdir(folder):
        raise DataError(f"data: no such folder: {folder}",
                        f"put the four {name} IDX files (train-images-idx3-ubyte.gz ...) in a folder "
                        f"and give data={name}:FOLDER")

    def find(stem):
        for suffix in ("", ".gz"):
            for sep in ("-", "."):
                p = os.path.join(folder, stem.replace("-", sep, 2) + suffix)
                if os.path.exists(p):
                    return p
        raise DataError(f"data: {folder} lacks {stem} (or {stem}.gz)",
                        f"put the four {name} IDX files in {folder}")
    x = _idx(find("train-images-idx3-ubyte"), 3).astype(np.float32) / 255
    y = _idx(find("train-labels-idx1-ubyte"), 1).astype(np.int64)
    xt = _idx(find("t10k-images-idx3-ubyte"), 3).astype(np.float32) / 255
    yt = _idx(find("t10k-labels-idx1-ubyte"), 1).astype(np.int64)
    return Dataset(x, y, name, xt, yt)


# ---- splits, batches, augmentation ------------------------------------------------------------
def split(ds: Dataset, val_split: float, test_split: float, seed: int):
    """(train, val, test) index arrays, shuffled once from the seed; a given test set is kept."""
    n = len(ds.x)
    order = np.random.default_rng(seed).permutation(n)
    n_test = 0 if ds.x_test is not None else int(round(n * test_split))
    n_val = int(round(n * val_split))
    if n - n_test - n_val < 1:
        raise DataError(f"data: {n} samples leave none to train on with val_split={val_split} "
                        f"and test_split={test_split}")
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def folds(indices, k: int, seed: int):
    """K (train, validation) pairs over the given indices."""
    if k < 2 or k > len(indices):
        raise DataError(f"--folds must be between 2 and the number of samples ({len(indices)})")
    parts = np.array_split(np.random.default_rng(seed).permutation(indices), k)
    return [(np.concatenate(parts[:i] + parts[i + 1:]), parts[i]) for i in range(k)]


def batches(indices, batch: int, rng):
    order = rng.permutation(indices)
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def augment(x, ops, rng, y=None):
    """Random crop with padding (`crop`: pad by 1/8 of the size, then crop back) and horizontal
    flip (`flip`), per sample; only for images. Label maps (y of N x H x W) move with their
    images (padded with class 0); returns (x, y)."""
    if x.ndim != 4:
        return x, y
    maps = y is not None and y.ndim == 3
    if "flip" in ops:
        x = x.copy()
        flip = rng.random(len(x)) < 0.5
        x[flip] = x[flip, :, :, ::-1]
        if maps:
            y = y.copy()
            y[flip] = y[flip, :, ::-1]
    if "crop" in ops:
        n, c, h, w = x.shape
        p = max(1, h // 8)
        padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        dy, dx = rng.integers(0, 2 * p + 1, n), rng.integers(0, 2 * p + 1, n)
        x = np.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
        if maps:
            padded = np.pad(y, ((0, 0), (p, p), (p, p)))
            y = np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    return x, y


def normalizer(x):
    """Per-channel (images) or per-feature (vectors; for sequences, over every step, so that
    each step is normalized alike) mean and std of the training set."""
    axes = {4: (0, 2, 3), 3: (0, 1)}.get(x.ndim, (0,))
    mean = x.mean(axis=axes, keepdims=True)[0]
    std = x.std(axis=axes, keepdims=True)[0]
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1).astype(np.float32)
