"""golden.eltwise (TFLite ADD) against an independent formulation in exact rational
arithmetic: each step's rounding written as a rule on fractions (SaturatingRoundingDoubling-
HighMul rounds half up, RoundingDivideByPOT half away from zero), ties included."""

import numpy as np
import pytest

from exact import add_exact
from golden.eltwise import add_int8, add_params


@pytest.mark.parametrize("seed", range(6))
def test_add_matches_exact_rationals(seed):
    rng = np.random.default_rng(seed)
    # equal scales, very different scales, and ordinary ones
    s1 = float(rng.choice([0.05, 0.01, 1.0, rng.uniform(1e-3, 1)]))
    s2 = s1 if seed % 3 == 0 else float(s1 * rng.choice([100.0, 0.01, rng.uniform(0.3, 3)]))
    s_out = float(max(s1, s2) * rng.uniform(0.7, 3))
    z1, z2, zo = (int(v) for v in rng.integers(-128, 128, 3))
    qmin = zo if seed % 2 else -128              # a fused ReLU on odd seeds
    p = add_params(s1, z1, s2, z2, s_out, zo)
    x1 = rng.integers(-128, 128, 400).astype(np.int8)
    x2 = rng.integers(-128, 128, 400).astype(np.int8)
    got = add_int8(x1, x2, p, qmin=qmin, qmax=127)
    want = [add_exact(a, b, p, qmin, 127) for a, b in zip(x1, x2)]
    assert got.tolist() == want, f"seed {seed}"


def test_rounding_ties():
    """Inputs whose scaled sum lands exactly on a half: both rounding rules at their tie."""
    p = add_params(1.0, 0, 1.0, 0, 2.0 ** -18, 0)    # out multiplier 2^-1: halves appear
    x1 = np.arange(-128, 128, dtype=np.int8)
    x2 = np.full(256, 1, np.int8)
    got = add_int8(x1, x2, p)
    want = [add_exact(a, b, p, -128, 127) for a, b in zip(x1, x2)]
    assert got.tolist() == want


def test_refusals():
    with pytest.raises(ValueError, match="s_out"):
        add_params(1.0, 0, 1.0, 0, float("nan"), 0)
    with pytest.raises(ValueError, match="too small"):
        add_params(1.0, 0, 1.0, 0, 1e-9, 0)
    with pytest.raises(ValueError, match="z1"):
        add_params(1.0, 300, 1.0, 0, 1.0, 0)
    p = add_params(1.0, 0, 1.0, 0, 1.0, 0)
    with pytest.raises(ValueError, match="same shape"):
        add_int8(np.zeros(3, np.int8), np.zeros(4, np.int8), p)
