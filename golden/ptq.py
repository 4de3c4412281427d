"""Training-free post-training quantization (TFLite int8 spec) of a float sequential CNN.

    .venv/bin/python -m golden.ptq      # golden/data/digits_cnn_float.npz -> digits_cnn_int8.npz

No retraining; no scikit-learn (the calibration images are committed in golden/data/).

1. Calibration: run the float model (:mod:`golden.float_model`) on the calibration images
   (``CALIB_SIZE`` training images, :mod:`golden.digits`) and record each layer's output range
   ``[min, max]`` (after the fused activation), extended to contain 0.
2. Activations, per tensor, asymmetric int8 (``real = S * (q - z)``)::

       S = (max - min) / 255,   z = clamp(round_half_away(-128 - min / S), -128, 127)

   (``S = 1`` if the range is empty). Pooling and flatten keep their input's quantization;
   softmax output is ``S = 1/256, z = -128``. The network input uses the given quantization
   (for the digits: ``S = 1/240, z = -128``, exact for the 17 grey levels).
3. Weights, per output channel ``n``, symmetric int8 with zero point 0::

       S_w[n] = max_k |W[k, n]| / 127   (1 if the column is 0)
       Wq[k, n] = clamp(round_half_away(W[k, n] / S_w[n]), -127, 127)

4. Biases: ``bq[n] = round_half_away(b[n] / (S_x * S_w[n]))`` int32 (zero point 0).
5. Requantization: ``(m0[n], shift[n]) = golden.quant.quantize_multipliers(S_x * S_w[n] / S_y)``.
6. Fused ReLU: ``qmin = max(-128, z_y)``; ReLU6 also ``qmax = min(127, z_y + round(6 / S_y))``.
7. Activation layers: ``table = golden.activation.activation_table(fn, S_x, z_x, S_y, z_y)``.
8. Softmax: ``golden.softmax.softmax_params(S_x)``.

All floats stop here: the model file holds the integers the hardware consumes.
"""

import argparse

import numpy as np

from . import digits
from .activation import activation_table
from .float_model import forward, load_float, output_shapes
from .model import (FORMAT, FORMAT_VERSION, SOFTMAX_OUTPUT_SCALE, SOFTMAX_OUTPUT_ZERO_POINT,
                    model_from_arrays, save_model, softmax_to_file)
from .quant import INT32_MAX, INT32_MIN, quantize_multipliers
from .softmax import softmax_params

__all__ = ["round_half_away", "activation_qparams", "quantize_weights", "quantize_model",
           "INT8_FILE"]

INT8_FILE = digits.DATA_DIR / "digits_cnn_int8.npz"


def round_half_away(v):
    v = np.asarray(v, dtype=np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def activation_qparams(lo, hi):
    """Per-tensor asymmetric int8 ``(scale, zero_point)`` covering ``[lo, hi]`` and 0."""
    lo, hi = min(0.0, float(lo)), max(0.0, float(hi))
    if hi == lo:
        return 1.0, 0
    scale = (hi - lo) / 255.0
    zp = int(np.clip(round_half_away(-128 - lo / scale), -128, 127))
    return float(scale), zp


def quantize_weights(w):
    """Per-output-channel symmetric int8: ``(Wq int8 (K, N), S_w float64 (N,))``."""
    w = np.asarray(w, dtype=np.float64)
    amax = np.abs(w).max(axis=0)
    s = np.where(amax > 0, amax / 127.0, 1.0)
    q = np.clip(round_half_away(w / s), -127, 127).astype(np.int8)
    return q, s


def _quantize_bias(b, s_x, s_w, name):
    q = round_half_away(np.asarray(b, dtype=np.float64) / (s_x * s_w))
    if q.min() < INT32_MIN or q.max() > INT32_MAX:
        raise ValueError(f"layer {name!r}: quantized bias does not fit int32")
    return q.astype(np.int32)


def _fused_clamp(act, s_y, z_y):
    """``qmin, qmax`` of a fused activation in the output quantization."""
    qmin, qmax = -128, 127
    if act in ("relu", "relu6"):
        qmin = max(-128, z_y)
    if act == "relu6":
        qmax = int(min(127, z_y + round_half_away(6.0 / s_y)))
    return int(qmin), int(qmax)


def quantize_model(arch, params, calib_x, input_scale, input_zero_point):
    """Quantize a float model (a chain or a graph, :mod:`golden.float_model`); ``calib_x`` is a
    float NHWC calibration batch. Returns a validated :class:`golden.model.Model`."""
    from .eltwise import add_params
    from .float_model import layer_inputs
    import dataclasses
    output_shapes(arch)
    outs = forward(arch, params, calib_x, keep=True)
    quants = {"input": (float(input_scale), int(input_zero_point))}
    headers, tensors = [], {}
    names = []
    for i, (L, y, ins) in enumerate(zip(arch["layers"], outs, layer_inputs(arch))):
        t = L["type"]
        name = L.get("name") or f"{t}{i}"
        names.append(name)
        s_x, z_x = quants[ins[0]]
        a = {"name": name, "type": t, "inputs": list(ins)}
        a.update({k: v for k, v in L.items() if k not in ("name", "type", "activation",
                                                          "inputs")})
        act = L.get("activation", "none")
        if t in ("maxpool2d", "avgpool2d", "flatten"):
            s_y, z_y = s_x, z_x
        elif t == "softmax":
            s_y, z_y = SOFTMAX_OUTPUT_SCALE, SOFTMAX_OUTPUT_ZERO_POINT
            ints, arrs = softmax_to_file(softmax_params(s_x), name)
            a["params"] = ints
            tensors.update(arrs)
        else:
            s_y, z_y = activation_qparams(y.min(), y.max())
        if t in ("conv2d", "depthwise_conv2d", "dense"):
            p = params[L["name"]]
            wq, s_w = quantize_weights(p["weights"])
            try:
                m0, shift = quantize_multipliers(s_x * s_w / s_y)
            except ValueError as e:
                raise ValueError(f"layer {name!r}: requantization multiplier: {e}") from None
            qmin, qmax = _fused_clamp(act, s_y, z_y)
            a.update({"fused_activation": act, "qmin": qmin, "qmax": qmax})
            tensors.update({f"{name}/weights": wq,
                            f"{name}/bias": _quantize_bias(p["bias"], s_x, s_w, name),
                            f"{name}/weight_scale": s_w.astype(np.float64),
                            f"{name}/m0": m0, f"{name}/shift": shift})
        elif t == "add":
            (s1, z1), (s2, z2) = quants[ins[0]], quants[ins[1]]
            try:
                ap = add_params(s1, z1, s2, z2, s_y, z_y)
            except ValueError as e:
                raise ValueError(f"layer {name!r}: {e}") from None
            qmin, qmax = _fused_clamp(act, s_y, z_y)
            a.update({"fused_activation": act, "qmin": qmin, "qmax": qmax,
                      "params": dataclasses.asdict(ap)})
        elif t == "activation":
            tensors[f"{name}/table"] = activation_table(L["function"], s_x, z_x, s_y, z_y)
        a["output"] = {"scale": s_y, "zero_point": z_y}
        headers.append(a)
        quants[name] = (s_y, z_y)
    header = {"format": FORMAT, "version": FORMAT_VERSION, "name": arch.get("name", ""),
              "input": {"shape": list(arch["input_shape"]), "scale": float(input_scale),
                        "zero_point": int(input_zero_point)},
              "layers": headers, "output": arch.get("output", names[-1])}
    return model_from_arrays(header, tensors, source=f"quantized {arch.get('name', 'model')}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--float", dest="float_path", default=str(digits.DATA_DIR /
                                                              "digits_cnn_float.npz"))
    ap.add_argument("--out", default=str(INT8_FILE))
    args = ap.parse_args(argv)
    arch, params = load_float(args.float_path)
    images, _ = digits.load_calibration()
    model = quantize_model(arch, params, digits.to_float(images), digits.INPUT_SCALE,
                           digits.INPUT_ZERO_POINT)
    save_model(args.out, model)
    print(f"calibrated on {len(images)} training images; wrote {args.out}")


if __name__ == "__main__":
    main()
