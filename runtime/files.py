"""Users' files read without surprises: .npz archives whose arrays are checked against their
headers and the memory available before anything is allocated (never unpickled), images whose
size is read before they are decoded, and the memory this machine has left."""
from __future__ import annotations

import math
import os
import zipfile
import zlib

import numpy as np

from netc.compiler.report import human_bytes
from netc.dsl.errors import DataError

MAX_PIXELS = 89_478_485  # PIL's decompression-bomb limit (a quarter GiB of RGBA)


def available_memory() -> int | None:
    """Bytes this process may still allocate: the system's available memory, lowered by a
    cgroup's limit (a container); None where the system does not say."""
    free = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit, encoding="ascii") as a, open(usage, encoding="ascii") as b:
                left = int(a.read()) - int(b.read())
        except (OSError, ValueError):
            continue
        free = left if free is None else min(free, left)
    return free


def _headers(zf: zipfile.ZipFile, path: str, what: str) -> dict:
    """name -> (shape, dtype) of each array of an .npz, from its .npy header, checked against
    the size the archive records for it."""
    fmt = np.lib.format
    found = {}
    for info in zf.infolist():
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        with zf.open(info) as fp:
            version = fmt.read_magic(fp)
            if version not in ((1, 0), (2, 0)):
                raise DataError(f"{what} {path}: {name} is an .npy of version {version}, "
                                "which netc does not read")
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read(fp)
            header = fp.tell()
        if dtype.hasobject:
            raise DataError(f"{what} {path}: {name} holds Python objects, which netc never "
                            "unpickles", "save plain numeric arrays (np.savez)")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != info.file_size - header:
            raise DataError(f"{what} {path}: {name}'s header claims {shape} values of {dtype} "
                            f"({human_bytes(nbytes)}) but the archive holds "
                            f"{human_bytes(max(0, info.file_size - header))} for it",
                            "the file is corrupted or truncated: write it again")
        found[name] = (shape, dtype, nbytes, fortran, info)
    return found


READ_CHUNK = 1 << 22  # bytes a read of an array's data (the zip stream's temporaries stay small)


def _read_array(zf: zipfile.ZipFile, info, shape, dtype, fortran) -> np.ndarray:
    """An .npz member's array read straight into memory of its own (Memory.empty: on a cache
    line where it is large, so that a model can keep it as it is), its header already checked
    by _headers; a truncated stream or a bad checksum raises as np.load would."""
    from .backends.context import Memory
    out = Memory.empty(shape[::-1] if fortran else shape, dtype)
    with zf.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        (np.lib.format.read_array_header_1_0 if version == (1, 0)
         else np.lib.format.read_array_header_2_0)(fp)
        view = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < len(view):
            n = fp.readinto(view[done:done + READ_CHUNK])
            if not n:
                raise EOFError(f"{info.filename} ends after {done} of its {len(view)} bytes")
            done += n
        if fp.read(1):  # (the end of the stream: where zipfile checks the CRC)
            raise ValueError(f"{info.filename} holds more than its header's {len(view)} bytes")
    return out.T if fortran else out


def read_npz(path: str, what: str = "file") -> dict:
    """Every array of an .npz archive, read without pickle, each into memory of its own that
    starts on a cache line where it is large (a model can keep such arrays as they are: see
    Model.from_arrays); a DataError that names the file (and the array) when it is missing, not
    an .npz, corrupted, truncated, or larger than the memory available."""
    if not os.path.exists(path):
        raise DataError(f"no such {what}: {path}")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip's first entry, or an empty zip
            raise DataError(f"cannot read {what} {path}: it is not an .npz archive (it does not "
                            "begin as a zip file)",
                            "netc reads .npz files written by np.savez or netc itself")
        with zipfile.ZipFile(path) as zf:
            headers = _headers(zf, path, what)
            total = sum(h[2] for h in headers.values())
            free = available_memory()
            if free is not None and total > free:
                raise DataError(f"{what} {path} holds {human_bytes(total)} of arrays; this "
                                f"machine has {human_bytes(free)} available")
            return {name: _read_array(zf, info, shape, dtype, fortran)
                    for name, (shape, dtype, _, fortran, info) in headers.items()}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        system = isinstance(e, OSError) and e.errno is not None  # permissions and the like
        raise DataError(f"cannot read {what} {path}: {_reason(e)}", None if system else
                        "the file is corrupted or truncated: write it again") from None


def _reason(e: Exception) -> str:
    """An exception's message without NumPy's advice about unpickling."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return "it holds pickled data" if "pickle" in text else text


def numeric(a: np.ndarray, where: str) -> np.ndarray:
    """a, if its values are real numbers (booleans, integers, floats); a DataError otherwise."""
    if a.dtype.kind not in "biuf":
        kind = "complex numbers" if a.dtype.kind == "c" else f"values of type {a.dtype}"
        raise DataError(f"{where}: expected real numbers; received {kind}",
                        "convert it to a real array first (np.real, np.abs or np.float32)")
    return a


def read_image(path: str) -> np.ndarray:
    """A PNG as an H x W x 3 float32 array in [0, 1] (16-bit grey: H x W), its transparency
    dropped; its size is read from the header and refused above MAX_PIXELS before decoding."""
    import warnings

    from PIL import Image, UnidentifiedImageError
    try:
        with open(path, "rb") as f:
            head = f.read(24)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
            if w * h > MAX_PIXELS:
                raise DataError(f"{path}: {w}x{h} is {w * h:,} pixels, more than netc decodes "
                                f"({MAX_PIXELS:,})", "shrink the image to about the network's "
                                "input size first")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.mode in ("I", "I;16", "I;16B"):  # 16-bit grey
                    return np.asarray(im, np.float32) / np.float32(65535)
                return np.asarray(im.convert("RGB"), np.float32) / np.float32(255)
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError,
            Image.DecompressionBombError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
