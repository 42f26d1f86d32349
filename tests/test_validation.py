"""The shared validation layer: conversions, refusals and clear messages."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pyml._validation import (check_array, check_csr, check_csr_structure, check_dtype_arg,
                              check_int, check_int_sequence, check_memory, check_not_none,
                              check_random_state, check_scalar, common_float_dtype)


def test_ints_and_bools_become_float64_floats_are_kept():
    assert check_array(np.arange(3), "x").dtype == np.float64
    assert check_array(np.array([True, False]), "x").dtype == np.float64
    for dt in (np.float32, np.float64):
        x = np.ones(3, dt)
        assert check_array(x, "x") is x  # no copy when nothing to do


def test_complex_object_and_sparse_refused():
    with pytest.raises(TypeError, match="complex"):
        check_array(np.ones(2, complex), "X")
    with pytest.raises(TypeError, match="numeric"):
        check_array(np.array(["a"]), "X")
    with pytest.raises(TypeError, match="sparse"):
        check_array(sp.eye(3, format="csr"), "X")


def test_nan_position_reported():
    x = np.zeros((3, 4))
    x[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(first at index \(2, 1\)\)$"):
        check_array(x, "X")  # no advice to pass a parameter the caller may not have
    with pytest.raises(ValueError, match=r"\(2, 1\)\); pass check_finite=False"):
        check_array(x, "X", finite_hint=True)
    assert check_array(x, "X", check_finite=False) is x


def test_ndim_and_empty():
    with pytest.raises(ValueError, match="X must be 2-dimensional, got 1"):
        check_array(np.ones(3), "X", ndim=2)
    with pytest.raises(ValueError, match="must not be empty"):
        check_array(np.ones((0, 3)), "X")
    assert check_array(np.ones((0, 3)), "X", allow_empty=True).shape == (0, 3)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(dtype=np.float64,
                  shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5),
                  elements=st.floats(-1e3, 1e3, width=32)),
       st.sampled_from([np.float32, np.float64, np.int64]))
def test_result_is_contiguous_equal_and_input_untouched(x, dtype):
    x = x.astype(dtype)[..., ::-1]  # reversed last axis: a strided view
    before = x.copy()
    out = check_array(x, "x")
    assert out.flags.c_contiguous and out.dtype.kind == "f"
    np.testing.assert_array_equal(out, x.astype(out.dtype))
    np.testing.assert_array_equal(x, before)


def test_fortran_order_and_strided_copied():
    x = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    out = check_array(x, "x")
    assert out.flags.c_contiguous and out is not x
    np.testing.assert_array_equal(out, x)
    assert check_array(x[:, ::2], "x").flags.c_contiguous


def test_scalars():
    assert check_int(3, "k", min_value=1) == 3
    assert check_int(np.int64(3), "k") == 3
    for bad, exc in ((0, ValueError), (1.0, TypeError), (True, TypeError), ("3", TypeError)):
        with pytest.raises(exc, match="k"):
            check_int(bad, "k", min_value=1)
    assert check_scalar(0.5, "gamma", low=0, high=1, high_inclusive=False) == 0.5
    with pytest.raises(ValueError, match=r"gamma must be < 1"):
        check_scalar(1.0, "gamma", low=0, high=1, high_inclusive=False)
    with pytest.raises(ValueError, match="finite"):
        check_scalar(float("nan"), "gamma")
    with pytest.raises(TypeError):
        check_scalar("a", "gamma")


def test_dtype_and_random_state():
    assert check_dtype_arg("float32") == np.float32
    with pytest.raises(TypeError):
        check_dtype_arg(np.int32)
    assert common_float_dtype(np.ones(1, np.float32), np.ones(1, np.float32)) == np.float32
    assert common_float_dtype(np.ones(1, np.float32), np.ones(1)) == np.float64
    a = check_random_state(3).random()
    assert a == check_random_state(3).random()
    g = np.random.default_rng(0)
    assert check_random_state(g) is g
    with pytest.raises(TypeError):
        check_random_state("seed")


def test_csr_checks_and_copies():
    R = sp.random(5, 4, density=0.5, format="coo", random_state=0)
    out = check_csr(R, "R", shape=(5, None))
    assert sp.isspmatrix_csr(out) or out.format == "csr"
    assert out.has_sorted_indices
    with pytest.raises(ValueError, match="shape"):
        check_csr(R, "R", shape=(4, None))
    with pytest.raises(TypeError, match="scipy.sparse"):
        check_csr(np.ones((2, 2)), "R")
    bad = sp.csr_matrix(np.array([[0, 1.0], [np.nan, 0]]))
    with pytest.raises(ValueError, match=r"first at \(1, 0\)"):
        check_csr(bad, "R")
    csr = sp.csr_matrix(np.eye(3))
    out = check_csr(csr, "R")
    out.data[:] = 7
    assert csr.data.max() == 1.0  # the caller's matrix is never modified



def test_lists_and_none():
    out = check_array([[1, 2], [3, 4]], "X", ndim=2)
    assert out.dtype == np.float64 and out.shape == (2, 2)
    with pytest.raises(TypeError, match="X must be an array, got None"):
        check_array(None, "X")
    with pytest.raises(TypeError, match="needs must be a list of arrays, got None"):
        check_not_none(None, "needs", "a list of arrays")
    assert check_not_none(0, "x", "anything") == 0


def test_int_sequences():
    assert check_int_sequence([1, 3, 8, 8], "input_shape", length=4, min_value=1) == (1, 3, 8, 8)
    assert check_int_sequence(np.array([2, 0]), "actions", min_value=0) == (2, 0)
    with pytest.raises(TypeError, match="input_shape must be a sequence of integers, got None"):
        check_int_sequence(None, "input_shape")
    with pytest.raises(TypeError, match="input_shape must be a sequence"):
        check_int_sequence(5, "input_shape")
    with pytest.raises(ValueError, match="must have 4 entries, got 3"):
        check_int_sequence((1, 2, 3), "input_shape", length=4)
    with pytest.raises(TypeError, match=r"input_shape\[1\] must be an integer"):
        check_int_sequence((1, 2.5), "input_shape")
    with pytest.raises(ValueError, match=r"actions\[0\] must be >= 0"):
        check_int_sequence((-1,), "actions", min_value=0)


def test_memory_needed_is_checked_before_allocating():
    check_memory(1024, "a small array")
    with pytest.raises(ValueError, match=r"factors needs \d+\.\d GiB of memory"):
        check_memory(2.0**60, "factors")


def _csr(indptr, indices, shape):
    return sp.csr_matrix((np.ones(len(indices)), np.asarray(indices), np.asarray(indptr)),
                         shape=shape, copy=False)


@pytest.mark.parametrize("indptr, indices, message", [
    ([0, 1, 2], [0, 7], r"column index 7 in row 1 is outside \[0, 3\)"),
    ([0, 1, 2], [-5, 0], r"column index -5 in row 0"),
    ([0, 2, 1, 2], [0, 1], "non-decreasing, it decreases after row 1"),
    ([0, 1], [0], "rows \\+ 1 = 3 entries"),
    ([1, 1, 2], [0, 1], "start at 0 and end at nnz"),
])
def test_corrupt_csr_is_refused_before_any_kernel(indptr, indices, message):
    n = len(indptr) - 1 if len(indptr) > 2 else 2
    with pytest.raises(ValueError, match=message):
        check_csr_structure(np.array(indptr), np.array(indices), (n, 3), "P")
    if len(indptr) == n + 1:  # scipy builds the matrix without checking; check_csr refuses it
        R = sp.csr_matrix((2, 3))
        R.indptr, R.indices, R.data = (np.array(indptr, np.int32), np.array(indices, np.int32),
                                       np.ones(len(indices)))
        R._shape = (n, 3)
        with pytest.raises(ValueError, match=message):
            check_csr(R, "P")


def test_int64_csr_indices_beyond_2_31_are_not_narrowed():
    """A crafted matrix with a huge declared shape: the checks use int64 throughout."""
    big = 2**31 + 5
    indptr = np.array([0, 1, 2], np.int64)
    check_csr_structure(indptr, np.array([0, big - 1], np.int64), (2, big), "R")
    with pytest.raises(ValueError, match=f"column index {big} in row 1"):
        check_csr_structure(indptr, np.array([0, big], np.int64), (2, big), "R")
