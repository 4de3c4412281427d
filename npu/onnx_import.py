"""ONNX import: a float ONNX graph -> the project's float graph -> PTQ -> int8 model (format v2).

    from npu.onnx_import import import_onnx, onnx_to_arch
    arch, params = onnx_to_arch("model.onnx")               # float, NHWC (golden.float_model)
    model = import_onnx("model.onnx", "calib.npz")           # golden.model.Model (int8)

    npu run --model model.onnx --calib calib.npz --data data.npz   # the CLI does the same, then
                                                                   # compiles and runs the RTL

Accepted ONNX (as written by ``torch.onnx.export`` or tf2onnx): opset 13 or newer, or opset 7
to 12, upgraded to 13 with ``onnx.version_converter`` first; one float32 input ``(N, C, H, W)``
or ``(N, F)`` (the batch axis may be symbolic; every other axis must be a number); one output;
a graph (in ONNX's topological order) of the operators below. Each ONNX operator type has one
handler (:data:`HANDLERS`); a handler reads its data inputs, appends the project layers it
becomes (each naming its ``inputs``) and returns its output value:

=====================================  ===================================================
ONNX                                   project layer (golden.float_model arch)
=====================================  ===================================================
Conv, group 1                          conv2d; weights OIHW -> (kh, kw, cin) x cout
Conv, group = in = out channels        depthwise_conv2d; weights -> (kh, kw) x channels
  (any kernel kh x kw, strides sy, sx, pads [top, left, bottom, right] or auto_pad
  SAME_UPPER / SAME_LOWER / VALID; dilation 1; bias optional)
Add of two tensors of the same shape   add (residual; TFLite ADD semantics)
Add of a constant after Conv/Gemm      folded into the bias
BatchNormalization after Conv/Gemm     folded into its weights and bias (inference form)
Relu, Clip(0, 6), Clip(0, inf)         fused into the producing conv/dense/add (its
                                       qmin/qmax: exact, the clamp at the zero point is the
                                       real 0), else an activation layer
LeakyRelu(alpha), Sigmoid, Tanh        activation layer (256-entry table)
MaxPool, AveragePool                   maxpool2d / avgpool2d (any window and strides, pads;
                                       ceil_mode 0; count_include_pad 1 -> count "kernel",
                                       0 -> count "valid")
GlobalAveragePool, GlobalMaxPool       avgpool2d / maxpool2d over the whole H x W map
Gemm (transA 0), MatMul [+ Add]        dense (the Add's constant becomes the bias)
Flatten (axis 1), Reshape to (N, -1)   flatten (constant target shape, or the usual
                                       Shape/Gather/Unsqueeze/Concat subgraph)
Softmax (last axis of an (N, F) value) softmax
Transpose NHWC <-> NCHW                nothing: an NHWC input straight into Transpose(0, 3,
                                       1, 2), a Transpose(0, 2, 3, 1) before the flatten
                                       (tf2onnx's Keras export)
Identity, Dropout                      nothing (inference)
=====================================  ===================================================

Layers whose results the output does not need are dropped. Activations move up to the layer
that computes their input when nothing else reads it, where the accelerator applies them:
through max pooling and flatten too (PyTorch's ``relu(max_pool2d(conv(x)))``), but only a
*non-decreasing* function commutes with max pooling (ReLU, ReLU6, Sigmoid, Tanh, LeakyRelu
with alpha >= 0); any other (LeakyRelu with a negative slope) stays where it is.

Layout. ONNX tensors are NCHW, the project's are NHWC: the input and the calibration images
are transposed, conv weights go from OIHW to (kh, kw, cin) x cout, and a Flatten of an NCHW
map (order (c, h, w)) is turned into the project's flatten (order (h, w, c)) by permuting the
rows of the Gemm/MatMul weights that read it (elementwise activations in between carry the
permutation). A flatten of a map with C > 1 and H*W > 1 that reaches the graph output or a
softmax without a Gemm/MatMul is refused, since its element order would differ from ONNX's.

Anything else is refused with :class:`OnnxImportError` (a golden.model.ModelFormatError), one
line naming the file, the node (index, name, operator type) and the reason: an unsupported
operator (Concat of activations among them), a dynamic shape, a grouped (not depthwise) or
dilated conv, ``auto_pad`` together with ``pads`` (ONNX forbids it), NaN or Inf weights, a
Gemm bias C that is not per output ((M, N) or (M, 1)), a tensor of more than
:data:`MAX_TENSOR_ELEMENTS` elements per sample, an opset below 7, a file that is not a valid
ONNX model. No partial model is ever returned.

Calibration file (``--calib``): an ``.npz`` with ``images``, float, finite, in the ONNX input
layout ``(N, C, H, W)`` (``(N, H, W, C)`` for an NHWC-input model, ``(N, F)`` for a flat one),
and optionally ``input_scale`` and ``input_zero_point`` (the int8 quantization of the network
input; default: :func:`golden.ptq.activation_qparams` of the images' range). The quantization
is golden.ptq's, over the graph: every tensor gets its scale from its float range on these
images, weights per-channel symmetric, each add its golden.eltwise.add_params; the int8 model
is saved next to the ONNX file as ``<name>.int8.npz`` with ``<name>.int8.json`` (the ONNX
file's SHA-256), so a later run without ``--calib`` reuses it (:func:`load_or_quantize`).
"""

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golden import activation as _act_tables
from golden.conv import Window
from golden.float_model import forward, output_shapes
from golden.model import INPUT, ModelFormatError, load_model, read_npz, save_model
from golden.pooling import MAX_DIVISOR
from golden.ptq import activation_qparams, quantize_model

__all__ = ["OnnxImportError", "SUPPORTED_OPS", "HANDLERS", "MIN_OPSET", "TARGET_OPSET",
           "MAX_TENSOR_ELEMENTS", "onnx_to_arch", "load_calibration", "import_onnx",
           "load_or_quantize", "int8_path", "to_model_input", "nchw_forward"]

#: Models of opsets MIN_OPSET .. TARGET_OPSET - 1 are upgraded to TARGET_OPSET first.
MIN_OPSET = 7
TARGET_OPSET = 13
#: Elements per sample of any tensor: far above what any configuration's ACT holds, and low
#: enough that the float calibration never runs out of memory.
MAX_TENSOR_ELEMENTS = 1 << 22
# Nodes that only compute shapes or constants (folded at import time).
_SHAPE_OPS = ("Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice")
_BATCH = 2 ** 31 - 7   # stands for the (symbolic) batch size while folding shape subgraphs
_GEMM_LAYERS = ("conv2d", "depthwise_conv2d", "dense")
#: Functions that commute with max pooling (non-decreasing), besides leaky ReLU with alpha >= 0.
_NON_DECREASING = ("relu", "relu6", "sigmoid", "tanh")


class OnnxImportError(ModelFormatError):
    """An ONNX file that cannot become a model of this project (see the module docstring)."""


def _node_where(source, idx, node):
    name = node.name or f"#{idx}"
    return f"{source}: node {idx} {name!r} ({node.op_type})"


def _attrs(node):
    import onnx
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _load_proto(path_or_proto):
    import onnx
    if isinstance(path_or_proto, onnx.ModelProto):
        return path_or_proto, path_or_proto.graph.name or "<onnx model>"
    source = str(path_or_proto)
    try:
        proto = onnx.load(source)
    except Exception as e:     # protobuf DecodeError, OSError, ...: nothing usable
        raise OnnxImportError(f"{source}: not a readable ONNX model: {type(e).__name__}: "
                              f"{e}") from None
    return proto, source


def _leaky(alpha):
    """Name of the table activation LeakyRelu(alpha), registered in golden.activation."""
    if alpha == _act_tables.LEAKY_SLOPE:
        return "leaky_relu"
    name = f"leaky_relu_{alpha:.6g}"
    if name not in _act_tables.ACTIVATIONS:
        a = float(alpha)
        _act_tables.ACTIVATIONS[name] = lambda x, a=a: np.where(
            np.asarray(x) >= 0, np.asarray(x, np.float64), a * np.asarray(x, np.float64))
    return name


def _non_decreasing(fn, alpha=None):
    return fn in _NON_DECREASING or (fn.startswith("leaky_relu") and alpha is not None
                                     and alpha >= 0)


def _window_attrs(win):
    """A layer's window attributes: integers when square and symmetric (as format version 1
    and the reference network write them), else the lists of golden.conv.Window."""
    sq = win.square
    if sq is not None:
        return {"kernel": sq[0], "stride": sq[1], "padding": sq[2]}
    return win.attrs()


@dataclass(frozen=True)
class _Val:
    """An ONNX data tensor as the importer sees it."""
    src: str                   # the project tensor holding it: a layer's name or "input"
    shape: tuple               # ONNX shape (batch = _BATCH)
    lay: str = None            # "nchw" / "nhwc" for 4-D data, None for (N, F)
    perm: np.ndarray = None    # pending (h, w, c)-index of each (c, h, w) flat position
    fusable: str = None        # layer whose activation (bias, BN) this value can still take
    through: tuple = ()        # maxpool2d / flatten layers between ``fusable`` and here


class _Importer:
    def __init__(self, proto, source):
        self.proto, self.source = proto, source
        self.layers, self.params, self.names = [], {}, set()
        self.consts = {}          # tensor name -> numpy value (initializers, folded nodes)
        self.runtime = set()      # tensors of constant computations the importer cannot fold
        self.vals = {}            # data tensor name -> _Val
        self.readers = {}         # tensor name -> number of node inputs (and graph outputs)
        self.at = None            # (index, node) being imported

    def fail(self, msg, at=None):
        at = at or self.at
        where = self.source if at is None else _node_where(self.source, *at)
        raise OnnxImportError(f"{where}: {msg}")

    # ------------------------------------------------------------------ graph-level checks
    def check_model(self):
        import onnx
        self._check_proto()
        opset = self._opset()
        if opset is None or opset < MIN_OPSET:
            self.fail(f"opset {opset} of the default domain; the importer reads opset "
                      f">= {MIN_OPSET} (re-export with opset_version={TARGET_OPSET} or newer)")
        if opset < TARGET_OPSET:
            from onnx import version_converter
            try:
                self.proto = version_converter.convert_version(self.proto, TARGET_OPSET)
            except Exception as e:
                self.fail(f"opset {opset}: onnx.version_converter cannot upgrade it to "
                          f"{TARGET_OPSET}: {type(e).__name__}: {str(e).strip()[:300]}")
            self._check_proto()
        g = self.proto.graph
        init = {t.name for t in g.initializer}
        from onnx import numpy_helper
        for t in g.initializer:
            try:
                self.consts[t.name] = numpy_helper.to_array(t)
            except Exception as e:      # a corrupt file: unknown data type, short data, ...
                self.fail(f"initializer {t.name!r} is not a readable tensor "
                          f"({type(e).__name__}: {str(e).strip()[:200]})")
        for n in g.node:
            for i in n.input:
                self.readers[i] = self.readers.get(i, 0) + 1
        for o in g.output:
            self.readers[o.name] = self.readers.get(o.name, 0) + 1
        inputs = [i for i in g.input if i.name not in init]
        if len(inputs) != 1:
            self.fail(f"the graph has {len(inputs)} inputs "
                      f"({', '.join(i.name for i in inputs)}); exactly one is supported")
        self._check_operators(inputs[0].name)
        if len(g.output) != 1:
            self.fail(f"the graph has {len(g.output)} outputs; exactly one is supported")
        self._input(inputs[0])

    def _check_operators(self, data_input):
        """The first operator on the data (what the graph input flows through; shape
        computations aside) that the importer has no handler for, before anything else: a
        model is refused for what it is (an LSTM, ...), not for a symptom."""
        data = {data_input}
        for idx, node in enumerate(self.proto.graph.node):
            if node.op_type == "Shape" or not any(i in data for i in node.input if i):
                continue
            data.update(node.output)
            foreign = node.domain not in ("", "ai.onnx")
            if foreign or node.op_type not in HANDLERS:
                self.at = (idx, node)
                what = (f" of domain {node.domain!r}" if foreign else
                        " of activation tensors (the accelerator has no concatenation)"
                        if node.op_type == "Concat" else "")
                self.fail(f"unsupported operator {node.op_type}{what}; supported: "
                          f"{', '.join(SUPPORTED_OPS)}")
        self.at = None

    def _check_proto(self):
        import onnx
        try:
            onnx.checker.check_model(self.proto)
        except Exception as e:
            self.fail(f"not a valid ONNX model ({type(e).__name__}): {str(e).strip()[:400]}")

    def _opset(self):
        opset = None
        for o in self.proto.opset_import:
            if o.domain in ("", "ai.onnx"):
                opset = o.version
        return opset

    def _input(self, inp):
        import onnx
        g = self.proto.graph
        consumer = next(((i, n) for i, n in enumerate(g.node) if inp.name in n.input), None)
        tt = inp.type.tensor_type
        if not inp.type.HasField("tensor_type") or tt.elem_type != onnx.TensorProto.FLOAT:
            self.fail(f"graph input {inp.name!r} must be a float32 tensor", consumer)
        dims = []
        for ax, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif ax == 0:
                dims.append(_BATCH)          # symbolic batch is fine
            else:
                what = d.dim_param or "unknown"
                self.fail(f"dynamic shape: graph input {inp.name!r} has dimension {what!r} "
                          f"at axis {ax}; every axis but the batch must be a fixed number",
                          consumer)
        if len(dims) not in (2, 4):
            self.fail(f"graph input {inp.name!r} has rank {len(dims)}; an (N, C, H, W) or "
                      f"(N, F) input is supported", consumer)
        self.static_batch = dims[0] if dims[0] != _BATCH else None
        dims[0] = _BATCH
        self.check_size(dims, f"graph input {inp.name!r}", consumer)
        # NCHW, as ONNX defines it; NHWC if the input goes straight into a
        # Transpose(0, 3, 1, 2) (tf2onnx's export of a Keras model)
        lay = None
        if len(dims) == 4:
            lay = "nchw"
            if consumer is not None and consumer[1].op_type == "Transpose" and \
                    list(_attrs(consumer[1]).get("perm", [])) == [0, 3, 1, 2]:
                lay = "nhwc"
        self.input_name = inp.name
        self.vals[inp.name] = _Val(INPUT, tuple(dims), lay)
        self.input_layout = lay.upper() if lay else None
        self.input_shape = (tuple(dims[1:]) if lay == "nhwc" else
                            tuple(dims[2:]) + (dims[1],) if lay else (dims[1],))

    def check_size(self, shape, what, at=None):
        n = int(np.prod([d for d in shape[1:]], dtype=object))
        if n > MAX_TENSOR_ELEMENTS:
            self.fail(f"{what} has shape {self._fmt(shape)}: {n} elements per sample, above "
                      f"the importer's limit of {MAX_TENSOR_ELEMENTS}", at)

    # ------------------------------------------------------------------ helpers of handlers
    def const(self, name, what):
        if name in self.runtime:
            self.fail(f"dynamic shape: {what} ({name!r}) is computed at run time (the "
                      f"importer folds only {', '.join(_SHAPE_OPS)} on static shapes)")
        if name not in self.consts:
            self.fail(f"{what} ({name!r}) must be a constant (initializer or Constant node); "
                      f"it is computed at run time")
        return self.consts[name]

    def weight(self, name, what):
        """A float constant the model computes with (weights, biases, BN statistics): float64,
        refused if any value is NaN or Inf."""
        v = np.asarray(self.const(name, what))
        if v.dtype.kind not in "fiu":
            self.fail(f"{what} ({name!r}) has dtype {v.dtype}; a number tensor is needed")
        v = v.astype(np.float64)
        bad = ~np.isfinite(v)
        if bad.any():
            self.fail(f"{what} ({name!r}) has {int(bad.sum())} NaN or Inf values (first at "
                      f"index {tuple(int(i) for i in np.argwhere(bad)[0])})")
        return v

    def optional_input(self, node, i):
        return node.input[i] if len(node.input) > i and node.input[i] else None

    def data(self, node, i=0, rank4=False):
        """The value of data input ``i``; with ``rank4``, an NCHW map is required."""
        name = node.input[i] if len(node.input) > i else ""
        if name not in self.vals:
            self.fail(f"input {i} ({name!r}) must be the data tensor")
        v = self.vals[name]
        if rank4 and (len(v.shape) != 4 or v.lay != "nchw"):
            self.fail(f"needs an (N, C, H, W) input, got shape {self._fmt(v.shape)}"
                      + (" in NHWC order (transpose it to NCHW first)"
                         if len(v.shape) == 4 else ""))
        return v

    def sole(self, name):
        """True if exactly one node input reads tensor ``name`` and it is no graph output."""
        return self.readers.get(name, 0) == 1

    def new_name(self, node, default):
        base = (node.name or default).strip("/").replace("/", "_") or default
        if base == INPUT:
            base = f"{default}_{base}"
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def layer(self, node, default, inputs, **attrs):
        """Append a layer reading the project tensors ``inputs``; returns its name."""
        name = self.new_name(node, default)
        self.layers.append({"type": attrs.pop("type"), "name": name, "inputs": list(inputs),
                            **attrs})
        return name

    def by_name(self, name):
        return next(L for L in self.layers if L["name"] == name)

    def passthrough(self, node, x, shape=None, **changes):
        """The output value of a node that adds no layer (Identity, Transpose, ...): it keeps
        ``fusable`` only while nothing else reads the input."""
        keep = self.sole(node.input[0])
        return dataclasses.replace(x, shape=tuple(shape or x.shape),
                                   fusable=x.fusable if keep else None,
                                   through=x.through if keep else (), **changes)

    def fusion_target(self, node, x, through_ok=False):
        """The conv/dense/add layer whose output only flows into this node (through max
        pooling and flatten if ``through_ok``) and has no fused activation yet, or None."""
        if x.fusable is None or not self.sole(node.input[0]):
            return None
        if x.through and not through_ok:
            return None
        L = self.by_name(x.fusable)
        return L if L.get("activation", "none") == "none" else None

    # ------------------------------------------------------------------ shape folding
    def fold(self, node):
        """Evaluate a Constant/Shape/... node whose inputs are known; False if it is not one."""
        from onnx import numpy_helper
        a = _attrs(node)
        op = node.op_type
        if op == "Constant":
            if "value" not in a:
                self.fail("only Constant nodes with a 'value' tensor are supported")
            self.consts[node.output[0]] = numpy_helper.to_array(a["value"])
            return True
        if op == "Shape":
            src = node.input[0]
            if src not in self.vals:
                return False
            shp = np.array(self.vals[src].shape, np.int64)
            start, end = a.get("start", 0), a.get("end", None)
            self.consts[node.output[0]] = shp[start:end]
            return True
        ins = [n for n in node.input if n]
        if not all(n in self.consts for n in ins):
            return False
        v = [self.consts[n] for n in ins]
        try:
            out = _FOLD[op](v, a) if op in _FOLD else None
        except Exception as e:
            self.fail(f"cannot evaluate this shape computation: {e}")
        if out is None:
            return False
        self.consts[node.output[0]] = np.asarray(out)
        return True

    # ------------------------------------------------------------------ the graph
    def run(self):
        g = self.proto.graph
        for idx, node in enumerate(g.node):
            self.at = (idx, node)
            op = node.op_type
            if node.domain not in ("", "ai.onnx"):
                self.fail(f"operator of domain {node.domain!r} is not supported; supported: "
                          f"{', '.join(SUPPORTED_OPS)}")
            reads_data = any(i in self.vals for i in node.input if i)
            if op == "Shape" or not reads_data:
                # a shape/constant computation: folded, or (if the importer cannot) a value
                # known only at run time, refused where a constant is needed
                if not self.fold(node):
                    self.runtime.update(node.output)
                continue
            handler = HANDLERS.get(op)
            if handler is None:
                what = ("of activation tensors (the accelerator has no concatenation)"
                        if op == "Concat" else "")
                hint = (" (the input must be NCHW, as ONNX defines it: export with NCHW "
                        "inputs, e.g. tf2onnx --inputs-as-nchw)" if op == "Transpose" else "")
                self.fail(f"unsupported operator {op}{' ' + what if what else ''}{hint}; "
                          f"supported: {', '.join(SUPPORTED_OPS)}")
            if len([o for o in node.output if o]) != 1 and op != "Dropout":
                self.fail(f"{len(node.output)} outputs; one is supported")
            val = handler(self, node, _attrs(node))
            self.check_size(val.shape, f"output {node.output[0]!r}")
            self.vals[node.output[0]] = val
        self.at = None
        out = self.vals.get(g.output[0].name)
        if out is None:
            self.fail(f"the graph output {g.output[0].name!r} is not computed from the input")
        if out.perm is not None:
            self.fail("a Flatten/Reshape of an NCHW map with C > 1 and H*W > 1 must be followed "
                      "by Gemm/MatMul (its (c, h, w) order differs from the accelerator's "
                      "(h, w, c))")
        if not self.layers or out.src == INPUT:
            self.fail("the model has no layers")
        self.output = out.src
        self.output_layout = out.lay.upper() if out.lay else None
        self.prune()

    def prune(self):
        """Drop the layers the output does not need (ONNX nodes whose results nothing reads):
        the model computes only what it returns."""
        needed = {self.output}
        for L in reversed(self.layers):
            if L["name"] in needed:
                needed.update(L["inputs"])
        self.layers = [L for L in self.layers if L["name"] in needed]
        self.params = {k: v for k, v in self.params.items() if k in needed}

    @staticmethod
    def _fmt(shp):
        return "(" + ", ".join("N" if v == _BATCH else str(v) for v in shp) + ")"

    # ------------------------------------------------------------------ geometry
    def window(self, a, kernel, spatial):
        """The golden.conv.Window of a Conv or pooling node: kernel, strides, pads or
        auto_pad (SAME_UPPER: the odd padding row/column at the bottom/right, as TensorFlow;
        SAME_LOWER: at the top/left)."""
        kernel = [int(k) for k in kernel]
        if len(kernel) != 2 or min(kernel) < 1:
            self.fail(f"kernel {kernel}; a 2-D kernel of positive sizes is supported")
        strides = [int(s) for s in a.get("strides", [1, 1])]
        if len(strides) != 2 or min(strides) < 1:
            self.fail(f"strides {strides}; two strides >= 1 are supported")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            self.fail(f"dilations {list(a['dilations'])} are not supported (only 1)")
        auto = a.get("auto_pad", "NOTSET")
        if auto != "NOTSET" and "pads" in a:
            self.fail(f"auto_pad {auto} together with explicit pads {list(a['pads'])}: ONNX "
                      f"forbids using both")
        if auto == "NOTSET":
            pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
            if len(pads) != 4 or min(pads) < 0:
                self.fail(f"pads {pads}; four paddings >= 0 (top, left, bottom, right)")
        elif auto == "VALID":
            pads = [0, 0, 0, 0]
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            begin, end = [], []
            for d, k, s in zip(spatial, kernel, strides):
                total = max((-(-d // s) - 1) * s + k - d, 0)
                small, big = total // 2, total - total // 2
                begin.append(small if auto == "SAME_UPPER" else big)
                end.append(big if auto == "SAME_UPPER" else small)
            pads = begin + end
        else:
            self.fail(f"auto_pad {auto!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
        win = Window(kernel[0], kernel[1], strides[0], strides[1], pads[0], pads[1], pads[2],
                     pads[3])
        try:
            win.out_size(*spatial)
        except ValueError as e:
            self.fail(str(e))
        return win

    def out_map(self, x, win, channels):
        ho, wo = win.out_size(*x.shape[2:])
        return (x.shape[0], channels, ho, wo)


# ---------------------------------------------------------------------- shape-op folding

def _fold_slice(v, a):
    starts, ends = v[1], v[2]
    axes = v[3] if len(v) > 3 else np.arange(len(starts))
    steps = v[4] if len(v) > 4 else np.ones(len(starts), np.int64)
    sl = [slice(None)] * v[0].ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        sl[int(ax)] = slice(int(s), int(e), int(st))
    return v[0][tuple(sl)]


_FOLD = {
    "Gather": lambda v, a: np.take(v[0], v[1].astype(np.int64), axis=a.get("axis", 0)),
    "Unsqueeze": lambda v, a: np.expand_dims(v[0], tuple(int(x) for x in v[1])),
    "Squeeze": lambda v, a: (np.squeeze(v[0], tuple(int(x) for x in v[1])) if len(v) > 1
                             else np.squeeze(v[0])),
    "Concat": lambda v, a: np.concatenate([np.atleast_1d(x) for x in v], axis=a.get("axis", 0)),
    "Cast": lambda v, a: v[0].copy(),
    "Slice": _fold_slice,
}


# ---------------------------------------------------------------------- operator handlers
# Each ``_op_<type>(imp, node, attrs)`` appends the layers of one ONNX node and returns the
# _Val of its output.

def _op_conv(imp, node, a):
    x = imp.data(node, 0, rank4=True)
    w = imp.weight(node.input[1], "the weight")
    if w.ndim != 4:
        imp.fail(f"weight of rank {w.ndim}; a 2-D convolution (OIHW) is supported")
    cout, cin_group, kh, kw = w.shape
    if list(a.get("kernel_shape", [kh, kw])) != [kh, kw]:
        imp.fail(f"kernel_shape {list(a['kernel_shape'])} differs from the weight's "
                 f"{kh}x{kw}")
    c, group = x.shape[1], a.get("group", 1)
    win = imp.window(a, (kh, kw), x.shape[2:])
    bias_name = imp.optional_input(node, 2)
    b = imp.weight(bias_name, "the bias").reshape(-1) if bias_name else np.zeros(cout)
    if b.shape != (cout,):
        imp.fail(f"bias of {b.size} values for {cout} output channels")
    if group == 1:
        if cin_group != c:
            imp.fail(f"weights expect {cin_group} input channels, the input has {c}")
        name = imp.layer(node, "conv", [x.src], type="conv2d", **_window_attrs(win),
                         in_channels=c, out_channels=cout, activation="none")
        wk = w.transpose(2, 3, 1, 0).reshape(kh * kw * c, cout)
    elif group == c == cout and cin_group == 1:
        name = imp.layer(node, "dwconv", [x.src], type="depthwise_conv2d",
                         **_window_attrs(win), channels=c, activation="none")
        wk = w[:, 0].transpose(1, 2, 0).reshape(kh * kw, c)
    else:
        imp.fail(f"grouped convolution (group = {group}, {c} input and {cout} output "
                 f"channels) is not supported; only group = 1 or depthwise (group = input "
                 f"channels = output channels)")
    imp.params[name] = {"weights": np.ascontiguousarray(wk, np.float32),
                        "bias": b.astype(np.float32)}
    return _Val(name, imp.out_map(x, win, cout), "nchw", fusable=name)


def _op_pool(imp, node, a):
    x = imp.data(node, 0, rank4=True)
    op = node.op_type
    if a.get("ceil_mode", 0):
        imp.fail("ceil_mode = 1 is not supported")
    if a.get("storage_order", 0):
        imp.fail("storage_order = 1 is not supported")
    if "kernel_shape" not in a:
        imp.fail("kernel_shape is required")
    win = imp.window(a, a["kernel_shape"], x.shape[2:])
    if max(win.pt, win.pb) >= win.kh or max(win.pl, win.pr) >= win.kw:
        imp.fail(f"padding {win.attrs()['padding']} reaches a whole {win.kh}x{win.kw} window "
                 f"past the input (a window with no real pixel)")
    return _pool_layer(imp, node, x, win, "maxpool2d" if op == "MaxPool" else "avgpool2d",
                       count="kernel" if a.get("count_include_pad", 0) else "valid")


def _op_global_pool(imp, node, a):
    x = imp.data(node, 0, rank4=True)
    win = Window(x.shape[2], x.shape[3])
    typ = "avgpool2d" if node.op_type == "GlobalAveragePool" else "maxpool2d"
    return _pool_layer(imp, node, x, win, typ, count="kernel")


def _pool_layer(imp, node, x, win, typ, count):
    attrs = _window_attrs(win)
    if typ == "avgpool2d":
        if win.kh * win.kw > MAX_DIVISOR:
            imp.fail(f"average pooling window of {win.kh}x{win.kw} = {win.kh * win.kw} taps "
                     f"above the supported maximum {MAX_DIVISOR}")
        no_pad = not (win.pt or win.pl or win.pb or win.pr)
        attrs["count"] = "kernel" if no_pad else count
    name = imp.layer(node, typ[:7], [x.src], type=typ, **attrs)
    out = imp.out_map(x, win, x.shape[1])
    if typ == "maxpool2d" and imp.sole(node.input[0]) and x.fusable:
        # a later non-decreasing activation can still move above it
        return _Val(name, out, "nchw", fusable=x.fusable, through=x.through + (name,))
    return _Val(name, out, "nchw")


def _activation(imp, node, fn, alpha=None):
    """Fuse ReLU/ReLU6 into the conv/dense/add that computes the input, or add a table
    activation right after that conv/dense (where the accelerator applies it); across max
    pooling and flatten only for a non-decreasing function (max commutes with it)."""
    x = imp.data(node)
    target = imp.fusion_target(node, x, through_ok=_non_decreasing(fn, alpha))
    if target is not None and fn in ("relu", "relu6"):
        target["activation"] = fn
        return dataclasses.replace(x, fusable=None, through=())
    if target is not None and target["type"] in _GEMM_LAYERS:
        name = imp.new_name(node, fn)
        at = imp.layers.index(target) + 1
        imp.layers.insert(at, {"type": "activation", "name": name, "inputs": [target["name"]],
                               "function": fn})
        if x.through:                         # the first pooling/flatten now reads it
            imp.by_name(x.through[0])["inputs"] = [name]
            return dataclasses.replace(x, fusable=None, through=())
        return dataclasses.replace(x, src=name, fusable=None, through=())
    name = imp.layer(node, fn, [x.src], type="activation", function=fn)
    return _Val(name, x.shape, x.lay, x.perm)


def _op_relu(imp, node, a):
    return _activation(imp, node, "relu")


def _op_clip(imp, node, a):
    lo_name, hi_name = imp.optional_input(node, 1), imp.optional_input(node, 2)
    lo = float(imp.const(lo_name, "min")) if lo_name else -math.inf
    hi = float(imp.const(hi_name, "max")) if hi_name else math.inf
    if lo == 0 and hi == 6:
        return _activation(imp, node, "relu6")
    if lo == 0 and hi == math.inf:
        return _activation(imp, node, "relu")
    imp.fail(f"Clip({lo}, {hi}) is not supported; only Clip(0, 6) (ReLU6) and Clip(0, inf) "
             f"(ReLU)")


def _op_table(imp, node, a):
    if node.op_type == "LeakyRelu":
        alpha = float(a.get("alpha", 0.01))
        if not math.isfinite(alpha):
            imp.fail(f"alpha {alpha} is not a finite number")
        return _activation(imp, node, _leaky(alpha), alpha)
    return _activation(imp, node, {"Sigmoid": "sigmoid", "Tanh": "tanh"}[node.op_type])


def _op_flatten(imp, node, a):
    x = imp.data(node)
    shp = x.shape
    if node.op_type == "Flatten":
        axis = a.get("axis", 1)
        axis = axis + len(shp) if axis < 0 else axis
        if axis != 1:
            imp.fail(f"Flatten axis {a.get('axis')} is not supported (only 1: keep the batch)")
    else:
        t = [int(v) for v in np.asarray(imp.const(node.input[1], "the target shape")).ravel()]
        feat = int(np.prod(shp[1:]))
        ok = (len(t) == 2 and t[0] in (_BATCH, 0, -1, imp.static_batch)
              and t[1] in (-1, feat) and t != [-1, -1])
        if not ok:
            tt = ["N" if v == _BATCH else v for v in t]
            imp.fail(f"Reshape to {tt} is not a flatten to (N, {feat}) (only Reshape as "
                     f"flatten is supported)")
    if len(shp) != 4:
        return imp.passthrough(node, x)
    if x.lay == "nhwc":      # (h, w, c) order already: no permutation
        _, h, w, c = shp
    else:
        _, c, h, w = shp
    name = imp.layer(node, "flatten", [x.src], type="flatten")
    perm = None
    if x.lay == "nchw" and c > 1 and h * w > 1:
        # flat ONNX index (c, y, x) -> flat project index (y, x, c)
        ci, yi, xi = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
        perm = ((yi * w + xi) * c + ci).ravel()
    keep = imp.sole(node.input[0]) and x.fusable
    return _Val(name, (shp[0], c * h * w), None, perm, fusable=x.fusable if keep else None,
                through=x.through + (name,) if keep else ())


def _op_dense(imp, node, a):
    op = node.op_type
    x = imp.data(node)
    if len(x.shape) != 2:
        imp.fail(f"needs a 2-D (N, F) input (put a Flatten first), got shape "
                 f"{imp._fmt(x.shape)}")
    if node.input[0] not in imp.vals or (len(node.input) > 1 and node.input[1] in imp.vals):
        imp.fail(f"{op} of two activation tensors, or with a constant first operand, is not "
                 f"supported (only activations x constant weights)")
    w = imp.weight(node.input[1], "the weight")
    if w.ndim != 2:
        imp.fail(f"weight of rank {w.ndim}; a 2-D weight is supported")
    b = None
    if op == "Gemm":
        if a.get("transA", 0):
            imp.fail("transA = 1 is not supported")
        if a.get("transB", 0):
            w = w.T
        w = w * a.get("alpha", 1.0)
    k_dim, n_dim = w.shape
    if op == "Gemm" and imp.optional_input(node, 2):
        c = imp.weight(node.input[2], "the bias C")
        if c.ndim > 2 or (c.size not in (1, n_dim)) or (c.ndim == 2 and c.shape[0] != 1):
            imp.fail(f"bias C of shape {c.shape}; one bias per output ((), ({n_dim},) or "
                     f"(1, {n_dim})) is supported, not one per sample")
        b = np.broadcast_to(c.reshape(-1) * a.get("beta", 1.0), (n_dim,))
    if k_dim != x.shape[1]:
        imp.fail(f"weight has {k_dim} rows, the input has {x.shape[1]} features")
    if x.perm is not None:
        wp = np.empty_like(w)
        wp[x.perm] = w        # the row for ONNX feature i moves to project index perm[i]
        w = wp
    name = imp.layer(node, "dense", [x.src], type="dense", in_features=k_dim,
                     out_features=n_dim, activation="none")
    imp.params[name] = {"weights": w.astype(np.float32),
                        "bias": (np.zeros(n_dim) if b is None else b).astype(np.float32)}
    return _Val(name, (x.shape[0], n_dim), None, fusable=name)


def _op_add(imp, node, a):
    data = [i for i in node.input[:2] if i in imp.vals]
    if len(data) == 2:
        return _residual_add(imp, node)
    x = imp.data(node, list(node.input).index(data[0]))
    other = node.input[1] if node.input[0] == data[0] else node.input[0]
    b = imp.weight(other, "the addend")
    target = imp.fusion_target(node, x)
    if target is None or target["type"] not in _GEMM_LAYERS:
        imp.fail("Add of a constant is only supported as the bias right after Conv/Gemm/"
                 "MatMul (nothing else reading the product, no activation in between)")
    n = target.get("out_channels") or target.get("channels") or target["out_features"]
    ok_shapes = ([(n,), (1, n)] if target["type"] == "dense" else [(n, 1, 1), (1, n, 1, 1)])
    if b.shape not in ok_shapes and b.size != 1:
        imp.fail(f"Add of a constant of shape {b.shape}; a per-channel bias "
                 f"{' or '.join(map(str, ok_shapes))} is supported")
    p = imp.params[target["name"]]
    p["bias"] = (p["bias"] + np.broadcast_to(b.reshape(-1), (n,))).astype(np.float32)
    return x


def _residual_add(imp, node):
    x, y = imp.data(node, 0), imp.data(node, 1)
    if x.shape != y.shape or x.lay != y.lay:
        imp.fail(f"Add of tensors of shapes {imp._fmt(x.shape)} and {imp._fmt(y.shape)}"
                 f"{'' if x.lay == y.lay else ' in different layouts'}; only two tensors of "
                 f"the same shape are supported (no broadcasting)")
    if (x.perm is None) != (y.perm is None) or (x.perm is not None
                                                and not np.array_equal(x.perm, y.perm)):
        imp.fail("Add of two flattened tensors in different element orders")
    name = imp.layer(node, "add", [x.src, y.src], type="add", activation="none")
    return _Val(name, x.shape, x.lay, x.perm, fusable=name)


def _op_batchnorm(imp, node, a):
    x = imp.data(node)
    target = imp.fusion_target(node, x)
    if target is None or target["type"] not in _GEMM_LAYERS:
        imp.fail("BatchNormalization is only supported right after Conv/Gemm/MatMul (it is "
                 "folded into the weights and bias)")
    if a.get("training_mode", 0):
        imp.fail("training_mode = 1 is not supported")
    gamma, beta, mean, var = (imp.weight(n, what) for n, what in zip(
        node.input[1:5], ("scale", "B", "input_mean", "input_var")))
    eps = float(a.get("epsilon", 1e-5))
    if np.any(var + eps <= 0):
        i = int(np.flatnonzero(var + eps <= 0)[0])
        imp.fail(f"input_var + epsilon of channel {i} is {var[i] + eps:g}; a variance must "
                 f"be >= 0")
    k = gamma / np.sqrt(var + eps)
    p = imp.params[target["name"]]
    p["weights"] = (p["weights"].astype(np.float64) * k).astype(np.float32)
    p["bias"] = ((p["bias"].astype(np.float64) - mean) * k + beta).astype(np.float32)
    return imp.passthrough(node, x)


def _op_softmax(imp, node, a):
    x = imp.data(node)
    axis = a.get("axis", -1)
    if len(x.shape) != 2 or axis not in (-1, 1):
        imp.fail(f"softmax over axis {axis} of a {imp._fmt(x.shape)} tensor; only the last "
                 f"axis of an (N, F) tensor is supported")
    if x.perm is not None:
        imp.fail("softmax right after a flatten of an NCHW map (element order)")
    name = imp.layer(node, "softmax", [x.src], type="softmax")
    return _Val(name, x.shape)


def _op_transpose(imp, node, a):
    x = imp.data(node)
    perm, shp = list(a.get("perm", [])), x.shape
    if len(shp) == 4 and x.lay == "nhwc" and perm == [0, 3, 1, 2]:
        return imp.passthrough(node, x, (shp[0], shp[3], shp[1], shp[2]), lay="nchw")
    if len(shp) == 4 and x.lay == "nchw" and perm == [0, 2, 3, 1]:
        return imp.passthrough(node, x, (shp[0], shp[2], shp[3], shp[1]), lay="nhwc")
    imp.fail(f"Transpose with perm {perm} of a {x.lay or 'rank-2'} tensor is not supported "
             f"(only NHWC <-> NCHW of 4-D data, as tf2onnx writes them)")


def _op_identity(imp, node, a):
    return imp.passthrough(node, imp.data(node))


#: ONNX operator type -> its handler.
HANDLERS = {
    "Conv": _op_conv, "MaxPool": _op_pool, "AveragePool": _op_pool,
    "GlobalAveragePool": _op_global_pool, "GlobalMaxPool": _op_global_pool,
    "Relu": _op_relu, "Clip": _op_clip, "LeakyRelu": _op_table, "Sigmoid": _op_table,
    "Tanh": _op_table, "Flatten": _op_flatten, "Reshape": _op_flatten, "Gemm": _op_dense,
    "MatMul": _op_dense, "Add": _op_add, "BatchNormalization": _op_batchnorm,
    "Softmax": _op_softmax, "Transpose": _op_transpose, "Identity": _op_identity,
    "Dropout": _op_identity,
}
SUPPORTED_OPS = tuple(HANDLERS)


def onnx_to_arch(path_or_proto, name=None):
    """A float ONNX model -> ``(arch, params)`` of :mod:`golden.float_model` (NHWC, a graph:
    each layer names its ``inputs``; ``arch["output"]`` the output layer).

    Raises :class:`OnnxImportError` for anything outside the supported subset."""
    proto, source = _load_proto(path_or_proto)
    imp = _Importer(proto, source)
    imp.check_model()
    imp.run()
    if name is None:
        name = (Path(source).stem if not isinstance(path_or_proto, type(proto))
                else proto.graph.name) or "onnx_model"
    arch = {"name": str(name).replace("/", "_"), "input_shape": list(imp.input_shape),
            "onnx_input_layout": imp.input_layout, "onnx_output_layout": imp.output_layout,
            "layers": imp.layers, "output": imp.output}
    try:
        output_shapes(arch)
    except ValueError as e:
        raise OnnxImportError(f"{source}: {e}") from None
    return arch, imp.params


def nchw_forward(arch, params, x, keep=False):
    """The float model on input in the ONNX model's layout: ``(N, C, H, W)`` (or ``(N, H, W,
    C)`` for an NHWC-input model, ``arch["onnx_input_layout"]``), or ``(N, F)``."""
    x = np.asarray(x, np.float32)
    if x.ndim == 4 and arch.get("onnx_input_layout", "NCHW") == "NCHW":
        x = x.transpose(0, 2, 3, 1)
    return forward(arch, params, x, keep=keep)


def load_calibration(path):
    """``(images NCHW float32, input_scale or None, input_zero_point or None)``."""
    try:
        f = read_npz(path, f"--calib {path}")
    except ModelFormatError as e:
        raise OnnxImportError(str(e)) from None
    if "images" not in f:
        raise OnnxImportError(f"{path}: the calibration file needs an 'images' array")
    try:
        images = np.asarray(f["images"], np.float32)
        s = float(f["input_scale"]) if "input_scale" in f else None
        z = int(f["input_zero_point"]) if "input_zero_point" in f else None
    except (TypeError, ValueError) as e:
        raise OnnxImportError(f"{path}: calibration images, input_scale and input_zero_point "
                              f"must be numbers: {e}") from None
    if images.ndim < 2 or not len(images):
        raise OnnxImportError(f"{path}: calibration 'images' of shape {images.shape}; want "
                              f"(N, ...) with N >= 1 images in the ONNX input layout")
    check_finite(images, f"{path}: calibration images")
    if s is not None and not (np.isfinite(s) and s > 0):
        raise OnnxImportError(f"{path}: input_scale must be a finite number > 0, got {s}")
    if z is not None and not -128 <= z <= 127:
        raise OnnxImportError(f"{path}: input_zero_point must be in [-128, 127], got {z}")
    return images, s, z


def check_finite(images, what):
    """Refuse NaN or Inf images (a calibration on them would give every scale 1.0)."""
    x = np.asarray(images)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise OnnxImportError(f"{what}: {int((~np.isfinite(x)).sum())} NaN or Inf values "
                              f"(first in image {int(bad[0])} at {tuple(int(i) for i in bad[1:])})")


def _to_nhwc(arch, images, source):
    shp = tuple(arch["input_shape"])
    x = np.asarray(images)
    nchw = arch.get("onnx_input_layout", "NCHW") == "NCHW"
    if x.ndim == 4 and nchw:
        x = x.transpose(0, 2, 3, 1)
    if x.shape[1:] != shp or len(x) == 0:
        want = (shp[2], shp[0], shp[1]) if len(shp) == 3 and nchw else shp
        raise OnnxImportError(f"{source}: images have shape {np.shape(images)}, the ONNX model "
                              f"takes (N, {', '.join(map(str, want))})")
    return x


def import_onnx(onnx_path, calib, input_scale=None, input_zero_point=None, name=None):
    """Float ONNX + calibration images -> validated int8 :class:`golden.model.Model`.

    ``calib`` is a path (see :func:`load_calibration`) or an NCHW float array."""
    arch, params = onnx_to_arch(onnx_path, name=name)
    if isinstance(calib, (str, Path)):
        images, s, z = load_calibration(calib)
        input_scale = s if input_scale is None else input_scale
        input_zero_point = z if input_zero_point is None else input_zero_point
        src = str(calib)
    else:
        images, src = np.asarray(calib, np.float32), "calibration images"
        check_finite(images, src)
    x = _to_nhwc(arch, images, src)
    if input_scale is None or input_zero_point is None:
        input_scale, input_zero_point = activation_qparams(x.min(), x.max())
    return quantize_model(arch, params, x, input_scale, input_zero_point)


def int8_path(onnx_path):
    p = Path(onnx_path)
    return p.with_name(p.stem + ".int8.npz")


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_or_quantize(onnx_path, calib=None):
    """The CLI's helper: path of the int8 model for ``onnx_path``.

    With ``calib``, import + quantize and save ``<name>.int8.npz`` (and ``.int8.json``);
    without, reuse the saved file if it was made from this very ONNX file."""
    if not Path(onnx_path).is_file():
        raise OnnxImportError(f"{onnx_path}: no such ONNX file")
    out = int8_path(onnx_path)
    meta = out.with_suffix(".json")
    if calib is None:
        if not out.exists() or not meta.exists():
            raise OnnxImportError(f"{onnx_path}: no quantized model {out} yet; pass --calib "
                                  f"IMAGES.npz once to calibrate")
        if json.loads(meta.read_text()).get("onnx_sha256") != _sha256(onnx_path):
            raise OnnxImportError(f"{out} was quantized from a different version of "
                                  f"{onnx_path}; pass --calib to quantize again")
        load_model(out)
        return out
    model = import_onnx(onnx_path, calib)
    save_model(out, model)
    meta.write_text(json.dumps({"onnx": str(onnx_path), "onnx_sha256": _sha256(onnx_path),
                                "calib": str(calib), "input_scale": model.input_scale,
                                "input_zero_point": model.input_zero_point}, indent=1))
    return out


def to_model_input(model, images):
    """Images for ``npu run``: int8 in the model's layout pass through; float images in the
    ONNX layout (N, C, H, W) (or already (N, H, W, C), as an NHWC-input model takes them) are
    quantized with the model's input quantization. (N, C, H, W) wins when both fit."""
    x = np.asarray(images)
    if x.dtype == np.int8 or x.dtype.kind != "f":
        return x
    shp = tuple(model.input_shape)
    check_finite(x, "images")
    if x.ndim == 4 and len(shp) == 3 and x.shape[1:] == (shp[2], shp[0], shp[1]):
        x = x.transpose(0, 2, 3, 1)
    elif x.shape[1:] != shp:
        want = f"(N, {shp[2]}, {shp[0]}, {shp[1]})" if len(shp) == 3 else f"(N, {shp[0]})"
        raise OnnxImportError(f"float images of shape {x.shape}; the model takes {want} in the "
                              f"ONNX layout (or (N, {', '.join(map(str, shp))}))")
    q = np.floor(np.abs(x / model.input_scale) + 0.5) * np.sign(x / model.input_scale)
    return np.clip(q + model.input_zero_point, -128, 127).astype(np.int8)
