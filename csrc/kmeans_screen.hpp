// The screens of greedy k-means++ (kmeans_plusplus.hpp): which rows of a sub-block a slot (a
// candidate, or the last winner) may bring closer than their D2, so that only those take exact
// distances. A row a screen passes over is proven no closer to the slot than its D2, so skipping
// it changes no bit of the result; a row it keeps is computed exactly. Two forms, the one with
// fewer FMAs per row chosen per call:
//  - Rows: a float copy of X in blocks of WF rows, coordinate-major; one FMA serves WF rows of
//    one slot. For float64 X it also halves what a step streams. On a 2-core Xeon (n = 200k,
//    d = 32, k = 256, AVX-512) against Lanes: float32 0.91-0.99x the seeding time at the default
//    7 trials, 0.74-0.77x at 1 trial; float64 0.55-0.68x at 7 trials.
//  - Lanes: slots in lanes on X itself, one FMA serving a row's W slots (the slots fill the
//    lanes: float32 at the default 7 trials on AVX2 and SSE).
// Both test ||x||^2 + ||c||^2 - 2 x.c >= D2 (rounded up) + K (||x||^2 + ||c||^2) (+ an absolute
// term in Rows for subnormals): |(a2 + b2 - 2 x.c) - ||x - c||^2| <= (d + 3) u (a + b)^2 (the
// three sums and two more roundings), the difference-form distance is within (d + 3) u ||x - c||^2
// <= (d + 3) u (a + b)^2 of the exact one, (a + b)^2 <= 2 (a^2 + b^2), 2x slack for the test's own
// roundings; Rows on float64 X adds the rounding of X to float, ||x~ - c~||^2 <= (1 + u) ||x - c||^2
// + 2 (1 + u) u (a^2 + b^2). Overflow (float64 data beyond float's range) gives inf or NaN, which
// proves nothing: computed. Included by kmeans_plusplus.hpp only.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "kmeans_fused.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace kmscreen {

typedef float V32 __attribute__((vector_size(kmfused::VBYTES)));
constexpr int WF = kmfused::VBYTES / 4;  // rows per vector
constexpr float U32R = 1.0f / 16777216;  // float's unit roundoff

inline float up(double v) {  // the least float >= v (inf beyond float's range)
    if (!(v <= (double)std::numeric_limits<float>::max())) return std::numeric_limits<float>::infinity();
    float f = (float)v;  // v >= 0: the next float up is the next bit pattern
    if ((double)f < v) {
        uint32_t b;
        std::memcpy(&b, &f, 4);
        ++b;
        std::memcpy(&f, &b, 4);
    }
    return f;
}

// bit l set where lane l must be computed: !(st >= thr) (NaN too) or thr = inf (float or T lanes)
template <typename VV>
inline uint32_t undecided(const VV& st, const VV& thr) {
    using E = std::decay_t<decltype(st[0])>;
    constexpr E inf = std::numeric_limits<E>::infinity();
#if defined(__AVX512F__)
    if constexpr (sizeof(E) == 4)
        return _mm512_cmp_ps_mask((__m512)st, (__m512)thr, _CMP_NGE_UQ) |
               _mm512_cmp_ps_mask((__m512)thr, _mm512_set1_ps(inf), _CMP_EQ_OQ);
    else
        return _mm512_cmp_pd_mask((__m512d)st, (__m512d)thr, _CMP_NGE_UQ) |
               _mm512_cmp_pd_mask((__m512d)thr, _mm512_set1_pd(inf), _CMP_EQ_OQ);
#else
    uint32_t mk = 0;
    for (int l = 0; l < (int)(sizeof(VV) / sizeof(E)); ++l)
        mk |= (uint32_t)(!(st[l] >= thr[l]) || thr[l] == inf) << l;
    return mk;
#endif
}

template <typename T>
struct Rows {
    const T* x;
    int64_t n, d, nb;
    std::vector<V32> xs;          // nb x d: float(x), WF rows a vector, row n - 1 repeated as padding
    std::vector<float> a2, dup;   // per row (nb * WF): ||x~||^2 in float; D2 rounded up (inf: none yet)
    static constexpr int G = 8;   // slots per sweep of a block: independent FMA chains
    std::vector<float> sc;        // slots x d: the slots' x~
    std::vector<float> sb2;       // slots: their ||x~||^2
    std::vector<int64_t> qs;      // per panel, stride: the slots it scores, padded by G - 1 copies
    std::vector<int> nq;          // per panel: how many
    int64_t stride = 0;
    float K, ABS;

    Rows(const T* x_, int64_t n_, int64_t d_, bool parallel)
        : x(x_), n(n_), d(d_), nb((n_ + WF - 1) / WF), xs((size_t)nb * d_), a2(nb * WF),
          dup(nb * WF, std::numeric_limits<float>::infinity()) {
        K = 4.0f * (2.0f * (float)d + 8.0f) * U32R + (sizeof(T) > 4 ? 8.0f * U32R : 0.0f);
        ABS = (8.0f * (float)d + 16.0f) * std::numeric_limits<float>::denorm_min();
#pragma omp parallel for schedule(static) if (parallel)
        for (int64_t blk = 0; blk < nb; ++blk)
            for (int l = 0; l < WF; ++l) {
                const T* xr = x + std::min(blk * WF + l, n - 1) * d;
                float s = 0;
                for (int64_t t = 0; t < d; ++t) {
                    const float v = (float)xr[t];
                    xs[(size_t)blk * d + t][l] = v;
                    s += v * v;
                }
                a2[blk * WF + l] = s;
            }
    }

    void bound(int64_t j, double D2) { dup[j] = up(D2 * (1.0 + 16.0 * (double)U32R)); }

    void load(const int64_t* rows, int64_t m) {
        sc.resize((size_t)m * d);
        sb2.resize(m);
        for (int64_t q = 0; q < m; ++q) {
            for (int64_t t = 0; t < d; ++t) sc[(size_t)q * d + t] = (float)x[rows[q] * d + t];
            sb2[q] = a2[rows[q]];
        }
    }

    // panel p (of `lanes` slots) scores the slots whose bit is set in need (once per pass,
    // before the threads share the lists)
    void plan(int64_t p, uint32_t need, int lanes) {
        stride = lanes + G;
        if ((int64_t)nq.size() <= p) {
            nq.resize(p + 1);
            qs.resize((size_t)(p + 1) * stride);
        }
        int64_t* q = qs.data() + (size_t)p * stride;
        int c = 0;
        for (int l = 0; l < lanes; ++l)
            if (need >> l & 1) q[c++] = p * lanes + l;
        nq[p] = c;
        for (int i = c; c > 0 && i < c + G - 1; ++i) q[i] = q[c - 1];  // padding repeats the last
    }

    template <int G>
    __attribute__((always_inline)) uint32_t block(int64_t j0, const int64_t* qs) const {
        const V32* xb = xs.data() + (size_t)(j0 / WF) * d;
        const float* c[G];
        for (int i = 0; i < G; ++i) c[i] = sc.data() + (size_t)qs[i] * d;
        V32 s[G];
        for (int i = 0; i < G; ++i) s[i] = V32{};
        for (int64_t t = 0; t < d; ++t) {
            const V32 xt = xb[t];
            for (int i = 0; i < G; ++i) s[i] += xt * c[i][t];
        }
        V32 aj, du;
        std::memcpy(&aj, a2.data() + j0, sizeof(V32));
        std::memcpy(&du, dup.data() + j0, sizeof(V32));
        du += ABS;
        uint32_t mk = 0;
        for (int i = 0; i < G; ++i) {
            const V32 b2 = aj + sb2[qs[i]];
            const V32 st = b2 - 2.0f * s[i];
            const V32 thr = du + K * b2;
            mk |= undecided(st, thr);
        }
        return mk;
    }

    // Rows of [a, e) (a a multiple of WF) that a slot planned for panel p may bring closer, in
    // row order, into defer; returns their count. Not inlined into the pass, where GCC kept
    // some of block()'s G accumulators on the stack inside the coordinate loop.
    __attribute__((noinline)) int rows(int64_t a, int64_t e, int64_t p, int64_t* defer) const {
        const int n_q = nq[p];
        const int64_t* q = qs.data() + (size_t)p * stride;
        if (n_q == 0) return 0;
        int nd = 0;
        for (int64_t j0 = a; j0 < e; j0 += WF) {
            uint32_t mk = 0;
            for (int g = 0; g < n_q; g += G) {
                const int left = n_q - g;
                mk |= left <= 2 ? block<2>(j0, q + g) : left <= 4 ? block<4>(j0, q + g) : block<G>(j0, q + g);
            }
            const int64_t rows = std::min<int64_t>(WF, e - j0);
            if (rows < WF) mk &= (uint32_t)((1ull << rows) - 1);
            while (mk) {
                defer[nd++] = j0 + __builtin_ctz(mk);
                mk &= mk - 1;
            }
        }
        return nd;
    }
};

// The other form: slots in lanes, one FMA serving the W slots of one row, on X itself (no copy),
// the test in T. Where the slots fill the lanes it does as few FMAs as Rows and reads no copy.
template <typename T>
struct Lanes {
    using V = typename kmfused::VecOf<T>::type;
    static constexpr int W = kmfused::VBYTES / (int)sizeof(T);
    static constexpr int R = 8;  // rows per micro-step: independent FMA chains
    static constexpr double U = std::numeric_limits<T>::epsilon() / 2;
    const T* x;
    int64_t n, d;
    std::vector<T> an2;  // ||x_j||^2 as computed in T
    std::vector<T> dup;  // D2 rounded up to T (room for the threshold's roundings)
    std::vector<V> pb2;  // per panel: ||c||^2 of each slot
    T K;

    Lanes(const T* x_, int64_t n_, int64_t d_, bool parallel)
        : x(x_), n(n_), d(d_), an2(n_), dup(n_, std::numeric_limits<T>::infinity()) {
#pragma omp parallel for schedule(static) if (parallel)
        for (int64_t j = 0; j < n; ++j) {
            const T* a = x + j * d;
            T s = 0;
            for (int64_t t = 0; t < d; ++t) s += a[t] * a[t];
            an2[j] = s;
        }
        // |(a2 + b2 - 2 x.c) - ||x - c||^2| <= (d + 3) u (a + b)^2 (the three sums and two more
        // roundings) and the difference form is within (d + 3) u ||x - c||^2 <= (d + 3) u (a + b)^2
        // of the exact value; (a + b)^2 <= 2 (a^2 + b^2); 2x slack for the threshold's roundings
        K = (T)(2.0 * 2.0 * (2.0 * (double)d + 8.0) * U);
    }

    void bound(int64_t j, double D2) {
        const double v = D2 * (1.0 + 8.0 * U);
        dup[j] = v <= (double)std::numeric_limits<T>::max() ? (T)v : std::numeric_limits<T>::infinity();
    }

    void load(const int64_t* rows, int64_t m) {
        const int64_t np = (m + W - 1) / W;
        pb2.assign(np, V{});
        for (int64_t p = 0; p < np; ++p)
            for (int l = 0; l < W; ++l) pb2[p][l] = an2[rows[std::min<int64_t>(p * W + l, m - 1)]];
    }

    // Rows of [a, e) that a slot of `need` in panel p (c: its values, d vectors) may bring closer
    int rows(int64_t a, int64_t e, int64_t p, const V* c, uint32_t need, int64_t* defer) const {
        int nd = 0;
        for (int64_t j0 = a; j0 < e; j0 += R) {
            const int nr = (int)std::min<int64_t>(R, e - j0);
            const T* xr[R];
            for (int r = 0; r < R; ++r) xr[r] = x + (j0 + std::min(r, nr - 1)) * d;  // no read past n
            V s[R];
            for (int r = 0; r < R; ++r) s[r] = V{};
            for (int64_t t = 0; t < d; ++t) {
                const V ct = c[t];
                for (int r = 0; r < R; ++r) s[r] += xr[r][t] * ct;
            }
            for (int r = 0; r < nr; ++r) {
                const int64_t j = j0 + r;
                const V b2 = pb2[p] + an2[j];
                const V st = b2 - (T)2 * s[r];
                const V thr = dup[j] + K * b2;
                if (undecided(st, thr) & need) defer[nd++] = j;
            }
        }
        return nd;
    }
};

}  // namespace kmscreen
