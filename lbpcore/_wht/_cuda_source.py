"""CUDA/C++ source of the Walsh–Hadamard kernels of :mod:`lbpcore._wht._cuda`.

Plain C++ with a small CUDA layer, so that the same text compiles with NVRTC
(CuPy, ``__CUDACC__`` defined) and as host C++, where ``lbp_host_*`` functions
run the threads of a block one after the other (``tests/test_cuda_kernels_host.py``).
"""

__all__ = ["SOURCE"]

#: Device code.  Compiled by NVRTC (CuPy) with ``__CUDACC__`` defined, or by a
#: host C++ compiler (tests) where the ``lbp_host_*`` functions emulate launches.
SOURCE = r"""
#if defined(__CUDACC__)
#define LBP_HD __host__ __device__ __forceinline__
#define LBP_UNROLL _Pragma("unroll")
#else
#define LBP_HD static inline
#define LBP_UNROLL
#endif

#define LBP_BLOCK 256

template <typename T, int N>
struct alignas(sizeof(T) * N) LbpPack { T v[N]; };

LBP_HD unsigned lbp_brev32(unsigned v) {
#if defined(__CUDA_ARCH__)
    return __brev(v);
#else
    v = ((v >> 1) & 0x55555555u) | ((v & 0x55555555u) << 1);
    v = ((v >> 2) & 0x33333333u) | ((v & 0x33333333u) << 2);
    v = ((v >> 4) & 0x0F0F0F0Fu) | ((v & 0x0F0F0F0Fu) << 4);
    v = ((v >> 8) & 0x00FF00FFu) | ((v & 0x00FF00FFu) << 8);
    return (v >> 16) | (v << 16);
#endif
}

/* natural coefficient that output s takes: 0 natural, 1 dyadic, 2 sequency, 3 table */
LBP_HD int lbp_perm_src(int ord, int s, int logn, const long long* table) {
    if (ord == 0 || logn == 0) return s;
    if (ord == 1) return (int)(lbp_brev32((unsigned)s) >> (32 - logn));
    if (ord == 2) return (int)(lbp_brev32((unsigned)(s ^ (s >> 1))) >> (32 - logn));
    return (int)table[s];
}

/* shared-memory swizzle: XOR the low five bits (the bank) with the 5-bit groups above;
   any five consecutive index bits then map to distinct banks */
LBP_HD int lbp_swz(int i) { return i ^ ((i >> 5) & 31) ^ (i >> 10); }  /* i < 2**15 */

template <int V> struct LbpLog { enum { value = V <= 1 ? 0 : 1 + LbpLog<V / 2>::value }; };
template <> struct LbpLog<1> { enum { value = 0 }; };

/* butterflies over all bits of a register array of V values */
template <typename T, int V>
LBP_HD void lbp_reg_wht(T* v) {
    LBP_UNROLL
    for (int h = 1; h < V; h <<= 1) {
        LBP_UNROLL
        for (int j = 0; j < V; ++j) {
            if (!(j & h)) {
                const T a = v[j];
                const T b = v[j + h];
                v[j] = a + b;
                v[j + h] = a - b;
            }
        }
    }
}

/* one cross-lane stage: o is the partner's value; the lower partner keeps a + b, the upper one
   a - b = o - mine: mine * sgn + o with sgn = -1 for the upper partner (one exact FMA, no select) */
template <typename T>
LBP_HD T lbp_lane_op(T mine, T o, T sgn) { return mine * sgn + o; }

template <typename T>
LBP_HD T lbp_lane_sign(int t, int l) { return ((t >> l) & 1) ? (T)-1 : (T)1; }

template <typename T, int V>
LBP_HD void lbp_lane_combine(T* v, const T* o, T sgn) {
    LBP_UNROLL
    for (int j = 0; j < V; ++j) v[j] = lbp_lane_op<T>(v[j], o[j], sgn);
}

/* ------------------------------------------------------------------ rows kernel */

template <typename T, int V>
struct LbpRows {
    enum { VEC = (V < (int)(16 / sizeof(T))) ? V : (int)(16 / sizeof(T)) };
    enum { LOGV = LbpLog<V>::value, LOGVEC = LbpLog<VEC>::value };
    const T* x;
    T* y;
    const long long* table;
    long long row, srow;
    int n, logn, logtpr, t, rloc, ord, nlane, nwb, xmask, wb0, base2, valid;
    unsigned pos2;  /* mapping-2 index bit of register bit b: (pos2 >> 4 b) & 15 */
    T scale;
};

/* thread coordinates; mapping 1: register j = (c, k) holds index ((c << logtpr) + t) * VEC + k;
   mapping 2 (n > 32 V): registers hold the warp bits and the top bits, t the rest */
template <typename T, int V>
LBP_HD void lbp_rows_setup(LbpRows<T, V>& c, int tid, long long bid, const T* x, T* y, const long long* table,
                           long long rows, int logn, int ord, T scale, long long group) {
    typedef LbpRows<T, V> C;
    c.x = x; c.y = y; c.table = table; c.ord = ord; c.scale = scale;
    c.logn = logn;
    c.n = 1 << logn;
    c.logtpr = logn - (int)C::LOGV;
    c.rloc = tid >> c.logtpr;
    c.t = tid & ((1 << c.logtpr) - 1);
    c.row = bid * (long long)(LBP_BLOCK >> c.logtpr) + c.rloc;
    c.valid = c.row < rows;
    c.srow = c.row;
    c.xmask = 0;
    if (group > 0 && c.valid) {
        const long long g = c.row % group;
        c.srow = c.row - g + (g ^ (g >> 1));
        if (g & 1) c.xmask = c.n - 1;
    }
    c.nlane = c.logtpr < 5 ? c.logtpr : 5;
    c.nwb = c.logtpr > 5 ? c.logtpr - 5 : 0;
    c.wb0 = 0;
    c.base2 = 0;
    c.pos2 = 0;
    if (c.nwb > 0) {
        const int wlo = (int)C::LOGVEC + 5;
        unsigned rmask = ((1u << c.nwb) - 1u) << wlo;
        int need = (int)C::LOGV - c.nwb;
        for (int p = logn - 1; need > 0 && p >= 0; --p) {
            if (!((rmask >> p) & 1u)) { rmask |= 1u << p; --need; }
        }
        int b = 0, tb = 0;
        for (int p = 0; p < logn; ++p) {
            if ((rmask >> p) & 1u) {
                if (p == wlo) c.wb0 = b;
                if (b < (int)C::LOGV) c.pos2 |= (unsigned)p << (4 * b);
                ++b;
            } else {
                if ((c.t >> tb) & 1) c.base2 |= 1 << p;
                ++tb;
            }
        }
    }
}

template <typename T, int V>
LBP_HD void lbp_rows_load(const LbpRows<T, V>& c, T* v) {
    typedef LbpRows<T, V> C;
    if (!c.valid) {
        LBP_UNROLL
        for (int j = 0; j < V; ++j) v[j] = (T)0;
        return;
    }
    const T* xr = c.x + c.srow * (long long)c.n;
    LBP_UNROLL
    for (int cc = 0; cc < V / (int)C::VEC; ++cc) {
        const LbpPack<T, C::VEC> p =
            *reinterpret_cast<const LbpPack<T, C::VEC>*>(xr + (((long long)cc << c.logtpr) + c.t) * C::VEC);
        LBP_UNROLL
        for (int k = 0; k < (int)C::VEC; ++k) v[cc * C::VEC + k] = p.v[k];
    }
}

template <typename T, int V>
LBP_HD int lbp_rows_m1(const LbpRows<T, V>& c, int j) {
    typedef LbpRows<T, V> C;
    return (((j / C::VEC) << c.logtpr) + c.t) * C::VEC + (j % C::VEC);
}

template <typename T, int V>
LBP_HD int lbp_rows_m2(const LbpRows<T, V>& c, int j) {
    typedef LbpRows<T, V> C;
    int i = c.base2;
    LBP_UNROLL
    for (int b = 0; b < (int)C::LOGV; ++b) {
        if ((j >> b) & 1) i |= 1 << ((c.pos2 >> (4 * b)) & 15u);
    }
    return i;
}

template <typename T, int V>
LBP_HD void lbp_rows_smem_m1(const LbpRows<T, V>& c, const T* v, T* s) {
    const int off = c.rloc * c.n;
    LBP_UNROLL
    for (int j = 0; j < V; ++j) s[lbp_swz(off + lbp_rows_m1(c, j))] = v[j];
}

template <typename T, int V>
LBP_HD void lbp_rows_load_m2(const LbpRows<T, V>& c, T* v, const T* s) {
    const int off = c.rloc * c.n;
    LBP_UNROLL
    for (int j = 0; j < V; ++j) v[j] = s[lbp_swz(off + lbp_rows_m2(c, j))];
}

template <typename T, int V>
LBP_HD void lbp_rows_smem_m2(const LbpRows<T, V>& c, const T* v, T* s) {
    const int off = c.rloc * c.n;
    LBP_UNROLL
    for (int j = 0; j < V; ++j) s[lbp_swz(off + lbp_rows_m2(c, j))] = v[j];
}

/* butterflies over the register bits of mapping 2 that hold the warp bits */
template <typename T, int V>
LBP_HD void lbp_rows_bfly_m2(const LbpRows<T, V>& c, T* v) {
    LBP_UNROLL
    for (int b = 0; b < (int)LbpRows<T, V>::LOGV; ++b) {
        if (b >= c.wb0 && b < c.wb0 + c.nwb) {
            const int h = 1 << b;
            LBP_UNROLL
            for (int j = 0; j < V; ++j) {
                if (!(j & h)) {
                    const T a = v[j];
                    const T d = v[j + h];
                    v[j] = a + d;
                    v[j + h] = a - d;
                }
            }
        }
    }
}

template <typename T, int V>
LBP_HD void lbp_rows_store_m1(const LbpRows<T, V>& c, const T* v) {
    typedef LbpRows<T, V> C;
    if (!c.valid) return;
    T* yr = c.y + c.row * (long long)c.n;
    LBP_UNROLL
    for (int cc = 0; cc < V / (int)C::VEC; ++cc) {
        LbpPack<T, C::VEC> p;
        LBP_UNROLL
        for (int k = 0; k < (int)C::VEC; ++k) p.v[k] = v[cc * C::VEC + k] * c.scale;
        *reinterpret_cast<LbpPack<T, C::VEC>*>(yr + (((long long)cc << c.logtpr) + c.t) * C::VEC) = p;
    }
}

template <typename T, int V>
LBP_HD void lbp_rows_store_m2(const LbpRows<T, V>& c, const T* v) {
    if (!c.valid) return;
    T* yr = c.y + c.row * (long long)c.n;
    LBP_UNROLL
    for (int j = 0; j < V; ++j) yr[lbp_rows_m2(c, j)] = v[j] * c.scale;
}

/* output through shared memory: coalesced vector stores, permuted shared-memory reads */
template <typename T, int V>
LBP_HD void lbp_rows_out(const LbpRows<T, V>& c, const T* s) {
    typedef LbpRows<T, V> C;
    if (!c.valid) return;
    const int off = c.rloc * c.n;
    T* yr = c.y + c.row * (long long)c.n;
    LBP_UNROLL
    for (int cc = 0; cc < V / (int)C::VEC; ++cc) {
        const int s0 = ((cc << c.logtpr) + c.t) * C::VEC;
        LbpPack<T, C::VEC> p;
        LBP_UNROLL
        for (int k = 0; k < (int)C::VEC; ++k) {
            const int src = lbp_perm_src(c.ord, (s0 + k) ^ c.xmask, c.logn, c.table);
            p.v[k] = s[lbp_swz(off + src)] * c.scale;
        }
        *reinterpret_cast<LbpPack<T, C::VEC>*>(yr + s0) = p;
    }
}

/* ------------------------------------------------------------------ transpose (batch, R, K) -> (batch, K, R) */

template <typename T>
struct LbpTr {
    const T* x;
    T* y;
    long long bb;
    int r0, k0, tx, ty, nr, nk;
};

/* block bid: batch item bid / (tr * tk), then row tile, then column tile */
template <typename T>
LBP_HD void lbp_tr_setup(LbpTr<T>& c, int tid, long long bid, const T* x, T* y, int nr, int nk) {
    const long long tk = (nk + 31) / 32;
    const long long per = ((nr + 31) / 32) * tk;
    c.bb = bid / per;
    const long long rem = bid - c.bb * per;
    const int ti = (int)(rem / tk);
    const int tj = (int)(rem - ti * tk);
    c.x = x; c.y = y; c.nr = nr; c.nk = nk;
    c.r0 = ti * 32; c.k0 = tj * 32;
    c.tx = tid & 31; c.ty = tid >> 5;
}

template <typename T>
LBP_HD void lbp_tr_load(const LbpTr<T>& c, T* tile) {
    const int k = c.k0 + c.tx;
    LBP_UNROLL
    for (int q = 0; q < 4; ++q) {
        const int r = c.r0 + c.ty + 8 * q;
        if (r < c.nr && k < c.nk) tile[(c.ty + 8 * q) * 33 + c.tx] = c.x[(c.bb * c.nr + r) * (long long)c.nk + k];
    }
}

template <typename T>
LBP_HD void lbp_tr_store(const LbpTr<T>& c, const T* tile) {
    const int r = c.r0 + c.tx;
    LBP_UNROLL
    for (int q = 0; q < 4; ++q) {
        const int k = c.k0 + c.ty + 8 * q;
        if (r < c.nr && k < c.nk) c.y[(c.bb * c.nk + k) * (long long)c.nr + r] = tile[c.tx * 33 + c.ty + 8 * q];
    }
}

/* ------------------------------------------------------------------ Gray-code row gather */

template <typename T>
LBP_HD void lbp_gray_rows_one(const T* x, T* y, long long idx, long long nb, long long na) {
    const long long sl = idx % na;
    const long long rem = idx / na;
    const long long sh = rem % nb;
    const long long r = rem / nb;
    const long long src = (r * nb + (sh ^ (sh >> 1))) * na + ((sh & 1) ? na - 1 - sl : sl);
    y[idx] = x[src];
}

/* ------------------------------------------------------------------ launches */

#if defined(__CUDACC__)

/* DIRECT: natural order without row map, stored straight from registers (a separate kernel: the two
   paths together need more registers than either) */
template <typename T, int V, int DIRECT>
__device__ __forceinline__ void lbp_rows_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                const long long* __restrict__ table, long long rows, int logn,
                                                int ord, T scale, long long group) {
    __shared__ T s[LBP_BLOCK * V];
    LbpRows<T, V> c;
    lbp_rows_setup<T, V>(c, (int)threadIdx.x, (long long)blockIdx.x, x, y, table, rows, logn, ord, scale, group);
    T v[V];
    lbp_rows_load<T, V>(c, v);
    lbp_reg_wht<T, V>(v);
    for (int l = 0; l < c.nlane; ++l) {
        const T sgn = lbp_lane_sign<T>(c.t, l);
        LBP_UNROLL
        for (int j = 0; j < V; ++j) v[j] = lbp_lane_op<T>(v[j], __shfl_xor_sync(0xffffffffu, v[j], 1 << l), sgn);
    }
    if (c.nwb == 0) {
        if (DIRECT) { lbp_rows_store_m1<T, V>(c, v); return; }
        lbp_rows_smem_m1<T, V>(c, v, s);
        __syncthreads();
        lbp_rows_out<T, V>(c, s);
        return;
    }
    lbp_rows_smem_m1<T, V>(c, v, s);
    __syncthreads();
    lbp_rows_load_m2<T, V>(c, v, s);
    lbp_rows_bfly_m2<T, V>(c, v);
    if (DIRECT) { lbp_rows_store_m2<T, V>(c, v); return; }
    lbp_rows_smem_m2<T, V>(c, v, s);
    __syncthreads();
    lbp_rows_out<T, V>(c, s);
}

template <typename T>
__device__ __forceinline__ void lbp_tr_kernel(const T* __restrict__ x, T* __restrict__ y, int nr, int nk) {
    __shared__ T tile[32 * 33];
    LbpTr<T> c;
    lbp_tr_setup<T>(c, (int)threadIdx.x, (long long)blockIdx.x, x, y, nr, nk);
    lbp_tr_load<T>(c, tile);
    __syncthreads();
    lbp_tr_store<T>(c, tile);
}

#define LBP_ROWS_ENTRY(SUF, T, V, PATH, DIRECT)                                                            \
    extern "C" __global__ void __launch_bounds__(LBP_BLOCK) lbp_wht_rows_##SUF##_v##V##_##PATH(            \
        const T* x, T* y, const long long* table, long long rows, int logn, int ord, T scale,              \
        long long group) {                                                                                  \
        lbp_rows_kernel<T, V, DIRECT>(x, y, table, rows, logn, ord, scale, group);                          \
    }
#define LBP_OTHER_ENTRIES(SUF, T)                                                                           \
    extern "C" __global__ void __launch_bounds__(LBP_BLOCK) lbp_wht_transpose_##SUF(                        \
        const T* x, T* y, int nr, int nk) {                                                                 \
        lbp_tr_kernel<T>(x, y, nr, nk);                                                                     \
    }                                                                                                       \
    extern "C" __global__ void lbp_wht_gray_rows_##SUF(const T* x, T* y, long long total, long long nb,     \
                                                       long long na) {                                      \
        const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;                             \
        if (idx < total) lbp_gray_rows_one<T>(x, y, idx, nb, na);                                           \
    }

#else  /* host emulation of the launches (tests) */

#include <vector>

template <typename T, int V, int DIRECT>
static int lbp_rows_host(long long gx, int bx, const T* x, T* y, const long long* table, long long rows,
                         int logn, int ord, T scale, long long group) {
    if (bx != LBP_BLOCK || logn < LbpLog<V>::value || logn - LbpLog<V>::value > 8) return 1;
    if (V < 16 && logn != LbpLog<V>::value) return 1;
    if (DIRECT != (ord == 0 && group <= 0)) return 3;
    std::vector<LbpRows<T, V> > cs(LBP_BLOCK);
    std::vector<T> v(LBP_BLOCK * V), o(LBP_BLOCK * V), s(LBP_BLOCK * V);
    for (long long bid = 0; bid < gx; ++bid) {
        for (int tid = 0; tid < LBP_BLOCK; ++tid) {
            lbp_rows_setup<T, V>(cs[tid], tid, bid, x, y, table, rows, logn, ord, scale, group);
            lbp_rows_load<T, V>(cs[tid], &v[tid * V]);
            lbp_reg_wht<T, V>(&v[tid * V]);
        }
        for (int l = 0; l < cs[0].nlane; ++l) {
            o = v;
            for (int tid = 0; tid < LBP_BLOCK; ++tid)
                lbp_lane_combine<T, V>(&v[tid * V], &o[(tid ^ (1 << l)) * V], lbp_lane_sign<T>(cs[tid].t, l));
        }
        if (cs[0].nwb == 0) {
            if (DIRECT) {
                for (int tid = 0; tid < LBP_BLOCK; ++tid) lbp_rows_store_m1<T, V>(cs[tid], &v[tid * V]);
                continue;
            }
            for (int tid = 0; tid < LBP_BLOCK; ++tid) lbp_rows_smem_m1<T, V>(cs[tid], &v[tid * V], &s[0]);
            for (int tid = 0; tid < LBP_BLOCK; ++tid) lbp_rows_out<T, V>(cs[tid], &s[0]);
            continue;
        }
        for (int tid = 0; tid < LBP_BLOCK; ++tid) lbp_rows_smem_m1<T, V>(cs[tid], &v[tid * V], &s[0]);
        for (int tid = 0; tid < LBP_BLOCK; ++tid) {
            lbp_rows_load_m2<T, V>(cs[tid], &v[tid * V], &s[0]);
            lbp_rows_bfly_m2<T, V>(cs[tid], &v[tid * V]);
            if (DIRECT) lbp_rows_store_m2<T, V>(cs[tid], &v[tid * V]);
            else lbp_rows_smem_m2<T, V>(cs[tid], &v[tid * V], &s[0]);
        }
        if (DIRECT) continue;
        for (int tid = 0; tid < LBP_BLOCK; ++tid) lbp_rows_out<T, V>(cs[tid], &s[0]);
    }
    return 0;
}

template <typename T>
static int lbp_tr_host(long long gx, int bx, const T* x, T* y, int nr, int nk) {
    if (bx != LBP_BLOCK) return 1;
    std::vector<T> tile(32 * 33);
    std::vector<LbpTr<T> > cs(LBP_BLOCK);
    for (long long bid = 0; bid < gx; ++bid) {
        for (int tid = 0; tid < LBP_BLOCK; ++tid) {
            lbp_tr_setup<T>(cs[tid], tid, bid, x, y, nr, nk);
            lbp_tr_load<T>(cs[tid], &tile[0]);
        }
        for (int tid = 0; tid < LBP_BLOCK; ++tid) lbp_tr_store<T>(cs[tid], &tile[0]);
    }
    return 0;
}

#define LBP_ROWS_ENTRY(SUF, T, V, PATH, DIRECT)                                                            \
    extern "C" int lbp_host_lbp_wht_rows_##SUF##_v##V##_##PATH(                                             \
        long long gx, long long gy, long long gz, int bx, int by, int bz, const T* x, T* y,                 \
        const long long* table, long long rows, int logn, int ord, T scale, long long group) {              \
        if (gy != 1 || gz != 1 || by != 1 || bz != 1) return 1;                                            \
        return lbp_rows_host<T, V, DIRECT>(gx, bx, x, y, table, rows, logn, ord, scale, group);            \
    }
#define LBP_OTHER_ENTRIES(SUF, T)                                                                           \
    extern "C" int lbp_host_lbp_wht_transpose_##SUF(long long gx, long long gy, long long gz, int bx,       \
                                                     int by, int bz, const T* x, T* y, int nr, int nk) {    \
        if (gy != 1 || gz != 1 || by != 1 || bz != 1) return 1;                                             \
        return lbp_tr_host<T>(gx, bx, x, y, nr, nk);                                                        \
    }                                                                                                       \
    extern "C" int lbp_host_lbp_wht_gray_rows_##SUF(long long gx, long long gy, long long gz, int bx,       \
                                                     int by, int bz, const T* x, T* y, long long total,     \
                                                     long long nb, long long na) {                          \
        if (gy != 1 || gz != 1 || by != 1 || bz != 1) return 1;                                             \
        for (long long idx = 0; idx < gx * bx; ++idx)                                                       \
            if (idx < total) lbp_gray_rows_one<T>(x, y, idx, nb, na);                                       \
        return 0;                                                                                           \
    }

#endif

#define LBP_ROWS_ENTRIES(SUF, T, V) LBP_ROWS_ENTRY(SUF, T, V, nat, 1) LBP_ROWS_ENTRY(SUF, T, V, perm, 0)
LBP_ROWS_ENTRIES(f32, float, 2)
LBP_ROWS_ENTRIES(f32, float, 4)
LBP_ROWS_ENTRIES(f32, float, 8)
LBP_ROWS_ENTRIES(f32, float, 16)
LBP_ROWS_ENTRIES(f64, double, 2)
LBP_ROWS_ENTRIES(f64, double, 4)
LBP_ROWS_ENTRIES(f64, double, 8)
LBP_ROWS_ENTRIES(f64, double, 16)
LBP_OTHER_ENTRIES(f32, float)
LBP_OTHER_ENTRIES(f64, double)
"""
