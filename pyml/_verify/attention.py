"""`pyml verify attention`: forward and backward of every attention kernel against the float64
reference, float32 and float64, plain and causal + key-padding mask (the tolerance rule of
pyml._verify)."""
from __future__ import annotations

import numpy as np

from .. import _attention_driver as drv
from ..attention import attention, attention_backward
from ..reference import attention as ref
from . import Row, row


def checks(backend: str, rng: np.random.Generator) -> list[Row]:
    """(check, max error, tolerance) rows; raises BackendUnavailableError without a kernel."""
    drv.FORWARD.resolve(backend)
    rows = []
    for dtype in (np.float32, np.float64):
        for causal, masked in ((False, False), (True, True)):
            q64, k64, v64 = (rng.standard_normal((2, 3, 19, 8)) for _ in range(3))
            mask = rng.random((2, 1, 1, 19)) > 0.2 if masked else None
            o64, _ = ref.attention_forward(q64, k64, v64, mask, causal)
            q, k, v = (a.astype(dtype) for a in (q64, k64, v64))
            on, _ = ref.attention_forward(q, k, v, mask, causal)
            out, lse = attention(q, k, v, mask, causal, return_lse=True, backend=backend)
            tag = f"{'causal ' if causal else ''}{'masked ' if masked else ''}{np.dtype(dtype).name}"
            rows.append(row(f"attention forward {tag}", out, o64, on, dtype))
            do64 = rng.standard_normal(o64.shape)
            g64 = ref.attention_backward(do64, q64, k64, v64, mask, causal)
            gn = ref.attention_backward(do64.astype(dtype), q, k, v, mask, causal)
            g = attention_backward(do64.astype(dtype), q, k, v, out, lse, mask, causal, backend=backend)
            for name, a, r, n in zip(("dq", "dk", "dv"), g, g64, gn):
                rows.append(row(f"attention backward {name} {tag}", a, r, n, dtype))
    return rows
