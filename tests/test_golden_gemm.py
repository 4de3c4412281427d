"""golden.gemm against an independent formulation (Python integers) and its refusals."""

import numpy as np
import pytest

from golden.gemm import check_shape, gemm

SEED = 7


def ref_gemm(a, b, bias):
    M, K = a.shape
    N = b.shape[1]
    return [[sum(int(a[m, k]) * int(b[k, n]) for k in range(K)) + int(bias[n]) for n in range(N)]
            for m in range(M)]


def test_gemm_matches_python_integers():
    rng = np.random.default_rng(SEED)
    for _ in range(20):
        M, K, N = (int(x) for x in rng.integers(1, 12, 3))
        a = rng.integers(-128, 128, (M, K), dtype=np.int8)
        b = rng.integers(-128, 128, (K, N), dtype=np.int8)
        bias = rng.integers(-(1 << 30), 1 << 30, N, dtype=np.int32)
        got = gemm(a, b, bias)
        assert got.dtype == np.int32
        assert got.tolist() == ref_gemm(a, b, bias), f"seed={SEED}"


def test_gemm_extremes_and_no_bias():
    a = np.full((3, 1000), -128, np.int8)
    b = np.full((1000, 2), -128, np.int8)
    assert gemm(a, b).tolist() == [[16384000] * 2] * 3


def test_gemm_refuses_overflow():
    a = np.full((1, 1 << 17), -128, np.int8)
    b = np.full((1 << 17, 1), -128, np.int8)          # 2**17 * 2**14 = 2**31 > INT32_MAX
    with pytest.raises(ValueError, match="overflows int32"):
        gemm(a, b)


@pytest.mark.parametrize("a,b,bias,match", [
    (np.zeros((2, 3), np.int16), np.zeros((3, 2), np.int8), None, "A must be int8"),
    (np.zeros((2, 3), np.int8), np.zeros((4, 2), np.int8), None, "inner dimensions"),
    (np.zeros((2, 3), np.int8), np.zeros((3, 2), np.int8), np.zeros(3, np.int32), "bias must have shape"),
    (np.zeros((2, 3), np.int8), np.zeros((3, 2), np.int8), np.zeros(2, np.int64), "bias must be int32"),
    (np.zeros((0, 3), np.int8), np.zeros((3, 2), np.int8), None, "A must not be empty"),
])
def test_gemm_refuses_bad_operands(a, b, bias, match):
    with pytest.raises(ValueError, match=match):
        gemm(a, b, bias)


@pytest.mark.parametrize("shape,name", [((0, 1, 1), "M"), ((1, -3, 1), "K"), ((1, 1, 0), "N"),
                                        ((1, 1 << 17, 1), "K")])
def test_check_shape(shape, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        check_shape(*shape)
