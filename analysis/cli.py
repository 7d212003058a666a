"""The ``lbp`` command line: spectra, gradient errors, benchmarks and the report.

Subcommands (``lbp COMMAND --help`` for the options)::

    lbp report   [--out DIR] [--quick] [--subset LAYERS ...] [--quiet]
    lbp spectrum FILE --grid HxW [--patch N] [--extra-tokens E] [--layout tokens|nchw]
                 [--key NAME] [--pad MODE] --out DIR
    lbp error    FILE.npz --grid HxW --bases SPEC [--patch N] [--extra-tokens E]
                 [--layout tokens|nchw] [--pad MODE] [--baselines LIST] --out DIR
    lbp bench    [--quick] [--json FILE] [--device cpu|gpu]

Exit status: 0 on success, 2 on a usage error (bad option or value, printed by
:mod:`argparse`), 1 on bad data (missing or unreadable file, missing array,
shapes that do not fit the grid, NaN or inf), with a one-line ``lbp: error:``
message on stderr and no traceback.  Every input is read and checked, and
every result computed, before the first file is written; each file is then
written atomically (:mod:`analysis._io`), so a failed run leaves no partial
output behind.

The same entry point runs as ``lbp`` (console script), ``python -m analysis``
or :func:`main` from Python.  Set the environment variable ``LBP_DEBUG=1`` to
get the traceback of an unexpected ``ValueError`` or ``OSError`` instead of
the one-line message.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
from pathlib import Path

__all__ = ["main", "build_parser", "parse_grid"]

PROG = "lbp"

_GRID_RE = re.compile(r"^\s*(\d+)\s*[xX,]\s*(\d+)\s*$")


class _BadData(Exception):
    """Internal: bad input data, reported as a one-line message with exit status 1."""


class _Usage(Exception):
    """Internal: an option value found wrong after parsing (exit status 2)."""


def parse_grid(text):
    """Parse a token grid written ``HxW`` (also ``H,W``) into ``(h, w)``.

    Parameters
    ----------
    text : str
        Two positive integers separated by ``x``, ``X`` or a comma.

    Returns
    -------
    (int, int)
        ``(h, w)``.

    Raises
    ------
    argparse.ArgumentTypeError
        If the text is not of that form or a side is zero (a usage error).

    Examples
    --------
    >>> from analysis.cli import parse_grid
    >>> parse_grid("14x14"), parse_grid("7,9")
    ((14, 14), (7, 9))
    """
    m = _GRID_RE.match(str(text))
    if m is None:
        raise argparse.ArgumentTypeError(f"grid must look like HxW (e.g. 14x14), got {text!r}")
    h, w = int(m.group(1)), int(m.group(2))
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"grid sides must be positive, got {text!r}")
    return h, w


def _power_of_two(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"patch must be an integer, got {text!r}") from None
    if n < 1 or n & (n - 1):
        raise argparse.ArgumentTypeError(f"patch must be a power of two (1, 2, 4, 8, ...), got {n}")
    return n


def _non_negative(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {n}")
    return n


def _baseline_list(text):
    from .errors import BASELINES  # noqa: PLC0415

    names = tuple(n for n in (t.strip() for t in str(text).split(",")) if n and n.lower() != "none")
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown baseline {bad[0]!r}; choose from {', '.join(BASELINES)} or none")
    return names


def _check_options(args):
    """Usage checks that need several options; returns the ``--bases`` selection (before any data is read)."""
    import numpy as np  # noqa: PLC0415

    import lbpcore  # noqa: PLC0415

    if args.layout == "nchw" and args.extra_tokens:
        raise _Usage("--extra-tokens must be 0 with --layout nchw")
    n = args.patch
    try:  # a constant score map stands in for the data of the energy specs
        return lbpcore.select_bases(n, args.bases, calibration=np.ones((n, n)))
    except ValueError as exc:
        raise _Usage(f"--bases: {exc}") from None


def _add_grid_options(p, *, with_key):
    p.add_argument("--grid", type=parse_grid, required=True, metavar="HxW",
                   help="token grid h x w (row-major tokens after the extra tokens); for nchw it must be H x W")
    p.add_argument("--patch", type=_power_of_two, default=8, metavar="N",
                   help="patch size n, a power of two (default 8)")
    p.add_argument("--extra-tokens", type=_non_negative, default=0, metavar="E",
                   help="leading tokens outside the grid, e.g. a class token (default 0)")
    p.add_argument("--layout", choices=("tokens", "nchw"), default="tokens",
                   help="tokens: (B, E + h*w, C); nchw: (B, C, H, W) (default tokens)")
    p.add_argument("--pad", choices=("reflect", "zero", "none"), default="reflect",
                   help="padding of grids the patch size does not divide (default reflect)")
    if with_key:
        p.add_argument("--key", metavar="NAME", help="array to read from a .npz archive (default: its only array)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")


def build_parser():
    """The :mod:`argparse` parser of the ``lbp`` command.

    Returns
    -------
    argparse.ArgumentParser
        With subcommands ``report``, ``spectrum``, ``error`` and ``bench``;
        each sets ``args.func`` to the function that runs it.

    Examples
    --------
    >>> from analysis.cli import build_parser
    >>> args = build_parser().parse_args(["spectrum", "x.npy", "--grid", "16x16", "--out", "o"])
    >>> args.command, args.grid, args.patch, args.layout
    ('spectrum', (16, 16), 8, 'tokens')
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
    p.add_argument("--out", default="lbp-report", metavar="DIR", help="output directory (default ./lbp-report)")
    p.add_argument("--quick", action="store_true", help="a reduced workload (seconds; for smoke tests)")
    p.add_argument("--subset", action="append", default=[], metavar="LAYERS",
                   help="also run end to end with LBP-WHT on these layers only: comma-separated names or patterns, "
                        "e.g. 'blocks.3.*' or 'blocks.*.mlp.fc1,blocks.*.attn.proj' (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_report, subparser=p)

    p = sub.add_parser("spectrum", help="Walsh-Hadamard energy spectrum of one array",
                       description="Energy map of the 2D Walsh basis over the patches of FILE (.npy, or an array "
                                   "of a .npz): writes spectrum.json, spectrum.png (heatmap) and "
                                   "energy_curve.png (energy kept versus rank).")
    p.add_argument("file", metavar="FILE", help=".npy file, or .npz archive (see --key)")
    _add_grid_options(p, with_key=True)
    p.add_argument("--bases", default="lp_l1:6", metavar="SPEC",
                   help="selection outlined on the heatmap and reported as energy kept (default lp_l1:6)")
    p.set_defaults(func=_cmd_spectrum, subparser=p)

    p = sub.add_parser("error", help="gradient errors of LBP-WHT and baselines on one layer",
                       description="Read x, weight and grad_y from FILE.npz, compare the LBP-WHT gradients "
                                   "(and rank-matched baselines) with the exact ones; print a table and write "
                                   "error.json.")
    p.add_argument("file", metavar="FILE.npz", help="archive with arrays x, weight (C_out, C_in) and grad_y")
    _add_grid_options(p, with_key=False)
    p.add_argument("--bases", required=True, metavar="SPEC",
                   help="basis selection, e.g. lp_l1:6, lp_linf:4, energy_l2:16 (ranked on grad_y)")
    p.add_argument("--baselines", type=_baseline_list, default=("klt", "dct", "svd", "random"), metavar="LIST",
                   help="comma-separated baselines at the same rank (default klt,dct,svd,random; 'none' for none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline (default 0)")
    p.set_defaults(func=_cmd_error, subparser=p)

    p = sub.add_parser("bench", help="time dense versus LBP-WHT backward and the WHT (analysis.bench)",
                       description="Benchmark the LBP-WHT backward and the fast Walsh-Hadamard transform "
                                   "(see analysis.bench).")
    try:  # the options are analysis.bench's own, so that they cannot drift apart
        from .bench import add_arguments  # noqa: PLC0415

        add_arguments(p)
    except (ImportError, AttributeError):
        p.add_argument("--quick", action="store_true", help="smaller batches, fewer rounds")
        p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
        p.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="cpu (NumPy) or gpu (CuPy)")
    p.set_defaults(func=_cmd_bench, subparser=p)
    return parser


# ---------------------------------------------------------------------------
# shared helpers


def _render_png(ax, **kwargs):
    """PNG bytes of the figure an axes belongs to (rendered before anything is written)."""
    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png", **kwargs)
    return buf.getvalue()


def _write_files(out, files):
    from .io import write_files  # noqa: PLC0415

    return write_files(out, files)


def _json_text(obj):
    import json  # noqa: PLC0415

    from ._io import to_jsonable  # noqa: PLC0415

    return json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"


def _grid_shape_check(arr, args, name):
    """One-line message if ``arr`` cannot be a ``name`` on ``args.grid``; None if it fits."""
    h, w = args.grid
    if args.layout == "tokens":
        if arr.ndim != 3:
            return f"{name} must be 3-D tokens (B, E + h*w, C) for --layout tokens, got shape {arr.shape}"
        if arr.shape[1] != args.extra_tokens + h * w:
            return (f"{name} has {arr.shape[1]} tokens but --grid {h}x{w} with --extra-tokens {args.extra_tokens} "
                    f"needs {args.extra_tokens + h * w} (shape {arr.shape})")
    else:
        if arr.ndim != 4:
            return f"{name} must be 4-D maps (B, C, H, W) for --layout nchw, got shape {arr.shape}"
        if tuple(arr.shape[2:]) != (h, w):
            return f"{name} has spatial shape {tuple(arr.shape[2:])} but --grid is {h}x{w}"
    if arr.shape[0] == 0:
        return f"{name} has an empty batch (shape {arr.shape})"
    return None


def _load(path, key=None):
    from ._io import load_array  # noqa: PLC0415

    return load_array(path, key)


# ---------------------------------------------------------------------------
# commands


def _cmd_spectrum(args):
    import numpy as np  # noqa: PLC0415

    import lbpcore  # noqa: PLC0415

    from .plots import plot_energy_curves, plot_spectrum  # noqa: PLC0415
    from .spectrum import energy_curves, energy_kept, energy_maps  # noqa: PLC0415

    basis = _check_options(args)
    x = _load(args.file, args.key)
    problem = _grid_shape_check(x, args, "the array")
    if problem:
        raise _BadData(f"{args.file}: {problem}")
    res = energy_maps(np.asarray(x), grid=args.grid, patch=args.patch, pad=args.pad,
                      extra_tokens=args.extra_tokens, layout=args.layout)
    if args.bases.strip().startswith("energy"):  # rank by this array's own spectrum
        score = res.l1_map if args.bases.strip().startswith("energy_l1") else res.energy_map
        basis = lbpcore.select_bases(args.patch, args.bases, calibration=score)
    curves = energy_curves(res)
    kept = energy_kept(res, basis)
    result = res.to_dict()
    result.update({
        "source": {"file": str(args.file), "key": args.key, "shape": list(x.shape), "dtype": str(x.dtype)},
        "bases": basis.spec,
        "rank": int(basis.rank),
        "energy_kept": kept,
        "curves": curves,
    })
    name = Path(args.file).name + (f"[{args.key}]" if args.key else "")
    ax = plot_spectrum(res.energy_map, bases=basis, title=f"Walsh energy of {name}, patch {args.patch}")
    heat = _render_png(ax)
    ax = plot_energy_curves(curves, highlight=basis.rank, title=f"energy kept: {name}")
    curve = _render_png(ax)
    _write_files(args.out, {"spectrum.json": _json_text(result), "spectrum.png": heat, "energy_curve.png": curve})
    print(f"{name}: {basis.spec} ({basis.rank} of {args.patch ** 2} bases) keeps {100 * kept:.2f}% of the energy; "
          f"wrote {args.out}/spectrum.json, spectrum.png, energy_curve.png")
    return 0


def _error_table(rows):
    """Plain-text table of (method, rank, errors) rows."""
    head = ("method", "rank", "grad_x rel err", "grad_x cosine", "grad_W rel err", "grad_W cosine")
    lines = [head] + [
        (m, str(r), f"{gx['rel_error']:.4e}", f"{gx['cosine']:.6f}", f"{gw['rel_error']:.4e}", f"{gw['cosine']:.6f}")
        for m, r, gx, gw in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    text = [fmt.format(*line) for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def _cmd_error(args):
    import lbpcore  # noqa: PLC0415

    from ._io import to_jsonable  # noqa: PLC0415
    from .errors import gradient_errors  # noqa: PLC0415

    basis = _check_options(args)
    if Path(args.file).suffix.lower() != ".npz":
        if not Path(args.file).exists():
            raise _BadData(f"{args.file}: no such file")
        raise _BadData(f"{args.file}: expected a .npz archive with arrays x, weight and grad_y")
    x = _load(args.file, "x")
    weight = _load(args.file, "weight")
    grad_y = _load(args.file, "grad_y")
    for arr, name in ((x, "x"), (grad_y, "grad_y")):
        problem = _grid_shape_check(arr, args, name)
        if problem:
            raise _BadData(f"{args.file}: {problem}")
    if weight.ndim != 2:
        raise _BadData(f"{args.file}: weight must be 2-D (C_out, C_in), got shape {weight.shape}")
    c_axis = 2 if args.layout == "tokens" else 1
    c_out, c_in = weight.shape
    if x.shape[c_axis] != c_in or grad_y.shape[c_axis] != c_out:
        raise _BadData(f"{args.file}: weight {weight.shape} (C_out, C_in) does not match x {x.shape} "
                       f"and grad_y {grad_y.shape}")
    other = [i for i in range(x.ndim) if i != c_axis]
    if [x.shape[i] for i in other] != [grad_y.shape[i] for i in other]:
        raise _BadData(f"{args.file}: x {x.shape} and grad_y {grad_y.shape} differ outside the channel axis")
    if args.bases.strip().startswith("energy"):
        # rank the bases by grad_y itself, the tensor the backward projects
        basis = lbpcore.select_bases(args.patch, args.bases, calibration=grad_y, grid=args.grid,
                                     extra_tokens=args.extra_tokens, pad=args.pad, layout=args.layout)
    dtype = x.dtype if x.dtype.kind == "f" else "float64"
    x, weight, grad_y = (a.astype(dtype, copy=False) for a in (x, weight, grad_y))
    report = gradient_errors(x, weight, grad_y, grid=args.grid, patch=args.patch, bases=basis, pad=args.pad,
                             extra_tokens=args.extra_tokens, layout=args.layout, baselines=args.baselines,
                             seed=args.seed)
    d = to_jsonable(report)
    lbp = d["lbp"]
    result = {
        "source": {"file": str(args.file), "x_shape": list(x.shape), "weight_shape": list(weight.shape),
                   "grad_y_shape": list(grad_y.shape), "dtype": str(x.dtype)},
        "grid": list(args.grid),
        "patch": args.patch,
        "extra_tokens": args.extra_tokens,
        "layout": args.layout,
        "pad": args.pad,
        "bases": basis.spec,
        "indices": basis.indices.tolist(),
        "rank": d["rank"],
        "grad_x": lbp["grad_x"],
        "grad_weight": lbp["grad_weight"],
        "baselines": {name: {"grad_x": g["grad_x"], "grad_weight": g["grad_weight"]}
                      for name, g in d.get("baselines", {}).items()},
        "report": d,
    }
    rows = [("LBP-WHT " + basis.spec, d["rank"], lbp["grad_x"], lbp["grad_weight"])]
    rows += [(name, d["rank"], g["grad_x"], g["grad_weight"]) for name, g in result["baselines"].items()]
    text = _json_text(result)
    _write_files(args.out, {"error.json": text})
    print(_error_table(rows))
    print(f"wrote {args.out}/error.json")
    return 0


def _cmd_report(args):
    from dataclasses import replace  # noqa: PLC0415

    from .report import ReportConfig, build_report  # noqa: PLC0415

    config = ReportConfig.quick_config() if args.quick else ReportConfig()
    extra = []
    for text in args.subset:
        names = [t.strip() for t in text.split(",") if t.strip()]
        if not names:
            raise _Usage(f"--subset: no layer given in {text!r}")
        extra.append((",".join(names), names if len(names) > 1 else names[0], "layers given by --subset"))
    config = replace(config, subsets=tuple(config.subsets) + tuple(extra))
    try:
        config.model()  # check the selections before the long run
    except ValueError as exc:
        raise _Usage(f"--subset: {exc}") from None
    result = build_report(args.out, config=config, progress=not args.quiet)
    print(f"wrote {result.index}")
    return 0


def _cmd_bench(args):
    from . import bench  # noqa: PLC0415

    rc = bench.main(args.rest)  # the arguments after "bench", as given (already checked by the parser)
    return 0 if rc is None else int(rc)


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
        Exit status: 0 on success, 2 on a usage error, 1 on bad data (with a
        one-line ``lbp: error: ...`` message on stderr and nothing written).

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
    from ._io import DataError  # noqa: PLC0415

    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (2) or --help (0)
        return 0 if exc.code is None else int(exc.code) if isinstance(exc.code, int) else 2
    args.rest = argv[argv.index(args.command) + 1:]
    try:
        return int(args.func(args) or 0)
    except _Usage as exc:
        try:
            args.subparser.error(str(exc))  # prints the usage, exits with status 2
        except SystemExit as stop:
            return int(stop.code)
    except (_BadData, DataError) as exc:
        _fail(exc)
    except (ValueError, OSError) as exc:  # shapes lbpcore rejects, unwritable output...
        if os.environ.get("LBP_DEBUG"):
            raise
        _fail(exc)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 1


def _fail(exc):
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and getattr(exc, "filename", None) and exc.strerror:
        msg = f"{exc.filename}: {exc.strerror}"
    print(f"{PROG}: error: {msg}", file=sys.stderr)
