"""Analysis tools for LBP-WHT: spectra, gradient errors, a small ViT, figures and the ``lbp`` command.

The package builds on :mod:`lbpcore` (which never imports it):

* :mod:`analysis.spectrum` – Walsh–Hadamard energy spectra of token grids and
  the energy a basis selection keeps;
* :mod:`analysis.errors` – gradient errors of LBP-WHT against the dense
  backward and rank-matched baselines (KLT, DCT, SVD, random);
* :mod:`analysis.methods` – published approximate-backward methods (VeLoRA,
  CompAct, WTA-CRS, CRS, meProp, randomized AD, HOT, a calibrated KLT) behind
  one interface, measured against the dense backward with bias² and variance;
* :mod:`analysis.vit` and :mod:`analysis.images` – a small vision transformer
  with a manual NumPy backward, on real pictures from matplotlib's sample data;
* :mod:`analysis.capture` – what chosen layers of a PyTorch model see in one
  training step, recorded with hooks, saved to and read from one ``.npz`` file
  (PyTorch is imported only to record);
* :mod:`analysis.finetune` – fine-tuning the ViT with LBP-WHT and its
  baselines on real digits (``lbp finetune``): does it train as well as full
  backpropagation, at what backward cost?
* :mod:`analysis.bench` – timings of the dense and LBP-WHT backward passes;
* :mod:`analysis.plots` – headless matplotlib figures, with the names and
  styles of :mod:`analysis.labels`;
* :mod:`analysis.report` and :mod:`analysis.cli` – ``lbp report`` (on the
  built-in workload or on a capture) and the other ``lbp`` subcommands;
* :mod:`analysis.io`, :mod:`analysis.progress` and :mod:`analysis.threads` –
  atomic files, JSON, tables, checked array input, progress bars, BLAS threads;
* :mod:`analysis.sources`, :mod:`analysis.shards`, :mod:`analysis.stream` and
  :mod:`analysis.budget` – data larger than memory: shards and Zarr stores
  read and written chunk by chunk, reductions over chunks with Dask.

Importing :mod:`analysis` imports nothing else: each name below is loaded on
first use (so the ``lbp`` command can catch Ctrl-C from its first moment), and
matplotlib, Dask and Zarr only when a function that needs them is called.

Examples
--------
>>> import numpy as np
>>> import analysis
>>> res = analysis.energy_maps(np.ones((1, 64, 2)), grid=(8, 8), patch=8)
>>> analysis.energy_kept(res, "lp_l1:1")
1.0
"""

import importlib

#: Where each name of ``__all__`` is defined; loaded on first use (PEP 562), so
#: that importing :mod:`analysis` (and the ``lbp`` entry point) stays cheap.
_SOURCES = {
    "main": "cli",
    "ErrorReport": "errors", "GradientError": "errors", "gradient_errors": "errors", "rank_sweep": "errors",
    "ImageBatch": "images", "image_batch": "images", "sample_images": "images",
    "DataError": "io", "load_array": "io",
    "cosine": "metrics", "relative_error": "metrics",
    "plot_energy_curves": "plots", "plot_error_curves": "plots", "plot_layer_bars": "plots", "plot_spectrum": "plots",
    "progress_bar": "progress",
    "save_shards": "shards", "open_source": "sources",
    "ReportConfig": "report", "ReportResult": "report", "build_report": "report",
    "SpectrumAccumulator": "spectrum", "SpectrumResult": "spectrum", "energy_curves": "spectrum",
    "energy_kept": "spectrum", "energy_maps": "spectrum",
    "FidelityReport": "vit", "TinyViT": "vit", "ViTConfig": "vit", "capture_linear_io": "vit",
    "gradient_fidelity": "vit",
}


def __getattr__(name):
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_SOURCES))


__all__ = [
    # spectra
    "energy_maps",
    "energy_kept",
    "energy_curves",
    "SpectrumResult",
    "SpectrumAccumulator",
    # gradient errors
    "gradient_errors",
    "rank_sweep",
    "relative_error",
    "cosine",
    "GradientError",
    "ErrorReport",
    # model and data
    "TinyViT",
    "ViTConfig",
    "gradient_fidelity",
    "capture_linear_io",
    "FidelityReport",
    "image_batch",
    "sample_images",
    "ImageBatch",
    # figures, report, command line
    "plot_spectrum",
    "plot_energy_curves",
    "plot_error_curves",
    "plot_layer_bars",
    "build_report",
    "ReportConfig",
    "ReportResult",
    "main",
    # input/output helpers
    "load_array",
    "DataError",
    "progress_bar",
    # data larger than memory
    "open_source",
    "save_shards",
]
