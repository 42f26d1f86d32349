// The threads of one block as fibers on one OS thread (a six-register stack switch on x86-64, ucontext elsewhere): __syncthreads() parks a fiber until every
// live thread of the block has arrived; warp collectives park it until every lane of the mask has arrived.
// Each pass over the ready fibers runs them in forward, reverse or random order, so a block whose result
// depends on an unpromised order of its threads gives different answers in different launches.
#pragma once

#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <functional>
#include <random>
#include <vector>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace cuda_cpu {

enum class St : int { ready, at_barrier, at_warp, done };
enum Order : int { FORWARD = 0, REVERSE = 1, RANDOM = 2 };

// ------------------------------------------------------------------------------------------- contexts
// swapcontext makes a system call per switch (it saves the signal mask); a block of 256 threads with a few
// shuffles per row switches millions of times per test, so on x86-64 the switch is six pushes and a stack
// swap. AddressSanitizer builds keep ucontext, which ASan knows about.
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define CUDA_CPU_FAST_SWITCH 1
struct Ctx {
    void* sp;
};
extern "C" void cuda_cpu_switch(void** save_sp, void* new_sp);
asm(R"(
    .text
    .p2align 4
    .type cuda_cpu_switch,@function
cuda_cpu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cuda_cpu_switch, .-cuda_cpu_switch
)");
inline void ctx_switch(Ctx* from, Ctx* to) { cuda_cpu_switch(&from->sp, to->sp); }
inline void ctx_init(Ctx* c, char* stack, size_t size, void (*entry)()) {
    // the frame cuda_cpu_switch pops: mxcsr|fpu cw, r15..rbp, then `ret` into entry with rsp = 16n + 8
    uint64_t* top = (uint64_t*)(((uintptr_t)(stack + size)) & ~(uintptr_t)15);
    top[-1] = 0;                   // entry's (never used) return address
    top[-2] = (uint64_t)entry;
    for (int r = 3; r <= 8; ++r) top[-r] = 0;
    uint32_t csr[2];
    asm volatile("stmxcsr %0" : "=m"(csr[0]));
    asm volatile("fnstcw %0" : "=m"(csr[1]));
    memcpy(&top[-9], csr, 8);
    c->sp = &top[-9];
}
#else
struct Ctx {
    ucontext_t uc;
};
inline void ctx_switch(Ctx* from, Ctx* to) { swapcontext(&from->uc, &to->uc); }
inline void ctx_init(Ctx* c, char* stack, size_t size, void (*entry)()) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = nullptr;  // fiber_main never returns
    makecontext(&c->uc, entry, 0);
}
#endif

struct Fiber {
    Ctx ctx;
    uint3 idx;
    int tid, lane, warp;
    St state;
    unsigned wait_mask;        // the lanes the warp collective this fiber waits in needs
    unsigned long long ncoll;  // warp collectives done: slot parity and the divergence check
    int pred;                  // this thread's predicate in __syncthreads_count/and/or
    char* stack;
};

struct Slot {
    unsigned long long bits, gen;
};

struct Warp {
    unsigned exists, done, arrived;
    Slot slot[2][32];  // double-buffered by collective parity: a fast lane never overwrites unread values
};

struct Block {
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    int live = 0, at_barrier = 0;
    Ctx sched;
    const std::function<void()>* body = nullptr;
    bool failed = false;
    char error[1024];
};

inline thread_local Block* tl_block = nullptr;
inline thread_local Fiber* tl_fiber = nullptr;
inline const uint3& thread_index() { return tl_fiber->idx; }

constexpr size_t kStack = 256 * 1024;

// Fiber stacks with a PROT_NONE page below each, reused across blocks and launches of this OS thread.
struct StackPool {
    std::vector<char*> stacks;
    char* get(size_t i) {
        const size_t page = (size_t)sysconf(_SC_PAGESIZE);
        while (stacks.size() <= i) {
            void* p = mmap(nullptr, kStack + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) fail("cannot map a fiber stack");
            mprotect(p, page, PROT_NONE);
            stacks.push_back((char*)p + page);
        }
        return stacks[i];
    }
    ~StackPool() {  // at OS-thread exit
        const size_t page = (size_t)sysconf(_SC_PAGESIZE);
        for (char* s : stacks) munmap(s - page, kStack + page);
    }
};
inline thread_local StackPool tl_stacks;

// --------------------------------------------------------------------------------------------- switching
#ifdef __SANITIZE_ADDRESS__
inline void switch_to(Ctx* from, Ctx* to, const void* stack, size_t size) {
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, stack, size);
    ctx_switch(from, to);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
}
#else
inline void switch_to(Ctx* from, Ctx* to, const void*, size_t) { ctx_switch(from, to); }
#endif

inline thread_local const void* tl_main_stack = nullptr;
inline thread_local size_t tl_main_size = 0;

inline void yield_to_scheduler() {
    Fiber* f = tl_fiber;
    switch_to(&f->ctx, &tl_block->sched, tl_main_stack, tl_main_size);
}

[[noreturn]] inline void fail(const char* fmt, ...) {
    Block* b = tl_block;
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (b == nullptr) {  // outside a launch: nothing to unwind to
        fprintf(stderr, "cuda_cpu: %s\n", msg);
        abort();
    }
    if (!b->failed) {
        b->failed = true;
        if (tl_fiber)
            snprintf(b->error, sizeof b->error, "thread (%u,%u,%u) of block (%u,%u,%u): %s", tl_fiber->idx.x,
                     tl_fiber->idx.y, tl_fiber->idx.z, blockIdx.x, blockIdx.y, blockIdx.z, msg);
        else
            snprintf(b->error, sizeof b->error, "block (%u,%u,%u): %s", blockIdx.x, blockIdx.y, blockIdx.z, msg);
    }
    if (tl_fiber) {
        tl_fiber->state = St::done;  // parked for good: the scheduler abandons the block
        for (;;) yield_to_scheduler();
    }
    fprintf(stderr, "cuda_cpu: %s\n", b->error);  // only fibers call fail() during a launch
    abort();
}

// --------------------------------------------------------------------------------------------- barriers
inline void release_block(Block* b) {
    for (Fiber& f : b->fibers)
        if (f.state == St::at_barrier) f.state = St::ready;
    b->at_barrier = 0;
}

inline void fiber_exit_checks(Block* b, Fiber* me) {
    Warp& w = b->warps[me->warp];
    w.done |= 1u << me->lane;
    for (int l = 0; l < 32; ++l) {
        Fiber* g = nullptr;
        const int t = me->warp * 32 + l;
        if (t < (int)b->fibers.size()) g = &b->fibers[t];
        if (g && g->state == St::at_warp && (g->wait_mask >> me->lane & 1u))
            fail("exited while lane %d of its warp waits for it in a warp collective (mask 0x%08x)", l,
                 g->wait_mask);
    }
    // threads that exited count as arrived (as on sm_70+): the rest of the block may still synchronise
    if (b->at_barrier > 0 && b->at_barrier == b->live) release_block(b);
}

inline void fiber_main() {
#ifdef __SANITIZE_ADDRESS__
    __sanitizer_finish_switch_fiber(nullptr, &tl_main_stack, &tl_main_size);
#endif
    Block* b = tl_block;
    (*b->body)();
    Fiber* f = tl_fiber;
    f->state = St::done;
    --b->live;
    fiber_exit_checks(b, f);
    for (;;) yield_to_scheduler();
}

inline void syncthreads_() {
    Block* b = tl_block;
    tl_fiber->state = St::at_barrier;
    if (++b->at_barrier == b->live) release_block(b);
    yield_to_scheduler();
}

inline int syncthreads_reduce_(int pred, int op) {
    tl_fiber->pred = pred != 0;
    syncthreads_();
    int count = 0, n = 0;
    for (const Fiber& f : tl_block->fibers)
        if (f.state != St::done) count += f.pred, ++n;
    syncthreads_();  // nobody changes pred before everyone has counted
    return op == 0 ? count : (op == 1 ? count == n : count > 0);
}

// Deposit `bits` for this lane's next warp collective and park until every lane of `mask` has arrived.
// Returns the collective's generation (the slot parity to read).
inline unsigned long long warp_arrive(unsigned mask, unsigned long long bits, const char* what) {
    Block* b = tl_block;
    Fiber* f = tl_fiber;
    Warp& w = b->warps[f->warp];
    if (!(mask >> f->lane & 1u)) fail("%s with mask 0x%08x that does not include the calling lane %d", what, mask, f->lane);
    const unsigned need = mask & w.exists;
    if (need & w.done) fail("%s with mask 0x%08x but lanes 0x%08x of the warp have exited", what, mask, need & w.done);
    const unsigned long long gen = f->ncoll++;
    w.slot[gen & 1][f->lane] = Slot{bits, gen};
    f->state = St::at_warp;
    f->wait_mask = need;
    w.arrived |= 1u << f->lane;
    if ((w.arrived & need) == need) {
        bool same = true;
        for (int l = 0; l < 32; ++l)
            if (need >> l & 1u) same &= b->fibers[f->warp * 32 + l].wait_mask == need;
        if (same) {
            for (int l = 0; l < 32; ++l)
                if (need >> l & 1u) b->fibers[f->warp * 32 + l].state = St::ready;
            w.arrived &= ~need;
        }
    }
    yield_to_scheduler();
    return gen;
}

inline unsigned long long warp_read(unsigned long long gen, int src, unsigned need, const char* what) {
    Fiber* f = tl_fiber;
    if (!(need >> src & 1u))
        fail("%s reads lane %d, which is %s", what, src,
             (tl_block->warps[f->warp].exists >> src & 1u) ? "not in the mask" : "past the end of the block");
    const Slot& s = tl_block->warps[f->warp].slot[gen & 1][src];
    if (s.gen != gen) fail("%s: lane %d is in a different warp collective (divergent warp)", what, src);
    return s.bits;
}

template <class T>
inline unsigned long long to_bits_(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "warp collectives move <= 8 bytes");
    unsigned long long u = 0;
    memcpy(&u, &v, sizeof v);
    return u;
}
template <class T>
inline T from_bits_(unsigned long long u) {
    T v;
    memcpy(&v, &u, sizeof v);
    return v;
}

// src < 0: the caller's own value (CUDA's rule for a source outside the lane's segment)
template <class T>
inline T shuffle_(unsigned mask, T var, int src, const char* what) {
    const unsigned long long gen = warp_arrive(mask, to_bits_(var), what);
    if (src < 0) return var;
    return from_bits_<T>(warp_read(gen, src, tl_fiber->wait_mask, what));
}

inline int lane_() { return tl_fiber->lane; }

}  // namespace cuda_cpu

// --------------------------------------------------------------------------------------------- device API
inline void __syncthreads() { ::cuda_cpu::syncthreads_(); }
inline int __syncthreads_count(int p) { return ::cuda_cpu::syncthreads_reduce_(p, 0); }
inline int __syncthreads_and(int p) { return ::cuda_cpu::syncthreads_reduce_(p, 1); }
inline int __syncthreads_or(int p) { return ::cuda_cpu::syncthreads_reduce_(p, 2); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::cuda_cpu::warp_arrive(mask, 0, "__syncwarp"); }

template <class T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32) {
    const int lane = ::cuda_cpu::lane_(), seg = lane & ~(width - 1);
    return ::cuda_cpu::shuffle_(mask, var, seg + (srcLane & (width - 1)), "__shfl_sync");
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32) {
    const int lane = ::cuda_cpu::lane_(), seg = lane & ~(width - 1), src = lane ^ laneMask;
    return ::cuda_cpu::shuffle_(mask, var, src >= seg + width ? -1 : src, "__shfl_xor_sync");
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    const int lane = ::cuda_cpu::lane_(), seg = lane & ~(width - 1), src = lane + (int)delta;
    return ::cuda_cpu::shuffle_(mask, var, src >= seg + width ? -1 : src, "__shfl_down_sync");
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    const int lane = ::cuda_cpu::lane_(), seg = lane & ~(width - 1), src = lane - (int)delta;
    return ::cuda_cpu::shuffle_(mask, var, src < seg ? -1 : src, "__shfl_up_sync");
}

namespace cuda_cpu {
// every lane of the mask gets f(values of the mask's lanes)
template <class T, class F>
inline T gather_(unsigned mask, T v, T init, F f, const char* what) {
    const unsigned long long gen = warp_arrive(mask, to_bits_(v), what);
    const unsigned need = tl_fiber->wait_mask;
    T acc = init;
    for (int l = 0; l < 32; ++l)
        if (need >> l & 1u) acc = f(acc, from_bits_<T>(warp_read(gen, l, need, what)), l);
    return acc;
}
}  // namespace cuda_cpu

inline unsigned __ballot_sync(unsigned mask, int pred) {
    return ::cuda_cpu::gather_<unsigned>(mask, pred != 0, 0u,
                                         [](unsigned a, unsigned p, int l) { return a | (p << l); }, "__ballot_sync");
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) {
    return ::cuda_cpu::gather_<int>(mask, pred != 0, 1, [](int a, int p, int) { return a & p; }, "__all_sync");
}
inline unsigned __activemask() {
    const ::cuda_cpu::Warp& w = ::cuda_cpu::tl_block->warps[::cuda_cpu::tl_fiber->warp];
    return w.exists & ~w.done;
}
template <class T>
inline T __reduce_add_sync(unsigned mask, T v) {
    return ::cuda_cpu::gather_<T>(mask, v, T(0), [](T a, T x, int) { return a + x; }, "__reduce_add_sync");
}
template <class T>
inline T __reduce_min_sync(unsigned mask, T v) {
    return ::cuda_cpu::gather_<T>(mask, v, v, [](T a, T x, int) { return x < a ? x : a; }, "__reduce_min_sync");
}
template <class T>
inline T __reduce_max_sync(unsigned mask, T v) {
    return ::cuda_cpu::gather_<T>(mask, v, v, [](T a, T x, int) { return a < x ? x : a; }, "__reduce_max_sync");
}

#include "cuda_cpu_launch.hpp"
