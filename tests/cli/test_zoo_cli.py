"""The model zoo by name on the command line: `netc summary resnet18` from any folder."""
from netc.cli import main


def test_summary_of_a_zoo_spec_by_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["summary", "lenet5"]) == 0
    assert "61,706" in capsys.readouterr().out
    assert main(["summary", "lenet6"]) == 2
    err = capsys.readouterr().err
    assert "no such spec file: lenet6" in err and "did you mean lenet5" in err
    assert "Traceback" not in err
