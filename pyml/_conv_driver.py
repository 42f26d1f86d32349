"""Convolution / pooling driver: method choice, batching and GEMMs, shared by every compiled
backend. Only the tight loops (im2col, col2im, pooling) differ per backend; they come from
the KernelTables below. Arguments arrive validated (pyml.conv does that once).

Method rule (measured with `pyml bench conv2d` on the 2-core AVX-512 development machine):

* cpp, stride 1 (any padding, dilation, groups): padded-slab GEMM (csrc/conv_slab.hpp). Per
  (image, block of output rows) task, the rows the block reads are copied zero-padded into a
  slab [C][rows][W + 2*pw]; numbering outputs along the padded width makes every unrolled
  window row a contiguous slice of the slab, so Y_blk = K @ slab-rows runs as a register-
  blocked GEMM (tile_gemm vectors, 8 x 3-vector accumulator tile) with no im2col buffer and
  no BLAS; the few padded-width columns are computed and dropped. Backward: grad-weight by
  the same slab rows against dY (per-thread sums, reduced after the loop), grad-input as the
  forward of dY with the flipped, transposed kernel (padding d*(K-1) - p), grad-bias a NumPy
  sum. When grad-input is needed and p > d*(K-1) (negative transposed padding) the whole
  backward takes the unroll+GEMM path below. Measured (2 threads, same process): resnet 3x3
  forward 17 ms vs 45 ms and backward 40 ms vs 103 ms for unroll+BLAS; LeNet 5x5 forward
  kernel 0.085 ms vs 0.47 ms for the direct kernel (1 thread).
* 1x1 kernel, stride 1, no padding, dilation 1 (numba; cpp for strides > 1 never hits it):
  the input plane *is* the column matrix, so the convolution is one plain GEMM per image,
  Y[b] = K (O, C) @ X[b] (C, H*W); no copy.
* everything else: im2col + GEMM (implicit-GEMM style unrolling of the windows).
  - cpp (stride > 1): fused per image. OpenMP over images; each thread unrolls its image
    into a private buffer (C*KH*KW x OH*OW) and calls single-threaded SciPy ?gemm through
    the cython_blas function pointer (BLAS held to 1 thread by threadpoolctl for the call).
    Backward per image: dK += dY[b] @ cols[b]^T into a thread-private sum,
    dcols = K^T @ dY[b], then col2im. This beat "parallel im2col, then multithreaded
    np.matmul" by ~3x on the big shape: there libgomp's spinning workers and OpenBLAS's
    pool fought for the same 2 cores.
  - numba: the same fused scheme (prange over images, per-thread buffers indexed by
    numba.get_thread_id(), np.dot on 1-thread BLAS). The 1x1 case is unrolled too (a copy),
    the GEMM dominates.
  - cuda: direct convolution (kernels/cuda/conv.cu), one thread per output element.
* cpp, stride > 1 and one input channel per group (C/groups == 1: depthwise, or a strided
  first layer on grey images): forward runs a direct kernel (output-row SIMD, no unrolling,
  no GEMM call); it beat unroll+GEMM there (depthwise 32ch 28x28 0.23 vs 1.0 ms), but with
  6 or 16 input channels GEMM wins 3x. Backward uses the unroll+GEMM path.
Groups: the rows of cols for group g are contiguous (channel-major), so each group is one
GEMM on a slice; depthwise convolution is C small GEMMs.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ._backend import KernelTable, _load

_IMPL = {b: f"{mod}:%s" for b, mod in (("numba", "pyml.kernels.numba.conv"), ("cpp", "pyml._cpp.conv"))}
# conv2d entry per backend: python and cuda are whole convolutions (reference / direct CUDA),
# numba and cpp contribute their fused per-image unroll+GEMM kernels to the driver below.
CONV2D = KernelTable("conv2d", "conv2d", {"python": "pyml.reference.conv:conv2d",
                                          **{b: s % "conv_forward_gemm" for b, s in _IMPL.items()},
                                          "cuda": "pyml._conv_cuda:conv2d"})
CONV2D_BACKWARD = KernelTable("conv2d_backward", "conv2d",
                              {"python": "pyml.reference.conv:conv2d_backward",
                               **{b: s % "conv_backward_gemm" for b, s in _IMPL.items()},
                               "cuda": "pyml._conv_cuda:conv2d_backward"})
MAX_POOL = KernelTable("max_pool2d", "conv2d", {"python": "pyml.reference.conv:max_pool2d",
                                                **{b: s % "max_pool_forward" for b, s in _IMPL.items()}})
MAX_POOL_BWD = KernelTable("max_pool2d_backward", "conv2d",
                           {"python": "pyml.reference.conv:max_pool2d_backward",
                            **{b: s % "max_pool_backward" for b, s in _IMPL.items()}})
AVG_POOL = KernelTable("avg_pool2d", "conv2d", {"python": "pyml.reference.conv:avg_pool2d",
                                                **{b: s % "avg_pool_forward" for b, s in _IMPL.items()}})
AVG_POOL_BWD = KernelTable("avg_pool2d_backward", "conv2d",
                           {"python": "pyml.reference.conv:avg_pool2d_backward",
                            **{b: s % "avg_pool_backward" for b, s in _IMPL.items()}})


def out_size(W: int, K: int, S: int, P: int, D: int) -> int:
    return (W + 2 * P - D * (K - 1) - 1) // S + 1


def _geometry(x, w, stride, padding, dilation):
    KH, KW = w.shape[2:]
    OH = out_size(x.shape[2], KH, stride[0], padding[0], dilation[0])
    OW = out_size(x.shape[3], KW, stride[1], padding[1], dilation[1])
    return KH, KW, OH, OW


@lru_cache(maxsize=None)
def _blas():
    """SciPy's Fortran sgemm/dgemm addresses (PyCapsules of scipy.linalg.cython_blas) and a
    threadpoolctl controller: the C++ kernel runs one single-threaded GEMM per OpenMP thread,
    so BLAS is held to one thread during the call (never two pools on the same cores)."""
    import ctypes

    from scipy.linalg import cython_blas
    from threadpoolctl import ThreadpoolController

    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype, get_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    ptrs = {}
    for dt, name in ((np.dtype(np.float32), "sgemm"), (np.dtype(np.float64), "dgemm")):
        cap = cython_blas.__pyx_capi__[name]
        ptrs[dt] = get_ptr(cap, get_name(cap))
    return ptrs, ThreadpoolController()


_EMPTY4 = {np.dtype(t): np.empty((0, 0, 0, 0), t) for t in (np.float32, np.float64)}


def _slab(name):
    return _load(name, "cpp", f"pyml._cpp.conv:{name}")


def _workspace(n_rows, P, dtype, *extra_shapes):
    """Per-thread scratch for the numba kernels (the C++ kernel allocates its own per thread)."""
    import numba

    # Sized by the largest thread team so numba.get_thread_id() can never index past it.
    T = numba.config.NUMBA_NUM_THREADS
    return [np.empty((T,) + s, dtype) for s in ((n_rows, P),) + extra_shapes]


def conv2d(x, w, bias, stride, padding, dilation, groups, backend):
    """Y = K (*) X + bias by the method rule above with ``backend``'s fused GEMM kernel."""
    N, C = x.shape[:2]
    O = w.shape[0]
    KH, KW, OH, OW = _geometry(x, w, stride, padding, dilation)
    y = np.empty((N, O, OH, OW), dtype=x.dtype)
    b = bias if bias is not None else np.empty(0, x.dtype)
    if backend == "cpp" and stride == (1, 1):  # padded-slab GEMM, no BLAS (see module doc)
        _slab("conv_forward_slab")(x, w, b, bias is not None, y, *padding, *dilation, groups)
        return y
    kernel = CONV2D.get(backend)
    ptrs, ctl = _blas()
    with ctl.limit(limits=1, user_api="blas"):  # one thread pool at a time (see module doc)
        if backend == "cpp" and w.shape[1] == 1:  # one input channel per group: direct
            _load("conv2d_direct", "cpp", "pyml._cpp.conv:conv_forward_direct")(
                x, w, b, bias is not None, y, *stride, *padding, *dilation, groups)
        elif backend == "cpp":
            kernel(x, w, b, bias is not None, y, KH, KW, *stride, *padding, *dilation, groups,
                   ptrs[x.dtype])
        else:
            (ws,) = _workspace(C * KH * KW, OH * OW, x.dtype)
            kernel(x, w.reshape(O, -1), b, bias is not None, y.reshape(N, O, -1), ws, KH, KW,
                   *stride, *padding, *dilation, groups)
    return y


def conv2d_backward(gy, x, w, stride, padding, dilation, groups, needs, backend):
    """(dX, dK, dbias) for the needed ones (None otherwise), reusing the forward unrolling."""
    N, C = x.shape[:2]
    O = w.shape[0]
    KH, KW, OH, OW = _geometry(x, w, stride, padding, dilation)
    Og, Kg = O // groups, w[0].size
    need_dx, need_dw = "input" in needs, "weight" in needs
    db = gy.sum(axis=(0, 2, 3)) if "bias" in needs else None
    if backend == "cpp" and stride == (1, 1) and not (
            need_dx and (dilation[0] * (KH - 1) < padding[0] or dilation[1] * (KW - 1) < padding[1])):
        dx = np.empty_like(x) if need_dx else _EMPTY4[x.dtype]
        dw = np.empty_like(w) if need_dw else _EMPTY4[x.dtype]
        if need_dx or need_dw:
            _slab("conv_backward_slab")(gy, x, w, dx, need_dx, dw, need_dw, *padding, *dilation,
                                        groups)
        return (dx if need_dx else None), (dw if need_dw else None), db
    if not (need_dx or need_dw):
        return None, None, db
    dx = np.empty_like(x) if need_dx else np.empty((0, 0, 0, 0), x.dtype)
    kernel = CONV2D_BACKWARD.get(backend)
    ptrs, ctl = _blas()
    with ctl.limit(limits=1, user_api="blas"):
        if backend == "cpp":
            dw = np.empty_like(w) if need_dw else np.empty((0, 0, 0, 0), x.dtype)
            kernel(gy, x, w, dx, need_dx, dw, need_dw, KH, KW, *stride, *padding, *dilation,
                   groups, ptrs[x.dtype])
        else:
            ws, dws, dwt, tmp = _workspace(C * KH * KW, OH * OW, x.dtype,
                                           (C * KH * KW, OH * OW), (O, Kg), (Og, Kg))
            dwt[:] = 0
            kernel(gy.reshape(N, O, -1), x, w.reshape(O, Kg), dx, dwt, ws, dws, tmp, need_dx,
                   need_dw, KH, KW, *stride, *padding, *dilation, groups)
            dw = dwt.sum(axis=0).reshape(w.shape)
    return (dx if need_dx else None), (dw if need_dw else None), db


def max_pool2d(x, kernel, stride, padding, backend):
    N, C, H, W = x.shape
    OH, OW = out_size(H, kernel[0], stride[0], padding[0], 1), out_size(W, kernel[1], stride[1], padding[1], 1)
    z = np.empty((N, C, OH, OW), dtype=x.dtype)
    idx = np.empty((N, C, OH, OW), dtype=np.int64)
    MAX_POOL.get(backend)(x, z, idx, *kernel, *stride, *padding)
    return z, idx


def max_pool2d_backward(gz, idx, shape, backend):
    dx = np.empty(shape, dtype=gz.dtype)
    MAX_POOL_BWD.get(backend)(gz, idx, dx)
    return dx


def avg_pool2d(x, kernel, stride, padding, backend):
    N, C, H, W = x.shape
    OH, OW = out_size(H, kernel[0], stride[0], padding[0], 1), out_size(W, kernel[1], stride[1], padding[1], 1)
    z = np.empty((N, C, OH, OW), dtype=x.dtype)
    AVG_POOL.get(backend)(x, z, *kernel, *stride, *padding)
    return z


def avg_pool2d_backward(gz, shape, kernel, stride, padding, backend):
    dx = np.empty(shape, dtype=gz.dtype)
    AVG_POOL_BWD.get(backend)(gz, dx, *kernel, *stride, *padding)
    return dx
