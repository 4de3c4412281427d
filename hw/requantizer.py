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

``(p + nudge)`` truncated toward zero equals ``(p + 2**30) >> 31`` (floor) for either sign of
``p``, so SRDHM is one adder and a fixed shift. The 32 x 32 multiply is split into two
32 x 16 partial products in one stage and summed in the next.

Pipeline and throughput
-----------------------
Seven register stages (latency 7 cycles); the whole pipeline advances whenever its last stage
is empty or ``result.ready`` is high, so it accepts one beat (one element per lane) per cycle
in steady state and holds everything under backpressure.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.quant import INT32_MAX, INT32_MIN, MAX_SHIFT, MIN_SHIFT

__all__ = ["Requantizer", "MAX_LANES", "LATENCY", "acc_layout", "params_layout",
           "result_layout"]

MAX_LANES = 64
LATENCY = 7


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
    """

    def __init__(self, lanes=4):
        check_lanes(lanes)
        self.lanes = lanes
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

        with m.If(par.valid & par.ready):
            bad = par.payload.qmin > par.payload.qmax
            for i in range(L):
                sh = par.payload.shift[i]
                bad = bad | (sh > MAX_SHIFT) | (sh < MIN_SHIFT)
            with m.If(bad):
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
        zp = carry("zp", p.zero_point, 6)[-1]
        qmin = carry("qmin", p.qmin, 6)[-1]
        qmax = carry("qmax", p.qmax, 6)[-1]
        last = carry("last", acc.payload.last, LATENCY)[-1]

        out_data = []
        for i in range(L):
            sh = p.shift[i]
            left_in = Mux(sh > 0, Mux(sh > MAX_SHIFT, MAX_SHIFT, sh), 0)[:3]
            right_in = Mux(sh < 0, Mux(sh < MIN_SHIFT, -MIN_SHIFT, -sh), 0)[:5]

            # S0: bias add, shift split.
            x = stage(f"x_{i}", signed(32), acc.payload.data[i] + p.bias[i])
            left = stage(f"left_{i}", unsigned(3), left_in)
            right = carry(f"right_{i}", stage(f"right0_{i}", unsigned(5), right_in), 4)[-1]
            m0 = carry(f"m0_{i}", stage(f"m0a_{i}", signed(32), p.m0[i]), 1)[-1]

            # S1: saturating left shift.
            wide = Signal(signed(40), name=f"wide_{i}")
            m.d.comb += wide.eq(x << left)
            xs = stage(f"xs_{i}", signed(32),
                       Mux(wide > INT32_MAX, INT32_MAX, Mux(wide < INT32_MIN, INT32_MIN, wide)))

            # S2: two 32 x 16 partial products (m0 = hi * 2**16 + lo, lo unsigned).
            lo = stage(f"plo_{i}", signed(49), xs * m0[:16])
            hi = stage(f"phi_{i}", signed(48), xs * m0[16:].as_signed())
            ovf = stage(f"ovf_{i}", unsigned(1), (xs == INT32_MIN) & (m0 == INT32_MIN))

            # S3: full product.
            prod = stage(f"prod_{i}", signed(64), (hi << 16) + lo)
            ovf3 = stage(f"ovf3_{i}", unsigned(1), ovf)

            # S4: SRDHM rounding.
            rounded = Signal(signed(65), name=f"rnd_{i}")
            m.d.comb += rounded.eq(prod + (1 << 30))
            h = stage(f"h_{i}", signed(32), Mux(ovf3, INT32_MAX, rounded[31:63].as_signed()))

            # S5: RDBPOT (rounding arithmetic right shift).
            mask = Signal(unsigned(32), name=f"mask_{i}")
            m.d.comb += mask.eq((Const(1, unsigned(33)) << right) - 1)
            rem = Signal(unsigned(32), name=f"rem_{i}")
            thr = Signal(unsigned(32), name=f"thr_{i}")
            m.d.comb += [rem.eq(h.as_unsigned() & mask),
                         thr.eq((mask >> 1) + h[31])]
            y = stage(f"y_{i}", signed(33), (h >> right) + (rem > thr))

            # S6: zero point and saturation.
            z = Signal(signed(34), name=f"z_{i}")
            m.d.comb += z.eq(y + zp)
            q = stage(f"q_{i}", signed(8), Mux(z > qmax, qmax, Mux(z < qmin, qmin, z)))
            out_data.append(q)

        for i in range(L):
            m.d.comb += res.payload.data[i].eq(out_data[i])
        m.d.comb += [res.payload.last.eq(last), res.valid.eq(valid[-1])]
        return m
