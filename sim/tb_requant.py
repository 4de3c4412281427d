"""cocotb tests of ``npu_requant``; run through :mod:`flow.simulate`.

Environment: ``NPU_LANES`` (lanes the Verilog was built for), ``NPU_SEED``, ``NPU_COUNT``
(random cases, default 100), ``NPU_PERF_BEATS`` (beats of the throughput run).
"""

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from golden.quant import INT32_MAX, INT32_MIN, MAX_SHIFT, MIN_SHIFT
from sim.bus import HandshakeLog, clock_and_reset
from sim.requant_env import RequantCase, RequantDriver, RequantMonitor, RequantScoreboard
from sim.vector_env import env_int, report, steady_throughput, within


class Bench:
    def __init__(self, dut):
        self.dut = dut
        self.lanes = env_int("NPU_LANES", 4)
        self.seed = env_int("NPU_SEED", 1)
        self.rng = np.random.default_rng(self.seed)
        self.driver = RequantDriver(dut, self.lanes)
        self.monitor = RequantMonitor(dut, self.lanes)
        self.scoreboard = RequantScoreboard(self.seed)
        self.handshakes = HandshakeLog(dut, "s_axis_acc", "m_axis_res")
        dut._log.info("npu_requant lanes=%d seed=%d", self.lanes, self.seed)

    async def start(self):
        await clock_and_reset(self.dut, low=("s_axis_acc_tvalid", "s_axis_par_tvalid",
                                             "m_axis_res_tready"))

    async def run_case(self, label, case, stall):
        self.driver.set_backpressure(self.rng, stall)
        self.monitor.set_backpressure(self.rng, stall)
        groups = self.driver.send(case)
        M = case.acc.shape[0]
        budget = (200 + groups * M * (20 if stall else 3)) * 10
        frames = [await within(self.monitor.receive(M), budget, f"{label} group {g}", self.seed)
                  for g in range(groups)]
        self.scoreboard.check_case(label, case, frames)


def random_case(rng, lanes, kind):
    M = int(rng.integers(1, 9))
    C = int(rng.integers(1, 3 * lanes + 2))
    if kind == "ties":
        # M0 = 2**30 halves x with SRDHM (an odd x is an SRDHM tie); an even x = 2*h with h an
        # odd multiple of 2**(e-1) is an exact RDBPOT tie for right shift e. Both signs.
        e = rng.integers(1, 30, C)
        j = rng.integers(0, 1 << 20, (M, C)) % np.maximum(1, (1 << 28) >> e)
        h = (2 * j + 1) << (e - 1)
        acc = np.where(rng.random((M, C)) < 0.5, -2 * h, 2 * h).astype(np.int64)
        acc += rng.random((M, C)) < 0.25                # some odd x: SRDHM ties
        bias = np.zeros(C, np.int64)
        m0 = np.full(C, 1 << 30)
        shift = -e
    elif kind == "extreme":
        acc = rng.choice([INT32_MIN, INT32_MAX, INT32_MIN + 1, -1, 0, 1], (M, C)).astype(np.int64)
        bias = np.zeros(C, np.int64)
        m0 = rng.choice([0, 1 << 30, INT32_MAX], C)
        shift = rng.choice([MIN_SHIFT, 0, MAX_SHIFT, -1, 1], C)
    else:
        acc = rng.integers(INT32_MIN, INT32_MAX, (M, C), endpoint=True)
        if rng.random() < 0.5:                      # realistic accumulator magnitudes
            acc >>= int(rng.integers(4, 24))
        bias = rng.integers(-(1 << 24), 1 << 24, C)
        acc = np.clip(acc, INT32_MIN - np.minimum(bias, 0), INT32_MAX - np.maximum(bias, 0))
        m0 = rng.integers(1 << 30, INT32_MAX, C, endpoint=True)
        shift = rng.integers(MIN_SHIFT, MAX_SHIFT, C, endpoint=True)
    if kind != "ties" and rng.random() < 0.3:       # per tensor
        m0[:] = m0[0]
        shift[:] = shift[0]
    zp = int(rng.choice([-128, 127, int(rng.integers(-128, 128))]))
    qmin, qmax = (-128, 127) if rng.random() < 0.8 else (zp, 127)     # fused ReLU
    # single rounding (FULLY_CONNECTED, exact averages) on a third of the cases, ties too
    rounding = "single" if rng.random() < 0.35 else "double"
    return RequantCase(acc.astype(np.int32), bias.astype(np.int32), m0.astype(np.int32),
                       shift.astype(np.int32), zp, qmin, qmax, rounding)


@cocotb.test()
async def random_cases(dut):
    """Random matrices (extremes, C not a multiple of lanes, per tensor/channel, fused ReLU)
    under random valid/ready backpressure; every output compared with the golden."""
    tb = Bench(dut)
    await tb.start()
    count = env_int("NPU_COUNT", 100)
    for n in range(count):
        kind = {0: "extreme", 1: "ties"}.get(n % 5, "random")
        case = random_case(tb.rng, tb.lanes, kind)
        stall = float(tb.rng.choice([0.0, 0.2, 0.5, 0.8]))
        await tb.run_case(f"case {n} ({kind}, {case.acc.shape}, stall {stall})", case, stall)
        await ClockCycles(dut.clk, int(tb.rng.integers(0, 3)))
    assert not dut.error.value, "error flag set by valid parameters"
    dut._log.info("requant: %d random cases, %d elements bit-exact (seed=%d)",
                  tb.scoreboard.checked, tb.scoreboard.elements, tb.seed)


@cocotb.test()
async def throughput(dut):
    """One long frame without backpressure: steady-state beats per cycle in and out."""
    tb = Bench(dut)
    await tb.start()
    beats = env_int("NPU_PERF_BEATS", 512)
    case = random_case(tb.rng, tb.lanes, "random")
    case = RequantCase(tb.rng.integers(-(1 << 20), 1 << 20, (beats, tb.lanes), dtype=np.int32),
                       case.bias[:1].repeat(tb.lanes), case.m0[:1].repeat(tb.lanes),
                       case.shift[:1].repeat(tb.lanes), case.zero_point)
    tb.handshakes.clear()
    await tb.run_case("throughput", case, 0.0)
    cycles_in, cycles_out = tb.handshakes["s_axis_acc"], tb.handshakes["m_axis_res"]
    tin, tout = steady_throughput(cycles_in), steady_throughput(cycles_out)
    latency = cycles_out[0] - cycles_in[0]
    dut._log.info("requant throughput: %d beats x %d lanes, in %.3f / out %.3f beats per cycle "
                  "(= elements per lane per cycle), latency %d cycles (seed=%d)",
                  beats, tb.lanes, tin, tout, latency, tb.seed)
    report({"unit": "requant", "lanes": tb.lanes, "beats": beats, "in": tin, "out": tout,
            "latency": latency})
    assert tin == 1.0 and tout == 1.0, f"steady-state throughput below 1 (seed={tb.seed})"


@cocotb.test()
async def bad_shift_sets_error(dut):
    """A params beat with shift outside -31..7 sets the error flag; the stream does not hang."""
    tb = Bench(dut)
    await tb.start()
    assert not dut.error.value
    case = random_case(tb.rng, tb.lanes, "random")
    L = tb.lanes
    tb.driver.acc.send_nowait(np.zeros((2, L), np.int32).tobytes())
    tb.driver.par.send_nowait(tb.driver.params_bytes(np.zeros(L), np.full(L, 1 << 30),
                                                     np.full(L, MAX_SHIFT + 1), 0, -128, 127))
    await within(tb.monitor.receive(2), 2000, "frame with a bad shift", tb.seed)
    await RisingEdge(dut.clk)
    assert dut.error.value == 1, f"error flag not set (seed={tb.seed})"
    del case
