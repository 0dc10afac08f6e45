"""netc.dsl: the .net language (text -> syntax tree)."""
from .errors import (DataError, NetcError, NumericsError, ShapeError, Source, SpecError,
                     SpecSyntaxError, SpecWarning)
from .parser import parse

__all__ = ["parse", "NetcError", "SpecError", "SpecSyntaxError", "ShapeError", "DataError",
           "NumericsError", "SpecWarning", "Source"]
