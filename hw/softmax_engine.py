"""SOFTMAX execution engine: ACT -> :class:`hw.softmax.SoftmaxUnit` -> ACT.

Each of the BATCH * IN_H * IN_W pixels at IN_ADDR (IN_CW words each) is one vector of CIN
int8 logits: channel ``c`` is lane ``c % C`` of the pixel's word ``c // C``. The engine
serialises the lanes into the unit (one element per cycle), packs the probabilities back into
words and writes them to the same positions relative to OUT_ADDR (lanes past CIN in a pixel's
last word are don't-care).

Sizes and regions are checked first (CIN <= the unit's max_len, regions inside ACT and
disjoint, SM_MULT < 2**31, SM_SHIFT <= 31); a refused configuration ends with
``Error.CONFIG`` / ``Error.ADDRESS`` before touching memory.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .conv_engine import cfg_layout, _bits
from .dma import StoreEngine
from .isa import Error, Reg
from .sizes import SIZE_BITS, ProductSteps
from .softmax import SoftmaxUnit

__all__ = ["SoftmaxEngine"]


class SoftmaxEngine(wiring.Component):
    def __init__(self, cols, act_depth, max_len=256):
        self.cols, self.act_depth, self.max_len = cols, act_depth, max_len
        self.unit = SoftmaxUnit(max_len=max_len)
        self.reader = StoreEngine(cols, act_depth)
        aw = _bits(act_depth)
        super().__init__({
            "cfg": In(cfg_layout()),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(4),
            "act_rd_addr": Out(aw),
            "act_rd_data": In(8 * cols),
            "act_wr_en": Out(1),
            "act_wr_addr": Out(aw),
            "act_wr_data": Out(8 * cols),
        })

    def elaborate(self, platform):
        m = Module()
        C = self.cols
        sm = m.submodules.unit = self.unit
        rd = m.submodules.reader = self.reader
        reg = self.cfg.__getitem__

        hw = Signal(32)
        vectors = Signal(32)
        total = Signal(32)
        sizes = ProductSteps([
            (hw, reg(Reg.IN_H), reg(Reg.IN_W)),
            (vectors, hw, reg(Reg.BATCH)),
            (total, vectors, reg(Reg.IN_CW)),
        ])
        size_regs = [Reg.IN_H, Reg.IN_W, Reg.IN_CW, Reg.CIN, Reg.BATCH]
        sizes_ok = (Cat(*[(reg(r) != 0) & (reg(r) < (1 << SIZE_BITS)) for r in size_regs]).all()
                    & (reg(Reg.CIN) <= self.max_len)
                    & (reg(Reg.CIN) <= reg(Reg.IN_CW) * C)
                    & (reg(Reg.IN_CW) * C < reg(Reg.CIN) + C)      # no all-padding words
                    & (reg(Reg.SM_MULT) < (1 << 31)) & (reg(Reg.SM_SHIFT) <= 31))
        in_end = Signal(34)
        out_end = Signal(34)
        m.d.comb += [in_end.eq(reg(Reg.IN_ADDR) + total), out_end.eq(reg(Reg.OUT_ADDR) + total)]
        addr_ok = ((in_end <= self.act_depth) & (out_end <= self.act_depth) &
                   ((out_end <= reg(Reg.IN_ADDR)) | (in_end <= reg(Reg.OUT_ADDR))))

        m.d.comb += [sm.multiplier.eq(reg(Reg.SM_MULT)), sm.right_shift.eq(reg(Reg.SM_SHIFT)),
                     rd.addr.eq(reg(Reg.IN_ADDR)), rd.count.eq(total),
                     self.act_rd_addr.eq(rd.act_addr), rd.act_data.eq(self.act_rd_data)]

        # Serialiser: one word at a time, lanes in order, `last` at channel CIN-1.
        word = Signal(data.ArrayLayout(signed(8), C))
        have = Signal()
        lane = Signal(range(C))
        chan = Signal(SIZE_BITS)
        vec_last = chan + 1 == reg(Reg.CIN)
        word_end = (lane == C - 1) | vec_last
        # The next word is taken in the cycle the current one's final lane goes out, so the
        # unit sees one element per cycle.
        send = sm.logits.valid & sm.logits.ready
        m.d.comb += [sm.logits.payload.data.eq(word[lane]), sm.logits.payload.last.eq(vec_last),
                     sm.logits.valid.eq(have), rd.data.ready.eq(~have | (send & word_end))]
        with m.If(send):
            m.d.sync += [lane.eq(lane + 1), chan.eq(chan + 1)]
            with m.If(word_end):
                m.d.sync += [have.eq(0), lane.eq(0)]
            with m.If(vec_last):
                m.d.sync += chan.eq(0)
        with m.If(rd.data.valid & rd.data.ready):
            m.d.sync += [word.eq(rd.data.payload.data), have.eq(1), lane.eq(0)]

        # Packer: probabilities back into words.
        out_word = Signal(data.ArrayLayout(signed(8), C))
        out_lane = Signal(range(C))
        out_chan = Signal(SIZE_BITS)
        wr_ptr = Signal(25)
        done_vectors = Signal(32)
        p_last = sm.probs.payload.last
        out_end_word = (out_lane == C - 1) | p_last
        lanes = [Mux(out_lane == j, sm.probs.payload.data, out_word[j]) for j in range(C)]
        m.d.comb += [sm.probs.ready.eq(1),
                     self.act_wr_addr.eq(wr_ptr),
                     self.act_wr_data.eq(Cat(*lanes)),
                     self.act_wr_en.eq(sm.probs.valid & out_end_word & (wr_ptr < out_end))]
        with m.If(sm.probs.valid):
            m.d.sync += [out_word[out_lane].eq(sm.probs.payload.data), out_lane.eq(out_lane + 1),
                         out_chan.eq(out_chan + 1)]
            with m.If(out_end_word):
                m.d.sync += [out_lane.eq(0), wr_ptr.eq(wr_ptr + 1)]
            with m.If(p_last):
                m.d.sync += [out_chan.eq(0), done_vectors.eq(done_vectors + 1)]

        setup_run = Signal()
        restart = Signal()
        sizes.elaborate_into(m, setup_run, restart)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.next = "CHECK_SIZES"
            with m.State("CHECK_SIZES"):
                m.d.comb += [self.busy.eq(1), restart.eq(1)]
                with m.If(sizes_ok):
                    m.next = "SETUP"
                with m.Else():
                    m.d.comb += [self.done.eq(1), self.error.eq(Error.CONFIG)]
                    m.next = "IDLE"
            with m.State("SETUP"):
                m.d.comb += [self.busy.eq(1), setup_run.eq(1)]
                with m.If(sizes.last):
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += self.busy.eq(1)
                with m.If(sizes.overflow):
                    m.d.comb += [self.done.eq(1), self.error.eq(Error.CONFIG)]
                    m.next = "IDLE"
                with m.Elif(~addr_ok):
                    m.d.comb += [self.done.eq(1), self.error.eq(Error.ADDRESS)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += rd.start.eq(1)
                    m.d.sync += [wr_ptr.eq(reg(Reg.OUT_ADDR)), done_vectors.eq(0),
                                 have.eq(0), lane.eq(0), chan.eq(0), out_lane.eq(0),
                                 out_chan.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.If(done_vectors == vectors):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m
