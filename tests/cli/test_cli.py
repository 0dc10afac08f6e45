"""The command line: exit codes, output, errors without tracebacks, drawing."""
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from netc.cli import main


def run(capsys, *argv, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_is_silent_on_success(capsys, spec_path):
    assert run(capsys, "check", spec_path("lenet5")) == (0, "", "")


def test_check_error_exit_2_without_traceback(capsys, tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("input 7x7x3\nCONV 3x3/3 4\n")
    code, out, err = run(capsys, "check", str(bad))
    assert code == 2 and out == ""
    assert err.startswith(f"{bad}:2:6: error:") and "Traceback" not in err


def test_check_reads_stdin(capsys, monkeypatch):
    assert run(capsys, "check", "-", stdin="input 8\nFC 2\n", monkeypatch=monkeypatch)[0] == 0
    code, _, err = run(capsys, "check", "-", stdin="input 8\nFC 0\n", monkeypatch=monkeypatch)
    assert code == 2 and err.startswith("<stdin>:2:4:")


def test_warnings_go_to_stderr(capsys):
    code, out, err = run(capsys, "check", "-", stdin="input 9x9x1\nPOOL\n",
                         monkeypatch=pytest.MonkeyPatch())
    assert code == 0 and out == "" and "warning: pool1: pooling drops" in err


def test_summary_table(capsys, spec_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    code, out, _ = run(capsys, "summary", spec_path("vgg16"), "--batch", "4")
    assert code == 0
    assert "138,357,544" in out and "15,470,264,320" in out and "15,237,608" in out
    row = next(line for line in out.splitlines() if line.startswith("conv1 "))
    assert "224x224x64" in row and "1,792" in row and "86,704,128" in row
    assert "at batch 4" in out


def test_summary_depth_folds(capsys, spec_path):
    _, out, _ = run(capsys, "summary", spec_path("resnet50"), "--depth", "1")
    assert "bottleneck16 " in out and "bottleneck16.res1" not in out


def test_summary_json(capsys, spec_path):
    code, out, _ = run(capsys, "summary", spec_path("lenet5"), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["network"] == "LeNet5" and doc["total_macs"] == 416_520
    assert doc["layers"][1]["output_shape"] == [6, 28, 28]


def test_summary_fits_the_terminal(capsys, spec_path, monkeypatch):
    """COLUMNS (or the terminal, or 100 columns) unless --width says; --width 0: no limit."""
    monkeypatch.setenv("COLUMNS", "80")
    _, out, _ = run(capsys, "summary", spec_path("resnet50"), "--no-warn")
    assert max(map(len, out.splitlines())) <= 80 and "not shown, to fit 80 columns" in out
    _, out, _ = run(capsys, "summary", spec_path("resnet50"), "--no-warn", "--width", "64")
    assert max(map(len, out.splitlines())) <= 64
    _, out, _ = run(capsys, "summary", spec_path("resnet50"), "--no-warn", "--width", "0")
    assert max(map(len, out.splitlines())) > 100 and "not shown" not in out
    monkeypatch.delenv("COLUMNS")
    _, out, _ = run(capsys, "summary", spec_path("resnet50"), "--no-warn")  # not a terminal
    assert max(map(len, out.splitlines())) <= 100


def test_summary_json_depth_folds_the_layers(capsys, spec_path):
    full = json.loads(run(capsys, "summary", spec_path("resnet18"), "--json", "--no-warn")[1])
    _, out, _ = run(capsys, "summary", spec_path("resnet18"), "--json", "--depth", "1", "--no-warn")
    folded = json.loads(out)
    assert len(folded["layers"]) == 15 < len(full["layers"]) and folded["depth"] == 1
    assert folded["total_params"] == full["total_params"] == 11_689_512
    assert sum(e["params"] for e in folded["layers"]) == 11_689_512


def test_summary_trains_as_the_spec_says(capsys, tmp_path):
    spec = tmp_path / "frozen.net"
    spec.write_text("input 32x32x3\nCONV 3x3 16 - POOL - FC 10\n"
                    "train freeze=[conv1] optimizer=adam batch=8\n")
    _, out, _ = run(capsys, "summary", str(spec), "--width", "0")
    assert "trainable params              36,010" in out and "non-trainable params" in out
    assert "at batch 8 with adam" in out
    _, out, _ = run(capsys, "summary", str(spec), "--width", "0", "--batch", "2",
                    "--optimizer", "sgd")
    assert "at batch 2 with sgd" in out
    doc = json.loads(run(capsys, "summary", str(spec), "--json")[1])
    assert doc["trainable_params"] == 36_010 and doc["memory"]["optimizer"] == "adam"


def test_bad_cli_arguments_exit_2(capsys, spec_path):
    with pytest.raises(SystemExit) as e:
        main(["summary", spec_path("lenet5"), "--batch", "0"])
    assert e.value.code == 2
    assert "positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["summary", spec_path("lenet5"), "--width", "-1"])
    assert e.value.code == 2 and "number of columns" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["svg", "png", "pdf", "dot"])
def test_draw_formats(capsys, spec_path, tmp_path, fmt):
    if fmt != "dot" and shutil.which("dot") is None:
        pytest.skip("Graphviz dot is not installed")
    out = tmp_path / f"net.{fmt}"
    assert run(capsys, "draw", spec_path("googlenet"), "-o", str(out), "--depth", "1",
               "--no-warn")[0] == 0
    data = out.read_bytes()
    magic = {"svg": b"<?xml", "png": b"\x89PNG", "pdf": b"%PDF", "dot": b"digraph"}[fmt]
    assert data.startswith(magic)
    assert not (tmp_path / f"net.{fmt}.tmp").exists()


def test_every_spec_draws_to_svg_and_png(tmp_path):
    """Every spec of the zoo renders (SVG and PNG with dot; the DOT source without it)."""
    import glob
    from netc.compiler import compile as compile_spec
    from netc.compiler import draw
    have_dot = shutil.which("dot") is not None
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for path in sorted(glob.glob(os.path.join(root, "specs", "*.net"))):
        net = compile_spec(path)
        for fmt in (("svg", "png") if have_dot else ("dot",)):
            out = draw.render(net, str(tmp_path / f"n.{fmt}"), depth=None if len(net.graph) < 120 else 2)
            assert os.path.getsize(out) > 500, path


def test_draw_dot_shows_clusters_and_shapes(capsys, spec_path, tmp_path):
    out = tmp_path / "r.dot"
    run(capsys, "draw", spec_path("resnet18"), "-o", str(out), "--rankdir", "LR", "--no-warn")
    text = out.read_text()
    assert "rankdir=LR" in text and "cluster_basic3" in text and 'label="56x56x64"' in text
    assert "CONV 3x3/2 128" in text


def test_draw_unknown_format(capsys, spec_path, tmp_path):
    code, _, err = run(capsys, "draw", spec_path("lenet5"), "-o", str(tmp_path / "x.jpg"))
    assert code == 2 and "unknown format 'jpg'" in err


def test_draw_without_graphviz_says_what_to_install(tmp_path, spec_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no `dot` on this PATH
    out = tmp_path / "x.svg"
    proc = subprocess.run([sys.executable, "-m", "netc", "draw", spec_path("lenet5"), "-o", str(out)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "apt-get install graphviz" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    proc = subprocess.run([sys.executable, "-m", "netc", "draw", spec_path("lenet5"), "-o",
                           str(tmp_path / "x.dot")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and (tmp_path / "x.dot").exists()


def test_summary_check_draw_never_import_numba(spec_path, tmp_path):
    code = (
        "import sys; from netc.cli import main\n"
        f"main(['summary', {spec_path('resnet18')!r}, '--no-warn'])\n"
        f"main(['check', {spec_path('resnet18')!r}, '--no-warn'])\n"
        f"main(['draw', {spec_path('lenet5')!r}, '-o', {str(tmp_path / 'a.dot')!r}])\n"
        "assert 'numba' not in sys.modules, 'numba imported'\n"
        "assert 'onnx' not in sys.modules, 'onnx imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
