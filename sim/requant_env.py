"""Verification environment of ``npu_requant``: driver, monitor and scoreboard kept apart.

A *case* is an ``M x C`` int32 accumulator matrix (rows = pixels, columns = channels) with a
bias and ``M0``/``shift`` per channel (or per tensor), a zero point and ``[qmin, qmax]``. The
driver cuts the channels into groups of ``lanes`` (the last group zero-padded); each group is
one frame of ``M`` accumulator beats plus one params beat. The monitor collects one result
frame per group; the scoreboard drops the padding lanes and compares with
:func:`golden.quant.requantize`.
"""

from dataclasses import dataclass

import numpy as np

from golden.quant import ROUNDINGS, requantize
from sim.bus import set_pause, sink, source
from sim.scoreboard import Scoreboard
from sim.vector_env import pack, unpack

__all__ = ["RequantCase", "RequantDriver", "RequantMonitor", "RequantScoreboard"]


@dataclass
class RequantCase:
    acc: np.ndarray        # M x C int32
    bias: np.ndarray       # C int32
    m0: np.ndarray         # C int32 (all equal: per tensor)
    shift: np.ndarray      # C int32
    zero_point: int
    qmin: int = -128
    qmax: int = 127
    rounding: str = "double"          # golden.quant.ROUNDINGS: the params beat's mode byte


def _padded(v, n, fill=0):
    out = np.full(n, fill, np.int64)
    out[:v.size] = v
    return out


class RequantDriver:
    def __init__(self, dut, lanes):
        self.lanes = lanes
        self.acc = source(dut, "s_axis_acc")
        self.par = source(dut, "s_axis_par")

    def set_backpressure(self, rng, p):
        set_pause(self.acc, rng, p)
        set_pause(self.par, rng, p)

    def params_bytes(self, bias, m0, shift, zp, qmin, qmax, rounding="double"):
        L = self.lanes
        return (pack(_padded(bias, L), "<i4") + pack(_padded(m0, L), "<i4")
                + pack(_padded(shift, L), "i1")
                + pack([zp, qmin, qmax, ROUNDINGS.index(rounding)], "i1"))

    def send(self, case):
        """Queue one frame per channel group; returns the number of groups."""
        L = self.lanes
        M, C = case.acc.shape
        groups = -(-C // L)
        for g in range(groups):
            cols = slice(g * L, min(C, (g + 1) * L))
            beats = np.zeros((M, L), np.int32)
            beats[:, :cols.stop - cols.start] = case.acc[:, cols]
            self.acc.send_nowait(pack(beats, "<i4"))
            self.par.send_nowait(self.params_bytes(case.bias[cols], case.m0[cols],
                                                   case.shift[cols], case.zero_point,
                                                   case.qmin, case.qmax, case.rounding))
        return groups


class RequantMonitor:
    def __init__(self, dut, lanes):
        self.lanes = lanes
        self.sink = sink(dut, "m_axis_res")

    def set_backpressure(self, rng, p):
        set_pause(self.sink, rng, p)

    async def receive(self, rows):
        frame = await self.sink.recv()
        data = unpack(frame.tdata, "i1", self.lanes)
        assert data.shape[0] == rows, (f"result frame has {data.shape[0]} beats, expected "
                                       f"{rows} (tlast misplaced?)")
        return data


class RequantScoreboard(Scoreboard):
    def __init__(self, seed):
        super().__init__("requant", seed)

    def check_case(self, label, case, frames):
        C = case.acc.shape[1]
        got = np.concatenate(frames, axis=1)[:, :C]
        want = requantize(case.acc, case.m0, case.shift, case.zero_point, case.bias,
                          case.qmin, case.qmax, rounding=case.rounding)
        self.check(label, got, want)
