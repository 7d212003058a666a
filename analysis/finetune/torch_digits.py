"""``lbp finetune --engine torch``: the digits experiment on the PyTorch port of the ViT.

:func:`run_finetune_torch` is :func:`~analysis.finetune.run_finetune` with
PyTorch doing the training: the same :class:`~analysis.finetune.FinetuneConfig`,
the same data (:func:`~analysis.finetune.digit_tasks`), the same initial
weights (:meth:`analysis.vit.TinyViT.init_params`, loaded into
:class:`~analysis.finetune.torch_model.TorchViT`), the same mini-batches and
fresh heads per seed; pretraining runs in PyTorch too, cached apart from the
NumPy engine's (its key names the engine).  The adaptation is
:func:`~analysis.finetune.compare_methods` with every token layer of the ViT
converted by :func:`lbpcore.torch.convert` on the model's grid, and the
results carry the NumPy engine's ``setup`` so that the same summary, figures
and ``index.md`` are written from them.  Importing this module imports PyTorch.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from ..progress import progress_bar
from ..threads import blas_limit
from ..vit import TinyViT
from .cache import load_or_build
from .data import digit_tasks
from .experiment import FinetuneConfig, _adapt_config, _fresh_head
from .torch_engine import _torch_threads, compare_methods, train_torch
from .torch_model import TorchViT
from .torch_plan import build_torch_plan, capture_grad_y

__all__ = ["QUICK_TORCH_METHODS", "quick_torch_config", "run_finetune_torch"]

#: Methods of ``lbp finetune --engine torch --quick``.
QUICK_TORCH_METHODS = ("dense", "lp_l1:4", "lp_linf:8", "budget:1")


def quick_torch_config(config):
    """``--engine torch --quick``: 16 x 16 images (an 8 x 8 grid, one LBP patch), 4 methods, 1 seed, 30 steps.

    Pretraining is 100 steps, the test set is evaluated at the start and the
    end only and the gradients are checked twice: seconds on 2 cores.

    Parameters
    ----------
    config : FinetuneConfig
        Model and data settings to keep.

    Returns
    -------
    FinetuneConfig

    Examples
    --------
    >>> from analysis.finetune import FinetuneConfig
    >>> from analysis.finetune.torch_digits import quick_torch_config
    >>> cfg = quick_torch_config(FinetuneConfig.quick())
    >>> cfg.methods, cfg.adapt.steps, cfg.pretrain.steps, cfg.model.grid
    (('dense', 'lp_l1:4', 'lp_linf:8', 'budget:1'), 30, 100, (8, 8))
    """
    adapt = replace(_adapt_config(30), eval_every=30, check_every=15)
    return replace(config, methods=QUICK_TORCH_METHODS, seeds=1, adapt=adapt,
                   model=replace(config.model, image_size=16), pretrain=replace(config.pretrain, steps=100,
                                                                                eval_every=100))


def _layers(cfg):
    names = TinyViT(cfg.model).token_layers
    return list(names) if cfg.layers == "all" else cfg.layers


def _pretrain(cfg, task, cache_dir, progress, device):
    """Pretrained parameters (trained in PyTorch, cached), and the pretraining summary."""

    def build():
        model = TorchViT(cfg.model).to(device)
        sample = torch.as_tensor(task.train_images[:cfg.pretrain.batch_size]).to(device)
        plan = build_torch_plan("dense", model, sample, include=None)
        with progress_bar(cfg.pretrain.steps, "pretraining", enabled=None if progress else False) as bar:
            t0 = time.perf_counter()
            res = train_torch(model, plan, (task.train_images, task.train_labels),
                              (task.test_images, task.test_labels), cfg.pretrain, device=device, bar=bar)
        info = {"test_accuracy": res.test_accuracy, "eval_steps": res.eval_steps,
                "test_accuracy_curve": res.test_accuracy_curve, "loss_curve": res.loss_curve,
                "seconds": time.perf_counter() - t0, "engine": "torch"}
        return model.cpu().numpy_params(), info

    def check(arrays):
        TorchViT(cfg.model, params=arrays)  # raises ValueError on missing names or wrong shapes

    spec = dict(cfg.pretrain_spec(), engine="torch")
    arrays, info, status, path = load_or_build(spec, build, cache_dir=cache_dir, check=check)
    return arrays, dict(info, cache=status, cache_file=path.name)


def run_finetune_torch(config=None, *, cache_dir=None, progress=True, device="cpu", pad="none") -> dict:
    """The digits fine-tuning experiment with the PyTorch engine.

    Parameters
    ----------
    config : FinetuneConfig, optional
        Default :meth:`FinetuneConfig.full`.
    cache_dir : str or os.PathLike, optional
        Pretraining cache (default :func:`~analysis.finetune.default_cache_dir`).
    progress : bool, optional
        Progress bars on stderr (default True).
    device : str or torch.device, optional
        Default ``"cpu"``.  PyTorch's intra-op threads are limited to
        ``config.blas_threads`` while running (default 1: many small products).
    pad : {"none", "reflect", "zero"}, optional
        Padding of a grid the patch does not divide (default ``"none"``: it
        must divide it, as in the NumPy engine).

    Returns
    -------
    dict
        The layout of :func:`~analysis.finetune.run_finetune`'s (its ``setup``
        plus ``engine``, ``device`` and the torch version), with ``engine``
        ``"torch"``.

    Examples
    --------
    >>> import tempfile
    >>> from dataclasses import replace
    >>> from analysis.finetune import FinetuneConfig, TrainConfig
    >>> from analysis.finetune.torch_digits import run_finetune_torch
    >>> from analysis.vit import ViTConfig
    >>> cfg = replace(FinetuneConfig.quick(), methods=("dense", "lp_linf:8"),
    ...               model=ViTConfig(image_size=8, patch_size=1, in_chans=1, dim=8, depth=1, heads=2, num_classes=5,
    ...                               dtype="float64"),
    ...               pretrain=TrainConfig(steps=3, eval_every=3), adapt=TrainConfig(steps=2, eval_every=2))
    >>> res = run_finetune_torch(cfg, cache_dir=tempfile.mkdtemp(), progress=False)
    >>> res["engine"], [m["name"] for m in res["methods"]], res["pretrain"]["cache"]
    ('torch', ['dense', 'lp_linf:8'], 'built')
    >>> res["methods"][1]["param_distance_to_dense"][0] < 1e-9  # the full basis is exact: rounding, grown by AdamW
    True
    """
    cfg = FinetuneConfig.full() if config is None else config
    t_start = time.perf_counter()
    with blas_limit(cfg.blas_threads), _torch_threads(cfg.blas_threads):
        pre_task, adapt_task = digit_tasks(cfg.model.image_size, pretrain_digits=cfg.pretrain_digits,
                                           adapt_digits=cfg.adapt_digits, test_fraction=cfg.test_fraction,
                                           split_seed=cfg.split_seed, dtype=cfg.model.dtype)
        params, pre_info = _pretrain(cfg, pre_task, cache_dir, progress, device)
        layers = _layers(cfg)
        calibration = None
        if any(m.startswith("energy") for m in cfg.methods):
            k = min(cfg.calibration_batch, pre_task.train_labels.size)
            model = TorchViT(cfg.model, params=params).to(device)
            x = torch.as_tensor(pre_task.train_images[:k]).to(device)
            y = torch.as_tensor(np.asarray(pre_task.train_labels[:k])).to(device)
            calibration = capture_grad_y(model, x, y, layers)
        ada = cfg.adapt
        res = compare_methods(
            lambda seed: TorchViT(cfg.model, params=_fresh_head(cfg, params, seed)),
            (adapt_task.train_images, adapt_task.train_labels), (adapt_task.test_images, adapt_task.test_labels),
            methods=cfg.methods, include=layers, grid=cfg.model.grid,
            extra_tokens={"patch_embed": 0, "*": cfg.model.extra_tokens}, steps=ada.steps,
            batch_size=ada.batch_size, seeds=cfg.seeds, optimizer=ada.optimizer, lr=ada.lr,
            weight_decay=ada.weight_decay, warmup=ada.warmup, decay=ada.decay, eval_every=ada.eval_every,
            check_every=ada.check_every, patch=cfg.patch, pad=pad, calibration=calibration, device=device,
            progress=progress)
    torch_setup = res["setup"]
    g = cfg.model.grid
    res["setup"] = {
        "engine": "torch",
        "device": torch_setup["device"],
        "torch_version": torch_setup["torch_version"],
        "config": cfg.to_dict(),
        "grid": list(g),
        "patch": cfg.patch,
        "pad": pad,
        "patches": (-(-g[0] // cfg.patch)) * (-(-g[1] // cfg.patch)),
        "linear_layers": torch_setup["linear_layers"],
        "data": {"source": "sklearn.datasets.load_digits", "pretrain": pre_task.to_dict(),
                 "adapt": adapt_task.to_dict()},
        "seeds": torch_setup["seeds"],
        "dense_mflops": torch_setup["dense_mflops"],
        "lbpcore_version": torch_setup["lbpcore_version"],
    }
    res["pretrain"] = pre_info
    res.pop("summary", None)
    res["seconds"] = time.perf_counter() - t_start
    return res

