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
        R, C = self.rows, self.cols
        arr = m.submodules.array = self.array
        rq = m.submodules.requant = self.requant
        lut = m.submodules.lut = self.lut
        wiring.connect(m, wiring.flipped(self.lut_table), lut.table)

        cfg = self.cfg
        def reg(r):
            return cfg[r]

        def s8(r):                      # int8 field of a register (low byte, sign-extended)
            return cfg[r][:8].as_signed()

        # ---- Setup: derived sizes through one shared 32 x 16 multiplier ----------------
        khkw = Signal(32)
        K = Signal(32)
        in_row = Signal(32)      # words per input image row
        in_img = Signal(32)      # words per input image
        hw = Signal(32)
        M = Signal(32)
        in_total = Signal(32)
        out_total = Signal(32)
        w_total = Signal(32)
        s_cw = Signal(32)        # stride * IN_CW: next pixel along x
        s_row = Signal(32)       # stride * in_row: next output row
        p_off = Signal(32)       # pad * in_row + pad * IN_CW: offset of the top-left tap
        r_ocw = Signal(32)       # R * OUT_CW: words per block of R output pixels
        m.d.comb += r_ocw.eq(reg(Reg.OUT_CW) * R)
        # Column blocks computed by this instruction (OUT_NB, default all OUT_CW of them).
        nb_count = Signal(32)
        m.d.comb += nb_count.eq(Mux(reg(Reg.OUT_NB) == 0, reg(Reg.OUT_CW), reg(Reg.OUT_NB)))

        sizes = ProductSteps([  # (destination, a, b), issued as scheduled by step_schedule
            (khkw, reg(Reg.KH), reg(Reg.KW)),
            (K, khkw, reg(Reg.CIN)),
            (in_row, reg(Reg.IN_W), reg(Reg.IN_CW)),
            (in_img, in_row, reg(Reg.IN_H)),
            (hw, reg(Reg.OUT_H), reg(Reg.OUT_W)),
            (M, hw, reg(Reg.BATCH)),
            (in_total, in_img, reg(Reg.BATCH)),
            (out_total, M, reg(Reg.OUT_CW)),
            (w_total, K, nb_count),
            (s_cw, reg(Reg.IN_CW), reg(Reg.STRIDE)),
            (s_row, in_row, reg(Reg.STRIDE)),
            (p_off, in_row + reg(Reg.IN_CW), reg(Reg.PAD)),
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
        in_end = Signal(34)
        out_end = Signal(34)
        out_a = Signal(34)
        out_b = Signal(34)
        w_end = Signal(34)
        p_end = Signal(34)
        m.d.sync += [in_end.eq(reg(Reg.IN_ADDR) + in_total),
                     out_a.eq(reg(Reg.OUT_ADDR) + nb_count),
                     out_b.eq(out_total - reg(Reg.OUT_CW)),
                     out_end.eq(out_a + out_b),
                     w_end.eq(reg(Reg.W_ADDR) + w_total),
                     p_end.eq(reg(Reg.P_ADDR) + nb_count)]
        addr_ok = ((in_end <= self.act_depth) & (out_end <= self.act_depth) &
                   (w_end <= self.wgt_depth) & (p_end <= self.param_depth) &
                   ((out_end <= reg(Reg.IN_ADDR)) | (in_end <= reg(Reg.OUT_ADDR))))

        # ---- Run-time state ---------------------------------------------------------------
        run = Signal()           # walkers active
        m_total = M
        # Bounds the walkers compare against, registered: their inputs (the configuration
        # and the SETUP products) are stable from SETTLE on, so the walkers compare a counter
        # with a register instead of adding first (for timing).
        nb_last = Signal(SIZE_BITS)       # nb_count - 1
        cin_last = Signal(SIZE_BITS)
        kw_last = Signal(SIZE_BITS)
        kh_last = Signal(SIZE_BITS)
        ow_last = Signal(SIZE_BITS)
        oh_last = Signal(SIZE_BITS)
        m_less_r = Signal(signed(34))     # M - R: a block starting past it is the last
        m_less_2r = Signal(signed(34))    # M - 2R
        k_is_1 = Signal()
        k_less2 = Signal(32)              # K - 2
        nb_is_1 = Signal()
        nb_less2 = Signal(SIZE_BITS)      # nb_count - 2
        m.d.sync += [k_is_1.eq(K == 1), k_less2.eq(K - 2),
                     nb_is_1.eq(nb_count == 1), nb_less2.eq(nb_count - 2)]
        m.d.sync += [nb_last.eq(nb_count - 1),
                     cin_last.eq(reg(Reg.CIN) - 1), kw_last.eq(reg(Reg.KW) - 1),
                     kh_last.eq(reg(Reg.KH) - 1), ow_last.eq(reg(Reg.OUT_W) - 1),
                     oh_last.eq(reg(Reg.OUT_H) - 1),
                     m_less_r.eq(m_total - R), m_less_2r.eq(m_total - 2 * R)]

        # Pixel stepper: produces consecutive output pixels (raster order, image by image).
        st_oy = Signal(SIZE_BITS)
        st_ox = Signal(SIZE_BITS)
        st_m = Signal(32)
        st_y0 = Signal(signed(SIZE_BITS + 2))
        st_x0 = Signal(signed(SIZE_BITS + 2))
        st_base = Signal(signed(34))      # word address of the (possibly padded) top-left tap
        st_rowbase = Signal(signed(34))
        st_imgbase = Signal(signed(34))
        fill = Signal(range(R + 1))       # pixels already in `nxt`
        row_layout = data.StructLayout({"base": signed(34), "y0": signed(SIZE_BITS + 2),
                                        "x0": signed(SIZE_BITS + 2), "valid": 1})
        nxt = Signal(data.ArrayLayout(row_layout, R))
        cur = Signal(data.ArrayLayout(row_layout, R))
        swap = Signal()                   # cur <- nxt, the stepper starts the next block

        neg_pad = -reg(Reg.PAD).as_signed()
        # On a swap the stepper keeps going: `cur` takes the old `nxt` while `nxt` shifts.
        with m.If(run & ((fill != R) | swap)):
            new = Signal(row_layout)
            m.d.comb += [new.base.eq(st_base), new.y0.eq(st_y0), new.x0.eq(st_x0),
                         new.valid.eq(st_m < m_total)]
            for i in range(R - 1):
                m.d.sync += nxt[i].eq(nxt[i + 1])
            m.d.sync += [nxt[R - 1].eq(new), fill.eq(Mux(swap, 1, fill + 1)),
                         st_m.eq(st_m + 1)]
            with m.If(st_ox != ow_last):
                m.d.sync += [st_ox.eq(st_ox + 1), st_x0.eq(st_x0 + reg(Reg.STRIDE)),
                             st_base.eq(st_base + s_cw)]
            with m.Elif(st_oy != oh_last):
                m.d.sync += [st_ox.eq(0), st_oy.eq(st_oy + 1), st_x0.eq(neg_pad),
                             st_y0.eq(st_y0 + reg(Reg.STRIDE)),
                             st_rowbase.eq(st_rowbase + s_row), st_base.eq(st_rowbase + s_row)]
            with m.Else():
                m.d.sync += [st_ox.eq(0), st_oy.eq(0), st_x0.eq(neg_pad), st_y0.eq(neg_pad),
                             st_imgbase.eq(st_imgbase + in_img),
                             st_rowbase.eq(st_imgbase + in_img - p_off),
                             st_base.eq(st_imgbase + in_img - p_off)]
        with m.If(swap):
            m.d.sync += cur.eq(nxt)

        # Issue walker.
        iw_active = Signal()              # a block is being issued
        iw_more = Signal()                # more blocks after the current one
        iw_mbase = Signal(32)             # first pixel of the current block
        iw_nb = Signal(SIZE_BITS)
        iw_k = Signal(32)
        iw_cin = Signal(SIZE_BITS)
        iw_lane = Signal(range(C))
        iw_kh = Signal(SIZE_BITS)
        iw_kw = Signal(SIZE_BITS)
        iw_koff = Signal(32)              # word offset of the current tap
        iw_kwoff = Signal(32)             # word offset of (kh, kw, cin=0)
        iw_khoff = Signal(32)             # word offset of (kh, kw=0, cin=0)
        iw_waddr = Signal(32)

        s0_valid = Signal()
        s1_valid = Signal()
        s2_valid = Signal()
        s3_valid = Signal()
        opfifo = m.submodules.opfifo = SyncFIFO(width=8 * R + 8 * C + 1,
                                                depth=OPERAND_FIFO_DEPTH)
        # Operands issued and not yet taken by the array (in stages 0-3 or the FIFO), counted
        # in a register rather than summed from the FIFO level and the stage valids (timing).
        inflight = Signal(range(OPERAND_FIFO_DEPTH + 1))
        issue = Signal()
        m.d.comb += issue.eq(iw_active & (inflight < OPERAND_FIFO_DEPTH))
        m.d.sync += inflight.eq(inflight + issue - (opfifo.r_en & opfifo.r_rdy))
        # iw_k == K - 1 and iw_nb == nb_count - 1, kept in registers one issue ahead.
        k_last = Signal()
        nb_at_last = Signal()
        blk_last = k_last & nb_at_last

        with m.If(issue):
            m.d.sync += [iw_k.eq(iw_k + 1), iw_waddr.eq(iw_waddr + 1)]
            # (kh, kw, cin) counters; cin fastest.
            with m.If(iw_cin != cin_last):
                m.d.sync += iw_cin.eq(iw_cin + 1)
                with m.If(iw_lane == C - 1):
                    m.d.sync += [iw_lane.eq(0), iw_koff.eq(iw_koff + 1)]
                with m.Else():
                    m.d.sync += iw_lane.eq(iw_lane + 1)
            with m.Else():
                m.d.sync += [iw_cin.eq(0), iw_lane.eq(0)]
                with m.If(iw_kw != kw_last):
                    m.d.sync += [iw_kw.eq(iw_kw + 1), iw_kwoff.eq(iw_kwoff + reg(Reg.IN_CW)),
                                 iw_koff.eq(iw_kwoff + reg(Reg.IN_CW))]
                with m.Else():
                    m.d.sync += [iw_kw.eq(0), iw_khoff.eq(iw_khoff + in_row),
                                 iw_kwoff.eq(iw_khoff + in_row), iw_koff.eq(iw_khoff + in_row)]
                    with m.If(iw_kh != kh_last):
                        m.d.sync += iw_kh.eq(iw_kh + 1)
                    with m.Else():
                        m.d.sync += [iw_kh.eq(0), iw_khoff.eq(0), iw_kwoff.eq(0),
                                     iw_koff.eq(0)]
            with m.If(k_last):
                m.d.sync += [iw_k.eq(0), iw_nb.eq(iw_nb + 1), k_last.eq(k_is_1),
                             nb_at_last.eq(iw_nb == nb_less2)]
            with m.Else():
                m.d.sync += k_last.eq(iw_k == k_less2)
            with m.If(blk_last):
                m.d.sync += [iw_nb.eq(0), nb_at_last.eq(nb_is_1), iw_waddr.eq(reg(Reg.W_ADDR)),
                             iw_mbase.eq(iw_mbase + R)]
                with m.If(iw_more & (fill == R)):
                    m.d.comb += swap.eq(1)
                    m.d.sync += iw_more.eq(iw_mbase < m_less_2r)
                with m.Else():
                    m.d.sync += iw_active.eq(0)
        with m.If(run & ~iw_active & iw_more & (fill == R)):
            # Start the next block (after a wait for the stepper, or the very first one).
            m.d.comb += swap.eq(1)
            m.d.sync += [iw_active.eq(1), iw_more.eq(iw_mbase < m_less_r)]

        # Stage 0: tap coordinates and unchecked word addresses (one adder each).
        s0_y = Signal(data.ArrayLayout(signed(SIZE_BITS + 3), R))
        s0_x = Signal(data.ArrayLayout(signed(SIZE_BITS + 3), R))
        s0_in = Signal(R)
        s0_addr = Signal(data.ArrayLayout(signed(35), R))
        s0_lane = Signal(range(C))
        s0_last = Signal()
        s0_waddr = Signal(addr_bits(self.wgt_depth))
        m.d.sync += s0_valid.eq(issue)
        with m.If(issue):
            m.d.sync += [s0_lane.eq(iw_lane), s0_last.eq(k_last), s0_waddr.eq(iw_waddr)]
            for i in range(R):
                m.d.sync += [s0_y[i].eq(cur[i].y0 + iw_kh), s0_x[i].eq(cur[i].x0 + iw_kw),
                             s0_in[i].eq(cur[i].valid),
                             s0_addr[i].eq(cur[i].base + iw_koff)]

        # Stage 1: in-range check (taps in the padding read nothing) -> memory addresses.
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
        s2_tap = Signal(R)
        s2_lane = Signal(range(C))
        s2_last = Signal()
        m.d.sync += [s2_valid.eq(s1_valid), s2_tap.eq(s1_tap), s2_lane.eq(s1_lane),
                     s2_last.eq(s1_last)]
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

        # ---- Parameters: one PARAM entry per tile, prefetched -----------------------------
        pw_active = Signal()
        pw_nb = Signal(SIZE_BITS)
        pw_mbase = Signal(32)
        pw_inflight = Signal(RAM_LATENCY)  # PARAM is a block RAM with a 2-cycle read
        entry_layout = param_entry_layout(C)
        pfifo = m.submodules.pfifo = SyncFIFOBuffered(width=entry_layout.size,
                                                      depth=PARAM_FIFO_DEPTH)
        p_issue = pw_active & (pfifo.level + sum(pw_inflight) < PARAM_FIFO_DEPTH - 1)
        m.d.sync += pw_inflight.eq(Cat(p_issue, pw_inflight[:-1]))
        m.d.comb += [self.prm_rd_addr.eq(reg(Reg.P_ADDR) + pw_nb),
                     pfifo.w_en.eq(pw_inflight[-1]), pfifo.w_data.eq(self.prm_rd_data)]
        entry = entry_layout(pfifo.r_data)
        with m.If(p_issue):
            with m.If(pw_nb == nb_last):
                m.d.sync += [pw_nb.eq(0), pw_mbase.eq(pw_mbase + R)]
                with m.If(pw_mbase >= m_less_r):
                    m.d.sync += pw_active.eq(0)
            with m.Else():
                m.d.sync += pw_nb.eq(pw_nb + 1)
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
        wiring.connect(m, arr.result, rq.acc)

        # ---- Activation table (optional) and writeback -------------------------------------
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

        wb_active = Signal()
        wb_m = Signal(32)                 # output pixel of the current row
        wb_mbase = Signal(32)
        wb_nb = Signal(SIZE_BITS)
        wb_addr = Signal(34)              # address of the current row
        wb_tile = Signal(34)              # address of row 0 of the current tile
        wb_blk = Signal(34)               # address of row 0, column block 0, current block
        # The write port is registered: its enable, address and data fan out to every ACT
        # copy. `done` waits until the last write has left the engine (finished_d).
        m.d.sync += [self.act_wr_en.eq(wb_valid & wb_active & (wb_m < m_total)),
                     self.act_wr_addr.eq(wb_addr), self.act_wr_data.eq(wb_data)]
        finished = Signal()
        finished_d = Signal()
        m.d.sync += finished_d.eq(finished)
        with m.If(wb_valid & wb_active):
            m.d.sync += [wb_m.eq(wb_m + 1), wb_addr.eq(wb_addr + reg(Reg.OUT_CW))]
            with m.If(wb_last):
                with m.If(wb_nb == nb_last):
                    m.d.sync += [wb_nb.eq(0), wb_mbase.eq(wb_mbase + R), wb_m.eq(wb_mbase + R),
                                 wb_blk.eq(wb_blk + r_ocw), wb_tile.eq(wb_blk + r_ocw),
                                 wb_addr.eq(wb_blk + r_ocw)]
                    with m.If(wb_mbase >= m_less_r):
                        m.d.comb += finished.eq(1)
                with m.Else():
                    m.d.sync += [wb_nb.eq(wb_nb + 1), wb_m.eq(wb_mbase),
                                 wb_tile.eq(wb_tile + 1), wb_addr.eq(wb_tile + 1)]

        # ---- Control FSM ------------------------------------------------------------------
        def enter_run():
            base0 = reg(Reg.IN_ADDR) - p_off
            m.d.sync += [
                run.eq(1),
                st_oy.eq(0), st_ox.eq(0), st_m.eq(0), fill.eq(0),
                st_y0.eq(neg_pad), st_x0.eq(neg_pad),
                st_imgbase.eq(reg(Reg.IN_ADDR)), st_rowbase.eq(base0),
                st_base.eq(base0),
                iw_active.eq(0), iw_more.eq(1), iw_mbase.eq(0), iw_nb.eq(0),
                iw_k.eq(0), k_last.eq(k_is_1), nb_at_last.eq(nb_is_1),
                iw_cin.eq(0), iw_lane.eq(0), iw_kh.eq(0), iw_kw.eq(0),
                iw_koff.eq(0), iw_kwoff.eq(0), iw_khoff.eq(0),
                iw_waddr.eq(reg(Reg.W_ADDR)),
                pw_active.eq(1), pw_nb.eq(0), pw_mbase.eq(0),
                wb_active.eq(1), wb_m.eq(0), wb_mbase.eq(0), wb_nb.eq(0),
                wb_addr.eq(reg(Reg.OUT_ADDR)), wb_tile.eq(reg(Reg.OUT_ADDR)),
                wb_blk.eq(reg(Reg.OUT_ADDR)),
            ]

        def run_state():
            with m.If(finished_d):
                m.d.sync += [run.eq(0), wb_active.eq(0), iw_active.eq(0), iw_more.eq(0),
                             pw_active.eq(0)]
                m.d.comb += [self.done.eq(1), self.error.eq(Error.NONE)]
                m.next = "IDLE"

        engine_fsm(m, self, sizes, sizes_ok & int8_ok & other_ok,
                   [(K <= MAX_K, Error.CONFIG), (addr_ok, Error.ADDRESS)], enter_run, run_state)
        return m
