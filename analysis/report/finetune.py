"""The fine-tuning section of ``lbp report``: the headline of a quick ``lbp finetune`` run.

The rest of the report measures the gradient of one batch of an untrained
network; this section answers the question that matters for training: adapted
with LBP-WHT, does a pretrained network end up as good as with full
backpropagation, and at what backward cost?  It runs
:meth:`analysis.finetune.FinetuneConfig.headline` (one seed, a few methods; the
pretraining is cached on disk) and keeps the headline numbers; the full
experiment is ``lbp finetune``.
"""

from __future__ import annotations

import importlib.util

from ..finetune import run_finetune, summarize
from ..finetune.summary import accuracy_text
from ..io import markdown_table

__all__ = ["finetune_headline", "finetune_section"]


def finetune_headline(config=None, *, cache_dir=None, progress=True) -> dict:
    """Run a small fine-tuning experiment and keep what the report states.

    Parameters
    ----------
    config : FinetuneConfig or None, optional
        The run (``lbp report`` uses :meth:`FinetuneConfig.headline`); None
        skips it.
    cache_dir : str or os.PathLike, optional
        Pretraining cache (default :func:`analysis.finetune.default_cache_dir`).
    progress : bool, optional
        Progress bars on stderr (default True).

    Returns
    -------
    dict
        ``headline`` (:func:`analysis.finetune.headline`), ``rows`` (per method:
        name, label, accuracy, gap to full BP, backward MFLOPs and fraction),
        ``steps``, ``seeds``, ``pretrain_accuracy``, ``cache`` and ``seconds``;
        or ``{"skipped": reason}`` when ``config`` is None or scikit-learn is
        missing.

    Examples
    --------
    >>> from analysis.report.finetune import finetune_headline
    >>> finetune_headline(None)
    {'skipped': 'not run with the reduced --quick workload'}
    """
    if config is None:
        return {"skipped": "not run with the reduced --quick workload"}
    if importlib.util.find_spec("sklearn") is None:
        return {"skipped": "scikit-learn is not installed (pip install 'lbpcore[finetune]')"}
    res = run_finetune(config, cache_dir=cache_dir, progress=progress)
    s = summarize(res)
    keep = ("name", "label", "kind", "seeds", "accuracy_mean", "accuracy_std", "gap_points", "backward_mflops",
            "fraction_of_dense")
    return {
        "headline": s["headline"],
        "rows": [{k: r[k] for k in keep} for r in s["rows"]],
        "steps": res["setup"]["config"]["adapt"]["steps"],
        "seeds": len(res["setup"]["seeds"]),
        "pretrain_accuracy": res["pretrain"]["test_accuracy"],
        "cache": res["pretrain"]["cache"],
        "seconds": res["seconds"],
    }


def finetune_section(headline) -> list:
    """The lines of the report's fine-tuning section.

    Parameters
    ----------
    headline : dict
        As returned by :func:`finetune_headline`.

    Returns
    -------
    list of str
        A heading, the headline, a small table and a pointer to ``lbp finetune``,
        ending with an empty line.

    Examples
    --------
    >>> from analysis.report.finetune import finetune_section
    >>> finetune_section({"skipped": "not run"})[2]
    '*Skipped: not run.* Run `lbp finetune --quick` (minutes) or `lbp finetune` for the full experiment.'
    """
    lines = ["## Fine-tuning: does it train as well?", ""]
    if "skipped" in headline:
        return lines + [f"*Skipped: {headline['skipped']}.* Run `lbp finetune --quick` (minutes) or `lbp finetune` "
                        "for the full experiment.", ""]
    table = [[r["label"], accuracy_text(r), "0" if r["kind"] == "dense" else f"{r['gap_points']:+.1f}",
              f"{r['backward_mflops']:.1f}", f"{100 * r['fraction_of_dense']:.0f} %"] for r in headline["rows"]]
    return lines + [
        f"A small ViT pretrained on scikit-learn's digits 0-4 (test accuracy {100 * headline['pretrain_accuracy']:.1f} "
        f"%) is adapted to the digits 5-9 for {headline['steps']} steps with {headline['seeds']} "
        f"seed{'s' if headline['seeds'] != 1 else ''}, each method from the same weights and batches "
        f"({headline['seconds']:.0f} s, pretraining cache: {headline['cache']}).",
        "",
        f"**{headline['headline']}**",
        "",
        markdown_table(["method", "test accuracy", "Δ vs full BP (points)", "backward MFLOPs/step", "of full BP"],
                       table),
        "",
        "A quick run: `lbp finetune` runs every method (LBP-WHT ranks, energy selection, DCT and random subspaces, "
        "the exact budget baseline, the full-basis check) over several seeds and writes the Pareto view.",
        "",
    ]
