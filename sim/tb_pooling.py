"""cocotb tests of ``npu_pooling``; run through :mod:`flow.simulate`.

Environment: ``NPU_LANES``, ``NPU_MAX_H``, ``NPU_MAX_W``, ``NPU_MAX_C``, ``NPU_MAX_K``,
``NPU_SLOTS`` (the parameters the Verilog was built with), ``NPU_SEED``, ``NPU_COUNT`` (random
cases, default 100), ``NPU_KMAX`` (largest random kernel, default 5; global pooling cases go up
to ``NPU_MAX_K``), ``NPU_PERF`` (``HxWxC`` of the throughput image).
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from hw.pooling import MODE_AVG, MODE_MAX, Pooling
from sim.bus import HandshakeLog, clock_and_reset
from sim.pooling_env import PoolCase, PoolDriver, PoolMonitor, PoolScoreboard
from sim.vector_env import env_int, longest_burst, report, steady_throughput, within


class Bench:
    def __init__(self, dut):
        self.dut = dut
        self.lanes = env_int("NPU_LANES", 4)
        self.max_h = env_int("NPU_MAX_H", 32)
        self.max_w = env_int("NPU_MAX_W", 32)
        self.max_c = env_int("NPU_MAX_C", 64)
        self.max_k = env_int("NPU_MAX_K", 32)
        self.slots = env_int("NPU_SLOTS", 3)
        # The Python model of the unit's parameter checks (never elaborated here).
        self.unit = Pooling(self.lanes, self.max_h, self.max_w, self.max_c, self.max_k,
                            self.slots)
        self.unit._MustUse__silence = True
        self.seed = env_int("NPU_SEED", 1)
        self.rng = np.random.default_rng(self.seed)
        self.driver = PoolDriver(dut, self.lanes)
        self.monitor = PoolMonitor(dut, self.lanes)
        self.scoreboard = PoolScoreboard(self.seed)
        self.handshakes = HandshakeLog(dut, "s_axis_in", "m_axis_out")
        dut._log.info("npu_pooling lanes=%d max %dx%dx%d max_k=%d slots=%d seed=%d", self.lanes,
                      self.max_h, self.max_w, self.max_c, self.max_k, self.slots, self.seed)

    async def start(self):
        await clock_and_reset(self.dut, low=("s_axis_in_tvalid", "m_axis_out_tready"))

    async def run_case(self, label, case, stall):
        n, h, w, c = case.x.shape
        self.unit.check_config(h, w, c, case.k, case.stride, case.pad)
        self.driver.set_backpressure(self.rng, stall)
        self.monitor.set_backpressure(self.rng, stall)
        groups = self.driver.send(case)
        ho, wo = case.out_hw
        # The unit may still be walking the padded tail of the previous image (rows after the
        # last output), hence the allowance for one largest image on top of this one.
        largest = ((self.max_h + self.max_k) * (self.max_w + self.max_k)
                   * -(-self.max_c // self.lanes))
        budget = (200 + ((h + 2 * case.pad) * (w + 2 * case.pad) * groups + largest)
                  * (20 if stall else 3)) * 10
        images = [await within(self.monitor.receive(ho, wo, groups), budget,
                               f"{label} image {i} of {n}", self.seed) for i in range(n)]
        self.scoreboard.check_case(label, case, images)
        assert not self.dut.error.value, f"{label}: error flag set (seed={self.seed})"


def random_case(tb, rng, kind):
    h = int(rng.integers(1, tb.max_h + 1))
    w = int(rng.integers(1, tb.max_w + 1))
    c = int(rng.integers(1, tb.max_c + 1))
    n = int(rng.integers(1, 3))
    if kind == "global":
        h = w = int(rng.integers(1, min(tb.max_h, tb.max_w, tb.max_k) + 1))
        k, s, p = h, int(rng.integers(1, h + 2)), 0
    else:
        k = 1 if kind == "k1" else int(rng.integers(1, min(tb.max_k, env_int("NPU_KMAX", 5)) + 1))
        p = int(rng.integers(0, k // 2 + 1))
        h, w = max(h, k - 2 * p), max(w, k - 2 * p)
        if kind == "wide_stride":
            s = int(rng.integers(k + 1, k + 4))
        else:
            lo = -(-k // tb.slots)
            s = int(rng.integers(lo, max(lo, 3) + 1))
    x = rng.integers(-128, 128, (n, h, w, c), dtype=np.int8)
    if kind == "extreme" or rng.random() < 0.1:
        x = rng.choice(np.array([-128, 127], np.int8), x.shape)
        if rng.random() < 0.5:
            x[:] = rng.choice([-128, 127])
    mode = int(rng.choice([MODE_MAX, MODE_AVG]))
    zp = int(rng.choice([-128, 127, int(rng.integers(-128, 128))]))
    return PoolCase(x, k, s, p, mode, zp)


@cocotb.test()
async def random_cases(dut):
    """Random images, kernels, strides (also > k), padding, k = 1, global pooling, C not a
    multiple of lanes, extremes, random valid/ready backpressure; all compared with golden."""
    tb = Bench(dut)
    await tb.start()
    count = env_int("NPU_COUNT", 100)
    kinds = ["random", "random", "k1", "wide_stride", "global", "extreme", "random"]
    for n in range(count):
        kind = kinds[n % len(kinds)]
        case = random_case(tb, tb.rng, kind)
        stall = float(tb.rng.choice([0.0, 0.2, 0.5, 0.8]))
        label = f"case {n} ({kind}: {case.describe()}, stall {stall})"
        dut._log.debug("%s", label)
        await tb.run_case(label, case, stall)
        await ClockCycles(dut.clk, int(tb.rng.integers(0, 3)))
    dut._log.info("pooling: %d random cases, %d output elements bit-exact (seed=%d)",
                  tb.scoreboard.checked, tb.scoreboard.elements, tb.seed)


@cocotb.test()
async def bad_config_sets_error(dut):
    """k = 0, stride 0, a shape above the maximum, pad > k//2, too many overlapping windows:
    the Python check raises ValueError naming the parameter; the hardware drops the frame,
    sets ``error`` and does not hang; a good frame afterwards works and clears it."""
    tb = Bench(dut)
    await tb.start()
    bad = [  # (h, w, c, k, stride, pad), parameter named
        ((4, 4, 2, 0, 1, 0), "k"), ((4, 4, 2, 2, 0, 0), "stride"),
        ((tb.max_h + 1, 4, 2, 2, 1, 0), "h"), ((4, 4, tb.max_c + 1, 2, 1, 0), "c"),
        ((4, 4, 2, 3, 1, 2), "pad"),
        ((tb.max_h, tb.max_w, 2, tb.slots + 1, 1, 0), "stride"),
    ]
    for cfg, name in bad:
        try:
            tb.unit.check_config(*cfg)
        except ValueError as e:
            assert name in str(e), f"ValueError for {cfg} does not name {name}: {e}"
        else:
            raise AssertionError(f"check_config{cfg} did not raise (seed={tb.seed})")
        tb.driver.configure(*cfg, MODE_MAX, 0)
        tb.driver.send_raw(5)
        await with_timeout(tb.driver.inp.wait(), 2000, "ns")
        await ClockCycles(dut.clk, 20)
        assert dut.error.value == 1, f"error not set for {cfg} (seed={tb.seed})"
        assert tb.monitor.sink.empty(), f"output produced for refused {cfg} (seed={tb.seed})"
    case = random_case(tb, tb.rng, "random")
    await tb.run_case("after refused frames", case, 0.3)
    assert dut.error.value == 0


@cocotb.test()
async def throughput(dut):
    """Images without backpressure: input beats per cycle (= elements per lane per cycle)."""
    tb = Bench(dut)
    await tb.start()
    h, w, c = (int(v) for v in os.environ.get("NPU_PERF", "").split("x")) \
        if os.environ.get("NPU_PERF") else (tb.max_h, tb.max_w, tb.max_c)
    plan = [(3, 1, 0, MODE_MAX), (2, 2, 0, MODE_AVG), (3, 1, 1, MODE_AVG)]
    if h == w:
        plan.append((h, 1, 0, MODE_AVG))           # global average pooling
    for n, (k, s, p, mode) in enumerate(plan):
        try:
            tb.unit.check_config(h, w, c, k, s, p)
        except ValueError:
            continue
        images = 2 if n == 0 else 1                 # the first: two images back to back
        x = tb.rng.integers(-128, 128, (images, h, w, c), dtype=np.int8)
        case = PoolCase(x, k, s, p, mode, 3)
        tb.handshakes.clear()
        await tb.run_case(f"throughput {case.describe()}", case, 0.0)
        cycles_in = tb.handshakes["s_axis_in"]
        beats = len(cycles_in)
        tin = steady_throughput(cycles_in)
        burst = longest_burst(cycles_in)
        span = tb.handshakes.span("s_axis_in", "m_axis_out")
        dut._log.info("pooling throughput %s: %d input beats x %d lanes; whole image %.3f beats "
                      "per cycle, longest burst %d beats at 1 beat per cycle (a row is %d beats), "
                      "%d cycles first input to last output (seed=%d)", case.describe(), beats,
                      tb.lanes, tin, burst, w * -(-c // tb.lanes), span, tb.seed)
        report({"unit": "pooling", "case": case.describe(), "lanes": tb.lanes, "beats": beats,
                "in": tin, "burst": burst, "row_beats": w * -(-c // tb.lanes), "span": span})
        assert burst >= min(beats, w * -(-c // tb.lanes)), \
            f"a row did not stream at 1 beat per cycle (seed={tb.seed})"
        if p == 0:
            assert tin == 1.0, f"steady-state throughput {tin} below 1 (seed={tb.seed})"
        await RisingEdge(dut.clk)
