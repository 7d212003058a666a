"""The numerical tests rerun under OpenBLAS's other kernel families and thread counts (marked ``slow``).

Every tolerance of this suite is derived from an error bound (``tests/tolerances.py``)
that holds for any correctly rounded BLAS, whatever order its kernels sum in.  This
module checks that claim where it can fail: it reruns the modules that compare two
floating-point paths in subprocesses with ``OPENBLAS_CORETYPE`` set to each kernel
family the CPU can run (OpenBLAS's ``DYNAMIC_ARCH`` builds, as NumPy's wheels are,
pick their kernels from it) and with one BLAS thread against two (a different
split of each product's sums).  A family the CPU or the BLAS build cannot run is
skipped, with the kernel OpenBLAS reported instead, and so is the machine's default
family on two threads, which the normal test run already covers.

    python -m pytest -m slow tests/test_blas_kernels.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TESTS = Path(__file__).parent

#: Modules that compare floating-point paths (kernels with references, full basis with dense,
#: engines with each other, trajectories); the rest of the suite does not depend on rounding.
NUMERICAL = (
    "test_wht.py", "test_wht_plans.py", "test_patches.py", "test_linear.py", "test_golden.py",
    "test_backends.py", "test_bases.py", "test_empty_dims.py", "test_testing_module.py", "test_cost.py",
    "test_vit.py", "test_gradient_errors.py", "test_errors.py", "test_spectrum.py",
    "test_finetune_train.py", "test_finetune_optim.py", "test_finetune_methods.py", "test_budget.py",
    "test_torch_models.py", "test_torch_autograd.py", "test_torch_layers.py", "test_doctests.py",
)

#: Of the doctests, those of the numerical modules (``-k``: other modules' tests never match ``test_doctests``).
KEYWORDS = "not test_doctests or lbpcore or analysis.vit or analysis.finetune or analysis.errors or analysis.spectrum"

#: Configurations run side by side (each is mostly one Python thread).
LANES = 2

#: (OPENBLAS_CORETYPE, OPENBLAS_NUM_THREADS): the x86-64 families of different generations
#: (AVX2 from Intel and from AMD, AVX-512, SSE3), then the default kernel on one thread.
#: (Sandybridge's AVX kernels passed too, by hand, on 2026-12-07; left out for CI's time.)
#: A build may map a family onto another's kernels (NumPy's OpenBLAS runs Haswell's for Zen);
#: a configuration whose kernels an earlier one already ran is skipped.
CONFIGS = (("Haswell", 2), ("SkylakeX", 2), ("Zen", 2), ("Prescott", 2), (None, 1))

_PROBE = (
    "import json, numpy, threadpoolctl;"
    "numpy.ones((64, 64)) @ numpy.ones((64, 64));"
    "print(json.dumps([i for i in threadpoolctl.threadpool_info() if i['internal_api'] == 'openblas']))"
)


def _env(coretype, threads):
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    if coretype is not None:
        env["OPENBLAS_CORETYPE"] = coretype
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _openblas(env):
    """OpenBLAS's own report in a process started with ``env``: ``[{'architecture': ..., ...}]``, or ``[]``."""
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:  # e.g. an instruction the CPU lacks
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run(coretype, threads):
    """Skip reason, or the finished subprocess of the numerical modules under this configuration."""
    env = _env(coretype, threads)
    info = _openblas(env)
    if not info:
        return f"NumPy's BLAS is not OpenBLAS, or it cannot run the {coretype} kernels here", None
    arch = str(info[0].get("architecture", ""))
    default = _openblas(_env(None, 2))
    if coretype is not None and threads == 2 and default and str(default[0].get("architecture", "")) == arch:
        return f"{arch} is this machine's default kernel family: the normal test run covers it", None
    for c, t in CONFIGS[:CONFIGS.index((coretype, threads))]:
        earlier = _openblas(_env(c, t))
        if t == threads and earlier and str(earlier[0].get("architecture", "")) == arch:
            return f"OPENBLAS_CORETYPE={coretype} runs the {arch} kernels, already run for {c}", None
    if threads > 1 and int(info[0].get("num_threads", 1)) < threads:
        return f"OpenBLAS has {info[0].get('num_threads')} thread(s) here", None
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow and not gpu",
           "-k", KEYWORDS, *(str(TESTS / m) for m in NUMERICAL)]
    out = subprocess.run(cmd, env=env, cwd=TESTS.parent, capture_output=True, text=True, timeout=1200)
    return arch, out


@pytest.fixture(scope="module")
def runs():
    """Every configuration started at once, :data:`LANES` at a time."""
    with ThreadPoolExecutor(LANES) as pool:
        futures = {cfg: pool.submit(_run, *cfg) for cfg in CONFIGS}
        yield futures


@pytest.mark.parametrize(("coretype", "threads"), CONFIGS,
                         ids=[f"{c or 'default'}-{t}thread{'s' if t > 1 else ''}" for c, t in CONFIGS])
def test_numerical_tests_hold_under_blas_kernel(runs, coretype, threads):
    arch, out = runs[(coretype, threads)].result()
    if out is None:
        pytest.skip(arch)
    assert out.returncode == 0, (
        f"under OPENBLAS_CORETYPE={coretype} ({arch}), {threads} BLAS thread(s), a result moved past its "
        f"documented bound:\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}")
