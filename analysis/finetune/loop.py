"""The training loop: mini-batches, a fixed step budget, held-out evaluation and gradient checks.

:func:`train` runs one fine-tuning (or pretraining) run of a
:class:`~analysis.vit.TinyViT` with the backward pass of a
:class:`~analysis.finetune.BackwardPlan`: seeded shuffling, an optimizer from
:mod:`analysis.finetune.optim`, no early stopping.  Along the way it records
the training loss of every step, the test accuracy at fixed intervals, the
wall time of every backward pass and, every ``check_every`` steps, how far the
plan's gradients are from the exact ones at the current weights (and how much
of each output gradient's energy the selection keeps).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..metrics import cosine, relative_error
from .optim import OPTIMIZERS, Schedule, make_optimizer

__all__ = ["TrainConfig", "GradientChecks", "TrainResult", "evaluate", "batch_indices", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run.

    Attributes
    ----------
    steps : int
        Optimizer steps (a fixed budget; default 300).
    batch_size : int
        Default 32.
    optimizer : {"adamw", "sgd"}
        Default ``"adamw"``.
    lr : float
        Peak learning rate (default 1e-3).
    weight_decay : float
        Applied to the linear weights only (default 0.05).
    momentum : float
        SGD momentum (default 0.9).
    warmup : int
        Linear warm-up steps (default 20).
    decay : {"cosine", "linear", "constant"}
        Learning-rate decay after the warm-up (default ``"cosine"``).
    eval_every : int
        Test accuracy every this many steps, and at the start and the end (default 50).
    check_every : int
        Gradient checks every this many steps from step 0; 0 (default) for none.
    seed : int
        Seed of the mini-batch order (default 0).

    Examples
    --------
    >>> from analysis.finetune import TrainConfig
    >>> cfg = TrainConfig(steps=10, warmup=2)
    >>> cfg.schedule()(1), cfg.to_dict()["optimizer"]
    (0.001, 'adamw')
    """

    steps: int = 300
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup: int = 20
    decay: str = "cosine"
    eval_every: int = 50
    check_every: int = 0
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if int(self.check_every) != self.check_every or self.check_every < 0:
            raise ValueError(f"check_every must be a non-negative integer, got {self.check_every!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        self.schedule()  # validates lr, warmup, decay

    def schedule(self) -> Schedule:
        """The learning-rate :class:`~analysis.finetune.Schedule` of the run."""
        return Schedule(self.lr, warmup=min(self.warmup, self.steps), total=self.steps, decay=self.decay)

    def to_dict(self) -> dict:
        """Plain dict of the fields."""
        return asdict(self)


@dataclass
class GradientChecks:
    """Gradients of a run against the exact ones, at the current weights, every few steps.

    Attributes
    ----------
    steps : list of int
        Steps at which the checks ran (before that step's update).
    rel_error, cosine : dict of str to list of float
        Per adapted linear layer, of its weight gradient; key ``"all"``: of
        every trained parameter's gradient, concatenated.
    energy_kept : dict of str to list of float
        Per approximated layer, the energy of its exact output gradient that
        its per-patch subspace keeps.

    Examples
    --------
    >>> from analysis.finetune import GradientChecks
    >>> GradientChecks([0], {"all": [0.1]}, {"all": [0.99]}, {}).to_dict()["rel_error"]
    {'all': [0.1]}
    """

    steps: list = field(default_factory=list)
    rel_error: dict = field(default_factory=dict)
    cosine: dict = field(default_factory=dict)
    energy_kept: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain dict of the fields."""
        return asdict(self)


@dataclass
class TrainResult:
    """What :func:`train` records.

    Attributes
    ----------
    loss_curve : list of float
        Training loss of every step's mini-batch (before its update).
    eval_steps : list of int
        Steps after which the test set was evaluated (0: before training).
    test_accuracy_curve, test_loss_curve : list of float
        Test accuracy and loss at ``eval_steps``.
    backward_seconds : list of float
        Wall time of every backward pass.
    checks : GradientChecks

    Examples
    --------
    >>> from analysis.finetune import GradientChecks, TrainResult
    >>> r = TrainResult([1.0, 0.5], [0, 2], [0.2, 0.9], [1.6, 0.4], [0.01, 0.01], GradientChecks())
    >>> r.test_accuracy, r.to_dict()["backward_seconds_per_step"]
    (0.9, 0.01)
    """

    loss_curve: list
    eval_steps: list
    test_accuracy_curve: list
    test_loss_curve: list
    backward_seconds: list = field(repr=False)
    checks: GradientChecks = field(repr=False)

    @property
    def test_accuracy(self) -> float:
        """Final test accuracy."""
        return self.test_accuracy_curve[-1]

    def to_dict(self) -> dict:
        """Curves, the final accuracy, the median backward time per step and the checks."""
        return {
            "test_accuracy": self.test_accuracy,
            "loss_curve": list(self.loss_curve),
            "eval_steps": list(self.eval_steps),
            "test_accuracy_curve": list(self.test_accuracy_curve),
            "test_loss_curve": list(self.test_loss_curve),
            "backward_seconds_per_step": float(np.median(self.backward_seconds)) if self.backward_seconds else None,
            "gradient_checks": self.checks.to_dict(),
        }


def evaluate(model, images, labels, *, batch_size=256):
    """Mean cross-entropy and accuracy of a model on a labelled set.

    Parameters
    ----------
    model : analysis.vit.TinyViT
    images : ndarray, shape (N, in_chans, S, S)
    labels : ndarray of int, shape (N,)
    batch_size : int, optional
        Images per forward pass (default 256).

    Returns
    -------
    loss, accuracy : float

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.finetune import evaluate
    >>> from analysis.vit import TinyViT, ViTConfig
    >>> model = TinyViT(ViTConfig(image_size=8, patch_size=2, in_chans=1, dim=8, depth=1, heads=2, num_classes=2))
    >>> loss, acc = evaluate(model, np.zeros((5, 1, 8, 8)), np.array([0, 1, 0, 1, 0]))
    >>> acc in (0.4, 0.6)
    True
    """
    labels = np.asarray(labels)
    total, correct = 0.0, 0
    for lo in range(0, labels.size, batch_size):
        loss, cache = model.forward(images[lo:lo + batch_size], labels[lo:lo + batch_size])
        total += loss * (min(lo + batch_size, labels.size) - lo)
        correct += int(np.sum(np.argmax(cache.logits, axis=1) == labels[lo:lo + batch_size]))
    return total / labels.size, correct / labels.size


def batch_indices(n, batch_size, steps, seed):
    """Mini-batch indices: consecutive chunks of seeded permutations of ``range(n)``.

    Parameters
    ----------
    n : int
        Training-set size.
    batch_size : int
    steps : int
        Number of batches.
    seed : int
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    ndarray of int, shape (steps, batch_size)
        Every example appears once per epoch; a batch may straddle two epochs.

    Examples
    --------
    >>> from analysis.finetune import batch_indices
    >>> idx = batch_indices(6, 4, 3, seed=0)
    >>> idx.shape, sorted(idx.ravel()[:6].tolist())
    ((3, 4), [0, 1, 2, 3, 4, 5])
    """
    rng = np.random.default_rng(seed)
    need = steps * batch_size
    order = np.concatenate([rng.permutation(n) for _ in range(-(-need // n))])
    return order[:need].reshape(steps, batch_size)


def _check(model, plan, cache, approx, checks):
    """Compare ``approx`` (the plan's BackwardResult) with the exact backward at the current weights."""
    exact = model.backward(cache, capture=True)
    trained = plan.trainable

    def record(bucket, key, value):
        bucket.setdefault(key, []).append(float(value))

    flat_a = np.concatenate([approx.grads[k].ravel() for k in trained])
    flat_e = np.concatenate([exact.grads[k].ravel() for k in trained])
    record(checks.rel_error, "all", relative_error(flat_a, flat_e))
    record(checks.cosine, "all", cosine(flat_a, flat_e))
    for name in plan.adapted:
        a, e = approx.grads[name + ".weight"], exact.grads[name + ".weight"]
        record(checks.rel_error, name, relative_error(a, e))
        record(checks.cosine, name, cosine(a, e))
    for name in plan.approximated:
        if name in plan.projectors:  # the published methods keep no per-patch subspace
            record(checks.energy_kept, name, plan.energy_kept(name, exact.captured[name].grad_y,
                                                              model.layers[name]))


def train(model, plan, task, config, *, bar=None) -> TrainResult:
    """Train ``model`` in place on ``task`` with ``plan``'s backward pass.

    Parameters
    ----------
    model : analysis.vit.TinyViT
        Its parameters are updated in place.
    plan : BackwardPlan
        From :func:`~analysis.finetune.build_plan` for this model.
    task : DigitsTask
        Or anything with ``train_images``, ``train_labels``, ``test_images``
        and ``test_labels``.
    config : TrainConfig
    bar : tqdm.tqdm, optional
        A progress bar advanced by one per step.

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> from analysis.finetune import TrainConfig, build_plan, digit_tasks, train
    >>> from analysis.vit import TinyViT, ViTConfig
    >>> pre, _ = digit_tasks(image_size=8)
    >>> model = TinyViT(ViTConfig(image_size=8, patch_size=1, in_chans=1, dim=8, depth=1, heads=2, num_classes=5))
    >>> res = train(model, build_plan("lp_l1:4", model, batch=16), pre,
    ...             TrainConfig(steps=4, batch_size=16, eval_every=2, check_every=2))
    >>> len(res.loss_curve), res.eval_steps, res.checks.steps
    (4, [0, 2, 4], [0, 2])
    """
    params = {k: model.params[k] for k in plan.trainable}
    decay = [k for k, v in params.items() if k.endswith(".weight") and v.ndim == 2]
    opt = make_optimizer(config.optimizer, params, config.schedule(), weight_decay=config.weight_decay,
                         decay=decay, momentum=config.momentum)
    x, y = task.train_images, np.asarray(task.train_labels)
    batches = batch_indices(y.size, config.batch_size, config.steps, config.seed)
    losses, seconds = [], []
    eval_steps, accs, test_losses = [], [], []
    checks = GradientChecks()

    def run_eval(step):
        loss, acc = evaluate(model, task.test_images, task.test_labels)
        eval_steps.append(step)
        test_losses.append(float(loss))
        accs.append(float(acc))

    run_eval(0)
    for step, idx in enumerate(batches):
        loss, cache = model.forward(x[idx], y[idx])
        if not np.isfinite(loss):
            raise FloatingPointError(f"the training loss is {loss} at step {step}; lower the learning rate")
        t0 = time.perf_counter()
        res = plan.backward(model, cache)
        seconds.append(time.perf_counter() - t0)
        if config.check_every and step % config.check_every == 0:
            checks.steps.append(step)
            _check(model, plan, cache, res, checks)
        opt.step(res.grads)
        losses.append(float(loss))
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            run_eval(step + 1)
        if bar is not None:
            bar.update(1)
    return TrainResult(losses, eval_steps, accs, test_losses, seconds, checks)
