"""npu_top on the RTL: compiled models against the golden integer inference, error paths and
reset. Models are generated here (seeded) so that every layer geometry the compiler supports
is exercised."""

import json

import numpy as np
import pytest

from golden import float_model
from golden.model import save_model
from golden.ptq import activation_qparams, quantize_model
from hw.conv_engine import Mode as ConvMode
from hw.isa import Mem, Op, decode
from npu.compiler import compile_model
from npu.perf import predict
from flow.simulate import missing_simulator, run

# Per-opcode tolerance of the cycle model in cycles: none, every instruction must agree.
APPROXIMATE = {}


def check_cycle_model(model, batch, report, config=None):
    """The cycle model against the per-instruction hardware counters of every batch."""
    prog = compile_model(model, config or CONFIG, batch=batch)
    pred = predict(prog.infer, prog.config)
    for b in report["batches"]:
        wrong = [f"instruction {n} ({Op(decode(word)['op']).name}): hardware {meas} cycles, "
                 f"model {p}"
                 for n, (word, meas, p) in enumerate(zip(prog.infer, b["instr"], pred))
                 if abs(meas - p) > APPROXIMATE.get(decode(word)["op"], 0)]
        assert not wrong, "; ".join(wrong)

# The default configuration (8 x 8 array): one Verilator build serves every test here.
CONFIG = {"rows": 8, "cols": 8}


def quantized(arch, rng, calib_images=16):
    """``arch`` with random float parameters, quantized on uniform [-1, 1) calibration images."""
    params = float_model.init_params(arch, rng)
    calib = rng.uniform(-1, 1, (calib_images, *arch["input_shape"])).astype(np.float32)
    s_in, z_in = activation_qparams(calib.min(), calib.max())
    return quantize_model(arch, params, calib, s_in, z_in)


def conv_dense_model(seed):
    """A random conv/dense network (with a fused table activation) and int8 test images."""
    rng = np.random.default_rng(seed)
    h, w, c = int(rng.integers(5, 10)), int(rng.integers(5, 10)), int(rng.integers(1, 4))
    c1, c2 = int(rng.integers(3, 12)), int(rng.integers(8, 20))
    k1, k2 = int(rng.choice([1, 3])), int(rng.choice([2, 3]))
    layers = [
        {"type": "conv2d", "name": "conv0", "kernel": k1, "stride": 1,
         "padding": int(rng.integers(0, k1)), "in_channels": c, "out_channels": c1,
         "activation": "relu"},
        {"type": "activation", "name": "act0", "function": "tanh"},
        {"type": "conv2d", "name": "conv1", "kernel": k2, "stride": int(rng.integers(1, 3)),
         "padding": int(rng.integers(0, k2)), "in_channels": c1, "out_channels": c2,
         "activation": "none"},
        {"type": "flatten", "name": "flatten"},
    ]
    arch = {"name": f"convdense{seed}", "input_shape": [h, w, c], "layers": layers}
    feat = float_model.output_shapes(arch)[-1][0]
    layers += [
        {"type": "dense", "name": "fc0", "in_features": feat, "out_features": 12,
         "activation": "relu"},
        {"type": "dense", "name": "fc1", "in_features": 12, "out_features": 5,
         "activation": "none"},
    ]
    model = quantized(arch, rng, calib_images=32)
    images = rng.integers(-128, 128, (6, h, w, c), dtype=np.int8)
    return model, images


def run_npu(tmp_path, sim, testcase, seed, batch=2, stall=0.0, config=CONFIG, model=None):
    problem = missing_simulator(sim)
    if problem:
        pytest.skip(problem)
    if model is None:
        model, images = conv_dense_model(seed)
    else:
        rng = np.random.default_rng(seed)
        images = rng.integers(-128, 128, (2 if sim == "icarus" else 4, *model.input_shape),
                              dtype=np.int8)
    save_model(tmp_path / "model.npz", model)
    np.savez(tmp_path / "images.npz", images=images)
    report = tmp_path / "report.json"
    r = run("npu", config, "sim.tb_npu", sim=sim, testcase=testcase,
            env={"NPU_CONFIG": json.dumps(config), "NPU_MODEL": tmp_path / "model.npz",
                 "NPU_IMAGES": tmp_path / "images.npz", "NPU_BATCH": batch, "NPU_SEED": seed,
                 "NPU_STALL": stall, "NPU_REPORT": report},
            tag=f"{testcase}{seed}")
    assert r.ok, (f"{sim} {testcase}: seed={seed} (replay with NPU_SEED={seed}); "
                  f"log in {r.results_xml.parent}")
    return json.loads(report.read_text()) if report.exists() else None


@pytest.mark.parametrize("seed,batch,stall", [(1, 2, 0.0), (2, 3, 0.3), (3, 1, 0.6)])
def test_verilator_conv_dense_models(tmp_path, sim_seed, seed, batch, stall):
    rep = run_npu(tmp_path, "verilator", "model_inference", sim_seed(seed), batch, stall)
    assert all(r["exact"] for r in rep["records"])
    if stall == 0:
        check_cycle_model(conv_dense_model(sim_seed(seed))[0], batch, rep)


@pytest.mark.parametrize("seed", [1, 4, 7])
def test_verilator_random_topologies(tmp_path, sim_seed, seed):
    """Random sequential CNNs with every layer type (conv with stride/padding, max and
    average pooling with padding, table activations, dense, softmax) on the RTL."""
    from test_model_format import random_model
    _, model, _ = random_model(sim_seed(seed))
    rep = run_npu(tmp_path, "verilator", "model_inference", sim_seed(seed), batch=2,
                  model=model)
    assert all(r["exact"] for r in rep["records"])
    check_cycle_model(model, 2, rep)


def narrow_pool_model(seed):
    """Pooling over rows of 1 and 2 words (hw.pooling's `tiny` frames, one beat every 3
    cycles): 2 x 2 average pooling of a 2 x 2 map of one word per pixel, then 1 x 1 max
    pooling of a 1 x 1 map of 12 channels (two words)."""
    rng = np.random.default_rng(seed)
    layers = [
        {"type": "conv2d", "name": "conv0", "kernel": 1, "stride": 1, "padding": 0,
         "in_channels": 3, "out_channels": 6, "activation": "relu"},
        {"type": "avgpool2d", "name": "pool0", "kernel": 2, "stride": 1, "padding": 0},
        {"type": "conv2d", "name": "conv1", "kernel": 1, "stride": 1, "padding": 0,
         "in_channels": 6, "out_channels": 12, "activation": "none"},
        {"type": "maxpool2d", "name": "pool1", "kernel": 1, "stride": 1, "padding": 0},
        {"type": "flatten", "name": "flatten"},
        {"type": "dense", "name": "fc", "in_features": 12, "out_features": 4,
         "activation": "none"},
    ]
    arch = {"name": f"narrowpool{seed}", "input_shape": [2, 2, 3], "layers": layers}
    return quantized(arch, rng)


def test_verilator_narrow_pooling(tmp_path, sim_seed):
    """POOL on rows of fewer than hw.pooling.TINY_ROW (5) words, bit-exact, and its cycles as
    the model predicts."""
    model = narrow_pool_model(sim_seed(5))
    rep = run_npu(tmp_path, "verilator", "model_inference", sim_seed(5), batch=2, model=model)
    assert all(r["exact"] for r in rep["records"])
    check_cycle_model(model, 2, rep)


def test_verilator_single_tap_conv(tmp_path, sim_seed):
    """A 1 x 1 convolution of a one-channel image: K = 1, so every operand beat is the last of
    its tile (the ConvEngine's k_last register, kept one issue ahead), bit-exact and with the
    cycles the model predicts. The dense layer rounds once (TFLite FULLY_CONNECTED,
    ROUNDING = 1)."""
    rng = np.random.default_rng(sim_seed(6))
    layers = [
        {"type": "conv2d", "name": "conv0", "kernel": 1, "stride": 1, "padding": 0,
         "in_channels": 1, "out_channels": 5, "activation": "relu"},
        {"type": "flatten", "name": "flatten"},
        {"type": "dense", "name": "fc", "in_features": 45, "out_features": 4,
         "activation": "none", "rounding": "single"},
    ]
    model = quantized({"name": "singletap", "input_shape": [3, 3, 1], "layers": layers}, rng)
    rep = run_npu(tmp_path, "verilator", "model_inference", sim_seed(6), batch=2, model=model)
    assert all(r["exact"] for r in rep["records"])
    check_cycle_model(model, 2, rep)


def test_verilator_reference_cnn_32_images(tmp_path, sim_seed):
    """The reference CNN on the default configuration: 32 test images, batch 8, under random
    backpressure, every output bit-exact against golden (the tb asserts it)."""
    from golden import digits
    seed = sim_seed(21)
    images, labels = digits.load_test()
    np.savez(tmp_path / "images.npz", images=digits.to_int8(images[:32]), labels=labels[:32])
    report = tmp_path / "report.json"
    r = run("npu", CONFIG, "sim.tb_npu", testcase="model_inference",
            env={"NPU_CONFIG": json.dumps(CONFIG), "NPU_MODEL": digits.DATA_DIR /
                 "digits_cnn_int8.npz", "NPU_IMAGES": tmp_path / "images.npz", "NPU_BATCH": 8,
                 "NPU_SEED": seed, "NPU_STALL": 0.2, "NPU_REPORT": report}, tag=f"ref{seed}")
    assert r.ok, f"reference CNN on the RTL failed, seed={seed}; log in {r.results_xml.parent}"
    rep = json.loads(report.read_text())
    assert len(rep["records"]) == 32 and all(x["exact"] for x in rep["records"])


def test_verilator_error_paths(tmp_path, sim_seed):
    run_npu(tmp_path, "verilator", "error_paths", sim_seed(11))


def test_verilator_reset_mid_run(tmp_path, sim_seed):
    run_npu(tmp_path, "verilator", "reset_mid_run", sim_seed(12))


# Icarus runs npu_top orders of magnitude slower than Verilator, so its subset uses a small
# configuration (its own build) and a small model.
ICARUS_CONFIG = {"rows": 2, "cols": 4, "act_depth": 256, "wgt_depth": 512, "param_depth": 16,
                 "imem_depth": 128, "pool_max_size": 8, "pool_max_c": 16, "pool_max_k": 3,
                 "softmax_max_len": 16}


@pytest.mark.icarus
def test_icarus_small_model(tmp_path, sim_seed):
    """The same generator's Verilog on Icarus: a small conv/dense model, bit-exact."""
    rep = run_npu(tmp_path, "icarus", "model_inference", sim_seed(41), batch=1,
                  config=ICARUS_CONFIG, model=icarus_model(sim_seed(41)))
    assert all(r["exact"] for r in rep["records"])


@pytest.mark.icarus
def test_icarus_error_paths(tmp_path, sim_seed):
    run_npu(tmp_path, "icarus", "error_paths", sim_seed(42), config=ICARUS_CONFIG,
            model=icarus_model(sim_seed(42)))


def icarus_model(seed):
    rng = np.random.default_rng(seed)
    arch = {"name": "tiny", "input_shape": [5, 5, 2], "layers": [
        {"type": "conv2d", "name": "conv", "kernel": 3, "stride": 1, "padding": 1,
         "in_channels": 2, "out_channels": 5, "activation": "relu"},
        {"type": "maxpool2d", "name": "pool", "kernel": 2, "stride": 2, "padding": 0},
        {"type": "flatten", "name": "flatten"},
        {"type": "dense", "name": "fc", "in_features": 20, "out_features": 6,
         "activation": "none"},
        {"type": "softmax", "name": "softmax"},
    ]}
    return quantized(arch, rng)


def big_dense_model(seed):
    """Weights of 16,512 WGT words, over the default wgt_depth of 8192: the compiler streams
    them, double buffered: the 2048 -> 64 layer in slices of 2 column blocks (K = 2048 words,
    4096 = half of WGT), one CONV each, every next slice loaded in the background."""
    rng = np.random.default_rng(seed)
    arch = {"name": "bigdense", "input_shape": [8, 8, 32], "layers": [
        {"type": "flatten", "name": "flatten"},
        {"type": "dense", "name": "fc0", "in_features": 2048, "out_features": 64,
         "activation": "relu"},
        {"type": "dense", "name": "fc1", "in_features": 64, "out_features": 10,
         "activation": "none"},
    ]}
    return quantized(arch, rng)


def test_verilator_weights_streamed_in_slices(tmp_path, sim_seed):
    model = big_dense_model(sim_seed(51))
    prog = compile_model(model, CONFIG, batch=2)
    fc0 = prog.layers[0]
    assert len(fc0.extra_pcs) == 3, "fc0 should run as 4 CONVs of 2 column blocks"
    # every slice after the first (fc0's 3, fc1's 1) streams in the background, its weights
    # and (PARAM being resident) nothing else
    assert sum(decode(w)["background"] for w in prog.infer if decode(w)["op"] == Op.LOAD) == 4
    rep = run_npu(tmp_path, "verilator", "model_inference", sim_seed(51), batch=2, model=model)
    assert all(r["exact"] for r in rep["records"])
    check_cycle_model(model, 2, rep)


def ksplit_model(seed):
    """Layers the compiler maps K-split at small batches (hw.conv_engine, CONV_MODE 2): a
    3x3 convolution with padding 1 on a 1x1 map (its taps in the padding read IN_ZP), dense
    layers whose input channels are not multiples of C (zero weights on the spare lanes),
    a fused table activation, and a dense layer of fewer than C outputs."""
    rng = np.random.default_rng(seed)
    c0, c1, c2 = (int(rng.integers(lo, hi)) for lo, hi in ((3, 20), (9, 40), (9, 30)))
    arch = {"name": f"ksplit{seed}", "input_shape": [1, 1, c0], "layers": [
        {"type": "conv2d", "name": "conv_1x1map", "kernel": 3, "stride": 1, "padding": 1,
         "in_channels": c0, "out_channels": c1, "activation": "relu"},
        {"type": "flatten", "name": "flatten"},
        {"type": "dense", "name": "fc0", "in_features": c1, "out_features": c2,
         "activation": "none"},
        {"type": "activation", "name": "act0", "function": "tanh"},
        {"type": "dense", "name": "fc1", "in_features": c2,
         "out_features": int(rng.integers(2, 8)), "activation": "none"},
    ]}
    return quantized(arch, rng)


@pytest.mark.parametrize("seed,batch", [(1, 1), (2, 1), (3, 3)])
def test_verilator_ksplit_models(tmp_path, sim_seed, seed, batch):
    """Convolutions and dense layers in the K-split mapping (output channels on the rows,
    the reduction across the columns, row sums before the requantizer): bit-exact and
    cycle-exact, and the program does map them K-split."""
    model = ksplit_model(sim_seed(seed))
    prog = compile_model(model, CONFIG, batch=batch)
    modes = [p.regs["CONV_MODE"] for p in prog.layers if "CONV_MODE" in p.regs]
    assert modes[0] == ConvMode.KSPLIT, modes
    rep = run_npu(tmp_path, "verilator", "model_inference", sim_seed(seed), batch=batch,
                  model=model)
    assert all(r["exact"] for r in rep["records"])
    check_cycle_model(model, batch, rep)


def dscnn_shaped_model(seed):
    """DS-CNN's shape with 16 channels and one block: a 10x4 stride-2 convolution of a 49x10
    map with TFLite 'same' padding (top 4, left 1, bottom 5, right 1), a depthwise-separable
    block, the 25x5 average pooling (non-square: it runs as a depthwise convolution) and the
    dense classifier."""
    from golden.mlperf_archs import ds_cnn
    return quantized(ds_cnn(channels=16, blocks=1), np.random.default_rng(seed))


def test_verilator_dscnn_shaped(tmp_path, sim_seed):
    """A DS-CNN-shaped network at batch 1: non-square strided convolution with asymmetric
    padding, depthwise, pointwise, the 25x5 average pooling lowered to a depthwise
    convolution; bit-exact and cycle-exact."""
    model = dscnn_shaped_model(sim_seed(8))
    rep = run_npu(tmp_path, "verilator", "model_inference", sim_seed(8), batch=1, model=model)
    assert all(r["exact"] for r in rep["records"])
    check_cycle_model(model, 1, rep)


def resnet_shaped_model(seed):
    """ResNet-8's structure, narrowed and on 12x12 images: a stem convolution, an identity
    residual stack and a stride-2 stack with its 1x1 stride-2 projection (TFLite 'same'
    padding: one row and column after), ReLU after each add, the global average pooling and
    the dense classifier."""
    from golden.mlperf_archs import residual_net
    arch = residual_net(f"resnet_shaped{seed}", [12, 12, 3], 8, ((8, 1), (16, 2)), 10)
    return quantized(arch, np.random.default_rng(seed))


def test_verilator_resnet_shaped(tmp_path, sim_seed):
    """Residual adds (ELTWISE) with an identity and a projection shortcut, at batch 1 and 2:
    bit-exact and cycle-exact."""
    model = resnet_shaped_model(sim_seed(9))
    for batch in (1, 2):
        rep = run_npu(tmp_path, "verilator", "model_inference", sim_seed(9), batch=batch,
                      model=model)
        assert all(r["exact"] for r in rep["records"])
        check_cycle_model(model, batch, rep)


def tflite_softmax_model(seed, beta, classes, spatial):
    """A layer ending in softmax variant "tflite" (golden.tflite.softmax_tflite, with
    ``beta``) over ``classes`` values: a dense layer, or (``spatial``) a 3x3 convolution whose
    every pixel is one vector (many vectors: the unit's steady state)."""
    import dataclasses
    from golden.tflite import softmax_params as tflite_softmax_params
    rng = np.random.default_rng(seed)
    if spatial:
        layers = [{"type": "conv2d", "name": "conv", "kernel": 3, "stride": 1, "padding": 1,
                   "in_channels": 3, "out_channels": classes, "activation": "none"}]
        shape = [6, 6, 3]
    else:
        layers = [{"type": "flatten", "name": "flatten"},
                  {"type": "dense", "name": "fc0", "in_features": 36, "out_features": classes,
                   "activation": "none"}]
        shape = [3, 3, 4]
    arch = {"name": "tflsoftmax", "input_shape": shape,
            "layers": layers + [{"type": "softmax", "name": "softmax"}]}
    model = quantized(arch, rng)
    L = model.layers[-1]
    params = tflite_softmax_params(L.in_quant[0][0], beta)
    L.attrs.update({"variant": "tflite", "beta": beta, "params": dataclasses.asdict(params)})
    L.softmax_params = params
    return model


@pytest.mark.parametrize("seed,beta,classes,spatial", [
    (61, 1.0, 37, False), (62, 24.0, 200, False), (63, 0.5, 19, True)])
def test_verilator_tflite_softmax(tmp_path, sim_seed, seed, beta, classes, spatial):
    """SOFTMAX in TFLite mode (SM_MODE 1, its exp table LOADed into SM_EXP by the setup
    program) bit-exact with
    golden.tflite.softmax_tflite and cycle-exact: a partial last word (37), vectors longer
    than the reciprocal sequence (200; beta 24 cuts most values off at diff_min and
    saturates the maximum at 127), 72 short vectors back to back (19 channels of 6x6 pixels,
    batch 2)."""
    model = tflite_softmax_model(sim_seed(seed), beta, classes, spatial)
    prog = compile_model(model, CONFIG, batch=2)
    assert any(decode(w)["op"] == Op.LOAD and decode(w)["mem"] == Mem.SM_EXP
               for w in prog.setup)
    rep = run_npu(tmp_path, "verilator", "model_inference", sim_seed(seed), batch=2,
                  model=model)
    assert all(r["exact"] for r in rep["records"])
    check_cycle_model(model, 2, rep)
