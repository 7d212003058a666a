"""``lbp bench --model``: a whole training step of a replica, dense against converted with ``lbpcore.torch``.

Each row builds one replica of :mod:`analysis.torch_models` (random weights,
training mode), a batch of random 224x224 images and the loss
``mean(logits**2)``, and a deep copy converted with
:func:`lbpcore.torch.convert` on the model's usual layers
(:attr:`~analysis.torch_models.ModelInfo.include`) with ``grid="auto"``.  The
forward and backward passes of both are timed round after round, interleaved
(the median of each is kept): *step* is forward plus backward (no optimizer).
The *ideal* converted step keeps everything of the dense step but the
converted layers' backward, which it scales by each layer's FLOP ratio (the
inverse of :attr:`lbpcore.BackwardCost.ideal_speedup`); those layers' dense backward
times are measured apart, on inputs of the shapes they see in the model.
*Saved* is the activation memory autograd holds between the passes (unique
tensor storages saved for backward, parameters left out).  PyTorch is imported
only when the rows run.
"""

from __future__ import annotations

import copy
import datetime
import gc
import statistics
import sys
import time

import lbpcore

from ._outdir import check_output_file
from .io import text_table, write_json

__all__ = ["BENCH_MODELS", "bench_models", "layers_table", "models_table", "run_model_bench"]

#: The replicas ``lbp bench --model`` knows (keys of :data:`analysis.torch_models.MODELS`).
BENCH_MODELS = ("vit_s16", "vit_b16", "efficientformer_l1", "swin_t", "deit_s_distilled", "vit_ti16", "convnext_t")


def _saved_bytes(torch, run, params):
    """Bytes of the distinct storages autograd saves while ``run()`` builds the graph (parameters excluded)."""
    seen = {}
    skip = {p.untyped_storage().data_ptr() for p in params}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    return sum(seen.values()), out


def _layer_shapes(torch, model, images, names):
    """Per converted layer: its kind and the shape of its input in one forward pass of ``model``."""
    shapes, handles = {}, []
    modules = dict(model.named_modules())
    for name in names:
        def hook(m, inputs, output, name=name):
            shapes.setdefault(name, tuple(inputs[0].shape))
        handles.append(modules[name].register_forward_hook(hook))
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    return shapes


def _layer_times(torch, module, shape, rounds, sync, fmt):
    """Median seconds of the forward and the backward (all inputs' gradients) of ``module`` alone on ``shape``."""
    x = torch.randn(shape, device=module.weight.device, dtype=module.weight.dtype)
    if x.dim() == 4:
        x = x.contiguous(memory_format=fmt)
    x.requires_grad_()
    inputs = [x] + list(module.parameters())
    fwd, bwd = [], []
    for i in range(rounds + 1):
        sync()
        t0 = time.perf_counter()
        y = module(x)
        sync()
        t1 = time.perf_counter()
        torch.autograd.grad(y, inputs, torch.ones_like(y))
        sync()
        if i:
            fwd.append(t1 - t0)
            bwd.append(time.perf_counter() - t1)
    return statistics.median(fwd), statistics.median(bwd)


def _flop_ratio(layer, shape):
    """FLOP ratio of LBP-WHT's backward products to the dense ones for a converted layer's input ``shape``."""
    from lbpcore._grids import linear_grid  # noqa: PLC0415 - pure Python; kept beside its only use here

    c_out = layer.weight.shape[0]
    if layer.weight.dim() == 4:  # a 1x1 convolution: (B, C, H, W)
        b, c, h, w = shape
        return lbpcore.backward_cost((b, c, h, w), c_out, grid=(h, w), patch=layer.patch, bases=layer.bases,
                                     layout="nchw").ideal_speedup ** -1
    kind, grid = linear_grid(shape, layer.grid, layer.extra_tokens)
    rows = 1
    for s in shape[:-3] if kind == "maps" else shape[:-2]:
        rows *= s
    length = grid[0] * grid[1] + (0 if kind == "maps" else layer.extra_tokens)
    return lbpcore.backward_cost((rows, length, shape[-1]), c_out, grid=grid, patch=layer.patch, bases=layer.bases,
                                 extra_tokens=0 if kind == "maps" else layer.extra_tokens).ideal_speedup ** -1


def bench_models(models=("vit_s16",), batches=(8, 32), *, bases="lp_l1:6", patch=8, pad="reflect", rounds=3,
                 device="cpu", threads=None, channels_last=False, size_overrides=None) -> list:
    """Forward, backward and step time of each replica, dense and converted, with the ideal and saved memory.

    Parameters
    ----------
    models : sequence of str
        Names from :data:`BENCH_MODELS`.
    batches : sequence of int
        Batch sizes.
    bases, patch, pad : optional
        The LBP-WHT setting of the converted layers (default the paper's
        ``lp_l1:6`` at patch 8, reflect padding).
    rounds : int, optional
        Timed rounds after one warm-up round (medians are kept).
    device : {"cpu", "gpu"}, optional
        ``"gpu"``: the current CUDA device (timed with synchronization).
    threads : int, optional
        :func:`torch.set_num_threads` for the run (default: as it is).
    channels_last : bool, optional
        Run both models (and their inputs) in ``torch.channels_last`` memory
        (the layout in which a converted 1x1 convolution reads NCHW maps in place).
    size_overrides : dict, optional
        Constructor arguments for every replica (smaller models for tests).

    Returns
    -------
    list of dict
        Per model and batch: ``model``, ``batch``, ``device``, ``threads``,
        ``converted_layers`` (how many), ``dense`` and ``converted`` (``forward_s``,
        ``backward_s``, ``step_s``, ``saved_bytes``), ``ideal`` (``backward_s``,
        ``step_s``: the dense times with the converted layers' backward scaled
        by their FLOP ratios), ``speedup`` (``step``, ``backward``),
        ``forward_overhead`` (converted over dense forward, minus 1),
        ``of_ideal`` (step speed-up over the ideal one), and ``layers``: per
        distinct converted layer (shape and weight), its ``names``, input
        ``shape``, ``flop_ratio`` and forward and backward times alone, dense
        and converted (``dense_forward_s``, ``lbp_backward_s``...).

    Examples
    --------
    >>> from analysis.bench_models import bench_models
    >>> rows = bench_models(["vit_ti16"], [1], rounds=1,
    ...                     size_overrides=dict(depth=1, img_size=64))  # doctest: +SKIP
    >>> sorted(rows[0]["speedup"])  # doctest: +SKIP
    ['backward', 'step']

    (Skipped as a doctest: it needs PyTorch.)
    """
    import torch  # noqa: PLC0415 - PyTorch is optional: only these rows need it

    from lbpcore.torch import convert  # noqa: PLC0415 - imports PyTorch

    from .torch_models import MODELS, build  # noqa: PLC0415 - imports PyTorch on use

    for name in models:
        if name not in BENCH_MODELS:
            raise ValueError(f"model must be one of {', '.join(BENCH_MODELS)}, got {name!r}")
    dev = torch.device("cuda" if device == "gpu" else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    rows = []
    try:
        for name in models:
            info = MODELS[name]
            kwargs = dict(size_overrides or {})
            size = kwargs.get("img_size", 224)
            for batch in batches:
                torch.manual_seed(0)
                dense = build(name, **kwargs).to(dev).to(memory_format=fmt)
                converted = copy.deepcopy(dense)
                names = convert(converted, info.include, grid="auto", patch=patch, bases=bases, pad=pad,
                                extra_tokens=info.extra_tokens)
                images = torch.randn(batch, 3, size, size, device=dev).contiguous(memory_format=fmt)
                row = _measure(torch, dense, converted, names, images, rounds, sync)
                row.update(model=name, batch=batch, device=str(dev), threads=torch.get_num_threads(),
                           bases=bases, patch=patch, pad=pad, channels_last=bool(channels_last),
                           converted_layers=len(names))
                rows.append(row)
                del dense, converted, images
                gc.collect()
    finally:
        torch.set_num_threads(before)
    return rows


def _measure(torch, dense, converted, names, images, rounds, sync):
    """The times, ideal and saved memory of one model and batch (see :func:`bench_models`)."""
    models = {"dense": dense, "converted": converted}
    times = {k: {"forward_s": [], "backward_s": []} for k in models}
    saved = {}
    for i in range(rounds + 1):
        for key, model in models.items():
            model.zero_grad(set_to_none=True)
            sync()
            t0 = time.perf_counter()
            nbytes, out = _saved_bytes(torch, lambda model=model: model(images).square().mean(),
                                       list(model.parameters())) if i == 0 else (None, model(images).square().mean())
            sync()
            t1 = time.perf_counter()
            out.backward()
            sync()
            t2 = time.perf_counter()
            if i == 0:
                saved[key] = nbytes
            else:
                times[key]["forward_s"].append(t1 - t0)
                times[key]["backward_s"].append(t2 - t1)
            del out
    row = {}
    for key in models:
        f = statistics.median(times[key]["forward_s"])
        b = statistics.median(times[key]["backward_s"])
        row[key] = {"forward_s": f, "backward_s": b, "step_s": f + b, "saved_bytes": saved[key]}
    dense_modules = dict(dense.named_modules())
    conv_modules = dict(converted.named_modules())
    shapes = _layer_shapes(torch, dense, images, names)
    fmt = torch.channels_last if images.is_contiguous(memory_format=torch.channels_last) and \
        not images.is_contiguous() else torch.contiguous_format
    layers, saving = {}, 0.0
    for name in names:
        module, shape = dense_modules[name], shapes[name]
        key = (type(module).__name__, tuple(module.weight.shape), shape)
        if key not in layers:
            ratio = _flop_ratio(conv_modules[name], shape)
            d_f, d_b = _layer_times(torch, module, shape, rounds, sync, fmt)
            c_f, c_b = _layer_times(torch, conv_modules[name], shape, rounds, sync, fmt)
            layers[key] = {"names": [], "shape": list(shape), "weight": list(module.weight.shape[:2]),
                           "flop_ratio": ratio, "dense_forward_s": d_f, "dense_backward_s": d_b,
                           "lbp_forward_s": c_f, "lbp_backward_s": c_b}
        layers[key]["names"].append(name)
        saving += layers[key]["dense_backward_s"] * (1.0 - layers[key]["flop_ratio"])
    row["layers"] = list(layers.values())
    d, c = row["dense"], row["converted"]
    ideal_bwd = d["backward_s"] - saving
    row["ideal"] = {"backward_s": ideal_bwd, "step_s": d["forward_s"] + ideal_bwd}
    row["speedup"] = {"step": d["step_s"] / c["step_s"], "backward": d["backward_s"] / c["backward_s"]}
    row["ideal_speedup"] = {"step": d["step_s"] / row["ideal"]["step_s"],
                            "backward": d["backward_s"] / ideal_bwd}
    row["forward_overhead"] = c["forward_s"] / d["forward_s"] - 1.0
    row["of_ideal"] = row["speedup"]["step"] / row["ideal_speedup"]["step"]
    return row


def models_table(rows) -> str:
    """Plain-text table of :func:`bench_models` rows: times in ms and memory in MB, dense / converted.

    Parameters
    ----------
    rows : list of dict

    Returns
    -------
    str

    Examples
    --------
    >>> from analysis.bench_models import models_table
    >>> t = {"forward_s": 0.1, "backward_s": 0.2, "step_s": 0.3, "saved_bytes": 2e8}
    >>> c = {"forward_s": 0.105, "backward_s": 0.12, "step_s": 0.225, "saved_bytes": 1e8}
    >>> row = {"model": "vit_s16", "batch": 8, "device": "cpu", "dense": t, "converted": c,
    ...        "ideal": {"backward_s": 0.1, "step_s": 0.2}, "speedup": {"step": 1.33, "backward": 1.67},
    ...        "ideal_speedup": {"step": 1.5, "backward": 2.0}, "forward_overhead": 0.05, "of_ideal": 0.89}
    >>> print(models_table([row]))
    model    B  device  forward  backward     step  step x  bwd x  ideal x  of ideal  fwd +  saved MB
    -------  -  ------  -------  --------  -------  ------  -----  -------  --------  -----  ---------
    vit_s16  8  cpu     100/105   200/120  300/225    1.33   1.67     1.50      0.89   5.0%  200 / 100
    """
    table = []
    for r in rows:
        d, c = r["dense"], r["converted"]

        def pair(key, d=d, c=c):
            return f"{d[key] * 1e3:.0f}/{c[key] * 1e3:.0f}"

        table.append([r["model"], str(r["batch"]), r["device"], pair("forward_s"), pair("backward_s"),
                      pair("step_s"), f"{r['speedup']['step']:.2f}", f"{r['speedup']['backward']:.2f}",
                      f"{r['ideal_speedup']['step']:.2f}", f"{r['of_ideal']:.2f}",
                      f"{r['forward_overhead'] * 100:.1f}%",
                      f"{d['saved_bytes'] / 1e6:.0f} / {c['saved_bytes'] / 1e6:.0f}"])
    return text_table(["model", "B", "device", "forward", "backward", "step", "step x", "bwd x", "ideal x",
                       "of ideal", "fwd +", "saved MB"], table, align="lrlrrrrrrrrr")


def layers_table(row) -> str:
    """Plain-text table of the converted layers of one :func:`bench_models` row, each timed alone (ms).

    Parameters
    ----------
    row : dict

    Returns
    -------
    str

    Examples
    --------
    >>> from analysis.bench_models import layers_table
    >>> layer = {"names": ["blocks.0.mlp.fc1", "blocks.1.mlp.fc1"], "shape": [8, 197, 384], "weight": [1536, 384],
    ...          "flop_ratio": 0.4315, "dense_forward_s": 0.004, "lbp_forward_s": 0.0045,
    ...          "dense_backward_s": 0.008, "lbp_backward_s": 0.005}
    >>> print(layers_table({"layers": [layer]}))
    layer                  input      weight    FLOPs  fwd dense  fwd lbp  bwd dense  bwd lbp  bwd x
    ---------------------  ---------  --------  -----  ---------  -------  ---------  -------  -----
    blocks.0.mlp.fc1 (+1)  8x197x384  1536x384   0.43        4.0      4.5        8.0      5.0   1.60
    """
    table = []
    for lay in row["layers"]:
        more = f" (+{len(lay['names']) - 1})" if len(lay["names"]) > 1 else ""
        table.append([lay["names"][0] + more, "x".join(map(str, lay["shape"])), "x".join(map(str, lay["weight"])),
                      f"{lay['flop_ratio']:.2f}", f"{lay['dense_forward_s'] * 1e3:.1f}",
                      f"{lay['lbp_forward_s'] * 1e3:.1f}", f"{lay['dense_backward_s'] * 1e3:.1f}",
                      f"{lay['lbp_backward_s'] * 1e3:.1f}", f"{lay['dense_backward_s'] / lay['lbp_backward_s']:.2f}"])
    return text_table(["layer", "input", "weight", "FLOPs", "fwd dense", "fwd lbp", "bwd dense", "bwd lbp", "bwd x"],
                      table, align="lllrrrrrr")


def run_model_bench(models, batches=(8, 32), *, device="cpu", json_path=None, machine=None, stream=None,
                    per_layer=False, **options) -> dict:
    """``lbp bench --model``: :func:`bench_models`, its table printed and optionally written as JSON.

    Parameters
    ----------
    models, batches
        As for :func:`bench_models`.
    device : {"cpu", "gpu"}, optional
    json_path : str or path, optional
        Checked before the run, written atomically after it.
    machine : dict, optional
        What to record of the machine (:func:`analysis.machine.machine_info`).
    stream : file, optional
        Where to print the table (default ``sys.stdout``).
    per_layer : bool, optional
        Also print each row's :func:`layers_table`.
    **options
        ``bases``, ``patch``, ``pad``, ``rounds``, ``threads``,
        ``channels_last``, ``size_overrides`` of :func:`bench_models`.

    Returns
    -------
    dict
        ``machine``, ``date``, ``models`` (the rows), ``seconds``.

    Examples
    --------
    >>> import io
    >>> from analysis.bench_models import run_model_bench
    >>> res = run_model_bench(["vit_ti16"], [1], rounds=1, stream=io.StringIO(),
    ...                       size_overrides=dict(depth=1, img_size=64))  # doctest: +SKIP
    >>> res["models"][0]["layers"]  # doctest: +SKIP
    4

    (Skipped as a doctest: it needs PyTorch.)
    """
    if json_path is not None:
        json_path = check_output_file(json_path)  # fail before the run, not after it
    stream = sys.stdout if stream is None else stream
    t0 = time.perf_counter()
    rows = bench_models(models, batches, device=device, **options)
    res = {"machine": machine or {}, "date": datetime.date.today().isoformat(), "models": rows,
           "seconds": time.perf_counter() - t0}
    print(models_table(rows), file=stream)
    if per_layer:
        for row in rows:
            print(f"\n{row['model']}, B={row['batch']}: converted layers alone", file=stream)
            print(layers_table(row), file=stream)
    if json_path is not None:
        write_json(json_path, res)
    return res
