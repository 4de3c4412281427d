"""Verification environment of ``npu_pooling``: driver, monitor and scoreboard kept apart.

* :class:`PoolDriver` programs the configuration ports and sends each NHWC image as one
  AXI4-Stream frame (pixels in raster order, ``G = ceil(C / lanes)`` beats per pixel, padding
  lanes zero).
* :class:`PoolMonitor` receives one frame per output image and checks its length.
* :class:`PoolScoreboard` drops the padding lanes and compares with
  :func:`golden.pooling.max_pool2d` / :func:`golden.pooling.avg_pool2d`.
"""

from dataclasses import dataclass

import numpy as np

from golden.pooling import avg_pool2d, max_pool2d
from hw.pooling import MODE_AVG, MODE_MAX
from sim.bus import set_pause, sink, source
from sim.scoreboard import Scoreboard
from sim.vector_env import unpack

__all__ = ["PoolCase", "PoolDriver", "PoolMonitor", "PoolScoreboard"]


@dataclass
class PoolCase:
    x: np.ndarray          # (N, H, W, C) int8
    k: int
    stride: int
    pad: int
    mode: int              # MODE_MAX or MODE_AVG
    zero_point: int = 0

    @property
    def out_hw(self):
        _, h, w, _ = self.x.shape
        return ((h + 2 * self.pad - self.k) // self.stride + 1,
                (w + 2 * self.pad - self.k) // self.stride + 1)

    def describe(self):
        n, h, w, c = self.x.shape
        return (f"{'max' if self.mode == MODE_MAX else 'avg'} {n}x{h}x{w}x{c} k={self.k} "
                f"s={self.stride} p={self.pad} zp={self.zero_point}")


class PoolDriver:
    def __init__(self, dut, lanes):
        self.dut = dut
        self.lanes = lanes
        self.inp = source(dut, "s_axis_in")

    def set_backpressure(self, rng, p):
        set_pause(self.inp, rng, p)

    def configure(self, h, w, c, k, stride, pad, mode, zero_point):
        d = self.dut
        d.cfg_h.value, d.cfg_w.value, d.cfg_c.value = h, w, c
        d.cfg_k.value, d.cfg_stride.value, d.cfg_pad.value = k, stride, pad
        d.cfg_mode.value, d.cfg_zero_point.value = mode, zero_point

    def send(self, case):
        n, h, w, c = case.x.shape
        self.configure(h, w, c, case.k, case.stride, case.pad, case.mode, case.zero_point)
        groups = -(-c // self.lanes)
        buf = np.zeros((n, h, w, groups * self.lanes), np.int8)
        buf[..., :c] = case.x
        for img in buf:
            self.inp.send_nowait(img.tobytes())
        return groups

    def send_raw(self, beats):
        """One frame of ``beats`` zero beats (for refused configurations)."""
        self.inp.send_nowait(bytes(beats * self.lanes))


class PoolMonitor:
    def __init__(self, dut, lanes):
        self.lanes = lanes
        self.sink = sink(dut, "m_axis_out")

    def set_backpressure(self, rng, p):
        set_pause(self.sink, rng, p)

    async def receive(self, ho, wo, groups):
        frame = await self.sink.recv()
        data = unpack(frame.tdata, "i1", self.lanes)
        assert data.shape[0] == ho * wo * groups, (
            f"output frame has {data.shape[0]} beats, expected {ho * wo * groups} "
            f"(tlast misplaced?)")
        return data.reshape(ho, wo, groups * self.lanes)


class PoolScoreboard(Scoreboard):
    def __init__(self, seed):
        super().__init__("pooling", seed)

    def check_case(self, label, case, images):
        c = case.x.shape[3]
        got = np.stack(images)[..., :c]
        if case.mode == MODE_AVG:
            want = avg_pool2d(case.x, case.k, case.stride, case.pad, case.zero_point)
        else:
            want = max_pool2d(case.x, case.k, case.stride, case.pad)
        self.check(label, got, want)
