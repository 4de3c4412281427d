"""Amaranth-simulator checks of SystolicArray against golden.gemm (no Verilog build needed).

Small, fast configurations; the cocotb testbench in sim/ covers the generated Verilog."""

import numpy as np
import pytest

from golden.gemm import gemm
from hw.systolic import SystolicArray
from sim.amaranth_streams import Stalls, as_array, frame, receive, send, simulate
from sim.tiling import tile_gemm, untile


def run_array(rows, cols, a, b, bias, seed, stall_in=0.0, stall_out=0.0, out_depth=None):
    dut = SystolicArray(rows, cols, out_depth=out_depth)
    tiles = tile_gemm(a, b, bias, rows, cols)
    results = []

    async def feed(ctx):
        stalls = Stalls(stall_in, [seed, 0])
        for t in tiles:
            await send(ctx, dut.operands, frame([{"a": ak.tolist(), "b": bk.tolist()}
                                                 for ak, bk in zip(t.a, t.b)]), stalls)

    async def feed_bias(ctx):
        await send(ctx, dut.bias, [t.bias.tolist() for t in tiles])

    async def collect(ctx):
        stalls = Stalls(stall_out, [seed, 1])
        for _ in tiles:
            results.append(as_array(await receive(ctx, dut.result, rows, stalls)))

    simulate(dut, feed, feed_bias, collect,
             cycles=len(tiles) * (a.shape[1] + rows) * 20 + 2000)
    return untile(tiles, results, a.shape[0], b.shape[1])


def rand_case(rng, M, K, N, extreme=False):
    if extreme:
        v = rng.choice([-128, 127])
        return (np.full((M, K), v, np.int8), np.full((K, N), rng.choice([-128, 127]), np.int8),
                rng.integers(-2**20, 2**20, N, dtype=np.int32))
    return (rng.integers(-128, 128, (M, K), dtype=np.int8),
            rng.integers(-128, 128, (K, N), dtype=np.int8),
            rng.integers(-2**24, 2**24, N, dtype=np.int32))


@pytest.mark.parametrize("rows,cols,seed", [(1, 1, 1), (2, 3, 2), (4, 4, 3), (3, 1, 4)])
def test_pysim_random(rows, cols, seed):
    rng = np.random.default_rng(seed)
    for case in range(3):
        M, K, N = (int(x) for x in rng.integers(1, 2 * max(rows, cols) + 2, 3))
        a, b, bias = rand_case(rng, M, K, N, extreme=(case == 2))
        got = run_array(rows, cols, a, b, bias, seed=seed * 100 + case, stall_in=0.3, stall_out=0.3)
        np.testing.assert_array_equal(got, gemm(a, b, bias), err_msg=f"seed={seed} case={case}")


def test_pysim_small_fifo_k1():
    """K = 1 with the smallest legal output FIFO: credits and drain spacing must hold."""
    rng = np.random.default_rng(7)
    a, b, bias = rand_case(rng, 9, 1, 7)
    got = run_array(4, 3, a, b, bias, seed=7, out_depth=4)
    np.testing.assert_array_equal(got, gemm(a, b, bias))


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("kwargs,name", [
    ({"rows": 0}, "rows"), ({"cols": -1}, "cols"), ({"rows": 65}, "rows"),
    ({"rows": 2.5}, "rows"), ({"rows": 4, "out_depth": 3}, "out_depth"),
])
def test_bad_config(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SystolicArray(**kwargs)
