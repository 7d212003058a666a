"""``lbp report``: the files exist and parse, and index.md states what results.json holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import lbpcore
from analysis import cli, report

PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = ["fig_energy_curves.png", "fig_error_curves.png", "fig_layers.png", "fig_spectrum.png"]


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """One quick report, written through the command line (about 3 s)."""
    out = tmp_path_factory.mktemp("report") / "lbp-report"
    rc = cli.main(["report", "--quick", "--quiet", "--subset", "blocks.1.*", "--out", str(out)])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def results(quick_report):
    return json.loads((quick_report / "results.json").read_text())


def test_report_files_exist_and_parse(quick_report):
    assert sorted(p.name for p in quick_report.iterdir()) == sorted(FIGURES + ["index.md", "results.json"])
    for name in FIGURES:
        assert (quick_report / name).read_bytes()[:8] == PNG
    text = (quick_report / "index.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == FIGURES
    assert all((quick_report / link).is_file() for link in links)


def test_results_hold_every_layer_and_section(results):
    for key in ("config", "model", "images", "setting", "layers", "spectra", "typical_layer", "energy_curves",
                "rank_sweep", "end_to_end", "flops", "summary", "timing"):
        assert key in results
    assert results["config"]["quick"] is True
    s = results["setting"]
    assert (s["patch"], s["bases"], s["rank"]) == (8, "lp_l1:6", 21)
    names = [row["layer"] for row in results["layers"]]
    assert names == results["model"]["linear_layers"]
    assert names[0] == "patch_embed" and names[-1] == "head"
    for row in results["layers"]:
        if not row["on_grid"]:
            assert "local" not in row
            continue
        assert 0.0 < row["energy_kept_x"] <= 1.0 and 0.0 < row["energy_kept_grad_y"] <= 1.0
        assert set(row["local"]) == {"lbp", "klt", "dct", "svd", "random"}
        for m in row["local"].values():
            assert set(m["grad_weight"]) >= {"rel_error", "cosine"}
        assert set(row["end_to_end"]) == {"all", "blocks", "mlp", "blocks.1.*"}
    assert len(results["rank_sweep"]["points"]) == len(results["config"]["sweep_ks"])
    assert results["images"]["names"]  # real sample pictures were loaded


def test_energy_kept_matches_the_stored_spectra(results):
    mask = lbpcore.select_bases(8, "lp_l1:6").mask
    for row in results["layers"]:
        if row["on_grid"]:
            for part in ("x", "grad_y"):
                emap = np.array(results["spectra"][row["layer"]][part]["energy_map"])
                assert row[f"energy_kept_{part}"] == pytest.approx(emap[mask].sum() / emap.sum(), rel=1e-12)


def test_flops_match_backward_cost(results):
    row = next(r for r in results["layers"] if r["layer"].endswith("mlp.fc1"))
    b = results["images"]["batch"]
    grid = tuple(results["model"]["grid"])
    cost = lbpcore.backward_cost((b, grid[0] * grid[1], row["in_features"]), row["out_features"], grid=grid,
                                 patch=8, bases="lp_l1:6")
    assert row["flops"]["dense"] == cost.dense_flops
    assert row["flops"]["lbp"] == cost.lbp_flops
    fl = results["flops"]
    assert fl["dense_linear"] == sum(r["flops"]["dense"] for r in results["layers"])
    assert fl["lbp_linear"] == sum(r["flops"]["lbp"] for r in results["layers"])
    assert fl["linear_saved_fraction"] == pytest.approx(1 - fl["lbp_linear"] / fl["dense_linear"])


def test_end_to_end_dense_layers_and_exact_head(results):
    for row in results["layers"]:
        e = row["end_to_end"]
        assert e["all"]["method"] == ("lbp" if row["on_grid"] else "dense")
        assert e["mlp"]["method"] == ("lbp" if ".mlp." in row["layer"] else "dense")
        assert e["blocks.1.*"]["method"] == ("lbp" if row["layer"].startswith("blocks.1.") else "dense")
        if row["layer"] in ("blocks.1.mlp.fc2", "head"):
            # no layer after these is approximated: their error is their own
            local = row["local"]["lbp"]["grad_weight"]["rel_error"] if row["on_grid"] else 0.0
            assert e["blocks.1.*"]["weight_rel_error"] == pytest.approx(local, rel=1e-3, abs=1e-7)
    head = results["layers"][-1]["end_to_end"]["all"]
    assert head["weight_rel_error"] == 0.0  # nothing after the head is approximated


def test_index_states_the_measured_numbers(quick_report, results):
    text = (quick_report / "index.md").read_text(encoding="utf-8")
    assert text == report.render_markdown(results)  # regenerated from results alone
    sm = results["summary"]
    assert f"{100 * sm['energy_kept_grad_y']['median']:.1f}%" in text
    assert f"{100 * results['flops']['linear_saved_fraction']:.1f}%" in text
    for row in results["layers"]:
        assert f"`{row['layer']}`" in text
    # one table row per token layer in the first table, with its numbers
    row = results["layers"][1]
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| `{row['layer']}` | {row['in_features']} -> "))
    assert f"{100 * row['energy_kept_grad_y']:.1f}%" in line
    assert "## End to end" in text and "## Backward FLOPs" in text and "## Figures" in text


def test_markdown_table():
    t = report.markdown_table(["a", "b|c"], [[1, "x"], ["y", 2.5]], align="lc")
    assert t.splitlines() == ["| a | b\\|c |", "| :--- | :---: |", "| 1 | x |", "| y | 2.5 |"]


def test_failed_report_writes_nothing(tmp_path, monkeypatch):
    def boom(results):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(report, "render_figures", boom)
    out = tmp_path / "r"
    with pytest.raises(RuntimeError, match="figure failed"):
        report.build_report(out, config=report.ReportConfig.quick_config(batch=2), progress=False)
    assert not out.exists()


def test_report_into_a_file_path_fails_before_running(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(report, "run_workload", lambda *a, **k: pytest.fail("ran the workload"))
    (tmp_path / "file").write_text("")
    assert cli.main(["report", "--quick", "--out", str(tmp_path / "file")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lbp: error: ") and "not a directory" in err


def test_subset_matching_no_layer_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["report", "--quick", "--subset", "blocks.9.*", "--out", str(tmp_path / "r")]) == 2
    assert "--subset" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_default_config_is_the_full_workload():
    cfg = report.ReportConfig()
    assert not cfg.quick and cfg.batch >= 16 and cfg.image_size == 64
    assert cfg.vit["depth"] >= 4
    assert report.ReportConfig.quick_config().quick
    assert Path(cli.build_parser().parse_args(["report"]).out) == Path("lbp-report")
