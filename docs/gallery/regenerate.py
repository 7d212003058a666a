"""Regenerate the figures of the gallery page (docs/gallery.md) with the ``lbp`` commands.

Run from the repository root (a few minutes on 2 cores; PyTorch is needed for the
capture)::

    python docs/gallery/regenerate.py            # all three runs
    python docs/gallery/regenerate.py capture    # only some: report, capture, finetune

Each run writes, under ``docs/gallery/<run>/``, the ``fig_*.png`` files and the
``results.json`` that the command wrote, and records the command and the versions
in ``docs/gallery/manifest.json``:

* ``report``: ``lbp report`` (the built-in workload, with its fine-tuning headline);
* ``capture``: ``lbp report --capture vit_capture.npz``, the capture of the
  PyTorch tutorial's model (docs/tutorials/torch_models.md), made by running that
  page's code blocks up to ``cap.save``;
* ``finetune``: ``lbp finetune --quick``.

tests/test_docs_gallery.py re-renders every figure from the committed
``results.json`` with the current figure code and checks that the committed PNG
is what it draws, and that the gallery holds every figure the commands write.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TUTORIAL = ROOT / "docs" / "tutorials" / "torch_models.md"

#: run name -> the arguments of ``lbp`` (the capture file is made first)
RUNS = {
    "report": ["report"],
    "capture": ["report", "--capture", "vit_capture.npz"],
    "finetune": ["finetune", "--quick"],
}


def tutorial_capture_code(path=TUTORIAL) -> str:
    """The ``python`` blocks of the PyTorch tutorial, up to the one that saves the capture."""
    blocks = re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    code = []
    for block in blocks:
        code.append(block)
        if "cap.save(" in block:
            return "\n".join(code)
    raise RuntimeError(f"{path} has no python block calling cap.save(...)")


def _lbp(args, cwd):
    command = [sys.executable, "-m", "analysis", *args]
    print("$ lbp " + " ".join(args), flush=True)
    subprocess.run(command, cwd=cwd, check=True, env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)})


def regenerate(runs=tuple(RUNS)) -> dict:
    """Run ``runs`` in a temporary directory and copy their figures into docs/gallery/."""
    import matplotlib  # noqa: PLC0415 - only to record its version

    import lbpcore  # noqa: PLC0415 - only to record its version

    manifest_path = HERE / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for run in runs:
            out = tmp / run
            if run == "capture":
                code = tutorial_capture_code()
                subprocess.run([sys.executable, "-c", code], cwd=tmp, check=True,
                               env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)})
            _lbp([*RUNS[run], "--out", str(out), "--quiet"], cwd=tmp)
            dest = HERE / run
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            figures = sorted(p.name for p in out.glob("fig_*.png"))
            for name in [*figures, "results.json"]:
                shutil.copyfile(out / name, dest / name)
            manifest[run] = {"command": "lbp " + " ".join(RUNS[run]), "figures": figures,
                             "lbpcore": lbpcore.__version__, "matplotlib": matplotlib.__version__}
            print(f"wrote {dest.relative_to(ROOT)}: {', '.join(figures)}", flush=True)
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", metavar="RUN", help=f"which runs (default all): {', '.join(RUNS)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.runs) - set(RUNS))
    if unknown:
        parser.error(f"RUN must be among {', '.join(RUNS)}, got {', '.join(unknown)}")
    regenerate(tuple(args.runs) or tuple(RUNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
