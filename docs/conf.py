"""Sphinx configuration for the lbpcore documentation.

Build (from the repository root, no network needed)::

    python -m sphinx -W -b html docs docs/_build/html

Figures in the method page and the tutorials are drawn at build time by
matplotlib's ``plot`` directive from code that calls :mod:`lbpcore` and
:mod:`analysis`.  CuPy is never imported; PyTorch only by autodoc, for the
pages of :mod:`lbpcore.torch`, and where it is not installed it is mocked
(``autodoc_mock_imports``), so the build does not need it (the class signatures
there then read ``(*args, **kwargs)``).

Viewing the site needs no network either: the theme (pydata-sphinx-theme) ships
its scripts and fonts, and MathJax is copied into ``_static/mathjax``
(sphinx-mathjax-offline); tests/test_docs_offline.py checks it.  The gallery's
figures are committed PNGs (docs/gallery/regenerate.py, checked by
tests/test_docs_gallery.py).
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
    "sphinx-mathjax-offline",  # serves MathJax 3 from _static/mathjax: no CDN at view time
    "sphinx_copybutton",
    "numpydoc",
    "myst_parser",
    "matplotlib.sphinxext.plot_directive",
]
# No intersphinx: the build must not need the network.  Nor does viewing the site:
# MathJax is copied into the site (sphinx-mathjax-offline sets ``mathjax_path`` to
# ``mathjax/tex-chtml.js`` under ``_static``), and the theme ships its own fonts and
# scripts; tests/test_docs_offline.py checks that no page references a remote script.

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

# -- copy button --------------------------------------------------------------

# Strip the prompts of pycon (">>> ", "... ") and console ("$ ") blocks, and copy
# only the input lines.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = True
copybutton_exclude = ".linenos, .gp, .go"

# -- HTML (pydata-sphinx-theme, the theme of NumPy, SciPy and PyWavelets) ------

html_theme = "pydata_sphinx_theme"
html_title = f"lbpcore {release}"
html_static_path = ["_static"]
html_css_files = ["lbpcore.css"]
html_logo = "_static/lbpcore-logo.svg"
html_favicon = "_static/lbpcore-logo.svg"
html_show_sourcelink = True  # "Show Source" in the right-hand column
html_copy_source = True
html_theme_options = {
    "logo": {"text": "lbpcore"},
    "navbar_start": ["navbar-logo", "lbp-version"],
    "navbar_end": ["theme-switcher", "navbar-icon-links"],  # light / dark / system
    "secondary_sidebar_items": ["page-toc", "sourcelink"],  # in-page contents, source link
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "header_links_before_dropdown": 6,  # the rest under "More": one line at 1200 px
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
# no left column on the pages without sub-pages (the theme would show an empty one)
html_sidebars = {page: [] for page in ("index", "getting_started", "method", "large_data", "benchmarks", "gallery")}


# -- broken references to the project's own API are errors ---------------------
#
# Sphinx resolves ``{func}`lbpcore.x``` silently to plain text when ``lbpcore.x``
# is not documented under that name (``nitpicky`` would also flag every external
# name).  This hook warns — so ``-W`` fails — for an unresolved reference to
# ``lbpcore.*`` or ``analysis.*`` written in a page of docs/ (references inside
# the docstrings that the API pages pull in are the modules' business).


def _missing_own_reference(app, env, node, contnode):
    target = node.get("reftarget", "").lstrip("~.")
    source = node.source or ""  # a page of docs/, or "<module>.py:docstring of ..."
    if node.get("refdomain") == "py" and target.split(".")[0] in ("lbpcore", "analysis"):
        if source.startswith(str(ROOT / "docs")) and source.endswith((".md", ".rst")):
            from sphinx.util import logging  # noqa: PLC0415 - only when a reference is missing

            logging.getLogger(__name__).warning(f"unresolved reference to {target!r}", location=node)
    return None


def setup(app):
    app.connect("missing-reference", _missing_own_reference)
