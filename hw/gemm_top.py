"""``npu_gemm``: the systolic array with flat AXI4-Stream ports, the top of ``make verilog``.

Ports (R = rows, C = cols; every bus little-endian, lane 0 in the low bits):

=====================  ===  ========  =====================================================
port                   dir  width     meaning
=====================  ===  ========  =====================================================
clk, rst               in   1         clock, synchronous active-high reset
s_axis_op_tdata        in   8(R+C)    bytes 0..R-1: A column (int8), bytes R..R+C-1: B row
s_axis_op_tvalid/ready      1         handshake
s_axis_op_tlast        in   1         last reduction step (k = K-1) of a tile
s_axis_bias_tdata      in   32C       one int32 bias per column, one beat per tile
s_axis_bias_tvalid/ready    1         handshake
m_axis_res_tdata       out  32C       one result row: C int32 lanes
m_axis_res_tvalid/ready     1         handshake
m_axis_res_tlast       out  1         row R-1 of a tile
=====================  ===  ========  =====================================================

The operand stream of a tile is one AXI4-Stream frame of K beats; the result stream of a tile
is one frame of R beats. See :mod:`hw.systolic` for the dataflow and timing.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .systolic import SystolicArray

__all__ = ["GemmTop"]


class GemmTop(wiring.Component):
    def __init__(self, rows=8, cols=8, out_depth=None, dsp="generic"):
        # dsp: multiplier implementation, "generic" or "ecp5" (see hw.pe); same cycle timing.
        self.array = SystolicArray(rows, cols, out_depth, dsp=dsp)
        self.rows, self.cols = rows, cols
        super().__init__({
            "s_axis_op_tdata": In(8 * (rows + cols)),
            "s_axis_op_tvalid": In(1),
            "s_axis_op_tready": Out(1),
            "s_axis_op_tlast": In(1),
            "s_axis_bias_tdata": In(32 * cols),
            "s_axis_bias_tvalid": In(1),
            "s_axis_bias_tready": Out(1),
            "m_axis_res_tdata": Out(32 * cols),
            "m_axis_res_tvalid": Out(1),
            "m_axis_res_tready": In(1),
            "m_axis_res_tlast": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        arr = m.submodules.array = self.array
        R = self.rows
        m.d.comb += [
            arr.operands.payload.a.as_value().eq(self.s_axis_op_tdata[:8 * R]),
            arr.operands.payload.b.as_value().eq(self.s_axis_op_tdata[8 * R:]),
            arr.operands.payload.last.eq(self.s_axis_op_tlast),
            arr.operands.valid.eq(self.s_axis_op_tvalid),
            self.s_axis_op_tready.eq(arr.operands.ready),

            arr.bias.payload.as_value().eq(self.s_axis_bias_tdata),
            arr.bias.valid.eq(self.s_axis_bias_tvalid),
            self.s_axis_bias_tready.eq(arr.bias.ready),

            self.m_axis_res_tdata.eq(arr.result.payload.data.as_value()),
            self.m_axis_res_tlast.eq(arr.result.payload.last),
            self.m_axis_res_tvalid.eq(arr.result.valid),
            arr.result.ready.eq(self.m_axis_res_tready),
        ]
        return m
