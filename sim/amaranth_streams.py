"""Stream helpers for the Amaranth-simulator tests (``tests/test_hw_*.py``): one feeder, one
sink, one seeded stall generator, one bounded run.

A test writes testbench coroutines (``async def bench(ctx)``) that call

* :func:`send` (the feeder): offers each payload on an ``amaranth.lib.stream`` interface and
  waits for its handshake; :func:`frame` marks the last beat of a frame;
* :func:`receive` (the sink): takes ``count`` beats, or one frame up to ``last``, and checks
  that ``last`` is set on the final beat only; :func:`as_array` turns the beats into NumPy;
* :class:`Stalls`: the seeded pattern of idle cycles the feeder (valid low) or the sink
  (ready low) inserts before each beat;
* :class:`CycleCounter`: the clock cycles since the start, for latency and throughput checks
  (its ``process`` goes in :func:`simulate`'s ``processes``);

and :func:`simulate` runs the design with a clock until every testbench has returned, failing
after a cycle budget instead of hanging. ``valid`` (``ready``) drops after each handshake and
rises again in the same instant for the next beat, so beats without stalls are one per cycle.
"""

import numpy as np
from amaranth.lib import data
from amaranth.sim import Simulator

__all__ = ["Stalls", "CycleCounter", "send", "receive", "frame", "as_array", "simulate",
           "PERIOD"]

#: Clock period of :func:`simulate` (seconds); only cycle counts matter.
PERIOD = 1e-8


class Stalls:
    """Seeded stall generator: before each beat, idle cycles, each with ``probability``
    (0: none). ``seed`` is anything :func:`numpy.random.default_rng` takes, e.g. ``[seed, 1]``
    so that the two ends of a stream stall independently."""

    def __init__(self, probability=0.0, seed=0):
        if not 0 <= probability < 1:
            raise ValueError(f"probability must be in [0, 1), got {probability}")
        self.probability = probability
        self.rng = np.random.default_rng(seed)

    async def idle(self, ctx):
        while self.probability and self.rng.random() < self.probability:
            await ctx.tick()


class CycleCounter:
    """``now``: clock cycles since the simulation started, counted by ``process``."""

    def __init__(self):
        self.now = 0

    async def process(self, ctx):
        while True:
            await ctx.tick()
            self.now += 1


async def _put(ctx, stream, payload, stalls):
    if stalls is not None:
        await stalls.idle(ctx)
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def _get(ctx, stream, stalls):
    if stalls is not None:
        await stalls.idle(ctx)
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def send(ctx, stream, payloads, stalls=None):
    """Feed ``payloads`` (anything ``ctx.set`` takes for the payload) one beat each."""
    for payload in payloads:
        await _put(ctx, stream, payload, stalls)


async def receive(ctx, stream, count=None, stalls=None):
    """Take ``count`` beats, or (``count=None``) one frame up to its ``last``; returns the
    payloads. With a ``last`` field, ``count`` beats must be exactly one frame."""
    framed = isinstance(stream.payload.shape(), data.StructLayout) and \
        "last" in stream.payload.shape().members
    if count is None and not framed:
        raise ValueError("count is needed for a stream without last")
    beats = []
    while count is None or len(beats) < count:
        beats.append(await _get(ctx, stream, stalls))
        if not framed:
            continue
        if count is None:
            if beats[-1].last:
                break
        elif beats[-1].last != (len(beats) == count):
            raise AssertionError(f"last = {beats[-1].last} at beat {len(beats) - 1} of a "
                                 f"{count}-beat frame")
    return beats


def frame(beats, field="data"):
    """Payloads of one frame: each beat as ``{field: beat}`` (or a dict of fields) with
    ``last`` set on the final one."""
    beats = list(beats)
    return [{**(b if isinstance(b, dict) else {field: b}), "last": int(i == len(beats) - 1)}
            for i, b in enumerate(beats)]


def as_array(payloads, field="data", dtype=np.int64):
    """``field`` of received payloads as a NumPy array: beats x lanes for an array field, one
    value per beat otherwise."""
    def ints(v):
        return [int(x) for x in v] if isinstance(v, data.Const) else int(v)
    return np.array([ints(p[field]) for p in payloads], dtype)


def simulate(dut, *testbenches, cycles, processes=()):
    """Run ``dut`` with a clock until every testbench returns; fail after ``cycles`` cycles.
    ``processes`` (e.g. a cycle counter) run in the background."""
    async def watchdog(ctx):
        for _ in range(cycles):
            await ctx.tick()
        raise AssertionError(f"simulation still running after {cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    for process in (watchdog, *processes):
        sim.add_process(process)
    for bench in testbenches:
        sim.add_testbench(bench)
    sim.run()
