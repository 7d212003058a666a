"""Option values of the ``lbp`` command line: lbpcore's checks, their errors turned into usage errors.

Each function is an :mod:`argparse` ``type=`` (or adds options to a parser) of
:mod:`analysis.cli`, which re-exports the public ones.
"""

from __future__ import annotations

import argparse
import re

from lbpcore._validation import check_choice, check_grid, check_int

from .budget import parse_memory
from .errors import BASELINES

__all__ = ["parse_grid", "parse_grid_setting", "parse_method_list", "parse_finetune_methods"]

_GRID_RE = re.compile(r"^\s*(\d+)\s*[xX,]\s*(\d+)\s*$")




def parse_grid(text):
    """Parse a token grid written ``HxW`` (also ``H,W``) into ``(h, w)``.

    Parameters
    ----------
    text : str
        Two positive integers separated by ``x``, ``X`` or a comma.

    Returns
    -------
    (int, int)
        ``(h, w)``.

    Raises
    ------
    argparse.ArgumentTypeError
        If the text is not of that form or a side is zero (a usage error).

    Examples
    --------
    >>> from analysis.cli import parse_grid
    >>> parse_grid("14x14"), parse_grid("7,9")
    ((14, 14), (7, 9))
    """
    m = _GRID_RE.match(str(text))
    if m is None:
        raise argparse.ArgumentTypeError(f"grid must look like HxW (e.g. 14x14), got {text!r}")
    try:
        return check_grid((int(m.group(1)), int(m.group(2))))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_grid_setting(text):
    """Parse the ``--grid`` of ``lbp report --capture``: ``auto``, ``HxW``, or ``PATTERN=VALUE,...`` per layer.

    Parameters
    ----------
    text : str
        ``auto`` (each layer's square grid), ``HxW`` (every layer), or
        comma-separated ``PATTERN=auto`` / ``PATTERN=HxW`` entries, glob
        patterns on layer names tried in order (as the ``grid`` dict of
        :func:`lbpcore.torch.convert`).

    Returns
    -------
    "auto", (int, int) or dict

    Raises
    ------
    argparse.ArgumentTypeError
        If the text is none of these forms (a usage error).

    Examples
    --------
    >>> from analysis.cli import parse_grid_setting
    >>> parse_grid_setting("auto"), parse_grid_setting("14x14")
    ('auto', (14, 14))
    >>> parse_grid_setting("layers.*.attn.*=7x7,*=auto")
    {'layers.*.attn.*': (7, 7), '*': 'auto'}
    """
    def one(value):
        return "auto" if value.strip().lower() == "auto" else parse_grid(value)

    if "=" not in str(text):
        if str(text).strip().lower() != "auto" and _GRID_RE.match(str(text)) is None:
            raise argparse.ArgumentTypeError(f"--grid must be HxW, 'auto' or PATTERN=HxW / PATTERN=auto entries "
                                             f"(e.g. 14x14, or 'blocks.*=14x14,*=auto'), got {text!r}")
        return one(str(text))
    return _pattern_entries(text, one, "PATTERN=HxW or PATTERN=auto")


def _pattern_entries(text, parse, form):
    """``{pattern: parse(value)}`` of comma-separated ``PATTERN=VALUE`` entries."""
    out = {}
    for entry in (e.strip() for e in str(text).split(",")):
        pattern, eq, value = entry.partition("=")
        if not eq or not pattern.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"expected comma-separated {form} entries, got {entry!r} in {text!r}")
        out[pattern.strip()] = parse(value)
    return out


def _extra_tokens_setting(text):
    """``--extra-tokens`` of ``lbp report --capture``: ``E`` or ``PATTERN=E,...``."""
    if "=" not in str(text):
        return _EXTRA_TOKENS(text)
    return _pattern_entries(text, _EXTRA_TOKENS, "PATTERN=E")


def _integer_option(check):
    """An :mod:`argparse` ``type``: an integer that ``check(value)`` accepts."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        try:
            return check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _memory_size(text):
    try:
        return parse_memory(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_EXTRA_TOKENS = _integer_option(lambda v: check_int(v, "extra_tokens", minimum=0))


def _baseline_list(text):
    names = tuple(n for n in (t.strip() for t in str(text).split(",")) if n and n.lower() != "none")
    try:
        return tuple(check_choice(n, "baseline", BASELINES) for n in names)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; 'none' for no baseline") from None


def parse_method_list(text):
    """Parse ``--methods``: comma-separated specs of :func:`analysis.methods.get_method`, or ``none``.

    Parameters
    ----------
    text : str
        E.g. ``wtacrs:0.3,hot:gx=int4,gw=int8,lbp:lp_l1:6``: an entry without a
        ``:`` but with ``=`` continues the options of the spec before it
        (``hot``'s ``key=value`` pairs).

    Returns
    -------
    tuple of str
        Normalized specs (empty for ``none``).

    Raises
    ------
    argparse.ArgumentTypeError
        On a bad spec (the message names the accepted ones).

    Examples
    --------
    >>> from analysis.cli import parse_method_list
    >>> parse_method_list("WTACRS:0.3,hot:gx=int4,keep=1,rad:0.1")
    ('wtacrs:0.3', 'hot:gx=int4,keep=1', 'rad:0.1')
    >>> parse_method_list("none")
    ()
    """
    from .methods import get_method  # noqa: PLC0415

    try:
        return tuple(get_method(spec).spec for spec in _split_specs(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; 'none' for none") from None


def _split_specs(text):
    """Comma-separated specs; an entry without ``:`` but with ``=`` continues the spec before it."""
    specs = []
    for entry in (t.strip() for t in str(text).split(",")):
        if not entry or entry.lower() == "none":
            continue
        if specs and ":" not in entry and "=" in entry:
            specs[-1] += "," + entry
        else:
            specs.append(entry)
    return specs


def parse_finetune_methods(text):
    """Parse ``lbp finetune --methods``: comma-separated specs of :func:`analysis.finetune.parse_method`.

    Parameters
    ----------
    text : str
        E.g. ``dense,lp_l1:6,dct:21,wtacrs:0.3,hot:keep=0.25``: the fine-tuning
        methods and the published ones of :mod:`analysis.methods`
        (``key=value`` entries continue the spec before them, as in
        :func:`parse_method_list`).

    Returns
    -------
    tuple of str
        Normalized, non-empty.

    Raises
    ------
    argparse.ArgumentTypeError
        On a bad spec or an empty list.

    Examples
    --------
    >>> from analysis.cli import parse_finetune_methods
    >>> parse_finetune_methods("dense, LP_L1:6,wtacrs:0.3,hot:keep=0.25,block=8")
    ('dense', 'lp_l1:6', 'wtacrs:0.3', 'hot:keep=0.25,block=8')
    """
    from .finetune import parse_method  # noqa: PLC0415

    try:
        specs = tuple(parse_method(spec).name for spec in _split_specs(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not specs:
        raise argparse.ArgumentTypeError(f"expected at least one method, got {text!r}")
    return specs


def _add_method_options(p, default_text):
    """``--methods`` and ``--method-seeds``: the published methods measured next to LBP-WHT."""
    p.add_argument("--methods", type=parse_method_list, default=None, metavar="SPEC,...",
                   help="published approximate-backward methods to measure on the same layers (analysis.methods): "
                        "lbp:<bases>, velora:G, compact:rho, wtacrs:rho, crs:rho, meprop:rho, rad:rho, "
                        f"hot[:gx=int4,gw=int8,keep=0.5,block=16], calibrated:r ({default_text}; 'none' for none)")
    p.add_argument("--method-seeds", type=_integer_option(lambda v: check_int(v, "--method-seeds", minimum=1)),
                   default=None, metavar="S",
                   help="draws of each stochastic method, for its bias^2 and variance (default 8)")
