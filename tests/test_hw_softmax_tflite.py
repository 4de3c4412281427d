"""Amaranth-simulator checks of the SOFTMAX unit's TFLite mode against
golden.tflite.softmax_tflite, and of its pieces (Srdhm, TfliteReciprocal) against the golden
fixed-point functions. Small max_len keeps them fast; tests/test_sim_npu.py runs the mode in
npu_top (softmax_max_len 256) through Verilator."""

import numpy as np
import pytest

import golden.tflite as gt
import hw.softmax as hs
import hw.softmax_tflite as ht
from golden.quant import INT32_MAX, INT32_MIN, saturating_rounding_doubling_high_mul
from golden.softmax import random_logits
from hw.softmax import SoftmaxUnit
from sim.amaranth_streams import (CycleCounter, Stalls, as_array, frame, receive, send,
                                  simulate)


def test_constants_match_golden():
    assert ht.SHIFT_BASE == 22
    assert SoftmaxUnit(256).tflite_sum_width == 28
    assert SoftmaxUnit(4096).tflite_max_len == gt.SOFTMAX_TFLITE_MAX_LEN == 511


def test_srdhm_matches_golden():
    seed = 31
    rng = np.random.default_rng(seed)
    edges = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, 1 << 30, INT32_MAX]
    a = np.array(edges * len(edges) + list(rng.integers(INT32_MIN, INT32_MAX, 100,
                                                         endpoint=True)), np.int64)
    b = np.array([e for e in edges for _ in edges] + list(rng.integers(INT32_MIN, INT32_MAX, 100,
                                                                        endpoint=True)), np.int64)
    want = saturating_rounding_doubling_high_mul(a, b)
    dut = ht.Srdhm()
    got = []

    async def bench(ctx):
        ctx.set(dut.en, 1)
        for n in range(len(a) + ht.SRDHM_LATENCY):
            if n < len(a):
                ctx.set(dut.a, int(a[n]))
                ctx.set(dut.b, int(b[n]))
            await ctx.tick()
            if n + 1 >= ht.SRDHM_LATENCY:
                got.append(ctx.get(dut.h))
    simulate(dut, bench, cycles=len(a) + 20)
    np.testing.assert_array_equal(np.array(got[:len(a)]), want, err_msg=f"seed={seed}")


def golden_reciprocal(total):
    """recip and shift of TfliteReciprocal, from golden.tflite's pieces."""
    clz = int(gt._count_leading_zeros32(np.int64(total)))
    mantissa = ((total << clz) & 0xFFFFFFFF) - (1 << 31)
    recip = int(gt.one_over_one_plus_x_for_x_in_0_1(np.int64(mantissa)))
    return recip, gt.SOFTMAX_ACCUM_INTEGER_BITS - clz


def test_reciprocal_matches_golden():
    seed = 32
    rng = np.random.default_rng(seed)
    totals = [1 << 19, (1 << 19) + 1, (1 << 20) - 1, 1 << 20, (1 << 28) - 1, 511 << 19,
              3 << 25] + [int(v) for v in rng.integers(1 << 19, 1 << 28, 20)]
    dut = ht.TfliteReciprocal(28)
    got = []

    async def bench(ctx):
        for total in totals:
            ctx.set(dut.total, total)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await ctx.tick().repeat(ht.RECIP_STEPS)
            got.append((ctx.get(dut.recip), ctx.get(dut.shift)))
    simulate(dut, bench, cycles=len(totals) * (ht.RECIP_STEPS + 2) + 10)
    for total, g in zip(totals, got):
        assert g == golden_reciprocal(total), f"seed={seed} S={total}"


def run_tflite(vectors, params, max_len, seed, stall_in=0.0, stall_out=0.0, banks=hs.BANKS,
               done_cycles=None):
    """Load the exp table of ``params``, stream ``vectors`` through the unit in TFLite mode;
    returns the output vectors (and appends the cycle of each output's end to
    ``done_cycles``)."""
    dut = SoftmaxUnit(max_len, banks)
    table = gt.softmax_exp_table(params)
    outputs = []
    done_cycles = [] if done_cycles is None else done_cycles
    cycle = CycleCounter()

    async def feed(ctx):
        ctx.set(dut.mode, 1)
        await send(ctx, dut.exp_table, [{"index": i, "value": int(v)}
                                        for i, v in enumerate(table)])
        stalls = Stalls(stall_in, [seed, 0])
        for vec in vectors:
            await send(ctx, dut.logits, frame(int(x) for x in vec), stalls)

    async def collect(ctx):
        stalls = Stalls(stall_out, [seed, 1])
        while len(outputs) < len(vectors):
            outputs.append(as_array(await receive(ctx, dut.probs, stalls=stalls), dtype=np.int8))
            done_cycles.append(cycle.now)

    total = sum(len(v) for v in vectors)
    slow = 1 + 4 * max(stall_in, stall_out)
    simulate(dut, feed, collect, processes=[cycle.process],
             cycles=int((3 * total + (ht.RECIP_STEPS + 60) * len(vectors)) * slow + 600))
    return outputs


def all_differences(max_len):
    """Vectors whose differences to their maximum (127) cover 0 .. 255 (-128 .. 127)."""
    diffs = np.arange(256)
    step = max(1, max_len - 1)
    return [np.concatenate([[127], 127 - diffs[i:i + step]]).astype(np.int8)
            for i in range(0, 256, step)]


#: (input scale, beta): scales 1/256 .. 1 and large ones where diff_min cuts off early or
#: every non-maximum is cut off (input_multiplier saturated).
CASES = [(1 / 256, 1.0), (0.01, 0.5), (0.1, 2.0), (1.0, 1.0), (3.0, 0.5), (100.0, 1.0)]


@pytest.mark.parametrize("scale,beta", CASES)
def test_pysim_every_difference(scale, beta):
    params = gt.softmax_params(np.float32(scale), beta)
    vectors = all_differences(32)
    got = run_tflite(vectors, params, 32, seed=0)
    for n, (v, g) in enumerate(zip(vectors, got)):
        np.testing.assert_array_equal(g, gt.softmax_tflite(v, params),
                                      err_msg=f"scale {scale} beta {beta} vector {n}")


@pytest.mark.parametrize("max_len,banks,seed", [(16, 4, 1), (7, 2, 2), (1, 2, 3)])
def test_pysim_random(max_len, banks, seed):
    rng = np.random.default_rng(seed)
    scale = np.float32(2.0 ** rng.uniform(-8, 0))
    beta = float(rng.choice([1.0, 0.5, 2.0]))
    params = gt.softmax_params(scale, beta)
    vectors = [np.full(max_len, -128, np.int8), np.array([100], np.int8),
               np.full(max_len, 7, np.int8)]                 # ties: all equal
    dominant = rng.integers(-128, -100, max_len).astype(np.int8)
    dominant[rng.integers(0, max_len)] = 127                 # saturates at 127
    vectors.append(dominant)
    vectors += [random_logits(rng, int(rng.integers(1, max_len + 1))) for _ in range(8)]
    got = run_tflite(vectors, params, max_len, seed, stall_in=0.3, stall_out=0.3, banks=banks)
    for n, (v, g) in enumerate(zip(vectors, got)):
        np.testing.assert_array_equal(g, gt.softmax_tflite(v, params),
                                      err_msg=f"seed={seed} scale {scale} beta {beta} "
                                              f"vector {n}")


@pytest.mark.parametrize("L", [4, 64])
def test_pysim_throughput(L):
    """Back-to-back vectors, no backpressure: max(L + 1, TFLITE_RECIP_STEPS + 2) cycles per
    vector (stages A, B and C stream one element per cycle; stage D takes its steps + 2)."""
    bound = max(L + 1, hs.TFLITE_RECIP_STEPS + 2)
    count = 5
    rng = np.random.default_rng(5)
    params = gt.softmax_params(np.float32(0.1))
    vectors = [random_logits(rng, L) for _ in range(count)]
    done = []
    got = run_tflite(vectors, params, L, seed=5, done_cycles=done)
    for v, g in zip(vectors, got):
        np.testing.assert_array_equal(g, gt.softmax_tflite(v, params))
    per_vector = (done[-1] - done[1]) / (count - 2)
    assert per_vector <= bound, f"L={L}: {per_vector} cycles per vector"
