"""The activation memory at the default configuration: real networks that the replicated
scratchpad refused (the seed documents' Keras MNIST network, MLPerf Tiny's autoencoder) run
from ONNX through `npu run`; stride-2 convs and every input-channel count keep the array busy;
ACT filled exactly runs, one word more is refused. Bit-exact and cycle-exact on the RTL."""

import json

import numpy as np
import onnx
import pytest

from npu import zoo
from npu.compiler import CompileError, compile_model, place_tensors
from npu.layout import TensorLayout
from hw.npu import NpuConfig

from test_sim_npu import CONFIG, check_cycle_model, quantized, run_npu


def _need_verilator():
    from flow.simulate import missing_simulator
    problem = missing_simulator("verilator")
    if problem:
        pytest.skip(problem)


@pytest.mark.parametrize("name", ["keras_mnist", "ad_autoencoder"])
def test_zoo_onnx_through_the_cli(tmp_path, capsys, name):
    """`npu run --model X.onnx --calib C.npz --data D.npz` at the default configuration:
    quantized, compiled, run on the RTL, bit-exact against golden, cycles as predicted."""
    from npu import cli
    _need_verilator()
    model, calib, test = zoo.MODELS[name](seed=3, test=2)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    np.savez(tmp_path / "calib.npz", images=calib)
    np.savez(tmp_path / "data.npz", images=test)
    assert cli.main(["run", "--model", str(path), "--calib", str(tmp_path / "calib.npz"),
                     "--data", str(tmp_path / "data.npz"), "--images", "0:2", "--batch", "1",
                     "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["all_exact"] and len(res["images"]) == 2
    assert res["cycles_per_batch"] == res["predicted_cycles_per_batch"]
    for row in res["layers"]:
        assert row["measured"] == row["predicted"], row


def _conv_net(cin, stride, hw=12, cout=16, seed=0):
    arch = {"name": f"c{cin}s{stride}", "input_shape": [hw, hw, cin], "layers": [
        {"type": "conv2d", "name": "conv", "kernel": 3, "stride": stride, "padding": 1,
         "in_channels": cin, "out_channels": cout, "activation": "relu"},
        {"type": "conv2d", "name": "conv_b", "kernel": 3, "stride": stride, "padding": 1,
         "in_channels": cout, "out_channels": 16, "activation": "none"},
    ]}
    return quantized(arch, np.random.default_rng(seed))


@pytest.mark.parametrize("cin,stride", [(1, 1), (3, 2), (8, 1), (12, 2), (16, 2)])
def test_convs_every_input_width_and_stride(tmp_path, sim_seed, cin, stride):
    """CIN below, at and above the array width, stride 1 and 2: bit-exact, cycle-exact; a
    layer with CIN >= C and a few blocks of work keeps the array >= 95 % busy."""
    model = _conv_net(cin, stride, seed=sim_seed(cin))
    rep = run_npu(tmp_path, "verilator", "model_inference", sim_seed(cin), batch=2,
                  model=model)
    assert all(r["exact"] for r in rep["records"])
    check_cycle_model(model, 2, rep)


def test_wide_layer_utilization(tmp_path, sim_seed):
    """CIN >= C at stride 1 and 2 on a 16 x 16 map: >= 95 % of the 64 PEs, measured."""
    arch = {"name": "wide", "input_shape": [16, 16, 16], "layers": [
        {"type": "conv2d", "name": "s1", "kernel": 3, "stride": 1, "padding": 1,
         "in_channels": 16, "out_channels": 32, "activation": "relu"},
        {"type": "conv2d", "name": "s2", "kernel": 3, "stride": 2, "padding": 1,
         "in_channels": 32, "out_channels": 32, "activation": "none"},
    ]}
    model = quantized(arch, np.random.default_rng(sim_seed(5)))
    rep = run_npu(tmp_path, "verilator", "model_inference", sim_seed(5), batch=1, model=model)
    assert all(r["exact"] for r in rep["records"])
    check_cycle_model(model, 1, rep)
    prog = compile_model(model, CONFIG, batch=1)
    measured = rep["batches"][-1]["instr"]
    for plan in prog.layers:
        cycles = measured[plan.conv_pc - prog.infer_pc]
        util = plan.macs / (64 * cycles)
        assert util >= 0.95, f"{plan.name}: {util:.3f}"


def _identity_1x1(width):
    """A 1 x 1 conv over a 1 x width map of one channel: input and output of width words."""
    arch = {"name": "fill", "input_shape": [1, width, 1], "layers": [
        {"type": "conv2d", "name": "conv", "kernel": 1, "stride": 1, "padding": 0,
         "in_channels": 1, "out_channels": 1, "activation": "none"}]}
    return quantized(arch, np.random.default_rng(1))


def test_act_filled_exactly_runs(tmp_path, sim_seed):
    """Input and output of 8192 words each: all 16,384 words of ACT, on the RTL."""
    depth = NpuConfig().act_depth
    model = _identity_1x1(depth // 2)
    prog = compile_model(model, CONFIG, batch=1)
    assert prog.act_peak == depth
    assert {prog.input_layout.addr, prog.output_layout.addr} == {0, depth // 2}
    rep = run_npu(tmp_path, "verilator", "model_inference", sim_seed(2), batch=1, model=model)
    assert all(r["exact"] for r in rep["records"])
    check_cycle_model(model, 1, rep)


def test_one_word_too_many_is_refused():
    """The capacity check is exact: tensors of act_depth words fit, one word more does not
    (a tensor occupies whole groups of B pixels, see npu.layout)."""
    cfg = NpuConfig()
    depth = cfg.act_depth
    half = TensorLayout(1, 1, depth // 2, 1, 1, depth // 2, depth // 2)
    more = TensorLayout(1, 1, depth // 2 + 1, 1, 1, depth // 2 + 1, depth // 2 + 1)
    assert place_tensors([half, half], cfg)[0] is not None
    assert place_tensors([half, more], cfg)[0] is None
    with pytest.raises(CompileError, match=f"act_depth={depth}"):
        compile_model(_identity_1x1(depth // 2 + 1), CONFIG, batch=1)
