"""``python -m analysis``: the ``lbp`` command line (see :mod:`analysis.cli`)."""

from .cli import main

raise SystemExit(main())
