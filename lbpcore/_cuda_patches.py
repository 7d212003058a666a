"""Fused CuPy kernels for the patch projection and reconstruction (SPEC sections 4–5).

One thread per ``(batch item, patch, group of VEC channels)``, consecutive
threads along the channels so that every load and store of a warp is
contiguous in the tokens layout (``VEC`` = 1, 2 or 4 channels per thread, one
access of ``VEC`` values; default 8 bytes, see :data:`DEFAULT_ACCESS_BYTES`).
The selected bases are baked into the source (one module per selection, dtype,
layout and ``VEC``, compiled by NVRTC on first use and cached), so every index
below is a compile-time constant and all arrays stay in registers.

Projection: the thread loads the rows of its ``n x n`` patch in groups of
about 64 four-byte values (all 8 rows of an 8x8 float32 patch at ``VEC = 1``,
so that many loads are in flight), padding by index mapping (reflected indices,
or zeros without a load).  Each row is transformed by butterflies in registers
and ``±`` its selected horizontal sequencies are added into ``r`` accumulators
(the sign is that of the selected vertical Walsh row at the row's index).
Registers: ``VEC (r + 64 / VEC)`` values or so.  Global traffic: the input
once (reflected rows and columns are read again, from cache), the ``r``
coefficients written once, channels-last in ``(p, q, k)`` order; with
``keep_extra`` one more thread per batch item and channel group copies the
extra tokens in front.

Reconstruction: the thread loads its ``r`` coefficients and, for each interior
row of the patch, scatters ``±`` them into an ``n``-vector of horizontal
sequencies, transforms it back by butterflies (no ``1/n**2``) and writes the
interior columns; every grid position belongs to exactly one patch, so the
output is written once, without atomics; extra tokens are copied through.

NCHW input (or output) is read (written) with the same mapping, one channel
per thread: each thread touches ``n`` contiguous values per patch row.

The per-thread work is plain C++ (``lbp_project_one``, ``lbp_reconstruct_one``)
that also compiles as host C++; ``tests/test_cuda_kernels_host.py`` runs it on
the CPU.  Sizes not covered (see :func:`supported`) make the wrappers return
None so that the caller takes the generic path.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["SUPPORTED_PATCHES", "MAX_RANK", "DEFAULT_ACCESS_BYTES", "supported", "channel_vector", "kernel_variants",
           "project", "reconstruct", "source"]

#: Patch sizes with a fused kernel.
SUPPORTED_PATCHES = (1, 2, 4, 8, 16)
#: Largest number of selected bases with a fused kernel (registers: ``VEC * (n + r)``
#: values, and at most 192 four-byte registers of them with one channel per thread).
MAX_RANK = 128

#: Bytes each thread reads per access by default (``VEC = 2`` for float32, 1 for float64).  Wider
#: accesses need more registers per row group and so fewer resident warps; the benchmark in
#: ``benchmarks/cuda_kernels.py`` times every width (``_vec=``) to check this choice.
DEFAULT_ACCESS_BYTES = 8

_BLOCK = 256
_REG_BUDGET = 128  # 4-byte registers for the per-thread arrays when choosing VEC
_REG_LIMIT = 192  # 4-byte registers for the per-thread arrays at VEC = 1 (beyond: spills)
_SUFFIX = {"float32": "f32", "float64": "f64"}
_CTYPE = {"float32": "float", "float64": "double"}
_PAD_CODES = {"reflect": 0, "zero": 1, "none": 2}

_COMMON = r"""
#if defined(__CUDACC__)
#define LBP_HD __host__ __device__ __forceinline__
#define LBP_HDC __host__ __device__
#define LBP_UNROLL _Pragma("unroll")
#else
#define LBP_HD static inline
#define LBP_HDC
#define LBP_UNROLL
#endif

template <typename T, int N>
struct alignas(sizeof(T) * N) LbpPack { T v[N]; };

/* launch geometry (runtime) */
template <typename T>
struct LbpGeo {
    long long C, CV, slots, total, lin, lout;
    int h, w, pw, P, top, left, pad, e, eo;
    T scale;
};

/* source index of patch row (column) u of patch p along an axis of length len, or -1:
   reflect (pad 0) mirrors without repeating the edge; zero (1) and crop (crop != 0) give -1 outside */
template <int N>
LBP_HD void lbp_src_index(int* idx, int p, int before, int len, int pad, int crop) {
    LBP_UNROLL
    for (int u = 0; u < N; ++u) {
        int r = p * N + u - before;
        if (r < 0 || r >= len) {
            if (crop || pad != 0) r = -1;
            else r = r < 0 ? -r : 2 * (len - 1) - r;
        }
        idx[u] = r;
    }
}

/* natural-order Walsh-Hadamard transform along the first axis of z[N][VEC] (butterflies) */
template <typename T, int N, int VEC>
LBP_HD void lbp_wht_n(T (*z)[VEC]) {
    LBP_UNROLL
    for (int hh = 1; hh < N; hh <<= 1) {
        LBP_UNROLL
        for (int v = 0; v < N; ++v) {
            if (!(v & hh)) {
                LBP_UNROLL
                for (int l = 0; l < VEC; ++l) {
                    const T a = z[v][l];
                    const T b = z[v + hh][l];
                    z[v][l] = a + b;
                    z[v + hh][l] = a - b;
                }
            }
        }
    }
}

/* patch rows loaded together: about 64 four-byte registers of values (all 8 rows of an 8x8 patch at VEC = 1) */
template <typename T, int N, int VEC>
struct LbpRowGroup {
    enum { raw = (int)(256 / (sizeof(T) * N * VEC)) };
    enum { value = raw < 1 ? 1 : (raw > N ? N : raw) };
};

template <typename T, int VEC>
LBP_HD void lbp_copy_pack(T* dst, const T* src) {
    *reinterpret_cast<LbpPack<T, VEC>*>(dst) = *reinterpret_cast<const LbpPack<T, VEC>*>(src);
}

/* projection of one patch for VEC channels: out[b, eo + slot*R + k, c0 + l] = scale * c_k;
   slot == P copies the eo extra tokens instead */
template <typename T, int VEC, int NCHW, class S>
LBP_HD void lbp_project_one(const T* __restrict__ x, T* __restrict__ out, const LbpGeo<T>& g, long long b,
                            int slot, long long c0) {
    if (slot >= g.P) {
        for (int t = 0; t < g.eo; ++t)
            lbp_copy_pack<T, VEC>(out + (b * g.lout + t) * g.C + c0, x + (b * g.lin + t) * g.C + c0);
        return;
    }
    const int p = slot / g.pw;
    const int q = slot - p * g.pw;
    int ri[S::N], ci[S::N];
    lbp_src_index<S::N>(ri, p, g.top, g.h, g.pad, 0);
    lbp_src_index<S::N>(ci, q, g.left, g.w, g.pad, 0);
    T acc[S::R][VEC];
    LBP_UNROLL
    for (int k = 0; k < S::R; ++k) {
        LBP_UNROLL
        for (int l = 0; l < VEC; ++l) acc[k][l] = (T)0;
    }
    /* rows in groups of G: all loads of a group are issued before its arithmetic (memory-level parallelism) */
    enum { G = LbpRowGroup<T, S::N, VEC>::value };
    LBP_UNROLL
    for (int u0 = 0; u0 < S::N; u0 += G) {
        T z[G][S::N][VEC];
        LBP_UNROLL
        for (int gu = 0; gu < G; ++gu) {
            const int u = u0 + gu;
            LBP_UNROLL
            for (int v = 0; v < S::N; ++v) {
                if (ri[u] >= 0 && ci[v] >= 0) {
                    const T* src = NCHW ? x + ((b * g.C + c0) * g.h + ri[u]) * (long long)g.w + ci[v]
                                        : x + (b * g.lin + g.e + (long long)ri[u] * g.w + ci[v]) * g.C + c0;
                    const LbpPack<T, VEC> pk = *reinterpret_cast<const LbpPack<T, VEC>*>(src);
                    LBP_UNROLL
                    for (int l = 0; l < VEC; ++l) z[gu][v][l] = pk.v[l];
                } else {
                    LBP_UNROLL
                    for (int l = 0; l < VEC; ++l) z[gu][v][l] = (T)0;
                }
            }
        }
        LBP_UNROLL
        for (int gu = 0; gu < G; ++gu) {
            const int u = u0 + gu;
            lbp_wht_n<T, S::N, VEC>(z[gu]);
            LBP_UNROLL
            for (int k = 0; k < S::R; ++k) {
                LBP_UNROLL
                for (int l = 0; l < VEC; ++l) {
                    if ((S::sm(k) >> u) & 1) acc[k][l] -= z[gu][S::sj(k)][l];
                    else acc[k][l] += z[gu][S::sj(k)][l];
                }
            }
        }
    }
    T* dst = out + (b * g.lout + g.eo + (long long)slot * S::R) * g.C + c0;
    LBP_UNROLL
    for (int k = 0; k < S::R; ++k) {
        LbpPack<T, VEC> pk;
        LBP_UNROLL
        for (int l = 0; l < VEC; ++l) pk.v[l] = acc[k][l] * g.scale;
        *reinterpret_cast<LbpPack<T, VEC>*>(dst + (long long)k * g.C) = pk;
    }
}

/* reconstruction of the interior of one patch for VEC channels (no 1/n^2; times scale);
   slot == P copies the e extra tokens through */
template <typename T, int VEC, int NCHW, class S>
LBP_HD void lbp_reconstruct_one(const T* __restrict__ coef, T* __restrict__ out, const LbpGeo<T>& g,
                                long long b, int slot, long long c0) {
    if (slot >= g.P) {
        for (int t = 0; t < g.e; ++t)
            lbp_copy_pack<T, VEC>(out + (b * g.lout + t) * g.C + c0, coef + (b * g.lin + t) * g.C + c0);
        return;
    }
    const int p = slot / g.pw;
    const int q = slot - p * g.pw;
    int ri[S::N], ci[S::N];
    lbp_src_index<S::N>(ri, p, g.top, g.h, 1, 1);
    lbp_src_index<S::N>(ci, q, g.left, g.w, 1, 1);
    T cf[S::R][VEC];
    const T* src = coef + (b * g.lin + g.e + (long long)slot * S::R) * g.C + c0;
    LBP_UNROLL
    for (int k = 0; k < S::R; ++k) {
        const LbpPack<T, VEC> pk = *reinterpret_cast<const LbpPack<T, VEC>*>(src + (long long)k * g.C);
        LBP_UNROLL
        for (int l = 0; l < VEC; ++l) cf[k][l] = pk.v[l];
    }
    LBP_UNROLL
    for (int u = 0; u < S::N; ++u) {
        if (ri[u] < 0) continue;
        T z[S::N][VEC];
        LBP_UNROLL
        for (int v = 0; v < S::N; ++v) {
            LBP_UNROLL
            for (int l = 0; l < VEC; ++l) z[v][l] = (T)0;
        }
        LBP_UNROLL
        for (int k = 0; k < S::R; ++k) {
            LBP_UNROLL
            for (int l = 0; l < VEC; ++l) {
                if ((S::sm(k) >> u) & 1) z[S::sj(k)][l] -= cf[k][l];
                else z[S::sj(k)][l] += cf[k][l];
            }
        }
        lbp_wht_n<T, S::N, VEC>(z);
        LBP_UNROLL
        for (int v = 0; v < S::N; ++v) {
            if (ci[v] < 0) continue;
            T* dst = NCHW ? out + ((b * g.C + c0) * g.h + ri[u]) * (long long)g.w + ci[v]
                          : out + (b * g.lout + g.e + (long long)ri[u] * g.w + ci[v]) * g.C + c0;
            LbpPack<T, VEC> pk;
            LBP_UNROLL
            for (int l = 0; l < VEC; ++l) pk.v[l] = z[v][l] * g.scale;
            *reinterpret_cast<LbpPack<T, VEC>*>(dst) = pk;
        }
    }
}

/* geometry: project reads (B, lin = e + h*w, C) tokens or (B, C, h, w) and writes (B, lout = eo + P*R, C);
   reconstruct reads (B, lin = e + P*R, C) and writes (B, lout = e + h*w, C) tokens or (B, C, h, w) */
template <typename T>
LBP_HD void lbp_geo(LbpGeo<T>& g, long long B, long long C, int vec, int h, int w, int pw, int P, int top,
                    int left, int pad, int e, int eo, T scale, int rank, int reconstruct) {
    g.C = C; g.CV = C / vec; g.h = h; g.w = w; g.pw = pw; g.P = P; g.top = top; g.left = left;
    g.pad = pad; g.e = e; g.eo = eo; g.scale = scale;
    if (reconstruct) {
        g.lin = e + (long long)P * rank;
        g.lout = e + (long long)h * w;
        g.slots = P + (e > 0 ? 1 : 0);
    } else {
        g.lin = e + (long long)h * w;
        g.lout = eo + (long long)P * rank;
        g.slots = P + (eo > 0 ? 1 : 0);
    }
    g.total = B * g.slots * g.CV;
}

/* thread gid -> (b, slot, channel group): channels fastest */
template <typename T>
LBP_HD void lbp_split(const LbpGeo<T>& g, long long gid, long long& b, int& slot, long long& c0, int vec) {
    const long long cv = gid % g.CV;
    const long long rest = gid / g.CV;
    slot = (int)(rest % g.slots);
    b = rest / g.slots;
    c0 = cv * vec;
}

#if defined(__CUDACC__)
#define LBP_PATCH_ENTRIES(SUF, T, LAY, NCHW, V)                                                             \
    extern "C" __global__ void __launch_bounds__(256) lbp_project_##SUF##_##LAY##_v##V(                      \
        const T* x, T* out, long long B, long long C, int h, int w, int pw, int P, int top, int left,       \
        int pad, int e, int eo, T scale) {                                                                   \
        LbpGeo<T> g;                                                                                         \
        lbp_geo<T>(g, B, C, V, h, w, pw, P, top, left, pad, e, eo, scale, LbpSel::R, 0);                     \
        const long long gid = (long long)blockIdx.x * blockDim.x + threadIdx.x;                              \
        if (gid >= g.total) return;                                                                          \
        long long b, c0;                                                                                     \
        int slot;                                                                                            \
        lbp_split<T>(g, gid, b, slot, c0, V);                                                                \
        lbp_project_one<T, V, NCHW, LbpSel>(x, out, g, b, slot, c0);                                         \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(256) lbp_reconstruct_##SUF##_##LAY##_v##V(                  \
        const T* coef, T* out, long long B, long long C, int h, int w, int pw, int P, int top, int left,    \
        int e, T scale) {                                                                                    \
        LbpGeo<T> g;                                                                                         \
        lbp_geo<T>(g, B, C, V, h, w, pw, P, top, left, 1, e, 0, scale, LbpSel::R, 1);                        \
        const long long gid = (long long)blockIdx.x * blockDim.x + threadIdx.x;                              \
        if (gid >= g.total) return;                                                                          \
        long long b, c0;                                                                                     \
        int slot;                                                                                            \
        lbp_split<T>(g, gid, b, slot, c0, V);                                                                \
        lbp_reconstruct_one<T, V, NCHW, LbpSel>(coef, out, g, b, slot, c0);                                  \
    }
#else  /* host emulation: every thread of the grid in turn */
#define LBP_PATCH_ENTRIES(SUF, T, LAY, NCHW, V)                                                             \
    extern "C" int lbp_host_lbp_project_##SUF##_##LAY##_v##V(                                                \
        long long gx, long long gy, long long gz, int bx, int by, int bz,                                    \
        const T* x, T* out, long long B, long long C, int h, int w, int pw, int P, int top, int left,       \
        int pad, int e, int eo, T scale) {                                                                   \
        if (gy != 1 || gz != 1 || by != 1 || bz != 1 || bx != 256) return 1;                                 \
        LbpGeo<T> g;                                                                                         \
        lbp_geo<T>(g, B, C, V, h, w, pw, P, top, left, pad, e, eo, scale, LbpSel::R, 0);                     \
        if (gx * bx < g.total) return 2;                                                                     \
        for (long long gid = 0; gid < gx * bx; ++gid) {                                                      \
            if (gid >= g.total) continue;                                                                    \
            long long b, c0;                                                                                 \
            int slot;                                                                                        \
            lbp_split<T>(g, gid, b, slot, c0, V);                                                            \
            lbp_project_one<T, V, NCHW, LbpSel>(x, out, g, b, slot, c0);                                     \
        }                                                                                                    \
        return 0;                                                                                            \
    }                                                                                                        \
    extern "C" int lbp_host_lbp_reconstruct_##SUF##_##LAY##_v##V(                                            \
        long long gx, long long gy, long long gz, int bx, int by, int bz,                                    \
        const T* coef, T* out, long long B, long long C, int h, int w, int pw, int P, int top, int left,    \
        int e, T scale) {                                                                                    \
        if (gy != 1 || gz != 1 || by != 1 || bz != 1 || bx != 256) return 1;                                 \
        LbpGeo<T> g;                                                                                         \
        lbp_geo<T>(g, B, C, V, h, w, pw, P, top, left, 1, e, 0, scale, LbpSel::R, 1);                        \
        if (gx * bx < g.total) return 2;                                                                     \
        for (long long gid = 0; gid < gx * bx; ++gid) {                                                      \
            if (gid >= g.total) continue;                                                                    \
            long long b, c0;                                                                                 \
            int slot;                                                                                        \
            lbp_split<T>(g, gid, b, slot, c0, V);                                                            \
            lbp_reconstruct_one<T, V, NCHW, LbpSel>(coef, out, g, b, slot, c0);                              \
        }                                                                                                    \
        return 0;                                                                                            \
    }
#endif
"""


def _sequency_rows(n: int) -> np.ndarray:
    """Natural-order row of each sequency row: ``bitrev(s ^ (s >> 1))`` (``sequency_permutation``)."""
    bits = n.bit_length() - 1
    s = np.arange(n, dtype=np.int64)
    g = s ^ (s >> 1)
    out = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        out |= ((g >> b) & 1) << (bits - 1 - b)
    return out


def _as_indices(n: int, indices) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1, 2)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"basis indices must be (r, 2) pairs in [0, {n}), got {idx.tolist()}")
    return idx


def channel_vector(n: int, rank: int, dtype, max_bytes: int = DEFAULT_ACCESS_BYTES) -> int:
    """Largest number of channels per thread (``VEC``) for accesses of ``max_bytes`` and the register budget.

    Parameters
    ----------
    n : int
        Patch size.
    rank : int
        Number ``r`` of selected bases.
    dtype : dtype
        float32 or float64.
    max_bytes : int, optional
        Widest access per thread (4, 8 or 16); default
        :data:`DEFAULT_ACCESS_BYTES`.

    Returns
    -------
    int
        4, 2 or 1: ``VEC * itemsize <= max_bytes`` and ``VEC * (n + r)``
        values within 128 four-byte registers.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore._cuda_patches import channel_vector
    >>> channel_vector(8, 21, np.float32), channel_vector(8, 21, np.float32, 16), channel_vector(8, 21, np.float64)
    (2, 4, 1)
    """
    size = np.dtype(dtype).itemsize
    for vec in (4, 2, 1):
        if vec * size <= max_bytes and vec * (n + rank) * size <= _REG_BUDGET * 4:
            return vec
    return 1


def supported(n: int, indices, dtype=np.float32) -> bool:
    """Whether a fused kernel covers patch size ``n``, this selection and ``dtype``.

    Parameters
    ----------
    n : int
        Patch size.
    indices : array_like of int, shape (r, 2)
        Selected ``(i, j)`` sequency pairs (``BasisSet.indices``).
    dtype : dtype, optional
        Element type; default float32.

    Returns
    -------
    bool
        True for ``n`` in :data:`SUPPORTED_PATCHES`, float32/float64 and
        ``r <= MAX_RANK`` with ``n + r`` values within 192 four-byte registers
        (float64, ``n = 16``: ``r <= 80``).

    Examples
    --------
    >>> from lbpcore._cuda_patches import supported
    >>> supported(8, [(0, 0), (0, 1), (1, 0)]), supported(32, [(0, 0)])
    (True, False)
    """
    dt = np.dtype(dtype)
    if n not in SUPPORTED_PATCHES or dt.name not in _SUFFIX:
        return False
    r = len(np.asarray(indices).reshape(-1, 2))
    return 1 <= r <= MAX_RANK and (n + r) * dt.itemsize <= _REG_LIMIT * 4


def kernel_variants(n: int, rank: int):
    """Every ``(dtype, layout, vec)`` with a kernel for patch size ``n`` and ``rank`` bases.

    Parameters
    ----------
    n : int
        Patch size.
    rank : int
        Number ``r`` of selected bases.

    Returns
    -------
    list of (str, str, int)
        ``("float32" or "float64", "tokens" or "nchw", VEC)``; NCHW uses one
        channel per thread, tokens any ``VEC`` up to ``channel_vector(n, rank, dtype, 16)``.

    Examples
    --------
    >>> from lbpcore._cuda_patches import kernel_variants
    >>> kernel_variants(8, 21)[:4]
    [('float32', 'tokens', 1), ('float32', 'tokens', 2), ('float32', 'tokens', 4), ('float32', 'nchw', 1)]
    """
    out = []
    for dt in ("float32", "float64"):
        vmax = channel_vector(n, rank, dt, 16)
        out.extend((dt, "tokens", vec) for vec in (1, 2, 4) if vec <= vmax)
        out.append((dt, "nchw", 1))
    return out


def source(n: int, indices, variants=None) -> str:
    """The CUDA/C++ source of the kernels for patch size ``n`` and this selection.

    Parameters
    ----------
    n : int
        Patch size, one of :data:`SUPPORTED_PATCHES`.
    indices : array_like of int, shape (r, 2)
        Selected ``(i, j)`` sequency pairs in the order of the coefficients.
    variants : list of (str, str, int), optional
        ``(dtype, layout, vec)`` of the entry points to instantiate; default all
        of :func:`kernel_variants` (the device compiles one at a time).

    Returns
    -------
    str
        Entry points ``lbp_project_{f32,f64}_{tokens,nchw}_v{VEC}`` and
        ``lbp_reconstruct_...``; host C++ (with ``lbp_host_`` launch emulators)
        when compiled without ``__CUDACC__``.

    Examples
    --------
    >>> from lbpcore._cuda_patches import source
    >>> src = source(8, [(0, 0), (1, 0)], [("float32", "tokens", 4)])
    >>> "enum { N = 8, R = 2 }" in src, src.rstrip().splitlines()[-1]
    (True, 'LBP_PATCH_ENTRIES(f32, float, tokens, 0, 4)')
    """
    idx = _as_indices(n, indices)
    seq = _sequency_rows(n)
    si = [int(seq[i]) for i in idx[:, 0]]
    sj = [int(seq[j]) for j in idx[:, 1]]
    # bit u of sm(k): the sign of the (natural) Walsh row si(k) at u
    sm = [sum((bin(a & u).count("1") & 1) << u for u in range(n)) for a in si]

    def fn(name, vals):
        cases = " ".join(f"case {k}: return {v};" for k, v in enumerate(vals))
        return f"    LBP_HDC static constexpr int {name}(int k) {{ switch (k) {{ {cases} default: return 0; }} }}\n"

    sel = (f"/* n = {n}, selection (i, j) = {idx.tolist()}; natural rows {si}, columns {sj} */\n"
           f"struct LbpSel {{\n    enum {{ N = {n}, R = {len(idx)} }};\n"
           + fn("sj", sj) + fn("sm", sm) + "};\n")
    if variants is None:
        variants = kernel_variants(n, len(idx))
    entries = "".join(f"LBP_PATCH_ENTRIES({_SUFFIX[dt]}, {_CTYPE[dt]}, {lay}, {int(lay == 'nchw')}, {vec})\n"
                      for dt, lay, vec in variants)
    return _COMMON + sel + entries


_modules: dict = {}


def _function(cp, n: int, idx: np.ndarray, dt, layout: str, vec: int, kind: str):
    """Kernel ``lbp_{kind}_...`` of the module for this selection and variant (compiled once per device)."""
    variant = (dt.name, layout, vec)
    key = (cp.cuda.Device().id, n, hashlib.sha1(idx.tobytes()).hexdigest(), variant)
    mod = _modules.get(key)
    if mod is None:
        if len(_modules) > 256:
            _modules.clear()
        mod = cp.RawModule(code=source(n, idx, [variant]))
        _modules[key] = mod
    return mod.get_function(f"lbp_{kind}_{_SUFFIX[dt.name]}_{layout}_v{vec}")


def _geometry(grid, n: int, pad: str):
    """``(h, w, ph, pw, top, left)`` with the padding checks of ``make_plan``."""
    h, w = (int(v) for v in grid)
    if h < 1 or w < 1:
        raise ValueError(f"grid must be positive, got {tuple(grid)}")
    if pad not in _PAD_CODES:
        raise ValueError(f"pad must be one of {sorted(_PAD_CODES)}, got {pad!r}")
    out = [h, w]
    befores = []
    for name, length in (("height", h), ("width", w)):
        count = -(-length // n)
        total = count * n - length
        before = -(-total // 2)
        if pad == "none" and total:
            raise ValueError(f'pad="none" needs the patch size {n} to divide the grid {name} {length}')
        if pad == "reflect" and max(before, total - before) >= length:
            raise ValueError(f"reflect padding of {max(before, total - before)} is wider than the grid {name} "
                             f"{length} allows (patch {n})")
        out.append(count)
        befores.append(before)
    return tuple(out + befores)


def _vector_width(n, rank, dt, c, ptrs, layout, want):
    """Channels per thread: ``want`` (benchmarks) or the default, narrowed until ``C`` and the pointers allow it."""
    if layout == "nchw":
        return 1
    if want is None:
        vec = channel_vector(n, rank, dt)
    else:
        vec = int(want)
        if vec not in (1, 2, 4) or vec > channel_vector(n, rank, dt, 16):
            raise ValueError(f"_vec={want} is not an instantiated width for n={n}, r={rank}, {dt}")
    while vec > 1 and (c % vec or any(p % (vec * dt.itemsize) for p in ptrs)):
        vec //= 2
    return vec


def _prepare(x, n, indices):
    """``(cupy, contiguous x, indices)`` or None when the fused kernels do not cover the case."""
    dt = np.dtype(x.dtype)
    if n not in SUPPORTED_PATCHES or dt.name not in _SUFFIX:
        return None
    idx = _as_indices(n, indices)
    if not supported(n, idx, dt):
        return None
    import cupy as cp  # noqa: PLC0415

    return cp, cp.ascontiguousarray(x), idx


def project(x, grid, n, pad, indices, *, extra_tokens=0, scale=1.0, layout="tokens", keep_extra=False, _vec=None):
    """Selected patch coefficients of ``x`` in one pass, channels last (GEMM-ready).

    Parameters
    ----------
    x : cupy.ndarray, shape (B, e + h*w, C) or (B, C, h, w), float32 or float64
        Tokens (the grid row-major after ``e`` extra tokens) or NCHW maps.  Left untouched.
    grid : (int, int)
        ``(h, w)``.
    n : int
        Patch size.
    pad : {"reflect", "zero", "none"}
        Padding (SPEC section 4: top/left get ``ceil(total / 2)``).
    indices : array_like of int, shape (r, 2)
        Selected ``(i, j)`` sequency pairs, in the order of the output (``BasisSet.indices``).
    extra_tokens : int, optional
        ``e`` (tokens layout only).
    scale : float, optional
        Multiplies the coefficients (not the extra tokens).
    layout : {"tokens", "nchw"}, optional
    keep_extra : bool, optional
        Put the ``e`` extra tokens, unscaled, in front of the coefficients.

    Returns
    -------
    cupy.ndarray of shape (B, e' + P*r, C), or None
        ``out[b, e' + (p*pw + q)*r + k, c] = scale * sum_{u,v} B[i_k, j_k][u, v] Z[u, v]``
        with ``Z`` patch ``(p, q)`` of the padded grid of channel ``c`` and
        ``e' = e if keep_extra else 0``; the ``project_raw`` layout in canonical
        order.  None when ``n``, ``r`` or the dtype have no fused kernel (see
        :func:`supported`).

    Raises
    ------
    ValueError
        On a shape that does not match the grid, or padding the grid does not allow.

    Examples
    --------
    >>> import cupy as cp  # doctest: +SKIP
    >>> from lbpcore._cuda_patches import project
    >>> project(cp.ones((1, 16, 2), cp.float32), (4, 4), 4, "none", [(0, 0), (0, 1)])[0]  # doctest: +SKIP
    array([[16., 16.],
           [ 0.,  0.]], dtype=float32)
    """
    prep = _prepare(x, n, indices)
    if prep is None:
        return None
    cp, x, idx = prep
    h, w, ph, pw, top, left = _geometry(grid, n, pad)
    rank = len(idx)
    if layout == "tokens":
        e = int(extra_tokens)
        if x.ndim != 3 or e < 0 or x.shape[1] != e + h * w:
            raise ValueError(f"x must have shape (B, {e} + {h}*{w}, C) for layout='tokens', got {tuple(x.shape)}")
        b, _, c = x.shape
    elif layout == "nchw":
        e = 0
        if x.ndim != 4 or tuple(x.shape[2:]) != (h, w) or extra_tokens:
            raise ValueError(f"x must have shape (B, C, {h}, {w}) and no extra tokens for layout='nchw', "
                             f"got {tuple(x.shape)} and extra_tokens={extra_tokens}")
        b, c = x.shape[:2]
    else:
        raise ValueError(f"layout must be 'tokens' or 'nchw', got {layout!r}")
    eo = e if keep_extra else 0
    dt = np.dtype(x.dtype)
    out = cp.empty((b, eo + ph * pw * rank, c), dtype=dt)
    vec = _vector_width(n, rank, dt, c, (x.data.ptr, out.data.ptr), layout, _vec)
    total = b * (ph * pw + (1 if eo else 0)) * (c // vec)
    if total:
        fn = _function(cp, n, idx, dt, layout, vec, "project")
        fn((-(-total // _BLOCK),), (_BLOCK,),
           (x, out, np.int64(b), np.int64(c), np.int32(h), np.int32(w), np.int32(pw), np.int32(ph * pw),
            np.int32(top), np.int32(left), np.int32(_PAD_CODES[pad]), np.int32(e), np.int32(eo), dt.type(scale)))
    return out


def reconstruct(coef, grid, n, pad, indices, *, extra_tokens=0, scale=1.0, layout="tokens", _vec=None):
    """Inverse of :func:`project` up to ``n**2`` and the crop, in one pass.

    Parameters
    ----------
    coef : cupy.ndarray, shape (B, e + P*r, C), float32 or float64
        The ``e`` extra tokens (copied through unchanged) followed by the
        coefficients in :func:`project`'s order.  Left untouched.
    grid : (int, int)
        ``(h, w)``.
    n : int
        Patch size.
    pad : {"reflect", "zero", "none"}
        Only fixes the patch geometry (the crop never reads padding).
    indices : array_like of int, shape (r, 2)
        Selected ``(i, j)`` sequency pairs, in the order of the coefficients.
    extra_tokens : int, optional
        ``e`` (tokens layout only).
    scale : float, optional
        Multiplies the grid values (``1.0``: no ``1/n**2``; the caller scales).
    layout : {"tokens", "nchw"}, optional

    Returns
    -------
    cupy.ndarray of shape (B, e + h*w, C) or (B, C, h, w), or None
        ``scale * crop(sum_k c_k B[i_k, j_k])`` on the grid of every patch,
        the extra tokens in front (tokens); None when no fused kernel covers
        the case (see :func:`supported`).  This is ``reconstruct_raw``'s
        contract (which takes the coefficients without the extra tokens).

    Raises
    ------
    ValueError
        On a shape that does not match the grid and selection.

    Examples
    --------
    >>> import cupy as cp  # doctest: +SKIP
    >>> from lbpcore._cuda_patches import reconstruct
    >>> coef = cp.asarray([[[16.0], [0.0]]])  # one 4x4 patch, one channel  # doctest: +SKIP
    >>> reconstruct(coef, (4, 4), 4, "none", [(0, 0), (0, 1)])[0, :, 0]  # doctest: +SKIP
    array([16., 16., 16., 16., 16., 16., 16., 16., 16., 16., 16., 16., 16.,
           16., 16., 16.])
    """
    prep = _prepare(coef, n, indices)
    if prep is None:
        return None
    cp, coef, idx = prep
    h, w, ph, pw, top, left = _geometry(grid, n, pad)
    rank = len(idx)
    e = int(extra_tokens) if layout == "tokens" else 0
    if layout not in ("tokens", "nchw"):
        raise ValueError(f"layout must be 'tokens' or 'nchw', got {layout!r}")
    if layout == "nchw" and extra_tokens:
        raise ValueError(f"extra_tokens must be 0 for layout='nchw', got {extra_tokens}")
    if coef.ndim != 3 or e < 0 or coef.shape[1] != e + ph * pw * rank:
        raise ValueError(f"coef must have shape (B, {e} + {ph * pw}*{rank}, C), got {tuple(coef.shape)}")
    b, _, c = coef.shape
    dt = np.dtype(coef.dtype)
    shape = (b, e + h * w, c) if layout == "tokens" else (b, c, h, w)
    out = cp.empty(shape, dtype=dt)
    vec = _vector_width(n, rank, dt, c, (coef.data.ptr, out.data.ptr), layout, _vec)
    total = b * (ph * pw + (1 if e else 0)) * (c // vec)
    if total:
        fn = _function(cp, n, idx, dt, layout, vec, "reconstruct")
        fn((-(-total // _BLOCK),), (_BLOCK,),
           (coef, out, np.int64(b), np.int64(c), np.int32(h), np.int32(w), np.int32(pw), np.int32(ph * pw),
            np.int32(top), np.int32(left), np.int32(e), dt.type(scale)))
    return out
