"""cocotb tests of ``npu_activation``; run through :mod:`flow.simulate`.

Environment: ``NPU_LANES``, ``NPU_SEED``, ``NPU_COUNT`` (random cases, default 100),
``NPU_PERF_BEATS`` (beats of the throughput run).
"""

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from golden.activation import ACTIVATIONS, DEFAULT_QPARAMS, activation_table, output_qparams
from sim.activation_env import ActivationDriver, ActivationMonitor, ActivationScoreboard
from sim.bus import HandshakeLog, clock_and_reset
from sim.vector_env import env_int, report, steady_throughput, within


class Bench:
    def __init__(self, dut):
        self.dut = dut
        self.lanes = env_int("NPU_LANES", 4)
        self.seed = env_int("NPU_SEED", 1)
        self.rng = np.random.default_rng(self.seed)
        self.driver = ActivationDriver(dut, self.lanes)
        self.monitor = ActivationMonitor(dut, self.lanes)
        self.scoreboard = ActivationScoreboard(self.seed)
        self.handshakes = HandshakeLog(dut, "s_axis_in", "m_axis_res")
        dut._log.info("npu_activation lanes=%d seed=%d", self.lanes, self.seed)

    async def start(self):
        await clock_and_reset(self.dut, low=("s_axis_in_tvalid", "s_axis_tab_tvalid",
                                             "m_axis_res_tready"))

    async def run_case(self, label, x, table, stall):
        self.driver.set_backpressure(self.rng, stall)
        self.monitor.set_backpressure(self.rng, stall)
        beats = self.driver.send(x)
        flat = await within(self.monitor.receive(beats), (200 + beats * (20 if stall else 3)) * 10,
                            label, self.seed)
        self.scoreboard.check_case(label, x, table, flat)


def random_table(rng, name):
    """Table of ``name`` under random (valid) quantization parameters, or a random table."""
    if name == "random":
        return rng.integers(-128, 128, 256, dtype=np.int8)
    si = float(rng.uniform(0.005, 0.2))
    zi = int(rng.integers(-128, 128))
    so, zo = output_qparams(ACTIVATIONS[name], si, zi)
    so *= float(rng.uniform(0.5, 1.5))             # sometimes saturating
    return activation_table(name, si, zi, so, zo)


def random_input(rng, lanes, kind):
    shape = (int(rng.integers(1, 6)), int(rng.integers(1, 3 * lanes + 2)))
    if kind == "extreme":
        return rng.choice(np.array([-128, 127, -127, 0, -1], np.int8), shape)
    if kind == "ramp":
        return np.arange(-128, 128, dtype=np.int8).reshape(-1, 8)
    return rng.integers(-128, 128, shape, dtype=np.int8)


@cocotb.test()
async def random_cases(dut):
    """Every activation (default and random quantization) and random tables, reloaded at run
    time; inputs with extremes, sizes not a multiple of lanes, random backpressure."""
    tb = Bench(dut)
    await tb.start()
    count = env_int("NPU_COUNT", 100)
    names = sorted(ACTIVATIONS) + ["random"]
    table = None
    for n in range(count):
        if n % 4 == 0:                              # reload the table every few cases
            name = names[(n // 4) % len(names)]
            table = (activation_table(name, *DEFAULT_QPARAMS[name]) if (n // 4) % 2 == 0
                     and name != "random" else random_table(tb.rng, name))
            tb.driver.set_backpressure(tb.rng, float(tb.rng.choice([0.0, 0.5])))
            await tb.driver.load_table(table)
        kind = ["random", "extreme", "ramp", "random"][n % 4]
        x = random_input(tb.rng, tb.lanes, kind)
        stall = float(tb.rng.choice([0.0, 0.2, 0.5, 0.8]))
        await tb.run_case(f"case {n} ({name}, {kind} {x.shape}, stall {stall})", x, table, stall)
        await ClockCycles(dut.clk, int(tb.rng.integers(0, 3)))
    dut._log.info("activation: %d random cases, %d elements bit-exact (seed=%d)",
                  tb.scoreboard.checked, tb.scoreboard.elements, tb.seed)


@cocotb.test()
async def throughput(dut):
    """One long frame without backpressure: steady-state beats per cycle in and out."""
    tb = Bench(dut)
    await tb.start()
    table = activation_table("silu", *DEFAULT_QPARAMS["silu"])
    await tb.driver.load_table(table)
    beats = env_int("NPU_PERF_BEATS", 512)
    x = tb.rng.integers(-128, 128, (beats, tb.lanes), dtype=np.int8)
    tb.handshakes.clear()
    await tb.run_case("throughput", x, table, 0.0)
    cycles_in, cycles_out = tb.handshakes["s_axis_in"], tb.handshakes["m_axis_res"]
    tin, tout = steady_throughput(cycles_in), steady_throughput(cycles_out)
    dut._log.info("activation throughput: %d beats x %d lanes, in %.3f / out %.3f beats per "
                  "cycle (= elements per lane per cycle), latency %d cycle(s) (seed=%d)",
                  beats, tb.lanes, tin, tout, cycles_out[0] - cycles_in[0], tb.seed)
    report({"unit": "activation", "lanes": tb.lanes, "beats": beats, "in": tin, "out": tout,
            "latency": cycles_out[0] - cycles_in[0]})
    assert tin == 1.0 and tout == 1.0, f"steady-state throughput below 1 (seed={tb.seed})"
