"""The headline numbers of ``lbp report``: statistics over the layers of the gathered results."""

from __future__ import annotations

import statistics

__all__ = ["EXACT", "BUDGETS", "summarize", "best_at"]

#: Relative errors below this are rounding only (an exact method): no ratio is taken to them,
#: and the log-scale error figure leaves them out.
EXACT = 1e-9


def _stats(values):
    """Median, min and max of the values that are not None (None if there are none)."""
    v = [x for x in values if x is not None]
    return {"median": statistics.median(v), "min": min(v), "max": max(v)} if v else None


def _lbp_versus(rows, methods):
    """Layer-by-layer comparison of LBP-WHT's local ``grad_W`` error with each baseline."""
    lbp_err = [r["local"]["lbp"]["grad_weight"]["rel_error"] for r in rows]
    versus = {}
    for m in methods:
        if m == "lbp":
            continue
        other = [r["local"][m]["grad_weight"]["rel_error"] for r in rows]
        ratios = [a / b for a, b in zip(lbp_err, other, strict=True) if b >= EXACT]
        versus[m] = {
            "lbp_lower": sum(a < b for a, b in zip(lbp_err, other, strict=True)),
            "layers": len(rows),
            "exact_layers": sum(b < EXACT for b in other),
            "median_ratio_lbp_over": statistics.median(ratios) if ratios else None,
        }
    if "svd" in methods:
        full = [r for r in rows if r["local"]["svd"]["info"].get("svd_rank", 0)
                >= min(r["grid"][0] * r["grid"][1], r["out_features"])]
        rest = [r["local"]["svd"]["grad_weight"]["rel_error"] for r in rows if r not in full]
        versus["svd"]["full_rank_layers"] = [r["layer"] for r in full]
        versus["svd"]["max_error_other_layers"] = max(rest) if rest else None
    return versus


#: Backward-FLOP budgets (fractions of the dense backward) at which the best method is named.
BUDGETS = (0.1, 0.3, 0.5)


def _alternatives(rows):
    """Per published method: medians over the layers of its errors, and its FLOPs over all of them."""
    specs = list(rows[0].get("alternatives", {})) if rows else []
    out = {}
    for spec in specs:
        es = [r["alternatives"][spec] for r in rows]
        dense = sum(e["dense_flops"] for e in es)
        out[spec] = {
            "family": es[0]["family"], "unbiased": es[0]["unbiased"], "stochastic": es[0]["stochastic"],
            "seeds": es[0]["seeds"],
            **{f"{part}_{k}": _stats([e[part][k] for e in es])
               for part in ("grad_weight", "grad_x") for k in ("rel_error", "bias2", "variance")},
            "saved_fraction": _stats([e["saved_fraction"] for e in es]),
            "flops_fraction": sum(e["backward_flops"] for e in es) / dense if dense else None,
        }
    return out


def best_at(points, budgets=BUDGETS) -> dict:
    """The method of lowest ``grad_W`` error within each backward-FLOP budget.

    Parameters
    ----------
    points : dict of str to dict
        Spec to a :meth:`analysis.methods.measure.MethodError.to_dict`.
    budgets : sequence of float, optional
        Fractions of the dense backward's FLOPs (default :data:`BUDGETS`).

    Returns
    -------
    dict of str to dict or None
        ``"10%"`` (and so on) to ``{"spec", "grad_weight_rel_error", "grad_x_rel_error", "flops_fraction"}``
        of the best point within the budget, None if none fits.

    Examples
    --------
    >>> from analysis.report.summary import best_at
    >>> pts = {"a": {"grad_weight": {"rel_error": 0.5}, "grad_x": {"rel_error": 0.5}, "flops_fraction": 0.08},
    ...        "b": {"grad_weight": {"rel_error": 0.1}, "grad_x": {"rel_error": 0.0}, "flops_fraction": 0.6}}
    >>> best_at(pts, (0.1, 0.5))["10%"]["spec"], best_at(pts, (0.1, 0.5))["50%"]["spec"]
    ('a', 'a')
    """
    out = {}
    for b in budgets:
        fit = [(p["grad_weight"]["rel_error"], spec) for spec, p in points.items()
               if p["flops_fraction"] is not None and p["flops_fraction"] <= b
               and p["grad_weight"]["rel_error"] is not None]
        key = f"{round(100 * b)}%"
        if not fit:
            out[key] = None
            continue
        _, spec = min(fit)
        p = points[spec]
        out[key] = {"spec": spec, "grad_weight_rel_error": p["grad_weight"]["rel_error"],
                    "grad_x_rel_error": p["grad_x"]["rel_error"], "flops_fraction": p["flops_fraction"]}
    return out


def _growth(row, key):
    """End-to-end ``grad_W`` error of a layer over its error alone (None when that is zero)."""
    local = row["local"]["lbp"]["grad_weight"]["rel_error"]
    return row["end_to_end"][key]["weight_rel_error"] / local if local else None


def _end_to_end(res, rows, key):
    """Headline numbers of one end-to-end subset."""
    rep = res["end_to_end"][key]["report"]
    chosen = [r for r in rows if r["end_to_end"][key]["method"] == "lbp"]
    growth = [g for g in (_growth(r, key) for r in chosen) if g is not None]
    worst = max(rows, key=lambda r: r["end_to_end"][key]["weight_rel_error"]) if rows else None
    worst_param = max(rep["parameters"], key=lambda pe: -1.0 if pe["rel_error"] is None else pe["rel_error"])
    first_lbp = chosen[0] if chosen else None
    return {
        "lbp_layers": len(chosen),
        "weight_error": _stats([r["end_to_end"][key]["weight_rel_error"] for r in rows]),
        "worst_layer": None if worst is None else worst["layer"],
        "max_parameter_error": rep["max_rel_error"],
        "worst_parameter": worst_param["name"],
        "median_growth_over_local": statistics.median(growth) if growth else None,
        "first_lbp_layer": None if first_lbp is None else first_lbp["layer"],
        "first_lbp_growth": None if first_lbp is None else _growth(first_lbp, key),
        "linear_saved_fraction": rep["linear_flops_saved_fraction"],
        "total_saved_fraction": rep["total_flops_saved_fraction"],
    }


def summarize(results) -> dict:
    """Headline numbers (plain data) from the gathered results.

    Parameters
    ----------
    results : dict
        As :func:`analysis.report.run_workload` gathers them (its ``summary``
        entry is not needed).

    Returns
    -------
    dict
        ``rank``, ``bases_total``; median, min and max over the token-grid
        layers of the energy kept (``energy_kept_x``, ``energy_kept_grad_y``),
        of the local errors of every method (``local_grad_weight_error``,
        ``local_grad_x_error``) and of the GEMM speed-up (``ideal_speedup``);
        ``lbp_versus`` (per baseline: in how many layers LBP-WHT's ``grad_W``
        error is lower, the median ratio of the errors, the layers where the
        baseline is exact); ``end_to_end`` (per subset: error statistics, the
        worst layer and parameter, how much errors grow over their local
        value, FLOPs saved); ``alternatives`` (per published method: error,
        bias² and variance statistics, saved fraction, FLOPs over all layers
        as a fraction of the dense); ``best_at`` (:func:`best_at` of the
        typical layer's Pareto points).

    Examples
    --------
    >>> from analysis.report import ReportConfig, run_workload
    >>> from analysis.report.summary import summarize
    >>> res = run_workload(ReportConfig.quick_config(batch=2), progress=False)
    >>> summarize(res) == res["summary"]
    True
    """
    rows = [r for r in results["layers"] if r["on_grid"]]
    methods = list(rows[0]["local"]) if rows else []
    return {
        "rank": results["setting"]["rank"],
        "bases_total": results["setting"]["bases_total"],
        "energy_kept_x": _stats([r["energy_kept_x"] for r in rows]),
        "energy_kept_grad_y": _stats([r["energy_kept_grad_y"] for r in rows]),
        "local_grad_weight_error": {m: _stats([r["local"][m]["grad_weight"]["rel_error"] for r in rows])
                                    for m in methods},
        "local_grad_x_error": {m: _stats([r["local"][m]["grad_x"]["rel_error"] for r in rows]) for m in methods},
        "lbp_versus": _lbp_versus(rows, methods),
        "end_to_end": {key: _end_to_end(results, rows, key) for key in results["end_to_end"]},
        "ideal_speedup": _stats([r["flops"]["ideal_speedup"] for r in rows]),
        "alternatives": _alternatives(rows),
        "lbp_saved_fraction": _stats([r.get("lbp_saved_fraction") for r in rows]),
        "best_at": best_at(results.get("pareto", {}).get("points", {})),
    }
