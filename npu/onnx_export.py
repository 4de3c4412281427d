"""ONNX export of the project's models, and the onnxruntime comparison report.

    npu onnx --compare        # the figures in the README (or python -m npu.onnx_export --compare)
    npu onnx                  # just write the files (build/onnx/)

* :func:`export_float`: a float architecture (:mod:`golden.float_model`, a chain or a graph)
  as an ONNX model in the layout PyTorch exports: input ``(N, C, H, W)`` float32 with a
  symbolic batch, Conv (OIHW weights; depthwise: group = channels; kernel, strides and pads
  [top, left, bottom, right] from the layer's window), Add, Relu / Clip(0, 6), MaxPool /
  AveragePool (count_include_pad 1 for count "kernel", 0 for "valid"), Flatten (the (c, h, w)
  order, so the first Gemm's weight rows are permuted from the project's (h, w, c)), Gemm
  (transB = 1), LeakyRelu / Sigmoid / Tanh, Softmax. Opset 13.
* :func:`export_qdq`: an int8 model (:mod:`golden.model`) in the QDQ format: every activation
  goes through QuantizeLinear/DequantizeLinear with the layer's scale and zero point; weights
  are the model's int8 tensors (OIHW / (N, K)) behind a per-channel DequantizeLinear (scale
  ``weight_scale``, zero point 0), biases the model's int32 tensors behind a DequantizeLinear
  with scale ``S_x * S_w[n]``. onnxruntime fuses these into QLinearConv / QGemm / ... integer
  kernels. ONNX scales are float32, so every scale is the project's float64 value rounded to
  float32; the exact float64 values are in the model's ``metadata_props``
  (``npu.quantization``, JSON). The int8 output of every layer is a graph output too
  (``<layer>_q``) for the per-layer comparison.
* :func:`compare`: the reference CNN (committed float weights, int8 model, 359 test images)
  through onnxruntime: the float ONNX against :func:`golden.float_model.forward` (max absolute
  difference) and the QDQ ONNX against the golden integer inference (per layer: fraction of
  bit-exact int8 values, maximum difference in LSBs; top-1 agreement), end to end and with
  each layer fed the golden input of that layer ("isolated").

Rounding: onnxruntime's CPU kernels requantize in float32 (``acc * (S_x S_w / S_y)``) and round
half to even; the golden model (TFLite) multiplies by a 31-bit fixed-point mantissa and rounds
half away from zero. For the same input the two agree except where ``acc * M`` lies within the
float32 error of a rounding tie, and there they differ by exactly 1 LSB, so with the golden
input each layer is within 1 LSB (asserted by tests/test_onnx.py); end to end a 1-LSB
difference can grow by the next layers' gain, which the report measures.
"""

import argparse
import json
from pathlib import Path

import numpy as np

__all__ = ["export_float", "export_qdq", "export_reference", "flatten_perm",
           "golden_to_onnx_layout", "near_tie", "qdq_layer_diffs", "compare", "OPSET"]

OPSET = 13
_ACT_OPS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}


def flatten_perm(h, w, c):
    """``perm[i]``: the project's (h, w, c) flat index of ONNX (c, h, w) flat index ``i``."""
    ci, yi, xi = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    return ((yi * w + xi) * c + ci).ravel()


class _Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, name, value):
        from onnx import numpy_helper
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op, inputs, name, **attrs):
        from onnx import helper
        out = f"{name}_out" if "out" not in attrs else attrs.pop("out")
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def model(self, name, input_name, in_shape, outputs, metadata=None):
        import onnx
        from onnx import helper
        x = helper.make_tensor_value_info(input_name, onnx.TensorProto.FLOAT, ["N", *in_shape])
        outs = [helper.make_tensor_value_info(o, dt, ["N", *_onnx_in_shape(shp)])
                for o, dt, shp in outputs]
        g = helper.make_graph(self.nodes, name, [x], outs, initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="int8-npu")
        m.ir_version = 8
        for k, v in (metadata or {}).items():
            p = m.metadata_props.add()
            p.key, p.value = k, v
        onnx.checker.check_model(m)
        return m


def _act_node(g, fn, x, name):
    if fn in _ACT_OPS:
        return g.node(_ACT_OPS[fn], [x], name)
    if fn == "relu6":
        return g.node("Clip", [x, g.const(f"{name}_min", np.float32(0)),
                               g.const(f"{name}_max", np.float32(6))], name)
    if fn.startswith("leaky_relu"):
        from golden.activation import LEAKY_SLOPE
        alpha = LEAKY_SLOPE if fn == "leaky_relu" else float(fn[len("leaky_relu_"):])
        return g.node("LeakyRelu", [x], name, alpha=alpha)
    raise ValueError(f"activation {fn!r} has no ONNX export here (relu, relu6, leaky_relu, "
                     f"sigmoid, tanh)")


def _onnx_in_shape(shape):
    return [shape[2], shape[0], shape[1]] if len(shape) == 3 else list(shape)


def _window_attrs(win):
    """ONNX Conv/pool attributes of a golden.conv.Window (pads: top, left, bottom, right)."""
    return {"kernel_shape": [win.kh, win.kw], "strides": [win.sy, win.sx],
            "pads": [win.pt, win.pl, win.pb, win.pr]}


def _pool_node(g, typ, win, count, x, name):
    kw = _window_attrs(win)
    if typ == "avgpool2d":
        kw["count_include_pad"] = int(count == "kernel")
    return g.node("MaxPool" if typ == "maxpool2d" else "AveragePool", [x], name, **kw)


def _conv_weights(typ, w, win, n):
    """The project's GEMM weights ``(K, N)`` as ONNX OIHW (``(C, 1, kh, kw)`` depthwise)."""
    if typ == "depthwise_conv2d":
        return np.ascontiguousarray(w.reshape(win.kh, win.kw, n).transpose(2, 0, 1)[:, None])
    return np.ascontiguousarray(w.reshape(win.kh, win.kw, -1, n).transpose(3, 2, 0, 1))


def _conv_node(g, typ, win, n, x, w, b, name):
    group = {"group": n} if typ == "depthwise_conv2d" else {}
    return g.node("Conv", [x, w, b], name, **_window_attrs(win), **group)


def export_float(arch, params, path=None):
    """Float ONNX of ``(arch, params)`` (a chain or a graph); returns the ModelProto (and
    saves it to ``path``). Window geometry (non-square kernels and strides, asymmetric
    padding) comes from each layer's :class:`golden.conv.Window`."""
    from golden.float_model import layer_inputs, output_shapes, window
    shapes = output_shapes(arch)
    g = _Graph()
    env = {"input": ("input", tuple(arch["input_shape"]), None)}   # tensor, shape, perm
    names = []
    for i, (L, ins, out_shape) in enumerate(zip(arch["layers"], layer_inputs(arch), shapes)):
        t, name = L["type"], L.get("name") or f"{L['type']}{i}"
        names.append(name)
        x, shape, perm = env[ins[0]]
        if t in ("conv2d", "depthwise_conv2d"):
            win, n = window(L), out_shape[-1]
            w = _conv_weights(t, np.asarray(params[name]["weights"], np.float32), win, n)
            x = _conv_node(g, t, win, n, x, g.const(f"{name}.weight", w),
                           g.const(f"{name}.bias", np.asarray(params[name]["bias"],
                                                              np.float32)), name)
        elif t == "dense":
            w = np.asarray(params[name]["weights"], np.float32)
            if perm is not None:
                w, perm = w[perm], None
            x = g.node("Gemm", [x, g.const(f"{name}.weight", np.ascontiguousarray(w.T)),
                                g.const(f"{name}.bias", np.asarray(params[name]["bias"],
                                                                   np.float32))], name,
                       transB=1)
        elif t in ("maxpool2d", "avgpool2d"):
            x = _pool_node(g, t, window(L), L.get("count", "kernel"), x, name)
        elif t == "flatten":
            if len(shape) == 3:
                perm = flatten_perm(*shape)
            x = g.node("Flatten", [x], name, axis=1)
        elif t == "activation":
            x = _act_node(g, L["function"], x, name)
        elif t == "softmax":
            x = g.node("Softmax", [x], name, axis=-1)
        elif t == "add":
            x = g.node("Add", [x, env[ins[1]][0]], name)
        if t in ("conv2d", "depthwise_conv2d", "dense", "add") and \
                L.get("activation", "none") != "none":
            x = _act_node(g, L["activation"], x, f"{name}_{L['activation']}")
        env[name] = (x, out_shape, perm)
    import onnx
    out = env[arch.get("output", names[-1])]
    m = g.model(arch.get("name", "model"), "input", _onnx_in_shape(arch["input_shape"]),
                [(out[0], onnx.TensorProto.FLOAT, out[1])])
    if path is not None:
        onnx.save(m, str(path))
    return m


def export_qdq(model, path=None, start=0):
    """QDQ ONNX of the int8 ``model`` (layers ``start`` ..; with ``start`` > 0 a chain from
    there, its first layer reading the graph input); returns the ModelProto.

    The graph input is float in the ONNX layout, quantized by the first layer's input
    quantization; graph outputs: the model's output dequantized, then ``<layer>_q`` (int8)
    of every layer."""
    import onnx
    layers = model.layers[start:]
    first = layers[0]
    g = _Graph()
    s_in, z_in = first.attrs["input"]["scale"], first.attrs["input"]["zero_point"]

    def qdq(x, s, z, name):
        sc = g.const(f"{name}_scale", np.float32(s))
        zp = g.const(f"{name}_zp", np.int8(z))
        q = g.node("QuantizeLinear", [x, sc, zp], f"{name}_quant", out=f"{name}_q")
        return q, g.node("DequantizeLinear", [q, sc, zp], f"{name}_dequant")

    q_in, x_in = qdq("input", s_in, z_in, "input")
    in_name = first.inputs[0] if start else "input"
    env = {in_name: (x_in, None)}               # tensor -> (dequantized ONNX tensor, perm)
    outputs, quant = [], {"input": [s_in, z_in]}
    in_shape = first.in_shape
    for L in layers:
        a, name, t = L.attrs, L.name, L.type
        if any(n not in env for n in L.inputs):
            raise ValueError(f"layer {name!r} reads {L.inputs}, not all computed from layer "
                             f"{start} on: export the whole graph (start = 0)")
        x, perm = env[L.inputs[0]]
        s_x = a["input"]["scale"]
        s_y, z_y = a["output"]["scale"], a["output"]["zero_point"]
        quant[name] = {"output": [s_y, z_y]}
        if t in ("conv2d", "depthwise_conv2d", "dense"):
            wq, ws = L.tensors["weights"], L.tensors["weight_scale"]
            n = wq.shape[1]
            if t == "dense":
                if perm is not None:
                    wq, perm = wq[perm], None
                w_onnx = wq.T
            else:
                w_onnx = _conv_weights(t, wq, L.window, n)
            wd = g.node("DequantizeLinear", [
                g.const(f"{name}.weight_int8", np.ascontiguousarray(w_onnx).astype(np.int8)),
                g.const(f"{name}.weight_scale", ws.astype(np.float32)),
                g.const(f"{name}.weight_zp", np.zeros(n, np.int8))], f"{name}_wdq", axis=0)
            bd = g.node("DequantizeLinear", [
                g.const(f"{name}.bias_int32", L.tensors["bias"].astype(np.int32)),
                g.const(f"{name}.bias_scale", (s_x * ws).astype(np.float32)),
                g.const(f"{name}.bias_zp", np.zeros(n, np.int32))], f"{name}_bdq", axis=0)
            if t == "dense":
                y = g.node("Gemm", [x, wd, bd], name, transB=1)
            else:
                y = _conv_node(g, t, L.window, n, x, wd, bd, name)
            quant[name].update(weight_scale=ws.tolist(), bias_scale=(s_x * ws).tolist())
        elif t in ("maxpool2d", "avgpool2d"):
            y = _pool_node(g, t, L.window, a.get("count", "kernel"), x, name)
        elif t == "flatten":
            if len(L.in_shape) == 3:
                perm = flatten_perm(*L.in_shape)
            y = g.node("Flatten", [x], name, axis=1)
        elif t == "activation":
            y = _act_node(g, a.get("function", ""), x, name)
        elif t == "softmax":
            y = g.node("Softmax", [x], name, axis=-1)
        elif t == "add":
            y = g.node("Add", [x, env[L.inputs[1]][0]], name)
        else:
            raise ValueError(f"layer {name!r}: type {t} has no QDQ export")
        if t in ("conv2d", "depthwise_conv2d", "dense", "add") and \
                a.get("fused_activation", "none") != "none":
            y = _act_node(g, a["fused_activation"], y, f"{name}_{a['fused_activation']}")
        q, x = qdq(y, s_y, z_y, name)
        env[name] = (x, perm)
        outputs.append((q, onnx.TensorProto.INT8, L.out_shape))
    meta = {"npu.quantization": json.dumps(quant)}
    out = model.output if model.output in env else layers[-1].name
    m = g.model(f"{model.name}_qdq", "input", _onnx_in_shape(in_shape),
                [(env[out][0], onnx.TensorProto.FLOAT, model.layer(out).out_shape),
                 (q_in, onnx.TensorProto.INT8, in_shape)] + outputs, meta)
    if path is not None:
        onnx.save(m, str(path))
    return m


def golden_to_onnx_layout(L, y):
    """A golden layer output (NHWC / (h, w, c) flattened) in the ONNX layout of that tensor."""
    y = np.asarray(y)
    if y.ndim == 4:
        return y.transpose(0, 3, 1, 2)
    if L.type == "flatten" and len(L.in_shape) == 3:
        h, w, c = L.in_shape
        return y.reshape(len(y), h, w, c).transpose(0, 3, 1, 2).reshape(len(y), -1)
    return y


def _session(m, optimized=None, int8_kernels=True):
    """onnxruntime CPU session, all graph optimizations. ``int8_kernels``: let the QDQ
    transformer turn int8 Conv into QLinearConv too (session.qdqisint8allowed; onnxruntime
    leaves it off on x86 CPUs without VNNI, and then computes the conv in float32 between
    DequantizeLinear and QuantizeLinear)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    if int8_kernels:
        so.add_session_config_entry("session.qdqisint8allowed", "1")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 3          # no warning about saving the optimized model
    if optimized:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _dequant_nchw(L, x):
    """Float ONNX-layout input of layer ``L`` from its golden int8 input."""
    s, z = L.attrs["input"]["scale"], L.attrs["input"]["zero_point"]
    xf = (s * (np.asarray(x, np.float64) - z)).astype(np.float32)
    return xf.transpose(0, 3, 1, 2) if xf.ndim == 4 else xf


def qdq_layer_diffs(model, x_int8, isolated=False, int8_kernels=True):
    """Per layer ``(name, type, exact_fraction, max_lsb, n_values)`` of onnxruntime's QDQ
    output against the golden one, and the two top-1 vectors. ``isolated``: every layer gets the
    golden input of that layer (a one-layer QDQ model per layer)."""
    from golden.inference import run
    gold = run(model, x_int8, keep=True)
    rows = []
    if isolated:
        ins = [x_int8] + gold[:-1]
        ort_outs = []
        for i, L in enumerate(model.layers):
            if L.type == "flatten":      # a reshape: nothing to round
                ort_outs.append(None)
                continue
            m = export_qdq(model, start=i)
            sess = _session(m, int8_kernels=int8_kernels)
            res = sess.run(None, {"input": _dequant_nchw(L, ins[i])})
            ort_outs.append(res[2])      # this layer's int8 output
    else:
        m = export_qdq(model)
        res = _session(m, int8_kernels=int8_kernels).run(
            None, {"input": _dequant_nchw(model.layers[0], x_int8)})
        if not np.array_equal(res[1], _onnx_in(model, x_int8)):
            raise AssertionError("onnxruntime's QuantizeLinear does not reproduce the int8 input")
        ort_outs = res[2:]
    ins = [x_int8] + gold[:-1]
    for L, x_in, g_out, o_out in zip(model.layers, ins, gold, ort_outs):
        if o_out is None:
            continue
        gl = golden_to_onnx_layout(L, g_out).astype(np.int64)
        d = np.abs(gl - np.asarray(o_out, np.int64))
        row = (L.name, L.type, float((d == 0).mean()), int(d.max()), int(d.size))
        if isolated and L.type in ("conv2d", "dense"):
            near = golden_to_onnx_layout(L, near_tie(L, x_in))
            row += (int((d != 0).sum()), int(((d != 0) & near).sum()))
        rows.append(row)
    top_g = gold[-1].reshape(len(x_int8), -1).argmax(-1)
    top_o = None if isolated else np.asarray(ort_outs[-1]).reshape(len(x_int8), -1).argmax(-1)
    return rows, top_g, top_o


def near_tie(L, x):
    """Where the TFLite path and a correctly rounded float path may differ, for a conv2d/dense
    layer on int8 input ``x``: the exact ``acc * M0 * 2**(shift-31)`` lies within
    ``2**-(right+1)`` LSB of a rounding tie (``right = max(-shift, 0)``). SRDHM rounds the
    product to an integer at ``2**-right`` LSB, then RDBPOT rounds half away from zero: a double
    rounding that moves values this close below a tie up to it (onnxruntime rounds once, in
    float32, ties to even). Returns a bool array in the golden layout."""
    from golden.conv import conv2d_int8
    from golden.gemm import gemm
    if L.type == "conv2d":
        acc = conv2d_int8(x, L.tensors["weights"], L.gemm_bias, L.window,
                          input_zero_point=L.in_zero_point)
    else:
        acc = gemm(x, L.tensors["weights"], L.gemm_bias)
    sh = L.tensors["shift"].astype(np.float64)
    y = np.abs(acc.astype(np.float64) * L.tensors["m0"] * 2.0 ** (sh - 31))
    tol = 2.0 ** -(np.maximum(-sh, 0) + 1) + 1e-6
    return np.abs(y - np.floor(y) - 0.5) <= tol


def _onnx_in(model, x):
    return x.transpose(0, 3, 1, 2) if x.ndim == 4 else x


def export_reference(out_dir="build/onnx"):
    """The reference CNN as float and QDQ ONNX, and a calibration file for ``npu run``
    (``digits_calib.npz``: the 256 calibration images, NCHW float ``p / 16``, with the digits'
    input quantization 1/240, -128, so the int8 test images of ``npu run`` fit)."""
    from golden import digits
    from golden.float_model import load_float
    from golden.model import load_model
    from golden.ptq import INT8_FILE
    from golden.train import FLOAT_FILE
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "digits_cnn.onnx", out / "digits_cnn_qdq.onnx", out / "digits_calib.npz"]
    export_float(*load_float(FLOAT_FILE), files[0])
    export_qdq(load_model(INT8_FILE), files[1])
    cal, _ = digits.load_calibration()
    np.savez(files[2], images=digits.to_float(cal).transpose(0, 3, 1, 2),
             input_scale=np.float64(digits.INPUT_SCALE),
             input_zero_point=np.int64(digits.INPUT_ZERO_POINT))
    return files


def compare(out_dir="build/onnx", verbose=True):
    """The onnxruntime figures of the reference CNN (dict); writes the ONNX files."""
    import onnx
    import onnxruntime as ort

    from golden import digits
    from golden.float_model import forward, load_float
    from golden.model import load_model
    from golden.ptq import INT8_FILE
    from golden.train import FLOAT_FILE
    out = Path(out_dir)
    fpath, qpath, _ = export_reference(out)
    arch, params = load_float(FLOAT_FILE)
    model = load_model(INT8_FILE)
    images, labels = digits.load_test()
    xf = digits.to_float(images)
    # float: onnxruntime vs the project's float model, softmax output and logits
    ref = forward(arch, params, xf)
    got = _session(onnx.load(str(fpath))).run(None, {"input": xf.transpose(0, 3, 1, 2)})[0]
    float_diff = float(np.abs(ref - got).max())
    float_top1 = float((ref.argmax(-1) == got.argmax(-1)).mean())
    # QDQ: end to end and isolated
    xq = digits.to_int8(images)
    kernels = {}
    for int8 in (True, False):
        opt = out / f"digits_cnn_qdq.ort_optimized{'_int8' if int8 else ''}.onnx"
        _session(onnx.load(str(qpath)), optimized=opt, int8_kernels=int8)
        kernels[int8] = sorted({n.op_type for n in onnx.load(str(opt)).graph.node})
    rows, top_g, top_o = qdq_layer_diffs(model, xq)
    iso, _, _ = qdq_layer_diffs(model, xq, isolated=True)
    rows_f, _, top_f = qdq_layer_diffs(model, xq, int8_kernels=False)
    iso_f, _, _ = qdq_layer_diffs(model, xq, isolated=True, int8_kernels=False)
    r = {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "images": len(xq),
         "float_max_abs_diff": float_diff, "float_top1_agreement": float_top1,
         "qdq_layers": rows, "qdq_isolated_layers": iso,
         "qdq_default_layers": rows_f, "qdq_default_isolated_layers": iso_f,
         "qdq_default_top1_agreement": float((top_g == top_f).mean()),
         "qdq_top1_agreement": float((top_g == top_o).mean()),
         "qdq_top1_disagree": int((top_g != top_o).sum()),
         "qdq_accuracy": float((top_o == labels).mean()),
         "golden_accuracy": float((top_g == labels).mean()),
         "ort_kernels": kernels[True], "ort_kernels_default": kernels[False], "files": [str(fpath), str(qpath)]}
    if verbose:
        _print(r)
    return r


def _print(r):
    print(f"onnxruntime {r['onnxruntime']} (onnx {r['onnx']}), reference CNN, {r['images']} "
          f"test images; files: {', '.join(r['files'])}")
    print(f"float ONNX vs golden.float_model: max |diff| of the softmax output "
          f"{r['float_max_abs_diff']:.3g}, top-1 agreement {100 * r['float_top1_agreement']:.2f} %")
    print("QDQ ONNX vs golden int8 inference: bit-exact fraction of the int8 values / max "
          "difference in LSBs")
    print(f"  A: int8 kernels (session.qdqisint8allowed=1): {', '.join(r['ort_kernels'])}")
    print(f"  B: onnxruntime's default on this CPU: {', '.join(r['ort_kernels_default'])}")
    print("  end to end: the images through the whole model; isolated: each layer fed the "
          "golden input of that layer")
    print(f"{'layer':10s} {'type':10s} {'values':>7} | {'A end to end':>17} | "
          f"{'A isolated':>17} | {'B end to end':>17} | {'B isolated':>17}")
    cols = [r["qdq_layers"], {x[0]: x for x in r["qdq_isolated_layers"]},
            {x[0]: x for x in r["qdq_default_layers"]},
            {x[0]: x for x in r["qdq_default_isolated_layers"]}]
    for name, typ, ex, mx, n in r["qdq_layers"]:
        cells = [f"{100 * ex:9.3f}% {mx:3d} LSB"]
        for c in cols[1:]:
            i = c.get(name)
            cells.append(f"{100 * i[2]:9.3f}% {i[3]:3d} LSB" if i else f"{'(reshape)':>17}")
        print(f"{name:10s} {typ:10s} {n:7d} | " + " | ".join(cells))
    for lab, key in (("A", "qdq_isolated_layers"), ("B", "qdq_default_isolated_layers")):
        expl = [f"{x[0]} {x[6]}/{x[5]}" for x in r[key] if len(x) > 5]
        print(f"{lab} isolated conv/dense mismatches within 2^-(right+1) LSB of a rounding tie "
              f"(TFLite's double rounding, see near_tie): {', '.join(expl)}")
    print(f"top-1 agreement with golden: A {100 * r['qdq_top1_agreement']:.2f} % "
          f"({r['images'] - r['qdq_top1_disagree']}/{r['images']}), B "
          f"{100 * r['qdq_default_top1_agreement']:.2f} %; accuracy onnxruntime A "
          f"{100 * r['qdq_accuracy']:.2f} %, golden {100 * r['golden_accuracy']:.2f} %")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="build/onnx", help="output directory")
    parser.add_argument("--compare", action="store_true",
                        help="also run onnxruntime against the golden models and print the "
                        "figures")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def main(args: argparse.Namespace) -> int:
    """Write the ONNX files and, with ``--compare``, print the figures (``npu onnx``)."""
    if not args.compare:
        for f in export_reference(args.out):
            print(f"wrote {f}")
        return 0
    r = compare(args.out, verbose=not args.json)
    if args.json:
        print(json.dumps(r, indent=1, default=str))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
