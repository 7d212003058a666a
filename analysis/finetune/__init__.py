"""Fine-tuning the NumPy ViT with LBP-WHT and its baselines: does it end up as good as full backpropagation?

* :mod:`analysis.finetune.optim` – :class:`AdamW`, :class:`SGD` and the
  warm-up :class:`Schedule`;
* :mod:`analysis.finetune.data` – the pretraining and adaptation tasks from
  scikit-learn's handwritten digits (:func:`digit_tasks`);
* :mod:`analysis.finetune.methods` – backward methods (:func:`parse_method`)
  bound to a model as a :class:`BackwardPlan` with its backward FLOPs;
* :mod:`analysis.finetune.loop` – the training loop :func:`train`;
* :mod:`analysis.finetune.cache` – the on-disk cache of pretrained parameters;
* :mod:`analysis.finetune.experiment` – :func:`run_finetune`, the whole
  experiment as a plain dict (the ``results.json`` of ``lbp finetune``);
* :mod:`analysis.finetune.torch_model`, :mod:`analysis.finetune.torch_plan`
  and :mod:`analysis.finetune.torch_engine` – the PyTorch engine:
  :func:`~analysis.finetune.torch_engine.compare_methods` fine-tunes any
  ``nn.Module`` with every method through :func:`lbpcore.torch.convert`
  (also importable as ``analysis.finetune.compare_methods``, which imports
  PyTorch on first use: importing :mod:`analysis.finetune` never does);
  :mod:`analysis.finetune.torch_digits` – the digits experiment on the
  PyTorch port of the ViT (``lbp finetune --engine torch``);
* :mod:`analysis.finetune.summary`, :mod:`analysis.finetune.figures`,
  :mod:`analysis.finetune.markdown` and :mod:`analysis.finetune.build` – the
  headline numbers, figures and text of ``lbp finetune``, and
  :func:`build_finetune`, which writes them.

Every public function and class is importable from :mod:`analysis.finetune`
itself; the constants (``FULL_METHODS``, ``SCHEMA``...) from their modules.
"""

from .build import FinetuneResult, build_finetune
from .cache import cache_key, cache_path, default_cache_dir, load_or_build
from .data import DigitsTask, digit_tasks, resize_bilinear
from .experiment import FinetuneConfig, run_finetune
from .loop import GradientChecks, TrainConfig, TrainResult, batch_indices, evaluate, train
from .methods import BackwardPlan, Method, build_plan, layer_flops, parse_method
from .optim import SGD, AdamW, Optimizer, Schedule, make_optimizer
from .summary import headline, summarize

__all__ = [
    # optimizers
    "Schedule",
    "Optimizer",
    "AdamW",
    "SGD",
    "make_optimizer",
    # data
    "DigitsTask",
    "digit_tasks",
    "resize_bilinear",
    # methods
    "Method",
    "parse_method",
    "BackwardPlan",
    "build_plan",
    "layer_flops",
    # training loop
    "TrainConfig",
    "GradientChecks",
    "TrainResult",
    "evaluate",
    "batch_indices",
    "train",
    # pretraining cache
    "default_cache_dir",
    "cache_key",
    "cache_path",
    "load_or_build",
    # experiment
    "FinetuneConfig",
    "run_finetune",
    # summary and output
    "summarize",
    "headline",
    "FinetuneResult",
    "build_finetune",
]

_LAZY = {"compare_methods": "torch_engine"}


def __getattr__(name):
    """Names of the PyTorch engine, imported on first use (PyTorch is optional)."""
    if name in _LAZY:
        import importlib  # noqa: PLC0415 - only for the optional PyTorch engine

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
