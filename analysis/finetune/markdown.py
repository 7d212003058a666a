"""The text of ``lbp finetune``'s ``index.md``: set-up, the table of methods, findings computed from the numbers."""

from __future__ import annotations

from ..io import markdown_table
from .figures import FIGURES
from .summary import accuracy_text, summarize

__all__ = ["render_markdown", "methods_table"]




def _pct(v, digits=0):
    return "–" if v is None else f"{100 * v:.{digits}f} %"


def _sci(v):
    return "–" if v is None else (f"{v:.3f}" if v >= 1e-3 else f"{v:.1e}")


def _gap(r):
    if r["gap_points"] is None:
        return "–"
    if r["kind"] == "dense":
        return "0"
    if r.get("seeds", 2) == 1:
        return f"{r['gap_points']:+.1f}"
    return f"{r['gap_points']:+.1f} ± {r['paired_gap_std_points']:.1f}"


def _names(rows):
    return ", ".join(f"`{r['name']}`" for r in rows) or "none"


def methods_table(summary) -> str:
    """The Markdown table of methods: accuracy, gap to full BP, backward cost, gradient error, energy kept.

    Parameters
    ----------
    summary : dict
        As returned by :func:`~analysis.finetune.summarize`.

    Returns
    -------
    str
        One row per method (:func:`analysis.io.markdown_table`).

    Examples
    --------
    >>> from analysis.finetune.markdown import methods_table
    >>> row = {"name": "dense", "label": "full BP", "kind": "dense", "bases": None, "rank": None,
    ...        "accuracy_mean": 0.9, "accuracy_std": 0.01, "gap_points": 0.0, "paired_gap_std_points": 0.0,
    ...        "backward_mflops": 270.5, "fraction_of_dense": 1.0, "grad_rel_error": 0.0,
    ...        "energy_kept_first": None, "energy_kept_last": None, "backward_ms": 30.0}
    >>> print(methods_table({"rows": [row]}).splitlines()[2])
    | full BP | – | – | 90.0 ± 1.0 % | 0 | 270.5 | 100 % | 0.0e+00 | – | 30 |
    """
    headers = ["method", "bases", "rank", "test accuracy", "Δ vs full BP (points)", "backward MFLOPs/step",
               "of full BP", "gradient rel. error", "grad_y energy kept (start → end)", "backward ms/step"]
    rows = []
    for r in summary["rows"]:
        first, last = r["energy_kept_first"], r["energy_kept_last"]
        kept = "–" if first is None else f"{_pct(first)} → {_pct(last)}"
        rows.append([r["label"], f"`{r['bases']}`" if r["bases"] else "–", r["rank"] if r["rank"] else "–",
                     accuracy_text(r), _gap(r), f"{r['backward_mflops']:.1f}", _pct(r["fraction_of_dense"]),
                     _sci(r["grad_rel_error"]), kept, "–" if r["backward_ms"] is None else f"{r['backward_ms']:.0f}"])
    return markdown_table(headers, rows)


def _versus_dense(s, seeds):
    lbp = [r for r in s["rows"] if r["name"] in s["lbp"]]
    if s["dense"] is None or not lbp:
        return []
    parts = [f"`{r['name']}` {r['gap_points']:+.1f} points at {_pct(r['fraction_of_dense'])}" for r in lbp]
    matching = [r for r in lbp if r["matches"]]
    unresolved = [r for r in lbp if r["gap_resolved"] is False and not r["matches"]]
    text = (f"* **LBP-WHT against full backpropagation.** Mean test-accuracy gap of each selection (cost as a "
            f"fraction of full BP's backward): {'; '.join(parts)}. Within {s['match_points']:g} point of full BP: "
            f"{_names(matching)}.")
    if unresolved:
        text += (f" The gaps of {_names(unresolved)} are smaller than twice their standard error over the "
                 f"{seeds} seeds: this run does not resolve them.")
    return [text]


def _exact(s):
    out = []
    for r in s["exact_check"]:
        same = r["gap_points"] is not None and abs(r["gap_points"]) < 1e-9
        dist = r["param_distance_to_dense"]
        out.append(
            f"* **Exactness check.** `{r['name']}` keeps every Walsh basis of every patch (no padding), so it must "
            f"reproduce full backpropagation: final accuracy {'identical in every seed' if same else 'DIFFERENT'}"
            + ("" if dist is None else f", final parameters within {_sci(dist)} (relative) of full BP's")
            + f", gradients within {_sci(r['grad_rel_error'])} of the exact ones along training (rounding in the "
            "model's dtype; the float64 test reproduces dense training to 1e-10).")
    return out


def _same_rank(s):
    by = {r["name"]: r for r in s["rows"]}
    out = []
    for rank, names in s["same_rank"].items():
        rows = sorted((by[n] for n in names), key=lambda r: -r["accuracy_mean"])
        listed = ", ".join(f"`{r['name']}` {accuracy_text(r)}" for r in rows)
        out.append(f"* **At the same rank r = {rank}** (bases per 8 x 8 patch): {listed}; the best is "
                   f"`{rows[0]['name']}`, the worst `{rows[-1]['name']}` "
                   f"({rows[0]['accuracy_mean'] * 100 - rows[-1]['accuracy_mean'] * 100:.1f} points apart).")
    return out


def _budget(s):
    out = []
    lbp = [r for r in s["rows"] if r["name"] in s["lbp"]]
    for b in s["budget"]:
        better = [r for r in lbp
                  if r["backward_mflops"] <= b["backward_mflops"] and r["accuracy_mean"] > b["accuracy_mean"]]
        out.append(f"* **Budget baseline.** Training only the {b['label']} with exact "
                   f"gradients reaches {accuracy_text(b)} at "
                   f"{_pct(b['fraction_of_dense'])} of full BP's cost; LBP-WHT selections at no more cost that "
                   f"adapt better: {_names(better)}.")
    return out


def _cost_and_time(s):
    lbp = [r for r in s["rows"] if r["kind"] in ("lbp", "subspace")]
    dearer = [r for r in lbp if r["fraction_of_dense"] >= 1.0]
    out = []
    if dearer:
        out.append(f"* **Cost.** The projections onto and back from the bases are counted "
                   f"(`lbpcore.backward_cost`); at this model's widths they make {_names(dearer)} cost as much "
                   f"as full BP or more.")
    d = s["dense"]
    timed = [r for r in lbp if r["backward_ms"] is not None]
    if d is not None and d["backward_ms"] and timed:
        parts = ", ".join(f"`{r['name']}` {r['backward_ms'] / d['backward_ms']:.2f}x" for r in timed)
        out.append(f"* **Wall time** of the whole backward pass per step relative to full BP ({d['backward_ms']:.0f} "
                   f"ms; the fastest seed's median, reported, not asserted): {parts}. The attention and "
                   "normalisation backward is not reduced; DCT and random subspaces run through the analysis "
                   "implementation, not a fast kernel.")
    return out


def _drift(s):
    rows = [r for r in s["rows"] if r["energy_kept_first"] is not None and not r["exact"]]
    if not rows:
        return []
    deltas = [100 * (r["energy_kept_last"] - r["energy_kept_first"]) for r in rows]
    worst = max(range(len(rows)), key=lambda i: abs(deltas[i]))
    return [f"* **Spectrum drift.** Between the first and the last gradient check the energy of `grad_y` kept by "
            f"each selection changes by {min(deltas):+.1f} to {max(deltas):+.1f} points (largest: "
            f"`{rows[worst]['name']}`, {_pct(rows[worst]['energy_kept_first'], 1)} → "
            f"{_pct(rows[worst]['energy_kept_last'], 1)})."]


def _model_name(results):
    if results.get("engine") == "torch":
        return (f"`TorchViT` (the PyTorch port of `TinyViT`, trained by PyTorch {results['setup']['torch_version']} "
                f"on {results['setup']['device']}; LBP-WHT layers from `lbpcore.torch.convert`)")
    return "`TinyViT`"


def _optimizer(train):
    return "AdamW" if train["optimizer"] == "adamw" else f"SGD (momentum {train['momentum']:g})"


def _setup(results, s):
    st, cfg = results["setup"], results["setup"]["config"]
    m, pre, ada = cfg["model"], results["pretrain"], cfg["adapt"]
    data = st["data"]
    approx = next((x["approximated_layers"] for x in results["methods"] if x["approximated_layers"]), [])
    total = sum(data[task][part] for task in ("pretrain", "adapt") for part in ("train", "test"))
    return [
        "## Set-up",
        "",
        f"* Data: the {total} handwritten digits shipped with scikit-learn (`{data['source']}`, 8 x 8 pixels, "
        "nothing downloaded), "
        f"resized bilinearly to {m['image_size']} x {m['image_size']}. Pretraining on digits "
        f"{data['pretrain']['digits']} ({data['pretrain']['train']} train / {data['pretrain']['test']} test), "
        f"adaptation to digits {data['adapt']['digits']} ({data['adapt']['train']} train / "
        f"{data['adapt']['test']} test), a fixed stratified split.",
        f"* Model: {_model_name(results)}, {m['depth']} blocks, width {m['dim']}, {m['heads']} heads, "
        f"MLP ratio {m['mlp_ratio']:g}, "
        f"{m['patch_size']} x {m['patch_size']} pixel patches: a {st['grid'][0]} x {st['grid'][1]} token grid, "
        f"{st['patches']} LBP patches of {st['patch']} x {st['patch']} (no padding); {m['dtype']}.",
        f"* Pretraining: {cfg['pretrain']['steps']} AdamW steps of {cfg['pretrain']['batch_size']} images, "
        f"test accuracy {_pct(pre['test_accuracy'], 1)} (cache: {pre['cache']}).",
        f"* Adaptation: a fresh head plus the whole network, {ada['steps']} {_optimizer(ada)} steps of "
        f"{ada['batch_size']} images, learning rate {ada['lr']:g} with {ada['warmup']} warm-up steps and a "
        f"{ada['decay']} decay, weight decay {ada['weight_decay']:g} on the linear weights; "
        f"{len(st['seeds'])} seed{'s' if len(st['seeds']) != 1 else ''} (head initialisation, batch order, random "
        "subspaces); within a seed every method starts from the same weights and sees the same batches.",
        f"* Approximate methods act on {len(approx)} linear layers ({', '.join(f'`{n}`' for n in approx)}); the head "
        "is always exact. Backward MFLOPs per step: `lbpcore.backward_cost` of every trained linear layer (both "
        f"GEMMs, plus the projections for LBP-WHT); full BP: {st['dense_mflops']:.1f} MFLOPs.",
        f"* Gradient checks every {ada['check_every']} steps compare each method's gradients with the exact ones at "
        "the current weights on the same batch.",
        "",
    ]


def render_markdown(results, summary=None, figures=FIGURES) -> str:
    """The text of ``index.md``.

    Parameters
    ----------
    results : dict
        As returned by :func:`~analysis.finetune.run_finetune`.
    summary : dict, optional
        Its :func:`~analysis.finetune.summarize` (computed if not given).
    figures : sequence of str, optional
        File names of the figures to link (default
        :data:`analysis.finetune.figures.FIGURES`).

    Returns
    -------
    str
        Title and headline, findings, set-up, the table of methods, figures
        and notes; every number comes from ``results``.

    Examples
    --------
    >>> import tempfile
    >>> from dataclasses import replace
    >>> from analysis.finetune import FinetuneConfig, TrainConfig, run_finetune
    >>> from analysis.finetune.markdown import render_markdown
    >>> from analysis.vit import ViTConfig
    >>> cfg = replace(FinetuneConfig.quick(), methods=("dense", "lp_l1:2"),
    ...               model=ViTConfig(image_size=8, patch_size=1, in_chans=1, dim=8, depth=1, heads=2, num_classes=5),
    ...               pretrain=TrainConfig(steps=2), adapt=TrainConfig(steps=2, eval_every=1, check_every=1))
    >>> text = render_markdown(run_finetune(cfg, cache_dir=tempfile.mkdtemp(), progress=False))
    >>> text.splitlines()[0]
    '# LBP-WHT fine-tuning: a pretrained ViT adapted to new digits'
    """
    s = summarize(results) if summary is None else summary
    seeds = len(results["setup"]["seeds"])
    model = results["setup"]["config"]["model"]
    captions = {
        "fig_pareto.png": "Test accuracy after adaptation against backward MFLOPs per step (mean ± std over seeds); "
                          "grey: the Pareto front, dashed: full backpropagation.",
        "fig_loss.png": "Training loss along adaptation (mean over seeds, moving average).",
        "fig_grad_error.png": "Left: relative error of each method's gradient (all trained parameters) against the "
                              "exact one at the current weights. Right: energy of the exact `grad_y` kept by the "
                              "selection, mean over the approximated layers.",
    }
    lines = [
        "# LBP-WHT fine-tuning: a pretrained ViT adapted to new digits",
        "",
        f"Generated by `lbp finetune` (lbpcore {results['setup']['lbpcore_version']}) in {results['seconds']:.0f} s"
        + (" with one seed: no spread is available, read the gaps as indicative." if seeds == 1 else ".")
        + " All numbers are in `results.json`.",
        "",
        f"**Headline.** {s['headline']}",
        "",
        "## Findings",
        "",
        *_versus_dense(s, seeds), *_exact(s), *_same_rank(s), *_budget(s), *_cost_and_time(s), *_drift(s),
        f"* **Pareto set** (no other method as accurate at no more cost): {', '.join(f'`{n}`' for n in s['pareto'])}.",
        "",
        *_setup(results, s),
        "## Methods",
        "",
        f"Test accuracy: mean ± standard deviation over seeds. Δ: mean gap to full BP ± the standard deviation of "
        f"the per-seed (paired) gaps. A method *matches* full BP within {s['match_points']:g} point.",
        "",
        methods_table(s),
        "",
        "## Figures",
        "",
    ]
    for name in figures:
        lines += [f"![{name}]({name})", "", f"*{captions.get(name, name)}*", ""]
    lines += [
        "## Notes",
        "",
        f"* A small model on small images: widths of {model['dim']} to {int(model['dim'] * model['mlp_ratio'])} "
        "channels, far below the paper's, so the projections weigh more against the GEMMs than they would there.",
        "* Backward MFLOPs count the linear layers the method trains; the attention products and normalisations "
        "are the same for every method that backpropagates through them, and are left out.",
        "* Reproduce with `lbp finetune --out DIR` (`--quick` for one seed and fewer steps).",
        "",
    ]
    return "\n".join(lines)
