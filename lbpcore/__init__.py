"""lbpcore: low-rank backpropagation via the Walsh–Hadamard transform (LBP-WHT).

Exact fast Walsh–Hadamard transforms, selection of 2D Walsh basis images,
patch projection of token grids, and the dense and LBP-WHT backward passes of
linear layers, for NumPy, CuPy and any array API standard library from one code
path.  :mod:`lbpcore.testing` holds independent reference implementations.
"""

from ._bases import BasisSet
from ._cost import BackwardCost, backward_cost
from ._linear import Gradients, LBPLinear, dense_backward, lbp_backward, linear
from ._patches import PatchPlan, apply_projector, make_plan, padding, project, reconstruct
from ._select import select_bases
from ._wht import fwht, fwht2, ifwht, ifwht2, sequency_permutation, walsh_matrix

__version__ = "0.1.0"

__all__ = [
    "fwht",
    "ifwht",
    "fwht2",
    "ifwht2",
    "walsh_matrix",
    "sequency_permutation",
    "BasisSet",
    "select_bases",
    "PatchPlan",
    "make_plan",
    "padding",
    "project",
    "reconstruct",
    "apply_projector",
    "linear",
    "Gradients",
    "dense_backward",
    "lbp_backward",
    "LBPLinear",
    "BackwardCost",
    "backward_cost",
]
