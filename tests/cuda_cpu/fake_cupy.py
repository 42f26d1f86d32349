"""A stand-in for the slice of CuPy that pyml uses, installed as ``sys.modules["cupy"]`` by the cuda_cpu tests
so that pyml's real CuPy glue and the real kernels run together on the CPU (kernels: runtime.py).

Arrays live in host memory but behave like CuPy's where that catches glue bugs: the type is
``cupy.ndarray`` (not a NumPy subclass, so ``isinstance(x, numpy.ndarray)`` is False as on a GPU),
implicit conversion to NumPy raises (``.get()`` is the way back), mixing with NumPy arrays in arithmetic
raises, reductions return 0-d arrays, and ``empty`` is filled with NaN / 0xa5 bytes rather than zeros.
Everything else delegates to NumPy and wraps array results.
"""
from __future__ import annotations

import sys
import types

import numpy as np

from .runtime import CUDADriverError, RawModule, set_schedule  # noqa: F401  (public names of the stand-in)

__version__ = "13.6.0"
_NO_MIX = "Unsupported type <class 'numpy.ndarray'> (a NumPy array mixed with a CuPy array; use cupy.asarray)"


class ndarray:
    __slots__ = ("_a",)
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = _garbage(np.empty(shape, dtype=dtype, order=order))

    @classmethod
    def _of(cls, a: np.ndarray) -> "ndarray":
        out = cls.__new__(cls)
        out._a = a
        return out

    # ---- what CuPy refuses
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _no_host(inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(_unwrap(o) for o in kwargs["out"])
        return _wrap(getattr(ufunc, method)(*_unwrap(inputs), **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        _no_host(args)
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    # ---- CuPy's own
    def get(self, stream=None, order="C", out=None) -> np.ndarray:
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None) -> None:
        self._a[...] = arr

    @property
    def device(self):
        return cuda.Device(0)

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self._a.__array_interface__["data"][0])

    # ---- NumPy's, wrapped
    def __getattr__(self, name):
        if name == "_a" or name.startswith("__"):  # no __array_interface__ etc.: NumPy must not see the buffer
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            return lambda *a, **k: _wrap(attr(*_unwrap(a), **_unwrap(k)))
        return _wrap(attr)

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key, value):
        self._a[_unwrap(key)] = _unwrap(value)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(x) for x in self._a)

    def __repr__(self):
        return repr(self._a).replace("array(", "cupy.array(", 1)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return self._a.__index__()

    def __bool__(self):
        return bool(self._a)

    def __complex__(self):
        return complex(self._a)

    def __hash__(self):
        raise TypeError("unhashable type: 'cupy.ndarray'")

    def __reduce__(self):
        raise TypeError("cupy arrays are not pickled by this stand-in")


ndarray.__module__ = "cupy"
ndarray.__qualname__ = "ndarray"


def _binary(name):
    def op(self, other):
        _no_host((other,))
        res = getattr(self._a, name)(_unwrap(other))
        return res if res is NotImplemented else _wrap(res)
    op.__name__ = name
    return op


for _n in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift",
           "rshift", "lt", "le", "gt", "ge", "eq", "ne", "divmod"):
    for _form in (f"__{_n}__", f"__r{_n}__", f"__i{_n}__"):
        if hasattr(np.ndarray, _form):
            setattr(ndarray, _form, _binary(_form))
for _n in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(ndarray, _n, (lambda n: lambda self: _wrap(getattr(self._a, n)()))(_n))


def _garbage(a: np.ndarray) -> np.ndarray:
    """What uninitialised device memory reads as: NaN for floats, 0xa5 bytes otherwise."""
    if a.dtype.kind in "fc":
        a.fill(np.nan)
    elif a.size:
        a.view(np.uint8).reshape(-1)[:] = 0xA5
    return a


def _wrap(x):
    if isinstance(x, np.ndarray):
        return ndarray._of(x)
    if isinstance(x, np.generic):
        return ndarray._of(np.asarray(x))  # CuPy reductions and indexing give 0-d arrays
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _unwrap(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, tuple):
        return tuple(_unwrap(v) for v in x)
    if isinstance(x, list):
        return [_unwrap(v) for v in x]
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _no_host(args) -> None:
    for a in args:
        if isinstance(a, np.ndarray) and a.ndim > 0:
            raise TypeError(_NO_MIX)
        if isinstance(a, (tuple, list)):
            _no_host(a)


# ------------------------------------------------------------------------------------ array creation
def _device_copy(a, dtype=None, order="K", copy=True):
    if isinstance(a, ndarray):
        a = a._a
    return ndarray._of(np.array(a, dtype=dtype, order=order, copy=copy))


def asarray(a, dtype=None, order=None, *, blocking=False):
    if isinstance(a, ndarray) and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return _device_copy(a, dtype, order or "K", copy=True)  # host -> device is always a copy


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, ndarray) and not copy and (dtype is None or np.dtype(dtype) == obj.dtype):
        return obj
    return ndarray._of(np.array(_unwrap(obj), dtype=dtype, order=order, copy=True, ndmin=ndmin))


def ascontiguousarray(a, dtype=None):
    a = asarray(a, dtype)
    return a if a._a.flags.c_contiguous else ndarray._of(np.ascontiguousarray(a._a))


def asfortranarray(a, dtype=None):
    a = asarray(a, dtype)
    return a if a._a.flags.f_contiguous else ndarray._of(np.asfortranarray(a._a))


def empty(shape, dtype=float, order="C"):
    return ndarray(shape, dtype, order=order)


def empty_like(a, dtype=None, order="K", subok=None, shape=None):
    return ndarray._of(_garbage(np.empty_like(_unwrap(a), dtype=dtype, order=order, shape=shape)))


def asnumpy(a, stream=None, order="C", out=None):
    return a.get(order=order, out=out) if isinstance(a, ndarray) else np.asarray(a, order=order)


def get_array_module(*args):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else np


def is_available() -> bool:
    return True


def RawKernel(code, name, options=(), **kwargs):
    return RawModule(code=code, options=options).get_function(name)


def _unsupported(name):
    def f(*a, **k):
        raise NotImplementedError(f"cupy.{name} is not part of the cuda_cpu stand-in (only RawModule kernels run)")
    return f


ElementwiseKernel = _unsupported("ElementwiseKernel")
ReductionKernel = _unsupported("ReductionKernel")
fuse = _unsupported("fuse")


def _delegate(np_func, name):
    def f(*args, **kwargs):
        _no_host(args)
        return _wrap(np_func(*_unwrap(args), **_unwrap(kwargs)))
    f.__name__ = name
    return f


class _Namespace(types.ModuleType):
    """cupy.linalg etc.: NumPy's functions of the same name, on stand-in arrays."""

    def __init__(self, name, np_mod):
        super().__init__(name)
        self._np = np_mod

    def __getattr__(self, name):
        attr = getattr(self._np, name)
        return _delegate(attr, name) if callable(attr) and not isinstance(attr, type) else attr


linalg = _Namespace("cupy.linalg", np.linalg)


def __getattr__(name):
    attr = getattr(np, name)  # AttributeError for what NumPy lacks too
    if isinstance(attr, type) or not callable(attr):
        return attr  # dtypes (cupy.float32 is numpy.float32), constants
    return _delegate(attr, name)


# ------------------------------------------------------------------------------------ cupy.cuda
from . import fake_cuda as cuda  # noqa: E402  (needs ndarray defined above)
