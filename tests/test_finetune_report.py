"""The fine-tuning section of ``lbp report``."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import pytest

from analysis import report
from analysis.finetune import FinetuneConfig, TrainConfig
from analysis.report.finetune import finetune_headline, finetune_section
from analysis.vit import ViTConfig

TINY = replace(
    FinetuneConfig.headline(),
    model=ViTConfig(image_size=8, patch_size=1, in_chans=1, dim=8, depth=1, heads=2, mlp_ratio=2, num_classes=5),
    pretrain=TrainConfig(steps=3, batch_size=16, eval_every=3),
    adapt=TrainConfig(steps=3, batch_size=16, eval_every=3, check_every=3),
)


def test_headline_section_states_the_run(tmp_path):
    pytest.importorskip("sklearn")
    head = finetune_headline(TINY, cache_dir=tmp_path, progress=False)
    assert [r["name"] for r in head["rows"]] == list(FinetuneConfig.headline().methods)
    assert head["cache"] == "built" and head["steps"] == 3 and head["seeds"] == 1
    lines = finetune_section(head)
    text = "\n".join(lines)
    assert lines[0] == "## Fine-tuning: does it train as well?" and lines[-1] == ""
    assert f"**{head['headline']}**" in text
    for r in head["rows"]:
        assert f"| {r['label']} | {100 * r['accuracy_mean']:.1f} % |" in text
        assert f"{r['backward_mflops']:.1f}" in text
    assert finetune_headline(TINY, cache_dir=tmp_path, progress=False)["cache"] == "hit"


def test_skipped_without_sklearn_or_in_quick_mode(monkeypatch):
    assert "quick" in finetune_headline(None)["skipped"]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    skipped = finetune_headline(TINY)
    assert "scikit-learn" in skipped["skipped"]
    assert "Skipped: scikit-learn" in "\n".join(finetune_section(skipped))


def test_report_config_runs_the_headline_except_in_quick_mode():
    assert report.ReportConfig().finetune is True
    assert report.ReportConfig.quick_config().finetune is False
    text = report.render_markdown(report.run_workload(report.ReportConfig.quick_config(batch=2), progress=False))
    assert "## Fine-tuning: does it train as well?" in text and "*Skipped: not run with the reduced --quick" in text
