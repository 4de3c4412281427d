"""Shared verification pieces of the vector units (requantizer, activation LUT, pooling).

* :func:`source` / :func:`sink`: cocotbext-axi endpoints on a ``s_axis_xxx``/``m_axis_xxx``
  prefix, quiet at INFO level;
* :class:`HandshakeLog`: cycle numbers of every handshake on a stream, for throughput;
* :func:`steady_throughput`: beats per cycle between the first and last handshake of a burst;
* :class:`Scoreboard`: bit-exact comparison with the golden model, messages carry the seed;
* :func:`pack` / :func:`unpack`: NumPy lanes <-> little-endian AXI4-Stream bytes.

Backpressure uses the seeded pause generators of :mod:`sim.gemm_env`.
"""

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, SimTimeoutError, with_timeout
from cocotbext.axi import AxiStreamBus, AxiStreamSink, AxiStreamSource

from sim.gemm_env import _quiet, set_pause

__all__ = ["env_int", "source", "sink", "reset", "HandshakeLog", "steady_throughput",
           "longest_burst", "within",
           "Scoreboard", "pack", "unpack", "set_pause", "report"]


def env_int(name, default):
    return int(os.environ.get(name, default))


def source(dut, prefix):
    _quiet(dut, prefix)
    return AxiStreamSource(AxiStreamBus.from_prefix(dut, prefix), dut.clk, dut.rst)


def sink(dut, prefix):
    _quiet(dut, prefix)
    return AxiStreamSink(AxiStreamBus.from_prefix(dut, prefix), dut.clk, dut.rst)


async def reset(dut, low=(), high=()):
    """Start the clock and hold reset for 3 cycles; ``low``/``high``: inputs to drive first."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for name in low:
        getattr(dut, name).value = 0
    for name in high:
        getattr(dut, name).value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


async def within(coro, budget_ns, what, seed):
    """Await ``coro`` for at most ``budget_ns``; a timeout fails naming ``what`` and the seed."""
    try:
        return await with_timeout(coro, budget_ns, "ns")
    except SimTimeoutError:
        raise AssertionError(f"{what}: no result within {budget_ns} ns (seed={seed})") from None


class HandshakeLog:
    """Records the cycle number of every handshake on the AXI4-Stream ``prefix``."""

    def __init__(self, dut, prefix, clock_counter=None):
        self.valid = getattr(dut, f"{prefix}_tvalid")
        self.ready = getattr(dut, f"{prefix}_tready")
        self.clk = dut.clk
        self.cycles = []
        cocotb.start_soon(self._run())

    def clear(self):
        self.cycles = []

    async def _run(self):
        edge = RisingEdge(self.clk)
        n = 0
        while True:
            await edge
            n += 1
            if self.valid.value and self.ready.value:
                self.cycles.append(n)


def steady_throughput(cycles):
    """Beats per cycle from the first to the last handshake in ``cycles`` (1.0 = one beat
    every cycle)."""
    if len(cycles) < 2:
        return 0.0
    return (len(cycles) - 1) / (cycles[-1] - cycles[0])


def longest_burst(cycles):
    """Longest run of handshakes in consecutive cycles (one beat per cycle)."""
    best = run = 1 if cycles else 0
    for a, b in zip(cycles, cycles[1:]):
        run = run + 1 if b == a + 1 else 1
        best = max(best, run)
    return best


class Scoreboard:
    def __init__(self, unit, seed):
        self.unit = unit
        self.seed = seed
        self.checked = 0
        self.elements = 0

    def check(self, label, got, want):
        got = np.asarray(got)
        want = np.asarray(want)
        if got.shape != want.shape:
            raise AssertionError(f"{self.unit} {label}: shape {got.shape}, expected "
                                 f"{want.shape} (seed={self.seed})")
        if not np.array_equal(got, want):
            bad = np.argwhere(got != want)
            idx = tuple(int(v) for v in bad[0])
            raise AssertionError(
                f"{self.unit} {label}: {len(bad)} of {want.size} elements differ, first at "
                f"{idx}: got {got[idx]}, expected {want[idx]} (seed={self.seed})")
        self.checked += 1
        self.elements += want.size


def pack(rows, dtype):
    """2-D array of beats x lanes -> bytes (lane 0 in the low bytes)."""
    return np.ascontiguousarray(np.asarray(rows).astype(dtype)).tobytes()


def unpack(data, dtype, lanes):
    return np.frombuffer(bytes(data), dtype=dtype).reshape(-1, lanes)


def report(record):
    """Append one JSON record (throughput figures) to the file named by ``NPU_REPORT``."""
    path = os.environ.get("NPU_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
