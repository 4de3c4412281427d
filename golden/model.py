"""The int8 model file: format, writer, loader and validation.

Model file format, version 1
============================

A model is one NumPy ``.npz`` archive, read with ``numpy.load(path, allow_pickle=False)``;
nothing in it is pickled. It holds one *header* and the *tensors*.

``header``
    uint8 array: UTF-8 JSON text of an object::

        {"format": "int8-npu-model", "version": 1, "name": "digits_cnn",
         "input": {"shape": [8, 8, 1], "scale": 0.0041666, "zero_point": -128},
         "layers": [<layer>, ...]}

    ``input.shape`` is one sample without the batch axis: ``[H, W, C]`` (NHWC) or ``[F]``.
    Every layer object has ``"name"`` (unique, no ``/``), ``"type"``, and the per-tensor
    quantization of its input and output activations, ``"input": {"scale", "zero_point"}``
    and ``"output": {"scale", "zero_point"}`` (real = scale * (q - zero_point), q int8). A
    layer's ``input`` equals the previous layer's ``output`` (the first: the model ``input``).

``<layer name>/<tensor name>``
    The tensors of each layer, exact dtypes and shapes below. No other arrays are allowed.

Layer types (``K`` = GEMM reduction, ``N`` = output channels / features):

``conv2d``: ``kernel`` k, ``stride`` s >= 1, ``padding`` 0 <= p < k (symmetric, padded taps hold
the input zero point), ``in_channels``, ``out_channels``, ``fused_activation`` (``"none"``,
``"relu"``, ``"relu6"``: documentation of how ``qmin``/``qmax`` were chosen), ``qmin``,
``qmax`` (the requantizer's output clamp, ``-128 <= qmin <= qmax <= 127``). Input HWC with
C = in_channels; output ``(Ho, Wo, out_channels)`` with ``Ho = (H + 2p - k) // s + 1``.
Tensors, with ``K = k*k*in_channels`` ordered ``(kh, kw, cin)`` and ``N = out_channels``:

    ==============  =======  ======  ===================================================
    weights         int8     (K, N)  GEMM B matrix, per-channel symmetric, in [-127, 127]
    bias            int32    (N,)    TFLite bias, scale S_x * S_w[n], zero point 0
    weight_scale    float64  (N,)    S_w[n] (documentation and checks, not used to infer)
    m0              int32    (N,)    requantization mantissa, see golden.quant
    shift           int32    (N,)    requantization exponent, MIN_SHIFT..MAX_SHIFT
    ==============  =======  ======  ===================================================

    ``(m0[n], shift[n]) == quantize_multiplier(S_x * S_w[n] / S_y)`` is checked on load.

``dense``: ``in_features``, ``out_features``, ``fused_activation``, ``qmin``, ``qmax``; input
must be 1-D (put a ``flatten`` first); the same five tensors with ``K = in_features``,
``N = out_features``.

``maxpool2d`` / ``avgpool2d``: ``kernel``, ``stride``, ``padding`` (``0 <= padding <=
kernel // 2``, golden.pooling's rule; average pooling ``kernel <= 53``); no tensors; output
quantization equals the input's. Max pooling ignores padded taps; average pooling pads with
the zero point and divides by ``kernel*kernel``, rounding half away from zero (golden.pooling).

``flatten``: HWC -> ``H*W*C`` in ``(h, w, c)`` order; no tensors; output quantization = input.

``activation``: ``function`` (name, informational); tensor ``table`` int8 (256,), with
``y = table[x + 128]`` for every int8 ``x`` (built by golden.activation.build_table from the
float function and the input/output quantization).

``softmax``: over the last axis; output quantization must be scale 1/256, zero point -128;
``params``: the integer fields of golden.softmax.SoftmaxParams for the input scale (checked
against ``softmax_params(input.scale)`` on load); array-valued fields, if any, are tensors
``<name>/<field>``.

Integer semantics of conv2d/dense (golden.inference)::

    gemm_bias = bias - z_x * sum_k weights[k, :]              (folded once at load time)
    acc       = golden.gemm(A, weights, gemm_bias)            (A = im2col(x) or x)
    y         = golden.quant.requantize(acc, m0, shift, z_y, qmin=qmin, qmax=qmax)

ReLU after a conv or dense layer is fused into the requantizer's clamp (TFLite): ``qmin =
max(-128, z_y)`` (``relu6`` also ``qmax = min(127, z_y + round(6 / S_y))``); other
activations are ``activation`` layers (a 256-entry table).

Floats in the file (the scales, ``weight_scale``) are metadata for checks and dequantization;
integer inference reads only the int8/int32 tensors, zero points, ``qmin``/``qmax``, tables and
softmax integers.

Example layer object (conv2 of the reference model; the tensors are ``conv2/weights`` int8
(72, 16), ``conv2/bias``, ``conv2/weight_scale``, ``conv2/m0``, ``conv2/shift`` (16,))::

    {"name": "conv2", "type": "conv2d", "kernel": 3, "stride": 1, "padding": 1,
     "in_channels": 8, "out_channels": 16, "fused_activation": "relu", "qmin": -128,
     "qmax": 127, "input": {"scale": 0.01171..., "zero_point": -128},
     "output": {"scale": 0.02063..., "zero_point": -128}}

Loading validates everything above and the accumulator bound
``128 * sum_k |weights[k, n]| + |gemm_bias[n]| <= 2**31 - 1``, so no int32 accumulator can
wrap. Every problem raises :class:`ModelFormatError` (a ``ValueError``) naming the file, the
layer (index, name, type) and the problem.
"""

import dataclasses
import json
import math
import zipfile
from dataclasses import dataclass, field

import numpy as np

from .conv import conv_output_size, fold_zero_point
from .pooling import MAX_POOL_K, check_pool_params
from .quant import INT32_MAX, MAX_SHIFT, MIN_SHIFT, quantize_multipliers

__all__ = ["FORMAT", "FORMAT_VERSION", "LAYER_TYPES", "ModelFormatError", "Layer", "Model",
           "save_model", "load_model", "model_from_arrays", "model_to_arrays", "layer_stats"]

FORMAT = "int8-npu-model"
FORMAT_VERSION = 1
LAYER_TYPES = ("conv2d", "dense", "maxpool2d", "avgpool2d", "flatten", "activation", "softmax")
FUSED_ACTIVATIONS = ("none", "relu", "relu6")
SOFTMAX_OUTPUT_SCALE = 1.0 / 256.0
SOFTMAX_OUTPUT_ZERO_POINT = -128

_GEMM_TENSORS = ("weights", "bias", "weight_scale", "m0", "shift")
_ATTRS = {  # required integer attributes and their minimum
    "conv2d": {"kernel": 1, "stride": 1, "padding": 0, "in_channels": 1, "out_channels": 1},
    "dense": {"in_features": 1, "out_features": 1},
    "maxpool2d": {"kernel": 1, "stride": 1, "padding": 0},
    "avgpool2d": {"kernel": 1, "stride": 1, "padding": 0},
    "flatten": {},
    "activation": {},
    "softmax": {},
}


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
    #: conv2d/dense: bias with the input zero point folded in (what golden.gemm adds).
    gemm_bias: np.ndarray = None
    #: softmax: a golden.softmax.SoftmaxParams.
    softmax_params: object = None

    @property
    def in_zero_point(self):
        return self.attrs["input"]["zero_point"]

    @property
    def out_zero_point(self):
        return self.attrs["output"]["zero_point"]


@dataclass
class Model:
    name: str
    input_shape: tuple
    input_scale: float
    input_zero_point: int
    layers: list = field(default_factory=list)
    version: int = FORMAT_VERSION

    @property
    def output_shape(self):
        return self.layers[-1].out_shape if self.layers else self.input_shape

    @property
    def output_scale(self):
        return self.layers[-1].attrs["output"]["scale"] if self.layers else self.input_scale

    @property
    def output_zero_point(self):
        return (self.layers[-1].attrs["output"]["zero_point"] if self.layers
                else self.input_zero_point)

    def header(self):
        return {"format": FORMAT, "version": self.version, "name": self.name,
                "input": {"shape": list(self.input_shape), "scale": self.input_scale,
                          "zero_point": self.input_zero_point},
                "layers": [L.attrs for L in self.layers]}


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


def _softmax_fields():
    from . import softmax as sm
    return sm, [f.name for f in dataclasses.fields(sm.SoftmaxParams)]


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


def _layer_shape(ctx, typ, attrs, shape, where):
    a = attrs
    try:
        if typ in ("conv2d", "maxpool2d", "avgpool2d"):
            if len(shape) != 3:
                ctx.fail(f"needs an (H, W, C) input, got shape {shape}", where)
            h, w, c = shape
            if typ == "conv2d" and c != a["in_channels"]:
                ctx.fail(f"in_channels is {a['in_channels']} but the input has {c} channels",
                         where)
            if typ == "conv2d":
                ho = conv_output_size(h, a["kernel"], a["stride"], a["padding"])
                wo = conv_output_size(w, a["kernel"], a["stride"], a["padding"])
                return (ho, wo, a["out_channels"])
            if typ == "avgpool2d" and a["kernel"] > MAX_POOL_K:
                ctx.fail(f"average pooling kernel {a['kernel']} above the supported maximum "
                         f"{MAX_POOL_K}", where)
            ho, wo = check_pool_params(h, w, a["kernel"], a["stride"], a["padding"])
            return (ho, wo, c)
    except ValueError as e:
        if isinstance(e, ModelFormatError):
            raise
        ctx.fail(f"bad geometry for input shape {shape}: {e}", where)
    if typ == "dense":
        if len(shape) != 1:
            ctx.fail(f"needs a 1-D input (add a flatten layer), got shape {shape}", where)
        if shape[0] != a["in_features"]:
            ctx.fail(f"in_features is {a['in_features']} but the input has {shape[0]}", where)
        return (a["out_features"],)
    if typ == "flatten":
        return (int(np.prod(shape)),)
    return tuple(shape)


def model_from_arrays(header, arrays, source="model"):
    """Validate a decoded header and its tensors; return a :class:`Model`."""
    ctx = _Ctx(source)
    if not isinstance(header, dict):
        ctx.fail("header must be a JSON object")
    if header.get("format") != FORMAT:
        ctx.fail(f"not an {FORMAT} file (format field is {header.get('format')!r})")
    version = header.get("version")
    if version != FORMAT_VERSION:
        ctx.fail(f"unsupported format version {version!r}; this loader reads version "
                 f"{FORMAT_VERSION}")
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
    shape = tuple(shape)
    prev_q = {"scale": in_scale, "zero_point": in_zp}
    used, names = set(), set()
    for i, a in enumerate(layers_h):
        if not isinstance(a, dict):
            ctx.fail(f"layer {i} must be a JSON object, got {type(a).__name__}")
        lname, typ = a.get("name"), a.get("type")
        where = (i, lname, typ)
        if not isinstance(lname, str) or not lname or "/" in lname:
            ctx.fail("layer name must be a non-empty string without '/'", where)
        if lname in names:
            ctx.fail("duplicate layer name", where)
        names.add(lname)
        if typ not in LAYER_TYPES:
            ctx.fail(f"unknown layer type {typ!r}; supported: {', '.join(LAYER_TYPES)}", where)
        for key, lo in _ATTRS[typ].items():
            if key not in a:
                ctx.fail(f"missing attribute {key!r}", where)
            if not _is_int(a[key]) or a[key] < lo:
                ctx.fail(f"attribute {key!r} must be an integer >= {lo}, got {a[key]!r}", where)
        s_x, z_x = _check_quant(ctx, a.get("input"), "input", where)
        s_y, z_y = _check_quant(ctx, a.get("output"), "output", where)
        if (s_x, z_x) != (prev_q["scale"], prev_q["zero_point"]):
            ctx.fail(f"input quantization (scale {s_x!r}, zero_point {z_x}) differs from the "
                     f"previous layer's output (scale {prev_q['scale']!r}, zero_point "
                     f"{prev_q['zero_point']})", where)
        out_shape = _layer_shape(ctx, typ, a, shape, where)
        tensors = {}
        L = Layer(i, lname, typ, a, tensors, shape, out_shape)
        if typ in ("conv2d", "dense"):
            act = a.get("fused_activation", "none")
            if act not in FUSED_ACTIVATIONS:
                ctx.fail(f"fused_activation must be one of {FUSED_ACTIVATIONS}, got {act!r}",
                         where)
            qmin, qmax = a.get("qmin"), a.get("qmax")
            if not (_is_int(qmin) and _is_int(qmax) and -128 <= qmin <= qmax <= 127):
                ctx.fail(f"need integers -128 <= qmin <= qmax <= 127, got qmin={qmin!r}, "
                         f"qmax={qmax!r}", where)
            if typ == "conv2d":
                k_dim, n_dim = a["kernel"] ** 2 * a["in_channels"], a["out_channels"]
            else:
                k_dim, n_dim = a["in_features"], a["out_features"]
            spec = {"weights": (np.int8, (k_dim, n_dim)), "bias": (np.int32, (n_dim,)),
                    "weight_scale": (np.float64, (n_dim,)), "m0": (np.int32, (n_dim,)),
                    "shift": (np.int32, (n_dim,))}
            for t, (dt, shp) in spec.items():
                tensors[t] = _tensor(ctx, arrays, used, lname, t, dt, shp, where)
            _check_range(ctx, tensors["weights"], f"{lname}/weights", -127, 127, where)
            _check_range(ctx, tensors["m0"], f"{lname}/m0", 0, INT32_MAX, where)
            _check_range(ctx, tensors["shift"], f"{lname}/shift", MIN_SHIFT, MAX_SHIFT, where)
            ws = tensors["weight_scale"]
            if not np.all(np.isfinite(ws)) or np.any(ws <= 0):
                ctx.fail(f"tensor '{lname}/weight_scale' must be finite and > 0", where)
            try:
                m0, sh = quantize_multipliers(s_x * ws / s_y)
            except ValueError as e:
                ctx.fail(f"requantization multiplier S_x*S_w/S_y out of range: {e}", where)
            if not (np.array_equal(m0, tensors["m0"]) and np.array_equal(sh, tensors["shift"])):
                bad = int(np.flatnonzero((m0 != tensors["m0"]) | (sh != tensors["shift"]))[0])
                ctx.fail(f"m0/shift of channel {bad} ({tensors['m0'][bad]}, "
                         f"{tensors['shift'][bad]}) do not match quantize_multiplier(S_x * S_w / "
                         f"S_y) = ({m0[bad]}, {sh[bad]})", where)
            try:
                L.gemm_bias = fold_zero_point(tensors["bias"], tensors["weights"], z_x)
            except ValueError as e:
                ctx.fail(str(e), where)
            bound = (128 * np.abs(tensors["weights"].astype(np.int64)).sum(axis=0)
                     + np.abs(L.gemm_bias.astype(np.int64)))
            if bound.max() > INT32_MAX:
                ctx.fail(f"int32 accumulator can overflow (worst case {int(bound.max())}): "
                         "K or the weights are too large", where)
        elif typ in ("maxpool2d", "avgpool2d", "flatten"):
            if (s_y, z_y) != (s_x, z_x):
                ctx.fail("output quantization must equal the input quantization", where)
        elif typ == "activation":
            if not isinstance(a.get("function", ""), str):
                ctx.fail("attribute 'function' must be a string", where)
            tensors["table"] = _tensor(ctx, arrays, used, lname, "table", np.int8, (256,), where)
        elif typ == "softmax":
            if (s_y, z_y) != (SOFTMAX_OUTPUT_SCALE, SOFTMAX_OUTPUT_ZERO_POINT):
                ctx.fail(f"output quantization must be scale 1/256, zero point -128, got "
                         f"scale {s_y!r}, zero_point {z_y}", where)
            p = a.get("params")
            if not isinstance(p, dict):
                ctx.fail("missing 'params' object (golden.softmax.SoftmaxParams fields)", where)
            try:
                sm, fields = _softmax_fields()
                want = sm.softmax_params(s_x)
            except ValueError as e:
                ctx.fail(f"no softmax parameters for input scale {s_x!r}: {e}", where)
            want_ints, want_tensors = softmax_to_file(want, lname)
            for f in fields:
                key = f"{lname}/{f}"
                if key in want_tensors:
                    w = want_tensors[key]
                    got = _tensor(ctx, arrays, used, lname, f, w.dtype, w.shape, where)
                    if not np.array_equal(got, w):
                        ctx.fail(f"tensor {key!r} does not match softmax_params(input scale)",
                                 where)
                else:
                    if f not in p:
                        ctx.fail(f"softmax params lack field {f!r}", where)
                    if not _is_int(p[f]):
                        ctx.fail(f"softmax param {f!r} must be an integer, got {p[f]!r}", where)
                    if p[f] != want_ints[f]:
                        ctx.fail(f"softmax param {f!r} is {p[f]}, but softmax_params(input "
                                 f"scale) gives {want_ints[f]}", where)
            extra = set(p) - set(fields)
            if extra:
                ctx.fail(f"unknown softmax params {sorted(extra)}", where)
            L.softmax_params = want
        model.layers.append(L)
        shape = out_shape
        prev_q = {"scale": s_y, "zero_point": z_y}
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


def load_model(path):
    """Read and validate a model file; :class:`ModelFormatError` on any problem."""
    source = str(path)
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ModelFormatError(f"{source}: a single .npy array, not an .npz archive")
        with f:
            arrays = {k: f[k] for k in f.files}
    except ModelFormatError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ModelFormatError(f"{source}: cannot read as a NumPy .npz archive without "
                               f"pickle: {e}") from None
    hdr = arrays.get("header")
    if hdr is None:
        raise ModelFormatError(f"{source}: no 'header' array")
    if hdr.dtype != np.uint8 or hdr.ndim != 1:
        raise ModelFormatError(f"{source}: 'header' must be a 1-D uint8 array of UTF-8 JSON")
    try:
        header = json.loads(hdr.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{source}: header is not valid UTF-8 JSON: {e}") from None
    return model_from_arrays(header, arrays, source=source)


def layer_stats(model):
    """Per layer: ``(name, type, out_shape, params, macs_per_sample)``.

    ``params`` counts weights and biases; ``macs`` the multiply-accumulates of the GEMM
    (``Ho*Wo*K*N`` for conv2d, ``K*N`` for dense), 0 for the other layers.
    """
    rows = []
    for L in model.layers:
        params = macs = 0
        if L.type in ("conv2d", "dense"):
            k_dim, n_dim = L.tensors["weights"].shape
            params = k_dim * n_dim + n_dim
            m = L.out_shape[0] * L.out_shape[1] if L.type == "conv2d" else 1
            macs = m * k_dim * n_dim
        rows.append((L.name, L.type, L.out_shape, params, macs))
    return rows
