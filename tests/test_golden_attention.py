"""golden.attention against independent formulations.

* a scalar Python-int loop of the documented steps (own SRDHM/RDBPOT, the scalar softmax of
  test_golden_softmax), no golden.gemm/quant calls;
* float64 attention on the dequantized inputs, with a loose bound (the int8 score rounding,
  0.5 score LSB, perturbs the probabilities; the bound is checked on the mean and the max);
* structural properties: causal rows ignore later keys, heads are independent column slices.
"""

import math

import numpy as np
import pytest

from golden.attention import (AttentionParams, attention, attention_float, attention_params,
                              merge_heads, multi_head_attention, split_heads)
from test_golden_softmax import scalar_softmax


def srdhm(a, b):
    if a == b == -(1 << 31):
        return (1 << 31) - 1
    p = a * b
    nudge = (1 << 30) if p >= 0 else 1 - (1 << 30)
    t = p + nudge
    return t // (1 << 31) if t >= 0 else -((-t) // (1 << 31))


def rdbpot(x, e):
    mask = (1 << e) - 1
    return (x >> e) + (1 if (x & mask) > (mask >> 1) + (1 if x < 0 else 0) else 0)


def requant(x, m0, shift, zp):
    left, right = max(shift, 0), max(-shift, 0)
    xs = min(max(x << left, -(1 << 31)), (1 << 31) - 1)
    return min(max(rdbpot(srdhm(xs, m0), right) + zp, -128), 127)


def scalar_attention(q, k, v, p, causal):
    Sq, Sk, dv = len(q), len(k), len(v[0])
    out = []
    for i in range(Sq):
        n = i + 1 if causal else Sk
        scores = [requant(sum(a * b for a, b in zip(q[i], k[j])), p.score_multiplier,
                          p.score_shift, 0) for j in range(n)]
        probs = scalar_softmax(scores, p.softmax.multiplier, p.softmax.shift)
        probs += [-128] * (Sk - n)
        out.append([requant(sum((probs[j] + 128) * v[j][c] for j in range(Sk)),
                            p.out_multiplier, p.out_shift, p.out_zero_point)
                    for c in range(dv)])
    return out


def rand_case(rng, Sq, Sk, d, dv):
    return (rng.integers(-128, 128, (Sq, d), dtype=np.int8),
            rng.integers(-128, 128, (Sk, d), dtype=np.int8),
            rng.integers(-128, 128, (Sk, dv), dtype=np.int8))


def typical_params(d, zp=0):
    # Q, K, V in [-1, 1); scores |q.k|/sqrt(d) <= sqrt(d), kept within int8 with margin
    sq = sk = sv = 1 / 128
    return attention_params(sq, sk, sv, score_scale=math.sqrt(d) / 64, out_scale=1 / 128,
                            head_dim=d, out_zero_point=zp)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_scalar_loop(seed, causal):
    rng = np.random.default_rng(seed)
    for case in range(3):
        S = int(rng.integers(1, 12))
        Sk = S if causal else int(rng.integers(1, 12))
        d, dv = int(rng.integers(1, 17)), int(rng.integers(1, 9))
        q, k, v = rand_case(rng, S, Sk, d, dv)
        p = typical_params(d, zp=int(rng.integers(-20, 20)))
        got = attention(q, k, v, p, causal)
        want = scalar_attention(q.tolist(), k.tolist(), v.tolist(), p, causal)
        assert got.dtype == np.int8 and got.tolist() == want, f"seed={seed} case={case}"


def test_float_reference():
    """Mean |err| below 1 output LSB, max below 4 LSB (score rounding is the main error)."""
    seed = 4
    rng = np.random.default_rng(seed)
    errs = []
    for causal in (False, True):
        for _ in range(5):
            S, d, dv = 24, 16, 8
            q, k, v = rand_case(rng, S, S, d, dv)
            p = typical_params(d)
            got = attention(q, k, v, p, causal).astype(np.float64)
            ref = attention_float(q, k, v, 1 / 128, 1 / 128, 1 / 128, causal) * 128
            errs.append(np.abs(got - ref))
    errs = np.concatenate([e.ravel() for e in errs])
    assert errs.mean() < 1.0 and errs.max() < 4.0, (
        f"mean {errs.mean():.3f}, max {errs.max():.3f} LSB (seed={seed})")


def test_causal_ignores_future():
    rng = np.random.default_rng(6)
    q, k, v = rand_case(rng, 9, 9, 8, 4)
    p = typical_params(8)
    out, mid = attention(q, k, v, p, causal=True, intermediates=True)
    assert (mid["probs"][np.triu_indices(9, 1)] == -128).all()
    assert mid["probs"][0, 0] == 127                     # row 0 sees key 0 only
    k2, v2 = k.copy(), v.copy()
    k2[5:] = rng.integers(-128, 128, k2[5:].shape)
    v2[5:] = rng.integers(-128, 128, v2[5:].shape)
    out2 = attention(q, k2, v2, p, causal=True)
    assert (out2[:5] == out[:5]).all()


def test_intermediates_consistent():
    rng = np.random.default_rng(7)
    q, k, v = rand_case(rng, 5, 7, 8, 3)
    p = typical_params(8)
    out, mid = attention(q, k, v, p, intermediates=True)
    assert mid["acc"].dtype == np.int32 and mid["acc"].shape == (5, 7)
    assert mid["scores"].dtype == np.int8 and mid["probs"].dtype == np.int8
    assert (mid["pv"] == ((mid["probs"].astype(np.int64) + 128) @ v.astype(np.int64))).all()
    assert (out == attention(q, k, v, p)).all()


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_is_heads_in_turn(causal):
    rng = np.random.default_rng(8)
    H, d, S = 3, 4, 6
    q, k, v = rand_case(rng, S, S, H * d, H * d)
    p = typical_params(d)
    got = multi_head_attention(q, k, v, p, H, causal)
    assert got.shape == (S, H * d)
    for h in range(H):
        cols = slice(h * d, (h + 1) * d)
        assert (got[:, cols] == attention(q[:, cols], k[:, cols], v[:, cols], p, causal)).all()
    assert (merge_heads(split_heads(q, H)) == q).all()


def test_bad_input():
    p = typical_params(4)
    rng = np.random.default_rng(9)
    q, k, v = rand_case(rng, 3, 5, 4, 2)
    with pytest.raises(ValueError, match="Q must be int8"):
        attention(q.astype(np.int16), k, v, p)
    with pytest.raises(ValueError, match="head dimension"):
        attention(q[:, :3], k, v, p)
    with pytest.raises(ValueError, match="same sequence length"):
        attention(q, k, v[:4], p)
    with pytest.raises(ValueError, match="causal"):
        attention(q, k, v, p, causal=True)
    with pytest.raises(ValueError, match="params"):
        attention(q, k, v, None)
    with pytest.raises(ValueError, match="heads"):
        multi_head_attention(q, k, v, p, 3)


@pytest.mark.parametrize("kwargs,name", [
    ({"q_scale": 0}, "q_scale"), ({"v_scale": float("nan")}, "v_scale"),
    ({"score_scale": 1e-9}, "score"), ({"out_scale": 1e-12}, "output"),
    ({"score_scale": 1e4}, "score_scale"), ({"head_dim": 0}, "head_dim"),
    ({"out_zero_point": 200}, "out_zero_point")])
def test_bad_params(kwargs, name):
    args = dict(q_scale=1 / 128, k_scale=1 / 128, v_scale=1 / 128, score_scale=1 / 16,
                out_scale=1 / 128, head_dim=16)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        attention_params(**args)
    assert isinstance(attention_params(1 / 128, 1 / 128, 1 / 128, 1 / 16, 1 / 128, 16),
                      AttentionParams)
