"""Integer scaled dot-product attention (single head, and multi-head by running heads in turn).

Quantization: ``Q``, ``K``, ``V`` are int8, symmetric (zero point 0) with per-tensor scales
``s_q``, ``s_k``, ``s_v``. The attention scores are int8 with scale ``s_s`` (zero point 0; the
softmax does not depend on it). The output is int8 with scale ``s_o`` and zero point ``z_o``.

Single head, ``Q``: Sq x d, ``K``: Sk x d, ``V``: Sk x dv, every step integer:

1. ``acc = Q @ K.T``                      int32 (:func:`golden.gemm.gemm`)
2. ``scores = requantize(acc, M_s, shift_s, 0)``   int8, with the 1/sqrt(d) folded into the
   multiplier: ``(M_s, shift_s) = quantize_multiplier(s_q * s_k / (sqrt(d) * s_s))``
3. ``P = softmax(scores, softmax_params(s_s))``    per row, int8, scale 1/256, zero point -128
   (:mod:`golden.softmax`). With ``causal=True`` (needs Sq == Sk) row i is the softmax of
   ``scores[i, :i+1]`` only, and the masked entries ``P[i, j > i]`` are -128, i.e. probability 0
   (the hardware sends the unmasked prefix, length i + 1, as the softmax frame).
4. ``pv = P @ V + 128 * colsum(V)``        int32, i.e. ``sum_j (P[i, j] + 128) * V[j, c]``: the
   probabilities as uint8 (scale 1/256) times V, computed as an int8 x int8 GEMM whose bias
   is ``128 * sum_j V[j, :]`` (:func:`golden.gemm.gemm`)
5. ``out = requantize(pv, M_o, shift_o, z_o)``      int8, ``(M_o, shift_o) =
   quantize_multiplier(s_v / (256 * s_o))``

Multi-head (:func:`multi_head_attention`): ``Q``, ``K``, ``V`` are S x (H * d) (the projections
are done beforehand); head h uses columns ``h*d .. (h+1)*d - 1`` of each (:func:`split_heads`),
heads run one after another with the same :class:`AttentionParams`, and the H outputs
(each Sq x dv) are concatenated along the columns in head order (:func:`merge_heads`), giving
Sq x (H * dv).
"""

import math
from dataclasses import dataclass

import numpy as np

from .gemm import gemm
from .quant import quantize_multiplier, requantize
from .softmax import SoftmaxParams, softmax, softmax_params

__all__ = ["AttentionParams", "attention_params", "attention", "multi_head_attention",
           "split_heads", "merge_heads", "attention_float"]


@dataclass(frozen=True)
class AttentionParams:
    """Integers of one attention head (shared by all heads of a layer)."""
    head_dim: int
    score_multiplier: int
    score_shift: int
    softmax: SoftmaxParams
    out_multiplier: int
    out_shift: int
    out_zero_point: int


def _scale(name, value):
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return s


def _multiplier(name, real):
    try:
        m0, shift = quantize_multiplier(real)
    except ValueError as e:
        raise ValueError(f"{name} multiplier {real!r} does not fit: {e}") from None
    if m0 == 0:
        raise ValueError(f"{name} multiplier {real!r} underflows to 0 (below 2**-32)")
    return m0, shift


def attention_params(q_scale, k_scale, v_scale, score_scale, out_scale, head_dim,
                     out_zero_point=0):
    """Fold the float scales into the integers of :class:`AttentionParams` (``ValueError`` if
    a scale is not positive or a multiplier does not fit)."""
    sq, sk, sv = _scale("q_scale", q_scale), _scale("k_scale", k_scale), _scale("v_scale", v_scale)
    ss, so = _scale("score_scale", score_scale), _scale("out_scale", out_scale)
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
        raise ValueError(f"head_dim must be a positive integer, got {head_dim!r}")
    if isinstance(out_zero_point, bool) or not isinstance(out_zero_point, int) or not (
            -128 <= out_zero_point <= 127):
        raise ValueError(f"out_zero_point must be an integer in [-128, 127], got {out_zero_point!r}")
    ms, shs = _multiplier("score (q_scale * k_scale / (sqrt(head_dim) * score_scale))",
                          sq * sk / (math.sqrt(head_dim) * ss))
    try:
        sm = softmax_params(ss)
    except ValueError as e:
        raise ValueError(f"score_scale: {e}") from None
    mo, sho = _multiplier("output (v_scale / (256 * out_scale))", sv / (256.0 * so))
    return AttentionParams(head_dim, ms, shs, sm, mo, sho, out_zero_point)


def _check(q, k, v, params, causal):
    if not isinstance(params, AttentionParams):
        raise ValueError(f"params must be AttentionParams (from attention_params), got {params!r}")
    arrs = []
    for name, x in (("Q", q), ("K", k), ("V", v)):
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise ValueError(f"{name} must be int8, got {x.dtype}")
        if x.ndim != 2 or 0 in x.shape:
            raise ValueError(f"{name} must be a non-empty 2-D array, got shape {x.shape}")
        arrs.append(x)
    q, k, v = arrs
    if q.shape[1] != params.head_dim or k.shape[1] != params.head_dim:
        raise ValueError(f"head dimension: Q is {q.shape}, K is {k.shape}, params.head_dim is "
                         f"{params.head_dim}")
    if k.shape[0] != v.shape[0]:
        raise ValueError(f"K and V need the same sequence length, got {k.shape} and {v.shape}")
    if causal and q.shape[0] != k.shape[0]:
        raise ValueError(f"causal mask needs Sq == Sk, got Q {q.shape} and K {k.shape}")
    return q, k, v


def attention(q, k, v, params, causal=False, intermediates=False):
    """One head: int8 Sq x dv. ``intermediates=True`` also returns a dict of every step
    (``acc``, ``scores``, ``probs``, ``pv``) for checking a hardware datapath stage by stage."""
    q, k, v = _check(q, k, v, params, causal)
    acc = gemm(q, np.ascontiguousarray(k.T))
    scores = requantize(acc, params.score_multiplier, params.score_shift, 0)
    if causal:
        probs = np.full(scores.shape, -128, np.int8)
        for i in range(scores.shape[0]):
            probs[i, :i + 1] = softmax(scores[i, :i + 1], params.softmax)
    else:
        probs = softmax(scores, params.softmax)
    colsum = v.astype(np.int64).sum(axis=0)
    pv = gemm(probs, v, (128 * colsum).astype(np.int32))
    out = requantize(pv, params.out_multiplier, params.out_shift, params.out_zero_point)
    if intermediates:
        return out, {"acc": acc, "scores": scores, "probs": probs, "pv": pv}
    return out


def split_heads(x, num_heads):
    """S x (H*d) -> list of H arrays S x d: head h is columns h*d .. (h+1)*d - 1."""
    x = np.asarray(x)
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive integer, got {num_heads!r}")
    if x.ndim != 2 or x.shape[1] % num_heads:
        raise ValueError(f"cannot split shape {x.shape} into {num_heads} heads (columns must "
                         f"divide evenly)")
    d = x.shape[1] // num_heads
    return [np.ascontiguousarray(x[:, h * d:(h + 1) * d]) for h in range(num_heads)]


def merge_heads(heads):
    """Concatenate head outputs (each S x dv) along the columns in head order."""
    return np.concatenate(heads, axis=1)


def multi_head_attention(q, k, v, params, num_heads, causal=False):
    """H heads one after another on column slices of Q, K, V; outputs concatenated."""
    qs, ks, vs = (split_heads(x, num_heads) for x in (q, k, v))
    return merge_heads([attention(qh, kh, vh, params, causal) for qh, kh, vh in zip(qs, ks, vs)])


def attention_float(q, k, v, q_scale, k_scale, v_scale, causal=False):
    """Float64 reference on the dequantized inputs (real-valued output, no output rounding)."""
    qf = np.asarray(q, np.float64) * q_scale
    kf = np.asarray(k, np.float64) * k_scale
    vf = np.asarray(v, np.float64) * v_scale
    s = qf @ kf.T / math.sqrt(qf.shape[1])
    if causal:
        s = np.where(np.tril(np.ones(s.shape, bool)), s, -np.inf)
    s = s - s.max(axis=1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=1, keepdims=True)
    return p @ vf
