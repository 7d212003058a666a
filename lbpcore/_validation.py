"""Argument checks with error messages that name the argument."""

from __future__ import annotations

import operator

__all__ = [
    "check_choice",
    "check_int",
    "check_power_of_two",
    "normalize_axis",
    "check_grid",
]


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
    v = check_int(value, name)
    if v < 1 or (v & (v - 1)) != 0:
        raise ValueError(f"{name} must be a power of two (1, 2, 4, 8, ...), got {v}")
    return v


def check_choice(value, name: str, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {opts}, got {value!r}")
    return value


def normalize_axis(axis, ndim: int, name: str = "axis") -> int:
    a = check_int(axis, name)
    if not -ndim <= a < ndim:
        raise ValueError(f"{name} {a} is out of range for an array with {ndim} dimension(s)")
    return a % ndim


def check_grid(grid, name: str = "grid") -> tuple[int, int]:
    """Return ``grid`` as ``(h, w)`` positive ints."""
    if isinstance(grid, str) or not hasattr(grid, "__len__") or len(grid) != 2:
        raise ValueError(f"{name} must be a pair (h, w) of positive integers, got {grid!r}")
    h = check_int(grid[0], f"{name}[0]")
    w = check_int(grid[1], f"{name}[1]")
    if h < 1 or w < 1:
        raise ValueError(f"{name} must be a pair (h, w) of positive integers, got {(h, w)!r}")
    return h, w
