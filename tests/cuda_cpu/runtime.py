"""``RawModule`` / ``RawKernel`` of the stand-in CuPy: the kernel source text is compiled with g++ against the
CPU emulator (build.py) and a launch runs the real kernel on host memory.

A launch does what CuPy's launch does with the arguments (cupy arrays become device pointers; None a null
pointer; a NumPy array of size one and NumPy scalars go by value; a Python int as int64, a float as
float64, a bool as bool; anything else is a TypeError) and then checks what a GPU would not: the argument
count and every argument's size and kind against the kernel's parameter list, each array's dtype against
its pointer's element type, the block against the device limits and ``__launch_bounds__``, and dynamic
shared memory above 48 KiB against ``max_dynamic_shared_size_bytes``. A mismatch is garbage on a GPU, so
here it is an error naming the argument.

Each launch copies every distinct buffer behind the array arguments into guarded memory (a PROT_NONE page
right after its end on even launches, right before its start on odd ones) and back afterwards, so an access
even one element out of bounds faults and is reported. Threads of a block and the blocks themselves run in
forward, reverse or random order (``set_schedule``); "cycle" (the default) rotates through the three.
"""
from __future__ import annotations

import ctypes
import itertools
import threading

import numpy as np

from .build import Library, compile_source

MAX_THREADS = 1024
DEFAULT_SMEM = 48 * 1024
SMEM_OPTIN = 232448  # sm_90: 227 KiB
ORDERS = {"forward": 0, "reverse": 1, "random": 2}


class CUDADriverError(RuntimeError):
    """What CuPy raises when the driver refuses a launch (bad block size, missing kernel, ...)."""


class KernelFault(RuntimeError):
    """The emulator stopped a kernel: out-of-bounds access, undefined warp collective, deadlock."""


class LaunchConfig(ctypes.Structure):
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("shared_mem", ctypes.c_ulonglong),
                ("order", ctypes.c_int), ("seed", ctypes.c_ulonglong)]


_state = {"schedule": "cycle"}
_counter = itertools.count()   # launches: thread order and seed
_placement = itertools.count()  # launches: guard page after the end (even) or before the start (odd)
_lock = threading.Lock()
_modules: dict[str, Library] = {}


def set_schedule(name: str) -> None:
    """Thread order of every following launch: forward, reverse, random or cycle."""
    if name not in (*ORDERS, "cycle"):
        raise ValueError(f"schedule must be one of forward, reverse, random, cycle; got {name!r}")
    _state["schedule"] = name


def _library(code: str) -> Library:
    with _lock:  # one build per source even when threads race for it
        lib = _modules.get(code)
        if lib is None:
            lib = _modules[code] = compile_source(code)
        return lib


class RawModule:
    def __init__(self, code: str | None = None, *, path: str | None = None, options: tuple = (),
                 backend: str = "nvrtc", name_expressions=None, **kwargs):
        if code is None:
            if path is None:
                raise TypeError("RawModule needs code= or path=")
            code = open(path).read()
        if not isinstance(options, tuple):
            raise TypeError(f"options must be a tuple, got {type(options).__name__}")
        self.code, self.options = code, options
        self._lib = _library(code)

    def get_function(self, name: str) -> "RawKernel":
        info = self._lib.kernels.get(name)
        if info is None:
            raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found ({name!r} is not an extern \"C\" "
                                  "kernel of this module)")
        return RawKernel(self._lib, name, info.max_threads)


def _by_value(x, where: str) -> tuple[bytes, str]:
    """CuPy's conversion of a non-array argument: (bytes, kind letter f/i/u/b/s)."""
    if isinstance(x, np.ndarray):
        if x.size != 1:
            raise TypeError(f"{where}: You are trying to pass a numpy.ndarray of shape {x.shape} as a kernel parameter. "
                            "Only numpy.ndarrays of size one can be passed by value.")
        kind = "s" if x.dtype.fields or x.dtype.kind == "V" else x.dtype.kind
        return x.tobytes(), kind
    if isinstance(x, np.generic) and x.dtype.kind in "biufc":
        return x.tobytes(), x.dtype.kind
    if isinstance(x, bool):
        return np.bool_(x).tobytes(), "b"
    if isinstance(x, int):
        return np.int64(x).tobytes(), "i"
    if isinstance(x, float):
        return np.float64(x).tobytes(), "f"
    if isinstance(x, complex):
        return np.complex128(x).tobytes(), "c"
    raise TypeError(f"{where}: Unsupported type {type(x)}")


def _pointee_ok(pointee: str, dt: np.dtype) -> bool:
    kind, size = pointee[0], int(pointee[1:]) if pointee[1:].isdigit() else 0
    if kind in "vp" or pointee == "u1" or pointee == "i1":
        return True  # void* / char*: byte access to anything
    if kind == "s":
        return dt.itemsize == size
    if kind == "f":
        return dt.kind == "f" and dt.itemsize == size
    return dt.kind in "iub" and dt.itemsize == size


def _owner(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class RawKernel:
    def __init__(self, lib: Library, name: str, max_threads: int | None):
        self.name, self._lib, self._bound = name, lib, max_threads
        sig = getattr(lib.dll, f"cuda_cpu_sig__{name}")
        sig.restype = ctypes.c_char_p
        self.params = [p for p in sig().decode().split(",") if p]
        self._run = getattr(lib.dll, f"cuda_cpu_run__{name}")
        self._run.argtypes = [ctypes.POINTER(LaunchConfig), ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        self._run.restype = ctypes.c_int
        # device memory comes from the library that runs the kernel: its fault handler knows the buffers
        self._alloc, self._free = lib.dll.cuda_cpu_alloc, lib.dll.cuda_cpu_free
        self._alloc.restype, self._alloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t, ctypes.c_int, ctypes.c_char_p]
        self._free.argtypes = [ctypes.c_void_p]
        self.max_dynamic_shared_size_bytes = DEFAULT_SMEM
        self.max_threads_per_block = max_threads or MAX_THREADS

    def _config(self, grid, block, shared_mem) -> LaunchConfig:
        for what, t in (("grid", grid), ("block", block)):
            if not isinstance(t, tuple):
                raise TypeError(f"{self.name}: {what} must be a tuple, got {type(t).__name__}")
            if not 1 <= len(t) <= 3 or not all(isinstance(v, (int, np.integer)) for v in t):
                raise TypeError(f"{self.name}: {what} must be 1 to 3 ints, got {t!r}")
        g = [max(1, int(v)) for v in (tuple(grid) + (1, 1))[:3]]  # CuPy clamps to 1 as well
        b = [max(1, int(v)) for v in (tuple(block) + (1, 1))[:3]]
        threads = b[0] * b[1] * b[2]
        if b[0] > 1024 or b[1] > 1024 or b[2] > 64 or threads > MAX_THREADS or g[0] > 2**31 - 1 or max(g[1:]) > 65535:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: {self.name} launched with grid {tuple(g)}, block {tuple(b)}")
        if self._bound is not None and threads > self._bound:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: {self.name} has __launch_bounds__({self._bound}) "
                                  f"but was launched with {threads} threads per block")
        limit = max(DEFAULT_SMEM, min(int(self.max_dynamic_shared_size_bytes), SMEM_OPTIN))
        if shared_mem > limit:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: {self.name} asks for {shared_mem} bytes of dynamic shared "
                                  f"memory; the kernel allows {limit} (set max_dynamic_shared_size_bytes to opt in, "
                                  f"up to {SMEM_OPTIN})")
        n = next(_counter)
        sched = _state["schedule"]
        order = ORDERS[sched] if sched != "cycle" else n % 3
        return LaunchConfig((ctypes.c_uint * 3)(*g), (ctypes.c_uint * 3)(*b), int(shared_mem), order, 0x9E3779B9 + n)

    def __call__(self, grid, block, args, *, shared_mem: int = 0, stream=None, enable_cooperative_groups=False):
        from .fake_cupy import ndarray  # the stand-in's array type

        cfg = self._config(grid, block, int(shared_mem))
        args = tuple(args)
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments ({', '.join(self.params)}), got {len(args)}")
        keep, argv = [], (ctypes.c_void_p * max(1, len(args)))()
        owners: dict[int, list] = {}   # id(owner) -> [owner, low address, nbytes, device copy, bytes if read-only]
        pointers = []                  # (slot, owner id, offset)
        align_end = next(_placement) % 2 == 0
        try:
            for i, (a, p) in enumerate(zip(args, self.params)):
                where = f"argument {i} of {self.name} (parameter {p})"
                if isinstance(a, ndarray) or a is None:
                    if p[0] != "p":
                        raise TypeError(f"{where}: a pointer was passed where the kernel takes a value")
                    if a is None:
                        buf = ctypes.c_void_p(0)
                        keep.append(buf)
                        argv[i] = ctypes.addressof(buf)
                        continue
                    h = a._a
                    if not _pointee_ok(p[1:], h.dtype):
                        raise TypeError(f"{where}: got a {h.dtype} array for a pointer to {p[1:]}")
                    own = _owner(h)
                    if id(own) not in owners:
                        lo, hi = np.lib.array_utils.byte_bounds(own)
                        nbytes = hi - lo
                        label = f"argument {i} of {self.name} ({h.dtype}{list(h.shape)})"
                        d = self._alloc(nbytes, int(align_end), label.encode())
                        if not d:
                            raise MemoryError(f"{where}: cannot map guarded memory")
                        ctypes.memmove(d, lo, nbytes)
                        owners[id(own)] = [own, lo, nbytes, d, bytes(0) if own.flags.writeable else
                                           ctypes.string_at(lo, nbytes)]
                    pointers.append((i, id(own), h.__array_interface__["data"][0] - owners[id(own)][1]))
                    continue
                data, kind = _by_value(a, where)
                want_kind, want_size = p[0], int(p[1:])
                if p[0] == "p":
                    raise TypeError(f"{where}: a {type(a).__name__} was passed where the kernel takes a pointer")
                if len(data) != want_size or (want_kind == "f") != (kind == "f") or (want_kind == "s") != (kind == "s"):
                    raise TypeError(f"{where}: got {type(a).__name__} ({len(data)} bytes, kind {kind}); "
                                    f"on a GPU this argument would be garbage")
                buf = ctypes.create_string_buffer(data, len(data))
                keep.append(buf)
                argv[i] = ctypes.addressof(buf)
            for i, oid, off in pointers:
                buf = ctypes.c_void_p(owners[oid][3] + off)
                keep.append(buf)
                argv[i] = ctypes.addressof(buf)
            err = ctypes.create_string_buffer(2048)
            rc = self._run(ctypes.byref(cfg), argv, err, len(err))
            for own, lo, nbytes, d, before in owners.values():
                if own.flags.writeable:
                    ctypes.memmove(lo, d, nbytes)
                elif ctypes.string_at(d, nbytes) != before:
                    raise KernelFault(f"{self.name} wrote into a read-only array")
            if rc:
                raise KernelFault(f"{self.name}: {err.value.decode(errors='replace')}")
        finally:
            for own, lo, nbytes, d, before in owners.values():
                self._free(d)
