"""The per-layer measurements of ``lbp report``, shared by the built-in workload and captured models.

For each linear layer on a token grid, given its exact ``x``, ``weight`` and
``grad_y`` (:class:`analysis.vit.LayerIO` or
:class:`analysis.capture.CapturedLayer`): the Walsh energy spectra, the energy
the selection keeps and the local gradient errors against the baselines
(:func:`measure_layers`); then, for a typical layer, the energy curves and a
rank sweep; and the per-layer rows of ``results.json``.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass

import numpy as np

import lbpcore
from lbpcore._validation import check_grad_y, check_layer_input, check_weight

from ..errors import gradient_errors, rank_sweep
from ..io import DataError, to_jsonable
from ..methods.measure import method_errors
from ..progress import progress_bar
from ..spectrum import energy_curves, energy_kept, energy_maps
from ..stream import is_streamed
from .summary import summarize

__all__ = ["LayerMeasurements", "Stages", "cost_flops", "finish", "flops_row", "local_row",
           "measure_layers", "setting", "typical_results"]


class Stages:
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

    def done(self):
        self.bar.update(1)


def setting(cfg, basis) -> dict:
    """The ``setting`` entry of ``results.json``: patch, selection, rank."""
    return {"patch": cfg.patch, "bases": basis.spec, "rank": basis.rank, "indices": basis.indices,
            "bases_total": cfg.patch * cfg.patch}


def _layer_analysis(layer, cfg, basis, stream):
    """Spectra, energy kept and local gradient errors of one token-grid layer (its arrays read once)."""
    x, weight, grad_y = layer.x, layer.weight, layer.grad_y
    layout = getattr(layer, "layout", "tokens")
    kw = {"grid": layer.grid, "patch": cfg.patch, "extra_tokens": layer.extra_tokens, "layout": layout, **stream}
    check_weight(tuple(weight.shape))  # the three shapes first: the spectrum of grad_y would call it x
    check_layer_input(tuple(x.shape), tuple(weight.shape), layout)
    check_grad_y(tuple(x.shape), int(weight.shape[0]), tuple(grad_y.shape), layout)
    sx = energy_maps(x, **kw)
    sg = energy_maps(grad_y, **kw)
    methods = () if _streamed(x, grad_y, stream) else cfg.methods
    errs = gradient_errors(x, weight, grad_y, bases=basis, baselines=cfg.baselines, seed=cfg.seed, methods=methods,
                           method_seeds=cfg.method_seeds, **kw)
    return {
        "layer": layer.name,
        "in_features": int(weight.shape[1]),
        "out_features": int(weight.shape[0]),
        "x_shape": list(x.shape),
        "layout": layout,
        "grid": list(layer.grid),
        "extra_tokens": int(layer.extra_tokens),
        "energy_kept_x": energy_kept(sx, basis),
        "energy_kept_grad_y": energy_kept(sg, basis),
        "spectrum_x": sx,
        "spectrum_grad_y": sg,
        "errors": errs,
        "lbp_saved_fraction": lbpcore.backward_cost(tuple(x.shape), int(weight.shape[0]), grid=layer.grid,
                                                    patch=cfg.patch, bases=basis, extra_tokens=layer.extra_tokens,
                                                    layout=layout).memory_ratio,
    }


def _streamed(x, grad_y, stream) -> bool:
    """Whether the layer is streamed (a sharded capture): the published methods then are not measured."""
    return bool(stream) or is_streamed(x) or is_streamed(grad_y)


def _typical_layer(cfg, per_layer):
    """The configured layer, or the block layer whose ``grad_y`` energy kept is the median."""
    typical = cfg.typical_layer
    if typical is None:
        blocks = [n for n in per_layer if n.startswith("blocks.")] or list(per_layer)
        ranked = sorted(blocks, key=lambda n: per_layer[n]["energy_kept_grad_y"])
        typical = ranked[(len(ranked) - 1) // 2]
    if typical not in per_layer:
        raise ValueError(f"typical_layer {typical!r} is not a token-grid layer; layers are {list(per_layer)}")
    return typical


@dataclass
class LayerMeasurements:
    """What :func:`measure_layers` measures.

    Attributes
    ----------
    per_layer : dict
        Layer name to its spectra, energy kept and local errors.
    typical : str
        The layer of the energy curves and the rank sweep.
    curves : dict
        ``"x"`` / ``"grad_y"`` to :func:`analysis.spectrum.energy_curves` of the typical layer.
    sweep : list
        :func:`analysis.errors.rank_sweep` of the typical layer.
    timing : dict
        Seconds of the ``layers``, ``sweep`` and ``pareto`` stages.
    pareto : dict
        Spec to :class:`analysis.methods.measure.MethodError` of the settings
        ``cfg.pareto`` on the typical layer (empty for a streamed layer).
    """

    per_layer: dict
    typical: str
    curves: dict
    sweep: list
    timing: dict
    pareto: dict


def measure_layers(layers, cfg, basis, stages, stream=None) -> LayerMeasurements:
    """Measure every layer, then the energy curves and rank sweep of the typical one.

    Parameters
    ----------
    layers : dict of str to layer
        Objects with ``name``, ``x``, ``weight``, ``grad_y``, ``grid``,
        ``extra_tokens`` (and optionally ``layout``), each on its token grid.
        Arrays, or sources that are streamed (a sharded capture).
    cfg : ReportConfig
        ``patch``, ``baselines``, ``seed``, ``typical_layer``, ``sweep_ks``.
    basis : lbpcore.BasisSet
    stages : Stages
        Progress: one step per layer, then three.
    stream : dict, optional
        ``memory`` and ``scheduler`` of the streamed analyses
        (:func:`analysis.stream.reduce_batches`).

    Returns
    -------
    LayerMeasurements
    """
    stream = {k: v for k, v in (stream or {}).items() if v is not None}
    t = time.perf_counter()
    per_layer = {}
    for name, layer in layers.items():
        stages.stage(f"layer {name}")
        try:
            per_layer[name] = _layer_analysis(layer, cfg, basis, stream)
        except ValueError as exc:  # a layer whose arrays do not fit together: say which
            if name in str(exc) or type(exc) not in (ValueError, DataError):
                raise
            raise type(exc)(f"layer {name!r}: {exc}") from None
        stages.done()
    timing = {"layers": time.perf_counter() - t}

    typical = _typical_layer(cfg, per_layer)
    t = time.perf_counter()
    stages.stage(f"energy curves {typical}")
    curves = {
        "x": energy_curves(per_layer[typical]["spectrum_x"], seed=cfg.seed),
        "grad_y": energy_curves(per_layer[typical]["spectrum_grad_y"], seed=cfg.seed),
    }
    stages.done()
    stages.stage(f"rank sweep {typical}")
    lay = layers[typical]
    sweep = rank_sweep(lay.x, lay.weight, lay.grad_y, grid=lay.grid, patch=cfg.patch, ks=cfg.sweep_ks,
                       methods=cfg.baselines, extra_tokens=lay.extra_tokens, layout=getattr(lay, "layout", "tokens"),
                       seed=cfg.seed, progress=False, **stream)
    stages.done()
    timing["sweep"] = time.perf_counter() - t
    t = time.perf_counter()
    stages.stage(f"methods against FLOPs {typical}")
    pareto = {}
    if cfg.pareto and not _streamed(lay.x, lay.grad_y, stream):
        pareto = method_errors(lay.x, lay.weight, lay.grad_y, cfg.pareto, grid=lay.grid, patch=cfg.patch,
                               extra_tokens=lay.extra_tokens, layout=getattr(lay, "layout", "tokens"),
                               seeds=cfg.method_seeds, seed=cfg.seed)
    stages.done()
    timing["pareto"] = time.perf_counter() - t
    return LayerMeasurements(per_layer, typical, curves, sweep, timing, pareto)


def typical_results(lm: LayerMeasurements) -> dict:
    """The ``typical_layer``, ``spectra``, ``energy_curves`` and ``rank_sweep`` entries of ``results.json``."""
    return {
        "typical_layer": lm.typical,
        "spectra": {n: {"x": pl["spectrum_x"], "grad_y": pl["spectrum_grad_y"]} for n, pl in lm.per_layer.items()},
        "energy_curves": {"layer": lm.typical, **lm.curves},
        "rank_sweep": {"layer": lm.typical, "points": lm.sweep},
        "pareto": {"layer": lm.typical, "points": lm.pareto},
    }


def local_row(pl) -> dict:
    """The measured part of a layer's ``layers`` entry: energy kept, local errors, rank, grid."""
    errs = pl["errors"]
    return {
        "energy_kept_x": pl["energy_kept_x"],
        "energy_kept_grad_y": pl["energy_kept_grad_y"],
        "local": {m: {"grad_weight": g.grad_weight, "grad_x": g.grad_x, "projection": g.projection, "info": g.info}
                  for m, g in errs.methods.items()},
        "alternatives": dict(errs.alternatives),
        "lbp_saved_fraction": pl["lbp_saved_fraction"],
        "rank": errs.rank,
        "grid": pl["grid"],
        "extra_tokens": pl["extra_tokens"],
    }


def flops_row(dense, lbp, gemm, projection, ideal_speedup) -> dict:
    """The ``flops`` entry of a layer: dense and LBP-WHT backward FLOPs, and what is saved."""
    return {"dense": dense, "lbp": lbp, "gemm": gemm, "projection": projection, "saved": dense - lbp,
            "saved_fraction": (dense - lbp) / dense if dense else 0.0, "ideal_speedup": ideal_speedup}


def cost_flops(pl, cfg, basis) -> dict:
    """:func:`flops_row` of a measured layer from :func:`lbpcore.backward_cost`."""
    c = lbpcore.backward_cost(tuple(pl["x_shape"]), pl["out_features"], grid=tuple(pl["grid"]), patch=cfg.patch,
                              bases=basis, extra_tokens=pl["extra_tokens"], layout=pl["layout"])
    return flops_row(c.dense_flops, c.lbp_flops, c.lbp_gemm_flops, c.projection_flops, c.ideal_speedup)


def finish(results, timing, t_start) -> dict:
    """``results`` as plain JSON data, with their ``summary`` and ``timing`` (``timing["total"]`` set now)."""
    results = to_jsonable(results)
    results["summary"] = summarize(results)
    timing["total"] = time.perf_counter() - t_start
    results["timing"] = {"seconds": timing, "python": platform.python_version(), "numpy": np.__version__,
                         "machine": platform.machine()}
    return results
