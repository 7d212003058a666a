"""Fine-tuning the NumPy ViT with LBP-WHT and its baselines: does it end up as good as full backpropagation?

* :mod:`analysis.finetune.optim` – :class:`AdamW`, :class:`SGD` and the
  warm-up :class:`Schedule`;
* :mod:`analysis.finetune.data` – the pretraining and adaptation tasks from
  scikit-learn's handwritten digits (:func:`digit_tasks`).

Every public name is importable from :mod:`analysis.finetune` itself.
"""

from .data import DigitsTask, digit_tasks, resize_bilinear
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
]
