"""SystolicArray with word operands (depthwise mode): PE (i, j) multiplies lane j of row i's
word with column j's weight, against a NumPy model; and plain GEMMs still match when every
lane carries the same value."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.systolic import SystolicArray


def run_words(rows, cols, tiles, seed, stall=0.2):
    """tiles: list of (a (K, R, C) int8, b (K, C) int8); returns list of (R, C) int32."""
    dut = SystolicArray(rows, cols, word_operands=True)
    rng = np.random.default_rng(seed)
    out = []

    async def feed(ctx):
        for a, b in tiles:
            K = a.shape[0]
            for k in range(K):
                while rng.random() < stall:
                    ctx.set(dut.operands.valid, 0)
                    await ctx.tick()
                ctx.set(dut.operands.payload, {"a": a[k].tolist(), "b": b[k].tolist(),
                                               "last": int(k == K - 1)})
                ctx.set(dut.operands.valid, 1)
                await ctx.tick().until(dut.operands.ready)
        ctx.set(dut.operands.valid, 0)

    async def feed_bias(ctx):
        ctx.set(dut.bias.payload, [0] * cols)
        ctx.set(dut.bias.valid, 1)

    async def collect(ctx):
        for _ in tiles:
            rows_ = []
            for i in range(rows):
                ctx.set(dut.result.ready, int(rng.random() >= stall))
                while True:
                    ctx.set(dut.result.ready, int(rng.random() >= stall))
                    _, _, valid, ready, payload = await ctx.tick().sample(
                        dut.result.valid, dut.result.ready, dut.result.payload)
                    if valid and ready:
                        break
                assert payload.last == (i == rows - 1)
                rows_.append([int(x) for x in payload.data])
            out.append(np.array(rows_, np.int64))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feed)
    sim.add_testbench(feed_bias, background=True)
    sim.add_testbench(collect)
    sim.run()
    return out


@pytest.mark.parametrize("rows,cols,seed", [(4, 4, 1), (3, 5, 2), (1, 3, 3), (8, 8, 4)])
def test_word_operands_multiply_lane_j_in_column_j(rows, cols, seed):
    rng = np.random.default_rng(seed)
    tiles = []
    for K in (1, 2, 9, rows + 3):
        a = rng.integers(-128, 128, (K, rows, cols)).astype(np.int8)
        b = rng.integers(-128, 128, (K, cols)).astype(np.int8)
        tiles.append((a, b))
    got = run_words(rows, cols, tiles, seed)
    for (a, b), g in zip(tiles, got):
        want = np.einsum("kij,kj->ij", a.astype(np.int64), b.astype(np.int64))
        np.testing.assert_array_equal(g, want, err_msg=f"seed {seed}")
