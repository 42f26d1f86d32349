// conv_slab.hpp: stride-1 conv2d forward and grad-weight as GEMMs on a padded input "slab",
// with no im2col buffer. Used by csrc/conv.cpp (grad-input is the forward of dY with the
// flipped, transposed kernel, so it runs here too).
//
// Idea: copy the input rows that a block of RB output rows reads, zero-padded, into a slab
// S[c][r][Wp] (Wp = W + 2*pw; R = RB + dh*(KH-1) rows). Number the block's outputs by
// q = i*Wp + j ("padded width": columns j >= OW are garbage, computed and dropped). Then the
// unrolled window row of tap k = (c, m, n) is the *contiguous* slice S + off[k] + q with
// off[k] = c*R*Wp + dh*m*Wp + dw*n, so
//     Y_blk[o][q] = sum_k Wt[k][o] * S[off[k] + q]          (forward, B rows indirect)
//     dWt[k][o] += sum_q S[off[k] + q] * G[q][o]            (grad weight, A rows indirect)
// with G the block's dY transposed to q-major (zero in the garbage columns). Both are
// register-blocked micro-kernels on tile_gemm's vector type (MR rows x NV vectors of
// accumulators, the whole reduction in registers). Columns are padded to a whole number of
// vectors; the slab carries zeroed slack so every read stays inside it.
// Blocks: RB output rows so the slab stays within ~L2/2 and a block is <= ~512 columns;
// OpenMP over (image, row block) tasks, each thread with its own slab / output buffer /
// grad-weight partial sum (reduced after the region, no races).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "tile_gemm.hpp"

namespace conv_slab {

using tile_gemm::kMR;
using tile_gemm::Vec;
using tile_gemm::vec_t;
using tile_gemm::vload;
using tile_gemm::vstore;

struct Geo {  // stride-1 geometry of one call
    long B, C, H, W, O, KH, KW, ph, pw, dh, dw, groups, OH, OW;
    long Cg() const { return C / groups; }
    long Og() const { return O / groups; }
    long K() const { return Cg() * KH * KW; }
    long Wp() const { return W + 2 * pw; }
    long halo() const { return dh * (KH - 1); }
};

struct Blocking {
    long RB, nblk, R, N, Npad, slab;  // rows/block, blocks/image, slab rows, columns, padded, slab size
};

template <typename T>
Blocking blocking(const Geo& g) {
    constexpr long Wv = Vec<T>::W;
    const long Wp = g.Wp(), row = g.C * Wp * long(sizeof(T));
    long rb = std::max(1L, (512L << 10) / std::max(1L, row) - g.halo());
    rb = std::min({rb, std::max(1L, 512 / Wp), g.OH});
    const long nblk = (g.OH + rb - 1) / rb;
    rb = (g.OH + nblk - 1) / nblk;  // balance the blocks
    Blocking b{rb, nblk, rb + g.halo(), rb * Wp, 0, 0};
    b.Npad = (b.N + Wv - 1) / Wv * Wv;
    // reads reach at most (C-1)*R*Wp + halo*Wp + dw*(KW-1) + Npad - 1 < C*R*Wp + dw*(KW-1) + Wv
    b.slab = g.C * b.R * Wp + g.dw * (g.KW - 1) + Wv;
    return b;
}

// Fill the slab for image b, output rows [i0, i0+RB): rows outside the image and the pad are 0.
// Returns the sum of v * 0 over the copied elements: NaN iff one of them is NaN or infinite
// (IEEE: inf * 0 = NaN; -O3 without -ffast-math keeps the product), so the copy doubles as the
// finiteness check of the input at no extra read (the blocks' rows cover every input row).
template <typename T>
T fill_slab(const Geo& g, const Blocking& bk, const T* x, long b, long i0, T* S) {
    const long Wp = g.Wp();
    T probe = T(0);
    for (long c = 0; c < g.C; ++c) {
        const T* plane = x + (b * g.C + c) * g.H * g.W;
        for (long r = 0; r < bk.R; ++r) {
            T* dst = S + (c * bk.R + r) * Wp;
            const long y = i0 - g.ph + r;
            if (y < 0 || y >= g.H) {
                std::fill(dst, dst + Wp, T(0));
                continue;
            }
            std::fill(dst, dst + g.pw, T(0));
            const T* src = plane + y * g.W;
            T* out = dst + g.pw;
#pragma omp simd reduction(+ : probe)
            for (long j = 0; j < g.W; ++j) {
                const T v = src[j];
                out[j] = v;
                probe += v * T(0);
            }
            std::fill(dst + g.pw + g.W, dst + Wp, T(0));
        }
    }
    std::fill(S + g.C * bk.R * Wp, S + bk.slab, T(0));
    return probe;
}

// off[k] for k = (c, m, n) within one group, relative to the group's first slab channel.
inline std::vector<long> tap_offsets(const Geo& g, long R) {
    std::vector<long> off(g.K());
    const long Wp = g.Wp();
    for (long c = 0, k = 0; c < g.Cg(); ++c)
        for (long m = 0; m < g.KH; ++m)
            for (long n = 0; n < g.KW; ++n) off[k++] = c * R * Wp + g.dh * m * Wp + g.dw * n;
    return off;
}

// C[MR x NV*W] = sum_k A[k*lda + r] * S[off[k] + .]: forward micro-kernel (B rows indirect).
template <typename T, int MR, int NV>
inline void fwd_micro(int K, const T* A, long lda, const T* S, const long* off, T* C, long ldc) {
    typedef vec_t<T> V;
    constexpr int W = Vec<T>::W;
    V c[MR][NV];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) c[r][v] = V{};
    for (int k = 0; k < K; ++k, A += lda) {
        const T* s = S + off[k];
        V b[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) b[v] = vload(s + v * W);
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
            const T a = A[r];
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) c[r][v] += a * b[v];
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) vstore(C + r * ldc + v * W, c[r][v]);
}

template <typename T, int NV, int MR, int R = MR>
inline void fwd_panel(int M, int K, const T* A, long lda, const T* S, const long* off, T* C, long ldc) {
    if constexpr (R == MR) {
        int i = 0;
        for (; i + MR <= M; i += MR) fwd_micro<T, MR, NV>(K, A + i, lda, S, off, C + i * ldc, ldc);
        if (i < M) fwd_panel<T, NV, MR, MR - 1>(M - i, K, A + i, lda, S, off, C + i * ldc, ldc);
    } else if constexpr (R > 0) {
        if (M == R)
            fwd_micro<T, R, NV>(K, A, lda, S, off, C, ldc);
        else
            fwd_panel<T, NV, MR, R - 1>(M, K, A, lda, S, off, C, ldc);
    }
}

// All column panels of one block: NVmax-vector panels, then narrower ones down to one vector.
template <typename T, int NV, int MR>
inline void fwd_block(int M, int K, const T* A, long lda, const T* S, const long* off, T* C, long ldc,
                      long j, long Npad) {
    constexpr long Wv = Vec<T>::W;
    for (; j + NV * Wv <= Npad; j += NV * Wv) fwd_panel<T, NV, MR>(M, K, A, lda, S + j, off, C + j, ldc);
    if constexpr (NV > 1) fwd_block<T, NV - 1, MR>(M, K, A, lda, S, off, C, ldc, j, Npad);
}

// D[r][.] += sum_q S[off[r] + q] * G[q*ldg + .]: grad-weight micro-kernel (A rows indirect).
template <typename T, int MR, int NV>
inline void dw_micro(int N, const T* S, const long* off, const T* G, long ldg, T* D, long ldd) {
    typedef vec_t<T> V;
    constexpr int W = Vec<T>::W;
    const T* a[MR];
    V c[MR][NV];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
        a[r] = S + off[r];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) c[r][v] = vload(D + r * ldd + v * W);
    }
    for (int q = 0; q < N; ++q, G += ldg) {
        V b[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) b[v] = vload(G + v * W);
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
            const T s = a[r][q];
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) c[r][v] += s * b[v];
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) vstore(D + r * ldd + v * W, c[r][v]);
}

template <typename T, int NV, int R = kMR>
inline void dw_panel(int M, int N, const T* S, const long* off, const T* G, long ldg, T* D, long ldd) {
    if constexpr (R == kMR) {
        int i = 0;
        for (; i + kMR <= M; i += kMR) dw_micro<T, kMR, NV>(N, S, off + i, G, ldg, D + i * ldd, ldd);
        if (i < M) dw_panel<T, NV, kMR - 1>(M - i, N, S, off + i, G, ldg, D + i * ldd, ldd);
    } else if constexpr (R > 0) {
        if (M == R)
            dw_micro<T, R, NV>(N, S, off, G, ldg, D, ldd);
        else
            dw_panel<T, NV, R - 1>(M, N, S, off, G, ldg, D, ldd);
    }
}

// y = conv(x, w) + bias, stride 1. w is (O, Cg, KH, KW); y is (B, O, OH, OW). Returns false
// when x holds a NaN or an infinity (found by the slab copies, see fill_slab).
template <typename T>
bool forward(const Geo& g, const T* x, const T* w, const T* bias, T* y, bool parallel) {
    constexpr long Wv = Vec<T>::W;
    const Blocking bk = blocking<T>(g);
    const long K = g.K(), Og = g.Og(), Wp = g.Wp(), P = g.OH * g.OW;
    const std::vector<long> off = tap_offsets(g, bk.R);
    std::vector<T> wt(g.groups * K * Og);  // Wt[grp][k][o]: the MR broadcasts per k are adjacent
    for (long q = 0; q < g.groups; ++q)
        for (long o = 0; o < Og; ++o)
            for (long k = 0; k < K; ++k) wt[(q * K + k) * Og + o] = w[(q * Og + o) * K + k];
    bool finite = true;
#pragma omp parallel if (parallel) reduction(&& : finite)
    {
        std::vector<T> S(bk.slab), Cb(g.O * bk.Npad);
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < g.B * bk.nblk; ++t) {
            const long b = t / bk.nblk, i0 = (t % bk.nblk) * bk.RB;
            const long rows = std::min(bk.RB, g.OH - i0);
            const long Npad = (rows * Wp + Wv - 1) / Wv * Wv;
            const T probe = fill_slab(g, bk, x, b, i0, S.data());
            finite = finite && probe == probe;
            for (long q = 0; q < g.groups; ++q) {
                const T* A = wt.data() + q * K * Og;
                const T* Sg = S.data() + q * g.Cg() * bk.R * Wp;
                T* Cg = Cb.data() + q * Og * bk.Npad;
                fwd_block<T, 3, 8>(int(Og), int(K), A, Og, Sg, off.data(), Cg, bk.Npad, 0, Npad);
            }
            for (long o = 0; o < g.O; ++o) {
                const T bo = bias ? bias[o] : T(0);
                for (long i = 0; i < rows; ++i) {
                    const T* src = Cb.data() + o * bk.Npad + i * Wp;
                    T* dst = y + (b * g.O + o) * P + (i0 + i) * g.OW;
#pragma omp simd
                    for (long j = 0; j < g.OW; ++j) dst[j] = src[j] + bo;
                }
            }
        }
    }
    return finite;
}

// dw (O, Cg, KH, KW) = sum_b dY[b] (*) x[b], stride 1.
template <typename T>
void grad_weight(const Geo& g, const T* x, const T* gy, T* dw, bool parallel) {
    constexpr long Wv = Vec<T>::W;
    const Blocking bk = blocking<T>(g);
    const long K = g.K(), Og = g.Og(), Wp = g.Wp(), P = g.OH * g.OW;
    const long Ogp = (Og + Wv - 1) / Wv * Wv, ldg = g.groups * Ogp;  // G row: each group padded
    const std::vector<long> off = tap_offsets(g, bk.R);
    std::vector<std::vector<T>> parts;
#pragma omp parallel if (parallel)
    {
#pragma omp single
        {
            parts.resize(1);
#ifdef _OPENMP
            parts.resize(omp_get_num_threads());
#endif
        }
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        std::vector<T>& D = parts[tid];  // Dt[grp][k][Ogp], this thread's sum
        D.assign(g.groups * K * Ogp, T(0));
        std::vector<T> S(bk.slab), G(bk.Npad * ldg);
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < g.B * bk.nblk; ++t) {
            const long b = t / bk.nblk, i0 = (t % bk.nblk) * bk.RB;
            const long rows = std::min(bk.RB, g.OH - i0);
            const long Npad = (rows * Wp + Wv - 1) / Wv * Wv;
            std::fill(G.begin(), G.begin() + Npad * ldg, T(0));  // garbage columns stay 0
            for (long o = 0; o < g.O; ++o) {
                T* dst = G.data() + (o / Og) * Ogp + o % Og;
                for (long i = 0; i < rows; ++i) {
                    const T* src = gy + (b * g.O + o) * P + (i0 + i) * g.OW;
                    for (long j = 0; j < g.OW; ++j) dst[(i * Wp + j) * ldg] = src[j];
                }
            }
            fill_slab(g, bk, x, b, i0, S.data());
            for (long q = 0; q < g.groups; ++q) {
                const T* Sg = S.data() + q * g.Cg() * bk.R * Wp;
                const T* Gq = G.data() + q * Ogp;
                T* Dq = D.data() + q * K * Ogp;
                long v = 0;
                for (; v + 2 * Wv <= Ogp; v += 2 * Wv)
                    dw_panel<T, 2>(int(K), int(Npad), Sg, off.data(), Gq + v, ldg, Dq + v, Ogp);
                for (; v < Ogp; v += Wv)
                    dw_panel<T, 1>(int(K), int(Npad), Sg, off.data(), Gq + v, ldg, Dq + v, Ogp);
            }
        }
    }
    std::fill(dw, dw + g.O * K, T(0));
    for (auto& p : parts)
        for (long q = 0; q < g.groups; ++q)
            for (long o = 0; o < Og; ++o)
                for (long k = 0; k < K; ++k) dw[(q * Og + o) * K + k] += p[(q * K + k) * Ogp + o];
}

// Kernel of the grad-input convolution: wf[grp*Cg + c][o][m][n] = w[grp*Og + o][c][KH-1-m][KW-1-n].
template <typename T>
std::vector<T> flipped_transposed(const Geo& g, const T* w) {
    const long Cg = g.Cg(), Og = g.Og(), KK = g.KH * g.KW;
    std::vector<T> wf(g.O * Cg * KK);
    for (long q = 0; q < g.groups; ++q)
        for (long o = 0; o < Og; ++o)
            for (long c = 0; c < Cg; ++c)
                for (long t = 0; t < KK; ++t)
                    wf[((q * Cg + c) * Og + o) * KK + (KK - 1 - t)] = w[((q * Og + o) * Cg + c) * KK + t];
    return wf;
}

}  // namespace conv_slab
