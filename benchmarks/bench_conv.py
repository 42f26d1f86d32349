"""`pyml bench conv2d`: conv2d forward and backward, pyml backends vs torch on CPU.

Peer timing: forward = torch.nn.functional.conv2d under no_grad; backward =
torch.ops.aten.convolution_backward called directly (grad input, weight and bias; the
same work pyml.conv2d_backward does), so no autograd graph or forward is in the timing.
torch uses the same thread count as pyml (torch.set_num_threads).
"""
from __future__ import annotations

import numpy as np

import pyml

from ._harness import Case, Runner

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
    fwd, bwd = [], []
    for be in backends:
        fwd.append(Runner(f"pyml[{be}]", "pyml",
                          lambda be=be: (lambda: pyml.conv2d(x, w, b, padding=pad, backend=be))))
        bwd.append(Runner(f"pyml[{be}]", "pyml",
                          lambda be=be: (lambda: pyml.conv2d_backward(gy, x, w, padding=pad,
                                                                      backend=be))))
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
    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {size!r}")
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
