"""The .net language: every construct parses to the right tree; syntax errors are clean."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netc.dsl import SpecError, SpecSyntaxError, ast, parse
from netc.dsl.parser import _CATALOGUE


def first_layer(text):
    spec = parse("input 8x8x1\n" + text)
    return spec.body[0].elements[0]


def test_header_statements():
    spec = parse("network LeNet5\ninput 227x227x3\nCONV 3x3 8\n")
    assert spec.name == "LeNet5" and spec.input == (227, 227, 3)
    assert parse("input 784\nFC 10").input == (784,)


def test_positional_and_keyword_arguments():
    el = first_layer("CONV 11x11/4 96 pad=2 groups=2 act=relu name=c1")
    layer = el.item
    assert layer.kind == "CONV"
    assert layer.args[0].value == ast.Strided(ast.Dims((11, 11)), 4)
    assert layer.args[1].value == 96
    assert [(a.key, a.value) for a in layer.args[2:4]] == [("pad", 2), ("groups", 2)]
    assert layer.args[4].value == ast.Name("relu") and layer.args[5].value == ast.Name("c1")


@pytest.mark.parametrize("text,kind,repeat", [
    ("CONV 64 x2", "CONV", 2), ("FC 4096 x2", "FC", 2), ("FC x 3", "FC", 3), ("CONVx2", "CONV", 2),
])
def test_layer_repeats(text, kind, repeat):
    el = first_layer(text)
    assert el.item.kind == kind and el.repeat == repeat


def test_glued_group_repeat():
    el = first_layer("[CONVx2-POOL]x3")
    assert isinstance(el.item, ast.Group) and el.repeat == 3
    inner = el.item.chain.elements
    assert inner[0].item.kind == "CONV" and inner[0].repeat == 2 and inner[1].item.kind == "POOL"


@pytest.mark.parametrize("sep", ["-", "->", "→"])
def test_separators_and_continuation(sep):
    spec = parse(f"input 8\nFC 4 {sep}\n  FC 3 {sep} OUT 2\n")
    assert [e.item.kind for e in spec.body[0].elements] == ["FC", "FC", "OUT"]


def test_comments_and_blank_lines():
    spec = parse("# a comment\n\ninput 8  # trailing\n\nFC 2 # here too\n# end\n")
    assert spec.input == (8,) and len(spec.body) == 1


def test_defaults_blocks_branches():
    spec = parse("input 8x8x3\nCONV: 3x3/1 pad=same act=relu\n"
                 "block basic(c, s=1) = RES[CONV 3x3/s c - BN - CONV c*2] act=none\n"
                 "basic(4, s=2) - CONCAT[CONV 1x1 2 | POOL] - DENSE[BN]\n")
    assert isinstance(spec.body[0], ast.Default) and spec.body[0].kind == "CONV"
    block = spec.blocks["basic"]
    assert [p.name for p in block.params] == ["c", "s"] and block.params[1].default == 1
    res = block.body.elements[0].item
    assert res.kind == "RES" and res.args[0].key == "act"
    assert res.chains[0].elements[2].item.args[0].value == ast.Product((ast.Name("c"), 2))
    chain = spec.body[1].elements
    assert isinstance(chain[0].item, ast.Call) and chain[0].item.args[1].key == "s"
    assert chain[1].item.kind == "CONCAT" and len(chain[1].item.chains) == 2
    assert chain[2].item.kind == "DENSE"


def test_train_section():
    spec = parse("input 8\nFC 2\ntrain optimizer=adam lr=1e-3\n  betas=[0.9, 0.999] data=\"x.npz\"\n")
    assert {a.key: a.value for a in spec.train} == {
        "optimizer": ast.Name("adam"), "lr": 1e-3, "betas": (0.9, 0.999), "data": "x.npz"}


def test_setting_outside_train_is_an_error():
    with pytest.raises(SpecSyntaxError) as e:
        parse("input 8\nlr=0.1\nFC 2")
    assert e.value.line == 2 and "train" in e.value.hint


def test_positions_are_kept():
    spec = parse("input 8x8x1\n\n  CONV 3x3 8 pad=1\n")
    layer = spec.body[0].elements[0].item
    assert (layer.pos.line, layer.pos.column) == (3, 3)
    assert (layer.args[2].pos.line, layer.args[2].pos.column) == (3, 14)


@pytest.mark.parametrize("message,snippet", [(m, s) for m, ss in _CATALOGUE.items() for s in ss])
def test_catalogued_snippets_get_their_message(message, snippet):
    with pytest.raises(SpecSyntaxError) as e:
        parse(snippet)
    assert e.value.hint == message


def test_syntax_error_shows_line_column_and_caret():
    with pytest.raises(SpecSyntaxError) as e:
        parse("input 8x8x1\nCONV 3x3 8 - - POOL\n", "net.net")
    err = e.value
    assert (err.line, err.column) == (2, 14)
    text = err.format()
    assert text.startswith("net.net:2:14: error:")
    assert "    CONV 3x3 8 - - POOL\n                 ^" in text
    assert "separators" in err.hint


def test_duplicate_header_lines():
    with pytest.raises(SpecSyntaxError, match="given twice"):
        parse("input 8\ninput 9\nFC 2")
    with pytest.raises(SpecSyntaxError, match="block b"):
        parse("input 8\nblock b() = FC 2\nblock b() = FC 3\nb")


_ALPHABET = st.sampled_from(list("CONVPOLFDxy0123456789[]()-=,|/*:. \n#\"") +
                            ["CONV", "POOL", "FC", "RES[", "->", "→", "x2", "input 8x8x1\n", "pad="])


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=40).map("".join))
def test_random_text_never_crashes(text):
    """Random text either compiles or raises a clean SpecError: never anything else."""
    import netc
    try:
        netc.compile(text + "\n")
    except SpecError as e:
        assert e.format()
