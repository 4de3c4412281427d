"""Streaming int8 softmax unit, bit-exact with :func:`golden.softmax.softmax`.

Contract
--------
``logits`` (in): one frame per vector, one int8 logit per beat, ``last`` on the final beat of
the vector; lengths 1 .. ``max_len``. ``probs`` (out): one frame per accepted vector, in order,
same length, one int8 probability per beat (scale 1/256, zero point -128), ``last`` on the
final beat. ``multiplier`` (31 bits) and ``right_shift`` (5 bits) are the ``M0`` and ``-shift``
of :func:`golden.softmax.softmax_params`; they are static configuration and must not change
while a vector is in the unit.

A frame longer than ``max_len`` is refused without hanging: it is consumed and discarded up to
its ``last`` beat, produces no output frame, sets the sticky ``overflow`` flag (cleared only by
reset) and increments ``dropped`` (16 bits, wraps). Vectors before and after it are unaffected.

Method (see :mod:`golden.softmax` for the arithmetic and rounding): the two-pass softmax
(maximum, then exp and sum) on a buffered vector, plus an output pass; ``x`` stays in the
buffer and ``exp`` is recomputed in the output pass. Stages, each on its own vector:

* stage A (input): writes the vector into a free bank of the buffer and tracks its maximum;
* stage B (sum): reads the bank, ``e_i`` through an :class:`ExpUnit`, accumulates ``S``;
* stage D (divide): ``R = floor(2**32 / S)``, restoring division, 2 quotient bits per cycle
  (9 cycles);
* stage C (output): reads the bank again, ``e_i`` through a second :class:`ExpUnit`,
  ``v = (e_i * R + 2**23) >> 24``, ``q = min(v, 255) - 128``.

The buffer has ``banks`` banks of ``2**ceil(log2(max_len))`` int8 (one write port, two read
ports). A, B, D and C work on different vectors at the same time; a bank is freed when C has
read its last element, and A accepts a new vector only while a bank is free.

Throughput and latency: with no backpressure each of A, B and C handles one element per cycle,
plus one idle cycle per vector in B and C; D needs 11 cycles per vector including hand-over;
a bank is held for about 3L + 18 cycles. A steady stream of length-L vectors therefore runs at
``max(L + 1, 11, (3L + 18) / banks)`` cycles per vector: L + 1 for L >= 16 with the default
4 banks (measured: 257 cycles for L = 256, 17 for L = 16, 11 for L <= 8). The last output
element of a lone vector leaves about 3L + 29 cycles after its first input element.

Multipliers are registered on both sides (``a * M0``: 8 x 31 bits, ``e * R``: 16 x 18 bits).
Backpressure on ``probs`` stalls stage C as a whole (one enable for all its registers).
"""

import math

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["SoftmaxUnit", "ExpUnit", "exp_table", "MAX_LEN_LIMIT", "EXP_LATENCY",
           "element_layout"]

#: Largest supported ``max_len``.
MAX_LEN_LIMIT = 1 << 16
#: Register stages of :class:`ExpUnit` (input to ``e``).
EXP_LATENCY = 6

# Arithmetic constants; tests/test_hw_softmax.py checks them against golden.softmax.
EXP_FRAC_BITS = 10
EXP_ONE_BITS = 15
RECIP_BITS = 32
OUT_SHIFT = RECIP_BITS - 8
RECIP_WIDTH = RECIP_BITS - EXP_ONE_BITS + 1        # R <= 2**17: 18 bits
#: Quotient bits the divider resolves per cycle (RECIP_WIDTH must be a multiple).
DIV_BITS = 2


def exp_table():
    """``round(2**15 * 2**(-r / 1024))`` for r < 1024: the constant ROM of :class:`ExpUnit`."""
    return [math.floor((1 << EXP_ONE_BITS) * 2.0 ** (-r / (1 << EXP_FRAC_BITS)) + 0.5)
            for r in range(1 << EXP_FRAC_BITS)]


def element_layout():
    return data.StructLayout({"data": signed(8), "last": 1})


def _round_shift(m, value, amount, name):
    """``(value + 2**(amount-1)) >> amount`` (round half up; ``amount == 0``: ``value``)."""
    res = Signal(len(value), name=name)
    m.d.comb += res.eq(Mux(amount == 0, value,
                           ((value >> (amount - 1)[:len(amount)]) + 1) >> 1))
    return res


class ExpUnit(wiring.Component):
    """``e = 2**15 * 2**-(u / 1024)`` for ``u = a * s * log2(e)``, ``a = mx - x`` (golden steps 1-3).

    Pipelined, :data:`EXP_LATENCY` stages, every register advances only while ``en`` is high.
    ``tag`` travels alongside the data unchanged. Requires ``mx >= x``.
    """

    def __init__(self, tag_width=1):
        self.tag_width = tag_width
        super().__init__({
            "en": In(1),
            "valid": In(1),
            "x": In(signed(8)),
            "mx": In(signed(8)),
            "tag": In(tag_width),
            "multiplier": In(31),
            "right_shift": In(5),
            "valid_out": Out(1),
            "tag_out": Out(tag_width),
            "e": Out(EXP_ONE_BITS + 1),
        })

    def elaborate(self, platform):
        m = Module()
        rom = m.submodules.rom = Memory(shape=unsigned(EXP_ONE_BITS + 1),
                                        depth=1 << EXP_FRAC_BITS, init=exp_table())
        rd = rom.read_port()
        en = self.en

        valid = [Signal(name=f"v{i}") for i in range(EXP_LATENCY)]
        tags = [Signal(self.tag_width, name=f"tag{i}") for i in range(EXP_LATENCY)]
        with m.If(en):
            m.d.sync += [valid[0].eq(self.valid), tags[0].eq(self.tag)]
            for i in range(1, EXP_LATENCY):
                m.d.sync += [valid[i].eq(valid[i - 1]), tags[i].eq(tags[i - 1])]

        # s1: a = mx - x, 0 .. 255
        a = Signal(8)
        # s2: registered product a * M0 (39 bits)
        p = Signal(8 + 31)
        # s3: SRDHM(a * 2**22, M0) = (a * M0 + 2**8) >> 9
        h = Signal(8 + 31 - 9 + 1)
        # s4: u = RDBPOT(h, right_shift); feeds the ROM address (read at the s4 -> s5 edge)
        u = Signal(len(h))
        # s5: ROM word and n = min(u >> 10, 17)
        n = Signal(range(18))
        # s6: e
        u_rnd = _round_shift(m, h, self.right_shift, "u_rnd")
        n_full = u >> EXP_FRAC_BITS
        with m.If(en):
            m.d.sync += [
                a.eq(self.mx - self.x),
                p.eq(a * self.multiplier),
                h.eq((p + (1 << 8)) >> 9),
                u.eq(u_rnd),
                n.eq(Mux(n_full > 17, 17, n_full)),
            ]
        m.d.comb += [rd.addr.eq(u[:EXP_FRAC_BITS]), rd.en.eq(en)]
        e_rnd = _round_shift(m, rd.data, n, "e_rnd")
        with m.If(en):
            m.d.sync += self.e.eq(e_rnd)
        m.d.comb += [self.valid_out.eq(valid[-1]), self.tag_out.eq(tags[-1])]
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
        Vector buffers (2 .. 8): vectors in flight at once. 4 keeps every stage busy.
    """

    def __init__(self, max_len=256, banks=4):
        _check_int("max_len", max_len, 1, MAX_LEN_LIMIT)
        _check_int("banks", banks, 2, 8)
        self.max_len = max_len
        self.banks = banks
        self.idx_bits = max(1, (max_len - 1).bit_length())
        self.sum_width = (max_len << EXP_ONE_BITS).bit_length()
        super().__init__({
            "logits": In(stream.Signature(element_layout())),
            "probs": Out(stream.Signature(element_layout())),
            "multiplier": In(31),
            "right_shift": In(5),
            "overflow": Out(1),
            "dropped": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        NB, L = self.banks, self.max_len
        IB = self.idx_bits
        SW = self.sum_width

        buf = m.submodules.buf = Memory(shape=signed(8), depth=NB << IB, init=[])
        wr = buf.write_port()
        rd_b = buf.read_port()
        rd_c = buf.read_port()

        # Descriptors between stages; NB entries each, so they never fill (at most NB
        # vectors are in flight, one per bank).
        desc_w = (NB - 1).bit_length() + IB + 8     # bank, last index, max
        fifo_ab = m.submodules.fifo_ab = SyncFIFO(width=desc_w, depth=NB)
        fifo_bc = m.submodules.fifo_bc = SyncFIFO(width=desc_w, depth=NB)
        fifo_bd = m.submodules.fifo_bd = SyncFIFO(width=SW, depth=NB)
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
        dropping = Signal()
        m.d.comb += inp.ready.eq(dropping | (free != 0))
        accept = inp.valid & inp.ready
        x_in = inp.payload.data
        new_max = Mux((wcount == 0) | (x_in > wmax), x_in, wmax)
        too_long = dropping | (wcount == L)
        a_desc = Signal(desc)
        # Strobes are plain expressions, not assignments under `m.If`: Icarus never evaluates
        # an `always @*` block whose inputs do not change after time 0 (they would stay X).
        m.d.comb += take.eq(accept & inp.payload.last & ~too_long)
        m.d.comb += [
            wr.addr.eq(Cat(wcount[:IB], wbank)),
            wr.data.eq(x_in),
            wr.en.eq(accept & ~too_long),
            a_desc.bank.eq(wbank),
            a_desc.last.eq(wcount),
            a_desc.max.eq(new_max),
            fifo_ab.w_data.eq(a_desc),
            fifo_ab.w_en.eq(take),
        ]
        with m.If(accept):
            with m.If(inp.payload.last):
                m.d.sync += [wcount.eq(0), dropping.eq(0)]
                with m.If(too_long):
                    m.d.sync += [self.overflow.eq(1), self.dropped.eq(self.dropped + 1)]
                with m.Else():
                    m.d.sync += wbank.eq(Mux(wbank == NB - 1, 0, wbank + 1))
            with m.Elif(too_long):
                m.d.sync += dropping.eq(1)
            with m.Else():
                m.d.sync += [wcount.eq(wcount + 1), wmax.eq(new_max)]

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
        m.d.comb += rd_b.addr.eq(Cat(b_idx, b_desc.bank))
        b_v1 = Signal()
        b_first1 = Signal()
        b_last1 = Signal()
        b_max1 = Signal(signed(8))
        m.d.sync += [b_v1.eq(b_active), b_first1.eq(b_idx == 0), b_last1.eq(b_is_last),
                     b_max1.eq(b_desc.max)]
        with m.If(b_active):
            m.d.sync += b_idx.eq(b_idx + 1)
            with m.If(b_is_last):
                m.d.sync += b_active.eq(0)

        exp_b = m.submodules.exp_b = ExpUnit(tag_width=2)
        m.d.comb += [
            exp_b.en.eq(1), exp_b.valid.eq(b_v1), exp_b.x.eq(rd_b.data), exp_b.mx.eq(b_max1),
            exp_b.tag.eq(Cat(b_first1, b_last1)),
            exp_b.multiplier.eq(self.multiplier), exp_b.right_shift.eq(self.right_shift),
        ]
        acc = Signal(SW)
        acc_next = Signal(SW)
        m.d.comb += acc_next.eq(Mux(exp_b.tag_out[0], 0, acc) + exp_b.e)
        with m.If(exp_b.valid_out):
            m.d.sync += acc.eq(acc_next)
        m.d.comb += [fifo_bd.w_data.eq(acc_next),
                     fifo_bd.w_en.eq(exp_b.valid_out & exp_b.tag_out[1])]

        # ---- Stage D: R = floor(2**32 / S), DIV_BITS quotient bits per cycle --------------
        # S >= 2**15 > 2**32 >> 18, so quotient bits 32..18 are zero and the partial remainder
        # starts at 2**14; bits 17..0 follow (the dividend has no further set bits). Restoring
        # division, DIV_BITS chained compare-subtract steps per cycle.
        qbits = RECIP_WIDTH                           # 18
        steps = -(-qbits // DIV_BITS)
        d_busy = Signal()
        d_done = Signal()
        d_div = Signal(SW)
        d_rem = Signal(SW + 1)
        d_q = Signal(qbits)
        d_step = Signal(range(steps))
        d_take = Signal()                             # C takes the quotient
        d_load = Signal()
        m.d.comb += [d_load.eq(~d_busy & ~d_done & fifo_bd.r_rdy), fifo_bd.r_en.eq(d_load)]
        rem = d_rem
        fits = []
        for j in range(DIV_BITS):
            trial = Signal(SW + 2, name=f"d_trial{j}")
            nxt = Signal(SW + 1, name=f"d_rem{j}")
            fit = Signal(name=f"d_fit{j}")
            m.d.comb += [trial.eq(Cat(0, rem) - d_div), fit.eq(~trial[-1]),
                         nxt.eq(Mux(fit, trial, Cat(0, rem)))]
            fits.append(fit)
            rem = nxt
        with m.If(d_load):
            m.d.sync += [d_busy.eq(1), d_div.eq(fifo_bd.r_data),
                         d_rem.eq(1 << (RECIP_BITS - qbits)), d_q.eq(0), d_step.eq(0)]
        with m.If(d_busy):
            m.d.sync += [d_rem.eq(rem), d_q.eq(Cat(*reversed(fits), d_q)),
                         d_step.eq(d_step + 1)]
            with m.If(d_step == steps - 1):
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
        c_recip = Signal(qbits)
        c_idx = Signal(IB)
        c_is_last = c_idx == c_desc.last
        c_load = Signal()
        m.d.comb += [c_load.eq(~c_active & fifo_bc.r_rdy & d_done), fifo_bc.r_en.eq(c_load),
                     d_take.eq(c_load), give.eq(adv & c_active & c_is_last)]
        with m.If(c_load):
            m.d.sync += [c_active.eq(1), c_desc.eq(fifo_bc.r_data), c_recip.eq(d_q),
                         c_idx.eq(0)]
        m.d.comb += [rd_c.addr.eq(Cat(c_idx, c_desc.bank)), rd_c.en.eq(adv)]
        c_v1 = Signal()
        c_last1 = Signal()
        c_max1 = Signal(signed(8))
        c_recip1 = Signal(qbits)
        with m.If(adv):
            m.d.sync += [c_v1.eq(c_active), c_last1.eq(c_is_last), c_max1.eq(c_desc.max),
                         c_recip1.eq(c_recip)]
            with m.If(c_active):
                m.d.sync += c_idx.eq(c_idx + 1)
                with m.If(c_is_last):
                    m.d.sync += c_active.eq(0)

        exp_c = m.submodules.exp_c = ExpUnit(tag_width=1 + qbits)
        m.d.comb += [
            exp_c.en.eq(adv), exp_c.valid.eq(c_v1), exp_c.x.eq(rd_c.data), exp_c.mx.eq(c_max1),
            exp_c.tag.eq(Cat(c_last1, c_recip1)),
            exp_c.multiplier.eq(self.multiplier), exp_c.right_shift.eq(self.right_shift),
        ]
        # Registered operands, registered product.
        mul_e = Signal(EXP_ONE_BITS + 1)
        mul_r = Signal(qbits)
        mul_v = Signal()
        mul_last = Signal()
        prod = Signal(EXP_ONE_BITS + 1 + qbits)
        prod_v = Signal()
        prod_last = Signal()
        v = Signal(len(prod) - OUT_SHIFT + 1)
        m.d.comb += v.eq((prod + (1 << (OUT_SHIFT - 1))) >> OUT_SHIFT)
        with m.If(adv):
            m.d.sync += [
                mul_e.eq(exp_c.e), mul_r.eq(exp_c.tag_out[1:]), mul_v.eq(exp_c.valid_out),
                mul_last.eq(exp_c.tag_out[0]),
                prod.eq(mul_e * mul_r), prod_v.eq(mul_v), prod_last.eq(mul_last),
                o_valid.eq(prod_v),
                out.payload.last.eq(prod_last),
                out.payload.data.eq(Mux(v > 255, 255, v) - 128),
            ]
        return m
