"""Real labelled images for pretraining and adaptation: scikit-learn's handwritten digits.

scikit-learn ships the 1,797 8 x 8 handwritten digits of the UCI optical
recognition data set (:func:`sklearn.datasets.load_digits`; nothing is
downloaded).  :func:`digit_tasks` splits them into two tasks with disjoint
classes, by default a pretraining task on the digits 0-4 and an adaptation
task on the digits 5-9, each with a fixed stratified train/test split, and
resizes the images bilinearly so that a ViT sees a token grid large enough for
LBP-WHT patches (32 x 32 pixels and 2 x 2 pixel patches give 16 x 16 tokens:
four 8 x 8 LBP patches).

scikit-learn is an optional dependency (``pip install lbpcore[finetune]``);
it is imported when the data are loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DigitsTask", "digit_tasks", "resize_bilinear"]

#: Side of the images scikit-learn ships.
DIGITS_SIZE = 8


def _interp_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix of linear interpolation with half-pixel centres, edges clamped."""
    u = np.clip((np.arange(dst) + 0.5) * (src / dst) - 0.5, 0.0, src - 1.0)
    lo = np.floor(u).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    w = u - lo
    m = np.zeros((dst, src))
    np.add.at(m, (np.arange(dst), lo), 1.0 - w)
    np.add.at(m, (np.arange(dst), hi), w)
    return m


def resize_bilinear(images, size: int) -> np.ndarray:
    """Resize square images bilinearly (half-pixel centres, as ``align_corners=False``).

    Parameters
    ----------
    images : array_like, shape (..., H, W)
    size : int
        Output side.

    Returns
    -------
    ndarray of float64, shape (..., size, size)
        Every output pixel is a convex combination of at most four input
        pixels, so constant images stay constant.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.finetune import resize_bilinear
    >>> resize_bilinear(np.array([[0.0, 4.0]]), 4)[0].tolist()
    [0.0, 1.0, 3.0, 4.0]
    >>> resize_bilinear(np.ones((2, 8, 8)), 32).shape
    (2, 32, 32)
    """
    a = np.asarray(images, dtype=np.float64)
    size = int(size)
    if a.ndim < 2 or size < 1:
        raise ValueError(f"need images of shape (..., H, W) and a positive size, got {a.shape} and {size}")
    rh = _interp_matrix(a.shape[-2], size)
    rw = _interp_matrix(a.shape[-1], size)
    return np.ascontiguousarray(rh @ a @ rw.T)


@dataclass(frozen=True)
class DigitsTask:
    """One classification task: train and test images of a few digit classes.

    Attributes
    ----------
    name : str
        ``"pretrain"`` or ``"adapt"``.
    digits : tuple of int
        The digits, in label order: label ``k`` is digit ``digits[k]``.
    train_images, test_images : ndarray, shape (N, 1, S, S)
        Standardized images (pretraining-set mean and standard deviation).
    train_labels, test_labels : ndarray of int64, shape (N,)
        Labels ``0 .. len(digits) - 1``.

    Examples
    --------
    >>> from analysis.finetune import digit_tasks
    >>> pre, ada = digit_tasks(image_size=16)
    >>> ada.digits, ada.num_classes, ada.train_images.shape[1:]
    ((5, 6, 7, 8, 9), 5, (1, 16, 16))
    >>> ada.to_dict()["train"], ada.to_dict()["test"]
    (672, 224)
    """

    name: str
    digits: tuple
    train_images: np.ndarray = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.digits)

    def to_dict(self) -> dict:
        """Sizes and classes (no arrays)."""
        return {
            "name": self.name,
            "digits": [int(d) for d in self.digits],
            "train": int(self.train_labels.size),
            "test": int(self.test_labels.size),
            "image_size": int(self.train_images.shape[-1]),
        }


def _check_digits(digits, name):
    d = tuple(int(v) for v in digits)
    if not d or len(set(d)) != len(d) or not all(0 <= v <= 9 for v in d):
        raise ValueError(f"{name} must be distinct digits 0-9, got {digits!r}")
    return d


def digit_tasks(image_size=32, *, pretrain_digits=(0, 1, 2, 3, 4), adapt_digits=(5, 6, 7, 8, 9),
                test_fraction=0.25, split_seed=0, dtype="float32"):
    """The pretraining and the adaptation task, from scikit-learn's digits.

    Parameters
    ----------
    image_size : int, optional
        Side after bilinear resizing (default 32).
    pretrain_digits, adapt_digits : sequence of int, optional
        Disjoint classes of the two tasks (default 0-4 and 5-9).
    test_fraction : float, optional
        Held-out share of each task, stratified by class (default 0.25).
    split_seed : int, optional
        Seed of the fixed train/test split (default 0).
    dtype : str, optional
        Image dtype (default ``"float32"``).

    Returns
    -------
    pretrain, adapt : DigitsTask
        Pixels are scaled to ``[0, 1]``, resized, then standardized with the
        mean and standard deviation of the pretraining training images (the
        statistics the pretrained network saw).

    Raises
    ------
    ImportError
        Without scikit-learn.
    ValueError
        On overlapping or invalid digits, a bad size or fraction.

    Examples
    --------
    >>> from analysis.finetune import digit_tasks
    >>> pre, ada = digit_tasks(image_size=16, pretrain_digits=(0, 1), adapt_digits=(2,))
    >>> pre.num_classes, sorted(set(pre.train_labels.tolist())), abs(float(pre.train_images.mean())) < 1e-6
    (2, [0, 1], True)
    """
    from sklearn.datasets import load_digits  # noqa: PLC0415  (optional dependency)
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    pre_d = _check_digits(pretrain_digits, "pretrain_digits")
    ada_d = _check_digits(adapt_digits, "adapt_digits")
    if set(pre_d) & set(ada_d):
        raise ValueError(f"pretrain_digits and adapt_digits overlap: {sorted(set(pre_d) & set(ada_d))}")
    if int(image_size) != image_size or image_size < DIGITS_SIZE:
        raise ValueError(f"image_size must be an integer >= {DIGITS_SIZE}, got {image_size!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    bunch = load_digits()
    images = resize_bilinear(bunch.images / 16.0, int(image_size))[:, None]  # (N, 1, S, S)
    target = bunch.target.astype(np.int64)

    def split(digits):
        idx = np.flatnonzero(np.isin(target, digits))
        train, test = train_test_split(idx, test_size=test_fraction, stratify=target[idx], random_state=split_seed)
        return np.sort(train), np.sort(test)

    parts = {"pretrain": (pre_d, *split(pre_d)), "adapt": (ada_d, *split(ada_d))}
    ref = images[parts["pretrain"][1]]
    mean, std = float(ref.mean()), float(ref.std())
    std = std if std > 0 and math.isfinite(std) else 1.0
    tasks = []
    for name, (digits, train, test) in parts.items():
        relabel = np.full(10, -1, dtype=np.int64)
        relabel[list(digits)] = np.arange(len(digits))
        tasks.append(DigitsTask(
            name, digits,
            ((images[train] - mean) / std).astype(dtype), relabel[target[train]],
            ((images[test] - mean) / std).astype(dtype), relabel[target[test]],
        ))
    return tuple(tasks)
