"""Published approximate-backward methods, behind one interface, to compare with LBP-WHT on the same layers.

One module per family: :mod:`~analysis.methods.lbp` (LBP-WHT),
:mod:`~analysis.methods.calibrated` (a frozen per-patch KLT),
:mod:`~analysis.methods.projection` (VeLoRA, CompAct),
:mod:`~analysis.methods.sampling` (WTA-CRS, CRS, RAD),
:mod:`~analysis.methods.meprop` and :mod:`~analysis.methods.hot`.
:func:`get_method` makes a :class:`Method` from a spec string;
:func:`available_methods` lists the accepted forms; every method has
:meth:`~Method.calibrate`, :meth:`~Method.backward`,
:meth:`~Method.saved_fraction` and :meth:`~Method.backward_flops`, and the
flags ``unbiased``, ``exact_grad_x`` and ``stochastic``.  Every spec with
everything kept (``rho = 1``, ``G = C_in``, the full basis,
``hot:gx=fp,gw=fp,keep=1``) is the dense backward, except CompAct's Gaussian
projection (unbiased, never exact).  The formulas, what each method saves,
its bias and its cost: :ref:`method-alternatives`.
:func:`analysis.methods.measure.method_errors` measures them against the
dense backward (bias² and variance over seeds for the stochastic ones).

Examples
--------
>>> from analysis.methods import available_methods, get_method
>>> m = get_method("wtacrs:0.3")
>>> m.family, m.unbiased, m.exact_grad_x
('wtacrs', True, True)
>>> len(available_methods())
9
"""

from __future__ import annotations

from ._base import Method, check_fraction
from .calibrated import Calibrated
from .hot import HOT
from .lbp import LBP
from .meprop import MeProp
from .projection import CompAct, VeLoRA
from .sampling import CRS, RAD, WTACRS

__all__ = ["Method", "get_method", "available_methods", "PAPER_DEFAULTS", "PARETO_SWEEP"]

#: Accepted spec forms and what they are, in the order of the docs.
_FORMS = {
    "lbp": ("lbp:<bases>", "LBP-WHT with any lbpcore.select_bases selection, e.g. lbp:lp_l1:6"),
    "velora": ("velora:G", "VeLoRA: G sub-tokens per token, rank-1 projection on a calibrated vector"),
    "compact": ("compact:rho", "CompAct: Gaussian projection of x to ceil(rho C_in) columns"),
    "wtacrs": ("wtacrs:rho", "WTA-CRS: winner-take-all column-row sampling of ceil(rho N) token rows"),
    "crs": ("crs:rho", "CRS: Bernoulli column-row sampling of ceil(rho N) rows in expectation"),
    "meprop": ("meprop:rho", "meProp: top ceil(rho C_out) entries of each row of grad_y"),
    "rad": ("rad:rho", "randomized AD: entries of x kept with probability rho, scaled 1/rho"),
    "hot": ("hot[:gx=int4,gw=int8,keep=0.5,block=16]", "HOT: Hadamard transforms and INT4/INT8 products"),
    "calibrated": ("calibrated:r", "per-patch KLT of grad_y of rank r, fitted on a calibration batch"),
}

#: The published methods at their papers' default settings (``lbp report`` measures these).
PAPER_DEFAULTS = ("velora:16", "compact:0.25", "wtacrs:0.3", "crs:0.3", "meprop:0.1", "rad:0.3", "hot",
                  "calibrated:21")

#: Settings of every family spread over the backward FLOPs: the points of the Pareto figure.
PARETO_SWEEP = (
    "lbp:lp_l1:1", "lbp:lp_l1:2", "lbp:lp_l1:3", "lbp:lp_l1:4", "lbp:lp_l1:6", "lbp:lp_l1:8", "lbp:lp_l1:11",
    "calibrated:1", "calibrated:3", "calibrated:6", "calibrated:10", "calibrated:21", "calibrated:36",
    "meprop:0.03", "meprop:0.05", "meprop:0.1", "meprop:0.2", "meprop:0.35",
    "wtacrs:0.1", "wtacrs:0.3", "wtacrs:0.6", "crs:0.1", "crs:0.3", "crs:0.6",
    "rad:0.1", "rad:0.3", "rad:0.6", "compact:0.1", "compact:0.25", "compact:0.5",
    "velora:4", "velora:16", "hot:keep=0.25", "hot", "hot:keep=1",
)


def available_methods() -> dict:
    """The accepted spec forms.

    Returns
    -------
    dict of str to (str, str)
        Family name to ``(form, description)``, e.g.
        ``"wtacrs": ("wtacrs:rho", "WTA-CRS: ...")``.

    Examples
    --------
    >>> from analysis.methods import available_methods
    >>> available_methods()["velora"][0]
    'velora:G'
    """
    return dict(_FORMS)


def _accepted() -> str:
    return ", ".join(form for form, _ in _FORMS.values())


def _positive_int(text, spec, form):
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise ValueError(f"method spec {spec!r}: expected {form} with a positive integer, got {text!r}")
    return value


def get_method(spec) -> Method:
    """A fresh :class:`Method` from its spec.

    Parameters
    ----------
    spec : str or Method
        One of the forms of :func:`available_methods` (case-insensitive
        family name): ``lbp:<bases>``, ``velora:G``, ``compact:rho``,
        ``wtacrs:rho``, ``crs:rho``, ``meprop:rho``, ``rad:rho``, ``hot`` (or
        ``hot:key=value,...``), ``calibrated:r``; a :class:`Method` is
        returned as it is.

    Returns
    -------
    Method
        Uncalibrated: a method whose ``needs_calibration`` is True holds the
        state of one layer once calibrated, so make one per layer.

    Raises
    ------
    ValueError
        On an unknown family or a bad parameter, naming the accepted specs.
    TypeError
        If ``spec`` is not a string.

    Examples
    --------
    >>> from analysis.methods import get_method
    >>> get_method("RAD:0.5").spec
    'rad:0.5'
    >>> get_method("svd:3")
    Traceback (most recent call last):
    ...
    ValueError: unknown method spec 'svd:3'; accepted specs: lbp:<bases>, velora:G, compact:rho, wtacrs:rho, \
crs:rho, meprop:rho, rad:rho, hot[:gx=int4,gw=int8,keep=0.5,block=16], calibrated:r
    """
    if isinstance(spec, Method):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"method spec must be a string such as 'wtacrs:0.3', got {type(spec).__name__}")
    text = spec.strip()
    family, colon, arg = text.partition(":")
    family = family.strip().lower()
    arg = arg.strip()
    if family not in _FORMS:
        raise ValueError(f"unknown method spec {spec!r}; accepted specs: {_accepted()}")
    form = _FORMS[family][0]
    if family == "hot":
        return HOT("hot" + (f":{arg}" if arg else ""), arg)
    if not arg:
        raise ValueError(f"method spec {spec!r}: expected {form}; accepted specs: {_accepted()}")
    norm = f"{family}:{arg}"
    if family == "lbp":
        return LBP(norm, arg)
    if family in ("velora", "calibrated"):
        value = _positive_int(arg, spec, form)
        return (VeLoRA if family == "velora" else Calibrated)(f"{family}:{value}", value)
    rho = check_fraction(arg, spec, form)
    cls = {"compact": CompAct, "wtacrs": WTACRS, "crs": CRS, "meprop": MeProp, "rad": RAD}[family]
    return cls(f"{family}:{arg}", rho)
