"""Real images for end-to-end experiments, from matplotlib's bundled sample data.

Nothing is downloaded: the pictures are the raster samples shipped inside
matplotlib (``mpl-data/sample_data``), read with :func:`matplotlib.image.imread`
(which uses Pillow, a matplotlib dependency).  :func:`image_batch` cuts them
into a deterministic batch of random square crops, resized by exact area
averaging and randomly flipped, normalized per channel; the label of a crop is
the index of the picture it came from.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_SAMPLE_IMAGES", "ImageBatch", "sample_images", "image_batch", "area_resize"]

#: Raster samples bundled with matplotlib (>= 3.7) that :func:`sample_images` tries, in order.
DEFAULT_SAMPLE_IMAGES = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")


def _sample_path(name: str) -> Path | None:
    import matplotlib.cbook as cbook  # noqa: PLC0415 - matplotlib is optional, loaded only to read pictures

    try:
        path = Path(cbook.get_sample_data(name, asfileobj=False))
    except (OSError, ValueError):  # pragma: no cover - depends on the matplotlib build
        return None
    return path if path.is_file() else None


@functools.lru_cache(maxsize=None)
def _load_rgb(name: str, background: float) -> np.ndarray | None:
    import matplotlib.image as mimage  # noqa: PLC0415 - matplotlib is optional, loaded only to read pictures

    path = _sample_path(name)
    if path is None:
        return None
    a = np.asarray(mimage.imread(str(path)))
    if a.dtype == np.uint8:
        a = a.astype(np.float64) / 255.0
    elif a.dtype == np.uint16:  # pragma: no cover - no such sample today
        a = a.astype(np.float64) / 65535.0
    else:
        a = a.astype(np.float64)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 4:  # composite RGBA over a uniform background
        alpha = a[:, :, 3:4]
        a = a[:, :, :3] * alpha + background * (1.0 - alpha)
    a = np.ascontiguousarray(a[:, :, :3])
    a.setflags(write=False)
    return a


def sample_images(names=DEFAULT_SAMPLE_IMAGES, *, missing="skip", background=1.0):
    """Load matplotlib's bundled sample pictures as RGB arrays.

    Parameters
    ----------
    names : sequence of str, optional
        File names inside ``mpl-data/sample_data``; default
        :data:`DEFAULT_SAMPLE_IMAGES` (``grace_hopper.jpg``,
        ``Minduka_Present_Blue_Pack.png``, ``logo2.png``).
    missing : {"skip", "raise"}, optional
        What to do with a name that this matplotlib does not ship.  Default
        ``"skip"``; at least one picture must load either way.
    background : float, optional
        Gray level in [0, 1] that RGBA pictures are composited over
        (``rgb * alpha + background * (1 - alpha)``); default 1.0 (white).

    Returns
    -------
    dict of str to ndarray, each of shape (H, W, 3), float64 in [0, 1]
        In the order of ``names``; the arrays are read-only (cached).

    Raises
    ------
    FileNotFoundError
        If no picture could be loaded, or one is missing with ``missing="raise"``.
    ValueError
        On an unknown ``missing`` or a ``background`` outside [0, 1].

    Examples
    --------
    >>> from analysis.images import sample_images
    >>> imgs = sample_images()
    >>> imgs["grace_hopper.jpg"].shape
    (600, 512, 3)
    """
    if missing not in ("skip", "raise"):
        raise ValueError(f"missing must be 'skip' or 'raise', got {missing!r}")
    background = float(background)
    if not 0.0 <= background <= 1.0:
        raise ValueError(f"background must be in [0, 1], got {background}")
    if isinstance(names, str):
        names = (names,)
    out = {}
    for name in names:
        a = _load_rgb(str(name), background)
        if a is None:
            if missing == "raise":
                raise FileNotFoundError(f"matplotlib ships no sample image {name!r}")
            continue
        out[str(name)] = a
    if not out:
        raise FileNotFoundError(f"none of the sample images {tuple(names)} is shipped with this matplotlib")
    return out


def _area_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix averaging source pixels over each destination pixel's footprint."""
    edges = np.arange(dst + 1) * (src / dst)  # destination pixel i covers [edges[i], edges[i+1])
    lo = np.arange(src)
    overlap = np.clip(
        np.minimum(edges[1:, None], lo[None, :] + 1.0) - np.maximum(edges[:-1, None], lo[None, :]), 0.0, None
    )
    return overlap / overlap.sum(axis=1, keepdims=True)


def area_resize(image, size):
    """Resize an image by exact area averaging (box filter).

    Each output pixel is the mean of the input over its footprint, with
    fractional pixel overlaps weighted; an integer downscale factor is plain
    block averaging, and upscaling repeats (box-interpolates) pixels.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
    size : int or (int, int)
        Output ``(height, width)`` (a single int for a square).

    Returns
    -------
    ndarray, shape (size_h, size_w) or (size_h, size_w, C), float64

    Raises
    ------
    ValueError
        On a non-positive ``size``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.images import area_resize
    >>> area_resize(np.arange(16.0).reshape(4, 4), 2)
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    >>> area_resize(np.arange(3.0).reshape(1, 3), (1, 2))  # fractional footprints
    array([[0.33333333, 1.66666667]])
    """
    a = np.asarray(image, dtype=np.float64)
    sh, sw = (size, size) if np.ndim(size) == 0 else tuple(size)
    if sh < 1 or sw < 1:
        raise ValueError(f"size must be positive, got {size}")
    rh = _area_matrix(a.shape[0], int(sh))
    rw = _area_matrix(a.shape[1], int(sw))
    out = np.tensordot(rh, a, axes=(1, 0))  # (sh, W, ...)
    out = np.tensordot(rw, out, axes=(1, 1))  # (sw, sh, ...)
    return np.ascontiguousarray(np.swapaxes(out, 0, 1))


@dataclass(frozen=True)
class ImageBatch:
    """A deterministic batch of crops of real pictures.

    Unpacks as ``images, labels = batch``.

    Attributes
    ----------
    images : ndarray, shape (B, 3, size, size)
        Normalized per channel over the batch (mean 0, standard deviation 1).
    labels : ndarray of int64, shape (B,)
        Index into ``names`` of the picture each crop came from.
    names : tuple of str
        The pictures used (the classes).
    crops : tuple of dict
        Per crop: ``source`` (label), ``top``, ``left``, ``side`` (square
        crop in source pixels) and ``flipped`` (horizontal flip).
    mean, std : ndarray, shape (3,)
        Per-channel statistics (of the [0, 1] RGB crops) used to normalize.

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> batch = image_batch(batch=3, size=16)
    >>> images, labels = batch
    >>> batch.names[0], batch.num_classes, sorted(labels.tolist())
    ('grace_hopper.jpg', 3, [0, 1, 2])
    >>> sorted(batch.crops[0])
    ['flipped', 'left', 'side', 'source', 'top']
    """

    images: np.ndarray
    labels: np.ndarray
    names: tuple
    crops: tuple = field(repr=False)
    mean: np.ndarray = field(repr=False)
    std: np.ndarray = field(repr=False)

    def __iter__(self):
        return iter((self.images, self.labels))

    @property
    def num_classes(self) -> int:
        """Number of pictures (classes)."""
        return len(self.names)


def image_batch(batch=8, size=64, seed=0, dtype=np.float32, *, names=DEFAULT_SAMPLE_IMAGES, scale=(0.25, 1.0),
                flip=True):
    """Random square crops of real pictures, as a normalized NCHW batch.

    Crop ``b`` comes from picture ``labels[b]``; the labels cycle through the
    pictures (balanced classes) in an order shuffled with the seed.  Each crop
    is a square whose side is a uniform fraction in ``scale`` of the picture's
    shorter side, at a uniform position, resized to ``size x size`` by
    :func:`area_resize`, and flipped left-right with probability 1/2.  All
    randomness comes from ``numpy.random.default_rng(seed)``, so the result
    is a pure function of the arguments (and of matplotlib's sample files).

    Parameters
    ----------
    batch : int, optional
        Number of crops ``B``; default 8.
    size : int, optional
        Output side; default 64.
    seed : int, optional
        Default 0.
    dtype : floating dtype, optional
        Default float32.
    names : sequence of str, optional
        Pictures to use (see :func:`sample_images`; missing ones are skipped).
    scale : (float, float), optional
        Range of the crop side as a fraction of the shorter picture side;
        default (0.25, 1.0).
    flip : bool, optional
        Random horizontal flips; default True.

    Returns
    -------
    ImageBatch
        ``images`` (B, 3, size, size) of ``dtype`` with per-channel mean 0 and
        standard deviation 1 over the batch; ``labels`` (B,) int64.

    Raises
    ------
    ValueError
        On a non-positive ``batch`` or ``size``, a bad ``scale`` or a
        non-floating ``dtype``.

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> images, labels = image_batch(batch=4, size=32, seed=1)
    >>> images.shape, images.dtype, labels.shape
    ((4, 3, 32, 32), dtype('float32'), (4,))
    """
    batch, size = int(batch), int(size)
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    lo, hi = (float(s) for s in scale)
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"scale must satisfy 0 < scale[0] <= scale[1] <= 1, got {scale}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a real floating dtype, got {dtype}")
    pictures = sample_images(names)
    keys = tuple(pictures)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(batch) % len(keys)).astype(np.int64)
    out = np.empty((batch, 3, size, size), dtype=np.float64)
    crops = []
    for b, label in enumerate(labels):
        pic = pictures[keys[label]]
        h, w = pic.shape[:2]
        short = min(h, w)
        side = int(np.clip(round(rng.uniform(lo, hi) * short), 1, short))
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        flipped = bool(flip) and bool(rng.random() < 0.5)
        crop = area_resize(pic[top : top + side, left : left + side], size)
        if flipped:
            crop = crop[:, ::-1]
        out[b] = crop.transpose(2, 0, 1)
        crops.append({"source": int(label), "top": top, "left": left, "side": side, "flipped": flipped})
    mean = out.mean(axis=(0, 2, 3))
    std = out.std(axis=(0, 2, 3))
    std = np.where(std > 0, std, 1.0)
    images = ((out - mean[:, None, None]) / std[:, None, None]).astype(dtype)
    return ImageBatch(images, labels, keys, tuple(crops), mean, std)
