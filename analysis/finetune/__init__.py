"""Fine-tuning the NumPy ViT with LBP-WHT and its baselines: does it end up as good as full backpropagation?

* :mod:`analysis.finetune.optim` – :class:`AdamW`, :class:`SGD` and the
  warm-up :class:`Schedule`;
* :mod:`analysis.finetune.data` – the pretraining and adaptation tasks from
  scikit-learn's handwritten digits (:func:`digit_tasks`);
* :mod:`analysis.finetune.methods` – backward methods (:func:`parse_method`)
  bound to a model as a :class:`BackwardPlan` with its backward FLOPs;
* :mod:`analysis.finetune.loop` – the training loop :func:`train`.

Every public name is importable from :mod:`analysis.finetune` itself.
"""

from .data import DigitsTask, digit_tasks, resize_bilinear
from .loop import GradientChecks, TrainConfig, TrainResult, batch_indices, evaluate, train
from .methods import METHOD_KINDS, BackwardPlan, Method, build_plan, layer_flops, parse_method
from .optim import OPTIMIZERS, SGD, AdamW, Optimizer, Schedule, make_optimizer

__all__ = [
    "Schedule",
    "Optimizer",
    "AdamW",
    "SGD",
    "OPTIMIZERS",
    "make_optimizer",
    "DigitsTask",
    "digit_tasks",
    "resize_bilinear",
    "METHOD_KINDS",
    "Method",
    "parse_method",
    "BackwardPlan",
    "build_plan",
    "layer_flops",
    "TrainConfig",
    "GradientChecks",
    "TrainResult",
    "evaluate",
    "batch_indices",
    "train",
]
