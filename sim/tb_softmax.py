"""cocotb tests of ``npu_softmax`` (the streaming softmax unit); run through :mod:`flow.simulate`.

Parameters come from the environment (set by the runner):

* ``NPU_MAXLEN``: L_max the Verilog was built for;
* ``NPU_SEED``: seed of every random choice (lengths, data, scales, backpressure, gaps);
* ``NPU_COUNT``: number of vectors of ``random_vectors`` (corner cases included);
* ``NPU_LENS``: ``L,L,...`` vector lengths of ``throughput`` (no backpressure);
* ``NPU_REPORT``: JSON file that receives the throughput records.
"""

import json
import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, with_timeout

from golden.softmax import random_logits, softmax_params
from sim.bus import HandshakeLog, clock_and_reset
from sim.softmax_env import ProbMonitor, SoftmaxDriver, SoftmaxScoreboard

#: Input scales the random test draws from (a batch shares one scale).
SCALES = (1 / 256, 1 / 32, 0.05, 0.1, 0.25, 0.5, 2.0, 16.0, 2000.0, 1e-6)


def _env_int(name, default):
    return int(os.environ.get(name, default))


class Bench:
    def __init__(self, dut):
        self.dut = dut
        self.max_len = _env_int("NPU_MAXLEN", 256)
        self.seed = _env_int("NPU_SEED", 1)
        self.rng = np.random.default_rng(self.seed)
        self.driver = SoftmaxDriver(dut, self.max_len)
        self.monitor = ProbMonitor(dut)
        self.scoreboard = SoftmaxScoreboard(self.seed)
        self.vector_ends = HandshakeLog(dut, "m_axis_y", frames=True)
        dut._log.info("npu_softmax L_max=%d, seed=%d", self.max_len, self.seed)

    async def start(self):
        self.driver.configure(softmax_params(0.1))
        await clock_and_reset(self.dut, low=("s_axis_x_tvalid", "m_axis_y_tready"))

    async def run_batch(self, label, vectors, scale, stall=0.0, expect=None):
        """Send ``vectors`` back to back, check every output frame; the unit is empty after.

        ``expect``: the vectors that must come out (default: all of them)."""
        params = softmax_params(scale)
        self.driver.configure(params)
        self.driver.set_backpressure(self.rng, stall)
        self.monitor.set_backpressure(self.rng, stall)
        for v in vectors:
            self.driver.send(v, allow_overlong=expect is not None)
        expect = vectors if expect is None else expect
        budget = (4 * sum(v.size for v in vectors) + 60 * len(vectors) + 500) * (
            8 if stall else 2)
        for n, v in enumerate(expect):
            got = await with_timeout(self.monitor.receive(), budget * 10, "ns")
            self.scoreboard.check_case(f"{label} vector {n} (scale {scale:g}, stall {stall})",
                                       v, params, got)
        await self.driver.src.wait()


def corner_vectors(rng, max_len):
    """All-equal, one dominant value, -128 everywhere, 127 everywhere, length 1, length L_max."""
    L = max_len
    dominant = rng.integers(-128, 0, L).astype(np.int8)
    dominant[rng.integers(0, L)] = 127
    return [
        np.full(L, -128, np.int8),
        np.full(int(rng.integers(1, L + 1)), int(rng.integers(-128, 128)), np.int8),
        np.full(L, 127, np.int8),
        dominant,
        np.array([int(rng.integers(-128, 128))], np.int8),
        np.array([-128], np.int8),
        rng.integers(-128, 128, L).astype(np.int8),
        random_logits(rng, L),
    ]


@cocotb.test()
async def random_vectors(dut):
    """Corner cases, then random vectors of random lengths 1..L_max, scales and backpressure."""
    tb = Bench(dut)
    await tb.start()
    count = _env_int("NPU_COUNT", 220)
    L = tb.max_len
    vectors = corner_vectors(tb.rng, L)
    while len(vectors) < count:
        # half short vectors (many frame boundaries), half up to L_max
        hi = L if tb.rng.random() < 0.5 else min(L, 16)
        vectors.append(random_logits(tb.rng, int(tb.rng.integers(1, hi + 1))))
    vectors = vectors[:count]
    n = 0
    while n < len(vectors):
        size = int(tb.rng.integers(1, 24))
        batch = vectors[n:n + size]
        scale = float(tb.rng.choice(SCALES))
        stall = float(tb.rng.choice([0.0, 0.2, 0.5, 0.8]))
        await tb.run_batch(f"vectors {n}..{n + len(batch) - 1}", batch, scale, stall)
        n += len(batch)
        await ClockCycles(dut.clk, int(tb.rng.integers(0, 5)))
    assert not dut.overflow.value, f"overflow flag set without an over-long frame (seed={tb.seed})"
    dut._log.info("%d vectors (%d elements) bit-exact (seed=%d)", tb.scoreboard.checked,
                  tb.scoreboard.elements, tb.seed)


@cocotb.test()
async def overlong_frames(dut):
    """Frames longer than L_max are dropped with the error flag; neighbours are unaffected."""
    tb = Bench(dut)
    await tb.start()
    L = tb.max_len
    rng = tb.rng
    vectors = [random_logits(rng, L), random_logits(rng, L + 1), random_logits(rng, 3),
               random_logits(rng, 2 * L + 5), random_logits(rng, L), random_logits(rng, 1)]
    keep = [v for v in vectors if v.size <= L]
    assert not dut.overflow.value
    await tb.run_batch("overlong", vectors, 0.1, 0.3, expect=keep)
    assert dut.overflow.value == 1, f"overflow flag not set (seed={tb.seed})"
    assert int(dut.dropped.value) == 2, f"dropped = {int(dut.dropped.value)}, expected 2 (seed={tb.seed})"
    # still working afterwards
    await tb.run_batch("after overlong", [random_logits(rng, 5)], 0.25, 0.3)
    dut._log.info("over-long frames dropped, overflow=1, dropped=2 (seed=%d)", tb.seed)


@cocotb.test()
async def throughput(dut):
    """Back-to-back vectors of one length, no backpressure: steady-state cycles per vector."""
    tb = Bench(dut)
    await tb.start()
    lens = [int(s) for s in os.environ.get("NPU_LENS", f"{tb.max_len},64,16,1").split(",")]
    count = 8
    records = []
    for L in lens:
        vectors = [random_logits(tb.rng, L) for _ in range(count)]
        tb.vector_ends.clear()
        await tb.run_batch(f"throughput L={L}", vectors, 0.1, 0.0)
        done = tb.vector_ends["m_axis_y"]
        # steady state: skip the first vector (pipeline fill)
        per_vector = (done[-1] - done[1]) / (count - 2)
        records.append({"length": L, "cycles_per_vector": per_vector,
                        "elements_per_cycle": L / per_vector})
        dut._log.info("softmax L=%d: %.1f cycles/vector steady state (%.3f elements/cycle)",
                      L, per_vector, L / per_vector)
        await ClockCycles(dut.clk, 10)
    path = os.environ.get("NPU_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"max_len": tb.max_len, "seed": tb.seed, "records": records}, f)


def main(argv=None):
    """``python -m sim.tb_softmax``: build npu_softmax, run the throughput test, print a table."""
    import argparse
    import tempfile
    from pathlib import Path

    from flow.simulate import missing_simulator, run

    ap = argparse.ArgumentParser(description="Steady-state throughput of npu_softmax.")
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--lens", default=None, help="comma-separated vector lengths "
                    "(default: L_max,64,16,1)")
    ap.add_argument("--sim", default="verilator")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    problem = missing_simulator(args.sim)
    if problem:
        raise SystemExit(f"error: {problem}")
    lens = args.lens or f"{args.max_len},64,16,1"
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "perf.json"
        r = run("softmax", {"max_len": args.max_len}, "sim.tb_softmax", sim=args.sim,
                testcase="throughput", tag="cli",
                env={"NPU_MAXLEN": args.max_len, "NPU_SEED": args.seed, "NPU_LENS": lens,
                     "NPU_REPORT": report})
        if not r.ok:
            raise SystemExit(f"error: throughput run failed (seed={args.seed}); log in "
                             f"{r.results_xml.parent}")
        records = json.loads(report.read_text())["records"]
    print(f"npu_softmax L_max={args.max_len} on {args.sim} (build {r.build_seconds:.1f} s, "
          f"run {r.run_seconds:.1f} s), 8 back-to-back vectors per length, no backpressure")
    print(f"{'length':>6} {'cycles/vector':>13} {'elements/cycle':>14}")
    for rec in records:
        print(f"{rec['length']:>6} {rec['cycles_per_vector']:>13.1f} "
              f"{rec['elements_per_cycle']:>14.3f}")


if __name__ == "__main__":
    main()
