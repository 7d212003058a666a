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
  experiment as a plain dict (the ``results.json`` of ``lbp finetune``).

Every public name is importable from :mod:`analysis.finetune` itself.
"""

from .cache import CACHE_FORMAT, cache_key, cache_path, default_cache_dir, load_or_build
from .data import DigitsTask, digit_tasks, resize_bilinear
from .experiment import FULL_METHODS, HEADLINE_METHODS, QUICK_METHODS, SCHEMA, FinetuneConfig, run_finetune
from .loop import GradientChecks, TrainConfig, TrainResult, batch_indices, evaluate, train
from .methods import METHOD_KINDS, BackwardPlan, Method, build_plan, layer_flops, parse_method
from .optim import OPTIMIZERS, SGD, AdamW, Optimizer, Schedule, make_optimizer

__all__ = [
    # optimizers
    "Schedule",
    "Optimizer",
    "AdamW",
    "SGD",
    "OPTIMIZERS",
    "make_optimizer",
    # data
    "DigitsTask",
    "digit_tasks",
    "resize_bilinear",
    # methods
    "METHOD_KINDS",
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
    "CACHE_FORMAT",
    "default_cache_dir",
    "cache_key",
    "cache_path",
    "load_or_build",
    # experiment
    "SCHEMA",
    "FULL_METHODS",
    "QUICK_METHODS",
    "HEADLINE_METHODS",
    "FinetuneConfig",
    "run_finetune",
]
