"""`pyml verify` / `pyml warmup` checks of the conv loop: conv2d forward and backward and
max / average pooling forward and backward of one backend, on small float32 and float64
problems, against the float64 reference (pyml.reference.conv), with THE tolerance rule."""
from __future__ import annotations

import numpy as np

from .. import _conv_driver as drv
from ..conv import conv2d, conv2d_backward
from ..pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from ..reference import conv as ref
from . import Row, row

# (N, C, H, W), (O, Cg, KH, KW), stride, padding, dilation, groups: one im2col case, one
# grouped strided dilated case and one pointwise (plain GEMM) case.
CASES = [((2, 3, 9, 8), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1),
         ((1, 4, 11, 10), (6, 2, 3, 2), (2, 1), (2, 0), (2, 1), 2),
         ((2, 5, 4, 3), (3, 5, 1, 1), (1, 1), (0, 0), (1, 1), 1)]


def _conv_rows(backend, rng, dtype) -> list[Row]:
    rows = []
    for xs, ws, s, p, d, g in CASES:
        x64, w64 = rng.standard_normal(xs), rng.standard_normal(ws)
        b64 = rng.standard_normal(ws[0])
        x, w, b = x64.astype(dtype), w64.astype(dtype), b64.astype(dtype)
        name = f"conv2d k{ws[2]}x{ws[3]} g{g} {np.dtype(dtype).name}"
        y64 = ref.conv2d(x64, w64, b64, s, p, d, g)
        rows.append(row(name, conv2d(x, w, b, s, p, d, g, backend=backend), y64,
                        ref.conv2d(x, w, b, s, p, d, g), dtype))
        gy64 = rng.standard_normal(y64.shape)
        r64 = ref.conv2d_backward(gy64, x64, w64, s, p, d, g)
        naive = ref.conv2d_backward(gy64.astype(dtype), x, w, s, p, d, g)
        out = conv2d_backward(gy64.astype(dtype), x, w, s, p, d, g, backend=backend)
        for what, o, r, n in zip(("input", "weight", "bias"), out, r64, naive):
            rows.append(row(f"{name} grad {what}", o, r, n, dtype))
    return rows


def _pool_rows(backend, rng, dtype) -> list[Row]:
    name = np.dtype(dtype).name
    x64 = rng.standard_normal((2, 3, 7, 6))
    x = x64.astype(dtype)
    z, idx = max_pool2d(x, 3, 2, 1, backend=backend)
    z64, _ = ref.max_pool2d(x64, (3, 3), (2, 2), (1, 1))
    rows = [row(f"max_pool2d {name}", z, z64, z64.astype(dtype), dtype)]
    gz = rng.standard_normal(z.shape).astype(dtype)
    dx64 = ref.max_pool2d_backward(gz.astype(np.float64), idx, x.shape)
    rows.append(row(f"max_pool2d grad {name}", max_pool2d_backward(gz, idx, x.shape, backend=backend),
                    dx64, dx64.astype(dtype), dtype))
    k, s, p = (3, 2), (2, 1), (1, 0)
    a64 = ref.avg_pool2d(x64, k, s, p)
    rows.append(row(f"avg_pool2d {name}", avg_pool2d(x, k, s, p, backend=backend), a64,
                    ref.avg_pool2d(x, k, s, p), dtype))
    ga = rng.standard_normal(a64.shape)
    rows.append(row(f"avg_pool2d grad {name}",
                    avg_pool2d_backward(ga.astype(dtype), x.shape, k, s, p, backend=backend),
                    ref.avg_pool2d_backward(ga, x.shape, k, s, p),
                    ref.avg_pool2d_backward(ga.astype(dtype), x.shape, k, s, p), dtype))
    return rows


def checks(backend: str, rng: np.random.Generator) -> list[Row]:
    """(check, max error, tolerance) rows; raises BackendUnavailableError without a kernel."""
    drv.resolve(backend, "conv2d")
    rows: list[Row] = []
    for dtype in (np.float32, np.float64):
        rows += _conv_rows(backend, rng, dtype)
        rows += _pool_rows(backend, rng, dtype)
    return rows
