"""``lbp finetune``: run the experiment and write its directory, all files at once.

:func:`build_finetune` runs :func:`~analysis.finetune.run_finetune`, adds the
:func:`~analysis.finetune.summarize` numbers to the results, renders the
figures and ``index.md`` in memory, and only then writes ``index.md``,
``results.json`` and the ``fig_*.png`` files with
:func:`analysis.io.write_files` (all at once: a failed or interrupted run leaves
the old output as it was).
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .._outdir import check_output_dir
from ..io import json_text, write_files
from .cache import default_cache_dir
from .experiment import FinetuneConfig, run_finetune
from .figures import render_figures
from .markdown import render_markdown
from .summary import summarize

__all__ = ["ENGINES", "FinetuneResult", "build_finetune"]

#: Engines of :func:`build_finetune`: the NumPy ViT, or its PyTorch port.
ENGINES = ("numpy", "torch")


@dataclass
class FinetuneResult:
    """What :func:`build_finetune` wrote.

    Attributes
    ----------
    out : pathlib.Path
        The directory.
    index : pathlib.Path
        ``out / "index.md"``.
    files : list of pathlib.Path
        Every file written.
    results : dict
        The content of ``results.json`` (with its ``summary``).
    seconds : float
        Wall time of the whole run.

    Examples
    --------
    >>> from pathlib import Path
    >>> from analysis.finetune import FinetuneResult
    >>> FinetuneResult(Path("o"), Path("o/index.md"), [], {}, 1.0).index.name
    'index.md'
    """

    out: Path
    index: Path
    files: list
    results: dict = field(repr=False)
    seconds: float


def build_finetune(out="lbp-finetune", config=None, *, cache_dir=None, progress=True, engine="numpy",
                   device="cpu") -> FinetuneResult:
    """Run the fine-tuning experiment and write ``index.md``, ``results.json`` and the figures.

    Parameters
    ----------
    out : str or os.PathLike, optional
        Output directory (created if missing); default ``"lbp-finetune"``.
    config : FinetuneConfig, optional
        Default :meth:`FinetuneConfig.full`.
    cache_dir : str or os.PathLike, optional
        Pretraining cache (default :func:`~analysis.finetune.default_cache_dir`).
    progress : bool, optional
        Progress bars on stderr (default True).
    engine : {"numpy", "torch"}, optional
        Train the NumPy :class:`~analysis.vit.TinyViT` (default), or its
        PyTorch port with :func:`~analysis.finetune.torch_digits.run_finetune_torch`
        (needs PyTorch).
    device : str, optional
        PyTorch device of the torch engine (default ``"cpu"``).

    Returns
    -------
    FinetuneResult

    Raises
    ------
    OSError
        If ``out`` cannot receive the output set (not a directory, not
        writable, ``cache_dir`` inside it...; checked before the run, see
        :func:`analysis.io.write_files`), or the files cannot be written: the
        old content of ``out`` is then left as it was.

    Examples
    --------
    >>> import json, tempfile
    >>> from dataclasses import replace
    >>> from analysis.finetune import FinetuneConfig, TrainConfig, build_finetune
    >>> from analysis.vit import ViTConfig
    >>> cfg = replace(FinetuneConfig.quick(), methods=("dense", "lp_l1:2"),
    ...               model=ViTConfig(image_size=8, patch_size=1, in_chans=1, dim=8, depth=1, heads=2, num_classes=5),
    ...               pretrain=TrainConfig(steps=2), adapt=TrainConfig(steps=2, eval_every=1, check_every=1))
    >>> res = build_finetune(tempfile.mkdtemp(), cfg, cache_dir=tempfile.mkdtemp(), progress=False)
    >>> sorted(p.name for p in res.files)
    ['fig_grad_error.png', 'fig_loss.png', 'fig_pareto.png', 'index.md', 'results.json']
    >>> [m["name"] for m in json.loads((res.out / "results.json").read_text())["methods"]]
    ['dense', 'lp_l1:2']
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    t0 = time.perf_counter()
    out = Path(out)
    real = check_output_dir(out)  # fail before a long run, not after it
    cache = Path(os.path.realpath(default_cache_dir() if cache_dir is None else cache_dir))
    if cache != real and real in cache.parents:
        raise IsADirectoryError(errno.EISDIR, f"holds the pretraining cache {cache_dir or cache}, and the output "
                                "directory holds files only: give a cache directory outside it (or the same one)",
                                str(out))
    config = FinetuneConfig.full() if config is None else config
    if engine == "torch":
        from .torch_digits import run_finetune_torch  # noqa: PLC0415 - PyTorch is optional

        results = run_finetune_torch(config, cache_dir=cache_dir, progress=progress, device=device)
    else:
        results = run_finetune(config, cache_dir=cache_dir, progress=progress)
    summary = summarize(results)
    results["summary"] = summary
    payload = dict(render_figures(results, summary))
    payload["index.md"] = render_markdown(results, summary, figures=list(payload))
    payload["results.json"] = json_text(results)
    files = write_files(out, payload)
    return FinetuneResult(out=out, index=out / "index.md", files=files, results=results,
                          seconds=time.perf_counter() - t0)
