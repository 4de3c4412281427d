"""The pieces of the SOFTMAX unit's TFLite mode (:func:`golden.tflite.softmax_tflite`).

TFLite's int8 softmax needs ``e = exp(d)`` only for the 256 differences ``d = x - max(x)``,
so the unit looks ``e`` up in a run-time written table of 256 Q0.31 entries
(:func:`golden.tflite.softmax_exp_table`, loaded by ``LOAD`` into ``hw.isa.Mem.SM_EXP``):

* :class:`TableExp`: ``e = T[max - x]`` and its share of the sum ``RDBPOT(e, 12)``, with the
  latency of the project mode's :class:`hw.softmax.ExpUnit` so that both modes share the
  unit's stage timing;
* :class:`Srdhm`: a pipelined gemmlowp ``SaturatingRoundingDoublingHighMul`` of two int32;
* :class:`TfliteReciprocal`: per vector, from the sum ``S``, ``clz``, the normalised mantissa
  and ``one_over_one_plus_x_for_x_in_0_1`` (three Newton-Raphson steps), a fixed-length
  sequence around one :class:`Srdhm`: the reciprocal ``R`` and the output shift.

The unit's output stage then computes ``q = RDBPOT(SRDHM(R, e), shift) - 128`` clamped to 127
(``e`` and ``R`` are non-negative, so RDBPOT rounds half up).
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden.quant import INT32_MAX, INT32_MIN
from golden.tflite import (RECIPROCAL_NEWTON_STEPS, RECIPROCAL_START,
                           SOFTMAX_ACCUM_INTEGER_BITS)

from .pe import RegisteredMultiplier, check_dsp
from .ram import RAM_LATENCY

__all__ = ["Srdhm", "TableExp", "TfliteReciprocal", "SRDHM_LATENCY", "ENTRY_BITS",
           "SHARE_BITS", "SHIFT_BASE", "RECIP_STEPS"]

#: Register stages of :class:`Srdhm`: the multipliers (3), the partial sums (3).
SRDHM_LATENCY = RegisteredMultiplier.STAGES + 3
#: Table entries are Q0.31 values 0 .. 2**31 - 1.
ENTRY_BITS = 31
#: ``RDBPOT(e, 12)`` <= 2**19: 20 bits.
SHARE_BITS = ENTRY_BITS - SOFTMAX_ACCUM_INTEGER_BITS + 1
#: The output shift ``12 - clz(S) + 23`` minus 1 (the final rounding is ``(w + 1) >> 1``) is
#: at least SHIFT_BASE = 22 (S < 2**28); :class:`TfliteReciprocal` gives it relative to that.
SHIFT_BASE = SOFTMAX_ACCUM_INTEGER_BITS - 12 + 31 - 8 - 1
#: Normalisation levels of S (shifts by 8, 4, 2, 1: clz of S >= 2**19 is at most 12).
_LEVELS = (8, 4, 2, 1)
#: SRDHMs of the reciprocal: the start, then two per Newton-Raphson step.
_OPS = 1 + 2 * RECIPROCAL_NEWTON_STEPS
#: Cycles of :class:`TfliteReciprocal` from ``start`` to its results.
RECIP_STEPS = len(_LEVELS) + _OPS * (SRDHM_LATENCY + 1) + 1


class Srdhm(wiring.Component):
    """``h = SRDHM(a, b)`` of :data:`SRDHM_LATENCY` ``en`` cycles earlier (int32 operands,
    taken combinationally). ``(a*b + nudge)`` truncated toward zero is ``(a*b + 2**30) >> 31``
    for either sign, INT32_MAX for the one overflow ``a = b = INT32_MIN``. Four 16 x 16 partial
    products (:class:`hw.pe.RegisteredMultiplier`, low halves unsigned), then
    ``q = ll + 2**30`` and ``mid = hl + lh``; ``s1 = mid + (q >> 16)``; ``h = 2*hh + (s1 >> 15)``
    (the requantizer's sum, :mod:`hw.requantizer`)."""

    def __init__(self, dsp="generic"):
        self.dsp = check_dsp(dsp)
        super().__init__({"en": In(1), "a": In(signed(32)), "b": In(signed(32)),
                          "h": Out(signed(32))})

    def elaborate(self, platform):
        m = Module()
        en, a, b = self.en, self.a, self.b
        halves = {"l": (Cat(a[:16], 0).as_signed(), Cat(b[:16], 0).as_signed()),
                  "h": (a[16:].as_signed(), b[16:].as_signed())}
        prods = {}
        for ka in "lh":
            for kb in "lh":
                mul = m.submodules[f"mul_{ka}{kb}"] = RegisteredMultiplier(17, 17, self.dsp)
                m.d.comb += [mul.a.eq(halves[ka][0]), mul.b.eq(halves[kb][1]), mul.ce.eq(en)]
                prods[ka + kb] = mul.p
        ovf = [Signal(name=f"ovf{i}", reset_less=True) for i in range(SRDHM_LATENCY - 1)]
        q = Signal(unsigned(34), reset_less=True)
        mid = Signal(signed(35), reset_less=True)
        hh = Signal(signed(33), reset_less=True)
        s1 = Signal(signed(36), reset_less=True)
        hh2 = Signal(signed(33), reset_less=True)
        h = Signal(signed(32), reset_less=True)
        with m.If(en):
            m.d.sync += [ovf[0].eq((a == INT32_MIN) & (b == INT32_MIN)),
                         *[ovf[i].eq(ovf[i - 1]) for i in range(1, SRDHM_LATENCY - 1)],
                         q.eq(prods["ll"][:32] + (1 << 30)), mid.eq(prods["hl"] + prods["lh"]),
                         hh.eq(prods["hh"]),
                         s1.eq(mid + q[16:]), hh2.eq(hh),
                         h.eq(Mux(ovf[-1], INT32_MAX, ((hh2 << 1) + (s1 >> 15))[:32]))]
        m.d.comb += self.h.eq(h)
        return m


class TableExp(wiring.Component):
    """``e = T[mx - x]`` (``ENTRY_BITS``) and ``share = (e + 2**11) >> 12`` (RDBPOT(e, 12)) of
    ``latency`` ``en`` cycles earlier, ``x``, ``mx`` int8 with ``mx >= x`` from registers. The
    table is outside (shared by two of these): ``table_data`` must be ``T[table_addr]`` of
    :data:`RAM_LATENCY` ``en`` cycles earlier (a :class:`hw.ram.BlockRam` read port). Stages:
    ``a = mx - x``; ``a`` delayed to fill the latency; the table read; ``e`` and ``share``."""

    def __init__(self, latency):
        if latency < RAM_LATENCY + 2:
            raise ValueError(f"TableExp needs a latency of at least {RAM_LATENCY + 2}")
        self.latency = latency
        super().__init__({"en": In(1), "x": In(signed(8)), "mx": In(signed(8)),
                          "table_addr": Out(8), "table_data": In(ENTRY_BITS),
                          "e": Out(ENTRY_BITS), "share": Out(SHARE_BITS)})

    def elaborate(self, platform):
        m = Module()
        delays = self.latency - RAM_LATENCY - 1
        a = [Signal(8, name=f"a{i}", reset_less=True) for i in range(delays)]
        e = Signal(ENTRY_BITS, reset_less=True)
        share = Signal(SHARE_BITS, reset_less=True)
        t = self.table_data
        half = 1 << (SOFTMAX_ACCUM_INTEGER_BITS - 1)
        with m.If(self.en):
            m.d.sync += [a[0].eq(self.mx - self.x),
                         *[a[i].eq(a[i - 1]) for i in range(1, delays)],
                         e.eq(t), share.eq((t + half) >> SOFTMAX_ACCUM_INTEGER_BITS)]
        m.d.comb += [self.table_addr.eq(a[-1]), self.e.eq(e), self.share.eq(share)]
        return m


def _sat_shift_left(v, e):
    """gemmlowp SaturatingRoundingMultiplyByPOT<e> (e > 0) of an int32 signal."""
    top = v[31 - e:]
    fits = (top == 0) | (top == (1 << (e + 1)) - 1)
    return Mux(fits, (v << e)[:32], Mux(v[31], INT32_MIN, INT32_MAX)).as_signed()


class TfliteReciprocal(wiring.Component):
    """From the sum ``S`` (``2**19 <= S < 2**28``), :data:`RECIP_STEPS` cycles after ``start``:
    ``recip`` = ``one_over_one_plus_x_for_x_in_0_1((S << clz(S)) - 2**31)`` (Q0.31) and
    ``shift`` = ``12 - clz(S) + 23 - 1 - SHIFT_BASE`` (0 .. 8); they hold until the next start.

    Schedule (cycle k after start): k = 0..3 normalise ``S`` by 8, 4, 2, 1 bits where its top
    bits are zero (counting ``clz``); then 7 SRDHMs, each issued from registers and its result
    used SRDHM_LATENCY cycles later (7 cycles per SRDHM); then ``recip = 2x`` saturated.
    ``d = (1 + mantissa) / 2`` is the normalised S shifted right by one (RoundingHalfSum of a
    non-negative mantissa and one)::

        x = 48/17 + SRDHM(d, -32/17)
        3 times:  err = 2**29 - SRDHM(d, x);  x = x + sat(SRDHM(x, err) << 2)
    """

    def __init__(self, sum_width, dsp="generic"):
        self.sum_width = sum_width
        self.dsp = dsp
        super().__init__({"start": In(1), "total": In(sum_width),
                          "recip": Out(ENTRY_BITS), "shift": Out(4)})

    def elaborate(self, platform):
        m = Module()
        mul = m.submodules.mul = Srdhm(self.dsp)
        start_x, slope = RECIPROCAL_START
        k = Signal(range(RECIP_STEPS + 1), init=RECIP_STEPS)
        norm = Signal(32)
        clz = Signal(4)
        sub = Signal(range(SRDHM_LATENCY + 1))      # cycle within an SRDHM
        op = Signal(range(_OPS))                    # which SRDHM
        x = Signal(signed(32))
        err = Signal(signed(32))
        d = Cat(norm[1:], 0).as_signed()
        first, newton_d = op == 0, op[0]            # the start; d * x (odd); x * err (even)
        m.d.comb += [mul.en.eq(1), mul.a.eq(Mux(first | newton_d, d, x)),
                     mul.b.eq(Mux(first, slope, Mux(newton_d, x, err)))]
        with m.If(self.start):
            m.d.sync += [k.eq(0), norm.eq(self.total), clz.eq(0), sub.eq(0), op.eq(0)]
        with m.Elif(k != RECIP_STEPS):
            m.d.sync += k.eq(k + 1)
        for i, n in enumerate(_LEVELS):
            with m.If((k == i) & (norm[32 - n:] == 0)):
                m.d.sync += [norm.eq(norm << n), clz.eq(clz + n)]
        ops_end = len(_LEVELS) + _OPS * (SRDHM_LATENCY + 1)
        with m.If((k >= len(_LEVELS)) & (k < ops_end)):
            m.d.sync += sub.eq(sub + 1)
            with m.If(sub == SRDHM_LATENCY):
                h = mul.h
                m.d.sync += [sub.eq(0), op.eq(op + 1)]
                with m.If(first):
                    m.d.sync += x.eq(start_x + h)
                with m.Elif(newton_d):
                    m.d.sync += err.eq((1 << 29) - h)
                with m.Else():
                    m.d.sync += x.eq(x + _sat_shift_left(h, 2))
        with m.If(k == ops_end):
            # shift + SHIFT_BASE = 12 - clz + 23 - 1, i.e. shift = 12 - clz
            m.d.sync += [self.recip.eq(_sat_shift_left(x, 1)[:ENTRY_BITS]),
                         self.shift.eq(SOFTMAX_ACCUM_INTEGER_BITS - clz)]
        return m
