"""The CUDA kernels of ``lbpcore._wht._cuda`` and ``lbpcore._patches._cuda``, run on the CPU.

The kernel sources are plain C++ with a thin CUDA layer (see those modules), so
the same text compiles with g++ into a shared library whose ``lbp_host_*``
functions run every thread of every block (shuffles read the partner thread's
registers, barriers separate the phases).  A stand-in ``cupy`` module backed by
NumPy then runs the modules' Python wrappers unchanged: ``RawModule`` compiles
the source with g++, a kernel launch calls the host function, and every
argument is checked against the parameter types of the ``__global__``
signature (read from the preprocessed source), so that a wrong scalar type or
argument count fails here instead of on the device.  Results are compared with
lbpcore's NumPy functions.  Finally ``nvcc -arch=sm_90 -c`` compiles the device
code when nvcc is installed (syntax, registers and spills).

Skipped cleanly without g++ (and the nvcc part without nvcc).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
from tolerances import assert_allclose_dtype

import lbpcore

GXX = shutil.which("g++")
NVCC = shutil.which("nvcc") or (os.path.exists("/usr/local/cuda/bin/nvcc") and "/usr/local/cuda/bin/nvcc") or None

pytestmark = pytest.mark.skipif(GXX is None, reason="g++ is not installed")

# --------------------------------------------------------------------------
# a NumPy-backed stand-in for the part of CuPy the wrappers use
# --------------------------------------------------------------------------


class _Ptr:
    def __init__(self, ptr):
        self.ptr = ptr


class FakeArray(np.ndarray):
    """A NumPy array that exposes ``.data.ptr`` like a CuPy array."""

    @property
    def data(self):  # noqa: D401 - mimics cupy.ndarray.data
        return _Ptr(self.__array_interface__["data"][0])


def _fake(a):
    return a.view(FakeArray) if isinstance(a, np.ndarray) else a


def _aligned_empty(shape, dtype):
    """Arrays whose data starts on a 256-byte boundary, as CuPy's allocator gives."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + 256, dtype=np.uint8)
    off = (-raw.ctypes.data) % 256
    return raw[off : off + size].view(dtype).reshape(shape).view(FakeArray)


_CTYPES = {"long long": ctypes.c_int64, "int": ctypes.c_int32, "float": ctypes.c_float, "double": ctypes.c_double,
           "unsigned long long": ctypes.c_uint64}
_NPTYPES = {"long long": np.int64, "int": np.int32, "float": np.float32, "double": np.float64,
            "unsigned long long": np.uint64}


def _params(text):
    """``[(ctype, is_pointer)]`` of a comma-separated C parameter list."""
    out = []
    for p in text.split(","):
        p = " ".join(p.replace("__restrict__", "").replace("const ", "").split())
        ptr = "*" in p
        base = p.split("*")[0].strip() if ptr else " ".join(p.split()[:-1])
        out.append((base, ptr))
    return out


def _signatures(source, tmp, device):
    """Kernel name -> parameter list, from the preprocessed device or host source."""
    src = tmp / f"pp_{'dev' if device else 'host'}.cpp"
    src.write_text(source)
    args = [GXX, "-E", "-P", "-x", "c++", str(src)] + (["-D__CUDACC__"] if device else [])
    text = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    if device:
        pat = r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(([^)]*)\)'
        return {m.group(1): _params(m.group(2)) for m in re.finditer(pat, text)}
    pat = r'extern\s+"C"\s+int\s+lbp_host_(\w+)\s*\(([^)]*)\)'
    return {m.group(1): _params(m.group(2))[6:] for m in re.finditer(pat, text)}


class _Library:
    """A source compiled with g++ into a shared library, with its kernels' signatures."""

    def __init__(self, source, tmp, opt="-O1"):
        key = hashlib.sha1(source.encode()).hexdigest()[:16]
        d = tmp / f"lib_{key}"
        d.mkdir(exist_ok=True)
        (d / "k.cpp").write_text(source)
        so = d / "k.so"
        subprocess.run([GXX, "-std=c++17", opt, "-shared", "-fPIC", "-Wall", "-Werror", "-Wno-unused-function",
                        "-o", str(so), str(d / "k.cpp")], check=True, capture_output=True, text=True)
        self.lib = ctypes.CDLL(str(so))
        self.device = _signatures(source, d, True)
        host = _signatures(source, d, False)
        assert self.device, "no __global__ entry points found"
        assert set(self.device) == set(host), (set(self.device) ^ set(host))
        for name, params in self.device.items():
            assert params == host[name], f"{name}: device parameters {params} != host emulation {host[name]}"


class FakeFunction:
    def __init__(self, library, name):
        if name not in library.device:
            raise KeyError(f"no kernel {name!r} in the module")
        self.fn = getattr(library.lib, f"lbp_host_{name}")
        self.fn.restype = ctypes.c_int
        self.params = library.device[name]
        self.name = name
        self.launches = 0

    def __call__(self, grid, block, args, shared_mem=0):
        assert isinstance(grid, tuple) and isinstance(block, tuple), "grid and block must be tuples"
        assert len(args) == len(self.params), f"{self.name}: {len(args)} arguments for {len(self.params)} parameters"
        g = [int(v) for v in grid] + [1] * (3 - len(grid))
        b = [int(v) for v in block] + [1] * (3 - len(block))
        assert all(v >= 1 for v in g + b) and g[0] < 2**31 and b[0] * b[1] * b[2] <= 1024
        cargs = []
        for k, (a, (base, ptr)) in enumerate(zip(args, self.params, strict=True)):
            where = f"{self.name} argument {k} ({base}{'*' if ptr else ''})"
            if ptr:
                if isinstance(a, np.uint64) and int(a) == 0:
                    cargs.append(ctypes.c_void_p(0))
                    continue
                assert isinstance(a, FakeArray), f"{where}: got {type(a).__name__}"
                assert a.dtype == np.dtype(_NPTYPES[base]), f"{where}: array of {a.dtype}"
                assert a.flags.c_contiguous, f"{where}: not contiguous"
                cargs.append(ctypes.c_void_p(a.__array_interface__["data"][0]))
            else:
                assert type(a) is _NPTYPES[base], f"{where}: got {type(a).__name__} {a!r}"
                cargs.append(_CTYPES[base](a.item()))
        rc = self.fn(ctypes.c_int64(g[0]), ctypes.c_int64(g[1]), ctypes.c_int64(g[2]),
                     ctypes.c_int(b[0]), ctypes.c_int(b[1]), ctypes.c_int(b[2]), *cargs)
        assert rc == 0, f"{self.name}: the host emulation rejected the launch configuration {grid}, {block}"
        self.launches += 1


class FakeCupy(types.ModuleType):
    """The subset of CuPy used by the wrappers, on NumPy arrays."""

    def __init__(self, tmp):
        super().__init__("cupy")
        self._tmp = tmp
        self._libs = {}
        self.launches = []
        self.ndarray = FakeArray
        self.float32, self.float64, self.int64 = np.float32, np.float64, np.int64
        fake = self

        class _Device:
            id = 0

        class _Cuda:
            @staticmethod
            def Device():  # noqa: N802 - CuPy's name
                return _Device()

        class RawModule:
            def __init__(self, code, options=(), **kwargs):
                assert not kwargs, kwargs
                self.library = fake._library(code)

            def get_function(self, name):
                f = FakeFunction(self.library, name)
                fake.launches.append(f)
                return f

        self.cuda = _Cuda()
        self.RawModule = RawModule

    def _library(self, code):
        opt = "-O1"  # the transforms run on up to 2**22 elements
        if "LBP_PATCH_ENTRIES(" in code:
            opt = "-O0"  # small cases: compile fast
            # one host build per selection: instantiate every variant, not just the one asked for
            lines = [ln for ln in code.splitlines() if not ln.startswith("LBP_PATCH_ENTRIES(")]
            code = "\n".join(lines) + "\n" + "".join(
                f"LBP_PATCH_ENTRIES({suf}, {ct}, {lay}, {int(lay == 'nchw')}, {vec})\n"
                for suf, ct in (("f32", "float"), ("f64", "double"))
                for lay, vec in (("tokens", 1), ("tokens", 2), ("tokens", 4), ("nchw", 1)))
        key = hashlib.sha1(code.encode()).hexdigest()
        lib = self._libs.get(key)
        if lib is None:
            lib = self._libs[key] = _Library(code, self._tmp, opt)
        return lib

    # array functions
    def empty(self, shape, dtype=np.float64):
        return _aligned_empty(shape, dtype)

    def zeros(self, shape, dtype=np.float64):
        a = _aligned_empty(shape, dtype)
        a[...] = 0
        return a

    def asarray(self, a, dtype=None):
        return _fake(np.asarray(a, dtype=dtype))

    def ascontiguousarray(self, a):
        return _fake(np.ascontiguousarray(a))

    def take(self, a, idx, axis=None):
        return _fake(np.take(np.asarray(a), np.asarray(idx), axis=axis))


@pytest.fixture(scope="module")
def fake_cupy(tmp_path_factory):
    fake = FakeCupy(tmp_path_factory.mktemp("cuda_host"))
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = fake
    try:
        yield fake
    finally:
        if saved is None:
            sys.modules.pop("cupy", None)
        else:
            sys.modules["cupy"] = saved


def _dev(a):
    """A host array as the stand-in's device array (a 256-byte aligned copy)."""
    out = _aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


# --------------------------------------------------------------------------
# Walsh-Hadamard transform
# --------------------------------------------------------------------------

from lbpcore._wht import _cuda as _cuda_wht  # noqa: E402

WHT_DTYPES = [np.float32, np.float64]
ORDERINGS = ["natural", "sequency", "dyadic"]


def _wht_ref(x, ordering, scale):
    return lbpcore.fwht(np.asarray(x, dtype=np.float64), ordering=ordering) * scale


@pytest.mark.parametrize("dtype", WHT_DTYPES)
def test_rows_all_lengths_and_orderings(fake_cupy, dtype):
    rng = np.random.default_rng(0)
    for logn in range(1, 13):
        n = 1 << logn
        rows = 3 if n >= 1024 else 5 + 256 * 16 // n  # several blocks, the last one partial
        x = rng.standard_normal((rows, n)).astype(dtype)
        xd = _dev(x)
        for ordering in ORDERINGS:
            scale = 0.5 if ordering == "dyadic" else 1.0
            y = _cuda_wht.fwht_rows(xd, n, ordering, scale)
            assert isinstance(y, FakeArray) and y.dtype == dtype and y.shape == x.shape
            assert_allclose_dtype(y, _wht_ref(x, ordering, scale), dtype, err_msg=f"n={n} {ordering}")
        np.testing.assert_array_equal(xd, x)  # input untouched


@pytest.mark.parametrize("dtype", WHT_DTYPES)
def test_rows_table_permutation_and_shapes(fake_cupy, dtype):
    rng = np.random.default_rng(1)
    for n in (2, 16, 64, 2048):
        x = rng.standard_normal((2, 3, n)).astype(dtype)
        perm = rng.permutation(n)
        y = _cuda_wht.fwht_rows(_dev(x), n, fake_cupy.asarray(perm), 2.0)
        want = lbpcore.fwht(x.astype(np.float64), ordering="natural")[..., perm] * 2.0
        assert_allclose_dtype(y, want, dtype)
    # a strided view and a misaligned start are copied first
    x = rng.standard_normal((4, 512)).astype(dtype)
    xd = _dev(x)
    assert_allclose_dtype(_cuda_wht.fwht_rows(xd[1:3], 512, "sequency", 1.0), _wht_ref(x[1:3], "sequency", 1.0), dtype)
    flat = _dev(rng.standard_normal(1 + 8 * 4).astype(dtype))
    view = flat[1:].reshape(4, 8)
    assert view.data.ptr % 16
    assert_allclose_dtype(_cuda_wht.fwht_rows(view, 8, "natural", 1.0), _wht_ref(view, "natural", 1.0), dtype)
    assert _cuda_wht.fwht_rows(_dev(np.ones((3, 1), dtype)), 1, "sequency", 3.0).tolist() == [[3.0]] * 3
    assert _cuda_wht.fwht_rows(_dev(np.ones((0, 8), dtype)), 8, "sequency", 1.0).shape == (0, 8)


def test_rows_errors(fake_cupy):
    x = _dev(np.ones((2, 8), np.float32))
    with pytest.raises(ValueError, match="power of two"):
        _cuda_wht.fwht_rows(x, 6, "natural", 1.0)
    with pytest.raises(ValueError, match="last axis"):
        _cuda_wht.fwht_rows(x, 4, "natural", 1.0)
    with pytest.raises(ValueError, match="unknown ordering"):
        _cuda_wht.fwht_rows(x, 8, "gray", 1.0)
    with pytest.raises(ValueError, match="fwht_long"):
        _cuda_wht.fwht_rows(_dev(np.ones(8192, np.float32)), 8192, "natural", 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        _cuda_wht.fwht_rows(_dev(np.ones((2, 8), np.float16)), 8, "natural", 1.0)


@pytest.mark.parametrize("dtype", WHT_DTYPES)
def test_long_vectors(fake_cupy, dtype):
    rng = np.random.default_rng(2)
    cases = ((13, 1), (14, 2), (17, 1)) + (((22, 1),) if dtype == np.float32 else ())
    for logn, rows in cases:
        n = 1 << logn
        x = rng.standard_normal((rows, n)).astype(dtype)
        xd = _dev(x)
        for ordering in ORDERINGS if logn < 22 else ["sequency"]:
            y = _cuda_wht.fwht_long(xd, n, ordering, 1.0 / n)
            assert_allclose_dtype(y, _wht_ref(x, ordering, 1.0 / n), dtype, err_msg=f"n=2**{logn} {ordering}")
        np.testing.assert_array_equal(xd, x)


@pytest.mark.parametrize("dtype", WHT_DTYPES)
def test_long_recursion(fake_cupy, dtype):
    """Small ``_max_log`` forces the recursive splits (rows longer than ``(2**_max_log)**2``)."""
    rng = np.random.default_rng(3)
    for logn, max_log in ((9, 2), (10, 3), (11, 4), (13, 5), (7, 1)):
        n = 1 << logn
        x = rng.standard_normal((2, n)).astype(dtype)
        for ordering in ORDERINGS:
            y = _cuda_wht.fwht_long(_dev(x), n, ordering, 1.0, _max_log=max_log)
            assert_allclose_dtype(y, _wht_ref(x, ordering, 1.0), dtype, err_msg=f"n=2**{logn}/{max_log} {ordering}")
    x = rng.standard_normal(1 << 10).astype(dtype)
    perm = rng.permutation(1 << 10)
    y = _cuda_wht.fwht_long(_dev(x), 1 << 10, fake_cupy.asarray(perm), 1.0, _max_log=4)
    assert_allclose_dtype(y, lbpcore.fwht(x.astype(np.float64), ordering="natural")[perm], dtype)


def test_transform_dispatch(fake_cupy):
    x = np.random.default_rng(4).standard_normal((2, 1 << 13)).astype(np.float32)
    assert_allclose_dtype(_cuda_wht.transform(_dev(x), 1 << 13, "sequency", 1.0), _wht_ref(x, "sequency", 1.0))
    assert_allclose_dtype(_cuda_wht.transform(_dev(x[:, :64]), 64, "sequency", 1.0),
                          _wht_ref(x[:, :64], "sequency", 1.0))
    assert _cuda_wht.applicable(x, 64) is False
    assert _cuda_wht.applicable(_dev(x), 64) is False  # the stand-in is not a cupy type


# --------------------------------------------------------------------------
# patch projection and reconstruction
# --------------------------------------------------------------------------

from lbpcore._patches import _cuda as _cuda_patches  # noqa: E402
from lbpcore._patches import _cuda_source  # noqa: E402

#: (n, selection): low-pass and not low-pass, every supported patch size
SELECTIONS = [
    (1, "lp_l1:1"),
    (2, "lp_linf:2"),
    (4, [(0, 0), (1, 2), (3, 0), (2, 3)]),
    (8, "lp_l1:6"),
    (8, [(7, 7), (0, 5), (3, 1)]),
    (16, "lp_l1:3"),
    (16, [(15, 0), (0, 15), (9, 8), (4, 12)]),
]
GRIDS = [(7, 9), (14, 14), (3, 5), (1, 1)]


def _cases(n):
    """(grid, pad) pairs: every padding each grid allows, plus a divisible grid for pad="none"."""
    out = []
    for grid in GRIDS + [(n, 2 * n)]:
        for pad in ("reflect", "zero", "none"):
            try:
                lbpcore.make_plan(grid, n, "lp_l1:1", pad)
            except ValueError:
                continue
            out.append((grid, pad))
    return out


def _check_patch_kernels(n, bases, grid, pad, dtype, layout, e, c, rng, vec=None):
    basis = lbpcore.select_bases(n, bases)
    idx = basis.indices
    h, w = grid
    kw = dict(grid=grid, patch=n, bases=basis, pad=pad, layout=layout)
    if layout == "tokens":
        x = rng.standard_normal((2, e + h * w, c)).astype(dtype)
    else:
        x = rng.standard_normal((2, c, h, w)).astype(dtype)
    xd = _dev(x)
    ref = lbpcore.project(x, extra_tokens=e, **kw)  # (B, P, r, C) or (B, C, P, r)
    if layout == "nchw":
        ref = ref.transpose(0, 2, 3, 1)
    ref = ref.reshape(2, -1, c)
    msg = f"n={n} {bases} grid={grid} pad={pad} {layout} e={e} C={c} {np.dtype(dtype).name}"
    for keep in (False, True):
        got = _cuda_patches.project(xd, grid, n, pad, idx, extra_tokens=e, scale=0.5, layout=layout,
                                    keep_extra=keep, _vec=vec)
        eo = e if keep else 0
        assert got.shape == (2, eo + ref.shape[1], c) and got.dtype == dtype, msg
        assert_allclose_dtype(got[:, eo:], 0.5 * ref, dtype, err_msg=msg)
        if eo:
            np.testing.assert_array_equal(got[:, :eo], x[:, :eo])
    np.testing.assert_array_equal(xd, x)  # input untouched
    # reconstruction of random coefficients, extra tokens in front
    coef = rng.standard_normal((2, e + ref.shape[1], c)).astype(dtype)
    cd = _dev(coef)
    rec = _cuda_patches.reconstruct(cd, grid, n, pad, idx, extra_tokens=e, scale=1.0 / (n * n), layout=layout,
                                    _vec=vec)
    p = ref.shape[1] // len(idx)
    c4 = coef[:, e:].reshape(2, p, len(idx), c)
    want = lbpcore.reconstruct(c4 if layout == "tokens" else c4.transpose(0, 3, 1, 2), **kw)
    if layout == "tokens":
        assert rec.shape == (2, e + h * w, c), msg
        np.testing.assert_array_equal(rec[:, :e], coef[:, :e])
        rec = rec[:, e:]
    assert rec.shape == want.shape, msg
    assert_allclose_dtype(rec, want, dtype, err_msg="reconstruct " + msg)
    np.testing.assert_array_equal(cd, coef)


@pytest.mark.parametrize("dtype", WHT_DTYPES)
@pytest.mark.parametrize(("n", "bases"), SELECTIONS, ids=[f"{n}-{b}" for n, b in SELECTIONS])
def test_patch_kernels(fake_cupy, n, bases, dtype):
    rng = np.random.default_rng(n)
    vmax = _cuda_patches.channel_vector(n, len(lbpcore.select_bases(n, bases).indices), dtype, 16)
    for k, (grid, pad) in enumerate(_cases(n)):
        e = (0, 1, 3)[k % 3]
        c = (8, 6, 5)[k % 3]
        vec = (vmax, None, None)[k % 3]  # the widest access, the default, and 1 channel per thread (odd C)
        _check_patch_kernels(n, bases, grid, pad, dtype, "tokens", e, c, rng, vec)
        _check_patch_kernels(n, bases, grid, pad, dtype, "nchw", 0, 3, rng)


def test_patch_kernels_vector_width_and_alignment(fake_cupy):
    """A misaligned start and odd channel counts fall back to narrower accesses; zero batch works."""
    rng = np.random.default_rng(5)
    idx = lbpcore.select_bases(8, "lp_l1:6").indices
    flat = _dev(rng.standard_normal(1 + 2 * 196 * 8).astype(np.float32))
    x = flat[1:].reshape(2, 196, 8)
    got = _cuda_patches.project(x, (14, 14), 8, "reflect", idx, _vec=4)
    want = lbpcore.project(np.asarray(x), grid=(14, 14), patch=8, bases="lp_l1:6").reshape(2, -1, 8)
    assert_allclose_dtype(got, want, np.float32)
    assert fake_cupy.launches[-1].name == "lbp_project_f32_tokens_v1"
    _cuda_patches.project(_dev(np.asarray(x)), (14, 14), 8, "reflect", idx)
    assert fake_cupy.launches[-1].name == "lbp_project_f32_tokens_v2"
    with pytest.raises(ValueError, match="_vec"):
        _cuda_patches.project(x, (14, 14), 8, "reflect", idx, _vec=3)
    assert _cuda_patches.project(_dev(np.zeros((0, 196, 8), np.float32)), (14, 14), 8, "zero", idx).shape == (0, 84, 8)
    assert _cuda_patches.channel_vector(8, 21, np.float32, 16) == 4
    assert _cuda_patches.channel_vector(16, 128, np.float64, 16) == 1


def test_patch_kernels_unsupported_and_errors(fake_cupy):
    x = _dev(np.zeros((1, 64, 2), np.float32))
    assert _cuda_patches.project(x, (8, 8), 32, "reflect", [(0, 0)]) is None
    assert _cuda_patches.reconstruct(x, (8, 8), 32, "reflect", [(0, 0)]) is None
    full16 = [(i, j) for i in range(16) for j in range(16)]
    assert _cuda_patches.project(_dev(np.zeros((1, 256, 2), np.float32)), (16, 16), 16, "none", full16) is None
    assert _cuda_patches.project(_dev(np.zeros((1, 64, 2), np.float16)), (8, 8), 8, "none", [(0, 0)]) is None
    assert not _cuda_patches.supported(8, [(0, 0)], np.int32) and _cuda_patches.supported(16, full16[:128])
    assert _cuda_patches.supported(16, full16[:80], np.float64) and not _cuda_patches.supported(16, full16[:81], "f8")
    with pytest.raises(ValueError, match="reflect padding"):
        _cuda_patches.project(_dev(np.zeros((1, 15, 2), np.float32)), (3, 5), 8, "reflect", [(0, 0)])
    with pytest.raises(ValueError, match='pad="none"'):
        _cuda_patches.project(_dev(np.zeros((1, 63, 2), np.float32)), (7, 9), 8, "none", [(0, 0)])
    with pytest.raises(ValueError, match="shape"):
        _cuda_patches.project(x, (8, 8), 8, "none", [(0, 0)], extra_tokens=1)
    with pytest.raises(ValueError, match="shape"):
        _cuda_patches.reconstruct(x, (8, 8), 8, "none", [(0, 0)])
    with pytest.raises(ValueError, match="indices"):
        _cuda_patches.project(x, (8, 8), 8, "none", [(0, 8)])


# --------------------------------------------------------------------------
# nvcc: the device code compiles for sm_90
# --------------------------------------------------------------------------


def _nvcc_all(sources, tmp):
    """Compile ``{name: source}`` with ``nvcc -arch=sm_90 -c`` concurrently; ``{name: ptxas log}``."""
    procs = {}
    for name, source in sources.items():
        src = tmp / f"{name}.cu"
        src.write_text(source)
        procs[name] = subprocess.Popen([NVCC, "-arch=sm_90", "-c", "-Xptxas", "-v", "-o", str(tmp / f"{name}.o"),
                                        str(src)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logs = {}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}:\n{err[-4000:]}"
        logs[name] = err
    return logs


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_nvcc_compiles_for_sm90(tmp_path):
    """Every WHT kernel, and the patch kernels of both dtypes and layouts, compile without spills."""
    idx6 = lbpcore.select_bases(8, "lp_l1:6").indices
    logs = _nvcc_all({
        "wht": _cuda_wht.SOURCE,
        "p8": _cuda_source.source(8, idx6, [("float32", "tokens", 4), ("float64", "nchw", 1)]),
    }, tmp_path)
    for name, log in logs.items():
        assert "Compiling entry function" in log, name
        assert not re.search(r"[1-9]\d* bytes spill stores", log), f"{name} spills registers:\n{log}"
        assert not re.search(r"[1-9]\d* bytes stack frame", log), f"{name} uses local memory:\n{log}"
    assert "lbp_wht_rows_f64_v16" in logs["wht"] and "lbp_reconstruct_f64_nchw_v1" in logs["p8"]
