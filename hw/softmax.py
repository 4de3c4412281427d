"""Streaming int8 softmax unit, bit-exact with :func:`golden.softmax.softmax` (``mode`` 0) or
:func:`golden.tflite.softmax_tflite` (``mode`` 1, "TFLite mode").

Contract
--------
``logits`` (in): one frame per vector, one int8 logit per beat, ``last`` on the final beat of
the vector; lengths 1 .. ``max_len``. ``probs`` (out): one frame per accepted vector, in order,
same length, one int8 probability per beat (scale 1/256, zero point -128), ``last`` on the
final beat. ``multiplier`` (31 bits) and ``right_shift`` (5 bits) are the ``M0`` and ``-shift``
of :func:`golden.softmax.softmax_params`; they are static configuration and must not change
while a vector is in the unit.

``mode`` is static configuration too. In TFLite mode ``multiplier`` and ``right_shift`` are
unused; the exp table (:func:`golden.tflite.softmax_exp_table` of the input's
:class:`golden.tflite.SoftmaxTfliteParams`) must have been written through ``exp_table`` (one
entry per beat, always ready; it keeps its contents until rewritten; write it only while no
vector is in the unit) and vectors are at most ``tflite_max_len`` = min(max_len, 511) long.

A frame longer than ``max_len`` (TFLite mode: ``tflite_max_len``) is refused without hanging:
it is consumed and discarded up to its ``last`` beat, produces no output frame, sets the sticky
``overflow`` flag (cleared only by reset) and increments ``dropped`` (16 bits, wraps). Vectors
before and after it are unaffected.

Method (see :mod:`golden.softmax` for the arithmetic and rounding): the two-pass softmax
(maximum, then exp and sum) on a buffered vector, plus an output pass; ``x`` stays in the
buffer and ``exp`` is recomputed in the output pass. Stages, each on its own vector:

* stage A (input): writes the vector into a free bank of the buffer and tracks its maximum;
* stage B (sum): reads the bank, ``e_i`` through an :class:`ExpUnit`, accumulates ``S``;
* stage D (divide): ``R = floor(2**32 / S)``, non-restoring division, one quotient bit per
  cycle (:data:`DIV_STEPS` = 18 cycles);
* stage C (output): reads the bank again, ``e_i`` through a second :class:`ExpUnit`,
  ``v = (e_i * R + 2**23) >> 24``, ``q = min(v, 255) - 128`` (product, ``v`` and the clamp in
  three register stages).

The buffer has ``banks`` banks of ``2**ceil(log2(max_len))`` int8 (one write port, two read
ports). A, B, D and C work on different vectors at the same time; a bank is freed when C has
read its last element, and A accepts a new vector only while a bank is free.

Throughput and latency: with no backpressure each of A, B and C handles one element per cycle,
plus one idle cycle per vector in B and C; D needs 20 cycles per vector including hand-over;
a bank is held for about 3L + 36 cycles. A steady stream of length-L vectors therefore runs at
``max(L + 1, 20, (3L + 36) / banks)`` cycles per vector: L + 1 for L >= 19 with the default
8 banks (measured: 257 cycles for L = 256, 65 for L = 64, 20 for L <= 19). The last output
element of a lone vector leaves 3L + 54 cycles after its first input element.

TFLite mode (:mod:`hw.softmax_tflite`) keeps the stages and their timing but for two: B
looks ``e`` up in the exp table (:class:`hw.softmax_tflite.TableExp`, the ExpUnit's latency)
and sums ``RDBPOT(e, 12)``; D is :class:`hw.softmax_tflite.TfliteReciprocal`
(:data:`TFLITE_RECIP_STEPS` = 54 cycles: clz and the Newton-Raphson reciprocal on one SRDHM
pipeline, so about 56 cycles per vector with hand-over); C computes
``RDBPOT(SRDHM(R, e), shift)`` with an :class:`hw.softmax_tflite.Srdhm` (four 17 x 17
multipliers), :data:`TFLITE_OUT_EXTRA` (4) stages more than the project output path. A
steady stream then runs at ``max(L + 1, 56, about (3L + 72) / banks)`` cycles per vector.

Timing: every register stage holds at most one carry chain, one multiplexer tree or one
block RAM read. Block RAM reads (:class:`BlockRam`) are registered twice, the array and an
output register, so that no logic follows a block RAM's clock-to-output; multipliers are
:class:`hw.pe.RegisteredMultiplier` (``a * M0`` as two 9 x 17 and 9 x 16 products, ``e * R``
17 x 18). With ``dsp="ecp5"`` these are DP16KD with REGMODE OUTREG and MULT18X18D with their
own registers (same cycle counts as ``"generic"``). Backpressure on ``probs`` stalls stage C
as a whole (one enable for all its registers).
"""

import math

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from golden.tflite import SOFTMAX_TFLITE_MAX_LEN

from .pe import RegisteredMultiplier, check_dsp
from .ram import RAM_LATENCY, BlockRam
from .softmax_tflite import (ENTRY_BITS, RECIP_STEPS, SHARE_BITS, SHIFT_BASE, SRDHM_LATENCY,
                             Srdhm, TableExp, TfliteReciprocal)

__all__ = ["SoftmaxUnit", "ExpUnit", "BlockRam", "exp_table", "MAX_LEN_LIMIT", "BANKS",
           "EXP_LATENCY", "RAM_LATENCY", "MUL_STAGES", "DIV_STEPS", "element_layout",
           "table_entry_layout", "MODES", "TFLITE_RECIP_STEPS", "TFLITE_OUT_EXTRA"]

#: Largest supported ``max_len``.
MAX_LEN_LIMIT = 1 << 16
#: Default number of vector banks (8 x 256 int8 is one 2048 x 9 block RAM per read port).
BANKS = 8
#: Register stages of :class:`ExpUnit` (``x`` to ``e``).
EXP_LATENCY = 12
#: Register stages of the output multiplier ``e * R``.
MUL_STAGES = RegisteredMultiplier.STAGES

# Arithmetic constants; tests/test_hw_softmax.py checks them against golden.softmax.
EXP_FRAC_BITS = 10
EXP_ONE_BITS = 15
RECIP_BITS = 32
OUT_SHIFT = RECIP_BITS - 8
RECIP_WIDTH = RECIP_BITS - EXP_ONE_BITS + 1        # R <= 2**17: 18 bits
#: Cycles of the divider per quotient (one quotient bit per cycle).
DIV_STEPS = RECIP_WIDTH
#: Width of R as the output multiplier takes it (R saturated to 2**17 - 1, see SoftmaxUnit).
RECIP_SAT_BITS = RECIP_WIDTH - 1
#: ``mode`` by softmax variant (the model format's): 0 :func:`golden.softmax.softmax`, 1
#: :func:`golden.tflite.softmax_tflite`.
MODES = ("project", "tflite")
#: Cycles of stage D in TFLite mode (:class:`hw.softmax_tflite.TfliteReciprocal`).
TFLITE_RECIP_STEPS = RECIP_STEPS
#: Register stages the TFLite output path has beyond the project one (SRDHM and the shift
#: instead of the multiplier).
TFLITE_OUT_EXTRA = SRDHM_LATENCY + 1 - MUL_STAGES


def exp_table():
    """``round(2**15 * 2**(-r / 1024))`` for r < 1024: the constant ROM of :class:`ExpUnit`."""
    return [math.floor((1 << EXP_ONE_BITS) * 2.0 ** (-r / (1 << EXP_FRAC_BITS)) + 0.5)
            for r in range(1 << EXP_FRAC_BITS)]


def element_layout():
    return data.StructLayout({"data": signed(8), "last": 1})


def table_entry_layout():
    """One write of the TFLite mode's exp table: entry ``index`` (``a = max - x``) gets
    ``value`` (Q0.31, :func:`golden.tflite.softmax_exp_table`)."""
    return data.StructLayout({"index": 8, "value": ENTRY_BITS})


class ExpUnit(wiring.Component):
    """``e = 2**15 * 2**-(u / 1024)`` for ``u = a * s * log2(e)``, ``a = mx - x`` (golden steps 1-3).

    Pipelined, :data:`EXP_LATENCY` stages, every register advances only while ``en`` is high.
    ``tag`` travels alongside the data unchanged. Requires ``mx >= x``; ``x`` and ``mx`` must
    come from registers. The exponent table is outside (:func:`exp_table`, shared by two
    units): ``rom_data`` must be ``T[rom_addr]`` of :data:`RAM_LATENCY` ``en`` cycles earlier
    (a :class:`BlockRam` read port).

    With ``y = a * M0 + 2**8 + (k > 0) * 2**(k+8)`` (``k = right_shift``), SRDHM followed by
    RDBPOT is ``u = y >> (9 + k)`` (both round half up, so the two roundings fold into one
    added constant), and ``u >> 10 > 17`` (``e = 0``) is ``y >= 18 << (19 + k)``. The constants
    depend on the static configuration only and are registered. Stages, at most one carry chain
    or one block RAM read each:

    1-3. ``a = mx - x`` into two :class:`hw.pe.RegisteredMultiplier`: ``a * M0[:16]`` and
         ``a * M0[16:]``;
    4. low product plus the rounding constant;     5. plus the high product: ``y``;
    6. ``y >> 9`` shifted by the multiple-of-8 part of ``k``; the saturation compare;
    7. the rest of the shift: ``u = y >> (9 + k)``;
    8. ``n = min(u >> 10, 17)``; the ROM reads ``T[u mod 1024]``;
    9. the ROM's output register; ``n - 1``;
    10. ``T >> (n - 1)``, the multiple-of-8 part of the shift;     11. the rest of it;
    12. ``e``, the rounding increment.
    """

    def __init__(self, tag_width=1, dsp="generic"):
        self.tag_width = tag_width
        self.dsp = check_dsp(dsp)
        super().__init__({
            "en": In(1),
            "valid": In(1),
            "x": In(signed(8)),
            "mx": In(signed(8)),
            "tag": In(tag_width),
            "multiplier": In(31),
            "right_shift": In(5),
            "rom_addr": Out(EXP_FRAC_BITS),
            "rom_data": In(EXP_ONE_BITS + 1),
            "valid_out": Out(1),
            "tag_out": Out(tag_width),
            "e": Out(EXP_ONE_BITS + 1),
        })

    def elaborate(self, platform):
        m = Module()
        en = self.en
        k = self.right_shift

        valid = [Signal(name=f"v{i}") for i in range(EXP_LATENCY)]
        tags = [Signal(self.tag_width, name=f"tag{i}", reset_less=True)
                for i in range(EXP_LATENCY)]
        with m.If(en):
            m.d.sync += [valid[0].eq(self.valid), tags[0].eq(self.tag)]
            for i in range(1, EXP_LATENCY):
                m.d.sync += [valid[i].eq(valid[i - 1]), tags[i].eq(tags[i - 1])]

        # Static constants of the configuration (registered; the configuration does not change
        # while a vector is in the unit).
        YW = 8 + 31 + 2                                 # y < 2**41
        rnd = Signal(YW, reset_less=True)               # 2**8 + (k > 0) * 2**(k + 8)
        th = Signal(YW, reset_less=True)                # 18 << (19 + k), if below 2**41
        th_big = Signal(reset_less=True)                # 18 << (19 + k) >= 2**41: never
        m.d.sync += [
            rnd.eq((1 << 8) | Mux(k == 0, 0, Const(1 << 8, YW) << k)),
            th.eq(Const(18 << 19, YW + 32) << k),
            th_big.eq(k > YW - 19 - 5),
        ]

        mul_lo = m.submodules.mul_lo = RegisteredMultiplier(9, 17, self.dsp)
        mul_hi = m.submodules.mul_hi = RegisteredMultiplier(9, 16, self.dsp)
        a = Signal(8)
        m.d.comb += [
            a.eq(self.mx - self.x),
            mul_lo.a.eq(a), mul_lo.b.eq(self.multiplier[:16]), mul_lo.ce.eq(en),
            mul_hi.a.eq(a), mul_hi.b.eq(self.multiplier[16:]), mul_hi.ce.eq(en),
        ]
        p_lo = mul_lo.p[:8 + 16]
        p_hi = mul_hi.p[:8 + 15]
        y1 = Signal(YW, reset_less=True)
        hi4 = Signal(8 + 15, reset_less=True)
        y = Signal(YW, reset_less=True)
        uc = Signal(YW - 9, reset_less=True)
        kf = Signal(3, reset_less=True)
        sat = Signal(reset_less=True)
        u = Signal(YW - 9, reset_less=True)
        sat7 = Signal(reset_less=True)
        n = Signal(range(18), reset_less=True)
        sh = Signal(5, reset_less=True)                 # n - 1 (0 if n = 0)
        z8 = Signal(reset_less=True)
        t = self.rom_data
        tc = Signal(EXP_ONE_BITS + 1, reset_less=True)
        shf = Signal(3, reset_less=True)
        z9 = Signal(reset_less=True)
        tf = Signal(EXP_ONE_BITS + 1, reset_less=True)
        z10 = Signal(reset_less=True)
        e = Signal(EXP_ONE_BITS + 1, reset_less=True)
        with m.If(en):
            m.d.sync += [
                y1.eq(p_lo + rnd), hi4.eq(p_hi),                        # 4
                y.eq(y1 + (hi4 << 16)),                                 # 5
                uc.eq((y >> 9) >> Cat(Const(0, 3), k[3:])), kf.eq(k[:3]),  # 6
                sat.eq(~th_big & (y >= th)),
                u.eq(uc >> kf), sat7.eq(sat),                           # 7
                n.eq(Mux(sat7, 17, u[EXP_FRAC_BITS:EXP_FRAC_BITS + 5])),  # 8 (ROM array)
                sh.eq(Mux(n == 0, 0, n - 1)), z8.eq(n == 0),            # 9 (ROM register)
                tc.eq(t >> Cat(Const(0, 3), sh[3:])),                   # 10
                shf.eq(sh[:3]), z9.eq(z8),
                tf.eq(tc >> shf), z10.eq(z9),                           # 11
                e.eq(Mux(z10, tf, (tf + 1) >> 1)),                      # 12
            ]
        m.d.comb += [self.rom_addr.eq(u[:EXP_FRAC_BITS]),
                     self.valid_out.eq(valid[-1]), self.tag_out.eq(tags[-1]), self.e.eq(e)]
        return m


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")


class SoftmaxUnit(wiring.Component):
    """Streaming int8 softmax over frames of 1 .. ``max_len`` elements (module docstring).

    Parameters
    ----------
    max_len : int
        L_max, the longest vector, 1 .. :data:`MAX_LEN_LIMIT`.
    banks : int
        Vector buffers (2 .. 8): vectors in flight at once. The default :data:`BANKS` keeps
        every stage busy for L >= 7.
    dsp : str
        Multipliers (:class:`hw.pe.RegisteredMultiplier`): ``"generic"`` or ``"ecp5"``
        (MULT18X18D with its registers). Same latency either way.
    """

    def __init__(self, max_len=256, banks=BANKS, dsp="generic"):
        _check_int("max_len", max_len, 1, MAX_LEN_LIMIT)
        _check_int("banks", banks, 2, 8)
        self.max_len = max_len
        self.banks = banks
        self.dsp = check_dsp(dsp)
        self.idx_bits = max(1, (max_len - 1).bit_length())
        self.sum_width = (max_len << EXP_ONE_BITS).bit_length()
        #: TFLite mode: vectors of at most this many elements (longer ones are dropped like
        #: those over max_len) and the width of their sum of RDBPOT(e, 12) <= 2**19 each.
        self.tflite_max_len = min(max_len, SOFTMAX_TFLITE_MAX_LEN)
        self.tflite_sum_width = (self.tflite_max_len << (SHARE_BITS - 1)).bit_length()
        super().__init__({
            "logits": In(stream.Signature(element_layout())),
            "probs": Out(stream.Signature(element_layout())),
            "multiplier": In(31),
            "right_shift": In(5),
            "mode": In(1),
            "exp_table": In(stream.Signature(table_entry_layout())),
            "overflow": Out(1),
            "dropped": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        NB, L = self.banks, self.max_len
        IB = self.idx_bits
        SW = self.sum_width
        AW = max(SW, self.tflite_sum_width)         # the accumulator holds either mode's sum
        tflite = self.mode

        # A bank is never read and written in the same cycle (A writes only free banks).
        buf = m.submodules.buf = BlockRam(8, NB << IB, reads=2, dsp=self.dsp)
        # The exponent table, one read port for each ExpUnit.
        rom = m.submodules.rom = BlockRam(EXP_ONE_BITS + 1, 1 << EXP_FRAC_BITS, reads=2,
                                          write=False, init=exp_table(), dsp=self.dsp)
        # TFLite mode's exp table, written through `exp_table`, one read port per TableExp.
        ttab = m.submodules.ttab = BlockRam(ENTRY_BITS, 256, reads=2, dsp=self.dsp)
        m.d.comb += [ttab.w_addr.eq(self.exp_table.payload.index),
                     ttab.w_data.eq(self.exp_table.payload.value),
                     ttab.w_en.eq(self.exp_table.valid), self.exp_table.ready.eq(1)]

        # Descriptors between stages; NB entries each, so they never fill (at most NB
        # vectors are in flight, one per bank).
        desc_w = (NB - 1).bit_length() + IB + 8     # bank, last index, max
        fifo_ab = m.submodules.fifo_ab = SyncFIFO(width=desc_w, depth=NB)
        fifo_bc = m.submodules.fifo_bc = SyncFIFO(width=desc_w, depth=NB)
        fifo_bd = m.submodules.fifo_bd = SyncFIFO(width=AW, depth=NB)
        desc = data.StructLayout({"bank": range(NB), "last": IB, "max": signed(8)})

        free = Signal(range(NB + 1), init=NB)
        take = Signal()         # A commits a vector to a bank
        give = Signal()         # C has read the last element of a bank
        m.d.sync += free.eq(free - take + give)

        # ---- Stage A: input, buffer write, maximum ------------------------------------
        inp = self.logits
        wbank = Signal(range(NB))
        wcount = Signal(range(L + 1))
        wmax = Signal(signed(8))
        a_first = Signal(init=1)        # the next beat is the first of a vector
        dropping = Signal()
        m.d.comb += inp.ready.eq(dropping | (free != 0))
        accept = inp.valid & inp.ready
        x_in = inp.payload.data
        new_max = Mux(a_first | (x_in > wmax), x_in, wmax)
        too_long = dropping | (wcount == L)
        if self.tflite_max_len < L:
            too_long = too_long | (tflite & (wcount == self.tflite_max_len))
        # The descriptor goes into fifo_ab one cycle after the last beat, from registers (the
        # maximum including the last element is in `wmax` then).
        a_take = Signal()
        a_desc = Signal(desc)
        # Strobes are plain expressions, not assignments under `m.If`: Icarus never evaluates
        # an `always @*` block whose inputs do not change after time 0 (they would stay X).
        m.d.comb += take.eq(accept & inp.payload.last & ~too_long)
        m.d.comb += [
            buf.w_addr.eq(Cat(wcount[:IB], wbank)),
            buf.w_data.eq(x_in),
            buf.w_en.eq(accept & ~too_long),
            fifo_ab.w_data.eq(Cat(a_desc.bank, a_desc.last, wmax)),
            fifo_ab.w_en.eq(a_take),
        ]
        m.d.sync += a_take.eq(take)
        with m.If(take):
            m.d.sync += [a_desc.bank.eq(wbank), a_desc.last.eq(wcount)]
        with m.If(accept):
            m.d.sync += a_first.eq(inp.payload.last)
            with m.If(~too_long):
                m.d.sync += wmax.eq(new_max)
            with m.If(inp.payload.last):
                m.d.sync += [wcount.eq(0), dropping.eq(0)]
                with m.If(too_long):
                    m.d.sync += [self.overflow.eq(1), self.dropped.eq(self.dropped + 1)]
                with m.Else():
                    m.d.sync += wbank.eq(Mux(wbank == NB - 1, 0, wbank + 1))
            with m.Elif(too_long):
                m.d.sync += dropping.eq(1)
            with m.Else():
                m.d.sync += wcount.eq(wcount + 1)

        # ---- Stage B: exp and sum -----------------------------------------------------
        b_active = Signal()
        b_desc = Signal(desc)
        b_idx = Signal(IB)
        b_is_last = b_idx == b_desc.last
        b_load = Signal()
        m.d.comb += [b_load.eq(~b_active & fifo_ab.r_rdy), fifo_ab.r_en.eq(b_load),
                     fifo_bc.w_en.eq(b_load)]
        with m.If(b_load):
            m.d.sync += [b_active.eq(1), b_desc.eq(fifo_ab.r_data), b_idx.eq(0)]
        m.d.comb += fifo_bc.w_data.eq(fifo_ab.r_data)
        m.d.comb += [buf.r0_addr.eq(Cat(b_idx, b_desc.bank)), buf.r0_en.eq(1)]
        # valid, first, last and max alongside the buffer read (RAM_LATENCY stages)
        b_pipe = [Signal(data.StructLayout({"v": 1, "first": 1, "last": 1, "max": signed(8)}),
                         name=f"b_pipe{i}") for i in range(RAM_LATENCY)]
        m.d.sync += b_pipe[0].eq(Cat(b_active, b_idx == 0, b_is_last, b_desc.max))
        m.d.sync += [b_pipe[i].eq(b_pipe[i - 1]) for i in range(1, RAM_LATENCY)]
        b_in = b_pipe[-1]
        with m.If(b_active):
            m.d.sync += b_idx.eq(b_idx + 1)
            with m.If(b_is_last):
                m.d.sync += b_active.eq(0)

        exp_b = m.submodules.exp_b = ExpUnit(tag_width=2, dsp=self.dsp)
        m.d.comb += [
            exp_b.en.eq(1), exp_b.valid.eq(b_in.v), exp_b.x.eq(buf.r0_data),
            exp_b.mx.eq(b_in.max), exp_b.tag.eq(Cat(b_in.first, b_in.last)),
            rom.r0_addr.eq(exp_b.rom_addr), rom.r0_en.eq(1), exp_b.rom_data.eq(rom.r0_data),
            exp_b.multiplier.eq(self.multiplier), exp_b.right_shift.eq(self.right_shift),
        ]
        tex_b = m.submodules.tex_b = TableExp(EXP_LATENCY)
        m.d.comb += [tex_b.en.eq(1), tex_b.x.eq(buf.r0_data), tex_b.mx.eq(b_in.max),
                     ttab.r0_addr.eq(tex_b.table_addr), ttab.r0_en.eq(1),
                     tex_b.table_data.eq(ttab.r0_data)]
        acc = Signal(AW)
        acc_next = Signal(AW)
        m.d.comb += acc_next.eq(Mux(exp_b.tag_out[0], 0, acc)
                                + Mux(tflite, tex_b.share, exp_b.e))
        with m.If(exp_b.valid_out):
            m.d.sync += acc.eq(acc_next)
        m.d.comb += [fifo_bd.w_data.eq(acc_next),
                     fifo_bd.w_en.eq(exp_b.valid_out & exp_b.tag_out[1])]

        # ---- Stage D: R = floor(2**32 / S), one quotient bit per cycle ----------------------
        # S >= 2**15 > 2**32 >> 18, so quotient bits 32..18 are zero and the partial remainder
        # starts at 2**14; bits 17..0 follow (the dividend has no further set bits).
        # Non-restoring division: r <- 2r - S if r >= 0, else 2r + S, keeping -S <= r < S; the
        # quotient bit is 1 where the new r >= 0 (the bits of restoring division). The sign of
        # r is a register, so a step is an operand select (one LUT) and one carry chain.
        qbits = RECIP_WIDTH                           # 18
        steps = DIV_STEPS
        RW = SW + 2                                   # r and 2r, two's complement
        d_busy = Signal()
        d_done = Signal()
        d_div = Signal(SW)
        d_rem = Signal(RW)
        d_q = Signal(qbits)
        d_step = Signal(range(max(steps, TFLITE_RECIP_STEPS)))
        # TFLite mode: the reciprocal sequence runs beside, and stage D lasts its length.
        trec = m.submodules.trec = TfliteReciprocal(AW, dsp=self.dsp)
        d_take = Signal()                             # C takes the quotient
        d_load = Signal()
        m.d.comb += [d_load.eq(~d_busy & ~d_done & fifo_bd.r_rdy), fifo_bd.r_en.eq(d_load)]
        m.d.comb += [trec.start.eq(d_load), trec.total.eq(fifo_bd.r_data)]
        neg = d_rem[-1]
        operand = Signal(RW)                          # S if r < 0, else ~S (with carry in: -S)
        m.d.comb += operand.eq(Mux(neg, d_div, ~Cat(d_div, Const(0, 2))))
        # 2r + operand + ~neg: the carry in comes from a constant 1 in an extra low bit.
        rem_next = Signal(RW)
        m.d.comb += rem_next.eq((Cat(Const(1, 1), Const(0, 1), d_rem[:-1])
                                 + Cat(~neg, operand))[1:])
        with m.If(d_load):
            m.d.sync += [d_busy.eq(1), d_div.eq(fifo_bd.r_data[:SW]),
                         d_rem.eq(1 << (RECIP_BITS - qbits)), d_q.eq(0), d_step.eq(0)]
        with m.If(d_busy):
            m.d.sync += [d_rem.eq(rem_next), d_q.eq(Cat(~rem_next[-1], d_q)),
                         d_step.eq(d_step + 1)]
            with m.If(d_step == Mux(tflite, TFLITE_RECIP_STEPS - 1, steps - 1)):
                m.d.sync += [d_busy.eq(0), d_done.eq(1)]
        with m.If(d_take):
            m.d.sync += d_done.eq(0)

        # ---- Stage C: exp again, times R, round, output (one enable: adv) -------------
        out = self.probs
        o_valid = Signal()
        adv = Signal()
        m.d.comb += [adv.eq(~o_valid | out.ready), out.valid.eq(o_valid)]

        c_active = Signal()
        c_desc = Signal(desc)
        # The quotient R (project) or the reciprocal and the output shift (TFLite).
        PW = max(RECIP_SAT_BITS, ENTRY_BITS + len(trec.shift))
        c_recip = Signal(PW)
        c_idx = Signal(IB)
        c_is_last = c_idx == c_desc.last
        c_load = Signal()
        m.d.comb += [c_load.eq(~c_active & fifo_bc.r_rdy & d_done), fifo_bc.r_en.eq(c_load),
                     d_take.eq(c_load), give.eq(adv & c_active & c_is_last)]
        with m.If(c_load):
            # R = 2**17 only if S = 2**15: then every e is 2**15 or 0, and 2**17 - 1 gives the
            # same outputs (255 after the clamp, 0); the product operand fits 17 bits.
            m.d.sync += [c_active.eq(1), c_desc.eq(fifo_bc.r_data), c_idx.eq(0),
                         c_recip.eq(Mux(tflite, Cat(trec.recip, trec.shift),
                                        Mux(d_q[-1], (1 << RECIP_SAT_BITS) - 1, d_q)))]
        m.d.comb += [buf.r1_addr.eq(Cat(c_idx, c_desc.bank)), buf.r1_en.eq(adv)]
        c_pipe = [Signal(data.StructLayout({"v": 1, "last": 1, "max": signed(8),
                                            "recip": PW}), name=f"c_pipe{i}")
                  for i in range(RAM_LATENCY)]
        c_in = c_pipe[-1]
        with m.If(adv):
            m.d.sync += c_pipe[0].eq(Cat(c_active, c_is_last, c_desc.max, c_recip))
            m.d.sync += [c_pipe[i].eq(c_pipe[i - 1]) for i in range(1, RAM_LATENCY)]
            with m.If(c_active):
                m.d.sync += c_idx.eq(c_idx + 1)
                with m.If(c_is_last):
                    m.d.sync += c_active.eq(0)

        exp_c = m.submodules.exp_c = ExpUnit(tag_width=1 + PW, dsp=self.dsp)
        m.d.comb += [
            exp_c.en.eq(adv), exp_c.valid.eq(c_in.v), exp_c.x.eq(buf.r1_data),
            exp_c.mx.eq(c_in.max), exp_c.tag.eq(Cat(c_in.last, c_in.recip)),
            rom.r1_addr.eq(exp_c.rom_addr), rom.r1_en.eq(adv), exp_c.rom_data.eq(rom.r1_data),
            exp_c.multiplier.eq(self.multiplier), exp_c.right_shift.eq(self.right_shift),
        ]
        # e * R on a RegisteredMultiplier (MUL_STAGES); then v; then the clamp.
        mul = m.submodules.mul = RegisteredMultiplier(EXP_ONE_BITS + 2, RECIP_SAT_BITS + 1,
                                                      self.dsp)
        m.d.comb += [mul.a.eq(exp_c.e), mul.b.eq(exp_c.tag_out[1:1 + RECIP_SAT_BITS]),
                     mul.ce.eq(adv)]
        prod = mul.p[:EXP_ONE_BITS + 1 + RECIP_SAT_BITS]     # e * R < 2**32
        mv = [Signal(name=f"mul_v{i}") for i in range(MUL_STAGES)]
        ml = [Signal(name=f"mul_last{i}") for i in range(MUL_STAGES)]
        prod_v, prod_last = mv[-1], ml[-1]
        v = Signal(len(prod) - OUT_SHIFT + 1, reset_less=True)
        v_v = Signal()
        v_last = Signal()
        # TFLite: e from the table beside the ExpUnit; SRDHM(R, e), then w = that >> (shift
        # + SHIFT_BASE) (a fixed shift, then 0 .. 8), then v = (w + 1) >> 1: RDBPOT(., shift
        # + SHIFT_BASE + 1) of a non-negative value.
        tex_c = m.submodules.tex_c = TableExp(EXP_LATENCY)
        m.d.comb += [tex_c.en.eq(adv), tex_c.x.eq(buf.r1_data), tex_c.mx.eq(c_in.max),
                     ttab.r1_addr.eq(tex_c.table_addr), ttab.r1_en.eq(adv),
                     tex_c.table_data.eq(ttab.r1_data)]
        srdhm = m.submodules.srdhm = Srdhm(self.dsp)
        t_recip = exp_c.tag_out[1:1 + ENTRY_BITS]
        t_shift = exp_c.tag_out[1 + ENTRY_BITS:1 + ENTRY_BITS + len(trec.shift)]
        m.d.comb += [srdhm.en.eq(adv), srdhm.a.eq(tex_c.e), srdhm.b.eq(t_recip)]
        tv = [Signal(name=f"tfl_v{i}") for i in range(SRDHM_LATENCY)]
        tl = [Signal(name=f"tfl_last{i}") for i in range(SRDHM_LATENCY)]
        tsh = [Signal(len(trec.shift), name=f"tfl_shift{i}", reset_less=True)
               for i in range(SRDHM_LATENCY)]
        w = Signal(ENTRY_BITS - SHIFT_BASE, reset_less=True)
        w_v, w_last = Signal(), Signal()
        tq = Signal(len(w), reset_less=True)
        tq_v, tq_last = Signal(), Signal()
        with m.If(adv):
            m.d.sync += [tv[0].eq(exp_c.valid_out), tl[0].eq(exp_c.tag_out[0]),
                         tsh[0].eq(t_shift)]
            for chain in (tv, tl, tsh):
                m.d.sync += [chain[i].eq(chain[i - 1]) for i in range(1, SRDHM_LATENCY)]
            m.d.sync += [w.eq(srdhm.h[SHIFT_BASE:ENTRY_BITS] >> tsh[-1]), w_v.eq(tv[-1]),
                         w_last.eq(tl[-1]),
                         tq.eq((w + 1) >> 1), tq_v.eq(w_v), tq_last.eq(w_last)]
        with m.If(adv):
            m.d.sync += [mv[0].eq(exp_c.valid_out), ml[0].eq(exp_c.tag_out[0])]
            m.d.sync += [mv[i].eq(mv[i - 1]) for i in range(1, MUL_STAGES)]
            m.d.sync += [ml[i].eq(ml[i - 1]) for i in range(1, MUL_STAGES)]
            m.d.sync += [
                v.eq((prod[OUT_SHIFT - 1:] + 1) >> 1), v_v.eq(prod_v), v_last.eq(prod_last),
                o_valid.eq(Mux(tflite, tq_v, v_v)),
                out.payload.last.eq(Mux(tflite, tq_last, v_last)),
                out.payload.data.eq(Mux(Mux(tflite, tq[8:], v[8:]).any(), 255,
                                        Mux(tflite, tq[:8], v[:8])) - 128),
            ]
        return m
