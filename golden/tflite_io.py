"""LiteRT (TFLite) tooling: read ``.tflite`` files, run them on TFLite's reference kernels,
build small int8 models in memory.

Four jobs; the first three through the ``ai-edge-litert`` package (the ``tflite`` extra; pinned
in requirements.lock):

* :func:`read_model`: a ``.tflite`` flatbuffer (path or bytes) as plain Python objects, read
  with ``ai_edge_litert.schema_py_generated``: operators with their builtin options, tensors with
  shape, dtype, quantization (per tensor or per channel) and constant data.
* :class:`ReferenceRunner` / :func:`run_model`: the model on LiteRT's interpreter with
  ``OpResolverType.BUILTIN_REF`` (TFLite's reference kernels, the arithmetic the golden
  functions of :mod:`golden.tflite` are checked against) and
  ``experimental_preserve_all_tensors=True``, returning every tensor after the run.
* :class:`ModelBuilder` and the ``*_model`` helpers: single-op (or few-op) int8 models built
  with the flatbuffer object API of the same schema, so that tests can compare a golden
  function with LiteRT on random cases without any model file.
* :func:`golden_operator` / :func:`run_golden`: a read model's operators through the golden
  functions of :mod:`golden.tflite`, one at a time (fed LiteRT's tensors) or end to end.

Quantization follows the file: ``real = scale * (q - zero_point)``; scales are float32 in the
flatbuffer and are returned as float64 copies of those float32 values (what TFLite's Prepare
functions widen to ``double`` before deriving multipliers).
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import tflite as g
from .tflite import output_size, same_padding

__all__ = [
    "Quantization", "Tensor", "Operator", "TfliteModel", "read_model", "ReferenceRunner",
    "run_model", "ModelBuilder", "same_padding", "output_size", "golden_operator",
    "run_golden", "GOLDEN_OPS",
    "conv2d_model", "depthwise_conv2d_model", "fully_connected_model", "add_model",
    "pool2d_model", "reshape_model", "softmax_model", "activation_model",
]

#: Operator versions written by :class:`ModelBuilder` (the int8 versions the TFLite converter
#: writes; the reference resolver registers them).
OP_VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "ADD": 2,
               "AVERAGE_POOL_2D": 2, "MAX_POOL_2D": 2, "RESHAPE": 1, "SOFTMAX": 2,
               "LOGISTIC": 2, "TANH": 2, "RELU": 2, "RELU6": 2}

#: Builtin options table of each operator the builder writes (None: the operator has none).
OP_OPTIONS = {"CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
              "FULLY_CONNECTED": "FullyConnectedOptions", "ADD": "AddOptions",
              "AVERAGE_POOL_2D": "Pool2DOptions", "MAX_POOL_2D": "Pool2DOptions",
              "RESHAPE": "ReshapeOptions", "SOFTMAX": "SoftmaxOptions",
              "LOGISTIC": None, "TANH": None, "RELU": None, "RELU6": None}

_NUMPY_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32,
                "UINT8": np.uint8, "INT64": np.int64, "BOOL": np.bool_, "INT16": np.int16,
                "INT8": np.int8, "FLOAT64": np.float64, "UINT32": np.uint32,
                "UINT16": np.uint16, "UINT64": np.uint64}

#: Option fields whose integer value is an enum of the schema, shown by name.
_ENUM_FIELDS = {"padding": "Padding", "fused_activation_function": "ActivationFunctionType"}


def _schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as e:                       # the optional extra is missing
        raise ImportError("golden.tflite_io needs ai-edge-litert: "
                          "pip install 'int8-npu[tflite]' (or `make venv`)") from e
    return schema_py_generated


def _enum_names(enum_class):
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}


def _snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# --------------------------------------------------------------------------------------------
# Reading

@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: ``real = scale[c] * (q - zero_point[c])``.

    ``scale`` and ``zero_point`` have one entry (per tensor) or one per index of ``axis``
    (per channel)."""
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0

    @property
    def per_channel(self):
        return self.scale.size > 1

    @property
    def scalar(self):
        """``(scale, zero_point)`` of a per-tensor quantization; ``ValueError`` otherwise."""
        if self.per_channel:
            raise ValueError(f"per-channel quantization ({self.scale.size} scales) has no "
                             "single scale")
        return float(self.scale[0]), int(self.zero_point[0])


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple
    dtype: np.dtype
    quantization: Quantization = None
    data: np.ndarray = None          #: constant contents (weights, biases), else None
    #: the shape with -1 for every dynamic dimension (``shape_signature``; ``shape`` if absent)
    signature: tuple = None


@dataclass
class Operator:
    index: int
    op: str                          #: builtin operator name, e.g. "CONV_2D"
    inputs: tuple                    #: tensor indices, -1 for an omitted optional input
    outputs: tuple
    options: dict = field(default_factory=dict)   #: snake_case fields, enums by name


@dataclass
class TfliteModel:
    tensors: list
    operators: list
    inputs: tuple
    outputs: tuple
    #: subgraphs in the file (only subgraph 0 is read)
    subgraph_count: int = 1

    def ops(self, name):
        """The operators of one builtin type, in execution order."""
        return [o for o in self.operators if o.op == name]


def _quantization(q):
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    scale = np.asarray(q.scale, np.float32).astype(np.float64)
    zp = np.zeros(scale.shape, np.int64) if q.zeroPoint is None else \
        np.asarray(q.zeroPoint, np.int64)
    return Quantization(scale, zp, int(q.quantizedDimension))


def _buffer_bytes(buf, raw):
    if buf is None:
        return None
    if buf.data is not None and len(buf.data):
        return np.asarray(buf.data, np.uint8).tobytes()
    if buf.offset > 1:                              # large models keep data after the flatbuffer
        return raw[buf.offset:buf.offset + buf.size]
    return None


def _options(op):
    if op.builtinOptions is None:
        return {}
    schema = _schema()
    out = {}
    for key, value in vars(op.builtinOptions).items():
        name = _snake(key)
        if name in _ENUM_FIELDS:
            value = _enum_names(getattr(schema, _ENUM_FIELDS[name]))[value]
        out[name] = value
    return out


def read_model(model):
    """Parse a ``.tflite`` model (path or bytes) into a :class:`TfliteModel` (subgraph 0)."""
    schema = _schema()
    raw = bytes(model) if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    m = schema.ModelT.InitFromPackedBuf(bytearray(raw), 0)
    if not m.subgraphs:
        raise ValueError("the model has no subgraph")
    sg = m.subgraphs[0]
    type_names = _enum_names(schema.TensorType)
    op_names = _enum_names(schema.BuiltinOperator)
    tensors = []
    for i, t in enumerate(sg.tensors):
        type_name = type_names[t.type]
        dtype = np.dtype(_NUMPY_TYPES.get(type_name, np.uint8))
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        data = _buffer_bytes(m.buffers[t.buffer] if m.buffers else None, raw)
        if data is not None:
            data = np.frombuffer(data, dtype).reshape(shape).copy()
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        signature = shape if t.shapeSignature is None or not len(t.shapeSignature) else \
            tuple(int(d) for d in t.shapeSignature)
        tensors.append(Tensor(i, name, shape, dtype, _quantization(t.quantization), data,
                              signature))
    operators = []
    for i, op in enumerate(sg.operators):
        code = m.operatorCodes[op.opcodeIndex]
        # Old files keep the code in the deprecated int8 field only; TFLite takes the larger.
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        operators.append(Operator(i, op_names[builtin], tuple(int(x) for x in op.inputs),
                                  tuple(int(x) for x in op.outputs), _options(op)))
    return TfliteModel(tensors, operators, tuple(int(x) for x in sg.inputs),
                       tuple(int(x) for x in sg.outputs), len(m.subgraphs))


# --------------------------------------------------------------------------------------------
# Running on the reference kernels

class ReferenceRunner:
    """One LiteRT interpreter on TFLite's reference kernels, kept for repeated runs."""

    def __init__(self, model):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
        kwargs = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) \
            else {"model_path": str(model)}
        self.interpreter = Interpreter(
            **kwargs, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
            experimental_preserve_all_tensors=True)
        self.interpreter.allocate_tensors()
        self.input_indices = [d["index"] for d in self.interpreter.get_input_details()]
        self.tensor_indices = [d["index"] for d in self.interpreter.get_tensor_details()]

    def run(self, *inputs):
        """Invoke once; returns ``{tensor index: array copy}`` for every tensor it holds."""
        if len(inputs) != len(self.input_indices):
            raise ValueError(f"the model takes {len(self.input_indices)} inputs, "
                             f"got {len(inputs)}")
        for index, x in zip(self.input_indices, inputs):
            self.interpreter.set_tensor(index, np.asarray(x))
        self.interpreter.invoke()
        tensors = {}
        for index in self.tensor_indices:
            try:
                tensors[index] = np.array(self.interpreter.get_tensor(index))
            except ValueError:                     # a tensor without data (e.g. scratch)
                pass
        return tensors


def run_model(model, *inputs):
    """Run ``model`` (path or bytes) once on the reference kernels; every tensor by index."""
    return ReferenceRunner(model).run(*inputs)


# --------------------------------------------------------------------------------------------
# Building models

class ModelBuilder:
    """A single-subgraph TFLite model assembled tensor by tensor, operator by operator."""

    def __init__(self):
        self.schema = _schema()
        self.buffers = [self.schema.BufferT()]     # buffer 0: the empty buffer, by convention
        self.tensors = []
        self.operators = []
        self.opcodes = []

    def tensor(self, shape, dtype=np.int8, scale=None, zero_point=0, axis=0, data=None,
               name=None):
        """Add a tensor; ``scale`` (scalar or per-channel sequence) makes it quantized,
        ``data`` makes it constant. Returns its index."""
        s = self.schema
        t = s.TensorT()
        t.shape = np.asarray(shape, np.int32)
        dtype = np.dtype(dtype)
        type_name = next(k for k, v in _NUMPY_TYPES.items() if np.dtype(v) == dtype)
        t.type = getattr(s.TensorType, type_name)
        t.name = name or f"t{len(self.tensors)}"
        if scale is not None:
            scales = np.atleast_1d(np.asarray(scale, np.float32))
            zps = np.broadcast_to(np.asarray(zero_point, np.int64), scales.shape)
            q = s.QuantizationParametersT()
            q.scale = scales.copy()
            q.zeroPoint = zps.copy()
            q.quantizedDimension = int(axis)
            t.quantization = q
        if data is not None:
            arr = np.ascontiguousarray(np.asarray(data, dtype).reshape(tuple(shape)))
            b = s.BufferT()
            b.data = np.frombuffer(arr.tobytes(), np.uint8).copy()
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def _opcode(self, op):
        code = getattr(self.schema.BuiltinOperator, op)
        for i, c in enumerate(self.opcodes):
            if c.builtinCode == code:
                return i
        c = self.schema.OperatorCodeT()
        c.builtinCode = code
        c.deprecatedBuiltinCode = min(code, 127)
        c.version = OP_VERSIONS.get(op, 1)
        self.opcodes.append(c)
        return len(self.opcodes) - 1

    def operator(self, op, inputs, outputs, **options):
        """Add a builtin operator; ``options`` are fields of its options table in snake_case
        (``padding="SAME"``, ``fused_activation_function="RELU"``, ``stride_w=2``, ...)."""
        s = self.schema
        o = s.OperatorT()
        o.opcodeIndex = self._opcode(op)
        o.inputs = np.asarray(inputs, np.int32)
        o.outputs = np.asarray(outputs, np.int32)
        table = OP_OPTIONS.get(op)
        if table is not None:
            opt = getattr(s, table + "T")()
            known = {_snake(k): k for k in vars(opt)}
            for key, value in options.items():
                if key not in known:
                    raise ValueError(f"{op} has no option {key!r} (known: {sorted(known)})")
                if key in _ENUM_FIELDS and isinstance(value, str):
                    value = getattr(getattr(s, _ENUM_FIELDS[key]), value)
                setattr(opt, known[key], value)
            o.builtinOptionsType = getattr(s.BuiltinOptions, table)
            o.builtinOptions = opt
        elif options:
            raise ValueError(f"{op} takes no options, got {sorted(options)}")
        self.operators.append(o)

    def build(self, inputs, outputs):
        """The model as ``.tflite`` bytes, with the given subgraph inputs and outputs."""
        import flatbuffers
        s = self.schema
        sg = s.SubGraphT()
        sg.tensors = self.tensors
        sg.operators = self.operators
        sg.inputs = np.asarray(inputs, np.int32)
        sg.outputs = np.asarray(outputs, np.int32)
        sg.name = "main"
        m = s.ModelT()
        m.version = 3
        m.operatorCodes = self.opcodes
        m.subgraphs = [sg]
        m.buffers = self.buffers
        m.description = "int8-npu golden.tflite_io"
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def _q(q):
    """``(scale, zero_point)`` -> keyword arguments of :meth:`ModelBuilder.tensor`."""
    scale, zp = q
    return {"scale": scale, "zero_point": zp}


def _conv_like(op, x_shape, x_q, filters, filter_scales, bias, y_q, stride, padding,
               activation, filter_axis, out_channels, **extra):
    n, h, w, _ = x_shape
    kh, kw = filters.shape[1], filters.shape[2]
    sy, sx = stride
    oh, ow = output_size(h, kh, sy, padding), output_size(w, kw, sx, padding)
    filter_scales = np.asarray(filter_scales, np.float32)
    b = ModelBuilder()
    x = b.tensor(x_shape, **_q(x_q), name="input")
    f = b.tensor(filters.shape, scale=filter_scales, zero_point=0, axis=filter_axis,
                 data=filters, name="filter")
    # Bias scale s_x * s_w[c] (float32), as the converter writes it; TFLite checks it.
    bias_scales = (np.float64(np.float32(x_q[0])) * filter_scales.astype(np.float64))
    bs = b.tensor((out_channels,), np.int32, scale=bias_scales, zero_point=0, data=bias,
                  name="bias")
    y = b.tensor((n, oh, ow, out_channels), **_q(y_q), name="output")
    b.operator(op, [x, f, bs], [y], padding=padding, stride_h=sy, stride_w=sx,
               fused_activation_function=activation, **extra)
    return b.build([x], [y])


def conv2d_model(x_shape, x_q, filters, filter_scales, bias, y_q, stride=(1, 1),
                 padding="SAME", activation="NONE"):
    """CONV_2D: ``filters`` int8 ``(Cout, KH, KW, Cin)`` with per-channel (or one) scales,
    ``bias`` int32 ``(Cout,)``; ``x_q``/``y_q`` are ``(scale, zero_point)``."""
    filters = np.asarray(filters, np.int8)
    return _conv_like("CONV_2D", x_shape, x_q, filters, filter_scales, bias, y_q, stride,
                      padding, activation, 0, filters.shape[0])


def depthwise_conv2d_model(x_shape, x_q, filters, filter_scales, bias, y_q, stride=(1, 1),
                           padding="SAME", activation="NONE"):
    """DEPTHWISE_CONV_2D, depth multiplier 1: ``filters`` int8 ``(1, KH, KW, C)``."""
    filters = np.asarray(filters, np.int8)
    return _conv_like("DEPTHWISE_CONV_2D", x_shape, x_q, filters, filter_scales, bias, y_q,
                      stride, padding, activation, 3, filters.shape[3], depth_multiplier=1)


def fully_connected_model(x_shape, x_q, weights, weight_scale, bias, y_q, activation="NONE"):
    """FULLY_CONNECTED: ``x`` ``(batch, K)``, ``weights`` int8 ``(N, K)`` per tensor."""
    weights = np.asarray(weights, np.int8)
    n_out = weights.shape[0]
    b = ModelBuilder()
    x = b.tensor(x_shape, **_q(x_q), name="input")
    wt = b.tensor(weights.shape, scale=weight_scale, zero_point=0, data=weights, name="weights")
    bias_scale = np.float64(np.float32(x_q[0])) * np.float64(np.float32(weight_scale))
    bs = b.tensor((n_out,), np.int32, scale=bias_scale, zero_point=0, data=bias, name="bias")
    y = b.tensor((x_shape[0], n_out), **_q(y_q), name="output")
    b.operator("FULLY_CONNECTED", [x, wt, bs], [y], fused_activation_function=activation)
    return b.build([x], [y])


def add_model(shape, q1, q2, y_q, activation="NONE"):
    """ADD of two int8 inputs of one shape."""
    b = ModelBuilder()
    x1 = b.tensor(shape, **_q(q1), name="input1")
    x2 = b.tensor(shape, **_q(q2), name="input2")
    y = b.tensor(shape, **_q(y_q), name="output")
    b.operator("ADD", [x1, x2], [y], fused_activation_function=activation)
    return b.build([x1, x2], [y])


def pool2d_model(op, x_shape, q, filter_hw, stride, padding="VALID", activation="NONE"):
    """AVERAGE_POOL_2D or MAX_POOL_2D; the output keeps the input quantization ``q``."""
    n, h, w, c = x_shape
    (fh, fw), (sy, sx) = filter_hw, stride
    oh, ow = output_size(h, fh, sy, padding), output_size(w, fw, sx, padding)
    b = ModelBuilder()
    x = b.tensor(x_shape, **_q(q), name="input")
    y = b.tensor((n, oh, ow, c), **_q(q), name="output")
    b.operator(op, [x], [y], padding=padding, stride_h=sy, stride_w=sx, filter_height=fh,
               filter_width=fw, fused_activation_function=activation)
    return b.build([x], [y])


def reshape_model(x_shape, y_shape, q):
    """RESHAPE with its shape as a constant int32 input."""
    b = ModelBuilder()
    x = b.tensor(x_shape, **_q(q), name="input")
    s = b.tensor((len(y_shape),), np.int32, data=np.asarray(y_shape, np.int32), name="shape")
    y = b.tensor(y_shape, **_q(q), name="output")
    b.operator("RESHAPE", [x, s], [y], new_shape=np.asarray(y_shape, np.int32))
    return b.build([x], [y])


def softmax_model(shape, x_q, beta=1.0):
    """SOFTMAX over the last axis; output int8 at scale 1/256, zero point -128 (TFLite's)."""
    b = ModelBuilder()
    x = b.tensor(shape, **_q(x_q), name="input")
    y = b.tensor(shape, scale=1.0 / 256, zero_point=-128, name="output")
    b.operator("SOFTMAX", [x], [y], beta=float(beta))
    return b.build([x], [y])


def activation_model(op, shape, x_q, y_q):
    """LOGISTIC, TANH, RELU or RELU6 on int8 (TFLite wants LOGISTIC's output at (1/256,
    -128) and TANH's at (1/128, 0))."""
    b = ModelBuilder()
    x = b.tensor(shape, **_q(x_q), name="input")
    y = b.tensor(shape, **_q(y_q), name="output")
    b.operator(op, [x], [y])
    return b.build([x], [y])


# --------------------------------------------------------------------------------------------
# Golden evaluation of a read model

def _window(x_shape, kh, kw, options):
    """``(sy, sx, pad_top, pad_left, out_h, out_w)`` of a conv or pool operator."""
    if options.get("dilation_h_factor", 1) != 1 or options.get("dilation_w_factor", 1) != 1:
        raise NotImplementedError("dilated convolutions are not modelled")
    sy, sx = options["stride_h"], options["stride_w"]
    pad_top, out_h = same_padding(x_shape[1], kh, sy, options["padding"])
    pad_left, out_w = same_padding(x_shape[2], kw, sx, options["padding"])
    return sy, sx, pad_top, pad_left, out_h, out_w


class _OpContext:
    """One operator of a read model with the values of its activation inputs: the quantization,
    constants and fused-activation clamp the golden functions need."""

    def __init__(self, model, op, values):
        self.model, self.op, self.values = model, op, values
        self.opts = op.options
        self.s_y, self.z_y = self.quant(op.outputs[0]).scalar
        self.act = g.activation_range(self.opts.get("fused_activation_function", "NONE"),
                                      self.s_y, self.z_y)

    def quant(self, i):
        return self.model.tensors[i].quantization

    def const(self, i, default_len=None):
        """Constant data of input ``i`` (-1, an omitted bias: zeros of ``default_len``)."""
        if i < 0:
            return np.zeros(default_len, np.int32)
        return self.model.tensors[i].data

    def output_shape(self):
        return self.model.tensors[self.op.outputs[0]].shape


def _golden_conv(c):
    xi, wi, bi = c.op.inputs
    x, w = c.values[xi], c.const(wi)
    depthwise = c.op.op == "DEPTHWISE_CONV_2D"
    if depthwise and w.shape[3] != x.shape[3]:
        raise NotImplementedError("depth multiplier != 1 is not modelled")
    bias = c.const(bi, w.shape[3] if depthwise else w.shape[0])
    s_x, z_x = c.quant(xi).scalar
    m0, shift = g.conv_multipliers(s_x, c.quant(wi).scale, c.s_y)
    fn = g.depthwise_conv2d_tflite if depthwise else g.conv2d_tflite
    return fn(x, w, bias, *_window(x.shape, w.shape[1], w.shape[2], c.opts),
              input_zero_point=z_x, multiplier=m0, shift=shift, output_zero_point=c.z_y,
              qmin=c.act[0], qmax=c.act[1])


def _golden_fully_connected(c):
    xi, wi, bi = c.op.inputs
    w, wq = c.const(wi), c.quant(wi)
    if wq.per_channel or wq.zero_point[0] != 0:
        raise NotImplementedError("only per-tensor symmetric int8 weights are modelled")
    s_x, z_x = c.quant(xi).scalar
    scale = g.fully_connected_scale(s_x, wq.scale[0], c.s_y)
    y = g.fully_connected_tflite(c.values[xi].reshape(-1, w.shape[1]), w, c.const(bi, w.shape[0]),
                                 z_x, scale, c.z_y, *c.act)
    return y.reshape(c.output_shape())


def _golden_add(c):
    a, b = c.op.inputs
    params = g.add_params(*c.quant(a).scalar, *c.quant(b).scalar, c.s_y, c.z_y)
    return g.add_int8(c.values[a], c.values[b], params, *c.act)


def _golden_pool(c):
    x = c.values[c.op.inputs[0]]
    kh, kw = c.opts["filter_height"], c.opts["filter_width"]
    fn = g.avg_pool2d_tflite if c.op.op == "AVERAGE_POOL_2D" else g.max_pool2d_tflite
    return fn(x, kh, kw, *_window(x.shape, kh, kw, c.opts), *c.act)


def _golden_reshape(c):
    return c.values[c.op.inputs[0]].reshape(c.output_shape())


def _golden_softmax(c):
    xi = c.op.inputs[0]
    return g.softmax_tflite(c.values[xi], g.softmax_params(c.quant(xi).scale[0],
                                                           c.opts["beta"]))


def _golden_relu(c):
    xi = c.op.inputs[0]
    return g.relu_tflite(c.values[xi], *c.quant(xi).scalar, c.s_y, c.z_y,
                         upper=6.0 if c.op.op == "RELU6" else None)


def _golden_lut(c):
    xi = c.op.inputs[0]
    table = g.lut_table_tflite(c.op.op, *c.quant(xi).scalar, c.s_y, c.z_y)
    return table[c.values[xi].astype(np.int64) + 128]


_GOLDEN = {"CONV_2D": _golden_conv, "DEPTHWISE_CONV_2D": _golden_conv,
           "FULLY_CONNECTED": _golden_fully_connected, "ADD": _golden_add,
           "AVERAGE_POOL_2D": _golden_pool, "MAX_POOL_2D": _golden_pool,
           "RESHAPE": _golden_reshape, "SOFTMAX": _golden_softmax, "RELU": _golden_relu,
           "RELU6": _golden_relu, "LOGISTIC": _golden_lut, "TANH": _golden_lut}
#: Operators :func:`golden_operator` evaluates.
GOLDEN_OPS = tuple(_GOLDEN)


def golden_operator(model, op, values):
    """Output of one operator of ``model`` computed by the golden functions of
    :mod:`golden.tflite`, from ``values`` (tensor index -> int8 array) for its activation
    inputs; weights, biases and every quantization come from the model."""
    if op.op not in _GOLDEN:
        raise NotImplementedError(f"{op.op} has no golden model here (known: {GOLDEN_OPS})")
    return _GOLDEN[op.op](_OpContext(model, op, values))


def run_golden(model, *inputs):
    """The whole model through the golden functions, each operator fed golden outputs;
    returns ``{tensor index: array}`` for the inputs and every operator output."""
    values = dict(zip(model.inputs, (np.asarray(x) for x in inputs)))
    for op in model.operators:
        values[op.outputs[0]] = golden_operator(model, op, values)
    return values
