"""The figures of ``lbp report``, rendered in memory from the gathered results."""

from __future__ import annotations

import lbpcore

from ..io import figure_bytes
from ..plots import plot_energy_curves, plot_error_curves, plot_layer_bars, plot_pareto, plot_spectrum
from .summary import EXACT

__all__ = ["FIGURES", "render_figures"]

#: File names of the figures, in the order the report shows them.
FIGURES = ("fig_spectrum.png", "fig_energy_curves.png", "fig_error_curves.png", "fig_layers.png", "fig_pareto.png")

_DPI = 110


def _new_figure(figsize):
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib is optional; keeps `import analysis` light

    return Figure(figsize=figsize, layout="constrained")


def _spectrum(res, basis):
    typical = res["typical_layer"]
    a1, a2 = _new_figure((9.6, 4.0)).subplots(1, 2)
    spec = res["spectra"][typical]
    plot_spectrum(spec["x"]["energy_map"], ax=a1, bases=basis, title=f"{typical}: input x")
    plot_spectrum(spec["grad_y"]["energy_map"], ax=a2, bases=basis, title=f"{typical}: output gradient grad_y")
    return a1.figure


def _energy_curves(res, rank):
    typical = res["typical_layer"]
    a1, a2 = _new_figure((10.0, 4.0)).subplots(1, 2, sharey=True)
    plot_energy_curves(res["energy_curves"]["x"], ax=a1, highlight=rank, title=f"{typical}: x")
    plot_energy_curves(res["energy_curves"]["grad_y"], ax=a2, highlight=rank, title=f"{typical}: grad_y")
    a2.set_ylabel("")
    return a1.figure


def _error_curves(res, rank):
    typical = res["typical_layer"]
    axes = _new_figure((10.0, 4.0)).subplots(1, 2)
    points = res["rank_sweep"]["points"]
    for ax, which, what in zip(axes, ("grad_weight", "grad_x"), ("weight gradient", "input gradient"), strict=True):
        plot_error_curves(points, ax=ax, which=which, highlight=rank, title=f"{typical}: {what}", logy=True,
                          floor=EXACT)
    return axes[0].figure


def _layers(res):
    s = res["setting"]
    rows = [r for r in res["layers"] if r["on_grid"]]
    first = next(iter(res["end_to_end"]), None)  # none for a capture
    bars = [{"layer": r["layer"],
             "energy_kept_grad_y": r["energy_kept_grad_y"],
             "local_error": r["local"]["lbp"]["grad_weight"]["rel_error"],
             "e2e_error": r["end_to_end"][first]["weight_rel_error"] if first else None,
             "flops_saved": r["flops"]["saved_fraction"]} for r in rows]
    metrics = (("energy_kept_grad_y", "grad_y energy kept"),
               ("local_error", "grad_W rel. error (layer alone)"),
               ("e2e_error", f"grad_W rel. error (end to end, '{first}')"),
               ("flops_saved", "backward FLOPs saved"))
    if first is None:
        metrics = tuple(m for m in metrics if m[0] != "e2e_error")
    fig = _new_figure((7.5, 1.4 + 0.55 * len(rows)))
    plot_layer_bars(bars, ax=fig.add_subplot(), metrics=metrics,
                    title=f"per layer, {s['bases']} at patch {s['patch']} ({s['rank']} of {s['bases_total']} bases)")
    return fig


def _pareto(res):
    typical = res["pareto"]["layer"]
    axes = _new_figure((11.0, 4.2)).subplots(1, 2)
    for ax, which, what in zip(axes, ("grad_weight", "grad_x"), ("weight gradient", "input gradient"), strict=True):
        plot_pareto(res["pareto"]["points"], ax=ax, which=which, title=f"{typical}: {what}", floor=EXACT)
    return axes[0].figure


def render_figures(results) -> dict:
    """Every figure of the report as PNG bytes, rendered in memory (nothing is written).

    Parameters
    ----------
    results : dict
        As returned by :func:`analysis.report.run_workload` or
        :func:`~analysis.report.run_capture`.

    Returns
    -------
    dict of str to bytes
        File name (:data:`FIGURES`) to PNG content: the Walsh spectra of the
        typical layer, its energy curves, its rank sweep of gradient errors,
        per-layer bars of energy kept, errors (end to end too, when the
        workload ran any) and FLOPs saved, and (when measured) the published
        methods' errors against their backward FLOPs on the typical layer.

    Examples
    --------
    >>> from analysis.report import ReportConfig, run_workload
    >>> from analysis.report.figures import render_figures
    >>> pngs = render_figures(run_workload(ReportConfig.quick_config(batch=2), progress=False))
    >>> list(pngs) == ["fig_spectrum.png", "fig_energy_curves.png", "fig_error_curves.png", "fig_layers.png"]
    True
    >>> "fig_pareto.png" in render_figures(run_workload(ReportConfig.quick_config(batch=2, pareto=("hot",)),
    ...                                                 progress=False))
    True
    """
    s = results["setting"]
    basis = lbpcore.select_bases(s["patch"], s["bases"])
    figures = [_spectrum(results, basis), _energy_curves(results, s["rank"]), _error_curves(results, s["rank"]),
               _layers(results)]
    names = list(FIGURES[:4])
    if results.get("pareto", {}).get("points"):
        figures.append(_pareto(results))
        names.append(FIGURES[4])
    return {name: figure_bytes(fig, dpi=_DPI) for name, fig in zip(names, figures, strict=True)}
