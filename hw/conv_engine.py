"""CONV/dense execution engine: im2col addressing, the systolic array, requantization and the
activation table, with results written back to the activation scratchpad.

One CONV instruction computes ``out = act(requant(im2col(in) @ W + bias))`` for a batch of
NHWC images (dense layers are convolutions whose kernel covers the whole input map). The
GEMM has M = BATCH * OUT_H * OUT_W rows (output pixels, in raster order), K = KH * KW * CIN
(ordered kh, kw, cin) and N = COUT, run as output tiles of R pixels x C channels: for each
block of R pixels, for each column block nb, K operand beats.

Contract
--------
``start`` (one cycle, while idle) latches nothing: the configuration registers ``cfg`` must
stay stable until ``done``. The engine first checks the configuration (sizes >= 1 and < 2**16,
K <= MAX_K, every region inside its memory, input and output regions disjoint, int8 fields in
range) and ends at once with ``error`` = ``Error.CONFIG`` or ``Error.ADDRESS`` if it cannot
run, before any memory is read or written. Otherwise it runs to completion and pulses
``done`` with ``error`` = 0.

Datapath
--------
* *Pixel stepper*: while a block of R output pixels is being issued, the next block's R
  pixels are prepared one pixel per cycle (base word address, top-left input coordinate,
  in-range flag), so no division is needed and block changes cost nothing when a block
  lasts >= R cycles.
* *Issue walker*: per beat (kh, kw, cin), every row i reads ACT copy i at
  ``base_i + (kh*IN_W + kw)*IN_CW + cin // C`` and picks lane ``cin % C``; taps in the
  padding read as ``IN_ZP``; WGT supplies row k of the column block. Four register stages
  (coordinates and addresses; range check; the two cycles of a registered block RAM read;
  lane select), each a short path for timing, then an operand FIFO with credits in front of the array.
* *Array*: :class:`hw.systolic.SystolicArray` (its bias input is tied to zero; the bias is
  added by the requantizer).
* *Post-processing*: :class:`hw.requantizer.Requantizer` with the column block's bias, M0 and
  shift from PARAM (prefetched), then optionally :class:`hw.activation.ActivationLUT`.
* *Writeback* (registered): each result row goes to ``OUT_ADDR + m*OUT_CW + nb`` (nb < OUT_NB, the column
  blocks of this instruction, all OUT_CW of them unless OUT_NB says fewer); rows past M (padding of
  the last block) are dropped.

Throughput: one operand beat per cycle, i.e. each tile takes max(K, R) cycles in steady state
(see :mod:`npu.perf` for the exact cycle count).
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from golden.gemm import MAX_K

from .activation import ActivationLUT, table_layout
from .isa import Error, Reg, param_entry_layout
from .ram import RAM_LATENCY
from .requantizer import Requantizer
from .sizes import SIZE_BITS, ProductSteps, addr_bits, cfg_layout, engine_fsm
from .systolic import SystolicArray

__all__ = ["ConvEngine", "cfg_layout", "OPERAND_FIFO_DEPTH", "SETUP_DEPS"]

OPERAND_FIFO_DEPTH = 8
PARAM_FIFO_DEPTH = 4
#: The setup products' dependencies (step indices each one reads), for the schedule that the
#: hardware and the cycle model share (:func:`hw.sizes.step_schedule`).
SETUP_DEPS = [(), (0,), (), (2,), (), (4,), (3,), (5,), (1,), (), (2,), (2,)]


class ConvEngine(wiring.Component):
    def __init__(self, rows, cols, act_depth, wgt_depth, param_depth, dsp="generic"):
        self.rows, self.cols = rows, cols
        self.act_depth, self.wgt_depth, self.param_depth = act_depth, wgt_depth, param_depth
        self.dsp = dsp
        self.array = SystolicArray(rows, cols, dsp=dsp)
        self.requant = Requantizer(lanes=cols, dsp=dsp)
        self.lut = ActivationLUT(lanes=cols, dsp=dsp)
        aw, ww, pw = addr_bits(act_depth), addr_bits(wgt_depth), addr_bits(param_depth)
        super().__init__({
            "cfg": In(cfg_layout()),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(4),
            "act_rd_addr": Out(data.ArrayLayout(unsigned(aw), rows)),
            "act_rd_data": In(data.ArrayLayout(unsigned(8 * cols), rows)),
            "act_wr_en": Out(1),
            "act_wr_addr": Out(aw),
            "act_wr_data": Out(8 * cols),
            "wgt_rd_addr": Out(ww),
            "wgt_rd_data": In(8 * cols),
            "prm_rd_addr": Out(pw),
            "prm_rd_data": In(param_entry_layout(cols)),
            "lut_table": In(stream.Signature(table_layout())),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = self.array
        m.submodules.requant = self.requant
        m.submodules.lut = self.lut
        wiring.connect(m, wiring.flipped(self.lut_table), self.lut.table)
        geo, sizes, checks = self._setup(m)
        run = Signal()                    # the walkers are active
        stepper = self._pixel_stepper(m, geo, run)
        walker = self._im2col_walker(m, geo, run, stepper)
        self._operand_pipeline(m, geo, stepper, walker)
        params = self._param_prefetch(m, geo)
        wb = self._writeback(m, geo)
        self._control(m, geo, sizes, checks, run, [stepper, walker, params, wb], wb.finished_d)
        return m

    # ---- helpers -------------------------------------------------------------------------
    def _reg(self, r):
        return self.cfg[r]

    def _s8(self, r):
        """int8 field of a register (low byte, sign-extended)."""
        return self.cfg[r][:8].as_signed()

    # ---- setup: sizes, checks and the bounds the walkers compare with ---------------------
    def _setup(self, m):
        """Derived sizes through one shared 32 x 16 multiplier (:class:`ProductSteps`), the
        configuration and region checks, and registered walker bounds. Returns ``(geo,
        sizes, checks)``: ``geo`` holds the derived values, ``checks`` the ``engine_fsm``
        size check and its registered ``(ok, error)`` checks."""
        R, C = self.rows, self.cols
        reg, s8 = self._reg, self._s8
        g = SimpleNamespace()
        for name in ("khkw", "K", "in_row", "in_img", "hw", "M", "in_total", "out_total",
                     "w_total", "s_cw", "s_row", "p_off", "r_ocw", "nb_count"):
            setattr(g, name, Signal(32, name=name))
        # in_row: words per input image row; in_img: per input image; s_cw = stride * IN_CW
        # (next pixel along x); s_row = stride * in_row (next output row); p_off = pad * in_row
        # + pad * IN_CW (offset of the top-left tap); r_ocw = R * OUT_CW (words per block of
        # R output pixels); nb_count: column blocks computed (OUT_NB, default all OUT_CW).
        m.d.comb += [g.r_ocw.eq(reg(Reg.OUT_CW) * R),
                     g.nb_count.eq(Mux(reg(Reg.OUT_NB) == 0, reg(Reg.OUT_CW), reg(Reg.OUT_NB)))]
        sizes = ProductSteps([  # (destination, a, b), issued as scheduled by step_schedule
            (g.khkw, reg(Reg.KH), reg(Reg.KW)),
            (g.K, g.khkw, reg(Reg.CIN)),
            (g.in_row, reg(Reg.IN_W), reg(Reg.IN_CW)),
            (g.in_img, g.in_row, reg(Reg.IN_H)),
            (g.hw, reg(Reg.OUT_H), reg(Reg.OUT_W)),
            (g.M, g.hw, reg(Reg.BATCH)),
            (g.in_total, g.in_img, reg(Reg.BATCH)),
            (g.out_total, g.M, reg(Reg.OUT_CW)),
            (g.w_total, g.K, g.nb_count),
            (g.s_cw, reg(Reg.IN_CW), reg(Reg.STRIDE)),
            (g.s_row, g.in_row, reg(Reg.STRIDE)),
            (g.p_off, g.in_row + reg(Reg.IN_CW), reg(Reg.PAD)),
        ], SETUP_DEPS, dsp=self.dsp)

        size_regs = [Reg.IN_H, Reg.IN_W, Reg.IN_CW, Reg.CIN, Reg.KH, Reg.KW, Reg.STRIDE,
                     Reg.OUT_H, Reg.OUT_W, Reg.OUT_CW, Reg.BATCH]
        sizes_ok = Cat(*[(reg(r) != 0) & (reg(r) < (1 << SIZE_BITS)) for r in size_regs]).all()
        int8_ok = Cat(*[(reg(r) < 128) | (reg(r) >= (1 << 32) - 128)
                        for r in (Reg.IN_ZP, Reg.OUT_ZP, Reg.QMIN, Reg.QMAX)]).all()
        other_ok = ((reg(Reg.PAD) < (1 << SIZE_BITS)) & (reg(Reg.USE_LUT) <= 1) &
                    (reg(Reg.OUT_NB) <= reg(Reg.OUT_CW)) &
                    (s8(Reg.QMIN) <= s8(Reg.QMAX)) & (reg(Reg.CIN) <= reg(Reg.IN_CW) * C))
        # Region ends, registered (one adder per register; the checks read them after
        # SETTLE): the last output row ends nb_count words after its start.
        in_end, out_end, out_a, out_b, w_end, p_end = (
            Signal(34, name=n) for n in ("in_end", "out_end", "out_a", "out_b", "w_end", "p_end"))
        m.d.sync += [in_end.eq(reg(Reg.IN_ADDR) + g.in_total),
                     out_a.eq(reg(Reg.OUT_ADDR) + g.nb_count),
                     out_b.eq(g.out_total - reg(Reg.OUT_CW)),
                     out_end.eq(out_a + out_b),
                     w_end.eq(reg(Reg.W_ADDR) + g.w_total),
                     p_end.eq(reg(Reg.P_ADDR) + g.nb_count)]
        addr_ok = ((in_end <= self.act_depth) & (out_end <= self.act_depth) &
                   (w_end <= self.wgt_depth) & (p_end <= self.param_depth) &
                   ((out_end <= reg(Reg.IN_ADDR)) | (in_end <= reg(Reg.OUT_ADDR))))

        # Bounds the walkers compare against, registered: their inputs (the configuration
        # and the SETUP products) are stable from SETTLE on, so the walkers compare a counter
        # with a register instead of adding first (for timing).
        g.nb_last = Signal(SIZE_BITS)         # nb_count - 1
        g.cin_last = Signal(SIZE_BITS)
        g.kw_last = Signal(SIZE_BITS)
        g.kh_last = Signal(SIZE_BITS)
        g.ow_last = Signal(SIZE_BITS)
        g.oh_last = Signal(SIZE_BITS)
        g.m_less_r = Signal(signed(34))       # M - R: a block starting past it is the last
        g.m_less_2r = Signal(signed(34))      # M - 2R
        g.k_is_1 = Signal()
        g.k_less2 = Signal(32)                # K - 2
        g.nb_is_1 = Signal()
        g.nb_less2 = Signal(SIZE_BITS)        # nb_count - 2
        m.d.sync += [g.k_is_1.eq(g.K == 1), g.k_less2.eq(g.K - 2),
                     g.nb_is_1.eq(g.nb_count == 1), g.nb_less2.eq(g.nb_count - 2),
                     g.nb_last.eq(g.nb_count - 1),
                     g.cin_last.eq(reg(Reg.CIN) - 1), g.kw_last.eq(reg(Reg.KW) - 1),
                     g.kh_last.eq(reg(Reg.KH) - 1), g.ow_last.eq(reg(Reg.OUT_W) - 1),
                     g.oh_last.eq(reg(Reg.OUT_H) - 1),
                     g.m_less_r.eq(g.M - R), g.m_less_2r.eq(g.M - 2 * R)]
        checks = (sizes_ok & int8_ok & other_ok,
                  [(g.K <= MAX_K, Error.CONFIG), (addr_ok, Error.ADDRESS)])
        return g, sizes, checks

    # ---- pixel stepper ---------------------------------------------------------------------
    def _pixel_stepper(self, m, g, run):
        """Produces consecutive output pixels (raster order, image by image), one per cycle,
        into ``nxt``: each row's top-left tap (word address, coordinates, in-range flag).
        ``swap`` (driven by the walker) moves ``nxt`` to ``cur`` and starts the next block; a
        block change costs nothing when a block lasts >= R cycles."""
        R = self.rows
        reg = self._reg
        st = SimpleNamespace()
        st_oy = Signal(SIZE_BITS)
        st_ox = Signal(SIZE_BITS)
        st_m = Signal(32)
        st_y0 = Signal(signed(SIZE_BITS + 2))
        st_x0 = Signal(signed(SIZE_BITS + 2))
        st_base = Signal(signed(34))      # word address of the (possibly padded) top-left tap
        st_rowbase = Signal(signed(34))
        st_imgbase = Signal(signed(34))
        st.fill = Signal(range(R + 1))    # pixels already in `nxt`
        row_layout = data.StructLayout({"base": signed(34), "y0": signed(SIZE_BITS + 2),
                                        "x0": signed(SIZE_BITS + 2), "valid": 1})
        nxt = Signal(data.ArrayLayout(row_layout, R))
        st.cur = Signal(data.ArrayLayout(row_layout, R))
        st.swap = Signal()

        neg_pad = -reg(Reg.PAD).as_signed()
        # On a swap the stepper keeps going: `cur` takes the old `nxt` while `nxt` shifts.
        with m.If(run & ((st.fill != R) | st.swap)):
            new = Signal(row_layout)
            m.d.comb += [new.base.eq(st_base), new.y0.eq(st_y0), new.x0.eq(st_x0),
                         new.valid.eq(st_m < g.M)]
            for i in range(R - 1):
                m.d.sync += nxt[i].eq(nxt[i + 1])
            m.d.sync += [nxt[R - 1].eq(new), st.fill.eq(Mux(st.swap, 1, st.fill + 1)),
                         st_m.eq(st_m + 1)]
            with m.If(st_ox != g.ow_last):
                m.d.sync += [st_ox.eq(st_ox + 1), st_x0.eq(st_x0 + reg(Reg.STRIDE)),
                             st_base.eq(st_base + g.s_cw)]
            with m.Elif(st_oy != g.oh_last):
                m.d.sync += [st_ox.eq(0), st_oy.eq(st_oy + 1), st_x0.eq(neg_pad),
                             st_y0.eq(st_y0 + reg(Reg.STRIDE)),
                             st_rowbase.eq(st_rowbase + g.s_row),
                             st_base.eq(st_rowbase + g.s_row)]
            with m.Else():
                m.d.sync += [st_ox.eq(0), st_oy.eq(0), st_x0.eq(neg_pad), st_y0.eq(neg_pad),
                             st_imgbase.eq(st_imgbase + g.in_img),
                             st_rowbase.eq(st_imgbase + g.in_img - g.p_off),
                             st_base.eq(st_imgbase + g.in_img - g.p_off)]
        with m.If(st.swap):
            m.d.sync += st.cur.eq(nxt)
        base0 = reg(Reg.IN_ADDR) - g.p_off
        st.on_start = [st_oy.eq(0), st_ox.eq(0), st_m.eq(0), st.fill.eq(0),
                       st_y0.eq(neg_pad), st_x0.eq(neg_pad),
                       st_imgbase.eq(reg(Reg.IN_ADDR)), st_rowbase.eq(base0),
                       st_base.eq(base0)]
        st.on_done = []
        return st

    # ---- im2col walker ---------------------------------------------------------------------
    def _im2col_walker(self, m, g, run, st):
        """Issues one operand beat per cycle while the operand FIFO has room: for each block
        of R output pixels, for each column block nb, K beats (kh, kw, cin), cin fastest.
        Tracks the tap's word offset (``koff``), the lane (``cin % C``) and the WGT address."""
        R, C = self.rows, self.cols
        reg = self._reg
        w = SimpleNamespace()
        w.active = Signal()              # a block is being issued
        more = Signal()                  # more blocks after the current one
        mbase = Signal(32)               # first pixel of the current block
        nb = Signal(SIZE_BITS)
        k = Signal(32)
        cin = Signal(SIZE_BITS)
        w.lane = Signal(range(C))
        w.kh = Signal(SIZE_BITS)
        w.kw = Signal(SIZE_BITS)
        w.koff = Signal(32)              # word offset of the current tap
        kwoff = Signal(32)               # word offset of (kh, kw, cin=0)
        khoff = Signal(32)               # word offset of (kh, kw=0, cin=0)
        w.waddr = Signal(32)
        # Operands issued and not yet taken by the array (in the operand pipeline or its
        # FIFO), counted in a register rather than summed from the FIFO level and the stage
        # valids (timing); the operand pipeline decrements it.
        w.inflight = Signal(range(OPERAND_FIFO_DEPTH + 1))
        w.issue = Signal()
        m.d.comb += w.issue.eq(w.active & (w.inflight < OPERAND_FIFO_DEPTH))
        # k == K - 1 and nb == nb_count - 1, kept in registers one issue ahead.
        w.k_last = Signal()
        nb_at_last = Signal()
        blk_last = w.k_last & nb_at_last

        with m.If(w.issue):
            m.d.sync += [k.eq(k + 1), w.waddr.eq(w.waddr + 1)]
            with m.If(cin != g.cin_last):
                m.d.sync += cin.eq(cin + 1)
                with m.If(w.lane == C - 1):
                    m.d.sync += [w.lane.eq(0), w.koff.eq(w.koff + 1)]
                with m.Else():
                    m.d.sync += w.lane.eq(w.lane + 1)
            with m.Else():
                m.d.sync += [cin.eq(0), w.lane.eq(0)]
                with m.If(w.kw != g.kw_last):
                    m.d.sync += [w.kw.eq(w.kw + 1), kwoff.eq(kwoff + reg(Reg.IN_CW)),
                                 w.koff.eq(kwoff + reg(Reg.IN_CW))]
                with m.Else():
                    m.d.sync += [w.kw.eq(0), khoff.eq(khoff + g.in_row),
                                 kwoff.eq(khoff + g.in_row), w.koff.eq(khoff + g.in_row)]
                    with m.If(w.kh != g.kh_last):
                        m.d.sync += w.kh.eq(w.kh + 1)
                    with m.Else():
                        m.d.sync += [w.kh.eq(0), khoff.eq(0), kwoff.eq(0), w.koff.eq(0)]
            with m.If(w.k_last):
                m.d.sync += [k.eq(0), nb.eq(nb + 1), w.k_last.eq(g.k_is_1),
                             nb_at_last.eq(nb == g.nb_less2)]
            with m.Else():
                m.d.sync += w.k_last.eq(k == g.k_less2)
            with m.If(blk_last):
                m.d.sync += [nb.eq(0), nb_at_last.eq(g.nb_is_1), w.waddr.eq(reg(Reg.W_ADDR)),
                             mbase.eq(mbase + R)]
                with m.If(more & (st.fill == R)):
                    m.d.comb += st.swap.eq(1)
                    m.d.sync += more.eq(mbase < g.m_less_2r)
                with m.Else():
                    m.d.sync += w.active.eq(0)
        with m.If(run & ~w.active & more & (st.fill == R)):
            # Start the next block (after a wait for the stepper, or the very first one).
            m.d.comb += st.swap.eq(1)
            m.d.sync += [w.active.eq(1), more.eq(mbase < g.m_less_r)]
        w.on_start = [w.active.eq(0), more.eq(1), mbase.eq(0), nb.eq(0),
                      k.eq(0), w.k_last.eq(g.k_is_1), nb_at_last.eq(g.nb_is_1),
                      cin.eq(0), w.lane.eq(0), w.kh.eq(0), w.kw.eq(0),
                      w.koff.eq(0), kwoff.eq(0), khoff.eq(0), w.waddr.eq(reg(Reg.W_ADDR))]
        w.on_done = [w.active.eq(0), more.eq(0)]
        return w

    # ---- operand pipeline ------------------------------------------------------------------
    def _operand_pipeline(self, m, g, st, w):
        """Four register stages from an issued beat to the array's operand FIFO: tap
        coordinates and word addresses; the in-range check (taps in the padding read
        nothing and give ``IN_ZP``); the two cycles of the registered block RAM reads of ACT
        (row i reads copy i) and WGT; the lane select."""
        R, C = self.rows, self.cols
        reg, s8 = self._reg, self._s8
        arr = self.array
        opfifo = m.submodules.opfifo = SyncFIFO(width=8 * R + 8 * C + 1,
                                                depth=OPERAND_FIFO_DEPTH)
        m.d.sync += w.inflight.eq(w.inflight + w.issue - (opfifo.r_en & opfifo.r_rdy))
        cur = st.cur

        # Stage 0: tap coordinates and unchecked word addresses (one adder each).
        s0_valid = Signal()
        s0_y = Signal(data.ArrayLayout(signed(SIZE_BITS + 3), R))
        s0_x = Signal(data.ArrayLayout(signed(SIZE_BITS + 3), R))
        s0_in = Signal(R)
        s0_addr = Signal(data.ArrayLayout(signed(35), R))
        s0_lane = Signal(range(C))
        s0_last = Signal()
        s0_waddr = Signal(addr_bits(self.wgt_depth))
        m.d.sync += s0_valid.eq(w.issue)
        with m.If(w.issue):
            m.d.sync += [s0_lane.eq(w.lane), s0_last.eq(w.k_last), s0_waddr.eq(w.waddr)]
            for i in range(R):
                m.d.sync += [s0_y[i].eq(cur[i].y0 + w.kh), s0_x[i].eq(cur[i].x0 + w.kw),
                             s0_in[i].eq(cur[i].valid),
                             s0_addr[i].eq(cur[i].base + w.koff)]

        # Stage 1: in-range check (taps in the padding read nothing) -> memory addresses.
        s1_valid = Signal()
        s1_addr = Signal(data.ArrayLayout(unsigned(addr_bits(self.act_depth)), R))
        s1_tap = Signal(R)
        s1_lane = Signal(range(C))
        s1_last = Signal()
        s1_waddr = Signal(addr_bits(self.wgt_depth))
        m.d.sync += [s1_valid.eq(s0_valid), s1_lane.eq(s0_lane), s1_last.eq(s0_last),
                     s1_waddr.eq(s0_waddr)]
        for i in range(R):
            y, x = s0_y[i], s0_x[i]
            tap = (s0_in[i] & (y >= 0) & (y < reg(Reg.IN_H)) & (x >= 0) & (x < reg(Reg.IN_W)))
            m.d.sync += [s1_tap[i].eq(tap), s1_addr[i].eq(Mux(tap, s0_addr[i], 0))]
        m.d.comb += [self.act_rd_addr.eq(s1_addr), self.wgt_rd_addr.eq(s1_waddr)]

        # Stage 2: the memories read (ACT and WGT are block RAMs with a registered read,
        # hw.ram.RAM_LATENCY = 2 cycles: their data arrives in stage 3).
        s2_valid = Signal()
        s2_tap = Signal(R)
        s2_lane = Signal(range(C))
        s2_last = Signal()
        m.d.sync += [s2_valid.eq(s1_valid), s2_tap.eq(s1_tap), s2_lane.eq(s1_lane),
                     s2_last.eq(s1_last)]
        s3_valid = Signal()
        s3_tap = Signal(R)
        s3_lane = Signal(range(C))
        s3_last = Signal()
        m.d.sync += [s3_valid.eq(s2_valid), s3_tap.eq(s2_tap), s3_lane.eq(s2_lane),
                     s3_last.eq(s2_last)]

        # Stage 3: lane select -> operand FIFO.
        a_vals = []
        for i in range(R):
            word = data.ArrayLayout(signed(8), C)(self.act_rd_data[i])
            a_vals.append(Mux(s3_tap[i], word[s3_lane], s8(Reg.IN_ZP)))
        m.d.comb += [
            opfifo.w_en.eq(s3_valid),
            opfifo.w_data.eq(Cat(*a_vals, self.wgt_rd_data, s3_last)),
            arr.operands.payload.as_value().eq(opfifo.r_data),
            arr.operands.valid.eq(opfifo.r_rdy),
            opfifo.r_en.eq(arr.operands.ready),
            arr.bias.valid.eq(1),
            arr.bias.payload.as_value().eq(0),
        ]

    # ---- parameters --------------------------------------------------------------------------
    def _param_prefetch(self, m, g):
        """One PARAM entry per tile (bias, M0, shift of the tile's column block), read ahead
        into a small FIFO in front of the requantizer."""
        R, C = self.rows, self.cols
        reg, s8 = self._reg, self._s8
        rq = self.requant
        p = SimpleNamespace()
        active = Signal()
        nb = Signal(SIZE_BITS)
        mbase = Signal(32)
        inflight = Signal(RAM_LATENCY)    # PARAM is a block RAM with a 2-cycle read
        entry_layout = param_entry_layout(C)
        pfifo = m.submodules.pfifo = SyncFIFOBuffered(width=entry_layout.size,
                                                      depth=PARAM_FIFO_DEPTH)
        p_issue = active & (pfifo.level + sum(inflight) < PARAM_FIFO_DEPTH - 1)
        m.d.sync += inflight.eq(Cat(p_issue, inflight[:-1]))
        m.d.comb += [self.prm_rd_addr.eq(reg(Reg.P_ADDR) + nb),
                     pfifo.w_en.eq(inflight[-1]), pfifo.w_data.eq(self.prm_rd_data)]
        entry = entry_layout(pfifo.r_data)
        with m.If(p_issue):
            with m.If(nb == g.nb_last):
                m.d.sync += [nb.eq(0), mbase.eq(mbase + R)]
                with m.If(mbase >= g.m_less_r):
                    m.d.sync += active.eq(0)
            with m.Else():
                m.d.sync += nb.eq(nb + 1)
        m.d.comb += [
            rq.params.payload.bias.eq(entry.bias),
            rq.params.payload.m0.eq(entry.m0),
            rq.params.payload.shift.eq(entry.shift),
            rq.params.payload.zero_point.eq(s8(Reg.OUT_ZP)),
            rq.params.payload.qmin.eq(s8(Reg.QMIN)),
            rq.params.payload.qmax.eq(s8(Reg.QMAX)),
            rq.params.valid.eq(pfifo.r_rdy),
            pfifo.r_en.eq(rq.params.ready),
        ]
        wiring.connect(m, self.array.result, rq.acc)
        p.on_start = [active.eq(1), nb.eq(0), mbase.eq(0)]
        p.on_done = [active.eq(0)]
        return p

    # ---- writeback ---------------------------------------------------------------------------
    def _writeback(self, m, g):
        """Requantized rows (through the activation table when USE_LUT) to ACT: row i of the
        tile of column block nb goes to ``OUT_ADDR + m*OUT_CW + nb``; rows past M (padding of
        the last block) are dropped. ``finished_d`` rises once the last write left."""
        R, C = self.rows, self.cols
        reg = self._reg
        rq, lut = self.requant, self.lut
        b = SimpleNamespace()
        use_lut = reg(Reg.USE_LUT)[0]
        wb_valid = Signal()
        wb_data = Signal(8 * C)
        wb_last = Signal()
        with m.If(use_lut):
            m.d.comb += [lut.input.payload.eq(rq.result.payload),
                         lut.input.valid.eq(rq.result.valid),
                         rq.result.ready.eq(lut.input.ready),
                         lut.result.ready.eq(1),
                         wb_valid.eq(lut.result.valid),
                         wb_data.eq(lut.result.payload.data.as_value()),
                         wb_last.eq(lut.result.payload.last)]
        with m.Else():
            m.d.comb += [rq.result.ready.eq(1),
                         wb_valid.eq(rq.result.valid),
                         wb_data.eq(rq.result.payload.data.as_value()),
                         wb_last.eq(rq.result.payload.last)]

        active = Signal()
        px = Signal(32)                   # output pixel of the current row
        mbase = Signal(32)
        nb = Signal(SIZE_BITS)
        addr = Signal(34)                 # address of the current row
        tile = Signal(34)                 # address of row 0 of the current tile
        blk = Signal(34)                  # address of row 0, column block 0, current block
        # The write port is registered: its enable, address and data fan out to every ACT
        # copy. `done` waits until the last write has left the engine (finished_d).
        m.d.sync += [self.act_wr_en.eq(wb_valid & active & (px < g.M)),
                     self.act_wr_addr.eq(addr), self.act_wr_data.eq(wb_data)]
        finished = Signal()
        b.finished_d = Signal()
        m.d.sync += b.finished_d.eq(finished)
        with m.If(wb_valid & active):
            m.d.sync += [px.eq(px + 1), addr.eq(addr + reg(Reg.OUT_CW))]
            with m.If(wb_last):
                with m.If(nb == g.nb_last):
                    m.d.sync += [nb.eq(0), mbase.eq(mbase + R), px.eq(mbase + R),
                                 blk.eq(blk + g.r_ocw), tile.eq(blk + g.r_ocw),
                                 addr.eq(blk + g.r_ocw)]
                    with m.If(mbase >= g.m_less_r):
                        m.d.comb += finished.eq(1)
                with m.Else():
                    m.d.sync += [nb.eq(nb + 1), px.eq(mbase),
                                 tile.eq(tile + 1), addr.eq(tile + 1)]
        out = reg(Reg.OUT_ADDR)
        b.on_start = [active.eq(1), px.eq(0), mbase.eq(0), nb.eq(0),
                      addr.eq(out), tile.eq(out), blk.eq(out)]
        b.on_done = [active.eq(0)]
        return b

    # ---- control -----------------------------------------------------------------------------
    def _control(self, m, g, sizes, checks, run, parts, finished):
        """The shared engine FSM (:func:`hw.sizes.engine_fsm`): start-up checks, then RUN
        until the last write; every part's registers start from ``on_start``."""
        sizes_ok, registered_checks = checks

        def enter_run():
            m.d.sync += run.eq(1)
            for part in parts:
                m.d.sync += part.on_start

        def run_state():
            with m.If(finished):
                m.d.sync += run.eq(0)
                for part in parts:
                    m.d.sync += part.on_done
                m.d.comb += [self.done.eq(1), self.error.eq(Error.NONE)]
                m.next = "IDLE"

        engine_fsm(m, self, sizes, sizes_ok, registered_checks, enter_run, run_state)
