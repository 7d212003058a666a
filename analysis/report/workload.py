"""The workload of ``lbp report``: a small ViT on real pictures, measured layer by layer.

A :class:`~analysis.vit.TinyViT` (seeded initialisation, not trained) runs
forward and exactly backward on crops of matplotlib's sample pictures; for each
linear layer on the token grid, :func:`run_workload` measures the Walsh energy
spectra of ``x`` and ``grad_y``, the energy the selection keeps and the local
gradient errors of LBP-WHT and of rank-matched baselines; for a typical layer,
the energy curves and a rank sweep; for several sets of LBP-WHT layers, the
end-to-end error of every parameter gradient and the backward FLOPs.  See
:doc:`/getting_started` for the report it feeds.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import lbpcore

from ..finetune import FinetuneConfig
from ..images import image_batch
from ..methods import PAPER_DEFAULTS, PARETO_SWEEP
from ..threads import blas_limit
from ..vit import TinyViT, ViTConfig, capture_linear_io, gradient_fidelity
from ._layers import (
    LayerMeasurements,
    Stages,
    finish,
    flops_row,
    local_row,
    measure_layers,
    setting,
    typical_results,
)
from .finetune import finetune_headline

__all__ = ["ReportConfig", "ReportResult", "run_workload"]


@dataclass(frozen=True)
class ReportConfig:
    """What :func:`~analysis.report.build_report` runs.

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
    methods : tuple of str
        Published methods measured on every layer (specs of
        :func:`analysis.methods.get_method`; default
        :data:`analysis.methods.PAPER_DEFAULTS`, the papers' settings).
    method_seeds : int
        Draws of each stochastic method for its bias² and variance (default 4).
    pareto : tuple of str
        Settings measured on the typical layer for the error-against-FLOPs
        figure (default :data:`analysis.methods.PARETO_SWEEP`).
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
    finetune : bool
        Run the headline fine-tuning experiment
        (:meth:`analysis.finetune.FinetuneConfig.headline`, about a minute;
        default True, False in :meth:`quick_config`).
    finetune_cache : str or None
        Its pretraining cache (default None:
        :func:`analysis.finetune.default_cache_dir`).

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
    methods: tuple = PAPER_DEFAULTS
    method_seeds: int = 4
    pareto: tuple = PARETO_SWEEP
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
    finetune: bool = True
    finetune_cache: str | None = None

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
            depth 2, rank sweep over ``k`` in (1, 3, 6, 10, 15), no fine-tuning,
            the published methods with 2 draws each and no Pareto sweep.

        Examples
        --------
        >>> from analysis.report import ReportConfig
        >>> ReportConfig.quick_config(batch=2).batch
        2
        """
        base = cls(batch=4, image_size=32, vit={"patch_size": 4, "dim": 32, "depth": 2, "heads": 2},
                   sweep_ks=(1, 3, 6, 10, 15), quick=True, finetune=False, method_seeds=2, pareto=())
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
        model = TinyViT(ViTConfig(image_size=self.image_size, seed=self.seed, **self.vit))
        for _, selection, _ in self.subsets:
            model.resolve_lbp(selection)
        return model


@dataclass
class ReportResult:
    """What :func:`~analysis.report.build_report` produced.

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
# the measurements


@dataclass
class _Measurements:
    """What the stages of :func:`_measure` produce, before tabulation."""

    batch: object  # analysis.images.ImageBatch
    layers: LayerMeasurements  # the token-grid layers, the typical layer's curves and sweep
    e2e: dict  # subset key -> FidelityReport
    timing: dict  # stage -> seconds


def _measure(cfg, model, basis, progress) -> _Measurements:
    """Run every stage, with progress and timings."""
    grid_layers = model.token_layers
    timing = {}
    steps = 2 + len(grid_layers) + 3 + len(cfg.subsets)
    with blas_limit(cfg.blas_threads), Stages(steps, progress) as st:
        st.stage("images and model")
        t = time.perf_counter()
        batch = image_batch(batch=cfg.batch, size=cfg.image_size, seed=cfg.seed, dtype=model.config.dtype)
        st.done()
        st.stage("forward and exact backward")
        captured = capture_linear_io(model, batch.images, batch.labels)
        timing["capture"] = time.perf_counter() - t
        st.done()

        measured = measure_layers({name: captured[name] for name in grid_layers}, cfg, basis, st)
        timing.update(measured.timing)

        t = time.perf_counter()
        e2e = {}
        for key, selection, _ in cfg.subsets:
            st.stage(f"end to end: {key}")
            e2e[key] = gradient_fidelity(model, batch.images, batch.labels, selection, patch=cfg.patch,
                                         bases=basis)
            st.done()
        timing["end_to_end"] = time.perf_counter() - t
    return _Measurements(batch, measured, e2e, timing)


# ---------------------------------------------------------------------------
# the tables of results.json


def _layer_row(name, info, per_layer, e2e, first):
    """The ``layers`` entry of one linear layer: sizes, local errors, end-to-end errors and FLOPs."""
    row = {"layer": name, "in_features": info.in_features, "out_features": info.out_features,
           "on_grid": info.on_grid}
    pl = per_layer.get(name)
    if pl is not None:
        row.update(local_row(pl))
    row["end_to_end"] = {}
    for key, rep in e2e.items():
        lr = next(lr for lr in rep.layers if lr.name == name)
        row["end_to_end"][key] = {"method": lr.method, "weight_rel_error": lr.weight_rel_error,
                                  "weight_cosine": lr.weight_cosine, "bias_rel_error": lr.bias_rel_error}
    lr = next(lr for lr in e2e[first].layers if lr.name == name)
    row["flops"] = flops_row(lr.dense_flops, lr.backward_flops, lr.gemm_flops, lr.projection_flops, lr.ideal_speedup)
    return row


def _flops(e2e, first, layer_rows):
    """Backward FLOPs of the whole model with the first subset on LBP-WHT, and per subset."""
    ref = e2e[first]
    return {
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
        ``summary`` (the headline numbers of
        :func:`analysis.report.summary.summarize`), ``finetune`` (the headline of
        a fine-tuning run, :func:`analysis.report.finetune.finetune_headline`)
        and ``timing``.

    Examples
    --------
    >>> from analysis.report import ReportConfig, run_workload
    >>> res = run_workload(ReportConfig.quick_config(batch=2), progress=False)
    >>> res["setting"]["rank"], len(res["layers"]) == len(res["model"]["linear_layers"])
    (21, True)
    """
    cfg = ReportConfig() if config is None else config
    t_start = time.perf_counter()
    basis = lbpcore.select_bases(cfg.patch, cfg.bases)
    model = cfg.model()
    measured = _measure(cfg, model, basis, progress)
    first = cfg.subsets[0][0]
    lm = measured.layers
    layer_rows = [_layer_row(name, info, lm.per_layer, measured.e2e, first) for name, info in model.layers.items()]
    results = {
        "lbpcore_version": lbpcore.__version__,
        "config": cfg.to_dict(),
        "model": {"config": model.config.to_dict(), "grid": list(model.config.grid),
                  "extra_tokens": model.config.extra_tokens, "linear_layers": list(model.linear_layers),
                  "token_layers": list(model.token_layers), "loss": measured.e2e[first].loss},
        "images": {"names": list(measured.batch.names), "batch": cfg.batch, "size": cfg.image_size,
                   "labels": measured.batch.labels, "crops": list(measured.batch.crops)},
        "setting": setting(cfg, basis),
        "layers": layer_rows,
        **typical_results(lm),
        "end_to_end": {k: {"selection": sel, "description": desc, "report": measured.e2e[k]}
                       for k, sel, desc in cfg.subsets},
        "flops": _flops(measured.e2e, first, layer_rows),
    }
    t = time.perf_counter()
    with blas_limit(cfg.blas_threads):
        results["finetune"] = finetune_headline(FinetuneConfig.headline() if cfg.finetune else None,
                                                cache_dir=cfg.finetune_cache, progress=progress)
    measured.timing["finetune"] = time.perf_counter() - t
    return finish(results, measured.timing, t_start)
