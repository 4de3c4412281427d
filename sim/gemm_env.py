"""Verification environment of ``npu_gemm``: driver, monitor and scoreboard, kept apart.

* :class:`GemmDriver` turns a GEMM into tiles (:mod:`sim.tiling`) and sends them as AXI4-Stream
  frames through cocotbext-axi sources (operands: one frame of K beats per tile; bias: one
  beat per tile).
* :class:`ResultMonitor` receives result frames (R rows of C int32) through a cocotbext-axi sink.
* :class:`GemmScoreboard` asks the golden model (:func:`golden.gemm.gemm`) for the expected
  result, compares bit for bit, and records cycles and PE utilization.
* :class:`HandshakeClock` counts clock cycles between the first accepted operand beat and the
  last accepted result beat.

Backpressure comes from seeded pause generators on every stream.
"""

import logging
from dataclasses import dataclass, field

import numpy as np
import cocotb
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from golden.gemm import gemm
from sim.tiling import tile_gemm, untile

__all__ = ["GemmDriver", "ResultMonitor", "GemmScoreboard", "HandshakeClock", "pause_generator",
           "set_pause"]


def pause_generator(rng, probability):
    """Endless seeded pause pattern: True pauses the stream for one cycle."""
    while True:
        yield bool(rng.random() < probability)


def set_pause(endpoint, rng, probability):
    """Seeded random backpressure on a cocotbext-axi endpoint (0 turns it off)."""
    if probability > 0:
        endpoint.set_pause_generator(pause_generator(rng, probability))
    else:
        endpoint.clear_pause_generator()
        endpoint.pause = False      # clearing the generator leaves the last pause state


def _quiet(dut, *prefixes):
    """cocotbext-axi logs every frame at INFO; keep the testbench log readable."""
    for p in prefixes:
        logging.getLogger(f"cocotb.{dut._name}.{p}").setLevel(logging.WARNING)


class GemmDriver:
    def __init__(self, dut, rows, cols):
        self.rows, self.cols = rows, cols
        _quiet(dut, "s_axis_op", "s_axis_bias")
        self.op = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_op"), dut.clk, dut.rst)
        self.bias = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_bias"), dut.clk, dut.rst)

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
        _quiet(dut, "m_axis_res")
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis_res"), dut.clk, dut.rst)

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


class HandshakeClock:
    """Counts cycles from the first operand handshake to the latest result handshake."""

    def __init__(self, dut):
        self.dut = dut
        self.first = None
        self.last = None
        self.cycle = 0
        self._task = cocotb.start_soon(self._run())

    def reset(self):
        self.first = self.last = None

    @property
    def cycles(self):
        return 0 if self.first is None or self.last is None else self.last - self.first + 1

    async def _run(self):
        d = self.dut
        edge = RisingEdge(d.clk)
        while True:
            await edge
            self.cycle += 1
            if self.first is None and d.s_axis_op_tvalid.value and d.s_axis_op_tready.value:
                self.first = self.cycle
            if d.m_axis_res_tvalid.value and d.m_axis_res_tready.value:
                self.last = self.cycle


@dataclass
class GemmRecord:
    shape: tuple
    cycles: int
    macs: int
    utilization: float
    ok: bool


@dataclass
class GemmScoreboard:
    rows: int
    cols: int
    seed: int
    records: list = field(default_factory=list)

    def check(self, label, a, b, bias, tiles, results, cycles):
        M, K = a.shape
        N = b.shape[1]
        got = untile(tiles, results, M, N)
        want = gemm(a, b, bias)
        ok = np.array_equal(got, want)
        macs = M * K * N
        util = macs / (self.rows * self.cols * cycles) if cycles else 0.0
        self.records.append(GemmRecord((M, K, N), cycles, macs, util, ok))
        if not ok:
            bad = np.argwhere(got != want)
            i, j = bad[0]
            raise AssertionError(
                f"{label}: GEMM {M}x{K}x{N} mismatch at {len(bad)} elements, first C[{i},{j}] "
                f"= {got[i, j]} expected {want[i, j]} (seed={self.seed})")
        return util
