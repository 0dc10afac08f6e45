"""The bytes of a spec file -> its text: UTF-8, with or without Notepad's byte-order mark, or
UTF-16 with its mark; anything else is an error at the line and column of the first byte that is
not UTF-8, with how to fix it."""
from __future__ import annotations

import codecs

from .errors import Source, SpecSyntaxError


def decode(data: bytes, filename: str = "<spec>", cut: bool = False) -> str:
    """`cut`: the data is the start of a longer file (the last character may be cut in two)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass  # a text that only starts like UTF-16: reported as not UTF-8 below
    data = data[3:] if data.startswith(codecs.BOM_UTF8) else data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if cut and e.start >= len(data) - 3 and e.reason == "unexpected end of data":
            return data[:e.start].decode("utf-8")
        raise _not_utf8(data, e, filename) from None


def _not_utf8(data: bytes, e: UnicodeDecodeError, filename: str) -> SpecSyntaxError:
    start = data.rfind(b"\n", 0, e.start) + 1
    line = data.count(b"\n", 0, e.start) + 1
    column = len(data[start:e.start].decode("utf-8")) + 1
    end = data.find(b"\n", e.start)
    shown = data[start:end if end >= 0 else len(data)].decode("utf-8", "replace")
    byte = data[e.start]
    latin = bytes([byte]).decode("cp1252", "replace")
    guess = (f" ({latin!r} in Latin-1 or Windows-1252)"
             if latin.isprintable() and latin != "\ufffd" else "")
    return SpecSyntaxError(f"byte 0x{byte:02x} is not UTF-8{guess}: the file is not saved as "
                           "UTF-8", "save it as UTF-8 (Notepad: Save As, Encoding UTF-8), or "
                           "convert it: iconv -f cp1252 -t utf-8 OLD.net > NEW.net", line=line,
                           column=column, source=Source(shown if line == 1 else
                                                        "\n" * (line - 1) + shown, filename))


def read(f, filename: str, chars: int) -> str:
    """The text of a binary file object, of at least `chars` characters where it is that long
    (a UTF-8 character is at most 4 bytes), so that a huge file is never read whole."""
    data = f.read(4 * chars)
    return decode(data, filename, cut=len(data) == 4 * chars)[:chars]
