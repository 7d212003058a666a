"""The fine-tuning experiment on any PyTorch model: :func:`compare_methods`.

The torch engine of ``lbp finetune``: every method of
:mod:`analysis.finetune.torch_plan` trains a fresh copy of the user's
pretrained model (``model_fn(seed)``) with the same mini-batches, and the
results come back in the ``results.json`` layout of
:func:`~analysis.finetune.run_finetune` (accuracy per seed, loss curves,
gradient error and energy kept along training, backward MFLOPs, wall time of
the backward pass per step), which :func:`~analysis.finetune.summarize` reads.

Training uses :class:`torch.optim.AdamW` or :class:`torch.optim.SGD` with the
warm-up :class:`~analysis.finetune.Schedule` and weight decay on the 2-D
``*.weight`` parameters only, the same rules as the NumPy optimizers of
:mod:`analysis.finetune.optim`.  Importing this module imports PyTorch.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

import lbpcore

from .._outdir import check_output_dir
from ..io import json_text, markdown_table, write_files
from ..metrics import cosine, relative_error
from ..progress import progress_bar
from .experiment import SCHEMA, _method_entry
from .loop import GradientChecks, TrainConfig, TrainResult, batch_indices
from .markdown import methods_table
from .methods import parse_method
from .summary import summarize
from .torch_plan import build_torch_plan, capture_grad_y, find_sites

__all__ = ["train_torch", "compare_methods", "render_report"]


@contextlib.contextmanager
def _torch_threads(n):
    """PyTorch's intra-op threads limited to ``n`` (None: unchanged) within the block."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(min(int(n), before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _dtype_of(model):
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _as_batch(x, y, device, dtype):
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if x.is_floating_point():
        x = x.to(device=device, dtype=dtype)
    else:
        x = x.to(device)
    return x, y.to(device=device, dtype=torch.long)


def _is_pair(data):
    return isinstance(data, tuple) and len(data) == 2 and hasattr(data[0], "shape") and hasattr(data[1], "shape") \
        and len(data[0]) == len(data[1]) and np.ndim(data[1]) == 1


def _train_batches(train, batch_size, steps, seed):
    """``steps`` batches: seeded permutations of an ``(images, labels)`` pair, or an iterable cycled."""
    if _is_pair(train):
        x, y = train
        for idx in batch_indices(len(y), batch_size, steps, seed):
            yield x[idx], y[idx]
        return
    done = 0
    while done < steps:
        fresh = 0
        for batch in train:
            yield batch[0], batch[1]
            done += 1
            fresh += 1
            if done == steps:
                return
        if fresh == 0:
            raise ValueError(f"train: the iterable gave out after {done} batches of the {steps} steps asked for")


def _test_batches(test, batch_size=256):
    if _is_pair(test):
        x, y = test
        for lo in range(0, len(y), batch_size):
            yield x[lo:lo + batch_size], y[lo:lo + batch_size]
    else:
        yield from ((b[0], b[1]) for b in test)


def _evaluate(model, test, device, dtype, loss_fn):
    training = model.training
    model.eval()
    total, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for xb, yb in _test_batches(test):
            x, y = _as_batch(xb, yb, device, dtype)
            logits = model(x)
            total += float(loss_fn(logits, y)) * y.numel()
            correct += int((logits.argmax(dim=1) == y).sum())
            count += y.numel()
    model.train(training)
    if count == 0:
        raise ValueError("test: no examples")
    return total / count, correct / count


def _optimizer(model, trainable, config):
    params = dict(model.named_parameters())
    decay = [params[k] for k in trainable if k.endswith(".weight") and params[k].ndim == 2]
    rest = [params[k] for k in trainable if not (k.endswith(".weight") and params[k].ndim == 2)]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    lr = config.schedule()(0)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _check(model, plan, x, y, loss_fn, checks):
    """Compare the method's gradients (in ``.grad``) with the exact ones at the current weights."""
    params = dict(model.named_parameters())
    trained = list(plan.trainable)
    approx = {k: params[k].grad.detach().clone() for k in trained}
    with plan.exact(model):
        captured = capture_grad_y(model, x, y, plan.approximated, loss_fn) if plan.approximated else {}
        loss = loss_fn(model(x), y)
        exact = dict(zip(trained, torch.autograd.grad(loss, [params[k] for k in trained]), strict=True))

    def record(bucket, key, value):
        bucket.setdefault(key, []).append(float(value))

    def np64(t):
        return t.detach().cpu().double().numpy().ravel()

    flat_a = np.concatenate([np64(approx[k]) for k in trained])
    flat_e = np.concatenate([np64(exact[k]) for k in trained])
    record(checks.rel_error, "all", relative_error(flat_a, flat_e))
    record(checks.cosine, "all", cosine(flat_a, flat_e))
    for name in plan.adapted:
        k = name + ".weight"
        record(checks.rel_error, name, relative_error(np64(approx[k]), np64(exact[k])))
        record(checks.cosine, name, cosine(np64(approx[k]), np64(exact[k])))
    for name in plan.approximated:
        record(checks.energy_kept, name, plan.energy_kept(name, captured[name]))


def train_torch(model, plan, train, test, config, *, device="cpu", loss_fn=F.cross_entropy, bar=None,
                grad_hook=None) -> TrainResult:
    """Train a model, with ``plan`` already applied (:meth:`TorchPlan.apply`), in place.

    Parameters
    ----------
    model : torch.nn.Module
        On ``device``; trained in place.
    plan : TorchPlan
    train : (images, labels) pair or iterable of (images, labels) batches
        A pair of arrays or tensors gives seeded mini-batches
        (:func:`~analysis.finetune.batch_indices`, as the NumPy engine); an
        iterable is cycled until ``config.steps`` batches.
    test : (images, labels) pair or iterable of batches
    config : TrainConfig
    device : str or torch.device, optional
        Default ``"cpu"``.
    loss_fn : callable, optional
        ``loss_fn(logits, labels)``, default :func:`torch.nn.functional.cross_entropy`.
    bar : tqdm.tqdm, optional
        Advanced by one per step.
    grad_hook : callable, optional
        ``grad_hook(step, model)`` called after each backward pass and before
        the update (tests read or perturb ``.grad`` there).

    Returns
    -------
    TrainResult
        As :func:`~analysis.finetune.train`'s.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from analysis.finetune import TrainConfig
    >>> from analysis.finetune.torch_engine import train_torch
    >>> from analysis.finetune.torch_plan import build_torch_plan
    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> x, y = torch.randn(32, 16, 3), torch.randint(0, 2, (32,))
    >>> model = nn.Sequential(nn.Linear(3, 8), nn.GELU(), nn.Flatten(), nn.Linear(128, 2))
    >>> plan = build_torch_plan("lp_l1:2", model, x[:8], include="0", patch=4)
    >>> _ = plan.apply(model)
    >>> res = train_torch(model, plan, (x, y), (x, y), TrainConfig(steps=4, batch_size=8, eval_every=2,
    ...                                                             check_every=2))
    >>> len(res.loss_curve), res.eval_steps, res.checks.steps
    (4, [0, 2, 4], [0, 2])
    """
    dtype = _dtype_of(model)
    opt = _optimizer(model, plan.trainable, config)
    schedule = config.schedule()
    losses, seconds, eval_steps, accs, test_losses = [], [], [], [], []
    checks = GradientChecks()

    def run_eval(step):
        loss, acc = _evaluate(model, test, device, dtype, loss_fn)
        eval_steps.append(step)
        test_losses.append(float(loss))
        accs.append(float(acc))

    model.train()
    run_eval(0)
    for step, (xb, yb) in enumerate(_train_batches(train, config.batch_size, config.steps, config.seed)):
        x, y = _as_batch(xb, yb, device, dtype)
        loss = loss_fn(model(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the training loss is {loss.item()} at step {step}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        _sync(device)
        t0 = time.perf_counter()
        loss.backward()
        _sync(device)
        seconds.append(time.perf_counter() - t0)
        if config.check_every and step % config.check_every == 0:
            checks.steps.append(step)
            _check(model, plan, x, y, loss_fn, checks)
        if grad_hook is not None:
            grad_hook(step, model)
        for group in opt.param_groups:
            group["lr"] = schedule(step)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            run_eval(step + 1)
        if bar is not None:
            bar.update(1)
    return TrainResult(losses, eval_steps, accs, test_losses, seconds, checks)


def _first_batch(train, batch_size):
    return next(iter(_train_batches(train, batch_size, 1, 0)))


def _calibrate(model_fn, calibration, train, names, device, dtype, loss_fn):
    """Per-layer output gradients of the pretrained model (seed 0) on the calibration batch."""
    if calibration is not None and not _is_pair(calibration):
        return dict(calibration)
    xb, yb = calibration if calibration is not None else _first_batch(train, 64)
    model = model_fn(0).to(device)
    x, y = _as_batch(xb, yb, device, dtype)
    return capture_grad_y(model, x, y, names, loss_fn)


def compare_methods(model_fn, train, test, *, methods, include, grid="auto", extra_tokens=0, steps=200,
                    batch_size=32, seeds=1, optimizer="adamw", lr=1e-3, weight_decay=0.05, warmup=10,
                    decay="cosine", eval_every=None, check_every=None, patch=8, pad="reflect", blocks="blocks",
                    calibration=None, device="cpu", loss_fn=F.cross_entropy, threads=None, out=None,
                    progress=False) -> dict:
    """Fine-tune a PyTorch model with every backward method and seed; return (and write) the results.

    Parameters
    ----------
    model_fn : callable
        ``model_fn(seed) -> torch.nn.Module``: the pretrained model, with
        whatever seed-dependent part a run has (a fresh head...); called once
        per method and seed (plus once for calibration), so each run starts
        from the same weights within a seed.
    train, test : (images, labels) pair or iterable of (images, labels) batches
        Arrays (NumPy or torch) give seeded mini-batches, the same for every
        method of a seed; an iterable is iterated anew for every run (make its
        order deterministic for paired comparisons).
    methods : sequence of str
        Method specs (:func:`~analysis.finetune.parse_method`): ``dense``,
        ``lp_l1:k``, ``lp_linf:k`` (``lp_linf:n``: the full basis),
        ``energy_l2:r`` / ``energy_l1:r``, ``dct:r``, ``random:r`` (``nn.Linear``
        layers on grids the patch divides) and ``budget:k``; ``dense`` is put
        first if present (the reference of the gaps and parameter distances).
        See :mod:`analysis.finetune.torch_plan`.
    include : str or sequence of str
        Glob patterns of the layers the approximate methods replace (e.g.
        ``"blocks.*"``); the others stay dense.
    grid, extra_tokens
        As for :func:`lbpcore.torch.convert` (default ``"auto"``: each layer's
        own grid; ``extra_tokens``: class tokens in front of it).
    steps, batch_size : int, optional
        Optimizer steps per run (default 200) and images per step (default 32).
    seeds : int, optional
        Seeds ``0 .. seeds - 1`` (default 1).
    optimizer : {"adamw", "sgd"}, optional
    lr, weight_decay : float, optional
        Peak learning rate (default 1e-3) and decay of the 2-D weights (default 0.05).
    warmup : int, optional
        Linear warm-up steps (default 10).
    decay : {"cosine", "linear", "constant"}, optional
    eval_every, check_every : int, optional
        Test accuracy and gradient checks every this many steps (default ``steps // 5``; 0: no checks).
    patch : int, optional
        LBP patch size ``n`` (default 8).
    pad : {"reflect", "zero", "none"}, optional
        Padding of grids the patch does not divide (default ``"reflect"``).
    blocks : str, optional
        The block container of ``budget:k`` (default ``"blocks"``).
    calibration : (images, labels) pair or mapping, optional
        Batch whose output gradients (of ``model_fn(0)``) rank the bases of the
        ``energy_*`` methods, or those gradients per layer; default the first
        64 training examples.
    device : str or torch.device, optional
        Default ``"cpu"``; ``"cuda"`` runs the model and the LBP-WHT kernels on the GPU.
    loss_fn : callable, optional
        ``loss_fn(logits, labels)`` (default cross-entropy).
    threads : int, optional
        Limit PyTorch's intra-op threads to this many while running (default:
        unchanged); 1 is fastest for small models on a busy machine.
    out : str or os.PathLike, optional
        Also write ``results.json`` and ``index.md`` (:func:`render_report`) there, all at once.
    progress : bool, optional
        Progress bar on stderr (default False).

    Returns
    -------
    dict
        ``schema``, ``engine`` (``"torch"``), ``setup`` (device, dtype,
        per-layer grids, training, seeds, ``dense_mflops``...), ``methods``
        (one entry per method with the keys of
        :func:`~analysis.finetune.run_finetune`'s) and ``seconds``; plus
        ``summary`` (:func:`~analysis.finetune.summarize`).

    Raises
    ------
    ValueError
        On a bad method, pattern, grid or data (see :func:`~analysis.finetune.torch_plan.build_torch_plan`).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from analysis.finetune import compare_methods
    >>> def model_fn(seed):
    ...     torch.manual_seed(seed)
    ...     return nn.Sequential(nn.Linear(3, 8), nn.GELU(), nn.Flatten(), nn.Linear(128, 2))
    >>> x, y = torch.randn(64, 16, 3), torch.randint(0, 2, (64,))
    >>> res = compare_methods(model_fn, (x, y), (x, y), methods=["dense", "lp_linf:4"], include="0",
    ...                       patch=4, steps=3, batch_size=8)
    >>> [m["name"] for m in res["methods"]], res["methods"][1]["param_distance_to_dense"][0] < 1e-5
    (['dense', 'lp_linf:4'], True)
    """
    with _torch_threads(threads):
        return _compare(model_fn, train, test, methods=methods, include=include, grid=grid, extra_tokens=extra_tokens,
                        steps=steps, batch_size=batch_size, seeds=seeds, optimizer=optimizer, lr=lr,
                        weight_decay=weight_decay, warmup=warmup, decay=decay, eval_every=eval_every,
                        check_every=check_every, patch=patch, pad=pad, blocks=blocks, calibration=calibration,
                        device=device, loss_fn=loss_fn, out=out, progress=progress)


def _compare(model_fn, train, test, *, methods, include, grid, extra_tokens, steps, batch_size, seeds, optimizer, lr,
             weight_decay, warmup, decay, eval_every, check_every, patch, pad, blocks, calibration, device, loss_fn,
             out, progress):
    t_start = time.perf_counter()
    if out is not None:
        check_output_dir(out)
    parsed = [parse_method(m, patch=patch) for m in methods]
    names = [m.name for m in parsed]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"methods must be distinct and non-empty, got {list(methods)}")
    parsed.sort(key=lambda m: m.kind != "dense")
    if int(seeds) != seeds or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    every = max(1, steps // 5)
    config = TrainConfig(steps=steps, batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         warmup=min(warmup, steps), decay=decay, eval_every=eval_every or every,
                         check_every=every if check_every is None else check_every)
    probe = model_fn(0).to(device)
    dtype = _dtype_of(probe)
    sample, _ = _as_batch(*_first_batch(train, batch_size), device, dtype)
    sites = find_sites(probe, sample, include=include, grid=grid, extra_tokens=extra_tokens)
    del probe
    calib = None
    if any(m.kind == "lbp" and m.bases.startswith("energy") for m in parsed):
        calib = _calibrate(model_fn, calibration, train, [k for k, s in sites.items() if s.on_grid], device, dtype,
                           loss_fn)
    runs, plans, dense_final = {m.name: [] for m in parsed}, {}, {}
    with progress_bar(seeds * len(parsed) * steps, "fine-tuning", enabled=None if progress else False) as bar:
        for seed in range(seeds):
            for m in parsed:
                bar.set_description(f"fine-tuning {m.name} seed {seed}")
                model = model_fn(seed).to(device)
                plan = build_torch_plan(m, model, sample, include=include, patch=patch, pad=pad, seed=seed,
                                        calibration=calib, blocks=blocks, sites=sites)
                plan.apply(model)
                plans.setdefault(m.name, plan)
                t0 = time.perf_counter()
                res = train_torch(model, plan, train, test, replace(config, seed=seed), device=device,
                                  loss_fn=loss_fn, bar=bar)
                final = {k: v.detach().cpu().double().numpy().copy() for k, v in model.named_parameters()}
                runs[m.name].append({"seed": seed, "result": res, "seconds": time.perf_counter() - t0,
                                     "final": final})
                if m.kind == "dense":
                    dense_final[seed] = final
    first = plans[parsed[0].name]
    results = {
        "schema": SCHEMA,
        "engine": "torch",
        "setup": {
            "engine": "torch",
            "device": str(torch.device(device)),
            "dtype": str(dtype).replace("torch.", ""),
            "model": type(model).__name__,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "include": [include] if isinstance(include, str) else list(include),
            "patch": patch,
            "pad": pad,
            "grids": {k: list(s.grid) for k, s in sites.items() if s.on_grid},
            "extra_tokens": {k: s.extra_tokens for k, s in sites.items() if s.on_grid},
            "linear_layers": list(sites),
            "train": config.to_dict(),
            "seeds": list(range(seeds)),
            "dense_mflops": first.dense_mflops,
            "lbpcore_version": lbpcore.__version__,
            "torch_version": torch.__version__,
        },
        "pretrain": None,
        "methods": [_method_entry(plans[m.name], runs[m.name], dense_final) for m in parsed],
    }
    results["seconds"] = time.perf_counter() - t_start
    results["summary"] = summarize(results)
    if out is not None:
        write_files(out, {"index.md": render_report(results), "results.json": json_text(results)})
    return results


def render_report(results) -> str:
    """The ``index.md`` of :func:`compare_methods`: headline, set-up and the table of methods.

    Parameters
    ----------
    results : dict
        As returned by :func:`compare_methods`.

    Returns
    -------
    str
        Markdown; every number comes from ``results``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from analysis.finetune.torch_engine import compare_methods, render_report
    >>> model_fn = lambda seed: nn.Sequential(nn.Linear(3, 4), nn.Flatten(), nn.Linear(64, 2))
    >>> x, y = torch.randn(16, 16, 3), torch.randint(0, 2, (16,))
    >>> res = compare_methods(model_fn, (x, y), (x, y), methods=["dense"], include="0", patch=4, steps=2,
    ...                       batch_size=8)
    >>> render_report(res).splitlines()[0]
    '# LBP-WHT fine-tuning of Sequential'
    """
    s = results.get("summary") or summarize(results)
    st, tr = results["setup"], results["setup"]["train"]
    grids = sorted({tuple(g) for g in st["grids"].values()})
    layers = [[k, "×".join(map(str, g)), st["extra_tokens"][k]] for k, g in st["grids"].items()]
    lines = [
        f"# LBP-WHT fine-tuning of {st['model']}",
        "",
        f"Generated by `analysis.finetune.compare_methods` (lbpcore {st['lbpcore_version']}, PyTorch "
        f"{st['torch_version']}, {st['device']}, {st['dtype']}) in {results['seconds']:.0f} s"
        + (" with one seed: read the gaps as indicative." if len(st["seeds"]) == 1 else ".")
        + " All numbers are in `results.json`.",
        "",
        f"**Headline.** {s['headline']}",
        "",
        "## Set-up",
        "",
        f"* Model: `{st['model']}`, {st['parameters']:,} parameters; approximate methods replace "
        f"{len(st['grids'])} linear layers (`{'`, `'.join(st['include'])}`) on grids "
        f"{', '.join('×'.join(map(str, g)) for g in grids) or '–'}, LBP patches of {st['patch']} × {st['patch']}, "
        f"padding `{st['pad']}`.",
        f"* Training: {tr['steps']} {tr['optimizer']} steps of {tr['batch_size']} examples, learning rate "
        f"{tr['lr']:g} ({tr['warmup']} warm-up steps, {tr['decay']} decay), weight decay {tr['weight_decay']:g}; "
        f"{len(st['seeds'])} seed(s); within a seed every method starts from the same weights and sees the same "
        "batches.",
        f"* Backward MFLOPs per step: `lbpcore.backward_cost` of every trained linear layer; full BP "
        f"{st['dense_mflops']:.1f}.",
        "",
        "## Methods",
        "",
        methods_table(s),
        "",
        "## Layers",
        "",
        markdown_table(["layer", "grid", "extra tokens"], layers) if layers else "No layer is approximated.",
        "",
    ]
    return "\n".join(lines)
