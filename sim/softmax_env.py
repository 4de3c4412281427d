"""Verification environment of ``npu_softmax``: driver, monitor and scoreboard, kept apart.

* :class:`SoftmaxDriver` sets the configuration ports and sends each vector as one
  AXI4-Stream frame (one int8 per beat) through a cocotbext-axi source.
* :class:`ProbMonitor` receives output frames through a cocotbext-axi sink and records the
  cycle of every frame's ``tlast`` handshake (for throughput).
* :class:`SoftmaxScoreboard` asks the golden model (:func:`golden.softmax.softmax`) for the
  expected probabilities and compares bit for bit; failures carry the seed.

Backpressure comes from seeded pause generators (:func:`sim.gemm_env.set_pause`) on both
streams.
"""

from dataclasses import dataclass, field

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from golden.softmax import softmax
from sim.gemm_env import _quiet, set_pause

__all__ = ["SoftmaxDriver", "ProbMonitor", "SoftmaxScoreboard"]


class SoftmaxDriver:
    def __init__(self, dut, max_len):
        self.dut = dut
        self.max_len = max_len
        _quiet(dut, "s_axis_x")
        self.src = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_x"), dut.clk, dut.rst)

    def configure(self, params):
        """Static configuration; only change it while the unit is empty."""
        self.dut.cfg_multiplier.value = params.multiplier
        self.dut.cfg_right_shift.value = params.right_shift

    def set_backpressure(self, rng, probability):
        set_pause(self.src, rng, probability)

    def send(self, vec, allow_overlong=False):
        """Queue one vector as one frame; a vector over L_max is a ``ValueError`` unless the
        test means to check that the unit drops it (``allow_overlong``)."""
        vec = np.asarray(vec, np.int8)
        if vec.ndim != 1 or vec.size == 0:
            raise ValueError(f"a vector must be 1-D and non-empty, got shape {vec.shape}")
        if vec.size > self.max_len and not allow_overlong:
            raise ValueError(f"vector length {vec.size} is over L_max = {self.max_len}")
        self.src.send_nowait(AxiStreamFrame(np.asarray(vec, np.int8).view(np.uint8).tobytes()))


class ProbMonitor:
    def __init__(self, dut):
        self.dut = dut
        _quiet(dut, "m_axis_y")
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis_y"), dut.clk, dut.rst)
        self.cycle = 0
        self.tlast_cycles = []
        cocotb.start_soon(self._count())

    def set_backpressure(self, rng, probability):
        set_pause(self.sink, rng, probability)

    async def _count(self):
        d = self.dut
        edge = RisingEdge(d.clk)
        while True:
            await edge
            self.cycle += 1
            if d.m_axis_y_tvalid.value and d.m_axis_y_tready.value and d.m_axis_y_tlast.value:
                self.tlast_cycles.append(self.cycle)

    async def receive(self):
        frame = await self.sink.recv()
        return np.frombuffer(bytes(frame.tdata), dtype=np.uint8).view(np.int8).copy()


@dataclass
class SoftmaxScoreboard:
    seed: int
    checked: int = 0
    elements: int = 0
    lengths: list = field(default_factory=list)

    def check(self, label, vec, params, got):
        want = softmax(np.asarray(vec, np.int8), params)
        if got.shape != want.shape:
            raise AssertionError(f"{label}: output frame has {got.size} elements, expected "
                                 f"{want.size} (tlast misplaced?) (seed={self.seed})")
        if not np.array_equal(got, want):
            bad = np.flatnonzero(got != want)
            i = bad[0]
            raise AssertionError(
                f"{label}: length {vec.size}, {bad.size} elements differ, first y[{i}] = "
                f"{got[i]} expected {want[i]} (x[{i}] = {vec[i]}, max {vec.max()}, "
                f"M0={params.multiplier}, shift={params.shift}) (seed={self.seed})")
        self.checked += 1
        self.elements += vec.size
        self.lengths.append(int(vec.size))
