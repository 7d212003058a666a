"""Analysis tools for LBP-WHT: spectra, gradient errors, a small ViT, figures and the ``lbp`` command.

The package builds on :mod:`lbpcore` (which never imports it):

* :mod:`analysis.spectrum` – Walsh–Hadamard energy spectra of token grids and
  the energy a basis selection keeps;
* :mod:`analysis.errors` – gradient errors of LBP-WHT against the dense
  backward and rank-matched baselines (KLT, DCT, SVD, random);
* :mod:`analysis.vit` and :mod:`analysis.images` – a small vision transformer
  with a manual NumPy backward, on real pictures from matplotlib's sample data;
* :mod:`analysis.finetune` – fine-tuning the ViT with LBP-WHT and its
  baselines on real digits (``lbp finetune``): does it train as well as full
  backpropagation, at what backward cost?
* :mod:`analysis.bench` – timings of the dense and LBP-WHT backward passes;
* :mod:`analysis.plots` – headless matplotlib figures, with the names and
  styles of :mod:`analysis.labels`;
* :mod:`analysis.report` and :mod:`analysis.cli` – ``lbp report`` and the
  other ``lbp`` subcommands;
* :mod:`analysis.io`, :mod:`analysis.progress` and :mod:`analysis.threads` –
  atomic files, JSON, tables, checked array input, progress bars, BLAS threads.

Importing :mod:`analysis` does not import matplotlib; the plotting functions
load it when called.

Examples
--------
>>> import numpy as np
>>> import analysis
>>> res = analysis.energy_maps(np.ones((1, 64, 2)), grid=(8, 8), patch=8)
>>> analysis.energy_kept(res, "lp_l1:1")
1.0
"""

from .cli import main
from .errors import ErrorReport, GradientError, gradient_errors, rank_sweep
from .images import ImageBatch, image_batch, sample_images
from .io import DataError, load_array
from .metrics import cosine, relative_error
from .plots import plot_energy_curves, plot_error_curves, plot_layer_bars, plot_spectrum
from .progress import progress_bar
from .report import ReportConfig, ReportResult, build_report
from .spectrum import SpectrumAccumulator, SpectrumResult, energy_curves, energy_kept, energy_maps
from .vit import FidelityReport, TinyViT, ViTConfig, capture_linear_io, gradient_fidelity

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
]
