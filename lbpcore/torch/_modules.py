"""``nn.Linear`` and 1x1 ``nn.Conv2d`` layers with the LBP-WHT backward, built on existing layers."""

from __future__ import annotations

import torch
from torch import nn

from .._grids import AUTO, check_extra_spec, check_grid_spec, for_layer
from .._patches import make_plan
from .._validation import check_power_of_two
from ._function import lbp_linear

__all__ = ["LBPConv2d", "LBPLinear", "is_pointwise_conv"]


def is_pointwise_conv(module) -> bool:
    """Whether ``module`` is an ``nn.Conv2d`` that is a linear map of the channels of each pixel.

    That is a 1x1 kernel, stride 1, no padding and one group (dilation does not
    matter for a 1x1 kernel).
    """
    return (isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1) and tuple(module.stride) == (1, 1)
            and module.groups == 1 and isinstance(module.padding, tuple) and not any(module.padding))


class _LBPMixin:
    """The LBP-WHT setting of a converted layer and the dense layer it was built from."""

    def _set_lbp(self, dense, *, grid, patch, bases, pad, extra_tokens, name):
        n = check_power_of_two(patch, "patch")
        grid = for_layer(check_grid_spec(grid), name, "grid")
        extra_tokens = for_layer(check_extra_spec(extra_tokens), name, "extra_tokens")
        make_plan((n, n) if grid == AUTO else grid, n, bases, pad)  # fail now, not in the first forward
        self.grid = grid
        self.patch = patch
        self.bases = bases
        self.pad = pad
        self.extra_tokens = extra_tokens
        self.layer_name = name
        object.__setattr__(self, "_dense", dense)  # not a submodule: its parameters are this layer's own

    def _lbp(self, x, weight, layout):
        try:
            return lbp_linear(x, weight, self.bias, grid=self.grid, patch=self.patch, bases=self.bases, pad=self.pad,
                              extra_tokens=self.extra_tokens, layout=layout)
        except (TypeError, ValueError) as exc:
            if not self.layer_name:
                raise
            raise type(exc)(f"{self.layer_name}: {exc}") from exc

    def _lbp_repr(self):
        bases = self.bases if isinstance(self.bases, str) else getattr(self.bases, "spec", "explicit")
        extra = f", extra_tokens={self.extra_tokens}" if self.extra_tokens else ""
        return f"grid={self.grid!r}, patch={self.patch}, bases={bases!r}, pad={self.pad!r}{extra}"

    def to_dense(self):
        """The dense layer this one was built from, holding this layer's current parameters.

        Returns
        -------
        torch.nn.Module
            The original module (a fresh ``nn.Linear`` / ``nn.Conv2d`` if this
            layer was not built from one); its ``weight`` and ``bias`` are this
            layer's parameter objects.
        """
        dense = self._dense
        if dense is None:
            dense = self._dense_type()
        dense.weight = self.weight
        dense.bias = self.bias
        return dense


def _shell(cls, dense, **lbp):
    """An instance of ``cls`` sharing ``dense``'s parameters and attributes (no new parameter is allocated)."""
    layer = cls.__new__(cls)
    nn.Module.__init__(layer)
    for key, value in vars(dense).items():
        if not key.startswith("_"):  # in_features, out_features, kernel_size...: plain attributes
            setattr(layer, key, value)
    layer.weight = dense.weight
    layer.bias = dense.bias
    layer.train(dense.training)
    layer._set_lbp(dense, **lbp)
    return layer


class LBPLinear(_LBPMixin, nn.Linear):
    """``nn.Linear`` on a token grid whose backward is LBP-WHT (:func:`lbp_linear`).

    A drop-in replacement: same parameters (``weight``, ``bias``), same
    ``state_dict`` keys, exact forward.  Build it from an existing layer with
    :meth:`from_linear` (parameters shared, not copied) or let
    :func:`lbpcore.torch.convert` replace the layers of a model.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, optional
        Default True.
    grid : "auto", (int, int) or dict, optional
        Token grid ``(h, w)`` of the inputs, ``(..., e + h*w, in_features)`` or
        channels-last maps ``(B, h, w, in_features)``; ``"auto"`` (default)
        takes each input's own grid (see :func:`lbp_linear`); a dict of glob
        patterns is resolved against the layer's name (see
        :func:`~lbpcore.torch.convert`).
    patch, bases, pad, extra_tokens
        As for :func:`lbpcore.lbp_backward`; ``extra_tokens`` may be a dict of
        patterns like ``grid``.
    device, dtype : optional
        As for ``nn.Linear``.

    Attributes
    ----------
    grid, patch, bases, pad, extra_tokens
        The LBP-WHT setting.
    layer_name : str
        Qualified name in the model (set by :func:`~lbpcore.torch.convert`;
        error messages start with it).

    Examples
    --------
    >>> import torch
    >>> from lbpcore.torch import LBPLinear
    >>> dense = torch.nn.Linear(8, 4)
    >>> layer = LBPLinear.from_linear(dense, grid=(8, 8), patch=4, bases="lp_l1:2")
    >>> layer.weight is dense.weight
    True
    >>> x = torch.randn(2, 64, 8)
    >>> torch.equal(layer(x), dense(x))
    True
    """

    def __init__(self, in_features, out_features, bias=True, *, grid=AUTO, patch=8, bases="lp_l1:6", pad="reflect",
                 extra_tokens=0, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._set_lbp(None, grid=grid, patch=patch, bases=bases, pad=pad, extra_tokens=extra_tokens, name="")

    @classmethod
    def from_linear(cls, linear, *, grid=AUTO, patch=8, bases="lp_l1:6", pad="reflect", extra_tokens=0, name=""):
        """An LBP-WHT layer sharing the parameters of ``linear``.

        Parameters
        ----------
        linear : torch.nn.Linear
        grid, patch, bases, pad, extra_tokens
            As for :class:`LBPLinear`.
        name : str, optional
            Qualified name, used in error messages.

        Returns
        -------
        LBPLinear
            ``weight`` and ``bias`` are ``linear``'s parameter objects.

        Raises
        ------
        TypeError
            If ``linear`` is not an ``nn.Linear``.
        ValueError
            On a bad grid, patch, basis or padding.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        return _shell(cls, linear, grid=grid, patch=patch, bases=bases, pad=pad, extra_tokens=extra_tokens,
                      name=name)

    def _dense_type(self):
        return nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ weight.T + bias`` on tokens or channels-last maps, LBP-WHT in the backward."""
        return self._lbp(x, self.weight, "tokens")

    def extra_repr(self) -> str:
        """The dense layer's description followed by the LBP-WHT setting."""
        return f"{super().extra_repr()}, {self._lbp_repr()}"


class LBPConv2d(_LBPMixin, nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` on ``(B, C, H, W)`` maps whose backward is LBP-WHT.

    The same layer as :class:`LBPLinear` with the channels of each pixel as
    features (``layout="nchw"``); the grid is the map's ``(H, W)``.  Build it
    with :meth:`from_conv` (parameters shared, not copied).

    Parameters
    ----------
    in_channels, out_channels : int
    bias : bool, optional
        Default True.
    grid : "auto" or (int, int), optional
        Expected ``(H, W)``; default ``"auto"``: that of each input.
    patch, bases, pad
        As for :func:`lbpcore.lbp_backward`.
    device, dtype : optional
        As for ``nn.Conv2d``.

    Examples
    --------
    >>> import torch
    >>> from lbpcore.torch import LBPConv2d
    >>> conv = torch.nn.Conv2d(8, 4, kernel_size=1)
    >>> layer = LBPConv2d.from_conv(conv, patch=4, bases="lp_l1:2")
    >>> x = torch.randn(2, 8, 6, 10)
    >>> torch.allclose(layer(x), conv(x), atol=1e-6)
    True
    """

    def __init__(self, in_channels, out_channels, bias=True, *, grid=AUTO, patch=8, bases="lp_l1:6", pad="reflect",
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, 1, bias=bias, device=device, dtype=dtype)
        self._set_lbp(None, grid=grid, patch=patch, bases=bases, pad=pad, extra_tokens=0, name="")

    @classmethod
    def from_conv(cls, conv, *, grid=AUTO, patch=8, bases="lp_l1:6", pad="reflect", name=""):
        """An LBP-WHT layer sharing the parameters of a 1x1 ``conv``.

        Parameters
        ----------
        conv : torch.nn.Conv2d
            1x1 kernel, stride 1, no padding, one group.
        grid, patch, bases, pad
            As for :class:`LBPConv2d`.
        name : str, optional
            Qualified name, used in error messages.

        Returns
        -------
        LBPConv2d

        Raises
        ------
        TypeError
            If ``conv`` is not such a convolution.
        """
        if not is_pointwise_conv(conv):
            raise TypeError(f"from_conv needs a 1x1 nn.Conv2d with stride 1, no padding and one group, got {conv!r}")
        return _shell(cls, conv, grid=grid, patch=patch, bases=bases, pad=pad, extra_tokens=0, name=name)

    def _dense_type(self):
        return nn.Conv2d(self.in_channels, self.out_channels, 1, bias=self.bias is not None, device="meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The 1x1 convolution of ``x`` ``(B, in_channels, H, W)``, LBP-WHT in the backward."""
        return self._lbp(x, self.weight.flatten(1), "nchw")

    def extra_repr(self) -> str:
        """The dense layer's description followed by the LBP-WHT setting."""
        return f"{super().extra_repr()}, {self._lbp_repr()}"
