"""POOL execution engine: ACT -> :class:`hw.pooling.Pooling` -> ACT, streaming.

The input images (BATCH x IN_H x IN_W pixels of IN_CW words, with the input's row and image
pitches) are read word by word in raster order (:class:`hw.dma.TensorReader`), which is
exactly the pooling unit's input order (one beat = one word = C channels; the unit pools all
IN_CW * C lanes of a pixel, padding lanes included); its output beats are written in the
same order to the output tensor (OUT_ADDR, OUT_CW = IN_CW words per pixel, the output's row
and image pitches).

The engine checks everything first: sizes >= 1, the unit's elaboration limits and its own
configuration check (``config_ok``), a square window, stride and padding (KW = KH, STRIDE_X =
STRIDE_Y, PAD_LEFT = PAD_TOP), OUT_H x OUT_W equal to what the window gives, pitches, and
regions inside ACT and disjoint. A refused configuration ends with ``Error.CONFIG`` /
``Error.ADDRESS`` before anything is read or written.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring

from .act_memory import banks
from .dma import TensorReader, TensorWalker
from .isa import Error, Reg
from .pooling import Pooling
from .sizes import (SIZE_BITS, ProductSteps, addr_bits, engine_fsm, pixel_shift,
                    regions_disjoint, streaming_engine_members, tensor_end)

__all__ = ["PoolEngine", "SETUP_STEPS", "SETUP_DEPS"]

#: The setup products (destinations, in issue order) and their dependencies (see
#: :class:`hw.sizes.ProductSteps`).
SETUP_STEPS = ("in_total", "out_total", "last_row", "oh_span", "ow_span")
SETUP_DEPS = [(), (), (), (), ()]


class PoolEngine(wiring.Component):
    def __init__(self, cols, act_depth, rows=1, max_h=32, max_w=32, max_c=64, max_k=8,
                 dsp="generic"):
        self.dsp = dsp
        self.cols, self.act_depth, self.nbanks = cols, act_depth, banks(rows)
        self.limits = dict(max_h=max_h, max_w=max_w, max_c=max_c, max_k=max_k)
        self.pool = Pooling(lanes=cols, registered_config=True, dsp=dsp, **self.limits)
        self.reader = TensorReader(cols, act_depth)
        self.writer = TensorWalker(addr_bits(act_depth))
        super().__init__(streaming_engine_members(cols, act_depth))

    def elaborate(self, platform):
        m = Module()
        m.submodules.pool = self.pool
        m.submodules.reader = self.reader
        m.submodules.writer = self.writer
        g, sizes, checks = self._setup(m)
        self._stream_in(m, g)
        progress = self._stream_out(m, g)
        self._control(m, sizes, checks, progress)
        return m

    def _setup(self, m):
        """Products, the configuration checks, pitches and regions."""
        reg = self.cfg.__getitem__
        lim, C = self.limits, self.cols
        g = SimpleNamespace(**{n: Signal(32, name=n) for n in SETUP_STEPS})
        factors = {"in_total": (reg(Reg.IN_IMG), reg(Reg.BATCH)),
                   "out_total": (reg(Reg.OUT_IMG), reg(Reg.BATCH)),
                   "last_row": (reg(Reg.OUT_ROW), reg(Reg.OUT_H) - 1),
                   "oh_span": (reg(Reg.OUT_H) - 1, reg(Reg.STRIDE_Y)),
                   "ow_span": (reg(Reg.OUT_W) - 1, reg(Reg.STRIDE_Y))}
        sizes = ProductSteps([(getattr(g, n), *factors[n]) for n in SETUP_STEPS], SETUP_DEPS,
                             dsp=self.dsp)
        size_regs = [Reg.IN_H, Reg.IN_W, Reg.IN_CW, Reg.CIN, Reg.KH, Reg.STRIDE_Y, Reg.OUT_H,
                     Reg.OUT_W, Reg.BATCH]
        square = ((reg(Reg.KW) == reg(Reg.KH)) & (reg(Reg.STRIDE_X) == reg(Reg.STRIDE_Y)) &
                  (reg(Reg.PAD_LEFT) == reg(Reg.PAD_TOP)))
        g.channels = reg(Reg.IN_CW) * C          # the unit pools every lane of a pixel
        sizes_ok = (Cat(*[(reg(r) != 0) & (reg(r) < (1 << SIZE_BITS)) for r in size_regs]).all()
                    & (reg(Reg.IN_H) <= lim["max_h"]) & (reg(Reg.IN_W) <= lim["max_w"])
                    & (g.channels <= lim["max_c"]) & (reg(Reg.KH) <= lim["max_k"])
                    & (reg(Reg.STRIDE_Y) < 256) & (reg(Reg.PAD_TOP) < 256) & square
                    & (reg(Reg.CIN) <= g.channels) & (reg(Reg.OUT_CW) == reg(Reg.IN_CW))
                    & (reg(Reg.POOL_MODE) <= 1)
                    & ((reg(Reg.IN_ZP) < 128) | (reg(Reg.IN_ZP) >= (1 << 32) - 128)))
        g.in_shift, in_pow2 = pixel_shift(m, reg(Reg.IN_CW), "in")
        cw_mask = reg(Reg.IN_CW) - 1
        pitch_ok = Signal()
        m.d.sync += pitch_ok.eq(in_pow2 & (Cat(*[(reg(r) & cw_mask) == 0 for r in (
            Reg.IN_ROW, Reg.IN_IMG, Reg.OUT_ROW, Reg.OUT_IMG, Reg.IN_ADDR, Reg.OUT_ADDR)]).all()))
        # OUT_H x OUT_W must be what the window gives: (OUT - 1) * s + k <= padded size <
        # OUT * s + k, so that exactly the checked region is written.
        hp, wp = Signal(18), Signal(18)
        out_ok = Signal()
        k, s = reg(Reg.KH)[:SIZE_BITS], reg(Reg.STRIDE_Y)[:SIZE_BITS]
        m.d.sync += [hp.eq(reg(Reg.IN_H)[:SIZE_BITS] + (reg(Reg.PAD_TOP)[:8] << 1)),
                     wp.eq(reg(Reg.IN_W)[:SIZE_BITS] + (reg(Reg.PAD_TOP)[:8] << 1)),
                     out_ok.eq((g.oh_span + k <= hp) & (hp < g.oh_span + s + k) &
                               (g.ow_span + k <= wp) & (wp < g.ow_span + s + k))]
        in_end = Signal(34)
        m.d.sync += in_end.eq(reg(Reg.IN_ADDR) + g.in_total)
        last_col = Signal(32)
        m.d.sync += last_col.eq((reg(Reg.OUT_W) - 1)[:SIZE_BITS] << g.in_shift)
        out_end = tensor_end(m, reg(Reg.OUT_ADDR), g.out_total, reg(Reg.OUT_IMG), g.last_row,
                             last_col, reg(Reg.IN_CW), "out")
        disjoint = regions_disjoint(m, self.nbanks, reg(Reg.IN_ADDR), in_end, g.in_shift,
                                    reg(Reg.OUT_ADDR), out_end, g.in_shift)
        addr_ok = (in_end <= self.act_depth) & (out_end <= self.act_depth) & disjoint
        checks = [(pitch_ok & out_ok & self.pool.config_ok, Error.CONFIG),
                  (addr_ok, Error.ADDRESS)]
        return g, sizes, (sizes_ok, checks)

    def _stream_in(self, m, g):
        """The input tensor, word by word in raster order, into the pooling unit."""
        reg = self.cfg.__getitem__
        pool, rd = self.pool, self.reader
        m.d.comb += [
            pool.config.h.eq(reg(Reg.IN_H)), pool.config.w.eq(reg(Reg.IN_W)),
            pool.config.c.eq(g.channels), pool.config.k.eq(reg(Reg.KH)),
            pool.config.stride.eq(reg(Reg.STRIDE_Y)), pool.config.pad.eq(reg(Reg.PAD_TOP)),
            pool.config.mode.eq(reg(Reg.POOL_MODE)),
            pool.config.zero_point.eq(reg(Reg.IN_ZP)[:8]),
            rd.geometry.base.eq(reg(Reg.IN_ADDR)), rd.geometry.batch.eq(reg(Reg.BATCH)),
            rd.geometry.h.eq(reg(Reg.IN_H)), rd.geometry.w.eq(reg(Reg.IN_W)),
            rd.geometry.groups.eq(reg(Reg.IN_CW)), rd.geometry.cw.eq(reg(Reg.IN_CW)),
            rd.geometry.row.eq(reg(Reg.IN_ROW)), rd.geometry.img.eq(reg(Reg.IN_IMG)),
            rd.shift.eq(g.in_shift),
            self.act_rd_en.eq(rd.act_rd_en), self.act_rd_addr.eq(rd.act_rd_addr),
            self.act_rd_shift.eq(rd.act_rd_shift), rd.act_rd_data.eq(self.act_rd_data),
            pool.input.payload.data.as_value().eq(rd.data.payload.data),
            pool.input.payload.last.eq(rd.data.payload.last),
            pool.input.valid.eq(rd.data.valid),
            rd.data.ready.eq(pool.input.ready),
        ]

    def _stream_out(self, m, g):
        """The unit's output beats to the output tensor, in raster order; returns the
        progress flags the control waits for."""
        reg = self.cfg.__getitem__
        pool, wr = self.pool, self.writer
        p = SimpleNamespace(frames=Signal(SIZE_BITS + 1), in_done=Signal(), out_done=Signal())
        m.d.comb += [wr.geometry.base.eq(reg(Reg.OUT_ADDR)), wr.geometry.batch.eq(reg(Reg.BATCH)),
                     wr.geometry.h.eq(reg(Reg.OUT_H)), wr.geometry.w.eq(reg(Reg.OUT_W)),
                     wr.geometry.groups.eq(reg(Reg.IN_CW)), wr.geometry.cw.eq(reg(Reg.OUT_CW)),
                     wr.geometry.row.eq(reg(Reg.OUT_ROW)), wr.geometry.img.eq(reg(Reg.OUT_IMG)),
                     pool.result.ready.eq(1), wr.step.eq(pool.result.valid)]
        # Never past the checked output region, whatever the unit sends. (npu_top registers
        # the write port.)
        m.d.comb += [self.act_wr_en.eq(pool.result.valid & ~p.out_done),
                     self.act_wr_addr.eq(wr.addr), self.act_wr_shift.eq(g.in_shift),
                     self.act_wr_data.eq(pool.result.payload.data.as_value())]
        with m.If(pool.result.valid):
            with m.If(wr.last):
                m.d.sync += p.out_done.eq(1)
            with m.If(pool.result.payload.last):
                m.d.sync += p.frames.eq(p.frames + 1)
        with m.If(self.reader.done):
            m.d.sync += p.in_done.eq(1)
        p.on_start = [p.frames.eq(0), p.in_done.eq(0), p.out_done.eq(0)]
        return p

    def _control(self, m, sizes, checks, p):
        reg = self.cfg.__getitem__
        sizes_ok, registered = checks

        def enter_run():
            m.d.comb += [self.reader.start.eq(1), self.writer.start.eq(1)]
            m.d.sync += p.on_start

        def run_state():
            # Done when every image's output has been written and the reader has streamed
            # the whole input (rows or columns no window covers are still consumed).
            with m.If((p.frames == reg(Reg.BATCH)) & (p.in_done | self.reader.done)):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"

        engine_fsm(m, self, sizes, sizes_ok, registered, enter_run, run_state)
