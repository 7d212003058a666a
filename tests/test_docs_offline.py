"""The documentation site works without network: no remote script, MathJax served from the site.

Three levels, each skipped cleanly when what it needs is missing:

* a tiny site (one page with math and a code block) built in a temporary
  directory with the project's own ``docs/conf.py`` (needs the ``docs`` extra);
* the real site in ``docs/_build/html``, when it has been built (``.ci/run``
  builds it, then runs this file again, slow tests included);
* the method page of that site opened by headless Chromium in a network
  namespace without any network (``unshare -n``, root only): MathJax must have
  typeset its formulas (``<mjx-container>`` elements, no ``$$`` left).

"Remote" means an absolute URL (``http:``, ``https:``, ``//host``): every
``<script src>`` and every stylesheet or preload ``<link href>`` must be a
relative path to a file of the site, and no inline script may name a URL.
Hyperlinks (``<a href>``) to other sites are allowed: they load nothing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "_build" / "html"
EXTENSIONS = ("sphinx", "pydata_sphinx_theme", "sphinx_copybutton", "sphinx-mathjax-offline", "myst_parser",
              "numpydoc")
_URL = re.compile(r"\b(?:https?:)?//[\w.-]+\.[a-z]{2,}", re.I)


class _Loads(HTMLParser):
    """What a page makes the browser fetch: script sources, stylesheets, preloads, inline scripts."""

    def __init__(self):
        super().__init__()
        self.scripts, self.links, self.inline = [], [], []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self._in_script = "src" not in attrs
            if "src" in attrs:
                self.scripts.append(attrs["src"])
        elif tag == "link" and set((attrs.get("rel") or "").split()) & {"stylesheet", "preload", "modulepreload"}:
            self.links.append(attrs.get("href", ""))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.inline.append(data)


def _is_remote(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme or parts.netloc)


def check_site(site: Path) -> dict:
    """Assert that no page of ``site`` loads anything remote; return {page: its script sources}."""
    pages = sorted(p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts)  # not templates
    assert pages, f"no HTML page under {site}"
    scripts, present = {}, set()
    for page in pages:
        loads = _Loads()
        loads.feed(page.read_text(encoding="utf-8"))
        where = page.relative_to(site)
        for url in loads.scripts + loads.links:
            assert not _is_remote(url), f"{where} loads a remote resource: {url}"
            target = os.path.normpath(page.parent / urlsplit(url).path)
            if target not in present:
                assert os.path.isfile(target), f"{where} loads {url}, which is not in the site"
                present.add(target)
        for code in loads.inline:
            assert not _URL.search(code), f"{where} has an inline script naming a URL: {_URL.search(code).group()}"
        scripts[where.as_posix()] = loads.scripts
    return scripts


def check_mathjax(site: Path, page: str, scripts: dict):
    """The page loads MathJax from the site, with its CHTML fonts beside it."""
    mathjax = [s for s in scripts[page] if "mathjax" in s.lower()]
    assert mathjax, f"{page} has math but loads no MathJax"
    (src,) = mathjax
    path = (site / page).parent / urlsplit(src).path
    assert path.name == "tex-chtml.js" and path.is_file(), src
    fonts = path.parent / "output" / "chtml" / "fonts" / "woff-v2"
    assert fonts.is_dir() and any(fonts.glob("*.woff")), "MathJax's CHTML fonts are not in the site"


def _need_docs_extra():
    missing = [m for m in EXTENSIONS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the docs extra is not installed (missing {', '.join(missing)})")


# -- unit checks of the checker: it must catch what it is for ------------------


@pytest.mark.parametrize("html, what", [
    ('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>', "remote resource"),
    ('<script src="//cdn.example.org/x.js"></script>', "remote resource"),
    ('<link rel="stylesheet" href="http://fonts.example.com/a.css">', "remote resource"),
    ('<script>window.MathJax = {loader: {paths: {mathjax: "https://cdn.example.org/mj"}}}</script>', "inline"),
    ('<script src="_static/missing.js"></script>', "not in the site"),
])
def test_checker_catches_remote_loads(tmp_path, html, what):
    (tmp_path / "index.html").write_text(f"<html><head>{html}</head><body></body></html>")
    with pytest.raises(AssertionError, match=what):
        check_site(tmp_path)


def test_checker_accepts_local_loads_and_links(tmp_path):
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "a.js").write_text("")
    (tmp_path / "index.html").write_text('<script src="_static/a.js?v=1"></script><script>var x = 1;</script>'
                                         '<a href="https://www.sphinx-doc.org/">Sphinx</a>')
    assert check_site(tmp_path) == {"index.html": ["_static/a.js?v=1"]}


# -- a tiny site built with the project's configuration ------------------------

TINY_PAGE = """\
# Tiny

Inline $x W^\\top$ and a display:

$$
\\nabla_W = \\sum_b G_b^\\top x_b
$$

```python
print("copy me")
```
"""


@pytest.mark.slow  # a Sphinx build, about 7 s on 2 cores
def test_tiny_site_with_project_conf_is_offline(tmp_path):
    _need_docs_extra()
    src, out = tmp_path / "src", tmp_path / "html"
    src.mkdir()
    (src / "index.md").write_text(TINY_PAGE)
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", "-c", str(ROOT / "docs"), str(src),
                           str(out)], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "MPLBACKEND": "Agg"}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    scripts = check_site(out)
    check_mathjax(out, "index.html", scripts)
    assert any("copybutton" in s for s in scripts["index.html"]), "sphinx-copybutton is not active"
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "pydata-sphinx-theme" in html or "pst-" in html, "the theme is not pydata-sphinx-theme"


# -- the real site, once built -------------------------------------------------


def _need_site():
    if not (SITE / "method.html").is_file():
        pytest.skip("the documentation is not built (python -m sphinx -W -b html docs docs/_build/html)")


def test_built_site_loads_nothing_remote():
    _need_site()
    scripts = check_site(SITE)
    check_mathjax(SITE, "method.html", scripts)
    for page, html in ((p, (SITE / p).read_text(encoding="utf-8")) for p in scripts):
        if 'class="math' in html:
            check_mathjax(SITE, page, scripts)


@pytest.mark.slow  # Chromium's start and MathJax, about 5 s
def test_method_page_typesets_math_without_network():
    _need_site()
    chromium = next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome")
                     if shutil.which(c)), None)
    unshare = shutil.which("unshare")
    if chromium is None or unshare is None or os.geteuid() != 0:
        pytest.skip("needs Chromium and root's `unshare -n` (a namespace without network)")
    proc = subprocess.run([unshare, "-n", chromium, "--headless", "--no-sandbox", "--disable-gpu",
                           "--virtual-time-budget=15000", "--dump-dom", (SITE / "method.html").as_uri()],
                          capture_output=True, text=True, timeout=180)
    dom = proc.stdout
    assert "</html>" in dom, proc.stderr[-2000:]
    typeset = dom.count("<mjx-container")
    # every inline and display formula of the page becomes one <mjx-container>
    formulas = (SITE / "method.html").read_text(encoding="utf-8").count('class="math')
    assert formulas > 20 and typeset >= formulas, f"{typeset} of {formulas} formulas typeset"
    assert "\\(" not in re.sub(r"<(script|pre)\b.*?</\1>", "", dom, flags=re.S), "raw LaTeX left on the page"
