"""The ``lbp`` command line: spectra, gradient errors, benchmarks, fine-tuning and the report.

Subcommands (``lbp COMMAND --help`` for the options)::

    lbp report   [--out DIR] [--quick] [--subset LAYERS ...] [--quiet] [--methods SPEC,...] [--method-seeds S]
                 [--capture FILE [--grid HxW|auto|PATTERN=HxW,...] [--extra-tokens E|PATTERN=E,...]
                  [--memory SIZE] [--scheduler ADDRESS]]
    lbp spectrum FILE --grid HxW [--patch N] [--extra-tokens E] [--layout tokens|nchw]
                 [--key NAME | --layer NAME] [--pad MODE] [--memory SIZE] [--scheduler ADDRESS] --out DIR
    lbp error    FILE --grid HxW --bases SPEC [--patch N] [--extra-tokens E] [--layer NAME]
                 [--layout tokens|nchw] [--pad MODE] [--baselines LIST] [--methods SPEC,...]
                 [--method-seeds S] [--memory SIZE] [--scheduler ADDRESS] --out DIR
    lbp bench    [--quick] [--json FILE] [--device cpu|gpu]
    lbp finetune [--quick] [--out DIR] [--seeds N] [--steps N] [--cache-dir DIR] [--quiet]
                 [--engine numpy|torch [--device DEV]] [--study scale]

``FILE`` of ``spectrum`` and ``error`` may also be a directory or glob of
``.npy`` shards or a Zarr store (:func:`analysis.sources.open_source`); data
larger than the ``--memory`` budget are streamed in batch chunks with Dask
(:doc:`/large_data`), on a cluster with ``--scheduler`` (default
``$DASK_SCHEDULER_ADDRESS``).

``--layer NAME`` reads one layer of a capture (:mod:`analysis.capture`, a
``.npz`` file or a directory of shards): its ``grad_y`` for ``spectrum``, its
``x``, ``weight`` and ``grad_y`` for ``error``; the grid, extra tokens and
layout default to the capture's.

Exit status: 0 on success; 2 on a usage error (bad option or value, printed by
:mod:`argparse` with the usage and the option's name); 1 on bad data (missing,
unreadable or truncated file, missing array, shapes that do not fit the grid,
NaN or inf: a :class:`~analysis.io.DataError` naming the file) or an output
that cannot be written, with a one-line ``lbp: error:`` message on stderr; 130
after Ctrl-C (``lbp: interrupted``, no traceback: :mod:`analysis._entry`).

The output (``--out``, ``--json``) is checked before anything is computed
(:func:`analysis._outdir.check_output_dir`), every input is read and checked
and every result computed before the first file is written, and the files of
a run are swapped in all at once (:func:`analysis.io.write_files`): a failed
or interrupted run leaves the old output as it was and nothing behind.

The same entry point runs as ``lbp`` (console script), ``python -m analysis``
or :func:`main` from Python (where Ctrl-C raises :class:`KeyboardInterrupt`).
With the environment variable ``LBP_DEBUG=1`` errors raise with their
traceback instead of the one-line message.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

import lbpcore
from lbpcore._validation import check_int, check_patch

from . import bench
from ._outdir import check_output_dir, check_output_file, path_option
from .capture import load_capture
from .cli_options import (
    _EXTRA_TOKENS,
    _add_method_options,
    _baseline_list,
    _extra_tokens_setting,
    _integer_option,
    _memory_size,
    parse_finetune_methods,
    parse_grid,
    parse_grid_setting,
    parse_method_list,
)
from .errors import gradient_errors
from .finetune import FinetuneConfig, build_finetune
from .io import DataError, figure_bytes, json_text, text_table, to_jsonable, write_files
from .plots import plot_energy_curves, plot_spectrum
from .report import ReportConfig, build_report
from .sources import open_source
from .spectrum import energy_curves, energy_kept, energy_maps

__all__ = ["main", "build_parser", "parse_grid", "parse_grid_setting", "parse_method_list", "parse_finetune_methods"]

PROG = "lbp"

def _selection(args):
    """The ``--bases`` selection, checked with the other options before any data is read (usage errors)."""
    if args.layout == "nchw" and args.extra_tokens:
        args.subparser.error("--extra-tokens must be 0 with --layout nchw")
    n = args.patch
    for side in args.grid:  # the bound of reflect padding, for every mode: a patch is mostly grid, not padding
        _, before, after = lbpcore.padding(side, n)
        if max(before, after) >= side:
            args.subparser.error(f"--patch {n} is too large for the {args.grid[0]}x{args.grid[1]} grid: it would pad "
                                 f"a side of {side} by {max(before, after)}, more than the side itself")
    try:  # a constant score map stands in for the data of the energy specs
        return lbpcore.select_bases(n, args.bases, calibration=np.ones((n, n)))
    except ValueError as exc:
        args.subparser.error(f"--bases: {exc}")


def _grid_setting(args, layer=None):
    """Fill in ``--grid``, ``--extra-tokens`` and ``--layout``: the options given, else the captured layer's."""
    if layer is not None:
        args.grid = layer.grid if args.grid is None else args.grid
        args.extra_tokens = layer.extra_tokens if args.extra_tokens is None else args.extra_tokens
        args.layout = layer.layout if args.layout is None else args.layout
    args.layout = args.layout or "tokens"
    args.extra_tokens = args.extra_tokens or 0
    if args.grid is None:
        args.subparser.error("--grid HxW is required" + (" (the capture stores no grid)" if layer else ""))
    return layer


def _captured_layer(args):
    """The layer ``--layer`` names in the capture file (arrays not read yet), or None."""
    return _grid_setting(args, None if args.layer is None else load_capture(args.file)[args.layer])


@contextlib.contextmanager
def _data_of(path):
    """What lbpcore rejects in the data of ``path`` (shapes that do not fit the grid...) is a DataError."""
    try:
        yield
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from exc


# ---------------------------------------------------------------------------
# the parser


def _add_data_command(sub, name, func, *, file, with_key, layer_help, bases, **texts):
    """A subcommand that reads an array file on a token grid: ``FILE``, the grid options, ``--bases``."""
    p = sub.add_parser(name, **texts)
    p.add_argument("file", metavar=file[0], help=file[1])
    p.add_argument("--grid", type=parse_grid, metavar="HxW",
                   help="token grid h x w (row-major tokens after the extra tokens); for nchw it must be H x W "
                        "(default: the capture's with --layer)")
    p.add_argument("--patch", type=_integer_option(lambda v: check_patch(v, "patch")), default=8,
                   metavar="N", help="patch size n, a power of two (default 8)")
    p.add_argument("--extra-tokens", type=_EXTRA_TOKENS, metavar="E",
                   help="leading tokens outside the grid, e.g. a class token (default 0, or the capture's)")
    p.add_argument("--layout", choices=("tokens", "nchw"),
                   help="tokens: (B, E + h*w, C); nchw: (B, C, H, W) (default tokens, or the captured layer's)")
    p.add_argument("--pad", choices=("reflect", "zero", "none"), default="reflect",
                   help="padding of grids the patch size does not divide (default reflect)")
    source = p.add_mutually_exclusive_group() if with_key else p
    if with_key:
        source.add_argument("--key", metavar="NAME", help="array to read from a .npz archive (default: its only array)")
    source.add_argument("--layer", metavar="NAME", help=f"layer of a capture file (analysis.capture): {layer_help}")
    p.add_argument("--out", required=True, type=path_option, metavar="DIR",
                   help="output directory (created if missing; files of yours in it are kept)")
    p.add_argument("--bases", metavar="SPEC", **bases)
    _add_stream_options(p)
    p.set_defaults(func=func, subparser=p)
    return p


def _add_stream_options(p, when=""):
    """``--memory`` and ``--scheduler``: how data larger than memory are streamed (:mod:`analysis.stream`)."""
    p.add_argument("--memory", type=_memory_size, metavar="SIZE",
                   help=f"{when}memory budget, e.g. 512MB or 2GiB: larger data are streamed in batch chunks with "
                        "Dask (default: a quarter of the available memory)")
    p.add_argument("--scheduler", default=os.environ.get("DASK_SCHEDULER_ADDRESS") or None, metavar="ADDRESS",
                   help=f"{when}run on this dask.distributed scheduler, e.g. tcp://host:8786 "
                        "(default $DASK_SCHEDULER_ADDRESS, else the local threaded scheduler)")


def build_parser():
    """The :mod:`argparse` parser of the ``lbp`` command.

    Returns
    -------
    argparse.ArgumentParser
        With subcommands ``report``, ``spectrum``, ``error``, ``bench`` and ``finetune``;
        each sets ``args.func`` to the function that runs it.

    Examples
    --------
    >>> from analysis.cli import build_parser
    >>> args = build_parser().parse_args(["spectrum", "x.npy", "--grid", "16x16", "--out", "o"])
    >>> args.command, args.grid, args.patch, args.pad
    ('spectrum', (16, 16), 8, 'reflect')
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="LBP-WHT analysis: Walsh-Hadamard spectra of activations and gradients, gradient errors "
                    "of low-rank backpropagation against baselines, benchmarks, and a full report.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("report", help="analyse the built-in ViT workload and write a Markdown report",
                       description="Run the built-in workload (a small ViT on matplotlib's sample images) and "
                                   "write DIR/index.md, its PNG figures and DIR/results.json.")
    p.add_argument("--out", default="lbp-report", type=path_option, metavar="DIR",
                   help="output directory (default ./lbp-report; files of yours in it are kept)")
    p.add_argument("--quick", action="store_true", help="a reduced workload (seconds; for smoke tests)")
    p.add_argument("--subset", action="append", default=[], metavar="LAYERS",
                   help="also run end to end with LBP-WHT on these layers only: comma-separated names or patterns, "
                        "e.g. 'blocks.3.*' or 'blocks.*.mlp.fc1,blocks.*.attn.proj' (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    _add_method_options(p, "default: the papers' default settings")
    p.add_argument("--capture", metavar="FILE",
                   help="report on the layers of a capture of your own model (analysis.capture: a .npz file, or a "
                        "directory of shards) instead of the built-in workload")
    p.add_argument("--grid", type=parse_grid_setting, metavar="HxW|auto|PATTERN=HxW,...",
                   help="with --capture: token grid of the layers' inputs: HxW, 'auto' (each layer's square grid) "
                        "or per-layer PATTERN=HxW / PATTERN=auto entries (default: the ones stored in FILE)")
    p.add_argument("--extra-tokens", type=_extra_tokens_setting, metavar="E|PATTERN=E,...",
                   help="with --capture: leading tokens outside the grid, or per-layer PATTERN=E entries "
                        "(default: the numbers stored in FILE)")
    _add_stream_options(p, "with a sharded --capture: ")
    p.set_defaults(func=_cmd_report, subparser=p)

    _add_data_command(
        sub, "spectrum", _cmd_spectrum, with_key=True,
        file=("FILE", ".npy file, .npz archive, directory or glob of .npy shards, Zarr store, or capture "
                      "(see --key, --layer)"),
        layer_help="the spectrum of its grad_y (use --key NAME/x for its input)",
        bases={"default": "lp_l1:6",
               "help": "selection outlined on the heatmap and reported as energy kept (default lp_l1:6)"},
        help="Walsh-Hadamard energy spectrum of one array",
        description="Energy map of the 2D Walsh basis over the patches of FILE (.npy, or an array of a .npz): "
                    "writes spectrum.json, spectrum.png (heatmap) and energy_curve.png (energy kept versus rank).",
    )
    p = _add_data_command(
        sub, "error", _cmd_error,
        file=("FILE", ".npz archive, dataset directory or Zarr group with arrays x, weight (C_out, C_in), grad_y"),
        with_key=False, layer_help="its x, weight and grad_y instead of the arrays x, weight and grad_y",
        bases={"required": True, "help": "basis selection, e.g. lp_l1:6, lp_linf:4, energy_l2:16 (ranked on grad_y)"},
        help="gradient errors of LBP-WHT and baselines on one layer",
        description="Read x, weight and grad_y from FILE, compare the LBP-WHT gradients (and rank-matched "
                    "baselines) with the exact ones; print a table and write error.json.",
    )
    p.add_argument("--baselines", type=_baseline_list, default=("klt", "dct", "svd", "random"), metavar="LIST",
                   help="comma-separated baselines at the same rank (default klt,dct,svd,random; 'none' for none)")
    p.add_argument("--seed", type=_integer_option(lambda v: check_int(v, "seed", minimum=0)), default=0,
                   help="seed of the random baseline and of the stochastic methods, >= 0 (default 0)")
    _add_method_options(p, "default none")

    p = sub.add_parser("bench", help="time dense versus LBP-WHT backward and the WHT (analysis.bench)",
                       description="Benchmark the LBP-WHT backward and the fast Walsh-Hadamard transform "
                                   "(see analysis.bench).")
    bench.add_arguments(p)  # analysis.bench's own options, so that they cannot drift apart
    p.set_defaults(func=_cmd_bench, subparser=p)

    positive = _integer_option(lambda v: check_int(v, "the value", minimum=1))
    p = sub.add_parser("finetune", help="fine-tune a pretrained ViT with LBP-WHT and its baselines on real digits",
                       description="Pretrain a small ViT on scikit-learn's digits 0-4 (cached), adapt it to the "
                                   "digits 5-9 with full backpropagation, LBP-WHT at several ranks and the baselines "
                                   "at the same cost, and write DIR/index.md, DIR/results.json and the figures "
                                   "(see analysis.finetune).")
    p.add_argument("--out", default="lbp-finetune", type=path_option, metavar="DIR",
                   help="output directory (default ./lbp-finetune; files of yours in it are kept)")
    p.add_argument("--quick", action="store_true",
                   help="one seed, fewer methods and steps (a few minutes at most on 2 cores)")
    p.add_argument("--seeds", type=positive, metavar="N", help="seeds per method (default 3; 1 with --quick)")
    p.add_argument("--steps", type=positive, metavar="N",
                   help="adaptation steps per run (default 200; 80 with --quick)")
    p.add_argument("--cache-dir", type=path_option, metavar="DIR",
                   help="cache of pretrained parameters (default $LBP_CACHE_DIR, else ~/.cache/lbpcore)")
    p.add_argument("--methods", type=parse_finetune_methods, metavar="SPEC,...",
                   help="backward methods to train with (dense is always added first): dense, lp_l1:k, lp_linf:k, "
                        "energy_l2:r, dct:r, random:r, budget:k, and the published ones of analysis.methods "
                        "(velora:G, compact:rho, wtacrs:rho, crs:rho, meprop:rho, rad:rho, hot[:key=value,...], "
                        "calibrated:r); default: those of --quick or of the full run")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--engine", choices=("numpy", "torch"), default="numpy",
                   help="train the NumPy ViT (default) or its plain-PyTorch port with lbpcore.torch layers "
                        "(needs PyTorch; --quick is then seconds)")
    p.add_argument("--device", default="cpu", metavar="DEV",
                   help="with --engine torch: the PyTorch device, e.g. cuda (default cpu)")
    p.add_argument("--study", choices=("scale",),
                   help="'scale': the gap to full BP over ViT widths 32-192, depths 2-6, two step budgets, 3 seeds, "
                        "and reflect against zero padding on a 14x14 grid (PyTorch engine; about a day on 2 CPU cores, "
                        "use --device cuda or --steps/--seeds to cut it; seconds with --quick)")
    p.set_defaults(func=_cmd_finetune, subparser=p)
    return parser


# ---------------------------------------------------------------------------
# commands


def _cmd_spectrum(args):
    layer = _captured_layer(args)  # reads the capture's headers only: its grid is needed to check the options
    basis = _selection(args)
    key = args.key if layer is None else f"{args.layer}/grad_y"
    x = open_source(args.file, key)
    spec = args.bases.strip()
    with _data_of(args.file):
        res = energy_maps(x, grid=args.grid, patch=args.patch, pad=args.pad, extra_tokens=args.extra_tokens,
                          layout=args.layout, memory=args.memory, scheduler=args.scheduler, progress=True)
    if spec.startswith("energy"):  # rank by this array's own spectrum
        score = res.l1_map if spec.startswith("energy_l1") else res.energy_map
        basis = lbpcore.select_bases(args.patch, args.bases, calibration=score)
    curves = energy_curves(res)
    kept = energy_kept(res, basis)
    result = res.to_dict()
    result.update({
        "source": {"file": str(args.file), "key": key, "shape": list(x.shape), "dtype": str(x.dtype),
                   "format": x.kind, "shards": len(x.shards)},
        "bases": basis.spec,
        "rank": int(basis.rank),
        "energy_kept": kept,
        "curves": curves,
    })
    name = Path(args.file).name + (f"[{key}]" if key else "")
    heat = plot_spectrum(res.energy_map, bases=basis, title=f"Walsh energy of {name}, patch {args.patch}")
    curve = plot_energy_curves(curves, highlight=basis.rank, title=f"energy kept: {name}")
    write_files(args.out, {"spectrum.json": json_text(result), "spectrum.png": figure_bytes(heat.figure),
                           "energy_curve.png": figure_bytes(curve.figure)})
    print(f"{name}: {basis.spec} ({basis.rank} of {args.patch ** 2} bases) keeps {100 * kept:.2f}% of the energy; "
          f"wrote {args.out}/spectrum.json, spectrum.png, energy_curve.png")
    return 0


def _error_table(rows):
    """Plain-text table of ``(method, rank, grad_x errors, grad_W errors)`` rows."""
    return text_table(
        ("method", "rank", "grad_x rel err", "grad_x cosine", "grad_W rel err", "grad_W cosine"),
        [(m, r, f"{gx['rel_error']:.4e}", f"{gx['cosine']:.6f}", f"{gw['rel_error']:.4e}", f"{gw['cosine']:.6f}")
         for m, r, gx, gw in rows],
    )


def _methods_table(alternatives):
    """Plain-text table of the published methods of a JSON report: errors, bias^2/variance, costs."""
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    return text_table(
        ("method", "grad_W rel err", "grad_W bias^2", "grad_W variance", "grad_x rel err", "saved", "FLOPs"),
        [(spec, num(e["grad_weight"]["rel_error"], ".4e"), num(e["grad_weight"]["bias2"], ".3e"),
          num(e["grad_weight"]["variance"], ".3e"), num(e["grad_x"]["rel_error"], ".4e"),
          f"{100 * e['saved_fraction']:.1f}%", f"{100 * e['flops_fraction']:.1f}%")
         for spec, e in alternatives.items()],
    )


def _error_rows(report):
    """The ``grad_x`` and ``grad_weight`` metric dicts of every method of a JSON report."""
    for g in [report["lbp"], *report.get("baselines", {}).values()]:
        yield g["grad_x"]
        yield g["grad_weight"]


def _cmd_error(args):
    layer = _captured_layer(args)  # as for spectrum
    basis = _selection(args)
    path = Path(args.file)
    if path.suffix.lower() == ".npy" or (path.is_file() and path.suffix.lower() != ".npz"):
        raise DataError(f"{args.file}: expected a .npz archive, dataset directory or Zarr group "
                        "with arrays x, weight and grad_y")
    prefix = "" if layer is None else f"{args.layer}/"
    x, grad_y = open_source(args.file, prefix + "x"), open_source(args.file, prefix + "grad_y")
    weight = open_source(args.file, prefix + "weight").read()
    with _data_of(args.file):
        # energy specs rank the bases by grad_y itself, the tensor the backward projects
        selection = args.bases if args.bases.strip().startswith("energy") else basis
        report = gradient_errors(x, weight, grad_y, grid=args.grid, patch=args.patch, bases=selection, pad=args.pad,
                                 extra_tokens=args.extra_tokens, layout=args.layout, baselines=args.baselines,
                                 seed=args.seed, memory=args.memory, scheduler=args.scheduler, progress=True)
        if args.methods:  # the published methods need the arrays in memory
            from .methods.measure import method_errors  # noqa: PLC0415
            from .metrics import unit_scale  # noqa: PLC0415

            xs, ws, gs = (unit_scale(np.asarray(a)) for a in (x.read(), weight, grad_y.read()))
            report = replace(report, alternatives=method_errors(
                xs, ws, gs, args.methods, grid=args.grid, patch=args.patch, extra_tokens=args.extra_tokens,
                layout=args.layout, seeds=args.method_seeds or 8, seed=args.seed))
    basis = report.selection
    report = to_jsonable(report)
    if None in (g[m] for g in _error_rows(report) for m in ("rel_error", "cosine")):
        raise DataError(f"{args.file}: the gradient errors are not finite numbers (an exact gradient is zero "
                        "where the approximation is not); nothing to report")
    lbp = report["lbp"]
    baselines = {name: {"grad_x": g["grad_x"], "grad_weight": g["grad_weight"]}
                 for name, g in report.get("baselines", {}).items()}
    result = {
        "source": {"file": str(args.file), **({"layer": args.layer} if args.layer else {}), "x_shape": list(x.shape),
                   "weight_shape": list(weight.shape), "grad_y_shape": list(grad_y.shape),
                   "dtype": str(x.dtype if x.dtype.kind == "f" else "float64")},
        "grid": list(args.grid),
        "patch": args.patch,
        "extra_tokens": args.extra_tokens,
        "layout": args.layout,
        "pad": args.pad,
        "bases": basis.spec,
        "indices": basis.indices.tolist(),
        "rank": report["rank"],
        "grad_x": lbp["grad_x"],
        "grad_weight": lbp["grad_weight"],
        "baselines": baselines,
        "methods": report.get("alternatives", {}),
        "report": report,
    }
    write_files(args.out, {"error.json": json_text(result)})
    rows = [("LBP-WHT " + basis.spec, report["rank"], lbp["grad_x"], lbp["grad_weight"])]
    rows += [(name, report["rank"], g["grad_x"], g["grad_weight"]) for name, g in baselines.items()]
    print(_error_table(rows))
    if result["methods"]:
        print()
        print(_methods_table(result["methods"]))
    print(f"wrote {args.out}/error.json")
    return 0


def _cmd_report(args):
    config = ReportConfig.quick_config() if args.quick else ReportConfig()
    if args.methods is not None:
        config = replace(config, methods=args.methods)
    if args.method_seeds is not None:
        config = replace(config, method_seeds=args.method_seeds)
    if args.capture is not None:
        if args.subset:
            args.subparser.error("--subset runs the built-in workload end to end; it does not go with --capture")
        capture = load_capture(args.capture).with_grid(args.grid, args.extra_tokens)
        result = build_report(args.out, config=config, progress=not args.quiet, capture=capture,
                              memory=args.memory, scheduler=args.scheduler)
        print(f"wrote {result.index}")
        return 0
    if args.grid is not None or args.extra_tokens is not None or args.memory is not None:
        args.subparser.error("--grid, --extra-tokens and --memory go with --capture FILE")
    extra = []
    for text in args.subset:
        names = [t.strip() for t in text.split(",") if t.strip()]
        if not names:
            args.subparser.error(f"--subset: no layer given in {text!r}")
        extra.append((",".join(names), names if len(names) > 1 else names[0], "layers given by --subset"))
    config = replace(config, subsets=tuple(config.subsets) + tuple(extra))
    try:
        config.model()  # check the selections before the long run
    except ValueError as exc:
        args.subparser.error(f"--subset: {exc}")
    result = build_report(args.out, config=config, progress=not args.quiet)
    print(f"wrote {result.index}")
    return 0


def _cmd_finetune(args):
    missing = [name for name, module in (("scikit-learn", "sklearn"), ("matplotlib", "matplotlib"))
               if importlib.util.find_spec(module) is None]
    if missing:
        print(f"{PROG}: error: lbp finetune needs {' and '.join(missing)}: pip install 'lbpcore[finetune]'",
              file=sys.stderr)
        return 1
    if args.study is not None:
        args.engine = "torch"
    if args.engine == "torch" and importlib.util.find_spec("torch") is None:
        print(f"{PROG}: error: lbp finetune --engine torch needs PyTorch: pip install 'lbpcore[torch]' "
              "(or use the default --engine numpy)", file=sys.stderr)
        return 1
    if args.device != "cpu" and args.engine != "torch":
        args.subparser.error("--device needs --engine torch")
    if args.study == "scale":
        from .finetune.scale_study import FULL_GRID, QUICK_GRID, build_scale_study  # noqa: PLC0415 - PyTorch

        grid = dict(QUICK_GRID if args.quick else FULL_GRID)
        if args.seeds is not None:
            grid["seeds"] = args.seeds
        if args.steps is not None:
            grid["steps"] = (args.steps,)
        res = build_scale_study(args.out, grid, cache_dir=args.cache_dir, progress=not args.quiet,
                                device=args.device)
        print(f"wrote {Path(args.out) / 'index.md'} ({res['seconds']:.0f} s)")
        return 0
    config = FinetuneConfig.quick() if args.quick else FinetuneConfig.full()
    if args.quick and args.engine == "torch":
        from .finetune.torch_digits import quick_torch_config  # noqa: PLC0415 - PyTorch is optional

        config = quick_torch_config(config)
    if args.seeds is not None:
        config = replace(config, seeds=args.seeds)
    if args.steps is not None:
        config = config.with_steps(args.steps)
    if args.methods is not None:
        config = replace(config, methods=("dense", *(m for m in args.methods if m != "dense")))
    result = build_finetune(args.out, config, cache_dir=args.cache_dir, progress=not args.quiet,
                            engine=args.engine, device=args.device)
    print(result.results["summary"]["headline"])
    print(f"wrote {result.index} ({result.seconds:.0f} s)")
    return 0


def _cmd_bench(args):
    return bench.main(args.rest)  # the arguments after "bench", as given (already checked by the parser)


# ---------------------------------------------------------------------------
# entry point


def main(argv=None) -> int:
    """Run the ``lbp`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments after the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 on success, 2 on a usage error, 1 on bad data or an
        output that cannot be written (with a one-line ``lbp: error: ...``
        message on stderr and nothing written).

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C; the ``lbp`` command (:func:`analysis._entry.main`) turns
        it into ``lbp: interrupted`` and exit status 130.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from analysis.cli import main
    >>> d = tempfile.mkdtemp()
    >>> np.save(os.path.join(d, "x.npy"), np.random.default_rng(0).standard_normal((2, 64, 4)))
    >>> main(["spectrum", os.path.join(d, "x.npy"), "--grid", "8x8", "--out", d])  # doctest: +ELLIPSIS
    x.npy: lp_l1:6 (21 of 64 bases) keeps ...% of the energy; wrote ...
    0
    >>> sorted(f for f in os.listdir(d) if f != "x.npy")
    ['energy_curve.png', 'spectrum.json', 'spectrum.png']
    >>> main(["spectrum", os.path.join(d, "x.npy"), "--grid", "4x4", "--out", d])
    1
    """
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        args = build_parser().parse_args(argv)
        args.rest = argv[argv.index(args.command) + 1:]
        _check_outputs(args)
        return int(args.func(args) or 0)
    except SystemExit as exc:  # a usage error, printed by argparse with the usage (2), or --help (0)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    except (ValueError, OSError, MemoryError, ImportError) as exc:  # bad data, unwritable output, no Dask...
        if os.environ.get("LBP_DEBUG"):
            raise
        msg = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, OSError) and getattr(exc, "filename", None) and exc.strerror:
            msg = f"{exc.filename}: {exc.strerror}"
        if isinstance(exc, MemoryError):
            msg = f"out of memory ({msg})"
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 1


def _check_outputs(args):
    """The outputs of a command (``--out`` directory, ``--json`` file) can be written: checked before it runs."""
    if getattr(args, "out", None) is not None:
        check_output_dir(args.out)
    if getattr(args, "json", None) is not None:
        check_output_file(args.json)
