"""What netc.compile makes of a string: a file's path, a zoo spec's name (where no such file
exists), or the spec's text; a path that is not a file is "no such spec file" with a hint."""
import os

import pytest

import netc
from netc import SpecError
from netc.compiler import zoo

from ..conftest import ROOT

SPECS = os.path.join(ROOT, "specs")


def missing(spec):
    with pytest.raises(SpecError) as e:
        netc.compile(spec)
    assert e.value.message == f"no such spec file: {spec}"
    return e.value.hint


def test_zoo_names_resolve_where_no_such_file_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    want = netc.compile(os.path.join(SPECS, "resnet18.net"))
    for name in ("resnet18", "resnet18.net"):
        net = netc.compile(name)
        assert net.spec_hash == want.spec_hash and net.total_params == 11_689_512
    assert set(zoo.names()) == {f[:-4] for f in os.listdir(SPECS) if f.endswith(".net")}
    # a file of that name wins over the zoo's
    (tmp_path / "resnet18.net").write_text("input 4\nFC 3")
    assert netc.compile("resnet18.net").total_params == 15
    assert netc.compile("resnet18").total_params == 11_689_512  # no file "resnet18"


def test_a_path_that_is_not_a_file_says_so_with_a_did_you_mean(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "mine.net").write_text("input 4\nFC 3")
    assert missing("specs/mine") == "did you mean specs/mine.net?"  # was "unexpected '/'"
    assert "did you mean digits" in missing("specs/digits")
    assert "did you mean resnet18" in missing("resnet19")
    assert "did you mean resnet18" in missing("specs/resnet18.net")  # the zoo by name only
    hint = missing("nothing_like_it.net")
    assert hint.startswith("check the path; netc's zoo, by name: ") and "lenet5" in hint


def test_text_is_still_text():
    assert netc.compile("input 4\nFC 3").total_params == 15
    with pytest.raises(SpecError) as e:  # one line that is a spec's text, not a path
        netc.compile("input 8x8x1 - FC 10")
    assert "no such spec file" not in e.value.message
