"""netc train / eval / predict / lr / gradcheck / bench from the command line."""
import json
import os

import numpy as np
import pytest

from netc.cli import main
from netc.compiler.settings import OPTIMIZERS

SPEC = """network Tiny
input 8x8x1
CONV 3x3 4 pad=same act=relu - POOL max 2x2/2 - FC 16 act=relu - OUT 10 softmax
train optimizer=adam lr=0.01 batch=64 epochs=2 data=digits
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.net"
    path.write_text(SPEC)
    return str(path)


def test_train_eval_predict(capsys, spec, tmp_path):
    out = str(tmp_path / "run")
    assert main(["train", spec, "--out", out, "--epochs", "3", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Tiny: 1,250 params") and "epoch 3/3" in text and "test accuracy" in text
    assert json.load(open(f"{out}/result.json"))["epochs"] == 3
    assert main(["eval", spec, "--weights", f"{out}/best.npz"]) == 0
    assert "359 samples: loss" in capsys.readouterr().out
    x = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    assert main(["predict", spec, "--weights", f"{out}/best.npz", str(tmp_path / "x.npz")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("0: class ")
    import matplotlib.image as mpimg
    mpimg.imsave(tmp_path / "d.png", np.kron(x[0], np.ones((4, 4))), cmap="gray")
    assert main(["predict", spec, "--weights", f"{out}/best.npz", str(tmp_path / "d.png")]) == 0
    assert capsys.readouterr().out.startswith("0: class ")


def test_train_errors_exit_2(capsys, spec, tmp_path):
    assert main(["train", spec, "--data", str(tmp_path / "none.npz"), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["train", spec, "--optimizer", "adam", "--momentum", "0.9", "--quiet",
                 "--out", str(tmp_path / "o")]) == 2
    assert "does not take momentum" in capsys.readouterr().err
    assert main(["train", spec, "--resume", str(tmp_path)]) == 2
    assert "not a netc run folder" in capsys.readouterr().err
    assert main(["eval", spec, "--weights", str(tmp_path / "w.npz")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert main(["train", spec, "--out", str(tmp_path / "a-file" / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--out: cannot create" in err and "name a folder you may write into with --out" in err


def test_lr_plot(capsys, spec, tmp_path):
    png = tmp_path / "lr.png"
    assert main(["lr", spec, "-o", str(png), "--schedule", "step", "--epochs", "6",
                 "--warmup", "2"]) == 0
    values = [float(line.split()[1]) for line in capsys.readouterr().out.splitlines()]
    assert len(values) == 6 and values[0] < values[1] < values[2] == 0.01
    assert png.read_bytes().startswith(b"\x89PNG")


def test_gradcheck_and_bench(capsys, spec):
    assert main(["gradcheck", spec, "--no-warn"]) == 0
    out = capsys.readouterr().out
    assert "conv1.weight" in out and out.rstrip().endswith("ok")
    assert main(["bench", spec, "--batch", "8", "--iters", "2"]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "samples/s" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:-1]}
    assert rows["conv1"][2] == "im2col" and float(rows["conv1"][3]) > 0  # the algorithm column


def test_bench_names_each_conv_algorithm(capsys, tmp_path):
    spec = tmp_path / "algos.net"
    spec.write_text("input 23x23x1\nCONV 3x3 16 pad=1 act=relu - CONV 3x3/2 24 - CONV 3x3 24 pad=1 - "
                    "CONV 2x2 8 pad=1 - CONV 12x12 4 - FC 20\nOUT 3 softmax\n")
    from netc.runtime.backends.cpu import blas
    _, every, _, rows = blas.tile_routes()
    # FC: rows of 16 values, dots below 16 samples; on AVX2, whose tiles run the products of few
    # rows, gemm at any batch
    small = "gemm" if not every and rows >= 2 else "dots"
    for batch, fc in ((2, small), (16, "gemm")):
        assert main(["bench", str(spec), "--batch", str(batch), "--iters", "1"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[1].startswith("GEMM: ") and "kernels" in lines[1]  # which BLAS and kernels
        rows = {line.split()[0]: line.split() for line in lines[3:-1]}
        assert [rows[f"conv{i}"][2] for i in range(1, 6)] == ["direct", "im2col", "winograd",
                                                              "im2col", "dense"]
        assert rows["fc1"][2] == rows["out1"][2] == fc


def test_bench_names_how_a_per_pixel_output_runs(capsys, tmp_path):
    """OUT per=pixel runs as the 1x1 CONV it is: `netc bench` names that CONV's algorithm (it
    named the FC's, which never ran). 16 channels, 4 filters on 32x32: direct, with netc's
    tiles or without."""
    spec = tmp_path / "pixels.net"
    spec.write_text("input 32x32x16\nOUT 4 softmax per=pixel\n")
    assert main(["bench", str(spec), "--batch", "2", "--iters", "1"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[3:-1]}
    assert rows["out1"][2] == "direct"


def test_bench_rates_follow_the_layers_multiply_adds(capsys, tmp_path):
    """The forward GFLOP/s column: two per multiply-add of the layer, over its forward time."""
    import netc
    spec = tmp_path / "rates.net"
    spec.write_text("input 24x24x3\nCONV 3x3 16 pad=1 act=relu - POOL max 2x2/2 - FC 10\n")
    net = netc.compile(str(spec))
    assert main(["bench", str(spec), "--batch", "32", "--iters", "3"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[3:-1]}
    checked = 0
    for node in net.nodes:
        fwd_ms, rate = float(rows[node.name][-3]), rows[node.name][-1]  # (no "runs as" for POOL)
        if node.macs and fwd_ms >= 0.02:  # ms printed to 3 decimals, the rate to 1
            assert float(rate) == pytest.approx(2 * node.macs * 32 / (fwd_ms * 1e-3) / 1e9,
                                                rel=0.05, abs=0.051)
            checked += 1
        elif not node.macs:
            assert rate == "-"
    assert checked >= 1


def test_bench_columns_line_up_with_long_names(capsys, tmp_path):
    """Names of layers in nested blocks, longer than the default column, and two-word algorithms
    ("im2col 1x3": a cut kernel): every row's numbers end where the header's titles do."""
    spec = tmp_path / "long.net"
    spec.write_text("input 1x6x3\nblock inner(c) = RES[CONV 3x3 c pad=1 - RELU]\n"
                    "block mid(c) = RES[inner(c) - inner(c)]\nblock outer(c) = RES[mid(c)]\n"
                    "outer(3) - FC 4\n")
    assert main(["bench", str(spec), "--batch", "2", "--iters", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[2], lines[3:-1]
    assert max(len(r.split()[0]) for r in rows) > 28
    assert any("im2col 1x3" in r for r in rows)
    ends = [header.index(t) + len(t) for t in ("forward ms", "backward ms", "forward GFLOP/s")]
    for row in rows:
        numbers = row.split()[-3:]
        assert all(row[:end].endswith(" " + v) for end, v in zip(ends, numbers)), (row, header)


def test_missing_runtime_says_what_to_install(spec):
    """With only the base install, training says which extra to install (no traceback)."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['numba'] = None\n"  # as if numba were not installed
            "from netc.cli import main\n"
            f"sys.exit(main(['gradcheck', {spec!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2 and "pip install 'netc[run]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_folder_that_cannot_take_the_run_is_refused_before_the_backend_loads(spec, tmp_path):
    """--out naming a folder in use, or --resume one that is no run's: the error comes before
    the CPU backend loads (made unimportable here: loading it first would end in a traceback; on
    a first run it compiles the GEMM tiles), for every command that claims a folder."""
    import subprocess
    import sys
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    commands = [["train", spec, "--out", str(used)],
                ["train", spec, "--resume", str(tmp_path)],
                ["train", spec, "--folds", "2", "--out", str(used)],
                ["train", spec, "--compare", "sgd,adam", "--out", str(used)],
                ["train", spec, "--bagging", "2", "--out", str(used)],
                ["sweep", spec, "--grid", "lr=0.01,0.1", "--out", str(used)]]
    code = ("import sys; sys.modules['netc.runtime.backends.cpu'] = None\n"
            "from netc.cli import main\n"
            f"for argv in {commands!r}:\n"
            "    print(main(argv + ['--quiet'] if argv[0] == 'train' else argv), flush=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2"] * len(commands)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --out: {used} exists and is not empty",
                      f"error: --resume: {tmp_path} is not a netc run folder (no config.json)"
                      ] + [f"error: --out: {used} exists and is not empty"] * 4
    assert sorted(os.listdir(used)) == ["notes.txt"]  # nothing written, not even a lock


def test_bad_environment_setting_is_a_warning_line(spec):
    """A setting netc reads from the environment, given a bad value: one `warning:` line, and the
    command goes on."""
    import os
    import subprocess
    import sys
    code = f"import sys; from netc.cli import main; sys.exit(main(['gradcheck', {spec!r}]))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "NETC_NUM_THREADS": "many"})
    assert proc.returncode == 0, proc.stderr
    assert "warning: NETC_NUM_THREADS='many' is not a whole number >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr and "RuntimeWarning" not in proc.stderr


CLASSIFY = """input 8x8x1
FC 12 act=tanh - OUT 10 softmax
train data=digits epochs=2 batch=64 seed=0
"""
LEAST_SQUARES = """input 6
FC 4 act=tanh - OUT 2
train data=synthetic epochs=2 seed=0
"""


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains_from_the_command_line(name, tmp_path, capsys):
    """`netc train --optimizer NAME` for every name the README lists: classification for the
    first-order methods, L-BFGS and CG; lm and newton on a least-squares network (lm needs a sum of
    squares, newton a Hessian that fits)."""
    spec = tmp_path / "s.net"
    spec.write_text(LEAST_SQUARES if name in ("lm", "newton") else CLASSIFY)
    out = tmp_path / "run"
    assert main(["train", str(spec), "--optimizer", name, "--out", str(out), "--quiet"]) == 0, \
        capsys.readouterr().err
    assert f"; {name} lr=" in capsys.readouterr().out
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    losses = [float(r[2]) for r in rows]
    assert len(losses) == 2 and losses[1] < losses[0], losses
    assert np.isfinite(json.load(open(out / "result.json"))["test_loss"])


def test_device_cuda_without_a_gpu_is_a_clear_error(spec, capsys):
    """Exit 2 with what was looked for and what to do instead; nothing else happens."""
    import importlib.util
    if importlib.util.find_spec("numba_cuda") is not None:
        from numba import cuda
        if cuda.is_available():
            pytest.skip("a GPU is here")
    for argv in (["train", spec, "--device", "cuda", "--quiet"], ["bench", spec, "--device", "cuda"],
                 ["gradcheck", spec, "--device", "cuda"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "error: " in err and "--device cpu" in err and "Traceback" not in err


def test_dropped_paths_train_from_the_command_line(tmp_path, capsys):
    """Stochastic depth and drop-path train (the loss falls) and evaluate deterministically."""
    spec = tmp_path / "sd.net"
    spec.write_text("input 8x8x1\nCONV: 3x3 pad=same act=relu\nCONV 8 - RES[CONV 8 - CONV 8 act=none]x2 - "
                    "POOL - MEAN[CONV 8 - CONV 8 | CONV 8] drop_path=0.3 - GAP - OUT 10 softmax\n"
                    "train data=digits optimizer=adam lr=0.01 batch=64 epochs=3 stochastic_depth=0.5")
    out = str(tmp_path / "run")
    assert main(["train", str(spec), "--out", out, "--quiet"]) == 0
    rows = [line.split(",") for line in open(f"{out}/metrics.csv").read().splitlines()[1:]]
    assert float(rows[-1][2]) < float(rows[0][2]) and float(rows[-1][5]) > 0.25  # chance: 0.1
    capsys.readouterr()
    outputs = []
    for _ in range(2):
        assert main(["eval", str(spec), "--weights", f"{out}/best.npz"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and "samples: loss" in outputs[0]


def test_eval_reads_the_spec_from_the_checkpoint_and_scores_each_class(spec, tmp_path, capsys):
    """`netc eval --weights W` alone; the spec may also follow the weights; the first line
    gains top-5 accuracy (10 classes), then the confusion matrix and precision/recall/F1."""
    out = str(tmp_path / "run")
    assert main(["train", spec, "--out", out, "--epochs", "1", "--quiet"]) == 0
    capsys.readouterr()
    png = tmp_path / "cm.png"
    assert main(["eval", "--weights", f"{out}/best.npz", "-o", str(png)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith("359 samples: loss") and ", top-5 accuracy " in lines[0]
    assert lines[1] == "confusion matrix (rows: true class, columns: predicted)"
    matrix = [[int(v) for v in line.split()[1:]] for line in lines[3:13]]
    assert sum(map(sum, matrix)) == 359
    acc = float(lines[0].split("accuracy ")[1].split("%")[0])
    assert acc == pytest.approx(100 * sum(matrix[i][i] for i in range(10)) / 359, abs=0.01)
    assert "class precision  recall      F1  support" in text and "weighted" in text
    assert png.stat().st_size > 1000 and text.rstrip().endswith(f"confusion matrix: {png}")
    assert main(["eval", "--weights", f"{out}/best.npz", spec, "--top", "2"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(lines[0].split(", top-")[0]) and ", top-2 accuracy " in first
    assert main(["eval", "--weights", f"{out}/best.npz", "-o",
                 str(tmp_path / "no" / "cm.png")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'no' / 'cm.png'}:" in err and ".tmp" not in err


def test_eval_with_a_spec_that_changes_no_parameter_warns(tmp_path, capsys):
    """A DROPOUT rate (or an activation) changes no parameter: the weights evaluate, with a
    warning naming the layer; a different layer width is still a different network."""
    base = "input 8x8x1\nFC 16 act=relu - DROPOUT {} - OUT {} softmax\n" \
           "train data=digits epochs=1 batch=64 optimizer=adam lr=0.01\n"
    trained, other, wider = (tmp_path / f"{n}.net" for n in ("a", "b", "c"))
    trained.write_text(base.format(0.2, 10))
    other.write_text(base.format(0.5, 10))
    wider.write_text(base.replace("FC 16", "FC 20").format(0.2, 10))
    out = str(tmp_path / "run")
    assert main(["train", str(trained), "--out", out, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(other), "--weights", f"{out}/best.npz"]) == 0
    captured = capsys.readouterr()
    assert "dropout1 (p 0.2 -> 0.5)" in captured.err and "samples: loss" in captured.out
    assert main(["eval", str(wider), "--weights", f"{out}/best.npz"]) == 2
    assert "different network" in capsys.readouterr().err


def test_train_save_every_and_eval_of_a_regression(tmp_path, capsys):
    spec = tmp_path / "r.net"
    spec.write_text(LEAST_SQUARES.replace("epochs=2", "epochs=4"))
    out = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(out), "--quiet", "--save-every", "2"]) == 0
    assert {"snapshot_e2.npz", "snapshot_e4.npz"} <= set(os.listdir(out))
    capsys.readouterr()
    assert main(["eval", "--weights", str(out / "snapshot_e2.npz")]) == 0
    assert capsys.readouterr().out.count("\n") == 1  # loss only: no classes to score
    assert main(["eval", "--weights", str(out / "last.npz"), "-o", str(tmp_path / "c.png")]) == 2
    assert "confusion matrix of a classifier" in capsys.readouterr().err


def test_lr_plateau_says_what_the_plot_cannot_know(spec, tmp_path, capsys):
    assert main(["lr", spec, "-o", str(tmp_path / "lr.png"), "--schedule", "plateau"]) == 0
    err = capsys.readouterr().err
    assert "validation loss" in err and "before any reduction" in err
    assert main(["lr", spec, "-o", str(tmp_path / "none" / "lr.png")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'none' / 'lr.png'}:" in err and ".tmp" not in err
