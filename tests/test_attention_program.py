"""npu.attention without a simulator: refusals (ValueError naming the problem), the program's
memory plan, the stream layout against a NumPy model of the CONV/SOFTMAX instructions, the
report command and the causal SOFTMAX cycle model's basic properties."""

import dataclasses

import numpy as np
import pytest

from golden.attention import attention, attention_params, multi_head_attention
from golden.gemm import gemm
from golden.quant import requantize
from golden.softmax import softmax
from hw.isa import Mem, Op, Reg, decode
from npu.attention import (check_params, compile_attention, main,
                           random_case, report_rows)
from npu.perf import EXEC_SEQ, SOFTMAX_SETUP, predict, softmax_cycles


def params(d=8, **kw):
    args = dict(q_scale=1 / 64, k_scale=1 / 64, v_scale=1 / 64, score_scale=1 / 16,
                out_scale=1 / 64, head_dim=d) | kw
    return attention_params(**args)


def emulate(prog, beats):
    """Run the program on a NumPy model of npu_top's memories and instructions (the engines'
    documented semantics), returning the STORE beats. Independent of the hardware, it checks
    the stream layout and the register settings of the program."""
    C = prog.config.cols
    act = np.zeros((prog.config.act_depth, C), np.int8)
    wgt = np.zeros((prog.config.wgt_depth, C), np.int8)
    prm = {}
    regs = {}
    pos = 0
    out = None
    for word in prog.instructions:
        f = decode(word)
        op = f["op"]
        if op == Op.SET:
            v = f["value"]
            regs[Reg(f["reg"])] = v - (1 << 32) if v >= 1 << 31 else v
        elif op == Op.LOAD:
            n, a = f["count"], f["addr"]
            if f["mem"] == Mem.PARAM:
                raw = beats[pos:pos + 9 * n].reshape(n, 9 * C)
                pos += 9 * n
                for e in range(n):
                    prm[a + e] = (raw[e, :4 * C].copy().view("<i4"),
                                  raw[e, 4 * C:8 * C].copy().view("<i4"),
                                  raw[e, 8 * C:].view(np.int8))
            else:
                mem = act if f["mem"] == Mem.ACT else wgt
                mem[a:a + n] = beats[pos:pos + n].view(np.int8)
                pos += n
        elif op == Op.CONV:
            g = regs
            M, K, cw, icw = g[Reg.BATCH], g[Reg.CIN], g[Reg.OUT_CW], g[Reg.IN_CW]
            x = act[g[Reg.IN_ADDR]:g[Reg.IN_ADDR] + M * icw].reshape(M, icw * C)[:, :K]
            for nb in range(cw):
                w = wgt[g[Reg.W_ADDR] + nb * K:g[Reg.W_ADDR] + (nb + 1) * K]
                bias, m0, sh = prm[g[Reg.P_ADDR] + nb]
                y = np.stack([requantize(gemm(x, w[:, j:j + 1], bias[j:j + 1]), int(m0[j]),
                                         int(sh[j]), g[Reg.OUT_ZP]) for j in range(C)], 1)
                for m in range(M):
                    act[g[Reg.OUT_ADDR] + m * cw + nb] = y[m, :, 0]
        elif op == Op.SOFTMAX:
            g = regs
            from golden.softmax import SoftmaxParams
            sp = SoftmaxParams(g[Reg.SM_MULT], -g[Reg.SM_SHIFT])
            V, L, icw = g[Reg.BATCH], g[Reg.CIN], g[Reg.IN_CW]
            x = act[g[Reg.IN_ADDR]:g[Reg.IN_ADDR] + V * icw].reshape(V, icw * C)
            y = np.full((V, icw * C), -128, np.int8)
            for v in range(V):
                n = (v % L) + 1 if g.get(Reg.SM_CAUSAL, 0) else L
                y[v, :n] = softmax(x[v, :n], sp)
            act[g[Reg.OUT_ADDR]:g[Reg.OUT_ADDR] + V * icw] = y.reshape(-1, C)
        elif op == Op.STORE:
            out = act[f["addr"]:f["addr"] + f["count"]].view(np.uint8)
    assert pos == len(beats), "the program's LOADs must take the whole stream"
    return out


@pytest.mark.parametrize("S,d,H,causal,kv,dv", [
    (1, 1, 1, False, None, None), (5, 3, 1, True, None, None), (17, 9, 2, True, None, None),
    (6, 10, 1, False, 11, 4), (12, 16, 3, False, None, None), (64, 64, 1, True, None, None)])
def test_program_matches_golden_on_a_numpy_model(S, d, H, causal, kv, dv):
    rng = np.random.default_rng(S * 100 + d)
    q, k, v, p, _ = random_case(rng, S, d, H, causal, kv_len=kv, v_dim=dv)
    prog = compile_attention(S, d, p, kv_len=kv, v_dim=dv, num_heads=H, causal=causal)
    got = prog.decode_output(emulate(prog, prog.stream(q, k, v)))
    want = (attention(q, k, v, p, causal) if H == 1 else
            multi_head_attention(q, k, v, p, H, causal))
    assert np.array_equal(got, want)
    assert np.array_equal(prog.golden(q, k, v), want)
    # the program leaves the plain softmax behind
    last_causal = [decode(w)["value"] for w in prog.instructions
                   if decode(w)["op"] == Op.SET and decode(w)["reg"] == Reg.SM_CAUSAL]
    assert not last_causal or last_causal[-1] == 0


def test_default_config_holds_64():
    prog = compile_attention(64, 64, params(64), causal=True)
    assert prog.act_words <= 2048 and prog.wgt_words <= 2048 and prog.param_entries <= 64
    assert len(prog.instructions) <= 256
    assert len(predict(prog.instructions, prog.config)) == len(prog.instructions)


@pytest.mark.parametrize("shapes,words", [
    (((4, 8), (5, 8), (4, 8)), "mismatched Q/K/V shapes: K is \\(5, 8\\)"),
    (((4, 8), (4, 7), (4, 8)), "mismatched Q/K/V shapes: K"),
    (((3, 8), (4, 8), (4, 8)), "mismatched Q/K/V shapes: Q"),
    (((4, 8), (4, 8), (4, 9)), "mismatched Q/K/V shapes: V"),
])
def test_mismatched_shapes(shapes, words):
    prog = compile_attention(4, 8, params(8))
    q, k, v = (np.zeros(s, np.int8) for s in shapes)
    with pytest.raises(ValueError, match=words):
        prog.stream(q, k, v)


def test_bad_inputs():
    prog = compile_attention(4, 8, params(8))
    z = np.zeros((4, 8), np.int8)
    with pytest.raises(ValueError, match="Q must be int8"):
        prog.stream(z.astype(np.int16), z, z)
    with pytest.raises(ValueError, match="K must be 2-D"):
        prog.stream(z, z.reshape(-1), z)


@pytest.mark.parametrize("kw,words", [
    (dict(seq_len=100, head_dim=64, config={"act_depth": 2048}), "act_depth=2048"),
    (dict(seq_len=64, head_dim=64, num_heads=3, config={"act_depth": 2048}), "act_depth=2048"),
    (dict(seq_len=256, head_dim=128, num_heads=4), "act_depth=16384"),
    (dict(seq_len=4, head_dim=8, kv_len=300), "softmax_max_len=256"),
    (dict(seq_len=4, head_dim=8, kv_len=5, causal=True), "causal mask needs Sq == Sk"),
    (dict(seq_len=0, head_dim=8), "seq_len must be an integer >= 1"),
    (dict(seq_len=4, head_dim=8, num_heads=9, config={"imem_depth": 64}), "imem_depth=64"),
    (dict(seq_len=64, head_dim=64, config={"wgt_depth": 512}), "wgt_depth=512"),
    (dict(seq_len=64, head_dim=8, config={"param_depth": 8}), "param_depth=8"),
])
def test_sizes_refused(kw, words):
    d = kw["head_dim"]
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        compile_attention(params=params(d), **kw)


def test_head_dim_mismatch():
    with pytest.raises(ValueError, match="params.head_dim is 16, the heads have d = 8"):
        compile_attention(4, 8, params(16))


@pytest.mark.parametrize("kw,words", [
    (dict(score_scale=1e-9), "score .* multiplier .* does not fit"),
    (dict(out_scale=1e-12), "output .* multiplier .* does not fit"),
    (dict(out_scale=1e3, v_scale=1e-9), "output .* multiplier .* underflows"),
])
def test_scale_that_does_not_fit_the_multiplier(kw, words):
    with pytest.raises(ValueError, match=words):
        params(8, **kw)


@pytest.mark.parametrize("field,value,words", [
    ("score_shift", 8, "score multiplier shift=8 does not fit the requantizer"),
    ("out_shift", -32, "output multiplier shift=-32 does not fit the requantizer"),
    ("score_multiplier", 0, "score multiplier M0=0 does not fit"),
    ("out_multiplier", 1 << 31, "output multiplier M0=2147483648 does not fit"),
    ("out_zero_point", 200, "out_zero_point must be an int8"),
])
def test_hand_made_params_refused(field, value, words):
    p = dataclasses.replace(params(8), **{field: value})
    with pytest.raises(ValueError, match=words):
        compile_attention(4, 8, p)
    with pytest.raises(ValueError, match=words):
        check_params(p)


def test_params_type():
    with pytest.raises(ValueError, match="params must be AttentionParams"):
        compile_attention(4, 8, {"head_dim": 8})


def test_causal_softmax_cycle_model():
    # plain softmax: the closed form of the unit's steady state
    assert softmax_cycles(8, 1, 64) == EXEC_SEQ + SOFTMAX_SETUP + 3 * 64 + 61
    for L in (4, 16, 19, 64, 256):      # max(L + 1, 20): the divider takes 20 per vector
        assert softmax_cycles(8, 9, L) - softmax_cycles(8, 8, L) == max(L + 1, 20)
    # causal rows are shorter: never slower than the full rows
    for S in (1, 8, 33, 64):
        assert softmax_cycles(8, S, S, causal=True) <= softmax_cycles(8, S, S)


def test_report_runs(capsys):
    rows = report_rows(count=2, seed=3, shapes=((8, 8, 1, True), (16, 4, 2, False)))
    assert all(r[5] > 0.99 for r in rows)        # cosine similarity
    main(["--report", "--count", "1"])
    out = capsys.readouterr().out
    assert "min cos" in out and "64  64" in out
