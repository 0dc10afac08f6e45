"""netc.runtime.sweep without training: the grid as the train section reads it, run names, the
checks made before any run starts, the ranking and the printed summary."""
import os

import pytest

from netc.dsl.errors import NetcError
from netc.runtime import sweep as run_sweep
from netc.runtime.sweep import (check_grid, combinations, metric, parse_grid, ranked, run_name,
                                summary)

SPEC = """network Tiny
input 8x8x1
FC 16 act=relu - OUT 10 softmax
train optimizer=adam lr=0.01 batch=64 epochs=1 data=digits
"""


def test_grid_values_read_as_the_train_section():
    grid = parse_grid(["lr=1e-3,3e-3,0.01", "batch=32,64", "optimizer=adam,sgd",
                       "early_stop=true,false", "betas=[0.9,0.999],[0.8,0.9]",
                       'data="digits",synthetic', "augment=flip,[flip,crop]"])
    assert grid == {"lr": [0.001, 0.003, 0.01], "batch": [32, 64], "optimizer": ["adam", "sgd"],
                    "early_stop": [True, False], "betas": [(0.9, 0.999), (0.8, 0.9)],
                    "data": ["digits", "synthetic"], "augment": [("flip",), ("flip", "crop")]}


def test_combinations_and_names():
    grid = check_grid({"lr": [1e-3, 1e-5], "batch": [32, 64], "betas": [[0.9, 0.99]]})
    settings = combinations(grid)
    assert [run_name(s) for s in settings] == [
        "lr=0.001,batch=32,betas=[0.9,0.99]", "lr=0.001,batch=64,betas=[0.9,0.99]",
        "lr=1e-05,batch=32,betas=[0.9,0.99]", "lr=1e-05,batch=64,betas=[0.9,0.99]"]
    assert run_name({"data": "a/b.npz", "early_stop": True}) == "data=a_b.npz,early_stop=true"


@pytest.mark.parametrize("items, message, hint", [
    (["lrr=0.1,0.2"], "unknown train setting `lrr`", "did you mean `lr`?"),
    (["lr=0.1,fast"], "--grid lr=fast: `lr` must be a number", None),
    (["batch=32,0"], "`batch` must be >= 1", None),
    (["batch=32,6.5"], "`batch` must be an integer", None),
    (["optimizer=adam,adma"], "`optimizer` must be one of", "did you mean optimizer=adam?"),
    (["lr=0.1,0.1"], "--grid: lr lists 0.1 twice", None),
    (["lr=0.1", "lr=0.2"], "--grid: lr is given twice", None),
    (["lr"], "--grid takes KEY=V1,V2,...; received 'lr'", None),
    (["lr=0.1,"], "--grid lr: an empty value", None),
    (["lr=0.1)"], "--grid lr=0.1)", None),
])
def test_bad_grids(items, message, hint):
    with pytest.raises(NetcError) as e:
        parse_grid(items)
    assert message in e.value.message
    if hint:
        assert hint in e.value.hint


def test_python_grid_checked():
    with pytest.raises(NetcError, match="unknown train setting `bacth`"):
        check_grid({"bacth": [32]})
    with pytest.raises(NetcError, match="`lr` must be a number"):
        check_grid({"lr": ["big"]})
    with pytest.raises(NetcError, match="lr has no values"):
        check_grid({"lr": []})
    with pytest.raises(NetcError, match="needs a grid"):
        check_grid({})
    assert check_grid({"lr": 0.1}) == {"lr": [0.1]}


@pytest.mark.parametrize("kwargs, message", [
    ({"grid": {"lr": [0.1]}, "overrides": {"lr": 0.2}}, "lr is set both by the grid"),
    ({"grid": {"momentum": [0.9]}}, "momentum=0.9: optimizer adam does not take momentum"),
    ({"grid": {"schedule": ["step", "cosine_restarts"]}, "overrides": {"snapshots": True}},
     "schedule=step: snapshots=true saves"),
    ({"grid": {"lr": [0.1]}, "engine": "spark"}, "unknown engine 'spark'"),
    ({"grid": {"lr": [0.1]}, "workers": 0}, "workers is a number of processes"),
    ({"grid": {"lr": [0.1]}, "address": "tcp://x:1"}, "--address names a dask or ray cluster"),
])
def test_checked_before_any_run(tmp_path, kwargs, message):
    out = tmp_path / "sweep"
    with pytest.raises(NetcError, match=message.replace("(", r"\(").replace("[", r"\[")):
        run_sweep(SPEC, out=str(out), **kwargs)
    assert not out.exists()


def test_missing_engine_package(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(NetcError) as e:
        run_sweep(SPEC, {"lr": [0.1]}, out=str(tmp_path / "s"), engine="dask")
    assert "--engine dask needs dask.distributed" in e.value.message
    assert "pip install 'netc[dask]'" in e.value.hint
    assert not os.path.exists(tmp_path / "s")


def _rows():
    base = {"best_val_loss": None, "test_acc": None, "test_loss": None, "error": None,
            "trained_epochs": 1, "seconds": 1.0}
    return [{**base, "run": "lr=0.1", "lr": "0.1", "status": "ok", "best_val_acc": 0.5},
            {**base, "run": "lr=10", "lr": "10", "status": "failed", "best_val_acc": None,
             "error": "the loss became nan"},
            {**base, "run": "lr=0.01", "lr": "0.01", "status": "ok", "best_val_acc": 0.9},
            {**base, "run": "lr=1", "lr": "1", "status": "ok", "best_val_acc": None}]


def test_ranked_and_summary():
    rows = ranked(_rows())
    assert metric(rows) == ("best_val_acc", True, "best validation accuracy")
    assert [r["lr"] for r in rows] == ["0.01", "0.1", "1", "10"]
    lines = summary(rows, ["lr"]).splitlines()
    assert lines[0] == "sorted by best validation accuracy (highest first)"
    assert lines[1].split() == ["#", "lr", "val", "acc", "val", "loss", "test", "acc", "test",
                                "loss", "epochs", "seconds"]
    assert lines[2].split()[:3] == ["1", "0.01", "90.00%"]
    assert lines[5].split() == ["4", "10", "failed:", "the", "loss", "became", "nan"]
    by_loss = [{**r, "best_val_acc": None, "best_val_loss": v}
               for r, v in zip(_rows(), (0.3, None, 0.7, 0.1))]
    assert [r["lr"] for r in ranked(by_loss)] == ["1", "0.1", "0.01", "10"]
