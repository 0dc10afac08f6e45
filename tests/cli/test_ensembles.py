"""Ensembles: snapshots at the end of each cosine_restarts cycle, bagging, and `netc eval` with
several weights files, against NumPy averages of the members' outputs."""
import json
import os
import shutil

import numpy as np
import pytest

import netc
from netc.cli import main
from netc.runtime import data, ensemble, metrics, runs, trainer, training

TINY = """network Tiny
input 8x8x1
CONV 3x3 4 pad=same act=relu - POOL max 2x2/2 - FC 16 act=relu - OUT 10 softmax
"""
SPEC = TINY + "train optimizer=adam lr=0.01 batch=64 epochs=2 data=digits\n"
RESTARTS = TINY + ("train optimizer=adam lr=0.01 batch=64 epochs=6 data=digits "
                   "schedule=cosine_restarts cycles=3 snapshots=true\n")


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.net"
    path.write_text(SPEC)
    return str(path)


def members(tmp_path, spec_text=SPEC, seeds=(1, 2, 3)):
    """Untrained networks of different seeds saved as checkpoints, each with a normalization of
    its own (a member of an ensemble normalizes its input as it was trained)."""
    net = netc.compile(spec_text)
    paths = []
    for i, seed in enumerate(seeds):
        model = netc.Model(net, seed=seed)
        norm = {"__netc_norm_mean__": np.full((1, 1, 1), 0.1 * i, np.float32),
                "__netc_norm_std__": np.full((1, 1, 1), 1 + 0.5 * i, np.float32)}
        paths.append(model.save(str(tmp_path / f"w_{seed}.npz"), norm))
    return paths


def reference(paths, x):
    """Each member's output from its own forward pass: the NumPy side of the comparison."""
    outs = []
    for p in paths:
        model = netc.Model.load(p)
        with np.load(p) as f:
            mean, std = f["__netc_norm_mean__"], f["__netc_norm_std__"]
        outs.append(model.forward((x - mean) / std).astype(np.float64))
    return outs


# ---- snapshots -----------------------------------------------------------------------------------
def test_snapshots_one_per_cycle_and_their_ensemble_in_result_json(tmp_path, capsys):
    path = tmp_path / "restarts.net"
    path.write_text(RESTARTS)
    out = str(tmp_path / "run")
    assert main(["train", str(path), "--out", out, "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "snapshot_2.npz (epoch 4): test loss" in text and "snapshot ensemble of 3:" in text
    assert sorted(f for f in os.listdir(out) if f.startswith("snapshot")) == \
        ["snapshot_1.npz", "snapshot_2.npz", "snapshot_3.npz"]
    weights = [netc.Model.load(f"{out}/snapshot_{k}.npz").params["conv1.weight"] for k in (1, 2, 3)]
    assert not np.array_equal(weights[0], weights[1]) and not np.array_equal(weights[1], weights[2])
    doc = json.load(open(f"{out}/result.json"))
    assert [s["epoch"] for s in doc["snapshots"]] == [2, 4, 6]
    assert doc["snapshots"][-1]["test_loss"] == pytest.approx(doc["test_loss"], rel=1e-5)
    assert doc["snapshot_ensemble"]["members"] == 3
    # the same numbers from netc eval, its pattern expanded by netc
    assert main(["eval", str(path), "--weights", f"{out}/snapshot_*.npz"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == \
        [f"{out}/snapshot_{k}.npz" for k in (1, 2, 3)] + ["ensemble of 3"]
    ens = doc["snapshot_ensemble"]
    assert lines[-1] == (f"ensemble of 3: 359 samples: loss {ens['test_loss']:.4f}, "
                         f"accuracy {100 * ens['test_acc']:.2f}%")


def test_snapshots_survive_an_interrupt_and_resume(tmp_path):
    net = netc.compile(RESTARTS)
    cfg = training.resolve(net, {})
    folder = runs.subfolder(str(tmp_path), "cut")
    t = trainer.Trainer(net, cfg, folder, progress=False, out=open(os.devnull, "w"))
    runs.write_json(os.path.join(folder, "config.json"), {"settings": cfg})
    calls, original = {"n": 0}, t.sgd_step

    def interrupt_in_epoch_3(idx, epoch, b):
        calls["n"] += 1
        if calls["n"] == 50:  # 20 steps an epoch
            raise KeyboardInterrupt
        return original(idx, epoch, b)

    t.sgd_step = interrupt_in_epoch_3
    with pytest.raises(KeyboardInterrupt):
        t.run()
    first = os.path.join(folder, "snapshot_1.npz")
    assert os.listdir(folder).count("snapshot_1.npz") == 1 and \
        not os.path.exists(os.path.join(folder, "snapshot_2.npz"))
    written = os.stat(first).st_mtime_ns
    result, _ = training.train(net, {}, resume=folder, progress=False, stdout=open(os.devnull, "w"))
    assert os.stat(first).st_mtime_ns == written and len(result["snapshots"]) == 3
    full, whole = training.train(net, {}, str(tmp_path / "whole"), progress=False,
                                stdout=open(os.devnull, "w"))
    for k in (1, 2, 3):
        a = netc.Model.load(os.path.join(folder, f"snapshot_{k}.npz")).params
        b = netc.Model.load(os.path.join(whole, f"snapshot_{k}.npz")).params
        assert all(np.allclose(a[n], b[n], rtol=1e-5, atol=1e-7) for n in a)
    assert result["snapshot_ensemble"]["test_acc"] == pytest.approx(
        full["snapshot_ensemble"]["test_acc"])


# ---- averaging -----------------------------------------------------------------------------------
def test_ensemble_averages_the_members_probabilities(tmp_path):
    paths = members(tmp_path)
    ds = data.load("digits", (1, 8, 8), 10, True)
    x, y = ds.x[:300], ds.y[:300]
    outs = reference(paths, x)
    p = np.mean(outs, axis=0)
    loaded = ensemble.load(paths)
    assert np.allclose(ensemble.predict(loaded, x), p, atol=1e-6)
    scores = ensemble.evaluate(loaded, x, y)
    assert scores["ensemble"]["loss"] == pytest.approx(-np.mean(np.log(p[np.arange(300), y])),
                                                       rel=1e-5)
    assert scores["ensemble"]["acc"] == np.mean(p.argmax(axis=1) == y)
    for s, out in zip(scores["members"], outs):
        assert s["loss"] == pytest.approx(-np.mean(np.log(out[np.arange(300), y])), rel=1e-5)
        assert s["acc"] == np.mean(out.argmax(axis=1) == y)


@pytest.mark.parametrize("out, loss", [("softmax", "cross_entropy"), ("sigmoid", "bce"),
                                       ("none", "mse"), ("softmax", "kl")])
def test_one_member_scores_as_the_model_does(out, loss):
    """The ensemble's loss of the mean output is Model.evaluate's for one member: probabilities
    turned back into logits, or the outputs as they are."""
    model = netc.Model(f"input 6\nFC 8 act=tanh - OUT 3 {out}", seed=4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = {"cross_entropy": rng.integers(0, 3, 40), "bce": (rng.random((40, 3)) < 0.5) * 1.0,
         "mse": rng.standard_normal((40, 3)),
         "kl": rng.dirichlet(np.ones(3), 40)}[loss].astype(np.float32)
    scores = ensemble.evaluate([model], x, y, loss)
    assert scores["ensemble"]["loss"] == pytest.approx(model.evaluate(x, y, loss)[0], rel=1e-5)
    assert scores["ensemble"] == {**scores["members"][0], "loss": pytest.approx(
        scores["members"][0]["loss"], rel=1e-5)}


def test_eval_of_a_per_pixel_ensemble(tmp_path, capsys):
    text = "network Pix\ninput 8x8x1\nCONV 3x3 4 pad=same act=relu - OUT 3 softmax per=pixel\n"
    spec = tmp_path / "pix.net"
    spec.write_text(text)
    paths = members(tmp_path, text, seeds=(5, 6))
    rng = np.random.default_rng(0)
    x = rng.random((20, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0] * 3).astype(np.int64).clip(0, 2)
    np.savez(tmp_path / "pix.npz", x=x, y=y)
    assert main(["eval", str(spec), "--weights", *paths, "--data", str(tmp_path / "pix.npz"),
                 "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    p = np.mean(reference(paths, x), axis=0)
    acc, miou = np.mean(p.argmax(axis=1) == y), metrics.mean_iou(metrics.confusion(p, y, 3))
    assert lines[-1].startswith("ensemble of 2: 20 samples: loss ") and lines[-1].endswith(
        f", pixel accuracy {100 * acc:.2f}%, mean IoU {100 * miou:.2f}%")
    assert all("pixel accuracy" in line and "mean IoU" in line for line in lines)


def test_eval_patterns_in_natural_order(tmp_path, capsys, spec):
    paths = members(tmp_path)  # w_1, w_2, w_3
    shutil.copy(paths[0], tmp_path / "w_10.npz")
    assert main(["eval", spec, "--weights", str(tmp_path / "w_*.npz")]) == 0
    names = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert names == [str(tmp_path / f"w_{k}.npz") for k in (1, 2, 3, 10)] + ["ensemble of 4"]
    assert main(["eval", spec, "--weights", paths[0]]) == 0  # one file: as before
    assert capsys.readouterr().out.startswith("359 samples: loss ")


# ---- bagging -------------------------------------------------------------------------------------
def test_bootstrap_is_reproducible_and_differs_between_members():
    idx = np.arange(100, 400)
    a = ensemble.bootstrap(idx, 0, 1)
    assert np.array_equal(a, ensemble.bootstrap(idx, 0, 1)) and len(a) == len(idx)
    assert set(a) <= set(idx) and len(set(a)) < len(idx)  # drawn with replacement
    assert not np.array_equal(a, ensemble.bootstrap(idx, 0, 2))
    assert not np.array_equal(a, ensemble.bootstrap(idx, 1, 1))


def test_bagging_writes_the_members_and_their_ensemble(tmp_path, capsys, spec):
    out = str(tmp_path / "bag")
    assert main(["train", spec, "--bagging", "2", "--epochs", "1", "--out", out, "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3].startswith("member_1.npz: test loss") and \
        lines[-1].startswith("ensemble of 2: test loss")
    assert {"member_1.npz", "member_2.npz", "member1", "member2", "result.json",
            "config.json"} <= set(os.listdir(out))
    doc = json.load(open(f"{out}/result.json"))
    assert doc["bagging"] == 2 and len(doc["members"]) == 2 and doc["test_samples"] == 359
    a, b = (netc.Model.load(f"{out}/member_{i}.npz").params["conv1.weight"] for i in (1, 2))
    assert not np.array_equal(a, b)  # the same initial weights, different resamples
    assert main(["eval", spec, "--weights", f"{out}/member_*.npz"]) == 0
    ens = doc["ensemble"]
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"ensemble of 2: 359 samples: loss {ens['test_loss']:.4f}, "
        f"accuracy {100 * ens['test_acc']:.2f}%")


# ---- mistakes ------------------------------------------------------------------------------------
def test_mistakes_exit_2_with_a_message(tmp_path, capsys, spec):
    paths = members(tmp_path)
    assert main(["eval", spec, "--weights", paths[0], str(tmp_path / "none.npz")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["eval", spec, "--weights", str(tmp_path / "x_*.npz")]) == 2
    assert "no file matches" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    other = members(tmp_path / "other", TINY.replace("FC 16", "FC 8") + "train data=digits",
                    seeds=(9,))
    assert main(["eval", spec, "--weights", paths[0], other[0]]) == 2
    assert "different network" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", spec, "--bagging", "0"])
    assert e.value.code == 2 and "expected a positive integer" in capsys.readouterr().err
    assert main(["train", spec, "--bagging", "2", "--folds", "3"]) == 2
    assert "does not combine" in capsys.readouterr().err
    assert main(["train", spec, "--snapshots", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "cosine_restarts" in err and "hint: add schedule=cosine_restarts cycles=M" in err
    assert main(["train", spec, "--schedule", "cosine_restarts", "--cycles", "4", "--epochs", "10",
                 "--out", str(tmp_path / "c")]) == 2
    assert "10 epochs do not split into 4 cycles" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "s") and not os.path.exists(tmp_path / "c")
    (tmp_path / "zero.net").write_text(SPEC.replace("epochs=2", "epochs=2 cycles=0"))
    assert main(["check", str(tmp_path / "zero.net")]) == 2
    assert "`cycles` must be >= 1" in capsys.readouterr().err


def test_lr_prints_the_restarts(tmp_path, capsys, spec):
    assert main(["lr", spec, "-o", str(tmp_path / "lr.png"), "--schedule", "cosine_restarts",
                 "--cycles", "2", "--epochs", "8", "--warmup", "2"]) == 0
    values = [float(line.split()[1]) for line in capsys.readouterr().out.splitlines()]
    assert values == pytest.approx([0.01 / 3, 0.02 / 3, 0.01, 0.0075, 0.0025] + [0.01, 0.0075,
                                                                               0.0025], rel=1e-5)
    assert main(["lr", spec, "-o", str(tmp_path / "lr.png"), "--schedule", "cosine_restarts",
                 "--cycles", "3", "--epochs", "8"]) == 2
    assert "hint: use cycles=2, 4 or 8, or epochs=6 or 9 for 3 cycles" in capsys.readouterr().err
