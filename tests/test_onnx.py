"""ONNX import/export, and onnxruntime as an independent oracle of the golden models.

* the reference CNN exported to float ONNX: onnxruntime against golden.float_model (1e-5), and
  the import of that file gives back the same float network and the same int8 model;
* its QDQ export carries the project's int8 tensors, zero points and (float32) scales;
* onnxruntime on the QDQ model against the golden integer inference: every layer fed the golden
  input is within 1 LSB (the two rounding conventions), end to end every value is within the
  bound propagated from the upstream differences, and top-1 agrees on all 359 test images;
* random ONNX models built with onnx.helper (every supported operator) imported: onnxruntime
  against the imported float network, then quantized, compiled and run on the RTL through
  ``npu run``, bit-exact against golden;
* refusals: unsupported operator, dynamic shape, grouped conv, malformed file, and more, each
  naming the node, its operator type and the reason.
"""

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from golden import digits  # noqa: E402
from golden.conv import im2col  # noqa: E402
from golden.float_model import forward, load_float  # noqa: E402
from golden.inference import run as golden_run  # noqa: E402
from golden.model import load_model  # noqa: E402
from golden.ptq import INT8_FILE  # noqa: E402
from golden.train import FLOAT_FILE  # noqa: E402
from npu.onnx_export import (_dequant_nchw, _session, export_float, export_qdq,  # noqa: E402
                             golden_to_onnx_layout, qdq_layer_diffs)
from npu.onnx_import import (OnnxImportError, import_onnx, int8_path,  # noqa: E402
                             load_or_quantize, nchw_forward, onnx_to_arch)


def ort_run(m, x):
    return _session(m).run(None, {m.graph.input[0].name: np.asarray(x, np.float32)})


# ----------------------------------------------------------------------------- reference CNN

@pytest.fixture(scope="module")
def reference():
    arch, params = load_float(FLOAT_FILE)
    images, labels = digits.load_test()
    return arch, params, load_model(INT8_FILE), images, labels


def test_float_export_matches_float_model(reference):
    arch, params, _, images, _ = reference
    xf = digits.to_float(images)
    got = ort_run(export_float(arch, params), xf.transpose(0, 3, 1, 2))[0]
    ref = forward(arch, params, xf)
    assert np.abs(got - ref).max() <= 1e-5
    assert np.array_equal(got.argmax(-1), ref.argmax(-1))


def test_import_of_exported_reference_gives_the_same_models(reference, tmp_path):
    arch, params, model, _, _ = reference
    path = tmp_path / "digits_cnn.onnx"
    export_float(arch, params, path)
    arch2, params2 = onnx_to_arch(path)
    strip = [{k: v for k, v in L.items() if k != "name"} for L in arch["layers"]]
    assert [{k: v for k, v in L.items() if k not in ("name", "inputs")}
            for L in arch2["layers"]] == strip
    # a chain: each layer reads the one before it
    assert [L["inputs"] for L in arch2["layers"]] == [["input"]] + [
        [L["name"]] for L in arch2["layers"][:-1]]
    for L, L2 in zip(arch["layers"], arch2["layers"]):
        if L["type"] in ("conv2d", "dense"):   # incl. the Flatten row permutation of fc1
            for t in ("weights", "bias"):
                assert np.array_equal(params[L["name"]][t], params2[L2["name"]][t])
    cal, _ = digits.load_calibration()
    m2 = import_onnx(path, digits.to_float(cal).transpose(0, 3, 1, 2), digits.INPUT_SCALE,
                     digits.INPUT_ZERO_POINT)
    for L, L2 in zip(model.layers, m2.layers):
        assert (L.attrs["input"], L.attrs["output"]) == (L2.attrs["input"], L2.attrs["output"])
        assert L.tensors.keys() == L2.tensors.keys()
        for t in L.tensors:
            assert np.array_equal(L.tensors[t], L2.tensors[t]), (L.name, t)


def test_qdq_export_carries_the_project_quantization(reference):
    _, _, model, _, _ = reference
    m = export_qdq(model)
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    meta = json.loads({p.key: p.value for p in m.metadata_props}["npu.quantization"])
    assert init["input_scale"] == np.float32(model.input_scale)
    assert init["input_zp"] == model.input_zero_point
    for L in model.layers:
        s_y, z_y = L.attrs["output"]["scale"], L.attrs["output"]["zero_point"]
        assert init[f"{L.name}_scale"] == np.float32(s_y) and init[f"{L.name}_zp"] == z_y
        assert meta[L.name]["output"] == [s_y, z_y]          # float64, exactly
        if L.type == "conv2d":
            k, cin, n = L.attrs["kernel"], L.attrs["in_channels"], L.attrs["out_channels"]
            w = init[f"{L.name}.weight_int8"].transpose(2, 3, 1, 0).reshape(k * k * cin, n)
            assert np.array_equal(w, L.tensors["weights"])
        if L.type in ("conv2d", "dense"):
            assert init[f"{L.name}.weight_int8"].dtype == np.int8
            assert np.array_equal(init[f"{L.name}.bias_int32"], L.tensors["bias"])
            assert np.array_equal(init[f"{L.name}.weight_scale"],
                                  L.tensors["weight_scale"].astype(np.float32))
            assert meta[L.name]["weight_scale"] == L.tensors["weight_scale"].tolist()
            assert not init[f"{L.name}.weight_zp"].any()


def _propagated_bound(L, delta):
    """Largest |golden - onnxruntime| a layer can produce when its inputs differ by ``delta``
    (int, golden layout): its own rounding plus the upstream difference times the layer's gain.

    conv2d/dense: golden is within ``0.5 + 2**-(right+1)`` LSB of the exact ``acc * M`` (SRDHM
    rounds at ``2**-right`` LSB, then RDBPOT half away from zero), onnxruntime within 0.5 LSB
    plus float32 error (< 0.05 LSB here), and the exact values differ by at most
    ``M * sum_k |W[k, n]| * delta_k``."""
    a = L.attrs
    if L.type in ("conv2d", "dense"):
        w = np.abs(L.tensors["weights"].astype(np.float64))
        m = a["input"]["scale"] * L.tensors["weight_scale"] / a["output"]["scale"]
        if L.type == "conv2d":
            cols, (n, ho, wo) = im2col(delta, a["kernel"], a["stride"], a["padding"], 0)
            g = (cols.astype(np.float64) @ w * m).reshape(n, ho, wo, -1)
        else:
            g = delta.astype(np.float64) @ w * m
        right = np.maximum(-L.tensors["shift"].astype(np.float64), 0)
        return np.floor(1.05 + 2.0 ** -(right + 1) + g)
    if L.type in ("maxpool2d", "flatten"):
        from golden.pooling import max_pool2d
        if L.type == "flatten":
            return delta.reshape(len(delta), -1)
        return max_pool2d(delta.astype(np.int8), a["kernel"], a["stride"], a["padding"])
    if L.type == "softmax":
        # sum_j |dp_i/dx_j| = 2 p_i (1 - p_i) <= 1/2; output LSB 1/256; the golden integer
        # softmax is within 0.62 LSB of the exact one (golden.softmax), onnxruntime's 0.5.
        lip = 128 * a["input"]["scale"] * delta.max(axis=-1, keepdims=True)
        return np.broadcast_to(np.floor(1.2 + lip), delta.shape)
    raise AssertionError(f"no bound for {L.type}")


@pytest.mark.parametrize("int8_kernels", [True, False], ids=["qlinear", "ort_default"])
def test_qdq_onnxruntime_against_golden(reference, int8_kernels):
    """The figures of ``python -m npu.onnx_export --compare``, asserted. ``qlinear``:
    onnxruntime turns every QDQ group into QLinearConv/QGemm/QLinearSoftmax; ``ort_default``:
    its default on x86 without VNNI (int8 Conv stays float32 between DQ and Q)."""
    _, _, model, images, labels = reference
    xq = digits.to_int8(images)
    iso, _, _ = qdq_layer_diffs(model, xq, isolated=True, int8_kernels=int8_kernels)
    rows, top_g, top_o = qdq_layer_diffs(model, xq, int8_kernels=int8_kernels)
    print("\nlayer      type       e2e exact  max | isolated exact max")
    isod = {r[0]: r for r in iso}
    for name, typ, ex, mx, *_ in rows:
        i = isod.get(name, (0, 0, 1.0, 0))
        print(f"{name:10s} {typ:10s} {100 * ex:8.3f}% {mx:4d} | {100 * i[2]:8.3f}% {i[3]:4d}")
    for name, typ, ex, mx, _, *tie in iso:
        # same input: at most 1 LSB, on a small fraction of the values ...
        assert mx <= 1 and ex >= 0.99, (name, ex, mx)
        # ... and for conv/dense only where TFLite's double rounding meets a tie
        if tie:
            assert tie[0] == tie[1], (name, "mismatches not at a rounding tie", tie)
    assert np.array_equal(top_g, top_o), np.flatnonzero(top_g != top_o)
    assert (top_o == labels).mean() >= 0.98
    # end to end: every value within the bound propagated from the measured upstream diffs
    gold = golden_run(model, xq, keep=True)
    res = _session(export_qdq(model), int8_kernels=int8_kernels).run(
        None, {"input": _dequant_nchw(model.layers[0], xq)})
    assert np.array_equal(res[1], xq.transpose(0, 3, 1, 2))
    delta = np.zeros(xq.shape, np.int64)
    for L, g, o in zip(model.layers, gold, res[2:]):
        o_nhwc = np.asarray(o, np.int64)
        if o_nhwc.ndim == 4:
            o_nhwc = o_nhwc.transpose(0, 2, 3, 1)
        elif L.type == "flatten" and len(L.in_shape) == 3:
            h, w, c = L.in_shape
            o_nhwc = o_nhwc.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(len(o), -1)
        d = np.abs(g.astype(np.int64) - o_nhwc)
        bound = _propagated_bound(L, delta)
        assert (d <= bound).all(), (L.name, int(d.max()), int((d > bound).sum()))
        assert np.array_equal(golden_to_onnx_layout(L, g).shape, np.shape(o))
        delta = d


# ----------------------------------------------------------------------------- random ONNX

def random_onnx(seed, ops=None):
    """A random float NCHW ONNX chain built with onnx.helper, weights included; returns
    ``(model, calib NCHW float32)``. Activations follow Conv/Gemm (the accelerator's table
    activation is fused into the preceding GEMM layer)."""
    rng = np.random.default_rng(seed)
    c, h = int(rng.integers(1, 4)), int(rng.integers(7, 12))
    w = h if rng.random() < 0.5 else int(rng.integers(7, 12))
    nodes, inits = [], []
    cur, shp = "x", [c, h, w]

    def const(name, v):
        inits.append(numpy_helper.from_array(np.asarray(v), name))
        return name

    def node(op, ins, **kw):
        out = f"t{len(nodes)}"
        nodes.append(helper.make_node(op, ins, [out], name=f"n{len(nodes)}_{op}", **kw))
        return out

    def act(cur):
        r = rng.random()
        if r < 0.3:
            return node("Relu", [cur])
        if r < 0.45:
            return node("Clip", [cur, const(f"lo{len(nodes)}", np.float32(0)),
                                 const(f"hi{len(nodes)}", np.float32(6))])
        if r < 0.6:
            return node("LeakyRelu", [cur], alpha=float(rng.choice([0.01, 0.2])))
        if r < 0.7:
            return node("Sigmoid", [cur])
        if r < 0.8:
            return node("Tanh", [cur])
        return cur

    for i in range(int(rng.integers(1, 3))):
        k = int(rng.choice([1, 2, 3, 5]))
        if k > min(shp[1:]):
            k = 1
        s, p = int(rng.integers(1, 3)), int(rng.integers(0, k))
        co = int(rng.integers(2, 10))
        wt = (rng.standard_normal((co, shp[0], k, k)) * np.sqrt(2 / (k * k * shp[0])))
        ins = [cur, const(f"w{i}", wt.astype(np.float32))]
        if rng.random() < 0.8:
            ins.append(const(f"b{i}", (0.1 * rng.standard_normal(co)).astype(np.float32)))
        cur = node("Conv", ins, kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
        shp = [co, (shp[1] + 2 * p - k) // s + 1, (shp[2] + 2 * p - k) // s + 1]
        cur = act(cur)
        if min(shp[1:]) >= 3 and rng.random() < 0.6:
            k = int(rng.integers(2, 4))
            p = int(rng.integers(0, k // 2 + 1))
            s = int(rng.integers(1, 3))
            if rng.random() < 0.5:
                cur = node("MaxPool", [cur], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
            else:
                cur = node("AveragePool", [cur], kernel_shape=[k, k], strides=[s, s],
                           pads=[p] * 4, count_include_pad=1)
            shp = [shp[0], (shp[1] + 2 * p - k) // s + 1, (shp[2] + 2 * p - k) // s + 1]
    if shp[1] == shp[2] <= 8 and rng.random() < 0.5:     # the pooling unit's k <= 8
        cur = node("GlobalAveragePool", [cur])
        shp = [shp[0], 1, 1]
    feat = int(np.prod(shp))
    r = rng.random()
    if r < 0.4:
        cur = node("Flatten", [cur], axis=1)
    elif r < 0.7:
        cur = node("Reshape", [cur, const("shape", np.array([-1, feat], np.int64))])
    else:   # torch's x.view(x.size(0), -1)
        sh = node("Shape", [cur])
        n0 = node("Gather", [sh, const("zero", np.array(0, np.int64))], axis=0)
        n1 = node("Unsqueeze", [n0, const("axes", np.array([0], np.int64))])
        cat = node("Concat", [n1, const("minus1", np.array([-1], np.int64))], axis=0)
        cur = node("Reshape", [cur, cat])
    hidden = int(rng.integers(4, 20))
    wt = (rng.standard_normal((hidden, feat)) * np.sqrt(2 / feat)).astype(np.float32)
    if rng.random() < 0.5:
        cur = node("Gemm", [cur, const("fw0", wt), const("fb0", (0.1 * rng.standard_normal(
            hidden)).astype(np.float32))], transB=1)
    else:
        cur = node("MatMul", [cur, const("fw0", np.ascontiguousarray(wt.T))])
        cur = node("Add", [cur, const("fb0", (0.1 * rng.standard_normal(hidden)).astype(
            np.float32))])
    cur = act(cur)
    n_out = int(rng.integers(2, 10))
    wt = (rng.standard_normal((n_out, hidden)) * np.sqrt(2 / hidden)).astype(np.float32)
    cur = node("Gemm", [cur, const("fw1", wt), const("fb1", np.zeros(n_out, np.float32))],
               transB=1, alpha=float(rng.choice([1.0, 0.5])))
    if rng.random() < 0.7:
        cur = node("Softmax", [cur], axis=-1)
    g = helper.make_graph(nodes, f"random{seed}",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                         ["batch", c, h, w])],
                          [helper.make_tensor_value_info(cur, TensorProto.FLOAT,
                                                         ["batch", n_out])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    calib = rng.uniform(-1, 1, (32, c, h, w)).astype(np.float32)
    return m, calib


@pytest.mark.parametrize("seed", range(14))
def test_random_onnx_import_float_and_golden(seed):
    m, calib = random_onnx(seed)
    onnx.checker.check_model(m)
    arch, params = onnx_to_arch(m)
    got = ort_run(m, calib)[0]
    assert np.abs(got - nchw_forward(arch, params, calib)).max() <= 1e-5
    model = import_onnx(m, calib)
    out = golden_run(model, np.clip(np.round(calib.transpose(0, 2, 3, 1) / model.input_scale)
                                    + model.input_zero_point, -128, 127).astype(np.int8))
    assert out.shape == (len(calib), *model.output_shape)


def _need_verilator():
    from flow.simulate import missing_simulator
    problem = missing_simulator("verilator")
    if problem:
        pytest.skip(problem)


def test_reference_cnn_onnx_on_the_rtl_through_the_cli(tmp_path, capsys):
    """The exported reference CNN: `npu run --model digits_cnn.onnx --calib ...` quantizes it
    to the committed int8 model and runs 16 test images on the RTL, bit-exact."""
    from npu import cli
    _need_verilator()
    arch, params = load_float(FLOAT_FILE)
    path = tmp_path / "digits_cnn.onnx"
    export_float(arch, params, path)
    cal, _ = digits.load_calibration()
    np.savez(tmp_path / "calib.npz", images=digits.to_float(cal).transpose(0, 3, 1, 2),
             input_scale=digits.INPUT_SCALE, input_zero_point=digits.INPUT_ZERO_POINT)
    assert cli.main(["run", "--model", str(path), "--calib", str(tmp_path / "calib.npz"),
                     "--images", "0:16", "--batch", "8"]) == 0
    assert "bit-exact against golden: 16/16" in capsys.readouterr().out
    ref, got = load_model(INT8_FILE), load_model(int8_path(path))
    for L, L2 in zip(ref.layers, got.layers):
        assert all(np.array_equal(L.tensors[t], L2.tensors[t]) for t in L.tensors)


@pytest.mark.parametrize("seed", range(0, 14, 2))
def test_random_onnx_qdq_isolated_layers_within_one_lsb(seed):
    """onnxruntime on the QDQ export of a random imported model (table activations, average
    pooling, ReLU6, ... too), each layer fed the golden input: within 1 LSB; conv/dense differ
    only next to a rounding tie; average pooling differs on exact .5 averages (half to even
    vs half away from zero) and softmax where the golden integer softmax's own error (<= 0.62
    LSB) meets a tie, so only their exact fractions are lower."""
    m, calib = random_onnx(seed)
    model = import_onnx(m, calib)
    x = np.random.default_rng(seed).integers(-128, 128, (32, *model.input_shape), np.int8)
    for int8_kernels in (True, False):
        iso, _, _ = qdq_layer_diffs(model, x, isolated=True, int8_kernels=int8_kernels)
        for name, typ, ex, mx, _, *tie in iso:
            floor = {"avgpool2d": 0.8, "softmax": 0.9}.get(typ, 0.97)
            assert mx <= 1 and ex >= floor, (name, ex, mx)
            if tie:
                assert tie[0] == tie[1], (name, "mismatches not at a rounding tie", tie)


def test_batchnorm_folded_into_the_conv():
    rng = np.random.default_rng(4)
    c = 5
    inits = [numpy_helper.from_array(rng.standard_normal((c, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "b")]
    for n, v in (("g", rng.uniform(0.5, 2, c)), ("be", rng.standard_normal(c)),
                 ("mu", rng.standard_normal(c)), ("var", rng.uniform(0.5, 2, c))):
        inits.append(numpy_helper.from_array(v.astype(np.float32), n))
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1] * 4),
             helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["n"],
                              name="bn", epsilon=1e-3),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["y"], name="flat")]
    m = _chain(nodes, inits, in_dims=("N", 2, 6, 6), out_dims=("N", c))
    arch, params = onnx_to_arch(m)
    assert [L["type"] for L in arch["layers"]] == ["conv2d", "avgpool2d", "flatten"]
    assert arch["layers"][0]["activation"] == "relu" and arch["layers"][1]["kernel"] == 6
    x = rng.standard_normal((4, 2, 6, 6)).astype(np.float32)
    assert np.abs(ort_run(m, x)[0] - nchw_forward(arch, params, x)).max() <= 1e-5
    nodes[1].input[0] = "x"     # not after a conv: refused
    refuse(_chain(nodes[1:2], inits, in_dims=("N", 5, 6, 6), out_dims=("N", 5, 6, 6)),
           "'bn'", "(BatchNormalization)", "only supported right after Conv")


def test_tf2onnx_style_nhwc_input():
    """A Keras CNN as tf2onnx writes it: NHWC input, Transpose to NCHW before the convs,
    Conv with auto_pad SAME_UPPER, Transpose back to NHWC before the Reshape (so the flatten
    order is already (h, w, c)), MatMul + Add, Softmax."""
    rng = np.random.default_rng(9)
    h, w, c, co, hid = 6, 6, 2, 4, 7
    feat = 3 * 3 * co
    inits = [numpy_helper.from_array(rng.standard_normal((co, c, 3, 3)).astype(np.float32),
                                     "k"),
             numpy_helper.from_array(np.array([-1, feat], np.int64), "shape"),
             numpy_helper.from_array(rng.standard_normal((feat, hid)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(hid).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((hid, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b2")]
    mk = helper.make_node
    nodes = [mk("Transpose", ["x"], ["t"], name="model/conv/Conv2D__6", perm=[0, 3, 1, 2]),
             mk("Conv", ["t", "k"], ["c"], name="model/conv/Conv2D", auto_pad="SAME_UPPER",
                kernel_shape=[3, 3]),
             mk("Relu", ["c"], ["r"], name="model/conv/Relu"),
             mk("MaxPool", ["r"], ["p"], name="model/pool/MaxPool", kernel_shape=[2, 2],
                strides=[2, 2]),
             mk("Transpose", ["p"], ["pt"], name="model/pool/MaxPool__12", perm=[0, 2, 3, 1]),
             mk("Reshape", ["pt", "shape"], ["f"], name="model/flatten/Reshape"),
             mk("MatMul", ["f", "w1"], ["m1"], name="model/dense/MatMul"),
             mk("Add", ["m1", "b1"], ["a1"], name="model/dense/BiasAdd"),
             mk("Relu", ["a1"], ["r1"], name="model/dense/Relu"),
             mk("MatMul", ["r1", "w2"], ["m2"], name="model/out/MatMul"),
             mk("Add", ["m2", "b2"], ["a2"], name="model/out/BiasAdd"),
             mk("Softmax", ["a2"], ["y"], name="model/out/Softmax", axis=-1)]
    m = _chain(nodes, inits, in_dims=("unk__1", h, w, c), out_dims=("unk__1", 3))
    arch, params = onnx_to_arch(m)
    assert arch["onnx_input_layout"] == "NHWC" and arch["input_shape"] == [h, w, c]
    assert [L["type"] for L in arch["layers"]] == ["conv2d", "maxpool2d", "flatten", "dense",
                                                   "dense", "softmax"]
    assert arch["layers"][0]["padding"] == 1
    x = rng.standard_normal((16, h, w, c)).astype(np.float32)
    assert np.abs(ort_run(m, x)[0] - nchw_forward(arch, params, x)).max() <= 1e-5
    model = import_onnx(m, x)
    from npu.compiler import compile_model
    compile_model(model, {"rows": 8, "cols": 8}, batch=2)
    # a Transpose that is not NHWC <-> NCHW is refused
    nodes[0] = mk("Transpose", ["x"], ["t"], name="odd", perm=[0, 3, 2, 1])
    refuse(_chain(nodes, inits, in_dims=("N", h, w, c), out_dims=("N", 3)), "'odd'",
           "(Transpose)", "perm [0, 3, 2, 1]")


def test_lenet_style_pool_then_relu_and_static_batch():
    """PyTorch's ``relu(max_pool2d(conv(x), 2))`` then ``x.view(1, -1)`` exported with a
    static batch of 1: the ReLU moves up to the conv (it commutes with max pooling), the
    constant Reshape target (1, F) is a flatten."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 6 * 4 * 4], np.int64), "shape"),
             numpy_helper.from_array(rng.standard_normal((5, 96)).astype(np.float32), "fw"),
             numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "fb")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="/conv1/Conv", pads=[1] * 4),
             helper.make_node("MaxPool", ["c"], ["p"], name="/pool/MaxPool",
                              kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Sigmoid", ["p"], ["r"], name="/act/Sigmoid"),
             helper.make_node("Reshape", ["r", "shape"], ["f"], name="/Reshape"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="/fc/Gemm", transB=1)]
    m = _chain(nodes, inits, in_dims=(1, 1, 8, 8), out_dims=(1, 5))
    arch, params = onnx_to_arch(m)
    assert [(L["type"], L.get("activation") or L.get("function")) for L in arch["layers"]] == [
        ("conv2d", "none"), ("activation", "sigmoid"), ("maxpool2d", None),
        ("flatten", None), ("dense", "none")]
    assert arch["layers"][0]["name"] == "conv1_Conv"
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    assert np.abs(ort_run(m, x)[0] - nchw_forward(arch, params, x)).max() <= 1e-5
    nodes[2] = helper.make_node("Relu", ["p"], ["r"], name="/Relu")
    arch, params = onnx_to_arch(_chain(nodes, inits, in_dims=(1, 1, 8, 8), out_dims=(1, 5)))
    assert [L["type"] for L in arch["layers"]] == ["conv2d", "maxpool2d", "flatten", "dense"]
    assert arch["layers"][0]["activation"] == "relu"


@pytest.mark.parametrize("seed", [6, 8])
def test_random_onnx_on_the_rtl_through_the_cli(tmp_path, sim_seed, seed):
    """ONNX -> quantize -> compile -> RTL -> result with `npu run`, bit-exact against golden;
    a second run without --calib reuses the saved quantization."""
    from npu import cli
    _need_verilator()
    seed = sim_seed(seed)
    m, calib = random_onnx(seed)
    path = tmp_path / "random.onnx"
    onnx.save(m, str(path))
    np.savez(tmp_path / "calib.npz", images=calib)
    rng = np.random.default_rng(seed)
    np.savez(tmp_path / "data.npz", images=rng.uniform(-1, 1, (4, *calib.shape[1:]))
             .astype(np.float32))
    assert cli.main(["run", "--model", str(path), "--calib", str(tmp_path / "calib.npz"),
                     "--data", str(tmp_path / "data.npz"), "--images", "0:4", "--batch", "2",
                     "--seed", str(seed)]) == 0
    saved = int8_path(path)
    assert saved.exists()
    assert load_or_quantize(path) == saved            # no calibration needed any more
    onnx.save(random_onnx(seed + 1)[0], str(path))    # a changed file is not silently reused
    with pytest.raises(OnnxImportError, match="different version"):
        load_or_quantize(path)


# ----------------------------------------------------------------------------- refusals

def _chain(nodes, inits=(), in_dims=("N", 1, 8, 8), opset=13, out=None, out_dims=("N", "F")):
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     list(in_dims))],
                          [helper.make_tensor_value_info(out or nodes[-1].output[0],
                                                         TensorProto.FLOAT,
                                                         list(out_dims))],
                          initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _conv(cin=1, cout=4, group=1, name="conv0", **kw):
    w = numpy_helper.from_array(np.ones((cout, cin // group, 3, 3), np.float32), f"{name}_w")
    return helper.make_node("Conv", ["x", f"{name}_w"], ["c"], name=name, group=group,
                            kernel_shape=[3, 3], **kw), w


def refuse(m, *needles):
    with pytest.raises(OnnxImportError) as e:
        onnx_to_arch(m)
    msg = str(e.value)
    for n in needles:
        assert n in msg, msg
    return msg


def test_refuses_unsupported_operator():
    conv, w = _conv()
    sin = helper.make_node("Sin", ["c"], ["y"], name="mystery")
    refuse(_chain([conv, sin], [w]), "'mystery'", "(Sin)", "unsupported operator Sin")


def test_refuses_dynamic_shape():
    conv, w = _conv()
    refuse(_chain([conv], [w], in_dims=("N", 1, "height", 8)), "'conv0'", "(Conv)",
           "dynamic shape", "'height'")
    # a Reshape whose target shape is computed at run time
    conv, w = _conv()
    two = numpy_helper.from_array(np.array([1, 2], np.int64), "two")
    sh = helper.make_node("Shape", ["c"], ["s"], name="shape")
    mul = helper.make_node("Mul", ["s", "two"], ["t"], name="mul")
    rs = helper.make_node("Reshape", ["c", "t"], ["y"], name="reshape_dyn")
    refuse(_chain([conv, sh, mul, rs], [w, two]), "'reshape_dyn'", "(Reshape)",
           "dynamic shape", "computed at run time")
    # a data-dependent operator on the activations
    conv, w = _conv()
    nz = helper.make_node("NonZero", ["c"], ["y"], name="nz")
    refuse(_chain([conv, nz], [w]), "'nz'", "(NonZero)", "unsupported operator")


def test_refuses_grouped_conv():
    conv, w = _conv(cin=2, cout=4, group=2, name="dw")
    refuse(_chain([conv], [w], in_dims=("N", 2, 8, 8)), "'dw'", "(Conv)", "grouped",
           "group = 2", "depthwise")


def test_refuses_malformed_files(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf\xff\xff\xff")
    refuse(bad, str(bad), "not a readable ONNX model")
    conv, w = _conv()
    good = tmp_path / "cut.onnx"
    good.write_bytes(_chain([conv], [w]).SerializeToString()[:-20])
    with pytest.raises(OnnxImportError):
        onnx_to_arch(good)
    # well-formed protobuf, invalid model: a node reading a tensor nobody produces
    relu = helper.make_node("Relu", ["nowhere"], ["y"], name="orphan")
    refuse(_chain([relu]), "not a valid ONNX model")
    refuse(tmp_path / "missing.onnx", "not a readable ONNX model")


@pytest.mark.parametrize("case,needles", [
    ("opset", ("opset 6", ">= 7")),
    ("branch", ("'sum'", "(Add)", "shapes (N, 4, 6, 6) and (N, 1, 8, 8)", "no broadcasting")),
    ("auto_pad_and_pads", ("'conv0'", "(Conv)", "auto_pad SAME_UPPER together with explicit "
                           "pads", "forbids")),
    ("dilation", ("'conv0'", "(Conv)", "dilations")),
    ("clip", ("'clip'", "(Clip)", "Clip(-1.0, 1.0)")),
    ("ceil", ("'pool'", "(MaxPool)", "ceil_mode")),
    ("reshape", ("'rs'", "(Reshape)", "not a flatten")),
    ("flatten_out", ("c, h, w",)),
])
def test_refuses_other_cases(case, needles):
    conv, w = _conv()
    nodes, inits, kw = [conv], [w], {}
    if case == "opset":
        kw["opset"] = 6
    elif case == "branch":
        nodes.append(helper.make_node("Add", ["c", "x"], ["y"], name="sum"))
    elif case == "auto_pad_and_pads":
        nodes[0], inits[0] = _conv(pads=[1, 1, 1, 1], auto_pad="SAME_UPPER")
    elif case == "dilation":
        nodes[0], inits[0] = _conv(dilations=[2, 2])
    elif case == "clip":
        inits += [numpy_helper.from_array(np.float32(v), n) for v, n in ((-1, "lo"), (1, "hi"))]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="clip"))
    elif case == "ceil":
        nodes.append(helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[2, 2],
                                      ceil_mode=1))
    elif case == "reshape":
        inits.append(numpy_helper.from_array(np.array([-1, 4, 36], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["c", "shape"], ["y"], name="rs"))
    elif case == "flatten_out":
        nodes.append(helper.make_node("Flatten", ["c"], ["y"], name="fl", axis=1))
    refuse(_chain(nodes, inits, **kw), *needles)


def test_cli_refuses_with_node_and_reason(tmp_path, capsys):
    from npu import cli
    conv, w = _conv(cin=2, cout=4, group=2, name="dw")
    path = tmp_path / "grouped.onnx"
    onnx.save(_chain([conv], [w], in_dims=("N", 2, 8, 8)), str(path))
    np.savez(tmp_path / "calib.npz", images=np.zeros((2, 2, 8, 8), np.float32))
    assert cli.main(["compile", "--model", str(path), "--calib",
                     str(tmp_path / "calib.npz")]) == 2
    err = capsys.readouterr().err
    assert "'dw' (Conv)" in err and "grouped" in err
    assert not int8_path(path).exists()
