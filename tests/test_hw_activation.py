"""Amaranth-simulator checks of ActivationLUT against golden.activation.apply_table."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.activation import DEFAULT_QPARAMS, activation_table, apply_table
from hw.activation import ActivationLUT



def run_bounded(sim, cycles):
    """Run until every testbench has finished, failing after ``cycles`` clock cycles."""
    steps = 0
    while sim.advance():
        steps += 1
        assert steps < 2 * cycles + 10, f"simulation still running after {cycles} cycles"

def run_lut(lanes, jobs, seed, stall=0.3, init=None):
    """jobs: list of (table or None, x (M, lanes) int8). Returns list of outputs."""
    dut = ActivationLUT(lanes, init)
    rng = np.random.default_rng(seed)
    out = []

    async def feed(ctx):
        for n, (table, x) in enumerate(jobs):
            ctx.set(dut.input.valid, 0)
            while len(out) < n:                     # previous job drained
                await ctx.tick()
            if table is not None:
                for idx, v in enumerate(table.tolist()):
                    ctx.set(dut.table.payload, {"index": idx, "value": v})
                    ctx.set(dut.table.valid, 1)
                    await ctx.tick().until(dut.table.ready)
                ctx.set(dut.table.valid, 0)
            for r in range(x.shape[0]):
                while rng.random() < stall:
                    ctx.set(dut.input.valid, 0)
                    await ctx.tick()
                ctx.set(dut.input.payload, {"data": x[r].tolist(), "last": int(r == len(x) - 1)})
                ctx.set(dut.input.valid, 1)
                await ctx.tick().until(dut.input.ready)
        ctx.set(dut.input.valid, 0)

    async def collect(ctx):
        for _, x in jobs:
            rows = []
            for r in range(x.shape[0]):
                while rng.random() < stall:
                    ctx.set(dut.result.ready, 0)
                    await ctx.tick()
                ctx.set(dut.result.ready, 1)
                payload, = await ctx.tick().sample(dut.result.payload).until(dut.result.valid)
                assert payload.last == (r == x.shape[0] - 1)
                rows.append([int(v) for v in payload.data])
            out.append(np.array(rows, np.int8))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feed)
    sim.add_testbench(collect)
    cycles = sum(300 + 10 * len(x) for _, x in jobs)
    run_bounded(sim, cycles)
    assert len(out) == len(jobs)
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
