"""Pipelined N-lane requantizer: int32 accumulator (+ int32 bias) -> int8, bit-exact with
:func:`golden.quant.requantize`.

Streams
-------
``acc`` (in): one beat is ``lanes`` int32 accumulators (lane ``i`` = channel ``i`` of the
current channel group) and ``last``. A *frame* is the run of beats up to and including
``last``; every beat of a frame uses the same parameters.

``params`` (in): one beat per frame, per lane ``bias``, ``m0`` (int32, 0 .. 2**31-1 in the
golden contract) and ``shift`` (int8, ``MIN_SHIFT`` .. ``MAX_SHIFT``), plus per-frame
``zero_point``, ``qmin`` and ``qmax`` (int8). Per-tensor requantization gives every lane the
same ``m0``/``shift``. A params beat is held while its frame streams and is consumed with the
frame's ``last`` beat, like the bias stream of :mod:`hw.systolic`.

``result`` (out): one beat of ``lanes`` int8 per accumulator beat, in order, ``last`` copied.

``error`` (out): sticky until reset; set when an accepted params beat has a shift outside
``MIN_SHIFT .. MAX_SHIFT`` or ``qmin > qmax``. Such a beat is still processed (shift clamped
into range), so the streams never hang.

Arithmetic (see :mod:`golden.quant`; per lane)::

    x  = acc + bias                       (modulo 2**32; the golden refuses overflow)
    xs = clamp(x << max(shift, 0))        saturating left shift
    h  = SRDHM(xs, m0)                    = (xs*m0 + 2**30) >> 31, INT32_MAX if both INT32_MIN
    y  = RDBPOT(h, max(-shift, 0))
    q  = clamp(y + zero_point, qmin, qmax)

With the frame's ``rounding`` = 1 the product is rounded once instead (``rounding="single"``):
``y = round_half_away(xs*m0 / 2**(31 + right))``. ``h`` is then ``(xs*m0) >> 31`` (no nudge)
and the rounding decision adds the product's 31 low bits to RDBPOT's remainder: a negative
value exactly half a step above its floor stays there (away from zero) unless those bits are
not all zero; with no right shift, the low bits alone decide (bit 30 is half a step).

``(p + nudge)`` truncated toward zero equals ``(p + 2**30) >> 31`` (floor) for either sign of
``p``, so SRDHM is one rounding constant and a fixed shift.

Pipeline and throughput
-----------------------
:data:`LATENCY` (16) register stages, each a short path so that the unit closes timing at
150 MHz and more on an ECP5 (no stage has more than one carry chain or a barrel shifter):

* S0 bias add; the shift amounts split and clamped; S1 the left shift (39 bits); S2 the
  saturation (the 8 top bits all equal, else a bound);
* S3-S5 four 16 x 16 partial products of ``xs * m0`` (``xs = xh*2**16 + xl``,
  ``m0 = mh*2**16 + ml``, low halves unsigned), each a :class:`hw.pe.RegisteredMultiplier`:
  a MULT18X18D with its own three registers on ECP5 (``dsp="ecp5"``), a plain multiplier
  between registers elsewhere;
* S6 ``q = xl*ml + 2**30`` and ``mid = xh*ml + xl*mh``; S7 ``s1 = mid + (q >> 16)``;
  S8 ``h = 2*(xh*mh) + (s1 >> 15)`` = ``(xs*m0 + 2**30) >> 31`` (or INT32_MAX on the one
  overflow), and beside it RDBPOT's mask and thresholds decoded from ``shift``;
* S9 ``h >> right`` and the remainder; S10 the two threshold compares; S11 the rounding add;
  S12 the zero point; S13 ``z`` narrowed to 10 bits (or flagged far out of range); S14 the
  two clamp compares against the lane's own copy of qmin/qmax; S15 the clamp.

The whole pipeline advances whenever its last stage is empty or ``result.ready`` is high, so
it accepts one beat (one element per lane) per cycle in steady state and holds everything
under backpressure.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.quant import INT32_MAX, INT32_MIN, MAX_SHIFT, MIN_SHIFT

from .pe import RegisteredMultiplier, check_dsp

__all__ = ["Requantizer", "MAX_LANES", "LATENCY", "acc_layout", "params_layout",
           "result_layout"]

MAX_LANES = 64
LATENCY = 16


def acc_layout(lanes):
    return data.StructLayout({"data": data.ArrayLayout(signed(32), lanes), "last": 1})


def params_layout(lanes):
    # Field order = bit order: the AXI top maps this layout straight onto tdata.
    return data.StructLayout({
        "bias": data.ArrayLayout(signed(32), lanes),
        "m0": data.ArrayLayout(signed(32), lanes),
        "shift": data.ArrayLayout(signed(8), lanes),
        "zero_point": signed(8),
        "qmin": signed(8),
        "qmax": signed(8),
        # 1: one rounding of the product, half away from zero (golden.quant, rounding="single");
        # 0: SRDHM then RoundingDivideByPOT. A byte, so that tdata stays whole bytes.
        "rounding": 8,
    })


def result_layout(lanes):
    return data.StructLayout({"data": data.ArrayLayout(signed(8), lanes), "last": 1})


def check_lanes(lanes):
    if isinstance(lanes, bool) or not isinstance(lanes, int):
        raise ValueError(f"lanes must be an integer, got {lanes!r}")
    if not 1 <= lanes <= MAX_LANES:
        raise ValueError(f"lanes must be between 1 and {MAX_LANES}, got {lanes}")


class Requantizer(wiring.Component):
    """N-lane pipelined requantizer; see the module docstring for the contract.

    Parameters
    ----------
    lanes : int
        Elements per beat, 1 .. ``MAX_LANES``.
    dsp : str
        Multiplier implementation, :data:`hw.pe.DSP_KINDS` (same cycle behaviour for all).
    """

    def __init__(self, lanes=4, dsp="generic"):
        check_lanes(lanes)
        self.lanes = lanes
        self.dsp = check_dsp(dsp)
        super().__init__({
            "acc": In(stream.Signature(acc_layout(lanes))),
            "params": In(stream.Signature(params_layout(lanes))),
            "result": Out(stream.Signature(result_layout(lanes))),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        L = self.lanes
        acc, par, res = self.acc, self.params, self.result

        valid = [Signal(name=f"v{i}") for i in range(LATENCY)]
        en = Signal()
        m.d.comb += en.eq(~valid[-1] | res.ready)
        m.d.comb += [
            acc.ready.eq(en & par.valid),
            par.ready.eq(en & acc.valid & acc.payload.last),
        ]
        take = acc.valid & acc.ready

        # Parameter check, registered per lane first (it is wide: 2 compares per lane).
        p_take = Signal()
        p_bad = Signal(L + 1)
        m.d.sync += p_take.eq(par.valid & par.ready)
        m.d.sync += p_bad[L].eq(par.payload.qmin > par.payload.qmax)
        for i in range(L):
            sh = par.payload.shift[i]
            m.d.sync += p_bad[i].eq((sh > MAX_SHIFT) | (sh < MIN_SHIFT))
        with m.If(p_take & p_bad.any()):
            m.d.sync += self.error.eq(1)

        with m.If(en):
            m.d.sync += valid[0].eq(take)
            for i in range(1, LATENCY):
                m.d.sync += valid[i].eq(valid[i - 1])

        def stage(name, shape, value):
            """A pipeline register loaded with ``value`` whenever the pipeline advances."""
            reg = Signal(shape, name=name)
            with m.If(en):
                m.d.sync += reg.eq(value)
            return reg

        def carry(name, sig, stages):
            """``sig`` delayed along ``stages`` pipeline registers; returns the list."""
            out = []
            for s in range(stages):
                sig = stage(f"{name}_s{s}", sig.shape(), sig)
                out.append(sig)
            return out

        # Per-frame values travel with the data to the stage that uses them.
        p = par.payload
        zp = carry("zp", p.zero_point, 12)[-1]
        single = carry("single", p.rounding[0], 11)     # S0 .. S10
        qmin = carry("qmin", p.qmin, 13)     # S0 .. S12
        qmax = carry("qmax", p.qmax, 13)
        last = carry("last", acc.payload.last, LATENCY)[-1]

        out_data = []
        for i in range(L):
            sh = p.shift[i]
            left_in = Mux(sh > 0, Mux(sh > MAX_SHIFT, MAX_SHIFT, sh), 0)[:3]
            right_in = Mux(sh < 0, Mux(sh < MIN_SHIFT, -MIN_SHIFT, -sh), 0)[:5]

            # S0: bias add, shift split.
            x = stage(f"x_{i}", signed(32), acc.payload.data[i] + p.bias[i])
            left = stage(f"left_{i}", unsigned(3), left_in)
            right0 = stage(f"right0_{i}", unsigned(5), right_in)
            m0_0 = stage(f"m0_{i}", signed(32), p.m0[i])

            # S1: left shift.
            wide = stage(f"wide_{i}", signed(39), x << left)
            m0_1 = stage(f"m0b_{i}", signed(32), m0_0)

            # S2: saturation: wide fits int32 iff its 8 top bits are all equal.
            top = wide[31:39]
            fits = (top == 0) | (top == 0xFF)
            xs = stage(f"xs_{i}", signed(32),
                       Mux(fits, wide[:32], Mux(wide[38], INT32_MIN, INT32_MAX)))
            m0_2 = stage(f"m0c_{i}", signed(32), m0_1)

            # S3..S5: four 16 x 16 partial products (low halves unsigned: 17-bit operands).
            xl, xh = Cat(xs[:16], 0).as_signed(), xs[16:].as_signed()
            ml, mh = Cat(m0_2[:16], 0).as_signed(), m0_2[16:].as_signed()
            prods = {}
            for name, pa, pb in (("ll", xl, ml), ("hl", xh, ml), ("lh", xl, mh), ("hh", xh, mh)):
                mul = RegisteredMultiplier(17, 17, self.dsp)
                m.submodules[f"mul_{name}_{i}"] = mul
                m.d.comb += [mul.a.eq(pa), mul.b.eq(pb), mul.ce.eq(en)]
                prods[name] = mul.p
            ovf = carry(f"ovf_{i}", stage(f"ovf0_{i}", unsigned(1),
                        (xs == INT32_MIN) & (m0_2 == INT32_MIN)), 2)[-1]
            right = carry(f"right_{i}", right0, 8)      # S1 .. S8
            # RDBPOT's mask = 2**right - 1 and thresholds (mask >> 1) + 0 or 1, as bit patterns
            # decoded from `right` (no adder) beside h in S8: bit n of the mask is right > n.
            r7 = right[6]
            mask = stage(f"mask_{i}", unsigned(32), Cat(*[r7 > n for n in range(32)]))
            thr0 = carry(f"thr0_{i}", stage(f"thr0a_{i}", unsigned(32),
                                            Cat(*[r7 > n + 1 for n in range(32)])), 1)[-1]
            # (mask >> 1) + 1 = 2**(right-1), or 1 for right = 0
            thr1 = carry(f"thr1_{i}", stage(f"thr1a_{i}", unsigned(32),
                                            Cat(*[(r7 == n + 1) | ((r7 == 0) if n == 0 else 0)
                                                  for n in range(32)])), 1)[-1]

            # S6: q = xl*ml + 2**30 (>= 0; single rounding: no nudge), mid = xh*ml + xl*mh.
            q = stage(f"q_{i}", unsigned(34),
                      prods["ll"][:32] + Mux(single[5], 0, 1 << 30))
            mid = stage(f"mid_{i}", signed(35), prods["hl"] + prods["lh"])
            hh = stage(f"hh_{i}", signed(33), prods["hh"])
            ovf6 = stage(f"ovf6_{i}", unsigned(1), ovf)
            # S7: s1 = mid + (q >> 16)
            s1 = stage(f"s1_{i}", signed(36), mid + q[16:])
            hh7 = stage(f"hh7_{i}", signed(33), hh)
            ovf7 = stage(f"ovf7_{i}", unsigned(1), ovf6)
            # S8: h = 2*hh + (s1 >> 15), the low 32 bits (SRDHM always fits int32 but for the
            # one overflow case). Beside it, for single rounding, the low 31 bits of the
            # product: bit 30 and whether bits 0..29 are all zero.
            h = stage(f"h_{i}", signed(32),
                      Mux(ovf7, INT32_MAX, ((hh7 << 1) + (s1 >> 15))[:32]))
            q7 = stage(f"q7_{i}", unsigned(16), q[:16])
            low_bit30 = stage(f"lb30_{i}", unsigned(1), s1[14])
            low_rest = stage(f"lrest_{i}", unsigned(1), (s1[:14] != 0) | (q7 != 0))

            # S9: RDBPOT: shift and remainder; the sign, and for single rounding whether
            # there is no right shift and the product's low bits.
            shifted = stage(f"shifted_{i}", signed(32), h >> right[7])
            rem = stage(f"rem_{i}", unsigned(32), h.as_unsigned() & mask)
            neg9 = stage(f"neg0_{i}", unsigned(1), h[31])
            r0_9 = stage(f"r0a_{i}", unsigned(1), right[7] == 0)
            lb30_9 = stage(f"lb30c_{i}", unsigned(1), low_bit30)
            lrest_9 = stage(f"lrestc_{i}", unsigned(1), low_rest)
            # S10: both threshold compares (threshold + 1 for negative h), and for single
            # rounding a negative value exactly half a step above the floor (it rounds up,
            # toward zero, only if the product's low bits make it more than half); with no
            # right shift the whole remainder is the product's low 31 bits: half is bit 30.
            gt0 = stage(f"gt0_{i}", unsigned(1), rem > thr0)
            gt1 = stage(f"gt1_{i}", unsigned(1), rem > thr1)
            eq1 = stage(f"eq1_{i}", unsigned(1), rem == thr1)
            shifted10 = stage(f"shifted10_{i}", signed(32), shifted)
            neg = stage(f"neg_{i}", unsigned(1), neg9)
            r0 = stage(f"r0_{i}", unsigned(1), r0_9)
            low_up = stage(f"lowup_{i}", unsigned(1), Mux(neg9, lb30_9 & lrest_9, lb30_9))
            low_any = stage(f"lowany_{i}", unsigned(1), lb30_9 | lrest_9)
            # S11: rounding add.
            up_double = Mux(neg, gt1, gt0)
            up_single = Mux(r0, low_up, Mux(neg, gt1 | (eq1 & low_any), gt0))
            y = stage(f"y_{i}", signed(33),
                      shifted10 + Mux(single[-1], up_single, up_double))
            # S12: zero point.
            z = stage(f"z_{i}", signed(34), y + zp)
            # S13: z narrowed to 10 bits, or flagged far out of the int8 range; S14: the clamp
            # compares against this lane's copy of qmin/qmax; S15: the clamp.
            far = stage(f"far_{i}", unsigned(1), ~((z[9:] == 0) | (z[9:] == (1 << 25) - 1)))
            zneg = stage(f"zneg_{i}", unsigned(1), z[33])
            z10 = stage(f"z10_{i}", signed(10), z[:10])
            qmax13 = stage(f"qmaxl_{i}", signed(8), qmax[-1])     # S13, beside z10
            qmin13 = stage(f"qminl_{i}", signed(8), qmin[-1])
            over = stage(f"over_{i}", unsigned(1), Mux(far, ~zneg, z10 > qmax13))
            under = stage(f"under_{i}", unsigned(1), Mux(far, zneg, z10 < qmin13))
            z8 = stage(f"z8_{i}", signed(8), z10[:8])
            qmax14 = stage(f"qmax14_{i}", signed(8), qmax13)
            qmin14 = stage(f"qmin14_{i}", signed(8), qmin13)
            q_out = stage(f"qo_{i}", signed(8), Mux(over, qmax14, Mux(under, qmin14, z8)))
            out_data.append(q_out)

        for i in range(L):
            m.d.comb += res.payload.data[i].eq(out_data[i])
        m.d.comb += [res.payload.last.eq(last), res.valid.eq(valid[-1])]
        return m
