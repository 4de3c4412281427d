"""Integer LSTM (TFLite's fully integer "8x8_16" LSTM), the golden model of the LSTM hardware.

One unidirectional LSTM layer without peepholes, projection, layer norm or CIFG, over a batch
of sequences ``x`` of shape ``(N, T, F)`` (batch first), hidden size ``H``.

Gate order and weight layout (ONNX)
-----------------------------------
Everything in this module uses ONNX's gate order **i, o, f, c** (:data:`GATES`): input gate,
output gate, forget gate, cell gate. Weights are ONNX's ``W`` ``(4H, F)``, ``R`` ``(4H, H)``,
bias ``B`` ``(8H,) = [Wb, Rb]``; rows ``g*H .. (g+1)*H - 1`` belong to gate ``GATES[g]``. ONNX's
leading ``num_directions = 1`` axis is accepted and dropped. PyTorch's ``nn.LSTM`` stores the
gates as i, f, g, o (``weight_ih_l0`` ``(4H, F)``, ``weight_hh_l0``, ``bias_ih_l0``,
``bias_hh_l0``): :func:`onnx_from_pytorch` takes PyTorch's blocks ``[0, 3, 1, 2]`` (PyTorch's
``g`` is ONNX's ``c``). The float model (:func:`lstm_float`, ONNX's equations)::

    i = sigmoid(x W_i^T + h R_i^T + Wb_i + Rb_i)      o, f likewise
    g = tanh(x W_c^T + h R_c^T + Wb_c + Rb_c)
    c' = f * c + i * g          (then clipped to +-cell_clip if a cell clip is given: TFLite's
                                 cell clip, not ONNX's ``clip`` attribute, which clips gates)
    h' = o * tanh(c')

Integer formats (real = scale * (q - zero_point))
-------------------------------------------------
=====================  =======  ==========================  ===============================
tensor                 type     scale                       zero point
=====================  =======  ==========================  ===============================
input x                int8     s_x                         z_x
hidden state h         int8     s_h                         z_h
weights W_g, R_g       int8     s_W[g], s_R[g] (per gate)   0 (symmetric)
bias of gate g         int32    s_x * s_W[g]                0  (ONNX's Wb + Rb folded in one)
gate pre-activations   int16    2**-12 (Q3.12)              0
gate outputs           int16    2**-15 (Q0.15)              0
cell state c           int16    2**e, -15 <= e <= -9        0
=====================  =======  ==========================  ===============================

Integer constants (all derived by :func:`lstm_params`)
------------------------------------------------------
* ``(M_x[g], S_x[g]) = quantize_multiplier(s_x * s_W[g] / 2**-12)``, likewise ``M_h[g], S_h[g]``
  from ``s_h * s_R[g]`` (:func:`golden.quant.quantize_multiplier`, TFLite's QuantizeMultiplier).
* Zero points folded into the biases (TFLite's "effective biases")::

      bx[g*H + j] = bias[g*H + j] - z_x * sum_k W[g*H + j, k]        int32
      bh[g*H + j] =               - z_h * sum_k R[g*H + j, k]        int32

* Cell exponent ``e = p - 15`` with ``p`` the smallest integer >= 0 such that
  ``2**p >= cell_range`` (TFLite's converter rounds the cell range up to a power of two the same
  way); ``p <= 6`` as TFLite's kernel requires (``cell scale <= 2**-9``), else ``ValueError``.
  The cell clip, if any, is ``min(round_half_away(cell_clip / 2**e), 32767)``.
* ``(M_o, S_o) = quantize_multiplier(2**-30 / s_h)``: the product of two Q0.15 values has
  scale 2**-30.

One step (:func:`lstm_cell_int`), integers only
-----------------------------------------------
``MBQM`` is :func:`golden.quant.multiply_by_quantized_multiplier` (SRDHM, then RDBPOT: round to
nearest, ties as documented there), ``RDBPOT(v, k)`` is gemmlowp's RoundingDivideByPOT
(``v / 2**k`` rounded to nearest, ties away from zero), ``sat16`` clamps to [-32768, 32767]::

    1. ax = x W^T + bx,  ah = h R^T + bh          int32 (N, 4H): two GEMMs (golden.gemm)
    2. px = sat16(MBQM(ax, M_x[g], S_x[g]))       int16, per gate g (rows of gate g)
       ph = sat16(MBQM(ah, M_h[g], S_h[g]))
       z  = sat16(px + ph)                        Q3.12 pre-activations; |real| >= 8 saturates
    3. i, o, f = sigmoid_q15(z_i), sigmoid_q15(z_o), sigmoid_q15(z_f)      Q0.15
       g = tanh_q15(z_c, 12)                                                Q0.15
    4. c' = sat16(RDBPOT(f * c, 15) + RDBPOT(i * g, 30 + e))              int16 at 2**e
       c' = clamp(c', -clip_q, clip_q)            only with a cell clip
    5. t  = tanh_q15(c', -e)                      Q0.15: the cell read with -e fraction bits
    6. h' = clamp(MBQM(o * t, M_o, S_o) + z_h, -128, 127)                  int8

Every product is exact in int32 (``|f*c|, |i*g|, |o*t| < 2**31``); ``f * c >> 15`` and
``i * g >> (30 + e)`` cannot leave int16 (TFLite casts without saturating; saturation here is
never active). The sequence (:func:`lstm_int`) starts from ``h0 = z_h`` (real 0) and
``c0 = 0`` unless given, and returns every step's h.

Gate functions: table + linear interpolation
--------------------------------------------
``sigmoid_q15`` and ``tanh_q15`` are defined for hardware: one 512-entry table of 16-bit
samples per function at step 2**-6 over [0, 8) (:data:`SIGMOID_TABLE`, :data:`TANH_TABLE`;
together one 1024 x 16 ROM), linear interpolation with one rounding, odd symmetry::

    T[k] = min(round_half_away(2**15 * f(k / 64)), 32767),     k = 0 .. 511
    input v with b fraction bits (b = 12 for gates, -e for the cell), s = b - 6:
    a = min(|v|, 511 * 2**s)             magnitudes >= 8 - 2**-6 read the last entry
    k = a >> s,  r = a mod 2**s
    y = T[k] + floor(((T[k+1] - T[k]) * r + 2**(s-1)) / 2**s)     (r = 0 when k = 511)
    sigmoid: v >= 0 -> y, v < 0 -> 32768 - y          (sigmoid(-x) = 1 - sigmoid(x))
    tanh:    v >= 0 -> y, v < 0 -> -y

``T`` is non-decreasing, so the correction term is >= 0 and the rounding is "half up". The
error against float over all 65,536 inputs is measured by :func:`gate_function_errors` (about 1
LSB of 2**-15 for sigmoid, 1.5 LSB for tanh; ``python -m golden.lstm --report``).

Departures from TFLite
----------------------
* **Gate nonlinearities.** TFLite's builtin kernel evaluates sigmoid/tanh with gemmlowp's
  fixed-point ``logistic``/``tanh`` (an exp on negative values and a Newton-Raphson
  reciprocal); TFLite Micro (and TFLite's int16 LOGISTIC/TANH) use a 16-bit sigmoid table of
  about 256 entries over +-10.7 behind a 3/4 input prescale and derive tanh from it. Here
  both are the table + interpolation above, chosen for the hardware: one 1024 x 16 ROM, a
  9-bit index, a small multiplier (difference <= 512, times a fraction of at most 9 bits) and
  one add, with an exact integer definition the RTL can match bit for bit; the tanh of the
  cell state uses the same table at the cell's own binary point (the fraction field just
  widens), so no re-scaling step. The gate outputs are therefore not bit-identical with
  TFLite's; ours are within 1.53 LSB of 2**-15 of the exact functions (measured over every
  input), far below the int8 hidden state's LSB (about 2**-7).
* **Scope.** No CIFG, peephole, projection, layer normalization or auxiliary input (TFLite
  supports them); one direction. The cell exponent is restricted to [-15, -9] as TFLite's
  kernel does (its converter would pick up to -5 for cells above 64 and then fail to prepare);
  a larger ``cell_range`` is refused here with a ``ValueError`` instead.
* Everything else follows TFLite: two requantizations per gate (input and recurrent products
  have different scales) each saturated to int16 before the saturating add, the bias in the
  input product, the zero points folded into effective biases, RDBPOT for the two cell
  products, MBQM for the hidden state, double rounding (TFLite without
  ``TFLITE_SINGLE_ROUNDING``). Left shifts in MBQM saturate (:mod:`golden.quant`).

The float reference does not saturate the pre-activations at +-8 (the integer model does, as
TFLite): a gate driven beyond +-8 is off by up to ``1 - sigmoid(8) = 3.4e-4`` per step.

Post-training quantization (:func:`quantize_lstm`): the float LSTM runs on calibration
sequences; x and h get asymmetric int8 covering their ranges and 0
(:func:`golden.ptq.activation_qparams`), each gate matrix symmetric int8
``s = max|W_g| / 127`` (1/127 if all 0), the folded bias ``Wb_g + Rb_g`` int32 at
``s_x * s_W[g]``, and ``cell_range`` is the cell clip if given, else the largest calibrated
``|c|``.
"""

import argparse
import math
from dataclasses import dataclass

import numpy as np

from .gemm import gemm
from .ptq import activation_qparams, round_half_away
from .quant import (INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier, quantize_multiplier,
                    requantize, rounding_divide_by_pot)

__all__ = [
    "GATES", "GATE_FRAC_BITS", "GATE_OUT_FRAC_BITS", "TABLE_STEP_BITS", "TABLE_SIZE",
    "MIN_CELL_EXPONENT", "MAX_CELL_EXPONENT", "SIGMOID_TABLE", "TANH_TABLE",
    "gate_table", "sigmoid_q15", "tanh_q15", "gate_function_errors",
    "LstmParams", "lstm_params", "cell_exponent", "gate_preactivations", "cell_update",
    "hidden_output", "lstm_cell_int", "lstm_int",
    "quantize_input", "dequantize_hidden",
    "onnx_from_pytorch", "lstm_float", "quantize_lstm", "error_report", "format_report",
    "format_gate_errors", "main",
]

#: ONNX's gate order; gate g owns rows g*H .. (g+1)*H - 1 of W, R and the biases.
GATES = ("i", "o", "f", "c")
#: Fraction bits of the int16 gate pre-activations (Q3.12, TFLite) and gate outputs (Q0.15).
GATE_FRAC_BITS = 12
GATE_OUT_FRAC_BITS = 15
#: The gate tables sample the function every 2**-TABLE_STEP_BITS over [0, 8).
TABLE_STEP_BITS = 6
TABLE_SIZE = 8 << TABLE_STEP_BITS
#: Cell state exponents accepted (cell scale 2**e); TFLite's kernel needs e <= -9.
MIN_CELL_EXPONENT = -15
MAX_CELL_EXPONENT = -9
INT16_MIN = -(1 << 15)
INT16_MAX = (1 << 15) - 1
_ONE_Q15 = 1 << GATE_OUT_FRAC_BITS


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))   # overflow-free logistic


# ----------------------------------------------------------------------------- gate functions

def gate_table(fn):
    """``T[k] = min(round_half_away(2**15 * fn(k * 2**-6)), 32767)`` for k = 0 .. 511, int16.

    ``fn`` must be non-decreasing on [0, 8) (the interpolation relies on ``T[k+1] >= T[k]``)."""
    x = np.arange(TABLE_SIZE, dtype=np.float64) / (1 << TABLE_STEP_BITS)
    t = np.minimum(round_half_away(_ONE_Q15 * np.asarray(fn(x), np.float64)), INT16_MAX)
    if np.any(np.diff(t) < 0) or t.min() < 0:
        raise ValueError("gate table must be non-negative and non-decreasing")
    return t.astype(np.int16)


SIGMOID_TABLE = gate_table(_sigmoid)
TANH_TABLE = gate_table(np.tanh)
SIGMOID_TABLE.flags.writeable = False
TANH_TABLE.flags.writeable = False


def _check_int16(name, v):
    v = np.asarray(v)
    if v.dtype != np.int16:
        raise ValueError(f"{name} must be int16, got dtype {v.dtype}")
    return v


def _check_cell_exponent(e):
    if isinstance(e, bool) or not isinstance(e, (int, np.integer)) or not (
            MIN_CELL_EXPONENT <= e <= MAX_CELL_EXPONENT):
        raise ValueError(f"cell_exponent must be an integer in [{MIN_CELL_EXPONENT}, "
                         f"{MAX_CELL_EXPONENT}], got {e!r}")
    return int(e)


def _check_frac_bits(frac_bits):
    ok = (not isinstance(frac_bits, bool) and isinstance(frac_bits, (int, np.integer))
          and -MAX_CELL_EXPONENT <= frac_bits <= -MIN_CELL_EXPONENT)
    if not ok:
        raise ValueError(f"frac_bits must be an integer in [{-MAX_CELL_EXPONENT}, "
                         f"{-MIN_CELL_EXPONENT}], got {frac_bits!r}")
    return int(frac_bits)


def _interpolate(table, magnitude, frac_bits):
    """Table + linear interpolation of a magnitude with ``frac_bits`` fraction bits (int64)."""
    s = frac_bits - TABLE_STEP_BITS                   # bits of the interpolation fraction
    a = np.minimum(magnitude, (TABLE_SIZE - 1) << s)  # [8 - 2**-6, 8] reads the last entry
    k = a >> s
    r = a & ((1 << s) - 1)
    t = table.astype(np.int64)
    lo = t[k]
    hi = t[np.minimum(k + 1, TABLE_SIZE - 1)]         # r == 0 whenever k is the last entry
    return lo + (((hi - lo) * r + (1 << (s - 1))) >> s)


def sigmoid_q15(x_q12):
    """Sigmoid of int16 Q3.12 (real ``x / 2**12``) -> int16 Q0.15, table + interpolation."""
    x = _check_int16("x_q12", x_q12).astype(np.int64)
    y = _interpolate(SIGMOID_TABLE, np.abs(x), GATE_FRAC_BITS)
    return np.where(x < 0, _ONE_Q15 - y, y).astype(np.int16)


def tanh_q15(x, frac_bits=GATE_FRAC_BITS):
    """Tanh of int16 ``x`` with ``frac_bits`` fraction bits (9..15; 12 for a gate, ``-e`` for
    the cell state) -> int16 Q0.15, table + interpolation."""
    fb = _check_frac_bits(frac_bits)
    v = _check_int16("x", x).astype(np.int64)
    y = _interpolate(TANH_TABLE, np.abs(v), fb)
    return np.where(v < 0, -y, y).astype(np.int16)


def gate_function_errors():
    """Error of the gate functions against float64 over all 65,536 int16 inputs, in LSB of
    2**-15: list of ``(name, max, mean)``; tanh at every cell format as well."""
    x = np.arange(INT16_MIN, INT16_MAX + 1, dtype=np.int64).astype(np.int16)
    rows = []

    def row(name, got, want):
        err = np.abs(got.astype(np.float64) - _ONE_Q15 * want)
        rows.append((name, float(err.max()), float(err.mean())))

    row("sigmoid_q15, Q3.12 in", sigmoid_q15(x), _sigmoid(x / 2.0 ** GATE_FRAC_BITS))
    row("tanh_q15, Q3.12 in", tanh_q15(x), np.tanh(x / 2.0 ** GATE_FRAC_BITS))
    for e in range(MAX_CELL_EXPONENT, MIN_CELL_EXPONENT - 1, -1):
        row(f"tanh_q15, cell at 2^{e}", tanh_q15(x, -e), np.tanh(x * 2.0 ** e))
    return rows


# ----------------------------------------------------------------------------- parameters

@dataclass(frozen=True, eq=False)
class LstmParams:
    """Every integer of one LSTM layer (from :func:`lstm_params`). Gate order i, o, f, c.

    ``input_scale``, ``hidden_scale`` only say how to quantize x and read h
    (:func:`quantize_input`, :func:`dequantize_hidden`); the integer model never reads them."""
    input_size: int
    hidden_size: int
    input_scale: float
    input_zero_point: int
    hidden_scale: float
    hidden_zero_point: int
    input_weights: np.ndarray        # int8 (4H, F)
    recurrent_weights: np.ndarray    # int8 (4H, H)
    input_bias: np.ndarray           # int32 (4H,) bias - z_x * rowsum(W)
    recurrent_bias: np.ndarray       # int32 (4H,) -z_h * rowsum(R)
    input_multiplier: np.ndarray     # int32 (4,) M_x per gate
    input_shift: np.ndarray          # int32 (4,) S_x per gate
    recurrent_multiplier: np.ndarray
    recurrent_shift: np.ndarray
    cell_exponent: int               # e: cell scale 2**e
    cell_clip: int                   # 0: no clip
    hidden_multiplier: int           # M_o
    hidden_shift: int                # S_o


def _scale(name, value):
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return s


def _zero_point(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not (
            -128 <= value <= 127):
        raise ValueError(f"{name} must be an integer in [-128, 127], got {value!r}")
    return int(value)


def _multiplier(name, real):
    try:
        m0, shift = quantize_multiplier(real)
    except ValueError as e:
        raise ValueError(f"{name} multiplier {real!r} does not fit: {e}") from None
    if m0 == 0:
        raise ValueError(f"{name} multiplier {real!r} underflows to 0 (below 2**-32)")
    return m0, shift


def _gate_scales(name, scales):
    try:
        arr = np.asarray(scales, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 4 numbers (gates i, o, f, c), got {scales!r}") from None
    if arr.shape != (4,):
        raise ValueError(f"{name} must have 4 entries (gates i, o, f, c), got shape {arr.shape}")
    return [_scale(f"{name}[{g}]", s) for g, s in zip(GATES, arr)]


def _int_matrix(name, w, dtype, rows=None, cols=None):
    w = np.asarray(w)
    if w.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype).name}, got dtype {w.dtype}")
    want = (rows if rows is not None else "4H", cols if cols is not None else "F")
    if w.ndim != 2 or 0 in w.shape or (rows is not None and w.shape[0] != rows) or (
            cols is not None and w.shape[1] != cols):
        raise ValueError(f"{name} must have shape ({want[0]}, {want[1]}), got {w.shape}")
    return w


def cell_exponent(cell_range):
    """``e = p - 15``, ``p`` the smallest integer >= 0 with ``2**p >= cell_range``; refuses a
    range above ``2**6`` (TFLite's kernel needs a cell scale <= 2**-9)."""
    r = _scale("cell_range", cell_range)
    mantissa, exp = math.frexp(r)                    # r = mantissa * 2**exp, 0.5 <= mantissa < 1
    p = max(0, exp - 1 if mantissa == 0.5 else exp)  # exact ceil(log2(r)), no float log
    if p + MIN_CELL_EXPONENT > MAX_CELL_EXPONENT:
        raise ValueError(f"cell_range {r!r} needs a cell scale 2**{p - 15}, above the "
                         f"largest supported 2**{MAX_CELL_EXPONENT} (|c| <= 64); clip the cell")
    return p + MIN_CELL_EXPONENT


def _fits_int32(name, v):
    if v.min() < INT32_MIN or v.max() > INT32_MAX:
        raise ValueError(f"{name} does not fit int32")
    return v.astype(np.int32)


def lstm_params(input_weights, recurrent_weights, bias, input_scale, input_zero_point,
                input_weight_scales, recurrent_weight_scales, hidden_scale, hidden_zero_point,
                cell_range, cell_clip=None):
    """Derive every integer constant of the integer LSTM (module docstring) from the float scales.

    ``input_weights`` int8 ``(4H, F)``, ``recurrent_weights`` int8 ``(4H, H)`` (ONNX layout,
    gates i, o, f, c), ``bias`` int32 ``(4H,)`` at scale ``s_x * s_W[g]`` (``None``: zeros);
    ``input_weight_scales`` / ``recurrent_weight_scales``: 4 per-gate scales; ``cell_range``:
    the largest |c| to represent (the cell clip, or the calibrated maximum); ``cell_clip``:
    float or ``None``. ``ValueError`` names whatever does not fit."""
    w = _int_matrix("input_weights", input_weights, np.int8)
    if w.shape[0] % 4:
        raise ValueError(f"input_weights must have 4H rows (gates i, o, f, c), got {w.shape}")
    hidden = w.shape[0] // 4
    r = _int_matrix("recurrent_weights", recurrent_weights, np.int8, 4 * hidden, hidden)
    if bias is None:
        bias = np.zeros(4 * hidden, np.int32)
    bias = np.asarray(bias)
    if bias.dtype != np.int32 or bias.shape != (4 * hidden,):
        raise ValueError(f"bias must be int32 of shape ({4 * hidden},), got {bias.dtype} "
                         f"{bias.shape}")
    s_x, s_h = _scale("input_scale", input_scale), _scale("hidden_scale", hidden_scale)
    z_x = _zero_point("input_zero_point", input_zero_point)
    z_h = _zero_point("hidden_zero_point", hidden_zero_point)
    s_w = _gate_scales("input_weight_scales", input_weight_scales)
    s_r = _gate_scales("recurrent_weight_scales", recurrent_weight_scales)
    gate_q12 = 2.0 ** -GATE_FRAC_BITS
    mx = [_multiplier(f"input gate {g} (input_scale * input_weight_scale / 2**-12)",
                      s_x * s / gate_q12) for g, s in zip(GATES, s_w)]
    mh = [_multiplier(f"recurrent gate {g} (hidden_scale * recurrent_weight_scale / 2**-12)",
                      s_h * s / gate_q12) for g, s in zip(GATES, s_r)]
    e = cell_exponent(cell_range)
    clip_q = 0
    if cell_clip is not None:
        clip_q = int(min(round_half_away(_scale("cell_clip", cell_clip) / 2.0 ** e), INT16_MAX))
        if clip_q == 0:
            raise ValueError(f"cell_clip {cell_clip!r} rounds to 0 at the cell scale 2**{e}")
    mo, so = _multiplier("hidden (2**-30 / hidden_scale)", 2.0 ** -30 / s_h)
    rowsum_w = w.astype(np.int64).sum(axis=1)
    rowsum_r = r.astype(np.int64).sum(axis=1)
    return LstmParams(
        input_size=w.shape[1], hidden_size=hidden,
        input_scale=s_x, input_zero_point=z_x, hidden_scale=s_h, hidden_zero_point=z_h,
        input_weights=w.copy(), recurrent_weights=r.copy(),
        input_bias=_fits_int32("bias - input_zero_point * rowsum(input_weights)",
                               bias.astype(np.int64) - z_x * rowsum_w),
        recurrent_bias=_fits_int32("-hidden_zero_point * rowsum(recurrent_weights)",
                                   -z_h * rowsum_r),
        input_multiplier=np.array([m for m, _ in mx], np.int32),
        input_shift=np.array([s for _, s in mx], np.int32),
        recurrent_multiplier=np.array([m for m, _ in mh], np.int32),
        recurrent_shift=np.array([s for _, s in mh], np.int32),
        cell_exponent=e, cell_clip=clip_q, hidden_multiplier=mo, hidden_shift=so)


# ----------------------------------------------------------------------------- integer model

def _check_params(params):
    if not isinstance(params, LstmParams):
        raise ValueError(f"params must be LstmParams (from lstm_params), got {type(params)!r}")
    return params


def _check_state(name, v, dtype, batch, hidden):
    v = np.asarray(v)
    if v.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype).name}, got dtype {v.dtype}")
    if v.shape != (batch, hidden):
        raise ValueError(f"{name} must have shape (N, H) = ({batch}, {hidden}), got {v.shape}")
    return v


def _requantize_int16(acc, m0, shift, hidden):
    """``sat16(MBQM(acc, M[g], S[g]))`` with gate g's constants on its H columns."""
    y = multiply_by_quantized_multiplier(acc, np.repeat(m0, hidden), np.repeat(shift, hidden))
    return np.clip(y, INT16_MIN, INT16_MAX).astype(np.int64)


def _split_gates(v, hidden):
    return {g: v[:, k * hidden:(k + 1) * hidden] for k, g in enumerate(GATES)}


def gate_preactivations(acc_x, acc_h, params):
    """Step 2: int32 accumulators ``(N, 4H)`` of the input and recurrent products -> int16 Q3.12
    pre-activations ``sat16(sat16(MBQM(acc_x, M_x[g], S_x[g])) + sat16(MBQM(acc_h, M_h[g],
    S_h[g])))``, columns in gate order i, o, f, c."""
    p = _check_params(params)
    want = (None, 4 * p.hidden_size)
    for name, acc in (("acc_x", acc_x), ("acc_h", acc_h)):
        a = np.asarray(acc)
        if a.dtype != np.int32 or a.ndim != 2 or a.shape[1] != want[1]:
            raise ValueError(f"{name} must be int32 of shape (N, 4H) = (N, {want[1]}), got "
                             f"{a.dtype} {a.shape}")
    if np.shape(acc_x) != np.shape(acc_h):
        raise ValueError(f"acc_x and acc_h differ in shape: {np.shape(acc_x)} vs "
                         f"{np.shape(acc_h)}")
    px = _requantize_int16(acc_x, p.input_multiplier, p.input_shift, p.hidden_size)
    ph = _requantize_int16(acc_h, p.recurrent_multiplier, p.recurrent_shift, p.hidden_size)
    return np.clip(px + ph, INT16_MIN, INT16_MAX).astype(np.int16)


def cell_update(f, i, g, c, cell_exponent, cell_clip=0):
    """Step 4: ``sat16(RDBPOT(f * c, 15) + RDBPOT(i * g, 30 + e))``, then clamped to
    ``[-cell_clip, cell_clip]`` if ``cell_clip > 0``. All int16; ``c`` and the result at
    ``2**e``, the gates Q0.15."""
    f, i, g, c = (_check_int16(name, v).astype(np.int64)
                  for name, v in (("f", f), ("i", i), ("g", g), ("c", c)))
    e = _check_cell_exponent(cell_exponent)
    if isinstance(cell_clip, bool) or not isinstance(cell_clip, (int, np.integer)) or not (
            0 <= cell_clip <= INT16_MAX):
        raise ValueError(f"cell_clip must be an integer in [0, {INT16_MAX}], got {cell_clip!r}")
    forget = rounding_divide_by_pot(f * c, GATE_OUT_FRAC_BITS).astype(np.int64)
    update = rounding_divide_by_pot(i * g, 2 * GATE_OUT_FRAC_BITS + e).astype(np.int64)
    c_new = np.clip(forget + update, INT16_MIN, INT16_MAX)
    if cell_clip:
        c_new = np.clip(c_new, -cell_clip, cell_clip)
    return c_new.astype(np.int16)


def hidden_output(o, tanh_c, params):
    """Step 6: ``clamp(MBQM(o * tanh_c, M_o, S_o) + z_h, -128, 127)``: int16 Q0.15 gates ->
    int8 hidden state (``o * tanh_c`` is exact in int32)."""
    p = _check_params(params)
    o = _check_int16("o", o).astype(np.int64)
    t = _check_int16("tanh_c", tanh_c).astype(np.int64)
    return requantize(o * t, p.hidden_multiplier, p.hidden_shift, p.hidden_zero_point)


def lstm_cell_int(x_t, h, c, params, intermediates=False):
    """One integer LSTM step (module docstring, steps 1-6) on a batch.

    ``x_t`` int8 ``(N, F)``, ``h`` int8 ``(N, H)``, ``c`` int16 ``(N, H)`` at scale
    ``2**cell_exponent``. Returns ``(h', c')`` (int8, int16); with ``intermediates=True`` also a
    dict of every stage (``acc_x``, ``acc_h`` int32 ``(N, 4H)``; ``pre`` and ``gates``: dicts
    i, o, f, c of int16 ``(N, H)``; ``tanh_c`` int16) for checking a hardware datapath stage
    by stage."""
    p = _check_params(params)
    x_t = np.asarray(x_t)
    if x_t.dtype != np.int8:
        raise ValueError(f"x_t must be int8, got dtype {x_t.dtype}")
    if x_t.ndim != 2 or x_t.shape[0] < 1 or x_t.shape[1] != p.input_size:
        raise ValueError(f"x_t must have shape (N, F) with F = input_size = {p.input_size}, "
                         f"got {x_t.shape}")
    n, hid = x_t.shape[0], p.hidden_size
    h = _check_state("h", h, np.int8, n, hid)
    c = _check_state("c", c, np.int16, n, hid)
    acc_x = gemm(x_t, np.ascontiguousarray(p.input_weights.T), p.input_bias)
    acc_h = gemm(h, np.ascontiguousarray(p.recurrent_weights.T), p.recurrent_bias)
    pre = _split_gates(gate_preactivations(acc_x, acc_h, p), hid)
    gates = {g: sigmoid_q15(pre[g]) for g in ("i", "o", "f")}
    gates["c"] = tanh_q15(pre["c"], GATE_FRAC_BITS)
    c_new = cell_update(gates["f"], gates["i"], gates["c"], c, p.cell_exponent, p.cell_clip)
    tanh_c = tanh_q15(c_new, -p.cell_exponent)
    h_new = hidden_output(gates["o"], tanh_c, p)
    if intermediates:
        return h_new, c_new, {"acc_x": acc_x, "acc_h": acc_h, "pre": pre, "gates": gates,
                              "tanh_c": tanh_c}
    return h_new, c_new


def lstm_int(x, params, h0=None, c0=None):
    """The integer LSTM over int8 sequences ``x`` ``(N, T, F)``.

    ``h0`` int8 ``(N, H)`` (default ``hidden_zero_point``, i.e. real 0), ``c0`` int16 ``(N, H)``
    (default 0). Returns ``(y, h_T, c_T)``: ``y`` int8 ``(N, T, H)`` holds every step's hidden
    state."""
    p = _check_params(params)
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ValueError(f"x must be int8, got dtype {x.dtype}")
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] != p.input_size:
        raise ValueError(f"x must have shape (N, T, F) with N, T >= 1 and F = input_size = "
                         f"{p.input_size}, got {x.shape}")
    n, steps, _ = x.shape
    h = (np.full((n, p.hidden_size), p.hidden_zero_point, np.int8) if h0 is None
         else _check_state("h0", h0, np.int8, n, p.hidden_size))
    c = (np.zeros((n, p.hidden_size), np.int16) if c0 is None
         else _check_state("c0", c0, np.int16, n, p.hidden_size))
    y = np.empty((n, steps, p.hidden_size), np.int8)
    for t in range(steps):
        h, c = lstm_cell_int(x[:, t, :], h, c, p)
        y[:, t, :] = h
    return y, h, c


def quantize_input(x, params):
    """Float x -> int8: ``clamp(round_half_away(x / s_x) + z_x, -128, 127)``."""
    p = _check_params(params)
    q = round_half_away(np.asarray(x, np.float64) / p.input_scale) + p.input_zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize_hidden(h, params):
    """int8 hidden states -> float: ``s_h * (h - z_h)``."""
    p = _check_params(params)
    return p.hidden_scale * (np.asarray(h, np.float64) - p.hidden_zero_point)


# ----------------------------------------------------------------------------- float model

def _drop_direction_axis(name, v, ndim):
    v = np.asarray(v, np.float64)
    if v.ndim == ndim + 1 and v.shape[0] == 1:       # ONNX's num_directions = 1
        v = v[0]
    if v.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D (or ONNX's with num_directions = 1), got "
                         f"shape {v.shape}")
    return v


def _float_weights(w, r, b):
    """Validate ONNX-layout float weights; returns W (4H, F), R (4H, H), B (8H,)."""
    w = _drop_direction_axis("W", w, 2)
    if w.shape[0] % 4 or 0 in w.shape:
        raise ValueError(f"W must have shape (4H, F), got {w.shape}")
    hid = w.shape[0] // 4
    r = _drop_direction_axis("R", r, 2)
    if r.shape != (4 * hid, hid):
        raise ValueError(f"R must have shape (4H, H) = ({4 * hid}, {hid}), got {r.shape}")
    b = np.zeros(8 * hid) if b is None else _drop_direction_axis("B", b, 1)
    if b.shape != (8 * hid,):
        raise ValueError(f"B must have shape (8H,) = ({8 * hid},) ([Wb, Rb]), got {b.shape}")
    return w, r, b


def onnx_from_pytorch(weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """PyTorch ``nn.LSTM`` layer-0 tensors (gate blocks i, f, g, o) -> ONNX ``(W, R, B)``
    (gate blocks i, o, f, c): block order ``[0, 3, 1, 2]``, ``B = [bias_ih, bias_hh]``."""
    def reorder(v):
        v = np.asarray(v, np.float64)
        if v.shape[0] % 4:
            raise ValueError(f"PyTorch LSTM tensors need 4H rows, got shape {v.shape}")
        blocks = np.split(v, 4, axis=0)
        return np.concatenate([blocks[k] for k in (0, 3, 1, 2)], axis=0)

    w, r = reorder(weight_ih), reorder(weight_hh)
    hid = w.shape[0] // 4
    zeros = np.zeros(4 * hid)
    b = np.concatenate([reorder(zeros if bias_ih is None else bias_ih),
                        reorder(zeros if bias_hh is None else bias_hh)])
    return _float_weights(w, r, b)


def _lstm_float_trace(x, w, r, b, h0, c0, cell_clip):
    """Float64 ONNX LSTM; returns (y, c_all), both (N, T, H)."""
    x = np.asarray(x, np.float64)
    w, r, b = _float_weights(w, r, b)
    hid = r.shape[1]
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] != w.shape[1]:
        raise ValueError(f"x must have shape (N, T, F) with N, T >= 1 and F = {w.shape[1]} "
                         f"(columns of W), got {x.shape}")
    n, steps, _ = x.shape
    h = np.zeros((n, hid)) if h0 is None else np.asarray(h0, np.float64)
    c = np.zeros((n, hid)) if c0 is None else np.asarray(c0, np.float64)
    for name, v in (("h0", h), ("c0", c)):
        if v.shape != (n, hid):
            raise ValueError(f"{name} must have shape (N, H) = ({n}, {hid}), got {v.shape}")
    bias = b[:4 * hid] + b[4 * hid:]
    y = np.empty((n, steps, hid))
    c_all = np.empty((n, steps, hid))
    for t in range(steps):
        z = _split_gates(x[:, t, :] @ w.T + h @ r.T + bias, hid)
        c = _sigmoid(z["f"]) * c + _sigmoid(z["i"]) * np.tanh(z["c"])
        if cell_clip is not None:
            c = np.clip(c, -cell_clip, cell_clip)
        h = _sigmoid(z["o"]) * np.tanh(c)
        y[:, t, :], c_all[:, t, :] = h, c
    return y, c_all


def lstm_float(x, w, r, b=None, h0=None, c0=None, cell_clip=None):
    """Float64 reference LSTM (ONNX equations and layout, batch first).

    ``x`` ``(N, T, F)``; ``w`` ``(4H, F)``, ``r`` ``(4H, H)``, ``b`` ``(8H,)`` (gates i, o, f, c;
    ``None``: zeros); ``cell_clip``: TFLite's clip of the cell state (``None``: none). Returns
    ``(y (N, T, H), h_T, c_T)``."""
    y, c_all = _lstm_float_trace(x, w, r, b, h0, c0, cell_clip)
    return y, y[:, -1, :].copy(), c_all[:, -1, :].copy()


def _symmetric_int8(w):
    """Per-tensor symmetric int8: ``s = max|w| / 127`` (1/127 if w is 0), ``q = round(w/s)``."""
    amax = float(np.abs(w).max())
    s = amax / 127.0 if amax > 0 else 1.0 / 127.0
    return np.clip(round_half_away(w / s), -127, 127).astype(np.int8), s


def quantize_lstm(w, r, b, calibration_x, cell_clip=None):
    """Post-training quantization of a float ONNX-layout LSTM (module docstring) ->
    :class:`LstmParams`. ``calibration_x``: float ``(N, T, F)`` sequences run through
    :func:`lstm_float` (from zero states) to find the ranges of x, h and c."""
    w, r, b = _float_weights(w, r, b)
    hid = r.shape[1]
    x = np.asarray(calibration_x, np.float64)
    y, c_all = _lstm_float_trace(x, w, r, b, None, None, cell_clip)
    s_x, z_x = activation_qparams(x.min(), x.max())
    s_h, z_h = activation_qparams(y.min(), y.max())
    wq, s_w = zip(*(_symmetric_int8(blk) for blk in np.split(w, 4)))
    rq, s_r = zip(*(_symmetric_int8(blk) for blk in np.split(r, 4)))
    bias = b[:4 * hid] + b[4 * hid:]
    bias_q = np.concatenate([round_half_away(blk / (s_x * s))
                             for blk, s in zip(np.split(bias, 4), s_w)])
    if bias_q.min() < INT32_MIN or bias_q.max() > INT32_MAX:
        raise ValueError("quantized bias does not fit int32 (bias too large for s_x * s_W)")
    if cell_clip is not None:
        cell_range = float(cell_clip)
    else:
        cell_range = max(float(np.abs(c_all).max()), 2.0 ** -15)   # an all-zero cell: 2**-15
    return lstm_params(np.concatenate(wq), np.concatenate(rq), bias_q.astype(np.int32),
                       s_x, z_x, s_w, s_r, s_h, z_h, cell_range, cell_clip)


# ----------------------------------------------------------------------------- error report

#: Sequence-length buckets of the report.
_LENGTH_BUCKETS = ((1, 1), (2, 4), (5, 8), (9, 16), (17, 32))


def _random_case(rng, max_len=32):
    """A random float LSTM (PyTorch-style uniform init with a random gain, a forget-gate bias
    raised by up to 3 so that some cells remember and grow), 8 calibration sequences of length
    ``max_len`` and one held-out sequence of random length; x ~ N(0, 1)."""
    hid, feat, steps = int(rng.integers(8, 65)), int(rng.integers(1, 65)), int(
        rng.integers(1, max_len + 1))
    k = float(rng.uniform(0.5, 2.0)) / math.sqrt(hid)
    w = rng.uniform(-k, k, (4 * hid, feat))
    r = rng.uniform(-k, k, (4 * hid, hid))
    b = rng.uniform(-k, k, 8 * hid)
    b[2 * hid:3 * hid] += rng.uniform(0.0, 3.0)      # rows of gate f in Wb
    calib = rng.standard_normal((8, max_len, feat))
    x = rng.standard_normal((1, steps, feat))
    return w, r, b, calib, x


def error_report(cases=1000, seed=1, held_out=False):
    """Integer vs float LSTM over ``cases`` seeded random LSTMs and sequences (lengths 1..32,
    hidden 8..64, input width 1..64), each LSTM quantized by :func:`quantize_lstm` on 8
    calibration sequences of length 32. The test sequence is the first T steps of a calibration
    sequence (its x, h and c lie inside the calibrated ranges: the error is the arithmetic's),
    or with ``held_out=True`` a fresh sequence (values outside the calibrated ranges saturate:
    the error includes the calibration's coverage). Returns a list of dicts, one per sequence:
    ``steps``,
    ``hidden``, ``features``, ``cell_exponent``, ``max_lsb``, ``mean_lsb`` (|h error| in
    hidden-state LSB), ``max_abs``, ``mean_abs`` (float units), ``cos`` (cosine similarity of
    all hidden states of the sequence)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(cases):
        w, r, b, calib, x = _random_case(rng)
        if not held_out:
            x = calib[:1, :x.shape[1], :]
        p = quantize_lstm(w, r, b, calib)
        y_int, _, _ = lstm_int(quantize_input(x, p), p)
        y_ref, _, _ = lstm_float(x, w, r, b)
        got = dequantize_hidden(y_int, p).ravel()
        want = y_ref.ravel()
        err = np.abs(got - want)
        denom = np.linalg.norm(got) * np.linalg.norm(want)
        cos = float(got @ want / denom) if denom > 0 else 1.0
        out.append({"steps": x.shape[1], "hidden": r.shape[1], "features": w.shape[1],
                    "cell_exponent": p.cell_exponent,
                    "max_lsb": float(err.max() / p.hidden_scale),
                    "mean_lsb": float(err.mean() / p.hidden_scale),
                    "max_abs": float(err.max()), "mean_abs": float(err.mean()), "cos": cos})
    return out


def _table_row(label, rows):
    def col(key):
        return np.array([row[key] for row in rows])
    return (f"| {label} | {len(rows)} | {col('max_lsb').max():.3f} | {col('mean_lsb').mean():.3f}"
            f" | {col('max_abs').max():.5f} | {col('mean_abs').mean():.5f} | "
            f"{col('cos').min():.6f} | {col('cos').mean():.6f} |")


def format_report(rows):
    """Markdown table of :func:`error_report` rows by sequence length."""
    lines = ["| sequence length T | sequences | max abs err (LSB) | mean abs err (LSB) | "
             "max abs err | mean abs err | min cos | mean cos |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for lo, hi in _LENGTH_BUCKETS:
        sel = [row for row in rows if lo <= row["steps"] <= hi]
        if sel:
            lines.append(_table_row(f"{lo}" if lo == hi else f"{lo}-{hi}", sel))
    lines.append(_table_row("all", rows))
    exps = sorted({row["cell_exponent"] for row in rows})
    lines.append("")
    lines.append("cell exponents chosen: " + ", ".join(
        f"2^{e}: {sum(row['cell_exponent'] == e for row in rows)}" for e in exps))
    return "\n".join(lines)


def format_gate_errors(gate_rows):
    """Markdown table of :func:`gate_function_errors`."""
    lines = ["| gate function (all 65,536 int16 inputs) | max abs err (LSB of 2^-15) | "
             "mean abs err |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {mx:.3f} | {mean:.3f} |" for name, mx, mean in gate_rows]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Error of the integer LSTM against the float LSTM.")
    ap.add_argument("--report", action="store_true",
                    help="run the seeded sweep and print the error tables (markdown)")
    ap.add_argument("--cases", type=int, default=1000, help="random sequences (default 1000)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if not args.report:
        ap.print_help()
        return
    if args.cases < 1:
        ap.error("--cases must be >= 1")
    print(f"Integer vs float LSTM: {args.cases} random LSTMs and sequences, seed {args.seed}; "
          f"error of every hidden state, LSB = the hidden-state scale s_h.")
    print("\nTest sequence inside the calibration data (no range saturation):\n")
    print(format_report(error_report(args.cases, args.seed)))
    print("\nHeld-out test sequence (x, h, c outside the calibrated ranges saturate):\n")
    print(format_report(error_report(args.cases, args.seed, held_out=True)))
    print("\nGate functions against float64:\n")
    print(format_gate_errors(gate_function_errors()))


if __name__ == "__main__":
    main()
