"""Compile CUDA C++ source text with g++ into a shared library that runs its kernels on the CPU.

The source is compiled unchanged except for two mechanical steps that C++ cannot express through a header:
inline PTX (``asm("cvt..." : "=f"(x) : "h"(y))``) becomes a call ``cuda_cpu::ptx("cvt...", x, y)`` that the
emulator implements for the instructions pyml uses, and the dynamic shared memory (``extern __shared__ T
name[]``) gets a definition. Every ``extern "C" __global__`` kernel gets two exported host functions,
``cuda_cpu_sig__<name>`` (its parameter list as text) and ``cuda_cpu_run__<name>`` (the launcher); the
kernels are found in the preprocessed source, so kernels stamped out by macros count too.

Libraries are cached by a hash of the source, the emulator's headers and the flags; ``CUDA_CPU_SANITIZE=address``
builds them with AddressSanitizer (the process must then preload libasan).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADERS = ("cuda_cpu.hpp", "cuda_cpu_sched.hpp", "cuda_cpu_launch.hpp")


class CompileError(RuntimeError):
    """g++ rejected the kernel source (its diagnostics are in the message)."""


@dataclass(frozen=True)
class KernelInfo:
    name: str
    max_threads: int | None  # __launch_bounds__ maxThreadsPerBlock, when given


def sanitize() -> str:
    return os.environ.get("CUDA_CPU_SANITIZE", "")


def flags() -> list[str]:
    out = ["-std=c++17", "-O1", "-fPIC", "-shared", "-fvisibility=hidden", "-Wno-unknown-pragmas",
           "-Wno-attributes", "-fno-extern-tls-init", f"-I{HERE}", f"-I{HERE / 'include'}", "-include", "cuda_cpu.hpp"]
    if sanitize():
        out += [f"-fsanitize={sanitize()}", "-fno-omit-frame-pointer", "-g"]
    return out


def cache_dir() -> Path:
    d = Path(os.environ.get("CUDA_CPU_CACHE") or Path(tempfile.gettempdir()) / f"pyml-cuda-cpu-{os.getuid()}")
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---------------------------------------------------------------------------------- source steps
_STR = r'"(?:[^"\\]|\\.)*"'
_ASM = re.compile(r"\basm\s*(?:volatile\s*|__volatile__\s*)?\(\s*((?:" + _STR + r"\s*)+)(.*?)\)\s*;", re.S)


def _split_top(text: str) -> list[str]:
    """Comma-separated items of ``text`` at bracket depth 0."""
    items, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        items.append(cur)
    return [i.strip() for i in items]


def _operands(section: str) -> list[str]:
    out = []
    for item in _split_top(section):
        m = re.fullmatch(r'\s*"[^"]*"\s*\((.*)\)\s*', item, re.S)
        if not m:
            raise CompileError(f"cannot read the inline PTX operand {item!r}")
        out.append(m.group(1))
    return out


def translate_asm(code: str) -> str:
    """``asm(tmpl : outs : ins)`` -> ``::cuda_cpu::ptx(tmpl, outs..., ins...)``."""
    def repl(m: re.Match) -> str:
        tmpl = m.group(1).strip()
        rest = m.group(2)
        parts = rest.split(":")[1:] if rest.strip() else []
        outs = _operands(parts[0]) if len(parts) > 0 else []
        ins = _operands(parts[1]) if len(parts) > 1 else []
        return f"::cuda_cpu::ptx({', '.join([tmpl] + outs + ins)});"
    return _ASM.sub(repl, code)


def preprocess(code: str) -> str:
    """The source after the preprocessor, CUDA keywords left as words (nothing of the emulator included)."""
    res = subprocess.run(["g++", "-E", "-P", "-x", "c++", "-std=c++17", "-DCUDA_CPU_SCAN", f"-I{HERE / 'include'}", "-"],
                         input=code, capture_output=True, text=True)
    if res.returncode:
        raise CompileError(res.stderr)
    return res.stdout


_KERNEL = re.compile(r"__global__\s+(?:__launch_bounds__\s*\(([^)]*)\)\s*)?void\s+"
                     r"(?:__launch_bounds__\s*\(([^)]*)\)\s*)?(\w+)\s*\(")
_EXTERN_SMEM = re.compile(r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?([A-Za-z_][\w\s:]*?)\s*"
                          r"(?:__align__\s*\(\s*\d+\s*\)\s*)?\b(\w+)\s*\[\s*\]\s*;")


def _extern_c_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in re.finditer(r'extern\s+"C"\s*\{', text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        spans.append((m.end(), i))
    return spans


def scan(pre: str) -> tuple[list[KernelInfo], dict[str, str]]:
    """The extern "C" kernels of preprocessed source, and its dynamic shared memory names -> element type."""
    spans = _extern_c_spans(pre)
    kernels = []
    for m in _KERNEL.finditer(pre):
        before = pre[max(0, m.start() - 40):m.start()]
        linked = re.search(r'extern\s+"C"\s*$', before) or any(a <= m.start() < b for a, b in spans)
        if not linked:
            continue  # a templated or C++-linkage kernel: CuPy needs name expressions for those
        bound = m.group(1) or m.group(2)
        kernels.append(KernelInfo(m.group(3), int(_split_top(bound)[0], 0) if bound else None))
    smem = {m.group(2): " ".join(m.group(1).split()) for m in _EXTERN_SMEM.finditer(pre)}
    return kernels, smem


def generated(kernels: list[KernelInfo], smem: dict[str, str]) -> str:
    out = ["\n// ---- generated by tests/cuda_cpu/build.py ----"]
    for name, typ in smem.items():
        out.append(f"thread_local __attribute__((aligned(64))) {typ} {name}"
                   f"[(::cuda_cpu::kSmemMax + ::cuda_cpu::kCanary) / sizeof({typ})];")
        out.append(f"static ::cuda_cpu::RegisterSmem cuda_cpu_reg_{name}"
                   f"([]() {{ return (unsigned char*){name}; }});")
    for k in kernels:
        out.append(f'CUDA_CPU_EXPORT const char* cuda_cpu_sig__{k.name}() {{ return ::cuda_cpu::signature(&{k.name}); }}')
        out.append(f"CUDA_CPU_EXPORT int cuda_cpu_run__{k.name}(const ::cuda_cpu::LaunchConfig* c, void** a, char* e,"
                   f" size_t n) {{ return ::cuda_cpu::launch(&{k.name}, c, a, e, n); }}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------- library
@dataclass
class Library:
    path: Path
    kernels: dict[str, KernelInfo]
    dll: ctypes.CDLL


def _digest(code: str) -> str:
    h = hashlib.sha256(code.encode())
    for name in HEADERS:
        h.update((HERE / name).read_bytes())
    h.update(Path(__file__).read_bytes())
    h.update(" ".join(flags()).encode())
    return h.hexdigest()[:24]


def compile_source(code: str) -> Library:
    """Build (or take from the cache) the library of ``code`` and load it."""
    pre = preprocess(code)
    kernels, smem = scan(pre)
    if not kernels:
        raise CompileError('no extern "C" __global__ kernel in the source')
    digest = _digest(code)
    so = cache_dir() / f"{digest}.so"
    if not so.exists():
        src = cache_dir() / f"{digest}.cpp"
        src.write_text(translate_asm(code) + generated(kernels, smem))
        tmp = so.with_suffix(f".{os.getpid()}.tmp")
        res = subprocess.run(["g++", *flags(), "-x", "c++", str(src), "-o", str(tmp)], capture_output=True, text=True)
        if res.returncode:
            raise CompileError(f"g++ failed on the kernel source ({src}):\n{res.stderr[-6000:]}")
        os.replace(tmp, so)  # atomic: a concurrent build of the same source never sees half a file
    return Library(so, {k.name: k for k in kernels}, ctypes.CDLL(str(so)))
