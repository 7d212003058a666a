"""Docstring examples run as doctests, and every public name is documented.

* One test per module of :mod:`lbpcore` and :mod:`analysis`: every ``>>>``
  example in the module's docstrings runs (``NORMALIZE_WHITESPACE | ELLIPSIS``,
  matplotlib on the Agg backend, in an empty working directory).
* Every public name (``lbpcore.__all__``, ``lbpcore.testing.__all__``,
  ``lbpcore.torch.__all__`` when PyTorch is installed, ``analysis.__all__``
  and the ``__all__`` of each public ``analysis`` submodule) has a numpydoc
  docstring with an Examples section, documents its parameters and return
  value, and is listed in the API reference pages ``docs/api/*.rst``.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import analysis
import lbpcore
import lbpcore.testing

ROOT = Path(__file__).resolve().parents[1]
API_DIR = ROOT / "docs" / "api"
PACKAGES = ("lbpcore", "analysis")
OPTIONFLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _modules():
    """Every module of the packages, by name; ``__main__`` modules are never imported."""
    names = []
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        names.append(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg_name + "."):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue
            names.append(info.name)
    return sorted(names)


MODULES = _modules()


@pytest.fixture
def agg(monkeypatch, tmp_path):
    """Agg backend, an empty working directory, and no figure left open."""
    import matplotlib  # noqa: PLC0415 - matplotlib is optional (plot extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - pyplot only once the Agg backend is chosen

    monkeypatch.chdir(tmp_path)
    yield
    plt.close("all")


def _needs_torch(modname) -> bool:
    """Modules that import PyTorch (an optional dependency) or whose examples do: skipped without it."""
    return (modname in ("lbpcore.torch", "analysis.capture", "analysis.torch_models")
            or modname.startswith(("lbpcore.torch.", "analysis.torch_models.", "analysis.finetune.torch_"))
            or modname == "analysis.finetune.scale_study")


def _torch_installed() -> bool:
    try:
        import torch  # noqa: F401, PLC0415 - PyTorch is optional
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("modname", MODULES)
def test_doctests(modname, agg):
    if _needs_torch(modname):
        pytest.importorskip("torch")
    module = importlib.import_module(modname)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    report = []
    for test in finder.find(module, modname):
        runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} doctest example(s) failed in {modname}:\n" + "".join(report)


# --------------------------------------------------------------------------
# public names
# --------------------------------------------------------------------------


def _public_names():
    """``(qualified module, name, object)`` for every public name."""
    out = []
    seen = set()

    def add(modname, names):
        module = importlib.import_module(modname)
        for name in names:
            key = (modname, name)
            if key not in seen:
                seen.add(key)
                out.append((modname, name, getattr(module, name)))

    add("lbpcore", lbpcore.__all__)
    add("lbpcore.testing", lbpcore.testing.__all__)
    try:
        add("lbpcore.torch", importlib.import_module("lbpcore.torch").__all__)
    except ImportError:  # PyTorch is optional
        pass
    add("analysis", getattr(analysis, "__all__", ()))
    for modname in MODULES:
        if not modname.startswith("analysis."):
            continue
        if any(part.startswith("_") for part in modname.split(".")[1:]):
            continue
        if _needs_torch(modname) and not _torch_installed():
            continue
        module = importlib.import_module(modname)
        add(modname, getattr(module, "__all__", ()))
    return out


PUBLIC = _public_names()
PUBLIC_IDS = [f"{m}.{n}" for m, n, _ in PUBLIC]


@pytest.mark.parametrize(
    "modname", [m for m in MODULES if m.startswith("analysis.") and not m.rsplit(".", 1)[-1].startswith("_")]
)
def test_public_analysis_modules_define_all(modname):
    module = importlib.import_module(modname)
    assert isinstance(getattr(module, "__all__", None), (list, tuple)), f"{modname} must define __all__"
    for name in module.__all__:
        assert hasattr(module, name), f"{modname}.__all__ lists {name!r}, which does not exist"


def _is_data(obj):
    return not (inspect.isclass(obj) or callable(obj) or inspect.ismodule(obj))


def _own_doc(obj):
    """The object's own docstring (not one inherited from a builtin type)."""
    doc = obj.__doc__ if inspect.isclass(obj) or callable(obj) else None
    return inspect.cleandoc(doc) if doc else ""


def _section(doc, title):
    return re.search(rf"^{title}\n-{{{len(title)}}}\s*$", doc, flags=re.M) is not None


def _section_names(doc, title):
    """Parameter names listed in a numpydoc section (``a, b : type`` lines)."""
    m = re.search(rf"^{title}\n-{{{len(title)}}}\n(.*?)(?=^\S[^\n]*\n-{{3,}}[ \t]*$|\Z)", doc, flags=re.M | re.S)
    if not m:
        return set()
    names = set()
    for line in m.group(1).splitlines():
        if not line or line[0].isspace():
            continue
        head = line.split(" : ", 1)[0]
        for part in head.split(","):
            part = part.strip().lstrip("*")
            if part:
                names.add(part)
    return names


@pytest.mark.parametrize(("modname", "name", "obj"), PUBLIC, ids=PUBLIC_IDS)
def test_public_name_has_numpydoc_docstring(modname, name, obj):
    if inspect.ismodule(obj):  # a package may export its submodules
        assert (obj.__doc__ or "").strip(), f"module {obj.__name__} has no docstring"
        return
    if _is_data(obj):
        # constants are documented with a ``#:`` comment above their assignment
        source = inspect.getsource(importlib.import_module(getattr(obj, "__module__", None) or modname))
        assert re.search(rf"^#:.*\n{re.escape(name)}\s*[:=]", source, flags=re.M), (
            f"{modname}.{name} needs a '#:' doc comment above its assignment"
        )
        return
    doc = _own_doc(obj)
    assert doc.strip(), f"{modname}.{name} has no docstring"
    assert doc.splitlines()[0].strip(), f"{modname}.{name}: the docstring must start with a one-line summary"
    assert _section(doc, "Examples"), f"{modname}.{name}: the docstring has no Examples section"
    assert ">>>" in doc.split("Examples", 1)[1], f"{modname}.{name}: the Examples section has no >>> example"

    documented = _section_names(doc, "Parameters") | _section_names(doc, "Other Parameters")
    if inspect.isclass(obj):
        if dataclasses.is_dataclass(obj):
            # fields may be documented as attributes; private fields are implementation details
            documented |= _section_names(doc, "Attributes")
        target = obj.__init__
        if target is object.__init__:
            return
    else:
        target = obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return
    params = [
        p.name
        for p in sig.parameters.values()
        if p.name not in ("self", "cls") and not p.name.startswith("_")
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    missing = [p for p in params if p not in documented]
    assert not missing, f"{modname}.{name}: parameters {missing} are not documented"
    extra = sorted(documented - {p.name for p in sig.parameters.values()} - ({"*args", "**kwargs"}))
    if not inspect.isclass(obj):
        assert not extra, f"{modname}.{name}: documents parameters {extra} that are not in the signature"
        returns_none = sig.return_annotation in (None, "None")
        if not (returns_none or name.startswith("assert_")):
            assert _section(doc, "Returns") or _section(doc, "Yields"), (
                f"{modname}.{name}: the docstring has no Returns section"
            )


# --------------------------------------------------------------------------
# the API reference lists every public name
# --------------------------------------------------------------------------

_DIRECTIVE = re.compile(r"^(\s*)\.\. ([a-z:]+)::\s*(\S*)\s*$")


def _api_entries():
    """Dotted names listed by the API pages (autosummary entries and auto* directives)."""
    entries = []
    for path in sorted(API_DIR.glob("*.rst")):
        current = None
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            m = _DIRECTIVE.match(lines[i])
            i += 1
            if not m:
                continue
            indent, directive, arg = len(m.group(1)), m.group(2), m.group(3)
            if directive in ("currentmodule", "module", "py:currentmodule", "py:module"):
                current = arg
            elif directive == "autosummary":
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    item = lines[i].strip()
                    i += 1
                    if item and not item.startswith(":"):
                        item = item.lstrip("~")
                        entries.append((path.name, item if current is None else f"{current}.{item}"))
            elif directive in ("autofunction", "autoclass", "autodata", "autoexception", "automodule"):
                entries.append((path.name, arg if "." in arg or current is None else f"{current}.{arg}"))
    return entries


def _resolve(dotted):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_api_pages_resolve():
    entries = _api_entries()
    assert entries, "no autosummary entries found in docs/api/*.rst"
    bad = []
    for page, dotted in entries:
        if _needs_torch(dotted) and not _torch_installed():
            continue  # lbpcore.torch's names, without PyTorch
        try:
            _resolve(dotted)
        except (ImportError, AttributeError):
            bad.append(f"{page}: {dotted}")
    assert not bad, "API pages list names that do not exist:\n" + "\n".join(bad)


@pytest.mark.parametrize(("modname", "name", "obj"), PUBLIC, ids=PUBLIC_IDS)
def test_public_name_in_api_reference(modname, name, obj):
    listed = {}
    for _page, dotted in _api_entries():
        try:
            listed[id(_resolve(dotted))] = dotted
        except (ImportError, AttributeError):
            continue
    assert id(obj) in listed, f"{modname}.{name} is not listed in any docs/api/*.rst page"
