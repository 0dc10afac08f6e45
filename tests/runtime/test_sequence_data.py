"""Data for a sequence input (`input seq TxD`): digits and MNIST read row by row, .npz files of
N x T x D with labels per sequence or per step, and the adding problem."""
import numpy as np
import pytest

from netc.dsl.errors import DataError
from netc.runtime import data

from .test_train import write_idx


def test_digits_are_read_row_by_row():
    seq = data.load("digits", (8, 8), 10, True)
    images = data.load("digits", (1, 8, 8), 10, True)
    assert seq.x.shape == (1797, 8, 8) and seq.x.dtype == np.float32
    assert np.array_equal(seq.x, images.x[:, 0])  # step t is the image's row t
    assert np.array_equal(seq.y, images.y)
    with pytest.raises(DataError, match=r"do not fit the spec's input seq 4x16 \(4 steps") as e:
        data.load("digits", (4, 16), 10, True)
    assert "8 steps of 8" in e.value.hint and "`input seq 8x8`" in e.value.hint


def test_mnist_is_read_row_by_row(tmp_path):
    r = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", r.integers(0, 256, (5, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(5))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", r.integers(0, 256, (2, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([7, 1]))
    ds = data.load(f"fashion:{tmp_path}", (28, 28), 10, True)
    assert ds.x.shape == (5, 28, 28) and ds.x_test.shape == (2, 28, 28)
    images = data.load(f"mnist:{tmp_path}", (1, 28, 28), 10, True)
    assert np.array_equal(ds.x, images.x[:, 0])
    with pytest.raises(DataError, match="seq 14x56") as e:
        data.load(f"mnist:{tmp_path}", (14, 56), 10, True)
    assert "28 steps of 28" in e.value.hint


def test_npz_sequences_with_labels_per_sequence_or_per_step(tmp_path):
    r = np.random.default_rng(1)
    x = r.random((6, 5, 3))
    np.savez(tmp_path / "s.npz", x=x, y=np.arange(6) % 2, x_test=x[:2], y_test=[0, 1])
    ds = data.load(str(tmp_path / "s.npz"), (5, 3), 2, True)
    assert ds.x.shape == (6, 5, 3) and ds.x_test.shape == (2, 5, 3)
    np.testing.assert_array_equal(ds.x, x.astype(np.float32))
    steps = r.integers(0, 4, (6, 5))
    np.savez(tmp_path / "p.npz", x=x, y=steps)
    ds = data.load(str(tmp_path / "p.npz"), (5, 3), 4, True, label_shape=(5,))
    assert np.array_equal(ds.y, steps)
    # labels per sequence for a per-step output, and the other way round
    with pytest.raises(DataError, match="a class per step, N x 5 labels") as e:
        data.load(str(tmp_path / "s.npz"), (5, 3), 2, True, label_shape=(5,))
    assert "return=last" in e.value.hint
    with pytest.raises(DataError, match="wants a class per sample") as e:
        data.load(str(tmp_path / "p.npz"), (5, 3), 4, True)
    assert "return=seq" in e.value.hint
    # regression targets: N x T x K per step, N x K per sequence
    np.savez(tmp_path / "r.npz", x=x, y=r.random((6, 5, 2)))
    assert data.load(str(tmp_path / "r.npz"), (5, 3), 2, False).y.shape == (6, 5, 2)


def test_npz_sequences_that_do_not_fit(tmp_path):
    x = np.zeros((4, 5, 3))
    np.savez(tmp_path / "s.npz", x=x, y=np.zeros(4, int))
    with pytest.raises(DataError, match=r"samples of shape \(5, 3\) do not fit the spec's input "
                                         r"seq 3x5 \(3 steps of 5 features\)") as e:
        data.load(str(tmp_path / "s.npz"), (3, 5), 2, True)
    assert "`input seq 5x3`" in e.value.hint
    np.savez(tmp_path / "v.npz", x=np.zeros((4, 15)), y=np.zeros(4, int))
    with pytest.raises(DataError, match="input seq 5x3") as e:
        data.load(str(tmp_path / "v.npz"), (5, 3), 2, True)
    assert "reshape it to (N, T, D)" in e.value.hint and "`input 15`" in e.value.hint
    # a sequence file for a vector spec is flattened, as images are
    assert data.load(str(tmp_path / "s.npz"), (15,), 2, True).x.shape == (4, 15)


@pytest.mark.parametrize("t", [2, 7, 50])
def test_adding_problem_markers_and_targets(t):
    ds = data.load(f"adding:{t}", (t, 2), 1, False, seed=3, size=500)
    x, y = ds.x, ds.y
    assert x.shape == (500, t, 2) and y.shape == (500, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32 and ds.name == f"adding:{t}"
    values, markers = x[:, :, 0], x[:, :, 1]
    assert values.min() >= 0 and values.max() < 1
    assert set(np.unique(markers)) <= {0.0, 1.0} and (markers.sum(axis=1) == 2).all()
    half = t // 2
    assert (markers[:, :half].sum(axis=1) == 1).all()  # one marker in the first half
    assert (markers[:, half:].sum(axis=1) == 1).all()  # and one in the second
    np.testing.assert_allclose(y[:, 0], (values * markers).sum(axis=1), rtol=1e-6)
    again = data.load(f"adding:{t}", (t, 2), 1, False, seed=3, size=500)
    assert np.array_equal(again.x, x) and np.array_equal(again.y, y)
    assert not np.array_equal(data.load(f"adding:{t}", (t, 2), 1, False, seed=4, size=500).x, x)


def test_adding_problem_targets_have_variance_one_sixth():
    """The sum of two uniform values: mean 1, variance 1/6, so predicting 1 scores MSE 1/6; the
    markers' places are uniform over each half."""
    ds = data.load("adding:20", (20, 2), 1, False, seed=0, size=40000)
    y = ds.y[:, 0].astype(np.float64)
    assert abs(y.mean() - 1) < 0.01
    assert abs(y.var() - 1 / 6) < 0.005
    assert abs(np.mean((y - 1.0) ** 2) - 1 / 6) < 0.005  # the constant predictor's MSE
    places = ds.x[:, :, 1].argmax(axis=1)  # the first marker's step
    counts = np.bincount(places, minlength=10)
    assert counts[10:].sum() == 0 and counts.min() > 0.9 * 4000 and counts.max() < 1.1 * 4000


def test_adding_problem_errors():
    with pytest.raises(DataError, match="needs its number of steps") as e:
        data.load("adding", (10, 2), 1, False)
    assert 'data="adding:50"' in e.value.hint
    for bad in ("adding:1", "adding:ten", "adding:-4"):
        with pytest.raises(DataError, match="a whole number T >= 2"):
            data.load(bad, (10, 2), 1, False)
    with pytest.raises(DataError, match=r"50 steps of 2 features .* the spec's input is a "
                                        r"sequence of 40 steps of 2") as e:
        data.load("adding:50", (40, 2), 1, False)
    assert e.value.hint == "write the spec's input line as `input seq 50x2`"
    with pytest.raises(DataError, match="the spec's input is a vector of 100"):
        data.load("adding:50", (100,), 1, False)
    with pytest.raises(DataError, match="this network is a classifier") as e:
        data.load("adding:50", (50, 2), 10, True)
    assert "`OUT 1`" in e.value.hint
    with pytest.raises(DataError, match="this network has 3 outputs"):
        data.load("adding:50", (50, 2), 3, False)


def test_sequences_are_normalized_per_feature_over_every_step():
    x = np.random.default_rng(2).random((50, 6, 3)).astype(np.float32) * [1, 10, 100]
    mean, std = data.normalizer(x)
    assert mean.shape == (1, 3) and std.shape == (1, 3)
    np.testing.assert_allclose(mean[0], x.reshape(-1, 3).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(std[0], x.reshape(-1, 3).std(axis=0), rtol=1e-5)
