// k-means / k-medians kernels: argmin_i ||x-mu_i||^2 = argmin_i (||mu_i-m||^2 - 2 (x-m).(mu_i-m)) (m = mean of the
// centres, against cancellation), argmin_i ||x-m_i||_1, weighted centre sums, coordinate medians, greedy k-means++ steps and the whole seeding.
// Fast: a fused register-blocked kernel (kmeans_fused.hpp) or per-thread SciPy-BLAS sgemm/dgemm on cache-sized
// tiles + an argmin pass, chosen by shape (use_fused). Sizes are 64-bit throughout.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kmeans_fused.hpp"
#include "kmeans_plusplus.hpp"
#include "kmeans_seed.hpp"
#include "kmeans_update.hpp"

namespace py = pybind11;
template <typename T>
using Arr = py::array_t<T, py::array::c_style | py::array::forcecast>;

namespace {

// Fortran BLAS gemm of SciPy's BLAS (the one behind scipy.linalg.cython_blas; no link-time BLAS
// dependency), found by pyml._blas.gemm_pointer, which opens that library without importing
// scipy.linalg (~0.15 s of a first call otherwise).
template <typename T>
using gemm_t = void (*)(const char*, const char*, const int*, const int*, const int*, const T*,
                        const T*, const int*, const T*, const int*, const T*, T*, const int*);

template <typename T>
gemm_t<T> blas_gemm() {
    static gemm_t<T> fn = nullptr;  // looked up once, with the GIL held
    if (!fn) {
        py::object addr = py::module_::import("pyml._blas").attr("gemm_pointer")(
            std::is_same<T, float>::value ? "float32" : "float64");
        const auto p = addr.cast<std::uintptr_t>();
        if (!p) throw std::runtime_error("kmeans_assign: no BLAS gemm found");
        fn = reinterpret_cast<gemm_t<T>>(p);
    }
    return fn;
}


void check_2d(const py::buffer_info& X, const py::buffer_info& C) {
    if (X.ndim != 2 || C.ndim != 2 || X.shape[1] != C.shape[1] || X.shape[0] < 1 || C.shape[0] < 1 || X.shape[1] < 1)
        throw std::invalid_argument("kmeans kernel: X (n, d) and C (k, d) with n, k, d >= 1 expected");
    if (C.shape[0] > std::numeric_limits<int32_t>::max())
        throw std::invalid_argument("kmeans kernel: more than 2^31 - 1 centres (labels are int32)");
}

constexpr int64_t INT_LIMIT = std::numeric_limits<int>::max();

// Shape rule between the two assignment paths, from fused/BLAS time ratios measured side by
// side on Zen 5 (AVX-512, 1 and 2 threads, float32 and float64, d = 1..2048, k = 1..2048):
// the fused kernel is 1.5-3x faster from k = 12 up at every d (d = 2048 included: it streams
// its panels from L2 and still wins 1.6-2x, so large d needs no BLAS fallback); below that
// both paths are bound by per-row work (the fused kernel pads k to a full panel of 32/16
// centres and reduces across lanes once per row) and the BLAS tile path wins by 1.1-3x for
// k <= 4, and for k <= 8 when d <= 16. Labels travel as T lanes in the fused kernel, exact
// below 2^24 centres.
// The BLAS path passes d to Fortran as an int: above INT_MAX only the fused kernel is usable.
bool use_fused(int64_t k, int64_t d) {
    if (d > INT_LIMIT) return true;
    if (k >= (1 << 24)) return false;
    return !(k <= 4 || (k <= 8 && d <= 16));
}

template <typename T>
py::tuple kmeans_assign(Arr<T> Xa, Arr<T> Ca, int ROWS, int KBLOCK, const std::string& method) {
    auto X = Xa.request(), C = Ca.request();
    check_2d(X, C);
    if (ROWS < 1 || KBLOCK < 1) throw std::invalid_argument("kmeans_assign: rows and kblock must be >= 1");
    if (method != "auto" && method != "fused" && method != "blas")
        throw std::invalid_argument("kmeans_assign: method must be 'auto', 'fused' or 'blas'");
    const int64_t n = X.shape[0], d64 = X.shape[1], k64 = C.shape[0];
    py::array_t<int32_t> labels_a(n);
    Arr<T> dist_a(n);
    int32_t* labels = labels_a.mutable_data();
    T* dist = dist_a.mutable_data();
    const T* x = static_cast<const T*>(X.ptr);
    const T* c = static_cast<const T*>(C.ptr);
    if (method == "blas" && d64 > INT_LIMIT)
        throw std::invalid_argument("kmeans_assign: the BLAS path needs d <= 2^31 - 1");
    if (method == "fused" && k64 >= (1 << 24))
        throw std::invalid_argument("kmeans_assign: the fused path needs k < 2^24");
    if (method == "fused" || (method == "auto" && use_fused(k64, d64))) {
        {
            py::gil_scoped_release release;
            kmfused::Fused<T>(c, k64, d64).assign(x, n, c, labels, dist);
        }
        return py::make_tuple(labels_a, dist_a);
    }
    const int d = (int)d64;  // <= INT_MAX here (use_fused / the check above)
    const int64_t k = k64;
    gemm_t<T> gemm = blas_gemm<T>();
    {
        py::gil_scoped_release release;
        // centres shifted by their mean (against the cancellation of ||c||^2 - 2 x.c), their norms
        std::vector<double> mean(d, 0.0);
        for (int64_t i = 0; i < k; ++i)
            for (int t = 0; t < d; ++t) mean[t] += c[i * d + t];
        std::vector<T> mt(d), cc((size_t)k * d), cnorm(k);
        for (int t = 0; t < d; ++t) mt[t] = (T)(mean[t] / (double)k);
        for (int64_t i = 0; i < k; ++i) {
            T s = 0;
            for (int t = 0; t < d; ++t) {
                const T v = c[i * d + t] - mt[t];
                cc[(size_t)i * d + t] = v;
                s += v * v;
            }
            cnorm[i] = s;
        }
        const int kb = (int)std::min<int64_t>(k, KBLOCK);
        const int64_t ntiles = (n + ROWS - 1) / ROWS;
        const int nt = omp_get_max_threads();
        std::vector<T> scratch((size_t)nt * ROWS * kb);
        std::vector<T> xshift((size_t)nt * ROWS * d);
        std::vector<T> bestv((size_t)nt * ROWS);
        std::vector<int32_t> besti((size_t)nt * ROWS);
#pragma omp parallel num_threads(nt)
        {
            const int tid = omp_get_thread_num();
            T* G = scratch.data() + (size_t)tid * ROWS * kb;
            T* xs = xshift.data() + (size_t)tid * ROWS * d;
            T* bv = bestv.data() + (size_t)tid * ROWS;
            int32_t* bi = besti.data() + (size_t)tid * ROWS;
            const T alpha = -2, beta = 0;
            const char tr = 'T', nn = 'N';
#pragma omp for schedule(dynamic, 1)
            for (int64_t tile = 0; tile < ntiles; ++tile) {
                const int64_t r0 = tile * ROWS;
                const int rows = (int)std::min<int64_t>(ROWS, n - r0);
                for (int r = 0; r < rows; ++r) { bv[r] = std::numeric_limits<T>::infinity(); bi[r] = 0; }
                for (int r = 0; r < rows; ++r) {
                    const T* xi = x + (r0 + r) * d;
#pragma omp simd
                    for (int t = 0; t < d; ++t) xs[(size_t)r * d + t] = xi[t] - mt[t];
                }
                for (int64_t j0 = 0; j0 < k; j0 += kb) {
                    const int kk = (int)std::min<int64_t>(kb, k - j0);
                    // column-major G (rows x kk) = X_tile (d x rows)^T * C_blk (d x kk), i.e. row j of
                    // the row-major (kk x rows) buffer holds -2 (x-m).(c_j-m) for every point of the tile
                    gemm(&tr, &nn, &rows, &kk, &d, &alpha, xs, &d, cc.data() + j0 * d, &d, &beta, G, &rows);
                    // fused argmin, vectorised across points (compare + blend, no horizontal reduction);
                    // ascending j with a strict < keeps the smallest index on a tie
                    for (int j = 0; j < kk; ++j) {
                        const T* g = G + (size_t)j * rows;
                        const T cj = cnorm[j0 + j];
                        const int32_t jj = (int32_t)(j0 + j);
#pragma omp simd
                        for (int r = 0; r < rows; ++r) {
                            const T v = g[r] + cj;
                            const bool better = v < bv[r];
                            bv[r] = better ? v : bv[r];
                            bi[r] = better ? jj : bi[r];
                        }
                    }
                }
                for (int r = 0; r < rows; ++r) {
                    labels[r0 + r] = bi[r];
                    dist[r0 + r] = kmfused::sqdist(x + (r0 + r) * d, c + (int64_t)bi[r] * d, d);
                }
            }
        }
    }
    return py::make_tuple(labels_a, dist_a);
}

template <typename T>
py::tuple kmedians_assign(Arr<T> Xa, Arr<T> Ca) {
    auto X = Xa.request(), C = Ca.request();
    check_2d(X, C);
    const int64_t n = X.shape[0], d = X.shape[1], k = C.shape[0];
    py::array_t<int32_t> labels_a(n);
    Arr<T> dist_a(n);
    int32_t* labels = labels_a.mutable_data();
    T* dist = dist_a.mutable_data();
    const T* x = static_cast<const T*>(X.ptr);
    const T* c = static_cast<const T*>(C.ptr);
    {
        py::gil_scoped_release release;
#pragma omp parallel for schedule(static)
        for (int64_t j = 0; j < n; ++j) {
            const T* xj = x + j * d;
            double best = std::numeric_limits<double>::infinity();
            int32_t bi = 0;
            for (int64_t i = 0; i < k; ++i) {
                const T* ci = c + (int64_t)i * d;
                double s = 0;
#pragma omp simd reduction(+ : s)
                for (int64_t t = 0; t < d; ++t) s += std::abs((double)xj[t] - (double)ci[t]);
                if (s < best) { best = s; bi = (int32_t)i; }
            }
            labels[j] = bi;
            dist[j] = (T)best;
        }
    }
    return py::make_tuple(labels_a, dist_a);
}

void check_update(const py::buffer_info& X, const py::buffer_info& w, const py::buffer_info& l,
                  const py::buffer_info& dist, const py::buffer_info& C, bool labels_too = true) {
    check_2d(X, C);
    const auto n = X.shape[0];
    if (w.ndim != 1 || l.ndim != 1 || dist.ndim != 1 || w.shape[0] != n || l.shape[0] != n || dist.shape[0] != n)
        throw std::invalid_argument("kmeans update: w, labels, dist must have shape (n,)");
    const int32_t* lab = static_cast<const int32_t*>(l.ptr);
    for (py::ssize_t j = 0; labels_too && j < n; ++j)
        if (lab[j] < 0 || lab[j] >= C.shape[0]) throw std::invalid_argument("kmeans update: label out of range");
}

template <typename T>
Arr<T> kmeans_update(Arr<T> Xa, Arr<double> wa, Arr<int32_t> la, Arr<T> da, Arr<T> Ca) {
    auto X = Xa.request(), w = wa.request(), l = la.request(), dd = da.request(), C = Ca.request();
    check_update(X, w, l, dd, C, false);  // labels: checked in weighted_sums' parallel pass
    const int64_t n = X.shape[0], d = X.shape[1], k = C.shape[0];
    Arr<T> out_a({(py::ssize_t)k, (py::ssize_t)d});
    T* mu = out_a.mutable_data();
    const T* x = static_cast<const T*>(X.ptr);
    const T* c = static_cast<const T*>(C.ptr);
    const double* wp = static_cast<const double*>(w.ptr);
    const int32_t* lab0 = static_cast<const int32_t*>(l.ptr);
    bool ok;
    {
        py::gil_scoped_release release;
        const int nt = omp_get_max_threads();
        const size_t stride = (size_t)k * (d + 1);
        std::vector<double> part;
        ok = kmupdate::weighted_sums(x, wp, lab0, n, k, d, part, nt);
        bool empty = false;
        for (int i = 0; ok && i < k && !empty; ++i) {
            double tw = 0;
            for (int p = 0; p < nt; ++p) tw += part[(size_t)p * stride + (size_t)k * d + i];
            empty = tw == 0.0;
        }
        if (empty) {  // rare: refill the empty clusters, then sum again with the new labels
            std::vector<int32_t> lab;
            kmupdate::relocate_empty<T>(wp, lab0, static_cast<const T*>(dd.ptr), n, k, lab);
            kmupdate::weighted_sums(x, wp, lab.data(), n, k, d, part, nt);
        }
        if (ok) {  // O(nt k d): serial, one parallel region (and its wake-up) less per update
            for (int64_t i = 0; i < k; ++i) {
                double tw = 0;
                for (int p = 0; p < nt; ++p) tw += part[(size_t)p * stride + (size_t)k * d + i];
                for (int64_t t = 0; t < d; ++t) {
                    if (tw > 0.0) {
                        double s = 0;
                        for (int p = 0; p < nt; ++p) s += part[(size_t)p * stride + (size_t)i * d + t];
                        mu[(size_t)i * d + t] = (T)(s / tw);
                    } else {
                        mu[(size_t)i * d + t] = c[(size_t)i * d + t];  // no weight: keep the old centre
                    }
                }
            }
        }
    }
    if (!ok) throw std::invalid_argument("kmeans update: label out of range");
    return out_a;
}

template <typename T>
Arr<T> kmedians_update(Arr<T> Xa, Arr<double> wa, Arr<int32_t> la, Arr<T> da, Arr<T> Ca) {
    auto X = Xa.request(), w = wa.request(), l = la.request(), dd = da.request(), C = Ca.request();
    check_update(X, w, l, dd, C);
    const int64_t n = X.shape[0], d = X.shape[1], k = C.shape[0];
    Arr<T> out_a({(py::ssize_t)k, (py::ssize_t)d});
    T* m = out_a.mutable_data();
    const T* x = static_cast<const T*>(X.ptr);
    const T* c = static_cast<const T*>(C.ptr);
    const double* wp = static_cast<const double*>(w.ptr);
    {
        py::gil_scoped_release release;
        std::vector<int32_t> lab;
        kmupdate::relocate_empty<T>(wp, static_cast<const int32_t*>(l.ptr), static_cast<const T*>(dd.ptr), n, k, lab);
        std::copy(c, c + (size_t)k * d, m);
        kmupdate::medians(x, wp, lab.data(), n, k, d, m);
    }
    return out_a;
}

// One greedy k-means++ step (kmeans_seed.hpp): the first candidate of lowest potential (its
// position in candidates), that potential, and D2_new = min(D2, ||x - x_best||^2).
template <typename T>
py::tuple kmeans_plusplus_step(Arr<T> Xa, Arr<double> wa, Arr<double> D2a, Arr<int64_t> ca) {
    auto X = Xa.request(), w = wa.request(), D = D2a.request(), cb = ca.request();
    if (X.ndim != 2 || X.shape[0] < 1 || X.shape[1] < 1)
        throw std::invalid_argument("kmeans_plusplus_step: X (n, d) with n, d >= 1 expected");
    const int64_t n = X.shape[0], d = X.shape[1];
    if (w.ndim != 1 || D.ndim != 1 || w.shape[0] != n || D.shape[0] != n)
        throw std::invalid_argument("kmeans_plusplus_step: w and D2 must have shape (n,)");
    if (cb.ndim != 1 || cb.shape[0] < 1)
        throw std::invalid_argument("kmeans_plusplus_step: candidates must be a non-empty 1-d array");
    const int64_t nc = cb.shape[0];
    const int64_t* cand = static_cast<const int64_t*>(cb.ptr);
    for (int64_t q = 0; q < nc; ++q)
        if (cand[q] < 0 || cand[q] >= n) throw std::invalid_argument("kmeans_plusplus_step: candidate out of range");
    const T* x = static_cast<const T*>(X.ptr);
    py::array_t<double> out_a(n);
    double* out = out_a.mutable_data();
    int64_t best = 0;
    double best_pot = std::numeric_limits<double>::infinity();
    {
        py::gil_scoped_release release;
        std::vector<T> rows((size_t)nc * d);  // the candidates' rows, contiguous
        for (int64_t q = 0; q < nc; ++q) std::copy(x + cand[q] * d, x + (cand[q] + 1) * d, rows.begin() + q * d);
        const kmseed::Seed<T> seed{x, n, d};
        std::vector<double> pot(nc);
        const double* D2 = static_cast<const double*>(D.ptr);
        seed.potentials(static_cast<const double*>(w.ptr), D2, rows.data(), nc, pot.data());
        for (int64_t q = 0; q < nc; ++q)
            if (pot[q] < best_pot) { best_pot = pot[q]; best = q; }
        seed.update(D2, rows.data() + best * d, out);
    }
    return py::make_tuple(best, best_pot, out_a);
}

// The whole greedy k-means++ seeding (kmeans_plusplus.hpp) with the reference's signature: (centers,
// indices) (+ the potential after each centre); rng.random consumed as the reference does.
// screen=False: every distance computed (same results; for tests)
template <typename T>
py::tuple kmeans_plusplus(Arr<T> Xa, int64_t k, Arr<double> wa, py::object rng, int64_t trials,
                          bool return_potential, bool screen) {
    auto X = Xa.request(), w = wa.request();
    if (X.ndim != 2 || X.shape[0] < 1 || X.shape[1] < 1)
        throw std::invalid_argument("kmeans_plusplus: X (n, d) with n, d >= 1 expected");
    const int64_t n = X.shape[0], d = X.shape[1];
    if (w.ndim != 1 || w.shape[0] != n) throw std::invalid_argument("kmeans_plusplus: w must have shape (n,)");
    if (k < 1 || k > n) throw std::invalid_argument("kmeans_plusplus: n_clusters must be in [1, n_samples]");
    if (trials < 1) throw std::invalid_argument("kmeans_plusplus: n_local_trials must be >= 1");
    const double* wp = static_cast<const double*>(w.ptr);
    double wsum = 0;
    for (int64_t j = 0; j < n; ++j) {
        if (!(wp[j] >= 0.0) || std::isinf(wp[j])) throw std::invalid_argument("kmeans_plusplus: w must be finite and >= 0");
        wsum += wp[j];
    }
    if (!(wsum > 0)) throw std::invalid_argument("kmeans_plusplus: w must have a positive sum");
    py::object random = rng.attr("random");
    const T* x = static_cast<const T*>(X.ptr);
    py::array_t<int64_t> idx_a(k);
    py::array_t<double> pot_a(k);
    int64_t* idx = idx_a.mutable_data();
    double* pot = pot_a.mutable_data();
    const int64_t total = 1 + (k - 1) * trials;  // uniforms the reference draws
    int64_t drawn = 0;
    std::vector<double> buf;
    size_t pos = 0;
    auto fetch = [&](int64_t cnt) -> const double* {  // called without the GIL
        if (pos + (size_t)cnt > buf.size()) {
            py::gil_scoped_acquire gil;
            const int64_t want = std::min<int64_t>(total - drawn, std::max<int64_t>(cnt, 1 << 16));
            Arr<double> u = random(want);
            if (u.ndim() != 1 || u.shape(0) != want) throw std::invalid_argument("kmeans_plusplus: rng.random(n) must return n values");
            buf.erase(buf.begin(), buf.begin() + (std::ptrdiff_t)pos);
            pos = 0;
            buf.insert(buf.end(), u.data(), u.data() + want);
            drawn += want;
        }
        const double* p = buf.data() + pos;
        pos += (size_t)cnt;
        return p;
    };
    {
        py::gil_scoped_release release;
        kmpp::PlusPlus<T> pp(x, wp, n, d, n * d >= (1 << 15));
        pp.run(k, trials, screen, fetch, idx, pot);
    }
    Arr<T> centers({(py::ssize_t)k, (py::ssize_t)d});
    T* cp = centers.mutable_data();
    for (int64_t c = 0; c < k; ++c) std::copy(x + idx[c] * d, x + (idx[c] + 1) * d, cp + c * d);
    if (return_potential) return py::make_tuple(centers, idx_a, pot_a);
    return py::make_tuple(centers, idx_a);
}

}  // namespace

PYBIND11_MODULE(kmeans, m) {
    m.doc() = "k-means / k-medians kernels (pyml._cpp.kmeans); see pyml/_kmeans_driver.py";
    // rows x kblock: the tile of scores (256 KiB in float32) stays in L2 next to the X tile
    // method: "auto" (use_fused's shape rule), "fused" or "blas" (tests reach both paths)
    m.def("kmeans_assign", &kmeans_assign<float>, py::arg("X"), py::arg("C"), py::arg("rows") = 256,
          py::arg("kblock") = 256, py::arg("method") = "auto");
    m.def("kmeans_assign", &kmeans_assign<double>, py::arg("X"), py::arg("C"), py::arg("rows") = 256,
          py::arg("kblock") = 256, py::arg("method") = "auto");
    m.def("kmedians_assign", &kmedians_assign<float>, py::arg("X"), py::arg("C"));
    m.def("kmedians_assign", &kmedians_assign<double>, py::arg("X"), py::arg("C"));
    m.def("kmeans_update", &kmeans_update<float>);
    m.def("kmeans_update", &kmeans_update<double>);
    m.def("kmedians_update", &kmedians_update<float>);
    m.def("kmedians_update", &kmedians_update<double>);
    m.def("kmeans_plusplus_step", &kmeans_plusplus_step<float>);
    m.def("kmeans_plusplus_step", &kmeans_plusplus_step<double>);
    m.def("kmeans_plusplus", &kmeans_plusplus<float>, py::arg("X"), py::arg("n_clusters"), py::arg("w"),
          py::arg("rng"), py::arg("n_local_trials"), py::arg("return_potential") = false, py::arg("screen") = true);
    m.def("kmeans_plusplus", &kmeans_plusplus<double>, py::arg("X"), py::arg("n_clusters"), py::arg("w"),
          py::arg("rng"), py::arg("n_local_trials"), py::arg("return_potential") = false, py::arg("screen") = true);
}
