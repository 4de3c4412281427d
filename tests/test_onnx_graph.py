"""ONNX import of graph CNNs (npu/onnx_import.py) against onnxruntime, the float reference
of ``npu run`` (npu/float_reference.py), and the refusals of issue 21.

* MLPerf Tiny-shaped graphs built with onnx.helper (npu/zoo.py): ResNet-8 (PyTorch and tf2onnx
  padding forms), DS-CNN (10x4 kernel, asymmetric pads, depthwise, 25x5 average pool),
  MobileNetV1-0.25 (depthwise stride 2, ReLU6): the imported float graph against onnxruntime
  (1e-5: the import's layer semantics are exact), the structure of the import (residual adds
  and what they read, fused ReLUs, windows), and the golden int8 inference against
  onnxruntime's float output: top-1 agreement at least that of onnxruntime's own static
  quantization (QDQ, per-channel, MinMax) on the same calibration images;
* every Conv/pool geometry form (non-square kernels and strides, asymmetric pads, auto_pad
  SAME_UPPER / SAME_LOWER / VALID, depthwise, count_include_pad 0) against onnxruntime, and
  the export back to ONNX (window attributes) through onnxruntime;
* opset 9 and 11 models upgraded by onnx.version_converter;
* the activation hoisting above max pooling only for non-decreasing functions;
* refusals in one line naming the node: Concat, grouped conv, auto_pad with pads, NaN/Inf
  weights, NaN calibration images, huge input dimensions, Gemm C per sample;
* the RTL through ``npu run --json``: a residual model bit-exact with its float reference.
"""

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from golden.inference import run as golden_run  # noqa: E402
from npu import zoo  # noqa: E402
from npu.float_reference import compare_outputs, float_outputs, ort_static_top1  # noqa: E402
from npu.onnx_export import export_float, export_qdq  # noqa: E402
from npu.onnx_import import (MAX_TENSOR_ELEMENTS, OnnxImportError, import_onnx,  # noqa: E402
                             load_calibration, nchw_forward, onnx_to_arch, to_model_input)

GRAPHS = {
    "resnet8_pytorch": (zoo.resnet8, {}),
    "resnet8_tf": (zoo.resnet8, {"style": "tf"}),
    "ds_cnn": (zoo.ds_cnn, {}),
    "mobilenet_v1_025": (zoo.mobilenet_v1, {"blocks": 7}),
}


def _graph(name, seed, test=64):
    build, kw = GRAPHS[name]
    return build(seed=seed, calib=64, test=test, **kw)


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graph_import_float_matches_onnxruntime(name):
    """The imported float graph, and its export back to ONNX, against onnxruntime on the
    original graph."""
    m, cal, test = _graph(name, seed=1, test=8)
    arch, params = onnx_to_arch(m)
    got = nchw_forward(arch, params, test)
    want = float_outputs(m, test)
    assert np.abs(got - want).max() <= 1e-5
    # exported back (graph, windows, depthwise, add) and run by onnxruntime
    assert np.abs(float_outputs(export_float(arch, params), test) - want).max() <= 1e-5


@pytest.mark.parametrize("name,seed", [(n, 1) for n in sorted(GRAPHS)])
def test_graph_int8_agrees_with_float_at_least_as_ort_static(name, seed):
    """Golden int8 inference of the imported model against onnxruntime's float graph, side by
    side with onnxruntime's quantize_static (QDQ, per-channel, MinMax) of the same graph on the
    same calibration images."""
    m, cal, test = _graph(name, seed)
    model = import_onnx(m, cal)
    y = float_outputs(m, test)
    q = golden_run(model, to_model_input(model, test))
    ours = compare_outputs(y, q, model.output_scale, model.output_zero_point)
    ort = ort_static_top1(m, cal, test, y)
    classes = np.bincount(y.argmax(-1))
    print(f"\n{name} seed={seed}: float classes {classes.tolist()}, int8 {ours}, {ort}")
    assert (classes > 0).sum() >= 2, "the test images do not exercise the classifier"
    # at least onnxruntime's, within sampling noise: 3 of the 64 images (at seed 1,
    # ResNet-8 is one image behind on these 64, ahead on 200: 0.935 against 0.92)
    assert ours["top1_agreement"] >= ort["ort_static_top1_agreement"] - 3 / len(test), \
        (name, seed)
    assert ours["top1_agreement"] >= 0.7 and ours["mean_cosine"] >= 0.85, (name, seed)


def test_resnet8_import_structure():
    """Residual adds read the block's last conv and the shortcut (identity, or the 1x1
    stride-2 projection); the ReLU after each add is its clamp at the zero point; BN is
    folded; the average pool covers the whole 8x8 map."""
    m, cal, _ = zoo.resnet8(seed=2, calib=16, test=1)
    arch, _ = onnx_to_arch(m)
    types = [L["type"] for L in arch["layers"]]
    assert types.count("add") == 3 and "activation" not in types
    by = {L["name"]: L for L in arch["layers"]}
    adds = [L for L in arch["layers"] if L["type"] == "add"]
    first_in = adds[0]["inputs"][1]
    assert by[first_in]["type"] == "conv2d" and by[first_in]["kernel"] == 3   # identity skip
    for add in adds[1:]:
        proj = by[add["inputs"][1]]
        assert (proj["kernel"], proj["stride"], proj["padding"]) == (1, 2, 0)
        assert proj["inputs"] == [adds[adds.index(add) - 1]["name"]]
    assert all(L["activation"] == "relu" for L in adds)
    pool = next(L for L in arch["layers"] if L["type"] == "avgpool2d")
    assert pool["kernel"] == 8
    model = import_onnx(m, cal)
    for L in model.layers:
        if L.type == "add":
            assert L.attrs["qmin"] == max(-128, L.out_zero_point)


def test_ds_cnn_and_mobilenet_import_structure():
    arch, _ = onnx_to_arch(zoo.ds_cnn(seed=2, calib=2, test=1)[0])
    first = arch["layers"][0]
    assert (first["kernel"], first["stride"], first["padding"]) == ([10, 4], [2, 2],
                                                                     [4, 1, 5, 1])
    assert [L["type"] for L in arch["layers"]].count("depthwise_conv2d") == 4
    pool = next(L for L in arch["layers"] if L["type"] == "avgpool2d")
    assert pool["kernel"] == [25, 5]
    arch, _ = onnx_to_arch(zoo.mobilenet_v1(seed=2, calib=2, test=1, blocks=4)[0])
    dws = [L for L in arch["layers"] if L["type"] == "depthwise_conv2d"]
    assert [L["stride"] for L in dws] == [1, [2, 2], 1, [2, 2]]
    assert dws[1]["padding"] == [0, 0, 1, 1] and dws[1]["activation"] == "relu6"


# ----------------------------------------------------------------------------- geometry

def _model(nodes, inits, in_dims, out_dims, opset=13):
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     list(in_dims))],
                          [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT,
                                                         list(out_dims))],
                          initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset >= 13 else 7
    return m


def _init(name, v):
    return numpy_helper.from_array(np.asarray(v, np.float32), name)


GEOMETRY = [  # (conv attributes, group, pool op, pool attributes)
    (dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 2, 1]), 1, "MaxPool",
     dict(kernel_shape=[3, 2], strides=[1, 2], pads=[0, 1, 1, 0])),
    (dict(kernel_shape=[5, 3], strides=[2, 2], auto_pad="SAME_UPPER"), 1, "AveragePool",
     dict(kernel_shape=[2, 3], strides=[2, 1], pads=[1, 1, 0, 1], count_include_pad=0)),
    (dict(kernel_shape=[4, 4], strides=[3, 2], auto_pad="SAME_LOWER"), 4, "AveragePool",
     dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER", count_include_pad=1)),
    (dict(kernel_shape=[1, 3], strides=[1, 1], auto_pad="VALID"), 4, "MaxPool",
     dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_LOWER")),
    (dict(kernel_shape=[10, 4], strides=[2, 2], pads=[4, 1, 5, 1]), 4, "GlobalAveragePool", {}),
]


@pytest.mark.parametrize("case", range(len(GEOMETRY)))
def test_conv_and_pool_geometry_against_onnxruntime(case):
    """Every window form imported, then exported back (npu.onnx_export, the layer windows):
    both through onnxruntime, against the original graph."""
    conv_attrs, group, pool, pool_attrs = GEOMETRY[case]
    rng = np.random.default_rng(100 + case)
    c, h, w = 4, 13, 11
    kh, kw = conv_attrs["kernel_shape"]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", group=group,
                              **conv_attrs),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node(pool, ["r"], ["p"], name="pool", **pool_attrs),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw"], ["y"], name="fc", transB=1)]
    ref = _model(nodes[:3], [_init("w", rng.standard_normal((4, c // group, kh, kw))),
                             _init("b", rng.standard_normal(4))], ("N", c, h, w),
                 ("N", 4, "H", "W"))
    x = rng.standard_normal((6, c, h, w)).astype(np.float32)
    feat = float_outputs(ref, x)[0].size
    m = _model(nodes, [_init("w", rng.standard_normal((4, c // group, kh, kw))),
                       _init("b", rng.standard_normal(4)),
                       _init("fw", rng.standard_normal((5, feat)))], ("N", c, h, w), ("N", 5))
    want = float_outputs(m, x)
    arch, params = onnx_to_arch(m)
    assert [L["type"] for L in arch["layers"]][0] == ("conv2d" if group == 1 else
                                                      "depthwise_conv2d")
    assert np.abs(nchw_forward(arch, params, x) - want).max() <= 1e-4
    assert np.abs(float_outputs(export_float(arch, params), x) - want).max() <= 1e-4
    # the int8 model's QDQ export through onnxruntime agrees with golden on the top-1
    model = import_onnx(m, x)
    xq = to_model_input(model, x)
    res = float_outputs(export_qdq(model), (model.input_scale * (
        xq.astype(np.float32) - model.input_zero_point)).transpose(0, 3, 1, 2))
    gold = golden_run(model, xq)
    deq = model.output_scale * (gold.astype(np.float64) - model.output_zero_point)
    assert np.abs(res - deq).max() <= 4 * model.output_scale


@pytest.mark.parametrize("opset", [9, 11])
def test_old_opsets_are_upgraded(opset):
    """Clip with attributes (opset < 11) or inputs, BatchNormalization, Softmax over axis 1
    of a 2-D tensor: onnx.version_converter turns them into opset 13 before the import."""
    rng = np.random.default_rng(opset)
    inits = [_init("w", rng.standard_normal((3, 1, 3, 3))), _init("g", rng.uniform(.5, 1, 3)),
             _init("be", rng.standard_normal(3)), _init("mu", rng.standard_normal(3)),
             _init("var", rng.uniform(.5, 1, 3)), _init("fw", rng.standard_normal((48, 4)))]
    if opset >= 11:
        inits += [_init("lo", np.float32(0)), _init("hi", np.float32(6))]
        clip = helper.make_node("Clip", ["n", "lo", "hi"], ["r"], name="clip")
    else:
        clip = helper.make_node("Clip", ["n"], ["r"], name="clip", min=0.0, max=6.0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["n"],
                              name="bn"),
             clip,
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "fw"], ["mm"], name="mm"),
             helper.make_node("Softmax", ["mm"], ["y"], name="sm", axis=1)]
    m = _model(nodes, inits, ("N", 1, 8, 8), ("N", 4), opset=opset)
    arch, params = onnx_to_arch(m)
    assert [L["type"] for L in arch["layers"]] == ["conv2d", "maxpool2d", "flatten", "dense",
                                                   "softmax"]
    assert arch["layers"][0]["activation"] == "relu6"
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    assert np.abs(nchw_forward(arch, params, x) - float_outputs(m, x)).max() <= 1e-5


# ----------------------------------------------------------------------------- hoisting

@pytest.mark.parametrize("act,alpha,hoisted", [("LeakyRelu", -0.5, False),
                                               ("LeakyRelu", 0.1, True),
                                               ("Sigmoid", None, True)])
def test_activation_moves_above_max_pooling_only_if_non_decreasing(act, alpha, hoisted):
    """max(f(x)) = f(max(x)) only for a non-decreasing f: a LeakyRelu with a negative slope
    after a MaxPool stays after it (issue 21: hoisting it was wrong by ~100 LSB). The float
    import and the int8 model's output (the activation's, flattened) are checked against
    onnxruntime's float output."""
    rng = np.random.default_rng(21)
    kw = {"alpha": alpha} if alpha is not None else {}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node(act, ["p"], ["a"], name="act", **kw),
             helper.make_node("Flatten", ["a"], ["y"], name="flat")]
    m = _model(nodes, [_init("w", rng.standard_normal((1, 1, 3, 3))),
                       _init("b", rng.standard_normal(1))], ("N", 1, 8, 8), ("N", 16))
    arch, params = onnx_to_arch(m)
    types = [L["type"] for L in arch["layers"]]
    assert types == (["conv2d", "activation", "maxpool2d", "flatten"] if hoisted else
                     ["conv2d", "maxpool2d", "activation", "flatten"])
    x = rng.standard_normal((32, 1, 8, 8)).astype(np.float32)
    want = float_outputs(m, x)
    assert np.abs(nchw_forward(arch, params, x) - want).max() <= 1e-5
    model = import_onnx(m, x)
    got = golden_run(model, to_model_input(model, x))
    err = np.abs(model.output_scale * (got.astype(np.float64) - model.output_zero_point)
                 - want).max()
    # the input's and the conv's quantization through the activation's slope, and the
    # table's rounding: a few LSB (sigmoid, the steepest here: 4.3); hoisting the negative
    # slope above the max pool was wrong by ~100 LSB
    assert err <= 8 * model.output_scale, err / model.output_scale


# ----------------------------------------------------------------------------- refusals

def refuse(m, *needles):
    with pytest.raises(OnnxImportError) as e:
        onnx_to_arch(m)
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


def _conv_model(w, nodes_after=(), in_dims=("N", 2, 8, 8), out_dims=("N", 4, 6, 6), **kw):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv0", **kw), *nodes_after]
    return _model(nodes, [_init("w", w)], in_dims, out_dims)


def test_refuses_concat_of_activations():
    w = np.ones((4, 2, 3, 3))
    cat = helper.make_node("Concat", ["c", "c"], ["y"], name="cat", axis=1)
    refuse(_conv_model(w, [cat], out_dims=("N", 8, 6, 6)), "'cat' (Concat)",
           "unsupported operator Concat")


def test_refuses_grouped_conv_that_is_not_depthwise():
    refuse(_conv_model(np.ones((4, 1, 3, 3)), group=2), "'conv0' (Conv)", "group = 2",
           "2 input and 4 output channels")


def test_refuses_auto_pad_with_pads():
    refuse(_conv_model(np.ones((4, 2, 3, 3)), auto_pad="VALID", pads=[0, 0, 0, 0]),
           "'conv0' (Conv)", "auto_pad VALID together with explicit pads")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_refuses_nan_and_inf_weights(bad):
    w = np.ones((4, 2, 3, 3))
    w[1, 0, 2, 1] = bad
    refuse(_conv_model(w), "'conv0' (Conv)", "the weight", "1 NaN or Inf",
           "(1, 0, 2, 1)")


def test_refuses_nan_calibration_images(tmp_path):
    m = _conv_model(np.ones((4, 2, 3, 3)))
    cal = np.zeros((3, 2, 8, 8), np.float32)
    cal[2, 1, 4, 5] = np.nan
    np.savez(tmp_path / "cal.npz", images=cal)
    with pytest.raises(OnnxImportError, match=r"1 NaN or Inf values \(first in image 2 at "
                       r"\(1, 4, 5\)\)"):
        load_calibration(tmp_path / "cal.npz")
    with pytest.raises(OnnxImportError, match="NaN or Inf"):
        import_onnx(m, cal)


def test_refuses_huge_input_dimensions():
    """Refused from the header's numbers, before anything is allocated (no MemoryError)."""
    m = _conv_model(np.ones((4, 2, 3, 3)), in_dims=("N", 2, 100000, 100000))
    refuse(m, "graph input 'x'", "20000000000 elements per sample",
           f"limit of {MAX_TENSOR_ELEMENTS}")


@pytest.mark.parametrize("shape", [(5, 3), (5, 1)])
def test_refuses_gemm_bias_per_sample(shape):
    fl = helper.make_node("Flatten", ["c"], ["f"], name="flat")
    gemm = helper.make_node("Gemm", ["f", "fw", "fc"], ["y"], name="fc", transB=1)
    m = _model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv0"), fl, gemm],
               [_init("w", np.ones((4, 2, 3, 3))), _init("fw", np.ones((3, 144))),
                _init("fc", np.ones(shape))], (5, 2, 8, 8), (5, 3))
    refuse(m, "'fc' (Gemm)", f"bias C of shape {shape}", "not one per sample")


def test_refuses_negative_batchnorm_variance():
    bn = helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], name="bn")
    m = _model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv0"), bn],
               [_init("w", np.ones((4, 2, 3, 3))), _init("g", np.ones(4)), _init("b", np.ones(4)),
                _init("m", np.ones(4)), _init("v", [1, 1, -2, 1])], ("N", 2, 8, 8),
               ("N", 4, 6, 6))
    refuse(m, "'bn' (BatchNormalization)", "channel 2", "variance must be >= 0")


def test_cli_refusal_is_one_line(tmp_path, capsys):
    from npu import cli
    w = np.ones((4, 2, 3, 3))
    w[0, 0, 0, 0] = np.nan
    onnx.save(_conv_model(w), str(tmp_path / "nan.onnx"))
    np.savez(tmp_path / "cal.npz", images=np.zeros((2, 2, 8, 8), np.float32))
    assert cli.main(["compile", "--model", str(tmp_path / "nan.onnx"), "--calib",
                     str(tmp_path / "cal.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "NaN or Inf" in err and "'conv0' (Conv)" in err


# ----------------------------------------------------------------------------- the RTL

def _need_verilator():
    from flow.simulate import missing_simulator
    problem = missing_simulator("verilator")
    if problem:
        pytest.skip(problem)


def _cli_run(tmp_path, capsys, model, cal, test, labels=None):
    from npu import cli
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    np.savez(tmp_path / "calib.npz", images=cal)
    data = {"images": test} if labels is None else {"images": test, "labels": labels}
    np.savez(tmp_path / "data.npz", **data)
    status = cli.main(["run", "--model", str(path), "--calib", str(tmp_path / "calib.npz"),
                       "--data", str(tmp_path / "data.npz"), "--images", f"0:{len(test)}",
                       "--batch", "1", "--json"])
    out = capsys.readouterr().out
    return status, json.loads(out[out.index("{"):])


def test_residual_onnx_on_the_rtl_with_float_reference(tmp_path, capsys):
    """A ResNet-8-shaped graph (8 channels in every stack: the adds, the 1x1 stride-2
    projections, the 8x8 average pool) through ``npu run --json``: bit-exact against golden,
    cycles as predicted, and the float reference block equal to the figures computed here from
    onnxruntime and the golden outputs."""
    _need_verilator()
    m, cal, test = zoo.resnet8(seed=5, calib=32, test=3, widths=(8, 8, 8))
    labels = np.array([1, 2, 3])
    status, res = _cli_run(tmp_path, capsys, m, cal, test, labels)
    assert status == 0 and res["all_exact"]
    assert res["cycles_per_batch"] == res["predicted_cycles_per_batch"]
    model = import_onnx(m, cal)
    gold = golden_run(model, to_model_input(model, test))
    want = compare_outputs(float_outputs(m, test), gold, model.output_scale,
                           model.output_zero_point, labels)
    fr = res["float_reference"]
    for k, v in want.items():
        assert fr[k] == pytest.approx(v, abs=1e-12), k
    assert 0 <= fr["ort_static_top1_agreement"] <= 1
    print(f"\nresnet8 (8/8/8) on the RTL: {res['cycles_per_batch']} cycles per image; {fr}")


@pytest.mark.regress
def test_resnet8_onnx_on_the_rtl(tmp_path, capsys):
    """The issue's ResNet-8 (16/32/64 channels) at the default configuration, batch 1 (make
    regress: a minute of simulation; the 8/8/8-channel one above runs in make test). It
    once ended with Error.ADDRESS at its second add: the engines' checks settled for too
    few cycles (hw.sizes.CHECK_SETTLE)."""
    _need_verilator()
    m, cal, test = zoo.resnet8(seed=1, calib=32, test=1)
    status, res = _cli_run(tmp_path, capsys, m, cal, test)
    assert status == 0 and res["all_exact"]


@pytest.mark.parametrize("op,gates", [("LSTM", 4), ("GRU", 3), ("RNN", 1)])
def test_refuses_an_operator_before_its_symptoms(op, gates):
    """A recurrent layer (rank-3 input) is refused for the operator, not for the input's
    rank (issue 21)."""
    rnn = helper.make_node(op, ["x", "W", "R"], ["y"], name="rnn", hidden_size=2)
    m = _model([rnn], [_init("W", np.ones((1, 2 * gates, 3))),
                       _init("R", np.ones((1, 2 * gates, 2)))], (5, "N", 3), (5, 1, "N", 2))
    refuse(m, f"'rnn' ({op})", f"unsupported operator {op}")


def test_cli_refusals_of_data_and_files(tmp_path, capsys):
    """A missing .onnx file, --calib with an int8 model, float images of the wrong shape and
    an .onnx model without --data whose input is not the reference digits' quantization:
    each one line, a non-zero exit status."""
    from npu import cli
    from npu.cli import REFERENCE_MODEL
    m, cal, _ = zoo.resnet8(seed=1, calib=4, test=1, widths=(8, 8, 8))
    onnx.save(m, str(tmp_path / "r.onnx"))
    np.savez(tmp_path / "cal.npz", images=cal)
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 3, 32, 31), np.float32))
    cases = [
        (["compile", "--model", str(tmp_path / "missing.onnx")], "no such ONNX file"),
        (["compile", "--model", str(REFERENCE_MODEL), "--calib", str(tmp_path / "cal.npz")],
         "--calib is for an .onnx --model"),
        (["run", "--model", str(tmp_path / "r.onnx"), "--calib", str(tmp_path / "cal.npz"),
          "--data", str(tmp_path / "bad.npz"), "--images", "0:2"],
         "float images of shape (2, 3, 32, 31)"),
        (["run", "--model", str(tmp_path / "r.onnx")], "pass --data with float images"),
    ]
    for argv, needle in cases:
        try:
            status = cli.main(argv)
            err = capsys.readouterr().err.strip()
        except SystemExit as e:       # a missing simulator exits with the message (status 1)
            status, err = 1, str(e.code)
        assert status in (1, 2) and needle in err and err.count("\n") == 0, (argv, err)


def random_dag(seed):
    """A random residual graph: convs (3x3 / 1x1, stride 1 or 2, depthwise sometimes) reading
    any earlier tensor, Adds of two earlier tensors of the same shape (several skips, a
    tensor read by several nodes), ReLU after some; then global average pooling, a dense
    layer. Returns ``(model, images)``."""
    rng = np.random.default_rng(seed)
    b = zoo.OnnxBuilder(f"dag{seed}", [3, 8, 8], seed)
    tensors = [b.conv(8, 3, pad=1, x="x")]
    for _ in range(int(rng.integers(5, 10))):
        same = {}
        for t in tensors:
            same.setdefault(tuple(b.shapes[t]), []).append(t)
        pairs = [v for v in same.values() if len(v) >= 2]
        if pairs and rng.random() < 0.5:
            grp = pairs[int(rng.integers(len(pairs)))]
            i, j = rng.choice(len(grp), 2, replace=False)
            tensors.append(b.add(grp[i], grp[j], relu=bool(rng.random() < 0.6)))
            continue
        src = tensors[-1 - int(rng.integers(min(3, len(tensors))))]    # mostly recent ones
        c, h, _ = b.shapes[src]
        stride = 2 if h >= 8 and rng.random() < 0.2 else 1
        k = int(rng.choice([1, 3]))
        if k == 3 and rng.random() < 0.3:
            tensors.append(b.conv(c, 3, stride=stride, pad=1, x=src, group=c))
        else:
            tensors.append(b.conv(int(rng.choice([8, 16])), k, stride=stride, pad=k // 2,
                                  x=src, relu=bool(rng.random() < 0.7)))
    out, read = tensors[-1], {i for n in b.nodes for i in n.input}
    for t in tensors[:-1]:        # dangling tensors of the output's shape join the output
        if t not in read and b.shapes[t] == b.shapes[out]:
            out = b.add(out, t, relu=False)
    b.cur = out
    b.global_avgpool()
    b.flatten()
    b.dense(5, relu=False)
    return b.model(), b.smooth_images(32, -1, 1)


@pytest.mark.parametrize("seed", range(8))
def test_random_residual_graphs_against_onnxruntime(seed):
    """Random DAGs with several skip connections: the import against onnxruntime (1e-5), and
    the golden int8 inference of its quantization close to the float output; the compiler
    takes it or refuses it with a CompileError naming a layer."""
    from npu.compiler import CompileError, compile_model
    m, x = random_dag(seed)
    arch, params = onnx_to_arch(m)
    read = {n for L in arch["layers"] for n in L["inputs"]} | {arch["output"]}
    assert all(L["name"] in read for L in arch["layers"])     # dead branches pruned
    want = float_outputs(m, x)
    assert np.abs(nchw_forward(arch, params, x) - want).max() <= 1e-4 * max(
        1.0, np.abs(want).max()), f"seed={seed}"
    model = import_onnx(m, x)
    r = compare_outputs(want, golden_run(model, to_model_input(model, x)), model.output_scale,
                        model.output_zero_point)
    assert r["mean_cosine"] >= 0.9, (seed, r)
    try:
        compile_model(model, {}, batch=1)
    except CompileError as e:
        assert "layer" in str(e) and "\n" not in str(e), (seed, str(e))


def test_random_residual_graph_on_the_rtl(tmp_path, capsys, sim_seed):
    """A random DAG with several skip connections (seed 3: nine adds, four tensors read by
    several layers) through ``npu run``: bit-exact against golden, cycles as predicted."""
    _need_verilator()
    seed = sim_seed(3)
    m, x = random_dag(seed)
    status, res = _cli_run(tmp_path, capsys, m, x, x[:2])
    assert status == 0 and res["all_exact"], f"seed={seed}"
    assert res["cycles_per_batch"] == res["predicted_cycles_per_batch"], f"seed={seed}"
    assert [r["type"] for r in res["layers"]].count("add") >= 4, f"seed={seed}"
