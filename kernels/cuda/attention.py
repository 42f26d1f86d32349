# Flash attention on the GPU: out = softmax(Q K^T * scale + M) V with lse, and (dQ, dK, dV).
# Fast: CuPy glue of attention.cu (one block per query / key tile, shared-memory tiles, no atomics).
"""CuPy glue of kernels/cuda/attention.cu: the cuda backend's ``attention_forward`` and
``attention_backward`` with the contract of the CPU kernels (pyml._cpp.attention): the same
arguments from pyml._attention_driver, outputs written in place into the arrays it allocated.
CuPy in, CuPy out; NumPy in, NumPy out (copied to the device and back).

dtypes: float32, float64, float16 and bfloat16 (ml_dtypes on the host; the kernels see its 16-bit
pattern). Accumulation, mask, lse and delta are float32 (float64 for float64 input).
Head dimensions: D and Dv up to MAX_HEAD_DIM = 256, more raises ValueError. The shared memory a
block needs grows with D (see _smem): up to D, Dv = 128 it fits every sm_80+ GPU for 32/16-bit
inputs (<= 99 KiB); D up to 256 needs A100/H100-class opt-in (<= 163 KiB; float64 up to 227 KiB).
Where a device allows less, a ValueError says so before any launch.

Written and compiled (nvcc -ptx sm_80/sm_90) on a machine without a GPU; the GPU tests
(tests/test_attention_cuda.py, @pytest.mark.gpu) exercise it where a device exists.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..._backend import is_cupy
from . import cupy, module, suffix

MAX_HEAD_DIM = 256
_THREADS = 128               # NT in attention.cu
_TILE = 32                   # TILE in attention.cu
_BUCKETS = ((64, 8), (128, 16), (256, 32))  # instantiation: largest max(D, Dv) -> columns per thread (CPT)
_DEFAULT_SMEM = 48 * 1024    # above this a kernel must opt in to more dynamic shared memory


def _bucket(D: int, Dv: int) -> tuple[int, int]:
    w = max(D, Dv)
    if w > MAX_HEAD_DIM:
        raise ValueError(f"the cuda attention kernels take head dimensions up to {MAX_HEAD_DIM}, "
                         f"got D={D} (q, k) and Dv={Dv} (v)")
    return next(b for b in _BUCKETS if w <= b[0])


def _rows(kind: str, cpt: int, acc_bytes: int) -> int:
    """Rows of q (fwd, dq) or k (dkdv) one block owns: 16 * Rows<A, CPT> in attention.cu."""
    per = (4 if cpt <= 16 else 2) if kind == "fwd" else {8: 4, 16: 2, 32: 1}[cpt]
    return 16 * max(1, per // (2 if acc_bytes == 8 else 1))


def _smem(kind: str, D: int, Dv: int, cpt: int, acc_bytes: int) -> int:
    """Dynamic shared memory (bytes) of one block: the carve-up at the top of each *_impl."""
    ldk, ldv, ldp, T = D | 1, Dv | 1, _TILE + 1, _TILE
    R = _rows(kind, cpt, acc_bytes)
    if kind == "fwd":
        n = R * ldk + T * ldk + T * Dv + R * ldp
    elif kind == "dkdv":
        n = R * ldk + R * ldv + T * ldk + T * ldv + 2 * R * ldp + 2 * T
    else:
        n = R * ldk + R * ldv + T * ldk + T * ldv + R * ldp
    return n * acc_bytes


@lru_cache(maxsize=None)
def _smem_limit(device_id: int) -> int | None:
    return cupy().cuda.Device(device_id).attributes.get("MaxSharedMemoryPerBlockOptin")


def _launch(kind: str, dtype, D: int, Dv: int, BH: int, N: int, args: tuple) -> None:
    cp = cupy()
    dmax, cpt = _bucket(D, Dv)
    name = np.dtype(dtype).name
    acc_bytes = 8 if name == "float64" else 4
    smem = _smem(kind, D, Dv, cpt, acc_bytes)
    entry = {"fwd": "attention_fwd", "dkdv": "attention_bwd_dkdv", "dq": "attention_bwd_dq"}[kind]
    kern = module("attention").get_function(f"{entry}_{suffix(dtype)}_{dmax}")
    if smem > _DEFAULT_SMEM:
        limit = _smem_limit(cp.cuda.Device().id)
        if limit is not None and smem > limit:
            raise ValueError(f"cuda attention ({entry}) with D={D}, Dv={Dv} in {name} needs {smem // 1024} KiB "
                             f"of shared memory per block; this device allows {limit // 1024} KiB. "
                             "Use float32/float16/bfloat16 or a smaller head dimension.")
        kern.max_dynamic_shared_size_bytes = smem
    rows = _rows(kind, cpt, acc_bytes)
    grid = BH * ((N + rows - 1) // rows)
    kern((grid,), (_THREADS,), args, shared_mem=smem)


def _is_bf16(dtype) -> bool:
    return np.dtype(dtype).name == "bfloat16"


def _device(x):
    """x on the device, C-contiguous; host bfloat16 travels as its uint16 bit pattern."""
    cp = cupy()
    if is_cupy(x):
        return cp.ascontiguousarray(x)
    x = np.ascontiguousarray(x)
    return cp.asarray(x.view(np.uint16) if _is_bf16(x.dtype) else x)


def _target(dst):
    """Where a kernel writes dst: dst itself on the device, a device buffer for a host array."""
    if is_cupy(dst):
        return dst
    return cupy().empty(dst.shape, np.uint16 if _is_bf16(dst.dtype) else dst.dtype)


def _finish(dst, buf) -> None:
    """Copy a device buffer back into the host array dst (no-op when the kernel wrote dst)."""
    if buf is not dst:
        host = buf.get()
        (dst.view(np.uint16) if _is_bf16(dst.dtype) else dst)[...] = host


def _scalars(q, k, v, msb, msh, msq, has_mask, causal, scale, dropout_p, seed):
    """The kernels' scalar arguments; dropout as in csrc/attention.cpp: threshold = floor(p * 2^24)
    on the top 24 hash bits, the seed's 64 bits as given (an int64 from the driver)."""
    B, H, Nq, D = q.shape
    Hk, Nk, Dv = k.shape[1], k.shape[2], v.shape[3]
    acc = np.float64 if q.dtype == np.float64 else np.float32
    tail = (np.int64(msb), np.int64(msh), np.int64(msq), np.int32(bool(has_mask)), np.int32(bool(causal)),
            acc(scale), np.int32(H), np.int32(Hk), np.int32(Nq), np.int32(Nk), np.int32(D), np.int32(Dv),
            np.uint64(int(seed) % (1 << 64)), np.uint32(int(dropout_p * 16777216.0)), acc(1.0 / (1.0 - dropout_p)))
    return B * H, Nq, Nk, D, Dv, acc, tail


def attention_forward(q, k, v, mask, msb, msh, msq, has_mask, causal, scale, dropout_p, seed, out, lse):
    """out = softmax(q k^T * scale + mask) v and lse, written into ``out`` and ``lse``; k, v with
    Hk heads (grouped-query attention, head h reads h // (H/Hk)), dropout from the seed's hash."""
    BH, Nq, Nk, D, Dv, acc, tail = _scalars(q, k, v, msb, msh, msq, has_mask, causal, scale, dropout_p, seed)
    _bucket(D, Dv)  # the clear error before any copy to the device
    cp = cupy()
    qd, kd, vd = (_device(a) for a in (q, k, v))
    md = cp.ascontiguousarray(cp.asarray(mask, dtype=acc))
    o, ls = _target(out), _target(lse)
    _launch("fwd", q.dtype, D, Dv, BH, Nq, (qd, kd, vd, md) + tail + (o, ls))
    _finish(out, o)
    _finish(lse, ls)


def attention_backward(dout, q, k, v, lse, delta, mask, msb, msh, msq, has_mask, causal, scale,
                       dropout_p, seed, dq, dk, dv):
    """(dq, dk, dv) of attention, written in place; P is recomputed from q, k and lse. dk and dv
    are per query head (B, H, Nk, .), as from the CPU kernels; the driver sums each group.

    Two launches: dK/dV with one block per key tile, then dQ with one block per query tile
    (no atomics, deterministic)."""
    BH, Nq, Nk, D, Dv, acc, tail = _scalars(q, k, v, msb, msh, msq, has_mask, causal, scale, dropout_p, seed)
    _bucket(D, Dv)
    cp = cupy()
    dod, qd, kd, vd = (_device(a) for a in (dout, q, k, v))
    ld, dld, md = (cp.ascontiguousarray(cp.asarray(a, dtype=acc)) for a in (lse, delta, mask))
    gq, gk, gv = _target(dq), _target(dk), _target(dv)
    head = (dod, qd, kd, vd, ld, dld, md)
    _launch("dkdv", q.dtype, D, Dv, BH, Nk, head + tail + (gk, gv))
    _launch("dq", q.dtype, D, Dv, BH, Nq, head + tail + (gq,))
    for dst, buf in ((dq, gq), (dk, gk), (dv, gv)):
        _finish(dst, buf)
