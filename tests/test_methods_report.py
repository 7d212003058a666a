"""The published methods in gradient_errors, ``lbp error --methods``, ``lbp report`` and the Pareto figure."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from analysis import cli
from analysis.errors import gradient_errors
from analysis.methods import PAPER_DEFAULTS
from analysis.methods.measure import method_errors
from analysis.plots import plot_pareto
from analysis.report import ReportConfig, build_report
from analysis.report.summary import best_at

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _agg(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("LBP_DEBUG", raising=False)


def _layer(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((4, 65, 8)), rng.standard_normal((6, 8)), rng.standard_normal((4, 65, 6))


def test_gradient_errors_measures_the_methods():
    x, w, gy = _layer()
    rep = gradient_errors(x, w, gy, grid=(8, 8), patch=4, bases="lp_l1:3", extra_tokens=1, baselines=("dct",),
                          methods=("hot", "crs:0.5", "calibrated:6"), method_seeds=3)
    assert list(rep.alternatives) == ["hot", "crs:0.5", "calibrated:6"]
    d = rep.to_dict()
    assert set(d["alternatives"]) == {"hot", "crs:0.5", "calibrated:6"}
    assert d["alternatives"]["crs:0.5"]["seeds"] == 3
    # the unit scaling of gradient_errors changes no reported number
    direct = method_errors(x, w, gy, ["hot"], grid=(8, 8), patch=4, extra_tokens=1)["hot"]
    assert math.isclose(direct.grad_weight["rel_error"], rep.alternatives["hot"].grad_weight["rel_error"],
                        rel_tol=1e-9)
    assert "alternatives" not in gradient_errors(x, w, gy, grid=(8, 8), patch=4, bases="lp_l1:3",
                                                 extra_tokens=1, baselines=()).to_dict()


def test_gradient_errors_checks_the_methods_first():
    x, w, gy = _layer()
    with pytest.raises(ValueError, match="accepted specs"):
        gradient_errors(x, w, gy, grid=(8, 8), extra_tokens=1, methods=("nope:1",))
    with pytest.raises(ValueError, match="in memory"):
        gradient_errors(x, w, gy, grid=(8, 8), extra_tokens=1, methods=("hot",), memory="1GB")


def test_a_setting_the_layer_does_not_allow_is_reported_not_raised():
    x, w, gy = _layer()
    e = method_errors(x, w, gy, ["velora:3"], grid=(8, 8), extra_tokens=1)["velora:3"]
    assert e.grad_weight["rel_error"] is None and "divide" in e.info["not_applicable"]


def test_parse_method_list():
    assert cli.parse_method_list("hot:gx=fp,keep=1,WTACRS:0.3") == ("hot:gx=fp,keep=1", "wtacrs:0.3")
    assert cli.parse_method_list("none") == ()
    with pytest.raises(argparse.ArgumentTypeError, match="accepted specs"):
        cli.parse_method_list("svd:3")


def test_lbp_error_with_methods(tmp_path, capsys):
    x, w, gy = _layer(1)
    path = tmp_path / "layer.npz"
    np.savez(path, x=x, weight=w, grad_y=gy)
    rc = cli.main(["error", str(path), "--grid", "8x8", "--extra-tokens", "1", "--bases", "lp_l1:6", "--baselines",
                   "none", "--methods", "wtacrs:0.3,meprop:1,hot", "--method-seeds", "3", "--out", str(tmp_path / "o")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "wtacrs:0.3" in out and "bias^2" in out
    res = json.loads((tmp_path / "o" / "error.json").read_text())
    assert list(res["methods"]) == ["wtacrs:0.3", "meprop:1", "hot"]
    assert res["methods"]["meprop:1"]["grad_weight"]["rel_error"] < 1e-12  # everything kept: exact
    assert res["methods"]["wtacrs:0.3"]["seeds"] == 3
    rc = cli.main(["error", str(path), "--grid", "8x8", "--bases", "lp_l1:6", "--methods", "svd:1", "--out",
                   str(tmp_path / "p")])
    assert rc == 2 and "accepted specs" in capsys.readouterr().err


def test_report_has_the_methods_table_and_pareto_figure(tmp_path):
    cfg = replace(ReportConfig.quick_config(), pareto=("lbp:lp_l1:1", "lbp:lp_l1:6", "meprop:0.1", "meprop:0.5",
                                                       "wtacrs:0.3", "hot", "calibrated:3"))
    res = build_report(tmp_path / "r", config=cfg, progress=False)
    r = res.results
    assert list(r["summary"]["alternatives"]) == list(PAPER_DEFAULTS)
    assert 0 < r["summary"]["lbp_saved_fraction"]["median"] < 1
    assert set(r["pareto"]["points"]) == set(cfg.pareto)
    best = r["summary"]["best_at"]
    assert set(best) == {"10%", "30%", "50%"}
    for key, b in best.items():
        if b is not None:
            assert b["flops_fraction"] <= int(key[:-1]) / 100
    assert (tmp_path / "r" / "fig_pareto.png").read_bytes()[:8] == PNG
    text = (tmp_path / "r" / "index.md").read_text()
    assert "## Published alternatives on the same layers" in text and "`wtacrs:0.3`" in text
    assert "](fig_pareto.png)" in text


def test_report_methods_option(tmp_path, capsys):
    rc = cli.main(["report", "--quick", "--quiet", "--methods", "rad:0.5", "--method-seeds", "2", "--out",
                   str(tmp_path / "r")])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert list(res["summary"]["alternatives"]) == ["rad:0.5"] and res["config"]["method_seeds"] == 2
    rc = cli.main(["report", "--quick", "--quiet", "--methods", "none", "--out", str(tmp_path / "n")])
    assert rc == 0
    text = (tmp_path / "n" / "index.md").read_text()
    assert "Published alternatives" not in text


def test_best_at_and_plot_pareto():
    pts = {"a": {"family": "lbp", "grad_weight": {"rel_error": 0.3}, "grad_x": {"rel_error": 0.3},
                 "flops_fraction": 0.25},
           "b": {"family": "crs", "grad_weight": {"rel_error": 0.1}, "grad_x": {"rel_error": 0.0},
                 "flops_fraction": 0.6}}
    best = best_at(pts)
    assert best["10%"] is None and best["30%"]["spec"] == "a" and best["50%"]["spec"] == "a"
    ax = plot_pareto(pts, which="grad_x")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["lbp"]  # crs's exact grad_x is left out
    with pytest.raises(ValueError, match="which"):
        plot_pareto(pts, which="grad_b")
