"""Amaranth-simulator checks of SoftmaxUnit against golden.softmax (no Verilog build needed).

Small max_len keeps them fast; the cocotb testbench (sim/tb_softmax.py) covers L_max = 256."""

import numpy as np
import pytest

import golden.softmax as gs
import hw.softmax as hs
from golden.softmax import random_logits, softmax, softmax_params
from hw.softmax import SoftmaxUnit
from sim.amaranth_streams import (CycleCounter, Stalls, as_array, frame, receive, send,
                                  simulate)


def run_unit(vectors, params, max_len, seed, stall_in=0.0, stall_out=0.0, banks=hs.BANKS,
             extra_cycles=0):
    """Stream ``vectors`` through the unit; returns (outputs, cycle of every output tlast,
    the overflow and dropped outputs at the end)."""
    dut = SoftmaxUnit(max_len, banks)
    outputs, done_cycles, flags = [], [], {}
    expected = sum(1 for v in vectors if len(v) <= max_len)
    cycle = CycleCounter()

    async def feed(ctx):
        ctx.set(dut.multiplier, params.multiplier)
        ctx.set(dut.right_shift, params.right_shift)
        stalls = Stalls(stall_in, [seed, 0])
        for vec in vectors:
            await send(ctx, dut.logits, frame(int(x) for x in vec), stalls)

    async def collect(ctx):
        stalls = Stalls(stall_out, [seed, 1])
        while len(outputs) < expected:
            outputs.append(as_array(await receive(ctx, dut.probs, stalls=stalls), dtype=np.int8))
            done_cycles.append(cycle.now)
        flags.update(overflow=ctx.get(dut.overflow), dropped=ctx.get(dut.dropped))

    total = sum(len(v) for v in vectors)
    slow = 1 + 4 * max(stall_in, stall_out)
    simulate(dut, feed, collect, processes=[cycle.process],
             cycles=int((3 * total + 60 * len(vectors)) * slow + 200 + extra_cycles))
    return outputs, done_cycles, flags


def test_constants_match_golden():
    assert hs.exp_table() == list(gs.EXP_TABLE)
    assert (hs.EXP_FRAC_BITS, hs.EXP_ONE_BITS, hs.RECIP_BITS, hs.OUT_SHIFT) == (
        gs.EXP_FRAC_BITS, gs.EXP_ONE_BITS, gs.RECIP_BITS, gs.OUT_SHIFT)
    assert SoftmaxUnit(256).sum_width == gs.sum_bits(256)


@pytest.mark.parametrize("max_len,banks,scale,seed", [
    (16, 4, 0.1, 1), (7, 2, 0.5, 2), (1, 2, 0.05, 3), (32, 3, 1 / 64, 4), (9, 4, 2000.0, 5),
    (12, 4, 1e-6, 6)])
def test_pysim_random(max_len, banks, scale, seed):
    rng = np.random.default_rng(seed)
    params = softmax_params(scale)
    vectors = [np.full(max_len, -128, np.int8), np.array([100], np.int8),
               np.full(max_len, 7, np.int8)]
    vectors += [random_logits(rng, int(rng.integers(1, max_len + 1))) for _ in range(12)]
    got, _, _ = run_unit(vectors, params, max_len, seed, stall_in=0.3, stall_out=0.3,
                         banks=banks)
    for n, (v, g) in enumerate(zip(vectors, got)):
        np.testing.assert_array_equal(g, softmax(v, params), err_msg=f"seed={seed} vector {n}")


def test_pysim_overlong_dropped():
    """A frame longer than max_len is consumed and dropped; its neighbours come out intact."""
    seed = 9
    rng = np.random.default_rng(seed)
    params = softmax_params(0.1)
    vectors = [random_logits(rng, 8), random_logits(rng, 9), random_logits(rng, 20),
               random_logits(rng, 3)]
    got, _, flags = run_unit(vectors, params, 8, seed, stall_in=0.2, stall_out=0.2)
    assert flags == {"overflow": 1, "dropped": 2}
    kept = [v for v in vectors if len(v) <= 8]
    for v, g in zip(kept, got):
        np.testing.assert_array_equal(g, softmax(v, params), err_msg=f"seed={seed}")


@pytest.mark.parametrize("L,bound", [(32, 33), (20, 21), (16, 20), (4, 20), (1, 20)])
def test_pysim_throughput(L, bound):
    """Back-to-back vectors, no backpressure: max(L + 1, DIV_STEPS + 2) cycles per vector
    (stages A, B and C stream one element per cycle; the divider takes DIV_STEPS + 2)."""
    assert bound == max(L + 1, hs.DIV_STEPS + 2)
    count = 8
    rng = np.random.default_rng(3)
    params = softmax_params(0.1)
    vectors = [random_logits(rng, L) for _ in range(count)]
    got, done, _ = run_unit(vectors, params, max(L, 2), seed=3)
    for v, g in zip(vectors, got):
        np.testing.assert_array_equal(g, softmax(v, params))
    per_vector = (done[-1] - done[1]) / (count - 2)
    assert per_vector <= bound, f"L={L}: {per_vector} cycles per vector"


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("kwargs,name", [
    ({"max_len": 0}, "max_len"), ({"max_len": 1 << 17}, "max_len"), ({"max_len": 2.0}, "max_len"),
    ({"banks": 1}, "banks"), ({"banks": 9}, "banks")])
def test_bad_config(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SoftmaxUnit(**kwargs)
