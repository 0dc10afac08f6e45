"""What the command line says when a run folder, a checkpoint, an input or the machine does not
allow what was asked (issue 18): exit 2 and a message, never a traceback or a silent answer."""
import os
import struct
import zlib

import numpy as np
import pytest

from netc.cli import main
from netc.runtime import files, runs

SPEC = """network Tiny
input 8x8x1
CONV 3x3 4 pad=same act=relu - POOL max 2x2/2 - FC 16 act=relu - OUT 10 softmax
train optimizer=adam lr=0.01 batch=64 epochs=1 data=digits
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(spec path, a finished run's folder)."""
    root = tmp_path_factory.mktemp("cli")
    spec = root / "tiny.net"
    spec.write_text(SPEC)
    assert main(["train", str(spec), "--out", str(root / "run"), "--quiet"]) == 0
    return str(spec), str(root / "run")


def fails(capsys, *argv):
    """The error text of a netc command that must exit 2."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "allow_pickle" not in err
    return err


def with_arrays(src, dst, **changes):
    arrays = files.read_npz(src)
    arrays.update(changes)
    np.savez(dst, **arrays)
    return str(dst)


def test_train_into_a_locked_folder_names_the_process(capsys, run, tmp_path):
    spec, folder = run
    with runs.locked(folder):  # a second lock on it, as another process would take
        err = fails(capsys, "train", spec, "--resume", folder, "--quiet")
    assert f"is being written by another netc process (pid {os.getpid()})" in err
    assert not os.path.exists(os.path.join(folder, runs.LOCK))
    (tmp_path / "file").write_text("x")
    assert "--out: " in fails(capsys, "train", spec, "--out", str(tmp_path / "file"), "--quiet")


def test_weights_with_nan_or_a_bad_normalization_are_refused(capsys, run, tmp_path):
    spec, folder = run
    last = os.path.join(folder, "last.npz")
    w = files.read_npz(last)["fc1.weight"].copy()
    w[0, 0] = np.nan  # a fused ReLU would turn its output into 0: silently wrong
    err = fails(capsys, "eval", spec, "--weights", with_arrays(last, tmp_path / "nan.npz",
                                                               **{"fc1.weight": w}))
    assert "fc1.weight holds NaN or Inf (1 of" in err
    wrong = with_arrays(last, tmp_path / "shape.npz", __netc_norm_mean__=np.zeros((3, 1, 1)))
    assert "normalization mean has shape (3, 1, 1), which does not fit the input (1, 8, 8)" in \
        fails(capsys, "eval", spec, "--weights", wrong)
    zero = with_arrays(last, tmp_path / "zero.npz", __netc_norm_std__=np.zeros((1, 1, 1)))
    err = fails(capsys, "predict", spec, "--weights", zero, wrong)
    assert "normalization std holds 0" in err and "x: contains" not in err
    (tmp_path / "text.npz").write_text("not a checkpoint\n")
    assert "is not an .npz archive" in fails(capsys, "eval", spec, "--weights",
                                             str(tmp_path / "text.npz"))


def test_divergence_exits_2_with_the_cure(capsys, run, tmp_path):
    spec, _ = run
    err = fails(capsys, "train", spec, "--lr", "1e6", "--epochs", "3", "--out",
                str(tmp_path / "d"), "--quiet")
    assert "training diverged" in err and "lower the learning rate (lr=1e+06)" in err


def test_no_test_split_is_said_up_front_and_at_the_end(capsys, run, tmp_path):
    spec, _ = run
    assert main(["train", spec, "--test-split", "0", "--out", str(tmp_path / "t"),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "0 test (test_split=0 of 1797 samples leaves none" in out
    assert "no test score (no test samples)" in out


def test_eval_on_an_empty_test_split_points_to_all(capsys, tmp_path):
    spec = tmp_path / "nosplit.net"
    spec.write_text(SPEC.replace("epochs=1", "epochs=1 test_split=0"))
    assert main(["train", str(spec), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    err = fails(capsys, "eval", str(spec), "--weights", str(tmp_path / "r" / "last.npz"))
    assert "the test split of digits is empty (test_split=0 of 1797 samples)" in err
    assert "--all" in err
    assert main(["eval", str(spec), "--weights", str(tmp_path / "r" / "last.npz"), "--all"]) == 0


def test_predict_refuses_unusable_npz_inputs(capsys, run, tmp_path):
    spec, folder = run
    weights = os.path.join(folder, "last.npz")
    np.savez(tmp_path / "s.npz", x=np.array([["a"] * 8] * 8))
    assert "expected real numbers; received values of type <U1" in fails(
        capsys, "predict", spec, "--weights", weights, str(tmp_path / "s.npz"))
    np.savez(tmp_path / "c.npz", x=np.zeros((1, 8, 8), complex))
    assert "received complex numbers" in fails(capsys, "predict", spec, "--weights", weights,
                                               str(tmp_path / "c.npz"))
    np.savez(tmp_path / "e.npz")
    assert "holds no arrays" in fails(capsys, "predict", spec, "--weights", weights,
                                      str(tmp_path / "e.npz"))


def png(path, width, height, mode=0, body=b""):
    """A PNG of the given header (grey: mode 0, grey + alpha: 4) and image data."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b""))
    return str(path)


def test_predict_reads_the_size_of_a_png_before_decoding_it(capsys, run, tmp_path):
    spec, folder = run
    huge = png(tmp_path / "huge.png", 20000, 20000, body=b"\0" * 100)
    err = fails(capsys, "predict", spec, "--weights", os.path.join(folder, "last.npz"), huge)
    assert "20000x20000 is 400,000,000 pixels, more than netc decodes" in err


def test_grey_and_alpha_is_read_as_grey(capsys, run, tmp_path):
    spec, folder = run
    grey = np.kron(np.arange(16, dtype=np.uint8).reshape(4, 4) * 16, np.ones((2, 2), np.uint8))
    rows = b"".join(b"\0" + r.tobytes() for r in grey)
    alpha_rows = b"".join(b"\0" + np.stack([r, np.full(8, 37, np.uint8)], 1).tobytes()
                          for r in grey)
    weights = os.path.join(folder, "last.npz")
    outs = []
    for path in (png(tmp_path / "g.png", 8, 8, 0, rows),
                 png(tmp_path / "ga.png", 8, 8, 4, alpha_rows)):
        capsys.readouterr()
        assert main(["predict", spec, "--weights", weights, path]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]


def test_a_huge_npz_header_is_refused_everywhere(capsys, run, tmp_path):
    import io
    import zipfile
    spec, folder = run
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False,
                                                "shape": (10**12,)})
    with zipfile.ZipFile(tmp_path / "h.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", head.getvalue() + b"\0" * 4000)
        z.writestr("y.npy", head.getvalue() + b"\0" * 4000)
    path = str(tmp_path / "h.npz")
    weights = os.path.join(folder, "last.npz")
    for argv in (["train", spec, "--data", path, "--out", str(tmp_path / "r"), "--quiet"],
                 ["predict", spec, "--weights", weights, path],
                 ["eval", spec, "--weights", path]):
        assert "header claims (1000000000000,) values of float32 (3.64 TiB)" in \
            fails(capsys, *argv)


def test_a_network_too_large_for_the_machine_is_refused(capsys, tmp_path):
    spec = tmp_path / "big.net"
    spec.write_text("network Big\ninput 8x8x1\nFC 1000000000\nOUT 10 softmax\n"
                    "train data=digits batch=64\n")
    err = fails(capsys, "train", str(spec), "--out", str(tmp_path / "r"), "--quiet")
    assert "training Big at batch 64 with sgd needs about" in err and "available" in err
    assert not os.path.exists(tmp_path / "r")
