"""Amaranth-simulator checks of ActivationLUT against golden.activation.apply_table."""

import numpy as np
import pytest

from golden.activation import DEFAULT_QPARAMS, activation_table, apply_table
from hw.activation import ActivationLUT
from sim.amaranth_streams import Stalls, as_array, frame, receive, send, simulate


def run_lut(lanes, jobs, seed, stall=0.3, init=None):
    """jobs: list of (table or None, x (M, lanes) int8). Returns list of outputs."""
    dut = ActivationLUT(lanes, init)
    out = []

    async def feed(ctx):
        stalls = Stalls(stall, [seed, 0])
        for n, (table, x) in enumerate(jobs):
            while len(out) < n:                     # previous job drained
                await ctx.tick()
            if table is not None:
                await send(ctx, dut.table, [{"index": idx, "value": v}
                                            for idx, v in enumerate(table.tolist())])
            await send(ctx, dut.input, frame(x.tolist()), stalls)

    async def collect(ctx):
        stalls = Stalls(stall, [seed, 1])
        for _, x in jobs:
            out.append(as_array(await receive(ctx, dut.result, len(x), stalls), dtype=np.int8))

    simulate(dut, feed, collect, cycles=sum(300 + 10 * len(x) for _, x in jobs))
    return out


def test_pysim_reload_tables():
    rng = np.random.default_rng(11)
    names = ["relu", "sigmoid", "gelu"]
    jobs = [(activation_table(n, *DEFAULT_QPARAMS[n]),
             rng.integers(-128, 128, (6, 3), dtype=np.int8)) for n in names]
    jobs[1][1][0] = [-128, 127, 0]
    got = run_lut(3, jobs, seed=11)
    for n, (t, x), g in zip(names, jobs, got):
        np.testing.assert_array_equal(g, apply_table(x, t), err_msg=n)


def test_pysim_init_table():
    t = activation_table("tanh", *DEFAULT_QPARAMS["tanh"])
    x = np.arange(-128, 128, dtype=np.int8).reshape(-1, 2)
    got = run_lut(2, [(None, x)], seed=1, stall=0.0, init=t)[0]
    np.testing.assert_array_equal(got, apply_table(x, t))


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("kwargs,name", [
    ({"init": np.zeros(255, np.int8)}, "table"), ({"init": np.zeros(257, np.int8)}, "table"),
    ({"init": np.zeros((2, 128), np.int8)}, "table"), ({"init": np.full(256, 300)}, "table"),
    ({"lanes": 0}, "lanes"),
])
def test_bad_config(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ActivationLUT(**kwargs)
