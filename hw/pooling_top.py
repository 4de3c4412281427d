"""``npu_pooling``: the streaming pooling unit with flat AXI4-Stream and configuration ports.

Ports (L = lanes; every bus little-endian, lane 0 in the low bits):

=====================  ===  ========  =====================================================
port                   dir  width     meaning
=====================  ===  ========  =====================================================
clk, rst               in   1         clock, synchronous active-high reset
cfg_h, cfg_w, cfg_c    in   16 each   image height, width, channels (1..max_h/max_w/max_c)
cfg_k                  in   8         kernel size k (k x k window), 1..max_k
cfg_stride             in   8         stride >= 1; ceil(k / stride) <= slots unless at most
                                      ``slots`` windows fit (e.g. global pooling)
cfg_pad                in   8         padding on every side, 0..k//2
cfg_mode               in   1         0: max pooling, 1: average pooling
cfg_zero_point         in   8         int8 zero point (the value of average padding)
s_axis_in_tdata        in   8L        L int8 channels of one pixel (NHWC, channel groups)
s_axis_in_tvalid/ready      1         handshake
s_axis_in_tlast        in   1         last beat of an image (only used to drop a refused one)
m_axis_out_tdata       out  8L        L int8 pooled channels
m_axis_out_tvalid/ready     1         handshake
m_axis_out_tlast       out  1         last beat of an output image
error                  out  1         the last image's configuration was refused (dropped)
=====================  ===  ========  =====================================================

The configuration is latched when an image starts (its first beat valid while the unit is
idle); hold it until that beat is accepted. It may change between images without waiting for
the outputs. See :mod:`hw.pooling` for the beat order, padding and timing.
"""

from amaranth.hdl import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .pooling import Pooling

__all__ = ["PoolingTop"]


class PoolingTop(wiring.Component):
    def __init__(self, lanes=4, max_h=32, max_w=32, max_c=64, max_k=32, slots=3,
                 registered_config=False, dsp="generic"):
        self.core = Pooling(lanes, max_h, max_w, max_c, max_k, slots,
                            registered_config=registered_config, dsp=dsp)
        self.lanes = lanes
        super().__init__({
            "cfg_h": In(16), "cfg_w": In(16), "cfg_c": In(16),
            "cfg_k": In(8), "cfg_stride": In(8), "cfg_pad": In(8),
            "cfg_mode": In(1), "cfg_zero_point": In(signed(8)),
            "s_axis_in_tdata": In(8 * lanes),
            "s_axis_in_tvalid": In(1),
            "s_axis_in_tready": Out(1),
            "s_axis_in_tlast": In(1),
            "m_axis_out_tdata": Out(8 * lanes),
            "m_axis_out_tvalid": Out(1),
            "m_axis_out_tready": In(1),
            "m_axis_out_tlast": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        core = m.submodules.core = self.core
        cfg = core.config
        m.d.comb += [
            cfg.h.eq(self.cfg_h), cfg.w.eq(self.cfg_w), cfg.c.eq(self.cfg_c),
            cfg.k.eq(self.cfg_k), cfg.stride.eq(self.cfg_stride), cfg.pad.eq(self.cfg_pad),
            cfg.mode.eq(self.cfg_mode), cfg.zero_point.eq(self.cfg_zero_point),

            core.input.payload.data.as_value().eq(self.s_axis_in_tdata),
            core.input.payload.last.eq(self.s_axis_in_tlast),
            core.input.valid.eq(self.s_axis_in_tvalid),
            self.s_axis_in_tready.eq(core.input.ready),

            self.m_axis_out_tdata.eq(core.result.payload.data.as_value()),
            self.m_axis_out_tlast.eq(core.result.payload.last),
            self.m_axis_out_tvalid.eq(core.result.valid),
            core.result.ready.eq(self.m_axis_out_tready),
            self.error.eq(core.error),
        ]
        return m
