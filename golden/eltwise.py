"""Elementwise addition of two int8 tensors with TFLite's ADD semantics, integers only.

Quantization: ``x1`` at ``(s1, z1)``, ``x2`` at ``(s2, z2)``, the sum at ``(s_out, z_out)``.
:func:`add_params` derives every integer constant from the scales, as TFLite's ADD Prepare
does for int8 (``left_shift`` = 20)::

    twice_max = 2 * max(s1, s2)
    (m1, sh1) = quantize_multiplier(s1 / twice_max)                  (sh1 <= 0)
    (m2, sh2) = quantize_multiplier(s2 / twice_max)
    (mo, sho) = quantize_multiplier(twice_max / (2**20 * s_out))    (needs a multiplier < 1)

:func:`add_int8` computes, per element (``mbqm`` = golden.quant.multiply_by_quantized_multiplier,
SaturatingRoundingDoublingHighMul then RoundingDivideByPOT)::

    a1  = mbqm((x1 - z1) * 2**20, m1, sh1)          |x - z| <= 255, so (x - z) * 2**20 < 2**28
    a2  = mbqm((x2 - z2) * 2**20, m2, sh2)
    y   = clamp(mbqm(a1 + a2, mo, sho) + z_out, qmin, qmax)

The last line is exactly :func:`golden.quant.requantize` of the sum ``a1 + a2`` with bias 0:
the hardware runs it through the CONV engine's requantizer. ``qmin``/``qmax`` carry a fused
ReLU (``qmin = z_out``) or ReLU6.
"""

from dataclasses import dataclass

import numpy as np

from .quant import multiply_by_quantized_multiplier, quantize_multiplier, requantize

__all__ = ["ADD_LEFT_SHIFT", "AddParams", "add_params", "add_inputs_scaled", "add_int8"]

ADD_LEFT_SHIFT = 20


@dataclass(frozen=True)
class AddParams:
    """The integer constants of one ADD (zero points as stored: ``z``, not ``-z``)."""
    z1: int
    m1: int
    shift1: int
    z2: int
    m2: int
    shift2: int
    out_multiplier: int
    out_shift: int
    z_out: int


def _zero_point(name, z):
    if isinstance(z, bool) or not isinstance(z, (int, np.integer)) or not -128 <= z <= 127:
        raise ValueError(f"{name} must be an integer in [-128, 127], got {z!r}")
    return int(z)


def add_params(s1, z1, s2, z2, s_out, z_out):
    """The constants of ``y = x1 + x2`` in the given quantizations; ``ValueError`` naming the
    problem for a scale that is not a finite positive number or an output multiplier that
    is not below 1 (``s_out`` too small for the inputs)."""
    for name, s in (("s1", s1), ("s2", s2), ("s_out", s_out)):
        if isinstance(s, bool) or not isinstance(s, (int, float, np.floating)) or \
                not np.isfinite(s) or s <= 0:
            raise ValueError(f"ADD scale {name} must be a finite number > 0, got {s!r}")
    twice_max = 2.0 * max(float(s1), float(s2))
    out_real = twice_max / ((1 << ADD_LEFT_SHIFT) * float(s_out))
    if out_real >= 1.0:
        raise ValueError(f"ADD output scale {s_out!r} too small for input scales {s1!r}, "
                         f"{s2!r}: the output multiplier {out_real:.3g} must be < 1")
    m1, sh1 = quantize_multiplier(float(s1) / twice_max)
    m2, sh2 = quantize_multiplier(float(s2) / twice_max)
    mo, sho = quantize_multiplier(out_real)
    return AddParams(_zero_point("z1", z1), m1, sh1, _zero_point("z2", z2), m2, sh2, mo, sho,
                     _zero_point("z_out", z_out))


def add_inputs_scaled(x1, x2, p):
    """``a1 + a2``: both inputs on the common scale, summed (int64; |sum| < 2**28)."""
    x1 = np.asarray(x1)
    x2 = np.asarray(x2)
    if x1.dtype != np.int8 or x2.dtype != np.int8:
        raise ValueError(f"ADD inputs must be int8, got {x1.dtype} and {x2.dtype}")
    if x1.shape != x2.shape:
        raise ValueError(f"ADD inputs must have the same shape, got {x1.shape} and {x2.shape}")
    a1 = multiply_by_quantized_multiplier(
        (x1.astype(np.int64) - p.z1) << ADD_LEFT_SHIFT, p.m1, p.shift1)
    a2 = multiply_by_quantized_multiplier(
        (x2.astype(np.int64) - p.z2) << ADD_LEFT_SHIFT, p.m2, p.shift2)
    return np.asarray(a1, np.int64) + np.asarray(a2, np.int64)


def add_int8(x1, x2, p, qmin=-128, qmax=127):
    """int8 ``x1 + x2`` with TFLite ADD semantics (module docstring)."""
    s = add_inputs_scaled(x1, x2, p)
    return requantize(s.astype(np.int32), p.out_multiplier, p.out_shift, p.z_out,
                      qmin=qmin, qmax=qmax)
