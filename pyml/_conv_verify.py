"""`pyml verify` / `pyml warmup` checks for the convolution loop: every kernel of a backend on
small float32 and float64 problems against the float64 reference, tolerance as tests/conftest.py."""
from __future__ import annotations

import numpy as np

from . import _conv_driver as drv
from .reference import conv as ref


def _tol(ref64, naive, dtype) -> float:
    err = float(np.max(np.abs(np.asarray(naive, np.float64) - ref64)))
    return 4.0 * (err + float(np.finfo(dtype).eps) * max(1.0, float(np.max(np.abs(ref64)))))


def _verify(backend: str, rng: np.random.Generator) -> list[tuple[str, float, float]]:
    """(check, max error, tolerance) rows; raises BackendUnavailableError without a kernel."""
    from .conv import avg_pool2d, avg_pool2d_backward, conv2d, conv2d_backward, max_pool2d
    from .pool import max_pool2d_backward

    drv.CONV2D.resolve(backend)
    rows = []
    # (N, C, H, W), (O, Cg, KH, KW), stride, padding, dilation, groups: one im2col case, one
    # grouped strided dilated case and one pointwise (plain GEMM) case.
    cases = [((2, 3, 9, 8), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1),
             ((1, 4, 11, 10), (6, 2, 3, 2), (2, 1), (2, 0), (2, 1), 2),
             ((2, 5, 4, 3), (3, 5, 1, 1), (1, 1), (0, 0), (1, 1), 1)]
    for dtype in (np.float32, np.float64):
        for xs, ws, s, p, d, g in cases:
            x64, w64 = rng.standard_normal(xs), rng.standard_normal(ws)
            b64 = rng.standard_normal(ws[0])
            x, w, b = x64.astype(dtype), w64.astype(dtype), b64.astype(dtype)
            y64 = ref.conv2d(x64, w64, b64, s, p, d, g)
            naive = ref.conv2d(x, w, b, s, p, d, g)
            y = conv2d(x, w, b, s, p, d, g, backend=backend)
            name = f"conv2d k{ws[2]}x{ws[3]} g{g} {np.dtype(dtype).name}"
            rows.append((name, float(np.max(np.abs(y - y64))), _tol(y64, naive, dtype)))
            gy64 = rng.standard_normal(y64.shape)
            r64 = ref.conv2d_backward(gy64, x64, w64, s, p, d, g)
            rn = ref.conv2d_backward(gy64.astype(dtype), x, w, s, p, d, g)
            out = conv2d_backward(gy64.astype(dtype), x, w, s, p, d, g, backend=backend)
            for what, o, r, n in zip(("input", "weight", "bias"), out, r64, rn):
                rows.append((f"{name} grad {what}", float(np.max(np.abs(o - r))), _tol(r, n, dtype)))
        x64 = rng.standard_normal((2, 3, 7, 6))
        x = x64.astype(dtype)
        z, idx = max_pool2d(x, 3, 2, 1, backend=backend)
        z64, _ = ref.max_pool2d(x64, (3, 3), (2, 2), (1, 1))
        rows.append((f"max_pool2d {np.dtype(dtype).name}", float(np.max(np.abs(z - z64))),
                     _tol(z64, z64.astype(dtype), dtype)))
        gz = rng.standard_normal(z.shape).astype(dtype)
        dx = max_pool2d_backward(gz, idx, x.shape, backend=backend)
        dx64 = ref.max_pool2d_backward(gz.astype(np.float64), idx, x.shape)
        rows.append((f"max_pool2d grad {np.dtype(dtype).name}", float(np.max(np.abs(dx - dx64))),
                     _tol(dx64, dx64.astype(dtype), dtype)))
        a = avg_pool2d(x, (3, 2), (2, 1), (1, 0), backend=backend)
        a64 = ref.avg_pool2d(x64, (3, 2), (2, 1), (1, 0))
        rows.append((f"avg_pool2d {np.dtype(dtype).name}", float(np.max(np.abs(a - a64))),
                     _tol(a64, ref.avg_pool2d(x, (3, 2), (2, 1), (1, 0)), dtype)))
        ga = rng.standard_normal(a.shape)
        da = avg_pool2d_backward(ga.astype(dtype), x.shape, (3, 2), (2, 1), (1, 0), backend=backend)
        da64 = ref.avg_pool2d_backward(ga, x.shape, (3, 2), (2, 1), (1, 0))
        rows.append((f"avg_pool2d grad {np.dtype(dtype).name}", float(np.max(np.abs(da - da64))),
                     _tol(da64, ref.avg_pool2d_backward(ga.astype(dtype), x.shape, (3, 2), (2, 1),
                                                        (1, 0)), dtype)))
    return rows
