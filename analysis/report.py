"""The ``lbp report`` workload: a small ViT on real pictures, analysed layer by layer.

:func:`build_report` runs the built-in workload and writes a directory with

``index.md``
    The findings in prose and Markdown tables, every number generated from
    the measurements;
``results.json``
    Every number (spectra, energy curves, local and end-to-end gradient
    errors, FLOPs), plain JSON;
``fig_*.png``
    The figures ``index.md`` links to.

The workload: a :class:`~analysis.vit.TinyViT` (seeded initialisation, not
trained) runs forward and exactly backward on a batch of crops of
matplotlib's sample pictures (:func:`analysis.images.image_batch`); every
linear layer's ``(x, weight, grad_y)`` is captured.  For each layer on the
token grid: the Walsh energy spectra of ``x`` and ``grad_y``
(:mod:`analysis.spectrum`) and the energy the selection keeps; the local
gradient errors of LBP-WHT and of rank-matched baselines
(:func:`analysis.errors.gradient_errors`); then, for a typical layer, a rank
sweep (:func:`analysis.errors.rank_sweep`); and for several sets of LBP-WHT
layers, the end-to-end error of every parameter gradient and the backward
FLOPs (:func:`analysis.vit.gradient_fidelity`, :func:`lbpcore.backward_cost`).

All results are computed and all figures rendered before the first file is
written; every file is then written atomically.
"""

from __future__ import annotations

import contextlib
import io
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .progress import progress_bar

__all__ = ["ReportConfig", "ReportResult", "build_report", "run_workload", "render_markdown", "markdown_table"]

_EXACT = 1e-9  # errors below this are rounding only

#: Display names of the methods compared (keys of :class:`analysis.errors.ErrorReport` methods).
_METHOD_NAMES = {"lbp": "LBP-WHT", "klt": "per-patch KLT", "dct": "DCT", "svd": "SVD", "random": "random"}


@dataclass(frozen=True)
class ReportConfig:
    """What :func:`build_report` runs.

    Attributes
    ----------
    batch : int
        Number of image crops (default 32).
    image_size : int
        Crop side in pixels (default 64).
    vit : dict
        Keyword arguments of :class:`analysis.vit.ViTConfig` besides
        ``image_size`` (default: 4-pixel patches, so a 16 x 16 token grid,
        width 64, depth 4, 4 heads, float32, seed 0).
    patch : int
        LBP-WHT patch size ``n`` (default 8).
    bases : str
        LBP-WHT selection (default ``"lp_l1:6"``: 21 of 64 bases).
    baselines : tuple of str
        Rank-matched baselines (default ``("klt", "dct", "svd", "random")``).
    subsets : tuple of (str, str, str)
        End-to-end runs: ``(key, layer selection, description)``; the
        selection is as ``lbp`` of :meth:`analysis.vit.TinyViT.resolve_lbp`
        (``"all"``, a layer name or :mod:`fnmatch` pattern, or a list of them).
    typical_layer : str or None
        Layer of the heatmaps and rank sweeps; None (default): the block
        layer whose ``grad_y`` energy kept is the median.
    sweep_ks : tuple of int or None
        ``k`` of the ``lp_l1:k`` rank sweep; None: ``1 .. 2n - 1``.
    seed : int
        Seed of the image crops and of the random baseline (default 0).
    blas_threads : int or None
        Limit BLAS to this many threads while running (default 1: the
        workload is many small matrix products, for which BLAS threads cost
        more than they gain, badly so on a busy machine); None leaves BLAS
        alone.  Needs :mod:`threadpoolctl` (ignored without it).
    quick : bool
        Whether this is the reduced configuration of :meth:`quick_config`.

    Examples
    --------
    >>> from analysis.report import ReportConfig
    >>> cfg = ReportConfig()
    >>> cfg.batch, cfg.bases, cfg.patch
    (32, 'lp_l1:6', 8)
    >>> ReportConfig.quick_config().image_size
    32
    """

    batch: int = 32
    image_size: int = 64
    vit: dict = field(default_factory=lambda: {"patch_size": 4, "dim": 64, "depth": 4, "heads": 4})
    patch: int = 8
    bases: str = "lp_l1:6"
    baselines: tuple = ("klt", "dct", "svd", "random")
    subsets: tuple = (
        ("all", "all", "every token-grid linear layer"),
        ("blocks", "blocks.*", "every layer of the transformer blocks, patch embedding dense"),
        ("mlp", "blocks.*.mlp.*", "the MLP layers fc1 and fc2 only"),
    )
    typical_layer: str | None = None
    sweep_ks: tuple | None = None
    seed: int = 0
    blas_threads: int | None = 1
    quick: bool = False

    @classmethod
    def quick_config(cls, **changes):
        """A reduced configuration that runs in a few seconds (for tests).

        Parameters
        ----------
        **changes
            Fields to override.

        Returns
        -------
        ReportConfig
            4 crops of 32 x 32 pixels (an 8 x 8 token grid, one patch), width 32,
            depth 2, rank sweep over ``k`` in (1, 3, 6, 10, 15).

        Examples
        --------
        >>> from analysis.report import ReportConfig
        >>> ReportConfig.quick_config(batch=2).batch
        2
        """
        base = cls(batch=4, image_size=32, vit={"patch_size": 4, "dim": 32, "depth": 2, "heads": 2},
                   sweep_ks=(1, 3, 6, 10, 15), quick=True)
        return replace(base, **changes)

    def to_dict(self) -> dict:
        """Plain dict of the fields (JSON-serializable)."""
        return asdict(self)

    def model(self):
        """The seeded :class:`analysis.vit.TinyViT` this configuration analyses.

        Returns
        -------
        analysis.vit.TinyViT

        Raises
        ------
        ValueError
            If ``vit`` or ``image_size`` is not a valid model, or a selection in
            ``subsets`` matches no token-grid layer of it.

        Examples
        --------
        >>> from analysis.report import ReportConfig
        >>> ReportConfig.quick_config().model().token_layers[:2]
        ('patch_embed', 'blocks.0.attn.qkv')
        """
        from .vit import TinyViT, ViTConfig  # noqa: PLC0415

        model = TinyViT(ViTConfig(image_size=self.image_size, seed=self.seed, **self.vit))
        for _, selection, _ in self.subsets:
            model.resolve_lbp(selection)
        return model


@dataclass
class ReportResult:
    """What :func:`build_report` produced.

    Attributes
    ----------
    out : pathlib.Path
        The report directory.
    index : pathlib.Path
        ``out / "index.md"``.
    files : list of pathlib.Path
        Every file written (figures, ``results.json``, ``index.md``).
    results : dict
        The content of ``results.json``.
    seconds : float
        Wall time of the run.

    Examples
    --------
    >>> from pathlib import Path
    >>> from analysis.report import ReportResult
    >>> res = ReportResult(Path("r"), Path("r/index.md"), [Path("r/index.md")], {"summary": {}}, 12.5)
    >>> res.index.name, res.seconds
    ('index.md', 12.5)
    """

    out: Path
    index: Path
    files: list
    results: dict = field(repr=False)
    seconds: float = 0.0


# ---------------------------------------------------------------------------
# small helpers


def markdown_table(headers, rows, align=None):
    """A GitHub-flavoured Markdown table.

    Parameters
    ----------
    headers : sequence of str
    rows : sequence of sequence
        Cells, converted with :class:`str`; ``|`` is escaped.
    align : str, optional
        One letter per column, ``l``, ``r`` or ``c``; default: first column
        left, the others right.

    Returns
    -------
    str
        Lines joined by newlines, without a trailing newline.

    Examples
    --------
    >>> from analysis.report import markdown_table
    >>> print(markdown_table(["layer", "kept"], [["fc1", "91.0%"]]))
    | layer | kept |
    | :--- | ---: |
    | fc1 | 91.0% |
    """
    headers = [str(h) for h in headers]
    if align is None:
        align = "l" + "r" * (len(headers) - 1)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}

    def cell(v):
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "| " + " | ".join(marks[a] for a in align) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def _pct(v, digits=1):
    return "–" if v is None else f"{100.0 * v:.{digits}f}%"


def _sci(v):
    if v is None:
        return "–"
    if v == 0:
        return "0"
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.2e}"


def _mflop(v):
    m = v / 1e6
    return f"{m:,.1f}" if m >= 10 or m == 0 else f"{m:.3g}"


@contextlib.contextmanager
def _blas_limit(threads):
    if threads is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415
    except ImportError:  # pragma: no cover - threadpoolctl is optional
        yield
        return
    with threadpool_limits(limits=int(threads), user_api="blas"):
        yield


class _Stages:
    """Progress on stderr with the current stage in the label."""

    def __init__(self, total, enabled):
        self.bar = progress_bar(total, "lbp report", enabled=None if enabled else False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()
        return False

    def stage(self, text):
        self.bar.set_description(f"lbp report: {text[:32]:<32}", refresh=False)

    def done(self, n=1):
        self.bar.update(n)


# ---------------------------------------------------------------------------
# the workload


def _layer_analysis(io_, cfg, basis):
    """Spectra, energy kept and local gradient errors of one token-grid layer."""
    from .errors import gradient_errors  # noqa: PLC0415
    from .spectrum import energy_kept, energy_maps  # noqa: PLC0415

    kw = {"grid": io_.grid, "patch": cfg.patch, "extra_tokens": io_.extra_tokens}
    sx = energy_maps(io_.x, **kw)
    sg = energy_maps(io_.grad_y, **kw)
    errs = gradient_errors(io_.x, io_.weight, io_.grad_y, bases=basis, baselines=cfg.baselines, seed=cfg.seed, **kw)
    return {
        "layer": io_.name,
        "in_features": int(io_.weight.shape[1]),
        "out_features": int(io_.weight.shape[0]),
        "x_shape": list(io_.x.shape),
        "grid": list(io_.grid),
        "extra_tokens": int(io_.extra_tokens),
        "energy_kept_x": energy_kept(sx, basis),
        "energy_kept_grad_y": energy_kept(sg, basis),
        "spectrum_x": sx,
        "spectrum_grad_y": sg,
        "errors": errs,
    }


def run_workload(config=None, *, progress=True):
    """Run the built-in workload and gather every number of the report.

    Parameters
    ----------
    config : ReportConfig, optional
        Default ``ReportConfig()`` (the full workload, about a minute on two
        cores).
    progress : bool, optional
        Show progress on stderr when the run takes more than about 2 s
        (default True).

    Returns
    -------
    dict
        JSON-ready (plain Python data): ``config``, ``model``, ``images``,
        ``setting`` (patch, bases, rank), ``layers`` (per linear layer:
        energy kept of ``x`` and ``grad_y``, local errors of every method,
        end-to-end errors per subset, FLOPs), ``spectra``, ``typical_layer``,
        ``energy_curves``, ``rank_sweep``, ``end_to_end`` (the full
        :class:`analysis.vit.FidelityReport` of each subset), ``flops``,
        ``summary`` (the headline numbers) and ``timing``.

    Examples
    --------
    >>> from analysis.report import ReportConfig, run_workload
    >>> res = run_workload(ReportConfig.quick_config(batch=2), progress=False)
    >>> res["setting"]["rank"], len(res["layers"]) == len(res["model"]["linear_layers"])
    (21, True)
    """
    import lbpcore  # noqa: PLC0415

    from ._io import to_jsonable  # noqa: PLC0415
    from .errors import rank_sweep  # noqa: PLC0415
    from .images import image_batch  # noqa: PLC0415
    from .spectrum import energy_curves  # noqa: PLC0415
    from .vit import capture_linear_io, gradient_fidelity  # noqa: PLC0415

    cfg = ReportConfig() if config is None else config
    t_start = time.perf_counter()
    timing = {}
    basis = lbpcore.select_bases(cfg.patch, cfg.bases)
    model = cfg.model()
    grid_layers = model.token_layers
    steps = 2 + len(grid_layers) + 2 + len(cfg.subsets)
    with _blas_limit(cfg.blas_threads), _Stages(steps, progress) as st:
        st.stage("images and model")
        t = time.perf_counter()
        batch = image_batch(batch=cfg.batch, size=cfg.image_size, seed=cfg.seed, dtype=model.config.dtype)
        st.done()
        st.stage("forward and exact backward")
        captured = capture_linear_io(model, batch.images, batch.labels)
        timing["capture"] = time.perf_counter() - t
        st.done()

        t = time.perf_counter()
        per_layer = {}
        for name in grid_layers:
            st.stage(f"layer {name}")
            per_layer[name] = _layer_analysis(captured[name], cfg, basis)
            st.done()
        timing["layers"] = time.perf_counter() - t

        typical = cfg.typical_layer
        if typical is None:
            blocks = [n for n in grid_layers if n.startswith("blocks.")] or list(grid_layers)
            ranked = sorted(blocks, key=lambda n: per_layer[n]["energy_kept_grad_y"])
            typical = ranked[(len(ranked) - 1) // 2]
        if typical not in per_layer:
            raise ValueError(f"typical_layer {typical!r} is not a token-grid layer; layers are {list(grid_layers)}")

        t = time.perf_counter()
        st.stage(f"energy curves {typical}")
        curves = {
            "x": energy_curves(per_layer[typical]["spectrum_x"], seed=cfg.seed),
            "grad_y": energy_curves(per_layer[typical]["spectrum_grad_y"], seed=cfg.seed),
        }
        st.done()
        st.stage(f"rank sweep {typical}")
        io_t = captured[typical]
        sweep = rank_sweep(io_t.x, io_t.weight, io_t.grad_y, grid=io_t.grid, patch=cfg.patch, ks=cfg.sweep_ks,
                           methods=cfg.baselines, extra_tokens=io_t.extra_tokens, seed=cfg.seed, progress=False)
        st.done()
        timing["sweep"] = time.perf_counter() - t

        t = time.perf_counter()
        e2e = {}
        for key, selection, _ in cfg.subsets:
            st.stage(f"end to end: {key}")
            e2e[key] = gradient_fidelity(model, batch.images, batch.labels, selection, patch=cfg.patch,
                                         bases=basis)
            st.done()
        timing["end_to_end"] = time.perf_counter() - t

    # ------------------------------------------------------------ tabulate
    first = cfg.subsets[0][0]
    layer_rows = []
    for name, info in model.layers.items():
        row = {"layer": name, "in_features": info.in_features, "out_features": info.out_features,
               "on_grid": info.on_grid}
        pl = per_layer.get(name)
        if pl is not None:
            errs = pl["errors"]
            row["energy_kept_x"] = pl["energy_kept_x"]
            row["energy_kept_grad_y"] = pl["energy_kept_grad_y"]
            row["local"] = {m: {"grad_weight": g.grad_weight, "grad_x": g.grad_x, "projection": g.projection,
                                "info": g.info}
                            for m, g in errs.methods.items()}
            row["rank"] = errs.rank
            row["grid"] = pl["grid"]
            row["extra_tokens"] = pl["extra_tokens"]
        row["end_to_end"] = {}
        for key, rep in e2e.items():
            lr = next(lr for lr in rep.layers if lr.name == name)
            row["end_to_end"][key] = {"method": lr.method, "weight_rel_error": lr.weight_rel_error,
                                      "weight_cosine": lr.weight_cosine, "bias_rel_error": lr.bias_rel_error}
        lr = next(lr for lr in e2e[first].layers if lr.name == name)
        row["flops"] = {"dense": lr.dense_flops, "lbp": lr.backward_flops, "gemm": lr.gemm_flops,
                        "projection": lr.projection_flops, "saved": lr.flops_saved,
                        "saved_fraction": lr.flops_saved / lr.dense_flops if lr.dense_flops else 0.0,
                        "ideal_speedup": lr.ideal_speedup}
        layer_rows.append(row)

    ref = e2e[first]
    flops = {
        "selection": first,
        "dense_linear": ref.dense_linear_flops,
        "lbp_linear": ref.lbp_linear_flops,
        "attention": ref.attention_flops,
        "projection": sum(r["flops"]["projection"] for r in layer_rows),
        "linear_saved_fraction": ref.linear_flops_saved_fraction,
        "total_saved_fraction": ref.total_flops_saved_fraction,
        "per_subset": {k: {"lbp_linear": r.lbp_linear_flops,
                           "linear_saved_fraction": r.linear_flops_saved_fraction,
                           "total_saved_fraction": r.total_flops_saved_fraction} for k, r in e2e.items()},
    }
    results = {
        "lbpcore_version": lbpcore.__version__,
        "config": cfg.to_dict(),
        "model": {"config": model.config.to_dict(), "grid": list(model.config.grid),
                  "extra_tokens": model.config.extra_tokens, "linear_layers": list(model.linear_layers),
                  "token_layers": list(grid_layers), "loss": ref.loss},
        "images": {"names": list(batch.names), "batch": cfg.batch, "size": cfg.image_size,
                   "labels": batch.labels, "crops": list(batch.crops)},
        "setting": {"patch": cfg.patch, "bases": basis.spec, "rank": basis.rank, "indices": basis.indices,
                    "bases_total": cfg.patch * cfg.patch},
        "layers": layer_rows,
        "typical_layer": typical,
        "spectra": {n: {"x": pl["spectrum_x"], "grad_y": pl["spectrum_grad_y"]} for n, pl in per_layer.items()},
        "energy_curves": {"layer": typical, **curves},
        "rank_sweep": {"layer": typical, "points": sweep},
        "end_to_end": {k: {"selection": sel, "description": desc, "report": e2e[k]}
                       for k, sel, desc in cfg.subsets},
        "flops": flops,
    }
    results = to_jsonable(results)
    results["summary"] = _summary(results)
    timing["total"] = time.perf_counter() - t_start
    results["timing"] = {"seconds": timing, "python": platform.python_version(), "numpy": np.__version__,
                         "machine": platform.machine()}
    return to_jsonable(results)


def _stats(values):
    v = [x for x in values if x is not None]
    return {"median": statistics.median(v), "min": min(v), "max": max(v)} if v else None


def _summary(res):
    """Headline numbers (plain data) from the gathered results."""
    rows = [r for r in res["layers"] if r["on_grid"]]
    methods = list(rows[0]["local"]) if rows else []
    local = {m: _stats([r["local"][m]["grad_weight"]["rel_error"] for r in rows]) for m in methods}
    lbp_err = [r["local"]["lbp"]["grad_weight"]["rel_error"] for r in rows]
    versus = {}
    for m in methods:
        if m == "lbp":
            continue
        other = [r["local"][m]["grad_weight"]["rel_error"] for r in rows]
        ratios = [a / b for a, b in zip(lbp_err, other) if b >= _EXACT]
        versus[m] = {
            "lbp_lower": sum(a < b for a, b in zip(lbp_err, other)),
            "layers": len(rows),
            "exact_layers": sum(b < _EXACT for b in other),
            "median_ratio_lbp_over": statistics.median(ratios) if ratios else None,
        }
    if "svd" in methods:
        full = [r for r in rows if r["local"]["svd"]["info"].get("svd_rank", 0)
                >= min(r["grid"][0] * r["grid"][1], r["out_features"])]
        rest = [r["local"]["svd"]["grad_weight"]["rel_error"] for r in rows if r not in full]
        versus["svd"]["full_rank_layers"] = [r["layer"] for r in full]
        versus["svd"]["max_error_other_layers"] = max(rest) if rest else None
    e2e = {}
    for key in res["end_to_end"]:
        rep = res["end_to_end"][key]["report"]
        chosen = [r for r in rows if r["end_to_end"][key]["method"] == "lbp"]
        errs = [r["end_to_end"][key]["weight_rel_error"] for r in rows]
        growth = [r["end_to_end"][key]["weight_rel_error"] / r["local"]["lbp"]["grad_weight"]["rel_error"]
                  for r in chosen if r["local"]["lbp"]["grad_weight"]["rel_error"] > 0]
        worst = max(rows, key=lambda r: r["end_to_end"][key]["weight_rel_error"]) if rows else None
        worst_param = max(rep["parameters"], key=lambda pe: -1.0 if pe["rel_error"] is None else pe["rel_error"])
        first_lbp = chosen[0] if chosen else None
        e2e[key] = {
            "lbp_layers": len(chosen),
            "weight_error": _stats(errs),
            "worst_layer": None if worst is None else worst["layer"],
            "max_parameter_error": rep["max_rel_error"],
            "worst_parameter": worst_param["name"],
            "median_growth_over_local": statistics.median(growth) if growth else None,
            "first_lbp_layer": None if first_lbp is None else first_lbp["layer"],
            "first_lbp_growth": None if first_lbp is None or not first_lbp["local"]["lbp"]["grad_weight"]["rel_error"]
            else (first_lbp["end_to_end"][key]["weight_rel_error"]
                  / first_lbp["local"]["lbp"]["grad_weight"]["rel_error"]),
            "linear_saved_fraction": rep["linear_flops_saved_fraction"],
            "total_saved_fraction": rep["total_flops_saved_fraction"],
        }
    return {
        "rank": res["setting"]["rank"],
        "bases_total": res["setting"]["bases_total"],
        "energy_kept_x": _stats([r["energy_kept_x"] for r in rows]),
        "energy_kept_grad_y": _stats([r["energy_kept_grad_y"] for r in rows]),
        "local_grad_weight_error": local,
        "local_grad_x_error": {m: _stats([r["local"][m]["grad_x"]["rel_error"] for r in rows]) for m in methods},
        "lbp_versus": versus,
        "end_to_end": e2e,
        "ideal_speedup": _stats([r["flops"]["ideal_speedup"] for r in rows]),
    }


# ---------------------------------------------------------------------------
# figures


def _figures(res):
    """``{file name: PNG bytes}`` of every figure (rendered in memory)."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    from .plots import plot_energy_curves, plot_error_curves, plot_layer_bars, plot_spectrum  # noqa: PLC0415

    import lbpcore  # noqa: PLC0415

    typical = res["typical_layer"]
    s = res["setting"]
    basis = lbpcore.select_bases(s["patch"], s["bases"])
    rank = s["rank"]
    out = {}

    def png(fig):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        return buf.getvalue()

    fig = Figure(figsize=(9.6, 4.0), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    spec = res["spectra"][typical]
    plot_spectrum(spec["x"]["energy_map"], ax=a1, bases=basis, title=f"{typical}: input x")
    plot_spectrum(spec["grad_y"]["energy_map"], ax=a2, bases=basis, title=f"{typical}: output gradient grad_y")
    out["fig_spectrum.png"] = png(fig)

    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    a1, a2 = fig.subplots(1, 2, sharey=True)
    plot_energy_curves(res["energy_curves"]["x"], ax=a1, highlight=rank, title=f"{typical}: x")
    plot_energy_curves(res["energy_curves"]["grad_y"], ax=a2, highlight=rank, title=f"{typical}: grad_y")
    a2.set_ylabel("")
    out["fig_energy_curves.png"] = png(fig)

    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    points = res["rank_sweep"]["points"]
    for ax, which, what in ((a1, "grad_weight", "weight gradient"), (a2, "grad_x", "input gradient")):
        plot_error_curves(points, ax=ax, which=which, highlight=rank, title=f"{typical}: {what}", logy=True,
                          floor=_EXACT)
    out["fig_error_curves.png"] = png(fig)

    rows = [r for r in res["layers"] if r["on_grid"]]
    first = next(iter(res["end_to_end"]))
    bars = [{"layer": r["layer"],
             "energy_kept_grad_y": r["energy_kept_grad_y"],
             "local_error": r["local"]["lbp"]["grad_weight"]["rel_error"],
             "e2e_error": r["end_to_end"][first]["weight_rel_error"],
             "flops_saved": r["flops"]["saved_fraction"]} for r in rows]
    metrics = (("energy_kept_grad_y", "grad_y energy kept"),
               ("local_error", "grad_W rel. error (layer alone)"),
               ("e2e_error", f"grad_W rel. error (end to end, '{first}')"),
               ("flops_saved", "backward FLOPs saved"))
    fig = Figure(figsize=(7.5, 1.4 + 0.55 * len(rows)), layout="constrained")
    plot_layer_bars(bars, ax=fig.add_subplot(), metrics=metrics,
                    title=f"per layer, {s['bases']} at patch {s['patch']} ({rank} of {s['bases_total']} bases)")
    out["fig_layers.png"] = png(fig)
    return out


# ---------------------------------------------------------------------------
# Markdown


def _rel(a, b):
    """'x.x times' comparison text of a against b."""
    if b == 0 or a is None or b is None:
        return "n/a"
    return f"{a / b:.2f}x"


def render_markdown(results, figures=None):
    """The text of ``index.md`` from the gathered results.

    Parameters
    ----------
    results : dict
        As returned by :func:`run_workload`.
    figures : sequence of str, optional
        File names of the figures to link (default: the four figures
        :func:`build_report` draws).

    Returns
    -------
    str
        Markdown: summary, set-up, tables per layer, end-to-end errors,
        FLOPs, figures and notes; every number comes from ``results``.

    Examples
    --------
    >>> from analysis.report import ReportConfig, render_markdown, run_workload
    >>> text = render_markdown(run_workload(ReportConfig.quick_config(batch=2), progress=False))
    >>> text.splitlines()[0]
    '# LBP-WHT report: a small ViT on real images'
    """
    if figures is None:
        figures = ("fig_spectrum.png", "fig_energy_curves.png", "fig_error_curves.png", "fig_layers.png")
    r = results
    s = r["setting"]
    sm = r["summary"]
    cfgm = r["model"]["config"]
    rows = [x for x in r["layers"] if x["on_grid"]]
    typical = r["typical_layer"]
    methods = list(rows[0]["local"]) if rows else ["lbp"]
    e2e_keys = list(r["end_to_end"])
    first = e2e_keys[0]
    fl = r["flops"]
    ekx, eky = sm["energy_kept_x"], sm["energy_kept_grad_y"]
    loc = sm["local_grad_weight_error"]
    by_layer = {x["layer"]: x for x in rows}
    lo_g = min(rows, key=lambda x: x["energy_kept_grad_y"])
    hi_g = max(rows, key=lambda x: x["energy_kept_grad_y"])

    L = []
    L.append("# LBP-WHT report: a small ViT on real images")
    L.append("")
    L.append(f"Generated by `lbp report` (lbpcore {r['lbpcore_version']}) in {r['timing']['seconds']['total']:.1f} s"
             + (" with the reduced `--quick` workload." if r["config"]["quick"] else "."))
    L.append("All numbers are in `results.json`.")
    L.append("")
    L.append("## Summary")
    L.append("")
    # energy
    L.append(
        f"* **Energy kept.** With `{s['bases']}` ({s['rank']} of {s['bases_total']} Walsh bases per "
        f"{s['patch']}x{s['patch']} patch), the output gradients `grad_y` of the {len(rows)} token-grid linear "
        f"layers keep a median {_pct(eky['median'])} of their energy (from {_pct(eky['min'])} in "
        f"`{lo_g['layer']}` to {_pct(eky['max'])} in `{hi_g['layer']}`); the layer inputs `x` keep a median "
        f"{_pct(ekx['median'])} ({_pct(ekx['min'])} to {_pct(ekx['max'])})."
    )
    best = r["energy_curves"]["grad_y"].get("energy")
    if best:
        opt = next((p["kept"] for p in best if p["rank"] == s["rank"]), None)
        lp = by_layer[typical]["energy_kept_grad_y"]
        L.append(
            f"  In the typical layer `{typical}`, the {s['rank']} highest-energy Walsh bases of its own `grad_y` "
            f"would keep {_pct(opt)}, against {_pct(lp)} for the fixed low-pass `{s['bases']}`."
        )
    # local errors
    name = _METHOD_NAMES.get
    parts = [f"{name(m, m)} {_sci(loc[m]['median'])}" for m in methods]
    L.append(
        f"* **Gradient error, one layer at a time** (exact `x` and `grad_y`, every method at rank "
        f"{s['rank']} per patch). Median relative error of `grad_W` over the layers: " + ", ".join(parts) + "."
    )
    vs = sm["lbp_versus"]
    comp = []
    for m, v in vs.items():
        ratio = v["median_ratio_lbp_over"]
        if ratio is None or v["exact_layers"]:  # a ratio to a rounding error means nothing
            continue
        comp.append(f"{ratio:.2f}x that of {name(m, m)} (lower in {v['lbp_lower']} of {v['layers']} layers)")
    if comp:
        L.append("  Layer by layer, LBP-WHT's `grad_W` error is a median " + "; ".join(comp) + ".")
    if "dct" in vs and 2 * vs["dct"]["lbp_lower"] < vs["dct"]["layers"]:
        L.append(
            "  The DCT's cosine basis compacts the energy of these grids better than the Walsh square waves, "
            "at the price of a transform with multiplications instead of additions and subtractions only."
        )
    locx = sm["local_grad_x_error"]
    L.append(
        "  The input gradient suffers more: `grad_x = (P grad_y) W` carries the whole projection error of "
        "`grad_y`, while the error of `grad_W = (P grad_y)^T x` is `((I - P) grad_y)^T (I - P) x` (divisible grid), "
        "small when `x` too has little energy outside the selected bases. Median relative error of `grad_x`: "
        + ", ".join(f"{name(m, m)} {_sci(locx[m]['median'])}" for m in methods) + "."
    )
    if "svd" in vs:
        v = vs["svd"]
        full = v["full_rank_layers"]
        text = ("  The truncated SVD baseline keeps, per image, as many singular vectors of `grad_y` as LBP-WHT keeps "
                "coefficient rows (patches x rank, at most min(h w, C_out)), fitted to that very gradient")
        if full:
            text += (f"; in the {len(full)} layers where this reaches min(h w, C_out) it keeps them all and is exact "
                     "to rounding")
        if v["max_error_other_layers"] is not None:
            other = f"in the other {v['layers'] - len(full)} layers" if full else "in every layer"
            text += (f"; {other} its `grad_W` error is at most "
                     f"{_sci(v['max_error_other_layers'])}: these gradients are nearly low-rank along the tokens")
        L.append(text + ". It needs an SVD of every gradient, where LBP-WHT applies a fixed transform.")
    if "klt" in vs:
        L.append("  The per-patch KLT, the best per-patch subspace for the energy of `grad_y`, is likewise fitted "
                 "to the gradient itself.")
    # end to end
    for key in e2e_keys:
        e = sm["end_to_end"][key]
        desc = r["end_to_end"][key]["description"]
        growth, g1 = e["median_growth_over_local"], e["first_lbp_growth"]
        if growth is None:
            comp_text = ""
        elif max(growth, g1 or 0.0) > 1.05:
            comp_text = (f"; errors compound toward the input: the earliest LBP-WHT layer `{e['first_lbp_layer']}` "
                         f"ends at {g1:.2f}x its error alone, the median over the LBP-WHT layers is {growth:.2f}x")
        else:
            comp_text = (f"; errors barely compound: the LBP-WHT layers end at a median {growth:.2f}x their error "
                         f"alone ({g1:.2f}x for the earliest, `{e['first_lbp_layer']}`)")
        L.append(
            f"* **End to end, `{key}`**: {desc}, {e['lbp_layers']} layers on LBP-WHT. The linear layers' weight "
            f"gradients have a median relative error of {_sci(e['weight_error']['median'])}, at most "
            f"{_sci(e['weight_error']['max'])} in `{e['worst_layer']}`; over all parameters the largest is "
            f"{_sci(e['max_parameter_error'])}, in `{e['worst_parameter']}`" + comp_text
            + f". Backward FLOPs of the linear layers: {_pct(e['linear_saved_fraction'])} saved, "
              f"{_pct(e['total_saved_fraction'])} counting the attention matrix products."
        )
    L.append(
        f"* **Cost.** With every token layer on LBP-WHT the linear layers' backward drops from "
        f"{_mflop(fl['dense_linear'])} to {_mflop(fl['lbp_linear'])} MFLOP "
        f"({_pct(fl['linear_saved_fraction'])} saved, of which projections cost {_mflop(fl['projection'])} MFLOP); "
        f"the GEMMs alone shrink {sm['ideal_speedup']['median']:.2f}x (median over layers). "
        f"The attention products ({_mflop(fl['attention'])} MFLOP) are unchanged, so the backward of linear layers "
        f"plus attention saves {_pct(fl['total_saved_fraction'])}."
    )
    L.append("")

    L.append("## Set-up")
    L.append("")
    img = r["images"]
    L.append(
        f"* Model: `TinyViT` ({cfgm['depth']} blocks, width {cfgm['dim']}, {cfgm['heads']} heads, MLP "
        f"{int(cfgm['dim'] * cfgm['mlp_ratio'])}, {cfgm['dtype']}), seeded initialisation (seed {cfgm['seed']}), "
        f"not trained; loss {r['model']['loss']:.4f} (softmax cross-entropy, {cfgm['num_classes']} classes)."
    )
    g = r["model"]["grid"]
    L.append(
        f"* Data: {img['batch']} random crops of {img['size']}x{img['size']} pixels from matplotlib's sample "
        f"pictures ({', '.join('`' + n + '`' for n in img['names'])}); {cfgm['patch_size']}x{cfgm['patch_size']} "
        f"pixel patches give a {g[0]}x{g[1]} token grid ({r['model']['extra_tokens']} extra tokens)."
    )
    L.append(
        f"* LBP-WHT: patch {s['patch']}, `{s['bases']}` ({s['rank']} bases), reflect padding. Baselines at the "
        "same rank per patch: per-patch KLT (the optimal subspace for `grad_y`'s energy, fitted on the data "
        "itself), 2D DCT-II low-pass in the same order, truncated SVD of `grad_y` along tokens per image "
        "(rank = patches x rank), and random orthonormal subspaces (see `analysis.errors`)."
    )
    L.append("* Relative error: `||approx - exact||_F / ||exact||_F`, computed in float64.")
    L.append("")

    L.append("## Per layer: energy kept and local gradient error")
    L.append("")
    L.append(f"Energy kept by `{s['bases']}` and relative error of `grad_W` when only this layer uses the "
             "approximation, from the exact `x` and `grad_y`.")
    L.append("")
    headers = ["layer", "C_in -> C_out", "x kept", "grad_y kept"] + [
        f"grad_W err {_METHOD_NAMES.get(m, m)}" for m in methods] + ["grad_x err LBP-WHT"]
    trs = []
    for x in rows:
        trs.append([f"`{x['layer']}`", f"{x['in_features']} -> {x['out_features']}", _pct(x["energy_kept_x"]),
                    _pct(x["energy_kept_grad_y"])]
                   + [_sci(x["local"][m]["grad_weight"]["rel_error"]) for m in methods]
                   + [_sci(x["local"]["lbp"]["grad_x"]["rel_error"])])
    L.append(markdown_table(headers, trs))
    L.append("")

    L.append("## End to end: compounding errors")
    L.append("")
    L.append("Relative error of each linear layer's weight gradient when the listed layers back-propagate with "
             "LBP-WHT in one backward pass (an approximate `grad_x` feeds every earlier layer). "
             "`(dense)` marks layers whose own backward was exact in that run: their error comes from the "
             "approximate `grad_x` of later layers.")
    L.append("")
    headers = ["layer", "local (alone)"] + [f"`{k}`" for k in e2e_keys]
    trs = []
    for x in r["layers"]:
        loc_err = x["local"]["lbp"]["grad_weight"]["rel_error"] if x["on_grid"] else None
        cells = []
        for k in e2e_keys:
            e = x["end_to_end"][k]
            cells.append(_sci(e["weight_rel_error"]) + ("" if e["method"] == "lbp" else " (dense)"))
        trs.append([f"`{x['layer']}`", _sci(loc_err)] + cells)
    L.append(markdown_table(headers, trs))
    L.append("")
    for k in e2e_keys:
        sel = r["end_to_end"][k]["selection"]
        sel = ", ".join(f"`{v}`" for v in sel) if isinstance(sel, list) else f"`{sel}`"
        L.append(f"* `{k}`: {sel} – {r['end_to_end'][k]['description']}.")
    L.append("")

    L.append("## Backward FLOPs")
    L.append("")
    L.append(f"From `lbpcore.backward_cost` with every token layer on LBP-WHT (`{first}`); the head acts on "
             "pooled features and stays exact.")
    L.append("")
    headers = ["layer", "dense MFLOP", "LBP-WHT MFLOP", "of which projection", "saved", "GEMM speed-up"]
    trs = []
    for x in r["layers"]:
        f = x["flops"]
        trs.append([f"`{x['layer']}`", _mflop(f["dense"]), _mflop(f["lbp"]), _mflop(f["projection"]),
                    _pct(f["saved_fraction"]), f"{f['ideal_speedup']:.2f}x"])
    trs.append(["**linear layers**", _mflop(fl["dense_linear"]), _mflop(fl["lbp_linear"]), _mflop(fl["projection"]),
                _pct(fl["linear_saved_fraction"]), ""])
    trs.append(["**+ attention products**", _mflop(fl["dense_linear"] + fl["attention"]),
                _mflop(fl["lbp_linear"] + fl["attention"]), "", _pct(fl["total_saved_fraction"]), ""])
    L.append(markdown_table(headers, trs))
    L.append("")

    L.append("## Figures")
    L.append("")
    captions = {
        "fig_spectrum.png": f"Walsh energy spectrum (fraction of the energy per basis, log scale) of the typical "
                            f"layer `{typical}` (median `grad_y` energy kept among the block layers); the white "
                            f"outline is `{s['bases']}`.",
        "fig_energy_curves.png": f"Energy kept versus rank in `{typical}`: low-pass selections, the per-tensor "
                                 f"energy-optimal Walsh selection and random bases; dashed line: rank {s['rank']}.",
        "fig_error_curves.png": f"Relative error of `grad_W` and `grad_x` in `{typical}` versus rank (`lp_l1:k`), "
                                f"LBP-WHT against the baselines at the same rank (log scale; errors that are "
                                f"rounding only, below {_EXACT:g}, are left out).",
        "fig_layers.png": "Per layer: energy of `grad_y` kept, `grad_W` error alone and end to end, and backward "
                          "FLOPs saved.",
    }
    for name in figures:
        L.append(f"![{name}]({name})")
        L.append("")
        L.append(f"*{captions.get(name, name)}*")
        L.append("")

    L.append("## Notes")
    L.append("")
    L.append(
        "* The model is untrained: its gradients are those of a randomly initialised network on real pictures; a "
        "trained network's spectra may differ. The numbers measure the approximation of the gradient of one batch, "
        "not the effect on training."
    )
    L.append(
        "* Energy kept is `||P g||^2 / ||g||^2` on the (padded) token grid, extra tokens excluded; by Parseval it is "
        "the sum of the selected cells of the energy map over the total."
    )
    L.append("* Reproduce with `lbp report --out DIR`; the figures and tables regenerate from the same code.")
    L.append("")
    return "\n".join(L)


# ---------------------------------------------------------------------------
# entry point


def _write_files(out, files):
    """Write ``{name: bytes or str}`` into directory ``out``, each file atomically.

    The directory is created if missing.  If any write fails, the files this
    call created are removed again (and the directory, if it created it and
    it is left empty), so a failed run adds nothing; a file it replaced keeps
    its new, complete content.  Returns the paths written, in order.
    """
    from ._io import atomic_write_bytes  # noqa: PLC0415

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(20, "exists and is not a directory", str(out))
    made_dir = not out.exists()
    created = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            target = out / name
            existed = target.exists()
            atomic_write_bytes(target, data.encode("utf-8") if isinstance(data, str) else data)
            if not existed:
                created.append(target)
    except BaseException:
        for target in created:
            target.unlink(missing_ok=True)
        if made_dir:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    return [out / name for name in files]


def build_report(out="lbp-report", *, quick=False, config=None, progress=True):
    """Run the built-in workload and write the report directory.

    Parameters
    ----------
    out : str or os.PathLike, optional
        Output directory (created if missing); default ``"lbp-report"``.
    quick : bool, optional
        Use :meth:`ReportConfig.quick_config` (a few seconds) instead of the
        full workload; ignored when ``config`` is given.
    config : ReportConfig, optional
        Explicit configuration.
    progress : bool, optional
        Show progress on stderr (default True).

    Returns
    -------
    ReportResult

    Raises
    ------
    OSError
        If the directory cannot be created or written; files already in it
        are left as they were.

    Examples
    --------
    >>> import json, tempfile
    >>> from analysis.report import build_report
    >>> res = build_report(tempfile.mkdtemp(), quick=True, progress=False)
    >>> json.loads(res.out.joinpath("results.json").read_text())["setting"]["bases"]
    'lp_l1:6'
    """
    import json  # noqa: PLC0415

    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():  # fail before a long run, not after it
        raise NotADirectoryError(20, "exists and is not a directory", str(out))
    if config is None:
        config = ReportConfig.quick_config() if quick else ReportConfig()
    results = run_workload(config, progress=progress)
    figures = _figures(results)
    text = render_markdown(results, figures=list(figures))
    payload = dict(figures)
    payload["results.json"] = json.dumps(results, indent=2, allow_nan=False) + "\n"
    payload["index.md"] = text
    files = _write_files(out, payload)
    return ReportResult(out=out, index=out / "index.md", files=files, results=results,
                        seconds=time.perf_counter() - t0)
