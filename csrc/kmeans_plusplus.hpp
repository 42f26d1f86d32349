// Greedy k-means++ seeding, every step in one call (Arthur & Vassilvitskii 2007; the greedy
// variant of scikit-learn): candidates drawn with probability w D2 / sum w D2, the winner being
// the candidate of lowest potential phi_q = sum_j w_j min(D2_j, ||x_j - x_q||^2).
// Fast: one pass over X per step. The previous winner rides in lane 0 of the candidate panel,
// so D2 is brought up to date by the pass that scores the next candidates (no update pass);
// phi = sum w D2 - sum w max(0, D2 - dist) per sub-block of SUB rows, and those parts are the
// cumulative weights the next draws walk (no cumsum over n, no Python, no arrays per step).
// Screening (kmeans_screen.hpp): a rounding-safe bound settles most pairs as "no closer than
// D2"; only rows with an unsettled pair take distances, exactly as without it.
// Included by kmeans.cpp only.
#pragma once

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "kmeans_fused.hpp"
#include "kmeans_screen.hpp"
#include "kmeans_seed.hpp"

namespace kmpp {

template <typename T>
struct PlusPlus {
    using V = typename kmfused::VecOf<T>::type;
    using VD = typename kmseed::DoublesOf<T>::type;
    static constexpr int W = kmfused::VBYTES / (int)sizeof(T);  // slots per panel (lanes)
    static constexpr int R = 8;          // rows per micro-step: independent FMA chains
    static constexpr int64_t SUB = 64;   // rows per partial sum (fixed: same bits for any threads)

    const T* x;
    const double* w;
    int64_t n, d, ns;
    bool parallel;
    std::vector<double> D2;     // min over the centres applied so far (the last winner: lazily)
    std::vector<double> wsub;   // per sub-block sum of w (the draw when every w D2 is 0)
    std::vector<int64_t> slot;  // row of each slot: 0 = previous winner, 1.. = candidates
    std::vector<V> panel;       // np x d: the slots' values side by side (padding repeats the last)
    std::vector<V> single;      // d: one row in every lane (the draws' distances)
    std::vector<VD> part;       // ns x np: per sub-block and slot, sum of w max(0, D2 - dist)
    std::vector<double> wsd;    // ns: per sub-block, sum of w D2 (after the pass's D2 update)
    int64_t m = 0, np = 0, first_pos = 0;
    std::optional<kmscreen::Rows<T>> rows_;    // the screen (kmeans_screen.hpp) when screening:
    std::optional<kmscreen::Lanes<T>> lanes_;  // one of the two
    int64_t deferred = 0;       // rows the last screened pass had to compute

    PlusPlus(const T* x_, const double* w_, int64_t n_, int64_t d_, bool par)
        : x(x_), w(w_), n(n_), d(d_), ns((n_ + SUB - 1) / SUB), parallel(par),
          D2(n_, std::numeric_limits<double>::infinity()), wsub(ns), single(d_), wsd(ns) {
        for (int64_t b = 0; b < ns; ++b) {
            double s = 0;
            for (int64_t j = b * SUB; j < std::min(n, (b + 1) * SUB); ++j)
                if (w[j] > 0.0) s += w[j];
            wsub[b] = s;
        }
        while (first_pos < n - 1 && !(w[first_pos] > 0.0)) ++first_pos;
    }

    // w_j D2_j as a product of two factors that are 0 for a row without weight (0 * inf is NaN),
    // so that red's sum of w_j gap_j, where every gap is D2, repeats it operation for operation
    double wd2(int64_t j) const {
        const bool pos = w[j] > 0.0;
        return (pos ? w[j] : 0.0) * (pos ? D2[j] : 0.0);
    }

    // the slots of panel p a pass scores: the candidates, and lane 0 only as the previous winner
    uint32_t need(int64_t p, bool lead) const {
        const uint32_t valid = (uint32_t)((1ull << std::min<int64_t>(W, m - p * W)) - 1);
        return p == 0 ? (valid & ~1u) | (lead ? 1u : 0u) : valid;
    }

    void set_D2(int64_t j, double v) {
        D2[j] = v;
        if (rows_) rows_->bound(j, v);
        if (lanes_) lanes_->bound(j, v);
    }

    // s[r] = ||x_r - c_lane||^2 for rows xr[0..R) against a panel: the same operations in every
    // lane, so a slot's distance has the same bits whichever lane and panel it sits in
    void dists(const V* c, const T* const* xr, V* s) const {
        for (int r = 0; r < R; ++r) s[r] = V{};
        for (int64_t t = 0; t < d; ++t) {
            const V ct = c[t];
            for (int r = 0; r < R; ++r) {
                const V df = xr[r][t] - ct;
                s[r] += df * df;
            }
        }
    }
    void rows_at(int64_t j0, int rows, const T** xr) const {
        for (int r = 0; r < R; ++r) xr[r] = x + (j0 + std::min(r, rows - 1)) * d;  // no read past n
    }

    void load(int64_t prev, const int64_t* cand, int64_t nc) {
        m = nc + 1;
        np = (m + W - 1) / W;
        slot.assign(m, 0);
        slot[0] = prev >= 0 ? prev : cand[0];  // no previous winner: lane 0 is a dummy
        for (int64_t q = 0; q < nc; ++q) slot[q + 1] = cand[q];
        panel.assign((size_t)np * d, V{});
        for (int64_t p = 0; p < np; ++p)
            for (int l = 0; l < W; ++l) {
                const int64_t q = std::min<int64_t>(p * W + l, m - 1);
                for (int64_t t = 0; t < d; ++t) panel[(size_t)p * d + t][l] = x[slot[q] * d + t];
            }
        if (rows_) rows_->load(slot.data(), m);
        if (lanes_) lanes_->load(slot.data(), m);
        part.assign((size_t)ns * np, VD{});
    }

    // One step: D2 = min(D2, dist to prev) (prev >= 0) and, per sub-block, wsd = sum w D2 and per
    // slot red = sum w max(0, D2 - dist): phi's sub-block part is wsd - red. A row no slot brings
    // closer adds exact zeros to red, so screen (rows whose every pair the bound settles skip
    // their distances; the others get them as the unscreened pass does, in groups of R) gives
    // the same bits as computing every distance. Call without the GIL.
    void pass(int64_t prev, const int64_t* cand, int64_t nc, bool screen) {
        load(prev, cand, nc);
        if (screen && rows_)
            for (int64_t p = 0; p < np; ++p) rows_->plan(p, need(p, p == 0 && prev >= 0), W);
        int64_t late = 0;
#pragma omp parallel for schedule(dynamic, 8) if (parallel) reduction(+ : late)
        for (int64_t b = 0; b < ns; ++b) {
            const int64_t a = b * SUB, e = std::min(n, a + SUB);
            int64_t defer[SUB];
            for (int64_t p = 0; p < np; ++p) {
                const V* c = panel.data() + (size_t)p * d;
                const bool lead = p == 0 && prev >= 0;
                int nd = 0;
                if (screen) {
                    nd = lanes_ ? lanes_->rows(a, e, p, c, need(p, lead), defer)
                                : rows_->rows(a, e, p, defer);
                } else {
                    for (int64_t j = a; j < e; ++j) defer[nd++] = j;
                }
                late += nd;
                VD red[8];  // row j into red[j % 8], summed pairwise: a fixed order for any threads
                for (auto& r : red) r = VD{};
                for (int i0 = 0; i0 < nd; i0 += R) {
                    const int rows = std::min(R, nd - i0);
                    const T* xr[R];
                    for (int r = 0; r < R; ++r) xr[r] = x + defer[i0 + std::min(r, rows - 1)] * d;
                    V s[R];
                    dists(c, xr, s);
                    for (int r = 0; r < rows; ++r) {
                        const int64_t j = defer[i0 + r];
                        if (lead) {
                            const double s0 = (double)s[r][0];
                            if (s0 < D2[j]) set_D2(j, s0);
                        }
                        if (!(w[j] > 0.0)) continue;  // no weight: adds nothing (and 0 * inf is NaN)
                        const VD gap = (VD{} + D2[j]) - __builtin_convertvector(s[r], VD);
                        red[j & 7] += w[j] * (gap > 0 ? gap : VD{});
                    }
                }
                part[(size_t)b * np + p] =
                    ((red[0] + red[1]) + (red[2] + red[3])) + ((red[4] + red[5]) + (red[6] + red[7]));
            }
            // after the lead update: sum w D2 of the sub-block in red's order and with its
            // operations (wd2), so that where every row's gap is its D2 (all D2' = 0: the draw
            // falls back to weights) the difference is exactly 0
            double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            int64_t j = a;
            for (; j + 8 <= e; j += 8)
                for (int l = 0; l < 8; ++l) acc[l] += wd2(j + l);
            for (int l = 0; j + l < e; ++l) acc[l] += wd2(j + l);
            wsd[b] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        }
        deferred = late;
    }

    // phi's part of sub-block b for slot q (>= 0: rounding never makes a probability negative)
    double column(int64_t b, int64_t q) const {
        const double v = wsd[b] - part[(size_t)b * np + q / W][q % W];
        return v > 0 ? v : 0.0;
    }
    double potential(int64_t q) const {  // phi of slot q: its sub-block parts in order
        double s = 0;
        for (int64_t b = 0; b < ns; ++b) s += column(b, q);
        return s;
    }

    // cnt rows drawn with probability w D2' / sum w D2', D2' = min(D2, dist to `pending`) (slot
    // q's column holds its sub-block sums), or w / sum w when by_weight or sum w D2' = 0: the
    // first row whose running sum (sub-block parts, then the rows of one sub-block) exceeds
    // u * total. A row of zero probability is never drawn.
    void draw(const double* u, int64_t cnt, int64_t q, int64_t pending, bool by_weight, int64_t* out) {
        double total = by_weight ? 0.0 : potential(q);
        if (!(total > 0)) {
            by_weight = true;
            total = 0;
            for (int64_t b = 0; b < ns; ++b) total += wsub[b];
        }
        if (!by_weight && pending >= 0)
            for (int64_t t = 0; t < d; ++t) single[t] = V{} + x[pending * d + t];
        for (int64_t i = 0; i < cnt; ++i) {
            const double t = u[i] * total;
            double P = 0;
            int64_t b = 0, last = -1;
            for (; b < ns; ++b) {
                const double S = by_weight ? wsub[b] : column(b, q);
                if (S > 0) last = b;
                if (P + S > t) break;
                P += S;
            }
            if (b == ns) b = last;  // u * total rounded up to the total
            const int64_t a = b * SUB, e = std::min(n, a + SUB);
            double v[SUB];
            for (int64_t j = a; j < e; ++j) v[j - a] = D2[j];
            if (!by_weight && pending >= 0)
                for (int64_t j0 = a; j0 < e; j0 += R) {
                    const int rows = (int)std::min<int64_t>(R, e - j0);
                    const T* xr[R];
                    rows_at(j0, rows, xr);
                    V s[R];
                    dists(single.data(), xr, s);
                    for (int r = 0; r < rows; ++r) {
                        const double s0 = (double)s[r][0];
                        double& vj = v[j0 + r - a];
                        vj = s0 < vj ? s0 : vj;
                    }
                }
            double acc = 0;
            int64_t pick = -1;
            for (int64_t j = a; j < e; ++j) {
                if (!(w[j] > 0.0)) continue;
                if (by_weight) {
                    acc += w[j];
                } else {
                    if (!(v[j - a] > 0)) continue;
                    acc += w[j] * v[j - a];
                }
                pick = j;
                if (P + acc > t) break;
            }
            out[i] = pick >= 0 ? pick : first_pos;  // the last positive row if rounding missed t
        }
    }

    // The whole seeding: idx[0..k) and pot[c], the potential once centre c is added. fetch(c)
    // returns the next c uniforms in [0, 1) (1 for the first centre, then trials per step).
    template <typename Fetch>
    void run(int64_t k, int64_t trials, bool screen, Fetch&& fetch, int64_t* idx, double* pot) {
        // the screen with fewer FMAs per row: Rows does (trials + 1) / WF, Lanes ceil((trials + 1) / W)
        if (screen && (double)(trials + 1) / kmscreen::WF < (double)((trials + W) / W))
            rows_.emplace(x, n, d, parallel);
        else if (screen)
            lanes_.emplace(x, n, d, parallel);
        draw(fetch(1), 1, 0, -1, true, idx);
        pass(idx[0], nullptr, 0, false);
        pot[0] = potential(0);
        std::vector<int64_t> cand(trials);
        int64_t col = 0, pending = -1, resume = 2, npar = 0, nser = 0;
        double tpar = 0, tser = 0;
        const bool threaded = parallel;
        for (int64_t c = 1; c < k; ++c) {
            draw(fetch(trials), trials, col, pending, false, cand.data());
            // screening pays once the bound settles most rows; while it does not (the first
            // steps, D2 still large), run some steps unscreened
            const bool scr = screen && c >= resume;
            // threads or not: a step is a few ms, and when other processes hold the cores the
            // team's barrier can cost more than it saves; time both every 32 steps (the bits
            // do not depend on it), keep the faster
            const int64_t phase = c % 32;
            if (threaded) parallel = phase < 4 ? phase % 2 == 0 : tpar * nser <= tser * npar;
            const auto t0 = std::chrono::steady_clock::now();
            pass(pending, cand.data(), trials, scr);
            const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (phase == 0) tpar = tser = 0, npar = nser = 0;
            (parallel ? tpar : tser) += dt;
            ++(parallel ? npar : nser);
            if (scr && deferred * 4 > n * np) resume = c + 8;
            int64_t best = 1;
            double bp = potential(1);
            for (int64_t q = 2; q <= trials; ++q) {
                const double p = potential(q);
                if (p < bp) { bp = p; best = q; }
            }
            idx[c] = cand[best - 1];
            col = best;
            pending = idx[c];
            pot[c] = bp;
        }
    }
};

}  // namespace kmpp
