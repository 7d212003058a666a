"""The figures of ``lbp finetune``, rendered in memory from the results.

Accuracy against backward cost (the Pareto view), the training loss curves,
and the gradient error and energy kept along training.  Names and line styles
come from :mod:`analysis.labels` (each method's ``style_key``); figures are
made with :func:`analysis.plots.new_axes`-style pyplot-free matplotlib figures
and returned as PNG bytes (:func:`analysis.io.figure_bytes`).
"""

from __future__ import annotations

import numpy as np

from ..io import figure_bytes
from ..labels import plot_style
from .summary import summarize

__all__ = ["FIGURES", "render_figures"]

#: File names of the figures, in the order ``index.md`` shows them.
FIGURES = ("fig_pareto.png", "fig_loss.png", "fig_grad_error.png")

_DPI = 110


def _new_figure(figsize):
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib is optional; keeps `import analysis` light

    return Figure(figsize=figsize, layout="constrained")


def _styles(results):
    """Line style of every method; the ranks of one selection family in shades of its colour."""
    from matplotlib.colors import to_rgb  # noqa: PLC0415 - matplotlib is optional

    families = {}
    for m in results["methods"]:
        families.setdefault(m["style_key"], []).append(m)
    styles = {}
    for i, m in enumerate(results["methods"]):
        color, marker, line = plot_style(m["style_key"], i)
        members = sorted(families[m["style_key"]], key=lambda x: x["rank"] or 0)
        if len(members) > 1:  # lightest for the lowest rank
            t = 0.6 * (1 - members.index(m) / (len(members) - 1))
            color = tuple((1 - t) * c + t for c in to_rgb(color))
        styles[m["name"]] = {"color": color, "marker": marker, "linestyle": line}
    return styles


def _pareto(results, summary):
    from matplotlib.ticker import ScalarFormatter  # noqa: PLC0415 - matplotlib is optional

    ax = _new_figure((7.5, 4.6)).add_subplot()
    rows = {r["name"]: r for r in summary["rows"]}
    styles = _styles(results)
    families = {}
    for m in results["methods"]:
        r = rows[m["name"]]
        st = styles[m["name"]]
        ax.errorbar(r["backward_mflops"], 100 * r["accuracy_mean"], yerr=100 * r["accuracy_std"], fmt=st["marker"],
                    color=st["color"], capsize=3, markersize=7, label=m["label"])
        ax.annotate(m["name"], (r["backward_mflops"], 100 * r["accuracy_mean"]), textcoords="offset points",
                    xytext=(5, -11), fontsize=7, color=st["color"])
        families.setdefault(m["style_key"], []).append(r)
    for key, members in families.items():  # join the ranks of one selection family
        if len(members) > 1:
            members = sorted(members, key=lambda r: r["backward_mflops"])
            ax.plot([r["backward_mflops"] for r in members], [100 * r["accuracy_mean"] for r in members],
                    color=plot_style(key, 0)[0], linestyle=plot_style(key, 0)[2], linewidth=1, alpha=0.6)
    front = [rows[n] for n in summary["pareto"]]
    ax.step([r["backward_mflops"] for r in front], [100 * r["accuracy_mean"] for r in front], where="post",
            color="0.6", linewidth=3, alpha=0.35, zorder=0, label="Pareto front")
    if summary["dense"] is not None:
        ax.axhline(100 * summary["dense"]["accuracy_mean"], color="k", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("backward MFLOPs per step (adapted linear layers, log scale)")
    ax.set_ylabel("test accuracy after adaptation (%)")
    ax.set_title("accuracy against backward cost (mean ± std over seeds)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return ax.figure


def _smooth(y, window):
    if window <= 1 or len(y) < window:
        return np.asarray(y)
    return np.convolve(y, np.ones(window) / window, mode="valid")


def _loss(results):
    ax = _new_figure((7.5, 4.4)).add_subplot()
    styles = _styles(results)
    for m in results["methods"]:
        curve = np.mean(np.asarray(m["loss_curve"], dtype=np.float64), axis=0)
        window = max(1, len(curve) // 20)
        y = _smooth(curve, window)
        x = np.arange(len(y)) + (window - 1) / 2 + 1
        st = styles[m["name"]]
        ax.plot(x, y, color=st["color"], linestyle=st["linestyle"], linewidth=1.3, label=m["label"])
    ax.set_yscale("log")
    ax.set_xlabel("adaptation step")
    ax.set_ylabel("training loss (mean over seeds, moving average)")
    ax.set_title("training loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return ax.figure


def _grad_error(results):
    a1, a2 = _new_figure((10.5, 4.2)).subplots(1, 2)
    styles = _styles(results)
    for m in results["methods"]:
        gc = m["gradient_checks"]
        if not m["approximated_layers"] or not gc["steps"]:
            continue
        st = styles[m["name"]]
        err = np.mean(np.asarray(gc["rel_error"]["all"], dtype=np.float64), axis=0)
        a1.plot(gc["steps"], np.maximum(err, 1e-12), color=st["color"], marker=st["marker"],
                linestyle=st["linestyle"], label=m["label"])
        if not all(n in gc["energy_kept"] for n in m["approximated_layers"]):
            continue  # a published method keeps no per-patch subspace: no energy to show
        kept = np.mean([np.mean(np.asarray(gc["energy_kept"][n], dtype=np.float64), axis=0)
                        for n in m["approximated_layers"]], axis=0)
        a2.plot(gc["steps"], 100 * kept, color=st["color"], marker=st["marker"], linestyle=st["linestyle"],
                label=m["label"])
    a1.set_yscale("log")
    a1.set_xlabel("adaptation step")
    a1.set_ylabel("relative error of the gradient")
    a1.set_title("gradient error at the current weights (all trained parameters)")
    a2.set_xlabel("adaptation step")
    a2.set_ylabel("energy of grad_y kept (%)")
    a2.set_title("energy kept by the selection (mean over layers)")
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    a2.legend(fontsize=7)
    return a1.figure


def render_figures(results, summary=None) -> dict:
    """Every figure of ``lbp finetune`` as PNG bytes, rendered in memory (nothing is written).

    Parameters
    ----------
    results : dict
        As returned by :func:`~analysis.finetune.run_finetune`.
    summary : dict, optional
        :func:`~analysis.finetune.summarize` of ``results`` (computed if not given).

    Returns
    -------
    dict of str to bytes
        File name (:data:`FIGURES`) to PNG content: test accuracy against
        backward MFLOPs per step with the Pareto front; the training loss
        curves; the relative gradient error and the energy kept along
        training.

    Examples
    --------
    >>> import tempfile
    >>> from dataclasses import replace
    >>> from analysis.finetune import FinetuneConfig, TrainConfig, run_finetune
    >>> from analysis.finetune.figures import render_figures
    >>> from analysis.vit import ViTConfig
    >>> cfg = replace(FinetuneConfig.quick(), methods=("dense", "lp_l1:2"),
    ...               model=ViTConfig(image_size=8, patch_size=1, in_chans=1, dim=8, depth=1, heads=2, num_classes=5),
    ...               pretrain=TrainConfig(steps=2), adapt=TrainConfig(steps=2, eval_every=1, check_every=1))
    >>> pngs = render_figures(run_finetune(cfg, cache_dir=tempfile.mkdtemp(), progress=False))
    >>> list(pngs), pngs["fig_pareto.png"][:4]
    (['fig_pareto.png', 'fig_loss.png', 'fig_grad_error.png'], b'\\x89PNG')
    """
    summary = summarize(results) if summary is None else summary
    figures = (_pareto(results, summary), _loss(results), _grad_error(results))
    return {name: figure_bytes(fig, dpi=_DPI) for name, fig in zip(FIGURES, figures, strict=True)}
