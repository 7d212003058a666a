"""Projection of token grids onto selected 2D Walsh–Hadamard bases (SPEC sections 4–5).

Padding, patch extraction, the 2D transform and the selection are folded into
small constant matrices, so the padded grid is never materialized and channels
never move.  :mod:`._plan` holds the plan and the padding, :mod:`._dispatch`
chooses among three kernels (:mod:`._blocked`, :mod:`._direct`,
:mod:`._separable`), and :mod:`._public` holds the public functions.
Reconstruction applies the transposed Walsh rows restricted to the interior of
each patch (the crop) in the reverse order.
"""

from ._dispatch import project_raw, reconstruct_raw
from ._plan import PADS, PatchPlan, make_plan, padding, plan_for
from ._public import apply_projector, project, reconstruct
from ._separable import separable_ops

__all__ = [
    "PADS",
    "PatchPlan",
    "apply_projector",
    "make_plan",
    "padding",
    "plan_for",
    "project",
    "project_raw",
    "reconstruct",
    "reconstruct_raw",
    "separable_ops",
]
