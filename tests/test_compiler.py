"""The compiler's refusals name the layer and the limit; NpuConfig refuses bad parameters."""

import numpy as np
import pytest

from golden import float_model
from golden.model import load_model
from golden.digits import DATA_DIR
from golden.ptq import activation_qparams, quantize_model
from hw.isa import Op, decode
from hw.npu import NpuConfig
from npu.compiler import CompileError, compile_model
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
        # one WGT word per (column block, k) of every conv/dense layer
        words = sum(-(-L.out_shape[-1] // 8) * L.tensors["weights"].shape[0]
                    for L in reference.layers if L.type in ("conv2d", "dense"))
        assert len(prog.setup_stream) == words + 9 * sum(
            -(-L.out_shape[-1] // 8) for L in reference.layers if L.type in ("conv2d", "dense"))


@pytest.mark.parametrize("config,batch,needles", [
    ({}, 9, ["act_depth=2048", "batch of 9"]),
    ({"wgt_depth": 128}, 1, ["'fc1'", "K=256", "wgt_depth=128"]),
    ({"param_depth": 4}, 1, ["'fc1'", "param_depth=4"]),
    ({"imem_depth": 32}, 1, ["imem_depth=32"]),
    ({"pool_max_c": 8}, 1, ["'pool'", "limit 8"]),
    ({"softmax_max_len": 8}, 1, ["'softmax'", "softmax_max_len=8"]),
])
def test_refusals_name_layer_and_limit(reference, config, batch, needles):
    with pytest.raises(CompileError) as e:
        compile_model(reference, config, batch=batch)
    for n in needles:
        assert n in str(e.value), str(e.value)


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
])
def test_npu_config_refuses(kwargs, name):
    with pytest.raises(ValueError, match=name):
        NpuConfig(**kwargs)


def test_weights_that_do_not_fit_are_streamed_in_slices(reference):
    prog = compile_model(reference, {"wgt_depth": 512}, batch=1)
    assert decode(prog.setup[0])["op"] == Op.LOAD and len(prog.setup) == 2   # PARAM, DONE
    fc1 = next(L for L in prog.layers if L.name == "fc1")
    assert len(fc1.extra_pcs) == 1          # 4 column blocks of K=256 in slices of 2
