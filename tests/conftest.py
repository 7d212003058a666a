"""Fixtures and hypothesis profiles only.

The independent oracles are in ``oracles.py``, the tolerance table in
``tolerances.py`` (``from oracles import ...``: ``tests/`` has no
``__init__.py``, so pytest puts it on ``sys.path``).
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest
from array_api_compat import array_namespace, device
from hypothesis import HealthCheck, settings

# --------------------------------------------------------------------------
# hypothesis profiles
# --------------------------------------------------------------------------

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=200,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture
def rng(request):
    """A Generator seeded from the test's node id (reproducible, per test)."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


class Backend:
    """An array namespace plus a device, with NumPy round-trips."""

    def __init__(self, name, xp, device=None):
        self.name = name
        self.xp = xp
        self.device = device

    def asarray(self, a):
        a = np.asarray(a)
        if self.device is None:
            return self.xp.asarray(a)
        return self.xp.asarray(a, device=self.device)

    def to_numpy(self, a):
        if self.name.startswith("array_api_strict"):
            return np.asarray(a.to_device(self.xp.Device("CPU_DEVICE")))
        if self.name == "cupy":
            return a.get()
        return np.asarray(a)

    def check_kind(self, result, like):
        """Assert ``result`` has the namespace and device of ``like``."""
        assert array_namespace(result) is array_namespace(like), (
            f"{self.name}: result namespace {array_namespace(result).__name__} "
            f"!= input namespace {array_namespace(like).__name__}"
        )
        assert device(result) == device(like), f"{self.name}: device {device(result)} != {device(like)}"

    def __repr__(self):
        return f"Backend({self.name})"


def _make_backend(name):
    if name == "numpy":
        return Backend(name, np)
    if name == "array_api_strict":
        xs = pytest.importorskip("array_api_strict")
        return Backend(name, xs, xs.__array_namespace_info__().default_device())
    if name == "array_api_strict-device1":
        xs = pytest.importorskip("array_api_strict")
        return Backend(name, xs, xs.Device("device1"))
    if name == "cupy":
        cp = pytest.importorskip("cupy")
        try:
            if cp.cuda.runtime.getDeviceCount() < 1:
                pytest.skip("CuPy found no CUDA device")
        except Exception as exc:  # CUDA driver missing, etc.
            pytest.skip(f"CuPy cannot use a CUDA device: {exc}")
        return Backend(name, cp)
    raise AssertionError(name)


@pytest.fixture(
    params=[
        "numpy",
        "array_api_strict",
        "array_api_strict-device1",
        pytest.param("cupy", marks=pytest.mark.gpu),
    ]
)
def backend(request):
    """Every array namespace/device the library must serve."""
    return _make_backend(request.param)


@pytest.fixture
def cupy_backend():
    """CuPy on the current CUDA device (skips without one)."""
    return _make_backend("cupy")


@pytest.fixture(scope="module")
def torch_single_thread():
    """PyTorch (skips without it) with one intra-op thread for the module's tests.

    The tests' tensors are tiny: on a busy machine PyTorch's OpenMP threads wait
    on each other for milliseconds per operation, ten times the work itself.
    """
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)
