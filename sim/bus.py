"""AXI4-Stream helpers shared by every cocotb testbench (cocotbext-axi bus models).

* :func:`source` / :func:`sink`: a cocotbext-axi ``AxiStreamSource`` / ``AxiStreamSink`` on the
  ports ``<prefix>_tdata/tvalid/tready[/tlast]`` of the DUT, quiet at INFO level (:func:`quiet`);
* :func:`set_pause`: seeded random backpressure on such an endpoint (:func:`pause_generator`,
  or :func:`burst_pause_generator` for long stalls);
* :func:`clock_and_reset`: start ``clk`` and hold ``rst`` for 3 cycles with some inputs low;
* :class:`HandshakeLog`: the cycle number of every handshake on some streams, for cycle counts
  and throughput.

A seed passes to every random choice so that a failing run can be replayed.
"""

import logging

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamSink, AxiStreamSource

__all__ = ["quiet", "source", "sink", "pause_generator", "burst_pause_generator", "set_pause",
           "clock_and_reset", "HandshakeLog"]

#: Clock period of :func:`clock_and_reset` in ns; budgets in the testbenches assume it.
PERIOD_NS = 10


def quiet(dut, *prefixes):
    """cocotbext-axi logs every frame at INFO; keep the testbench log readable."""
    for p in prefixes:
        logging.getLogger(f"cocotb.{dut._name}.{p}").setLevel(logging.WARNING)


def source(dut, prefix):
    quiet(dut, prefix)
    return AxiStreamSource(AxiStreamBus.from_prefix(dut, prefix), dut.clk, dut.rst)


def sink(dut, prefix):
    quiet(dut, prefix)
    return AxiStreamSink(AxiStreamBus.from_prefix(dut, prefix), dut.clk, dut.rst)


def pause_generator(rng, probability):
    """Endless seeded pause pattern: True pauses the stream for one cycle."""
    while True:
        yield bool(rng.random() < probability)


def burst_pause_generator(rng, probability, longest):
    """Endless seeded pattern of long stalls: each cycle starts, with ``probability``, a pause
    of 1 .. ``longest`` cycles (uniform)."""
    while True:
        if rng.random() < probability:
            for _ in range(int(rng.integers(1, longest + 1))):
                yield True
        yield False


def set_pause(endpoint, rng, probability, burst=0):
    """Seeded random backpressure on a cocotbext-axi endpoint (0 turns it off); with
    ``burst``, pauses of up to ``burst`` cycles start with ``probability``."""
    if probability > 0:
        endpoint.set_pause_generator(burst_pause_generator(rng, probability, burst) if burst
                                     else pause_generator(rng, probability))
    else:
        endpoint.clear_pause_generator()
        endpoint.pause = False      # clearing the generator leaves the last pause state


async def clock_and_reset(dut, low=()):
    """Start ``dut.clk`` and hold ``dut.rst`` for 3 cycles; the inputs named in ``low`` are
    driven low first (undriven, Icarus would clock X into the design)."""
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    dut.rst.value = 1
    for name in low:
        getattr(dut, name).value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


class HandshakeLog:
    """Cycle numbers of the handshakes (``tvalid`` and ``tready`` high at a rising edge of
    ``clk``) on the streams ``prefixes``, counted from the log's creation; with ``frames``,
    only those that carry ``tlast``. ``log[prefix]`` is the list of one stream."""

    def __init__(self, dut, *prefixes, frames=False):
        self.clk = dut.clk
        self._ports = [(getattr(dut, f"{p}_tvalid"), getattr(dut, f"{p}_tready"),
                        getattr(dut, f"{p}_tlast") if frames else None, p) for p in prefixes]
        self.cycles = {p: [] for p in prefixes}
        cocotb.start_soon(self._run())

    def __getitem__(self, prefix):
        return self.cycles[prefix]

    def clear(self):
        for cycles in self.cycles.values():
            cycles.clear()

    def span(self, first, last):
        """Cycles from the first handshake on ``first`` to the latest on ``last``, both
        included; 0 until both streams have one."""
        if not self.cycles[first] or not self.cycles[last]:
            return 0
        return self.cycles[last][-1] - self.cycles[first][0] + 1

    async def _run(self):
        edge = RisingEdge(self.clk)
        n = 0
        while True:
            await edge
            n += 1
            for valid, ready, last, prefix in self._ports:
                if valid.value and ready.value and (last is None or last.value):
                    self.cycles[prefix].append(n)
