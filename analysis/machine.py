"""What a benchmark records of the machine it ran on (:func:`machine_info`).

Platform, CPU count and affinity, NumPy and its BLAS (threadpoolctl), the FFHT
anchor, the projection kernel that serves patch 8 and, with PyTorch loaded, the
threads that kernel runs on; every ``lbp bench`` JSON stores it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

import numpy as np

__all__ = ["machine_info"]


def machine_info(device="cpu") -> dict:
    """Platform, CPU count, NumPy version, BLAS (threadpoolctl) and the anchors found.

    Parameters
    ----------
    device : {"cpu", "gpu"}, optional
        Recorded as the device the benchmark runs on.

    Returns
    -------
    dict

    Examples
    --------
    >>> from analysis.machine import machine_info
    >>> info = machine_info()
    >>> {"platform", "cpu_count", "numpy", "blas", "ffht"} <= set(info)
    True
    """
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or _cpu_model(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "device": device,
    }
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        pass
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415 - threadpoolctl is optional

        info["blas"] = [
            {k: v for k, v in d.items() if k in ("internal_api", "version", "num_threads", "architecture",
                                                 "threading_layer", "prefix", "user_api")}
            for d in threadpool_info()
        ]
    except Exception as exc:  # pragma: no cover - threadpoolctl missing
        info["blas"] = f"unknown (threadpoolctl: {exc})"
    info["ffht"] = _ffht() is not None
    info.update(_kernel_info())
    return info


def _kernel_info() -> dict:
    """Which projection kernel serves NumPy tokens at patch 8, and (PyTorch loaded) where it runs."""
    from lbpcore._patches import _compiled  # noqa: PLC0415 - beside its one use

    compiled = _compiled.available()
    info = {"projection_kernel": f"compiled (Numba {importlib.metadata.version('numba')})" if compiled
            else "cache-blocked (NumPy)"}
    if "torch" in sys.modules:  # only what is loaded already: importing PyTorch here would cost seconds
        from lbpcore.torch._bridge import torch_openmp  # noqa: PLC0415 - PyTorch is optional

        team = torch_openmp() if compiled else None  # the team runs the compiled kernel only
        info["torch_kernel_threads"] = "lbpcore's pool" if team is None else f"PyTorch's OpenMP team ({team[0]})"
    return info


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return ""


def _ffht():
    try:
        import ffht  # noqa: PLC0415 - the FFHT anchor is optional

        return ffht
    except Exception:
        return None
