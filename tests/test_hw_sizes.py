"""ProductSteps: the pipelined, scheduled setup multiplier every engine shares (hw/sizes.py)."""

import pytest
from amaranth.hdl import Module, Signal

from hw.conv_engine import SETUP_DEPS as CONV_DEPS
from hw.pool_engine import SETUP_DEPS as POOL_DEPS
from hw.sizes import STEP_LATENCY, ProductSteps, step_schedule
from hw.softmax_engine import SETUP_DEPS as SOFTMAX_DEPS
from sim.amaranth_streams import simulate


@pytest.mark.parametrize("deps", [CONV_DEPS, POOL_DEPS, SOFTMAX_DEPS])
def test_schedule_respects_dependencies(deps):
    issue, total = step_schedule(deps)
    assert len(set(issue)) == len(issue)                 # one product per cycle
    for n, ds in enumerate(deps):
        for d in ds:
            assert issue[n] >= issue[d] + STEP_LATENCY
    assert total == max(issue) + STEP_LATENCY


def test_declared_deps_are_checked():
    a, b = Signal(32), Signal(32)
    with pytest.raises(ValueError, match=r"step 1: declared deps \[\], reads \[0\]"):
        ProductSteps([(a, 3, 4), (b, a, 5)], [(), ()])


def _run_steps(values):
    """Products of a dependent chain and an independent one through the real pipeline."""
    x, y, z, w = (Signal(32, name=n) for n in "xyzw")
    steps = ProductSteps([(x, values[0], values[1]), (y, x, values[2]),
                          (z, values[3], values[4]), (w, y, values[5])],
                         [(), (0,), (), (1,)])
    m = Module()
    run, restart = Signal(), Signal()
    steps.elaborate_into(m, run, restart)
    out = {}

    async def bench(ctx):
        ctx.set(restart, 1)
        await ctx.tick()
        ctx.set(restart, 0)
        ctx.set(run, 1)
        for _ in range(steps.cycles):
            await ctx.tick()
        ctx.set(run, 0)
        await ctx.tick()
        out.update(x=ctx.get(x), y=ctx.get(y), z=ctx.get(z), w=ctx.get(w),
                   overflow=ctx.get(steps.overflow))

    simulate(m, bench, cycles=steps.cycles + 10)
    return out, steps.cycles


def test_products_and_overflow():
    out, cycles = _run_steps([300, 70, 1000, 65535, 65535, 3])
    assert cycles == step_schedule([(), (0,), (), (1,)])[1]
    assert out["x"] == 300 * 70 and out["y"] == 300 * 70 * 1000
    assert out["z"] == 65535 * 65535 and out["w"] == 300 * 70 * 1000 * 3
    assert out["overflow"] == 0
    out, _ = _run_steps([1 << 20, 1 << 13, 1, 1, 1, 1])      # 2**33: leaves 32 bits
    assert out["overflow"] == 1
