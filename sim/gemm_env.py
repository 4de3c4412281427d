"""Verification environment of ``npu_gemm``: driver, monitor and scoreboard, kept apart.

* :class:`GemmDriver` turns a GEMM into tiles (:mod:`sim.tiling`) and sends them as AXI4-Stream
  frames through cocotbext-axi sources (operands: one frame of K beats per tile; bias: one
  beat per tile).
* :class:`ResultMonitor` receives result frames (R rows of C int32) through a cocotbext-axi sink.
* :class:`GemmScoreboard` asks the golden model (:func:`golden.gemm.gemm`) for the expected
  result, compares bit for bit, and records cycles and PE utilization.

Cycles are counted by a :class:`sim.bus.HandshakeLog` from the first accepted operand beat to
the last accepted result beat; backpressure comes from seeded pause generators on every stream
(:func:`sim.bus.set_pause`).
"""

from dataclasses import dataclass

import numpy as np
from cocotbext.axi import AxiStreamFrame

from golden.gemm import gemm
from sim.bus import set_pause, sink, source
from sim.scoreboard import Scoreboard
from sim.tiling import tile_gemm, untile

__all__ = ["GemmDriver", "ResultMonitor", "GemmScoreboard", "GemmRecord"]


class GemmDriver:
    def __init__(self, dut, rows, cols):
        self.rows, self.cols = rows, cols
        self.op = source(dut, "s_axis_op")
        self.bias = source(dut, "s_axis_bias")

    def set_backpressure(self, rng, probability):
        for src in (self.op, self.bias):
            set_pause(src, rng, probability)

    def send(self, a, b, bias):
        """Queue every tile of ``a @ b + bias``; returns the tiles (for reassembly)."""
        tiles = tile_gemm(a, b, bias, self.rows, self.cols)
        for t in tiles:
            beats = np.concatenate([t.a, t.b], axis=1)          # K x (R + C) int8
            self.op.send_nowait(AxiStreamFrame(beats.view(np.uint8).tobytes()))
            self.bias.send_nowait(AxiStreamFrame(t.bias.astype("<i4").tobytes()))
        return tiles


class ResultMonitor:
    def __init__(self, dut, rows, cols):
        self.rows, self.cols = rows, cols
        self.sink = sink(dut, "m_axis_res")

    def set_backpressure(self, rng, probability):
        set_pause(self.sink, rng, probability)

    async def receive_tile(self):
        frame = await self.sink.recv()
        data = np.frombuffer(bytes(frame.tdata), dtype="<i4")
        expected = self.rows * self.cols
        assert data.size == expected, (
            f"result frame has {data.size} int32 values, expected {expected} "
            f"(tlast misplaced?)")
        return data.reshape(self.rows, self.cols).astype(np.int32)


@dataclass
class GemmRecord:
    shape: tuple
    cycles: int
    macs: int
    utilization: float
    ok: bool


class GemmScoreboard(Scoreboard):
    """``records``: one :class:`GemmRecord` per GEMM checked, a failing one included."""

    def __init__(self, rows, cols, seed):
        super().__init__("gemm", seed)
        self.rows, self.cols = rows, cols
        self.records = []

    def check_case(self, label, a, b, bias, tiles, results, cycles):
        """Check one GEMM from its tiles' results; returns its PE utilization."""
        M, K = a.shape
        N = b.shape[1]
        got = untile(tiles, results, M, N)
        want = gemm(a, b, bias)
        macs = M * K * N
        util = macs / (self.rows * self.cols * cycles) if cycles else 0.0
        self.records.append(GemmRecord((M, K, N), cycles, macs, util,
                                       bool(np.array_equal(got, want))))
        self.check(f"{label}, GEMM {M}x{K}x{N}", got, want)
        return util
