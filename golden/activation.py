"""int8 -> int8 activation through a 256-entry lookup table.

One piece of hardware (:class:`hw.activation.ActivationLUT`) serves any activation: its table
is a memory written at run time. :func:`build_table` is the single function that turns a float
function and the quantization parameters into that table; the same table fills the hardware
memory and is the golden model (:func:`apply_table`).

Table convention::

    table[x + 128] = output for int8 input x          (x = -128 .. 127)

Each entry is the correctly rounded quantized value of the float function::

    real  = in_scale * (x - in_zp)
    table[x + 128] = clamp(round_half_away(f(real) / out_scale) + out_zp, -128, 127)

Building the table uses float math (it is done offline, once per layer); applying it is
integer-only. Where ``f`` stays inside the output range, the error of an entry against the
float function is at most half an output LSB; for a float input ``x`` that is first quantized
with ``in_scale``, add ``max|f'| * in_scale / 2`` (the input quantization).

``python -m golden.activation`` prints the measured maximum error per activation.
"""

import argparse
import math

import numpy as np

__all__ = ["ACTIVATIONS", "DEFAULT_QPARAMS", "LEAKY_SLOPE", "TABLE_SIZE", "build_table",
           "activation_table", "apply_table", "check_table", "output_qparams", "round_half_away",
           "error_report"]

TABLE_SIZE = 256
#: Negative slope of ``leaky_relu`` (PyTorch's default).
LEAKY_SLOPE = 0.01

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x):
    x = np.asarray(x, np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))       # overflow-free logistic


#: name -> float function on float64 NumPy arrays.
ACTIVATIONS = {
    "identity": lambda x: np.asarray(x, np.float64),
    "relu": lambda x: np.maximum(np.asarray(x, np.float64), 0.0),
    "relu6": lambda x: np.clip(np.asarray(x, np.float64), 0.0, 6.0),
    "leaky_relu": lambda x: np.where(np.asarray(x) >= 0, np.asarray(x, np.float64),
                                     LEAKY_SLOPE * np.asarray(x, np.float64)),
    "sigmoid": _sigmoid,
    "tanh": lambda x: np.tanh(np.asarray(x, np.float64)),
    "gelu": lambda x: 0.5 * np.asarray(x, np.float64) * (1.0 + _erf(np.asarray(x, np.float64)
                                                                    / math.sqrt(2.0))),
    "silu": lambda x: np.asarray(x, np.float64) * _sigmoid(x),
}

def output_qparams(fn, in_scale, in_zp):
    """``(out_scale, out_zp)`` whose int8 range covers ``fn`` (and 0) on every int8 input.

    The span is spread over 254 steps, so rounding never pushes an entry past the range."""
    y = np.asarray(fn(in_scale * (np.arange(-128, 128) - in_zp)), np.float64)
    lo, hi = min(0.0, float(y.min())), max(0.0, float(y.max()))
    scale = (hi - lo) / 254 if hi > lo else 1.0
    zp = int(np.clip(np.floor(-127.5 - lo / scale), -128, 127))
    return scale, zp


def _default_qparams(name, in_scale=8 / 128, in_zp=0):
    if name == "identity":
        return in_scale, in_zp, in_scale, in_zp
    return (in_scale, in_zp) + output_qparams(ACTIVATIONS[name], in_scale, in_zp)


#: Quantization used by the error report and the testbenches: name -> (in_scale, in_zp,
#: out_scale, out_zp). Inputs cover [-8, 8); each output range covers the function's range on
#: that input range (:func:`output_qparams`), so no entry saturates.
DEFAULT_QPARAMS = {name: _default_qparams(name) for name in ACTIVATIONS}


def round_half_away(v):
    """Round float64 values to the nearest integer, ties away from zero."""
    v = np.asarray(v, np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def _check_qparams(in_scale, in_zp, out_scale, out_zp):
    for name, s in (("in_scale", in_scale), ("out_scale", out_scale)):
        number = isinstance(s, (int, float, np.floating, np.integer)) and not isinstance(s, bool)
        if not (number and math.isfinite(s) and s > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {s!r}")
    for name, z in (("in_zp", in_zp), ("out_zp", out_zp)):
        if isinstance(z, bool) or not isinstance(z, (int, np.integer)) or not -128 <= z <= 127:
            raise ValueError(f"{name} must be an integer in [-128, 127], got {z!r}")


def build_table(fn, in_scale, in_zp, out_scale, out_zp):
    """The 256-entry int8 table of float function ``fn`` (see the module docstring)."""
    _check_qparams(in_scale, in_zp, out_scale, out_zp)
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {fn!r}")
    x = np.arange(-128, 128, dtype=np.int64)
    real = float(in_scale) * (x - int(in_zp)).astype(np.float64)
    y = np.asarray(fn(real), np.float64)
    if y.shape != real.shape or not np.all(np.isfinite(y)):
        raise ValueError("fn must map a float64 array to finite values of the same shape")
    q = round_half_away(y / float(out_scale)) + int(out_zp)
    return np.clip(q, -128, 127).astype(np.int8)


def activation_table(name, in_scale, in_zp, out_scale, out_zp):
    """:func:`build_table` of ``ACTIVATIONS[name]``."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    return build_table(ACTIVATIONS[name], in_scale, in_zp, out_scale, out_zp)


def check_table(table):
    """Validate a table: int8, exactly 256 entries. Returns it as an array."""
    t = np.asarray(table)
    if t.dtype != np.int8:
        raise ValueError(f"table must be int8, got dtype {t.dtype}")
    if t.shape != (TABLE_SIZE,):
        raise ValueError(f"table must have {TABLE_SIZE} entries (shape (256,)), "
                         f"got shape {t.shape}")
    return t


def apply_table(x, table):
    """Integer-only golden model: ``table[x + 128]`` elementwise for int8 ``x``."""
    t = check_table(table)
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ValueError(f"x must be int8, got dtype {x.dtype}")
    return t[x.astype(np.int16) + 128]


def error_report(samples=200001):
    """Measured error of every activation's table against its float function, in output LSBs.

    Returns name -> dict with ``grid`` (max error at the 256 quantized inputs), ``dense`` (max
    error over ``samples`` float inputs spread over the input range, each quantized first, so it
    includes the input quantization) and ``bound`` (0.5 + max|f'| * in_scale / 2 / out_scale,
    with max|f'| estimated numerically)."""
    out = {}
    for name, (si, zi, so, zo) in DEFAULT_QPARAMS.items():
        fn = ACTIVATIONS[name]
        table = build_table(fn, si, zi, so, zo)
        q = np.arange(-128, 128)
        grid_err = np.abs((table.astype(np.float64) - zo) * so - fn(si * (q - zi))) / so
        lo, hi = si * (-128 - zi), si * (127 - zi)
        xf = np.linspace(lo, hi, samples)
        xq = np.clip(round_half_away(xf / si) + zi, -128, 127).astype(np.int8)
        yq = apply_table(xq, table)
        dense_err = np.abs((yq.astype(np.float64) - zo) * so - fn(xf)) / so
        slope = np.max(np.abs(np.diff(fn(xf)) / np.diff(xf)))
        out[name] = {"qparams": (si, zi, so, zo), "grid": float(grid_err.max()),
                     "dense": float(dense_err.max()), "bound": 0.5 + slope * si / 2 / so}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="Maximum error of each activation's int8 table "
                                             "against its float function, in output LSBs.")
    ap.add_argument("--samples", type=int, default=200001, help="float inputs for 'dense'")
    args = ap.parse_args(argv)
    rep = error_report(args.samples)
    print("activation   in_scale  in_zp  out_scale  out_zp  max err @256 inputs  "
          "max err (float in)  bound")
    for name, r in rep.items():
        si, zi, so, zo = r["qparams"]
        print(f"{name:<11} {si:9.5f} {zi:6d} {so:10.6f} {zo:7d} {r['grid']:16.3f} LSB "
              f"{r['dense']:15.3f} LSB {r['bound']:6.3f}")
    print("'@256 inputs': error at the quantized inputs (<= 0.5 LSB: correct rounding); "
          "'float in': float inputs quantized first, bound = 0.5 + max|f'| * in_scale/2 / "
          "out_scale.")


if __name__ == "__main__":
    main()
