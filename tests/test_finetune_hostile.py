"""``lbp finetune`` on hostile options, caches and interruptions (issue 19, item 3).

Options: a usage error (exit 2 naming the option) or an output / cache
directory refused before anything runs (exit 1, one line).  The pretraining
cache: a damaged entry is rebuilt and gives the numbers of a fresh run; a
read-only cache directory serves its valid entries and is refused, before
pretraining, when an entry must be written.  Ctrl-C at any moment: exit 130 and
``lbp: interrupted``, or a finished run; never a partial output set or cache
entry.  The presets are tiny (as in ``test_finetune_cli.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from finetune_tiny import run, tiny_config, use_tiny_presets  # noqa: E402

import analysis.finetune.build  # noqa: E402
import analysis.finetune.experiment  # noqa: E402
from analysis import cli  # noqa: E402
from analysis.finetune import FinetuneConfig  # noqa: E402
from analysis.finetune.figures import FIGURES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_SET = sorted([*FIGURES, "index.md", "results.json"])

TINY = tiny_config(("dense", "lp_l1:2"))


@pytest.fixture(autouse=True)
def _tiny_presets(monkeypatch):
    use_tiny_presets(monkeypatch, TINY)


def one_line(rc, err):
    assert rc == 1 and err.startswith("lbp: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def nothing_runs(monkeypatch):
    """Fail the test if the experiment starts (the options must be refused before it)."""

    def started(*args, **kwargs):
        raise AssertionError("the experiment ran before its output and cache were checked")

    monkeypatch.setattr(analysis.finetune.build, "run_finetune", started)


@pytest.fixture
def no_pretraining(monkeypatch):
    """Fail the test if pretraining starts (the cache directory must be refused before it)."""

    def started(*args, **kwargs):
        raise AssertionError("pretraining ran before the cache directory was checked")

    monkeypatch.setattr(analysis.finetune.experiment, "train", started)


def listing(d):
    return sorted(p.name for p in Path(d).iterdir())


# --------------------------------------------------------------------------
# --steps, --seeds, --out, --cache-dir
# --------------------------------------------------------------------------

USAGE = {  # argv after "finetune --quick --quiet", the option the message names
    "steps 0": (["--steps", "0"], "--steps"),
    "steps 1e3": (["--steps", "1e3"], "--steps"),
    "steps empty": (["--steps", ""], "--steps"),
    "steps hex": (["--steps", "0x10"], "--steps"),
    "seeds -1": (["--seeds", "-1"], "--seeds"),
    "seeds empty": (["--seeds", ""], "--seeds"),
    "seeds 2.0": (["--seeds", "2.0"], "--seeds"),
    "out blank": (["--out", " "], "--out"),
    "cache-dir empty": (["--cache-dir", ""], "--cache-dir"),  # was: the cache written into the current directory
    "cache-dir blank": (["--cache-dir", "  "], "--cache-dir"),
    "cache-dir missing": (["--cache-dir"], "--cache-dir"),
}


@pytest.mark.parametrize("case", list(USAGE))
def test_bad_options_exit_2_naming_the_option(case, tmp_path, capsys, monkeypatch, nothing_runs):
    monkeypatch.chdir(tmp_path)
    argv, option = USAGE[case]
    rc, _, err = run(["finetune", "--quick", "--quiet", *argv], capsys)
    assert rc == 2 and option in err.strip().splitlines()[-1], err
    assert listing(tmp_path) == []


@pytest.mark.parametrize("steps", ["+3", " 3", "\u0663"])  # the last: ARABIC-INDIC DIGIT THREE, an int to Python
def test_odd_but_valid_step_counts(steps, tmp_path, capsys):
    rc, _, err = run(["finetune", "--quick", "--quiet", "--steps", steps, "--out", tmp_path / "o", "--cache-dir",
                      tmp_path / "c"], capsys)
    assert rc == 0, err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["setup"]["config"]["adapt"]["steps"] == 3


def _file(d):
    (d / "afile").write_text("mine")
    return d / "afile"


BAD_OUT = {  # --out, --cache-dir (relative to tmp_path), what the message names
    "out below a file": (lambda d: (_file(d) / "o", d / "c"), "afile"),
    "out in /proc": (lambda d: (Path("/proc/lbp-out"), d / "c"), "/proc"),
    "out with a sub-directory": (lambda d: ((d / "o" / "sub").mkdir(parents=True) or d / "o", d / "c"), "sub"),
    "cache inside out": (lambda d: (d / "o", d / "o" / "cache"), "pretraining cache"),  # was: refused after the run
}


@pytest.mark.parametrize("case", list(BAD_OUT))
def test_bad_outputs_are_refused_before_the_run(case, tmp_path, capsys, nothing_runs):
    make, needle = BAD_OUT[case]
    out, cache = make(tmp_path)
    before = listing(tmp_path)
    err = one_line(*run(["finetune", "--quick", "--quiet", "--out", out, "--cache-dir", cache], capsys)[::2])
    assert needle in err, err
    assert listing(tmp_path) == before and not cache.exists()


BAD_CACHE = {
    "cache is a file": (lambda d: _file(d), "is not a directory"),
    "cache below a file": (lambda d: _file(d) / "c", "Not a directory"),
    "cache in /proc": (lambda d: Path("/proc/lbp-cache"), "/proc/lbp-cache"),
}


@pytest.mark.parametrize("case", list(BAD_CACHE))
def test_bad_cache_directories_are_refused_before_pretraining(case, tmp_path, capsys, no_pretraining):
    """Was: pretraining ran, then the entry could not be written (or the cache was made in the wrong place)."""
    make, needle = BAD_CACHE[case]
    cache = make(tmp_path)
    err = one_line(*run(["finetune", "--quick", "--quiet", "--out", tmp_path / "o", "--cache-dir", cache],
                        capsys)[::2])
    assert needle in err and "cache" in err, err
    assert not (tmp_path / "o").exists()


@pytest.fixture
def read_only(tmp_path):
    """Make a directory read-only for real (chmod; for root, the immutable attribute), or skip."""
    made = []

    def make(d):
        if os.geteuid() != 0:
            d.chmod(0o555)
        elif shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(d)],
                                                              capture_output=True).returncode:
            pytest.skip("cannot make a directory read-only for root here (no chattr +i)")
        made.append(d)
        try:
            (d / "probe").write_text("")
        except OSError:
            return d
        pytest.skip("the directory stayed writable")

    yield make
    for d in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(d)], check=False)
        else:
            d.chmod(0o755)


def test_a_read_only_cache_serves_its_entry_and_is_refused_for_a_new_one(fresh, tmp_path, capsys, read_only,
                                                                         monkeypatch):
    _, name, raw = fresh
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / name).write_bytes(raw)
    entries = listing(cache)
    read_only(cache)
    rc, _, err = run(["finetune", "--quick", "--quiet", "--out", tmp_path / "o2", "--cache-dir", cache], capsys)
    assert rc == 0, err  # the entry is there: a hit, nothing written
    assert json.loads((tmp_path / "o2" / "results.json").read_text())["pretrain"]["cache"] == "hit"
    monkeypatch.setattr(FinetuneConfig, "quick", classmethod(lambda cls: replace(
        TINY, pretrain=replace(TINY.pretrain, steps=4))))  # another configuration: an entry to write

    def started(*args, **kwargs):
        raise AssertionError("pretraining ran although its entry cannot be written")

    monkeypatch.setattr(analysis.finetune.experiment, "train", started)
    err = one_line(*run(["finetune", "--quick", "--quiet", "--out", tmp_path / "o3", "--cache-dir", cache],
                        capsys)[::2])
    assert "pretraining cache cannot be written" in err and str(cache) in err, err
    assert listing(cache) == entries and not (tmp_path / "o3").exists()


# --------------------------------------------------------------------------
# a damaged pretraining cache: rebuilt, the numbers of a fresh run
# --------------------------------------------------------------------------


def _flag_encrypted(raw):
    """The bytes of a zip archive with its first central directory entry marked encrypted."""
    b = bytearray(raw)
    i = b.find(b"PK\x01\x02") + 8
    struct.pack_into("<H", b, i, struct.unpack_from("<H", b, i)[0] | 1)
    return bytes(b)


def _nan_params(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    first = next(k for k in arrays if k != "__meta__")
    arrays[first] = np.full_like(arrays[first], np.nan)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "garbage": lambda p: p.write_bytes(b"\x00" * 100),
    "empty": lambda p: p.write_bytes(b""),
    "encrypted flag": lambda p: p.write_bytes(_flag_encrypted(p.read_bytes())),  # was: RuntimeError, a traceback
    "NaN parameters": _nan_params,  # was: a hit, and NaN accuracies
}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A run from an empty cache: its results and its cache entry's bytes."""
    d = tmp_path_factory.mktemp("fresh")
    mp = pytest.MonkeyPatch()
    mp.setattr(FinetuneConfig, "quick", classmethod(lambda cls: TINY))
    mp.setenv("MPLBACKEND", "Agg")
    try:
        assert cli.main(["finetune", "--quick", "--quiet", "--out", str(d / "o"), "--cache-dir", str(d / "c")]) == 0
    finally:
        mp.undo()
    (entry,) = (d / "c").iterdir()
    return json.loads((d / "o" / "results.json").read_text()), entry.name, entry.read_bytes()


def _numbers(res):
    return ([m["test_accuracy"] for m in res["methods"]], [m["loss_curve"] for m in res["methods"]],
            res["pretrain"]["test_accuracy"])


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cache_entry_is_rebuilt_with_the_numbers_of_a_fresh_run(damage, fresh, tmp_path, capsys):
    results, name, raw = fresh
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / name).write_bytes(raw)
    DAMAGE[damage](cache / name)
    rc, _, err = run(["finetune", "--quick", "--quiet", "--out", tmp_path / "o", "--cache-dir", cache], capsys)
    assert rc == 0, err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["pretrain"]["cache"] == "rebuilt"
    assert _numbers(res) == _numbers(results)
    assert listing(cache) == [name]  # the one entry, no temporary file
    with np.load(cache / name, allow_pickle=False) as z:  # a complete entry of the fresh run's parameters
        assert all(np.isfinite(z[k]).all() for k in z.files if k != "__meta__") and "__meta__" in z.files


def test_a_directory_in_place_of_the_entry_is_one_line(fresh, tmp_path, capsys):
    _, name, _ = fresh
    (tmp_path / "c" / name).mkdir(parents=True)
    err = one_line(*run(["finetune", "--quick", "--quiet", "--out", tmp_path / "o", "--cache-dir", tmp_path / "c"],
                        capsys)[::2])
    assert name in err, err
    assert not (tmp_path / "o").exists() and listing(tmp_path / "c") == [name]


# --------------------------------------------------------------------------
# Ctrl-C at a random moment: 130 and one line, or a finished run; nothing partial
# --------------------------------------------------------------------------

CHILD = """\
import sys
from dataclasses import replace
from analysis.finetune import FinetuneConfig, TrainConfig
from analysis.vit import ViTConfig
TINY = replace(FinetuneConfig.quick(), methods=("dense", "lp_l1:2"),
               model=ViTConfig(image_size=8, patch_size=1, in_chans=1, dim=8, depth=1, heads=2, mlp_ratio=2,
                               num_classes=5),
               pretrain=TrainConfig(steps=40, batch_size=16, eval_every=20),
               adapt=TrainConfig(steps=40, batch_size=16, eval_every=20, check_every=20))
FinetuneConfig.quick = classmethod(lambda cls: TINY)
from analysis._entry import console
sys.argv = ["lbp", "finetune", "--quick", "--quiet", "--out", sys.argv[1], "--cache-dir", sys.argv[2]]
sys.stderr.write("started\\n")
sys.stderr.flush()
raise SystemExit(console())
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("trial", range(3))
def test_ctrl_c_mid_run_leaves_no_partial_output_or_cache_entry(trial, tmp_path):
    (tmp_path / "child.py").write_text(CHILD)
    out, cache = tmp_path / "o", tmp_path / "c"
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    env.pop("LBP_DEBUG", None)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(out), str(cache)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr.readline() == "started\n"
    time.sleep(float(np.random.default_rng(trial).uniform(0.0, 4.0)))  # imports, pretraining, runs, writing
    proc.send_signal(signal.SIGINT)
    stdout, err = proc.communicate(timeout=300)
    assert "Traceback" not in err, err
    if proc.returncode == 130:
        assert err == "lbp: interrupted\n", err
        assert not out.exists()
    else:
        assert proc.returncode in (0, -signal.SIGINT), (proc.returncode, err)
        assert listing(out) == OUTPUT_SET
    assert listing(tmp_path) in (["c", "child.py"], ["c", "child.py", "o"], ["child.py"])  # no temporary dir
    entries = listing(cache) if cache.exists() else []
    assert len(entries) <= 1 and all(e.startswith("pretrain-") and e.endswith(".npz") for e in entries), entries
    for e in entries:  # a complete entry
        with np.load(cache / e, allow_pickle=False) as z:
            assert "__meta__" in z.files and all(np.isfinite(z[k]).all() for k in z.files if k != "__meta__")
