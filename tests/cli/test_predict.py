"""`netc predict` is Model.predict: the checkpoint's normalization, then the network."""
import numpy as np

import netc
from netc.cli import main

SPEC = "input 4x4x1\nCONV 3x3 2 act=relu - OUT 3 softmax\n"


def test_predict_prints_what_model_predict_gives(capsys, tmp_path):
    (tmp_path / "tiny.net").write_text(SPEC)
    model = netc.Model(SPEC, seed=2)
    model.normalization = (np.full((1, 1, 1), 8, np.float32), np.full((1, 1, 1), 4, np.float32))
    weights = model.save(str(tmp_path / "w.npz"))
    x = np.random.default_rng(0).uniform(0, 16, (4, 1, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    assert main(["predict", str(tmp_path / "tiny.net"), "--weights", weights,
                 str(tmp_path / "x.npz"), "--top", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    want = netc.Model.load(weights).predict(x)
    assert not np.allclose(want, model.forward(x), atol=1e-3)  # the normalization matters here
    for line, row in zip(printed, want):
        shown = dict(part.split(": ") for part in line.split("(")[1].rstrip(")").split(", "))
        assert {int(k): float(v) for k, v in shown.items()} == \
            {k: round(float(row[k]), 4) for k in range(3)}
