"""`netc draw`: Graphviz's warnings and netc's folding as `warning:` lines, --depth 0, and the
default output file."""
import pytest

from netc.cli import main
from tests.cli.test_draw_unroll import parse
from tests.compiler.test_draw import ROOT, fake_dot


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def spec(name):
    return f"{ROOT}/specs/{name}.net"


def test_graphviz_warnings_are_warning_lines(capsys, tmp_path, monkeypatch):
    fake_dot(tmp_path, monkeypatch, "dot: graph is too large for cairo-renderer bitmaps. "
                                    "Scaling by 0.677 to fit")
    code, _, err = run(capsys, "draw", spec("lenet5"), "-o", str(tmp_path / "n.png"))
    assert code == 0 and err == ("warning: Graphviz: graph is too large for cairo-renderer "
                                 "bitmaps. Scaling by 0.677 to fit (fold blocks with --depth K, "
                                 "or draw to .svg, which is not scaled)\n")


def test_a_tall_png_is_folded_with_a_warning(capsys, tmp_path, monkeypatch):
    fake_dot(tmp_path, monkeypatch, "")
    code, _, err = run(capsys, "draw", spec("densenet121"), "-o", str(tmp_path / "d.png"),
                       "--no-warn")
    assert code == 0 and err.startswith("warning: DenseNet121: 427 layers from input to output "
                                        "make a .png too tall to read: drawn with blocks folded, "
                                        "as --depth 2 (--depth 0 draws every layer")


def test_depth_0_draws_every_layer(capsys, tmp_path):
    out = tmp_path / "d.dot"
    assert run(capsys, "draw", spec("densenet121"), "-o", str(out), "--depth", "0",
               "--no-warn")[:2] == (0, "")
    nodes, _ = parse(out.read_text())
    assert len(nodes) == 427
    with pytest.raises(SystemExit) as e:
        main(["draw", spec("lenet5"), "-o", str(out), "--depth", "-1"])
    assert e.value.code == 2 and "0 (every layer) or a positive" in capsys.readouterr().err


def test_without_o_it_writes_the_spec_name_svg_here(capsys, tmp_path, monkeypatch):
    fake_dot(tmp_path, monkeypatch, "")
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "draw", spec("lenet5")) == (0, "lenet5.svg\n", "")
    assert (tmp_path / "lenet5.svg").read_text() == "<svg/>\n"
