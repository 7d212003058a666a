"""Display names and line styles of the selection policies and approximation methods.

One table for the figures of :mod:`analysis.plots` and the text of
:mod:`analysis.report`, keyed as the results are: the approximation methods of
:class:`analysis.errors.ErrorReport` (``"lbp"`` and the baselines), the
selection policies of :func:`analysis.spectrum.energy_curves`, and the
training methods of :mod:`analysis.finetune` (``"dense"``, ``"budget"``,
``"full_basis"``).
"""

from __future__ import annotations

__all__ = ["METHOD_NAMES", "PLOT_LABELS", "PLOT_STYLES", "method_name", "plot_label", "plot_style"]

#: Short names of the approximation methods, as the report's prose and tables write them.
METHOD_NAMES = {"lbp": "LBP-WHT", "klt": "per-patch KLT", "dct": "DCT", "svd": "SVD", "random": "random",
                "dense": "full BP", "budget": "exact, top blocks only"}

#: Legend labels of the selection policies and approximation methods in figures.
PLOT_LABELS = {
    "lp_l1": "LP-L1 (i+j<k)",
    "lp_linf": "LP-Linf (max(i,j)<k)",
    "energy": "energy-optimal (per tensor)",
    "energy_l2": "energy-optimal (per tensor)",
    "random": "random bases",
    "lbp": "LBP-WHT (lp_l1)",
    "wht": "LBP-WHT (lp_l1)",
    "dct": "DCT low-pass",
    "klt": "per-patch KLT",
    "svd": "truncated SVD",
    "dense": "full backpropagation",
    "budget": "exact, last block(s) + head",
    "full_basis": "full Walsh basis (exact)",
}

#: ``(colour, marker, line style)`` of each policy or method in figures; a policy
#: and the method that uses it share a style (``lp_l1`` and ``lbp``, ``lp_linf`` and ``dct``...).
PLOT_STYLES = {
    "lp_l1": ("C0", "o", "-"),
    "lbp": ("C0", "o", "-"),
    "wht": ("C0", "o", "-"),
    "lp_linf": ("C1", "s", "-"),
    "dct": ("C1", "s", "-"),
    "energy": ("C2", "^", "--"),
    "energy_l2": ("C2", "^", "--"),
    "klt": ("C2", "^", "--"),
    "svd": ("C4", "D", ":"),
    "random": ("C7", "x", ":"),
    "dense": ("k", "*", "-"),
    "budget": ("C3", "P", "-."),
    "full_basis": ("C5", "D", ":"),
}


def method_name(key) -> str:
    """Short name of an approximation method (the key itself when unknown).

    Parameters
    ----------
    key : str
        ``"lbp"`` or a baseline name.

    Returns
    -------
    str

    Examples
    --------
    >>> from analysis.labels import method_name
    >>> method_name("lbp"), method_name("klt"), method_name("mine")
    ('LBP-WHT', 'per-patch KLT', 'mine')
    """
    return METHOD_NAMES.get(key, key)


def plot_label(key) -> str:
    """Legend label of a selection policy or method (the key itself when unknown).

    Parameters
    ----------
    key : str
        A policy of :func:`analysis.spectrum.energy_curves` or a method.

    Returns
    -------
    str

    Examples
    --------
    >>> from analysis.labels import plot_label
    >>> plot_label("dct"), plot_label("lp_l1")
    ('DCT low-pass', 'LP-L1 (i+j<k)')
    """
    return PLOT_LABELS.get(key, key)


def plot_style(key, index) -> tuple:
    """``(colour, marker, line style)`` of a policy or method.

    Parameters
    ----------
    key : str
        A policy or method.
    index : int
        Position of the line in its axes; picks the colour of unknown keys.

    Returns
    -------
    (str, str, str)
        For :meth:`matplotlib.axes.Axes.plot`'s ``color``, ``marker`` and
        ``linestyle``.

    Examples
    --------
    >>> from analysis.labels import plot_style
    >>> plot_style("lbp", 0), plot_style("mine", 2)
    (('C0', 'o', '-'), ('C7', 'v', '-'))
    """
    return PLOT_STYLES.get(key, (f"C{(index + 5) % 10}", "v", "-"))
