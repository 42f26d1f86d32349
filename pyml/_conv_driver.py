"""Convolution / pooling driver: backend contract, method choice, batching and GEMMs, shared by
every backend. Arguments arrive validated (pyml.conv and pyml.pool do that once); the kernels
are the ``Kernel("conv", ...)`` declarations below, found by rule in each backend's ``conv``
module (pyml.reference.conv, pyml.kernels.numba.conv, pyml._cpp.conv, pyml.kernels.cuda.conv).

Backend contract: "python" (the reference) and "cuda" (direct kernels, kernels/cuda/conv.cu)
compute a whole convolution per call (``conv2d`` / ``conv2d_backward``); numba and cpp
contribute the loops of the method rule below. Pooling kernels share one name and one
output-argument signature on numba, cpp and cuda; the reference returns its result.

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
* everything else: im2col + GEMM (implicit-GEMM style unrolling of the windows), fused per
  image: OpenMP / prange over images; each thread unrolls its image into a private buffer
  (C*KH*KW x OH*OW) and calls single-threaded BLAS ?gemm (cpp: SciPy's, through
  ``pyml._blas.gemm_pointer``; numba: np.dot), BLAS held at one thread by
  ``pyml._blas.single_thread`` for the call. A 1x1 stride-1 unpadded kernel skips the
  unrolling in C++ (the plane *is* the column matrix). Backward per image: dK += dY[b] @
  cols[b]^T into a thread-private sum, dcols = K^T @ dY[b], then col2im. This beat "parallel
  im2col, then multithreaded np.matmul" by ~3x on the big shape: there libgomp's spinning
  workers and OpenBLAS's pool fought for the same 2 cores.
* cpp, stride > 1 and one input channel per group (depthwise, a strided first layer on grey
  images): a direct kernel (output-row SIMD, no unrolling, no GEMM call); it beat
  unroll+GEMM there (depthwise 32ch 28x28 0.23 vs 1.0 ms), with 6 or 16 input channels GEMM
  wins 3x. Backward uses the unroll+GEMM path.
* Non-finite weights with padding (only reachable with check_finite=False): the zero padding
  of im2col / slabs would add 0 * inf = NaN terms the equation does not have, so the forward
  takes the direct kernel (numba and cpp), which skips out-of-bounds taps as the reference
  does, and grad-input takes unroll+GEMM (col2im drops the out-of-bounds taps).
Groups: the rows of cols for group g are contiguous (channel-major), so each group is one
GEMM on a slice; depthwise convolution is C small GEMMs.
"""
from __future__ import annotations

import math

import numpy as np

from ._backend import Kernel, array_module, resolve_backend
from ._blas import gemm_pointer, single_thread
from ._validation import assert_finite

LOOP = "conv"
WHOLE = ("python", "cuda")                 # backends whose conv2d is one whole-convolution kernel
CONV_BACKENDS = ("python", "numba", "cpp", "cuda")
POOL_BACKENDS = ("python", "numba", "cpp", "cuda")

# whole convolutions (reference loops / direct CUDA), same signature on both backends
CONV2D = Kernel(LOOP, "conv2d", WHOLE)
CONV2D_BACKWARD = Kernel(LOOP, "conv2d_backward", WHOLE)
# the loops of the method rule
CONV_FORWARD_GEMM = Kernel(LOOP, "conv_forward_gemm", ("numba", "cpp"))
CONV_BACKWARD_GEMM = Kernel(LOOP, "conv_backward_gemm", ("numba", "cpp"))
CONV_FORWARD_DIRECT = Kernel(LOOP, "conv_forward_direct", ("numba", "cpp"))
CONV_FORWARD_SLAB = Kernel(LOOP, "conv_forward_slab", ("cpp",))
CONV_BACKWARD_SLAB = Kernel(LOOP, "conv_backward_slab", ("cpp",))
# pooling: one name and signature on every compiled backend
MAX_POOL2D = Kernel(LOOP, "max_pool2d", POOL_BACKENDS)
MAX_POOL2D_BACKWARD = Kernel(LOOP, "max_pool2d_backward", POOL_BACKENDS)
AVG_POOL2D = Kernel(LOOP, "avg_pool2d", POOL_BACKENDS)
AVG_POOL2D_BACKWARD = Kernel(LOOP, "avg_pool2d_backward", POOL_BACKENDS)


def resolve(backend, kernel: str, *arrays) -> str:
    """The concrete backend for the public function ``kernel`` (named in its errors)."""
    supported = CONV_BACKENDS if kernel.startswith("conv") else POOL_BACKENDS
    return resolve_backend(backend, LOOP, supported, *arrays, kernel=kernel)


def out_size(W: int, K: int, S: int, P: int, D: int) -> int:
    return (W + 2 * P - D * (K - 1) - 1) // S + 1


def pool_out_size(W: int, K: int, S: int, P: int, D: int, ceil_mode: bool) -> int:
    """Pooling output size as torch computes it: ceil_mode rounds up, but the last window must
    start inside the input or its left padding."""
    out = (W + 2 * P - D * (K - 1) - 1 + (S - 1 if ceil_mode else 0)) // S + 1
    return out - 1 if ceil_mode and (out - 1) * S >= W + P else out


def _geometry(x, w, stride, padding, dilation):
    KH, KW = w.shape[2:]
    OH = out_size(x.shape[2], KH, stride[0], padding[0], dilation[0])
    OW = out_size(x.shape[3], KW, stride[1], padding[1], dilation[1])
    return KH, KW, OH, OW


_EMPTY4 = {np.dtype(t): np.empty((0, 0, 0, 0), t) for t in (np.float32, np.float64)}


def _workspace(n_rows, P, dtype, *extra_shapes):
    """Per-thread scratch for the numba kernels (the C++ kernels allocate their own per thread)."""
    import numba

    # Sized by the largest thread team so numba.get_thread_id() can never index past it.
    T = numba.config.NUMBA_NUM_THREADS
    return [np.empty((T,) + s, dtype) for s in ((n_rows, P),) + extra_shapes]


def _finite_weights(w, padding) -> bool:
    """False when padding would meet a non-finite weight (see the module doc); the weight
    tensor is small, so this scan costs nothing next to the convolution."""
    return padding == (0, 0) or bool(np.isfinite(w).all())


def assert_finite_fast(a, name: str) -> None:
    """Refuse NaN / infinity in one BLAS read pass: a.a is finite iff every element is (the
    squares cannot cancel). Only when it is not (a non-finite value, or an overflowing sum of
    huge finite values) does the exact scan of ``assert_finite`` decide and name the position.
    Measured on the resnet input (25.7 MB float32): 0.5 ms against 0.95 ms for isfinite().all()."""
    v = a.reshape(-1)
    if v.size:
        s = v @ v
        # math.isfinite on the host scalar: a NumPy ufunc call would cost more than the small
        # weight and bias checks themselves (microseconds per call on LeNet-sized problems)
        if math.isfinite(s) if isinstance(s, np.generic) else bool(array_module(a).isfinite(s)):
            return
    assert_finite(a, name)


def conv2d(x, w, bias, stride, padding, dilation, groups, backend, finite=True, check_x=False):
    """Y = K (*) X + bias by the method rule above. ``finite``: w and bias were checked finite;
    ``check_x``: refuse a non-finite x (fused into the cpp slab copies, else one read pass)."""
    if check_x and not (backend == "cpp" and stride == (1, 1)):
        assert_finite_fast(x, "x")
    if backend in WHOLE:
        return CONV2D.get(backend)(x, w, bias, stride, padding, dilation, groups)
    N, C = x.shape[:2]
    O = w.shape[0]
    KH, KW, OH, OW = _geometry(x, w, stride, padding, dilation)
    y = np.empty((N, O, OH, OW), dtype=x.dtype)
    b = bias if bias is not None else np.empty(0, x.dtype)
    if not (finite or _finite_weights(w, padding)):
        CONV_FORWARD_DIRECT.get(backend)(x, w, b, bias is not None, y, *stride, *padding,
                                         *dilation, groups)
        return y
    if backend == "cpp" and stride == (1, 1):  # padded-slab GEMM, no BLAS (see module doc)
        if not CONV_FORWARD_SLAB.get(backend)(x, w, b, bias is not None, y, *padding, *dilation,
                                              groups) and check_x:
            assert_finite(x, "x")  # the slab copies saw a NaN / inf: name its position
        return y
    if backend == "cpp" and w.shape[1] == 1:  # one input channel per group: direct
        CONV_FORWARD_DIRECT.get(backend)(x, w, b, bias is not None, y, *stride, *padding,
                                         *dilation, groups)
        return y
    kernel = CONV_FORWARD_GEMM.get(backend)
    with single_thread(backend):  # one thread pool at a time (see module doc)
        if backend == "cpp":
            kernel(x, w, b, bias is not None, y, KH, KW, *stride, *padding, *dilation, groups,
                   gemm_pointer(x.dtype))
        else:
            (ws,) = _workspace(C * KH * KW, OH * OW, x.dtype)
            kernel(x, w.reshape(O, -1), b, bias is not None, y.reshape(N, O, -1), ws, KH, KW,
                   *stride, *padding, *dilation, groups)
    return y


def conv2d_backward(gy, x, w, stride, padding, dilation, groups, needs, backend, finite=True):
    """(dX, dK, dbias) for the needed ones (None otherwise), reusing the forward unrolling."""
    need_dx, need_dw = "input" in needs, "weight" in needs
    if backend in WHOLE:
        gx, gw, gb = CONV2D_BACKWARD.get(backend)(gy, x, w, stride, padding, dilation, groups)
        return (gx if need_dx else None), (gw if need_dw else None), (gb if "bias" in needs else None)
    if not finite and need_dw and padding != (0, 0) and not np.isfinite(gy).all():
        # dK sums dY * X over in-bounds taps only; the unrolled zero padding would turn an
        # infinite dY into NaN there. No compiled kernel skips those taps: refuse.
        raise ValueError("grad_out contains NaN or infinity and padding is nonzero: the "
                         f"{backend} grad-weight kernel would add 0 * inf terms the reference "
                         "does not have; use backend='python' or finite grad_out")
    N, C = x.shape[:2]
    O = w.shape[0]
    KH, KW, OH, OW = _geometry(x, w, stride, padding, dilation)
    Og, Kg = O // groups, w[0].size
    db = gy.sum(axis=(0, 2, 3)) if "bias" in needs else None
    slab_ok = not need_dx or (dilation[0] * (KH - 1) >= padding[0]
                              and dilation[1] * (KW - 1) >= padding[1]
                              and (finite or _finite_weights(w, padding)))
    if backend == "cpp" and stride == (1, 1) and slab_ok:
        dx = np.empty_like(x) if need_dx else _EMPTY4[x.dtype]
        dw = np.empty_like(w) if need_dw else _EMPTY4[x.dtype]
        if need_dx or need_dw:
            CONV_BACKWARD_SLAB.get(backend)(gy, x, w, dx, need_dx, dw, need_dw, *padding,
                                            *dilation, groups)
        return (dx if need_dx else None), (dw if need_dw else None), db
    if not (need_dx or need_dw):
        return None, None, db
    dx = np.empty_like(x) if need_dx else _EMPTY4[x.dtype]
    kernel = CONV_BACKWARD_GEMM.get(backend)
    with single_thread(backend):
        if backend == "cpp":
            dw = np.empty_like(w) if need_dw else _EMPTY4[x.dtype]
            kernel(gy, x, w, dx, need_dx, dw, need_dw, KH, KW, *stride, *padding, *dilation,
                   groups, gemm_pointer(x.dtype))
        else:
            ws, dws, dwt, tmp = _workspace(C * KH * KW, OH * OW, x.dtype,
                                           (C * KH * KW, OH * OW), (O, Kg), (Og, Kg))
            dwt[:] = 0
            kernel(gy.reshape(N, O, -1), x, w.reshape(O, Kg), dx, dwt, ws, dws, tmp, need_dx,
                   need_dw, KH, KW, *stride, *padding, *dilation, groups)
            dw = dwt.sum(axis=0).reshape(w.shape)
    return (dx if need_dx else None), (dw if need_dw else None), db


def max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, out_hw, backend):
    """(z, indices) of max pooling; ``out_hw`` the output plane size from the API layer
    (ceil_mode only changes that size, so the compiled kernels never see it)."""
    if backend == "python":
        return MAX_POOL2D.get(backend)(x, kernel, stride, padding, dilation, ceil_mode)
    xp = array_module(x)
    z = xp.empty(x.shape[:2] + tuple(out_hw), dtype=x.dtype)
    idx = xp.empty(z.shape, dtype=np.int64)
    MAX_POOL2D.get(backend)(x, z, idx, *kernel, *stride, *padding, *dilation)
    return z, idx


def max_pool2d_backward(gz, idx, shape, backend):
    if backend == "python":
        return MAX_POOL2D_BACKWARD.get(backend)(gz, idx, shape)
    dx = array_module(gz).empty(shape, dtype=gz.dtype)
    MAX_POOL2D_BACKWARD.get(backend)(gz, idx, dx)
    return dx


def avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor, out_hw, backend):
    """Mean pooling; ``divisor`` 0 = no divisor_override (the kernels' encoding of None)."""
    if backend == "python":
        return AVG_POOL2D.get(backend)(x, kernel, stride, padding, ceil_mode, count_include_pad,
                                       divisor or None)
    z = array_module(x).empty(x.shape[:2] + tuple(out_hw), dtype=x.dtype)
    AVG_POOL2D.get(backend)(x, z, *kernel, *stride, *padding, count_include_pad, divisor)
    return z


def avg_pool2d_backward(gz, shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor,
                        backend):
    if backend == "python":
        return AVG_POOL2D_BACKWARD.get(backend)(gz, shape, kernel, stride, padding, ceil_mode,
                                                count_include_pad, divisor or None)
    dx = array_module(gz).empty(shape, dtype=gz.dtype)
    AVG_POOL2D_BACKWARD.get(backend)(gz, dx, *kernel, *stride, *padding, count_include_pad,
                                     divisor)
    return dx
