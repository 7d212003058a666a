"""analysis.io (atomic writes, JSON, figures, tables, checked array loading) and analysis.progress."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from dataclasses import dataclass

import numpy as np
import pytest
from matplotlib.figure import Figure

import analysis._outdir
from analysis import io as analysis_io
from analysis import progress
from analysis.io import (
    DataError,
    atomic_write_bytes,
    atomic_write_text,
    figure_bytes,
    json_text,
    load_array,
    markdown_table,
    save_figure,
    text_table,
    to_jsonable,
    write_csv,
    write_files,
    write_json,
)
from analysis.progress import progress_bar


def listing(d):
    return sorted(os.listdir(d))


# --------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------


def test_atomic_write_creates_and_replaces(tmp_path):
    p = tmp_path / "out.txt"
    assert atomic_write_text(p, "one\n") == p
    assert p.read_text() == "one\n"
    atomic_write_text(str(p), "two\nlines\n")
    assert p.read_text() == "two\nlines\n"
    atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert listing(tmp_path) == ["out.txt"]  # no temporary left over


def test_atomic_write_permissions(tmp_path):
    p = tmp_path / "new.txt"
    atomic_write_text(p, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o666 & ~umask  # not the 0o600 of temp files
    os.chmod(p, 0o640)
    atomic_write_text(p, "y")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640  # replacing keeps the mode


def test_failure_mid_write_leaves_no_file(tmp_path):
    p = tmp_path / "partial.bin"

    def writer(fh):
        fh.write(b"half of the data")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write_bytes(p, writer)
    assert listing(tmp_path) == []  # neither the destination nor a temporary


def test_failure_mid_write_keeps_previous_content(tmp_path):
    p = tmp_path / "keep.txt"
    p.write_text("old")

    def writer(fh):
        fh.write(b"new but incomplete")
        raise KeyboardInterrupt  # even BaseException cleans up

    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(p, writer)
    assert p.read_text() == "old" and listing(tmp_path) == ["keep.txt"]


def test_failure_in_rename_cleans_up(tmp_path, monkeypatch):
    p = tmp_path / "r.json"

    def broken_replace(src, dst):
        raise OSError("cross-device link")

    monkeypatch.setattr(analysis_io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="cross-device"):
        write_json(p, {"a": 1})
    assert listing(tmp_path) == []


def test_unserializable_json_writes_nothing(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        write_json(tmp_path / "bad.json", {"a": object()})
    assert listing(tmp_path) == []


def test_missing_directory_raises_and_writes_nothing(tmp_path):
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "nope" / "a.txt", "x")
    assert listing(tmp_path) == []


def test_write_text_needs_str(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_text(tmp_path / "a.txt", b"bytes")


# --------------------------------------------------------------------------
# JSON and CSV
# --------------------------------------------------------------------------


@dataclass
class Plain:
    a: int
    b: tuple


class WithToDict:
    def to_dict(self):
        return {"v": np.float32(0.25)}


def test_to_jsonable_and_write_json(tmp_path):
    obj = {
        "arr": np.arange(4).reshape(2, 2),
        "f32": np.float32(1.5),
        "i64": np.int64(7),
        "bad": [np.nan, np.inf, -np.inf],
        "nested": (Plain(1, (2, 3)), WithToDict()),
        "path": tmp_path / "x",
        "flag": np.bool_(True),
        3: "int key",
    }
    d = to_jsonable(obj)
    assert d == {
        "arr": [[0, 1], [2, 3]],
        "f32": 1.5,
        "i64": 7,
        "bad": [None, None, None],
        "nested": [{"a": 1, "b": [2, 3]}, {"v": 0.25}],
        "path": str(tmp_path / "x"),
        "flag": True,
        "3": "int key",
    }
    write_json(tmp_path / "o.json", obj)
    assert json.loads((tmp_path / "o.json").read_text()) == d
    assert (tmp_path / "o.json").read_text().endswith("}\n")


def test_write_csv_round_trip(tmp_path):
    rows = [
        {"method": "lbp", "rank": 21, "err": 0.1 + 0.2},
        {"method": "klt", "rank": 21, "err": np.float64(1 / 3), "extra": [1, 2]},
        {"method": "svd", "err": None},
    ]
    p = write_csv(tmp_path / "r.csv", rows)
    with open(p, newline="") as fh:
        back = list(csv.DictReader(fh))
    assert list(back[0]) == ["method", "rank", "err", "extra"]
    assert float(back[0]["err"]) == 0.1 + 0.2  # repr: exact round trip
    assert float(back[1]["err"]) == 1 / 3
    assert json.loads(back[1]["extra"]) == [1, 2]
    assert back[2] == {"method": "svd", "rank": "", "err": "", "extra": ""}
    write_csv(tmp_path / "o.csv", rows[:1], fieldnames=["rank", "method", "err"])
    assert (tmp_path / "o.csv").read_text().splitlines()[0] == "rank,method,err"
    with pytest.raises(ValueError):
        write_csv(tmp_path / "x.csv", rows, fieldnames=["method"])
    assert "x.csv" not in listing(tmp_path)


def test_save_figure_formats_and_failure(tmp_path):
    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    assert save_figure(fig, tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in save_figure(fig, tmp_path / "f.svg").read_bytes()[:500]
    assert save_figure(fig, tmp_path / "f.pdf", dpi=50).read_bytes()[:4] == b"%PDF"
    with pytest.raises(ValueError):
        save_figure(fig, tmp_path / "f.notaformat")
    assert listing(tmp_path) == ["f.pdf", "f.png", "f.svg"]


def test_figure_bytes_renders_in_memory():
    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    assert figure_bytes(fig)[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure_bytes(fig, "svg").lstrip()[:5] in (b"<?xml", b"<svg ")
    assert figure_bytes(fig, dpi=50) != figure_bytes(fig, dpi=100)


def test_json_text_is_strict_json_with_newline():
    text = json_text({"a": np.float32(0.5), "b": [np.nan]})
    assert text.endswith("}\n") and json.loads(text) == {"a": 0.5, "b": [None]}
    assert json_text([1, 2], indent=None) == "[1, 2]\n"


# --------------------------------------------------------------------------
# several files: all or nothing
# --------------------------------------------------------------------------


def test_write_files_creates_the_directory_and_writes_each(tmp_path):
    out = tmp_path / "a" / "b"
    paths = write_files(out, {"t.md": "héllo\n", "d.bin": b"\x00\x01"})
    assert paths == [out / "t.md", out / "d.bin"]
    assert (out / "t.md").read_text(encoding="utf-8") == "héllo\n" and (out / "d.bin").read_bytes() == b"\x00\x01"


def test_write_files_failure_keeps_the_old_set_and_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("old")
    real = analysis._outdir._write_file
    calls = []

    def flaky(path, data, mode):
        calls.append(path.name)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(path))
        return real(path, data, mode)

    monkeypatch.setattr(analysis._outdir, "_write_file", flaky)
    with pytest.raises(OSError, match="No space"):
        write_files(out, {"new.txt": "a", "kept.txt": "new", "third.txt": "c"})
    assert listing(out) == ["kept.txt"]  # all or nothing: the old set, unchanged
    assert (out / "kept.txt").read_text() == "old"
    assert listing(tmp_path) == ["out"]  # no temporary directory left beside it
    with pytest.raises(OSError, match="No space"):
        calls.clear()
        write_files(tmp_path / "fresh" / "er", {"1": "a", "2": "b", "3": "c"})
    assert listing(tmp_path) == ["out"]  # nor the directories it created


def test_write_files_into_a_file_path(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        write_files(tmp_path / "f", {"a": "b"})


# --------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------


def test_text_table_aligns_columns():
    t = text_table(["name", "n"], [["a", 1], ["bbb", 22]])
    assert t.splitlines() == ["name   n", "----  --", "a      1", "bbb   22"]
    t = text_table(["x", "y"], [["1", "2"]], align="rl", sep=" | ")
    assert t.splitlines() == ["x | y", "- | -", "1 | 2"]
    with pytest.raises(ValueError, match="align"):
        text_table(["x", "y"], [], align="l")


def test_markdown_table_escapes_and_aligns():
    t = markdown_table(["a", "b|c"], [[1, "x"], ["y", 2.5]], align="lc")
    assert t.splitlines() == ["| a | b\\|c |", "| :--- | :---: |", "| 1 | x |", "| y | 2.5 |"]
    assert markdown_table(["k", "v", "w"], []).splitlines()[1] == "| :--- | ---: | ---: |"


# --------------------------------------------------------------------------
# load_array
# --------------------------------------------------------------------------


def one_line_error(path, *args, **kw):
    with pytest.raises(DataError) as info:
        load_array(path, *args, **kw)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    assert isinstance(info.value, ValueError)
    return msg


def test_load_npy_and_npz(tmp_path):
    a = np.arange(12.0).reshape(3, 4)
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "m.npz", x=a, w=np.ones(2, dtype=np.float32))
    np.savez(tmp_path / "one.npz", only=a.astype(np.int32))
    np.testing.assert_array_equal(load_array(tmp_path / "a.npy"), a)
    np.testing.assert_array_equal(load_array(str(tmp_path / "m.npz"), "x"), a)
    assert load_array(tmp_path / "m.npz", "w").dtype == np.float32
    np.testing.assert_array_equal(load_array(tmp_path / "one.npz"), a)  # single array: key optional
    mm = load_array(tmp_path / "a.npy", mmap=True)
    assert isinstance(mm, np.memmap) and not mm.flags.writeable
    np.testing.assert_array_equal(mm, a)


def test_load_errors_are_one_line_data_errors(tmp_path):
    np.savez(tmp_path / "m.npz", x=np.ones(2), w=np.ones(2))
    assert "no such file" in one_line_error(tmp_path / "missing.npy")
    assert "directory" in one_line_error(tmp_path)
    (tmp_path / "t.txt").write_text("1 2 3")
    assert "unsupported" in one_line_error(tmp_path / "t.txt")
    msg = one_line_error(tmp_path / "m.npz", "grad_y")
    assert "'grad_y'" in msg and "w, x" in msg
    assert "2 arrays" in one_line_error(tmp_path / "m.npz")
    np.save(tmp_path / "a.npy", np.ones(3))
    assert "key" in one_line_error(tmp_path / "a.npy", "x")


def test_load_corrupt_files(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage\nmore garbage\n")
    assert "unsupported .npy format version" in one_line_error(tmp_path / "bad.npy")
    (tmp_path / "bad.npz").write_bytes(b"PK not really a zip")
    assert "cannot read" in one_line_error(tmp_path / "bad.npz")
    np.save(tmp_path / "full.npy", np.ones(1000))
    data = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "trunc.npy").write_bytes(data[: len(data) // 2])
    assert "truncated" in one_line_error(tmp_path / "trunc.npy")


def test_load_rejects_non_numeric_and_non_finite(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "pickles are never loaded" in one_line_error(tmp_path / "obj.npy")  # never unpickles
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    assert "dtype" in one_line_error(tmp_path / "s.npy")
    np.save(tmp_path / "c.npy", np.ones(2, dtype=complex))
    assert "dtype" in one_line_error(tmp_path / "c.npy")
    a = np.zeros((4, 4))
    a[1, 2] = np.nan
    a[3, 3] = -np.inf
    np.save(tmp_path / "nan.npy", a)
    assert "2 non-finite" in one_line_error(tmp_path / "nan.npy")
    assert "2 non-finite" in one_line_error(tmp_path / "nan.npy", mmap=True)
    np.savez(tmp_path / "nan.npz", g=a)
    assert "'g'" in one_line_error(tmp_path / "nan.npz", "g")


def test_load_checks_finiteness_in_chunks(tmp_path, monkeypatch):
    a = np.zeros(1000)
    a[-1] = np.inf  # in the last chunk
    np.save(tmp_path / "a.npy", a)
    real = analysis_io._check_array
    monkeypatch.setattr(analysis_io, "_check_array", lambda arr, where: real(arr, where, chunk=64))
    assert "1 non-finite" in one_line_error(tmp_path / "a.npy", mmap=True)


# --------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------


def test_progress_silent_when_fast():
    out = io.StringIO()
    with progress_bar(10, "work", file=out) as bar:
        bar.update(10)
    assert out.getvalue() == "" and bar.n == 10


def test_progress_enabled_draws_at_once_and_ends_with_newline():
    out = io.StringIO()
    with progress_bar(4, "sweep", file=out, enabled=True) as bar:
        bar.update(2)
        bar.refresh()  # tqdm throttles redraws to every 0.1 s
        assert "sweep" in out.getvalue() and "2/4" in out.getvalue()
        bar.update(2)
    assert "4/4" in out.getvalue() and out.getvalue().endswith("\n")


def test_progress_disabled_and_unknown_total():
    out = io.StringIO()
    with progress_bar(5, file=out, enabled=False) as bar:
        bar.update(5)
    assert out.getvalue() == ""
    out = io.StringIO()
    with progress_bar(None, "items", file=out, enabled=True) as bar:
        bar.update(3)
    assert "items" in out.getvalue() and "3" in out.getvalue()


def test_progress_appears_after_the_delay(monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    out = io.StringIO()
    with progress_bar(2, "late", file=out) as bar:
        bar.update(2)
    assert "late" in out.getvalue()


def test_progress_default_stream_is_stderr(capsys):
    with progress_bar(1, "x", enabled=True) as bar:
        bar.update()
    assert "x" in capsys.readouterr().err
