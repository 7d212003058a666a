"""``lbp report`` killed in its write phase: the output directory holds the old set or the new one (issue 13, item 6).

Each trial runs the real ``lbp report --quick`` entry point in a subprocess,
with the workload and the figures taken from a cache (so that a trial takes a
second, not the workload's time) and each file of the write phase slowed down
a little (so that random moments land inside it).  It sends SIGINT or SIGKILL
at a random moment of the write phase and checks that the directory holds
either every file of the old set (marked ``old ...``) or every file of the new
one, byte for byte, besides the user's own file; after SIGINT nothing may be
left beside it, after SIGKILL the next run must clear what was left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from analysis.io import json_text, write_files
from analysis.report import ReportConfig, render_markdown, run_workload
from analysis.report.figures import render_figures

ROOT = Path(__file__).resolve().parents[1]

CHILD = """\
import json, sys, time
from pathlib import Path
cache, out = Path(sys.argv[1]), sys.argv[2]
import analysis.report as report
from analysis import _outdir
results = json.loads((cache / "results.json").read_text())
order = json.loads((cache / "order.json").read_text())
figures = {name: (cache / "figures" / name).read_bytes() for name in order}
report.run_workload = lambda config, progress=True: results
report.render_figures = lambda res: dict(figures)
real = _outdir._write_file
def slow(path, data, mode):
    sys.stderr.write("write phase\\n")
    sys.stderr.flush()
    time.sleep(0.02)
    real(path, data, mode)
_outdir._write_file = slow
from analysis._entry import console
sys.argv = ["lbp", "report", "--quick", "--quiet", "--out", out]
raise SystemExit(console())
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The quick workload's results and figures, computed once, and the exact new set they make."""
    d = tmp_path_factory.mktemp("report-cache")
    results = run_workload(ReportConfig.quick_config(), progress=False)
    results = json.loads(json_text(results))  # as the child reads them back
    figures = render_figures(results)
    (d / "figures").mkdir()
    for name, data in figures.items():
        (d / "figures" / name).write_bytes(data)
    (d / "results.json").write_text(json.dumps(results))
    (d / "order.json").write_text(json.dumps(list(figures)))
    (d / "child.py").write_text(CHILD)
    new = dict(figures)
    new["results.json"] = json_text(results).encode()
    new["index.md"] = render_markdown(results, figures=list(figures)).encode()
    return d, new


def _old_set(out, names):
    write_files(out, {name: f"old {name}".encode() for name in names})
    (out / "notes.txt").write_text("mine")
    return (out / "notes.txt").stat().st_ino


def _state(out, new):
    """"old" or "new" when the directory holds exactly one of the two sets (and the user's file), else a report."""
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    mine = files.pop("notes.txt", None)
    if mine != b"mine":
        return f"the user's file is {mine!r}"
    if files == {name: f"old {name}".encode() for name in new}:
        return "old"
    if files == new:
        return "new"
    mixed = sorted(n for n, v in files.items() if v.startswith(b"old "))
    return f"a mixture: old {mixed}, {len(files)} files"


def _run_child(cache_dir, out):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    env.pop("LBP_DEBUG", None)
    return subprocess.Popen([sys.executable, str(cache_dir / "child.py"), str(cache_dir), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _trial(cache, tmp_path, sig, seed):
    cache_dir, new = cache
    out = tmp_path / "report"
    inode = _old_set(out, new)
    proc = _run_child(cache_dir, out)
    first = proc.stderr.readline()  # the write phase has begun
    assert first == "write phase\n", first + proc.stderr.read()
    time.sleep(float(np.random.default_rng(seed).uniform(0.0, 0.25)))  # 6 files of 20 ms, then the swap
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    state = _state(out, new)
    assert state in ("old", "new"), state
    assert (out / "notes.txt").stat().st_ino == inode
    return proc.returncode, err, state


N_TRIALS = int(os.environ.get("LBP_KILL_TRIALS", "3"))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("seed", range(N_TRIALS))
def test_sigint_in_the_write_phase_leaves_the_old_or_the_new_set_and_nothing_else(cache, tmp_path, seed):
    rc, err, state = _trial(cache, tmp_path, signal.SIGINT, seed)
    assert "Traceback" not in err
    assert rc == 130 or (rc == 0 and state == "new"), (rc, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # nothing left beside it


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("seed", range(N_TRIALS))
def test_sigkill_in_the_write_phase_leaves_the_old_or_the_new_set_and_the_next_run_clears_up(cache, tmp_path, seed):
    rc, _, _ = _trial(cache, tmp_path, signal.SIGKILL, 1000 + seed)
    assert rc in (-signal.SIGKILL, 0)
    proc = _run_child(cache[0], tmp_path / "report")  # the next run, to its end
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _state(tmp_path / "report", cache[1]) == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_many_kills_in_the_write_phase(cache, tmp_path, sig):
    """30 random moments per signal (``-m slow``): every one leaves the old set or the new one."""
    seen = set()
    for seed in range(30):
        d = tmp_path / str(seed)
        d.mkdir()
        _, _, state = _trial(cache, d, sig, 5000 + seed)
        seen.add(state)
    assert seen <= {"old", "new"}
