"""Shared verification pieces of the vector units (requantizer, activation LUT, pooling).

* :func:`steady_throughput` / :func:`longest_burst`: beats per cycle between the first and
  last handshake of a burst (cycles from a :class:`sim.bus.HandshakeLog`), longest run at one
  beat per cycle;
* :func:`within`: a timeout that fails naming the case and the seed;
* :func:`pack` / :func:`unpack`: NumPy lanes <-> little-endian AXI4-Stream bytes;
* :func:`env_int`, :func:`report`: the testbench parameters and the throughput records.

Endpoints, backpressure, reset and handshake logs are those of :mod:`sim.bus`; the
scoreboards derive from :class:`sim.scoreboard.Scoreboard`.
"""

import json
import os

import numpy as np
from cocotb.triggers import SimTimeoutError, with_timeout

__all__ = ["env_int", "steady_throughput", "longest_burst", "within", "pack", "unpack",
           "report"]


def env_int(name, default):
    return int(os.environ.get(name, default))


async def within(coro, budget_ns, what, seed):
    """Await ``coro`` for at most ``budget_ns``; a timeout fails naming ``what`` and the seed."""
    try:
        return await with_timeout(coro, budget_ns, "ns")
    except SimTimeoutError:
        raise AssertionError(f"{what}: no result within {budget_ns} ns (seed={seed})") from None


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
