"""The fine-tuning experiment: pretrain once, adapt with every method and seed, collect the numbers.

:func:`run_finetune` pretrains a :class:`~analysis.vit.TinyViT` on one digits
task (cached on disk, :mod:`analysis.finetune.cache`), then adapts a fresh head
plus the network to the other task with every backward method of the
configuration (:mod:`analysis.finetune.methods`) and every seed, and returns a
plain dict: the ``results.json`` of ``lbp finetune``.  Within a seed every
method starts from the same weights and sees the same mini-batches, so the
methods differ only by their backward pass.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

import lbpcore

from ..metrics import relative_error
from ..progress import progress_bar
from ..threads import blas_limit
from ..vit import TinyViT, ViTConfig
from .cache import load_or_build
from .data import digit_tasks
from .loop import TrainConfig, train
from .methods import build_plan, parse_method

__all__ = ["SCHEMA", "FULL_METHODS", "QUICK_METHODS", "HEADLINE_METHODS", "FinetuneConfig", "run_finetune"]

#: Identifier of the layout of the results dict.
SCHEMA = "lbp-finetune/1"

#: Methods of the full run.
FULL_METHODS = ("dense", "lp_l1:2", "lp_l1:4", "lp_l1:6", "lp_l1:8", "energy_l2:10", "dct:10", "random:10",
                "budget:1", "lp_linf:8")

#: Methods of ``--quick``.
QUICK_METHODS = ("dense", "lp_l1:2", "lp_l1:4", "budget:1", "lp_linf:8")

#: Methods of the headline run in ``lbp report``.
HEADLINE_METHODS = ("dense", "lp_l1:4", "budget:1")

_MODEL = ViTConfig(image_size=32, patch_size=2, in_chans=1, dim=32, depth=2, heads=2, mlp_ratio=2.0,
                   num_classes=5)
_PRETRAIN = TrainConfig(steps=300, batch_size=32, lr=2e-3, warmup=20, eval_every=100)


def _adapt_config(steps, lr=2e-3):
    every = max(1, steps // 5)
    return TrainConfig(steps=steps, batch_size=16, lr=lr, warmup=min(10, steps), eval_every=every, check_every=every)


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything a fine-tuning experiment depends on.

    Attributes
    ----------
    methods : tuple of str
        Method specs (:func:`~analysis.finetune.parse_method`); ``dense``
        first if present (the reference of every parameter distance).
    seeds : int
        Seeds ``0 .. seeds - 1``: fresh head, mini-batch order, random subspaces.
    adapt : TrainConfig
        Training of each adaptation run (its ``seed`` is replaced per run).
    pretrain : TrainConfig
        Training of the pretraining run.
    model : ViTConfig
        Default: 32 x 32 one-channel images, 2 x 2 pixel patches (a 16 x 16
        token grid), width 32, depth 2, 2 heads, MLP ratio 2, 5 classes, float32.
    patch : int
        LBP patch size ``n`` (default 8: four patches of the 16 x 16 grid).
    layers : str
        Token-grid layers the approximate methods apply to (default ``"all"``).
    pretrain_digits, adapt_digits : tuple of int
        Default 0-4 and 5-9.
    test_fraction : float
        Held-out share of each task (default 0.25).
    split_seed : int
        Seed of the train/test split (default 0).
    calibration_batch : int
        Pretraining images whose output gradients rank the bases of the
        ``energy_*`` methods (default 64).
    blas_threads : int or None
        Limit BLAS to this many threads while running (default 1: many small
        products; needs :mod:`threadpoolctl`, ignored without it).

    Examples
    --------
    >>> from analysis.finetune import FinetuneConfig
    >>> cfg = FinetuneConfig.quick()
    >>> cfg.seeds, cfg.adapt.steps, cfg.adapt.batch_size, cfg.model.grid
    (1, 80, 16, (16, 16))
    >>> FinetuneConfig.full().with_steps(30).adapt.eval_every
    6
    """

    methods: tuple = FULL_METHODS
    seeds: int = 3
    adapt: TrainConfig = field(default_factory=lambda: _adapt_config(200))
    pretrain: TrainConfig = _PRETRAIN
    model: ViTConfig = _MODEL
    patch: int = 8
    layers: str = "all"
    pretrain_digits: tuple = (0, 1, 2, 3, 4)
    adapt_digits: tuple = (5, 6, 7, 8, 9)
    test_fraction: float = 0.25
    split_seed: int = 0
    calibration_batch: int = 64
    blas_threads: int | None = 1

    def __post_init__(self):
        if int(self.seeds) != self.seeds or self.seeds < 1:
            raise ValueError(f"seeds must be a positive integer, got {self.seeds!r}")
        methods = [parse_method(m, patch=self.patch).name for m in self.methods]
        if not methods or len(set(methods)) != len(methods):
            raise ValueError(f"methods must be distinct and non-empty, got {list(self.methods)}")
        if "dense" in methods:
            methods.remove("dense")
            methods.insert(0, "dense")
        object.__setattr__(self, "methods", tuple(methods))
        if self.model.num_classes != len(self.adapt_digits) or self.model.num_classes != len(self.pretrain_digits):
            raise ValueError("model.num_classes must equal the number of digits of both tasks")

    @classmethod
    def full(cls) -> FinetuneConfig:
        """The full run: :data:`FULL_METHODS`, 3 seeds, 200 adaptation steps of 16 images."""
        return cls()

    @classmethod
    def quick(cls) -> FinetuneConfig:
        """``--quick``: :data:`QUICK_METHODS`, 1 seed, 80 adaptation steps."""
        return cls(methods=QUICK_METHODS, seeds=1, adapt=_adapt_config(80))

    @classmethod
    def headline(cls) -> FinetuneConfig:
        """The headline of ``lbp report``: :data:`HEADLINE_METHODS`, 1 seed, 80 steps."""
        return cls(methods=HEADLINE_METHODS, seeds=1, adapt=_adapt_config(80))

    def with_steps(self, steps) -> FinetuneConfig:
        """The same configuration with ``steps`` adaptation steps (intervals rescaled)."""
        return replace(self, adapt=_adapt_config(int(steps), self.adapt.lr))

    def pretrain_spec(self) -> dict:
        """What the pretrained parameters depend on: the key of the pretraining cache."""
        return {
            "model": self.model.to_dict(),
            "train": self.pretrain.to_dict(),
            "digits": list(self.pretrain_digits),
            "test_fraction": self.test_fraction,
            "split_seed": self.split_seed,
        }

    def to_dict(self) -> dict:
        """Plain nested dict of the fields."""
        d = asdict(self)
        d["model"], d["adapt"], d["pretrain"] = self.model.to_dict(), self.adapt.to_dict(), self.pretrain.to_dict()
        return d


def _pretrain(cfg, task, cache_dir, progress):
    """Pretrained parameters (cached), and the pretraining summary."""

    def build():
        model = TinyViT(cfg.model)
        with progress_bar(cfg.pretrain.steps, "pretraining", enabled=None if progress else False) as bar:
            t0 = time.perf_counter()
            res = train(model, build_plan("dense", model, batch=cfg.pretrain.batch_size, layers=cfg.layers), task,
                        cfg.pretrain, bar=bar)
        info = {"test_accuracy": res.test_accuracy, "eval_steps": res.eval_steps,
                "test_accuracy_curve": res.test_accuracy_curve, "loss_curve": res.loss_curve,
                "seconds": time.perf_counter() - t0}
        return model.params, info

    def check(arrays):
        TinyViT(cfg.model, params=arrays)  # raises ValueError on missing names or wrong shapes
        bad = [k for k, a in arrays.items() if not np.isfinite(a).all()]
        if bad:  # a diverged pretraining, or a damaged entry: rebuilt
            raise ValueError(f"non-finite pretrained parameters {bad}")

    arrays, info, status, path = load_or_build(cfg.pretrain_spec(), build, cache_dir=cache_dir, check=check)
    return arrays, dict(info, cache=status, cache_file=path.name)


def _calibration(cfg, params, task):
    """Output gradients of every token layer of the pretrained network on a pretraining batch."""
    model = TinyViT(cfg.model, params=params)
    k = min(cfg.calibration_batch, task.train_labels.size)
    _, cache = model.forward(task.train_images[:k], task.train_labels[:k])
    captured = model.backward(cache, capture=True).captured
    return {name: captured[name].grad_y for name in model.token_layers}


def _fresh_head(cfg, params, seed):
    head = TinyViT.init_params(replace(cfg.model, seed=10_000 + int(seed)))
    p = {k: v.copy() for k, v in params.items()}
    p["head.weight"], p["head.bias"] = head["head.weight"], np.zeros_like(head["head.bias"])
    return p


def _flat(params):
    return np.concatenate([v.ravel() for v in params.values()])


def _mean_std(values):
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def _method_entry(plan, runs, dense_final):
    m = plan.method
    acc = [r["result"].test_accuracy for r in runs]
    mean, std = _mean_std(acc)
    checks = {"steps": runs[0]["result"].checks.steps, "rel_error": {}, "cosine": {}, "energy_kept": {}}
    for part in ("rel_error", "cosine", "energy_kept"):
        for layer in getattr(runs[0]["result"].checks, part):
            checks[part][layer] = [getattr(r["result"].checks, part)[layer] for r in runs]
    distance = None
    if dense_final:
        distance = [relative_error(_flat(r["final"]), _flat(dense_final[r["seed"]])) for r in runs]
    return {
        **m.to_dict(),
        "approximated_layers": list(plan.approximated),
        "adapted_layers": list(plan.adapted),
        "trained_parameters": len(plan.trainable),
        "backward_mflops": plan.backward_mflops,
        "dense_mflops": plan.dense_mflops,
        "fraction_of_dense": plan.fraction_of_dense,
        "layer_mflops": {k: v / 1e6 for k, v in plan.flops.items()},
        "test_accuracy": acc,
        "test_accuracy_mean": mean,
        "test_accuracy_std": std,
        "loss_curve": [r["result"].loss_curve for r in runs],
        "eval_steps": runs[0]["result"].eval_steps,
        "test_accuracy_curve": [r["result"].test_accuracy_curve for r in runs],
        "backward_seconds_per_step": [r["result"].to_dict()["backward_seconds_per_step"] for r in runs],
        "param_distance_to_dense": distance,
        "gradient_checks": checks,
        "seconds": [r["seconds"] for r in runs],
    }


def run_finetune(config=None, *, cache_dir=None, progress=True) -> dict:
    """Pretrain (or load from the cache), adapt with every method and seed, and collect the results.

    Parameters
    ----------
    config : FinetuneConfig, optional
        Default :meth:`FinetuneConfig.full`.
    cache_dir : str or os.PathLike, optional
        Pretraining cache (default :func:`~analysis.finetune.default_cache_dir`).
    progress : bool, optional
        Progress bars on stderr for work longer than about 2 s (default True).

    Returns
    -------
    dict
        ``schema``, ``setup`` (model, data, training, seeds, layers),
        ``pretrain`` (``test_accuracy``, curves, ``cache`` status: ``"hit"``,
        ``"built"`` or ``"rebuilt"``), ``methods`` (one entry per method, in
        order: ``name``, ``kind``, ``label``, ``bases`` (the Walsh spec or
        None), ``rank`` (or None), ``backward_mflops`` per step of the adapted
        layers, ``dense_mflops``, ``fraction_of_dense``, ``test_accuracy`` (one
        per seed), its mean and sample standard deviation, ``loss_curve`` (one
        list per seed), ``test_accuracy_curve``, ``gradient_checks``,
        ``backward_seconds_per_step``, ``param_distance_to_dense``...) and
        ``seconds``.

    Examples
    --------
    >>> import tempfile
    >>> from dataclasses import replace
    >>> from analysis.finetune import FinetuneConfig, TrainConfig, run_finetune
    >>> from analysis.vit import ViTConfig
    >>> cfg = replace(FinetuneConfig.quick(), methods=("dense", "lp_linf:8"),
    ...               model=ViTConfig(image_size=8, patch_size=1, in_chans=1, dim=8, depth=1, heads=2, num_classes=5,
    ...                               dtype="float64"),
    ...               pretrain=TrainConfig(steps=3, eval_every=3), adapt=TrainConfig(steps=2, eval_every=2))
    >>> res = run_finetune(cfg, cache_dir=tempfile.mkdtemp(), progress=False)
    >>> [m["name"] for m in res["methods"]], res["pretrain"]["cache"]
    (['dense', 'lp_linf:8'], 'built')
    >>> res["methods"][1]["param_distance_to_dense"][0] < 1e-9  # the full basis is exact: rounding, grown by AdamW
    True
    """
    cfg = FinetuneConfig.full() if config is None else config
    t_start = time.perf_counter()
    with blas_limit(cfg.blas_threads):
        pre_task, adapt_task = digit_tasks(cfg.model.image_size, pretrain_digits=cfg.pretrain_digits,
                                           adapt_digits=cfg.adapt_digits, test_fraction=cfg.test_fraction,
                                           split_seed=cfg.split_seed, dtype=cfg.model.dtype)
        params, pre_info = _pretrain(cfg, pre_task, cache_dir, progress)
        methods = [parse_method(m, patch=cfg.patch) for m in cfg.methods]
        calibration = _calibration(cfg, params, pre_task) if any(
            m.kind == "lbp" and m.bases.startswith("energy") for m in methods) else None
        runs = {m.name: [] for m in methods}
        plans = {}
        dense_final = {}
        total = cfg.seeds * len(methods) * cfg.adapt.steps
        with progress_bar(total, "fine-tuning", enabled=None if progress else False) as bar:
            for seed in range(cfg.seeds):
                start = _fresh_head(cfg, params, seed)
                for m in methods:
                    bar.set_description(f"fine-tuning {m.name} seed {seed}")
                    model = TinyViT(cfg.model, params={k: v.copy() for k, v in start.items()})  # trained in place
                    plan = build_plan(m, model, batch=cfg.adapt.batch_size, layers=cfg.layers, seed=seed,
                                      calibration=calibration)
                    plans.setdefault(m.name, plan)
                    t0 = time.perf_counter()
                    res = train(model, plan, adapt_task, replace(cfg.adapt, seed=seed), bar=bar)
                    runs[m.name].append({"seed": seed, "result": res, "seconds": time.perf_counter() - t0,
                                         "final": model.params})
                    if m.kind == "dense":
                        dense_final[seed] = model.params
    entries = [_method_entry(plans[m.name], runs[m.name], dense_final) for m in methods]
    first = plans[methods[0].name]
    return {
        "schema": SCHEMA,
        "setup": {
            "config": cfg.to_dict(),
            "grid": list(cfg.model.grid),
            "patch": cfg.patch,
            "patches": (cfg.model.grid[0] // cfg.patch) * (cfg.model.grid[1] // cfg.patch),
            "linear_layers": list(first.dense_flops),
            "data": {"source": "sklearn.datasets.load_digits", "pretrain": pre_task.to_dict(),
                     "adapt": adapt_task.to_dict()},
            "seeds": list(range(cfg.seeds)),
            "dense_mflops": first.dense_mflops,
            "lbpcore_version": lbpcore.__version__,
        },
        "pretrain": pre_info,
        "methods": entries,
        "seconds": time.perf_counter() - t_start,
    }
