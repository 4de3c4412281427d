"""ONNX import: a float ONNX model -> the project's float architecture -> PTQ -> int8 model.

    from npu.onnx_import import import_onnx, onnx_to_arch
    arch, params = onnx_to_arch("model.onnx")               # float, NHWC (golden.float_model)
    model = import_onnx("model.onnx", "calib.npz")           # golden.model.Model (int8)

    npu run --model model.onnx --calib calib.npz --images 0:32   # the CLI does the same, then
                                                                 # compiles and runs the RTL

Accepted ONNX (opset 13 or newer, as written by ``torch.onnx.export`` or tf2onnx): one float32
input ``(N, C, H, W)`` or ``(N, F)`` (the batch axis may be symbolic; every other axis must be
a number), one output, and a *chain* of the operators below, each taking the previous one's
output (constants and initializers aside):

=====================================  ===================================================
ONNX                                   project layer (golden.float_model arch)
=====================================  ===================================================
Conv (square kernel, equal strides,    conv2d; weights OIHW -> K x N with K ordered
symmetric pads, dilation 1, group 1)   (kh, kw, cin); bias optional
Relu, Clip(0, 6), Clip(0, inf)         fused into the preceding conv2d/dense (relu, relu6),
                                       else an activation layer
LeakyRelu(alpha), Sigmoid, Tanh        activation layer (256-entry table)
MaxPool, AveragePool                   maxpool2d / avgpool2d (square, ceil_mode 0; average
                                       pooling with pads needs count_include_pad = 1)
GlobalAveragePool                      avgpool2d with kernel = H = W (square maps)
Gemm (transA 0), MatMul [+ Add]        dense (the Add's constant becomes the bias)
Add of a constant after Conv           folded into the conv bias
BatchNormalization after Conv/Gemm     folded into its weights and bias (inference form)
Flatten (axis 1), Reshape to (N, -1)   flatten (constant target shape, or the usual
                                       Shape/Gather/Unsqueeze/Concat subgraph)
Softmax (last axis of an (N, F) value) softmax
Transpose NHWC <-> NCHW                nothing: an NHWC input straight into Transpose(0, 3,
                                       1, 2), a Transpose(0, 2, 3, 1) before the flatten
                                       (tf2onnx's Keras export)
Identity, Dropout                      nothing (inference)
=====================================  ===================================================

Layout. ONNX tensors are NCHW, the project's are NHWC: the input and the calibration images
are transposed, conv weights go from OIHW to (kh, kw, cin) x cout, and a Flatten of an NCHW
map (order (c, h, w)) is turned into the project's flatten (order (h, w, c)) by permuting the
rows of the following Gemm/MatMul weights (elementwise activations in between carry the
permutation). A flatten of a map with C > 1 and H*W > 1 that reaches the graph output or a
softmax without a Gemm/MatMul is refused, since its element order would differ from ONNX's.

Anything else is refused with :class:`OnnxImportError` (a golden.model.ModelFormatError)
naming the file, the node (index, name, operator type) and the reason: an unsupported
operator, a dynamic shape, a grouped or dilated conv, a branch, an opset below 13, a file that
is not a valid ONNX model. No partial model is ever returned.

Calibration file (``--calib``): an ``.npz`` with ``images``, float, in the ONNX input layout
``(N, C, H, W)`` (``(N, H, W, C)`` for an NHWC-input model, ``(N, F)`` for a flat one), and optionally ``input_scale`` and ``input_zero_point`` (the
int8 quantization of the network input; default: :func:`golden.ptq.activation_qparams` of the
images' range). The quantization is golden.ptq's (per-tensor activations from the float ranges
on these images, per-channel symmetric weights); the int8 model is saved next to the ONNX file
as ``<name>.int8.npz`` with ``<name>.int8.json`` (the ONNX file's SHA-256), so a later run
without ``--calib`` reuses it (:func:`load_or_quantize`).
"""

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from golden import activation as _activation
from golden.float_model import forward, output_shapes
from golden.model import ModelFormatError, load_model, save_model
from golden.ptq import activation_qparams, quantize_model

__all__ = ["OnnxImportError", "SUPPORTED_OPS", "MIN_OPSET", "onnx_to_arch", "load_calibration",
           "import_onnx", "load_or_quantize", "int8_path", "to_model_input", "nchw_forward"]

MIN_OPSET = 13
SUPPORTED_OPS = ("Conv", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "MaxPool",
                 "AveragePool", "GlobalAveragePool", "Gemm", "MatMul", "Add", "Flatten",
                 "Reshape", "Softmax", "BatchNormalization", "Transpose", "Identity",
                 "Dropout")
# Nodes that only compute shapes or constants (folded at import time).
_SHAPE_OPS = ("Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice")
_BATCH = 2 ** 31 - 7   # stands for the (symbolic) batch size while folding shape subgraphs


class OnnxImportError(ModelFormatError):
    """An ONNX file that cannot become a model of this project (see the module docstring)."""


def _node_where(source, idx, node):
    name = node.name or f"#{idx}"
    return f"{source}: node {idx} {name!r} ({node.op_type})"


def _attrs(node):
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


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
    if alpha == _activation.LEAKY_SLOPE:
        return "leaky_relu"
    name = f"leaky_relu_{alpha:.6g}"
    if name not in _activation.ACTIVATIONS:
        a = float(alpha)
        _activation.ACTIVATIONS[name] = lambda x, a=a: np.where(
            np.asarray(x) >= 0, np.asarray(x, np.float64), a * np.asarray(x, np.float64))
    return name


class _Importer:
    def __init__(self, proto, source):
        self.proto, self.source = proto, source
        self.layers, self.params, self.names = [], {}, set()
        self.consts = {}          # tensor name -> numpy value (initializers, folded nodes)
        self.runtime = set()      # tensors of constant computations the importer cannot fold
        self.shapes = {}          # data tensor name -> ONNX shape (batch = _BATCH)
        self.perm = None          # pending (h, w, c)-index of each (c, h, w) flat position
        self.pending_bias_ok = False

    def fail(self, msg, idx=None, node=None):
        where = self.source if node is None else _node_where(self.source, idx, node)
        raise OnnxImportError(f"{where}: {msg}")

    # ------------------------------------------------------------------ graph-level checks
    def check_model(self):
        import onnx
        try:
            onnx.checker.check_model(self.proto)
        except Exception as e:
            self.fail(f"not a valid ONNX model ({type(e).__name__}): {str(e).strip()[:400]}")
        opset = None
        for o in self.proto.opset_import:
            if o.domain in ("", "ai.onnx"):
                opset = o.version
        if opset is None or opset < MIN_OPSET:
            self.fail(f"opset {opset} of the default domain; the importer needs opset "
                      f">= {MIN_OPSET} (re-export with opset_version={MIN_OPSET} or newer)")
        g = self.proto.graph
        init = {t.name for t in g.initializer}
        from onnx import numpy_helper
        for t in g.initializer:
            self.consts[t.name] = numpy_helper.to_array(t)
        inputs = [i for i in g.input if i.name not in init]
        if len(inputs) != 1:
            self.fail(f"the graph has {len(inputs)} inputs "
                      f"({', '.join(i.name for i in inputs)}); exactly one is supported")
        if len(g.output) != 1:
            self.fail(f"the graph has {len(g.output)} outputs; exactly one is supported")
        inp = inputs[0]
        consumer = next(((i, n) for i, n in enumerate(g.node) if inp.name in n.input),
                        (None, None))
        tt = inp.type.tensor_type
        if not inp.type.HasField("tensor_type") or tt.elem_type != onnx.TensorProto.FLOAT:
            self.fail(f"graph input {inp.name!r} must be a float32 tensor", *consumer)
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
                          *consumer)
        if len(dims) not in (2, 4):
            self.fail(f"graph input {inp.name!r} has rank {len(dims)}; an (N, C, H, W) or "
                      f"(N, F) input is supported", *consumer)
        self.static_batch = dims[0] if dims[0] != _BATCH else None
        dims[0] = _BATCH
        self.input_name = inp.name
        self.shapes[inp.name] = tuple(dims)
        # NCHW, as ONNX defines it; NHWC if the input goes straight into a
        # Transpose(0, 3, 1, 2) (tf2onnx's export of a Keras model)
        self.lay = None
        if len(dims) == 4:
            self.lay = "nchw"
            i, first = consumer
            if first is not None and first.op_type == "Transpose" and \
                    list(_attrs(first).get("perm", [])) == [0, 3, 1, 2]:
                self.lay = "nhwc"
        self.input_layout = self.lay.upper() if self.lay else None
        self.input_shape = (tuple(dims[1:]) if self.lay == "nhwc" else
                            tuple(dims[2:]) + (dims[1],) if self.lay else (dims[1],))

    # ------------------------------------------------------------------ helpers
    def const(self, name, idx, node, what):
        if name in self.runtime:
            self.fail(f"dynamic shape: {what} ({name!r}) is computed at run time (the "
                      f"importer folds only {', '.join(_SHAPE_OPS)} on static shapes)",
                      idx, node)
        if name not in self.consts:
            self.fail(f"{what} ({name!r}) must be a constant (initializer or Constant node); "
                      f"it is computed at run time", idx, node)
        return self.consts[name]

    def new_name(self, node, idx, default):
        base = (node.name or default).strip("/").replace("/", "_") or default
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def last_gemm(self):
        if self.layers and self.layers[-1]["type"] in ("conv2d", "dense"):
            return self.layers[-1]
        return None

    def add_activation(self, fn, node, idx):
        """Fuse relu/relu6 into the preceding conv/dense; else a table activation layer.

        Every supported activation is non-decreasing, so it commutes with max pooling (and
        with flatten): after ``Conv -> MaxPool -> Relu`` (PyTorch's
        ``relu(max_pool2d(conv(x)))``) it moves up to the conv, exactly, where the
        accelerator applies it."""
        at = len(self.layers)
        while at > 0 and self.layers[at - 1]["type"] in ("maxpool2d", "flatten"):
            at -= 1
        if at == len(self.layers) or not (at and self.layers[at - 1]["type"] in ("conv2d",
                                                                               "dense")):
            at = len(self.layers)
        last = self.layers[at - 1] if at and self.layers[at - 1]["type"] in ("conv2d",
                                                                            "dense") else None
        if fn in ("relu", "relu6") and last is not None and last["activation"] == "none":
            last["activation"] = fn
        else:
            self.layers.insert(at, {"type": "activation", "name": self.new_name(node, idx, fn),
                                    "function": fn})
        self.pending_bias_ok = False

    # ------------------------------------------------------------------ shape folding
    def fold(self, node, idx):
        """Evaluate a Constant/Shape/... node whose inputs are known; False if it is not one."""
        from onnx import numpy_helper
        a = _attrs(node)
        op = node.op_type
        if op == "Constant":
            if "value" not in a:
                self.fail("only Constant nodes with a 'value' tensor are supported", idx, node)
            self.consts[node.output[0]] = numpy_helper.to_array(a["value"])
            return True
        if op == "Shape":
            src = node.input[0]
            if src not in self.shapes:
                return False
            shp = np.array(self.shapes[src], np.int64)
            start, end = a.get("start", 0), a.get("end", None)
            self.consts[node.output[0]] = shp[start:end]
            return True
        ins = [n for n in node.input if n]
        if not all(n in self.consts for n in ins):
            return False
        v = [self.consts[n] for n in ins]
        try:
            if op == "Gather":
                out = np.take(v[0], v[1].astype(np.int64), axis=a.get("axis", 0))
            elif op == "Unsqueeze":
                out = np.expand_dims(v[0], tuple(int(x) for x in v[1]))
            elif op == "Squeeze":
                out = np.squeeze(v[0], tuple(int(x) for x in v[1])) if len(v) > 1 else \
                    np.squeeze(v[0])
            elif op == "Concat":
                out = np.concatenate([np.atleast_1d(x) for x in v], axis=a.get("axis", 0))
            elif op == "Cast":
                out = v[0].copy()
            elif op == "Slice":
                starts, ends = v[1], v[2]
                axes = v[3] if len(v) > 3 else np.arange(len(starts))
                steps = v[4] if len(v) > 4 else np.ones(len(starts), np.int64)
                sl = [slice(None)] * v[0].ndim
                for s, e, ax, st in zip(starts, ends, axes, steps):
                    sl[int(ax)] = slice(int(s), int(e), int(st))
                out = v[0][tuple(sl)]
            else:
                return False
        except Exception as e:
            self.fail(f"cannot evaluate this shape computation: {e}", idx, node)
        self.consts[node.output[0]] = np.asarray(out)
        return True

    # ------------------------------------------------------------------ the chain
    def run(self):
        g = self.proto.graph
        cur = self.input_name
        for idx, node in enumerate(g.node):
            op = node.op_type
            if node.domain not in ("", "ai.onnx"):
                self.fail(f"operator of domain {node.domain!r} is not supported; supported: "
                          f"{', '.join(SUPPORTED_OPS)}", idx, node)
            reads_data = any(i in self.shapes for i in node.input if i)
            if op == "Shape" or not reads_data:
                # a shape/constant computation: folded, or (if the importer cannot) a value
                # known only at run time, refused where a constant is needed
                if not self.fold(node, idx):
                    self.runtime.update(node.output)
                continue
            if op in _SHAPE_OPS:
                self.fail(f"unsupported operator {op} on activation data (only shape "
                          f"computations feeding a Reshape are accepted); supported: "
                          f"{', '.join(SUPPORTED_OPS)}", idx, node)
            if op not in SUPPORTED_OPS:
                hint = (" (the input must be NCHW, as ONNX defines it: export with NCHW "
                        "inputs, e.g. tf2onnx --inputs-as-nchw)" if op == "Transpose" else "")
                self.fail(f"unsupported operator {op}{hint}; supported: "
                          f"{', '.join(SUPPORTED_OPS)}", idx, node)
            data = [i for i in node.input if i and i in self.shapes]
            if data != [cur] or node.input[0] != cur:
                if op in ("Add", "MatMul") and data == [cur]:
                    pass    # commutative Add, or MatMul with a constant first operand
                else:
                    self.fail(f"the model is not a simple chain: this node's data inputs are "
                              f"{data}, expected just the previous output {cur!r} (branches, "
                              f"skip connections and multiple inputs are not supported)",
                              idx, node)
            if op == "MatMul" and node.input[0] != cur:
                self.fail("MatMul with a constant first operand is not supported", idx, node)
            out_shape = self.convert(node, idx, cur, self.shapes[cur])
            if len([o for o in node.output if o]) != 1 and op != "Dropout":
                self.fail(f"{len(node.output)} outputs; one is supported", idx, node)
            cur = node.output[0]
            self.shapes[cur] = out_shape
        if g.output[0].name != cur:
            self.fail(f"the graph output {g.output[0].name!r} is not the end of the chain "
                      f"({cur!r})")
        if self.perm is not None:
            self.fail("a Flatten/Reshape of an NCHW map with C > 1 and H*W > 1 must be followed "
                      "by Gemm/MatMul (its (c, h, w) order differs from the accelerator's "
                      "(h, w, c))")
        if not self.layers:
            self.fail("the model has no layers")

    def _conv_geometry(self, a, kshape, spatial, idx, node, what):
        k = list(kshape)
        if len(k) != 2 or k[0] != k[1]:
            self.fail(f"{what} kernel {k} is not square (k x k); only square kernels are "
                      f"supported", idx, node)
        strides = list(a.get("strides", [1, 1]))
        if len(set(strides)) != 1:
            self.fail(f"strides {strides} differ between H and W", idx, node)
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            self.fail(f"dilations {list(a['dilations'])} are not supported (only 1)", idx, node)
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("NOTSET", "VALID"):
            pads = [0] * 4 if auto == "VALID" else list(a.get("pads", [0, 0, 0, 0]))
        else:   # SAME_UPPER / SAME_LOWER: symmetric only when the total pad is even
            s = strides[0]
            tot = [max((-(-d // s) - 1) * s + k[0] - d, 0) for d in spatial]
            if any(t % 2 for t in tot) or tot[0] != tot[1]:
                self.fail(f"auto_pad {auto} gives asymmetric padding {tot} here; only "
                          f"symmetric padding is supported", idx, node)
            pads = [tot[0] // 2] * 4
        if len(set(pads)) != 1:
            self.fail(f"asymmetric pads {pads}; only equal padding on all four sides is "
                      f"supported", idx, node)
        return k[0], strides[0], pads[0]

    def convert(self, node, idx, cur, shp):
        op, a = node.op_type, _attrs(node)
        rank4 = len(shp) == 4
        if op in ("Identity", "Dropout"):
            return shp
        if op in ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool") and (
                not rank4 or self.lay != "nchw"):
            self.fail(f"needs an (N, C, H, W) input, got shape {self._fmt(shp)}"
                      + (" in NHWC order (transpose it to NCHW first)" if rank4 else ""),
                      idx, node)
        if op == "Transpose":
            perm = list(a.get("perm", []))
            if rank4 and self.lay == "nhwc" and perm == [0, 3, 1, 2]:
                self.lay = "nchw"
                return (shp[0], shp[3], shp[1], shp[2])
            if rank4 and self.lay == "nchw" and perm == [0, 2, 3, 1]:
                self.lay = "nhwc"
                return (shp[0], shp[2], shp[3], shp[1])
            self.fail(f"Transpose with perm {perm} of a {self.lay or 'rank-2'} tensor is not "
                      f"supported (only NHWC <-> NCHW of 4-D data, as tf2onnx writes them)",
                      idx, node)
        if op == "Conv":
            w = self.const(node.input[1], idx, node, "the weight").astype(np.float32)
            if a.get("group", 1) != 1:
                self.fail(f"grouped convolution (group = {a['group']}) is not supported; only "
                          f"group = 1", idx, node)
            if w.ndim != 4:
                self.fail(f"weight of rank {w.ndim}; a 2-D convolution (OIHW) is supported",
                          idx, node)
            cout, cin, kh, kw = w.shape
            if cin != shp[1]:
                self.fail(f"weights expect {cin} input channels, the input has {shp[1]}",
                          idx, node)
            k, s, p = self._conv_geometry(a, a.get("kernel_shape", [kh, kw]), shp[2:], idx,
                                          node, "Conv")
            if p >= k:
                self.fail(f"padding {p} >= kernel {k} is not supported", idx, node)
            b = (self.const(node.input[2], idx, node, "the bias").astype(np.float32)
                 if len(node.input) > 2 and node.input[2] else np.zeros(cout, np.float32))
            name = self.new_name(node, idx, "conv")
            self.layers.append({"type": "conv2d", "name": name, "kernel": k, "stride": s,
                                "padding": p, "in_channels": cin, "out_channels": cout,
                                "activation": "none"})
            self.params[name] = {"weights": np.ascontiguousarray(
                w.transpose(2, 3, 1, 0).reshape(k * k * cin, cout)), "bias": b.reshape(-1)}
            self.pending_bias_ok = True
            ho = (shp[2] + 2 * p - k) // s + 1
            wo = (shp[3] + 2 * p - k) // s + 1
            if ho < 1 or wo < 1:
                self.fail(f"kernel {k} does not fit the {shp[2]}x{shp[3]} input", idx, node)
            return (shp[0], cout, ho, wo)
        if op in ("MaxPool", "AveragePool", "GlobalAveragePool"):
            self.pending_bias_ok = False
            if op == "GlobalAveragePool":
                if shp[2] != shp[3]:
                    self.fail(f"global pooling of a non-square {shp[2]}x{shp[3]} map is not "
                              f"supported", idx, node)
                k, s, p = shp[2], 1, 0
                typ = "avgpool2d"
            else:
                if a.get("ceil_mode", 0):
                    self.fail("ceil_mode = 1 is not supported", idx, node)
                if a.get("storage_order", 0):
                    self.fail("storage_order = 1 is not supported", idx, node)
                k, s, p = self._conv_geometry(a, a["kernel_shape"], shp[2:], idx, node, op)
                typ = "maxpool2d" if op == "MaxPool" else "avgpool2d"
                if typ == "avgpool2d" and p and not a.get("count_include_pad", 0):
                    self.fail("average pooling with padding needs count_include_pad = 1 (the "
                              "accelerator divides by k*k)", idx, node)
                if p > k // 2:
                    self.fail(f"padding {p} > kernel // 2 is not supported", idx, node)
            if k > shp[2] + 2 * p or k > shp[3] + 2 * p:
                self.fail(f"kernel {k} does not fit the {shp[2]}x{shp[3]} input", idx, node)
            self.layers.append({"type": typ, "name": self.new_name(node, idx, typ[:7]),
                                "kernel": k, "stride": s, "padding": p})
            return (shp[0], shp[1], (shp[2] + 2 * p - k) // s + 1,
                    (shp[3] + 2 * p - k) // s + 1)
        if op == "Relu":
            self.add_activation("relu", node, idx)
            return shp
        if op == "Clip":
            lo = (float(self.const(node.input[1], idx, node, "min"))
                  if len(node.input) > 1 and node.input[1] else -math.inf)
            hi = (float(self.const(node.input[2], idx, node, "max"))
                  if len(node.input) > 2 and node.input[2] else math.inf)
            if lo == 0 and hi == 6:
                self.add_activation("relu6", node, idx)
            elif lo == 0 and hi == math.inf:
                self.add_activation("relu", node, idx)
            else:
                self.fail(f"Clip({lo}, {hi}) is not supported; only Clip(0, 6) (ReLU6) and "
                          f"Clip(0, inf) (ReLU)", idx, node)
            return shp
        if op in ("LeakyRelu", "Sigmoid", "Tanh"):
            fn = {"Sigmoid": "sigmoid", "Tanh": "tanh"}.get(op) or _leaky(a.get("alpha", 0.01))
            self.add_activation(fn, node, idx)
            return shp
        if op in ("Flatten", "Reshape"):
            self.pending_bias_ok = False
            if op == "Flatten":
                axis = a.get("axis", 1)
                axis = axis + len(shp) if axis < 0 else axis
                if axis != 1:
                    self.fail(f"Flatten axis {a.get('axis')} is not supported (only 1: keep the "
                              f"batch)", idx, node)
            else:
                t = [int(v) for v in np.asarray(
                    self.const(node.input[1], idx, node, "the target shape")).ravel()]
                feat = int(np.prod(shp[1:]))
                ok = (len(t) == 2 and t[0] in (_BATCH, 0, -1, self.static_batch)
                      and t[1] in (-1, feat) and t != [-1, -1])
                if not ok:
                    tt = ["N" if v == _BATCH else v for v in t]
                    self.fail(f"Reshape to {tt} is not a flatten to (N, {feat}) (only "
                              f"Reshape as flatten is supported)", idx, node)
            if rank4:
                if self.lay == "nhwc":      # (h, w, c) order already: no permutation
                    _, h, w, c = shp
                else:
                    _, c, h, w = shp
                self.layers.append({"type": "flatten", "name": self.new_name(node, idx,
                                                                            "flatten")})
                nchw, self.lay = self.lay == "nchw", None
                if nchw and c > 1 and h * w > 1:
                    # flat ONNX index (c, y, x) -> flat project index (y, x, c)
                    ci, yi, xi = np.meshgrid(np.arange(c), np.arange(h), np.arange(w),
                                             indexing="ij")
                    self.perm = ((yi * w + xi) * c + ci).ravel()
                return (shp[0], c * h * w)
            return shp
        if op in ("Gemm", "MatMul"):
            if rank4:
                self.fail(f"needs a 2-D (N, F) input (put a Flatten first), got shape "
                          f"{self._fmt(shp)}", idx, node)
            w = self.const(node.input[1], idx, node, "the weight").astype(np.float64)
            if w.ndim != 2:
                self.fail(f"weight of rank {w.ndim}; a 2-D weight is supported", idx, node)
            b = None
            if op == "Gemm":
                if a.get("transA", 0):
                    self.fail("transA = 1 is not supported", idx, node)
                if a.get("transB", 0):
                    w = w.T
                w = w * a.get("alpha", 1.0)
                if len(node.input) > 2 and node.input[2]:
                    b = self.const(node.input[2], idx, node, "the bias").astype(np.float64)
                    b = np.broadcast_to(b * a.get("beta", 1.0), (1, w.shape[1]))
            k_dim, n_dim = w.shape
            if k_dim != shp[1]:
                self.fail(f"weight has {k_dim} rows, the input has {shp[1]} features",
                          idx, node)
            if self.perm is not None:
                wp = np.empty_like(w)
                wp[self.perm] = w        # row for ONNX feature i moves to project index perm[i]
                w, self.perm = wp, None
            name = self.new_name(node, idx, "dense")
            self.layers.append({"type": "dense", "name": name, "in_features": k_dim,
                                "out_features": n_dim, "activation": "none"})
            self.params[name] = {"weights": w.astype(np.float32),
                                 "bias": (np.zeros(n_dim) if b is None else b.reshape(-1))
                                 .astype(np.float32)}
            self.pending_bias_ok = True
            return (shp[0], n_dim)
        if op == "Add":
            other = node.input[1] if node.input[0] == cur else node.input[0]
            b = np.asarray(self.const(other, idx, node, "the addend"), np.float32)
            last = self.last_gemm()
            if last is None or not self.pending_bias_ok or last["activation"] != "none":
                self.fail("Add is only supported as the bias right after Conv/Gemm/MatMul",
                          idx, node)
            n = last.get("out_channels") or last["out_features"]
            ok_shapes = ([(n,), (1, n)] if last["type"] == "dense"
                         else [(n, 1, 1), (1, n, 1, 1)])
            if b.shape not in ok_shapes and b.size != 1:
                self.fail(f"Add of a constant of shape {b.shape}; a per-channel bias "
                          f"{' or '.join(map(str, ok_shapes))} is supported", idx, node)
            p = self.params[last["name"]]
            p["bias"] = (p["bias"] + np.broadcast_to(b.reshape(-1), (n,))).astype(np.float32)
            return shp
        if op == "BatchNormalization":
            last = self.last_gemm()
            if last is None or not self.pending_bias_ok or last["activation"] != "none":
                self.fail("BatchNormalization is only supported right after Conv/Gemm/MatMul "
                          "(it is folded into the weights and bias)", idx, node)
            if a.get("training_mode", 0):
                self.fail("training_mode = 1 is not supported", idx, node)
            gamma, beta, mean, var = (np.asarray(self.const(n, idx, node, what), np.float64)
                                      for n, what in zip(node.input[1:5], (
                                          "scale", "B", "input_mean", "input_var")))
            k = gamma / np.sqrt(var + a.get("epsilon", 1e-5))
            p = self.params[last["name"]]
            p["weights"] = (p["weights"].astype(np.float64) * k).astype(np.float32)
            p["bias"] = ((p["bias"].astype(np.float64) - mean) * k + beta).astype(np.float32)
            return shp
        if op == "Softmax":
            axis = a.get("axis", -1)
            if rank4 or axis not in (-1, len(shp) - 1):
                self.fail(f"softmax over axis {axis} of a {self._fmt(shp)} tensor; only the "
                          f"last axis of an (N, F) tensor is supported", idx, node)
            if self.perm is not None:
                self.fail("softmax right after a flatten of an NCHW map (element order)",
                          idx, node)
            self.layers.append({"type": "softmax", "name": self.new_name(node, idx, "softmax")})
            return shp
        self.fail(f"unsupported operator {op}", idx, node)   # pragma: no cover

    @staticmethod
    def _fmt(shp):
        return "(" + ", ".join("N" if v == _BATCH else str(v) for v in shp) + ")"


def onnx_to_arch(path_or_proto, name=None):
    """A float ONNX model -> ``(arch, params)`` of :mod:`golden.float_model` (NHWC).

    Raises :class:`OnnxImportError` for anything outside the supported subset."""
    proto, source = _load_proto(path_or_proto)
    imp = _Importer(proto, source)
    imp.check_model()
    imp.run()
    if name is None:
        name = (Path(source).stem if not isinstance(path_or_proto, type(proto))
                else proto.graph.name) or "onnx_model"
    arch = {"name": str(name).replace("/", "_"), "input_shape": list(imp.input_shape),
            "onnx_input_layout": imp.input_layout,
            "layers": imp.layers}
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
        with np.load(path, allow_pickle=False) as f:
            if "images" not in f.files:
                raise OnnxImportError(f"{path}: the calibration file needs an 'images' array")
            images = np.asarray(f["images"], np.float32)
            s = float(f["input_scale"]) if "input_scale" in f.files else None
            z = int(f["input_zero_point"]) if "input_zero_point" in f.files else None
    except OnnxImportError:
        raise
    except Exception as e:
        raise OnnxImportError(f"{path}: cannot read the calibration .npz: {e}") from None
    return images, s, z


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
    if x.ndim == 4 and len(shp) == 3 and x.shape[1:] == (shp[2], shp[0], shp[1]):
        x = x.transpose(0, 2, 3, 1)
    q = np.floor(np.abs(x / model.input_scale) + 0.5) * np.sign(x / model.input_scale)
    return np.clip(q + model.input_zero_point, -128, 127).astype(np.int8)
