"""Argument checks with error messages that name the argument.

The checks of lbpcore's arguments live here, except three that belong to what
they check: the namespace, dtype-promotion and device checks of the namespace
dispatch (:mod:`lbpcore._backend`, which calls :func:`plain_array` first), the
grammar of basis spec strings (:mod:`lbpcore._bases`) and the ``out=`` array of
the NumPy transform engine.  Checks of arrays take their ``shape`` (a tuple), so
that :func:`~lbpcore.backward_cost`, which only has shapes, runs the same checks
as the functions that compute.

Sizes that the arguments alone decide (a patch size, the coefficients of a
projection) are compared with the machine's memory (:func:`check_nbytes`) before
anything is allocated, so that an absurd size is a ValueError naming the
argument, not a MemoryError (or minutes of swapping) deep inside NumPy.
"""

from __future__ import annotations

import operator
import os

import numpy as np
from array_api_compat import is_numpy_namespace

__all__ = [
    "LAYOUTS",
    "check_axes_pair",
    "check_calibration",
    "check_choice",
    "check_coefficients",
    "check_grad_y",
    "check_grid",
    "check_int",
    "check_layer_input",
    "check_matrix_dtype",
    "check_nbytes",
    "check_nchw",
    "check_padding",
    "check_pairs",
    "check_patch",
    "check_power_of_two",
    "check_tokens",
    "check_transform_axes",
    "check_weight",
    "memory_limit",
    "normalize_axis",
    "plain_array",
    "require_grid",
    "resolve_grid",
]

LAYOUTS = ("tokens", "nchw")


def check_int(value, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int, or raise naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def check_power_of_two(value, name: str) -> int:
    """Return ``value`` as a Python int that is a power of two, or raise naming ``name``."""
    v = check_int(value, name)
    if v < 1 or (v & (v - 1)) != 0:
        raise ValueError(f"{name} must be a power of two (1, 2, 4, 8, ...), got {v}")
    return v


def memory_limit() -> int:
    """Bytes of physical memory of this machine: the bound of :func:`check_nbytes`."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # pragma: no cover - platforms without sysconf
        return 1 << 46


def _bytes_text(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"):
        if value < 1024 or unit == "YiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # pragma: no cover


def check_nbytes(nbytes: int, name: str, what: str) -> None:
    """Raise a ValueError naming ``name`` if ``what`` (``nbytes`` bytes) cannot fit in memory.

    Called before the allocation, so that an impossible size is refused with a
    message instead of a MemoryError (or swapping) later.
    """
    limit = memory_limit()
    if nbytes > limit:
        raise ValueError(
            f"{name}: {what} would need {_bytes_text(nbytes)}, more than the "
            f"{_bytes_text(limit)} of memory of this machine"
        )


def check_patch(value, name: str = "patch") -> int:
    """A patch size: a power of two whose ``n x n`` Walsh matrix (and its temporaries) fits in memory."""
    n = check_power_of_two(value, name)
    check_nbytes(4 * 8 * n * n, f"{name}={n}", f"the {n} x {n} Walsh matrix and its temporaries")
    return n


def check_choice(value, name: str, choices) -> str:
    """Return ``value`` if it is one of the strings ``choices``, or raise naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {opts}, got {value!r}")
    return value


def normalize_axis(axis, ndim: int, name: str = "axis") -> int:
    """Return ``axis`` in ``[0, ndim)``, or raise naming ``name``."""
    a = check_int(axis, name)
    if not -ndim <= a < ndim:
        raise ValueError(f"{name} {a} is out of range for an array with {ndim} dimension(s)")
    return a % ndim


def check_transform_axes(shape, axes, name: str = "x") -> list[int]:
    """Normalized ``axes`` of an array of ``shape``: distinct, in range, of power-of-two lengths."""
    ndim = len(shape)
    if ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a 0-d array")
    norm_axes = [normalize_axis(a, ndim, "axis" if len(axes) == 1 else "axes") for a in axes]
    if len(set(norm_axes)) != len(norm_axes):
        raise ValueError(f"axes must be distinct, got {tuple(axes)}")
    for a in norm_axes:
        check_power_of_two(shape[a], f"length of {name} along axis {a}")
    return norm_axes


def check_axes_pair(axes) -> None:
    """Raise unless ``axes`` is a sequence of two entries (their values are checked later)."""
    if isinstance(axes, str) or not hasattr(axes, "__len__") or len(axes) != 2:
        raise ValueError(f"axes must be a pair of distinct axes, got {axes!r}")


def check_grid(grid, name: str = "grid") -> tuple[int, int]:
    """Return ``grid`` as ``(h, w)`` positive ints."""
    if isinstance(grid, str) or not hasattr(grid, "__len__") or len(grid) != 2:
        raise ValueError(f"{name} must be a pair (h, w) of positive integers, got {grid!r}")
    h = check_int(grid[0], f"{name}[0]")
    w = check_int(grid[1], f"{name}[1]")
    if h < 1 or w < 1:
        raise ValueError(f"{name} must be a pair (h, w) of positive integers, got {(h, w)!r}")
    return h, w


# ---------------------------------------------------------------------------
# arrays, dtypes and basis pairs


def plain_array(x, name: str):
    """``x`` with NumPy's special cases made plain, or a TypeError naming ``name``.

    ``None`` is refused; masked arrays are refused (lbpcore would silently ignore
    the mask); other ndarray subclasses (``np.matrix``, ``np.memmap``) become plain
    ndarray views, so that results have the shapes of plain arrays; non-native
    byte order (big-endian data on a little-endian machine) is converted to native
    order.  Arrays of other libraries are returned unchanged.
    """
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    if isinstance(x, np.ndarray):
        if isinstance(x, np.ma.MaskedArray):
            raise TypeError(
                f"{name} is a masked array; lbpcore would ignore its mask: pass {name}.filled(value) "
                "or the unmasked values as a plain array"
            )
        if type(x) is not np.ndarray:
            x = np.asarray(x)
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
    return x


def check_matrix_dtype(xp, dtype, name: str = "dtype"):
    """A dtype that holds ``-1`` and ``1`` exactly: real floating or signed integer.

    Booleans (``-1`` would become True), unsigned integers (``-1`` wraps around) and
    complex dtypes are refused with a TypeError naming ``name``.
    """
    def bad(shown):
        return TypeError(f"{name} must be a real floating or signed integer dtype (entries are -1 and 1), got {shown}")

    if is_numpy_namespace(xp):
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise bad(repr(dtype)) from None
        if dtype.kind not in "fi":
            raise bad(dtype.name)
        return dtype
    try:
        ok = xp.isdtype(dtype, ("real floating", "signed integer"))
    except (TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise bad(dtype)
    return dtype


def check_pairs(pairs, n: int, name: str = "spec") -> np.ndarray:
    """Distinct in-range ``(i, j)`` pairs of patch size ``n`` as an int64 ``(r, 2)`` array, at least one.

    Raises a ValueError naming ``name`` for ragged, empty, non-integer,
    negative, out-of-range (``0 <= i, j < n``) or repeated pairs.
    """
    try:
        arr = np.asarray(pairs)
    except Exception as exc:  # ragged input
        raise ValueError(f"{name} must be a sequence of (i, j) pairs, got {pairs!r}") from exc
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty sequence of (i, j) pairs (shape (r, 2)), got shape {arr.shape}"
        )
    if arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and not np.all(arr == np.round(arr))):
        raise ValueError(f"{name} pairs must be integers, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= n)  # in the original dtype: no wrap-around of large or unsigned values
    if bad.any():
        row = tuple(int(v) if np.isfinite(v) else v for v in arr[np.nonzero(bad.any(axis=1))[0][0]].tolist())
        raise ValueError(f"{name} pair {row} is out of range for patch size {n} (need 0 <= i, j < {n})")
    arr = arr.astype(np.int64)
    flat = arr[:, 0] * n + arr[:, 1]
    uniq, counts = np.unique(flat, return_counts=True)
    if (counts > 1).any():
        d = uniq[counts > 1][0]
        raise ValueError(f"{name} has the pair {(int(d // n), int(d % n))} more than once")
    return arr


# ---------------------------------------------------------------------------
# token grids and feature maps


def check_padding(pad: str, patch: int, side: str, length: int, before: int, after: int) -> None:
    """Raise if ``pad`` cannot pad a grid side of ``length`` by ``before`` and ``after`` samples."""
    if pad == "none" and before + after:
        raise ValueError(
            f'pad="none" needs the patch size {patch} to divide the {side} {length}; '
            f'use pad="reflect" or pad="zero"'
        )
    if pad == "reflect" and max(before, after) >= length:
        raise ValueError(
            f"reflect padding of {max(before, after)} is wider than the {side} {length} allows "
            f"(patch {patch}); use a smaller patch or pad=\"zero\""
        )


def check_tokens(shape, grid, extra_tokens, name: str = "x") -> int:
    """Validate a tokens shape ``(B, L, C)`` against ``L == e + h*w``; return ``e``."""
    if len(shape) != 3:
        raise ValueError(f"{name} must have shape (B, L, C) for layout='tokens', got {tuple(shape)}")
    e = check_int(extra_tokens, "extra_tokens")
    if e < 0:
        raise ValueError(f"extra_tokens must be >= 0, got {e}")
    length = shape[1]
    if e > length:
        raise ValueError(f"extra_tokens={e} exceeds the {length} tokens of {name}")
    h, w = grid
    if length != e + h * w:
        raise ValueError(
            f"{name} has L={length} tokens but extra_tokens + h*w = {e} + {h}*{w} = {e + h * w} "
            f"for grid {grid}"
        )
    return e


def check_nchw(shape, grid, extra_tokens, name: str = "x") -> tuple[int, int]:
    """Validate a feature-map shape ``(B, C, H, W)`` (no extra tokens); return the grid ``(H, W)``.

    ``grid``, when given, must equal ``(H, W)``.
    """
    if len(shape) != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W) for layout='nchw', got {tuple(shape)}")
    e = check_int(extra_tokens, "extra_tokens")
    if e != 0:
        raise ValueError(f"extra_tokens must be 0 for layout='nchw', got {e}")
    hw = (int(shape[2]), int(shape[3]))
    if grid is None:
        return hw
    g = check_grid(grid)
    if g != hw:
        raise ValueError(f"grid {g} does not match the spatial shape {hw} of {name}")
    return g


def check_coefficients(shape, num_patches: int, rank: int, layout: str) -> None:
    """Raise unless ``coef`` is ``(B, P, r, C)`` (tokens) or ``(B, C, P, r)`` (nchw)."""
    if len(shape) != 4:
        raise ValueError(f"coef must be 4-D, got shape {tuple(shape)}")
    if layout == "tokens" and tuple(shape[1:3]) != (num_patches, rank):
        raise ValueError(
            f"coef must have shape (B, {num_patches}, {rank}, C) for this plan, got {tuple(shape)}"
        )
    if layout == "nchw" and tuple(shape[2:]) != (num_patches, rank):
        raise ValueError(
            f"coef must have shape (B, C, {num_patches}, {rank}) for this plan, got {tuple(shape)}"
        )


def check_calibration(shape, n: int, layout: str) -> None:
    """Raise unless calibration data is an ``(n, n)`` score map or data of ``layout``."""
    if len(shape) == 2:
        if tuple(shape) != (n, n):
            raise ValueError(f"calibration score map must have shape ({n}, {n}), got {tuple(shape)}")
        return
    if len(shape) != (3 if layout == "tokens" else 4):
        raise ValueError(
            f"calibration must be an ({n}, {n}) score map or data of shape "
            f"{'(B, L, C)' if layout == 'tokens' else '(B, C, H, W)'} for layout={layout!r}, "
            f"got shape {tuple(shape)}"
        )


def require_grid(grid, layout: str) -> None:
    """Raise if ``grid`` is missing for the tokens layout (NCHW maps carry their grid)."""
    if layout == "tokens" and grid is None:
        raise ValueError("grid=(h, w) is required for layout='tokens'")


def resolve_grid(shape, grid, layout: str, name: str = "x") -> tuple[int, int]:
    """The grid of an input of ``shape``: ``grid`` (tokens, required) or the spatial shape (nchw)."""
    if layout == "nchw":
        return check_nchw(shape, grid, 0, name)
    require_grid(grid, layout)
    return check_grid(grid)


# ---------------------------------------------------------------------------
# linear layers


def check_weight(weight_shape, bias_shape=None) -> None:
    """Raise unless the weight is ``(C_out, C_in)`` and the bias, if any, ``(C_out,)``."""
    if len(weight_shape) != 2:
        raise ValueError(f"weight must have shape (C_out, C_in), got {tuple(weight_shape)}")
    if bias_shape is not None and tuple(bias_shape) != (weight_shape[0],):
        raise ValueError(f"bias must have shape (C_out,) = ({weight_shape[0]},), got {tuple(bias_shape)}")


def check_layer_input(shape, weight_shape, layout: str, name: str = "x") -> None:
    """Raise unless ``shape`` is ``(..., C_in)`` (tokens) or ``(B, C_in, H, W)`` (nchw)."""
    c_in = weight_shape[1]
    if layout == "tokens":
        if len(shape) < 1 or shape[-1] != c_in:
            raise ValueError(
                f"{name} must have shape (..., C_in) with C_in = weight.shape[1] = {c_in}, got {tuple(shape)}"
            )
    elif len(shape) != 4 or shape[1] != c_in:
        raise ValueError(
            f"{name} must have shape (B, C_in, H, W) with C_in = weight.shape[1] = {c_in}, got {tuple(shape)}"
        )


def check_grad_y(x_shape, c_out: int, grad_y_shape, layout: str) -> None:
    """Raise unless ``grad_y`` has the layer output's shape: ``x``'s with ``C_out`` channels."""
    if layout == "tokens":
        expected = tuple(x_shape[:-1]) + (c_out,)
    else:
        expected = (x_shape[0], c_out) + tuple(x_shape[2:])
    if tuple(grad_y_shape) != expected:
        raise ValueError(
            f"grad_y must have shape {expected} (x's batch and grid shape, C_out = weight.shape[0]), "
            f"got {tuple(grad_y_shape)}"
        )
