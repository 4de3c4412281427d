"""SOFTMAX execution engine: ACT -> :class:`hw.softmax.SoftmaxUnit` -> ACT.

Each of the BATCH * IN_H * IN_W pixels of the input tensor (IN_ADDR, IN_CW words per pixel,
the input's row and image pitches) is one vector of CIN int8 logits: channel ``c`` is lane
``c % C`` of the pixel's word ``c // C``. The engine serialises the lanes into the unit (one
element per cycle; words wholly past CIN are read and dropped), packs the probabilities back
into words and writes them to the same pixel of the output tensor (OUT_ADDR, OUT_CW = IN_CW,
the output's pitches); lanes past CIN in a pixel's last word are -128, and so are its words
wholly past CIN.

Causal mask (SM_CAUSAL = 1): vector ``v`` sends only its first ``len_v = (v mod CIN) + 1``
channels to the unit (words wholly past ``len_v`` are read and dropped). The packer writes
-128 into the lanes after the vector's last probability and then, holding the unit's output
(backpressure), writes one all -128 word per remaining word of the pixel, so every output
word is written and the masked channels read as probability 0. In the word holding the
last probability of a vector, lanes after it are -128 in either mode.

Mode (SM_MODE): 0 computes :func:`golden.softmax.softmax` with SM_MULT and SM_SHIFT, 1
:func:`golden.tflite.softmax_tflite` with the exp table (``exp_table``: the LoadEngine's
SM_EXP writes, kept in the unit until the next such LOAD; SM_MULT and SM_SHIFT are not used).

Sizes and regions are checked first (CIN <= the unit's max_len, and in mode 1 <= its
``tflite_max_len`` (511), regions inside ACT and disjoint, SM_MULT < 2**31, SM_SHIFT <= 31,
SM_CAUSAL <= 1, SM_MODE <= 1, mode 1 only once a whole table has been loaded since reset); a
refused configuration ends with ``Error.CONFIG`` / ``Error.ADDRESS`` before touching memory.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In

from .act_memory import banks
from .dma import TensorReader, TensorWalker
from .isa import Error, Reg
from .sizes import (SIZE_BITS, ProductSteps, addr_bits, engine_fsm, pixel_shift,
                    regions_disjoint, streaming_engine_members, tensor_end)
from .softmax import SoftmaxUnit, table_entry_layout

__all__ = ["SoftmaxEngine", "SETUP_DEPS"]

#: The setup products' dependencies (see :class:`hw.sizes.ProductSteps`).
SETUP_DEPS = [(), (0,), (), (), ()]


class SoftmaxEngine(wiring.Component):
    def __init__(self, cols, act_depth, rows=1, max_len=256, dsp="generic"):
        self.cols, self.act_depth, self.max_len = cols, act_depth, max_len
        self.nbanks = banks(rows)
        self.dsp = dsp
        self.unit = SoftmaxUnit(max_len=max_len, dsp=dsp)
        self.reader = TensorReader(cols, act_depth)
        self.writer = TensorWalker(addr_bits(act_depth))
        super().__init__({**streaming_engine_members(cols, act_depth),
                          "exp_table": In(stream.Signature(table_entry_layout()))})

    def elaborate(self, platform):
        m = Module()
        C = self.cols
        sm = m.submodules.unit = self.unit
        rd = m.submodules.reader = self.reader
        wr = m.submodules.writer = self.writer
        reg = self.cfg.__getitem__

        hw = Signal(32)
        vectors = Signal(32)
        in_total = Signal(32)
        out_total = Signal(32)
        last_row = Signal(32)
        sizes = ProductSteps([
            (hw, reg(Reg.IN_H), reg(Reg.IN_W)),
            (vectors, hw, reg(Reg.BATCH)),
            (in_total, reg(Reg.IN_IMG), reg(Reg.BATCH)),
            (out_total, reg(Reg.OUT_IMG), reg(Reg.BATCH)),
            (last_row, reg(Reg.OUT_ROW), reg(Reg.IN_H) - 1),
        ], SETUP_DEPS, dsp=self.dsp)
        # TFLite mode: the whole exp table has been written (its last entry) since reset.
        table_loaded = Signal()
        wiring.connect(m, wiring.flipped(self.exp_table), sm.exp_table)
        with m.If(self.exp_table.valid & (self.exp_table.payload.index == 255)):
            m.d.sync += table_loaded.eq(1)
        mode_ok = ((reg(Reg.SM_MODE) == 0)
                   | ((reg(Reg.SM_MODE) == 1) & table_loaded
                      & (reg(Reg.CIN) <= sm.tflite_max_len)))
        size_regs = [Reg.IN_H, Reg.IN_W, Reg.IN_CW, Reg.CIN, Reg.BATCH]
        sizes_ok = (Cat(*[(reg(r) != 0) & (reg(r) < (1 << SIZE_BITS)) for r in size_regs]).all()
                    & (reg(Reg.CIN) <= self.max_len)
                    & (reg(Reg.CIN) <= reg(Reg.IN_CW) * C)
                    & (reg(Reg.OUT_CW) == reg(Reg.IN_CW))
                    & (reg(Reg.SM_MULT) < (1 << 31)) & (reg(Reg.SM_SHIFT) <= 31)
                    & (reg(Reg.SM_CAUSAL) <= 1) & mode_ok)
        shift, pow2 = pixel_shift(m, reg(Reg.IN_CW), "in")
        cw_mask = reg(Reg.IN_CW) - 1
        pitch_ok = Signal()
        m.d.sync += pitch_ok.eq(pow2 & (Cat(*[(reg(r) & cw_mask) == 0 for r in (
            Reg.IN_ROW, Reg.IN_IMG, Reg.OUT_ROW, Reg.OUT_IMG, Reg.IN_ADDR, Reg.OUT_ADDR)]).all()))
        in_end = Signal(34)
        last_col = Signal(32)
        m.d.sync += [in_end.eq(reg(Reg.IN_ADDR) + in_total),
                     last_col.eq((reg(Reg.IN_W) - 1)[:SIZE_BITS] << shift)]
        out_end = tensor_end(m, reg(Reg.OUT_ADDR), out_total, reg(Reg.OUT_IMG), last_row,
                             last_col, reg(Reg.IN_CW), "out")
        disjoint = regions_disjoint(m, self.nbanks, reg(Reg.IN_ADDR), in_end, shift,
                                    reg(Reg.OUT_ADDR), out_end, shift)
        addr_ok = (in_end <= self.act_depth) & (out_end <= self.act_depth) & disjoint

        m.d.comb += [sm.multiplier.eq(reg(Reg.SM_MULT)), sm.right_shift.eq(reg(Reg.SM_SHIFT)),
                     sm.mode.eq(reg(Reg.SM_MODE)[0]),
                     rd.geometry.base.eq(reg(Reg.IN_ADDR)), rd.geometry.batch.eq(reg(Reg.BATCH)),
                     rd.geometry.h.eq(reg(Reg.IN_H)), rd.geometry.w.eq(reg(Reg.IN_W)),
                     rd.geometry.groups.eq(reg(Reg.IN_CW)), rd.geometry.cw.eq(reg(Reg.IN_CW)),
                     rd.geometry.row.eq(reg(Reg.IN_ROW)), rd.geometry.img.eq(reg(Reg.IN_IMG)),
                     rd.shift.eq(shift),
                     self.act_rd_en.eq(rd.act_rd_en), self.act_rd_addr.eq(rd.act_rd_addr),
                     self.act_rd_shift.eq(rd.act_rd_shift), rd.act_rd_data.eq(self.act_rd_data),
                     wr.geometry.base.eq(reg(Reg.OUT_ADDR)), wr.geometry.batch.eq(reg(Reg.BATCH)),
                     wr.geometry.h.eq(reg(Reg.IN_H)), wr.geometry.w.eq(reg(Reg.IN_W)),
                     wr.geometry.groups.eq(reg(Reg.IN_CW)), wr.geometry.cw.eq(reg(Reg.OUT_CW)),
                     wr.geometry.row.eq(reg(Reg.OUT_ROW)), wr.geometry.img.eq(reg(Reg.OUT_IMG)),
                     self.act_wr_shift.eq(shift)]

        causal = reg(Reg.SM_CAUSAL)[0]
        # Taker: position of the next word read within its pixel, and that pixel's length.
        t_word = Signal(SIZE_BITS)                 # word index within the pixel
        t_base = Signal(SIZE_BITS + C.bit_length() + 1)   # t_word * C
        # The pixel's vector length: CIN, or (causal) its vector index mod CIN, plus 1.
        t_len = Signal(SIZE_BITS + 1)
        cw_last = Signal(SIZE_BITS)                # IN_CW - 1
        m.d.sync += cw_last.eq(reg(Reg.IN_CW) - 1)
        skip = t_base >= t_len                     # a word wholly past the vector's length

        # Serialiser: one word at a time, lanes in order, `last` at channel len-1.
        word = Signal(data.ArrayLayout(signed(8), C))
        w_last = Signal(SIZE_BITS + 1)             # length of the word's vector - 1
        have = Signal()
        lane = Signal(range(C))
        chan = Signal(SIZE_BITS)
        vec_last = chan == w_last
        word_end = (lane == C - 1) | vec_last
        # The next word is taken in the cycle the current one's final lane goes out, so the
        # unit sees one element per cycle.
        send = sm.logits.valid & sm.logits.ready
        take = rd.data.valid & rd.data.ready
        m.d.comb += [sm.logits.payload.data.eq(word[lane]), sm.logits.payload.last.eq(vec_last),
                     sm.logits.valid.eq(have), rd.data.ready.eq(~have | (send & word_end))]
        with m.If(send):
            m.d.sync += [lane.eq(lane + 1), chan.eq(chan + 1)]
            with m.If(word_end):
                m.d.sync += [have.eq(0), lane.eq(0)]
            with m.If(vec_last):
                m.d.sync += chan.eq(0)
        with m.If(take):
            with m.If(~skip):
                m.d.sync += [word.eq(rd.data.payload.data), w_last.eq(t_len - 1), have.eq(1),
                             lane.eq(0)]
            with m.If(t_word == cw_last):
                m.d.sync += [t_word.eq(0), t_base.eq(0),
                             t_len.eq(Mux(causal & (t_len != reg(Reg.CIN)), t_len + 1,
                                          Mux(causal, 1, reg(Reg.CIN))))]
            with m.Else():
                m.d.sync += [t_word.eq(t_word + 1), t_base.eq(t_base + C)]

        # Packer: probabilities back into words; then the pixel's masked words (causal).
        out_word = Signal(data.ArrayLayout(signed(8), C))
        out_lane = Signal(range(C))
        out_chan = Signal(SIZE_BITS)
        p_word = Signal(SIZE_BITS)                 # word index within the output pixel
        pad_left = Signal(SIZE_BITS)               # all -128 words still to write
        out_done = Signal()                        # the output walk has ended
        done_vectors = Signal(32)
        p_last = sm.probs.payload.last
        p_take = sm.probs.valid & sm.probs.ready
        out_end_word = (out_lane == C - 1) | p_last
        lanes = [Mux(out_lane == j, sm.probs.payload.data,
                     Mux(p_last & (out_lane < j), -128, out_word[j])) for j in range(C)]
        padding = pad_left != 0
        write = ((p_take & out_end_word) | padding) & ~out_done
        # The write port is registered (the word's lanes come from the unit's output through
        # a multiplexer per lane).
        m.d.comb += [sm.probs.ready.eq(~padding), wr.step.eq(write)]
        m.d.sync += [self.act_wr_addr.eq(wr.addr),
                     self.act_wr_data.eq(Mux(padding, Cat(*[Const(-128, signed(8))] * C),
                                             Cat(*lanes))),
                     self.act_wr_en.eq(write)]
        with m.If(write & wr.last):
            m.d.sync += out_done.eq(1)
        with m.If(padding):
            m.d.sync += pad_left.eq(pad_left - 1)
        with m.If(p_take):
            m.d.sync += [out_word[out_lane].eq(sm.probs.payload.data), out_lane.eq(out_lane + 1),
                         out_chan.eq(out_chan + 1)]
            with m.If(out_end_word):
                m.d.sync += [out_lane.eq(0), p_word.eq(p_word + 1)]
            with m.If(p_last):
                m.d.sync += [out_chan.eq(0), done_vectors.eq(done_vectors + 1), p_word.eq(0),
                             pad_left.eq(reg(Reg.IN_CW) - 1 - p_word)]

        def enter_run():
            m.d.comb += [rd.start.eq(1), wr.start.eq(1)]
            m.d.sync += [out_done.eq(0), done_vectors.eq(0),
                         have.eq(0), lane.eq(0), chan.eq(0), out_lane.eq(0),
                         out_chan.eq(0), t_word.eq(0), t_base.eq(0), t_len.eq(Mux(causal, 1, reg(Reg.CIN))),
                         p_word.eq(0), pad_left.eq(0)]

        def run_state():
            with m.If((done_vectors == vectors) & ~padding):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"

        engine_fsm(m, self, sizes, sizes_ok,
                   [(pitch_ok, Error.CONFIG), (addr_ok, Error.ADDRESS)], enter_run, run_state)
        return m
