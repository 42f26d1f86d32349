// Flash attention on the GPU: out = softmax(Q K^T * scale + M) V with lse, and its backward (dQ, dK, dV)
// recomputing P = exp(S - lse). Fast: tiles staged in shared memory, register-blocked tile products, online softmax in registers.
//
// Self-contained for NVRTC (no #include at all): float16 and bfloat16 travel as their 16-bit patterns
// (bit-identical to __half / __nv_bfloat16) and are converted with PTX cvt (f16) or shifts (bf16), so the
// module compiles wherever CuPy runs, also where NVRTC cannot find cuda_fp16.h / cuda_bf16.h.
// Accumulation is float32 (float64 for float64 inputs); mask, lse and delta are in that accumulator type.
//
// Thread layout (every kernel): 128 threads = 16 row groups x 8 lanes. A thread owns RPT consecutive rows
// (rg*RPT + i) of the block's tile and the columns lane + 8*j; the 8 lanes of a row group are 8 consecutive
// lanes of one warp, so row max / row sum of the online softmax are 3 __shfl_xor steps, no shared memory,
// and the P / dS rows a thread writes are read back only by its own row group (a __syncwarp, not a block barrier).
// Columns of a head dimension (D or Dv <= 8*CPT) are read clamped to the last valid one and never stored,
// so the product loops carry no bounds branches; rows past N are zero-filled in shared memory (no NaN from
// garbage) and their scores set to -inf. Shared memory rows have an odd leading dimension: conflict-free.
//
// Causal (top-left aligned: key j visible from query i iff j <= i): key tiles wholly above the diagonal are
// never loaded (forward, dQ) and query tiles wholly below a key tile's first key are skipped (dK/dV).
// A query whose keys are all hidden gets out = 0 and lse = -inf, and contributes nothing to the gradients
// (as csrc/attention.cpp and kernels/numba/attention.py).
//
// Backward = flash-attention-2 in two kernels. dkdv: one block per key tile, looping over query tiles,
// dK and dV in registers. dq: one block per query tile, looping over key tiles, dQ in registers. dQ gets its
// own pass (recomputing Q K^T and dO V^T, 2 of the 7 tile products) instead of atomicAdd from dkdv: results
// are deterministic and float16/bfloat16 need no float32 scratch copy of dQ.
//
// Grouped-query attention: k and v have Hk heads; query head bh = b*H + h reads key/value head
// b*Hk + h/(H/Hk) (kv_head below). dK and dV are written per query head (B, H, Nk, .): the driver sums
// each group, so no two blocks write one row. Dropout: P_ij times 1/(1-p) or 0 from the SplitMix64 hash
// of the score's index (bh*Nq + i)*Nk + j (the same bits as csrc/attention.cpp and the reference), so the
// backward redraws the forward's mask; lse stays that of the undropped P.
//
// Shared memory per block, in accumulator elements (the glue kernels/cuda/attention.py:_smem mirrors this),
// with ldk = D|1, ldv = Dv|1, BQ/BK = 16*RPT rows owned by the block, 32 = keys (fwd, dq) / queries (dkdv) per tile:
//   fwd  : BQ*ldk + 32*ldk + 32*Dv + BQ*33
//   dkdv : BK*ldk + BK*ldv + 32*ldk + 32*ldv + 2*BK*33 + 2*32
//   dq   : BQ*ldk + BQ*ldv + 32*ldk + 32*ldv + BQ*33

#define NT 128      // threads per block
#define LANES 8     // lanes per row group
#define GROUPS 16   // row groups per block
#define KPT 4       // tile columns per lane in the score tiles
#define TILE 32     // LANES * KPT: keys (fwd, dq) or queries (dkdv) per inner tile
#define FULL 0xffffffffu

struct f16_t { unsigned short bits; };   // IEEE binary16, same bits as __half
struct bf16_t { unsigned short bits; };  // bfloat16, same bits as __nv_bfloat16

template <typename T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(f16_t x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
    return f;
}
__device__ __forceinline__ float to_acc(bf16_t x) { return __uint_as_float(((unsigned)x.bits) << 16); }

template <typename T> __device__ T from_acc(typename Acc<T>::type x);
template <> __device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <> __device__ __forceinline__ double from_acc<double>(double x) { return x; }
template <> __device__ __forceinline__ f16_t from_acc<f16_t>(float x) {
    f16_t r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
    return r;
}
template <> __device__ __forceinline__ bf16_t from_acc<bf16_t>(float x) {
    // round to nearest even by hand: cvt.rn.bf16.f32 needs sm_80, this works on every device
    const unsigned u = __float_as_uint(x);
    bf16_t r;
    r.bits = (u & 0x7fffffffu) > 0x7f800000u ? (unsigned short)0x7fc0
                                             : (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return r;
}

__device__ __forceinline__ long long kv_head(long long bh, int H, int Hk) {
    return (bh / H) * Hk + (bh % H) / (H / Hk);
}

// Dropout factor of score index idx: 1 without dropout (threshold 0), else 1/(1-p) or 0.
template <typename A>
__device__ __forceinline__ A drop(unsigned long long seed, unsigned int threshold, A inv_keep, long long idx) {
    if (threshold == 0u) return A(1);
    unsigned long long z = seed + (unsigned long long)(idx + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (z >> 40) >= threshold ? inv_keep : A(0);
}

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ double log_(double x) { return log(x); }
template <typename A> __device__ __forceinline__ A neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return __uint_as_float(0xff800000u); }
template <> __device__ __forceinline__ double neg_inf<double>() {
    return __longlong_as_double((long long)0xfff0000000000000ull);
}

template <typename A> __device__ __forceinline__ A group_max(A x) {
    for (int off = LANES / 2; off > 0; off >>= 1) {
        const A y = __shfl_xor_sync(FULL, x, off);
        x = y > x ? y : x;
    }
    return x;
}
template <typename A> __device__ __forceinline__ A group_sum(A x) {
    for (int off = LANES / 2; off > 0; off >>= 1) x += __shfl_xor_sync(FULL, x, off);
    return x;
}

// Rows per thread of the block's own tile, by head-dim bucket (CPT = 8, 16, 32): at most 64 accumulators
// per thread, and shared memory under 99 KiB (the opt-in limit of sm_86/sm_89) for 32- and 16-bit inputs
// up to D = Dv = 128. float64 halves them (down to 1).
template <typename A, int CPT> struct Rows {
    static constexpr int shrink = sizeof(A) == 8 ? 2 : 1;
    static constexpr int f = CPT <= 16 ? 4 : 2, b = CPT <= 8 ? 4 : (CPT <= 16 ? 2 : 1);
    static constexpr int fwd = f / shrink > 0 ? f / shrink : 1;   // forward: O in registers
    static constexpr int bwd = b / shrink > 0 ? b / shrink : 1;   // dq: dQ; dkdv: dK and dV in registers
};

// dst[r*ld + c] = src[r*cols + c] for r < nrows (a contiguous run of rows), 0 for nrows <= r < rows.
template <typename T, typename A>
__device__ __forceinline__ void stage(A* dst, int ld, const T* __restrict__ src, int nrows, int rows, int cols) {
    for (int e = threadIdx.x; e < rows * cols; e += NT) {
        const int r = e / cols, c = e - r * cols;
        dst[r * ld + c] = r < nrows ? to_acc(src[(long long)r * cols + c]) : A(0);
    }
}

// acc[i][j] += sum_{t<K} X[(r0+i)*ldx + t] * Y[(c0+8j)*ldy + t]   (both operands row-major along t)
template <int R, int C, typename A>
__device__ __forceinline__ void prod_nt(A (&acc)[R][C], const A* X, int ldx, int r0, const A* Y, int ldy, int c0, int K) {
    const A* x = X + r0 * ldx;
    const A* y = Y + c0 * ldy;
#pragma unroll 4
    for (int t = 0; t < K; ++t) {
        A a[R], b[C];
#pragma unroll
        for (int i = 0; i < R; ++i) a[i] = x[i * ldx + t];
#pragma unroll
        for (int j = 0; j < C; ++j) b[j] = y[j * LANES * ldy + t];
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < C; ++j) acc[i][j] += a[i] * b[j];
    }
}

// acc[i][j] += sum_{t<K} X[(r0+i)*ldx + t] * Y[t*ldy + min(c0+8j, ncols-1)]
template <int R, int C, typename A>
__device__ __forceinline__ void prod_nn(A (&acc)[R][C], const A* X, int ldx, int r0, const A* Y, int ldy, int c0,
                                        int ncols, int K) {
    const A* x = X + r0 * ldx;
#pragma unroll 2
    for (int t = 0; t < K; ++t) {
        A a[R], b[C];
#pragma unroll
        for (int i = 0; i < R; ++i) a[i] = x[i * ldx + t];
#pragma unroll
        for (int j = 0; j < C; ++j) b[j] = Y[t * ldy + min(c0 + LANES * j, ncols - 1)];
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < C; ++j) acc[i][j] += a[i] * b[j];
    }
}

template <int R, int C, typename A> __device__ __forceinline__ void zero(A (&a)[R][C]) {
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
        for (int j = 0; j < C; ++j) a[i][j] = A(0);
}

template <typename A> __device__ __forceinline__ A* smem() {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    return reinterpret_cast<A*>(smem_raw);
}

// ---------------------------------------------------------------------------------------------- forward
template <typename T, int CPT>
__device__ void fwd_impl(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         const typename Acc<T>::type* __restrict__ mask, long long msb, long long msh, long long msq,
                         int has_mask, int causal, typename Acc<T>::type scale, int H, int Hk, int Nq, int Nk, int D,
                         int Dv, unsigned long long seed, unsigned int threshold, typename Acc<T>::type inv_keep,
                         T* __restrict__ out, typename Acc<T>::type* __restrict__ lse) {
    typedef typename Acc<T>::type A;
    constexpr int RPT = Rows<A, CPT>::fwd, BQ = GROUPS * RPT;
    const int ldk = D | 1, ldp = TILE + 1;
    A* sQ = smem<A>();
    A* sK = sQ + BQ * ldk;
    A* sV = sK + TILE * ldk;
    A* sP = sV + TILE * Dv;
    const int lane = threadIdx.x % LANES, r0 = (threadIdx.x / LANES) * RPT;
    const int ntq = (Nq + BQ - 1) / BQ;
    const long long bh = blockIdx.x / ntq;
    int tq = blockIdx.x % ntq;
    if (causal) tq = ntq - 1 - tq;  // the longest causal tiles start first
    const int q0 = tq * BQ, nq = min(BQ, Nq - q0);
    const A* mrow = mask + (bh / H) * msb + (bh % H) * msh;
    const long long kvh = kv_head(bh, H, Hk);
    const A ninf = neg_inf<A>();

    stage(sQ, ldk, q + (bh * Nq + q0) * D, nq, BQ, D);
    A m[RPT], l[RPT], o[RPT][CPT];
    zero(o);
#pragma unroll
    for (int i = 0; i < RPT; ++i) m[i] = ninf, l[i] = A(0);
    // keys >= q0 + nq are hidden from every row of this tile: their tiles are never loaded
    const int kend = causal ? min(Nk, q0 + nq) : Nk;
    for (int k0 = 0; k0 < kend; k0 += TILE) {
        const int nk = min(TILE, kend - k0);
        __syncthreads();  // the previous tile's sK, sV, sP are no longer read
        stage(sK, ldk, k + (kvh * Nk + k0) * D, nk, TILE, D);
        stage(sV, Dv, v + (kvh * Nk + k0) * Dv, nk, TILE, Dv);
        __syncthreads();
        A s[RPT][KPT];
        zero(s);
        prod_nt<RPT, KPT>(s, sQ, ldk, r0, sK, ldk, lane, D);
#pragma unroll
        for (int i = 0; i < RPT; ++i) {
            const int row = q0 + r0 + i;
            A mx = ninf;
#pragma unroll
            for (int j = 0; j < KPT; ++j) {
                const int key = k0 + lane + LANES * j;
                A x = ninf;
                if (row < Nq && key < k0 + nk && !(causal && key > row)) {
                    x = s[i][j] * scale;
                    if (has_mask) x += mrow[(long long)row * msq + key];
                }
                s[i][j] = x;
                mx = x > mx ? x : mx;
            }
            mx = group_max(mx);
            const A mnew = mx > m[i] ? mx : m[i];
            // a row that has seen only hidden keys keeps m = -inf (exp(-inf - -inf) would be NaN)
            const bool dead = mnew == ninf;
            const A alpha = dead ? A(1) : exp_(m[i] - mnew);
            A sum = A(0);
#pragma unroll
            for (int j = 0; j < KPT; ++j) {
                const A p = dead ? A(0) : exp_(s[i][j] - mnew);
                const long long key = k0 + lane + LANES * j;
                sP[(r0 + i) * ldp + lane + LANES * j] = p * drop<A>(seed, threshold, inv_keep, (bh * Nq + row) * Nk + key);
                sum += p;  // the normaliser (and lse) of the undropped weights
            }
            l[i] = l[i] * alpha + group_sum(sum);
            m[i] = mnew;
#pragma unroll
            for (int c = 0; c < CPT; ++c) o[i][c] *= alpha;
        }
        __syncwarp();  // P rows are written and read by the 8 lanes of one row group: one warp
        prod_nn<RPT, CPT>(o, sP, ldp, r0, sV, Dv, lane, Dv, nk);
    }
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
        const int row = q0 + r0 + i;
        if (row >= Nq) continue;
        const A inv = l[i] > A(0) ? A(1) / l[i] : A(0);  // every key hidden: a zero row
        T* orow = out + (bh * Nq + row) * Dv;
#pragma unroll
        for (int c = 0; c < CPT; ++c)
            if (lane + LANES * c < Dv) orow[lane + LANES * c] = from_acc<T>(o[i][c] * inv);
        if (lane == 0) lse[bh * Nq + row] = l[i] > A(0) ? m[i] + log_(l[i]) : ninf;
    }
}

// ---------------------------------------------------------------------------------------------- dK, dV
template <typename T, int CPT>
__device__ void dkdv_impl(const T* __restrict__ dout, const T* __restrict__ q, const T* __restrict__ k,
                          const T* __restrict__ v, const typename Acc<T>::type* __restrict__ lse,
                          const typename Acc<T>::type* __restrict__ delta, const typename Acc<T>::type* __restrict__ mask,
                          long long msb, long long msh, long long msq, int has_mask, int causal,
                          typename Acc<T>::type scale, int H, int Hk, int Nq, int Nk, int D, int Dv,
                          unsigned long long seed, unsigned int threshold, typename Acc<T>::type inv_keep,
                          T* __restrict__ dk, T* __restrict__ dv) {
    typedef typename Acc<T>::type A;
    constexpr int RPT = Rows<A, CPT>::bwd, BK = GROUPS * RPT;
    const int ldk = D | 1, ldv = Dv | 1, ldp = TILE + 1;
    A* sK = smem<A>();
    A* sV = sK + BK * ldk;
    A* sQ = sV + BK * ldv;
    A* sO = sQ + TILE * ldk;   // dO
    A* sP = sO + TILE * ldv;   // P^T   (keys x queries)
    A* sS = sP + BK * ldp;     // dS^T
    A* sL = sS + BK * ldp;     // lse of the query tile
    A* sDl = sL + TILE;        // Delta = rowsum(dO * O) of the query tile
    const int lane = threadIdx.x % LANES, r0 = (threadIdx.x / LANES) * RPT;
    const int ntk = (Nk + BK - 1) / BK;
    const long long bh = blockIdx.x / ntk;
    const int k0 = (blockIdx.x % ntk) * BK, nk = min(BK, Nk - k0);
    const A* mrow = mask + (bh / H) * msb + (bh % H) * msh;
    const long long kvh = kv_head(bh, H, Hk);
    const A ninf = neg_inf<A>();

    stage(sK, ldk, k + (kvh * Nk + k0) * D, nk, BK, D);
    stage(sV, ldv, v + (kvh * Nk + k0) * Dv, nk, BK, Dv);
    A gk[RPT][CPT], gv[RPT][CPT];
    zero(gk);
    zero(gv);
    // queries i < k0 see none of these keys: their tiles are skipped
    const int istart = causal ? (k0 / TILE) * TILE : 0;
    for (int i0 = istart; i0 < Nq; i0 += TILE) {
        const int ni = min(TILE, Nq - i0);
        __syncthreads();
        stage(sQ, ldk, q + (bh * Nq + i0) * D, ni, TILE, D);
        stage(sO, ldv, dout + (bh * Nq + i0) * Dv, ni, TILE, Dv);
        for (int r = threadIdx.x; r < TILE; r += NT) {
            sL[r] = r < ni ? lse[bh * Nq + i0 + r] : ninf;
            sDl[r] = r < ni ? delta[bh * Nq + i0 + r] : A(0);
        }
        __syncthreads();
        A s[RPT][KPT], dp[RPT][KPT];  // S^T and dP^T = V dO^T: rows = keys, columns = queries
        zero(s);
        zero(dp);
        prod_nt<RPT, KPT>(s, sK, ldk, r0, sQ, ldk, lane, D);
        prod_nt<RPT, KPT>(dp, sV, ldv, r0, sO, ldv, lane, Dv);
#pragma unroll
        for (int i = 0; i < RPT; ++i) {
            const int key = k0 + r0 + i;
#pragma unroll
            for (int j = 0; j < KPT; ++j) {
                const int qc = lane + LANES * j, row = i0 + qc;
                const A L = sL[qc];
                A p = A(0);
                if (key < Nk && row < Nq && L != ninf && !(causal && key > row)) {
                    A x = s[i][j] * scale;
                    if (has_mask) x += mrow[(long long)row * msq + key];
                    p = exp_(x - L);
                }
                const A z = drop<A>(seed, threshold, inv_keep, (bh * Nq + row) * (long long)Nk + key);
                sP[(r0 + i) * ldp + qc] = p * z;                         // (P Z)^T for dV
                sS[(r0 + i) * ldp + qc] = p * (z * dp[i][j] - sDl[qc]);  // dS = P (Z dP~ - Delta)
            }
        }
        __syncwarp();  // rows of P^T and dS^T are keys of this thread's row group: one warp
        prod_nn<RPT, CPT>(gv, sP, ldp, r0, sO, ldv, lane, Dv, ni);  // dV += P^T dO
        prod_nn<RPT, CPT>(gk, sS, ldp, r0, sQ, ldk, lane, D, ni);   // dK += dS^T Q
    }
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
        const int key = k0 + r0 + i;
        if (key >= Nk) continue;
        T* krow = dk + (bh * Nk + key) * D;
        T* vrow = dv + (bh * Nk + key) * Dv;
#pragma unroll
        for (int c = 0; c < CPT; ++c) {
            const int col = lane + LANES * c;
            if (col < D) krow[col] = from_acc<T>(gk[i][c] * scale);
            if (col < Dv) vrow[col] = from_acc<T>(gv[i][c]);
        }
    }
}

// ---------------------------------------------------------------------------------------------- dQ
template <typename T, int CPT>
__device__ void dq_impl(const T* __restrict__ dout, const T* __restrict__ q, const T* __restrict__ k,
                        const T* __restrict__ v, const typename Acc<T>::type* __restrict__ lse,
                        const typename Acc<T>::type* __restrict__ delta, const typename Acc<T>::type* __restrict__ mask,
                        long long msb, long long msh, long long msq, int has_mask, int causal,
                        typename Acc<T>::type scale, int H, int Hk, int Nq, int Nk, int D, int Dv,
                        unsigned long long seed, unsigned int threshold, typename Acc<T>::type inv_keep,
                        T* __restrict__ dq) {
    typedef typename Acc<T>::type A;
    constexpr int RPT = Rows<A, CPT>::bwd, BQ = GROUPS * RPT;
    const int ldk = D | 1, ldv = Dv | 1, ldp = TILE + 1;
    A* sQ = smem<A>();
    A* sO = sQ + BQ * ldk;   // dO
    A* sK = sO + BQ * ldv;
    A* sV = sK + TILE * ldk;
    A* sS = sV + TILE * ldv; // dS
    const int lane = threadIdx.x % LANES, r0 = (threadIdx.x / LANES) * RPT;
    const int ntq = (Nq + BQ - 1) / BQ;
    const long long bh = blockIdx.x / ntq;
    int tq = blockIdx.x % ntq;
    if (causal) tq = ntq - 1 - tq;
    const int q0 = tq * BQ, nq = min(BQ, Nq - q0);
    const A* mrow = mask + (bh / H) * msb + (bh % H) * msh;
    const long long kvh = kv_head(bh, H, Hk);
    const A ninf = neg_inf<A>();

    stage(sQ, ldk, q + (bh * Nq + q0) * D, nq, BQ, D);
    stage(sO, ldv, dout + (bh * Nq + q0) * Dv, nq, BQ, Dv);
    A L[RPT], Dl[RPT], g[RPT][CPT];
    zero(g);
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
        const int row = q0 + r0 + i;
        L[i] = row < Nq ? lse[bh * Nq + row] : ninf;
        Dl[i] = row < Nq ? delta[bh * Nq + row] : A(0);
    }
    const int kend = causal ? min(Nk, q0 + nq) : Nk;
    for (int k0 = 0; k0 < kend; k0 += TILE) {
        const int nk = min(TILE, kend - k0);
        __syncthreads();
        stage(sK, ldk, k + (kvh * Nk + k0) * D, nk, TILE, D);
        stage(sV, ldv, v + (kvh * Nk + k0) * Dv, nk, TILE, Dv);
        __syncthreads();
        A s[RPT][KPT], dp[RPT][KPT];
        zero(s);
        zero(dp);
        prod_nt<RPT, KPT>(s, sQ, ldk, r0, sK, ldk, lane, D);
        prod_nt<RPT, KPT>(dp, sO, ldv, r0, sV, ldv, lane, Dv);
#pragma unroll
        for (int i = 0; i < RPT; ++i) {
            const int row = q0 + r0 + i;
#pragma unroll
            for (int j = 0; j < KPT; ++j) {
                const int key = k0 + lane + LANES * j;
                A ds = A(0);
                if (row < Nq && key < k0 + nk && L[i] != ninf && !(causal && key > row)) {
                    A x = s[i][j] * scale;
                    if (has_mask) x += mrow[(long long)row * msq + key];
                    const A z = drop<A>(seed, threshold, inv_keep, (bh * Nq + row) * (long long)Nk + key);
                    ds = exp_(x - L[i]) * (z * dp[i][j] - Dl[i]);
                }
                sS[(r0 + i) * ldp + lane + LANES * j] = ds;
            }
        }
        __syncwarp();  // dS rows belong to this thread's row group: one warp
        prod_nn<RPT, CPT>(g, sS, ldp, r0, sK, ldk, lane, D, nk);  // dQ += dS K
    }
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
        const int row = q0 + r0 + i;
        if (row >= Nq) continue;
        T* qrow = dq + (bh * Nq + row) * D;
#pragma unroll
        for (int c = 0; c < CPT; ++c)
            if (lane + LANES * c < D) qrow[lane + LANES * c] = from_acc<T>(g[i][c] * scale);
    }
}

// ---------------------------------------------------------------------------------------------- entry points
// attention_{fwd,bwd_dkdv,bwd_dq}_{f32,f64,f16,bf16}_{64,128,256}: the last number is the largest
// max(D, Dv) the instantiation takes (8 lanes x CPT columns per thread).
#define ATTENTION_KERNELS(T, SFX, CPT, DMAX)                                                                           \
    extern "C" __global__ void __launch_bounds__(NT) attention_fwd_##SFX##_##DMAX(                                   \
        const T* q, const T* k, const T* v, const Acc<T>::type* mask, long long msb, long long msh, long long msq,  \
        int has_mask, int causal, Acc<T>::type scale, int H, int Hk, int Nq, int Nk, int D, int Dv,                 \
        unsigned long long seed, unsigned int threshold, Acc<T>::type inv_keep, T* out, Acc<T>::type* lse) {         \
        fwd_impl<T, CPT>(q, k, v, mask, msb, msh, msq, has_mask, causal, scale, H, Hk, Nq, Nk, D, Dv, seed,         \
                         threshold, inv_keep, out, lse);                                                             \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(NT) attention_bwd_dkdv_##SFX##_##DMAX(                              \
        const T* dout, const T* q, const T* k, const T* v, const Acc<T>::type* lse, const Acc<T>::type* delta,      \
        const Acc<T>::type* mask, long long msb, long long msh, long long msq, int has_mask, int causal,            \
        Acc<T>::type scale, int H, int Hk, int Nq, int Nk, int D, int Dv, unsigned long long seed,                 \
        unsigned int threshold, Acc<T>::type inv_keep, T* dk, T* dv) {                                               \
        dkdv_impl<T, CPT>(dout, q, k, v, lse, delta, mask, msb, msh, msq, has_mask, causal, scale, H, Hk, Nq, Nk,   \
                          D, Dv, seed, threshold, inv_keep, dk, dv);                                                 \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(NT) attention_bwd_dq_##SFX##_##DMAX(                                \
        const T* dout, const T* q, const T* k, const T* v, const Acc<T>::type* lse, const Acc<T>::type* delta,      \
        const Acc<T>::type* mask, long long msb, long long msh, long long msq, int has_mask, int causal,            \
        Acc<T>::type scale, int H, int Hk, int Nq, int Nk, int D, int Dv, unsigned long long seed,                 \
        unsigned int threshold, Acc<T>::type inv_keep, T* dq) {                                                      \
        dq_impl<T, CPT>(dout, q, k, v, lse, delta, mask, msb, msh, msq, has_mask, causal, scale, H, Hk, Nq, Nk, D,  \
                        Dv, seed, threshold, inv_keep, dq);                                                          \
    }

#define ATTENTION_DTYPE(T, SFX)          \
    ATTENTION_KERNELS(T, SFX, 8, 64)     \
    ATTENTION_KERNELS(T, SFX, 16, 128)   \
    ATTENTION_KERNELS(T, SFX, 32, 256)

ATTENTION_DTYPE(float, f32)
ATTENTION_DTYPE(double, f64)
ATTENTION_DTYPE(f16_t, f16)
ATTENTION_DTYPE(bf16_t, bf16)
