"""golden.softmax against independent formulations.

* a scalar Python-int reimplementation of every documented step (no golden.quant calls);
* float64 softmax, with a bound: the output rounding is 0.5 LSB and the documented
  approximations (u rounded to 2**-10 in log2: <= 3.4e-4 relative per e_i, i.e. <= 0.09 LSB on a
  probability) add < 0.1 LSB, so |err| <= 0.6 LSB against float softmax clamped to 255/256, and
  <= 1 LSB against the unclamped float softmax.
"""

import math

import numpy as np
import pytest

from golden.softmax import (EXP_TABLE, MAX_SCALE, MIN_SCALE, SoftmaxParams, error_stats,
                            random_logits, softmax, softmax_params)


def scalar_softmax(xs, m0, shift):
    """Steps 1-7 of the module docstring, one element at a time, Python ints only."""
    k = -shift
    mx = max(xs)
    es = []
    for x in xs:
        a = mx - x
        h = (a * m0 + (1 << 8)) >> 9                       # SRDHM(a * 2**22, M0), a >= 0
        u = (h + (1 << (k - 1))) >> k if k > 0 else h       # RDBPOT, round half up
        n, r = u >> 10, u & 1023
        t = round_half_up_exp(r)
        es.append((t + (1 << (n - 1))) >> n if n > 0 else t)
    s = sum(es)
    recip = (1 << 32) // s
    return [min((e * recip + (1 << 23)) >> 24, 255) - 128 for e in es]


def round_half_up_exp(r):
    # 2**15 * 2**(-r/1024), rounded to nearest (no entry is within 1e-4 of a tie)
    return math.floor(32768 * 2.0 ** (-r / 1024) + 0.5)


def test_table():
    """Exact check in integers: t = round(2**15 * 2**(-r/1024)) iff
    (t - 1/2)**1024 < 2**(15*1024 - r) < (t + 1/2)**1024 (no ties: the middle is irrational)."""
    assert len(EXP_TABLE) == 1024 and EXP_TABLE[0] == 1 << 15
    for r, t in enumerate(EXP_TABLE):
        target = 1 << (16 * 1024 - r)           # times 2**1024 on both sides
        assert (2 * t - 1) ** 1024 < target < (2 * t + 1) ** 1024, r


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_scalar_reimplementation(seed):
    rng = np.random.default_rng(seed)
    for case in range(60):
        scale = float(2.0 ** rng.uniform(-20, 11.4))      # right shift 31 .. 0
        p = softmax_params(scale)
        x = random_logits(rng, int(rng.integers(1, 257)))
        want = scalar_softmax([int(v) for v in x], p.multiplier, p.shift)
        got = softmax(x, p)
        assert got.dtype == np.int8
        assert got.tolist() == want, f"seed={seed} case={case} scale={scale}"


def test_float_bound_sample():
    """A 1,000-vector sample of the error table (the full table: python -m golden.softmax)."""
    seed = 11
    rng = np.random.default_rng(seed)
    worst = worst_clamped = 0.0
    for _ in range(1000):
        scale = float(rng.choice([1 / 256, 1 / 32, 0.1, 0.25, 0.5, 2.0]))
        x = random_logits(rng, int(rng.integers(1, 257)))
        err, err_c, _, _ = error_stats(x, softmax(x, softmax_params(scale)), scale)
        worst, worst_clamped = max(worst, err), max(worst_clamped, err_c)
    assert worst <= 1.0 + 1e-9, f"max error {worst} LSB (seed={seed})"
    assert worst_clamped <= 0.6, f"max error vs clamped float {worst_clamped} LSB (seed={seed})"


def test_special_vectors():
    p = softmax_params(0.1)
    assert softmax(np.array([5], np.int8), p).tolist() == [127]                 # length 1
    assert (softmax(np.full(256, -128, np.int8), p) == -127).all()             # 1/256 each
    assert (softmax(np.full(4, 33, np.int8), p) == -64).all()                  # 1/4 each
    x = np.full(100, -128, np.int8)
    x[17] = 127
    y = softmax(x, p)                                                          # dominant value
    assert y[17] == 127 and (np.delete(y, 17) == -128).all()


def test_rows_independent_and_shift_invariant():
    rng = np.random.default_rng(5)
    p = softmax_params(0.05)
    x = rng.integers(-100, 100, (3, 4, 17), dtype=np.int8)
    y = softmax(x, p)
    assert y.shape == x.shape
    for idx in np.ndindex(3, 4):
        assert (y[idx] == softmax(x[idx], p)).all()
    assert (softmax((x.astype(np.int16) + 20).astype(np.int8), p) == y).all()


def test_params():
    p = softmax_params(0.1)
    assert isinstance(p, SoftmaxParams) and 2**30 <= p.multiplier < 2**31 and p.shift <= 0
    assert p.right_shift == -p.shift
    softmax_params(MAX_SCALE * 0.999)
    softmax_params(MIN_SCALE * 1.01)


@pytest.mark.parametrize("scale", [0, -0.1, float("nan"), float("inf"), MAX_SCALE * 1.01,
                                   1e6, MIN_SCALE * 0.4, "abc", None])
def test_bad_scale(scale):
    with pytest.raises(ValueError, match="in_scale"):
        softmax_params(scale)


def test_bad_input():
    p = softmax_params(0.1)
    with pytest.raises(ValueError, match="x must be int8"):
        softmax(np.zeros(4, np.float32), p)
    with pytest.raises(ValueError, match="last axis"):
        softmax(np.zeros((2, 0), np.int8), p)
    with pytest.raises(ValueError, match="params"):
        softmax(np.zeros(4, np.int8), (1, 0))
    with pytest.raises(ValueError, match="L_max"):
        softmax(np.zeros(257, np.int8), p, max_len=256)
    assert softmax(np.zeros(256, np.int8), p, max_len=256).shape == (256,)
