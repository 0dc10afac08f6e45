"""netc sweep: a 2x2 grid of 1-epoch runs of a tiny network on digits, on the local engine (one
process, then two) and on a local Dask cluster; the folder, sweep.csv against each run's
result.json, the sorted summary and the plot; grid mistakes; a diverged run; Ctrl-C."""
import csv
import json
import os

import pytest

from netc.cli import main

SPEC = """network Tiny
input 8x8x1
CONV 3x3 4 pad=same act=relu - POOL max 2x2/2 - FC 16 act=relu - OUT 10 softmax
train optimizer=adam lr=0.01 batch=64 epochs=2 data=digits
"""
RUNS = ["lr=0.003,batch=32", "lr=0.003,batch=64", "lr=0.01,batch=32", "lr=0.01,batch=64"]


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.net"
    path.write_text(SPEC)
    return str(path)


def _table(folder):
    with open(os.path.join(folder, "sweep.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _check_sweep(folder, text):
    """The folder holds a run per setting, sweep.csv agrees with each result.json and is sorted
    by the best validation accuracy, as the printed summary is."""
    assert sorted(os.listdir(folder)) == sorted(RUNS + ["sweep.csv", "sweep.json", "sweep.png"])
    rows = _table(folder)
    assert sorted(r["run"] for r in rows) == RUNS
    for r in rows:
        run = os.path.join(folder, r["run"])
        assert {"result.json", "metrics.csv", "best.npz", "train.log"} <= set(os.listdir(run))
        result = json.load(open(os.path.join(run, "result.json")))
        config = json.load(open(os.path.join(run, "config.json")))["settings"]
        assert r["status"] == "ok" and r["error"] == ""
        assert float(r["lr"]) == config["lr"] and int(r["batch"]) == config["batch"]
        assert config["epochs"] == 1 and config["seed"] == 0
        assert float(r["test_acc"]) == pytest.approx(result["test_acc"])
        assert float(r["test_loss"]) == pytest.approx(result["test_loss"])
        assert int(r["trained_epochs"]) == result["epochs"] == 1
        assert float(r["seconds"]) == result["seconds"]
        assert float(r["best_val_loss"]) == pytest.approx(result["best_val_loss"], rel=1e-5)
    accs = [float(r["best_val_acc"]) for r in rows]
    assert accs == sorted(accs, reverse=True)
    lines = text.splitlines()
    head = lines.index("sorted by best validation accuracy (highest first)")
    assert [line.split()[1:3] for line in lines[head + 2:head + 6]] == \
        [[r["lr"], r["batch"]] for r in rows]
    with open(os.path.join(folder, "sweep.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return rows


def test_sweep_local_one_and_two_workers(capsys, spec, tmp_path):
    grid = ["--grid", "lr=3e-3,0.01", "batch=32,64", "--epochs", "1"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    assert main(["sweep", spec, *grid, "--out", one]) == 0
    rows_one = _check_sweep(one, capsys.readouterr().out)
    assert main(["sweep", spec, *grid, "--out", two, "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "2 processes of" in text and "[4/4]" in text
    rows_two = _check_sweep(two, text)
    # the same seed in each run, whichever process (and number of threads) ran it
    for a, b in zip(rows_one, rows_two):
        assert a["run"] == b["run"]
        assert float(a["test_loss"]) == pytest.approx(float(b["test_loss"]), rel=1e-3)


def test_failed_run_recorded(capsys, spec, tmp_path):
    out = str(tmp_path / "s")
    assert main(["sweep", spec, "--grid", "lr=0.01,1e4", "--epochs", "1", "--out", out]) == 0
    text = capsys.readouterr().out
    rows = _table(out)
    assert [(r["run"], r["status"]) for r in rows] == [("lr=0.01", "ok"), ("lr=10000", "failed")]
    assert "diverged" in rows[1]["error"] and rows[1]["test_loss"] == ""
    assert "2  10000  failed: epoch 1" in text
    assert "error: epoch 1" in open(os.path.join(out, "lr=10000", "train.log")).read()
    assert main(["sweep", spec, "--grid", "lr=1e4", "--epochs", "1", "--out", out + "2"]) == 1
    assert "no run finished" in capsys.readouterr().out


def test_ctrl_c_keeps_the_table(capsys, spec, tmp_path, monkeypatch):
    from netc.runtime import training
    real, calls = training.train, []

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(training, "train", interrupted_second)
    out = str(tmp_path / "s")
    assert main(["sweep", spec, "--grid", "lr=0.01,0.02,0.03", "--epochs", "1", "--out",
                 out]) == 130
    assert len(calls) == 2  # the third run never started
    assert "interrupted: 1 of 3 runs finished" in capsys.readouterr().out
    assert [(r["run"], r["status"]) for r in _table(out)] == [
        ("lr=0.01", "ok"), ("lr=0.02", "interrupted"), ("lr=0.03", "not run")]


def test_python_api_returns_the_rows(capsys, spec, tmp_path):
    from netc.runtime import sweep
    rows = sweep(spec, {"lr": [0.01], "betas": [[0.9, 0.99]]}, {"epochs": 1}, str(tmp_path / "s"))
    assert "[1/1] lr=0.01,betas=[0.9,0.99]: val acc" in capsys.readouterr().out
    assert [(r["run"], r["lr"], r["betas"], r["status"]) for r in rows] == [
        ("lr=0.01,betas=[0.9,0.99]", 0.01, (0.9, 0.99), "ok")]
    assert _table(str(tmp_path / "s"))[0]["betas"] == "[0.9,0.99]"


@pytest.mark.parametrize("grid, message", [
    (["lrr=0.1,0.2"], "error: --grid: unknown train setting `lrr`\nhint: did you mean `lr`?"),
    (["batch=32,big"], "error: --grid batch=big: `batch` must be an integer >= 1; received 'big'"),
    (["optimizer=adam,sgd", "momentum=0.9"], "error: optimizer=adam,momentum=0.9: optimizer "
                                             "adam does not take momentum"),
])
def test_bad_grid_exit_2(capsys, spec, tmp_path, grid, message):
    out = tmp_path / "s"
    assert main(["sweep", spec, "--grid", *grid, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err
    assert not out.exists()


def test_sweep_on_a_local_dask_cluster(capsys, spec, tmp_path):
    pytest.importorskip("dask.distributed")
    out = str(tmp_path / "s")
    environment = dict(os.environ)
    assert main(["sweep", spec, "--grid", "lr=0.003,0.01", "--epochs", "1", "--engine", "dask",
                 "--out", out]) == 0
    assert dict(os.environ) == environment  # dask's OPENBLAS_NUM_THREADS=1 ... not left behind
    text = capsys.readouterr().out
    assert "dask: tcp://" in text and "[2/2]" in text
    rows = _table(out)
    assert sorted(r["run"] for r in rows) == ["lr=0.003", "lr=0.01"]
    for r in rows:
        result = json.load(open(os.path.join(out, r["run"], "result.json")))
        assert r["status"] == "ok" and float(r["test_acc"]) == pytest.approx(result["test_acc"])


def test_sweep_on_a_local_ray_cluster(capsys, spec, tmp_path):
    pytest.importorskip("ray")  # not in the test extra: a large install (see README)
    out = str(tmp_path / "s")
    assert main(["sweep", spec, "--grid", "lr=0.003,0.01", "--epochs", "1", "--engine", "ray",
                 "--workers", "2", "--out", out]) == 0
    assert "[2/2]" in capsys.readouterr().out
    assert sorted((r["run"], r["status"]) for r in _table(out)) == [("lr=0.003", "ok"),
                                                                   ("lr=0.01", "ok")]


def test_spec_after_the_grid(capsys, spec, tmp_path):
    assert main(["sweep", "--grid", "lrr=0.1", spec, "--out", str(tmp_path / "s")]) == 2
    assert "unknown train setting `lrr`" in capsys.readouterr().err  # SPEC taken from the grid
    assert main(["sweep", "--grid", "lr=0.1"]) == 2
    assert "netc sweep takes a spec and a grid" in capsys.readouterr().err
