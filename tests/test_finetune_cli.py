"""``lbp finetune`` through :func:`analysis.cli.main`: outputs, option handling, exit codes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from finetune_tiny import run, tiny_config, use_tiny_presets  # noqa: E402

import analysis._outdir  # noqa: E402
from analysis.finetune.figures import FIGURES  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"

TINY = tiny_config(("dense", "lp_l1:2", "budget:0", "lp_linf:8"))


@pytest.fixture(autouse=True)
def _tiny_presets(monkeypatch):
    use_tiny_presets(monkeypatch, TINY)


def test_quick_writes_the_whole_output_set(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    rc, stdout, err = run(["finetune", "--quick", "--quiet", "--out", out, "--cache-dir", cache], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted([*FIGURES, "index.md", "results.json"])
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == PNG
    res = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in res["methods"]] == ["dense", "lp_l1:2", "budget:0", "lp_linf:8"]
    for m in res["methods"]:
        assert {"name", "bases", "rank", "backward_mflops", "test_accuracy", "loss_curve"} <= set(m)
        assert len(m["test_accuracy"]) == 1 and len(m["loss_curve"]) == 1
    assert res["pretrain"]["cache"] == "built" and 0 <= res["pretrain"]["test_accuracy"] <= 1
    summary = res["summary"]
    assert summary["headline"] in stdout and f"wrote {out / 'index.md'}" in stdout
    text = (out / "index.md").read_text(encoding="utf-8")
    assert summary["headline"] in text and "| full BP |" in text
    for m in res["methods"]:  # the table states every method's measured accuracy and cost
        assert f"{m['backward_mflops']:.1f}" in text
        assert f"| {100 * m['test_accuracy_mean']:.1f} % |" in text  # one seed: no spread
    assert all(f"]({name})" in text for name in FIGURES)
    assert err == ""  # --quiet
    rc, _, _ = run(["finetune", "--quick", "--quiet", "--out", out, "--cache-dir", cache], capsys)
    assert rc == 0 and json.loads((out / "results.json").read_text())["pretrain"]["cache"] == "hit"


def test_seeds_and_steps_override(tmp_path, capsys):
    out = tmp_path / "o"
    rc, _, err = run(["finetune", "--seeds", "2", "--steps", "3", "--quiet", "--out", out, "--cache-dir",
                      tmp_path / "c"], capsys)
    assert rc == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["setup"]["seeds"] == [0, 1]
    assert all(len(m["test_accuracy"]) == 2 and len(m["loss_curve"][0]) == 3 for m in res["methods"])
    assert res["setup"]["config"]["adapt"]["steps"] == 3


@pytest.mark.parametrize("argv", [
    ["finetune", "--seeds", "0"],
    ["finetune", "--seeds", "two"],
    ["finetune", "--steps", "-5"],
    ["finetune", "--steps", "1.5"],
    ["finetune", "--bogus"],
    ["finetune", "--out"],
])
def test_bad_arguments_exit_2(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(argv, capsys)
    assert rc == 2 and "usage: lbp" in err and err.strip().splitlines()[-1].startswith("lbp")
    assert list(tmp_path.iterdir()) == []


def test_write_failure_leaves_nothing(tmp_path, capsys, monkeypatch):
    """The output set is written last and all or nothing: a failing file removes the others."""
    real = analysis._outdir._write_file
    written = []

    def flaky(path, data, mode):
        if Path(path).name == "results.json":
            raise OSError(28, "No space left on device", str(path))
        written.append(Path(path).name)
        return real(path, data, mode)

    monkeypatch.setattr(analysis._outdir, "_write_file", flaky)
    out = tmp_path / "out"
    rc, _, err = run(["finetune", "--quick", "--quiet", "--out", out, "--cache-dir", tmp_path / "c"], capsys)
    assert rc == 1 and "No space left on device" in err and err.count("\n") == 1
    assert written and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temporary directory left beside it


def test_output_path_is_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("keep")
    rc, _, err = run(["finetune", "--quick", "--quiet", "--out", target, "--cache-dir", tmp_path / "c"], capsys)
    assert rc == 1 and err.startswith("lbp: error:") and len(err.strip().splitlines()) == 1
    assert target.read_text() == "keep" and not (tmp_path / "c").exists()  # checked before the run


def test_missing_dependency_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    rc, _, err = run(["finetune", "--quick", "--out", tmp_path / "o"], capsys)
    assert rc == 1 and "scikit-learn" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_help_lists_finetune(capsys):
    rc, out, _ = run(["--help"], capsys)
    assert rc == 0 and "finetune" in out
    rc, out, _ = run(["finetune", "--help"], capsys)
    assert rc == 0 and "--quick" in out and "--seeds" in out and "--steps" in out


@pytest.mark.slow
def test_real_quick_run(tmp_path, capsys, monkeypatch):
    """The real ``--quick`` preset (about two minutes on two cores, pretraining included)."""
    monkeypatch.undo()
    monkeypatch.setenv("MPLBACKEND", "Agg")
    rc, _, err = run(["finetune", "--quick", "--quiet", "--out", tmp_path / "o", "--cache-dir", tmp_path / "c"], capsys)
    assert rc == 0, err
    res = json.loads(Path(tmp_path / "o" / "results.json").read_text())
    by = {m["name"]: m for m in res["methods"]}
    assert res["pretrain"]["test_accuracy"] > 0.85 and by["dense"]["test_accuracy"][0] > 0.8
    assert by["lp_linf:8"]["test_accuracy"] == by["dense"]["test_accuracy"]  # the full basis is exact
