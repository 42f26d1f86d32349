// Flash attention: out = softmax(Q K^T * scale + M) V with lse, and its backward (dQ, dK, dV),
// tiled over queries and keys with an online softmax; the Nq x Nk score matrix is never
// materialised (memory O(N*D) per thread).
//
// Fast: every tile product goes through the register-blocked micro-kernel of tile_gemm.hpp
// (8 x 32 floats / 8 x 16 doubles with AVX-512), whose B operand must have contiguous rows:
//   forward  (one task = one BQ-query tile of one head): the scores are kept transposed,
//            S^T[key][query] = K_tile . Q_tile^T, so only the Q tile is transposed, once per
//            task; the softmax statistics are then vectors across queries (no horizontal
//            reductions) and O += P V reads P^T with strides (1, BQ) and V as it is.
//   backward (one unit = one BK-key tile): K and V tiles are transposed once, then for every
//            query tile S = Q Kt, dP = dO Vt, P = exp(S - lse), dS = P (dP - Delta),
//            dV += P^T dO, dK += dS^T Q, dQ += dS K: five products, no recomputation. dQ is
//            owned per head (threads split heads) or, with fewer heads than threads, summed
//            from per-thread copies (threads split the key tiles of one head).
// Rounding follows the reference: S = (Q K^T) * scale + M in that order, dQ and dK scaled last
// (folding scale into Q or K, or into an FMA with the exp argument, doubles the float64 error
// against it). exp is a branch-free vector polynomial (vexp, tested in tests/test_attention.py).
// Tiles: BQ = BK = 64 (score tile 16 KiB in float32); larger or smaller tiles measured no faster.
// Grouped-query attention: k and v have Hk heads, query head h reads head h / (H / Hk); dK and dV
// are written per query head (B, H, Nk, .) and the driver sums each group (no write races).
// Dropout: P_ij is multiplied by 1/(1-p) or 0 from a SplitMix64 hash of the score's index (the
// same bits as pyml.reference.attention.dropout_keep), so the backward redraws the forward's mask.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "tile_gemm.hpp"

namespace py = pybind11;
using i64 = std::int64_t;
using tile_gemm::gemm;
using tile_gemm::vec_t;
using tile_gemm::vload;
using tile_gemm::vsplat;
using tile_gemm::vstore;

template <typename T>
using arr = py::array_t<T, py::array::c_style | py::array::forcecast>;

namespace {

constexpr int BQ = 64;  // queries per tile
constexpr int BK = 64;  // keys per tile

template <typename T> constexpr int W = tile_gemm::Vec<T>::W;
inline int round_up(int n, int w) { return (n + w - 1) / w * w; }
template <typename T> constexpr T ninf() { return -std::numeric_limits<T>::infinity(); }

// exp(x) lane by lane: x = n ln2 + r, |r| <= ln2/2 (Cody-Waite split of ln2, n rounded with the
// 1.5*2^p trick, which also yields n's bits), exp(r) by a polynomial, 2^n built in the exponent
// field. Below `lo` the result is 0 (float32: the denormal range, < 1.2e-38, is flushed), above
// `hi` it saturates at exp(hi). NaN in, NaN out. Accuracy ~1 ulp (Cephes expf polynomial for
// float; Taylor to degree 13, remainder < 5e-18, for double).
template <typename T> struct ExpC;
template <> struct ExpC<float> {
    typedef std::uint32_t U;
    static constexpr int mant = 23, bias = 127;
    static constexpr float lo = -87.3f, hi = 88.0f, magic = 12582912.0f, log2e = 1.44269504088896341f,
                           c1 = 0.693359375f, c2 = -2.12194440e-4f;
    static vec_t<float> poly(vec_t<float> r) {
        vec_t<float> p = vsplat(1.9875691500e-4f);
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        return p * r * r + r + 1.0f;
    }
};
template <> struct ExpC<double> {
    typedef std::uint64_t U;
    static constexpr int mant = 52, bias = 1023;
    static constexpr double lo = -708.3, hi = 709.0, magic = 6755399441055744.0, log2e = 1.4426950408889634,
                            c1 = 6.93145751953125e-1, c2 = 1.42860682030941723212e-6;
    static vec_t<double> poly(vec_t<double> r) {
        double f = 1;  // 1/13!, then Horner down to 1/2!
        for (int k = 2; k <= 13; ++k) f *= k;
        vec_t<double> p = vsplat(1 / f);
        for (int k = 13; k > 2; --k) {
            f /= k;
            p = p * r + 1 / f;
        }
        return 1.0 + (r + r * r * p);
    }
};

template <typename T>
inline vec_t<T> vexp(vec_t<T> x) {
    typedef ExpC<T> C;
    typedef typename C::U U;
    typedef U UV __attribute__((vector_size(tile_gemm::kVecBytes)));
    const vec_t<T> lo = vsplat(C::lo), hi = vsplat(C::hi);
    vec_t<T> xc = x < lo ? lo : x;
    xc = xc > hi ? hi : xc;
    const vec_t<T> t = xc * C::log2e + C::magic;  // t = magic + n exactly
    const vec_t<T> n = t - C::magic;
    const vec_t<T> r = (xc - n * C::c1) - n * C::c2;
    const UV nb = (UV)t - (U)((UV)vsplat(C::magic))[0];  // n as a two's-complement integer
    const vec_t<T> two_n = (vec_t<T>)((nb + (U)C::bias) << C::mant);
    const vec_t<T> y = C::poly(r) * two_n;
    return x < lo ? vec_t<T>{} : y;
}

template <typename T> inline vec_t<T> vmax(vec_t<T> a, vec_t<T> b) { return a < b ? b : a; }

struct Geometry {
    i64 B, H, Nq, Nk, D, Dv, Hk;
    i64 msb, msh, msq;  // mask strides (elements) for batch, head, query; key stride is 1
    bool has_mask, causal;
    std::uint64_t seed = 0, threshold = 0;  // dropout: kept when hash >> 40 >= threshold
    double inv_keep = 1;                      // 1 / (1 - dropout_p)
    // the key/value head (b, h / (H / Hk)) of query head bh = b * H + h
    i64 kv(i64 bh) const { return (bh / H) * Hk + (bh % H) / (H / Hk); }
};

// Dropout factor of score (i, j) of head bh: 1/(1-p) if kept, else 0 (SplitMix64, Steele et al. 2014).
template <typename T>
inline T dropout_factor(const Geometry& g, i64 bh, i64 i, i64 j) {
    std::uint64_t z = g.seed + (std::uint64_t)((bh * g.Nq + i) * g.Nk + j + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (z >> 40) >= g.threshold ? (T)g.inv_keep : T(0);
}

// Scores of one tile from the raw products, as the reference rounds them: S = S * scale + mask, and
// -inf where causal hides key j > i. S(r, c) = S[r*sq + c*sk] for query i0 + r, key j0 + c; the
// scaling covers the whole buffer prefix S[0, n) (padding included, harmlessly); mrow0 points at
// the mask row of query i0.
template <typename T>
void finish_scores(T* S, i64 n, T scale, i64 sq, i64 sk, int nq, int nk, i64 i0, i64 j0, const T* mrow0,
                   const Geometry& g) {
    for (i64 x = 0; x < n; ++x) S[x] *= scale;  // its own pass: never fused into a later FMA
    if (mrow0)
        for (int r = 0; r < nq; ++r)
            for (int c = 0; c < nk; ++c) S[r * sq + c * sk] += mrow0[r * g.msq + j0 + c];
    if (g.causal && j0 + nk - 1 > i0)  // the tile reaches above the diagonal
        for (int r = 0; r < nq; ++r)
            for (i64 c = std::max<i64>(0, i0 + r - j0 + 1); c < nk; ++c) S[r * sq + c * sk] = ninf<T>();
}

template <typename T>
void forward(const T* q, const T* k, const T* v, const T* mask, const Geometry& g, T scale, T* out,
             T* lse) {
    typedef vec_t<T> V;
    const i64 ntq = (g.Nq + BQ - 1) / BQ, BH = g.B * g.H, D = g.D, Dv = g.Dv;
#pragma omp parallel
    {
        std::vector<T> Qt(D * BQ), S(BK * BQ), O(BQ * Dv), m(BQ), l(BQ);
#pragma omp for schedule(dynamic)
        for (i64 task = 0; task < BH * ntq; ++task) {
            const i64 bh = task % BH, i0 = (ntq - 1 - task / BH) * BQ;  // costliest (causal) first
            const int nq = (int)std::min<i64>(BQ, g.Nq - i0), nqv = round_up(nq, W<T>);
            const T* qt = q + (bh * g.Nq + i0) * D;
            const T* kb = k + g.kv(bh) * g.Nk * D;
            const T* vb = v + g.kv(bh) * g.Nk * Dv;
            const T* mrow0 = g.has_mask ? mask + (bh / g.H) * g.msb + (bh % g.H) * g.msh + i0 * g.msq : nullptr;
            // Qt = Q_tile^T; padding columns [nq, nqv) are 0, so padded scores stay finite
            for (i64 d = 0; d < D; ++d)
                for (int r = 0; r < nqv; ++r) Qt[d * BQ + r] = r < nq ? qt[r * D + d] : T(0);
            std::fill(O.begin(), O.end(), T(0));
            std::fill(m.begin(), m.end(), ninf<T>());
            std::fill(l.begin(), l.end(), T(0));
            // causal: key tiles wholly beyond the tile's last query are never visited
            const i64 kend = g.causal ? std::min<i64>(g.Nk, i0 + nq) : g.Nk;
            for (i64 j0 = 0; j0 < kend; j0 += BK) {
                const int nk = (int)std::min<i64>(BK, kend - j0);
                T* St = S.data();
                gemm<T>(nk, nqv, (int)D, kb + j0 * D, D, 1, Qt.data(), BQ, St, BQ, false);
                finish_scores(St, nk * BQ, scale, 1, BQ, nq, nk, i0, j0, mrow0, g);
                // online softmax, W queries at a time: new max, rescale factor, P = exp(S - max)
                for (int r = 0; r < nqv; r += W<T>) {
                    const V mold = vload(&m[r]);
                    V mx = mold;
                    for (int c = 0; c < nk; ++c) mx = vmax<T>(mx, vload(St + c * BQ + r));
                    const auto dead = mx == vsplat(ninf<T>());  // nothing visible yet: P = 0
                    const V ms = dead ? V{} : mx;
                    const V alpha = dead ? vsplat(T(1)) : vexp<T>(mold - mx);
                    V sum{};
                    for (int c = 0; c < nk; ++c) {
                        const V p = vexp<T>(vload(St + c * BQ + r) - ms);
                        vstore(St + c * BQ + r, p);
                        sum += p;
                    }
                    vstore(&l[r], vload(&l[r]) * alpha + sum);
                    vstore(&m[r], mx);
                    for (int rr = r; rr < std::min(r + W<T>, nq); ++rr)
                        if (alpha[rr - r] != T(1))
                            for (i64 d = 0; d < Dv; ++d) O[rr * Dv + d] *= alpha[rr - r];
                }
                if (g.threshold)  // dropout after the normaliser: l and lse stay those of P
                    for (int c = 0; c < nk; ++c)
                        for (int r = 0; r < nq; ++r) St[c * BQ + r] *= dropout_factor<T>(g, bh, i0 + r, j0 + c);
                gemm<T>(nq, (int)Dv, nk, St, 1, BQ, vb + j0 * Dv, Dv, O.data(), Dv, true);  // O += P V
            }
            for (int r = 0; r < nq; ++r) {
                const i64 row = bh * g.Nq + i0 + r;
                const T inv = l[r] > 0 ? T(1) / l[r] : T(0);  // fully masked row -> zeros
                for (i64 d = 0; d < Dv; ++d) out[row * Dv + d] = O[r * Dv + d] * inv;
                lse[row] = l[r] > 0 ? m[r] + std::log(l[r]) : ninf<T>();
            }
        }
    }
}

template <typename T> struct BwdScratch {
    std::vector<T> Kt, Vt, S, dP, dK, dV;
    BwdScratch(i64 D, i64 Dv)
        : Kt(D * BK), Vt(Dv * BK), S(BQ * BK), dP(BQ * BK), dK(BK * D), dV(BK * Dv) {}
};

// All the work of key tile [j0, j0+nk) of head bh: writes its dK and dV rows, adds into dQ
// (the head's Nq x D gradient, owned by the caller's thread).
template <typename T>
void backward_key_tile(i64 bh, i64 j0, const T* dout, const T* q, const T* k, const T* v, const T* lse,
                       const T* delta, const T* mask, const Geometry& g, T scale, T* dQ, T* dk, T* dv,
                       BwdScratch<T>& s) {
    typedef vec_t<T> V;
    const i64 D = g.D, Dv = g.Dv;
    const int nk = (int)std::min<i64>(BK, g.Nk - j0), nkv = round_up(nk, W<T>);
    const T* kt = k + (g.kv(bh) * g.Nk + j0) * D;
    const T* vt = v + (g.kv(bh) * g.Nk + j0) * Dv;
    // Kt = K_tile^T, Vt = V_tile^T; padding columns [nk, nkv) are 0
    for (i64 d = 0; d < D; ++d)
        for (int c = 0; c < nkv; ++c) s.Kt[d * BK + c] = c < nk ? kt[c * D + d] : T(0);
    for (i64 d = 0; d < Dv; ++d)
        for (int c = 0; c < nkv; ++c) s.Vt[d * BK + c] = c < nk ? vt[c * Dv + d] : T(0);
    std::fill(s.dK.begin(), s.dK.end(), T(0));
    std::fill(s.dV.begin(), s.dV.end(), T(0));
    T *S = s.S.data(), *dS = s.dP.data();
    const i64 istart = g.causal ? (j0 / BQ) * BQ : 0;  // causal: query tiles wholly above are skipped
    for (i64 i0 = istart; i0 < g.Nq; i0 += BQ) {
        const int nq = (int)std::min<i64>(BQ, g.Nq - i0);
        const T* qt = q + (bh * g.Nq + i0) * D;
        const T* dot = dout + (bh * g.Nq + i0) * Dv;
        const T* mrow0 = g.has_mask ? mask + (bh / g.H) * g.msb + (bh % g.H) * g.msh + i0 * g.msq : nullptr;
        gemm<T>(nq, nkv, (int)D, qt, D, 1, s.Kt.data(), BK, S, BK, false);     // S = Q K^T
        finish_scores(S, nq * BK, scale, BK, 1, nq, nk, i0, j0, mrow0, g);
        gemm<T>(nq, nkv, (int)Dv, dot, Dv, 1, s.Vt.data(), BK, dS, BK, false);  // dP = dO V^T
        for (int r = 0; r < nq; ++r) {  // P = exp(S - lse) in S, dS = P (dP - Delta) in dP
            const T L = lse[bh * g.Nq + i0 + r], Di = delta[bh * g.Nq + i0 + r];
            T *sr = S + r * BK, *dr = dS + r * BK;
            if (L == ninf<T>()) {  // fully masked row: no probability, no gradient
                std::fill(sr, sr + nkv, T(0));
                std::fill(dr, dr + nkv, T(0));
                continue;
            }
            if (g.threshold) {  // dropout: P Z in S for dV, dS = P (Z dP~ - Delta)
                for (int c = 0; c < nkv; c += W<T>) vstore(sr + c, vexp<T>(vload(sr + c) - L));
                for (int c = 0; c < nk; ++c) {
                    const T z = dropout_factor<T>(g, bh, i0 + r, j0 + c), p = sr[c];
                    dr[c] = p * (z * dr[c] - Di);
                    sr[c] = p * z;
                }
                continue;
            }
            for (int c = 0; c < nkv; c += W<T>) {
                const V p = vexp<T>(vload(sr + c) - L);
                vstore(sr + c, p);
                vstore(dr + c, p * (vload(dr + c) - Di));
            }
        }
        gemm<T>(nk, (int)Dv, nq, S, 1, BK, dot, Dv, s.dV.data(), Dv, true);  // dV += P^T dO
        gemm<T>(nk, (int)D, nq, dS, 1, BK, qt, D, s.dK.data(), D, true);     // dK += dS^T Q
        gemm<T>(nq, (int)D, nk, dS, BK, 1, kt, D, dQ + i0 * D, D, true);     // dQ += dS K
    }
    for (i64 x = 0; x < nk * D; ++x) dk[(bh * g.Nk + j0) * D + x] = s.dK[x] * scale;
    std::copy(s.dV.begin(), s.dV.begin() + nk * Dv, dv + (bh * g.Nk + j0) * Dv);
}

// Backward (flash-attention-2, Delta = rowsum(dO * O) from the driver). Threads split whole
// heads when that balances (each owns its heads' dQ); otherwise heads run one after another,
// threads split the key tiles and dQ is summed from per-thread copies (O(threads * N * D)).
template <typename T>
void backward(const T* dout, const T* q, const T* k, const T* v, const T* lse, const T* delta,
              const T* mask, const Geometry& g, T scale, T* dq, T* dk, T* dv) {
    const i64 BH = g.B * g.H, ntk = (g.Nk + BK - 1) / BK, QD = g.Nq * g.D;
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
#endif
    const bool by_head = nt == 1 || BH % nt == 0 || BH >= 4 * nt;
    std::vector<T> part(by_head ? 0 : nt * QD);
#pragma omp parallel num_threads(nt)
    {
        BwdScratch<T> s(g.D, g.Dv);
        if (by_head) {
#pragma omp for schedule(dynamic)
            for (i64 bh = 0; bh < BH; ++bh) {
                T* dQ = dq + bh * QD;
                std::fill(dQ, dQ + QD, T(0));
                for (i64 jt = 0; jt < ntk; ++jt)
                    backward_key_tile(bh, jt * BK, dout, q, k, v, lse, delta, mask, g, scale, dQ, dk, dv, s);
                for (i64 x = 0; x < QD; ++x) dQ[x] *= scale;
            }
        } else {
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            T* mine = part.data() + tid * QD;
            for (i64 bh = 0; bh < BH; ++bh) {
                std::fill(mine, mine + QD, T(0));
#pragma omp for schedule(dynamic)
                for (i64 jt = 0; jt < ntk; ++jt)  // ascending: the costliest (causal) first
                    backward_key_tile(bh, jt * BK, dout, q, k, v, lse, delta, mask, g, scale, mine, dk, dv, s);
#pragma omp for schedule(static)
                for (i64 x = 0; x < QD; ++x) {  // implicit barriers: no thread rezeroes early
                    T sum = 0;
                    for (int t = 0; t < nt; ++t) sum += part[t * QD + x];
                    dq[bh * QD + x] = sum * scale;
                }
            }
        }
    }
}

Geometry geometry(const py::buffer_info& q, const py::buffer_info& k, const py::buffer_info& v,
                  i64 msb, i64 msh, i64 msq, bool has_mask, bool causal, double dropout_p, i64 seed) {
    if (q.ndim != 4 || k.ndim != 4 || v.ndim != 4) throw std::invalid_argument("q, k, v must be 4-d");
    Geometry g{q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.shape[3], v.shape[3], k.shape[1],
               msb, msh, msq, has_mask, causal};
    if (k.shape[0] != g.B || g.Hk < 1 || g.H % g.Hk != 0 || k.shape[3] != g.D || v.shape[0] != g.B ||
        v.shape[1] != g.Hk || v.shape[2] != g.Nk)
        throw std::invalid_argument("attention: q, k, v shapes do not agree");
    if (!(dropout_p >= 0 && dropout_p < 1)) throw std::invalid_argument("attention: dropout_p must be in [0, 1)");
    g.seed = (std::uint64_t)seed;  // the driver passes the 64-bit seed as its two's-complement int64
    g.threshold = (std::uint64_t)(dropout_p * 16777216.0);  // exact: p * 2^24, truncated as the reference
    g.inv_keep = 1.0 / (1.0 - dropout_p);
    return g;
}

template <typename T>
void forward_py(arr<T> q, arr<T> k, arr<T> v, arr<T> mask, i64 msb, i64 msh, i64 msq, bool has_mask,
                bool causal, double scale, double dropout_p, i64 seed, arr<T> out, arr<T> lse) {
    Geometry g = geometry(q.request(), k.request(), v.request(), msb, msh, msq, has_mask, causal, dropout_p, seed);
    if (out.size() != g.B * g.H * g.Nq * g.Dv || lse.size() != g.B * g.H * g.Nq)
        throw std::invalid_argument("attention: out/lse have the wrong size");
    const T* mp = mask.data();
    T* op = out.mutable_data();
    T* lp = lse.mutable_data();
    py::gil_scoped_release release;
    forward<T>(q.data(), k.data(), v.data(), mp, g, (T)scale, op, lp);
}

template <typename T>
void backward_py(arr<T> dout, arr<T> q, arr<T> k, arr<T> v, arr<T> lse, arr<T> delta, arr<T> mask,
                 i64 msb, i64 msh, i64 msq, bool has_mask, bool causal, double scale, double dropout_p,
                 i64 seed, arr<T> dq, arr<T> dk, arr<T> dv) {
    Geometry g = geometry(q.request(), k.request(), v.request(), msb, msh, msq, has_mask, causal, dropout_p, seed);
    // dk, dv are per query head: (B, H, Nk, D) and (B, H, Nk, Dv)
    if (dout.size() != g.B * g.H * g.Nq * g.Dv || lse.size() != g.B * g.H * g.Nq ||
        delta.size() != lse.size() || dq.size() != q.size() || dk.size() != g.B * g.H * g.Nk * g.D ||
        dv.size() != g.B * g.H * g.Nk * g.Dv)
        throw std::invalid_argument("attention_backward: array sizes do not agree");
    T *a = dq.mutable_data(), *bk = dk.mutable_data(), *c = dv.mutable_data();
    py::gil_scoped_release release;
    backward<T>(dout.data(), q.data(), k.data(), v.data(), lse.data(), delta.data(), mask.data(), g,
                (T)scale, a, bk, c);
}

// Test hook: vexp over a 1-d array (the tail shorter than a vector goes through a padded copy).
template <typename T>
py::array_t<T> exp_py(arr<T> x) {
    py::array_t<T> y(x.size());
    const T* xp = x.data();
    T* yp = y.mutable_data();
    for (i64 i = 0; i < (i64)x.size(); i += W<T>) {
        T buf[W<T>] = {};
        const i64 n = std::min<i64>(W<T>, x.size() - i);
        std::copy(xp + i, xp + i + n, buf);
        vstore(buf, vexp<T>(vload(buf)));
        std::copy(buf, buf + n, yp + i);
    }
    return y;
}

}  // namespace

PYBIND11_MODULE(attention, m) {
    m.doc() = "Flash-style attention forward/backward (pyml._cpp.attention)";
    m.def("attention_forward", &forward_py<float>);
    m.def("attention_forward", &forward_py<double>);
    m.def("attention_backward", &backward_py<float>);
    m.def("attention_backward", &backward_py<double>);
    m.def("_exp", &exp_py<float>, "the kernel's vectorised exp (for tests)");
    m.def("_exp", &exp_py<double>);
}
