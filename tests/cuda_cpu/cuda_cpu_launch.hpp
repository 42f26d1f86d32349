// Host side of the emulator: a kernel launch runs the grid's blocks one after another (forward, reverse or
// random order) on the calling OS thread; device memory is host memory between PROT_NONE guard pages, so an
// out-of-bounds access faults and is reported with the buffer it missed (or, built with -fsanitize=address,
// plain malloc so AddressSanitizer's redzones catch it). Dynamic shared memory is filled with 0xff (NaN for
// floats: reading it before writing shows) and followed by a canary that reveals writes past its size.
#pragma once

#include <setjmp.h>
#include <signal.h>

#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#define CUDA_CPU_EXPORT extern "C" __attribute__((visibility("default")))

namespace cuda_cpu {

struct LaunchConfig {
    unsigned grid[3], block[3];
    unsigned long long shared_mem;
    int order;
    unsigned long long seed;
};

// ----------------------------------------------------------------------------------- dynamic shared memory
constexpr size_t kSmemMax = 232448;  // 227 KiB, the per-block opt-in limit of sm_90
constexpr size_t kCanary = 4096;
constexpr unsigned char kFill = 0xff, kGuard = 0xfb;
struct DynSmem {
    unsigned char* (*base)();  // this OS thread's copy (thread_local storage)
};
inline std::vector<DynSmem>& dyn_smem() {
    static std::vector<DynSmem> v;
    return v;
}
struct RegisterSmem {
    explicit RegisterSmem(unsigned char* (*f)()) { dyn_smem().push_back(DynSmem{f}); }
};

inline void smem_prepare(unsigned long long n) {
    for (const DynSmem& d : dyn_smem()) {
        unsigned char* p = d.base();
        memset(p, kFill, n);
        memset(p + n, kGuard, kCanary);
#ifdef __SANITIZE_ADDRESS__
        ASAN_POISON_MEMORY_REGION(p + n, kSmemMax + kCanary - n);
#endif
    }
}
inline bool smem_check(unsigned long long n, char* err, size_t errlen) {
    bool ok = true;
    for (const DynSmem& d : dyn_smem()) {
        unsigned char* p = d.base();
#ifdef __SANITIZE_ADDRESS__
        ASAN_UNPOISON_MEMORY_REGION(p + n, kSmemMax + kCanary - n);
#endif
        for (size_t i = 0; ok && i < kCanary; ++i)
            if (p[n + i] != kGuard) {
                snprintf(err, errlen, "block (%u,%u,%u) wrote %zu bytes past the end of the dynamic shared memory "
                         "(shared_mem=%llu bytes)", blockIdx.x, blockIdx.y, blockIdx.z, i, n);
                ok = false;
            }
    }
    return ok;
}

// ----------------------------------------------------------------------------------- guarded device memory
struct Region {
    uintptr_t lo, hi, user, n;  // [lo, hi): the mapping with both guard pages; [user, user + n): the buffer
    char label[120];
    bool used;
};
constexpr int kRegions = 1024;
inline Region regions[kRegions];
inline std::mutex regions_mu;

inline const char* describe(uintptr_t a, char* out, size_t len) {
    for (const Region& r : regions)
        if (r.used && a >= r.lo && a < r.hi) {
            if (a < r.user) snprintf(out, len, "%zu bytes before the start of %s", (size_t)(r.user - a), r.label);
            else snprintf(out, len, "%zu bytes past the end of %s (%zu bytes)", (size_t)(a - r.user - r.n), r.label,
                          (size_t)r.n);
            return out;
        }
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (char* s : tl_stacks.stacks)
        if (a >= (uintptr_t)s - page && a < (uintptr_t)s) {
            snprintf(out, len, "stack overflow of a thread (more than %zu KiB of locals)", kStack / 1024);
            return out;
        }
    snprintf(out, len, "invalid address %p (no device buffer there)", (void*)a);
    return out;
}

inline thread_local sigjmp_buf* tl_jmp = nullptr;
inline thread_local char tl_fault[400];
inline thread_local bool tl_altstack = false;
inline struct sigaction old_segv, old_bus;
inline int handler_users = 0;
inline std::mutex handler_mu;

inline void on_fault(int sig, siginfo_t* si, void*) {
    if (tl_jmp) {
        char where[300];
        snprintf(tl_fault, sizeof tl_fault, "out-of-bounds access in block (%u,%u,%u)%s: %s", blockIdx.x, blockIdx.y,
                 blockIdx.z, tl_fiber ? "" : " (outside any thread)", describe((uintptr_t)si->si_addr, where, sizeof where));
        siglongjmp(*tl_jmp, 1);
    }
    sigaction(sig, sig == SIGSEGV ? &old_segv : &old_bus, nullptr);  // not ours: the fault recurs there
}

inline void handlers(bool on) {
#ifndef __SANITIZE_ADDRESS__
    std::lock_guard<std::mutex> g(handler_mu);
    if (on && handler_users++ == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &old_segv);
        sigaction(SIGBUS, &sa, &old_bus);
    } else if (!on && --handler_users == 0) {
        sigaction(SIGSEGV, &old_segv, nullptr);
        sigaction(SIGBUS, &old_bus, nullptr);
    }
#else
    (void)on;
#endif
}

// ----------------------------------------------------------------------------------- the grid
inline void make_order(std::vector<long long>& v, long long n, int order, std::mt19937_64& rng) {
    v.resize(n);
    for (long long i = 0; i < n; ++i) v[i] = order == REVERSE ? n - 1 - i : i;
    if (order == RANDOM) std::shuffle(v.begin(), v.end(), rng);
}

inline bool run_block(Block& b, const LaunchConfig& c, std::mt19937_64& rng, char* err, size_t errlen) {
    const int bx = c.block[0], by = c.block[1], n = c.block[0] * c.block[1] * c.block[2];
    b.fibers.resize(n);
    b.warps.assign((n + 31) / 32, Warp{});
    for (size_t w = 0; w < b.warps.size(); ++w) {
        const int lanes = std::min(32, n - (int)w * 32);
        b.warps[w].exists = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
    }
    b.live = n;
    b.at_barrier = 0;
    b.failed = false;
    for (int t = 0; t < n; ++t) {
        Fiber& f = b.fibers[t];
        f.idx = uint3{(unsigned)(t % bx), (unsigned)((t / bx) % by), (unsigned)(t / (bx * by))};
        f.tid = t, f.lane = t % 32, f.warp = t / 32;
        f.state = St::ready, f.wait_mask = 0, f.ncoll = 0, f.pred = 0;
        f.stack = tl_stacks.get(t);
#ifdef __SANITIZE_ADDRESS__
        ASAN_UNPOISON_MEMORY_REGION(f.stack, kStack);
#endif
        ctx_init(&f.ctx, f.stack, kStack, fiber_main);
    }
    smem_prepare(c.shared_mem);
    std::vector<long long> order;
    while (b.live > 0 && !b.failed) {
        make_order(order, n, c.order, rng);
        bool ran = false;
        for (long long t : order) {
            Fiber& f = b.fibers[t];
            if (f.state != St::ready) continue;
            tl_fiber = &f;
            switch_to(&b.sched, &f.ctx, f.stack, kStack);
            tl_fiber = nullptr;
            ran = true;
            if (b.failed) break;
        }
        if (!ran && !b.failed) {
            int bar = 0, warp = 0;
            for (const Fiber& f : b.fibers) bar += f.state == St::at_barrier, warp += f.state == St::at_warp;
            snprintf(b.error, sizeof b.error, "block (%u,%u,%u) deadlocks: %d threads wait at __syncthreads and %d in "
                     "warp collectives that the others never reach", blockIdx.x, blockIdx.y, blockIdx.z, bar, warp);
            b.failed = true;
        }
    }
    if (b.failed) {
        snprintf(err, errlen, "%s", b.error);
        smem_check(c.shared_mem, err + strlen(err), 0);  // unpoison only
        return false;
    }
    return smem_check(c.shared_mem, err, errlen);
}

inline int run_grid(const LaunchConfig& c, const std::function<void()>& body, char* err, size_t errlen) {
    static thread_local Block block;
    std::mt19937_64 rng(c.seed);
    const long long gx = c.grid[0], gy = c.grid[1], nb = gx * gy * c.grid[2];
    gridDim = dim3{c.grid[0], c.grid[1], c.grid[2]};
    blockDim = dim3{c.block[0], c.block[1], c.block[2]};
    std::vector<long long> blocks;
    make_order(blocks, nb, c.order, rng);
#ifndef __SANITIZE_ADDRESS__  // (ASan owns the alternate stacks and the fault handling there)
    if (!tl_altstack) {  // the fault handler must run even when a fiber's stack is what overflowed
        stack_t cur;
        if (sigaltstack(nullptr, &cur) == 0 && (cur.ss_flags & SS_DISABLE)) {  // keep one already set up
            static thread_local char alt[1 << 16];
            stack_t ss;
            ss.ss_sp = alt, ss.ss_size = sizeof alt, ss.ss_flags = 0;
            sigaltstack(&ss, nullptr);
        }
        tl_altstack = true;
    }
#endif
    sigjmp_buf jb;
    handlers(true);
    int rc = 0;
    if (sigsetjmp(jb, 1) == 0) {
        tl_jmp = &jb;
        tl_block = &block;
        block.body = &body;
        for (long long id : blocks) {
            blockIdx = uint3{(unsigned)(id % gx), (unsigned)((id / gx) % gy), (unsigned)(id / (gx * gy))};
            if (!run_block(block, c, rng, err, errlen)) {
                rc = 1;
                break;
            }
        }
    } else {
        snprintf(err, errlen, "%s", tl_fault);
        rc = 2;
    }
    tl_jmp = nullptr;
    tl_block = nullptr;
    tl_fiber = nullptr;
    handlers(false);
    return rc;
}

// ----------------------------------------------------------------------------------- signatures, launch
// A parameter list as text: p<pointee> for pointers, f/i/u/b<bytes> for scalars, s<bytes> for structs;
// the stand-in CuPy checks every argument against it (a wrong-sized argument is garbage on a GPU).
template <class T>
inline void kind_(std::string& s) {
    typedef typename std::remove_cv<T>::type U;
    if constexpr (std::is_pointer<U>::value) {
        s += 'p';
        kind_<typename std::remove_pointer<U>::type>(s);
    } else if constexpr (std::is_void<U>::value) {
        s += "v0";
    } else if constexpr (std::is_same<U, bool>::value) {
        s += "b1";
    } else if constexpr (std::is_floating_point<U>::value) {
        s += 'f' + std::to_string(sizeof(U));
    } else if constexpr (std::is_integral<U>::value) {
        s += (std::is_signed<U>::value ? 'i' : 'u') + std::to_string(sizeof(U));
    } else {
        s += 's' + std::to_string(sizeof(U));
    }
}
template <class... P>
inline const char* signature(void (*)(P...)) {
    static const std::string s = [] {
        std::string out;
        ((kind_<P>(out), out += ','), ...);
        if (!out.empty()) out.pop_back();
        return out;
    }();
    return s.c_str();
}

template <class... P, size_t... I>
inline int launch_(void (*fn)(P...), const LaunchConfig* c, void** args, char* err, size_t errlen,
                   std::index_sequence<I...>) {
    std::tuple<typename std::decay<P>::type...> params;
    (memcpy((void*)&std::get<I>(params), args[I], sizeof(std::get<I>(params))), ...);
    const std::function<void()> body = [&]() { fn(std::get<I>(params)...); };  // by value: a copy per thread
    return run_grid(*c, body, err, errlen);
}
template <class... P>
inline int launch(void (*fn)(P...), const LaunchConfig* c, void** args, char* err, size_t errlen) {
    return launch_(fn, c, args, err, errlen, std::index_sequence_for<P...>{});
}

}  // namespace cuda_cpu

// ----------------------------------------------------------------------------------- exported allocator
CUDA_CPU_EXPORT void* cuda_cpu_alloc(size_t n, int align_end, const char* label) {
#ifdef __SANITIZE_ADDRESS__
    (void)align_end, (void)label;
    return malloc(n ? n : 1);
#else
    using namespace cuda_cpu;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE), span = ((n ? n : 1) + page - 1) / page * page;
    char* base = (char*)mmap(nullptr, span + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == (char*)MAP_FAILED) return nullptr;
    mprotect(base, page, PROT_NONE);
    mprotect(base + page + span, page, PROT_NONE);
    char* user = align_end ? base + page + span - n : base + page;
    std::lock_guard<std::mutex> g(regions_mu);
    for (Region& r : regions)
        if (!r.used) {
            r.lo = (uintptr_t)base, r.hi = (uintptr_t)(base + span + 2 * page), r.user = (uintptr_t)user, r.n = n;
            snprintf(r.label, sizeof r.label, "%s", label);
            r.used = true;
            return user;
        }
    munmap(base, span + 2 * page);
    return nullptr;
#endif
}

CUDA_CPU_EXPORT void cuda_cpu_free(void* p) {
#ifdef __SANITIZE_ADDRESS__
    free(p);
#else
    using namespace cuda_cpu;
    std::lock_guard<std::mutex> g(regions_mu);
    for (Region& r : regions)
        if (r.used && r.user == (uintptr_t)p) {
            munmap((void*)r.lo, r.hi - r.lo);
            r.used = false;
            return;
        }
#endif
}

CUDA_CPU_EXPORT int cuda_cpu_sanitized() {
#ifdef __SANITIZE_ADDRESS__
    return 1;
#else
    return 0;
#endif
}
