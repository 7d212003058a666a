"""Data at scale on hostile inputs (issue 19, item 3): ``--memory``, ``--scheduler``, shards, removals mid-run.

``analysis.budget`` / ``analysis.stream`` / ``analysis.sources`` through the
``lbp`` command: a malformed ``--memory`` is a usage error (exit 2), a budget
too small for one item a data error (exit 1); an unreachable or malformed
``--scheduler`` fails at once, before a Dask client is built (exit 1, one
line); shards that disagree, an empty directory, a lost shard or one removed
while the run reads are one-line errors naming the file, and nothing is written;
shards that are unusual but valid give the numbers of the same array in memory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis import cli, sources
from analysis.budget import parse_memory
from analysis.shards import save_shards

pytest.importorskip("dask")

GRID = ["--grid", "8x8"]
X = np.random.default_rng(23).standard_normal((20, 64, 3)).astype(np.float32)


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("LBP_DEBUG", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, err, code=1):
    """Exit ``code`` with a single ``lbp: error: ...`` line (after argparse's usage for exit 2), no traceback."""
    assert rc == code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("lbp: error: ") or lines[-1].startswith("lbp spectrum: error: "), err
    if code == 1:
        assert len(lines) == 1, err
    return lines[-1]


def shards_of(path, x=X, per=4):
    """``x`` as a ShardWriter dataset at ``path`` (shards of ``per`` items); returns its ``x`` directory."""
    return save_shards(path, {"x": (x[i:i + per] for i in range(0, len(x), per))}) / "x"


@pytest.fixture
def npy(tmp_path):
    np.save(tmp_path / "x.npy", X)
    return tmp_path / "x.npy"


# --------------------------------------------------------------------------
# --memory
# --------------------------------------------------------------------------

MALFORMED_MEMORY = ["", " ", "MB", "1.5.5GB", "1e9", "1e3MB", "nan", "inf", "1 PB", "1_000MB", "0x10", "1GiBB",
                    "-0", "+5MB", "0.1", "0.4B", "5 M B", "１ＭＢ"]


@pytest.mark.parametrize("text", MALFORMED_MEMORY)
def test_malformed_memory_is_a_usage_error(text, npy, tmp_path, capsys):
    with pytest.raises(ValueError, match="memory size must"):
        parse_memory(text)
    rc, _, err = run(["spectrum", npy, *GRID, f"--memory={text}", "--out", tmp_path / "o"], capsys)
    line = one_line_error(rc, err, code=2)
    assert "--memory" in line and "memory size must" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("text", "value"), [("1 GB ", 10**9), (".5GB", 5 * 10**8), ("1.", 1), ("2gib", 2 * 2**30),
                                             ("0.5kB", 500), ("7", 7), ("1.5 TiB", 3 * 2**39)])
def test_unusual_but_valid_memory_sizes(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize("text", ["1", "1B", "64", "1kB", "0.5kB", "1MiB"])
@pytest.mark.parametrize("command", ["spectrum", "error"])
def test_a_budget_that_holds_no_item_is_a_data_error(text, command, npy, tmp_path, capsys):
    np.savez(tmp_path / "l.npz", x=X, weight=np.ones((2, 3)), grad_y=np.ones((20, 64, 2), np.float32))
    argv = ["spectrum", npy] if command == "spectrum" else ["error", tmp_path / "l.npz", "--bases", "lp_l1:2"]
    rc, _, err = run([*argv, *GRID, "--memory", text, "--out", tmp_path / "o"], capsys)
    line = one_line_error(rc, err)
    assert re.search(r"memory budget [\d.]+ \w*B is too small", line), line
    assert not (tmp_path / "o").exists()


def test_a_budget_far_beyond_the_machine_runs_in_memory(npy, tmp_path, capsys):
    rc, _, err = run(["spectrum", npy, *GRID, "--memory", "999999TB", "--out", tmp_path / "big"], capsys)
    assert rc == 0, err
    rc, _, err = run(["spectrum", npy, *GRID, "--out", tmp_path / "ref"], capsys)
    assert rc == 0, err
    big, ref = (json.loads((tmp_path / d / "spectrum.json").read_text()) for d in ("big", "ref"))
    assert big["energy_map"] == ref["energy_map"]


# --------------------------------------------------------------------------
# --scheduler: at once, before any Dask client, one line
# --------------------------------------------------------------------------

UNREACHABLE = {  # address: what the message says
    "tcp://127.0.0.1:1": "connection refused",
    "127.0.0.1:1": "connection refused",  # Dask's default scheme
    "tls://127.0.0.1:1": "connection refused",
    "tcp://127.0.0.1:99999": "port 99999 is out of range",  # was: refused on port 99999 mod 65536
    "tcp://127.0.0.1:0": "port 0 is out of range",
    "inproc://x": "the scheme 'inproc'",  # was: a Client that hung 60 s at exit
    "http://127.0.0.1:1": "the scheme 'http'",  # was: likewise
    "not-a-url": "missing port number",
    "tcp://": "missing port number",
}


@pytest.fixture
def no_client(monkeypatch):
    """Fail the test if a Dask client is built: the address must be refused before Dask's 30 s of retries."""
    distributed = pytest.importorskip("distributed")

    class Client:
        def __init__(self, *args, **kwargs):
            raise AssertionError("a dask.distributed Client was built for an unreachable scheduler")

    monkeypatch.setattr(distributed, "Client", Client)


@pytest.mark.parametrize("address", list(UNREACHABLE))
@pytest.mark.parametrize("how", ["option", "environment"])
def test_an_unreachable_scheduler_fails_at_once_in_one_line(address, how, npy, tmp_path, capsys, monkeypatch,
                                                            no_client):
    dask = pytest.importorskip("dask")
    argv = ["spectrum", npy, *GRID, "--out", tmp_path / "o"]
    if how == "option":
        argv += ["--scheduler", address]
    else:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    with dask.config.set({"distributed.comm.timeouts.connect": "600s"}):  # Dask's retries would take this long
        rc, _, err = run(argv, capsys)
    line = one_line_error(rc, err)
    assert line.count("cannot reach the Dask scheduler") == 1, line  # was: the prefix twice
    assert f"cannot reach the Dask scheduler at {address}: " in line and UNREACHABLE[address] in line, line
    assert not (tmp_path / "o").exists()


def test_an_empty_scheduler_option_is_refused(npy, tmp_path, capsys, no_client):
    rc, _, err = run(["spectrum", npy, *GRID, "--scheduler", "", "--out", tmp_path / "o"], capsys)
    assert rc in (1, 2) and "Traceback" not in err and err.strip().splitlines()[-1].startswith("lbp")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------
# shards that disagree, or cannot be read: one line naming the file, nothing written
# --------------------------------------------------------------------------


def _link_to_nowhere(p):
    os.remove(p / "000002.npy")
    os.symlink(p / "nowhere.npy", p / "000002.npy")


def _replace_by_dir(p):
    os.remove(p / "000002.npy")
    (p / "000002.npy").mkdir()


def _truncate(p):
    raw = (p / "000003.npy").read_bytes()
    (p / "000003.npy").write_bytes(raw[:len(raw) // 2])


def _empty(p):
    shutil.rmtree(p)
    p.mkdir()


def _only_text(p):
    _empty(p)
    (p / "README.txt").write_text("notes")


BAD_SHARDS = {  # damage, what the message says
    "first shard of another shape": (lambda p: np.save(p / "000000.npy", X[:4, :, :2]), r"000001\.npy: shape"),
    "first shard of another rank": (lambda p: np.save(p / "000000.npy", X[:4, :, 0]), r"does not fit .*000000\.npy"),
    "a big-endian shard": (lambda p: np.save(p / "000002.npy", X[8:12].astype(">f4")), r"000002\.npy: dtype >f4"),
    "an integer shard": (lambda p: np.save(p / "000002.npy", X[8:12].astype(np.int32)), r"000002\.npy: dtype int32"),
    "a complex shard": (lambda p: np.save(p / "000002.npy", X[8:12].astype(np.complex64)), r"000002\.npy.*complex"),
    "a pickled shard": (lambda p: np.save(p / "000002.npy", np.array([None] * 4, dtype=object), allow_pickle=True),
                        r"000002\.npy: holds Python objects"),
    "a truncated shard": (_truncate, r"000003\.npy: truncated or corrupt"),
    "a shard of other bytes": (lambda p: (p / "000002.npy").write_bytes(b"garbage" * 10), r"000002\.npy: not a \.npy"),
    "a NaN in the last shard": (lambda p: np.save(p / "000004.npy", np.where(np.arange(4)[:, None, None] == 3, np.nan,
                                                                              X[16:20])), r"000004\.npy.*non-finite"),
    "a lost shard (gap in the numbers)": (lambda p: os.remove(p / "000002.npy"), r"000002\.npy missing"),
    "a link to nowhere": (_link_to_nowhere, r"000002\.npy: cannot read"),  # was: skipped, 16 items of 20
    "a directory named like a shard": (_replace_by_dir, "choose one with a key"),
    "an empty directory": (_empty, "no .npy shards found"),
    "a directory of a text file": (_only_text, "no .npy shards found"),
}


@pytest.mark.parametrize("case", list(BAD_SHARDS))
@pytest.mark.parametrize("memory", [None, "3MB"])
def test_bad_shards_are_one_line_errors(case, memory, tmp_path, capsys):
    damage, pattern = BAD_SHARDS[case]
    p = shards_of(tmp_path / "ds")
    damage(p)
    rc, _, err = run(["spectrum", p, *GRID, *(["--memory", memory] if memory else []), "--out", tmp_path / "o"],
                     capsys)
    line = one_line_error(rc, err)
    assert re.search(pattern, line), line
    assert not (tmp_path / "o").exists()


def _fortran(p):
    np.save(p / "000002.npy", np.asfortranarray(X[8:12]))


GOOD_SHARDS = {  # damage that leaves the same array (or the array of the shards that are there)
    "a text file beside the shards": (lambda p: (p / "README.txt").write_text("notes"), X),
    "a temporary file a killed writer left": (lambda p: (p / ".000002.npy.k3j.tmp").write_bytes(b"\x93NUMPY"), X),
    "a Fortran-ordered shard": (_fortran, X),
    "a shard of no item": (lambda p: np.save(p / "000002.npy", X[:0]), np.concatenate([X[:8], X[12:]])),
}


@pytest.mark.parametrize("case", list(GOOD_SHARDS))
def test_unusual_but_valid_shards_give_the_numbers_of_the_array(case, tmp_path, capsys):
    damage, x = GOOD_SHARDS[case]
    p = shards_of(tmp_path / "ds")
    damage(p)
    np.save(tmp_path / "ref.npy", x)
    rc, _, err = run(["spectrum", tmp_path / "ref.npy", *GRID, "--out", tmp_path / "ref"], capsys)
    assert rc == 0, err
    rc, _, err = run(["spectrum", p, *GRID, "--memory", "3MB", "--out", tmp_path / "got"], capsys)
    assert rc == 0, err
    got, ref = (json.loads((tmp_path / d / "spectrum.json").read_text()) for d in ("got", "ref"))
    assert got["source"]["shape"] == list(x.shape)
    np.testing.assert_allclose(got["energy_map"], ref["energy_map"], rtol=1e-12)  # sums in another order


def test_a_glob_that_matches_nothing_and_a_dataset_without_the_array(tmp_path, capsys):
    rc, _, err = run(["spectrum", str(tmp_path / "none-*.npy"), *GRID, "--out", tmp_path / "o"], capsys)
    assert "no .npy shards found" in one_line_error(rc, err) or "no such file" in err
    (tmp_path / "ds").mkdir()
    rc, _, err = run(["error", tmp_path / "ds", *GRID, "--bases", "lp_l1:2", "--out", tmp_path / "o"], capsys)
    assert "no array 'x'" in one_line_error(rc, err)
    assert not (tmp_path / "o").exists()


def test_shards_of_x_and_grad_y_that_disagree_on_the_batch(tmp_path, capsys):
    save_shards(tmp_path / "ds", {"x": X, "grad_y": np.ones((19, 64, 2), np.float32), "weight": np.ones((2, 3))})
    rc, _, err = run(["error", tmp_path / "ds", *GRID, "--bases", "lp_l1:2", "--memory", "3MB", "--out",
                      tmp_path / "o"], capsys)
    line = one_line_error(rc, err)
    assert "20" in line and "19" in line and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------
# a shard removed (or cut short) while the run reads
# --------------------------------------------------------------------------


@pytest.mark.parametrize("victim", ["000000.npy", "000003.npy"])
@pytest.mark.parametrize("how", ["removed", "cut short"])
@pytest.mark.parametrize("memory", [None, "3MB"])
def test_a_shard_removed_mid_run_is_a_one_line_error(victim, how, memory, tmp_path, capsys, monkeypatch):
    p = shards_of(tmp_path / "ds")
    real = sources._MappedShard.read
    calls = []

    def read(self, start, stop):  # after the first read (the headers are long read): the shard goes away
        calls.append(self.path)
        if len(calls) == 2 and (p / victim).exists():
            if how == "removed":
                os.remove(p / victim)
            else:
                np.save(p / victim, X[:1])
        return real(self, start, stop)

    monkeypatch.setattr(sources._MappedShard, "read", read)
    rc, _, err = run(["spectrum", p, *GRID, *(["--memory", memory] if memory else []), "--out", tmp_path / "o"],
                     capsys)
    line = one_line_error(rc, err)
    assert len(calls) >= 2 and victim in line, line
    assert not (tmp_path / "o").exists()
    assert sorted(q.name for q in Path(tmp_path).iterdir()) == ["ds"]  # no temporary output either
