"""The int8 model file: format, writer, loader and validation.

Model file format, version 2 (a graph)
======================================

A model is one NumPy ``.npz`` archive, read with ``numpy.load(path, allow_pickle=False)``;
nothing in it is pickled. It holds one *header* and the *tensors*.

``header``
    uint8 array: UTF-8 JSON text of an object::

        {"format": "int8-npu-model", "version": 2, "name": "digits_cnn",
         "input": {"shape": [8, 8, 1], "scale": 0.0041666, "zero_point": -128},
         "layers": [<layer>, ...], "output": "softmax"}

    ``input.shape`` is one sample without the batch axis: ``[H, W, C]`` (NHWC) or ``[F]``. The
    input tensor is named ``"input"``. Every layer object has ``"name"`` (unique, not
    ``"input"``, no ``/``), ``"type"``, ``"inputs"`` (the names of the tensors it reads: the
    input or earlier layers; a layer's output tensor carries its name) and the per-tensor
    quantization of its output, ``"output": {"scale", "zero_point"}`` (real = scale * (q -
    zero_point), q int8). A layer's input quantization is its input tensors'. ``"output"``
    names the model's output tensor (default: the last layer). Layers are listed in
    topological order: a layer may only read tensors listed before it (so the graph has no
    cycle), and any tensor may feed several layers.

``<layer name>/<tensor name>``
    The tensors of each layer, exact dtypes and shapes below. No other arrays are allowed.

Version 1 files (a chain: no ``inputs``, each layer also repeating its input's quantization
as ``"input"``, square kernels and symmetric padding as single integers) still load; they
become the same chain in version 2.

Window geometry (conv2d, depthwise_conv2d, maxpool2d, avgpool2d): ``kernel`` ``[kh, kw]``,
``stride`` ``[sy, sx]``, ``padding`` ``[top, left, bottom, right]`` (an integer means the same
in every direction); output ``Ho = (H + top + bottom - kh) // sy + 1``, ``Wo`` likewise
(:class:`golden.conv.Window`).

Layer types (``K`` = GEMM reduction, ``N`` = output channels / features):

``conv2d``: the window, ``in_channels``, ``out_channels``, ``fused_activation`` (``"none"``,
``"relu"``, ``"relu6"``: documentation of how ``qmin``/``qmax`` were chosen), ``qmin``,
``qmax`` (the requantizer's output clamp, ``-128 <= qmin <= qmax <= 127``). Tensors, with
``K = kh*kw*in_channels`` ordered ``(kh, kw, cin)`` and ``N = out_channels``:

    ==============  =======  ======  ===================================================
    weights         int8     (K, N)  GEMM B matrix, per-channel symmetric, in [-127, 127]
    bias            int32    (N,)    TFLite bias, scale S_x * S_w[n], zero point 0
    weight_scale    float64  (N,)    S_w[n] (documentation and checks, not used to infer)
    m0              int32    (N,)    requantization mantissa, see golden.quant
    shift           int32    (N,)    requantization exponent, MIN_SHIFT..MAX_SHIFT
    ==============  =======  ======  ===================================================

    ``(m0[n], shift[n]) == quantize_multiplier(S_x * S_w[n] / S_y)`` is checked on load.

    Optional ``rounding`` (conv2d, depthwise_conv2d, dense): ``"double"`` (default: SRDHM then
    RoundingDivideByPOT, TFLite's convolutions) or ``"single"`` (the product rounded once, half
    away from zero: TFLite's FULLY_CONNECTED, see golden.quant).

``depthwise_conv2d``: the window, ``channels`` (input = output channels: a channel multiplier
of 1), ``fused_activation``, ``qmin``, ``qmax``; the same five tensors with ``K = kh*kw``
(weights ``(kh*kw, channels)``, rows ordered ``(kh, kw)``) and ``N = channels``.

``dense``: ``in_features``, ``out_features``, ``fused_activation``, ``qmin``, ``qmax``; input
must be 1-D (put a ``flatten`` first); the same five tensors with ``K = in_features``,
``N = out_features``.

``maxpool2d`` / ``avgpool2d``: the window (every window must hold a real pixel; average
pooling: a window of at most golden.pooling.MAX_DIVISOR taps), average pooling also
``count``: ``"kernel"`` (default: padding counts as the zero point, divisor kh*kw) or
``"valid"`` (only the taps inside the input, divided by their number: TFLite); no tensors;
output quantization equals the input's. Rounding half away from zero (golden.pooling).

``flatten``: HWC -> ``H*W*C`` in ``(h, w, c)`` order; no tensors; output quantization = input.

``activation``: ``function`` (name, informational); tensor ``table`` int8 (256,), with
``y = table[x + 128]`` for every int8 ``x``.

``softmax``: over the last axis; output quantization must be scale 1/256, zero point -128;
``variant``: ``"project"`` (default: golden.softmax, an exact divider) or ``"tflite"``
(golden.tflite.softmax_tflite: TFLite's fixed-point exp and reciprocal, bit-exact with LiteRT;
with ``beta``, default 1.0); ``params``: the integer fields of the variant's params class
(golden.softmax.SoftmaxParams or golden.tflite.SoftmaxTfliteParams) for the input scale
(checked against the variant's ``softmax_params(input scale[, beta])`` on load); array-valued
fields, if any, are tensors ``<name>/<field>``.

``add``: two ``inputs`` of the same shape, ``fused_activation``, ``qmin``, ``qmax``, and
``params``: the integers of golden.eltwise.AddParams (checked against ``add_params`` of the
three quantizations on load); TFLite ADD semantics (golden.eltwise).

Integer semantics of conv2d/depthwise_conv2d/dense (golden.inference)::

    gemm_bias = bias - z_x * sum_k weights[k, :]              (folded once at load time)
    acc       = golden.gemm(A, weights, gemm_bias)            (A = im2col(x) or x)
    y         = golden.quant.requantize(acc, m0, shift, z_y, qmin=qmin, qmax=qmax,
                                        rounding=rounding)

ReLU after a conv or dense layer is fused into the requantizer's clamp (TFLite): ``qmin =
max(-128, z_y)`` (``relu6`` also ``qmax = min(127, z_y + round(6 / S_y))``); other
activations are ``activation`` layers (a 256-entry table).

Floats in the file (the scales, ``weight_scale``) are metadata for checks and dequantization;
integer inference reads only the int8/int32 tensors, zero points, ``qmin``/``qmax``, tables and
the softmax and add integers.

Loading validates everything above and the accumulator bound
``128 * sum_k |weights[k, n]| + |gemm_bias[n]| <= 2**31 - 1``, so no int32 accumulator can
wrap. Every problem raises :class:`ModelFormatError` (a ``ValueError``) naming the file, the
layer (index, name, type) and the problem.
"""

import dataclasses
import json
import math
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .conv import Window, fold_zero_point
from .pooling import COUNT_MODES, MAX_DIVISOR
from .quant import INT32_MAX, MAX_SHIFT, MIN_SHIFT, ROUNDINGS, quantize_multipliers

__all__ = ["FORMAT", "FORMAT_VERSION", "LAYER_TYPES", "GEMM_TYPES", "INPUT", "ModelFormatError",
           "Layer", "Model", "save_model", "load_model", "model_from_arrays", "model_to_arrays",
           "layer_stats", "softmax_to_file"]

FORMAT = "int8-npu-model"
FORMAT_VERSION = 2
READS_VERSIONS = (1, 2)
INPUT = "input"
LAYER_TYPES = ("conv2d", "depthwise_conv2d", "dense", "maxpool2d", "avgpool2d", "flatten",
               "activation", "softmax", "add")
#: Layers computed on the systolic array, with weights, biases and requantization.
GEMM_TYPES = ("conv2d", "depthwise_conv2d", "dense")
WINDOW_TYPES = ("conv2d", "depthwise_conv2d", "maxpool2d", "avgpool2d")
FUSED_ACTIVATIONS = ("none", "relu", "relu6")
SOFTMAX_OUTPUT_SCALE = 1.0 / 256.0
SOFTMAX_OUTPUT_ZERO_POINT = -128

_ATTRS = {  # required integer attributes and their minimum (window attributes apart)
    "conv2d": {"in_channels": 1, "out_channels": 1},
    "depthwise_conv2d": {"channels": 1},
    "dense": {"in_features": 1, "out_features": 1},
    "maxpool2d": {}, "avgpool2d": {}, "flatten": {}, "activation": {}, "softmax": {},
    "add": {},
}
_ARITY = {"add": 2}           # number of inputs; 1 for every other type


class ModelFormatError(ValueError):
    """A model file (or in-memory model) that does not follow the format."""


@dataclass
class Layer:
    """One validated layer. ``attrs`` is the header object, ``tensors`` its arrays."""
    index: int
    name: str
    type: str
    attrs: dict
    tensors: dict
    in_shape: tuple
    out_shape: tuple
    #: names of the tensors it reads
    inputs: list = field(default_factory=list)
    #: (scale, zero_point) of each input
    in_quant: list = field(default_factory=list)
    #: conv2d/depthwise_conv2d/pooling: the window geometry (golden.conv.Window)
    window: Window = None
    #: conv2d/depthwise_conv2d/dense: bias with the input zero point folded in.
    gemm_bias: np.ndarray = None
    #: softmax: a golden.softmax.SoftmaxParams.
    softmax_params: object = None
    #: add: a golden.eltwise.AddParams.
    add_params: object = None

    @property
    def in_zero_point(self):
        return self.in_quant[0][1]

    @property
    def in_scale(self):
        return self.in_quant[0][0]

    @property
    def out_zero_point(self):
        return self.attrs["output"]["zero_point"]

    @property
    def out_scale(self):
        return self.attrs["output"]["scale"]


@dataclass
class Model:
    name: str
    input_shape: tuple
    input_scale: float
    input_zero_point: int
    layers: list = field(default_factory=list)
    version: int = FORMAT_VERSION
    #: the output tensor's name (a layer's)
    output: str = None

    def layer(self, name):
        for L in self.layers:
            if L.name == name:
                return L
        raise KeyError(name)

    @property
    def output_layer(self):
        return self.layer(self.output) if self.layers else None

    @property
    def output_shape(self):
        return self.output_layer.out_shape if self.layers else self.input_shape

    @property
    def output_scale(self):
        return self.output_layer.out_scale if self.layers else self.input_scale

    @property
    def output_zero_point(self):
        return self.output_layer.out_zero_point if self.layers else self.input_zero_point

    @property
    def is_chain(self):
        """Every layer reads the one before it (the input for the first) and the last one is
        the output."""
        prev = INPUT
        for L in self.layers:
            if L.inputs != [prev]:
                return False
            prev = L.name
        return self.output == prev

    def consumers(self, name):
        """The layers that read tensor ``name``."""
        return [L for L in self.layers if name in L.inputs]

    def header(self):
        layers = []
        for L in self.layers:
            a = {k: v for k, v in L.attrs.items() if k not in ("input", "kernel", "stride",
                                                                 "padding")}
            if L.window is not None:
                a.update(L.window.attrs())
            a["inputs"] = list(L.inputs)
            layers.append(a)
        return {"format": FORMAT, "version": FORMAT_VERSION, "name": self.name,
                "input": {"shape": list(self.input_shape), "scale": self.input_scale,
                          "zero_point": self.input_zero_point},
                "layers": layers, "output": self.output}


# ----------------------------------------------------------------------------- validation

class _Ctx:
    def __init__(self, source):
        self.source = source

    def fail(self, msg, layer=None):
        where = self.source
        if layer is not None:
            i, name, typ = layer
            where += f": layer {i} {name!r} ({typ})"
        raise ModelFormatError(f"{where}: {msg}")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_quant(ctx, q, what, where):
    if not isinstance(q, dict):
        ctx.fail(f"{what} quantization must be an object with scale and zero_point, got {q!r}",
                 where)
    missing = {"scale", "zero_point"} - q.keys()
    if missing:
        ctx.fail(f"{what} quantization lacks {sorted(missing)}", where)
    s, z = q["scale"], q["zero_point"]
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
        ctx.fail(f"{what} scale must be a finite number > 0, got {s!r}", where)
    if not _is_int(z) or not -128 <= z <= 127:
        ctx.fail(f"{what} zero_point must be an integer in [-128, 127], got {z!r}", where)
    return float(s), int(z)


def _tensor(ctx, arrays, used, lname, tname, dtype, shape, where):
    key = f"{lname}/{tname}"
    if key not in arrays:
        ctx.fail(f"missing tensor {key!r}", where)
    a = arrays[key]
    used.add(key)
    if not isinstance(a, np.ndarray):
        ctx.fail(f"tensor {key!r} is not an array", where)
    if a.dtype != np.dtype(dtype):
        ctx.fail(f"tensor {key!r} has dtype {a.dtype}, expected {np.dtype(dtype)}", where)
    if a.shape != tuple(shape):
        ctx.fail(f"tensor {key!r} has shape {a.shape}, expected {tuple(shape)}", where)
    return a


def _check_range(ctx, a, key, lo, hi, where):
    if a.size and (a.min() < lo or a.max() > hi):
        ctx.fail(f"tensor {key!r} has values in [{a.min()}, {a.max()}], outside [{lo}, {hi}]",
                 where)


#: softmax ``variant`` -> (module with ``softmax_params``, its params class name).
SOFTMAX_VARIANTS = {"project": ("golden.softmax", "SoftmaxParams"),
                    "tflite": ("golden.tflite", "SoftmaxTfliteParams")}


def _softmax_fields(variant):
    import importlib
    mod_name, cls = SOFTMAX_VARIANTS[variant]
    sm = importlib.import_module(mod_name)
    return sm, [f.name for f in dataclasses.fields(getattr(sm, cls))]


def softmax_to_file(params, lname):
    """Split SoftmaxParams into (header ints, tensors)."""
    ints, tensors = {}, {}
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        if isinstance(v, np.ndarray):
            tensors[f"{lname}/{f.name}"] = v
        else:
            ints[f.name] = int(v)
    return ints, tensors


def _window(ctx, a, where):
    try:
        return Window.from_attrs(a.get("kernel"), a.get("stride", 1), a.get("padding", 0))
    except ValueError as e:
        ctx.fail(f"bad window: {e}", where)


def _layer_shape(ctx, L, shapes, where):
    """The output shape of a layer from its input shapes (and its window)."""
    a, typ = L.attrs, L.type
    shape = shapes[0]
    if typ in WINDOW_TYPES:
        if len(shape) != 3:
            ctx.fail(f"needs an (H, W, C) input, got shape {shape}", where)
        h, w, c = shape
        attr = {"conv2d": "in_channels", "depthwise_conv2d": "channels"}.get(typ)
        if attr and c != a[attr]:
            ctx.fail(f"{attr} is {a[attr]} but the input has {c} channels", where)
        try:
            ho, wo = L.window.out_size(h, w)
        except ValueError as e:
            ctx.fail(f"bad geometry for input shape {shape}: {e}", where)
        if typ in ("maxpool2d", "avgpool2d"):
            win = L.window
            if win.pt >= win.kh or win.pb >= win.kh or win.pl >= win.kw or win.pr >= win.kw:
                ctx.fail(f"padding {win.attrs()['padding']} reaches a whole {win.kh}x{win.kw} "
                         f"window past the input (a window with no real pixel)", where)
            if typ == "avgpool2d" and win.kh * win.kw > MAX_DIVISOR:
                ctx.fail(f"average pooling window of {win.kh * win.kw} taps above the "
                         f"supported maximum {MAX_DIVISOR}", where)
            return (ho, wo, c)
        return (ho, wo, a["out_channels"] if typ == "conv2d" else c)
    if typ == "dense":
        if len(shape) != 1:
            ctx.fail(f"needs a 1-D input (add a flatten layer), got shape {shape}", where)
        if shape[0] != a["in_features"]:
            ctx.fail(f"in_features is {a['in_features']} but the input has {shape[0]}", where)
        return (a["out_features"],)
    if typ == "flatten":
        return (int(np.prod(shape)),)
    if typ == "add" and shapes[1] != shape:
        ctx.fail(f"inputs of different shapes {shape} and {shapes[1]}", where)
    return tuple(shape)


def _gemm_layer(ctx, L, arrays, used, where):
    """conv2d, depthwise_conv2d, dense: tensors, requantization, folded bias, bound."""
    a, lname = L.attrs, L.name
    (s_x, z_x), (s_y, _) = L.in_quant[0], (L.out_scale, L.out_zero_point)
    _check_clamp(ctx, a, where)
    if a.get("rounding", "double") not in ROUNDINGS:
        ctx.fail(f"rounding must be one of {ROUNDINGS}, got {a['rounding']!r}", where)
    if L.type == "conv2d":
        k_dim, n_dim = L.window.kh * L.window.kw * a["in_channels"], a["out_channels"]
    elif L.type == "depthwise_conv2d":
        k_dim, n_dim = L.window.kh * L.window.kw, a["channels"]
    else:
        k_dim, n_dim = a["in_features"], a["out_features"]
    spec = {"weights": (np.int8, (k_dim, n_dim)), "bias": (np.int32, (n_dim,)),
            "weight_scale": (np.float64, (n_dim,)), "m0": (np.int32, (n_dim,)),
            "shift": (np.int32, (n_dim,))}
    t = L.tensors
    for name, (dt, shp) in spec.items():
        t[name] = _tensor(ctx, arrays, used, lname, name, dt, shp, where)
    _check_range(ctx, t["weights"], f"{lname}/weights", -127, 127, where)
    _check_range(ctx, t["m0"], f"{lname}/m0", 0, INT32_MAX, where)
    _check_range(ctx, t["shift"], f"{lname}/shift", MIN_SHIFT, MAX_SHIFT, where)
    ws = t["weight_scale"]
    if not np.all(np.isfinite(ws)) or np.any(ws <= 0):
        ctx.fail(f"tensor '{lname}/weight_scale' must be finite and > 0", where)
    try:
        m0, sh = quantize_multipliers(s_x * ws / s_y)
    except ValueError as e:
        ctx.fail(f"requantization multiplier S_x*S_w/S_y out of range: {e}", where)
    if not (np.array_equal(m0, t["m0"]) and np.array_equal(sh, t["shift"])):
        bad = int(np.flatnonzero((m0 != t["m0"]) | (sh != t["shift"]))[0])
        ctx.fail(f"m0/shift of channel {bad} ({t['m0'][bad]}, {t['shift'][bad]}) do not "
                 f"match quantize_multiplier(S_x * S_w / S_y) = ({m0[bad]}, {sh[bad]})", where)
    try:
        L.gemm_bias = fold_zero_point(t["bias"], t["weights"], z_x)
    except ValueError as e:
        ctx.fail(str(e), where)
    bound = (128 * np.abs(t["weights"].astype(np.int64)).sum(axis=0)
             + np.abs(L.gemm_bias.astype(np.int64)))
    if bound.max() > INT32_MAX:
        ctx.fail(f"int32 accumulator can overflow (worst case {int(bound.max())}): "
                 "K or the weights are too large", where)


def _same_quant_layer(ctx, L, arrays, used, where):
    """Pooling and flatten keep their input's quantization."""
    if (L.out_scale, L.out_zero_point) != L.in_quant[0]:
        ctx.fail("output quantization must equal the input quantization", where)
    if L.type == "avgpool2d" and L.attrs.get("count", "kernel") not in COUNT_MODES:
        ctx.fail(f"count must be one of {COUNT_MODES}, got {L.attrs.get('count')!r}", where)


def _activation_layer(ctx, L, arrays, used, where):
    if not isinstance(L.attrs.get("function", ""), str):
        ctx.fail("attribute 'function' must be a string", where)
    L.tensors["table"] = _tensor(ctx, arrays, used, L.name, "table", np.int8, (256,), where)


def _softmax_layer(ctx, L, arrays, used, where):
    s_x = L.in_quant[0][0]
    if (L.out_scale, L.out_zero_point) != (SOFTMAX_OUTPUT_SCALE, SOFTMAX_OUTPUT_ZERO_POINT):
        ctx.fail(f"output quantization must be scale 1/256, zero point -128, got "
                 f"scale {L.out_scale!r}, zero_point {L.out_zero_point}", where)
    variant = L.attrs.get("variant", "project")
    if variant not in SOFTMAX_VARIANTS:
        ctx.fail(f"variant must be one of {sorted(SOFTMAX_VARIANTS)}, got {variant!r}", where)
    beta = L.attrs.get("beta", 1.0)
    if variant == "project" and "beta" in L.attrs:
        ctx.fail("'beta' is only for variant 'tflite'", where)
    if not (isinstance(beta, (int, float)) and not isinstance(beta, bool)
            and math.isfinite(beta) and beta > 0):
        ctx.fail(f"beta must be a finite number > 0, got {beta!r}", where)
    p = L.attrs.get("params")
    if not isinstance(p, dict):
        ctx.fail(f"missing 'params' object ({'.'.join(SOFTMAX_VARIANTS[variant])} fields)",
                 where)
    try:
        sm, fields = _softmax_fields(variant)
        want = (sm.softmax_params(s_x) if variant == "project"
                else sm.softmax_params(s_x, beta))
    except ValueError as e:
        ctx.fail(f"no softmax parameters for input scale {s_x!r}: {e}", where)
    want_ints, want_tensors = softmax_to_file(want, L.name)
    for f in fields:
        key = f"{L.name}/{f}"
        if key in want_tensors:
            w = want_tensors[key]
            got = _tensor(ctx, arrays, used, L.name, f, w.dtype, w.shape, where)
            if not np.array_equal(got, w):
                ctx.fail(f"tensor {key!r} does not match softmax_params(input scale)", where)
        else:
            if f not in p:
                ctx.fail(f"softmax params lack field {f!r}", where)
            if not _is_int(p[f]):
                ctx.fail(f"softmax param {f!r} must be an integer, got {p[f]!r}", where)
            if p[f] != want_ints[f]:
                ctx.fail(f"softmax param {f!r} is {p[f]}, but softmax_params(input scale) "
                         f"gives {want_ints[f]}", where)
    extra = set(p) - set(fields)
    if extra:
        ctx.fail(f"unknown softmax params {sorted(extra)}", where)
    L.softmax_params = want


def _check_clamp(ctx, a, where):
    """A conv/dense/add layer's fused activation name and its requantizer clamp."""
    act = a.get("fused_activation", "none")
    if act not in FUSED_ACTIVATIONS:
        ctx.fail(f"fused_activation must be one of {FUSED_ACTIVATIONS}, got {act!r}", where)
    qmin, qmax = a.get("qmin"), a.get("qmax")
    if not (_is_int(qmin) and _is_int(qmax) and -128 <= qmin <= qmax <= 127):
        ctx.fail(f"need integers -128 <= qmin <= qmax <= 127, got qmin={qmin!r}, "
                 f"qmax={qmax!r}", where)


def _add_layer(ctx, L, arrays, used, where):
    from .eltwise import AddParams, add_params
    a = L.attrs
    _check_clamp(ctx, a, where)
    (s1, z1), (s2, z2) = L.in_quant
    try:
        want = add_params(s1, z1, s2, z2, L.out_scale, L.out_zero_point)
    except ValueError as e:
        ctx.fail(str(e), where)
    p = a.get("params")
    fields = [f.name for f in dataclasses.fields(AddParams)]
    if not isinstance(p, dict) or set(p) != set(fields):
        ctx.fail(f"'params' must be an object with the fields {fields}", where)
    for f in fields:
        if p[f] != getattr(want, f):
            ctx.fail(f"add param {f!r} is {p[f]!r}, but add_params of the quantizations gives "
                     f"{getattr(want, f)}", where)
    L.add_params = want


_HANDLERS = {"conv2d": _gemm_layer, "depthwise_conv2d": _gemm_layer, "dense": _gemm_layer,
             "maxpool2d": _same_quant_layer, "avgpool2d": _same_quant_layer,
             "flatten": _same_quant_layer, "activation": _activation_layer,
             "softmax": _softmax_layer, "add": _add_layer}


def _layer_inputs(ctx, a, version, prev, where):
    """The names a layer reads: ``inputs`` (version 2), or the previous layer (version 1)."""
    if version == 1:
        if "inputs" in a:
            ctx.fail("'inputs' is a format version 2 attribute", where)
        return [prev]
    ins = a.get("inputs")
    want = _ARITY.get(a.get("type"), 1)
    if not isinstance(ins, list) or len(ins) != want or not all(isinstance(n, str) for n in ins):
        ctx.fail(f"'inputs' must be a list of {want} tensor name(s), got {ins!r}", where)
    return list(ins)


def model_from_arrays(header, arrays, source="model"):
    """Validate a decoded header and its tensors; return a :class:`Model`."""
    ctx = _Ctx(source)
    if not isinstance(header, dict):
        ctx.fail("header must be a JSON object")
    if header.get("format") != FORMAT:
        ctx.fail(f"not an {FORMAT} file (format field is {header.get('format')!r})")
    version = header.get("version")
    if version not in READS_VERSIONS:
        ctx.fail(f"unsupported format version {version!r}; this loader reads versions "
                 f"{', '.join(map(str, READS_VERSIONS))}")
    inp = header.get("input")
    if not isinstance(inp, dict) or "shape" not in inp:
        ctx.fail("header lacks the 'input' object with 'shape', 'scale', 'zero_point'")
    shape = inp["shape"]
    if (not isinstance(shape, list) or len(shape) not in (1, 3)
            or not all(_is_int(d) and d >= 1 for d in shape)):
        ctx.fail(f"input shape must be [H, W, C] or [F] of positive integers, got {shape!r}")
    in_scale, in_zp = _check_quant(ctx, inp, "input", None)
    layers_h = header.get("layers")
    if not isinstance(layers_h, list) or not layers_h:
        ctx.fail("header must have a non-empty 'layers' list")
    name = header.get("name", "")
    if not isinstance(name, str):
        ctx.fail(f"model name must be a string, got {name!r}")

    model = Model(name=name, input_shape=tuple(shape), input_scale=in_scale,
                  input_zero_point=in_zp, version=version)
    shapes = {INPUT: tuple(shape)}                      # tensor name -> shape
    quants = {INPUT: (in_scale, in_zp)}                  # tensor name -> (scale, zero point)
    used, prev = set(), INPUT
    for i, a in enumerate(layers_h):
        if not isinstance(a, dict):
            ctx.fail(f"layer {i} must be a JSON object, got {type(a).__name__}")
        lname, typ = a.get("name"), a.get("type")
        where = (i, lname, typ)
        if not isinstance(lname, str) or not lname or "/" in lname or lname == INPUT:
            ctx.fail(f"layer name must be a non-empty string without '/', not {INPUT!r}", where)
        if lname in shapes:
            ctx.fail("duplicate layer name", where)
        if typ not in LAYER_TYPES:
            ctx.fail(f"unknown layer type {typ!r}; supported: {', '.join(LAYER_TYPES)}", where)
        for key, lo in _ATTRS[typ].items():
            if key not in a:
                ctx.fail(f"missing attribute {key!r}", where)
            if not _is_int(a[key]) or a[key] < lo:
                ctx.fail(f"attribute {key!r} must be an integer >= {lo}, got {a[key]!r}", where)
        ins = _layer_inputs(ctx, a, version, prev, where)
        for n in ins:
            if n not in shapes:
                later = any(isinstance(b, dict) and b.get("name") == n for b in layers_h[i:])
                ctx.fail(f"reads {n!r}, " + ("which is computed later: layers must be in "
                                             "topological order (no cycles)" if later else
                                             "which no layer computes"), where)
        q_in = [quants[n] for n in ins]
        if version == 1:
            s_x, z_x = _check_quant(ctx, a.get("input"), "input", where)
            if (s_x, z_x) != q_in[0]:
                ctx.fail(f"input quantization (scale {s_x!r}, zero_point {z_x}) differs from "
                         f"the previous layer's output (scale {q_in[0][0]!r}, zero_point "
                         f"{q_in[0][1]})", where)
        s_y, z_y = _check_quant(ctx, a.get("output"), "output", where)
        attrs = dict(a)
        attrs["output"] = {"scale": s_y, "zero_point": z_y}
        attrs["input"] = {"scale": q_in[0][0], "zero_point": q_in[0][1]}
        attrs.pop("inputs", None)
        L = Layer(i, lname, typ, attrs, {}, shapes[ins[0]], None, inputs=ins, in_quant=q_in)
        if typ in WINDOW_TYPES:
            L.window = _window(ctx, a, where)
        L.out_shape = _layer_shape(ctx, L, [shapes[n] for n in ins], where)
        _HANDLERS[typ](ctx, L, arrays, used, where)
        model.layers.append(L)
        shapes[lname], quants[lname] = L.out_shape, (s_y, z_y)
        prev = lname
    out = header.get("output", prev) if version == 2 else prev
    if out not in shapes or out == INPUT:
        ctx.fail(f"the output {out!r} is not a layer of the model")
    model.output = out
    extra = sorted(set(arrays) - used - {"header"})
    if extra:
        ctx.fail(f"tensors that belong to no layer: {extra}")
    return model


# ----------------------------------------------------------------------------- file I/O

def model_to_arrays(model):
    """``{"header": uint8 JSON, "<layer>/<tensor>": array}`` for :func:`numpy.savez`."""
    arrays = {"header": np.frombuffer(json.dumps(model.header(), indent=1).encode(),
                                      dtype=np.uint8)}
    for L in model.layers:
        for t, a in L.tensors.items():
            arrays[f"{L.name}/{t}"] = a
    return arrays


def save_model(path, model):
    """Write ``model`` (validated first) to ``path`` as a compressed ``.npz``."""
    arrays = model_to_arrays(model)
    model_from_arrays(model.header(), arrays, source=str(path))
    np.savez_compressed(path, **arrays)


#: What reading a corrupt zip archive raises (zipfile and zlib): a refusal of the file.
ZIP_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
              NotImplementedError, RuntimeError)


def _check_member_sizes(path, source):
    """Refuse an archive member whose ``.npy`` header declares more data than the member
    holds, before NumPy allocates it (a hostile header could ask for terabytes)."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile):
        return                      # not a zip: np.load reports it
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            try:
                with zf.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(member)
            except ZIP_ERRORS as e:
                raise ModelFormatError(f"{source}: member {info.filename!r}: "
                                       f"{type(e).__name__}: {e}") from None
            declared = math.prod(shape) * dtype.itemsize
            if declared > info.file_size:
                raise ModelFormatError(
                    f"{source}: member {info.filename} declares shape {shape} of {dtype} "
                    f"({declared} bytes) but holds {info.file_size} bytes")


def read_npz(path, source=None):
    """Every array of an ``.npz`` archive, read without pickle, as a dict. A missing file, a
    file that is no archive, a pickled member or a member whose header declares more data
    than it holds (checked before NumPy allocates) is a :class:`ModelFormatError` naming
    ``source`` (default: the path). The model, calibration and data files all go through it."""
    source = source or str(path)
    if not Path(path).is_file():
        raise ModelFormatError(f"{source}: cannot read it: no such file")
    _check_member_sizes(path, source)
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ModelFormatError(f"{source}: a single .npy array, not an .npz archive")
        with f:
            return {k: f[k] for k in f.files}
    except ModelFormatError:
        raise
    except ZIP_ERRORS as e:
        raise ModelFormatError(f"{source}: cannot read as a NumPy .npz archive without "
                               f"pickle: {e}") from None


def load_model(path):
    """Read and validate a model file; :class:`ModelFormatError` on any problem."""
    source = str(path)
    arrays = read_npz(path, source)
    hdr = arrays.get("header")
    if hdr is None:
        raise ModelFormatError(f"{source}: no 'header' array")
    if hdr.dtype != np.uint8 or hdr.ndim != 1:
        raise ModelFormatError(f"{source}: 'header' must be a 1-D uint8 array of UTF-8 JSON")
    try:
        header = json.loads(hdr.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{source}: header is not valid UTF-8 JSON: {e}") from None
    except RecursionError:
        raise ModelFormatError(f"{source}: header JSON is nested too deeply") from None
    return model_from_arrays(header, arrays, source=source)


def layer_stats(model):
    """Per layer: ``(name, type, out_shape, params, macs_per_sample)``.

    ``params`` counts weights and biases; ``macs`` the multiply-accumulates of the GEMM
    (``Ho*Wo*K*N`` for conv2d, ``Ho*Wo*kh*kw*C`` for depthwise, ``K*N`` for dense), 0 for the
    other layers.
    """
    rows = []
    for L in model.layers:
        params = macs = 0
        if L.type in GEMM_TYPES:
            k_dim, n_dim = L.tensors["weights"].shape
            params = k_dim * n_dim + n_dim
            m = L.out_shape[0] * L.out_shape[1] if L.type != "dense" else 1
            macs = m * k_dim * n_dim
        rows.append((L.name, L.type, L.out_shape, params, macs))
    return rows
