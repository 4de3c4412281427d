"""Amaranth-simulator checks of Requantizer against golden.quant (no Verilog build needed)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.quant import (INT32_MAX, INT32_MIN, MAX_SHIFT, MIN_SHIFT, requantize,
                          rounding_divide_by_pot, saturating_rounding_doubling_high_mul)
from hw.requantizer import Requantizer



def run_bounded(sim, cycles):
    """Run until every testbench has finished, failing after ``cycles`` clock cycles."""
    steps = 0
    while sim.advance():
        steps += 1
        assert steps < 2 * cycles + 10, f"simulation still running after {cycles} cycles"

def run_requant(lanes, frames, seed, stall=0.3):
    """frames: list of (acc (M, lanes) int32, params dict). Returns list of (M, lanes) int8."""
    dut = Requantizer(lanes)
    rng = np.random.default_rng(seed)
    out = []

    async def feed(ctx):
        for acc, _ in frames:
            for r in range(acc.shape[0]):
                while rng.random() < stall:
                    ctx.set(dut.acc.valid, 0)
                    await ctx.tick()
                ctx.set(dut.acc.payload, {"data": acc[r].tolist(),
                                          "last": int(r == acc.shape[0] - 1)})
                ctx.set(dut.acc.valid, 1)
                await ctx.tick().until(dut.acc.ready)
        ctx.set(dut.acc.valid, 0)

    async def feed_params(ctx):
        for _, p in frames:
            ctx.set(dut.params.payload, p)
            ctx.set(dut.params.valid, 1)
            await ctx.tick().until(dut.params.ready)
        ctx.set(dut.params.valid, 0)

    async def collect(ctx):
        for acc, _ in frames:
            rows = []
            for r in range(acc.shape[0]):
                while rng.random() < stall:
                    ctx.set(dut.result.ready, 0)
                    await ctx.tick()
                ctx.set(dut.result.ready, 1)
                payload, = await ctx.tick().sample(dut.result.payload).until(dut.result.valid)
                assert payload.last == (r == acc.shape[0] - 1)
                rows.append([int(v) for v in payload.data])
            out.append(np.array(rows, np.int8))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feed)
    sim.add_testbench(feed_params)
    sim.add_testbench(collect)
    beats = sum(a.shape[0] for a, _ in frames)
    run_bounded(sim, (beats * 10 + 100))
    assert len(out) == len(frames), "requantizer did not produce every frame"
    return out


def params(bias, m0, shift, zp, qmin=-128, qmax=127):
    return {"bias": [int(v) for v in bias], "m0": [int(v) for v in m0],
            "shift": [int(v) for v in shift], "zero_point": zp, "qmin": qmin, "qmax": qmax}


@pytest.mark.parametrize("lanes,seed", [(1, 1), (3, 2)])
def test_pysim_random(lanes, seed):
    rng = np.random.default_rng(seed)
    frames, wants = [], []
    for f in range(4):
        M = int(rng.integers(1, 5))
        acc = rng.integers(INT32_MIN, INT32_MAX, (M, lanes), dtype=np.int64, endpoint=True)
        if f == 1:
            acc[:] = rng.choice([INT32_MIN, INT32_MAX, 0, -1], (M, lanes))
        bias = rng.integers(-(1 << 20), 1 << 20, lanes)
        acc = np.clip(acc, INT32_MIN - np.minimum(bias, 0), INT32_MAX - np.maximum(bias, 0))
        m0 = rng.integers(0, INT32_MAX, lanes, endpoint=True)
        m0[0] = rng.choice([0, 1 << 30, INT32_MAX])
        shift = rng.integers(MIN_SHIFT, MAX_SHIFT, lanes, endpoint=True)
        zp = int(rng.integers(-128, 128))
        qmin, qmax = (-128, 127) if f != 2 else (zp, 127)
        frames.append((acc.astype(np.int32), params(bias, m0, shift, zp, qmin, qmax)))
        wants.append(requantize(acc.astype(np.int32), m0.astype(np.int32),
                                shift.astype(np.int32), zp, bias.astype(np.int32), qmin, qmax))
    got = run_requant(lanes, frames, seed)
    for f, (g, w) in enumerate(zip(got, wants)):
        np.testing.assert_array_equal(g, w, err_msg=f"seed={seed} frame={f}")


def test_pysim_srdhm_overflow():
    """M0 = INT32_MIN is outside the requantize contract, but the SRDHM stage still follows
    gemmlowp: INT32_MIN * INT32_MIN saturates to INT32_MAX."""
    acc = np.array([[INT32_MIN, INT32_MIN], [INT32_MAX, -5]], np.int64)
    m0 = np.array([INT32_MIN, INT32_MIN])
    shift = np.array([-3, 0])
    got = run_requant(2, [(acc.astype(np.int32), params([0, 0], m0, shift, 0))], 3, stall=0)[0]
    h = saturating_rounding_doubling_high_mul(acc, m0)
    want = np.clip(rounding_divide_by_pot(h, -shift), -128, 127)
    np.testing.assert_array_equal(got, want)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("lanes", [0, 65, 2.0, True])
def test_bad_config(lanes):
    with pytest.raises(ValueError, match="lanes"):
        Requantizer(lanes)
