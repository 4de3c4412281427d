"""``npu_activation``: the activation lookup-table unit with flat AXI4-Stream ports.

Ports (L = lanes; every bus little-endian, lane 0 in the low bits):

=====================  ===  ========  =====================================================
port                   dir  width     meaning
=====================  ===  ========  =====================================================
clk, rst               in   1         clock, synchronous active-high reset
s_axis_tab_tdata       in   16        byte 0: table index (x + 128), byte 1: int8 entry
s_axis_tab_tvalid/ready     1         handshake (always ready: one entry per cycle)
s_axis_in_tdata        in   8L        L int8 inputs
s_axis_in_tvalid/ready      1         handshake
s_axis_in_tlast        in   1         end of a frame (passed through)
m_axis_res_tdata       out  8L        L int8 outputs ``table[x + 128]``
m_axis_res_tvalid/ready     1         handshake
m_axis_res_tlast       out  1         copy of the input tlast
=====================  ===  ========  =====================================================

See :mod:`hw.activation` for the table convention and timing.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .activation import ActivationLUT

__all__ = ["ActivationTop"]


class ActivationTop(wiring.Component):
    def __init__(self, lanes=4, init=None):
        self.core = ActivationLUT(lanes, init)
        self.lanes = lanes
        super().__init__({
            "s_axis_tab_tdata": In(16),
            "s_axis_tab_tvalid": In(1),
            "s_axis_tab_tready": Out(1),
            "s_axis_in_tdata": In(8 * lanes),
            "s_axis_in_tvalid": In(1),
            "s_axis_in_tready": Out(1),
            "s_axis_in_tlast": In(1),
            "m_axis_res_tdata": Out(8 * lanes),
            "m_axis_res_tvalid": Out(1),
            "m_axis_res_tready": In(1),
            "m_axis_res_tlast": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        core = m.submodules.core = self.core
        m.d.comb += [
            core.table.payload.as_value().eq(self.s_axis_tab_tdata),
            core.table.valid.eq(self.s_axis_tab_tvalid),
            self.s_axis_tab_tready.eq(core.table.ready),

            core.input.payload.data.as_value().eq(self.s_axis_in_tdata),
            core.input.payload.last.eq(self.s_axis_in_tlast),
            core.input.valid.eq(self.s_axis_in_tvalid),
            self.s_axis_in_tready.eq(core.input.ready),

            self.m_axis_res_tdata.eq(core.result.payload.data.as_value()),
            self.m_axis_res_tlast.eq(core.result.payload.last),
            self.m_axis_res_tvalid.eq(core.result.valid),
            core.result.ready.eq(self.m_axis_res_tready),
        ]
        return m
