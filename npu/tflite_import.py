"""Import of int8 ``.tflite`` models (TFLite / LiteRT flatbuffers) as :mod:`golden.model`
graphs (format v2), with the quantization taken from the file as it is: nothing is
re-quantized, so the imported model computes what LiteRT's reference kernels compute.

Contract
--------
:func:`import_tflite` reads subgraph 0 of a file with :func:`golden.tflite_io.read_model` and
converts operator by operator (one handler each, :data:`HANDLERS`) into layers named
``op<index>_<operator>`` (e.g. ``op3_conv_2d``); the loader of :mod:`golden.model` then
validates the result, including ``(m0, shift) == quantize_multiplier(S_x * S_w / S_y)``.

==================  =============================================================================
CONV_2D             ``conv2d``; weights OHWI -> (K, N), K ordered (kh, kw, cin); per-channel or
                    per-tensor scales (broadcast); ``rounding`` "double" (SRDHM + RDBPOT)
DEPTHWISE_CONV_2D   ``depthwise_conv2d``; depth multiplier 1 only; weights 1HWC -> (kh*kw, C)
FULLY_CONNECTED     ``dense`` with ``rounding`` "single"; per-tensor weights (N, K) -> (K, N); a
                    ``flatten`` first when its input is (H, W, C)
ADD                 ``add``; params from golden.tflite.add_params; same shapes (no broadcasting)
AVERAGE_POOL_2D     ``avgpool2d`` with ``count`` "valid" (TFLite divides by the taps inside)
MAX_POOL_2D         ``maxpool2d``
RESHAPE             ``flatten`` when it makes (H, W, C) one vector; nothing when it keeps the
                    shape without the batch axis (e.g. (1, 1, 1, C) -> (1, C) after a
                    flatten-free pool is still a flatten); refused otherwise
SOFTMAX             ``softmax`` variant "tflite" with ``beta``
LOGISTIC, TANH      ``activation`` with golden.tflite.lut_table_tflite (TFLite fills its table in
                    float32; the tests compare all 256 entries with LiteRT)
RELU, RELU6         ``activation`` whose table is golden.tflite.relu_tflite of all 256 inputs
==================  =============================================================================

Fused activations (NONE, RELU, RELU6) become ``qmin``/``qmax`` through
golden.tflite.activation_range; on a pooling operator (whose layer has no clamp) an
``activation`` layer holding the clamp follows it.

Padding: SAME is TFLite's rule (golden.tflite.same_padding): the odd extra row/column of a
stride-2 SAME window goes at the bottom/right, so ``padding`` is ``[top, left, bottom, right]``.

Multipliers: TFLite derives every multiplier in double from the float32 scales of the file
(``double(s_x) * double(s_w[c]) / double(s_y)`` for CONV_2D, DEPTHWISE_CONV_2D and
FULLY_CONNECTED); the scales are stored here as the float64 values of those float32 numbers,
so the model format's own check computes the same double and the same (M0, shift).
FULLY_CONNECTED in LiteRT 2.3.0 rounds ``acc * scale`` in double once; ``rounding="single"``
rounds ``acc * M0 * 2**(shift-31)`` once, which is the same integer except when ``acc * scale``
lies within about ``|acc * scale| * 2**-31`` of a half-integer (see golden.quant).

Refused, in one line naming the operator index, its name and the reason
(:class:`TfliteImportError`): other operators, float or int16 (any non-int8) activations,
per-channel activation quantization, dynamic shapes, a batch other than 1, several
subgraphs, inputs or outputs, dilation, depth multipliers other than 1, per-channel or
asymmetric FULLY_CONNECTED weights, weights of -128, non-constant weights, broadcasting ADD,
fused activations other than NONE/RELU/RELU6.

The model's input is the subgraph's one input, int8 ``(1, H, W, C)`` or ``(1, F)``: a sample
is ``(H, W, C)`` (NHWC, TFLite's layout) or ``(F,)``.
"""

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from golden import tflite as g
from golden.model import FORMAT, FORMAT_VERSION, INPUT, load_model, model_from_arrays, save_model
from golden.model import softmax_to_file
from golden.tflite_io import read_model

__all__ = ["TfliteImportError", "import_tflite", "load_tflite", "HANDLERS"]

#: Fused activations of the options tables this importer maps to a clamp.
FUSED = {"NONE": "none", "RELU": "relu", "RELU6": "relu6"}


class TfliteImportError(ValueError):
    """A ``.tflite`` model (or one of its operators) the importer does not take."""


@dataclass
class _Graph:
    """The model being built: header layers, tensors, and what each TFLite tensor became."""
    tfl: object
    source: str
    layers: list = field(default_factory=list)
    arrays: dict = field(default_factory=dict)
    names: dict = field(default_factory=dict)      #: TFLite tensor index -> layer name / INPUT
    shapes: dict = field(default_factory=dict)     #: TFLite tensor index -> sample shape

    def refuse(self, op, reason):
        raise TfliteImportError(f"{self.source}: operator {op.index} {op.op}: {reason}")

    def tensor(self, i):
        if not 0 <= i < len(self.tfl.tensors):      # a corrupt file's operator
            raise TfliteImportError(f"{self.source}: tensor index {i} is out of range (the "
                                    f"model has {len(self.tfl.tensors)} tensors)")
        return self.tfl.tensors[i]

    def quant(self, op, i):
        """``(scale, zero_point)`` of activation tensor ``i``: int8, per tensor."""
        t = self.tensor(i)
        if t.dtype != np.int8:
            self.refuse(op, f"tensor {i} {t.name!r} is {t.dtype.name.upper()}; only int8 "
                        "activations are supported (float and int16 models are not)")
        q = t.quantization
        if q is None:
            self.refuse(op, f"tensor {i} {t.name!r} has no quantization")
        if q.per_channel:
            self.refuse(op, f"tensor {i} {t.name!r} has per-channel quantization; activations "
                        "must be quantized per tensor")
        return q.scalar

    def sample_shape(self, op, i):
        """The shape of activation tensor ``i`` without its batch axis of 1."""
        t = self.tensor(i)
        # The converter marks the batch axis dynamic (-1); it is run at 1, as the shape says.
        if any(d < 0 for d in t.signature[1:]):
            self.refuse(op, f"tensor {i} {t.name!r} has a dynamic shape {t.signature}")
        if len(t.shape) not in (2, 4) or t.shape[0] != 1:
            self.refuse(op, f"tensor {i} {t.name!r} has shape {t.shape}; supported: "
                        "(1, H, W, C) or (1, F) (batch 1)")
        return tuple(t.shape[1:])

    def read(self, op, i):
        """The layer name holding TFLite tensor ``i`` (an input of ``op``)."""
        if i not in self.names:
            self.refuse(op, f"reads tensor {i} {self.tensor(i).name!r}, which no supported "
                        "operator computed")
        return self.names[i]

    def const(self, op, i, what):
        t = self.tensor(i)
        if t.data is None:
            self.refuse(op, f"{what} (tensor {i} {t.name!r}) is not constant")
        return t.data

    def add(self, op, typ, inputs, out_tensor, suffix=None, **attrs):
        """Append a layer reading ``inputs`` (layer names) that computes TFLite tensor
        ``out_tensor`` (its quantization is the layer's output's); returns its name."""
        name = f"op{op.index}_{suffix or op.op.lower()}"
        s, z = self.quant(op, out_tensor)
        self.layers.append({"name": name, "type": typ, "inputs": list(inputs),
                            "output": {"scale": s, "zero_point": z}, **attrs})
        self.names[out_tensor] = name
        return name

    def tensors(self, name, **arrays):
        for k, v in arrays.items():
            self.arrays[f"{name}/{k}"] = v


# ---- Operator handlers -----------------------------------------------------------------------

def _inputs(gr, op, count):
    """The first ``count`` inputs; a missing optional last input (bias) is -1."""
    ins = list(op.inputs) + [-1] * (count - len(op.inputs))
    if len(op.inputs) < count - 1 or len(op.inputs) > count:
        gr.refuse(op, f"has {len(op.inputs)} inputs, expected {count - 1} or {count}")
    return ins[:count]


def _fused(gr, op, s_y, z_y):
    """``(name, qmin, qmax)`` of the operator's fused activation."""
    act = op.options.get("fused_activation_function", "NONE")
    if act not in FUSED:
        gr.refuse(op, f"fused activation {act} is not supported (supported: "
                  f"{', '.join(FUSED)})")
    lo, hi = g.activation_range(act, s_y, z_y)
    return FUSED[act], lo, hi


def _window(gr, op, in_shape, kh, kw):
    """The model format's window attributes of a conv or pool operator, and ``(Ho, Wo)``."""
    o = op.options
    if o.get("dilation_h_factor", 1) != 1 or o.get("dilation_w_factor", 1) != 1:
        gr.refuse(op, f"dilation {o['dilation_h_factor']}x{o['dilation_w_factor']} is not "
                  "supported (only 1)")
    sy, sx, padding = o["stride_h"], o["stride_w"], o["padding"]
    if padding not in ("SAME", "VALID"):
        gr.refuse(op, f"padding {padding} is not supported")
    h, w = in_shape[0], in_shape[1]
    try:
        top, out_h = g.same_padding(h, kh, sy, padding)
        left, out_w = g.same_padding(w, kw, sx, padding)
    except ValueError as e:
        gr.refuse(op, str(e))
    bottom = max((out_h - 1) * sy + kh - h - top, 0)
    right = max((out_w - 1) * sx + kw - w - left, 0)
    return {"kernel": [kh, kw], "stride": [sy, sx],
            "padding": [top, left, bottom, right]}, (out_h, out_w)


def _check_output_shape(gr, op, want):
    got = gr.sample_shape(op, op.outputs[0])
    if got != tuple(want):
        gr.refuse(op, f"output tensor has shape {got}, but the operator computes {tuple(want)}")


def _weight_quant(gr, op, wi, channels, axis):
    """float64 per-channel scales (a per-tensor scale broadcast) of symmetric int8 weights."""
    t = gr.tensor(wi)
    if t.dtype != np.int8:
        gr.refuse(op, f"weights are {t.dtype.name.upper()}; only int8 weights are supported")
    q = t.quantization
    if q is None:
        gr.refuse(op, "weights have no quantization")
    if np.any(q.zero_point != 0):
        gr.refuse(op, "weights have a non-zero zero point (int8 weights must be symmetric)")
    if q.per_channel and (q.axis != axis or q.scale.size != channels):
        gr.refuse(op, f"per-channel weight scales along axis {q.axis} ({q.scale.size}), "
                  f"expected {channels} along axis {axis}")
    if t.data.min(initial=0) < -127:
        gr.refuse(op, "weights hold -128; int8 weights must be in [-127, 127]")
    return np.broadcast_to(q.scale, (channels,)).astype(np.float64)


def _bias(gr, op, bi, channels):
    if bi < 0:
        return np.zeros(channels, np.int32)
    b = gr.const(op, bi, "the bias")
    if b.dtype != np.int32 or b.shape != (channels,):
        gr.refuse(op, f"bias is {b.dtype} {b.shape}; expected int32 ({channels},)")
    return b.astype(np.int32)


def _gemm_layer(gr, op, typ, src, weights, bias, scales, extra, rounding):
    """A conv2d / depthwise_conv2d / dense layer: (M0, shift) as TFLite derives them from the
    file's float32 scales (golden.tflite.conv_multipliers); the model format checks them
    against its own quantize_multiplier(S_x * S_w / S_y) on load."""
    xi, yi = op.inputs[0], op.outputs[0]
    s_x, _ = gr.quant(op, xi)
    s_y, z_y = gr.quant(op, yi)
    act, qmin, qmax = _fused(gr, op, s_y, z_y)
    try:
        m0, shift = g.conv_multipliers(s_x, scales, s_y)
    except ValueError as e:
        gr.refuse(op, f"requantization multiplier S_x*S_w/S_y out of range: {e}")
    name = gr.add(op, typ, [src], yi, fused_activation=act, qmin=int(qmin), qmax=int(qmax),
                  rounding=rounding, **extra)
    gr.tensors(name, weights=np.ascontiguousarray(weights, np.int8), bias=bias,
               weight_scale=scales, m0=m0, shift=shift)


def _conv_2d(gr, op):
    xi, wi, bi = _inputs(gr, op, 3)
    src, shape = gr.read(op, xi), gr.shapes[xi]
    filters = gr.const(op, wi, "the filter")
    if len(shape) != 3 or filters.ndim != 4 or filters.shape[3] != shape[2]:
        gr.refuse(op, f"filter {filters.shape} (OHWI) does not fit the input {shape}")
    cout, kh, kw, cin = filters.shape
    win, (ho, wo) = _window(gr, op, shape, kh, kw)
    _check_output_shape(gr, op, (ho, wo, cout))
    scales = _weight_quant(gr, op, wi, cout, 0)
    _gemm_layer(gr, op, "conv2d", src, filters.reshape(cout, kh * kw * cin).T,
                _bias(gr, op, bi, cout), scales, {**win, "in_channels": cin,
                                                   "out_channels": cout}, "double")
    gr.shapes[op.outputs[0]] = (ho, wo, cout)


def _depthwise_conv_2d(gr, op):
    xi, wi, bi = _inputs(gr, op, 3)
    src, shape = gr.read(op, xi), gr.shapes[xi]
    filters = gr.const(op, wi, "the filter")
    if op.options.get("depth_multiplier", 1) not in (0, 1) or len(shape) != 3 or \
            filters.ndim != 4 or filters.shape[0] != 1 or filters.shape[3] != shape[2]:
        gr.refuse(op, f"depth multiplier {op.options.get('depth_multiplier')} with filter "
                  f"{filters.shape} on input {shape}: only a depth multiplier of 1 is supported")
    _, kh, kw, c = filters.shape
    win, (ho, wo) = _window(gr, op, shape, kh, kw)
    _check_output_shape(gr, op, (ho, wo, c))
    scales = _weight_quant(gr, op, wi, c, 3)
    _gemm_layer(gr, op, "depthwise_conv2d", src, filters.reshape(kh * kw, c),
                _bias(gr, op, bi, c), scales, {**win, "channels": c}, "double")
    gr.shapes[op.outputs[0]] = (ho, wo, c)


def _flatten(gr, op, xi, suffix="flatten"):
    """A ``flatten`` of TFLite tensor ``xi``'s layer; returns ``(name, features)``."""
    shape = gr.shapes[xi]
    src = gr.read(op, xi)
    if len(shape) == 1:
        return src, shape[0]
    name = f"op{op.index}_{suffix}"
    s, z = gr.quant(op, xi)
    gr.layers.append({"name": name, "type": "flatten", "inputs": [src],
                      "output": {"scale": s, "zero_point": z}})
    return name, int(np.prod(shape))


def _fully_connected(gr, op):
    xi, wi, bi = _inputs(gr, op, 3)
    o = op.options
    if o.get("weights_format", 0) != 0:
        gr.refuse(op, f"weights format {o['weights_format']} is not supported (only DEFAULT)")
    weights = gr.const(op, wi, "the weights")
    if weights.ndim != 2:
        gr.refuse(op, f"weights have shape {weights.shape}; expected (N, K)")
    n, k = weights.shape
    if gr.tensor(wi).quantization is not None and gr.tensor(wi).quantization.per_channel:
        gr.refuse(op, "per-channel weights are not supported (only per-tensor)")
    src, features = _flatten(gr, op, xi)
    if features != k:
        gr.refuse(op, f"input of {features} values is not one row of K={k} (batch 1 only)")
    out = gr.sample_shape(op, op.outputs[0])
    if out != (n,):
        gr.refuse(op, f"output shape {out} (keep_num_dims={o.get('keep_num_dims')}) is not "
                  f"({n},)")
    scales = _weight_quant(gr, op, wi, n, 0)
    _gemm_layer(gr, op, "dense", src, weights.T, _bias(gr, op, bi, n), scales,
                {"in_features": k, "out_features": n}, "single")
    gr.shapes[op.outputs[0]] = (n,)


def _add(gr, op):
    if len(op.inputs) != 2:
        gr.refuse(op, f"has {len(op.inputs)} inputs, expected 2")
    a, b = op.inputs
    if gr.shapes.get(a) != gr.shapes.get(b) or gr.tensor(a).shape != gr.tensor(b).shape:
        gr.refuse(op, f"inputs of shapes {gr.tensor(a).shape} and {gr.tensor(b).shape}: "
                  "broadcasting is not supported")
    yi = op.outputs[0]
    s_y, z_y = gr.quant(op, yi)
    act, qmin, qmax = _fused(gr, op, s_y, z_y)
    params = g.add_params(*gr.quant(op, a), *gr.quant(op, b), s_y, z_y)
    gr.add(op, "add", [gr.read(op, a), gr.read(op, b)], yi, fused_activation=act,
           qmin=int(qmin), qmax=int(qmax),
           params={k: int(v) for k, v in vars(params).items()})
    gr.shapes[yi] = gr.shapes[a]


def _clamp_table(qmin, qmax):
    return np.clip(np.arange(-128, 128), qmin, qmax).astype(np.int8)


def _pool(gr, op):
    xi, yi = op.inputs[0], op.outputs[0]
    shape = gr.shapes[xi]
    if len(shape) != 3:
        gr.refuse(op, f"input shape {shape} is not (H, W, C)")
    if gr.quant(op, xi) != gr.quant(op, yi):
        gr.refuse(op, "output quantization differs from the input's")
    kh, kw = op.options["filter_height"], op.options["filter_width"]
    win, (ho, wo) = _window(gr, op, shape, kh, kw)
    _check_output_shape(gr, op, (ho, wo, shape[2]))
    s_y, z_y = gr.quant(op, yi)
    act, qmin, qmax = _fused(gr, op, s_y, z_y)
    extra = {"count": "valid"} if op.op == "AVERAGE_POOL_2D" else {}
    typ = "avgpool2d" if op.op == "AVERAGE_POOL_2D" else "maxpool2d"
    name = gr.add(op, typ, [gr.read(op, xi)], yi, **win, **extra)
    if (qmin, qmax) != (-128, 127):      # the pooling layer has no clamp: a table does it
        clamp = gr.add(op, "activation", [name], yi, suffix=act, function=f"clamp_{act}")
        gr.tensors(clamp, table=_clamp_table(qmin, qmax))
    gr.shapes[yi] = (ho, wo, shape[2])


def _reshape(gr, op):
    xi, yi = op.inputs[0], op.outputs[0]
    shape, out = gr.shapes[xi], gr.sample_shape(op, yi)
    if gr.quant(op, xi) != gr.quant(op, yi):
        gr.refuse(op, "output quantization differs from the input's")
    if out == shape:                             # only the batch axis moved: nothing to do
        gr.names[yi] = gr.read(op, xi)
    elif len(out) == 1 and out[0] == int(np.prod(shape)):
        gr.names[yi], _ = _flatten(gr, op, xi, "reshape")
    else:
        gr.refuse(op, f"reshape of {shape} to {out} is not a flatten (only (H, W, C) -> "
                  "(H*W*C,) is supported)")
    gr.shapes[yi] = out


def _softmax(gr, op):
    xi, yi = op.inputs[0], op.outputs[0]
    beta = float(op.options.get("beta", 1.0))
    s_x, _ = gr.quant(op, xi)
    if gr.quant(op, yi) != (1.0 / 256, -128):
        gr.refuse(op, f"output quantization {gr.quant(op, yi)} is not TFLite's int8 softmax "
                  "output (scale 1/256, zero point -128)")
    try:
        params = g.softmax_params(s_x, beta)
    except ValueError as e:
        gr.refuse(op, str(e))
    name = f"op{op.index}_softmax"
    ints, tensors = softmax_to_file(params, name)
    gr.add(op, "softmax", [gr.read(op, xi)], yi, variant="tflite", beta=beta, params=ints)
    gr.arrays.update(tensors)
    gr.shapes[yi] = gr.shapes[xi]


def _table_layer(gr, op, table):
    xi, yi = op.inputs[0], op.outputs[0]
    name = gr.add(op, "activation", [gr.read(op, xi)], yi, function=op.op.lower())
    gr.tensors(name, table=np.asarray(table, np.int8))
    gr.shapes[yi] = gr.shapes[xi]


def _logistic_tanh(gr, op):
    (s_x, z_x), (s_y, z_y) = gr.quant(op, op.inputs[0]), gr.quant(op, op.outputs[0])
    _table_layer(gr, op, g.lut_table_tflite(op.op, s_x, z_x, s_y, z_y))


def _relu(gr, op):
    (s_x, z_x), (s_y, z_y) = gr.quant(op, op.inputs[0]), gr.quant(op, op.outputs[0])
    every_input = np.arange(-128, 128, dtype=np.int8)
    _table_layer(gr, op, g.relu_tflite(every_input, s_x, z_x, s_y, z_y,
                                       upper=6.0 if op.op == "RELU6" else None))


#: TFLite builtin operator -> handler(graph, operator).
HANDLERS = {"CONV_2D": _conv_2d, "DEPTHWISE_CONV_2D": _depthwise_conv_2d,
            "FULLY_CONNECTED": _fully_connected, "ADD": _add, "AVERAGE_POOL_2D": _pool,
            "MAX_POOL_2D": _pool, "RESHAPE": _reshape, "SOFTMAX": _softmax,
            "LOGISTIC": _logistic_tanh, "TANH": _logistic_tanh, "RELU": _relu, "RELU6": _relu}


# ---- The model -------------------------------------------------------------------------------

def _check_graph(gr):
    tfl = gr.tfl
    where = gr.source
    if tfl.subgraph_count != 1:
        raise TfliteImportError(f"{where}: {tfl.subgraph_count} subgraphs; only models with one "
                                "subgraph are supported")
    if len(tfl.inputs) != 1 or len(tfl.outputs) != 1:
        raise TfliteImportError(f"{where}: {len(tfl.inputs)} inputs and {len(tfl.outputs)} "
                                "outputs; only one of each is supported")
    if not tfl.operators:
        raise TfliteImportError(f"{where}: the model has no operator")


def _header(gr, name):
    tfl, (xi,) = gr.tfl, gr.tfl.inputs
    first = next((op for op in tfl.operators if xi in op.inputs), tfl.operators[0])
    shape = gr.sample_shape(first, xi)
    s, z = gr.quant(first, xi)
    gr.names[xi], gr.shapes[xi] = INPUT, shape
    return {"format": FORMAT, "version": FORMAT_VERSION, "name": name,
            "input": {"shape": list(shape), "scale": s, "zero_point": z}}


def import_tflite(model, name=None):
    """A :class:`golden.model.Model` of an int8 ``.tflite`` model (path or bytes);
    :class:`TfliteImportError` (one line naming the operator) for anything unsupported."""
    source = "<bytes>" if isinstance(model, (bytes, bytearray)) else str(model)
    try:
        tfl = read_model(model)
    except (OSError, ValueError) as e:
        raise TfliteImportError(f"{source}: cannot read as a .tflite model: {e}") from None
    except Exception as e:          # the flatbuffer reader fails in many ways on bad bytes
        raise TfliteImportError(f"{source}: not a readable .tflite flatbuffer "
                                f"({type(e).__name__}: {e})") from None
    gr = _Graph(tfl, source)
    _check_graph(gr)
    if name is None:
        name = Path(source).stem if source != "<bytes>" else "tflite_model"
    header = _header(gr, name)
    for op in tfl.operators:
        handler = HANDLERS.get(op.op)
        if handler is None:
            gr.refuse(op, f"operator not supported (supported: {', '.join(HANDLERS)})")
        if len(op.outputs) != 1:
            gr.refuse(op, f"has {len(op.outputs)} outputs, expected 1")
        try:
            handler(gr, op)
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            # options or inputs a valid model has: the flatbuffer is corrupt
            gr.refuse(op, f"malformed ({type(e).__name__}: {e}); the file may be corrupt")
    (yi,) = tfl.outputs
    out = gr.names.get(yi)
    if out is None or out == INPUT:
        raise TfliteImportError(f"{source}: the output tensor {yi} is not computed by any "
                                "operator")
    header.update(layers=gr.layers, output=out)
    arrays = {"header": np.zeros(0, np.uint8), **gr.arrays}
    return model_from_arrays(header, arrays, source=source)


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_tflite(path, cache_dir=None):
    """The CLI's helper: path of the imported model (:mod:`golden.model` ``.npz``) of the
    ``.tflite`` file ``path``, written once per file content under ``cache_dir`` (default:
    ``<system temp>/npu-tflite``), so the user's model directory is never written to."""
    path = Path(path)
    if not path.is_file():
        raise TfliteImportError(f"{path}: no such file")
    cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "npu-tflite"
    out = cache / f"{path.stem}-{_sha256(path)[:16]}.int8.npz"
    if out.exists():
        load_model(out)
        return out
    model = import_tflite(path)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    save_model(tmp, model)
    tmp.replace(out)
    return out
