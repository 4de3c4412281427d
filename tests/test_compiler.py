"""The compiler's refusals name the layer and the limit; NpuConfig refuses bad parameters."""

import re

import numpy as np
import pytest

from golden import float_model
from golden.model import load_model
from golden.digits import DATA_DIR
from golden.ptq import activation_qparams, quantize_model
from hw.act_memory import banks
from hw.isa import Mem, Op, Reg, decode, encode, encode_load, encode_set
from hw.npu import NpuConfig
from npu.compiler import CompileError, check_background_loads, compile_model
from npu.perf import predict

REFERENCE = DATA_DIR / "digits_cnn_int8.npz"


@pytest.fixture(scope="module")
def reference():
    return load_model(REFERENCE)


def test_reference_compiles(reference):
    for batch in (1, 8):
        prog = compile_model(reference, {}, batch=batch)
        ops = [decode(w)["op"] for w in prog.infer]
        assert ops.count(Op.CONV) == 4 and ops.count(Op.POOL) == 1 and ops.count(Op.SOFTMAX) == 1
        assert ops[-1] == Op.DONE and decode(prog.setup[-1])["op"] == Op.DONE
        assert len(predict(prog.instructions, prog.config)) == len(prog.instructions)
        # one WGT word per (column block, k) of every conv/dense layer; at batch 1 the dense
        # layers run K-split (R words per input word: as many, their CIN being multiples
        # of C), from a multiple of R: 7 zero words after conv1 and conv2's 153
        modes = [L.regs["CONV_MODE"] for L in prog.layers if L.type in ("conv2d", "dense")]
        assert modes == ([0, 0, 2, 2] if batch == 1 else [0, 0, 0, 0])
        words = sum(-(-L.out_shape[-1] // 8) * L.tensors["weights"].shape[0]
                    for L in reference.layers if L.type in ("conv2d", "dense"))
        words += 7 if batch == 1 else 0
        assert len(prog.setup_stream) == words + 9 * sum(
            -(-L.out_shape[-1] // 8) for L in reference.layers if L.type in ("conv2d", "dense"))


def test_act_refusal_names_the_largest_batch_that_fits(reference):
    """Too large a batch is refused with the layer, the words and the capacity, and the
    batch the message offers compiles while one more does not."""
    cfg = {"act_depth": 2048}
    with pytest.raises(CompileError) as e:
        compile_model(reference, cfg, batch=32)
    msg = str(e.value)
    assert "act_depth=2048" in msg and "at batch 32" in msg and "ACT words" in msg, msg
    fits = int(msg.split("the largest batch that fits is ")[1].split()[0])
    compile_model(reference, cfg, batch=fits)
    with pytest.raises(CompileError):
        compile_model(reference, cfg, batch=fits + 1)


def test_default_act_holds_the_reference_cnn_at_batch_64(reference):
    """The default ACT (16,384 words, no replication) holds 8x what the replicated one did."""
    compile_model(reference, {}, batch=64)


@pytest.mark.parametrize("config,batch,needles", [
    ({"wgt_depth": 128}, 1, ["'fc1'", "K=256", "wgt_depth=128"]),
    ({"imem_depth": 32}, 1, ["imem_depth=32"]),
    ({"pool_max_c": 8}, 1, ["'pool'", "channels 16", "pool_max_c=8"]),
    ({"softmax_max_len": 8}, 1, ["'softmax'", "softmax_max_len=8"]),
])
def test_refusals_name_layer_and_limit(reference, config, batch, needles):
    with pytest.raises(CompileError) as e:
        compile_model(reference, config, batch=batch)
    for n in needles:
        assert n in str(e.value), str(e.value)


@pytest.mark.parametrize("config,batch,exceeded", [
    ({"act_depth": 16, "wgt_depth": 16, "imem_depth": 8, "pool_max_c": 1, "pool_max_size": 2,
      "pool_max_k": 1, "softmax_max_len": 2}, 1,
     {"act_depth", "wgt_depth", "imem_depth", "pool_max_c", "pool_max_size", "pool_max_k",
      "softmax_max_len"}),
    ({"act_depth": 512, "wgt_depth": 64, "imem_depth": 8}, 3,
     {"act_depth", "wgt_depth", "imem_depth"}),
    ({"imem_depth": 16}, 1, {"imem_depth"}),
    ({}, 70, {"act_depth"}),
])
def test_refusal_names_every_limit_and_a_configuration_that_fits(reference, config, batch,
                                                                 exceeded):
    """A model too big for several limits names every one (issue 21: a user raised act_depth
    only to meet wgt_depth next) with its value, and the -p options it offers compile, while
    one step less on any of them is refused again."""
    with pytest.raises(CompileError) as e:
        compile_model(reference, config, batch=batch)
    msg = str(e.value)
    fix = {k: int(v) for k, v in re.findall(r"-p (\w+)=(\d+)", msg.split("it fits with ")[1])}
    assert set(fix) == exceeded, msg
    assert f"exceeds {len(exceeded)} limit" in msg
    for name in fix:
        assert f"{name}={config.get(name, getattr(NpuConfig(), name))} is too small" in msg
    fitting = {**config, **fix}
    compile_model(reference, fitting, batch=batch)
    step = {"act_depth": banks(8)}           # act_depth is a multiple of the ACT banks
    for name, v in fix.items():
        less = v - step.get(name, 1)
        with pytest.raises(CompileError, match=f"{name}={less} is too small"):
            compile_model(reference, {**fitting, name: less}, batch=batch)


def test_refusal_says_when_no_configuration_holds_the_model(reference):
    with pytest.raises(CompileError, match=r"no configuration holds it: act_depth would have "
                       r"to be \d+, at most 1048576") as e:
        compile_model(reference, {}, batch=10 ** 11)      # bisection: answered at once
    assert "the largest batch that fits is 64 at this act_depth" in str(e.value)


@pytest.mark.parametrize("config", [{"param_depth": 1}, {"param_depth": 4},
                                    {"param_depth": 4, "wgt_depth": 512}])
def test_parameters_streamed_when_param_is_small(reference, config):
    """PARAM too small for every layer's entries: they stream per slice (double buffered
    where a slice fits half of PARAM), and no CONV reads an entry another slice's LOAD is
    still writing (check_background_loads, run by the compiler)."""
    prog = compile_model(reference, config, batch=2)
    loads = [decode(w) for w in prog.infer if decode(w)["op"] == Op.LOAD]
    prm = [f for f in loads if f["mem"] == Mem.PARAM]
    blocks = sum(-(-L.out_shape[-1] // 8) for L in reference.layers
                 if L.type in ("conv2d", "dense"))
    assert sum(f["count"] for f in prm) == blocks         # every entry, once
    assert all(f["addr"] + f["count"] <= config["param_depth"] for f in prm)
    if config["param_depth"] > 1:
        assert any(f["background"] for f in prm)
    assert not any(decode(w)["mem"] == Mem.PARAM for w in prog.setup
                   if decode(w)["op"] == Op.LOAD)


def test_bad_batch(reference):
    with pytest.raises(CompileError, match="batch"):
        compile_model(reference, {}, batch=0)


def test_standalone_activation_refused():
    arch = {"name": "a", "input_shape": [6, 6, 1], "layers": [
        {"type": "conv2d", "name": "c", "kernel": 3, "stride": 1, "padding": 1,
         "in_channels": 1, "out_channels": 4, "activation": "none"},
        {"type": "maxpool2d", "name": "p", "kernel": 2, "stride": 2, "padding": 0},
        {"type": "activation", "name": "act", "function": "sigmoid"},
    ]}
    rng = np.random.default_rng(0)
    params = float_model.init_params(arch, rng)
    calib = rng.uniform(-1, 1, (8, 6, 6, 1)).astype(np.float32)
    model = quantize_model(arch, params, calib, *activation_qparams(-1, 1))
    with pytest.raises(CompileError, match="'act'.*standalone activation"):
        compile_model(model, {})


@pytest.mark.parametrize("kwargs,name", [
    ({"rows": 0}, "rows"), ({"cols": 65}, "cols"), ({"act_depth": 8}, "act_depth"),
    ({"imem_depth": 1024}, "imem_depth"), ({"param_depth": 0}, "param_depth"),
    ({"softmax_max_len": 0}, "softmax_max_len"), ({"wgt_depth": "1k"}, "wgt_depth"),
    ({"wgt_dpeth": 512}, "unknown NpuConfig parameter .wgt_dpeth.; known: rows, cols,"),
])
def test_npu_config_refuses(kwargs, name):
    with pytest.raises(ValueError, match=name):
        NpuConfig(**kwargs)


def test_weights_that_do_not_fit_are_streamed_in_slices(reference):
    prog = compile_model(reference, {"wgt_depth": 512}, batch=1)
    assert decode(prog.setup[0])["op"] == Op.LOAD and len(prog.setup) == 2   # PARAM, DONE
    fc1 = next(L for L in prog.layers if L.name == "fc1")
    # 4 column blocks of K=256 in slices of 1 (half of WGT: double buffered)
    assert len(fc1.extra_pcs) == 3


def test_streamed_weights_are_double_buffered(reference):
    """Each slice after the first streams into the other half of WGT in the background while
    the CONV before it runs; the cycle model charges the overlap, not the sum."""
    prog = compile_model(reference, {"wgt_depth": 512}, batch=1)
    loads = [decode(w) for w in prog.infer if decode(w)["op"] == Op.LOAD
             and decode(w)["mem"] == Mem.WGT]
    assert [f["background"] for f in loads][:2] == [0, 1]
    assert {f["addr"] for f in loads if f["background"]} <= {0, 256}
    assert any(decode(w)["op"] == Op.WAIT for w in prog.infer)
    # One chunk per LOAD, in LOAD order, each as long as its LOAD's beats.
    all_loads = [decode(w) for w in prog.infer if decode(w)["op"] == Op.LOAD]
    assert len(all_loads) == len(prog.infer_chunks)
    for f, chunk in zip(all_loads, prog.infer_chunks):
        if f["mem"] == Mem.WGT:
            assert len(chunk) == f["count"]


def test_background_load_hazard_is_refused():
    """A CONV reading the WGT words a background LOAD is still writing is refused."""
    prog = [encode_load(Mem.WGT, 0, 64, background=True), encode_set(Reg.KH, 1),
            encode_set(Reg.KW, 1), encode_set(Reg.CIN, 8), encode_set(Reg.OUT_NB, 1),
            encode_set(Reg.W_ADDR, 56), encode(Op.CONV), encode(Op.DONE)]
    with pytest.raises(CompileError, match=r"instruction 6: CONV reads WGT \[56, 64\)"):
        check_background_loads(prog, 8, 8)
    check_background_loads(prog[:6] + [encode(Op.WAIT)] + prog[6:], 8, 8)     # waited: fine
    with pytest.raises(ValueError, match="background LOAD must target WGT or PARAM"):
        encode_load(Mem.ACT, 0, 4, background=True)


def test_cycle_model_overlaps_background_loads():
    """A background LOAD of n beats costs 6 cycles; a WAIT right after it waits for the
    rest (the LoadEngine is busy until n + 4 cycles after its DECODE); the WAIT ends in its
    DECODE and fetches the DONE there, so the DONE has no FETCH cycle."""
    cfg = NpuConfig()
    n = 100
    prog = [encode_load(Mem.WGT, 0, n, background=True), encode(Op.WAIT), encode(Op.DONE)]
    bg, wait, done = predict(prog, cfg)
    assert bg == 6                # FETCH, LATCH, DECODE, 2 cycles of range check, NEXT
    # WAIT's FETCH is 6 cycles after the LOAD's; its DECODE (2 cycles after its FETCH) waits
    # until cycle 2 + n + 4, when the LoadEngine is idle (CHECK, CHECK2, n beats, DONE).
    assert wait == 3 + (2 + n + 4) - (6 + 2)
    assert done == 2              # LATCH, DECODE
    sync = predict([encode_load(Mem.WGT, 0, n), encode(Op.DONE)], cfg)
    # A foreground LOAD takes n + 8 (4 sequencer cycles, CHECK, CHECK2, DONE, and the
    # sequencer's registered done); the background one plus WAIT the same: BG_CHECK's second
    # cycle stands for the registered done.
    assert sync == [n + 8, 3]
    assert sum(predict(prog, cfg)) == sum(sync) - 2


def _pool_model(seed, shape, pool):
    """A 1x1 conv (so the pool's input has a non-trivial zero point), then ``pool``."""
    rng = np.random.default_rng(seed)
    c = shape[-1]
    arch = {"name": f"pool{seed}", "input_shape": list(shape), "layers": [
        {"type": "conv2d", "name": "conv", "kernel": 1, "stride": 1, "padding": 0,
         "in_channels": c, "out_channels": c, "activation": "none"},
        {"type": "avgpool2d", "name": "pool", **pool}]}
    params = float_model.init_params(arch, rng)
    calib = rng.uniform(-1, 1, (8, *shape)).astype(np.float32)
    s, z = activation_qparams(calib.min(), calib.max())
    return quantize_model(arch, params, calib, s, z)


@pytest.mark.parametrize("seed,shape,pool", [
    (1, (25, 5, 16), {"kernel": [25, 5], "stride": 1, "padding": 0}),           # DS-CNN
    (2, (3, 3, 72), {"kernel": 3, "stride": 1, "padding": 0}),                  # channels > 64
    (3, (9, 7, 8), {"kernel": [3, 2], "stride": [1, 2], "padding": [1, 0, 1, 1]}),
    (4, (6, 6, 8), {"kernel": [4, 2], "stride": 2, "padding": 0, "count": "valid"}),
])
def test_average_pooling_the_pool_unit_refuses_runs_as_depthwise(seed, shape, pool):
    """Average pooling the pooling unit cannot take becomes a depthwise convolution whose
    golden result equals the average pooling golden on random int8 maps (including the
    extremes, where the window sums are largest)."""
    from dataclasses import replace

    from golden.inference import run_layer
    from npu.compiler import lower_avgpools, plan_ops
    model = _pool_model(seed, shape, pool)
    cfg = NpuConfig(rows=8, cols=8)
    ops, shapes, _ = plan_ops(model)
    lowered = lower_avgpools(ops, shapes, cfg)
    assert [op.kind for op in lowered] == ["conv", "depthwise"]
    dw = replace(lowered[1].layer, type="depthwise_conv2d")
    pool_layer = model.layer("pool")
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (6, *shape), dtype=np.int8)
    x[0], x[1] = 127, -128
    assert np.array_equal(run_layer(dw, x), run_layer(pool_layer, x)), f"seed {seed}"
    compile_model(model, cfg, batch=1)


def test_average_pooling_without_a_form_is_refused():
    """TFLite-style counting (only taps inside the input) with padding has a divisor that
    varies per window: neither the pooling unit nor a depthwise convolution computes it."""
    model = _pool_model(5, (6, 6, 8), {"kernel": [3, 2], "stride": 1, "padding": 1,
                                       "count": "valid"})
    with pytest.raises(CompileError, match="layer 1 'pool'.*square windows.*counts only"):
        compile_model(model, {"rows": 8, "cols": 8}, batch=1)


def tflite_softmax(model, beta=1.0):
    """``model`` with its final softmax switched to variant "tflite" (as load_model would set
    it up from a file)."""
    import dataclasses
    from golden.tflite import softmax_params
    L = model.layers[-1]
    assert L.type == "softmax"
    params = softmax_params(L.in_quant[0][0], beta)
    L.attrs.update({"variant": "tflite", "beta": beta, "params": dataclasses.asdict(params)})
    L.softmax_params = params
    return model


def test_softmax_tflite_loads_its_exp_table():
    """variant "tflite": golden.tflite.softmax_exp_table (256 little-endian int32) LOADed into
    SM_EXP by the setup program (the model's one table), the SOFTMAX runs with SM_MODE 1;
    "project" sets SM_MODE 0. Softmaxes with different tables each LOAD theirs."""
    from golden.tflite import softmax_exp_table
    from npu.compiler import Op as CompilerOp, resident_exp_table
    model = tflite_softmax(load_model(REFERENCE), beta=0.75)
    prog = compile_model(model, {}, batch=2)
    setup = [decode(w) for w in prog.setup]
    assert [f["mem"] for f in setup if f["op"] == Op.LOAD][-1] == Mem.SM_EXP
    assert not [f for f in map(decode, prog.infer) if f["op"] == Op.LOAD
                and f["mem"] == Mem.SM_EXP]
    # the setup stream ends with the table's beats
    beats = np.ascontiguousarray(prog.setup_stream[-(1024 // prog.config.cols):]).reshape(-1)
    np.testing.assert_array_equal(beats.view("<i4"),
                                  softmax_exp_table(model.layers[-1].softmax_params))
    ops = [decode(w) for w in prog.infer]
    smx = [n for n, f in enumerate(ops) if f["op"] == Op.SOFTMAX]
    modes = [f["value"] for f in ops[:smx[0]] if f["op"] == Op.SET and f["reg"] == Reg.SM_MODE]
    assert len(smx) == 1 and modes[-1] == 1
    plain = compile_model(load_model(REFERENCE), {}, batch=2)
    assert [f["value"] for f in map(decode, plain.infer)
            if f["op"] == Op.SET and f["reg"] == Reg.SM_MODE] == [0]
    a = tflite_softmax(load_model(REFERENCE), beta=0.75).layers[-1]
    b = tflite_softmax(load_model(REFERENCE), beta=2.0).layers[-1]
    assert resident_exp_table([CompilerOp("softmax", a), CompilerOp("softmax", a)], 8) is not None
    assert resident_exp_table([CompilerOp("softmax", a), CompilerOp("softmax", b)], 8) is None


def test_softmax_tflite_over_511_values_refused():
    rng = np.random.default_rng(5)
    arch = {"name": "wide", "input_shape": [4], "layers": [
        {"type": "dense", "name": "fc", "in_features": 4, "out_features": 600,
         "activation": "none"},
        {"type": "softmax", "name": "softmax"}]}
    params = float_model.init_params(arch, rng)
    calib = rng.uniform(-1, 1, (8, 4)).astype(np.float32)
    model = tflite_softmax(quantize_model(arch, params, calib, *activation_qparams(-1, 1)))
    with pytest.raises(CompileError, match=r"layer 1 'softmax'.*600 values exceeds 511"):
        compile_model(model, {"softmax_max_len": 1024}, batch=1)
