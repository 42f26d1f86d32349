"""`pyml verify attention`: forward and backward of every attention kernel against the float64
reference, float32 and float64: plain, causal + key-padding mask, and grouped-query attention
with dropout (the tolerance rule of pyml._verify)."""
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
        for causal, masked, gqa in ((False, False, False), (True, True, False), (True, False, True)):
            # grouped-query attention with dropout: 3 query heads share one k/v head
            p = 0.25 if gqa else 0.0
            q64 = rng.standard_normal((2, 3, 19, 8))
            k64, v64 = (rng.standard_normal((2, 1 if gqa else 3, 19, 8)) for _ in range(2))
            mask = rng.random((2, 1, 1, 19)) > 0.2 if masked else None
            kw = dict(dropout_p=p, seed=3, enable_gqa=gqa)
            o64, _ = ref.attention_forward(q64, k64, v64, mask, causal, None, p, 3)
            q, k, v = (a.astype(dtype) for a in (q64, k64, v64))
            on, _ = ref.attention_forward(q, k, v, mask, causal, None, p, 3)
            out, lse = attention(q, k, v, mask, causal, return_lse=True, backend=backend, **kw)
            tag = (f"{'causal ' if causal else ''}{'masked ' if masked else ''}{'gqa ' if gqa else ''}"
                   f"{'drop ' if p else ''}{'f32' if dtype == np.float32 else 'f64'}")
            rows.append(row(f"forward {tag}", out, o64, on, dtype))
            do64 = rng.standard_normal(o64.shape)
            g64 = ref.attention_backward(do64, q64, k64, v64, mask, causal, None, p, 3)
            gn = ref.attention_backward(do64.astype(dtype), q, k, v, mask, causal, None, p, 3)
            g = attention_backward(do64.astype(dtype), q, k, v, out, lse, mask, causal, backend=backend, **kw)
            for name, a, r, n in zip(("dq", "dk", "dv"), g, g64, gn):
                rows.append(row(f"backward {name} {tag}", a, r, n, dtype))
    return rows
