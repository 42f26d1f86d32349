// Runtime facts for `pyml info` and the thread knob shared by every OpenMP kernel:
// all pyml._cpp / pyml._cython modules link the same libgomp, so one call sets them all.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <omp.h>
#include <string>
#include <vector>

namespace py = pybind11;

static std::vector<std::string> simd_features() {
    std::vector<std::string> out;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) out.push_back("sse4.2");
    if (__builtin_cpu_supports("avx")) out.push_back("avx");
    if (__builtin_cpu_supports("avx2")) out.push_back("avx2");
    if (__builtin_cpu_supports("fma")) out.push_back("fma");
    if (__builtin_cpu_supports("avx512f")) out.push_back("avx512f");
    if (__builtin_cpu_supports("avx512bw")) out.push_back("avx512bw");
    if (__builtin_cpu_supports("avx512vl")) out.push_back("avx512vl");
#endif
    return out;
}

static std::vector<std::string> compiled_simd() {
    std::vector<std::string> out;
#ifdef __AVX2__
    out.push_back("avx2");
#endif
#ifdef __FMA__
    out.push_back("fma");
#endif
#ifdef __AVX512F__
    out.push_back("avx512f");
#endif
    return out;
}

PYBIND11_MODULE(_info, m) {
    m.doc() = "pyml._cpp runtime information and OpenMP thread control";
    m.def("set_num_threads", [](int n) { omp_set_num_threads(n); }, py::arg("n"));
    m.def("get_num_threads", []() { return omp_get_max_threads(); });
    m.def("cpu_simd_features", &simd_features, "SIMD extensions this CPU supports");
    m.def("compiled_simd_features", &compiled_simd, "SIMD extensions the extension was compiled for");
    m.def("openmp_version", []() { return _OPENMP; });
}
