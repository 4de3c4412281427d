"""cocotb tests of ``npu_gemm`` (the systolic array top); run through :mod:`flow.simulate`.

Parameters come from the environment (set by the runner):

* ``NPU_ROWS``, ``NPU_COLS``: array size the Verilog was built for;
* ``NPU_SEED``: seed of every random choice (shapes, data, backpressure, gaps);
* ``NPU_COUNT``, ``NPU_MAXDIM``, ``NPU_MAXK``: number and size bounds of random GEMMs;
* ``NPU_SHAPES``: ``MxKxN,...`` for ``perf_gemms`` (no backpressure);
* ``NPU_REPORT``: JSON file that receives one record per GEMM (cycles, utilization).
"""

import json
import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, with_timeout

from sim.bus import HandshakeLog, clock_and_reset
from sim.gemm_env import GemmDriver, GemmScoreboard, ResultMonitor


def _env_int(name, default):
    return int(os.environ.get(name, default))


class Bench:
    def __init__(self, dut):
        self.dut = dut
        self.rows = _env_int("NPU_ROWS", 8)
        self.cols = _env_int("NPU_COLS", 8)
        self.seed = _env_int("NPU_SEED", 1)
        self.rng = np.random.default_rng(self.seed)
        self.driver = GemmDriver(dut, self.rows, self.cols)
        self.monitor = ResultMonitor(dut, self.rows, self.cols)
        self.handshakes = HandshakeLog(dut, "s_axis_op", "m_axis_res")
        self.scoreboard = GemmScoreboard(self.rows, self.cols, self.seed)
        dut._log.info("npu_gemm %dx%d, seed=%d", self.rows, self.cols, self.seed)

    async def start(self):
        await clock_and_reset(self.dut, low=("s_axis_op_tvalid", "s_axis_bias_tvalid",
                                             "m_axis_res_tready"))

    async def run_gemm(self, label, a, b, bias, stall=0.0):
        self.driver.set_backpressure(self.rng, stall)
        self.monitor.set_backpressure(self.rng, stall)
        self.handshakes.clear()
        tiles = self.driver.send(a, b, bias)
        K = a.shape[1]
        budget = 2000 + len(tiles) * (K + 4 * (self.rows + self.cols)) * (10 if stall else 2)
        results = []
        for _ in tiles:
            results.append(await with_timeout(self.monitor.receive_tile(), budget * 10, "ns"))
        # cycles from the first accepted operand beat to the last accepted result row
        cycles = self.handshakes.span("s_axis_op", "m_axis_res")
        return self.scoreboard.check_case(label, a, b, bias, tiles, results, cycles)

    def write_report(self):
        path = os.environ.get("NPU_REPORT")
        if path:
            recs = [dict(shape=r.shape, cycles=r.cycles, macs=r.macs,
                         utilization=r.utilization, ok=r.ok) for r in self.scoreboard.records]
            with open(path, "w") as f:
                json.dump({"rows": self.rows, "cols": self.cols, "seed": self.seed,
                           "records": recs}, f)


def random_operands(rng, M, K, N, kind):
    if kind == "max":
        a, b = np.full((M, K), 127, np.int8), np.full((K, N), 127, np.int8)
    elif kind == "min":
        a, b = np.full((M, K), -128, np.int8), np.full((K, N), -128, np.int8)
    elif kind == "mixed":
        a, b = np.full((M, K), -128, np.int8), np.full((K, N), 127, np.int8)
    else:
        a = rng.integers(-128, 128, (M, K), dtype=np.int8)
        b = rng.integers(-128, 128, (K, N), dtype=np.int8)
    bias = rng.integers(-(1 << 30), 1 << 30, N, dtype=np.int32)
    return a, b, bias


def random_plan(rng, count, maxdim, maxk):
    """Shapes and kinds: the corner cases first, then uniform random shapes."""
    plan = [
        (1, 1, 1, "random"),
        (maxdim, 1, maxdim, "random"),          # K = 1
        (maxdim, maxk, maxdim, "min"),          # -128 everywhere
        (maxdim, maxk, maxdim, "max"),          # 127 everywhere
        (maxdim - 1, 3, maxdim + 1, "mixed"),
    ]
    while len(plan) < count:
        M, N = (int(x) for x in rng.integers(1, maxdim + 1, 2))
        K = int(rng.integers(1, maxk + 1))
        plan.append((M, K, N, str(rng.choice(["random"] * 6 + ["min", "max", "mixed"]))))
    return plan[:count]


@cocotb.test()
async def random_gemms(dut):
    """Random GEMMs (shapes, values, K = 1, extremes) under random backpressure and gaps."""
    tb = Bench(dut)
    await tb.start()
    count = _env_int("NPU_COUNT", 20)
    plan = random_plan(tb.rng, count, _env_int("NPU_MAXDIM", 2 * tb.rows + 3),
                       _env_int("NPU_MAXK", 40))
    try:
        for n, (M, K, N, kind) in enumerate(plan):
            a, b, bias = random_operands(tb.rng, M, K, N, kind)
            stall = float(tb.rng.choice([0.0, 0.2, 0.5, 0.8]))
            dut._log.info("case %d: %dx%dx%d %s, stall %.1f", n, M, K, N, kind, stall)
            await tb.run_gemm(f"case {n} ({kind}, stall {stall})", a, b, bias, stall)
            await ClockCycles(dut.clk, int(tb.rng.integers(0, 5)))
        dut._log.info("%d random GEMMs bit-exact (seed=%d)", len(plan), tb.seed)
    finally:
        tb.write_report()


@cocotb.test()
async def perf_gemms(dut):
    """Listed shapes without backpressure: bit-exact, with cycles and PE utilization."""
    tb = Bench(dut)
    await tb.start()
    shapes = [tuple(int(x) for x in s.split("x"))
              for s in os.environ.get("NPU_SHAPES", "64x512x64,64x9x64").split(",")]
    try:
        for M, K, N in shapes:
            a, b, bias = random_operands(tb.rng, M, K, N, "random")
            util = await tb.run_gemm(f"{M}x{K}x{N}", a, b, bias, 0.0)
            rec = tb.scoreboard.records[-1]
            dut._log.info("GEMM %dx%dx%d on %dx%d: %d cycles, %d MACs, PE utilization %.1f%%",
                          M, K, N, tb.rows, tb.cols, rec.cycles, rec.macs, 100 * util)
    finally:
        tb.write_report()
