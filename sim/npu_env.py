"""Host model of ``npu_top`` for cocotb: the AXI4-Lite and AXI4-Stream sides are driven by
cocotbext-axi (``AxiLiteMaster``, ``AxiStreamSource``, ``AxiStreamSink``); nothing here
wiggles a bus pin by hand.

:class:`NpuHost` writes programs, starts them, streams their LOAD data, collects STORE data
and waits for the interrupt; it also reads the status and the per-instruction cycle counters.
"""

import logging
from dataclasses import dataclass

import numpy as np
import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamFrame,
                           AxiStreamSink, AxiStreamSource)

from amaranth.lib import data

from hw.isa import CSR, ID_MAGIC, Ctrl, Status
from sim.bus import set_pause

__all__ = ["NpuHost", "RunStatus", "bring_up", "start_word"]


async def bring_up(dut):
    """Start the clock, reset, and return an :class:`NpuHost` after checking the ID register."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    # Bus inputs idle from the start, as a system drives them (the bus models take over
    # later); undriven, they would clock X into the AXI4-Lite input registers under Icarus.
    for name in ("s_axil_awvalid", "s_axil_wvalid", "s_axil_bready", "s_axil_arvalid",
                 "s_axil_rready", "s_axis_tvalid", "m_axis_tready"):
        getattr(dut, name).value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    host = NpuHost(dut)
    ident = await host.read(CSR.ID)
    assert ident == ID_MAGIC, f"ID register reads {ident:#x}, expected {ID_MAGIC:#x}"
    return host


@dataclass(frozen=True)
class RunStatus:
    """CSR.STATUS (decoded with :class:`hw.isa.Status`), ERROR, ERROR_PC and CYCLES."""
    busy: bool
    done: bool
    failed: bool
    error: int
    error_pc: int
    cycles: int

    @classmethod
    def from_registers(cls, status, error, error_pc, cycles):
        bits = data.Layout.cast(Status).from_bits(status)
        return cls(bool(bits.busy), bool(bits.done), bool(bits.error), error, error_pc, cycles)


def start_word(pc):
    """The CSR.CTRL value that starts the program at instruction ``pc``."""
    return Ctrl.const({"start": 1, "start_pc": pc}).as_bits()


class NpuHost:
    def __init__(self, dut):
        self.dut = dut
        for p in ("s_axil", "s_axis", "m_axis"):
            logging.getLogger(f"cocotb.{dut._name}.{p}").setLevel(logging.WARNING)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst)
        self.cols = len(dut.s_axis_tdata) // 8

    def set_backpressure(self, rng, probability):
        set_pause(self.source, rng, probability)
        set_pause(self.sink, rng, probability)

    async def read(self, addr):
        return await self.axil.read_dword(int(addr))

    async def write(self, addr, value):
        await self.axil.write_dword(int(addr), int(value) & 0xFFFFFFFF)

    async def load_program(self, instructions, base=0):
        words = []
        for ins in instructions:
            words += [ins & 0xFFFFFFFF, ins >> 32]
        await self.axil.write_dwords(int(CSR.IMEM) + 8 * base, words)

    async def status(self):
        return RunStatus.from_registers(await self.read(CSR.STATUS), await self.read(CSR.ERROR),
                                        await self.read(CSR.ERROR_PC), await self.read(CSR.CYCLES))

    async def counters(self, first, count):
        return list(await self.axil.read_dwords(int(CSR.COUNTERS) + 4 * first, count))

    def send(self, beats):
        """Queue uint8 beats (n x C) on s_axis as one frame."""
        beats = np.ascontiguousarray(beats, np.uint8)
        if beats.size:
            self.source.send_nowait(AxiStreamFrame(beats.tobytes()))

    async def run(self, pc, beats=None, timeout_cycles=2_000_000):
        """Start at ``pc`` with ``beats`` queued on s_axis; wait for the interrupt."""
        await self.write(CSR.IRQ_EN, 1)
        if beats is not None:
            self.send(beats)
        await self.write(CSR.CTRL, start_word(pc))
        if not self.dut.irq.value:
            await with_timeout(RisingEdge(self.dut.irq), timeout_cycles * 10, "ns")
        return await self.status()

    async def receive(self, words, timeout_cycles=100_000):
        """Collect ``words`` ACT words (one STORE frame) from m_axis as uint8 (words x C)."""
        frame = await with_timeout(self.sink.recv(), timeout_cycles * 10, "ns")
        data = np.frombuffer(bytes(frame.tdata), np.uint8)
        assert data.size == words * self.cols, (
            f"STORE frame has {data.size} bytes, expected {words * self.cols}")
        return data.reshape(words, self.cols)

    async def reset(self, cycles=3):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
