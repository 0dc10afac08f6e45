"""Text -> Spec. The grammar is dsl/net.lark (LALR, positions propagated); the Transformer keeps
one small method per rule; syntax errors are matched against a catalogue of known-bad snippets."""
from __future__ import annotations

import gc
import hashlib
import math
import os
import re
import sys
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources

import lark
from lark import Lark, Token, Transformer, UnexpectedCharacters, UnexpectedInput, v_args
from lark.exceptions import UnexpectedEOF, UnexpectedToken, VisitError

from . import ast, hints
from .errors import Source, SpecError, SpecSyntaxError

# the largest integer a spec may write (int64, the runtime's sizes and indices)
MAX_INT = 2**63 - 1
# how deep `[` may nest (groups, branches, lists): far beyond any real network, well within
# Python's recursion limit
MAX_NESTING = 50
# the longest spec read, in characters (a chain of 10,000 layers written out is about 300,000)
MAX_TEXT = 1_000_000


@lru_cache(maxsize=1)
def _parser() -> Lark:
    """The LALR parser of net.lark. Building its tables takes about 0.3 s, so they are kept in the
    user's cache folder (Lark's own cache, checked against the grammar, Lark's and Python's
    versions); without a writable cache folder they are built in every process."""
    grammar = resources.files(__package__).joinpath("net.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False,
                source_path="net.lark", cache=_cache_file(grammar) or False)


def _cache_file(grammar: str) -> str | None:
    """$XDG_CACHE_HOME/netc (else ~/.cache/netc)/grammar-HASH.lark, named after what the tables
    depend on, so that two versions of netc do not overwrite each other's; None where the folder
    cannot be made."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256(f"{grammar}{lark.__version__}{sys.version_info[:2]}".encode()).hexdigest()
    try:
        os.makedirs(os.path.join(base, "netc"), exist_ok=True)
    except OSError:
        return None
    return os.path.join(base, "netc", f"grammar-{key[:16]}.lark")


def _pos(meta_or_token, width=None) -> ast.Pos:
    if isinstance(meta_or_token, Token):
        return ast.Pos(meta_or_token.line, meta_or_token.column, len(meta_or_token))
    m = meta_or_token
    if width is None:
        width = m.end_column - m.column if m.end_line == m.line else 1
    return ast.Pos(m.line, m.column, width)


def _int(tok: Token, digits: str | None = None) -> int:
    """An integer token (or `digits`, a part of it) as an int, at most MAX_INT."""
    digits = (str(tok) if digits is None else digits).lstrip("0") or "0"
    if len(digits) > len(str(MAX_INT)) or int(digits) > MAX_INT:
        shown = digits if len(digits) <= 24 else f"{digits[:12]}...{digits[-4:]} ({len(digits)} digits)"
        raise SpecSyntaxError(f"the integer {shown} is too large",
                              f"integers in a spec are at most 2^63 - 1 ({MAX_INT:,})",
                              line=tok.line, column=tok.column, width=len(tok))
    return int(digits)


def _sizes(tok: Token) -> tuple:
    """`227x227x3` (or `3×3`) -> (227, 227, 3)."""
    return tuple(_int(tok, s) for s in re.split("[x×]", str(tok)))


@v_args(meta=True)
class _ToAst(Transformer):
    def int(self, meta, c):
        return _int(c[0])

    def float(self, meta, c):
        value = float(c[0])
        if math.isinf(value):
            raise SpecSyntaxError(f"the number {str(c[0])[:24]} is too large for a float",
                                  "numbers in a spec are at most about 1.8e308",
                                  line=c[0].line, column=c[0].column, width=len(c[0]))
        return value

    def dims(self, meta, c):
        return ast.Dims(_sizes(c[0]))

    def strided(self, meta, c):
        return ast.Strided(ast.Dims(_sizes(c[0])), c[1])

    def name(self, meta, c):
        return ast.Name(str(c[0]))

    def string(self, meta, c):
        return str(c[0])[1:-1]

    def list(self, meta, c):
        return tuple(c)

    def product(self, meta, c):
        return ast.Product(tuple(c))

    def kwarg(self, meta, c):
        return ast.Arg(str(c[0]), c[1], _pos(c[0]))

    def arg(self, meta, c):
        return c[0] if isinstance(c[0], ast.Arg) else ast.Arg(None, c[0], _pos(meta))

    def layer(self, meta, c):
        return ast.Layer(str(c[0]), tuple(c[1:]), _pos(c[0]))

    def default(self, meta, c):
        return ast.Default(str(c[0]), tuple(c[1:]), _pos(c[0]))

    def call(self, meta, c):
        return ast.Call(str(c[0]), tuple(c[1:]), _pos(c[0]))

    def bare_call(self, meta, c):
        return ast.Call(str(c[0]), (), _pos(c[0]))

    def group(self, meta, c):
        return ast.Group(c[0], _pos(meta, 1))

    def branch(self, meta, c):
        chains = tuple(x for x in c[1:] if isinstance(x, ast.Chain))
        args = tuple(x for x in c[1:] if isinstance(x, ast.Arg))
        return ast.Branch(str(c[0]), chains, args, _pos(c[0]))

    def element(self, meta, c):
        item = c[0]
        if len(c) == 2:
            tok = c[1]
            count = re.search("[0-9]+$", str(tok)).group()
            return ast.Element(item, _int(tok, count), item.pos, _pos(tok))
        return ast.Element(item, 1, item.pos)

    def chain(self, meta, c):
        return ast.Chain(tuple(c), _pos(meta, 1))

    def param(self, meta, c):
        return ast.Param(str(c[0]), c[1] if len(c) > 1 else None, _pos(c[0]))

    def block(self, meta, c):
        name, *params, body = c
        return ast.Block(str(name), tuple(params), body, _pos(name))

    def network(self, meta, c):
        return ("network", str(c[0]), _pos(c[0]))

    def input(self, meta, c):
        if len(c) == 2:  # `input seq TxD`
            if str(c[0]) != "seq":
                raise SpecSyntaxError(f"`input {c[0]}`: the only word `input` takes is `seq`",
                                      "images: `input HxWxC`; vectors: `input N`; sequences of T "
                                      "steps of D features: `input seq TxD`",
                                      line=c[0].line, column=c[0].column, width=len(c[0]))
            return ("input", ("seq",) + _sizes(c[1]), _pos(c[1]))
        return ("input", _sizes(c[0]), _pos(c[0]))

    def train(self, meta, c):
        return ("train", tuple(c), _pos(meta, 5))

    def setting(self, meta, c):
        return ("setting", tuple(c), _pos(meta))

    def start(self, meta, c):
        return list(c)


# Known-bad snippets -> what to tell the user. Each snippet is also a test (tests/dsl).
_CATALOGUE = {
    "an argument cannot start a line: write the layer kind first, e.g. `CONV 3x3 64`": [
        "3x3 64", "64", "0.5", "input 8\n3x3 64", "input 8\n64 - FC 2",
    ],
    "layer kinds are upper-case (CONV, POOL, FC, OUT ...); lower-case names are blocks and need "
    "`(...)` after them when given arguments": [
        "conv 3x3", "fc 10", "pool max",
    ],
    "two separators in a row: a layer is missing between them": [
        "CONV 3x3 8 - - POOL", "CONV 3x3 8 -> -> POOL", "FC 10 - -> OUT 2",
    ],
    "an unclosed `[`: every `[` needs its `]`": [
        "[CONV 3x3 8 - POOL", "RES[CONV 3x3 8", "[CONV 3x3 8 - POOL\n",
    ],
    "a `]` with no `[` before it": [
        "CONV 3x3 8]", "CONV 3x3 8 - POOL]x2",
    ],
    "the chain ends in a separator: a layer is missing after it": [
        "CONV 3x3 8 -", "CONV 3x3 8 ->", "CONV 3x3 8 -\n", "CONV 3x3 8 ->\n",
    ],
    "a repeat `xN` ends its layer: write the arguments before it, e.g. `CONV 3x3 64 x2`": [
        "FC 10 x2 64", "CONV 3x3 x2 64", "FC 10 x2 act=relu",
    ],
    "`x` repeats need a count: write `x2`, `x 3`": [
        "[CONV 3x3 8]x", "[CONV 3x3 8] x",
    ],
    "a key needs a value after `=`: e.g. `pad=1`, `act=relu`": [
        "CONV 3x3 8 pad=", "CONV 3x3 8 act= - POOL",
    ],
    "`input` takes the size as HxWxC (227x227x3), N for vectors, or seq TxD for sequences": [
        "input", "input relu", "input 3 x 32",
    ],
    "`network` takes a name made of letters, digits and `_`: `network LeNet5`": [
        "network", "network 5",
    ],
}


def _state(err):
    st = getattr(err, "state", None)
    tok = getattr(err, "token", None)
    return (getattr(st, "position", st), frozenset(getattr(err, "accepts", None) or ()),
            getattr(tok, "type", None))


@lru_cache(maxsize=1)
def _catalogue_states():
    """The parser state each catalogued snippet fails in (Lark's match_examples compares whole
    stacks, so a snippet would only match at the same nesting depth; the state is enough)."""
    table = {}
    for message, snippets in _CATALOGUE.items():
        for text in snippets:
            try:
                _parser().parse(text)
            except UnexpectedInput as e:
                key = _state(e)
                table.setdefault(key, message)
                table.setdefault(key[:2], message)
    return table


def _friendly(err: UnexpectedInput) -> str | None:
    key = _state(err)
    table = _catalogue_states()
    return table.get(key) or table.get(key[:2])


_TOKEN_WORDS = {
    "_SEP": "a separator (-, -> or →)", "_NL": "a new line", "KIND": "a layer kind (CONV, FC ...)",
    "NAME": "a name", "IDENT": "a name", "INT": "an integer", "FLOAT": "a number", "DIMS": "a size such as 3x3",
    "REPEAT": "a repeat such as x2", "LSQB": "`[`", "RSQB": "`]`", "LPAR": "`(`", "RPAR": "`)`",
    "EQUAL": "`=`", "COMMA": "`,`", "COLON": "`:`", "SLASH": "`/`", "STAR": "`*`", "VBAR": "`|`",
    "STRING": "a string", "RES": "RES", "CONCAT": "CONCAT", "DENSE": "DENSE", "MEAN": "MEAN",
    "$END": "the end of the file",
}


def _expected(err) -> str:
    names = sorted(getattr(err, "expected", None) or getattr(err, "allowed", None) or [])
    words = sorted({_TOKEN_WORDS.get(n, f"`{n.lower()}`" if n.isupper() and len(n) < 9 else n)
                    for n in names})
    return ", ".join(words[:8]) + (" ..." if len(words) > 8 else "")


def _syntax_error(err: UnexpectedInput, source: Source) -> SpecSyntaxError:
    friendly = _friendly(err)
    line, col = err.line, err.column
    if isinstance(err, UnexpectedToken) and err.token.type == "$END":
        lines = source.text.rstrip("\n").split("\n")
        line, col = len(lines), len(lines[-1]) + 1
    if line is None or line < 1:
        line, col = 1, 1
    hint = None
    if isinstance(err, UnexpectedCharacters):
        ch = source.line(line)[col - 1:col]
        msg, hint = hints.odd_character(ch) or (f"unexpected character {ch!r}", None)
        width = 1
    elif isinstance(err, UnexpectedEOF):
        msg = "unexpected end of the file"
        width = 1
    else:
        tok = err.token
        shown = "end of the file" if tok.type == "$END" else (
            "end of the line" if tok.type == "_NL" else repr(str(tok)))
        msg = f"unexpected {shown}"
        width = len(str(tok)) if tok.type not in ("$END", "_NL") else 1
    hint = hint or friendly or f"expected {_expected(err)} here"
    text = source.line(line)
    slip = hints.framework_call(text, col) or hints.spaced_size(text, col)
    if slip:
        col, width, msg, hint = slip
    return SpecSyntaxError(msg, hint, line=line, column=col, width=width, source=source)


def parse(text: str, filename: str = "<spec>") -> ast.Spec:
    """Parse the text of a .net spec into a Spec; raise SpecSyntaxError with its position. A
    byte-order mark at the start (Notepad writes one) is dropped."""
    text = text[1:] if text.startswith("\ufeff") else text
    source = Source(text, filename)
    if len(text) > MAX_TEXT:
        raise SpecSyntaxError(f"the spec is {len(text):,} characters long; netc reads at most "
                              f"{MAX_TEXT:,}", "write repetitions as [chain]xN and reuse blocks",
                              source=source)
    _check_nesting(source)
    with _collector_paused():
        try:
            stmts = _ToAst(visit_tokens=False).transform(_parser().parse(text))
        except UnexpectedInput as err:
            raise _syntax_error(err, source) from None
        except VisitError as err:  # a number out of range; anything else is a bug of ours
            if isinstance(err.orig_exc, SpecError):
                raise err.orig_exc.at(source) from None
            raise err.orig_exc
        return _assemble(stmts, source)


@contextmanager
def _collector_paused():
    """Python's cycle collector paused: the parse tree grows by many small objects (and holds no
    cycles), which made each collection walk the whole tree, and parsing superlinear."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# what can hold a `[` that is not a bracket: comments and strings
_BRACKETS = re.compile(r'[\[\]]|#[^\n]*|"[^"\n]*"')


def _check_nesting(source: Source):
    """`[` nested deeper than MAX_NESTING is an error at the first one too deep."""
    depth = 0
    for m in _BRACKETS.finditer(source.text):
        if m.group() == "]":
            depth = max(0, depth - 1)
        elif m.group() == "[":
            depth += 1
            if depth > MAX_NESTING:
                pos = m.start()
                line = source.text.count("\n", 0, pos) + 1
                raise SpecSyntaxError(f"brackets nested more than {MAX_NESTING} deep",
                                      "flatten the nesting, e.g. with a block or [chain]xN",
                                      line=line, column=pos - source.text.rfind("\n", 0, pos),
                                      source=source)


def _assemble(stmts, source: Source) -> ast.Spec:
    name = name_pos = inp = inp_pos = None
    body, blocks, train = [], {}, []
    in_train = False
    for st in stmts:
        if isinstance(st, tuple) and st[0] == "network":
            if name is not None:
                raise _dup("network", st[2], name_pos, source)
            name, name_pos = st[1], st[2]
        elif isinstance(st, tuple) and st[0] == "input":
            if inp is not None:
                raise _dup("input", st[2], inp_pos, source)
            inp, inp_pos = st[1], st[2]
        elif isinstance(st, tuple) and st[0] == "train":
            in_train = True
            train.extend(st[1])
        elif isinstance(st, tuple) and st[0] == "setting":
            if not in_train:
                p = st[1][0].pos
                raise SpecSyntaxError(
                    f"setting `{st[1][0].key}=...` outside a train section", "write `train` on a "
                    "line of its own before the settings, or put them on the `train` line",
                    line=p.line, column=p.column, width=p.width, source=source)
            train.extend(st[1])
        elif isinstance(st, ast.Block):
            if st.name in blocks:
                raise _dup(f"block {st.name}", st.pos, blocks[st.name].pos, source)
            blocks[st.name] = st
        else:
            in_train = False if isinstance(st, ast.Chain) else in_train
            body.append(st)
    return ast.Spec(name, inp, inp_pos, tuple(body), blocks, tuple(train), name_pos)


def _dup(what, pos, first, source) -> SpecError:
    return SpecSyntaxError(f"`{what}` given twice (first on line {first.line})",
                           "keep one of them", line=pos.line, column=pos.column,
                           width=pos.width, source=source)
