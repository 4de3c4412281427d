"""Golden int8 inference of a whole network (a graph of layers), integers only.

``run(model, x)`` takes a validated :class:`golden.model.Model` and int8 NHWC input
``(N, *model.input_shape)`` and applies each layer, in the file's (topological) order, to the
tensors it names, with the per-layer golden functions; no float value is touched (scales in
the model are only metadata here)::

    conv2d     acc = golden.conv.conv2d_int8(x, weights, gemm_bias, window, z_x)
               (im2col with padding value z_x, then golden.gemm)
               y   = golden.quant.requantize(acc, m0, shift, z_y, qmin=qmin, qmax=qmax)
    depthwise_conv2d   acc = golden.conv.depthwise_conv2d_int8(x, weights, gemm_bias, window,
               z_x), y as conv2d
    dense      y   = requantize(golden.gemm(x, weights, gemm_bias), m0, shift, z_y, qmin, qmax)
    maxpool2d  y   = golden.pooling.max_pool2d_window(x, window)
    avgpool2d  y   = golden.pooling.avg_pool2d_window(x, window, z_x, count)
    flatten    y   = x.reshape(N, -1)                      ((h, w, c) order)
    activation y   = golden.activation.apply_table(x, table)
    softmax    y   = golden.softmax.softmax(x, params)     (scale 1/256, zero point -128)
               or golden.tflite.softmax_tflite(x, params) (variant "tflite")
    add        y   = golden.eltwise.add_int8(x1, x2, params, qmin, qmax)   (TFLite ADD)

``gemm_bias = bias - z_x * sum_k weights[k, :]`` is folded once when the model is loaded
(golden.conv.fold_zero_point); a fused ReLU is the requantizer's clamp ``qmin = z_y``.
"""

import numpy as np

from .activation import apply_table
from .conv import conv2d_int8, depthwise_conv2d_int8
from .eltwise import add_int8
from .gemm import gemm
from .model import INPUT
from .pooling import avg_pool2d_window, max_pool2d_window
from .quant import requantize
from .softmax import softmax
from .tflite import softmax_tflite

__all__ = ["run_layer", "run", "run_all", "predict"]


def run_layer(L, xs):
    """Apply one validated layer to its int8 inputs ``xs`` (a list, batch first); returns
    int8. A single array is taken as the one input."""
    if isinstance(xs, np.ndarray):
        xs = [xs]
    x = xs[0]
    a = L.attrs
    t = L.type
    if t in ("conv2d", "depthwise_conv2d", "dense"):
        if t == "conv2d":
            acc = conv2d_int8(x, L.tensors["weights"], L.gemm_bias, L.window,
                              input_zero_point=L.in_zero_point)
        elif t == "depthwise_conv2d":
            acc = depthwise_conv2d_int8(x, L.tensors["weights"], L.gemm_bias, L.window,
                                        L.in_zero_point)
        else:
            acc = gemm(x, L.tensors["weights"], L.gemm_bias)
        return requantize(acc, L.tensors["m0"], L.tensors["shift"], L.out_zero_point,
                          qmin=a["qmin"], qmax=a["qmax"], rounding=a.get("rounding", "double"))
    if t == "maxpool2d":
        return max_pool2d_window(x, L.window)
    if t == "avgpool2d":
        return avg_pool2d_window(x, L.window, L.in_zero_point, a.get("count", "kernel"))
    if t == "flatten":
        return x.reshape(x.shape[0], -1)
    if t == "activation":
        return apply_table(x, L.tensors["table"])
    if t == "softmax":
        if a.get("variant", "project") == "tflite":
            return softmax_tflite(x, L.softmax_params)
        return softmax(x, L.softmax_params)
    if t == "add":
        return add_int8(xs[0], xs[1], L.add_params, qmin=a["qmin"], qmax=a["qmax"])
    raise ValueError(f"layer {L.index} {L.name!r}: unknown layer type {t!r}")


def run_all(model, x):
    """Every tensor of the graph: ``{name: int8 array}`` (the input is ``"input"``)."""
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ValueError(f"model input must be int8, got dtype {x.dtype}")
    if x.ndim != len(model.input_shape) + 1 or tuple(x.shape[1:]) != tuple(model.input_shape):
        raise ValueError(f"model input must have shape (N, {', '.join(map(str, model.input_shape))}),"
                         f" got {x.shape}")
    env = {INPUT: x}
    for L in model.layers:
        env[L.name] = run_layer(L, [env[n] for n in L.inputs])
    return env


def run(model, x, keep=False):
    """int8 ``(N, *input_shape)`` -> int8 output ``(N, *output_shape)`` (with ``keep``, the
    output of every layer, in layer order)."""
    env = run_all(model, x)
    return [env[L.name] for L in model.layers] if keep else env[model.output]
def predict(model, x, batch=None):
    """Top-1 class (argmax of the int8 output; ties go to the lowest index)."""
    if batch is None:
        return run(model, x).reshape(len(x), -1).argmax(axis=-1)
    return np.concatenate([predict(model, x[i:i + batch]) for i in range(0, len(x), batch)])
