"""``lbp report``: a model analysed layer by layer, written as a report directory.

:func:`build_report` runs the built-in workload (:mod:`analysis.report.workload`,
with the headline of a fine-tuning run from :mod:`analysis.report.finetune`)
or measures the layers of a user's capture (:mod:`analysis.report.captured`;
both share :mod:`analysis.report._layers`), computes the headline numbers
(:mod:`analysis.report.summary`), renders the
figures (:mod:`analysis.report.figures`) and the text
(:mod:`analysis.report.markdown`), and only then writes ``index.md``,
``results.json`` and the ``fig_*.png`` files, all at once
(:func:`analysis.io.write_files`: a reader or a crash sees the old report or
the new one).  What the workload measures and how to read the report:
:doc:`/getting_started`.
"""

from __future__ import annotations

import time
from pathlib import Path

from .._outdir import check_output_dir
from ..io import json_text, markdown_table, write_files
from .captured import run_capture
from .figures import render_figures
from .markdown import render_markdown
from .workload import ReportConfig, ReportResult, run_workload

__all__ = ["ReportConfig", "ReportResult", "build_report", "run_workload", "run_capture", "render_markdown",
           "markdown_table"]


def build_report(out="lbp-report", *, quick=False, config=None, progress=True, capture=None, memory=None,
                 scheduler=None):
    """Run the built-in workload, or measure a capture, and write the report directory.

    Parameters
    ----------
    out : str or os.PathLike, optional
        Output directory (created if missing); default ``"lbp-report"``.
    quick : bool, optional
        Use :meth:`ReportConfig.quick_config` (a few seconds) instead of the
        full workload; ignored when ``config`` is given.
    config : ReportConfig, optional
        Explicit configuration.
    progress : bool, optional
        Show progress on stderr (default True).
    capture : analysis.capture.Capture, optional
        Report on these captured layers (:func:`run_capture`) instead of the
        built-in workload.
    memory, scheduler : optional
        For a sharded capture, as for :func:`run_capture`.

    Returns
    -------
    ReportResult

    Raises
    ------
    OSError
        If the directory cannot take the report (checked before the workload
        runs: see :func:`analysis._outdir.check_output_dir`) or cannot be
        written; the report already in it is then left as it was, and files
        of yours in it are kept in any case.

    Examples
    --------
    >>> import json, tempfile
    >>> from analysis.report import build_report
    >>> res = build_report(tempfile.mkdtemp(), quick=True, progress=False)
    >>> json.loads(res.out.joinpath("results.json").read_text())["setting"]["bases"]
    'lp_l1:6'
    """
    t0 = time.perf_counter()
    out = Path(out)
    check_output_dir(out)  # fail before a long run, not after it
    if config is None:
        config = ReportConfig.quick_config() if quick else ReportConfig()
    if capture is None:
        results = run_workload(config, progress=progress)
    else:
        results = run_capture(capture, config, progress=progress, memory=memory, scheduler=scheduler)
    figures = render_figures(results)
    payload = dict(figures)
    payload["results.json"] = json_text(results)
    payload["index.md"] = render_markdown(results, figures=list(figures))
    files = write_files(out, payload)
    return ReportResult(out=out, index=out / "index.md", files=files, results=results,
                        seconds=time.perf_counter() - t0)
