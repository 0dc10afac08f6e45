"""Sequence inputs from the command line: digits read row by row, a per-step classifier (train,
eval, predict), the adding problem, and the errors for data that does not fit."""
import json

import numpy as np

from netc.cli import main

DIGITS = """network SeqDigits
input seq 8x8
FLATTEN - FC 16 act=relu - OUT 10 softmax
train data=digits optimizer=adam lr=0.01 batch=64 epochs=1
"""

PER_STEP = """network PerStep
input seq 6x3
FC 8 act=tanh - OUT 3 softmax
train optimizer=adam lr=0.05 batch=16 epochs=4
"""

ADDING = """network Adding
input seq 10x2
FLATTEN - FC 32 act=relu - OUT 1
train data="adding:10" optimizer=adam lr=0.01 batch=32 epochs=4
"""


def test_digits_as_sequences_train_and_report_an_accuracy(capsys, tmp_path):
    spec = tmp_path / "d.net"
    spec.write_text(DIGITS)
    out = str(tmp_path / "run")
    assert main(["train", str(spec), "--out", out, "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "data digits: 1258 train" in text and "test accuracy" in text
    result = json.load(open(f"{out}/result.json"))
    assert result["epochs"] == 1 and result["test_acc"] > 0.5  # one epoch; chance is 0.1
    assert main(["eval", str(spec), "--weights", f"{out}/best.npz"]) == 0
    assert f"accuracy {100 * result['test_acc']:.2f}%" in capsys.readouterr().out


def test_a_class_per_step(capsys, tmp_path):
    """Labels N x T; the accuracy over every step in train, eval and result.json; predict
    prints a class per step."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6, 3)).astype(np.float32)
    y = (x[:, :, 0] > 0).astype(int) + (x[:, :, 1] > 0)  # classes 0..2 per step
    np.savez(tmp_path / "steps.npz", x=x, y=y)
    np.savez(tmp_path / "some.npz", x=x[:3])
    spec = tmp_path / "p.net"
    spec.write_text(PER_STEP)
    out = str(tmp_path / "run")
    assert main(["train", str(spec), "--data", str(tmp_path / "steps.npz"), "--out", out,
                 "--quiet"]) == 0
    result = json.load(open(f"{out}/result.json"))
    assert result["test_acc"] > 0.6  # chance: about 0.375 (the middle class is half the steps)
    assert main(["eval", str(spec), "--weights", f"{out}/best.npz", "--data",
                 str(tmp_path / "steps.npz")]) == 0
    said = capsys.readouterr().out  # the result line, then the confusion matrix over every step
    assert f"40 samples: loss {result['test_loss']:.4f}, accuracy {100 * result['test_acc']:.2f}%\n" \
        in said and said.rstrip().endswith("240")
    assert main(["predict", str(spec), "--weights", f"{out}/best.npz",
                 str(tmp_path / "some.npz")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("0: classes per step ")
    classes = [int(c) for c in lines[0].split("step ")[1].split()]
    assert len(classes) == 6 and set(classes) <= {0, 1, 2}
    np.savez(tmp_path / "one.npz", x=x[:20], y=y[:20, 0])  # a label per sequence
    assert main(["train", str(spec), "--data", str(tmp_path / "one.npz"), "--quiet",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "a class per step, N x 6 labels" in err and "return=last" in err


def test_the_adding_problem_learns_below_the_constant_predictor(capsys, tmp_path):
    spec = tmp_path / "a.net"
    spec.write_text(ADDING)
    out = str(tmp_path / "run")
    assert main(["train", str(spec), "--out", out, "--quiet"]) == 0
    assert "data adding:10: 717 train" in capsys.readouterr().out
    result = json.load(open(f"{out}/result.json"))
    assert result["test_acc"] is None and result["test_loss"] < 1 / 6  # MSE of predicting 1
    assert main(["train", str(spec), "--data", "adding:12", "--quiet",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "gives sequences of 12 steps of 2" in err and "`input seq 12x2`" in err
