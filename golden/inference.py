"""Golden int8 inference of a whole sequential CNN, integers only.

``run(model, x)`` takes a validated :class:`golden.model.Model` and int8 NHWC input
``(N, *model.input_shape)`` and applies each layer with the per-layer golden functions; no
float value is touched (scales in the model are only metadata here)::

    conv2d     acc = golden.conv.conv2d_int8(x, weights, gemm_bias, k, stride, pad, z_x)
               (im2col with padding value z_x, then golden.gemm)
               y   = golden.quant.requantize(acc, m0, shift, z_y, qmin=qmin, qmax=qmax)
    dense      y   = requantize(golden.gemm(x, weights, gemm_bias), m0, shift, z_y, qmin, qmax)
    maxpool2d  y   = golden.pooling.max_pool2d(x, k, stride, pad)
    avgpool2d  y   = golden.pooling.avg_pool2d(x, k, stride, pad, zero_point=z_x)
    flatten    y   = x.reshape(N, -1)                      ((h, w, c) order)
    activation y   = golden.activation.apply_table(x, table)
    softmax    y   = golden.softmax.softmax(x, params)     (scale 1/256, zero point -128)

``gemm_bias = bias - z_x * sum_k weights[k, :]`` is folded once when the model is loaded
(golden.conv.fold_zero_point); a fused ReLU is the requantizer's clamp ``qmin = z_y``.
"""

import numpy as np

from .activation import apply_table
from .conv import conv2d_int8
from .gemm import gemm
from .pooling import avg_pool2d, max_pool2d
from .quant import requantize
from .softmax import softmax

__all__ = ["run_layer", "run", "predict"]


def run_layer(L, x):
    """Apply one validated layer to int8 ``x`` (batch first); returns int8."""
    a = L.attrs
    t = L.type
    if t == "conv2d":
        acc = conv2d_int8(x, L.tensors["weights"], L.gemm_bias, a["kernel"], a["stride"],
                          a["padding"], L.in_zero_point)
        return requantize(acc, L.tensors["m0"], L.tensors["shift"], L.out_zero_point,
                          qmin=a["qmin"], qmax=a["qmax"])
    if t == "dense":
        acc = gemm(x, L.tensors["weights"], L.gemm_bias)
        return requantize(acc, L.tensors["m0"], L.tensors["shift"], L.out_zero_point,
                          qmin=a["qmin"], qmax=a["qmax"])
    if t == "maxpool2d":
        return max_pool2d(x, a["kernel"], a["stride"], a["padding"])
    if t == "avgpool2d":
        return avg_pool2d(x, a["kernel"], a["stride"], a["padding"], zero_point=L.in_zero_point)
    if t == "flatten":
        return x.reshape(x.shape[0], -1)
    if t == "activation":
        return apply_table(x, L.tensors["table"])
    if t == "softmax":
        return softmax(x, L.softmax_params)
    raise ValueError(f"layer {L.index} {L.name!r}: unknown layer type {t!r}")


def run(model, x, keep=False):
    """int8 ``(N, *input_shape)`` -> int8 output ``(N, *output_shape)`` (all layers if ``keep``)."""
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ValueError(f"model input must be int8, got dtype {x.dtype}")
    if x.ndim != len(model.input_shape) + 1 or tuple(x.shape[1:]) != tuple(model.input_shape):
        raise ValueError(f"model input must have shape (N, {', '.join(map(str, model.input_shape))}),"
                         f" got {x.shape}")
    outs = []
    for L in model.layers:
        x = run_layer(L, x)
        outs.append(x)
    return outs if keep else x


def predict(model, x, batch=None):
    """Top-1 class (argmax of the int8 output; ties go to the lowest index)."""
    if batch is None:
        return run(model, x).reshape(len(x), -1).argmax(axis=-1)
    return np.concatenate([predict(model, x[i:i + batch]) for i in range(0, len(x), batch)])
