"""Damaged and hostile data files (issue 18): each is a DataError naming the file and what is
wrong, found before anything large is allocated; never a traceback, never NumPy's advice to
unpickle."""
import gzip
import io
import zipfile

import numpy as np
import pytest

from netc import DataError
from netc.runtime import data, files


def npy(shape, dtype="<f4", body=b""):
    """The bytes of an .npy whose header claims `shape`, followed by `body`."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        f, {"descr": dtype, "fortran_order": False, "shape": shape})
    return f.getvalue() + body


def test_an_npz_whose_header_claims_a_huge_array_is_refused_unread(tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", npy((10**12,), body=b"\0" * 4000))
        z.writestr("y.npy", npy((3,), "<i8", b"\0" * 24))
    assert path.stat().st_size < 5000
    with pytest.raises(DataError, match=r"x's header claims \(1000000000000,\) values of float32 "
                                        r"\(3.64 TiB\) but the archive holds 3.91 KiB"):
        data.load(str(path), (4,), 2, True)


def test_an_npz_larger_than_the_memory_available_is_refused(tmp_path, monkeypatch):
    np.savez(tmp_path / "d.npz", x=np.zeros((100, 4), np.float32), y=np.zeros(100, int))
    monkeypatch.setattr(files, "available_memory", lambda: 1000)
    with pytest.raises(DataError, match="holds 2.34 KiB of arrays; this machine has 1000 B"):
        data.load(str(tmp_path / "d.npz"), (4,), 2, True)


def test_npz_files_with_missing_or_unusable_arrays(tmp_path):
    x, y = np.zeros((6, 4)), np.arange(6) % 2
    cases = {
        "test_x_only": ({"x": x, "y": y, "x_test": x}, "has x_test but no y_test"),
        "test_y_only": ({"x": x, "y": y, "y_test": y}, "has y_test but no x_test"),
        "strings": ({"x": x.astype(str), "y": y}, "x: expected real numbers; received values "
                                                   "of type <U32"),
        "test_strings": ({"x": x, "y": y, "x_test": x, "y_test": y.astype(str)},
                         "y_test: expected real numbers"),
        "complex": ({"x": x + 1j, "y": y}, "x: expected real numbers; received complex numbers"),
        "scalar": ({"x": np.float64(3), "y": y}, "x is a single number"),
    }
    for name, (arrays, match) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(DataError, match=match):
            data.load(str(tmp_path / f"{name}.npz"), (4,), 2, True)


def test_truncated_and_foreign_npz_files(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((50, 4)), y=np.zeros(50, int))
    raw = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(DataError, match="cannot read data file .*cut.npz") as e:
        data.load(str(tmp_path / "cut.npz"), (4,), 2, True)
    assert "corrupted or truncated" in e.value.hint
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match="is not an .npz archive") as e:
        data.load(str(tmp_path / "text.npz"), (4,), 2, True)
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "obj.npz", "w") as z:
        z.write(tmp_path / "pickled.npy", "x.npy")
    with pytest.raises(DataError, match="holds Python objects, which netc never unpickles") as e:
        data.load(str(tmp_path / "obj.npz"), (4,), 2, True)
    assert "allow_pickle" not in str(e.value)


def test_csv_rows_shorter_than_the_header(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,label\n1,2,0\n3,1\n")
    with pytest.raises(DataError, match=r"t.csv, line 3: 2 values; the header names 3 columns"):
        data.load(str(tmp_path / "t.csv"), (2,), 2, True)


def idx(header_dims, shape, body, dims=None):
    return (bytes([0, 0, 8, header_dims if dims is None else dims])
            + b"".join(int(d).to_bytes(4, "big") for d in shape) + body)


@pytest.mark.parametrize("name,raw,match", [
    ("short_header", bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big"),
     "header is cut short: 3 dimensions declared, 4 of their 12 bytes"),
    ("wrong_dims", idx(2, (5, 4), b"\0" * 20), "declares 2 dimensions; expected 3"),
    ("absurd", idx(3, (2**32 - 1,) * 3, b"\0" * 10), r"header claims 4294967295x4294967295x"
                                                       r"4294967295 bytes"),
    ("truncated", idx(3, (5, 28, 28), b"\0" * 100), "holds 100 bytes of values; its header says "
                                                     "5x28x28 = 3920"),
    ("not_idx", b"\x1f\x8bnot idx", "is not an IDX file"),
])
def test_idx_files_with_bad_headers(tmp_path, name, raw, match):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw)
    with pytest.raises(DataError, match=match):
        data._idx(str(tmp_path / "train-images-idx3-ubyte"), 3)


def test_corrupted_and_truncated_gz(tmp_path):
    body = gzip.compress(idx(3, (5, 28, 28), bytes(range(256)) * 16)[:3936])
    (tmp_path / "cut.gz").write_bytes(body[:len(body) // 2])
    with pytest.raises(DataError, match="cannot read .*cut.gz") as e:
        data._idx(str(tmp_path / "cut.gz"), 3)
    assert "corrupted or truncated" in e.value.hint
    bad = bytearray(body)
    bad[len(bad) // 2] ^= 0xFF
    (tmp_path / "bad.gz").write_bytes(bytes(bad))
    with pytest.raises(DataError, match="cannot read .*bad.gz"):
        data._idx(str(tmp_path / "bad.gz"), 3)
    (tmp_path / "plain.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read .*plain.gz"):
        data._idx(str(tmp_path / "plain.gz"), 3)
