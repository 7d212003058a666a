"""Fine-tuning the NumPy ViT with LBP-WHT and its baselines: does it end up as good as full backpropagation?

* :mod:`analysis.finetune.optim` – :class:`AdamW`, :class:`SGD` and the
  warm-up :class:`Schedule`.

Every public name is importable from :mod:`analysis.finetune` itself.
"""

from .optim import OPTIMIZERS, SGD, AdamW, Optimizer, Schedule, make_optimizer

__all__ = [
    "Schedule",
    "Optimizer",
    "AdamW",
    "SGD",
    "OPTIMIZERS",
    "make_optimizer",
]
