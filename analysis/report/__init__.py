"""``lbp report``: the built-in workload, analysed layer by layer, written as a report directory.

:func:`build_report` runs the workload (:mod:`analysis.report.workload`,
with the headline of a fine-tuning run from :mod:`analysis.report.finetune`),
computes the headline numbers (:mod:`analysis.report.summary`), renders the
figures (:mod:`analysis.report.figures`) and the text
(:mod:`analysis.report.markdown`), and only then writes ``index.md``,
``results.json`` and the ``fig_*.png`` files, each atomically.  What the
workload measures and how to read the report: :doc:`/getting_started`.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..io import json_text, markdown_table, write_files
from .figures import render_figures
from .markdown import render_markdown
from .workload import ReportConfig, ReportResult, run_workload

__all__ = ["ReportConfig", "ReportResult", "build_report", "run_workload", "render_markdown", "markdown_table"]


def build_report(out="lbp-report", *, quick=False, config=None, progress=True):
    """Run the built-in workload and write the report directory.

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

    Returns
    -------
    ReportResult

    Raises
    ------
    OSError
        If the directory cannot be created or written; files already in it
        are left as they were.

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
    if out.exists() and not out.is_dir():  # fail before a long run, not after it
        raise NotADirectoryError(20, "exists and is not a directory", str(out))
    if config is None:
        config = ReportConfig.quick_config() if quick else ReportConfig()
    results = run_workload(config, progress=progress)
    figures = render_figures(results)
    payload = dict(figures)
    payload["results.json"] = json_text(results)
    payload["index.md"] = render_markdown(results, figures=list(figures))
    files = write_files(out, payload)
    return ReportResult(out=out, index=out / "index.md", files=files, results=results,
                        seconds=time.perf_counter() - t0)
