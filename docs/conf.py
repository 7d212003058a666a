"""Sphinx configuration for the lbpcore documentation.

Build (from the repository root, no network needed)::

    python -m sphinx -W -b html docs docs/_build/html

Figures in the method page and the tutorials are drawn at build time by
matplotlib's ``plot`` directive from code that calls :mod:`lbpcore` and
:mod:`analysis`.  CuPy is never imported; PyTorch only by autodoc, for the
pages of :mod:`lbpcore.torch`, and where it is not installed it is mocked
(``autodoc_mock_imports``), so the build does not need it (the class signatures
there then read ``(*args, **kwargs)``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # import the checkout, installed or not

import lbpcore  # noqa: E402

# -- project -----------------------------------------------------------------

project = "lbpcore"
author = "lbpcore contributors"
copyright = "lbpcore contributors, BSD-3-Clause"
version = release = lbpcore.__version__

# -- extensions --------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "matplotlib.sphinxext.plot_directive",
]
# No intersphinx: the build must not need the network.

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
templates_path = ["_templates"]

# -- autodoc / autosummary / numpydoc ------------------------------------------

autosummary_generate = True  # writes docs/generated/*.rst (gitignored)
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # types come from the numpydoc sections
autodoc_mock_imports = [] if importlib.util.find_spec("torch") else ["torch"]  # lbpcore.torch

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False
# A modest validation: every documented object has a docstring with a summary.
numpydoc_validation_checks = {"GL08", "SS01"}
numpydoc_validation_exclude = {r"\.__init__$", r"\.__call__$", r"\.__iter__$"}

# -- MyST ---------------------------------------------------------------------

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# -- matplotlib plot directive -----------------------------------------------

plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 100)]
plot_rcparams = {"figure.dpi": 100, "savefig.bbox": "tight", "font.size": 9}
plot_apply_rcparams = True
plot_pre_code = "import numpy as np\nimport matplotlib.pyplot as plt\n"
plot_working_directory = str(ROOT)

# -- HTML ---------------------------------------------------------------------

html_theme = "alabaster"
html_title = f"lbpcore {release}"
html_static_path = []
html_theme_options = {
    "description": "Low-rank backprop via the Walsh–Hadamard transform",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "230px",
}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
