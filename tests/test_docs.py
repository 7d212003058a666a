"""The documentation's code runs.

Each page under ``docs/`` (MyST Markdown) is split into fenced blocks:

* ```` ```python ```` blocks run top to bottom in one fresh namespace per page,
  in an empty working directory, with matplotlib on the Agg backend;
* ```` ```pycon ```` blocks (``>>>`` prompts) run in the same namespace as
  doctests, so their shown output is checked;
* ``.. plot::`` directives (inside ```` ```{eval-rst} ```` blocks) run in a
  fresh namespace each, as Sphinx runs them;
* a block preceded by the comment ``<!-- no-run -->`` (an optional PyTorch
  snippet, say) and every block of the GPU tutorial is only compiled, unless
  CuPy and a CUDA device are present, in which case the GPU tutorial runs too;
* the PyTorch tutorial runs when PyTorch is installed (with one intra-op
  thread: its tensors are small) and is only compiled otherwise.

The Sphinx build itself (``python -m sphinx -W -b html docs docs/_build/html``)
is run by ``.ci/run``, not here.
"""

from __future__ import annotations

import doctest
import re
import sys
import textwrap
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NO_RUN = "<!-- no-run -->"
#: pages whose code is only compiled unless a GPU is present
GPU_PAGES = {"tutorials/gpu_cupy.md"}
#: pages whose code is only compiled unless PyTorch is installed
TORCH_PAGES = {"tutorials/torch_models.md", "tutorials/finetune_torch.md"}
#: pages owned elsewhere whose code is only compiled
COMPILE_ONLY_PAGES = {"benchmarks.md", "studies/scale.md"}  # the study runs 30 minutes
#: generous per-page limit (the tutorials take a few seconds each)
TIME_LIMIT_S = 60.0

_FENCE_OPEN = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


@dataclass
class Block:
    kind: str  # "python", "pycon", "plot", "other"
    code: str
    lineno: int  # 1-based line of the first code line
    run: bool
    options: dict


def _plot_blocks(body: str, lineno: int):
    """``.. plot::`` directives of an eval-rst body: (options, code, lineno)."""
    lines = body.splitlines()
    out = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == ".. plot::":
            base = len(lines[i]) - len(lines[i].lstrip())
            i += 1
            options = {}
            while i < len(lines) and lines[i].strip().startswith(":"):
                key, _, value = lines[i].strip()[1:].partition(":")
                options[key.strip()] = value.strip()
                i += 1
            start = i
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > base):
                i += 1
            code = textwrap.dedent("\n".join(lines[start:i])).strip("\n")
            out.append((options, code, lineno + start))
        else:
            i += 1
    return out


def parse_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    previous = ""  # last non-blank line outside a block
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        fence, info = m.group("fence"), m.group("info").strip()
        start = i + 1
        i += 1
        closing = fence[0] * len(fence)
        while i < len(lines) and not (lines[i].startswith(closing) and not lines[i].strip(fence[0]).strip()):
            i += 1
        body = "\n".join(lines[start:i])
        i += 1
        run = previous != NO_RUN
        previous = ""
        lang = info.split()[0] if info else ""
        if lang in ("python", "py", "python3"):
            blocks.append(Block("python", body, start + 1, run, {}))
        elif lang == "pycon":
            blocks.append(Block("pycon", body, start + 1, run, {}))
        elif lang == "{eval-rst}":
            for options, code, lineno in _plot_blocks(body, start + 1):
                blocks.append(Block("plot", code, lineno, run, options))
        elif lang in ("{code-block}", "{code}") and "python" in info:
            blocks.append(Block("python", body, start + 1, False, {}))
        else:
            blocks.append(Block("other", body, start + 1, False, {}))
    return blocks


def _pages():
    return sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "_build" not in p.parts
                  and "generated" not in p.parts)


PAGES = _pages()
RUN_PAGES = [p for p in PAGES if p not in GPU_PAGES | TORCH_PAGES | COMPILE_ONLY_PAGES]


def _gpu_available() -> bool:
    try:
        import cupy  # noqa: PLC0415 - CuPy is optional

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _python_source(block: Block) -> str:
    if block.kind == "pycon":
        return doctest.script_from_examples(block.code)
    return block.code


def _compile(code: str, path, lineno: int = 1):
    """Compile page code as a reader's script would be: no ``__future__`` flags of this
    file, and padded so that tracebacks point at the line in the page."""
    return compile("\n" * (lineno - 1) + code, str(path), "exec", dont_inherit=True)


def run_page(page: str, tmp_path, monkeypatch):
    """Execute the runnable blocks of ``page``; return the shared namespace."""
    import matplotlib  # noqa: PLC0415 - matplotlib is optional (plot extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - pyplot only once the Agg backend is chosen

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    path = DOCS / page
    # a real module, so that dataclasses, pickle and Hypothesis can find what the page defines
    module = types.ModuleType("__docs__")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    parser = doctest.DocTestParser()
    start = time.perf_counter()
    try:
        for block in parse_blocks(path):
            if not block.run:
                continue
            where = f"{path}:{block.lineno}"
            if block.kind == "python":
                # pad with newlines so that tracebacks point at the line in the page
                exec(_compile(block.code, path, block.lineno), namespace)
            elif block.kind == "pycon":
                test = parser.get_doctest(block.code, namespace, where, str(path), block.lineno - 1)
                report = []
                result = runner.run(test, clear_globs=False, out=report.append)
                assert result.failed == 0, f"pycon block at {where} failed:\n" + "".join(report)
            elif block.kind == "plot":
                ns = {"__name__": "__plot__"}
                exec(_compile(block.code, path, block.lineno), ns)
                plt.close("all")
    finally:
        plt.close("all")
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_LIMIT_S, f"{page} took {elapsed:.1f} s to run"
    return namespace


@pytest.mark.parametrize("page", RUN_PAGES)
def test_page_runs(page, tmp_path, monkeypatch):
    run_page(page, tmp_path, monkeypatch)


@pytest.mark.parametrize("page", sorted(GPU_PAGES))
def test_gpu_page(page, tmp_path, monkeypatch):
    blocks = [b for b in parse_blocks(DOCS / page) if b.kind in ("python", "pycon")]
    assert blocks, f"{page} has no code"
    for block in blocks:
        _compile(_python_source(block), DOCS / page, block.lineno)
    if not _gpu_available():
        pytest.skip("CuPy with a CUDA device is not available: the GPU tutorial was only compiled")
    run_page(page, tmp_path, monkeypatch)


@pytest.mark.parametrize("page", sorted(TORCH_PAGES))
def test_torch_page(page, tmp_path, monkeypatch, torch_single_thread):
    run_page(page, tmp_path, monkeypatch)


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_compiles(page):
    for block in parse_blocks(DOCS / page):
        if block.kind in ("python", "pycon", "plot"):
            _compile(_python_source(block), DOCS / page, block.lineno)


def test_tutorials_have_runnable_code():
    tutorials = [p for p in PAGES if p.startswith("tutorials/") and p != "tutorials/index.md"]
    assert len(tutorials) >= 4
    for page in tutorials:
        blocks = [b for b in parse_blocks(DOCS / page) if b.kind in ("python", "pycon")]
        assert blocks, f"{page} has no Python code"
        if page not in GPU_PAGES:
            assert any(b.run for b in blocks), f"{page} has no runnable block"


def test_torch_only_in_no_run_blocks():
    """The library and the executed docs never need PyTorch or CuPy (but for the PyTorch tutorial)."""
    for page in RUN_PAGES:
        for block in parse_blocks(DOCS / page):
            if block.run and block.kind in ("python", "pycon", "plot"):
                assert not re.search(r"^\s*(import|from)\s+(torch|cupy)\b", _python_source(block), re.M), (
                    f"{page}:{block.lineno} imports torch or cupy in a block that runs"
                )


def test_plot_directives_have_unique_filename_prefix():
    # Inside MyST's eval-rst every plot directive restarts matplotlib's per-page
    # counter, so figures without an explicit prefix overwrite one another.
    seen = {}
    for page in PAGES:
        for block in parse_blocks(DOCS / page):
            if block.kind != "plot":
                continue
            prefix = block.options.get("filename-prefix")
            assert prefix, f"{page}:{block.lineno}: a plot directive needs :filename-prefix:"
            assert prefix not in seen, f"{page}:{block.lineno}: prefix {prefix!r} also used in {seen[prefix]}"
            seen[prefix] = f"{page}:{block.lineno}"


def test_readme_commands_quoted_in_getting_started():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"```(?:bash|sh|console)\n(.*?)```", readme, flags=re.S)
    assert m, "README.md has no command block"
    commands = [line.strip() for line in m.group(1).splitlines() if line.strip()]
    assert len(commands) >= 2
    page = (DOCS / "getting_started.md").read_text(encoding="utf-8")
    for command in commands:
        assert command in page, f"getting_started.md does not quote the README command {command!r}"


def test_conf_builds_offline():
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    assert "sphinx.ext.intersphinx" not in conf, "intersphinx would need the network at build time"
    for ext in ("sphinx.ext.autosummary", "numpydoc", "myst_parser", "matplotlib.sphinxext.plot_directive"):
        assert ext in conf


def test_docs_extra_installs_the_build():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib  # noqa: PLC0415 - Python 3.11+, skipped above on older versions

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    docs = " ".join(project["optional-dependencies"]["docs"]).lower()
    for requirement in ("sphinx", "numpydoc", "myst-parser", "matplotlib", "pydata-sphinx-theme",
                        "sphinx-copybutton", "sphinx-mathjax-offline"):
        assert requirement in docs, f"the docs extra does not install {requirement}"


def test_index_toctree_lists_pages():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for entry in ("getting_started", "method", "tutorials/index", "api/index", "benchmarks"):
        assert re.search(rf"^{re.escape(entry)}$", index, flags=re.M), f"index.md toctree lacks {entry}"


# -- cross-references from the tutorials to the API ---------------------------

_ROLE = re.compile(r"\{(?:func|class|meth|mod|data|attr|obj|exc)\}`([^`]*)`")
_OWN = ("lbpcore", "analysis")


def documented_names() -> set:
    """Full names that the API pages document: ``automodule``s and ``autosummary`` entries."""
    names = set()
    for rst in sorted((DOCS / "api").glob("*.rst")):
        module, in_summary = None, False
        for line in rst.read_text(encoding="utf-8").splitlines():
            m = re.match(r"\.\. (currentmodule|automodule):: (\S+)", line)
            if m:
                if m.group(1) == "automodule":
                    names.add(m.group(2))
                else:
                    module = m.group(2)
                in_summary = False
            elif line.startswith(".. autosummary::"):
                in_summary = True
            elif in_summary and line.startswith("   ") and not line.strip().startswith(":"):
                names.add(f"{module}.{line.strip()}")
            elif in_summary and line.strip() and not line.startswith(" "):
                in_summary = False
    return names


def _resolve(name):
    """The object that the dotted ``name`` names (None if it does not import)."""
    import importlib  # noqa: PLC0415 - only these tests import by name

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part, None)
        return obj
    return None


def api_used(page: Path) -> set:
    """Dotted names of :mod:`lbpcore` / :mod:`analysis` objects that the page's code imports or calls."""
    import ast  # noqa: PLC0415 - only these tests parse code

    used = set()
    for block in parse_blocks(page):
        if block.kind not in ("python", "pycon", "plot"):
            continue
        tree = ast.parse(_python_source(block))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in _OWN:
                used.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in _OWN:
                        aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                        used.add(a.name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                parts, value = [], node
                while isinstance(value, ast.Attribute):
                    parts.append(value.attr)
                    value = value.value
                if isinstance(value, ast.Name) and value.id in aliases:
                    used.add(".".join([aliases[value.id], *reversed(parts)]))
    return used


def _references(text: str) -> set:
    targets = set()
    for m in _ROLE.finditer(text):
        target = m.group(1)
        if "<" in target:
            target = target[target.index("<") + 1:target.rindex(">")]
        targets.add(target.lstrip("~"))
    return targets


TUTORIALS = [p for p in PAGES if p.startswith("tutorials/") and p != "tutorials/index.md"]


@pytest.mark.parametrize("page", TUTORIALS)
def test_tutorial_links_the_api_it_uses(page, monkeypatch):
    """Every documented lbpcore/analysis object a tutorial's code uses is cross-referenced on the page,
    under a name the API pages document (Sphinx renders an undocumented target as plain text)."""
    import inspect  # noqa: PLC0415 - only these tests inspect objects

    monkeypatch.syspath_prepend(str(ROOT))
    documented = documented_names()
    canonical = {}  # id(object) -> documented name (the shortest, i.e. the public one)
    for name in sorted(documented, key=lambda n: (len(n), n)):
        obj = _resolve(name)
        if inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj):
            canonical.setdefault(id(obj), name)
    text = (DOCS / page).read_text(encoding="utf-8")
    refs = _references(text)
    missing = []
    for name in sorted(api_used(DOCS / page)):
        obj = _resolve(name)
        if obj is None:  # lbpcore.torch without PyTorch
            continue
        target = name if name in documented else canonical.get(id(obj))
        if target is not None and target not in refs:
            missing.append(target)
    assert not missing, f"{page} uses but does not cross-reference: {missing}"
    # a method or attribute counts as documented on its documented class's page
    own = {t for t in refs if t.split(".")[0] in _OWN and t not in documented
           and not (t.rpartition(".")[0] in documented and inspect.isclass(_resolve(t.rpartition(".")[0]))
                    and hasattr(_resolve(t.rpartition(".")[0]), t.rpartition(".")[2]))}
    assert not own, f"{page} references undocumented names: {sorted(own)}"
