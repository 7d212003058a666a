"""All-or-nothing output sets (issue 13, item 5): :mod:`analysis._outdir` and :func:`analysis.io.write_files`.

A failure or Ctrl-C at every point of the write phase leaves the old set
intact and nothing behind; a user's own files in the output directory are
never deleted (they are carried into the new set as hard links); targets that
cannot take a set are refused before anything is computed.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from analysis import _outdir
from analysis.io import write_files

NEW = {"index.md": "# new\n", "results.json": '{"v": 2}\n', "fig_a.png": b"\x89PNG new a", "fig_b.png": b"new b"}
OLD = {"index.md": "# old\n", "results.json": '{"v": 1}\n', "fig_a.png": b"\x89PNG old a", "fig_b.png": b"old b"}


def listing(d):
    return sorted(os.listdir(d))


def contents(d):
    return {name: (d / name).read_bytes() for name in listing(d)}


def as_bytes(files):
    return {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}


@pytest.fixture
def out(tmp_path):
    """An output directory with an old set and a file of the user's."""
    d = tmp_path / "report"
    write_files(d, OLD)
    (d / "notes.txt").write_text("mine")
    return d


def test_a_new_set_replaces_the_old_one_and_keeps_the_users_file(out, tmp_path):
    inode = (out / "notes.txt").stat().st_ino
    paths = write_files(out, NEW)
    assert [p.name for p in paths] == list(NEW)
    assert contents(out) == {**as_bytes(NEW), "notes.txt": b"mine"}
    assert (out / "notes.txt").stat().st_ino == inode  # the same file, not a copy
    assert listing(tmp_path) == ["report"]  # nothing beside it


def test_files_of_the_old_set_the_new_one_lacks_are_kept(out):
    write_files(out, {"index.md": "# only\n"})
    assert listing(out) == ["fig_a.png", "fig_b.png", "index.md", "notes.txt", "results.json"]
    assert (out / "index.md").read_text() == "# only\n" and (out / "fig_a.png").read_bytes() == OLD["fig_a.png"]


@pytest.mark.parametrize("fail_at", range(len(NEW)))
@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failure_at_any_file_keeps_the_old_set_and_leaves_nothing(out, tmp_path, monkeypatch, fail_at, error):
    before = contents(out)
    real = _outdir._write_file
    calls = []

    def flaky(path, data, mode):
        calls.append(path.name)
        if len(calls) == fail_at + 1:
            raise error
        real(path, data, mode)

    monkeypatch.setattr(_outdir, "_write_file", flaky)
    with pytest.raises(type(error)):
        write_files(out, NEW)
    assert contents(out) == before
    assert listing(tmp_path) == ["report"]


@pytest.mark.parametrize("stage", ["carry", "exchange"])
def test_a_failure_while_carrying_or_swapping_keeps_the_old_set(out, tmp_path, monkeypatch, stage):
    before = contents(out)

    def boom(*args, **kwargs):
        raise OSError(1, "Operation not permitted", "x")

    if stage == "carry":
        monkeypatch.setattr(_outdir.os, "link", boom)
    else:
        monkeypatch.setattr(_outdir, "_swap", boom)
    with pytest.raises(OSError, match="not permitted"):
        write_files(out, NEW)
    assert contents(out) == before
    assert listing(tmp_path) == ["report"]


def test_ctrl_c_during_the_swap_is_deferred_until_the_set_is_complete(out, tmp_path, monkeypatch):
    import signal  # noqa: PLC0415 - only this test sends signals

    real = _outdir._swap

    def swap_with_ctrl_c(tmp, target):
        signal.raise_signal(signal.SIGINT)  # arrives in the middle of the critical section
        return real(tmp, target)

    monkeypatch.setattr(_outdir, "_swap", swap_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        write_files(out, NEW)
    assert contents(out) == {**as_bytes(NEW), "notes.txt": b"mine"}  # the swap and its cleanup completed
    assert listing(tmp_path) == ["report"]


def test_without_an_atomic_exchange_two_renames_are_used(out, tmp_path, monkeypatch):
    monkeypatch.setattr(_outdir, "_exchange", lambda a, b: False)
    write_files(out, NEW)
    assert contents(out) == {**as_bytes(NEW), "notes.txt": b"mine"}
    assert listing(tmp_path) == ["report"]


def test_a_new_directory_and_its_parents_are_created_and_removed_on_failure(tmp_path, monkeypatch):
    write_files(tmp_path / "a" / "b" / "c", {"x": "1"})
    assert (tmp_path / "a" / "b" / "c" / "x").read_text() == "1"
    monkeypatch.setattr(_outdir, "_write_file", lambda *a: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        write_files(tmp_path / "p" / "q", {"x": "1"})
    assert listing(tmp_path) == ["a"]


def test_permissions_follow_the_old_directory_and_the_umask(out):
    os.chmod(out, 0o750)
    write_files(out, NEW)
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    mask = os.umask(0o027)
    try:
        write_files(out.parent / "fresh", {"x": "1"})
    finally:
        os.umask(mask)
    assert stat.S_IMODE((out.parent / "fresh").stat().st_mode) == 0o750
    assert stat.S_IMODE((out.parent / "fresh" / "x").stat().st_mode) == 0o640


def test_a_symlink_to_the_output_directory_keeps_pointing_to_the_new_set(out, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(out)
    write_files(link, NEW)
    assert link.is_symlink() and (link / "index.md").read_text() == "# new\n"
    assert listing(tmp_path) == ["link", "report"]


def test_leftovers_of_a_killed_run_are_cleared_by_the_next_run(out, tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".report.lbp-{dead}-abcdefgh"  # killed while filling its temporary directory
    stale.mkdir()
    (stale / "index.md").write_text("# half")
    os.link(out / "notes.txt", stale / "notes.txt")
    (stale / "late.txt").write_text("a file that appeared during the swap")
    live = tmp_path / f".report.lbp-{os.getppid()}-zzzzzzzz"  # a run still going on: left alone
    live.mkdir()
    write_files(out, NEW)
    assert listing(tmp_path) == [live.name, "report"]
    assert (out / "late.txt").read_text().startswith("a file")  # moved back, never deleted
    assert (out / "notes.txt").read_text() == "mine"


def test_a_target_missing_after_a_killed_fallback_swap_is_restored(tmp_path):
    dead = _dead_pid()
    old = tmp_path / f".report.lbp-old-{dead}-abcdefgh"  # killed between the two renames
    old.mkdir()
    (old / "index.md").write_text("# old")
    (old / "notes.txt").write_text("mine")
    write_files(tmp_path / "report", {"results.json": "{}"})
    assert listing(tmp_path) == ["report"]
    assert listing(tmp_path / "report") == ["index.md", "notes.txt", "results.json"]


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------
# targets refused before anything is computed
# --------------------------------------------------------------------------


def test_refused_targets(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    (tmp_path / "withsub" / "sub").mkdir(parents=True)
    cases = {
        tmp_path / "file": "not a directory",
        tmp_path / "file" / "below": "not a directory",
        tmp_path / "withsub": "sub-directory",
        "/": "root directory",
        "/proc/lbp-out": "cannot be created",
        "/proc/no/such/dir": "cannot be created",
    }
    for path, needle in cases.items():
        with pytest.raises(OSError, match=needle):
            _outdir.check_output_dir(path)
    monkeypatch.chdir(tmp_path / "withsub" / "sub")
    with pytest.raises(OSError, match="current directory"):
        _outdir.check_output_dir(".")
    for bad in ("", "   "):
        with pytest.raises(ValueError, match="empty"):
            _outdir.check_output_dir(bad)
        with pytest.raises(ValueError, match="empty"):
            _outdir.check_output_file(bad)
    with pytest.raises(IsADirectoryError):
        _outdir.check_output_file(tmp_path)
    with pytest.raises(OSError, match="cannot be created"):
        _outdir.check_output_file("/proc/bench.json")
    assert _outdir.check_output_file(tmp_path / "new" / "b.json") == tmp_path / "new" / "b.json"
    assert listing(tmp_path) == ["file", "withsub"]  # the checks leave nothing


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "x.lbp-1", "../evil"])
def test_set_file_names_must_be_plain(tmp_path, name):
    with pytest.raises(ValueError, match="plain file names"):
        write_files(tmp_path / "o", {name: "x"})
    assert listing(tmp_path) == []
