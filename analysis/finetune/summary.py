"""The headline numbers of a fine-tuning experiment: gaps to full backpropagation, costs, the Pareto set.

:func:`summarize` reads the dict of :func:`~analysis.finetune.run_finetune`
and derives everything the text and the figures state: each method's accuracy
gap to full backpropagation (also paired by seed: within a seed every method
starts from the same weights and sees the same mini-batches), its backward cost
as a fraction of full backpropagation, the methods no other method beats at a
lower cost, the exactness check of the full Walsh basis, and how the energy
kept by each selection drifts during adaptation.  :func:`headline` is the one
sentence ``lbp finetune``, ``lbp report`` and the README quote.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MATCH_POINTS", "summarize", "headline", "accuracy_text"]

#: A method *matches* full backpropagation when its mean test accuracy is at most this many
#: percentage points below it.
MATCH_POINTS = 1.0


def _mean(values):
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _fastest(seconds):
    """Milliseconds: the fastest seed's median backward time (the least disturbed by other work)."""
    v = [x for x in seconds if x is not None]
    return 1e3 * min(v) if v else None


def _checks_at(method, part, index):
    """Mean over approximated layers and seeds of a gradient-check series at position ``index``."""
    series = method["gradient_checks"][part]
    layers = method["approximated_layers"] if part == "energy_kept" else ["all"]
    values = [s[index] for name in layers if name in series for s in series[name] if s]
    return _mean(values)


def _row(m, dense):
    acc = np.asarray(m["test_accuracy"], dtype=np.float64)
    row = {
        "name": m["name"],
        "label": m["label"],
        "kind": m["kind"],
        "bases": m["bases"],
        "rank": m["rank"],
        "seeds": int(acc.size),
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": m["test_accuracy_std"],
        "backward_mflops": m["backward_mflops"],
        "fraction_of_dense": m["fraction_of_dense"],
        "exact": m["kind"] == "lbp" and m["rank"] == m["patch"] ** 2,
        "backward_ms": _fastest(m["backward_seconds_per_step"]),
        "grad_rel_error": _mean([e for s in m["gradient_checks"]["rel_error"].get("all", []) for e in s]),
        "energy_kept_first": _checks_at(m, "energy_kept", 0) if m["approximated_layers"] else None,
        "energy_kept_last": _checks_at(m, "energy_kept", -1) if m["approximated_layers"] else None,
        "param_distance_to_dense": max(m["param_distance_to_dense"]) if m["param_distance_to_dense"] else None,
    }
    if dense is None:
        row.update(gap_points=None, paired_gap_std_points=None, gap_resolved=None, matches=None)
        return row
    ref = np.asarray(dense["test_accuracy"], dtype=np.float64)
    paired = 100.0 * (acc - ref)
    row["gap_points"] = 100.0 * (row["accuracy_mean"] - float(ref.mean()))
    row["paired_gap_std_points"] = float(paired.std(ddof=1)) if paired.size > 1 else 0.0
    se = row["paired_gap_std_points"] / np.sqrt(paired.size)
    row["gap_resolved"] = bool(abs(row["gap_points"]) > 2.0 * se) if paired.size > 1 else None
    row["matches"] = bool(row["gap_points"] >= -MATCH_POINTS)
    return row


def _pareto(rows):
    """Names of the methods no other method beats: as accurate or more at no more cost, one strictly."""
    front = []
    for r in rows:
        beaten = any(o is not r and o["backward_mflops"] <= r["backward_mflops"]
                     and o["accuracy_mean"] >= r["accuracy_mean"]
                     and (o["backward_mflops"] < r["backward_mflops"] or o["accuracy_mean"] > r["accuracy_mean"])
                     for o in rows)
        if not beaten:
            front.append(r["name"])
    return sorted(front, key=lambda n: next(r["backward_mflops"] for r in rows if r["name"] == n))


def summarize(results) -> dict:
    """Headline numbers of a fine-tuning experiment.

    Parameters
    ----------
    results : dict
        As returned by :func:`~analysis.finetune.run_finetune`.

    Returns
    -------
    dict
        ``rows`` (one per method: accuracy mean and std, ``gap_points`` to full
        BP, the standard deviation of the per-seed gaps, ``gap_resolved``
        (the gap exceeds twice its standard error over seeds; None with one
        seed), ``matches``
        (within :data:`MATCH_POINTS`), ``fraction_of_dense``, ``backward_ms`` (the fastest seed's median),
        mean gradient ``grad_rel_error`` along training, energy kept at the
        first and last check, ``exact`` for the full basis...), ``dense`` (the
        full-BP row or None), ``pareto`` (names, by cost), ``lbp`` (names of
        the approximate LBP-WHT methods), ``cheapest_match`` and ``best_cheaper``
        (approximate LBP-WHT methods cheaper than full BP: the cheapest that
        matches, the most accurate; None if there is none), ``exact_check``
        (the full-basis rows), ``same_rank`` (rank to the names of the LBP-WHT
        and subspace methods at that rank, for ranks with several),
        ``budget`` (the budget rows) and ``headline`` (:func:`headline`).

    Examples
    --------
    >>> from analysis.finetune import summarize
    >>> def method(name, kind, acc, mflops, rank=None):
    ...     return {"name": name, "label": name, "kind": kind, "bases": None, "rank": rank, "patch": 8,
    ...             "test_accuracy": acc, "test_accuracy_std": 0.0, "backward_mflops": mflops,
    ...             "fraction_of_dense": mflops / 100.0, "backward_seconds_per_step": [0.01],
    ...             "gradient_checks": {"rel_error": {}, "energy_kept": {}}, "approximated_layers": [],
    ...             "param_distance_to_dense": None}
    >>> s = summarize({"methods": [method("dense", "dense", [0.9], 100.0), method("lp_l1:4", "lbp", [0.895], 36.0, 10),
    ...                            method("budget:1", "budget", [0.8], 50.0)]})
    >>> s["pareto"], s["cheapest_match"], round(s["rows"][1]["gap_points"], 2)
    (['lp_l1:4', 'dense'], 'lp_l1:4', -0.5)
    """
    methods = results["methods"]
    dense = next((m for m in methods if m["kind"] == "dense"), None)
    rows = [_row(m, dense) for m in methods]
    by = {r["name"]: r for r in rows}
    lbp = [r for r in rows if r["kind"] == "lbp" and not r["exact"]]
    cheaper = [r for r in lbp if r["fraction_of_dense"] < 1.0]
    matching = [r for r in cheaper if r["matches"]]
    ranks = {}
    for r in rows:
        if r["kind"] in ("lbp", "subspace") and not r["exact"]:
            ranks.setdefault(r["rank"], []).append(r["name"])
    out = {
        "match_points": MATCH_POINTS,
        "rows": rows,
        "dense": by.get(dense["name"]) if dense else None,
        "pareto": _pareto(rows),
        "lbp": [r["name"] for r in lbp],
        "cheapest_match": min(matching, key=lambda r: r["backward_mflops"])["name"] if matching else None,
        "best_cheaper": max(cheaper, key=lambda r: r["accuracy_mean"])["name"] if cheaper else None,
        "exact_check": [r for r in rows if r["exact"]],
        "same_rank": {k: v for k, v in sorted(ranks.items()) if len(v) > 1},
        "budget": [r for r in rows if r["kind"] == "budget"],
    }
    out["headline"] = headline(out)
    return out


def accuracy_text(row) -> str:
    """A row's test accuracy as text: ``"92.1 ± 1.7 %"`` (mean ± std over seeds; the mean alone for one seed).

    Parameters
    ----------
    row : dict
        A row of :func:`summarize` (``accuracy_mean``, ``accuracy_std``, ``seeds``).

    Returns
    -------
    str

    Examples
    --------
    >>> from analysis.finetune.summary import accuracy_text
    >>> accuracy_text({"accuracy_mean": 0.921, "accuracy_std": 0.017, "seeds": 3})
    '92.1 ± 1.7 %'
    >>> accuracy_text({"accuracy_mean": 0.9, "accuracy_std": 0.0, "seeds": 1})
    '90.0 %'
    """
    if row.get("seeds", 2) == 1:  # no spread with one seed
        return f"{100.0 * row['accuracy_mean']:.1f} %"
    return f"{100.0 * row['accuracy_mean']:.1f} ± {100.0 * row['accuracy_std']:.1f} %"


def headline(summary) -> str:
    """One sentence: full BP against the LBP-WHT selections cheaper than it, with costs.

    Parameters
    ----------
    summary : dict
        As returned by :func:`summarize`.

    Returns
    -------
    str
        Every number comes from ``summary``.

    Examples
    --------
    >>> from analysis.finetune import headline
    >>> row = {"name": "lp_l1:4", "accuracy_mean": 0.91, "accuracy_std": 0.01, "gap_points": -2.0,
    ...        "fraction_of_dense": 0.36, "matches": False}
    >>> dense = {"accuracy_mean": 0.93, "accuracy_std": 0.01, "backward_mflops": 270.5}
    >>> headline({"dense": dense, "rows": [row], "lbp": ["lp_l1:4"], "cheapest_match": None,
    ...           "best_cheaper": "lp_l1:4", "match_points": 1.0})  # doctest: +NORMALIZE_WHITESPACE
    'Full backpropagation reaches 93.0 ± 1.0 % test accuracy at 270.5 backward MFLOPs per step; no LBP-WHT
    selection cheaper than it comes within 1 point: the best, lp_l1:4, reaches 91.0 ± 1.0 % (-2.0 points)
    at 36 % of the cost.'
    """
    d = summary["dense"]
    if d is None:
        return "No full-backpropagation run to compare with."
    by = {r["name"]: r for r in summary["rows"]}
    text = (f"Full backpropagation reaches {accuracy_text(d)} test accuracy at {d['backward_mflops']:.1f} "
            "backward MFLOPs per step")

    def phrase(r):
        return (f"{r['name']}, reaches {accuracy_text(r)} ({r['gap_points']:+.1f} points) "
                f"at {100 * r['fraction_of_dense']:.0f} % of the cost")

    tol = f"{summary['match_points']:g} point{'s' if summary['match_points'] != 1 else ''}"
    if summary["cheapest_match"]:
        r = by[summary["cheapest_match"]]
        return text + f"; the cheapest LBP-WHT selection within {tol} of it, {phrase(r)}."
    if summary["best_cheaper"]:
        r = by[summary["best_cheaper"]]
        return text + f"; no LBP-WHT selection cheaper than it comes within {tol}: the best, {phrase(r)}."
    return text + "; no LBP-WHT selection of this run is cheaper than it."
