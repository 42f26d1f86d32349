"""``cupy.cuda`` of the stand-in: one device with the limits of an H100 (sm_90), streams and events that
are already synchronous (a launch returns when the kernel has run)."""
from __future__ import annotations

import time
import types

ATTRIBUTES = {
    "MaxThreadsPerBlock": 1024, "MaxBlockDimX": 1024, "MaxBlockDimY": 1024, "MaxBlockDimZ": 64,
    "MaxGridDimX": 2**31 - 1, "MaxGridDimY": 65535, "MaxGridDimZ": 65535,
    "MaxSharedMemoryPerBlock": 48 * 1024, "MaxSharedMemoryPerBlockOptin": 232448,
    "MaxSharedMemoryPerMultiprocessor": 233472, "WarpSize": 32, "MultiProcessorCount": 132,
    "ComputeCapabilityMajor": 9, "ComputeCapabilityMinor": 0, "MaxRegistersPerBlock": 65536,
    "L2CacheSize": 50 * 1024 * 1024, "ClockRate": 1980000, "MemoryClockRate": 2619000, "GlobalMemoryBusWidth": 5120,
}
PROPERTIES = {
    "name": b"cuda_cpu emulated device (sm_90 limits)", "totalGlobalMem": 80 * 2**30, "sharedMemPerBlock": 48 * 1024,
    "sharedMemPerBlockOptin": 232448, "regsPerBlock": 65536, "warpSize": 32, "maxThreadsPerBlock": 1024,
    "maxThreadsDim": (1024, 1024, 64), "maxGridSize": (2**31 - 1, 65535, 65535), "clockRate": 1980000,
    "multiProcessorCount": 132, "major": 9, "minor": 0, "l2CacheSize": 50 * 1024 * 1024,
    "memoryClockRate": 2619000, "memoryBusWidth": 5120,
}


class CUDARuntimeError(RuntimeError):
    pass


class Device:
    def __init__(self, device=None):
        self.id = int(device or 0)
        if self.id != 0:
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
        self.attributes = dict(ATTRIBUTES)
        self.compute_capability = "90"

    def synchronize(self):
        pass

    def use(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __int__(self):
        return self.id


def _device_count():
    return 1


def _properties(device=0):
    Device(device)
    return dict(PROPERTIES)


runtime = types.SimpleNamespace(
    getDeviceCount=_device_count, getDeviceProperties=_properties, getDevice=lambda: 0,
    deviceSynchronize=lambda: None, runtimeGetVersion=lambda: 12080, driverGetVersion=lambda: 12080,
    CUDARuntimeError=CUDARuntimeError, is_hip=False,
)


class Stream:
    def __init__(self, non_blocking=False, null=False, ptds=False):
        self.ptr = 0

    def synchronize(self):
        pass

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


Stream.null = Stream(null=True)


def get_current_stream(device_id=-1):
    return Stream.null


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


def get_elapsed_time(start: Event, end: Event) -> float:
    return (end.t - start.t) * 1e3
