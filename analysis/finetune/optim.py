"""Optimizers for the NumPy ViT: AdamW and SGD with momentum, and a warm-up schedule.

The update rules are PyTorch's (:class:`torch.optim.AdamW`,
:class:`torch.optim.SGD`) so that a run here reads like a run there: AdamW
decays the weights apart from the adaptive step, SGD adds the weight decay to
the gradient before the momentum.  Parameters are a ``dict`` of NumPy arrays
updated in place (for example :attr:`analysis.vit.TinyViT.params`); the
learning rate of each step comes from a :class:`Schedule`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Schedule", "Optimizer", "AdamW", "SGD", "OPTIMIZERS", "make_optimizer"]

#: Names accepted by :func:`make_optimizer`.
OPTIMIZERS = ("adamw", "sgd")

_DECAYS = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class Schedule:
    """Learning rate per step: linear warm-up, then cosine, linear or no decay.

    Attributes
    ----------
    lr : float
        Peak learning rate, reached at the end of the warm-up.
    warmup : int
        Warm-up steps: step ``t < warmup`` (0-based) uses ``lr (t + 1) / warmup``.
    total : int or None
        Steps of the whole run; the decay starts right after the warm-up and
        reaches ``min_ratio lr`` at the last step, ``total - 1``.  Required by the ``"cosine"`` and ``"linear"`` decays.
    decay : {"cosine", "linear", "constant"}
        Shape after the warm-up (default ``"cosine"``).
    min_ratio : float
        Final learning rate as a fraction of ``lr`` (default 0).

    Examples
    --------
    >>> from analysis.finetune import Schedule
    >>> s = Schedule(1.0, warmup=2, total=6)
    >>> [round(s(t), 3) for t in range(6)]
    [0.5, 1.0, 0.854, 0.5, 0.146, 0.0]
    >>> Schedule(0.1, decay="constant")(100)
    0.1
    """

    lr: float
    warmup: int = 0
    total: int | None = None
    decay: str = "cosine"
    min_ratio: float = 0.0

    def __post_init__(self):
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if int(self.warmup) != self.warmup or self.warmup < 0:
            raise ValueError(f"warmup must be a non-negative integer, got {self.warmup!r}")
        if self.decay not in _DECAYS:
            raise ValueError(f"decay must be one of {', '.join(_DECAYS)}, got {self.decay!r}")
        if self.decay != "constant" and (self.total is None or int(self.total) < 1):
            raise ValueError(f"a {self.decay} decay needs total >= 1 steps, got {self.total!r}")
        if not 0.0 <= self.min_ratio <= 1.0:
            raise ValueError(f"min_ratio must be in [0, 1], got {self.min_ratio!r}")

    def __call__(self, step) -> float:
        """Learning rate of 0-based step ``step``."""
        t = int(step)
        if t < self.warmup:
            return self.lr * (t + 1) / self.warmup
        if self.decay == "constant":
            return float(self.lr)
        span = max(int(self.total) - self.warmup, 1)
        progress = min(max((t - self.warmup + 1) / span, 0.0), 1.0)
        if self.decay == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            factor = 1.0 - progress
        return self.lr * (self.min_ratio + (1.0 - self.min_ratio) * factor)


class Optimizer:
    """Base class: a set of parameters updated in place from gradients, one step at a time.

    Parameters
    ----------
    params : dict of str to ndarray
        Parameters to train, updated in place by :meth:`step`.
    schedule : Schedule or float
        Learning rate per step (a float is a constant rate).
    weight_decay : float, optional
        Default 0.
    decay : iterable of str, optional
        Names of the parameters that are decayed (default all of ``params``);
        biases and LayerNorm parameters are usually left out.

    Attributes
    ----------
    steps : int
        Steps taken so far.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.finetune import SGD
    >>> p = {"w": np.array([1.0, 2.0])}
    >>> opt = SGD(p, 0.5, momentum=0.0)
    >>> opt.step({"w": np.array([1.0, -1.0])}), p["w"].tolist(), opt.steps
    (0.5, [0.5, 2.5], 1)
    """

    def __init__(self, params, schedule, *, weight_decay=0.0, decay=None):
        self.params = params
        self.schedule = schedule if isinstance(schedule, Schedule) else Schedule(float(schedule), decay="constant")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be a non-negative number, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        self.decay = frozenset(params) if decay is None else frozenset(decay) & frozenset(params)
        self.steps = 0

    def step(self, grads) -> float:
        """Update every parameter from its gradient.

        Parameters
        ----------
        grads : mapping of str to ndarray
            A gradient for every parameter (extra entries are ignored).

        Returns
        -------
        float
            The learning rate used.
        """
        missing = [k for k in self.params if k not in grads]
        if missing:
            raise ValueError(f"no gradient for parameters {missing}")
        lr = self.schedule(self.steps)
        self.steps += 1
        for name, p in self.params.items():
            g = np.asarray(grads[name])
            if g.shape != p.shape:
                raise ValueError(f"gradient of {name!r} has shape {g.shape}, parameter {p.shape}")
            self._update(name, p, g.astype(p.dtype, copy=False), lr, self.weight_decay if name in self.decay else 0.0)
        return lr

    def _update(self, name, p, g, lr, wd):  # pragma: no cover - abstract
        raise NotImplementedError


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as :class:`torch.optim.AdamW`.

    At step ``t`` (1-based), with learning rate ``lr`` and decay ``wd``::

        p <- p (1 - lr wd)
        m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
        p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    Parameters
    ----------
    params, schedule, weight_decay, decay
        See :class:`Optimizer`; ``weight_decay`` defaults to 0.01 here.
    betas : (float, float), optional
        ``(b1, b2)``, default ``(0.9, 0.999)``.
    eps : float, optional
        Default 1e-8.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.finetune import AdamW
    >>> p = {"w": np.array([1.0, -1.0])}
    >>> AdamW(p, 0.1, weight_decay=0.0).step({"w": np.array([3.0, -0.5])})  # first step: lr sign(g)
    0.1
    >>> p["w"].round(6).tolist()
    [0.9, -0.9]
    """

    def __init__(self, params, schedule, *, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, decay=None):
        super().__init__(params, schedule, weight_decay=weight_decay, decay=decay)
        b1, b2 = (float(b) for b in betas)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        self.betas, self.eps = (b1, b2), float(eps)
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def _update(self, name, p, g, lr, wd):
        b1, b2 = self.betas
        t = self.steps
        if wd:
            p *= 1.0 - lr * wd
        m, v = self.m[name], self.v[name]
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * (g * g)
        denom = np.sqrt(v / (1.0 - b2**t)) + self.eps
        p -= (lr / (1.0 - b1**t)) * m / denom


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as :class:`torch.optim.SGD`.

    With learning rate ``lr``, decay ``wd`` and momentum ``mu`` (no dampening)::

        g <- g + wd p
        b <- g at the first step, else mu b + g
        p <- p - lr (g + mu b if nesterov else b)

    Parameters
    ----------
    params, schedule, weight_decay, decay
        See :class:`Optimizer`.
    momentum : float, optional
        ``mu``, default 0.9 (0 is plain SGD).
    nesterov : bool, optional
        Nesterov momentum (default False).

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.finetune import SGD
    >>> p = {"w": np.array([1.0])}
    >>> opt = SGD(p, 0.1, momentum=0.5)
    >>> for _ in range(2):
    ...     _ = opt.step({"w": np.array([1.0])})
    >>> round(float(p["w"][0]), 6)  # 1 - 0.1 (1) - 0.1 (0.5 + 1)
    0.75
    """

    def __init__(self, params, schedule, *, momentum=0.9, nesterov=False, weight_decay=0.0, decay=None):
        super().__init__(params, schedule, weight_decay=weight_decay, decay=decay)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if nesterov and not momentum:
            raise ValueError("nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.buffers = {}

    def _update(self, name, p, g, lr, wd):
        if wd:
            g = g + wd * p
        mu = self.momentum
        if mu:
            buf = self.buffers.get(name)
            if buf is None:
                buf = self.buffers[name] = g.copy()
            else:
                buf *= mu
                buf += g
            g = g + mu * buf if self.nesterov else buf
        p -= lr * g


def make_optimizer(kind, params, schedule, *, weight_decay=0.0, decay=None, momentum=0.9):
    """An :class:`AdamW` or :class:`SGD` by name.

    Parameters
    ----------
    kind : {"adamw", "sgd"}
    params, schedule, weight_decay, decay
        See :class:`Optimizer`.
    momentum : float, optional
        SGD momentum (default 0.9); ignored by AdamW.

    Returns
    -------
    Optimizer

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.finetune import make_optimizer
    >>> type(make_optimizer("sgd", {"w": np.zeros(2)}, 0.1)).__name__
    'SGD'
    """
    if kind == "adamw":
        return AdamW(params, schedule, weight_decay=weight_decay, decay=decay)
    if kind == "sgd":
        return SGD(params, schedule, momentum=momentum, weight_decay=weight_decay, decay=decay)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {kind!r}")
