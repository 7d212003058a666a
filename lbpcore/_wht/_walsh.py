"""Walsh–Hadamard matrices: orderings, normalizations and Kronecker factors.

The natural-order Hadamard matrix of size ``n = n_1 n_2 ... n_k`` (all powers of
two) is the Kronecker product ``H_{n_1} ⊗ ... ⊗ H_{n_k}``; the sequency and dyadic
orders are row permutations of it.  No argument checks: the public functions
check first.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "NORMS",
    "ORDERINGS",
    "natural_hadamard",
    "norm_scale",
    "ordered_hadamard",
    "permutation",
    "split_blocks",
]

ORDERINGS = ("natural", "sequency", "dyadic")
NORMS = ("backward", "ortho", "forward")


def natural_hadamard(n: int) -> np.ndarray:
    """Sylvester's ``(n, n)`` matrix, ``H[i, j] = (-1)^popcount(i & j)`` (int64)."""
    i = np.arange(n, dtype=np.int64)
    anded = i[:, None] & i[None, :]
    parity = np.zeros_like(anded)
    while np.any(anded):
        parity ^= anded & 1
        anded >>= 1
    return 1 - 2 * parity


def _bit_reverse(values: np.ndarray, bits: int) -> np.ndarray:
    out = np.zeros_like(values)
    v = values.copy()
    for _ in range(bits):
        out = (out << 1) | (v & 1)
        v >>= 1
    return out


def permutation(n: int, ordering: str) -> np.ndarray:
    """Natural-order row index of each row of the ``ordering``-ordered matrix (int64, ``(n,)``)."""
    s = np.arange(n, dtype=np.int64)
    bits = n.bit_length() - 1
    if ordering == "natural":
        return s
    if ordering == "dyadic":
        return _bit_reverse(s, bits)
    return _bit_reverse(s ^ (s >> 1), bits)


def ordered_hadamard(n: int, ordering: str) -> np.ndarray:
    """The ``(n, n)`` Walsh matrix in ``ordering`` (int64, entries ±1)."""
    return natural_hadamard(n)[permutation(n, ordering)]


def norm_scale(n: int, norm: str, inverse: bool) -> float:
    """Factor of a length-``n`` transform with :mod:`numpy.fft`'s ``norm`` semantics."""
    if norm == "ortho":
        return 1.0 / math.sqrt(n)
    if (norm == "backward") == inverse:
        return 1.0 / n
    return 1.0


def split_blocks(n: int, max_block: int) -> list[int]:
    """Split ``n = 2**m`` into near-equal power-of-two Kronecker factors of at most ``max_block``.

    The larger factors come last, e.g. ``split_blocks(128, 64) == [8, 16]``.
    """
    m = n.bit_length() - 1
    max_bits = max_block.bit_length() - 1
    k = max(1, -(-m // max_bits))
    base, extra = divmod(m, k)
    return [1 << (base + (1 if t >= k - extra else 0)) for t in range(k)]
