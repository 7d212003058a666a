"""The tiny ``lbp finetune`` presets and the CLI runner shared by the fine-tuning CLI tests.

:func:`tiny_config` shrinks :meth:`FinetuneConfig.quick` to a one-block ViT on
8x8 images trained for a few steps (seconds per run); :func:`use_tiny_presets`
makes ``--quick`` and ``--full`` mean it (``--full`` with two seeds) for one
test; :func:`run` calls :func:`analysis.cli.main` and returns its exit code and
output.
"""

from __future__ import annotations

from dataclasses import replace

from analysis import cli
from analysis.finetune import FinetuneConfig, TrainConfig
from analysis.vit import ViTConfig

__all__ = ["run", "tiny_config", "use_tiny_presets"]


def tiny_config(methods: tuple) -> FinetuneConfig:
    """The quick preset with ``methods`` on a one-block, 8-wide ViT (3 pretraining, 4 adaptation steps)."""
    return replace(
        FinetuneConfig.quick(),
        methods=tuple(methods),
        model=ViTConfig(image_size=8, patch_size=1, in_chans=1, dim=8, depth=1, heads=2, mlp_ratio=2, num_classes=5),
        pretrain=TrainConfig(steps=3, batch_size=16, eval_every=3),
        adapt=TrainConfig(steps=4, batch_size=16, eval_every=2, check_every=2),
    )


def use_tiny_presets(monkeypatch, config: FinetuneConfig) -> None:
    """Make ``--quick`` run ``config`` and ``--full`` run it with two seeds, for the test of ``monkeypatch``."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("LBP_DEBUG", raising=False)
    monkeypatch.setattr(FinetuneConfig, "quick", classmethod(lambda cls: config))
    monkeypatch.setattr(FinetuneConfig, "full", classmethod(lambda cls: replace(config, seeds=2)))


def run(argv, capsys) -> tuple:
    """``(exit code, stdout, stderr)`` of ``lbp`` with ``argv`` (items converted to str)."""
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err
