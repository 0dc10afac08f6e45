"""netc export / netc import from the command line: a trained model out to ONNX and back in as
a spec and a checkpoint that predict the same; Caffe files with and without weights; errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

from netc.cli import main
from tests.compiler import test_caffe_import as caffe_cases

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SPEC = """network Tiny
input 8x8x1
CONV 3x3 4 pad=same act=relu - POOL max 2x2/2 - FC 16 act=relu - OUT 10 softmax
train optimizer=adam lr=0.01 batch=64 epochs=2 data=digits
"""


def predictions(capsys, spec, weights, inputs):
    assert main(["predict", spec, "--weights", weights, inputs]) == 0
    return capsys.readouterr().out


def test_trained_model_out_and_back_in_predicts_the_same(capsys, tmp_path):
    spec = tmp_path / "tiny.net"
    spec.write_text(SPEC)
    out = str(tmp_path / "run")
    assert main(["train", str(spec), "--out", out, "--quiet"]) == 0
    capsys.readouterr()
    x = np.random.default_rng(0).uniform(0, 16, (4, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    want = predictions(capsys, str(spec), f"{out}/best.npz", str(tmp_path / "x.npz"))

    onnx_path = str(tmp_path / "tiny.onnx")
    assert main(["export", str(spec), "--weights", f"{out}/best.npz", "-o", onnx_path]) == 0
    assert "trained weights" in capsys.readouterr().out
    assert main(["import", onnx_path]) == 0  # tiny.net and tiny.npz beside it
    said = capsys.readouterr().out
    assert said.startswith(str(tmp_path / "tiny.net")) and "tiny.npz" in said
    text = (tmp_path / "tiny.net").read_text()
    assert "OUT 10 softmax" in text and "act=relu" in text
    # the normalization travelled in the ONNX graph and back into the checkpoint
    got = predictions(capsys, str(tmp_path / "tiny.net"), str(tmp_path / "tiny.npz"),
                      str(tmp_path / "x.npz"))
    assert got == want
    assert main(["summary", str(tmp_path / "tiny.net")]) == 0
    assert "1,250" in capsys.readouterr().out


def test_caffe_definition_with_and_without_weights(capsys, tmp_path):
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(caffe_cases.TINY)
    assert main(["import", str(proto), "-o", str(tmp_path / "a.net")]) == 0
    assert "no weights" in capsys.readouterr().out
    assert not (tmp_path / "a.npz").exists()
    assert main(["check", str(tmp_path / "a.net")]) == 0
    assert main(["import", str(proto), "-o", str(tmp_path / "b.net"), "--weights-out",
                 str(tmp_path / "b.npz")]) == 2
    assert "--caffemodel" in capsys.readouterr().err

    blobs = caffe_cases._tiny_blobs(np.random.default_rng(0))
    model = caffe_cases._caffemodel(tmp_path / "tiny.caffemodel", blobs)
    assert main(["import", str(proto), "--caffemodel", model, "-o", str(tmp_path / "c.net")]) == 0
    import netc
    loaded = netc.Model.load(str(tmp_path / "c.npz"))
    assert loaded.net.spec_hash == netc.compile(str(tmp_path / "c.net")).spec_hash


def test_a_train_val_definition_without_weights_gives_the_spec(capsys, tmp_path):
    """Its Data layer's mean_value is a normalization, not weights: no checkpoint to write."""
    proto = tmp_path / "caffenet.prototxt"
    proto.write_text(caffe_cases.CAFFENET)
    assert main(["import", str(proto), "-o", str(tmp_path / "c.net")]) == 0
    assert "no weights" in capsys.readouterr().out
    assert not (tmp_path / "c.npz").exists()
    assert main(["summary", str(tmp_path / "c.net")]) == 0
    assert "60,965,224" in capsys.readouterr().out


def test_import_errors_exit_2_without_traceback(capsys, tmp_path):
    assert main(["import", str(tmp_path / "none.onnx")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "m.h5").write_text("x")
    assert main(["import", str(tmp_path / "m.h5")]) == 2
    assert ".onnx" in capsys.readouterr().err
    (tmp_path / "bad.onnx").write_bytes(b"\x00not a protobuf at all\xff" * 3)
    assert main(["import", str(tmp_path / "bad.onnx")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_without_the_onnx_extra_the_hint_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from netc.cli import main\n"
            f"sys.exit(main(['export', {os.path.join('specs', 'lenet5.net')!r}, '-o', "
            f"{str(tmp_path / 'x.onnx')!r}]))\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'netc[onnx]'" in proc.stderr and "Traceback" not in proc.stderr


def test_imported_weights_are_written_checked_without_a_model(tmp_path, capsys):
    """Imported.save_weights writes the checkpoint a Model of those weights would save (the same
    arrays, float32, in the model's order, with the normalization), without building one, and
    refuses a weight of another shape or one with a NaN, naming it (and writes nothing)."""
    import netc
    from netc.runtime.model import NORM_KEYS
    spec = "input 6x6x2\nCONV 3x3 4 pad=1 - BN - RELU - FLATTEN - OUT 3 softmax"
    model = netc.Model(spec, seed=2)
    model.normalization = (np.float32(0.5), np.float32(2.0))
    model.save(str(tmp_path / "m.npz"))
    assert main(["export", spec, "--weights", str(tmp_path / "m.npz"), "-o",
                 str(tmp_path / "m.onnx")]) == 0
    imported = netc.import_model(str(tmp_path / "m.onnx"))
    imported.arrays = {k: (v.astype(np.float64) if k.endswith("weight") else v)
                       for k, v in imported.arrays.items()}  # written as float32 all the same
    imported.save_weights(str(tmp_path / "w.npz"))
    with np.load(tmp_path / "w.npz") as got:
        want = netc.Model.with_state(imported.net, {k: v for k, v in imported.arrays.items()
                                                    if not k.startswith("__")})
        assert got.files[:len(want.state())] == list(want.state())
        for k, v in want.state().items():
            assert got[k].dtype == np.float32
            np.testing.assert_array_equal(got[k], v)
        np.testing.assert_array_equal(got[NORM_KEYS[0]], imported.arrays[NORM_KEYS[0]])
        assert str(got["__netc_hash__"]) == imported.net.spec_hash
    loaded = netc.Model.load(str(tmp_path / "w.npz"))
    x = np.random.default_rng(0).normal(size=(2, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)

    for bad, said in (({"conv1.weight": np.zeros((4, 2, 2, 2), np.float32)}, "has shape"),
                      ({"bn1.running_var": np.full(4, np.nan, np.float32)}, "holds NaN or Inf")):
        broken = netc.import_model(str(tmp_path / "m.onnx"))
        broken.arrays = {**broken.arrays, **bad}
        with pytest.raises(netc.DataError, match=f"the imported model's {next(iter(bad))}"
                                                 f".*{said}"):
            broken.save_weights(str(tmp_path / "bad.npz"))
        assert not (tmp_path / "bad.npz").exists()
