"""``python -m analysis``: the ``lbp`` command line (see :mod:`analysis.cli` and :mod:`analysis._entry`)."""

from ._entry import console

raise SystemExit(console())
