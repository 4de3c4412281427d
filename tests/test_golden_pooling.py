"""golden.pooling against a direct loop formulation (Fractions for the average) and its
parameter checks."""

from fractions import Fraction

import numpy as np
import pytest

from golden.pooling import (MAX_POOL_K, avg_pool2d, avg_pool_multiplier,
                            divide_round_half_away, max_pool2d)


def loop_pool(x, k, s, p, kind, zp=0):
    n, h, w, c = x.shape
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    out = np.zeros((n, ho, wo, c), np.int64)
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                for ch in range(c):
                    vals, pads = [], 0
                    for i in range(k):
                        for j in range(k):
                            y, xx = oy * s + i - p, ox * s + j - p
                            if 0 <= y < h and 0 <= xx < w:
                                vals.append(int(x[b, y, xx, ch]))
                            else:
                                pads += 1
                    if kind == "max":
                        out[b, oy, ox, ch] = max(vals)
                    else:
                        q = Fraction(sum(vals) + pads * zp, k * k)
                        r = int(abs(q) + Fraction(1, 2))       # floor(|q| + 1/2)
                        out[b, oy, ox, ch] = r if q >= 0 else -r
    return out.astype(np.int8)


def test_divider_exact_for_every_sum():
    for k in list(range(1, 34)) + [MAX_POOL_K]:
        s = np.arange(-128 * k * k, 128 * k * k + 1)
        want = np.sign(s) * ((2 * np.abs(s) + k * k) // (2 * k * k))
        np.testing.assert_array_equal(divide_round_half_away(s, k), want, err_msg=f"k={k}")
    assert avg_pool_multiplier(1) == (1 << 31, 32)


@pytest.mark.parametrize("seed", range(6))
def test_random_against_loops(seed):
    rng = np.random.default_rng(seed)
    for _ in range(8):
        h, w = (int(v) for v in rng.integers(1, 9, 2))
        k = int(rng.integers(1, min(h, w) + 2))
        p = int(rng.integers(0, k // 2 + 1))
        if k > min(h, w) + 2 * p:
            k, p = 1, 0
        s = int(rng.integers(1, 4))
        x = rng.integers(-128, 128, (2, h, w, 3), dtype=np.int8)
        if rng.random() < 0.3:
            x[:] = rng.choice([-128, 127])
        zp = int(rng.integers(-128, 128))
        np.testing.assert_array_equal(max_pool2d(x, k, s, p), loop_pool(x, k, s, p, "max"))
        np.testing.assert_array_equal(avg_pool2d(x, k, s, p, zp),
                                      loop_pool(x, k, s, p, "avg", zp), err_msg=f"seed={seed}")


def test_global_and_large():
    rng = np.random.default_rng(9)
    x = rng.integers(-128, 128, (1, 32, 32, 64), dtype=np.int8)
    g = avg_pool2d(x, 32, 1, 0)
    assert g.shape == (1, 1, 1, 64)
    want = [int(np.sign(t) * ((2 * abs(t) + 1024) // 2048)) for t in x.astype(int).sum((1, 2))[0]]
    assert g[0, 0, 0].tolist() == want
    assert max_pool2d(x, 32, 1, 0)[0, 0, 0].tolist() == x.max((1, 2))[0].tolist()


@pytest.mark.parametrize("k,s,p,name", [
    (0, 1, 0, "k"), (3, 0, 0, "stride"), (3, 1, 2, "pad"), (3, 1, -1, "pad"),
    (9, 1, 0, "k"), (2.0, 1, 0, "k"),
])
def test_bad_params(k, s, p, name):
    x = np.zeros((1, 4, 4, 2), np.int8)
    with pytest.raises(ValueError, match=name):
        max_pool2d(x, k, s, p)
    with pytest.raises(ValueError, match=name):
        avg_pool2d(x, k, s, p)


@pytest.mark.parametrize("d", [1, 2, 9, 64, 125, 250, 1024, 2890])
def test_average_requantizer_divides_every_sum(d):
    """The requantizer constants of average pooling as a convolution: every window sum
    |S| <= 128 d requantizes to round-half-away(S / d), computed here by integer floor
    division (an independent formulation)."""
    from golden.quant import requantize
    from golden.pooling import average_requantizer
    m0, shift, rounding = average_requantizer(d)
    s = np.arange(-128 * d, 128 * d + 1, dtype=np.int64)
    want = np.sign(s) * ((2 * np.abs(s) + d) // (2 * d))
    got = requantize(s, m0, shift, 0, rounding=rounding).astype(np.int64)
    assert np.array_equal(got, np.clip(want, -128, 127))
