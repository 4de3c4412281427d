"""``npu_softmax``: the streaming softmax unit with flat AXI4-Stream ports.

Ports:

=====================  ===  =====  =============================================================
port                   dir  width  meaning
=====================  ===  =====  =============================================================
clk, rst               in   1      clock, synchronous active-high reset
s_axis_x_tdata         in   8      one int8 logit per beat
s_axis_x_tvalid/ready       1      handshake
s_axis_x_tlast         in   1      last element of a vector (a vector is one frame, 1..L_max)
m_axis_y_tdata         out  8      one int8 probability per beat (scale 1/256, zero point -128)
m_axis_y_tvalid/ready       1      handshake
m_axis_y_tlast         out  1      last element of a vector
cfg_multiplier         in   31     ``M0`` of :func:`golden.softmax.softmax_params`
cfg_right_shift        in   5      ``-shift`` of the same (static while vectors are in flight)
overflow               out  1      sticky: a frame longer than L_max was dropped (reset clears)
dropped                out  16     number of dropped over-long frames (wraps)
=====================  ===  =====  =============================================================

See :mod:`hw.softmax` for the method, the throughput and the over-long-frame behaviour.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .softmax import BANKS, SoftmaxUnit

__all__ = ["SoftmaxTop"]


class SoftmaxTop(wiring.Component):
    """``dsp``: ``"generic"`` or ``"ecp5"`` (MULT18X18D and DP16KD primitives with their
    registers, see :class:`hw.softmax.SoftmaxUnit`); same behaviour and cycle counts."""

    def __init__(self, max_len=256, banks=BANKS, dsp="generic"):
        self.unit = SoftmaxUnit(max_len, banks, dsp=dsp)
        self.max_len = max_len
        super().__init__({
            "s_axis_x_tdata": In(8),
            "s_axis_x_tvalid": In(1),
            "s_axis_x_tready": Out(1),
            "s_axis_x_tlast": In(1),
            "m_axis_y_tdata": Out(8),
            "m_axis_y_tvalid": Out(1),
            "m_axis_y_tready": In(1),
            "m_axis_y_tlast": Out(1),
            "cfg_multiplier": In(31),
            "cfg_right_shift": In(5),
            "overflow": Out(1),
            "dropped": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        u = m.submodules.unit = self.unit
        m.d.comb += [
            u.logits.payload.data.eq(self.s_axis_x_tdata),
            u.logits.payload.last.eq(self.s_axis_x_tlast),
            u.logits.valid.eq(self.s_axis_x_tvalid),
            self.s_axis_x_tready.eq(u.logits.ready),

            self.m_axis_y_tdata.eq(u.probs.payload.data),
            self.m_axis_y_tlast.eq(u.probs.payload.last),
            self.m_axis_y_tvalid.eq(u.probs.valid),
            u.probs.ready.eq(self.m_axis_y_tready),

            u.multiplier.eq(self.cfg_multiplier),
            u.right_shift.eq(self.cfg_right_shift),
            self.overflow.eq(u.overflow),
            self.dropped.eq(u.dropped),
        ]
        return m
