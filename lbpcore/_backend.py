"""Array-namespace dispatch and dtype policy shared by every public function.

All computation goes through the array API standard namespace returned by
:func:`array_api_compat.array_namespace`, so one code path serves NumPy, CuPy,
array-api-strict and PyTorch.  Constant matrices (Walsh blocks, padding
operators) are built once in NumPy and converted to the caller's namespace,
dtype and device on first use by :func:`constant`, the one cache of converted
constants.
"""

from __future__ import annotations

import threading

import numpy as np
from array_api_compat import array_namespace, is_numpy_namespace
from array_api_compat import device as _device
from array_api_compat import numpy as compat_numpy

from ._validation import plain_array

__all__ = [
    "array_namespace",
    "as_float_array",
    "common_namespace",
    "constant",
    "numpy_constant",
    "device_of",
    "compat_namespace",
    "to_numpy",
]

_cache: dict = {}
_cache_lock = threading.Lock()
_CACHE_MAX = 1024


def device_of(x):
    """Return the device of ``x`` (``"cpu"`` for NumPy arrays)."""
    return _device(x)


def as_float_array(x, name: str, xp=None):
    """Validate ``x`` as a real floating array, returning ``(xp, x)``.

    Real floating arrays (float32, float64) pass through unchanged.  Integer
    arrays are promoted to the namespace's default real floating dtype
    (float64 for NumPy); this is the documented promotion.  Python sequences
    and scalars are converted with NumPy.  NumPy's special cases are made plain
    first (:func:`~lbpcore._validation.plain_array`: ``np.matrix`` becomes an
    ndarray, big-endian data native, masked arrays and ``None`` are refused).
    Booleans, complex numbers and anything else raise :class:`TypeError`
    naming ``name``.
    """
    x = plain_array(x, name)
    if xp is None:
        try:
            xp = array_namespace(x)
        except TypeError:
            if isinstance(x, (list, tuple, int, float)):
                x = np.asarray(x)
                xp = array_namespace(x)
            else:
                raise TypeError(
                    f"{name} must be an array (NumPy, CuPy or another array API "
                    f"array), got {type(x).__name__}"
                ) from None
    dt = x.dtype
    if xp.isdtype(dt, "real floating"):
        return xp, x
    if xp.isdtype(dt, "integral"):
        info = getattr(xp, "__array_namespace_info__", None)
        target = xp.float64
        if info is not None:
            try:
                target = info().default_dtypes(device=device_of(x))["real floating"]
            except Exception:  # pragma: no cover - very old namespaces
                target = xp.float64
        return xp, xp.astype(x, target)
    raise TypeError(
        f"{name} must have a real floating dtype (float32 or float64; integers are "
        f"promoted), got dtype {dt}"
    )


def common_namespace(named, optional=()):
    """Validate several named arrays that must share namespace, dtype and device.

    Parameters
    ----------
    named : sequence of (str, array or None)
        The first entry must be present.
    optional : collection of str
        Names that may be None (a missing bias); any other None is a TypeError.

    Returns
    -------
    xp, list of arrays (None entries preserved)
    """
    for n, a in named:
        if a is None and n not in optional:
            raise TypeError(f"{n} must be an array, got None")
    present = [(n, a) for n, a in named if a is not None]
    first_name, first = present[0]
    xp, first = as_float_array(first, first_name)
    out = []
    for n, a in named:
        if a is None:
            out.append(None)
            continue
        if a is present[0][1]:
            out.append(first)
            continue
        try:
            axp = array_namespace(a)
        except TypeError:
            axp = None
        if axp is None and isinstance(a, (list, tuple, int, float)):
            a = xp.asarray(np.asarray(a), device=device_of(first))
            axp = xp
        if axp is None:
            raise TypeError(f"{n} must be an array, got {type(a).__name__}")
        if axp is not xp:
            raise TypeError(
                f"{n} must come from the same array library as {first_name} "
                f"({xp.__name__}), got {axp.__name__}"
            )
        _, a = as_float_array(a, n, xp)
        if a.dtype != first.dtype:
            raise TypeError(
                f"{n} must have the same dtype as {first_name} ({first.dtype}), got {a.dtype}"
            )
        if device_of(a) != device_of(first):
            raise ValueError(
                f"{n} must be on the same device as {first_name} "
                f"({device_of(first)}), got {device_of(a)}"
            )
        out.append(a)
    return xp, out


def _hashable(value):
    """``value`` itself as a cache key, or its repr if it cannot be hashed (exotic devices)."""
    try:
        hash(value)
        return value
    except TypeError:  # pragma: no cover - unhashable device or dtype objects
        return repr(value)


def compat_namespace(xp):
    """Return the array-api-compat wrapper of a namespace given by the user.

    ``numpy``, ``cupy`` or ``torch`` passed as ``xp=`` are replaced by their
    standard-conforming wrappers (which accept ``device=``); ``None`` means NumPy.
    Namespaces that already conform are returned unchanged.
    """
    if xp is None:
        return compat_numpy
    try:
        return array_namespace(xp.asarray(0.0))
    except Exception:  # pragma: no cover - exotic namespaces
        return xp


def constant(key, builder, xp, dtype, device):
    """Return the NumPy array ``builder()`` converted to ``(xp, dtype, device)``, cached.

    ``key`` identifies the constant (it must be hashable and determine
    ``builder()`` completely).  NumPy results are read-only.  This is the one
    cache of converted constants of the package; the float64 operators behind
    the builders are cached by :func:`functools.lru_cache` where they are made.
    """
    ck = (key, xp.__name__, _hashable(dtype), _hashable(device))  # not str(dtype): microseconds per call
    hit = _cache.get(ck)
    if hit is not None:
        return hit
    arr = builder()
    if is_numpy_namespace(xp):
        out = np.array(arr, dtype=dtype, order="C")  # a copy: read-only without freezing ``arr``
        out.flags.writeable = False
    else:
        cxp = compat_namespace(xp)  # raw cupy/torch namespaces lack device=
        out = cxp.asarray(np.ascontiguousarray(arr), dtype=dtype, device=device)
    with _cache_lock:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[ck] = out
    return out


def to_numpy(a) -> np.ndarray:
    """Convert an array of any supported library to NumPy.

    The one conversion of the package and its analysis, public as
    :func:`lbpcore.testing.to_numpy`.

    Parameters
    ----------
    a : array
        NumPy, CuPy (copied to the host), array-api-strict (on any of its
        devices) or anything :func:`numpy.asarray` or DLPack accepts.

    Returns
    -------
    ndarray
        ``a`` itself when it is already a NumPy array.

    Examples
    --------
    >>> import array_api_strict as xps
    >>> from lbpcore.testing import to_numpy
    >>> to_numpy(xps.asarray([1.0, 2.0]))
    array([1., 2.])
    """
    if isinstance(a, np.ndarray):
        return a
    if type(a).__module__.startswith("cupy") and hasattr(a, "get"):
        return a.get()
    try:
        return np.asarray(a)
    except Exception:  # noqa: BLE001 - fall through to DLPack
        pass
    try:
        return np.from_dlpack(a)
    except Exception:
        if not hasattr(a, "to_device"):
            raise
        cpu = array_namespace(a).__array_namespace_info__().devices()[0]
        return np.from_dlpack(a.to_device(cpu))


def numpy_constant(key, array, dtype) -> np.ndarray:
    """:func:`constant` for the NumPy kernels: ``array`` as a read-only C-contiguous copy of ``dtype``."""
    return constant(key, lambda: array, np, dtype, None)
