"""Amaranth-simulator checks of Requantizer against golden.quant (no Verilog build needed)."""

import numpy as np
import pytest

from golden.quant import (INT32_MAX, INT32_MIN, MAX_SHIFT, MIN_SHIFT, requantize,
                          rounding_divide_by_pot, saturating_rounding_doubling_high_mul)
from hw.requantizer import Requantizer
from sim.amaranth_streams import Stalls, as_array, frame, receive, send, simulate


def run_requant(lanes, frames, seed, stall=0.3):
    """frames: list of (acc (M, lanes) int32, params dict). Returns list of (M, lanes) int8."""
    dut = Requantizer(lanes)
    out = []

    async def feed(ctx):
        stalls = Stalls(stall, [seed, 0])
        for acc, _ in frames:
            await send(ctx, dut.acc, frame(acc.tolist()), stalls)

    async def feed_params(ctx):
        await send(ctx, dut.params, [p for _, p in frames])

    async def collect(ctx):
        stalls = Stalls(stall, [seed, 1])
        for acc, _ in frames:
            out.append(as_array(await receive(ctx, dut.result, len(acc), stalls), dtype=np.int8))

    simulate(dut, feed, feed_params, collect, cycles=sum(len(a) for a, _ in frames) * 10 + 100)
    return out


def params(bias, m0, shift, zp, qmin=-128, qmax=127, rounding="double"):
    return {"bias": [int(v) for v in bias], "m0": [int(v) for v in m0],
            "shift": [int(v) for v in shift], "zero_point": zp, "qmin": qmin, "qmax": qmax,
            "rounding": int(rounding == "single")}


@pytest.mark.parametrize("lanes,seed,rounding", [(1, 1, "double"), (3, 2, "double"),
                                                 (1, 3, "single"), (3, 4, "single")])
def test_pysim_random(lanes, seed, rounding):
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
        if f == 3:      # exact ties: acc * M0 an odd multiple of half the divisor
            m0[:] = 1 << 30
            shift[:] = rng.integers(-8, 1, lanes)
            acc = (2 * rng.integers(-1000, 1000, (M, lanes)) + 1) << (-shift).clip(0)
            bias[:] = 0
        frames.append((acc.astype(np.int32),
                       params(bias, m0, shift, zp, qmin, qmax, rounding)))
        wants.append(requantize(acc.astype(np.int32), m0.astype(np.int32),
                                shift.astype(np.int32), zp, bias.astype(np.int32), qmin, qmax,
                                rounding=rounding))
    got = run_requant(lanes, frames, seed)
    for f, (g, w) in enumerate(zip(got, wants)):
        np.testing.assert_array_equal(g, w, err_msg=f"seed={seed} frame={f} rounding={rounding}")


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
