"""Verification environment of ``npu_softmax``: driver, monitor and scoreboard, kept apart.

* :class:`SoftmaxDriver` sets the configuration ports and sends each vector as one
  AXI4-Stream frame (one int8 per beat) through a cocotbext-axi source.
* :class:`ProbMonitor` receives output frames through a cocotbext-axi sink.
* :class:`SoftmaxScoreboard` asks the golden model (:func:`golden.softmax.softmax`) for the
  expected probabilities and compares bit for bit; failures carry the seed.

Backpressure comes from seeded pause generators (:func:`sim.bus.set_pause`) on both streams.
"""

import numpy as np
from cocotbext.axi import AxiStreamFrame

from golden.softmax import softmax
from sim.bus import set_pause, sink, source
from sim.scoreboard import Scoreboard

__all__ = ["SoftmaxDriver", "ProbMonitor", "SoftmaxScoreboard"]


class SoftmaxDriver:
    def __init__(self, dut, max_len):
        self.dut = dut
        self.max_len = max_len
        self.src = source(dut, "s_axis_x")

    def configure(self, params):
        """Static configuration; only change it while the unit is empty."""
        self.dut.cfg_multiplier.value = params.multiplier
        self.dut.cfg_right_shift.value = params.right_shift
        # The project mode (golden.softmax); the TFLite mode's table port stays idle.
        self.dut.cfg_mode.value = 0
        self.dut.s_axis_exp_table_tvalid.value = 0
        self.dut.s_axis_exp_table_tdata.value = 0

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
        self.sink = sink(dut, "m_axis_y")

    def set_backpressure(self, rng, probability):
        set_pause(self.sink, rng, probability)

    async def receive(self):
        frame = await self.sink.recv()
        return np.frombuffer(bytes(frame.tdata), dtype=np.uint8).view(np.int8).copy()


class SoftmaxScoreboard(Scoreboard):
    def __init__(self, seed):
        super().__init__("softmax", seed)

    def check_case(self, label, vec, params, got):
        want = softmax(np.asarray(vec, np.int8), params)
        if got.shape != want.shape:
            self.fail(label, f"output frame has {got.size} elements, expected {want.size} "
                             f"(tlast misplaced?)")
        self.check(f"{label}, length {vec.size}", got, want,
                   explain=lambda idx: (f"x[{idx[0]}] = {vec[idx[0]]}, max {vec.max()}, "
                                        f"M0={params.multiplier}, shift={params.shift}"))
