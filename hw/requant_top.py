"""``npu_requant``: the requantizer with flat AXI4-Stream ports.

Ports (L = lanes; every bus little-endian, lane 0 in the low bits):

=====================  ===  ========  =====================================================
port                   dir  width     meaning
=====================  ===  ========  =====================================================
clk, rst               in   1         clock, synchronous active-high reset
s_axis_acc_tdata       in   32L       L int32 accumulators
s_axis_acc_tvalid/ready     1         handshake
s_axis_acc_tlast       in   1         last beat of a frame (beats sharing one params beat)
s_axis_par_tdata       in   8(9L+3)   bytes 0..4L-1: L int32 bias; 4L..8L-1: L int32 M0;
                                      8L..9L-1: L int8 shift; then int8 zero point, qmin, qmax
s_axis_par_tvalid/ready     1         handshake; one beat per frame, consumed with its tlast
m_axis_res_tdata       out  8L        L int8 results
m_axis_res_tvalid/ready     1         handshake
m_axis_res_tlast       out  1         copy of the accumulator tlast
error                  out  1         sticky: a params beat had a shift outside -31..7 or
                                      qmin > qmax
=====================  ===  ========  =====================================================

See :mod:`hw.requantizer` for the arithmetic and timing.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .requantizer import Requantizer

__all__ = ["RequantTop"]


class RequantTop(wiring.Component):
    def __init__(self, lanes=4, dsp="generic"):
        self.core = Requantizer(lanes, dsp=dsp)
        self.lanes = lanes
        super().__init__({
            "s_axis_acc_tdata": In(32 * lanes),
            "s_axis_acc_tvalid": In(1),
            "s_axis_acc_tready": Out(1),
            "s_axis_acc_tlast": In(1),
            "s_axis_par_tdata": In(8 * (9 * lanes + 3)),
            "s_axis_par_tvalid": In(1),
            "s_axis_par_tready": Out(1),
            "m_axis_res_tdata": Out(8 * lanes),
            "m_axis_res_tvalid": Out(1),
            "m_axis_res_tready": In(1),
            "m_axis_res_tlast": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        core = m.submodules.core = self.core
        m.d.comb += [
            core.acc.payload.data.as_value().eq(self.s_axis_acc_tdata),
            core.acc.payload.last.eq(self.s_axis_acc_tlast),
            core.acc.valid.eq(self.s_axis_acc_tvalid),
            self.s_axis_acc_tready.eq(core.acc.ready),

            core.params.payload.as_value().eq(self.s_axis_par_tdata),
            core.params.valid.eq(self.s_axis_par_tvalid),
            self.s_axis_par_tready.eq(core.params.ready),

            self.m_axis_res_tdata.eq(core.result.payload.data.as_value()),
            self.m_axis_res_tlast.eq(core.result.payload.last),
            self.m_axis_res_tvalid.eq(core.result.valid),
            core.result.ready.eq(self.m_axis_res_tready),
            self.error.eq(core.error),
        ]
        return m
