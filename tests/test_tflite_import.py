"""npu.tflite_import against LiteRT's reference kernels (OpResolverType.BUILTIN_REF).

* Random int8 networks written here with the flatbuffer schema (tests/tflite_nets.py), one
  per operator and padding case, imported and run through the golden integer inference
  (golden.inference), compared with LiteRT bit for bit on seeded random inputs (a failure
  names its seed; replay with NPU_SEED=<seed>).
* LOGISTIC / TANH tables: every one of the 256 entries against LiteRT.
* Refusals: one line naming the operator index, its name and the reason.
* The MLPerf Tiny int8 models where ../shared/mlperf_tiny exists (from the repository root's
  parent), end to end and layer by layer; the shapes of the other two MLPerf Tiny models.
"""

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (make venv)")

from golden import tflite as g  # noqa: E402
from golden import tflite_io as io  # noqa: E402
from golden.inference import run, run_all  # noqa: E402
from npu.litert_reference import litert_outputs  # noqa: E402
from npu.tflite_import import TfliteImportError, import_tflite, load_tflite  # noqa: E402
from tflite_nets import Net, autoencoder, f32, mobilenet_v1_025  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MLPERF = REPO.parent / "shared" / "mlperf_tiny"
MLPERF_MODELS = {"resnet8": "pretrainedResnet_quant.tflite", "dscnn_kws": "kws_ref_model.tflite"}


def seed_of(default):
    return int(os.environ.get("NPU_SEED", default))


def random_inputs(shape, count, seed):
    """``count`` int8 samples: the two extremes, then uniform random ones."""
    rng = np.random.default_rng(seed)
    fixed = [np.full(shape, -128, np.int8), np.full(shape, 127, np.int8)]
    return np.stack(fixed + [rng.integers(-128, 128, shape, dtype=np.int8)
                             for _ in range(count - 2)])


def assert_matches_litert(tflite, seed, count=6, what=""):
    """Import ``tflite`` (bytes or path), run golden and LiteRT on ``count`` inputs, compare
    every output value; returns the imported model."""
    model = import_tflite(tflite)
    x = random_inputs(model.input_shape, count, seed)
    if isinstance(tflite, (bytes, bytearray)):
        want = np.stack([io.run_model(tflite, xi[None])[io.read_model(tflite).outputs[0]][0]
                         for xi in x])
    else:
        want = litert_outputs(tflite, x)
    got = run(model, x).reshape(want.shape)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (f"{what}: {bad.size} of {got.size} outputs differ from LiteRT "
                           f"(seed {seed}; replay NPU_SEED={seed}); first at {bad[0]}: golden "
                           f"{got.ravel()[bad[0]]}, LiteRT {want.ravel()[bad[0]]}")
    return model


# ---- One network per operator and padding case --------------------------------------------

def conv_case(kernel, stride, padding, size, depthwise=False, per_channel=True,
              activation="NONE"):
    def build(rng):
        net = Net(rng, (1, *size))
        if depthwise:
            y = net.depthwise(net.input, kernel, stride, padding, activation, per_channel)
        else:
            y = net.conv(net.input, 5, kernel, stride, padding, activation, per_channel)
        return net.build(y)
    return build


def residual(rng):
    """conv -> conv, ADD of the two (fused ReLU), the ResNet-8 pattern."""
    net = Net(rng, (1, 9, 9, 4))
    a = net.conv(net.input, 6, (3, 3), (2, 2), "SAME", "RELU")
    b = net.conv(a, 6, (3, 3), (1, 1), "SAME")
    return net.build(net.add(a, b, "RELU"))


def pooled(op, kernel, stride, padding, activation="NONE"):
    def build(rng):
        net = Net(rng, (1, 9, 8, 3))
        return net.build(net.pool(net.input, op, kernel, stride, padding, activation))
    return build


def dense_head(softmax, reshape=True):
    """conv -> average pool -> [RESHAPE] -> FULLY_CONNECTED -> [SOFTMAX]; without the reshape
    FULLY_CONNECTED reads the (1, 1, 1, C) tensor itself."""
    def build(rng):
        net = Net(rng, (1, 6, 6, 3))
        x = net.conv(net.input, 8, (3, 3), (1, 1), "SAME", "RELU")
        x = net.pool(x, "AVERAGE_POOL_2D", (6, 6), (6, 6), "VALID")
        if reshape:
            x = net.reshape(x, (1, 8))
        x = net.fc(x, 10)
        return net.build(net.softmax(x, float(rng.choice([1.0, 0.5, 2.0]))) if softmax else x)
    return build


def flatten_dense(rng):
    """RESHAPE of a (1, 4, 3, 5) map into 60 features, then FULLY_CONNECTED without a bias."""
    net = Net(rng, (1, 4, 3, 5))
    x = net.reshape(net.input, (1, 60))
    return net.build(net.fc(x, 7, "RELU6", bias=False))


def standalone(op):
    """The operator on the input itself (real values within about +-8: every input byte is
    a point of the function where it still bends), then after a conv."""
    def build(rng):
        net = Net(rng, (1, 5, 4, 3), scale=rng.uniform(0.01, 0.06))
        x = net.activation(net.input, op)
        if op in ("RELU", "RELU6"):
            x = net.activation(net.conv(x, 4, (3, 3)), op)
        return net.build(x)
    return build


CASES = {
    "conv_same_s1_odd": conv_case((3, 3), (1, 1), "SAME", (7, 9, 3)),
    "conv_same_s1_even": conv_case((4, 4), (1, 1), "SAME", (8, 6, 2)),
    "conv_same_s2_odd": conv_case((3, 3), (2, 2), "SAME", (9, 7, 3)),
    "conv_same_s2_even": conv_case((3, 3), (2, 2), "SAME", (8, 10, 3)),
    "conv_same_s2_even_kernel": conv_case((4, 2), (2, 2), "SAME", (9, 8, 2)),
    "conv_valid": conv_case((3, 2), (2, 1), "VALID", (8, 7, 3)),
    "conv_10x4_s2_same": conv_case((10, 4), (2, 2), "SAME", (49, 10, 1)),
    "conv_per_tensor_relu": conv_case((3, 3), (1, 1), "SAME", (6, 6, 4), per_channel=False,
                                      activation="RELU"),
    "conv_relu6": conv_case((1, 1), (1, 1), "VALID", (5, 5, 6), activation="RELU6"),
    "depthwise_same_s1": conv_case((3, 3), (1, 1), "SAME", (7, 6, 5), depthwise=True),
    "depthwise_same_s2_relu6": conv_case((3, 3), (2, 2), "SAME", (10, 9, 4), depthwise=True,
                                         activation="RELU6"),
    "depthwise_valid_per_tensor": conv_case((2, 3), (1, 2), "VALID", (6, 8, 3),
                                            depthwise=True, per_channel=False),
    "add_residual": residual,
    "avgpool_same_valid_count": pooled("AVERAGE_POOL_2D", (3, 3), (2, 2), "SAME"),
    "avgpool_same_s1_nonsquare": pooled("AVERAGE_POOL_2D", (2, 3), (1, 1), "SAME"),
    "avgpool_valid_relu": pooled("AVERAGE_POOL_2D", (3, 2), (3, 2), "VALID", "RELU"),
    "maxpool_same_s2": pooled("MAX_POOL_2D", (3, 3), (2, 2), "SAME"),
    "maxpool_valid_relu6": pooled("MAX_POOL_2D", (2, 2), (2, 2), "VALID", "RELU6"),
    "fc_softmax": dense_head(softmax=True),
    "fc_4d_input": dense_head(softmax=False, reshape=False),
    "reshape_fc_no_bias": flatten_dense,
    "logistic": standalone("LOGISTIC"),
    "tanh": standalone("TANH"),
    "relu": standalone("RELU"),
    "relu6": standalone("RELU6"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_matches_litert(case):
    base = seed_of(300 + sorted(CASES).index(case) * 10)
    for seed in range(base, base + 3):
        assert_matches_litert(CASES[case](np.random.default_rng(seed)), seed, 5, case)


def test_import_geometry_and_quantization_as_the_file_says():
    """The model format's layer of a SAME stride-2 conv: asymmetric padding, (K, N) weights in
    (kh, kw, cin) order, the file's scales and TFLite's multipliers."""
    rng = np.random.default_rng(350)
    tfl = conv_case((4, 3), (2, 2), "SAME", (8, 9, 2))(rng)
    m, t = import_tflite(tfl), io.read_model(tfl)
    (L,) = m.layers
    filters = t.tensors[t.operators[0].inputs[1]]
    assert L.window.attrs() == {"kernel": [4, 3], "stride": [2, 2], "padding": [1, 1, 1, 1]}
    assert np.array_equal(L.tensors["weights"],
                          filters.data.reshape(filters.shape[0], -1).T)
    s_x, s_y = m.input_scale, L.out_scale
    assert np.array_equal(L.tensors["weight_scale"], filters.quantization.scale)
    m0, shift = g.conv_multipliers(s_x, filters.quantization.scale, s_y)
    assert np.array_equal(L.tensors["m0"], m0) and np.array_equal(L.tensors["shift"], shift)
    # SAME, stride 2, even input and odd kernel: the extra row goes to the bottom.
    tfl = conv_case((3, 3), (2, 2), "SAME", (8, 8, 1))(rng)
    assert import_tflite(tfl).layers[0].window.attrs()["padding"] == [0, 0, 1, 1]


def test_layer_names_follow_the_operators():
    m = import_tflite(dense_head(softmax=True)(np.random.default_rng(351)))
    assert [(L.name, L.type) for L in m.layers] == [
        ("op0_conv_2d", "conv2d"), ("op1_average_pool_2d", "avgpool2d"),
        ("op2_reshape", "flatten"), ("op3_fully_connected", "dense"),
        ("op4_softmax", "softmax")]
    assert m.layers[1].attrs["count"] == "valid"
    assert m.layers[3].attrs["rounding"] == "single"
    assert m.layers[4].attrs["variant"] == "tflite"


# ---- LOGISTIC / TANH: all 256 table entries -------------------------------------------------

@pytest.mark.parametrize("op,y_q", [("LOGISTIC", (1 / 256, -128)), ("TANH", (1 / 128, 0))])
def test_lut_table_equals_litert_on_every_input(op, y_q):
    allx = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    base = seed_of(360 + (op == "TANH"))
    for seed in range(base, base + 60):
        rng = np.random.default_rng(seed)
        s = f32(rng.uniform(0.002, 0.3) if seed % 5 else 2.0 ** -int(rng.integers(1, 8)))
        z = int(rng.integers(-128, 128))
        want = io.run_model(io.activation_model(op, allx.shape, (s, z), y_q), allx)[1].ravel()
        got = g.lut_table_tflite(op, s, z, *y_q)
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, (f"{op} scale {s} zp {z}: {bad.size} entries differ, first at "
                               f"x={bad[0] - 128}: {got[bad[0]]} vs LiteRT {want[bad[0]]} "
                               f"(seed {seed})")


# ---- Refusals ---------------------------------------------------------------------------------

def refusal(tflite):
    with pytest.raises(TfliteImportError) as e:
        import_tflite(tflite)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def single_op(op, inputs_shape, output_shape, dtype=np.int8, scale=0.05, **options):
    b = io.ModelBuilder()
    x = b.tensor(inputs_shape, dtype, scale=scale)
    y = b.tensor(output_shape, dtype, scale=scale)
    b.operator(op, [x], [y], **options)
    return b.build([x], [y])


def test_refuses_other_operators():
    msg = refusal(single_op("HARD_SWISH", (1, 4), (1, 4)))
    assert "operator 0 HARD_SWISH: operator not supported" in msg


def test_refuses_float_and_int16_models():
    rng = np.random.default_rng(370)
    w = rng.integers(-127, 128, (4, 3, 3, 2), dtype=np.int8)
    b = io.ModelBuilder()
    x = b.tensor((1, 6, 6, 2), np.float32, name="x")
    f = b.tensor(w.shape, np.float32, data=w.astype(np.float32))
    y = b.tensor((1, 6, 6, 4), np.float32)
    b.operator("CONV_2D", [x, f], [y], padding="SAME", stride_h=1, stride_w=1)
    msg = refusal(b.build([x], [y]))
    assert "operator 0 CONV_2D" in msg and "FLOAT32" in msg and "int8" in msg
    msg = refusal(single_op("TANH", (1, 8), (1, 8), np.int16))
    assert "operator 0 TANH" in msg and "INT16" in msg


def test_refuses_batch_and_dynamic_shapes():
    msg = refusal(single_op("RELU", (2, 4), (2, 4)))
    assert "operator 0 RELU" in msg and "batch 1" in msg
    b = io.ModelBuilder()
    x = b.tensor((1, 4, 4, 1), scale=0.1)
    y = b.tensor((1, 4, 4, 1), scale=0.1)
    b.tensors[x].shapeSignature = np.array([1, -1, 4, 1], np.int32)
    b.operator("RELU", [x], [y])
    assert "operator 0 RELU" in (msg := refusal(b.build([x], [y]))) and "dynamic" in msg


def test_refuses_several_inputs_outputs_and_subgraphs():
    msg = refusal(io.add_model((1, 4), (0.1, 0), (0.1, 0), (0.2, 0)))
    assert "2 inputs" in msg
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    m = schema.ModelT.InitFromPackedBuf(bytearray(single_op("RELU", (1, 4), (1, 4))), 0)
    m.subgraphs.append(m.subgraphs[0])
    fb = flatbuffers.Builder(1024)
    fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
    assert "2 subgraphs" in refusal(bytes(fb.Output()))


def test_refuses_unsupported_options():
    rng = np.random.default_rng(371)
    f = rng.integers(-127, 128, (1, 3, 3, 4), dtype=np.int8)
    dw = io.ModelBuilder()
    x = dw.tensor((1, 6, 6, 2), scale=0.1)
    w = dw.tensor(f.shape, scale=np.full(4, 0.01), axis=3, data=f)
    y = dw.tensor((1, 6, 6, 4), scale=0.2)
    dw.operator("DEPTHWISE_CONV_2D", [x, w], [y], padding="SAME", stride_h=1, stride_w=1,
                depth_multiplier=2)
    msg = refusal(dw.build([x], [y]))
    assert "operator 0 DEPTHWISE_CONV_2D" in msg and "depth multiplier" in msg

    net = Net(rng, (1, 6, 6, 2))
    net.b.operators.clear()
    c = net.conv(net.input, 3, (3, 3))
    net.b.operators[-1].builtinOptions.dilationHFactor = 2
    assert "dilation" in refusal(net.build(c))

    wts = rng.integers(-127, 128, (3, 8), dtype=np.int8)
    fc = io.ModelBuilder()
    x = fc.tensor((1, 8), scale=0.1)
    w = fc.tensor(wts.shape, scale=[0.01, 0.02, 0.03], data=wts)
    y = fc.tensor((1, 3), scale=0.3)
    fc.operator("FULLY_CONNECTED", [x, w], [y])
    msg = refusal(fc.build([x], [y]))
    assert "operator 0 FULLY_CONNECTED" in msg and "per-channel" in msg

    msg = refusal(io.reshape_model((1, 8), (1, 2, 4, 1), (0.1, 0)))
    assert "operator 0 RESHAPE" in msg and "not a flatten" in msg

    b = io.ModelBuilder()
    x = b.tensor((1, 4, 4, 2), scale=0.1)
    k = b.tensor((1, 1, 1, 2), scale=0.1, data=np.ones((1, 1, 1, 2), np.int8))
    y = b.tensor((1, 4, 4, 2), scale=0.2)
    b.operator("ADD", [x, k], [y])
    msg = refusal(b.build([x], [y]))
    assert "operator 0 ADD" in msg and "broadcasting" in msg

    msg = refusal(single_op("SOFTMAX", (1, 10), (1, 10), beta=1.0))
    assert "operator 0 SOFTMAX" in msg and "scale 1/256, zero point -128" in msg

    msg = refusal(single_op("MAX_POOL_2D", (1, 4, 4, 1), (1, 4, 4, 1), padding="SAME",
                            stride_h=1, stride_w=1, filter_height=2, filter_width=2,
                            fused_activation_function="TANH"))
    assert "operator 0 MAX_POOL_2D" in msg and "fused activation TANH" in msg


def test_refusal_is_one_line_from_the_cli(tmp_path, capsys):
    from npu.cli import main
    path = tmp_path / "hard_swish.tflite"
    path.write_bytes(single_op("HARD_SWISH", (1, 4), (1, 4)))
    assert main(["compile", "--model", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "operator 0 HARD_SWISH" in err


def test_cli_compile_dispatches_on_the_suffix(tmp_path, capsys):
    from npu.cli import main
    path = tmp_path / "head.tflite"
    path.write_bytes(dense_head(softmax=False)(np.random.default_rng(372)))
    assert main(["compile", "--model", str(path)]) == 0
    out = capsys.readouterr().out
    assert "model 'head'" in out and "op3_fully_connected" in out
    # Imported once per content, in a cache outside the model's directory.
    cached = load_tflite(path)
    assert cached.parent != tmp_path and cached == load_tflite(path)


# ---- The other two MLPerf Tiny models' shapes ------------------------------------------------

def test_visual_wake_words_shape_matches_litert():
    seed = seed_of(380)
    tfl = mobilenet_v1_025(np.random.default_rng(seed))
    m = assert_matches_litert(tfl, seed, 4, "MobileNetV1 0.25 (VWW shape)")
    assert m.input_shape == (96, 96, 3)
    assert sum(L.type == "depthwise_conv2d" and L.window.sy == 2 for L in m.layers) == 3


def test_anomaly_detection_autoencoder_shape_matches_litert():
    seed = seed_of(381)
    tfl = autoencoder(np.random.default_rng(seed))
    m = assert_matches_litert(tfl, seed, 16, "autoencoder (anomaly detection shape)")
    assert [L.attrs["out_features"] for L in m.layers] == [128] * 4 + [8] + [128] * 4 + [640]


# ---- The MLPerf Tiny int8 models ----------------------------------------------------------------

def mlperf_path(name):
    if not MLPERF.is_dir():
        pytest.skip(f"{MLPERF} does not exist (the MLPerf Tiny models are fetched from the "
                    "MLCommons tiny repository; see the README)")
    return MLPERF / MLPERF_MODELS[name]


@pytest.mark.parametrize("name", sorted(MLPERF_MODELS))
def test_mlperf_model_matches_litert_end_to_end(name):
    path = mlperf_path(name)
    assert_matches_litert(path, seed_of(390 + (name == "resnet8")), 40, name)


@pytest.mark.parametrize("name", sorted(MLPERF_MODELS))
def test_mlperf_model_matches_litert_layer_by_layer(name):
    """Every imported layer's output against the tensor LiteRT computed for the operator it
    came from (experimental_preserve_all_tensors), on golden's own inputs end to end."""
    path = mlperf_path(name)
    m, t = import_tflite(path), io.read_model(path)
    runner = io.ReferenceRunner(path)
    seed = seed_of(392 + (name == "resnet8"))
    for x in random_inputs(m.input_shape, 4, seed):
        tensors = runner.run(x[None])
        env = run_all(m, x[None])
        for op in t.operators:
            layer = f"op{op.index}_{op.op.lower()}"
            want = tensors[op.outputs[0]]
            assert np.array_equal(env[layer].reshape(want.shape), want), \
                f"{name} layer {layer} differs from LiteRT (seed {seed})"
