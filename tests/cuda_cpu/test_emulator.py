"""The CUDA-on-CPU emulator itself: it reports out-of-bounds accesses, exposes an unsynchronised race by
reordering threads, refuses undefined warp collectives, and implements the primitives pyml's kernels use
(shuffles, votes, atomics, 16-bit conversions, inline PTX, 2-D grids) as a GPU does."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cuda_cpu import KernelFault, fake_cupy as cp, sanitize, set_schedule
from cuda_cpu.runtime import CUDADriverError

pytestmark = [pytest.mark.cuda_cpu,
              pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA-on-CPU emulator needs g++")]

SOURCE = (Path(__file__).parent / "selftest.cu").read_text()


@pytest.fixture(scope="module")
def mod():
    return cp.RawModule(code=SOURCE)


@pytest.fixture(autouse=True)
def _cycle():
    yield
    set_schedule("cycle")


def _needs_guard_pages():
    if sanitize():
        pytest.skip("under AddressSanitizer the out-of-bounds kernels run in a subprocess (test_asan_reports_oob)")


# ------------------------------------------------------------------------------------------ bounds
@pytest.mark.parametrize("n", [1, 7, 1024, 1000])
def test_out_of_bounds_write_is_reported(mod, n):
    _needs_guard_pages()
    x = cp.zeros(n, cp.float32)
    kern = mod.get_function("oob_write")
    for _ in range(2):  # guard page after the end on one launch, before the start on the next
        try:
            kern(((n + 128) // 128,), (128,), (x, np.int32(n)))  # n + 1 threads
        except KernelFault as e:
            assert "out-of-bounds" in str(e) and "past the end of argument 0 of oob_write" in str(e)
            break
    else:
        pytest.fail("writing x[n] went unnoticed")


def test_out_of_bounds_read_before_start_is_reported(mod):
    _needs_guard_pages()
    x, y = cp.zeros(33, cp.float32), cp.zeros(33, cp.float32)
    kern = mod.get_function("oob_read_before")
    msgs = []
    for _ in range(2):
        try:
            kern((1,), (64,), (x, y, np.int32(33)))
        except KernelFault as e:
            msgs.append(str(e))
    assert any("bytes before the start of argument 0" in m for m in msgs), msgs


def test_shared_memory_overrun_is_reported(mod):
    _needs_guard_pages()  # under ASan the overrun is a use-after-poison abort: test_asan_reports_oob
    y = cp.zeros(64, cp.float32)
    with pytest.raises(KernelFault, match="past the end of the dynamic shared memory"):
        mod.get_function("smem_overrun")((1,), (64,), (y,), shared_mem=32 * 4)
    mod.get_function("smem_overrun")((1,), (64,), (y,), shared_mem=64 * 4)  # the right size is fine
    np.testing.assert_array_equal(y.get(), np.arange(64, dtype=np.float32))


def test_uninitialised_shared_memory_reads_nan(mod):
    y = cp.zeros(32, cp.float32)
    mod.get_function("smem_uninitialised")((1,), (32,), (y,), shared_mem=32 * 4)
    assert np.isnan(y.get()).all()


def _libasan() -> str:
    out = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return out if Path(out).is_file() else ""


@pytest.mark.skipif(not _libasan(), reason="no libasan")
@pytest.mark.parametrize("call,report", [
    ("m.get_function('oob_write')((1,), (32,), (cp.zeros(7, cp.float32), np.int32(7)))", "heap-buffer-overflow"),
    ("m.get_function('smem_overrun')((1,), (64,), (cp.zeros(64, cp.float32),), shared_mem=128)", "use-after-poison"),
])
def test_asan_reports_oob(call, report):
    """Built with -fsanitize=address (the CI step), an off-by-one write to device memory is AddressSanitizer's
    heap-buffer-overflow and a write past the launch's dynamic shared memory a use-after-poison."""
    script = ("import numpy as np\nfrom cuda_cpu import fake_cupy as cp\n"
              f"m = cp.RawModule(code=open({str(Path(__file__).parent / 'selftest.cu')!r}).read())\n{call}\n")
    env = dict(os.environ, CUDA_CPU_SANITIZE="address", LD_PRELOAD=_libasan(), ASAN_OPTIONS="detect_leaks=0",
               PYTHONPATH=str(Path(__file__).parent.parent))  # the cache key includes the flags
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode != 0 and report in res.stderr, res.stderr[-3000:]


# ------------------------------------------------------------------------------------------ ordering
def test_reordering_exposes_a_missing_barrier(mod):
    salts = iter(np.random.default_rng().integers(1000, 2**30, 6))
    want = lambda salt: (np.arange(128) + 1) % 128 + salt  # noqa: E731
    wrong = {}
    for order in ("forward", "reverse", "random"):
        set_schedule(order)
        y, salt = cp.zeros(128, cp.int32), int(next(salts))
        mod.get_function("racy_neighbour")((1,), (128,), (y, np.int32(salt)))
        wrong[order] = int((y.get() != want(salt)).sum())
    # forward: every thread but the last reads its neighbour before the neighbour wrote
    assert wrong["forward"] == 127 and wrong["reverse"] == 1, wrong
    for order in ("forward", "reverse", "random"):
        set_schedule(order)
        y, salt = cp.zeros(128, cp.int32), int(next(salts))
        mod.get_function("synced_neighbour")((1,), (128,), (y, np.int32(salt)))
        np.testing.assert_array_equal(y.get(), want(salt))


# ------------------------------------------------------------------------------------------ warp collectives
def test_shuffle_with_exited_lanes_is_refused(mod):
    with pytest.raises(KernelFault, match="have exited|waits for it"):
        mod.get_function("shfl_after_exit")((1,), (32,), (cp.zeros(32, cp.int32),))


def test_divergent_deadlock_is_reported(mod):
    with pytest.raises(KernelFault, match="deadlock|exited"):
        mod.get_function("divergent_deadlock")((1,), (32,), (cp.zeros(32, cp.int32),))


@pytest.mark.parametrize("order", ["forward", "reverse", "random"])
def test_warp_operations(mod, order):
    set_schedule(order)
    n = 64
    out = cp.zeros(n * 8, cp.int32)
    mod.get_function("warp_ops")((1,), (n,), (out,))
    o = out.get().reshape(n, 8)
    t = np.arange(n)
    lane, base = t % 32, t - t % 32
    np.testing.assert_array_equal(o[:, 0], (base + 3) * 10)
    np.testing.assert_array_equal(o[:, 1], base + (lane ^ 5))
    seg = lane - lane % 8
    np.testing.assert_array_equal(o[:, 2], np.where(lane + 4 < seg + 8, t + 4, t))
    np.testing.assert_array_equal(o[:, 3], np.where(lane >= 2, t - 2, t))
    ballot = sum(1 << l for l in range(32) if l % 3 == 0)
    np.testing.assert_array_equal(o[:, 4], np.int32(np.uint32(ballot).view(np.int32)))
    np.testing.assert_array_equal(o[:, 5], (base == 32).astype(int))  # t == 37 is in the second warp
    np.testing.assert_array_equal(o[:, 6], 0)
    np.testing.assert_array_equal(o[:, 7], sum(range(32)))


def test_atomics(mod):
    f, d, i = cp.zeros(1, cp.float32), cp.zeros(1, cp.float64), cp.zeros(1, cp.int32)
    mx, cas = cp.full(1, -1, cp.int32), cp.zeros(1, cp.uint64)
    mod.get_function("atomics")((7,), (96,), (f, d, i, mx, cas))
    n = 7 * 96
    assert (float(f[0]), float(d[0]), int(i[0]), int(mx[0]), int(cas[0])) == (0.5 * n, 0.25 * n, n, n - 1, 2 * n)


def test_16_bit_conversions_round_to_nearest_even(mod):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal(500) * 10.0 ** rng.integers(-9, 6, 500),
                        [0.0, -0.0, 65504.0, 65520.0, 1e6, 2.0**-24, 2.0**-25, 3 * 2.0**-26, np.inf, -np.inf, np.nan],
                        (1 + np.arange(64) / 1024 + 1 / 2048)]).astype(np.float32)  # exact halfway cases
    n = len(x)
    h, b, p = (cp.zeros(n, cp.float32) for _ in range(3))
    bits = cp.zeros(n, cp.uint16)
    mod.get_function("convert16")(((n + 63) // 64,), (64,), (cp.asarray(x), h, b, p, bits, np.int32(n)))
    # overflow to inf is part of what is tested
    with np.errstate(over="ignore"):
        want16 = x.astype(np.float16)
    np.testing.assert_array_equal(h.get(), want16.astype(np.float32))
    np.testing.assert_array_equal(p.get(), want16.astype(np.float32))
    np.testing.assert_array_equal(bits.get(), want16.view(np.uint16))
    np.testing.assert_array_equal(b.get(), x.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_two_dimensional_grid_and_block(mod):
    W, H = 12, 10
    out = cp.full(W * H, -1, cp.int32)
    mod.get_function("indexing")((3, 2), (4, 5), (out, np.int32(W)))
    y, x = np.mgrid[0:H, 0:W]
    want = (y % 5) * 4 + x % 4 + 1000 * ((y // 5) * 3 + x // 4)
    np.testing.assert_array_equal(out.get().reshape(H, W), want)


# ------------------------------------------------------------------------------------------ the launch contract
def test_launch_checks_what_a_gpu_would_get_wrong(mod):
    kern = mod.get_function("takes_int_and_double")
    y = cp.zeros(1, cp.float32)
    kern((1,), (1,), (np.int32(3), 0.5, y))  # Python float -> double: right
    assert float(y[0]) == 1.5
    with pytest.raises(TypeError, match="argument 0 .*garbage"):
        kern((1,), (1,), (3, 0.5, y))  # Python int is int64 for an int parameter
    with pytest.raises(TypeError, match="argument 1 .*garbage"):
        kern((1,), (1,), (np.int32(3), np.float32(0.5), y))
    with pytest.raises(TypeError, match="float64 array for a pointer to f4"):
        kern((1,), (1,), (np.int32(3), 0.5, cp.zeros(1, cp.float64)))
    with pytest.raises(TypeError, match="numpy.ndarray of shape"):
        kern((1,), (1,), (np.int32(3), 0.5, np.zeros(2, np.float32)))
    with pytest.raises(TypeError, match="takes 3 arguments"):
        kern((1,), (1,), (np.int32(3), y))
    with pytest.raises(CUDADriverError, match="INVALID_VALUE"):
        kern((1,), (2048,), (np.int32(3), 0.5, y))
    with pytest.raises(CUDADriverError, match="max_dynamic_shared_size_bytes"):
        kern((1,), (1,), (np.int32(3), 0.5, y), shared_mem=64 * 1024)
    with pytest.raises(CUDADriverError, match="NOT_FOUND"):
        mod.get_function("no_such_kernel")


def test_stand_in_arrays_behave_like_cupy():
    x = cp.arange(6, dtype=cp.float64)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(x)
    with pytest.raises(TypeError):
        x + np.ones(6)
    assert not isinstance(x, np.ndarray) and type(x).__module__ == "cupy"
    assert isinstance(x.sum(), cp.ndarray) and float(x.sum()) == 15.0
    assert np.isnan(cp.empty(3).get()).all()
    host = np.ones(3)
    d = cp.asarray(host)
    d[0] = 5
    assert host[0] == 1.0  # host -> device is a copy
