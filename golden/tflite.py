"""Golden models of TFLite's int8 reference kernels where they differ from the project's own.

Every function here reproduces what LiteRT 2.3.0 (``ai-edge-litert``, the TFLite runtime)
computes with ``OpResolverType.BUILTIN_REF`` (TFLite's reference kernels), bit for bit; the
tests in ``tests/test_golden_tflite.py`` compare each one with LiteRT on random single-op models
and on every layer of the MLPerf Tiny models. The formulas were read in TensorFlow Lite's reference
code (``tensorflow/lite/kernels/internal/reference/...``, ``quantization_util.cc``,
``kernel_util.cc``, gemmlowp's ``fixedpoint.h``) and, where the source and the shipped binary
could disagree, settled by measurement; nothing is copied.

Quantization is TFLite's: ``real = scale * (q - zero_point)``, scales stored as float32. The
*Prepare* step of every kernel widens those float32 scales to ``double`` and derives integer
constants from them; the functions named ``*_params`` / ``*_scale`` / ``*_multipliers`` do the
same with Python floats (IEEE doubles, so the results are the same bits).

What differs from the project's golden functions, kernel by kernel
------------------------------------------------------------------
* CONV_2D / DEPTHWISE_CONV_2D: the arithmetic *is* the project's (im2col + :func:`golden.gemm`
  + :func:`golden.quant.requantize`, i.e. SRDHM then RoundingDivideByPOT); what is new is the
  geometry: KH x KW kernels, separate strides, TFLite's asymmetric SAME padding, depthwise.
* FULLY_CONNECTED: LiteRT's reference int8 kernel does **not** use the fixed-point multiplier.
  It rounds ``acc * (s_x * s_w / s_y)`` computed in double precision, half away from zero
  (:func:`requantize_double_scale`). The single-rounding fixed-point path
  (:func:`requantize_single_rounding`) agrees on typical data but not at ties nor near them.
* AVERAGE_POOL_2D: divides by the number of taps inside the image (``filter_count``), with
  C integer division (:func:`avg_pool2d_tflite`); ``golden.pooling`` counts padding as the zero
  point and divides by k*k, square windows only.
* ADD: TFLite's two-input rescaling (left shift 20, three fixed-point multipliers):
  :func:`add_params`, :func:`add_int8`.
* SOFTMAX: TFLite's fixed-point exp / reciprocal (gemmlowp): :func:`softmax_params`,
  :func:`softmax_tflite`; ``golden.softmax`` is a different approximation that is usually but
  not always equal (about 2 outputs in 10,000 differ by 1 on random logits).
* RELU / RELU6 as operators: a requantization (:func:`relu_tflite`); a once-rounded
  ``golden.activation.build_table`` differs by 1 at ties.
* LOGISTIC / TANH: LiteRT's int8 kernels look the output up in a 256-entry table that
  Prepare fills in **float32** arithmetic (:func:`lut_table_tflite`);
  ``golden.activation.build_table`` (float64) gives the same table except where the float32
  rounding crosses a rounding boundary of the output (measured: 1 entry in 204,800).
"""

import math
from dataclasses import dataclass

import numpy as np

from . import eltwise
from .conv import Window, conv2d_int8, depthwise_conv2d_int8, fold_zero_point
from .gemm import gemm
from .pooling import avg_pool2d_window, max_pool2d_window
from .quant import (INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier, quantize_multiplier,
                    rounding_divide_by_pot, saturating_rounding_doubling_high_mul, requantize)

__all__ = [
    "ACTIVATIONS", "activation_range", "round_half_away", "same_padding", "output_size",
    "conv_multipliers", "requantize_single_rounding", "fully_connected_scale",
    "requantize_double_scale", "fully_connected_tflite", "conv2d_tflite",
    "depthwise_conv2d_tflite", "divide_round_half_away_c",
    "avg_pool2d_tflite", "max_pool2d_tflite", "relu_tflite", "LUT_FUNCTIONS",
    "lut_table_tflite", "add_params", "add_int8",
    "SoftmaxTfliteParams", "softmax_params", "softmax_tflite", "exp_on_negative_values",
    "one_over_one_plus_x_for_x_in_0_1", "softmax_exp_table", "SOFTMAX_TFLITE_MAX_LEN",
    "RECIPROCAL_START", "RECIPROCAL_NEWTON_STEPS",
]

#: Fused activations of TFLite's options tables (``ActivationFunctionType``) handled here.
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def _check_clamp(qmin, qmax):
    if not -128 <= qmin <= qmax <= 127:
        raise ValueError(f"need -128 <= qmin <= qmax <= 127, got qmin={qmin}, qmax={qmax}")


def _f32(v):
    """A scale as TFLite holds it: the nearest float32, as a Python float."""
    return float(np.float32(v))


def round_half_away(v):
    """Round float64 values to the nearest integer, ties away from zero (C's ``round``).

    Exact for every double: ``v - trunc(v)`` is computed without rounding, so no value just
    below one half is pushed up by an addition."""
    v = np.asarray(v, np.float64)
    t = np.trunc(v)
    return (t + np.sign(v) * (np.abs(v - t) >= 0.5)).astype(np.int64)


def activation_range(activation, scale, zero_point, qmin=-128, qmax=127):
    """``(act_min, act_max)`` of a fused activation, as ``CalculateActivationRangeQuantized``.

    ``quantize(f) = zero_point + round_half_away(f / scale)`` with ``f / scale`` a **float32**
    division (TFLite's lambda takes and divides floats)::

        NONE          (qmin, qmax)
        RELU          (max(qmin, quantize(0)), qmax)
        RELU6         (max(qmin, quantize(0)), min(qmax, quantize(6)))
        RELU_N1_TO_1  (max(qmin, quantize(-1)), min(qmax, quantize(1)))
    """
    def quantize(f):
        q = np.float32(f) / np.float32(scale)
        return int(zero_point) + int(round_half_away(np.float64(q)))
    if activation == "NONE":
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, quantize(0.0)), qmax
    if activation == "RELU6":
        return max(qmin, quantize(0.0)), min(qmax, quantize(6.0))
    if activation == "RELU_N1_TO_1":
        return max(qmin, quantize(-1.0)), min(qmax, quantize(1.0))
    raise ValueError(f"unsupported fused activation {activation!r}; known: {ACTIVATIONS}")


# --------------------------------------------------------------------------------------------
# Geometry

def output_size(size, kernel, stride, padding):
    """Output length along one axis (dilation 1), TFLite's ``ComputeOutSize``:
    SAME ``ceil(in / s)``, VALID ``ceil((in - k + 1) / s)``."""
    if padding == "SAME":
        return -(-size // stride)
    if padding == "VALID":
        return -(-(size - kernel + 1) // stride)
    raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")


def same_padding(size, kernel, stride, padding="SAME"):
    """``(pad_before, out)`` along one axis, as TFLite's ``ComputePaddingHeightWidth``::

        out        = output_size(size, kernel, stride, padding)
        pad_total  = max((out - 1) * stride + kernel - size, 0)
        pad_before = pad_total // 2          (the odd extra row/column goes after)

    VALID pads nothing. Taps past the end of the input are skipped like taps before it."""
    out = output_size(size, kernel, stride, padding)
    if out < 1:
        raise ValueError(f"kernel {kernel} does not fit an input of {size} with {padding}")
    if padding == "VALID":
        return 0, out
    return max((out - 1) * stride + kernel - size, 0) // 2, out


def _check_geometry(x, kh, kw, sy, sx, pad_top, pad_left, out_h, out_w):
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ValueError(f"input must be int8, got {x.dtype}")
    if x.ndim != 4 or 0 in x.shape:
        raise ValueError(f"input must be a non-empty NHWC array, got shape {x.shape}")
    for name, v, lo in (("kh", kh, 1), ("kw", kw, 1), ("sy", sy, 1), ("sx", sx, 1),
                        ("pad_top", pad_top, 0), ("pad_left", pad_left, 0),
                        ("out_h", out_h, 1), ("out_w", out_w, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return x


# --------------------------------------------------------------------------------------------
# Requantization

def conv_multipliers(input_scale, filter_scales, output_scale):
    """Per-channel ``(M0, shift)`` of CONV_2D / DEPTHWISE_CONV_2D, as
    ``PopulateConvolutionQuantizationParams``: ``m[c] = (double(s_x) * double(s_w[c])) /
    double(s_y)``, then ``QuantizeMultiplier`` (:func:`golden.quant.quantize_multiplier`)."""
    sw = np.atleast_1d(np.asarray(filter_scales, np.float32)).astype(np.float64)
    real = (np.float64(_f32(input_scale)) * sw) / np.float64(_f32(output_scale))
    pairs = [quantize_multiplier(r) for r in real]
    return (np.array([p[0] for p in pairs], np.int32), np.array([p[1] for p in pairs], np.int32))


def requantize_single_rounding(acc, m0, shift, zero_point, qmin=-128, qmax=127):
    """int32 ``acc`` -> int8 with TFLite's single-rounding ``MultiplyByQuantizedMultiplier``
    (``TFLITE_SINGLE_ROUNDING`` in ``kernels/internal/common.cc``)::

        total = 31 - shift                                     (1 <= total <= 62)
        y     = (acc * M0 + 2**(total - 1)) >> total            (int64, arithmetic shift)
        q     = clamp(y + zero_point, qmin, qmax)

    i.e. ``acc * M0 * 2**(shift - 31)`` rounded once, to nearest with ties toward +infinity
    (``floor(v + 1/2)``). ``m0``/``shift`` are scalars or per-channel arrays on the last axis;
    ``-31 <= shift <= 30`` as TFLite checks. A result outside int32 (undefined in TFLite) raises.
    """
    _check_clamp(qmin, qmax)
    a = np.asarray(acc)
    if a.dtype.kind not in "iu" or (a.size and (a.min() < INT32_MIN or a.max() > INT32_MAX)):
        raise ValueError("acc must be int32 values")
    m0 = np.asarray(m0, np.int64)
    shift = np.asarray(shift, np.int64)
    if m0.size and (m0.min() < 0 or m0.max() > INT32_MAX):
        raise ValueError("M0 must be in [0, 2**31 - 1]")
    if shift.size and (shift.min() < -31 or shift.max() > 30):
        raise ValueError("shift must be in [-31, 30]")
    total = 31 - shift
    y = (a.astype(np.int64) * m0 + (np.int64(1) << (total - 1))) >> total
    if y.size and (y.min() < INT32_MIN or y.max() > INT32_MAX):
        raise ValueError("the scaled value leaves int32")
    return np.clip(y + int(zero_point), qmin, qmax).astype(np.int8)


def fully_connected_scale(input_scale, weight_scale, output_scale):
    """FULLY_CONNECTED's effective scale ``(double(s_x) * double(s_w)) / double(s_y)``, the double
    LiteRT's reference kernel multiplies the accumulator by."""
    return (_f32(input_scale) * _f32(weight_scale)) / _f32(output_scale)


def _double_parts(scale):
    """``(M, E)`` with ``scale == M * 2**-E`` exactly, ``M`` an integer below 2**53."""
    mant, exp = math.frexp(float(scale))
    return int(mant * (1 << 53)), 53 - exp


def _round_product_to_double(p, e):
    """Round the exact value ``p * 2**-e`` (``p`` an int) to 53 significant bits, ties to even,
    as an IEEE double multiplication does; returns the new ``(p, e)``."""
    drop = abs(p).bit_length() - 53
    if drop <= 0:
        return p, e
    q, r = divmod(abs(p), 1 << drop)
    half = 1 << (drop - 1)
    if r > half or (r == half and q & 1):
        q += 1
    return (q if p >= 0 else -q), e - drop


def _round_half_away_pot(p, e):
    """``p * 2**-e`` rounded to an integer, ties away from zero."""
    if e <= 0:
        return p << -e
    q, r = divmod(abs(p), 1 << e)
    q += r >= (1 << (e - 1))
    return q if p >= 0 else -q


def requantize_double_scale(acc, scale, zero_point, qmin=-128, qmax=127):
    """int32 ``acc`` -> int8 the way LiteRT's int8 FULLY_CONNECTED reference kernel does::

        q = clamp(round(double(acc) * scale) + zero_point, qmin, qmax)

    with ``scale`` from :func:`fully_connected_scale`, the product rounded to double (IEEE,
    ties to even) and C's ``round`` (half away from zero). Computed here with integers only,
    exactly: ``scale = M * 2**-E`` (M < 2**53), the product ``acc * M`` rounded to 53 significant
    bits, then rounded half away from zero at bit E. (Found by measurement: LiteRT 2.3.0 does
    not use the fixed-point ``MultiplyByQuantizedMultiplier`` for this kernel; see the module
    docstring.)"""
    _check_clamp(qmin, qmax)
    a = np.asarray(acc)
    if a.dtype.kind not in "iu" or (a.size and (a.min() < INT32_MIN or a.max() > INT32_MAX)):
        raise ValueError("acc must be int32 values")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be finite and > 0, got {scale!r}")
    m, e = _double_parts(scale)
    out = np.empty(a.shape, np.int64)
    flat = out.reshape(-1)
    for i, v in enumerate(a.reshape(-1).tolist()):
        flat[i] = _round_half_away_pot(*_round_product_to_double(v * m, e))
    return np.clip(out + int(zero_point), qmin, qmax).astype(np.int8)


def fully_connected_tflite(x, weights, bias, input_zero_point, scale, output_zero_point,
                           qmin=-128, qmax=127):
    """int8 FULLY_CONNECTED: ``x`` ``(batch, K)``, ``weights`` int8 ``(N, K)`` (TFLite's layout,
    weight zero point 0), ``bias`` int32 ``(N,)``::

        acc[b, n] = sum_k (x[b, k] - z_x) * w[n, k] + bias[n]       (golden.gemm, z_x folded)
        y[b, n]   = requantize_double_scale(acc, scale, z_y, qmin, qmax)
    """
    b_matrix = np.ascontiguousarray(np.asarray(weights, np.int8).T)
    gemm_bias = fold_zero_point(np.asarray(bias, np.int32), b_matrix, input_zero_point)
    acc = gemm(np.asarray(x, np.int8).reshape(-1, b_matrix.shape[0]), b_matrix, gemm_bias)
    return requantize_double_scale(acc, scale, output_zero_point, qmin, qmax)


# --------------------------------------------------------------------------------------------
# Convolutions

def _window(x, kh, kw, sy, sx, pad_top, pad_left, out_h, out_w):
    """The :class:`golden.conv.Window` of a TFLite op: the bottom and right padding are what
    makes the output ``out_h x out_w``."""
    x = _check_geometry(x, kh, kw, sy, sx, pad_top, pad_left, out_h, out_w)
    pb = max((out_h - 1) * sy + kh - pad_top - x.shape[1], 0)
    pr = max((out_w - 1) * sx + kw - pad_left - x.shape[2], 0)
    return x, Window(kh, kw, sy, sx, pad_top, pad_left, pb, pr)


def conv2d_tflite(x, filters, bias, sy, sx, pad_top, pad_left, out_h, out_w, *,
                  input_zero_point, multiplier, shift, output_zero_point, qmin=-128, qmax=127):
    """int8 CONV_2D (``reference_integer_ops::ConvPerChannel``), dilation 1.

    ``filters`` int8 ``(Cout, KH, KW, Cin)`` (TFLite's layout), ``bias`` int32 ``(Cout,)``,
    ``multiplier``/``shift`` per channel (:func:`conv_multipliers`)::

        acc[n, oy, ox, co] = bias[co] + sum over taps inside the image of
                             (x[n, oy*sy + ky - pad_top, ox*sx + kx - pad_left, ci] - z_x)
                             * filters[co, ky, kx, ci]
        y = requantize(acc, M0[co], shift[co], z_y, qmin, qmax)   (golden.quant: SRDHM, RDBPOT)

    TFLite skips taps outside the image; :func:`golden.conv.conv2d_int8` gives them ``z_x``
    and folds the zero point into the bias, so they contribute 0: the same thing."""
    filters = np.asarray(filters, np.int8)
    cout, kh, kw, cin = filters.shape
    if np.shape(x)[-1] != cin:
        raise ValueError(f"input has {np.shape(x)[-1]} channels, filters expect {cin}")
    x, win = _window(x, kh, kw, sy, sx, pad_top, pad_left, out_h, out_w)
    b_matrix = np.ascontiguousarray(filters.reshape(cout, kh * kw * cin).T)
    gemm_bias = fold_zero_point(np.asarray(bias, np.int32), b_matrix, input_zero_point)
    acc = conv2d_int8(x, b_matrix, gemm_bias, win, input_zero_point=input_zero_point)
    return requantize(acc, multiplier, shift, output_zero_point, qmin=qmin, qmax=qmax)


def depthwise_conv2d_tflite(x, filters, bias, sy, sx, pad_top, pad_left, out_h, out_w, *,
                            input_zero_point, multiplier, shift, output_zero_point,
                            qmin=-128, qmax=127):
    """int8 DEPTHWISE_CONV_2D, depth multiplier 1 (``reference_integer_ops::
    DepthwisePerChannel``): ``filters`` int8 ``(1, KH, KW, C)``, channel ``c`` of the output
    from channel ``c`` of the input, through :func:`golden.conv.depthwise_conv2d_int8`."""
    filters = np.asarray(filters, np.int8)
    if filters.ndim != 4 or filters.shape[0] != 1:
        raise ValueError(f"depthwise filters must be (1, KH, KW, C), got {filters.shape}")
    _, kh, kw, c = filters.shape
    x, win = _window(x, kh, kw, sy, sx, pad_top, pad_left, out_h, out_w)
    if x.shape[3] != c:
        raise ValueError(f"input has {x.shape[3]} channels, filters expect {c} (multiplier 1)")
    taps = filters.reshape(kh * kw, c)
    gemm_bias = fold_zero_point(np.asarray(bias, np.int32), taps, input_zero_point)
    acc = depthwise_conv2d_int8(x, taps, gemm_bias, win, input_zero_point)
    return requantize(acc, multiplier, shift, output_zero_point, qmin=qmin, qmax=qmax)


# --------------------------------------------------------------------------------------------
# Pooling

def divide_round_half_away_c(s, count):
    """TFLite's average rounding in C integer arithmetic (``/`` truncates toward zero)::

        s > 0:   (s + count / 2) / count
        s <= 0:  (s - count / 2) / count

    which is ``s / count`` rounded to nearest, ties away from zero (for odd ``count`` there are
    no ties; for even ``count`` ``count / 2`` is exactly a half)."""
    s = np.asarray(s, np.int64)
    count = np.asarray(count, np.int64)
    half = count // 2
    positive = (s + half) // count                  # numerator > 0: floor == truncation
    negative = -((half - s) // count)               # numerator <= 0: truncate toward zero
    return np.where(s > 0, positive, negative)


def avg_pool2d_tflite(x, kh, kw, sy, sx, pad_top, pad_left, out_h, out_w, qmin=-128, qmax=127):
    """int8 AVERAGE_POOL_2D (``reference_integer_ops::AveragePool``); output quantization =
    input quantization, so raw int8 values are averaged::

        S     = sum of x over the taps of the window inside the image
        count = number of those taps (filter_count; padding is not counted)
        y     = clamp(divide_round_half_away_c(S, count), qmin, qmax)

    that is :func:`golden.pooling.avg_pool2d_window` with ``count="valid"`` (whose divider is
    the hardware's multiply-and-shift; the tests check it against the C division here). A
    window with no tap inside the image is an error in TFLite (``ValueError`` here)."""
    x, win = _window(x, kh, kw, sy, sx, pad_top, pad_left, out_h, out_w)
    avg = avg_pool2d_window(x, win, 0, count="valid")
    return np.clip(avg, qmin, qmax).astype(np.int8)


def max_pool2d_tflite(x, kh, kw, sy, sx, pad_top, pad_left, out_h, out_w, qmin=-128, qmax=127):
    """int8 MAX_POOL_2D (``reference_integer_ops::MaxPool``): the maximum of the taps inside the
    image (starting from -128), then ``clamp(., qmin, qmax)``: :func:`golden.pooling.
    max_pool2d_window`."""
    x, win = _window(x, kh, kw, sy, sx, pad_top, pad_left, out_h, out_w)
    return np.clip(max_pool2d_window(x, win), qmin, qmax).astype(np.int8)


# --------------------------------------------------------------------------------------------
# RELU / RELU6 as operators (not fused)

def relu_tflite(x, input_scale, input_zero_point, output_scale, output_zero_point,
                upper=None):
    """int8 RELU (``upper=None``) or RELU6 (``upper=6.0``) as a standalone operator
    (``ReluX``): a requantization from the input to the output quantization, then the clamp::

        (M0, shift) = QuantizeMultiplier(float32(s_x / s_y))      (a float32 division)
        lo = max(-128, z_y + roundf(0 / s_y));  hi = min(127, z_y + roundf(upper / s_y))
        y  = clamp(z_y + MultiplyByQuantizedMultiplier(x - z_x, M0, shift), lo, hi)

    (golden.quant's double-rounding multiply). ``golden.activation.build_table`` rounds the
    real value once instead and differs by 1 at some ties."""
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ValueError(f"x must be int8, got {x.dtype}")
    m0, shift = quantize_multiplier(float(np.float32(input_scale) / np.float32(output_scale)))
    lo = max(-128, int(output_zero_point))
    hi = 127
    if upper is not None:
        top = np.float64(np.float32(upper) / np.float32(output_scale))
        hi = min(127, int(output_zero_point) + int(round_half_away(top)))
    return requantize(x.astype(np.int32) - int(input_zero_point), m0, shift,
                      output_zero_point, qmin=lo, qmax=hi)


# --------------------------------------------------------------------------------------------
# LOGISTIC / TANH: a table filled in float32

def _sigmoid_f32(x):
    """``1.0f / (1.0f + expf(-x))`` on float32 ``x``: float32 add and divide (IEEE, as C
    does them); ``expf`` as the correctly rounded float32 of the float64 ``exp``."""
    with np.errstate(over="ignore"):               # expf overflows to inf too: 1/(1+inf) = 0
        e = np.exp(-x.astype(np.float64)).astype(np.float32)
    return np.float32(1.0) / (np.float32(1.0) + e)


def _tanh_f32(x):
    """``tanhf(x)``, as the correctly rounded float32 of the float64 ``tanh``."""
    return np.tanh(x.astype(np.float64)).astype(np.float32)


#: Operator -> TFLite's float32 transform of its int8 lookup table.
LUT_FUNCTIONS = {"LOGISTIC": _sigmoid_f32, "TANH": _tanh_f32}


def lut_table_tflite(op, input_scale, input_zero_point, output_scale, output_zero_point):
    """The 256-entry int8 table of LiteRT's int8 LOGISTIC or TANH (``table[x + 128]`` is the
    output for input ``x``, :mod:`golden.activation`'s convention), filled as TFLite's
    Prepare does it, in float32 (``float`` in C)::

        dequantized = s_x * float(x - z_x)                       (float32 product)
        transformed = 1 / (1 + expf(-dequantized))  |  tanhf(dequantized)
        rescaled    = roundf(transformed * (1.0f / s_y))        (half away from zero)
        table[x]    = clamp(int(rescaled + float(z_y)), -128, 127)

    ``expf``/``tanhf`` are taken as correctly rounded (C libraries are within 1 ulp); the
    tests compare every entry with LiteRT over random quantizations (the float64
    ``golden.activation.build_table`` differs at rare near-ties)."""
    if op not in LUT_FUNCTIONS:
        raise ValueError(f"no lookup table for {op!r}; known: {sorted(LUT_FUNCTIONS)}")
    s_x, s_y = np.float32(input_scale), np.float32(output_scale)
    if not (np.isfinite(s_x) and np.isfinite(s_y) and s_x > 0 and s_y > 0):
        raise ValueError(f"scales must be finite and > 0, got {input_scale!r}, {output_scale!r}")
    x = np.arange(-128, 128, dtype=np.int64)
    dequantized = s_x * (x - int(input_zero_point)).astype(np.float32)
    rescaled = LUT_FUNCTIONS[op](dequantized) * (np.float32(1.0) / s_y)
    rounded = round_half_away(rescaled.astype(np.float64)).astype(np.float32)
    quantized = (rounded + np.float32(output_zero_point)).astype(np.int64)
    return np.clip(quantized, -128, 127).astype(np.int8)


# --------------------------------------------------------------------------------------------
# ADD

def add_params(s1, z1, s2, z2, s_out, z_out):
    """Every integer constant of int8 ADD, as TFLite's Prepare derives them from the float32
    scales: :func:`golden.eltwise.add_params` (the project's one definition, which the
    hardware runs) of the scales rounded to float32 first."""
    return eltwise.add_params(_f32(s1), z1, _f32(s2), z2, _f32(s_out), z_out)


def add_int8(x1, x2, params, qmin=-128, qmax=127):
    """int8 ADD (``reference_integer_ops::AddFunc``): :func:`golden.eltwise.add_int8`."""
    if not isinstance(params, eltwise.AddParams):
        raise ValueError(f"params must be AddParams (from add_params), got {params!r}")
    return eltwise.add_int8(np.asarray(x1), np.asarray(x2), params, qmin=qmin, qmax=qmax)


# --------------------------------------------------------------------------------------------
# SOFTMAX: gemmlowp fixed point, int32 raw values (a FixedPoint<int32, I> has 31 - I fraction
# bits). Integer-only; int64 NumPy arrays carry the int32 values.

#: Softmax's scaled differences are Q5.26 (``kScaledDiffIntegerBits``); the sum of exps Q12.19.
SOFTMAX_DIFF_INTEGER_BITS = 5
SOFTMAX_ACCUM_INTEGER_BITS = 12
#: Longest vector :func:`softmax_tflite` takes for any data: each used element adds at most
#: RDBPOT(2**31 - 1, 12) = 2**19 to the sum S, and the output shift ``12 - clz(S) + 31 - 8``
#: stays <= 31 only while S < 2**28 (clz >= 4): 511 elements.
SOFTMAX_TFLITE_MAX_LEN = ((1 << 28) - 1) >> (31 - SOFTMAX_ACCUM_INTEGER_BITS)


def _fixed(value, fraction_bits):
    """A real constant as a fixed-point raw value, rounded half away from zero (gemmlowp's
    ``FromDouble``); e.g. exp(-1/8) in Q0.31 is 1895147668."""
    return int(round_half_away(value * 2.0 ** fraction_bits))


#: exp(-1/8) and 1/3 in Q0.31: the Taylor expansion of exp on [-1/4, 0) around -1/8.
_EXP_MINUS_EIGHTH = _fixed(math.exp(-1 / 8), 31)
_ONE_THIRD = _fixed(1 / 3, 31)
#: exp(-2**k) in Q0.31 for k = -2 .. 4: one factor per bit of the integer part of -x.
_EXP_BARREL = tuple((k, _fixed(math.exp(-2.0 ** k), 31)) for k in range(-2, 5))
#: Newton-Raphson start for 1/(1+x): 48/17 and -32/17 in Q2.29.
_48_OVER_17 = _fixed(48 / 17, 29)
_NEG_32_OVER_17 = _fixed(-32 / 17, 29)
#: :func:`one_over_one_plus_x_for_x_in_0_1`'s constants, for the hardware: the start
#: ``48/17 + d * (-32/17)`` (Q2.29 raw values) and the number of Newton-Raphson steps.
RECIPROCAL_START = (_48_OVER_17, _NEG_32_OVER_17)
RECIPROCAL_NEWTON_STEPS = 3


def _wrap32(v):
    """Two's-complement int32 wrap (gemmlowp's plain ``+``/``-`` on int32)."""
    v = np.asarray(v, np.int64)
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _mul(a, b):
    """Fixed-point product: SRDHM of the raw values (integer bits add up)."""
    return saturating_rounding_doubling_high_mul(np.asarray(a, np.int64),
                                                 np.asarray(b, np.int64)).astype(np.int64)


def _saturating_shift_left(x, e):
    """gemmlowp ``SaturatingRoundingMultiplyByPOT<e>`` for e > 0: ``x * 2**e`` saturated."""
    limit = (1 << (31 - e)) - 1
    x = np.asarray(x, np.int64)
    return np.where(x > limit, INT32_MAX, np.where(x < -limit, INT32_MIN, x << e))


def _rdbpot(x, e):
    return rounding_divide_by_pot(np.asarray(x, np.int64), e).astype(np.int64)


def _exp_on_quarter_interval(a):
    """exp(a) for Q0.31 ``a`` in [-1/4, 0): with ``x = a + 1/8``,
    ``exp(-1/8) * (1 + x + x^2/2 + x^3/6 + x^4/24)``, each product an SRDHM::

        x2 = x*x; x3 = x2*x; x4 = x2*x2
        t  = RDBPOT((RDBPOT(x4, 2) + x3) * (1/3) + x2, 1)
        e  = exp(-1/8) + exp(-1/8) * (x + t)
    """
    x = _wrap32(a + (1 << 28))
    x2 = _mul(x, x)
    x3 = _mul(x2, x)
    x4 = _mul(x2, x2)
    t = _rdbpot(_wrap32(_mul(_wrap32(_rdbpot(x4, 2) + x3), _ONE_THIRD) + x2), 1)
    return _wrap32(_EXP_MINUS_EIGHTH + _mul(_EXP_MINUS_EIGHTH, _wrap32(x + t)))


def exp_on_negative_values(a, integer_bits=SOFTMAX_DIFF_INTEGER_BITS):
    """gemmlowp ``exp_on_negative_values``: ``exp(a)`` in Q0.31 for ``a <= 0`` in
    Q(integer_bits).(31 - integer_bits).

    With F = 31 - integer_bits fraction bits and ``q = 2**(F-2)`` (one quarter)::

        r = (a & (q - 1)) - q                      a's residue in [-1/4, 0)
        e = exp_on_quarter_interval(r << integer_bits)     (saturating, to Q0.31)
        d = r - a >= 0                             a multiple of 1/4: the rest of -a
        for k = -2 .. 4 with integer_bits > k:  if bit F + k of d:  e = e * exp(-2**k)
        a == 0 -> e = 2**31 - 1 (one)
    (``integer_bits <= 5`` here, so gemmlowp's clamp below -32 never applies.)"""
    if not 0 <= integer_bits <= 5:
        raise ValueError("integer_bits must be in 0..5")
    a = np.asarray(a, np.int64)
    frac = 31 - integer_bits
    quarter = 1 << (frac - 2)
    r = _wrap32((a & (quarter - 1)) - quarter)
    e = _exp_on_quarter_interval(_saturating_shift_left(r, integer_bits))
    d = _wrap32(r - a)
    for k, factor in _EXP_BARREL:
        if integer_bits > k:
            e = np.where(d & (1 << (frac + k)), _mul(e, factor), e)
    return np.where(a == 0, INT32_MAX, e)


def _rounding_half_sum(a, b):
    """gemmlowp ``RoundingHalfSum``: ``(a + b + sign) / 2`` truncated, sign = +1 if a+b >= 0."""
    s = np.asarray(a, np.int64) + np.asarray(b, np.int64)
    n = s + np.where(s >= 0, 1, -1)
    return np.where(n >= 0, n // 2, -((-n) // 2))


def one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp ``one_over_one_plus_x_for_x_in_0_1``: ``1 / (1 + a)`` in Q0.31 for Q0.31
    ``a`` in [0, 1), by three Newton-Raphson steps on ``d = (1 + a) / 2`` (Q0.31)::

        d = RoundingHalfSum(a, one)                            one = 2**31 - 1
        x = 48/17 + d * (-32/17)                               (Q2.29)
        3 times:  x = x + sat_shift_left(x * (1 - d*x), 2)     (1 = 2**29 in Q2.29)
        result = sat_shift_left(x, 1)                          (x/2 in Q0.31)
    """
    d = _rounding_half_sum(a, INT32_MAX)
    x = _wrap32(_48_OVER_17 + _mul(d, _NEG_32_OVER_17))
    one = 1 << 29
    for _ in range(RECIPROCAL_NEWTON_STEPS):
        err = _wrap32(one - _mul(d, x))
        x = _wrap32(x + _saturating_shift_left(_mul(x, err), 2))
    return _saturating_shift_left(x, 1)


def _count_leading_zeros32(v):
    """Leading zero bits of ``v`` as a uint32 (32 for 0)."""
    v = np.asarray(v, np.int64) & 0xFFFFFFFF
    bit_length = np.zeros(v.shape, np.int64)
    for k in range(32):
        bit_length += (v >> k) > 0
    return 32 - bit_length


@dataclass(frozen=True)
class SoftmaxTfliteParams:
    """TFLite's int8 softmax constants (``SoftmaxParams``): input_multiplier (Q31),
    input_left_shift and diff_min."""
    input_multiplier: int
    input_left_shift: int
    diff_min: int


def softmax_params(input_scale, beta=1.0):
    """``PreprocessSoftmaxScaling(beta, s, 5)`` and ``-CalculateInputRadius(5, left_shift)``::

        real            = min(beta * s * 2**(31 - 5), 2**31 - 1)      (double)
        (M, left_shift) = QuantizeMultiplierGreaterThanOne(real)      (real > 1, shift >= 0)
        diff_min        = -floor((2**5 - 1) * 2**(31 - 5) / 2**left_shift)
    """
    real = float(beta) * _f32(input_scale) * float(1 << (31 - SOFTMAX_DIFF_INTEGER_BITS))
    real = min(real, float((1 << 31) - 1))
    if not real > 1.0:
        raise ValueError(f"beta * input_scale = {real / 2 ** 26!r} is too small (TFLite "
                         "needs beta * scale * 2**26 > 1)")
    mant, exp = math.frexp(real)
    m0 = int(round_half_away(mant * (1 << 31)))
    if m0 == 1 << 31:
        m0, exp = m0 // 2, exp + 1
    radius = ((1 << SOFTMAX_DIFF_INTEGER_BITS) - 1) * (1 << (31 - SOFTMAX_DIFF_INTEGER_BITS))
    diff_min = -math.floor(radius / (1 << exp))
    return SoftmaxTfliteParams(m0, exp, diff_min)


def softmax_exp_table(params):
    """The 256 values ``e`` step 3 of :func:`softmax_tflite` can take, by ``a = max(x) - x``
    (0 .. 255): ``exp_on_negative_values(SRDHM(-a * 2**left_shift, M))`` (Q0.31, 0 .. 2**31 - 1)
    where ``-a >= diff_min``, else 0 (the element takes no part; an ``e`` of 0 also makes its
    output -128 and its share of the sum 0). int64 array; the hardware's exp table
    (``hw.isa.Mem.SM_EXP``)."""
    if not isinstance(params, SoftmaxTfliteParams):
        raise ValueError(f"params must be SoftmaxTfliteParams (from softmax_params), got "
                         f"{params!r}")
    d = -np.arange(256, dtype=np.int64)
    used = d >= params.diff_min
    z = _mul(np.where(used, d, 0) << params.input_left_shift, params.input_multiplier)
    return np.where(used, exp_on_negative_values(z), 0).astype(np.int64)


def softmax_tflite(x, params):
    """int8 SOFTMAX over the last axis (``reference_ops::Softmax``, quantized), output scale
    1/256, zero point -128. Per vector, with ``d = x - max(x)``:

    1. elements with ``d < diff_min`` get -128 and take no part;
    2. ``z = SRDHM(d * 2**left_shift, M)``: ``d * s * beta`` in Q5.26;
    3. ``e = exp_on_negative_values(z)`` (Q0.31); ``S = sum(RDBPOT(e, 12))`` (Q12.19);
    4. ``h = clz(S)`` (32-bit), ``R = one_over_one_plus_x_for_x_in_0_1((S << h) - 2**31)``
       (Q0.31 reciprocal of S's mantissa), ``n = 12 - h`` (bits of S above one);
    5. ``q = clamp(RDBPOT(SRDHM(R, e), n + 31 - 8) - 128, -128, 127)``.
    """
    if not isinstance(params, SoftmaxTfliteParams):
        raise ValueError(f"params must be SoftmaxTfliteParams (from softmax_params), got "
                         f"{params!r}")
    x = np.asarray(x)
    if x.dtype != np.int8 or x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must be int8 with a non-empty last axis, got {x.dtype} {x.shape}")
    d = x.astype(np.int64) - x.max(axis=-1, keepdims=True)
    used = d >= params.diff_min
    # Unused elements are never scaled in TFLite (their shifted difference could leave int32).
    z = _mul(np.where(used, d, 0) << params.input_left_shift, params.input_multiplier)
    e = np.where(used, exp_on_negative_values(z), 0)
    # Rescale<12>: Q0.31 -> Q12.19 is a rounding right shift by 12.
    total = np.where(used, _rdbpot(e, SOFTMAX_ACCUM_INTEGER_BITS), 0).sum(axis=-1,
                                                                          keepdims=True)
    headroom = _count_leading_zeros32(total)
    bits_over_unit = SOFTMAX_ACCUM_INTEGER_BITS - headroom
    mantissa = _wrap32(((total << headroom) & 0xFFFFFFFF) - (1 << 31))
    recip = one_over_one_plus_x_for_x_in_0_1(mantissa)
    exponent = bits_over_unit + 31 - 8
    if exponent.size and (exponent.min() < 0 or exponent.max() > 31):
        raise ValueError("softmax exponent out of 0..31")
    q = rounding_divide_by_pot(_mul(recip, e), exponent).astype(np.int64) - 128
    return np.where(used, np.clip(q, -128, 127), -128).astype(np.int8)
