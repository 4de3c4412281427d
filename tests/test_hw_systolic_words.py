"""SystolicArray with word operands (depthwise mode): PE (i, j) multiplies lane j of row i's
word with column j's weight, against a NumPy model."""

import numpy as np
import pytest

from hw.systolic import SystolicArray
from sim.amaranth_streams import Stalls, as_array, frame, receive, send, simulate


def run_words(rows, cols, tiles, seed, stall=0.2):
    """tiles: list of (a (K, R, C) int8, b (K, C) int8); returns list of (R, C) int64."""
    dut = SystolicArray(rows, cols, word_operands=True)
    out = []

    async def feed(ctx):
        stalls = Stalls(stall, [seed, 0])
        for a, b in tiles:
            await send(ctx, dut.operands, frame([{"a": ak.tolist(), "b": bk.tolist()}
                                                 for ak, bk in zip(a, b)]), stalls)

    async def feed_bias(ctx):
        await send(ctx, dut.bias, [[0] * cols for _ in tiles])

    async def collect(ctx):
        stalls = Stalls(stall, [seed, 1])
        for _ in tiles:
            out.append(as_array(await receive(ctx, dut.result, rows, stalls)))

    simulate(dut, feed, feed_bias, collect,
             cycles=sum(a.shape[0] + rows for a, _ in tiles) * 20 + 2000)
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
