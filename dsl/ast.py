"""The syntax tree of a .net spec: frozen dataclasses that remember line and column."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Pos:
    line: int
    column: int
    width: int = 1


# ---- values -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Name:
    """An identifier: a block parameter reference, or a word such as `max`, `relu`, `true`."""

    id: str


@dataclass(frozen=True)
class Dims:
    """`5x5` or `227x227x3`."""

    sizes: tuple


@dataclass(frozen=True)
class Strided:
    """`11x11/4`: a kernel with its stride."""

    dims: Dims
    stride: "Value"


@dataclass(frozen=True)
class Product:
    """`c*4`, evaluated once block parameters are bound."""

    factors: tuple


Value = Union[int, float, str, Name, Dims, Strided, Product, tuple]


@dataclass(frozen=True)
class Arg:
    key: str | None  # None for a positional argument
    value: Value
    pos: Pos


# ---- chain elements ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Layer:
    kind: str
    args: tuple
    pos: Pos


@dataclass(frozen=True)
class Call:
    """A use of a block: `basic(128, s=2)`."""

    name: str
    args: tuple
    pos: Pos


@dataclass(frozen=True)
class Group:
    chain: "Chain"
    pos: Pos


# the branch constructs, as net.lark spells their keywords
RES, CONCAT, DENSE, MEAN = "RES", "CONCAT", "DENSE", "MEAN"


@dataclass(frozen=True)
class Branch:
    """RES[chain], CONCAT[chain | chain ...], DENSE[chain], MEAN[chain | chain ...]."""

    kind: str
    chains: tuple
    args: tuple
    pos: Pos


@dataclass(frozen=True)
class Element:
    item: Union[Layer, Call, Group, Branch]
    repeat: int
    pos: Pos
    repeat_pos: Pos | None = None


@dataclass(frozen=True)
class Chain:
    elements: tuple
    pos: Pos


# ---- statements -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Default:
    """`CONV: 3x3/1 pad=same act=relu`: defaults for every later layer of that kind."""

    kind: str
    args: tuple
    pos: Pos


@dataclass(frozen=True)
class Param:
    name: str
    default: Value | None
    pos: Pos


@dataclass(frozen=True)
class Block:
    name: str
    params: tuple
    body: Chain
    pos: Pos


@dataclass(frozen=True)
class Spec:
    """A whole .net file: the body is the statements that build the network, in order
    (Default and Chain), the blocks and the train settings are collected apart."""

    name: str | None
    input: tuple | None  # (H, W, C) as written, or (N,)
    input_pos: Pos | None
    body: tuple
    blocks: dict = field(default_factory=dict)
    train: tuple = ()  # Args with keys
    name_pos: Pos | None = None
