"""Figures of LBP-WHT analyses, drawn with matplotlib's object API (headless).

Every function takes ``ax=None`` and returns the :class:`matplotlib.axes.Axes`
it drew on.  Without ``ax`` a new :class:`matplotlib.figure.Figure` is made
directly (not through :mod:`matplotlib.pyplot`), so nothing here touches
pyplot's global state or needs a display; save it with ``ax.figure.savefig``
or :func:`analysis.io.save_figure`.

The inputs are the plain results of :mod:`analysis.spectrum`,
:mod:`analysis.errors` and :mod:`analysis.vit`, either the result objects or
their ``to_dict()`` forms (:func:`analysis.io.to_jsonable`); names and line
styles come from :mod:`analysis.labels`.
"""

from __future__ import annotations

import math

import numpy as np

from .io import to_jsonable
from .labels import plot_label, plot_style

__all__ = ["new_axes", "plot_spectrum", "plot_energy_curves", "plot_error_curves", "plot_layer_bars", "plot_pareto"]

def new_axes(figsize=(5.0, 4.0), dpi=120):
    """A fresh :class:`~matplotlib.axes.Axes` on its own pyplot-free Figure.

    Parameters
    ----------
    figsize : (float, float), optional
        Figure size in inches; default ``(5, 4)``.
    dpi : float, optional
        Default 120.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax.figure`` uses the constrained layout engine.

    Examples
    --------
    >>> from analysis.plots import new_axes
    >>> ax = new_axes((3, 2))
    >>> tuple(ax.figure.get_size_inches())
    (np.float64(3.0), np.float64(2.0))
    """
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib is optional; keeps `import analysis` light

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    return fig.add_subplot()


def _mask_outline(mask):
    """Line segments ``[(x0, y0), (x1, y1)]`` around the True cells of a 2D mask."""
    m = np.asarray(mask, dtype=bool)
    padded = np.pad(m, 1)
    segs = []
    for i, j in zip(*np.nonzero(m), strict=True):
        pi, pj = i + 1, j + 1
        if not padded[pi - 1, pj]:  # top edge
            segs.append([(j - 0.5, i - 0.5), (j + 0.5, i - 0.5)])
        if not padded[pi + 1, pj]:  # bottom edge
            segs.append([(j - 0.5, i + 0.5), (j + 0.5, i + 0.5)])
        if not padded[pi, pj - 1]:  # left edge
            segs.append([(j - 0.5, i - 0.5), (j - 0.5, i + 0.5)])
        if not padded[pi, pj + 1]:  # right edge
            segs.append([(j + 0.5, i - 0.5), (j + 0.5, i + 0.5)])
    return segs


def plot_spectrum(energy_map, ax=None, log=True, title=None, *, bases=None, normalize=True, colorbar=True):
    """Heatmap of the energy per 2D Walsh–Hadamard basis of an ``n x n`` patch.

    Row ``i`` is the vertical sequency and column ``j`` the horizontal one, so
    the DC basis is in the top-left corner and low-pass selections form its
    upper-left triangle or square.

    Parameters
    ----------
    energy_map : array_like, shape (n, n), or SpectrumResult or its dict
        Non-negative energies ``E[i, j]`` (``l2`` / ``energy_map`` of a
        :class:`analysis.spectrum.SpectrumResult` are taken as is).
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure by default.
    log : bool, optional
        Logarithmic colour scale (default).  Zero cells are drawn at the
        bottom of the scale.
    title : str, optional
        Axes title.
    bases : BasisSet or array_like of bool, shape (n, n), optional
        Selection to outline in white (for example ``select_bases(8, "lp_l1:6")``).
    normalize : bool, optional
        Show each cell as a fraction of the total energy (default), so that
        maps of different tensors share a scale.
    colorbar : bool, optional
        Add a colour bar (default).

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    ValueError
        If the map is not square 2D, or has negative or non-finite entries.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import select_bases
    >>> from analysis.plots import plot_spectrum
    >>> e = 1.0 / (1.0 + np.add.outer(np.arange(8), np.arange(8))) ** 2
    >>> ax = plot_spectrum(e, bases=select_bases(8, "lp_l1:6"), title="demo")
    >>> ax.get_xlabel(), ax.get_ylabel()
    ('horizontal sequency j', 'vertical sequency i')
    """
    from matplotlib.collections import LineCollection  # noqa: PLC0415 - matplotlib is optional
    from matplotlib.colors import LogNorm, Normalize  # noqa: PLC0415 - matplotlib is optional

    src = energy_map if isinstance(energy_map, np.ndarray) else to_jsonable(energy_map)
    if isinstance(src, dict):
        src = src["energy_map"] if "energy_map" in src else src["l2"]
    e = np.asarray(src, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] != e.shape[1]:
        raise ValueError(f"energy_map must have shape (n, n), got {e.shape}")
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError("energy_map must be finite and non-negative")
    n = e.shape[0]
    total = float(e.sum())
    if normalize and total > 0:
        e = e / total
    if ax is None:
        ax = new_axes((4.6, 3.8))
    positive = e[e > 0]
    if log and positive.size:
        vmax = float(positive.max())
        vmin = max(float(positive.min()), vmax * 1e-8)
        norm = LogNorm(vmin=vmin, vmax=vmax)
        shown = np.where(e > 0, e, vmin)
    else:
        norm = Normalize(vmin=0.0, vmax=float(e.max()) if e.max() > 0 else 1.0)
        shown = e
    im = ax.imshow(shown, cmap="viridis", norm=norm, origin="upper", interpolation="nearest")
    if bases is not None:
        mask = getattr(bases, "mask", bases)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n, n):
            raise ValueError(f"bases must be an ({n}, {n}) selection, got shape {mask.shape}")
        ax.add_collection(LineCollection(_mask_outline(mask), colors="white", linewidths=1.8))
        spec = getattr(bases, "spec", None)
        if spec:
            ax.plot([], [], color="white", label=f"{spec} ({int(mask.sum())} bases)")
            leg = ax.legend(loc="lower right", fontsize="x-small", framealpha=0.6, facecolor="gray")
            for text in leg.get_texts():
                text.set_color("white")
    step = 1 if n <= 8 else max(1, n // 8)
    ticks = np.arange(0, n, step)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("horizontal sequency j")
    ax.set_ylabel("vertical sequency i")
    if title:
        ax.set_title(title, fontsize="medium")
    if colorbar:
        cb = ax.figure.colorbar(im, ax=ax, shrink=0.9)
        cb.set_label("fraction of energy" if normalize and total > 0 else "energy (sum of squares)")
    return ax


def plot_energy_curves(curves, ax=None, *, highlight=None, title=None):
    """Energy kept versus rank (bases per patch), one line per selection policy.

    Parameters
    ----------
    curves : dict of str to list of dict
        As returned by :func:`analysis.spectrum.energy_curves`: per policy, points
        with ``"rank"`` (bases per patch) and ``"kept"`` (fraction of energy kept,
        in [0, 1]).
    ax : matplotlib.axes.Axes, optional
    highlight : int, optional
        Rank to mark with a vertical line (21 for ``lp_l1:6`` at patch 8).
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes
        The y axis is the percentage of energy kept.

    Examples
    --------
    >>> from analysis.plots import plot_energy_curves
    >>> curves = {"lp_l1": [{"param": 1, "rank": 1, "kept": 0.5}, {"param": 2, "rank": 3, "kept": 0.9}],
    ...           "random": [{"param": 1, "rank": 1, "kept": 0.1}, {"param": 3, "rank": 3, "kept": 0.3}]}
    >>> ax = plot_energy_curves(curves, highlight=3)
    >>> len(ax.get_lines())
    3
    """
    if ax is None:
        ax = new_axes((5.2, 3.8))
    for k, (name, points) in enumerate(to_jsonable(curves).items()):
        pts = sorted(points, key=lambda p: p["rank"])
        if not pts:
            continue
        color, marker, ls = plot_style(name, k)
        ax.plot(
            [p["rank"] for p in pts],
            [100.0 * p["kept"] for p in pts],
            color=color,
            marker=marker,
            linestyle=ls,
            markersize=3.5,
            markevery=max(1, len(pts) // 16),
            label=plot_label(name),
        )
    if highlight is not None:
        ax.axvline(highlight, color="0.4", linewidth=0.8, linestyle="--")
    ax.set_xlabel("bases kept per patch (rank r)")
    ax.set_ylabel("energy kept (%)")
    ax.set_ylim(0, 102)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="lower right")
    if title:
        ax.set_title(title, fontsize="medium")
    return ax


def _method_errors(report, which, metric):
    """``{method: value}`` from the plain form of one ErrorReport."""
    out = {"lbp": float(report["lbp"][which][metric])}
    for name, g in report.get("baselines", {}).items():
        out[name] = float(g[which][metric])
    return out


def plot_error_curves(sweep, ax=None, which="grad_weight", *, metric="rel_error", highlight=None, title=None,
                      logy=False, floor=0.0):
    """Gradient error versus rank, one line per method (LBP-WHT and baselines).

    Parameters
    ----------
    sweep : sequence of ErrorReport or dict
        As returned by :func:`analysis.errors.rank_sweep`; each has ``"rank"``,
        ``"lbp"`` and ``"baselines"`` (name to GradientError), each error having
        ``"grad_x"`` and ``"grad_weight"`` with ``"rel_error"`` and ``"cosine"``.
    ax : matplotlib.axes.Axes, optional
    which : {"grad_weight", "grad_x"}, optional
        Gradient to show; default ``"grad_weight"``.
    metric : {"rel_error", "cosine"}, optional
        Default ``"rel_error"`` (``||approx - exact||_F / ||exact||_F``).
    highlight : int, optional
        Rank to mark with a vertical line.
    title : str, optional
    logy : bool, optional
        Logarithmic y axis; values at or below ``floor`` are left out.
    floor : float, optional
        With ``logy``, the largest value treated as zero (default 0.0; e.g.
        ``1e-9`` to leave out errors that are rounding only).

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    ValueError
        On an unknown ``which`` or ``metric``.

    Examples
    --------
    >>> from analysis.plots import plot_error_curves
    >>> def err(e):
    ...     return {"grad_x": {"rel_error": e, "cosine": 1 - e}, "grad_weight": {"rel_error": e, "cosine": 1 - e}}
    >>> sweep = [{"rank": r, "lbp": err(1 / r), "baselines": {"dct": err(1.2 / r)}} for r in (1, 3, 6)]
    >>> ax = plot_error_curves(sweep)
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['LBP-WHT (lp_l1)', 'DCT low-pass']
    """
    if which not in ("grad_weight", "grad_x"):
        raise ValueError(f"which must be 'grad_weight' or 'grad_x', got {which!r}")
    if metric not in ("rel_error", "cosine"):
        raise ValueError(f"metric must be 'rel_error' or 'cosine', got {metric!r}")
    if ax is None:
        ax = new_axes((5.2, 3.8))
    series = {}
    for d in to_jsonable(list(sweep)):
        for name, v in _method_errors(d, which, metric).items():
            series.setdefault(name, []).append((int(d["rank"]), v))
    for k, (name, pts) in enumerate(series.items()):
        pts.sort()
        if logy:
            pts = [p for p in pts if p[1] > floor]
        color, marker, ls = plot_style(name, k)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, marker=marker, linestyle=ls,
                markersize=3.5, markevery=max(1, len(pts) // 16), label=plot_label(name))
    if highlight is not None:
        ax.axvline(highlight, color="0.4", linewidth=0.8, linestyle="--")
    if logy:
        ax.set_yscale("log")
    grad = "grad_W" if which == "grad_weight" else "grad_x"
    ax.set_xlabel("rank r (bases per patch)")
    ax.set_ylabel(f"relative error of {grad}" if metric == "rel_error" else f"cosine similarity of {grad}")
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize="small")
    if title:
        ax.set_title(title, fontsize="medium")
    return ax


#: Default bar metrics of :func:`plot_layer_bars`: (key, label), all fractions in [0, 1].
LAYER_METRICS = (
    ("energy_kept_grad_y", "energy of grad_y kept"),
    ("grad_weight_error", "grad_W relative error"),
    ("flops_saved", "backward FLOPs saved"),
)


def plot_layer_bars(rows, ax=None, *, metrics=LAYER_METRICS, title=None):
    """Grouped horizontal bars per layer: energy kept, gradient error, FLOPs saved.

    Parameters
    ----------
    rows : sequence of dict
        One per layer, top to bottom, each with a ``"layer"`` name and the
        metric keys (fractions in [0, 1]; a missing or None value leaves a gap).
    ax : matplotlib.axes.Axes, optional
    metrics : sequence of (str, str), optional
        ``(key, label)`` of the bars in each group; default
        :data:`LAYER_METRICS` (``energy_kept_grad_y``, ``grad_weight_error``,
        ``flops_saved``).
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes
        The x axis is in percent, up to just above the largest value; the
        legend sits below the axes.

    Raises
    ------
    ValueError
        If ``rows`` or ``metrics`` is empty.

    Examples
    --------
    >>> from analysis.plots import plot_layer_bars
    >>> rows = [{"layer": "blocks.0.qkv", "energy_kept_grad_y": 0.9, "grad_weight_error": 0.2, "flops_saved": 0.6},
    ...         {"layer": "head", "energy_kept_grad_y": 1.0, "grad_weight_error": 0.0, "flops_saved": 0.0}]
    >>> ax = plot_layer_bars(rows)
    >>> [t.get_text() for t in ax.get_yticklabels()]
    ['blocks.0.qkv', 'head']
    """
    from matplotlib.transforms import offset_copy  # noqa: PLC0415 - matplotlib is optional

    rows = to_jsonable(list(rows))
    metrics = list(metrics)
    if not rows:
        raise ValueError("rows must hold at least one layer")
    if not metrics:
        raise ValueError("metrics must name at least one value")
    if ax is None:
        ax = new_axes((6.4, 1.2 + 0.42 * len(rows) * max(1.0, len(metrics) / 3)))
    y = np.arange(len(rows), dtype=np.float64)
    height = 0.8 / len(metrics)
    for k, (key, label) in enumerate(metrics):
        vals = [r.get(key) for r in rows]
        vals = [math.nan if v is None else 100.0 * float(v) for v in vals]
        offs = y - 0.4 + height * (k + 0.5)
        bars = ax.barh(offs, vals, height=height * 0.92, color=f"C{k}", label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1.5)
    ax.set_yticks(y)
    ax.set_yticklabels([str(r.get("layer", i)) for i, r in enumerate(rows)], fontsize="small")
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top
    ax.set_xlabel("%")
    top = max([100.0 * float(r[k]) for r in rows for k, _ in metrics if r.get(k) is not None] or [1.0])
    ax.set_xlim(0, 1.12 * max(top, 1e-9))
    ax.grid(True, axis="x", alpha=0.3)
    below = offset_copy(ax.transAxes, fig=ax.figure, y=-26, units="points")  # under the x label
    ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=below,
              ncols=min(2, len(metrics)), frameon=False)
    if title:
        ax.set_title(title, fontsize="medium")
    return ax


_FAMILY_MARKERS = {"lbp": "o", "calibrated": "s", "meprop": "^", "wtacrs": "D", "crs": "d", "rad": "x",
                   "compact": "+", "velora": "*", "hot": "P"}


def plot_pareto(points, ax=None, which="grad_weight", *, title=None, floor=1e-9, budgets=(0.1, 0.3, 0.5)):
    """Gradient error against backward FLOPs, one line per method family (the Pareto view).

    Parameters
    ----------
    points : dict of str to MethodError or dict
        Spec to :class:`analysis.methods.measure.MethodError` (or its
        ``to_dict()``), as :func:`analysis.methods.measure.method_errors`
        returns; each has ``family``, ``flops_fraction`` and ``grad_x`` /
        ``grad_weight`` with ``rel_error``.
    ax : matplotlib.axes.Axes, optional
    which : {"grad_weight", "grad_x"}, optional
        Gradient to show; default ``"grad_weight"``.
    title : str, optional
    floor : float, optional
        Errors at or below it (rounding only) are left out of the log axis.
    budgets : sequence of float, optional
        FLOP fractions marked with vertical lines.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    ValueError
        On an unknown ``which``.

    Examples
    --------
    >>> from analysis.plots import plot_pareto
    >>> pts = {f"rad:{r}": {"family": "rad", "flops_fraction": 0.5 + r / 2, "grad_x": {"rel_error": 0.0},
    ...                     "grad_weight": {"rel_error": 1 - r}} for r in (0.1, 0.3)}
    >>> ax = plot_pareto(pts)
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['rad']
    """
    if which not in ("grad_weight", "grad_x"):
        raise ValueError(f"which must be 'grad_weight' or 'grad_x', got {which!r}")
    if ax is None:
        ax = new_axes((6.0, 4.2))
    families = {}
    for spec, p in to_jsonable(dict(points)).items():
        err, frac = p[which]["rel_error"], p["flops_fraction"]
        if err is not None and frac is not None and err > floor:
            families.setdefault(p["family"], []).append((frac, err, spec))
    for k, (family, pts) in enumerate(families.items()):
        pts.sort()
        color = plot_style(family, k)[0] if family == "lbp" else f"C{(k + 1) % 10}"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, marker=_FAMILY_MARKERS.get(family, "v"),
                linestyle="-", markersize=5, linewidth=1.0, label=family)
    for b in budgets:
        ax.axvline(b, color="0.6", linewidth=0.7, linestyle=":")
    ax.set_yscale("log")
    ax.set_xlabel("backward FLOPs / dense backward FLOPs")
    ax.set_ylabel(f"relative error of {'grad_W' if which == 'grad_weight' else 'grad_x'}")
    ax.grid(True, alpha=0.3)
    if families:
        ax.legend(fontsize="small", ncol=2)
    if title:
        ax.set_title(title, fontsize="medium")
    return ax
