"""CONV/dense execution engine: im2col addressing, the systolic array, requantization and the
activation table, with results written back to the activation memory.

One CONV instruction computes ``out = act(requant(im2col(in) @ W + bias))`` for a batch of
NHWC images (dense layers are convolutions whose kernel covers the whole input map). The
GEMM has M = BATCH * OUT_H * OUT_W rows (output pixels, in raster order), K = KH * KW * CIN
(ordered kh, kw, cin) and N = 8 * OUT_NB columns, run as output tiles of R pixels x C
channels: for each block of R pixels, for each column block nb, K operand beats. In
depthwise mode (CONV_MODE = 1) output channel c comes from input channel c only: K = KH*KW
beats (kh, kw) per tile, and row i carries the whole input word of its tap, column j taking
lane j (:class:`hw.systolic.SystolicArray` with word operands), so depthwise layers use every
PE as a plain convolution does.

K-split mode (CONV_MODE = 2, where R == C and C is a power of two: :func:`ksplit_supported`)
is for layers with few output pixels, above all dense layers at batch 1, which the plain
mapping runs on one row of R: a tile is one output pixel's column block, row i computes its
output channel nb*C + i and column j the input lanes j of every input word. Each beat reads
one input word (the tap's ceil(CIN / C) words in turn) as the ``b`` operand, lane j to
column j, and one WGT word per row as row i's ``a`` word (WGT is R banks: row i reads bank i,
all at one row), so all R x C PEs multiply. :class:`hw.row_sum.RowSum` adds each result
row's C partial sums before the requantizer, which sees one row per tile. Its WGT layout is
R words per beat (:func:`wgt_words_per_block`), from a W_ADDR that is a multiple of R.

Tensors in ACT have a pixel pitch (IN_CW / OUT_CW words, a power of two), a row pitch and an
image pitch (IN_ROW/IN_IMG, OUT_ROW/OUT_IMG, words); see :mod:`hw.act_memory`.

Contract
--------
``start`` (one cycle, while idle) latches nothing: the configuration registers ``cfg`` must
stay stable until ``done``. The engine first checks the configuration (sizes >= 1 and < 2**16,
pitches that are powers of two or their multiples, K <= MAX_K, every region inside its
memory, input and output regions disjoint, int8 fields in range, a layout whose R reads per
beat fall in distinct ACT banks: :func:`layout_ok`) and ends at once with ``error`` =
``Error.CONFIG`` or ``Error.ADDRESS`` if it cannot run, before any memory is read or written.
Otherwise it runs to completion and pulses ``done`` with ``error`` = 0.

Datapath
--------
* *Pixel stepper*: prepares the next block of R output pixels one pixel per cycle (base word
  address, top-left input coordinate, in-range flag) while the current block is issued, so no
  division is needed and block changes cost nothing when a block lasts >= R cycles. It starts
  during the set-up, as soon as the products it needs are known, so the first block is ready
  when the engine starts running.
* *im2col walker*: per beat (kh, kw, cin), row i reads ACT at ``base_i + kh*IN_ROW +
  kw*IN_CW + cin // C`` (depthwise: ``+ nb`` instead of the cin term) and picks lane ``cin %
  C``; taps in the padding read as ``IN_ZP``; WGT supplies row k of the column block. The
  operand pipeline: tap coordinates and addresses; range check; the ACT memory's R parallel
  reads (:data:`hw.act_memory.READ_LATENCY` cycles, WGT read to arrive with them); lane
  select; then an operand FIFO with credits in front of the array.
* *Array*: :class:`hw.systolic.SystolicArray` (its bias input is tied to zero; the bias is
  added by the requantizer).
* *Post-processing*: :class:`hw.requantizer.Requantizer` with the column block's bias, M0 and
  shift from PARAM (prefetched), then optionally :class:`hw.activation.ActivationLUT`.
* *Writeback* (registered): row i of the tile of column block nb goes to the address of
  output pixel ``m`` (OUT_ADDR + image, row and pixel pitches) + nb; rows past M (padding of
  the last block) are dropped. In K-split mode a block is one pixel and its tile one row.

Throughput: one operand beat per cycle, i.e. each tile takes max(K, R) cycles in steady state
(see :mod:`npu.perf` for the exact cycle count).
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from golden.gemm import MAX_K

from .act_memory import READ_LATENCY as ACT_LATENCY
from .act_memory import SHIFT_BITS, banks, conflict_free
from .activation import ActivationLUT, table_layout
from .isa import Error, Reg, param_entry_layout
from .ram import RAM_LATENCY
from .requantizer import Requantizer, acc_layout, params_layout, result_layout
from .row_sum import RowSum
from .sizes import (SIZE_BITS, STEP_LATENCY, ProductSteps, act_write_members, addr_bits,
                    aligned, cfg_layout, engine_fsm, pixel_shift, regions_disjoint,
                    step_schedule, tensor_end)
from .systolic import SystolicArray

__all__ = ["ConvEngine", "cfg_layout", "OPERAND_FIFO_DEPTH", "SETUP_DEPS", "STEPPER_START",
           "OPERAND_STAGES", "layout_ok", "Mode", "ksplit_supported", "wgt_banks",
           "beats_per_tile", "wgt_words_per_block"]


class Mode:
    """CONV_MODE values (documented with the register in :mod:`hw.isa`)."""
    CONV = 0
    DEPTHWISE = 1
    KSPLIT = 2


def ksplit_supported(rows, cols):
    """Whether an R x C configuration has the dense K-split mode: the R row sums of a tile
    fill one output word (R == C) and an input word splits into lanes by a shift (C a power
    of two)."""
    return rows == cols and cols >= 2 and not cols & (cols - 1)


def wgt_banks(rows, cols):
    """WGT is R banks of C-byte words (word w in bank w mod R) where the K-split mode reads a
    word per row each beat; one memory otherwise."""
    return rows if ksplit_supported(rows, cols) else 1


def beats_per_tile(mode, kh, kw, cin, cols):
    """Operand beats of one tile: K = KH * KW * CIN (cin fastest), depthwise KH * KW (a word
    per tap), K-split KH * KW * ceil(CIN / C) (a word per beat)."""
    if mode == Mode.DEPTHWISE:
        return kh * kw
    if mode == Mode.KSPLIT:
        return kh * kw * -(-cin // cols)
    return kh * kw * cin


def wgt_words_per_block(mode, kh, kw, cin, rows, cols):
    """WGT words of one column block of a CONV: a word of C weights per beat; in K-split
    mode R words per beat (output channel i's weights of the beat's input lanes in word
    ``R * beat + i``)."""
    words = beats_per_tile(mode, kh, kw, cin, cols)
    return words * rows if mode == Mode.KSPLIT else words

#: Operand beats in flight between the walker and the array (pipeline stages + FIFO).
OPERAND_FIFO_DEPTH = 16
PARAM_FIFO_DEPTH = 4
#: The setup products (destination names, in issue order) and their dependencies (indices
#: of the steps each reads), for the schedule the hardware and the cycle model share
#: (:func:`hw.sizes.step_schedule`). The pixel stepper's products come first.
SETUP_STEPS = ("hw", "s_cw", "s_row", "p_top", "p_left", "M", "khkw", "K", "in_total",
               "out_total", "last_row", "w_total")
SETUP_DEPS = [(), (), (), (), (), (0,), (), (6,), (), (), (), (7,)]
_ISSUE = dict(zip(SETUP_STEPS, step_schedule(SETUP_DEPS)[0]))
#: SETUP cycle in which the pixel stepper starts: M and p_off = p_top + p_left (one more
#: register) are readable then, and so are s_cw and s_row.
STEPPER_START = max(_ISSUE["M"], _ISSUE["p_top"] + 1, _ISSUE["p_left"] + 1,
                    _ISSUE["s_cw"], _ISSUE["s_row"]) + STEP_LATENCY
#: Register stages from an issued beat to the operand FIFO's write: tap coordinates, range
#: check, the ACT memory's read.
OPERAND_STAGES = 2 + ACT_LATENCY


def layout_ok(rows, stride_y, stride_x, row_pixels, img_pixels, out_h, out_w, batch):
    """Whether the R reads of every beat of a CONV fall in distinct ACT banks (the model of
    the hardware's check): consecutive output pixels m must have top-left input pixels whose
    indices step by STRIDE_X modulo the banks, across row and image wraps too, and R steps of
    STRIDE_X must be distinct modulo the banks."""
    B = banks(rows)
    if rows == 1:
        return True
    ok = conflict_free(stride_x, rows, B)
    if out_h > 1:
        ok &= (stride_y * row_pixels - stride_x * out_w) % B == 0
    if batch > 1:
        ok &= (img_pixels - stride_y * (out_h - 1) * row_pixels - stride_x * out_w) % B == 0
    return ok


class ConvEngine(wiring.Component):
    def __init__(self, rows, cols, act_depth, wgt_depth, param_depth, dsp="generic"):
        self.rows, self.cols = rows, cols
        self.act_depth, self.wgt_depth, self.param_depth = act_depth, wgt_depth, param_depth
        self.dsp = dsp
        self.ksplit = ksplit_supported(rows, cols)
        self.wgt_banks = wgt_banks(rows, cols)
        self.array = SystolicArray(rows, cols, word_operands=True, dsp=dsp)
        self.requant = Requantizer(lanes=cols, dsp=dsp)
        self.lut = ActivationLUT(lanes=cols, dsp=dsp)
        self.row_sum = RowSum(cols) if self.ksplit else None
        aw, pw = addr_bits(act_depth), addr_bits(param_depth)
        ww = addr_bits(-(-wgt_depth // self.wgt_banks))
        super().__init__({
            "cfg": In(cfg_layout()),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(4),
            "act_rd_en": Out(rows),
            "act_rd_addr": Out(data.ArrayLayout(unsigned(aw), rows)),
            "act_rd_shift": Out(SHIFT_BITS),
            "act_rd_data": In(data.ArrayLayout(unsigned(8 * cols), rows)),
            **act_write_members(cols, act_depth),
            # The row every WGT bank reads (word address // banks; K-split: the row).
            "wgt_rd_addr": Out(ww),
            "wgt_rd_data": In(data.ArrayLayout(unsigned(8 * cols), self.wgt_banks)),
            "prm_rd_addr": Out(pw),
            "prm_rd_data": In(param_entry_layout(cols)),
            "lut_table": In(stream.Signature(table_layout())),
            # The requantizer (and activation table) lent to the ELTWISE engine while `lend`
            # is high: its sums in, its int8 results out.
            "lend": In(1),
            "ext_acc": In(stream.Signature(acc_layout(cols))),
            "ext_params": In(stream.Signature(params_layout(cols))),
            "ext_result": Out(stream.Signature(result_layout(cols))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = self.array
        m.submodules.requant = self.requant
        m.submodules.lut = self.lut
        if self.row_sum is not None:
            m.submodules.row_sum = self.row_sum
        wiring.connect(m, wiring.flipped(self.lut_table), self.lut.table)
        geo, sizes, checks = self._setup(m)
        run = Signal()                    # the walkers are active (RUN)
        stepping = Signal()               # the pixel stepper is active (from SETUP on)
        stepper = self._pixel_stepper(m, geo, stepping)
        walker = self._im2col_walker(m, geo, run, stepper)
        self._operand_pipeline(m, geo, stepper, walker)
        params = self._param_prefetch(m, geo)
        wb = self._writeback(m, geo)
        self._control(m, geo, sizes, checks, run, stepping, stepper,
                      [walker, params, wb], wb.finished_d)
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
        configuration, layout and region checks, and registered walker bounds. Returns
        ``(geo, sizes, checks)``: ``geo`` holds the derived values, ``checks`` the
        ``engine_fsm`` size check and its registered ``(ok, error)`` checks."""
        R, C = self.rows, self.cols
        reg, s8 = self._reg, self._s8
        g = SimpleNamespace()
        for name in SETUP_STEPS + ("p_off",):
            setattr(g, name, Signal(32, name=name))
        # The mode, registered (the configuration is stable from the start; SETUP begins
        # two cycles later), so no 32-bit compare sits in front of the walkers.
        g.depthwise, g.ksplit = Signal(), Signal()
        m.d.sync += [g.depthwise.eq(reg(Reg.CONV_MODE) == Mode.DEPTHWISE),
                     g.ksplit.eq((reg(Reg.CONV_MODE) == Mode.KSPLIT) if self.ksplit else 0)]
        g.nb_count = reg(Reg.OUT_NB)
        # K-split: a beat is a whole input word, so a tap has ceil(CIN / C) beats.
        g.cin_words = Signal(SIZE_BITS)
        m.d.sync += g.cin_words.eq((reg(Reg.CIN)[:SIZE_BITS] + (C - 1)) >> (C - 1).bit_length())
        cin_per_tap = Mux(g.depthwise, 1, Mux(g.ksplit, g.cin_words, reg(Reg.CIN)))
        # s_cw: next pixel along x; s_row: next output row; p_off: offset of the top-left tap
        # of output pixel (0, 0) from the input's pixel (0, 0).
        factors = {"hw": (reg(Reg.OUT_H), reg(Reg.OUT_W)),
                   "s_cw": (reg(Reg.IN_CW), reg(Reg.STRIDE_X)),
                   "s_row": (reg(Reg.IN_ROW), reg(Reg.STRIDE_Y)),
                   "p_top": (reg(Reg.IN_ROW), reg(Reg.PAD_TOP)),
                   "p_left": (reg(Reg.IN_CW), reg(Reg.PAD_LEFT)),
                   "M": (g.hw, reg(Reg.BATCH)),
                   "khkw": (reg(Reg.KH), reg(Reg.KW)),
                   "K": (g.khkw, cin_per_tap),
                   "in_total": (reg(Reg.IN_IMG), reg(Reg.BATCH)),
                   "out_total": (reg(Reg.OUT_IMG), reg(Reg.BATCH)),
                   "last_row": (reg(Reg.OUT_ROW), reg(Reg.OUT_H) - 1),
                   "w_total": (g.K, g.nb_count)}
        sizes = ProductSteps([(getattr(g, n), *factors[n]) for n in SETUP_STEPS], SETUP_DEPS,
                             dsp=self.dsp)
        m.d.sync += g.p_off.eq(g.p_top + g.p_left)

        size_regs = [Reg.IN_H, Reg.IN_W, Reg.IN_CW, Reg.CIN, Reg.KH, Reg.KW, Reg.STRIDE_Y,
                     Reg.STRIDE_X, Reg.OUT_H, Reg.OUT_W, Reg.OUT_CW, Reg.OUT_NB, Reg.BATCH]
        sizes_ok = Cat(*[(reg(r) != 0) & (reg(r) < (1 << SIZE_BITS)) for r in size_regs]).all()
        int8_ok = Cat(*[(reg(r) < 128) | (reg(r) >= (1 << 32) - 128)
                        for r in (Reg.IN_ZP, Reg.OUT_ZP, Reg.QMIN, Reg.QMAX)]).all()

        # Pixel pitches are powers of two (the ACT banks interleave whole pixels); row and
        # image pitches are whole pixels; the column blocks stay inside a pixel.
        g.in_shift, in_pow2 = pixel_shift(m, reg(Reg.IN_CW), "in")
        g.out_shift, out_pow2 = pixel_shift(m, reg(Reg.OUT_CW), "out")
        pitch_ok = Signal()
        m.d.sync += pitch_ok.eq(in_pow2 & out_pow2 & Cat(
            aligned(m, reg(Reg.IN_ROW), reg(Reg.IN_CW), "in_row"),
            aligned(m, reg(Reg.IN_IMG), reg(Reg.IN_CW), "in_img"),
            aligned(m, reg(Reg.OUT_ROW), reg(Reg.OUT_CW), "out_row"),
            aligned(m, reg(Reg.OUT_IMG), reg(Reg.OUT_CW), "out_img")).all())
        group_ok = self._group_check(m, g)
        # K-split reads every WGT bank at one row: its blocks start at a multiple of R.
        bank_bits = (self.wgt_banks - 1).bit_length()
        w_aligned = (~g.ksplit | (reg(Reg.W_ADDR)[:bank_bits] == 0)) if bank_bits else 1
        last_mode = Mode.KSPLIT if self.ksplit else Mode.DEPTHWISE
        other_ok = ((reg(Reg.PAD_TOP) < (1 << SIZE_BITS)) &
                    (reg(Reg.PAD_LEFT) < (1 << SIZE_BITS)) & (reg(Reg.USE_LUT) <= 1) &
                    (reg(Reg.CONV_MODE) <= last_mode) & w_aligned & (reg(Reg.ROUNDING) <= 1) &
                    (s8(Reg.QMIN) <= s8(Reg.QMAX)))

        # Region ends, registered (one adder per register; the checks read them after
        # SETTLE). The output region of this CONV ends with its last pixel's column blocks:
        # OUT_ADDR + (BATCH - 1) * OUT_IMG + (OUT_H - 1) * OUT_ROW + (OUT_W - 1) * OUT_CW +
        # OUT_NB.
        in_end, p_end = (Signal(34, name=n) for n in ("in_end", "p_end"))
        w_end = Signal(34 + bank_bits)
        last_col = Signal(32)
        m.d.sync += [in_end.eq(reg(Reg.IN_ADDR) + g.in_total),
                     last_col.eq((reg(Reg.OUT_W) - 1)[:SIZE_BITS] << g.out_shift),
                     w_end.eq(reg(Reg.W_ADDR) + Mux(g.ksplit, g.w_total << bank_bits,
                                                    g.w_total)),
                     p_end.eq(reg(Reg.P_ADDR) + g.nb_count)]
        out_end = tensor_end(m, reg(Reg.OUT_ADDR), g.out_total, reg(Reg.OUT_IMG), g.last_row,
                             last_col, g.nb_count, "out")
        disjoint = regions_disjoint(m, banks(R), reg(Reg.IN_ADDR), in_end, g.in_shift,
                                    reg(Reg.OUT_ADDR), out_end, g.out_shift)
        addr_ok = ((in_end <= self.act_depth) & (out_end <= self.act_depth) &
                   (w_end <= self.wgt_depth) & (p_end <= self.param_depth) & disjoint)
        layout = self._layout_check(m, g) | g.ksplit     # K-split: one read per beat

        # Bounds the walkers compare against, registered: their inputs (the configuration
        # and the SETUP products) are stable from SETTLE on, so the walkers compare a counter
        # with a register instead of adding first (for timing).
        g.nb_last = Signal(SIZE_BITS)         # nb_count - 1
        g.cin_last = Signal(SIZE_BITS)
        g.kw_last = Signal(SIZE_BITS)
        g.kh_last = Signal(SIZE_BITS)
        g.ow_last = Signal(SIZE_BITS)
        g.oh_last = Signal(SIZE_BITS)
        # A block is R output pixels (K-split: one, its tiles' rows being output channels).
        g.blk = Signal(range(R + 1))
        g.m_less_b = Signal(signed(34))       # M - blk: a block starting past it is the last
        g.m_less_2b = Signal(signed(34))      # M - 2 blk
        g.w_start = Signal(32)                # the walker's first WGT address (K-split: row)
        g.k_is_1 = Signal()
        g.k_less2 = Signal(32)                # K - 2
        g.nb_is_1 = Signal()
        g.nb_less2 = Signal(SIZE_BITS)        # nb_count - 2
        m.d.sync += [g.k_is_1.eq(g.K == 1), g.k_less2.eq(g.K - 2),
                     g.nb_is_1.eq(g.nb_count == 1), g.nb_less2.eq(g.nb_count - 2),
                     g.nb_last.eq(g.nb_count - 1),
                     g.cin_last.eq(Mux(g.depthwise, 0,
                                       Mux(g.ksplit, g.cin_words - 1, reg(Reg.CIN) - 1))),
                     g.kw_last.eq(reg(Reg.KW) - 1), g.kh_last.eq(reg(Reg.KH) - 1),
                     g.ow_last.eq(reg(Reg.OUT_W) - 1), g.oh_last.eq(reg(Reg.OUT_H) - 1),
                     g.blk.eq(Mux(g.ksplit, 1, R)),
                     g.m_less_b.eq(g.M - Mux(g.ksplit, 1, R)),
                     g.m_less_2b.eq(g.M - Mux(g.ksplit, 2, 2 * R)),
                     g.w_start.eq(Mux(g.ksplit, reg(Reg.W_ADDR) >> bank_bits,
                                      reg(Reg.W_ADDR)))]
        checks = (sizes_ok & int8_ok & other_ok,
                  [(pitch_ok & group_ok & layout, Error.CONFIG), (g.K <= MAX_K, Error.CONFIG),
                   (addr_ok, Error.ADDRESS)])
        return g, sizes, checks

    def _group_check(self, m, g):
        """Registered in three levels (configuration only): the channels of a beat fit the
        input pixel (CIN <= IN_CW * C; depthwise: the column blocks from IN_ADDR's group
        stay in the pixel) and the column blocks fit the output pixel."""
        reg, C = self._reg, self.cols
        in_mask, out_mask = Signal(32), Signal(32)
        in_group, in_room, out_group = Signal(33), Signal(40), Signal(33)
        ok = Signal()
        m.d.sync += [in_mask.eq(reg(Reg.IN_CW) - 1), out_mask.eq(reg(Reg.OUT_CW) - 1),
                     in_group.eq(Mux(g.depthwise, (reg(Reg.IN_ADDR) & in_mask) + g.nb_count,
                                     reg(Reg.CIN))),
                     in_room.eq(Mux(g.depthwise, reg(Reg.IN_CW), reg(Reg.IN_CW) * C)),
                     out_group.eq((reg(Reg.OUT_ADDR) & out_mask) + g.nb_count),
                     ok.eq((in_group <= in_room) & (out_group <= reg(Reg.OUT_CW)))]
        return ok

    def _layout_check(self, m, g):
        """:func:`layout_ok` in hardware: modulo B = 2**k only the low k bits of each factor
        matter, so the products are k-bit. Registered in two levels (its inputs are the
        configuration, stable from the instruction's start)."""
        R = self.rows
        B = banks(R)
        k = (B - 1).bit_length()
        if R == 1:
            return Const(1)
        reg = self._reg
        wv = Signal(k)          # row pitch in pixels, modulo B
        ip = Signal(k)          # image pitch in pixels, modulo B
        sy, sx = reg(Reg.STRIDE_Y)[:k], reg(Reg.STRIDE_X)[:k]
        oh1 = (reg(Reg.OUT_H) - 1)[:k]
        m.d.sync += [wv.eq(reg(Reg.IN_ROW) >> g.in_shift), ip.eq(reg(Reg.IN_IMG) >> g.in_shift)]
        row_step = Signal(k)
        img_step = Signal(k)
        sx_ow = Signal(k)
        m.d.sync += [row_step.eq(sy * wv), sx_ow.eq(sx * reg(Reg.OUT_W)[:k]),
                     img_step.eq(sy * oh1 * wv)]
        allowed = Const(sum(1 << s for s in range(B) if conflict_free(s, R, B)), B)
        ok = Signal()
        m.d.sync += ok.eq(allowed.bit_select(sx, 1) &
                          ((reg(Reg.OUT_H) == 1) | ((row_step - sx_ow)[:k] == 0)) &
                          ((reg(Reg.BATCH) == 1) | ((ip - img_step - sx_ow)[:k] == 0)))
        return ok

    # ---- pixel stepper ---------------------------------------------------------------------
    def _pixel_stepper(self, m, g, stepping):
        """Produces consecutive output pixels (raster order, image by image), one per cycle,
        into ``nxt``: each row's top-left tap (word address, coordinates, in-range flag).
        ``swap`` (driven by the walker) moves ``nxt`` to ``cur`` and starts the next block."""
        R = self.rows
        reg = self._reg
        st = SimpleNamespace()
        oy = Signal(SIZE_BITS)
        ox = Signal(SIZE_BITS)
        px = Signal(32)
        y0 = Signal(signed(SIZE_BITS + 2))
        x0 = Signal(signed(SIZE_BITS + 2))
        base = Signal(signed(34))         # word address of the (possibly padded) top-left tap
        rowbase = Signal(signed(34))
        imgbase = Signal(signed(34))
        st.fill = Signal(range(R + 1))    # pixels already in `nxt`
        st.ready = Signal()               # `nxt` holds a whole block (K-split: in row R - 1)
        m.d.comb += st.ready.eq(st.fill == g.blk)
        row_layout = data.StructLayout({"base": signed(34), "y0": signed(SIZE_BITS + 2),
                                        "x0": signed(SIZE_BITS + 2), "valid": 1})
        nxt = Signal(data.ArrayLayout(row_layout, R))
        st.cur = Signal(data.ArrayLayout(row_layout, R))
        st.swap = Signal()

        pad_y = -reg(Reg.PAD_TOP).as_signed()
        pad_x = -reg(Reg.PAD_LEFT).as_signed()
        # On a swap the stepper keeps going: `cur` takes the old `nxt` while `nxt` shifts.
        with m.If(stepping & (~st.ready | st.swap)):
            new = Signal(row_layout)
            m.d.comb += [new.base.eq(base), new.y0.eq(y0), new.x0.eq(x0),
                         new.valid.eq(px < g.M)]
            for i in range(R - 1):
                m.d.sync += nxt[i].eq(nxt[i + 1])
            m.d.sync += [nxt[R - 1].eq(new), st.fill.eq(Mux(st.swap, 1, st.fill + 1)),
                         px.eq(px + 1)]
            with m.If(ox != g.ow_last):
                m.d.sync += [ox.eq(ox + 1), x0.eq(x0 + reg(Reg.STRIDE_X)),
                             base.eq(base + g.s_cw)]
            with m.Elif(oy != g.oh_last):
                m.d.sync += [ox.eq(0), oy.eq(oy + 1), x0.eq(pad_x),
                             y0.eq(y0 + reg(Reg.STRIDE_Y)),
                             rowbase.eq(rowbase + g.s_row), base.eq(rowbase + g.s_row)]
            with m.Else():
                next_img = imgbase + reg(Reg.IN_IMG)
                m.d.sync += [ox.eq(0), oy.eq(0), x0.eq(pad_x), y0.eq(pad_y),
                             imgbase.eq(next_img), rowbase.eq(next_img - g.p_off),
                             base.eq(next_img - g.p_off)]
        with m.If(st.swap):
            m.d.sync += st.cur.eq(nxt)
        base0 = reg(Reg.IN_ADDR) - g.p_off
        st.on_start = [oy.eq(0), ox.eq(0), px.eq(0), st.fill.eq(0), y0.eq(pad_y), x0.eq(pad_x),
                       imgbase.eq(reg(Reg.IN_ADDR)), rowbase.eq(base0), base.eq(base0)]
        return st

    # ---- im2col walker ---------------------------------------------------------------------
    def _im2col_walker(self, m, g, run, st):
        """Issues one operand beat per cycle while the operand pipeline has credit: for each
        block of R output pixels, for each column block nb, K beats (kh, kw, cin), cin
        fastest. Tracks the tap's word offset ``koff`` (depthwise: plus nb, the input channel
        group), the lane (``cin % C``) and the WGT address."""
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
        # The offset every tap of the next tile starts from (depthwise: its channel group),
        # kept in a register one tile ahead: nb + 1 unless this tile ends the block.
        next_group = Signal(SIZE_BITS)
        tile_off = Mux(blk_last, 0, next_group)

        with m.If(w.issue):
            m.d.sync += [k.eq(k + 1), w.waddr.eq(w.waddr + 1)]
            with m.If(cin != g.cin_last):
                m.d.sync += cin.eq(cin + 1)
                with m.If((w.lane == C - 1) | g.ksplit):    # K-split: a word per beat
                    m.d.sync += [w.lane.eq(0), w.koff.eq(w.koff + 1)]
                with m.Else():
                    m.d.sync += w.lane.eq(w.lane + 1)
            with m.Else():
                m.d.sync += [cin.eq(0), w.lane.eq(0)]
                with m.If(w.kw != g.kw_last):
                    m.d.sync += [w.kw.eq(w.kw + 1), kwoff.eq(kwoff + reg(Reg.IN_CW)),
                                 w.koff.eq(kwoff + reg(Reg.IN_CW))]
                with m.Else():
                    m.d.sync += [w.kw.eq(0), khoff.eq(khoff + reg(Reg.IN_ROW)),
                                 kwoff.eq(khoff + reg(Reg.IN_ROW)),
                                 w.koff.eq(khoff + reg(Reg.IN_ROW))]
                    with m.If(w.kh != g.kh_last):
                        m.d.sync += w.kh.eq(w.kh + 1)
                    with m.Else():
                        m.d.sync += [w.kh.eq(0), khoff.eq(tile_off), kwoff.eq(tile_off),
                                     w.koff.eq(tile_off)]
            with m.If(w.k_last):
                m.d.sync += [k.eq(0), nb.eq(nb + 1), w.k_last.eq(g.k_is_1),
                             nb_at_last.eq(nb == g.nb_less2),
                             next_group.eq(Mux(g.depthwise, nb + 2, 0))]
            with m.Else():
                m.d.sync += w.k_last.eq(k == g.k_less2)
            with m.If(blk_last):
                m.d.sync += [nb.eq(0), nb_at_last.eq(g.nb_is_1), w.waddr.eq(g.w_start),
                             mbase.eq(mbase + g.blk), next_group.eq(g.depthwise)]
                with m.If(more & st.ready):
                    m.d.comb += st.swap.eq(1)
                    m.d.sync += more.eq(mbase < g.m_less_2b)
                with m.Else():
                    m.d.sync += w.active.eq(0)
        with m.If(run & ~w.active & more & st.ready):
            # Start the next block (after a wait for the stepper, or the very first one).
            m.d.comb += st.swap.eq(1)
            m.d.sync += [w.active.eq(1), more.eq(mbase < g.m_less_b)]
        w.on_start = [w.active.eq(0), more.eq(1), mbase.eq(0), nb.eq(0),
                      next_group.eq(g.depthwise),
                      k.eq(0), w.k_last.eq(g.k_is_1), nb_at_last.eq(g.nb_is_1),
                      cin.eq(0), w.lane.eq(0), w.kh.eq(0), w.kw.eq(0),
                      w.koff.eq(0), kwoff.eq(0), khoff.eq(0), w.waddr.eq(g.w_start)]
        w.on_done = [w.active.eq(0), more.eq(0)]
        return w

    # ---- operand pipeline ------------------------------------------------------------------
    def _operand_pipeline(self, m, g, st, w):
        """From an issued beat to the array's operand FIFO: tap coordinates and word
        addresses; the in-range check (taps in the padding read nothing and give
        ``IN_ZP``); the R parallel ACT reads (with the WGT read timed to arrive with them);
        the operand words (normal mode: lane ``cin % C`` in every lane; depthwise: the
        word). K-split: row R - 1 alone reads ACT, its word is the ``b`` operand (lane j to
        column j) and row i's ``a`` word is WGT bank i (output channel i's weights of those
        lanes)."""
        R, C = self.rows, self.cols
        reg, s8 = self._reg, self._s8
        arr = self.array
        word = data.ArrayLayout(signed(8), C)
        opfifo = m.submodules.opfifo = SyncFIFO(width=8 * C * R + 8 * C + 1,
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

        # Stage 1: in-range check (taps in the padding read nothing) -> the ACT read ports.
        s1 = SimpleNamespace(valid=Signal(), lane=Signal(range(C)), last=Signal(),
                             tap=Signal(R))
        s1_addr = Signal(data.ArrayLayout(unsigned(addr_bits(self.act_depth)), R))
        s1_waddr = Signal(addr_bits(self.wgt_depth))
        m.d.sync += [s1.valid.eq(s0_valid), s1.lane.eq(s0_lane), s1.last.eq(s0_last),
                     s1_waddr.eq(s0_waddr)]
        for i in range(R):
            y, x = s0_y[i], s0_x[i]
            tap = (s0_in[i] & (y >= 0) & (y < reg(Reg.IN_H)) & (x >= 0) & (x < reg(Reg.IN_W)))
            m.d.sync += [s1.tap[i].eq(tap), s1_addr[i].eq(Mux(tap, s0_addr[i], 0))]
        readers = Cat(*[~g.ksplit] * (R - 1), 1)
        m.d.comb += [self.act_rd_en.eq(s1.tap & Cat(*[s1.valid] * R) & readers),
                     self.act_rd_addr.eq(s1_addr), self.act_rd_shift.eq(g.in_shift)]

        # The ACT read takes ACT_LATENCY cycles; WGT (a block RAM) is read RAM_LATENCY cycles
        # before the ACT data arrives, so both are there together.
        waddr = s1_waddr
        for n in range(ACT_LATENCY - RAM_LATENCY):
            d = Signal.like(waddr, name=f"waddr_d{n}")
            m.d.sync += d.eq(waddr)
            waddr = d
        bank_bits = (self.wgt_banks - 1).bit_length()
        bank = waddr[:bank_bits]
        m.d.comb += self.wgt_rd_addr.eq(Mux(g.ksplit, waddr, waddr >> bank_bits))
        for n in range(RAM_LATENCY):
            d = Signal.like(bank, name=f"bank_d{n}")
            m.d.sync += d.eq(bank)
            bank = d
        wgt_word = self.wgt_rd_data[bank] if bank_bits else self.wgt_rd_data[0]
        sd = s1
        for n in range(ACT_LATENCY):
            nxt = SimpleNamespace(**{f: Signal.like(v, name=f"s{n + 2}_{f}")
                                     for f, v in vars(s1).items()})
            m.d.sync += [getattr(nxt, f).eq(getattr(sd, f)) for f in vars(s1)]
            sd = nxt

        # Operand words -> operand FIFO.
        depthwise = g.depthwise
        zp_word = Cat(*[s8(Reg.IN_ZP)] * C)
        a_words = []
        for i in range(R):
            got = word(self.act_rd_data[i])
            lane = Cat(*[got[sd.lane]] * C)
            a_word = Mux(sd.tap[i], Mux(depthwise, got.as_value(), lane), zp_word)
            if self.ksplit:
                a_word = Mux(g.ksplit, self.wgt_rd_data[i], a_word)
            a_words.append(a_word)
        b_word = wgt_word
        if self.ksplit:
            reader = Mux(sd.tap[R - 1], self.act_rd_data[R - 1], zp_word)
            b_word = Mux(g.ksplit, reader, wgt_word)
        m.d.comb += [
            opfifo.w_en.eq(sd.valid),
            opfifo.w_data.eq(Cat(*a_words, b_word, sd.last)),
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
                m.d.sync += [nb.eq(0), mbase.eq(mbase + g.blk)]
                with m.If(mbase >= g.m_less_b):
                    m.d.sync += active.eq(0)
            with m.Else():
                m.d.sync += nb.eq(nb + 1)
        # The requantizer takes the array's results and the column blocks' parameters, or,
        # lent, the ELTWISE engine's.
        with m.If(self.lend):
            m.d.comb += [rq.params.payload.eq(self.ext_params.payload),
                         rq.params.valid.eq(self.ext_params.valid),
                         self.ext_params.ready.eq(rq.params.ready),
                         rq.acc.payload.eq(self.ext_acc.payload),
                         rq.acc.valid.eq(self.ext_acc.valid),
                         self.ext_acc.ready.eq(rq.acc.ready)]
        with m.Else():
            m.d.comb += [
                rq.params.payload.bias.eq(entry.bias),
                rq.params.payload.m0.eq(entry.m0),
                rq.params.payload.shift.eq(entry.shift),
                rq.params.payload.zero_point.eq(s8(Reg.OUT_ZP)),
                rq.params.payload.qmin.eq(s8(Reg.QMIN)),
                rq.params.payload.qmax.eq(s8(Reg.QMAX)),
                rq.params.payload.rounding.eq(reg(Reg.ROUNDING)[0]),
                rq.params.valid.eq(pfifo.r_rdy),
                pfifo.r_en.eq(rq.params.ready),
            ]
            self._results_to_requantizer(m, g)
        p.on_start = [active.eq(1), nb.eq(0), mbase.eq(0)]
        p.on_done = [active.eq(0)]
        return p

    def _results_to_requantizer(self, m, g):
        """The array's result rows, or in K-split mode their row sums (:class:`RowSum`, one
        beat per tile), are the requantizer's sums."""
        rq, res, rs = self.requant, self.array.result, self.row_sum
        if rs is None:
            m.d.comb += [rq.acc.payload.eq(res.payload), rq.acc.valid.eq(res.valid),
                         res.ready.eq(rq.acc.ready)]
            return
        m.d.comb += rs.input.payload.eq(res.payload)
        with m.If(g.ksplit):
            m.d.comb += [rs.input.valid.eq(res.valid), res.ready.eq(rs.input.ready),
                         rq.acc.payload.eq(rs.output.payload), rq.acc.valid.eq(rs.output.valid),
                         rs.output.ready.eq(rq.acc.ready)]
        with m.Else():
            m.d.comb += [rq.acc.payload.eq(res.payload), rq.acc.valid.eq(res.valid),
                         res.ready.eq(rq.acc.ready)]

    # ---- writeback ---------------------------------------------------------------------------
    def _writeback(self, m, g):
        """Requantized rows (through the activation table when USE_LUT) to ACT: row i of the
        tile of column block nb goes to output pixel ``mbase + i`` (its address from the
        output pitches) + nb; rows past M (padding of the last block) are dropped.
        ``finished_d`` rises once the last write left."""
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

        # The output pixel of the current row (index, coordinates, address, and whether it
        # ends its row / image / the layer's M pixels, decided one pixel ahead so that no
        # comparison sits in front of the registers) and the same at the start of the block,
        # to come back to for the block's next column block.
        pix_layout = data.StructLayout({"m": 32, "ox": SIZE_BITS, "oy": SIZE_BITS,
                                        "addr": 34, "row": 34, "img": 34, "x_end": 1,
                                        "y_end": 1, "in_m": 1})
        cur = Signal(pix_layout)
        blk = Signal(pix_layout)
        # Lent to the ELTWISE engine, the results go back to it.
        m.d.comb += [self.ext_result.valid.eq(wb_valid & self.lend),
                     self.ext_result.payload.data.as_value().eq(wb_data),
                     self.ext_result.payload.last.eq(wb_last)]
        active = Signal()
        nb = Signal(SIZE_BITS)
        ow_before, oh_before, m_last = Signal(SIZE_BITS), Signal(SIZE_BITS), Signal(32)
        w_is_1, h_is_1 = Signal(), Signal()
        m.d.sync += [ow_before.eq(reg(Reg.OUT_W) - 2), oh_before.eq(reg(Reg.OUT_H) - 2),
                     w_is_1.eq(reg(Reg.OUT_W) == 1), h_is_1.eq(reg(Reg.OUT_H) == 1),
                     m_last.eq(g.M - 1)]
        nxt = Signal(pix_layout)
        m.d.comb += [nxt.eq(cur), nxt.m.eq(cur.m + 1), nxt.in_m.eq(cur.in_m & (cur.m != m_last))]
        with m.If(~cur.x_end):
            m.d.comb += [nxt.ox.eq(cur.ox + 1), nxt.x_end.eq(cur.ox == ow_before),
                         nxt.addr.eq(cur.addr + reg(Reg.OUT_CW))]
        with m.Elif(~cur.y_end):
            m.d.comb += [nxt.ox.eq(0), nxt.x_end.eq(w_is_1), nxt.oy.eq(cur.oy + 1),
                         nxt.y_end.eq(cur.oy == oh_before),
                         nxt.row.eq(cur.row + reg(Reg.OUT_ROW)),
                         nxt.addr.eq(cur.row + reg(Reg.OUT_ROW))]
        with m.Else():
            m.d.comb += [nxt.ox.eq(0), nxt.x_end.eq(w_is_1), nxt.oy.eq(0), nxt.y_end.eq(h_is_1),
                         nxt.img.eq(cur.img + reg(Reg.OUT_IMG)),
                         nxt.row.eq(cur.img + reg(Reg.OUT_IMG)),
                         nxt.addr.eq(cur.img + reg(Reg.OUT_IMG))]
        # The write port is registered (enable, address, data).
        m.d.sync += [self.act_wr_en.eq(wb_valid & active & cur.in_m),
                     self.act_wr_addr.eq(cur.addr + nb), self.act_wr_data.eq(wb_data),
                     self.act_wr_shift.eq(g.out_shift)]
        finished = Signal()
        b.finished_d = Signal()
        m.d.sync += b.finished_d.eq(finished)
        with m.If(wb_valid & active):
            m.d.sync += cur.eq(nxt)
            with m.If(wb_last):
                with m.If(nb == g.nb_last):
                    m.d.sync += [nb.eq(0), blk.eq(nxt)]
                    with m.If(blk.m >= g.m_less_b):
                        m.d.comb += finished.eq(1)
                with m.Else():
                    m.d.sync += [nb.eq(nb + 1), cur.eq(blk)]
        out = reg(Reg.OUT_ADDR)
        start = {"m": 0, "ox": 0, "oy": 0, "addr": out, "row": out, "img": out,
                 "x_end": w_is_1, "y_end": h_is_1, "in_m": 1}
        b.on_start = ([active.eq(1), nb.eq(0)] +
                      [getattr(cur, f).eq(v) for f, v in start.items()] +
                      [getattr(blk, f).eq(v) for f, v in start.items()])
        b.on_done = [active.eq(0)]
        return b

    # ---- control -----------------------------------------------------------------------------
    def _control(self, m, g, sizes, checks, run, stepping, stepper, parts, finished):
        """The shared engine FSM (:func:`hw.sizes.engine_fsm`): start-up checks, then RUN
        until the last write; every part's registers start from ``on_start``. The pixel
        stepper starts in SETUP cycle :data:`STEPPER_START` (it writes no memory), so the
        first block is ready when RUN begins."""
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

        setup_run = engine_fsm(m, self, sizes, sizes_ok, registered_checks, enter_run,
                               run_state)
        with m.If(setup_run & (sizes.cycle == STEPPER_START)):
            m.d.sync += [stepping.eq(1)] + stepper.on_start
        with m.If(self.done | self.start):
            m.d.sync += stepping.eq(0)
