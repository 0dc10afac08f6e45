"""The .net language: every construct parses to the right tree; syntax errors are clean."""
import re

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


@pytest.mark.parametrize("odd", ["\x0c", "\u2028", "\x1c", "\x85", "\r", "\v"])
def test_carets_count_lines_as_the_parser_does(odd):
    """Only \\n ends a line for Lark (str.splitlines also splits at these): the line shown is the
    one the position is in, its odd characters shown as spaces (one column each)."""
    text = f"input 8x8x1\nCONV 3x3 4{odd} - POOL\nFC 2 - - FC 3\n"
    with pytest.raises(SpecSyntaxError) as e:
        parse(text)
    err = e.value
    assert (err.line, err.column) in ((2, 11), (3, 8))  # odd as a character, or as a blank
    line = text.split("\n")[err.line - 1]
    shown = err.format().splitlines()
    assert shown[1] == "    " + line.replace(odd, " ")
    assert shown[2] == "    " + " " * (err.column - 1) + "^"


def test_a_long_line_is_shown_around_the_caret():
    text = "input 8\n" + "FC 2 - " * 60 + "FC 3 - = FC 2" + " - FC 2" * 60
    with pytest.raises(SpecSyntaxError) as e:
        parse(text)
    src, caret = e.value.format().splitlines()[1:3]
    assert src.startswith("    ...") and src.endswith("...") and len(src) < 120
    assert caret.strip() == "^" and src[caret.index("^") - 7:].startswith("FC 3 - = FC 2")


@pytest.mark.parametrize("text,col,words", [
    ("FC " + "9" * 5000, 4, "the integer 999999999999...9999 (5000 digits) is too large"),
    ("FC 9223372036854775808", 4, "the integer 9223372036854775808 is too large"),
    ("POOL " + "9" * 400, 6, "(400 digits) is too large"),
    ("CONV 3x" + "9" * 30 + " 4", 6, "too large"),
    ("FC 2 x" + "9" * 30, 6, "too large"),
    ("LEAKY 1e400", 7, "the number 1e400 is too large for a float"),
])
def test_numbers_out_of_range_are_syntax_errors(text, col, words):
    with pytest.raises(SpecSyntaxError) as e:
        parse("input 8x8x1\n" + text)
    assert (e.value.line, e.value.column) == (2, col) and words in e.value.message
    assert "2^63 - 1" in e.value.hint or "1.8e308" in e.value.hint
    assert parse("input 8\nFC 9223372036854775807").body[0].elements[0].item.args[0].value == 2**63 - 1
    with pytest.raises(SpecSyntaxError, match="too large"):
        parse("input " + "9" * 5000)


def test_brackets_nest_at_most_max_nesting_deep():
    from netc.dsl.parser import MAX_NESTING
    parse("input 8\n" + "[" * MAX_NESTING + "FC 2" + "]" * MAX_NESTING)
    text = "input 8\n# [[[[ a comment\n" + "RES[" * (MAX_NESTING + 1) + "FC 2" + "]" * (MAX_NESTING + 1)
    with pytest.raises(SpecSyntaxError, match=f"nested more than {MAX_NESTING} deep") as e:
        parse(text)
    assert (e.value.line, e.value.column) == (3, 4 * MAX_NESTING + 4)  # the 51st `[`
    with pytest.raises(SpecSyntaxError, match="nested"):  # lists nest too
        parse("input 8\nFC 2\ntrain freeze=" + "[" * 200 + "]" * 200)


def test_a_spec_longer_than_max_text_is_refused():
    from netc.dsl.parser import MAX_TEXT
    with pytest.raises(SpecSyntaxError, match=f"at most {MAX_TEXT:,}"):
        parse("input 8\nFC 2\n" + "#" * MAX_TEXT)


def test_parsing_runs_no_cycle_collection():
    """The parse tree grows by many small objects: Python's cycle collector walked all of them
    again and again, which made parsing long specs superlinear. It is paused while parsing (and
    runs at most once, after)."""
    import gc
    runs = []

    def count(phase, info):
        if phase == "start":
            runs.append(info["generation"])
    gc.callbacks.append(count)
    try:
        parse("input 8\n" + " - ".join(["FC 2 act=relu"] * 3000))
    finally:
        gc.callbacks.remove(count)
    assert len(runs) <= 1 and gc.isenabled()


# ---- pasted characters, other tools' notation, sizes with spaces ---------------------------------
@pytest.mark.parametrize("sep", ["\u2013", "\u2014", "\u2010", "\u2011", "\u2012", "\u2015",
                                 "\u27f6", "\u21d2", "\u27f9", "\u2794", "\u279c", "\u27a1"])
def test_pasted_dashes_and_arrows_are_separators(sep):
    spec = parse(f"input 8\nFC 4 {sep} FC 3 {sep}\n  OUT 2\n")
    assert [e.item.kind for e in spec.body[0].elements] == ["FC", "FC", "OUT"]


def test_pasted_spaces_times_signs_and_a_byte_order_mark():
    spec = parse("\ufeffinput\u00a08x8x1\n"
                 "CONV\u202f3\u00d73\u2009 4 \u00d72 - POOL\u00a0x\u00a02\n")
    assert spec.input == (8, 8, 1) and spec.input_pos == ast.Pos(1, 7, 5)
    conv, pool = spec.body[0].elements
    assert conv.item.args[0].value == ast.Dims((3, 3)) and conv.repeat == 2
    assert pool.repeat == 2


@pytest.mark.parametrize("text,col,message,hint", [
    ('FC 2\ntrain data=\u201cx.npz\u201d', 12,
     "unexpected character '\u201c' (a typographic quote)",
     'strings take straight double quotes: `data="train.npz"`'),
    ("FC 2\ntrain data='x.npz'", 12, "unexpected character \"'\"",
     'strings take double quotes: `data="train.npz"`'),
    ("FC 4 \u2212 FC 2", 6, "unexpected character '\u2212' (U+2212 MINUS SIGN)",
     "write `-`: a separator between layers, or the sign of an exponent (1e-3)"),
    ("FC 4 \u00e9", 6, "unexpected character '\u00e9' (U+00E9 LATIN SMALL LETTER E WITH ACUTE)",
     "outside comments and strings netc reads ASCII, plus the separators \u2192 and the pasted "
     "dashes and arrows README lists: was it pasted from a document? Retype it"),
])
def test_pasted_characters_that_are_not_read(text, col, message, hint):
    with pytest.raises(SpecSyntaxError) as e:
        parse("input 8\n" + text)
    err = e.value
    assert (err.line, err.column) == (text.count("\n") + 2, col), err.format()
    assert (err.message, err.hint) == (message, hint)


def test_a_comment_or_string_may_hold_any_character():
    spec = parse('input 8  # caf\u00e9 \u2013 na\u00efve \u201cquoted\u201d\nFC 2\n'
                 'train data="d\u00e9j\u00e0 vu.npz"')
    assert spec.train[0].value == "d\u00e9j\u00e0 vu.npz"


@pytest.mark.parametrize("text,col,width,message,hint", [
    ("Conv2D(64, 3)", 1, 6, "`Conv2D(64, 3)` is Keras notation", "in netc: `CONV 3x3 64`"),
    ("layers.Conv2D(32, (5, 5), strides=(2, 2), padding='same', activation='relu')", 1, 13,
     "`layers.Conv2D(...)` is Keras notation",
     "in netc: `CONV 5x5/2 32 pad=same act=relu`"),
    ("nn.Conv2d(1, 6, kernel_size=5, padding=2)", 1, 9,
     "`nn.Conv2d(...)` is PyTorch notation",
     "in netc: `CONV 5x5 6 pad=2`"),
    ("FC 4 - nn.Linear(4, 10)", 8, 9, "`nn.Linear(4, 10)` is PyTorch notation",
     "in netc: `FC 10`"),
    ("Dense(10, activation='relu')", 1, 5, "is Keras notation", "in netc: `FC 10 act=relu`"),
    ("MaxPooling2D(pool_size=(2, 2))", 1, 12, "is Keras notation", "in netc: `POOL max 2x2`"),
    ("nn.MaxPool2d(3, stride=2)", 1, 12, "is PyTorch notation", "in netc: `POOL max 3x3/2`"),
    ("Dropout(0.5)", 1, 7, "`Dropout(0.5)` is Keras and PyTorch notation", "in netc: `DROPOUT 0.5`"),
    ("Conv2D(filters, 3)", 1, 6, "is Keras notation", "in netc: `CONV 3x3 64`"),
    ("CONV(64, 3)", 5, 1, "`CONV(`: netc layers take no parentheses",
     "a layer's arguments follow its kind, without parentheses or commas: `CONV 3x3 64`, "
     "`FC 10`, `POOL max 2x2/2`"),
    ("Sequential(FC 2)", 1, 10, "`Sequential(FC 2)` is Python, not the .net language",
     "; a block is used as `name(args)` with a lower-case name"),
])
def test_keras_and_pytorch_layers_get_the_netc_spelling(text, col, width, message, hint):
    with pytest.raises(SpecSyntaxError) as e:
        parse("input 8x8x1\n" + text)
    err = e.value
    assert (err.line, err.column, err.width) == (2, col, width), err.format()
    assert message in err.message and hint in err.hint, err.format()


@pytest.mark.parametrize("text,col,message,hint", [
    ("CONV 3 x 3 64", 6, "`3 x 3` is read as a repeat (x3), so `64` cannot follow it",
     "a size is written without spaces: `CONV 3x3 64`"),
    ("CONV 5 x 5 /2 64 - POOL", 6, "`5 x 5` is read as a repeat (x5), so `/2` cannot follow it",
     "a size is written without spaces: `CONV 5x5/2 64`"),
    ("POOL max 3 \u00d7 3 /2", 10, "`3 \u00d7 3` is read as a repeat (x3)", "`POOL max 3x3/2`"),
    ("CONV 7x 7 act=relu", 6, "so `act=relu` cannot follow it", "`CONV 7x7 act=relu`"),
])
def test_a_size_written_with_spaces_followed_by_arguments(text, col, message, hint):
    with pytest.raises(SpecSyntaxError) as e:
        parse("input 8x8x1\n" + text)
    err = e.value
    assert (err.line, err.column) == (2, col) and message in err.message and hint in err.hint
    size = re.search("[0-9]+ ?[x\u00d7] ?[0-9]+", text).group()
    assert err.format().splitlines()[2].strip() == "^" * len(size)


def test_parser_tables_are_cached_in_the_user_cache_folder(tmp_path, monkeypatch):
    """Built once per machine (about 0.3 s), then loaded (about 0.01 s); a cache folder that
    cannot be made only costs the time."""
    import os

    from netc.dsl import parser
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    try:
        parser._parser.cache_clear()
        built = parser._parser()
        (cached,) = (tmp_path / "netc").glob("grammar-*.lark")
        os.utime(cached, (1, 1))
        parser._parser.cache_clear()
        loaded = parser._parser()
        assert cached.stat().st_mtime == 1  # read, not written again
        text = "input 8\nFC 4 - [FC 3]x2 - OUT 2"
        assert loaded.parse(text) == built.parse(text) and loaded is not built
        (tmp_path / "file").write_text("")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
        parser._parser.cache_clear()
        assert parser._parser().parse(text) == built.parse(text)
    finally:
        parser._parser.cache_clear()
        parser._catalogue_states.cache_clear()


def test_spec_files_are_decoded_as_utf8_or_utf16_with_its_mark():
    import io

    from netc.dsl.text import decode, read
    text = "input 8  # \u00e9\nFC 2 \u2013 OUT 2\n"
    for data in (text.encode(), b"\xef\xbb\xbf" + text.encode(), text.encode("utf-16"),
                 text.encode("utf-16-be").join([b"\xfe\xff", b""])):
        assert decode(data) == text
    # the start of a longer file may cut its last character in two
    assert read(io.BytesIO(("\u00e9" * 9).encode()), "f.net", 2) == "\u00e9\u00e9"
    assert read(io.BytesIO("ab\u20ac".encode()), "f.net", 1) == "a"
    with pytest.raises(SpecSyntaxError) as e:
        decode(b"input 8\nFC 2 \x96 OUT 2\n", "w.net")  # Windows-1252's en dash
    err = e.value
    assert (err.line, err.column, err.source.filename) == (2, 6, "w.net")
    assert err.message == ("byte 0x96 is not UTF-8 ('\u2013' in Latin-1 or Windows-1252): the "
                           "file is not saved as UTF-8")
    assert err.hint == ("save it as UTF-8 (Notepad: Save As, Encoding UTF-8), or convert it: "
                        "iconv -f cp1252 -t utf-8 OLD.net > NEW.net")
    assert err.format().splitlines()[1:] == ["    FC 2 \ufffd OUT 2", "         ^",
                                             "hint: " + err.hint]
