"""POOL execution engine: ACT -> :class:`hw.pooling.Pooling` -> ACT, streaming.

The input images (BATCH x IN_H x IN_W pixels of IN_CW words, contiguous from IN_ADDR) are read
word by word in raster order, which is exactly the pooling unit's input order (one beat = one
word = C channels); its output beats are written to consecutive words from OUT_ADDR.

The engine checks sizes and regions first (sizes >= 1, the unit's elaboration limits, input
and output regions inside ACT and disjoint; OUT_H x OUT_W tell it how large the output region
is) and finishes with ``Error.CONFIG`` / ``Error.ADDRESS`` before touching memory. If the unit
refuses the configuration itself (its ``error``), the rest of the input is consumed and the
engine ends with ``Error.CONFIG``; output words past the checked region are never written.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring

from .dma import StoreEngine
from .isa import Error, Reg
from .pooling import Pooling
from .sizes import SIZE_BITS, ProductSteps, engine_fsm, streaming_engine_members

__all__ = ["PoolEngine", "SETUP_DEPS"]

#: The setup products' dependencies (see :class:`hw.sizes.ProductSteps`).
SETUP_DEPS = [(), (0,), (1,), (), (3,), (4,)]


class PoolEngine(wiring.Component):
    def __init__(self, cols, act_depth, max_h=32, max_w=32, max_c=64, max_k=8,
                 dsp="generic"):
        self.dsp = dsp
        self.cols, self.act_depth = cols, act_depth
        self.limits = dict(max_h=max_h, max_w=max_w, max_c=max_c, max_k=max_k)
        self.pool = Pooling(lanes=cols, registered_config=True, dsp=dsp, **self.limits)
        self.reader = StoreEngine(cols, act_depth)
        super().__init__(streaming_engine_members(cols, act_depth))

    def elaborate(self, platform):
        m = Module()
        m.submodules.pool = self.pool
        m.submodules.reader = self.reader
        checks = self._setup_checks(m)
        self._stream_into_unit(m, checks.in_total)
        writeback = self._writeback(m, checks.out_end)
        self._sequence(m, checks, writeback)
        return m

    def _setup_checks(self, m):
        """The instruction's sizes and regions: the products of the sizes (``in_total`` /
        ``out_total`` words; computed in the setup steps), whether the registers are inside
        the unit's limits (``sizes_ok``), and whether both regions are inside ACT and
        disjoint (``addr_ok``, from the registered region ends). Hands the reader
        ``in_total``, the writeback ``out_end`` and the sequencer the rest, as a namespace."""
        reg = self.cfg.__getitem__
        lim = self.limits
        hw_in = Signal(32)
        img_in = Signal(32)
        in_total = Signal(32)
        hw_out = Signal(32)
        img_out = Signal(32)
        out_total = Signal(32)
        sizes = ProductSteps([
            (hw_in, reg(Reg.IN_H), reg(Reg.IN_W)),
            (img_in, hw_in, reg(Reg.IN_CW)),
            (in_total, img_in, reg(Reg.BATCH)),
            (hw_out, reg(Reg.OUT_H), reg(Reg.OUT_W)),
            (img_out, hw_out, reg(Reg.IN_CW)),
            (out_total, img_out, reg(Reg.BATCH)),
        ], SETUP_DEPS, dsp=self.dsp)
        size_regs = [Reg.IN_H, Reg.IN_W, Reg.IN_CW, Reg.CIN, Reg.KH, Reg.STRIDE, Reg.OUT_H,
                     Reg.OUT_W, Reg.BATCH]
        sizes_ok = (Cat(*[(reg(r) != 0) & (reg(r) < (1 << SIZE_BITS)) for r in size_regs]).all()
                    & (reg(Reg.IN_H) <= lim["max_h"]) & (reg(Reg.IN_W) <= lim["max_w"])
                    & (reg(Reg.CIN) <= lim["max_c"]) & (reg(Reg.KH) <= lim["max_k"])
                    & (reg(Reg.STRIDE) < 256) & (reg(Reg.PAD) < 256)
                    & (reg(Reg.CIN) <= reg(Reg.IN_CW) * self.cols)
                    & (reg(Reg.POOL_MODE) <= 1)
                    & ((reg(Reg.IN_ZP) < 128) | (reg(Reg.IN_ZP) >= (1 << 32) - 128)))
        in_end = Signal(34)
        out_end = Signal(34)
        m.d.sync += [in_end.eq(reg(Reg.IN_ADDR) + in_total),      # registered, for timing
                     out_end.eq(reg(Reg.OUT_ADDR) + out_total)]
        addr_ok = ((in_end <= self.act_depth) & (out_end <= self.act_depth) &
                   ((out_end <= reg(Reg.IN_ADDR)) | (in_end <= reg(Reg.OUT_ADDR))))
        return SimpleNamespace(sizes=sizes, sizes_ok=sizes_ok, addr_ok=addr_ok,
                               in_total=in_total, out_end=out_end)

    def _stream_into_unit(self, m, in_total):
        """The pooling unit's configuration, straight from the registers (it registers them
        itself, and they hold for the whole instruction), and its input: ``in_total`` words
        from IN_ADDR, read by the reader."""
        reg = self.cfg.__getitem__
        pool, rd = self.pool, self.reader
        m.d.comb += [
            pool.config.h.eq(reg(Reg.IN_H)), pool.config.w.eq(reg(Reg.IN_W)),
            pool.config.c.eq(reg(Reg.CIN)), pool.config.k.eq(reg(Reg.KH)),
            pool.config.stride.eq(reg(Reg.STRIDE)), pool.config.pad.eq(reg(Reg.PAD)),
            pool.config.mode.eq(reg(Reg.POOL_MODE)),
            pool.config.zero_point.eq(reg(Reg.IN_ZP)[:8]),
            rd.addr.eq(reg(Reg.IN_ADDR)), rd.count.eq(in_total),
            self.act_rd_addr.eq(rd.act_addr), rd.act_data.eq(self.act_rd_data),
            pool.input.payload.data.as_value().eq(rd.data.payload.data),
            pool.input.payload.last.eq(rd.data.payload.last),
            pool.input.valid.eq(rd.data.valid),
            rd.data.ready.eq(pool.input.ready),
        ]

    def _writeback(self, m, out_end):
        """The unit's output to consecutive words from ``wr_ptr`` (set to OUT_ADDR by the
        sequencer), never past the checked output region (``out_end``); counts the images
        out (``frames``) and notes that the reader has streamed the whole input
        (``in_done``). Hands the sequencer those three registers, as a namespace."""
        pool, rd = self.pool, self.reader
        wr_ptr = Signal(25)
        frames = Signal(SIZE_BITS + 1)
        in_done = Signal()
        m.d.comb += [pool.result.ready.eq(1),
                     self.act_wr_en.eq(pool.result.valid & (wr_ptr < out_end)),
                     self.act_wr_addr.eq(wr_ptr),
                     self.act_wr_data.eq(pool.result.payload.data.as_value())]
        with m.If(pool.result.valid):
            m.d.sync += wr_ptr.eq(wr_ptr + 1)
            with m.If(pool.result.payload.last):
                m.d.sync += frames.eq(frames + 1)
        with m.If(rd.done):
            m.d.sync += in_done.eq(1)
        return SimpleNamespace(wr_ptr=wr_ptr, frames=frames, in_done=in_done)

    def _sequence(self, m, checks, writeback):
        """The engine FSM (:func:`hw.sizes.engine_fsm`): the checks, then RUN, which starts
        the reader and ends when every image's output has arrived and the whole input has
        been read, or when the unit refused the configuration."""
        reg = self.cfg.__getitem__
        pool, rd = self.pool, self.reader
        wr_ptr, frames, in_done = writeback.wr_ptr, writeback.frames, writeback.in_done

        def enter_run():
            m.d.comb += rd.start.eq(1)
            m.d.sync += [wr_ptr.eq(reg(Reg.OUT_ADDR)), frames.eq(0), in_done.eq(0)]

        def run_state():
            # Done when every image's output has arrived and the reader has streamed the
            # whole input (rows or columns no window covers are still consumed).
            with m.If((frames == reg(Reg.BATCH)) & (in_done | rd.done)):
                m.d.comb += self.done.eq(1)
                with m.If(wr_ptr != checks.out_end):
                    m.d.comb += self.error.eq(Error.CONFIG)   # OUT_H/OUT_W disagree
                m.next = "IDLE"
            with m.Elif(in_done & pool.error):
                m.d.comb += [self.done.eq(1), self.error.eq(Error.CONFIG)]
                m.next = "IDLE"

        engine_fsm(m, self, checks.sizes, checks.sizes_ok, [(checks.addr_ok, Error.ADDRESS)],
                   enter_run, run_state)
