"""``hot``: the backward of HOT / HLQ (CVPR 2025), Hadamard transforms and low-precision products.

* ``grad_x = grad_y W`` through a block Hadamard transform ``H`` (orthonormal
  ``block x block``, default 16) along the output channels:
  ``grad_x = Q(grad_y H) Q(H^T W)``, both factors quantized (default INT4).
* ``grad_W = grad_y^T x`` through a block Hadamard transform along each item's
  tokens (blocks of ``block`` consecutive tokens, zero-padded), of which only
  the ``keep`` lowest-sequency rows are kept (default half):
  ``grad_W = Q(H_k grad_y)^T Q(H_k x)``, quantized (default INT8); ``Q(H_k x)``
  is what the forward saves.

``Q`` is symmetric per-tensor round-to-nearest quantization to ``bits`` bits
(levels ``-(2^(bits-1) - 1) .. 2^(bits-1) - 1`` times ``max|a| / (2^(bits-1) - 1)``)
or none (``fp``).  Deterministic and biased; with ``gx=fp,gw=fp,keep=1`` exact
(to rounding).  The spec takes the options as ``key=value`` pairs:
``hot:gx=int4,gw=int8,keep=0.5,block=16`` is ``hot``.  The FLOPs count the
Hadamard transforms as fast transforms (``log2(block)`` additions per value)
and the products at any precision as FLOPs; the low-precision arithmetic that
makes HOT fast on hardware with INT4/INT8 units is not a FLOP saving.
"""

from __future__ import annotations

import math

import numpy as np

import lbpcore

from ._base import Method

__all__ = ["HOT", "quantize"]

_DEFAULTS = {"gx": "int4", "gw": "int8", "keep": "0.5", "block": "16"}


def quantize(a, bits):
    """Symmetric per-tensor round-to-nearest quantization to ``bits`` bits (returned dequantized).

    Parameters
    ----------
    a : ndarray
    bits : int or None
        None: no quantization.

    Returns
    -------
    ndarray
        ``round(a / s) s`` with ``s = max|a| / (2^(bits-1) - 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.methods.hot import quantize
    >>> quantize(np.array([1.0, 0.6, -0.2]), 2).tolist()  # levels -1, 0, 1 times 1.0
    [1.0, 1.0, -0.0]
    """
    if bits is None:
        return a
    top = float(np.max(np.abs(a))) if a.size else 0.0
    if top == 0 or not math.isfinite(top):
        return a
    scale = top / (2 ** (bits - 1) - 1)
    return np.round(a / scale) * scale


def _parse_bits(value, spec):
    v = value.strip().lower()
    if v in ("fp", "none", "float"):
        return None
    if v.startswith("int") and v[3:].isdigit() and 2 <= int(v[3:]) <= 16:
        return int(v[3:])
    raise ValueError(f"method spec {spec!r}: a quantizer is int2 .. int16 or fp, got {value!r}")


class HOT(Method):
    """HOT's backward (see the module docstring).

    Parameters
    ----------
    spec : str
        The normalized spec (made by :func:`analysis.methods.get_method`).
    options : str
        Comma-separated ``key=value`` pairs (``gx``, ``gw``, ``keep``, ``block``); empty for the defaults.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.methods import get_method
    >>> rng = np.random.default_rng(0)
    >>> x, w, gy = rng.standard_normal((2, 16, 4)), rng.standard_normal((32, 4)), rng.standard_normal((2, 16, 32))
    >>> gx, gw = get_method("hot:gx=fp,gw=fp,keep=1").backward(x, w, gy, grid=(4, 4))
    >>> bool(np.allclose(gx, gy @ w)), bool(np.allclose(gw, gy.reshape(-1, 32).T @ x.reshape(-1, 4)))
    (True, True)
    """

    family = "hot"

    def __init__(self, spec, options):
        super().__init__(spec)
        opts = dict(_DEFAULTS)
        for entry in (e.strip() for e in options.split(",") if e.strip()):
            key, eq, value = entry.partition("=")
            key = key.strip().lower()
            if not eq or key not in _DEFAULTS:
                raise ValueError(f"method spec {spec!r}: options are key=value pairs with keys "
                                 f"{', '.join(_DEFAULTS)} (e.g. hot:gx=int4,gw=int8,keep=0.5,block=16), got {entry!r}")
            opts[key] = value.strip()
        self.gx_bits = _parse_bits(opts["gx"], spec)
        self.gw_bits = _parse_bits(opts["gw"], spec)
        try:
            block = int(opts["block"])
            keep = float(opts["keep"])
        except ValueError:
            block, keep = 0, math.nan
        if block < 1 or block & (block - 1):
            raise ValueError(f"method spec {spec!r}: block must be a power of two, got {opts['block']!r}")
        if not 0 < keep <= 1:
            raise ValueError(f"method spec {spec!r}: keep must be a fraction 0 < keep <= 1, got {opts['keep']!r}")
        self.block = block
        self.kept = max(1, math.ceil(keep * block - 1e-9))
        self.options = opts

    def _hadamard(self, dtype):
        return lbpcore.walsh_matrix(self.block, ordering="sequency", dtype=dtype) / math.sqrt(self.block)

    def _grad_x(self, layer):
        g2, w = layer.g2, layer.weight
        c_out = w.shape[0]
        nb = -(-c_out // self.block)
        pad = nb * self.block - c_out  # zero channels add nothing to grad_y W
        g2 = np.pad(g2, ((0, 0), (0, pad)))
        w = np.pad(w, ((0, pad), (0, 0)))
        h = self._hadamard(g2.dtype)
        gh = (g2.reshape(-1, nb, self.block) @ h.T).reshape(g2.shape[0], -1)  # grad_y H^T per block
        wh = (h @ w.reshape(nb, self.block, -1)).reshape(nb * self.block, -1)  # H W per block
        return (quantize(gh, self.gx_bits) @ quantize(wh, self.gx_bits)).reshape(layer.x.shape)

    def _tokens_grad_w(self, layer):
        b, length, _ = layer.x.shape
        nt = -(-length // self.block)
        pad = ((0, 0), (0, nt * self.block - length), (0, 0))
        hk = self._hadamard(layer.x.dtype)[: self.kept]  # (m, block): the lowest sequencies

        def low(a):
            a = np.pad(a, pad).reshape(b, nt, self.block, a.shape[-1])
            return np.matmul(hk, a).reshape(-1, a.shape[-1])  # (B nt m, C)

        return quantize(low(layer.grad_y), self.gw_bits).T @ quantize(low(layer.x), self.gw_bits)

    def _backward(self, layer, rng):
        return self._grad_x(layer), self._tokens_grad_w(layer)

    def _rows(self, b, length):
        return b * -(-length // self.block) * self.kept

    def _saved(self, shape, grid, patch):
        b, length, c_in, _, _ = shape
        bits = 32 if self.gw_bits is None else self.gw_bits
        return self._rows(b, length) * c_in * bits / 32, b * length * c_in

    def _flops(self, shape, grid, patch):
        b, length, c_in, c_out, _ = shape
        n = b * length
        lg = int(math.log2(self.block))
        c_pad = -(-c_out // self.block) * self.block
        l_pad = -(-length // self.block) * self.block
        rows = self._rows(b, length)
        channel = lg * (n * c_pad + c_pad * c_in) + 2 * n * c_pad * c_in  # transforms along C_out, grad_x GEMM
        tokens = lg * b * l_pad * (c_in + c_out) + 2 * rows * c_in * c_out  # transforms along tokens, grad_W GEMM
        return channel + tokens
