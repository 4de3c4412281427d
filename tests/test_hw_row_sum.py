"""Amaranth-simulator checks of hw.row_sum.RowSum (the K-split mode's row reduction) against
NumPy sums: random tiles under stalls at both ends, extreme values (int32 wrap-around, as the
requantizer's 32-bit accumulator), and the latency the cycle model uses."""

import numpy as np
import pytest

from hw.row_sum import RowSum, latency
from sim.amaranth_streams import Stalls, as_array, frame, receive, send, simulate


def wrap32(x):
    return ((np.asarray(x, np.int64) + 2**31) % 2**32) - 2**31


def run_row_sum(lanes, tiles, seed, stall_in=0.0, stall_out=0.0):
    dut = RowSum(lanes)
    got = []

    async def feed(ctx):
        stalls = Stalls(stall_in, [seed, 0])
        for t in tiles:
            await send(ctx, dut.input, frame([row.tolist() for row in t]), stalls)

    async def collect(ctx):
        stalls = Stalls(stall_out, [seed, 1])
        for _ in tiles:
            got.append(as_array(await receive(ctx, dut.output, 1, stalls))[0])

    simulate(dut, feed, collect, cycles=len(tiles) * lanes * 20 + 200)
    return np.array(got)


@pytest.mark.parametrize("lanes,seed,stall", [(2, 1, 0.0), (4, 2, 0.4), (8, 3, 0.3),
                                              (16, 4, 0.2)])
def test_random_tiles(lanes, seed, stall):
    rng = np.random.default_rng(seed)
    tiles = rng.integers(-2**31, 2**31, (6, lanes, lanes), dtype=np.int64)
    tiles[0] = rng.choice([-2**31, 2**31 - 1], (lanes, lanes))      # wraps around
    got = run_row_sum(lanes, tiles, seed, stall, stall)
    np.testing.assert_array_equal(got, wrap32(tiles.sum(axis=2)), err_msg=f"seed={seed}")


def test_latency_matches_the_cycle_model():
    """A lone tile's beat comes latency(lanes) cycles after its last row was taken."""
    lanes = 8
    dut = RowSum(lanes)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.output.ready, 1)
        for i in range(lanes):
            ctx.set(dut.input.payload, {"data": [i] * lanes, "last": int(i == lanes - 1)})
            ctx.set(dut.input.valid, 1)
            await ctx.tick()
        ctx.set(dut.input.valid, 0)
        for cycle in range(1, 20):
            if ctx.get(dut.output.valid):
                seen["cycles"] = cycle
                seen["data"] = [int(v) for v in ctx.get(dut.output.payload.data)]
                break
            await ctx.tick()

    simulate(dut, bench, cycles=100)
    assert seen["cycles"] == latency(lanes)
    assert seen["data"] == [i * lanes for i in range(lanes)]


@pytest.mark.parametrize("lanes", [1, 3, 6])
def test_refuses_lanes_that_are_not_a_power_of_two(lanes):
    with pytest.raises(ValueError, match="power of two"):
        RowSum(lanes)
