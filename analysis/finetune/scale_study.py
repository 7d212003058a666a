"""``lbp finetune --study scale``: how the gap to full backpropagation depends on width, depth, steps and energy.

:func:`run_scale_study` runs the digits experiment of
:func:`~analysis.finetune.torch_digits.run_finetune_torch` (the PyTorch engine:
the NumPy engine would take hours) over a grid of ViT widths and depths and two
step budgets, with the same methods and seeds in every cell, and collects per
cell and method the paired accuracy gap to full backpropagation (mean and
standard deviation over seeds), the backward cost as a fraction of full
backpropagation's and the energy of ``grad_y`` the selection keeps.  A second
part measures reflect against zero padding on a grid that needs it (14 x 14
tokens, LBP patches of 8: padded to 16 x 16), with the full basis (where reflect
counts mirrored tokens twice in ``grad_W``) and a low-rank selection.

:func:`build_scale_study` writes ``index.md`` (the tables and a figure of gap
against energy kept) and ``results.json``.  ``--quick`` (:data:`QUICK_GRID`)
takes seconds.  The full grid (:data:`FULL_GRID`) is not run in CI, and it is
large: one dense step of 16 images (32 x 32, a 16 x 16 grid) takes about 0.1 s
at width 32 and depth 2 and about 1 s at width 192 and depth 6 on one CPU
thread, so its 24 cells x 6 methods x 3 seeds x (200 + 800) steps add up to
about a day on 2 cores; run it on a GPU (``--device cuda``), or pass a smaller
grid to :func:`build_scale_study` (fewer widths, depths or steps; ``--seeds``
and ``--steps`` on the command line).  Importing this module imports PyTorch.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from .._outdir import check_output_dir
from ..io import figure_bytes, json_text, markdown_table, write_files
from ..progress import progress_bar
from ..vit import ViTConfig
from .experiment import FinetuneConfig, _adapt_config
from .summary import summarize
from .torch_digits import run_finetune_torch

__all__ = ["FULL_GRID", "QUICK_GRID", "run_scale_study", "build_scale_study"]

#: The full study: widths, depths, step budgets, methods, seeds and the padding part.
FULL_GRID = {
    "widths": (32, 64, 128, 192),
    "depths": (2, 4, 6),
    "steps": (200, 800),
    "methods": ("dense", "lp_l1:4", "lp_l1:6", "energy_l2:10", "dct:10", "random:10"),
    "seeds": 3,
    "image_size": 32,
    "pretrain_steps": 300,
    "padding": {"image_size": 28, "methods": ("dense", "lp_linf:8", "lp_l1:4"), "width": 64, "depth": 2,
                "steps": 200},
}

#: ``--quick``: one small cell per setting, 2 seeds, a few steps (seconds).
QUICK_GRID = {
    "widths": (16,),
    "depths": (1,),
    "steps": (8, 16),
    "methods": ("dense", "lp_l1:4", "energy_l2:10", "dct:10"),
    "seeds": 2,
    "image_size": 16,
    "pretrain_steps": 20,
    "padding": {"image_size": 12, "methods": ("dense", "lp_linf:8", "lp_l1:4"), "width": 16, "depth": 1, "steps": 8},
}


def _config(grid, width, depth, steps, methods, image_size):
    heads = max(2, width // 32)
    model = ViTConfig(image_size=image_size, patch_size=2, in_chans=1, dim=width, depth=depth, heads=heads,
                      mlp_ratio=2.0, num_classes=5)
    adapt = replace(_adapt_config(steps), eval_every=steps, check_every=max(1, steps // 4))  # final accuracy only
    cfg = FinetuneConfig(methods=methods, seeds=grid["seeds"], adapt=adapt, model=model)
    steps = int(grid.get("pretrain_steps", cfg.pretrain.steps))
    return replace(cfg, pretrain=replace(cfg.pretrain, steps=steps, eval_every=min(cfg.pretrain.eval_every, steps)))


def _cell(results, **labels):
    summary = summarize(results)
    by = {m["name"]: m for m in results["methods"]}
    rows = []
    for r in summary["rows"]:
        if r["kind"] == "dense":
            continue
        m = by[r["name"]]
        kept = [s[0] for layer in m["gradient_checks"]["energy_kept"].values() for s in layer if s]
        rows.append({**labels, "method": r["name"], "gap_points": r["gap_points"],
                     "paired_gap_std_points": r["paired_gap_std_points"], "fraction_of_dense": r["fraction_of_dense"],
                     "energy_kept": float(np.mean(kept)) if kept else None, "dense_accuracy": summary["dense"][
                         "accuracy_mean"], "accuracy": r["accuracy_mean"]})
    return rows


def run_scale_study(grid=None, *, cache_dir=None, progress=True, device="cpu") -> dict:
    """Run the scale study.

    Parameters
    ----------
    grid : dict, optional
        :data:`FULL_GRID` (default) or :data:`QUICK_GRID`, or a dict of the same keys.
    cache_dir : str or os.PathLike, optional
        Pretraining cache (one entry per width and depth).
    progress : bool, optional
        Progress bar over the cells (default True).
    device : str, optional
        PyTorch device (default ``"cpu"``).

    Returns
    -------
    dict
        ``grid``, ``rows`` (one per cell and approximate method: width, depth,
        steps, gap and its paired spread in points, cost fraction, energy kept at
        the first check), ``padding`` (the same for the 14 x 14 part, one row per
        padding mode and method) and ``seconds``.

    Examples
    --------
    >>> import tempfile
    >>> from analysis.finetune.scale_study import QUICK_GRID, run_scale_study
    >>> tiny = dict(QUICK_GRID, steps=(2,), methods=("dense", "lp_l1:4"),
    ...             padding=dict(QUICK_GRID["padding"], steps=2, methods=("dense", "lp_linf:8")))
    >>> res = run_scale_study(tiny, cache_dir=tempfile.mkdtemp(), progress=False)
    >>> [r["method"] for r in res["rows"]], sorted({r["pad"] for r in res["padding"]})
    (['lp_l1:4'], ['reflect', 'zero'])
    """
    g = FULL_GRID if grid is None else grid
    t0 = time.perf_counter()
    cells = [(w, d, s) for w in g["widths"] for d in g["depths"] for s in g["steps"]]
    rows, padding = [], []
    with progress_bar(len(cells) + 2, "scale study", enabled=None if progress else False) as bar:
        for w, d, s in cells:
            cfg = _config(g, w, d, s, g["methods"], g["image_size"])
            res = run_finetune_torch(cfg, cache_dir=cache_dir, progress=False, device=device)
            rows += _cell(res, width=w, depth=d, steps=s)
            bar.update(1)
        p = g["padding"]
        for pad in ("reflect", "zero"):
            cfg = _config(g, p["width"], p["depth"], p["steps"], p["methods"], p["image_size"])
            res = run_finetune_torch(cfg, cache_dir=cache_dir, progress=False, device=device, pad=pad)
            padding += _cell(res, pad=pad, grid=list(cfg.model.grid))
            bar.update(1)
    return {"grid": {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}, "rows": rows,
            "padding": padding, "seconds": time.perf_counter() - t0}


def _trend(rows, key):
    """Mean gap per value of ``key`` (over everything else), per method."""
    out = {}
    for r in rows:
        out.setdefault(r["method"], {}).setdefault(r[key], []).append(r["gap_points"])
    return {m: {k: float(np.mean(v)) for k, v in sorted(d.items())} for m, d in out.items()}


def _figure(rows):
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib is optional (finetune extra)

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [(r["energy_kept"], r["gap_points"]) for r in rows if r["method"] == method and r["energy_kept"]]
        if pts:
            x, y = zip(*pts, strict=True)
            ax.scatter(x, y, label=method, s=18)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("energy of grad_y kept (first check, mean over layers)")
    ax.set_ylabel("accuracy gap to full BP (points)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    data = figure_bytes(fig)
    plt.close(fig)
    return data


def _markdown(res):
    rows = res["rows"]
    table = markdown_table(
        ["width", "depth", "steps", "method", "Δ vs full BP (points)", "of full BP", "energy kept"],
        [[r["width"], r["depth"], r["steps"], f"`{r['method']}`",
          f"{r['gap_points']:+.1f} ± {r['paired_gap_std_points']:.1f}", f"{100 * r['fraction_of_dense']:.0f} %",
          "–" if r["energy_kept"] is None else f"{100 * r['energy_kept']:.0f} %"] for r in rows])
    pad = markdown_table(
        ["padding", "grid", "method", "Δ vs full BP (points)", "of full BP"],
        [[r["pad"], "×".join(map(str, r["grid"])), f"`{r['method']}`",
          f"{r['gap_points']:+.1f} ± {r['paired_gap_std_points']:.1f}", f"{100 * r['fraction_of_dense']:.0f} %"]
         for r in res["padding"]])
    trends = []
    for key in ("width", "depth", "steps"):
        for method, by in _trend(rows, key).items():
            trends.append(f"* mean gap of `{method}` by {key}: "
                          + ", ".join(f"{k}: {v:+.1f}" for k, v in by.items()))
    return "\n".join([
        "# LBP-WHT fine-tuning at scale: the gap to full backpropagation by width, depth and steps",
        "",
        f"Generated by `lbp finetune --study scale` (PyTorch engine) in {res['seconds']:.0f} s; "
        f"{res['grid']['seeds']} seeds per cell; gaps paired by seed (mean ± standard deviation of the per-seed "
        "gaps). All numbers are in `results.json`.",
        "",
        "## Trends (means over the other settings)",
        "",
        *trends,
        "",
        "![gap against energy kept](fig_gap_energy.png)",
        "",
        "## Cells",
        "",
        table,
        "",
        "## Reflect against zero padding",
        "",
        "Reflect padding mirrors tokens into the padded border, so with the full basis `grad_W` counts them twice; "
        "zero padding adds nothing.",
        "",
        pad,
        "",
    ])


def build_scale_study(out="lbp-finetune-scale", grid=None, *, cache_dir=None, progress=True, device="cpu"):
    """Run the scale study and write ``index.md``, ``results.json`` and ``fig_gap_energy.png``.

    Parameters
    ----------
    out : str or os.PathLike, optional
        Output directory (default ``"lbp-finetune-scale"``).
    grid, cache_dir, progress, device
        As for :func:`run_scale_study`.

    Returns
    -------
    dict
        The results (also in ``results.json``).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from analysis.finetune.scale_study import QUICK_GRID, build_scale_study
    >>> tiny = dict(QUICK_GRID, steps=(2,), methods=("dense", "lp_l1:4"),
    ...             padding=dict(QUICK_GRID["padding"], steps=2, methods=("dense", "lp_linf:8")))
    >>> out = tempfile.mkdtemp()
    >>> _ = build_scale_study(out, tiny, cache_dir=tempfile.mkdtemp(), progress=False)
    >>> sorted(p.name for p in Path(out).iterdir())
    ['fig_gap_energy.png', 'index.md', 'results.json']
    """
    check_output_dir(out)
    res = run_scale_study(grid, cache_dir=cache_dir, progress=progress, device=device)
    write_files(out, {"index.md": _markdown(res), "results.json": json_text(res),
                      "fig_gap_energy.png": _figure(res["rows"])})
    return res
