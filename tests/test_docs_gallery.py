"""The gallery page (docs/gallery.md) shows every figure the ``lbp`` commands write, as current code draws it.

The figures are committed PNGs, written by ``python docs/gallery/regenerate.py``
(``lbp report``, ``lbp report --capture`` on the PyTorch tutorial's model,
``lbp finetune --quick``) together with each run's ``results.json``.  Every
figure of both commands is a pure function of that ``results.json``
(:func:`analysis.report.figures.render_figures`,
:func:`analysis.finetune.figures.render_figures`), so the test redraws each one
from the committed results with the current code and compares pixels: a change to
a figure (a label, a colour, a new panel, a renamed file) fails here until the
gallery is regenerated.

Tolerance: with the matplotlib version that drew the gallery (recorded in
``docs/gallery/manifest.json``) rendering is deterministic, and the pixels must be
identical.  Under another matplotlib version glyph rasterization and antialiasing
may move edges by a pixel, so the test then asks for the same image size and at
most 1 % of the pixels differing by more than 0.1 (on the 0-1 scale of each
channel).  That catches a new or missing curve, legend entry or panel (one method
less in the Pareto figure changes 7.5 % of its pixels), not a changed character
(0.01 %), which only the exact comparison sees.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GALLERY = ROOT / "docs" / "gallery"
PAGE = ROOT / "docs" / "gallery.md"
MANIFEST = json.loads((GALLERY / "manifest.json").read_text(encoding="utf-8"))
RUNS = ("report", "capture", "finetune")
#: share of pixels allowed to differ (by more than PIXEL_TOL) under another matplotlib version
FOREIGN_PIXEL_SHARE = 0.01
PIXEL_TOL = 0.1


def _regenerate_module():
    spec = importlib.util.spec_from_file_location("gallery_regenerate", GALLERY / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _figure_names(run):
    if run == "finetune":
        from analysis.finetune.figures import FIGURES  # noqa: PLC0415 - matplotlib-free, but keep imports local
    else:
        from analysis.report.figures import FIGURES  # noqa: PLC0415
    return FIGURES


def _render(run, results):
    if run == "finetune":
        from analysis.finetune.figures import render_figures  # noqa: PLC0415 - needs matplotlib (plot extra)
    else:
        from analysis.report.figures import render_figures  # noqa: PLC0415 - needs matplotlib (plot extra)
    return render_figures(results)


def test_manifest_matches_the_regeneration_script():
    regenerate = _regenerate_module()
    assert sorted(MANIFEST) == sorted(RUNS) == sorted(regenerate.RUNS)
    for run in RUNS:
        assert MANIFEST[run]["command"] == "lbp " + " ".join(regenerate.RUNS[run])
    code = regenerate.tutorial_capture_code()
    compile(code, "torch_models.md", "exec")
    assert "cap.save(" in code.split("```")[-1], "the capture code must end with the block that saves it"


@pytest.mark.parametrize("run", RUNS)
def test_gallery_holds_every_figure_the_command_writes(run):
    figures = _figure_names(run)
    assert sorted(MANIFEST[run]["figures"]) == sorted(figures), f"regenerate the gallery: {run} writes {figures}"
    present = sorted(p.name for p in (GALLERY / run).iterdir())
    assert present == sorted([*figures, "results.json"]), f"docs/gallery/{run} holds {present}"


def test_page_shows_every_figure_with_two_lines():
    text = PAGE.read_text(encoding="utf-8")
    blocks = re.findall(r"^```\{figure\} (\S+)\n(.*?)^```", text, flags=re.S | re.M)
    shown = [path for path, _ in blocks]
    expected = [f"gallery/{run}/{name}" for run in RUNS for name in _figure_names(run)]
    assert sorted(shown) == sorted(expected), "the gallery page and the figures differ"
    assert len(set(shown)) == len(shown), "a figure is shown twice"
    for path, body in blocks:
        assert ":alt:" in body, f"{path} has no alt text"
        assert body.count("**Shows**:") == 1 and body.count("**Read**:") == 1, (
            f"{path}: the caption needs one 'Shows' and one 'Read' paragraph")
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert re.search(r"^gallery$", index, flags=re.M), "index.md does not list the gallery"


def stale_figures(run, drawn, exact) -> list:
    """The committed figures of ``run`` that differ from ``drawn`` (name to PNG bytes), with why."""
    import numpy as np  # noqa: PLC0415 - with matplotlib only
    from matplotlib.image import imread  # noqa: PLC0415 - matplotlib is optional (plot extra)

    stale = []
    for name, png in drawn.items():
        new, old = imread(io.BytesIO(png)), imread(GALLERY / run / name)
        if new.shape != old.shape:
            stale.append(f"{name}: size {old.shape[:2]} committed, {new.shape[:2]} drawn")
            continue
        differ = np.any(np.abs(new - old) > (0 if exact else PIXEL_TOL), axis=-1).mean()
        if differ > (0 if exact else FOREIGN_PIXEL_SHARE):
            stale.append(f"{name}: {differ:.2%} of the pixels differ")
    return stale


def _results(run):
    return json.loads((GALLERY / run / "results.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("run", RUNS)
def test_committed_figures_are_what_the_current_code_draws(run):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    exact = matplotlib.__version__ == MANIFEST[run]["matplotlib"]
    stale = stale_figures(run, _render(run, _results(run)), exact)
    assert not stale, (f"docs/gallery/{run} is stale ({'; '.join(stale)}): "
                       f"run `python docs/gallery/regenerate.py {run}`")


@pytest.mark.slow  # three renders of the fine-tuning figures, about 8 s
def test_stale_figure_is_caught():
    """The comparison is not vacuous: one changed legend label is caught by the exact comparison,
    a method missing from the run by the tolerant one."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    results = _results("finetune")
    assert not stale_figures("finetune", _render("finetune", results), exact=True)
    relabelled = json.loads(json.dumps(results))
    (method,) = [m for m in relabelled["methods"] if m["name"] == "lp_l1:4"]
    method["label"] = method["label"].replace("r=10", "r=11")
    assert [s.split(":")[0] for s in stale_figures("finetune", _render("finetune", relabelled), exact=True)] == [
        "fig_pareto.png", "fig_loss.png", "fig_grad_error.png"]
    fewer = json.loads(json.dumps(results))
    fewer["methods"] = [m for m in fewer["methods"] if m["name"] != "budget:1"]
    assert "fig_pareto.png" in " ".join(stale_figures("finetune", _render("finetune", fewer), exact=False))
