// Runtime facts for `pyml info` and pyml._cpu, and the thread knob shared by every OpenMP kernel:
// all pyml._cpp / pyml._cython modules link the same libgomp, so one call sets them all.
// Compiled once, for plain x86-64 (below even the kernels' x86-64-v2 baseline): it decides
// which kernel variant may be loaded, so it must itself run on any x86-64 CPU and report a
// missing level instead of faulting.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <omp.h>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace py = pybind11;

namespace {

struct CpuFacts {
    std::vector<std::string> features;  // named as Linux names them in /proc/cpuinfo
    std::vector<std::string> levels;    // psABI micro-architecture levels this CPU + OS can run
    bool os_ymm = false, os_zmm = false;  // the OS saves AVX / AVX-512 registers (XCR0)
};

#if defined(__x86_64__) || defined(__i386__)
// Raw CPUID rather than __builtin_cpu_supports: it needs no particular compiler version for
// the level names, reads exactly the bits each -march=x86-64-vN level may use (LZCNT and MOVBE
// included) and lets the OS check below be explicit. A CPU may report AVX or AVX-512 while the
// OS does not save their registers on a context switch (XCR0); running such code then
// corrupts registers or faults, so a level also needs the OS bits (Intel SDM vol. 1, 13.3).
CpuFacts probe() {
    CpuFacts f;
    unsigned a, b, c, d;
    unsigned c1 = 0, d1 = 0, b7 = 0, c81 = 0;
    if (__get_cpuid(1, &a, &b, &c, &d)) { c1 = c; d1 = d; }
    if (__get_cpuid_max(0, nullptr) >= 7) { __cpuid_count(7, 0, a, b, c, d); b7 = b; }
    if (__get_cpuid(0x80000001u, &a, &b, &c, &d)) c81 = c;
    if (c1 & (1u << 27)) {  // OSXSAVE: XGETBV is usable
        uint32_t lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        f.os_ymm = (lo & 0x6u) == 0x6u;     // SSE + AVX state
        f.os_zmm = (lo & 0xE6u) == 0xE6u;   // + opmask, ZMM0-15 upper halves, ZMM16-31
    }
    const std::pair<const char*, bool> named[] = {
        {"sse2", d1 & (1u << 26)}, {"pni", c1 & 1u}, {"ssse3", c1 & (1u << 9)}, {"sse4_1", c1 & (1u << 19)},
        {"sse4_2", c1 & (1u << 20)}, {"popcnt", c1 & (1u << 23)}, {"cx16", c1 & (1u << 13)},
        {"lahf_lm", c81 & 1u}, {"avx", c1 & (1u << 28)}, {"avx2", b7 & (1u << 5)},
        {"fma", c1 & (1u << 12)}, {"bmi1", b7 & (1u << 3)}, {"bmi2", b7 & (1u << 8)},
        {"f16c", c1 & (1u << 29)}, {"movbe", c1 & (1u << 22)}, {"abm", c81 & (1u << 5)},
        {"xsave", c1 & (1u << 26)}, {"avx512f", b7 & (1u << 16)}, {"avx512dq", b7 & (1u << 17)},
        {"avx512cd", b7 & (1u << 28)}, {"avx512bw", b7 & (1u << 30)},
        {"avx512vl", b7 & (1u << 31)},
    };
    auto has = [&](const char* name) {
        for (const auto& n : named)
            if (std::string(n.first) == name) return n.second;
        return false;
    };
    for (const auto& n : named)
        if (n.second) f.features.push_back(n.first);
    const bool v2 = has("pni") && has("ssse3") && has("sse4_1") && has("sse4_2") && has("popcnt") &&
                    has("cx16") && has("lahf_lm");
    const bool v3 = v2 && f.os_ymm && has("avx") && has("avx2") && has("fma") && has("bmi1") &&
                    has("bmi2") && has("f16c") && has("movbe") && has("abm") && has("xsave");
    const bool v4 = v3 && f.os_zmm && has("avx512f") && has("avx512dq") && has("avx512cd") &&
                    has("avx512bw") && has("avx512vl");
    if (v2) f.levels.push_back("x86-64-v2");
    if (v3) f.levels.push_back("x86-64-v3");
    if (v4) f.levels.push_back("x86-64-v4");
    return f;
}
#else
CpuFacts probe() { return {}; }  // other architectures: only the generic baseline is built
#endif

}  // namespace

PYBIND11_MODULE(_info, m) {
    m.doc() = "pyml._cpp runtime information (CPU features for variant dispatch) and OpenMP threads";
    m.def("set_num_threads", [](int n) { omp_set_num_threads(n); }, py::arg("n"));
    m.def("get_num_threads", []() { return omp_get_max_threads(); });
    m.def("cpu_features", []() { return probe().features; },
          "SIMD-related CPUID features of this CPU, named as in /proc/cpuinfo");
    m.def("cpu_levels", []() { return probe().levels; },
          "x86-64 micro-architecture levels (x86-64-v2/v3/v4) this CPU and OS can run");
    m.def("os_saves", []() { auto f = probe(); return std::make_pair(f.os_ymm, f.os_zmm); },
          "whether the OS saves the AVX (ymm) and AVX-512 (zmm) register state");
    m.def("openmp_version", []() { return _OPENMP; });
}
