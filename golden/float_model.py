"""Float reference of a sequential CNN, and the reference digits network.

A network is an *architecture* (a list of layer dicts, JSON-able) plus float *parameters*
(``{layer_name: {"weights": (K, N) float32, "bias": (N,) float32}}``). Layouts are the ones the
int8 model file uses (see :mod:`golden.model`): activations NHWC, batch first; conv weights are
the GEMM ``B`` matrix ``K x Cout`` with ``K = k*k*Cin`` ordered ``(kh, kw, cin)``; dense weights
are ``in_features x out_features``, the input flattened in ``(h, w, c)`` order.

Layer dicts (``name`` is required for layers with parameters, and for a layer another one
reads by name)::

    {"type": "conv2d", "name", "kernel", "stride", "padding", "in_channels", "out_channels",
     "activation": "none" | "relu" | "relu6"}        # activation fused after the bias
    {"type": "depthwise_conv2d", "name", "kernel", "stride", "padding", "channels",
     "activation": ...}                              # channel multiplier 1
    {"type": "dense", "name", "in_features", "out_features", "activation": ...}
    {"type": "maxpool2d" | "avgpool2d", "kernel", "stride", "padding",
     "count": "kernel" | "valid"}                    # average: divisor (default "kernel")
    {"type": "flatten"}
    {"type": "activation", "function": <name in golden.activation.ACTIVATIONS>}
    {"type": "softmax"}                               # over the last axis
    {"type": "add", "inputs": [a, b], "activation": ...}

Window attributes are ints (square, symmetric) or lists ``[kh, kw]``, ``[sy, sx]``, ``[top,
left, bottom, right]`` (:class:`golden.conv.Window`). A layer reads the previous layer's
output unless it names its ``"inputs"`` (layer names, ``"input"`` for the network input): a
graph, in topological order; the network's output is the last layer's unless ``arch`` names
an ``"output"``.

Float semantics: ``conv = im2col(x, pad with 0) @ W + b``; ``maxpool`` ignores padded taps;
``avgpool`` averages the ``kh*kw`` taps with padded taps counting as 0 (the int8
``avg_pool2d`` pads with the zero point, i.e. the real value 0, and divides by kh*kw), or,
with ``count`` = ``"valid"``, only the taps inside the input.

The reference network (``REFERENCE_ARCH``), for 8x8x1 digits::

    conv1  3x3, 1->8,   pad 1   + ReLU   8x8x8     GEMM M=64/img, K=9,  N=8
    conv2  3x3, 8->16,  pad 1   + ReLU   8x8x16    GEMM M=64/img, K=72, N=16
    maxpool 2x2 stride 2                 4x4x16
    flatten                              256
    fc1    256 -> 32            + ReLU             GEMM M=1/img,  K=256, N=32
    fc2    32 -> 10                                GEMM M=1/img,  K=32,  N=10
    softmax

Why these sizes. The accelerator is an 8x8 output-stationary systolic array: a GEMM
``M x K x N`` is cut into 8x8 output tiles (8 rows of M by 8 columns of N) and K streams
through. Channel counts that are multiples of 8 fill the array's columns: conv1 has N = 8
(one column tile), conv2 N = 16 (two), fc1 N = 32 (four); conv2's K = 3*3*8 = 72 and fc1's
K = 256 are multiples of 8 too. The images are only 8x8, so the convolutions keep the
resolution (3x3, padding 1) and M = 64 output pixels per image is 8 full row tiles; a single
2x2 max pool then gives 4x4x16 = 256 features. Only fc2 (N = 10 classes) leaves 6 of 16
columns idle, and the dense layers have M = 1 per image, so they fill the rows only when
images are batched (M = batch). Two conv layers, the second with 8 input channels, as the
issue asks. Size: 9,802 parameters (9.6 KiB of int8 weights + int32 biases) and 86,848 MACs
per image (85 % of them in conv2); float test accuracy 99.4 % on the digits test split.

This module also holds the backward pass used by :mod:`golden.train` (conv, dense, ReLU,
max pooling, flatten, softmax + cross-entropy).
"""

import numpy as np

from .conv import Window, conv_output_size, im2col, im2col_window

__all__ = ["REFERENCE_ARCH", "PARAM_LAYERS", "LAYER_TYPES", "output_shapes", "init_params",
           "forward", "predict", "loss_and_grads", "save_float", "load_float", "layer_inputs",
           "window"]

PARAM_LAYERS = ("conv2d", "depthwise_conv2d", "dense")
LAYER_TYPES = ("conv2d", "depthwise_conv2d", "dense", "maxpool2d", "avgpool2d", "flatten",
               "activation", "softmax", "add")
WINDOW_LAYERS = ("conv2d", "depthwise_conv2d", "maxpool2d", "avgpool2d")

REFERENCE_ARCH = {
    "name": "digits_cnn",
    "input_shape": [8, 8, 1],
    "layers": [
        {"type": "conv2d", "name": "conv1", "kernel": 3, "stride": 1, "padding": 1,
         "in_channels": 1, "out_channels": 8, "activation": "relu"},
        {"type": "conv2d", "name": "conv2", "kernel": 3, "stride": 1, "padding": 1,
         "in_channels": 8, "out_channels": 16, "activation": "relu"},
        {"type": "maxpool2d", "name": "pool", "kernel": 2, "stride": 2, "padding": 0},
        {"type": "flatten", "name": "flatten"},
        {"type": "dense", "name": "fc1", "in_features": 256, "out_features": 32,
         "activation": "relu"},
        {"type": "dense", "name": "fc2", "in_features": 32, "out_features": 10,
         "activation": "none"},
        {"type": "softmax", "name": "softmax"},
    ],
}


def _fused(x, act):
    if act == "none":
        return x
    if act == "relu":
        return np.maximum(x, 0)
    if act == "relu6":
        return np.clip(x, 0, 6)
    raise ValueError(f"unknown fused activation {act!r} (none, relu, relu6)")


def window(L):
    """The :class:`golden.conv.Window` of a conv or pooling layer dict."""
    return Window.from_attrs(L["kernel"], L.get("stride", 1), L.get("padding", 0))


def layer_inputs(arch):
    """Per layer, the names of the tensors it reads (``"input"``: the network input)."""
    out, prev = [], "input"
    for i, L in enumerate(arch["layers"]):
        ins = L.get("inputs", [prev])
        out.append(list(ins))
        prev = L.get("name") or f"{L['type']}{i}"
    return out


def _names(arch):
    return [L.get("name") or f"{L['type']}{i}" for i, L in enumerate(arch["layers"])]


def output_shapes(arch):
    """Per-layer output shape (without the batch axis); ``ValueError`` on inconsistency."""
    shapes = {"input": tuple(arch["input_shape"])}
    out = []
    for i, (L, ins, name) in enumerate(zip(arch["layers"], layer_inputs(arch), _names(arch))):
        t = L["type"]
        where = f"layer {i} {L.get('name', '')!r} ({t})"
        missing = [n for n in ins if n not in shapes]
        if missing:
            raise ValueError(f"{where}: reads {missing[0]!r}, not computed before it")
        shape = shapes[ins[0]]
        if t in WINDOW_LAYERS:
            if len(shape) != 3:
                raise ValueError(f"{where}: needs an HWC input, got shape {shape}")
            h, w, c = shape
            want = {"conv2d": L.get("in_channels"), "depthwise_conv2d": L.get("channels")}
            if t in want and c != want[t]:
                raise ValueError(f"{where}: in_channels/channels {want[t]} but input has {c}")
            ho, wo = window(L).out_size(h, w)
            shape = (ho, wo, L["out_channels"] if t == "conv2d" else c)
        elif t == "dense":
            if len(shape) != 1 or shape[0] != L["in_features"]:
                raise ValueError(f"{where}: in_features {L['in_features']} but input shape is "
                                 f"{shape} (dense needs a flattened input)")
            shape = (L["out_features"],)
        elif t == "flatten":
            shape = (int(np.prod(shape)),)
        elif t == "add":
            if len(ins) != 2 or shapes[ins[1]] != shape:
                raise ValueError(f"{where}: needs two inputs of the same shape, got "
                                 f"{[shapes.get(n) for n in ins]}")
        elif t in ("activation", "softmax"):
            pass
        else:
            raise ValueError(f"{where}: unknown layer type")
        shapes[name] = shape
        out.append(shape)
    return out


def init_params(arch, rng):
    """He-normal weights, zero biases."""
    params = {}
    for L in arch["layers"]:
        if L["type"] == "conv2d":
            win = window(L)
            k_dim, n_dim = win.kh * win.kw * L["in_channels"], L["out_channels"]
            fan_in = k_dim
        elif L["type"] == "depthwise_conv2d":
            win = window(L)
            k_dim, n_dim = win.kh * win.kw, L["channels"]
            fan_in = k_dim
        elif L["type"] == "dense":
            k_dim, n_dim = L["in_features"], L["out_features"]
            fan_in = k_dim
        else:
            continue
        params[L["name"]] = {
            "weights": (rng.standard_normal((k_dim, n_dim)) * np.sqrt(2.0 / fan_in)).astype(np.float32),
            "bias": np.zeros(n_dim, dtype=np.float32),
        }
    return params


def _pool_windows(x, L, pad_value):
    win = window(L)
    cols, (n, ho, wo) = im2col_window(x, win, pad_value)
    c = x.shape[-1]
    return cols.reshape(n * ho * wo, win.kh * win.kw, c), (n, ho, wo, c)


def _layer_forward(L, p, xs):
    x = xs[0]
    t = L["type"]
    if t == "conv2d":
        cols, (n, ho, wo) = im2col_window(x, window(L), 0.0)
        z = (cols @ p["weights"] + p["bias"]).reshape(n, ho, wo, -1)
        return _fused(z, L.get("activation", "none")), (cols, z)
    if t == "depthwise_conv2d":
        win = window(L)
        cols, (n, ho, wo) = im2col_window(x, win, 0.0)
        c = x.shape[-1]
        z = ((cols.reshape(-1, win.kh * win.kw, c) * p["weights"][None]).sum(axis=1)
             + p["bias"]).reshape(n, ho, wo, c)
        return _fused(z, L.get("activation", "none")), None
    if t == "dense":
        z = x @ p["weights"] + p["bias"]
        return _fused(z, L.get("activation", "none")), (x, z)
    if t == "maxpool2d":
        win, shp = _pool_windows(x, L, -np.inf)
        arg = win.argmax(axis=1)
        return np.take_along_axis(win, arg[:, None, :], 1)[:, 0, :].reshape(shp), (arg, x.shape)
    if t == "avgpool2d":
        win, shp = _pool_windows(x, L, 0.0)
        if L.get("count", "kernel") == "valid":
            inside, _ = _pool_windows(np.ones_like(x[:1]), L, 0.0)
            counts = inside[:shp[1] * shp[2], :, :1].sum(axis=1)
            return (win.sum(axis=1).reshape(shp[0], -1, shp[3]) / counts[None]).reshape(shp), None
        return win.mean(axis=1).reshape(shp), None
    if t == "flatten":
        return x.reshape(x.shape[0], -1), x.shape
    if t == "activation":
        from .activation import ACTIVATIONS
        return np.asarray(ACTIVATIONS[L["function"]](x), dtype=x.dtype), None
    if t == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True), None
    if t == "add":
        return _fused(xs[0] + xs[1], L.get("activation", "none")), None
    raise ValueError(f"unknown layer type {t!r}")


def forward(arch, params, x, keep=False):
    """Run the float network on NHWC ``x``; returns the output, or all layer outputs (in layer
    order) if ``keep``."""
    env = {"input": np.asarray(x, dtype=np.float32)}
    outs = []
    for L, ins, name in zip(arch["layers"], layer_inputs(arch), _names(arch)):
        env[name], _ = _layer_forward(L, params.get(L.get("name")), [env[n] for n in ins])
        outs.append(env[name])
    return outs if keep else env[arch.get("output", _names(arch)[-1])]


def predict(arch, params, x, batch=512):
    """Top-1 class for each input."""
    return np.concatenate([forward(arch, params, x[i:i + batch]).argmax(axis=-1)
                           for i in range(0, len(x), batch)])


def _col2im(dcols, x_shape, L):
    n, h, w, c = x_shape
    k, s, pad = L["kernel"], L["stride"], L["padding"]
    ho = conv_output_size(h, k, s, pad)
    wo = conv_output_size(w, k, s, pad)
    d = dcols.reshape(n, ho, wo, k, k, c)
    dxp = np.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=dcols.dtype)
    for kh in range(k):
        for kw in range(k):
            dxp[:, kh:kh + s * (ho - 1) + 1:s, kw:kw + s * (wo - 1) + 1:s, :] += d[:, :, :, kh, kw, :]
    return dxp[:, pad:pad + h, pad:pad + w, :]


def _dfused(z, act, g):
    if act == "none":
        return g
    if act == "relu":
        return g * (z > 0)
    if act == "relu6":
        return g * ((z > 0) & (z < 6))
    raise ValueError(f"unknown fused activation {act!r}")


def loss_and_grads(arch, params, x, y, weight_decay=0.0):
    """Mean cross-entropy of the softmax output against integer labels ``y``, and gradients.

    Supports conv2d, dense, maxpool2d, flatten, fused none/relu/relu6 and a final softmax.
    """
    layers = arch["layers"]
    if layers[-1]["type"] != "softmax":
        raise ValueError("training needs a final softmax layer")
    x = np.asarray(x, dtype=np.float32)
    caches, inputs = [], []
    for L in layers[:-1]:
        inputs.append(x)
        x, cache = _layer_forward(L, params.get(L.get("name")), [x])
        caches.append(cache)
    logits = x
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    n = len(y)
    loss = -logp[np.arange(n), y].mean()
    g = np.exp(logp)
    g[np.arange(n), y] -= 1
    g /= n
    grads = {}
    for L, cache, xin in zip(reversed(layers[:-1]), reversed(caches), reversed(inputs)):
        t = L["type"]
        if t in PARAM_LAYERS:
            a, zpre = cache
            g = _dfused(zpre, L.get("activation", "none"), g)
            w = params[L["name"]]["weights"]
            g2 = g.reshape(-1, g.shape[-1])
            a2 = a.reshape(-1, a.shape[-1])
            grads[L["name"]] = {"weights": a2.T @ g2 + weight_decay * w,
                                "bias": g2.sum(axis=0)}
            dcols = g2 @ w.T
            g = _col2im(dcols, xin.shape, L) if t == "conv2d" else dcols
        elif t == "maxpool2d":
            arg, x_shape = cache
            m, c = arg.shape
            dwin = np.zeros((m, L["kernel"] ** 2, c), dtype=g.dtype)
            np.put_along_axis(dwin, arg[:, None, :], g.reshape(m, 1, c), axis=1)
            g = _col2im(dwin.reshape(m, -1), x_shape, L)
        elif t == "flatten":
            g = g.reshape(cache)
        else:
            raise ValueError(f"training does not support layer type {t!r}")
    return float(loss), grads


def save_float(path, arch, params):
    """Float weights as ``.npz`` (no pickle): ``arch`` (JSON, uint8) and ``<layer>/weights|bias``."""
    import json
    arrays = {"arch": np.frombuffer(json.dumps(arch).encode(), dtype=np.uint8)}
    for name, p in params.items():
        arrays[f"{name}/weights"] = p["weights"].astype(np.float32)
        arrays[f"{name}/bias"] = p["bias"].astype(np.float32)
    np.savez_compressed(path, **arrays)


def load_float(path):
    """Inverse of :func:`save_float`: ``(arch, params)``."""
    import json
    with np.load(path, allow_pickle=False) as f:
        arch = json.loads(bytes(f["arch"]).decode())
        params = {}
        for L in arch["layers"]:
            if L["type"] in PARAM_LAYERS:
                params[L["name"]] = {"weights": f[f"{L['name']}/weights"],
                                     "bias": f[f"{L['name']}/bias"]}
    output_shapes(arch)
    return arch, params
