"""``lbp report --capture``: the per-layer report of a user's own model, from a capture file.

The layers of a :class:`analysis.capture.Capture` (the exact ``x``, ``weight``
and ``grad_y`` of chosen layers in one training step) are measured as the
built-in workload's (:mod:`analysis.report._layers`): energy kept, local gradient
errors against the baselines, the typical layer's energy curves and rank
sweep, and the backward FLOPs of each layer from :func:`lbpcore.backward_cost`.
There is no end-to-end run: the capture holds one backward pass, not the model.
"""

from __future__ import annotations

import time

import numpy as np

import lbpcore

from ..io import DataError
from ..sources import BatchSource
from ..threads import blas_limit
from ._layers import Stages, cost_flops, finish, local_row, measure_layers, setting, typical_results
from .workload import ReportConfig

__all__ = ["run_capture"]


def _flops(rows) -> dict:
    """Backward FLOPs of the captured layers, dense and with every one on LBP-WHT."""
    dense = sum(r["flops"]["dense"] for r in rows)
    lbp = sum(r["flops"]["lbp"] for r in rows)
    return {"dense_linear": dense, "lbp_linear": lbp, "projection": sum(r["flops"]["projection"] for r in rows),
            "linear_saved_fraction": (dense - lbp) / dense if dense else 0.0}


def _all_zero(array) -> bool:
    """Whether every value of a captured array is 0 (a sharded one read shard by shard, up to a nonzero one)."""
    if isinstance(array, BatchSource):
        return not any(np.any(array.read(start, start + int(shard.shape[0])))
                       for start, shard in zip(array.starts, array.shards, strict=True))
    return not np.any(array)


def _why_unmeasurable(layer) -> str:
    """Why a layer on its grid cannot be measured (an array of zeros: every error and energy ratio is 0/0), or ''."""
    for f, why in (("grad_y", " (no gradient reached the layer)"), ("x", ""), ("weight", "")):
        if _all_zero(getattr(layer, f)):
            return f"its {f} is all zero{why}: nothing to measure"
    return ""


def run_capture(capture, config=None, *, progress=True, memory=None, scheduler=None) -> dict:
    """Measure the layers of a capture and gather the numbers of the report.

    Parameters
    ----------
    capture : analysis.capture.Capture
        As returned by :func:`analysis.capture.capture` or
        :func:`analysis.capture.load_capture` (with its grid set, see
        :meth:`~analysis.capture.Capture.with_grid`).
    config : ReportConfig, optional
        Its ``patch``, ``bases``, ``baselines``, ``typical_layer``,
        ``sweep_ks``, ``seed`` and ``blas_threads`` apply (the model and image
        fields are those of the built-in workload and are not used).
    progress : bool, optional
        Progress on stderr (default True).
    memory, scheduler : optional
        Memory budget and ``dask.distributed`` scheduler of the analyses of a
        sharded capture, whose arrays are streamed
        (:func:`analysis.stream.reduce_batches`; default: a quarter of the
        available memory, the local threaded scheduler).

    Returns
    -------
    dict
        JSON-ready, with the entries of :func:`analysis.report.run_workload`
        except ``model`` and ``images`` (``capture`` instead: file, grid, the
        layers measured and those skipped, with the reason) and with an empty
        ``end_to_end``.

    Raises
    ------
    DataError
        If no layer of the capture lies on its token grid (no grid given, or
        token counts that do not fit it) with data to measure (a layer whose
        ``x``, ``weight`` or ``grad_y`` is all zero is skipped, with the reason).

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.capture import Capture, CapturedLayer
    >>> from analysis.report import ReportConfig, run_capture
    >>> rng = np.random.default_rng(0)
    >>> arrays = {"x": rng.standard_normal((2, 64, 4)), "weight": rng.standard_normal((3, 4)),
    ...           "grad_y": rng.standard_normal((2, 64, 3))}
    >>> cap = Capture({"fc": CapturedLayer.from_arrays("fc", arrays, grid=(8, 8))}, grid=(8, 8), extra_tokens=0)
    >>> res = run_capture(cap, ReportConfig.quick_config(), progress=False)
    >>> res["capture"]["measured"], res["setting"]["rank"]
    (['fc'], 21)
    """
    cfg = ReportConfig() if config is None else config
    t_start = time.perf_counter()
    basis = lbpcore.select_bases(cfg.patch, cfg.bases)
    skipped = []
    on_grid = {}
    for n, lay in capture.layers.items():
        why = lay.why_off_grid() or _why_unmeasurable(lay)
        if why:
            skipped.append({"layer": n, "reason": why})
        else:
            on_grid[n] = lay
    if not on_grid:
        where = capture.source or "capture"
        reasons = "; ".join(f"{s['layer']}: {s['reason']}" for s in skipped[:3])
        off_grid = any(not capture.layers[x["layer"]].on_grid for x in skipped)
        hint = ("give the grid and extra tokens of the layers' inputs (--grid HxW --extra-tokens E)" if off_grid
                else "capture a step whose loss depends on the layers")
        raise DataError(f"{where}: no captured layer lies on the token grid with data to measure ({reasons}); {hint}")
    with blas_limit(cfg.blas_threads), Stages(len(on_grid) + 3, progress) as st:
        lm = measure_layers(on_grid, cfg, basis, st, {"memory": memory, "scheduler": scheduler})
    rows = []
    for name, pl in lm.per_layer.items():
        rows.append({"layer": name, "in_features": pl["in_features"], "out_features": pl["out_features"],
                     "on_grid": True, **local_row(pl), "end_to_end": {}, "flops": cost_flops(pl, cfg, basis)})
    first = next(iter(on_grid.values()))
    results = {
        "lbpcore_version": lbpcore.__version__,
        "config": cfg.to_dict(),
        "capture": {"file": capture.source, "grid": capture.grid, "extra_tokens": capture.extra_tokens,
                    "batch": first.shapes["x"][0], "layers": list(capture.layers), "measured": list(on_grid),
                    "skipped": skipped},
        "setting": setting(cfg, basis),
        "layers": rows,
        **typical_results(lm),
        "end_to_end": {},
        "flops": _flops(rows),
    }
    return finish(results, lm.timing, t_start)
