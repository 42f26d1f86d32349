// conv2d forward/backward and max/avg pooling forward/backward (conv_pool.hpp) on NCHW
// float/double arrays: the pybind11 module pyml._cpp.conv.
// conv2d methods (the driver picks one per call, see pyml/_conv_driver.py):
//  * stride 1: GEMMs on zero-padded row slabs (conv_slab.hpp), no unrolling buffer and no BLAS;
//    grad-input is the same forward applied to dY with the flipped, transposed kernel.
//  * other strides: unrolled windows (cols rows X[b, c, s*i-p+d*m, s*j-p+d*n], conv_unroll.hpp)
//    times the kernel matrix with BLAS ?gemm per image; a direct kernel for one input channel
//    per group.
// Fast by: one OpenMP region per call over images / row blocks / planes no other thread writes,
// a precomputed valid column range per tap so the inner `omp simd` loop is branch-free.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <vector>
#include <limits>
#include <stdexcept>
#include <string>

#include "conv_pool.hpp"
#include "conv_slab.hpp"
#include "conv_unroll.hpp"

namespace py = pybind11;
template <typename T>
using Arr = py::array_t<T, py::array::c_style | py::array::forcecast>;
using Idx = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

namespace {

using conv_unroll::col2im_plane;
using conv_unroll::im2col_plane;
using conv_unroll::valid_range;

// Small problems run on one thread: on a loaded 2-core machine a parallel region's barrier
// waits for a descheduled peer and costs 10-200x the work (measured: LeNet example 42 s with 2
// threads vs 2.5 s with 1 while 3 other jobs ran; the LeNet 5x5 forward of `pyml bench conv`,
// 5.5 M multiply-adds, 25 ms with 2 threads vs 0.11 ms with 1 at load average 12). The grain,
// 2^23 multiply-adds, is ~150 us of one core's work: below it a second thread saves at most
// tens of microseconds on a quiet machine and risks milliseconds on a busy one.
inline bool parallel_worth(long multiply_adds) { return multiply_adds > (1L << 23); }

void need(bool ok, const char *what) {
    if (!ok) throw std::invalid_argument(what);
}

// Computes conv2d forward / backward as per-image GEMMs on unrolled windows:
// Y[b] = K (O x C*KH*KW) @ cols[b], dK = sum_b dY[b] @ cols[b]^T, dcols[b] = K^T @ dY[b].
// Fast by: OpenMP over images, each thread unrolls into its own cache-resident buffer and calls
// single-threaded BLAS ?gemm (SciPy's, through the cython_blas function pointer the driver
// passes in), so one thread pool does all the work; no allocation inside the image loop.
// Fortran BLAS ?gemm as exported by scipy.linalg.cython_blas (LP64 int).
template <typename T>
using gemm_t = void (*)(const char *, const char *, const int *, const int *, const int *,
                        const T *, const T *, const int *, const T *, const int *, const T *, T *,
                        const int *);

// Row-major C (r x c) is column-major C^T, so C = A @ B becomes C^T = B^T @ A^T in BLAS terms.
// Sizes arrive as long; the callers prove them within LP64 BLAS's int (fits_blas) before the
// parallel region, so the narrowing here never wraps.
template <typename T>
inline void gemm_rm(gemm_t<T> gemm, bool ta, bool tb, long M, long N, long K, const T *A, long lda,
                    const T *B, long ldb, T beta, T *C, long ldc) {
    const T one = T(1);
    const char *nb = tb ? "T" : "N", *na = ta ? "T" : "N";
    const int m = int(M), n = int(N), k = int(K), la = int(lda), lb = int(ldb), lc = int(ldc);
    gemm(nb, na, &n, &m, &k, &one, B, &lb, A, &la, &beta, C, &lc);
}

// Every GEMM of the unroll path has dimensions and leading dimensions among Og, Kg, P (and
// their products stay in long pointer arithmetic); SciPy's BLAS takes 32-bit ints.
inline void fits_blas(long Og, long Kg, long P, const char *who) {
    const long big = std::max({Og, Kg, P});
    if (big > long(std::numeric_limits<int>::max()))
        throw std::invalid_argument(std::string(who) + ": a GEMM dimension of " +
                                    std::to_string(big) + " exceeds the 32-bit BLAS limit "
                                    "2147483647; split the batch or the channels");
}

struct Geo {
    long KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, groups;
    bool pointwise() const {
        return KH == 1 && KW == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
    }
};

template <typename T>
void conv_forward_gemm(Arr<T> x, Arr<T> w, Arr<T> bias, bool has_bias, Arr<T> y, long KH, long KW,
                       long sh, long sw, long ph, long pw, long dh, long dw, long groups,
                       uintptr_t gemm_ptr) {
    need(x.ndim() == 4 && w.ndim() == 4 && y.ndim() == 4, "conv_forward_gemm: 4-D arrays expected");
    const long B = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3), O = w.shape(0);
    const Geo g{KH, KW, sh, sw, ph, pw, dh, dw, y.shape(2), y.shape(3), groups};
    const long P = g.OH * g.OW, Cg = C / groups, Og = O / groups, Kg = Cg * KH * KW;
    need(y.shape(0) == B && y.shape(1) == O && w.shape(1) == Cg && w.shape(2) == KH &&
             w.shape(3) == KW && (!has_bias || bias.size() == O),
         "conv_forward_gemm: shape mismatch");
    fits_blas(Og, Kg, P, "conv_forward_gemm");
    const bool pointwise = g.pointwise() && dh == 1 && dw == 1;
    const T *px = x.data(), *pw_ = w.data(), *pb = bias.data();
    T *py = y.mutable_data();
    auto gemm = reinterpret_cast<gemm_t<T>>(gemm_ptr);
    py::gil_scoped_release nogil;
#pragma omp parallel if (parallel_worth(B * O * P * Kg))
    {
        std::vector<T> cols(pointwise ? 0 : C * KH * KW * P);  // per thread, reused per image
#pragma omp for schedule(dynamic, 1)
        for (long b = 0; b < B; ++b) {
            const T *cb = px + b * C * H * W;
            if (!pointwise) {
                for (long c = 0; c < C; ++c)
                    im2col_plane(cb + c * H * W, cols.data() + c * KH * KW * P, H, W, KH, KW, sh,
                                 sw, ph, pw, dh, dw, g.OH, g.OW);
                cb = cols.data();
            }
            T *yb = py + b * O * P;
            for (long q = 0; q < groups; ++q)
                gemm_rm<T>(gemm, false, false, Og, P, Kg, pw_ + q * Og * Kg, Kg, cb + q * Kg * P,
                           P, T(0), yb + q * Og * P, P);
            if (has_bias)
                for (long o = 0; o < O; ++o) {
                    const T bo = pb[o];
#pragma omp simd
                    for (long p = 0; p < P; ++p) yb[o * P + p] += bo;
                }
        }
    }
}

template <typename T>
void conv_backward_gemm(Arr<T> gy, Arr<T> x, Arr<T> w, Arr<T> dx, bool need_dx, Arr<T> dwt,
                        bool need_dw, long KH, long KW, long sh, long sw, long ph, long pw,
                        long dh, long dw, long groups, uintptr_t gemm_ptr) {
    need(gy.ndim() == 4 && x.ndim() == 4 && w.ndim() == 4, "conv_backward_gemm: 4-D arrays expected");
    const long B = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3), O = w.shape(0);
    const Geo g{KH, KW, sh, sw, ph, pw, dh, dw, gy.shape(2), gy.shape(3), groups};
    const long P = g.OH * g.OW, Cg = C / groups, Og = O / groups, Kg = Cg * KH * KW;
    need(gy.shape(0) == B && gy.shape(1) == O && w.shape(1) == Cg, "conv_backward_gemm: shapes");
    need(!need_dx || dx.size() == x.size(), "conv_backward_gemm: dx shape");
    need(!need_dw || dwt.size() == w.size(), "conv_backward_gemm: dw shape");
    fits_blas(Og, Kg, P, "conv_backward_gemm");
    const bool pointwise = g.pointwise() && dh == 1 && dw == 1;
    const T *pg = gy.data(), *px = x.data(), *pwt = w.data();
    T *pdx = need_dx ? dx.mutable_data() : nullptr;
    T *pdw = need_dw ? dwt.mutable_data() : nullptr;
    auto gemm = reinterpret_cast<gemm_t<T>>(gemm_ptr);
    py::gil_scoped_release nogil;
    if (pdw) std::fill(pdw, pdw + O * Kg, T(0));
#pragma omp parallel if (parallel_worth(B * O * P * Kg))
    {
        std::vector<T> cols(need_dw && !pointwise ? C * KH * KW * P : 0);
        std::vector<T> dcols(need_dx && !pointwise ? C * KH * KW * P : 0);
        std::vector<T> dw_t(need_dw ? O * Kg : 0, T(0));  // private sum, reduced at the end
#pragma omp for schedule(dynamic, 1)
        for (long b = 0; b < B; ++b) {
            const T *gb = pg + b * O * P;
            if (need_dw) {
                const T *cb = px + b * C * H * W;
                if (!pointwise) {
                    for (long c = 0; c < C; ++c)
                        im2col_plane(cb + c * H * W, cols.data() + c * KH * KW * P, H, W, KH, KW,
                                     sh, sw, ph, pw, dh, dw, g.OH, g.OW);
                    cb = cols.data();
                }
                for (long q = 0; q < groups; ++q)  // dK_q += dY_q (Og x P) @ cols_q^T (P x Kg)
                    gemm_rm<T>(gemm, false, true, Og, Kg, P, gb + q * Og * P, P, cb + q * Kg * P,
                               P, T(1), dw_t.data() + q * Og * Kg, Kg);
            }
            if (need_dx) {
                T *db = pointwise ? pdx + b * C * H * W : dcols.data();
                for (long q = 0; q < groups; ++q)  // dcols_q = K_q^T (Kg x Og) @ dY_q (Og x P)
                    gemm_rm<T>(gemm, true, false, Kg, P, Og, pwt + q * Og * Kg, Kg,
                               gb + q * Og * P, P, T(0), db + q * Kg * P, P);
                if (!pointwise)
                    for (long c = 0; c < C; ++c)
                        col2im_plane(dcols.data() + c * KH * KW * P, pdx + (b * C + c) * H * W, H,
                                     W, KH, KW, sh, sw, ph, pw, dh, dw, g.OH, g.OW);
            }
        }
        if (need_dw) {
#pragma omp critical
            for (long k = 0; k < O * Kg; ++k) pdw[k] += dw_t[k];
        }
    }
}

// Direct convolution for few channels per group (LeNet's 1->6, depthwise): per (image, output
// channel) plane, y row += k[o,c,m,n] * shifted x row, vectorised along the output row; no
// unrolling buffer and no GEMM call, whose fixed costs dominate at these sizes.
template <typename T>
void conv_forward_direct(Arr<T> x, Arr<T> w, Arr<T> bias, bool has_bias, Arr<T> y, long sh, long sw,
                         long ph, long pw, long dh, long dw, long groups) {
    need(x.ndim() == 4 && w.ndim() == 4 && y.ndim() == 4, "conv_forward_direct: 4-D arrays expected");
    const long B = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3), O = w.shape(0);
    const long KH = w.shape(2), KW = w.shape(3), OH = y.shape(2), OW = y.shape(3);
    const long Cg = C / groups, Og = O / groups;
    need(y.shape(0) == B && y.shape(1) == O && w.shape(1) == Cg && (!has_bias || bias.size() == O),
         "conv_forward_direct: shape mismatch");
    const T *px = x.data(), *pk = w.data(), *pb = bias.data();
    T *py = y.mutable_data();
    py::gil_scoped_release nogil;
#pragma omp parallel for schedule(static) if (parallel_worth(B * O * OH * OW * Cg * KH * KW))
    for (long bo = 0; bo < B * O; ++bo) {
        const long b = bo / O, o = bo % O, q = o / Og;
        T *out = py + bo * OH * OW;
        std::fill(out, out + OH * OW, has_bias ? pb[o] : T(0));
        for (long c = 0; c < Cg; ++c) {
            const T *plane = px + (b * C + q * Cg + c) * H * W;
            for (long m = 0; m < KH; ++m)
                for (long n = 0; n < KW; ++n) {
                    const T k = pk[((o * Cg + c) * KH + m) * KW + n];
                    const long xo = dw * n - pw;
                    long j0, j1;
                    valid_range(sw, xo, W, OW, j0, j1);
                    for (long i = 0; i < OH; ++i) {
                        const long yy = sh * i - ph + dh * m;
                        if (yy < 0 || yy >= H) continue;
                        const T *src = plane + yy * W + xo;
                        T *r = out + i * OW;
#pragma omp simd
                        for (long j = j0; j < j1; ++j) r[j] += k * src[sw * j];
                    }
                }
        }
    }
}

// Stride-1 convolution on padded row slabs (conv_slab.hpp): forward, and backward as
// grad-input = forward of dY with the flipped, transposed kernel (padding dh*(KH-1) - ph >= 0)
// plus grad-weight by per-thread slab GEMMs (grad-bias: the driver's NumPy sum).
template <typename T>
conv_slab::Geo slab_geo(const py::array& x, const py::array& w, const py::array& y, long ph,
                        long pw, long dh, long dw, long groups) {
    need(x.ndim() == 4 && w.ndim() == 4 && y.ndim() == 4, "conv slab: 4-D arrays expected");
    const conv_slab::Geo g{x.shape(0), x.shape(1), x.shape(2), x.shape(3), w.shape(0), w.shape(2),
                           w.shape(3), ph, pw, dh, dw, groups, y.shape(2), y.shape(3)};
    need(groups >= 1 && g.C % groups == 0 && g.O % groups == 0 && w.shape(1) == g.Cg() &&
             y.shape(0) == g.B && y.shape(1) == g.O && ph >= 0 && pw >= 0 && dh >= 1 && dw >= 1 &&
             g.OH == g.H + 2 * ph - dh * (g.KH - 1) && g.OW == g.W + 2 * pw - dw * (g.KW - 1) &&
             g.OH >= 1 && g.OW >= 1,
         "conv slab: shape mismatch");
    return g;
}

// Returns whether every element of x is finite (the slab copies check it on the way, so the
// driver needs no separate read pass over x; see conv_slab::fill_slab).
template <typename T>
bool conv_forward_slab(Arr<T> x, Arr<T> w, Arr<T> bias, bool has_bias, Arr<T> y, long ph, long pw,
                       long dh, long dw, long groups) {
    const conv_slab::Geo g = slab_geo<T>(x, w, y, ph, pw, dh, dw, groups);
    need(!has_bias || bias.size() == g.O, "conv_forward_slab: bias shape");
    const T *px = x.data(), *pk = w.data(), *pb = has_bias ? bias.data() : nullptr;
    T *py = y.mutable_data();
    py::gil_scoped_release nogil;
    return conv_slab::forward(g, px, pk, pb, py, parallel_worth(g.B * g.O * g.OH * g.OW * g.K()));
}

template <typename T>
void conv_backward_slab(Arr<T> gy, Arr<T> x, Arr<T> w, Arr<T> dx, bool need_dx, Arr<T> dwt,
                        bool need_dw, long ph, long pw, long dh, long dw, long groups) {
    const conv_slab::Geo g = slab_geo<T>(x, w, gy, ph, pw, dh, dw, groups);
    const conv_slab::Geo gt{g.B, g.O, g.OH, g.OW, g.C, g.KH, g.KW, dh * (g.KH - 1) - ph,
                            dw * (g.KW - 1) - pw, dh, dw, groups, g.H, g.W};
    need(!need_dx || (dx.ndim() == 4 && dx.shape(0) == g.B && dx.shape(1) == g.C &&
                      dx.shape(2) == g.H && dx.shape(3) == g.W && gt.ph >= 0 && gt.pw >= 0),
         "conv_backward_slab: dx shape or padding");
    need(!need_dw || dwt.size() == w.size(), "conv_backward_slab: dw shape");
    const T *pg = gy.data(), *px = x.data(), *pk = w.data();
    T *pdx = need_dx ? dx.mutable_data() : nullptr, *pdw = need_dw ? dwt.mutable_data() : nullptr;
    py::gil_scoped_release nogil;
    const bool par = parallel_worth(g.B * g.O * g.OH * g.OW * g.K());
    if (pdx) {
        const std::vector<T> wf = conv_slab::flipped_transposed(g, pk);
        conv_slab::forward(gt, pg, wf.data(), static_cast<const T *>(nullptr), pdx, par);
    }
    if (pdw) conv_slab::grad_weight(g, px, pg, pdw, par);
}

// Pooling (conv_pool.hpp): the output planes' shape comes from z / dz, so ceil_mode is only
// the API layer's output size; divisor 0 means "no divisor_override".
template <typename T>
conv_pool::Plane pool_plane(const py::array &x, const py::array &z, long KH, long KW, long sh,
                            long sw, long ph, long pw, const char *who) {
    need(x.ndim() == 4 && z.ndim() == 4 && z.shape(0) == x.shape(0) && z.shape(1) == x.shape(1) &&
             KH >= 1 && KW >= 1 && sh >= 1 && sw >= 1 && ph >= 0 && pw >= 0,
         who);
    return {x.shape(0) * x.shape(1), x.shape(2), x.shape(3), z.shape(2), z.shape(3), KH, KW,
            sh, sw, ph, pw};
}

template <typename T>
void max_pool2d(Arr<T> x, Arr<T> z, Idx idx, long KH, long KW, long sh, long sw, long ph,
                long pw, long dh, long dw) {
    const auto g = pool_plane<T>(x, z, KH, KW, sh, sw, ph, pw, "max_pool2d: shape mismatch");
    need(idx.size() == z.size() && dh >= 1 && dw >= 1, "max_pool2d: indices or dilation");
    const T *px = x.data();
    T *pz = z.mutable_data();
    int64_t *pi = idx.mutable_data();
    py::gil_scoped_release nogil;
    conv_pool::max_forward(g, dh, dw, px, pz, pi, parallel_worth(g.BC * g.OH * g.OW * KH * KW));
}

template <typename T>
void max_pool2d_backward(Arr<T> dz, Idx idx, Arr<T> dx) {
    need(dz.ndim() == 4 && dx.ndim() == 4 && idx.size() == dz.size() &&
             dz.shape(0) * dz.shape(1) == dx.shape(0) * dx.shape(1),
         "max_pool2d_backward: shapes");
    const long BC = dx.shape(0) * dx.shape(1), HW = dx.shape(2) * dx.shape(3);
    const long P = dz.shape(2) * dz.shape(3);
    const T *pg = dz.data();
    const int64_t *pi = idx.data();
    T *pd = dx.mutable_data();
    py::gil_scoped_release nogil;
    conv_pool::max_backward(BC, HW, P, pg, pi, pd, parallel_worth(BC * P));
}

template <typename T>
void avg_pool2d(Arr<T> x, Arr<T> z, long KH, long KW, long sh, long sw, long ph, long pw,
                bool count_include_pad, long divisor) {
    const auto g = pool_plane<T>(x, z, KH, KW, sh, sw, ph, pw, "avg_pool2d: shape mismatch");
    const T *px = x.data();
    T *pz = z.mutable_data();
    py::gil_scoped_release nogil;
    conv_pool::avg_forward(g, {count_include_pad, divisor}, px, pz,
                           parallel_worth(g.BC * g.OH * g.OW * KH * KW));
}

template <typename T>
void avg_pool2d_backward(Arr<T> dz, Arr<T> dx, long KH, long KW, long sh, long sw, long ph,
                         long pw, bool count_include_pad, long divisor) {
    const auto g = pool_plane<T>(dx, dz, KH, KW, sh, sw, ph, pw,
                                 "avg_pool2d_backward: shape mismatch");
    const T *pg = dz.data();
    T *pd = dx.mutable_data();
    py::gil_scoped_release nogil;
    conv_pool::avg_backward(g, {count_include_pad, divisor}, pg, pd,
                            parallel_worth(g.BC * g.OH * g.OW * KH * KW));
}

template <typename T>
void bind(py::module_ &m) {
    m.def("max_pool2d", &max_pool2d<T>);
    m.def("max_pool2d_backward", &max_pool2d_backward<T>);
    m.def("avg_pool2d", &avg_pool2d<T>);
    m.def("avg_pool2d_backward", &avg_pool2d_backward<T>);
    m.def("conv_forward_gemm", &conv_forward_gemm<T>);
    m.def("conv_forward_direct", &conv_forward_direct<T>);
    m.def("conv_backward_gemm", &conv_backward_gemm<T>);
    m.def("conv_forward_slab", &conv_forward_slab<T>);
    m.def("conv_backward_slab", &conv_backward_slab<T>);
}

}  // namespace

PYBIND11_MODULE(conv, m) {
    m.doc() = "fused unroll+GEMM conv2d and pooling kernels for pyml.conv (float32 and float64 overloads)";
    // pybind11's first overload pass does not convert, so each dtype reaches its own
    // instantiation; the driver always passes outputs of the input dtype (never a temporary).
    bind<float>(m);
    bind<double>(m);
}
