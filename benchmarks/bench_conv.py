"""`pyml bench conv`: conv2d forward and backward, pyml backends vs torch on CPU, and the
public call end to end (defaults, arrays as a user builds them, validation included).

Peer timing: forward = torch.nn.functional.conv2d under no_grad; backward =
torch.ops.aten.convolution_backward called directly (grad input, weight and bias; the
same work pyml.conv2d_backward does), so no autograd graph or forward is in the timing.
torch uses the same thread count as pyml (torch.set_num_threads).
"""
from __future__ import annotations

import statistics
import time

import numpy as np

import pyml

from ._harness import Case, Runner, check_size

# name -> (N, C, H, W), (O, C, KH, KW), padding
SIZES = {
    "default": [("resnet 3x3", (32, 64, 56, 56), (64, 64, 3, 3), 1),
                ("lenet 5x5", (64, 1, 28, 28), (6, 1, 5, 5), 0)],
    "small": [("resnet 3x3", (4, 64, 28, 28), (64, 64, 3, 3), 1),
              ("lenet 5x5", (64, 1, 28, 28), (6, 1, 5, 5), 0)],
    "large": [("resnet 3x3", (64, 128, 56, 56), (128, 128, 3, 3), 1),
              ("lenet 5x5", (256, 1, 28, 28), (6, 1, 5, 5), 0)],
}


def _pyml_runners(x, w, b, gy, pad, backends):
    """Kernel rows: each backend on pre-built C-contiguous float32 arrays, finiteness check off,
    so the row is the kernel (plus argument checks of a few microseconds)."""
    fwd, bwd = [], []
    for be in backends:
        fwd.append(Runner(f"pyml[{be}]", "pyml",
                          lambda be=be: (lambda: pyml.conv2d(x, w, b, padding=pad, backend=be,
                                                             check_finite=False))))
        bwd.append(Runner(f"pyml[{be}]", "pyml",
                          lambda be=be: (lambda: pyml.conv2d_backward(gy, x, w, padding=pad,
                                                                      backend=be,
                                                                      check_finite=False))))
    return fwd, bwd


def _median_gap(call, kernel, pairs: int = 9) -> float:
    """Seconds ``call`` takes beyond ``kernel`` (median over interleaved pairs, the order
    alternating so neither side always runs on a warmer cache): the setup share of the public
    call, measured through the public API only."""
    gaps = []
    for i in range(pairs):
        first, second = (call, kernel) if i % 2 == 0 else (kernel, call)
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        t2 = time.perf_counter()
        gaps.append((t1 - t0) - (t2 - t1) if first is call else (t2 - t1) - (t1 - t0))
    return max(0.0, statistics.median(gaps))


def _end_to_end_runners(xs, ws, pad, rng):
    """The call a user writes, at its defaults (backend=None, check_finite=True), on arrays as
    a user builds them: float32 NCHW from NumPy, and the same images held NHWC (a transposed,
    non-contiguous view that pyml copies once)."""
    N, C, H, W = xs
    x = rng.standard_normal(xs, dtype=np.float32)
    w = rng.standard_normal(ws, dtype=np.float32)
    b = rng.standard_normal(ws[0], dtype=np.float32)
    x_nhwc = rng.standard_normal((N, H, W, C), dtype=np.float32).transpose(0, 3, 1, 2)
    x_nhwc_c = np.ascontiguousarray(x_nhwc)
    _, O, OH, OW = pyml.conv_output_shape(xs, ws, padding=pad)
    gy = rng.standard_normal((N, O, OH, OW), dtype=np.float32)
    kern = lambda xx: (lambda: pyml.conv2d(xx, w, b, padding=pad, check_finite=False))
    kern_b = lambda xx: (lambda: pyml.conv2d_backward(gy, xx, w, padding=pad, check_finite=False))
    fwd = [Runner("pyml end to end", "pyml",
                  lambda: (lambda: pyml.conv2d(x, w, b, padding=pad)),
                  note="pyml.conv2d(x, w, b, padding=p) at defaults",
                  setup=lambda: _median_gap(lambda: pyml.conv2d(x, w, b, padding=pad), kern(x))),
           Runner("pyml end to end NHWC view", "pyml",
                  lambda: (lambda: pyml.conv2d(x_nhwc, w, b, padding=pad)),
                  note="x = images_nhwc.transpose(0, 3, 1, 2): one copy to NCHW",
                  setup=lambda: _median_gap(lambda: pyml.conv2d(x_nhwc, w, b, padding=pad),
                                            kern(x_nhwc_c)))]
    bwd = [Runner("pyml end to end", "pyml",
                  lambda: (lambda: pyml.conv2d_backward(gy, x, w, padding=pad)),
                  note="pyml.conv2d_backward(gy, x, w, padding=p) at defaults",
                  setup=lambda: _median_gap(lambda: pyml.conv2d_backward(gy, x, w, padding=pad),
                                            kern_b(x)))]
    return fwd, bwd


def _torch_runners(x, w, b, gy, pad):
    import torch

    torch.set_num_threads(pyml.get_num_threads())
    tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, w, b, gy))

    def fwd():
        def call():
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tw, tb, padding=pad)
        return call

    def bwd():
        return lambda: torch.ops.aten.convolution_backward(
            tg, tx, tw, [tw.shape[0]], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1,
            [True, True, True])
    return Runner("torch", "peer", fwd), Runner("torch", "peer", bwd)


def suite(size: str = "default", backends=None, peers=None) -> list[Case]:
    check_size(size)
    if backends is None:
        backends = [be for be in ("cpp", "numba") if pyml.backends()[be] is None]
    rng = np.random.default_rng(0)
    cases = []
    for name, xs, ws, pad in SIZES[size]:
        x = rng.standard_normal(xs, dtype=np.float32)
        w = rng.standard_normal(ws, dtype=np.float32)
        b = rng.standard_normal(ws[0], dtype=np.float32)
        _, O, OH, OW = pyml.conv_output_shape(xs, ws, padding=pad)
        gy = rng.standard_normal((xs[0], O, OH, OW), dtype=np.float32)
        flops = 2.0 * xs[0] * O * OH * OW * ws[1] * ws[2] * ws[3]
        fwd, bwd = _pyml_runners(x, w, b, gy, pad, backends)
        e2e_fwd, e2e_bwd = _end_to_end_runners(xs, ws, pad, np.random.default_rng(1))
        fwd += e2e_fwd
        bwd += e2e_bwd
        if peers is None or "torch" in peers:
            try:
                tf, tb = _torch_runners(x, w, b, gy, pad)
                fwd.append(tf)
                bwd.append(tb)
            except ImportError:
                pass
        problem = f"{name} N={xs[0]} {xs[1]}->{O} {xs[2]}x{xs[3]} float32"
        cases.append(Case("conv2d forward", problem, fwd, flops=flops, roof="sgemm"))
        # backward = grad input + grad weight, each as many FLOPs as the forward
        cases.append(Case("conv2d backward", problem, bwd, flops=2 * flops, roof="sgemm"))
    return cases


def _small():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16, 20, 20), dtype=np.float32)
    w = rng.standard_normal((16, 16, 3, 3), dtype=np.float32)
    return x, w


def test_conv2d_forward_cpp(benchmark):
    x, w = _small()
    y = benchmark(pyml.conv2d, x, w, padding=1, backend="cpp")
    assert y.shape == (8, 16, 20, 20)


def test_conv2d_backward_numba(benchmark):
    x, w = _small()
    gy = np.ones((8, 16, 20, 20), np.float32)
    gx, gw, gb = benchmark(pyml.conv2d_backward, gy, x, w, padding=1, backend="numba")
    assert gx.shape == x.shape and gw.shape == w.shape
