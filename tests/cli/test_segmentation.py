"""Per-pixel classification end to end: the shapes data, label maps through augmentation, pixel
accuracy and mean IoU in train / eval / result.json, and predict's label-map PNGs."""
import csv
import json

import numpy as np
import pytest

from netc.cli import main
from netc.runtime import data, metrics

SPEC = """network TinyFCN
input 32x32x3
CONV 3x3 8 pad=same act=relu - POOL - CONV 3x3 8 pad=same act=relu -
DECONV 2x2/2 8 act=relu - OUT 4 softmax per=pixel
train data=shapes optimizer=adam lr=0.01 batch=32 epochs=2 augment=[flip, crop]
"""


def test_shapes_data_is_reproducible_and_labels_the_drawn_shapes():
    a, b = data.shapes(6, seed=3), data.shapes(6, seed=3)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, data.shapes(6, seed=4).x)
    assert a.x.shape == (6, 3, 32, 32) and a.x.dtype == np.float32
    assert a.y.shape == (6, 32, 32) and set(np.unique(a.y)) <= {0, 1, 2, 3}
    for x, y in zip(a.x, a.y):  # each labelled region is drawn in one colour
        for c in np.unique(y)[1:]:
            region = x[:, y == c]
            # a shape in front may share the class: its pixels are one of at most 3 colours
            assert len(np.unique(region, axis=1).T) <= 3
        assert (y > 0).any() and (y == 0).mean() > 0.2


def test_label_maps_move_with_their_images():
    ds = data.shapes(8, seed=0)
    x, y = data.augment(ds.x, ("flip", "crop"), np.random.default_rng(1), ds.y)
    assert y.shape == ds.y.shape and not np.array_equal(y, ds.y)
    for i in range(8):  # the colour at every pixel of class c is the one drawn for c
        for c in np.unique(y[i])[1:]:
            assert set(map(tuple, x[i][:, y[i] == c].T)) <= set(map(tuple, ds.x[i][:, ds.y[i] == c].T))


def test_confusion_and_mean_iou_against_a_hand_count():
    out = np.zeros((1, 3, 2, 2))
    pred = np.array([[0, 1], [1, 2]])
    for k in range(3):
        out[0, k] = pred == k
    y = np.array([[[0, 1], [2, 2]]])
    counts = metrics.confusion(out, y, 3)
    assert counts.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    # IoU: class 0 1/1, class 1 1/2, class 2 1/2
    assert metrics.mean_iou(counts) == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert metrics.mean_iou(np.zeros((2, 2), int)) != metrics.mean_iou(np.zeros((2, 2), int))  # NaN


def test_label_maps_must_fit_the_output(tmp_path):
    from netc.dsl.errors import DataError
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3, 32, 32), np.float32), y=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="label map of 32x32 per sample"):
        data.load(str(tmp_path / "d.npz"), (3, 32, 32), 4, True, label_shape=(32, 32))


def test_train_eval_predict_a_segmenter(capsys, tmp_path):
    spec = tmp_path / "fcn.net"
    spec.write_text(SPEC)
    out = str(tmp_path / "run")
    assert main(["train", str(spec), "--out", out, "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "pixel acc" in text and "mIoU" in text and "mean IoU" in text
    result = json.load(open(f"{out}/result.json"))
    assert 0 < result["test_miou"] <= result["test_acc"] <= 1
    rows = list(csv.DictReader(open(f"{out}/metrics.csv")))
    assert len(rows) == 2 and 0 < float(rows[-1]["val_miou"]) < 1

    assert main(["eval", str(spec), "--weights", f"{out}/best.npz"]) == 0
    line = capsys.readouterr().out
    assert "pixel accuracy" in line and "mean IoU" in line
    miou = float(line.split("mean IoU ")[1].split("%")[0])
    assert miou == pytest.approx(100 * result["test_miou"], abs=0.01)

    ds = data.shapes(2, seed=5)
    np.savez(tmp_path / "x.npz", x=ds.x)
    png = str(tmp_path / "pred.png")
    assert main(["predict", str(spec), "--weights", f"{out}/best.npz", str(tmp_path / "x.npz"),
                 "-o", png]) == 0
    paths = capsys.readouterr().out.split()
    assert paths == [str(tmp_path / "pred_0.png"), str(tmp_path / "pred_1.png")]
    import matplotlib.image as mpimg
    img = mpimg.imread(paths[0])
    assert img.shape[:2] == (32, 32)
    assert main(["predict", str(spec), "--weights", f"{out}/best.npz", str(tmp_path / "x.npz"),
                 "-o", str(tmp_path / "no" / "p.png")]) == 2
    assert "cannot write" in capsys.readouterr().err
