"""The experiment runner: results schema, the pretraining cache in use, paired seeds."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

pytest.importorskip("sklearn")

from analysis.finetune import FinetuneConfig, TrainConfig, run_finetune  # noqa: E402
from analysis.finetune.experiment import SCHEMA  # noqa: E402
from analysis.vit import ViTConfig  # noqa: E402

TINY = replace(
    FinetuneConfig.quick(),
    methods=("lp_l1:2", "dense", "energy_l2:3", "budget:1", "lp_linf:8"),
    seeds=2,
    model=ViTConfig(image_size=8, patch_size=1, in_chans=1, dim=8, depth=1, heads=2, mlp_ratio=2, num_classes=5),
    pretrain=TrainConfig(steps=4, batch_size=16, eval_every=2),
    adapt=TrainConfig(steps=4, batch_size=16, eval_every=2, check_every=2),
)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    first = run_finetune(TINY, cache_dir=cache, progress=False)
    second = run_finetune(TINY, cache_dir=cache, progress=False)
    return first, second


def test_schema(results):
    res, _ = results
    json.dumps(res, allow_nan=False)
    assert res["schema"] == SCHEMA
    assert [m["name"] for m in res["methods"]] == ["dense", "lp_l1:2", "energy_l2:3", "budget:1", "lp_linf:8"]
    assert 0 <= res["pretrain"]["test_accuracy"] <= 1
    setup = res["setup"]
    assert setup["grid"] == [8, 8] and setup["patches"] == 1 and setup["seeds"] == [0, 1]
    assert setup["data"]["adapt"]["digits"] == [5, 6, 7, 8, 9]
    by = {m["name"]: m for m in res["methods"]}
    assert by["dense"]["bases"] is None and by["dense"]["rank"] is None and by["dense"]["fraction_of_dense"] == 1
    assert by["lp_l1:2"]["bases"] == "lp_l1:2" and by["lp_l1:2"]["rank"] == 3
    assert by["budget:1"]["rank"] is None and by["budget:1"]["fraction_of_dense"] < 1
    for m in res["methods"]:
        assert len(m["test_accuracy"]) == 2 and len(m["loss_curve"]) == 2 and len(m["loss_curve"][0]) == 4
        assert m["backward_mflops"] > 0 and m["test_accuracy_std"] >= 0
        assert m["eval_steps"] == [0, 2, 4] and m["gradient_checks"]["steps"] == [0, 2]
        assert len(m["param_distance_to_dense"]) == 2
    assert by["dense"]["param_distance_to_dense"] == [0.0, 0.0]
    assert max(by["lp_linf:8"]["param_distance_to_dense"]) < 1e-4  # float32: exact up to rounding
    assert min(by["lp_l1:2"]["param_distance_to_dense"]) > 1e-3
    assert by["lp_linf:8"]["gradient_checks"]["energy_kept"]["blocks.0.mlp.fc1"][0] == pytest.approx([1.0, 1.0])
    energy = by["energy_l2:3"]["gradient_checks"]["energy_kept"]["blocks.0.mlp.fc1"]
    assert len(energy) == 2 and all(0 < e < 1 for e in energy[0])


def test_cache_is_used_and_runs_are_reproducible(results):
    first, second = results
    assert first["pretrain"]["cache"] == "built" and second["pretrain"]["cache"] == "hit"
    assert first["pretrain"]["test_accuracy"] == second["pretrain"]["test_accuracy"]
    for a, b in zip(first["methods"], second["methods"], strict=True):
        assert a["test_accuracy"] == b["test_accuracy"] and a["loss_curve"] == b["loss_curve"], a["name"]


def test_seeds_start_each_method_from_the_same_weights(results):
    res, _ = results
    losses = {m["name"]: m["loss_curve"] for m in res["methods"]}
    for name in ("lp_l1:2", "budget:1", "lp_linf:8"):
        for seed in range(2):  # same weights, same first batch: the same first loss
            assert losses[name][seed][0] == losses["dense"][seed][0]
    assert losses["dense"][0][0] != losses["dense"][1][0]


def test_config_validation():
    with pytest.raises(ValueError, match="seeds"):
        FinetuneConfig(seeds=0)
    with pytest.raises(ValueError, match="distinct"):
        FinetuneConfig(methods=("dense", "dense"))
    with pytest.raises(ValueError, match="unknown method"):
        FinetuneConfig(methods=("svd:3",))
    with pytest.raises(ValueError, match="num_classes"):
        FinetuneConfig(model=ViTConfig(num_classes=3))
    cfg = FinetuneConfig.full()
    assert cfg.methods[0] == "dense" and len(cfg.methods) >= 9 and cfg.seeds >= 3
    assert cfg.with_steps(50).adapt.steps == 50 and cfg.with_steps(50).pretrain == cfg.pretrain
    assert cfg.pretrain_spec() == FinetuneConfig.quick().pretrain_spec()  # one pretraining for all presets
