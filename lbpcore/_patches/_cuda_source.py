"""CUDA/C++ source of the fused patch kernels of :mod:`lbpcore._patches._cuda`.

The per-thread work (``lbp_project_one``, ``lbp_reconstruct_one``) is plain C++
that compiles with NVRTC (CuPy) and as host C++ (``tests/test_cuda_kernels_host.py``
runs every thread on the CPU).  :func:`source` bakes a basis selection into the
text, so that every index is a compile-time constant.
"""

from __future__ import annotations

import numpy as np

from .._wht._walsh import permutation

__all__ = ["SUFFIX", "as_indices", "source"]

#: Kernel-name suffix and C type of each dtype.
SUFFIX = {"float32": "f32", "float64": "f64"}
_CTYPE = {"float32": "float", "float64": "double"}

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


def as_indices(n: int, indices) -> np.ndarray:
    """``indices`` as an ``(r, 2)`` int64 array of pairs in ``[0, n)``."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1, 2)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"basis indices must be (r, 2) pairs in [0, {n}), got {idx.tolist()}")
    return idx


def source(n: int, indices, variants) -> str:
    """The CUDA/C++ source of the kernels for patch size ``n`` and this selection.

    Parameters
    ----------
    n : int
        Patch size, one of :data:`SUPPORTED_PATCHES`.
    indices : array_like of int, shape (r, 2)
        Selected ``(i, j)`` sequency pairs in the order of the coefficients.
    variants : list of (str, str, int)
        ``(dtype, layout, vec)`` of the entry points to instantiate (the device
        compiles one at a time; see :func:`lbpcore._patches._cuda.kernel_variants`).

    Returns
    -------
    str
        Entry points ``lbp_project_{f32,f64}_{tokens,nchw}_v{VEC}`` and
        ``lbp_reconstruct_...``; host C++ (with ``lbp_host_`` launch emulators)
        when compiled without ``__CUDACC__``.

    Examples
    --------
    >>> from lbpcore._patches._cuda_source import source
    >>> src = source(8, [(0, 0), (1, 0)], [("float32", "tokens", 4)])
    >>> "enum { N = 8, R = 2 }" in src, src.rstrip().splitlines()[-1]
    (True, 'LBP_PATCH_ENTRIES(f32, float, tokens, 0, 4)')
    """
    idx = as_indices(n, indices)
    seq = permutation(n, "sequency")
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
    entries = "".join(f"LBP_PATCH_ENTRIES({SUFFIX[dt]}, {_CTYPE[dt]}, {lay}, {int(lay == 'nchw')}, {vec})\n"
                      for dt, lay, vec in variants)
    return _COMMON + sel + entries
