"""One output-stationary processing element (PE) of the systolic array.

Contract
--------
Every cycle the PE registers its operand inputs and forwards them: ``a`` and the control flags
to the right-hand neighbour, ``b`` to the one below. The product goes through a pipeline of
:attr:`ProcessingElement.PRODUCT_STAGES` (4) registers: input, multiplier and output (the three
register stages of an FPGA DSP block), then a fabric register beside the accumulator, so the
route from the DSP block to the adder is a path of its own; the accumulator is updated only on
``valid`` beats:

* ``last`` ends a dot product: the finished sum is copied into ``result``, ``done`` pulses for
  one cycle, the cycle in which ``result`` first shows it, and the accumulator is cleared (a
  synchronous reset of its flip-flops), so the next valid beat starts a new dot product. The
  accumulator is zero after reset and after every ``last``, so no "first" flag is needed and no
  LUT sits between the accumulator and its adder.

``result`` holds until the next ``last``, so the accumulator can start the next tile at once
(the fill and drain of one tile overlap the next). Arithmetic: int8 x int8 -> int16 product,
int32 accumulation, modulo 2**32 (the golden model and the feeders keep K small enough that it
never wraps).

Timing: operands at the inputs in cycle t reach the outputs ``a_out``/``b_out`` in t+1, and a
``last`` beat in cycle t shows in ``result`` (with ``done``) in cycle
t + ``PRODUCT_STAGES`` + 1 (= t+5).

Multiplier implementations (``dsp`` argument), all with the same cycle behaviour:

* ``"generic"``: ``a * b`` with ``PRODUCT_STAGES`` plain registers (simulation, Yosys generic
  synthesis, iCE40 where ``synth_ice40 -dsp`` maps it onto an SB_MAC16, ASIC flows);
* ``"ecp5"``: a Lattice ECP5 ``MULT18X18D`` instantiated directly with its input, pipeline and
  output registers enabled (``synth_ecp5`` does not pack fabric registers into the DSP, and a
  DSP used combinationally limits the array to about 125 MHz), then one fabric register.
"""

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, ResetSignal, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ProcessingElement", "DSP_KINDS", "Ecp5Mult18", "RegisteredMultiplier"]

OPERAND = signed(8)
PRODUCT = signed(16)
ACCUMULATOR = signed(32)

#: Multiplier implementations a PE (and everything built from PEs) accepts as ``dsp``.
DSP_KINDS = ("generic", "ecp5")


def check_dsp(dsp):
    if dsp not in DSP_KINDS:
        raise ValueError(f"dsp must be one of {', '.join(DSP_KINDS)}, got {dsp!r}")
    return dsp


class ProcessingElement(wiring.Component):
    #: Register stages between the operand inputs and the product that is accumulated:
    #: DSP input registers, multiplier pipeline register, DSP output register, fabric register.
    PRODUCT_STAGES = 4

    a: In(OPERAND)
    b: In(OPERAND)
    valid: In(1)
    last: In(1)

    a_out: Out(OPERAND)
    b_out: Out(OPERAND)
    valid_out: Out(1)
    last_out: Out(1)

    result: Out(ACCUMULATOR)
    done: Out(1)

    def __init__(self, dsp="generic"):
        self.dsp = check_dsp(dsp)
        super().__init__()

    def elaborate(self, platform):
        m = Module()

        # Systolic forwarding.
        m.d.sync += [
            self.a_out.eq(self.a),
            self.b_out.eq(self.b),
            self.valid_out.eq(self.valid),
            self.last_out.eq(self.last),
        ]

        # Stages 1 .. PRODUCT_STAGES: the product pipeline, the flags delayed alike.
        if self.dsp == "ecp5":
            product = self._ecp5_product(m)
        else:
            product = self._generic_product(m)
        flags = Cat(self.valid_out, self.last_out)  # stage 1
        # The accumulator's clear (reset, or the end of a dot product) is a register of its
        # own, computed a stage early, so it drives the flip-flops' reset input directly.
        clear = Signal(init=1)
        for n in range(self.PRODUCT_STAGES - 1):
            if n == self.PRODUCT_STAGES - 2:
                m.d.sync += clear.eq(ResetSignal() | (flags[0] & flags[1]))
            delayed = Signal(2, name=f"flags_d{n + 2}")
            m.d.sync += delayed.eq(flags)
            flags = delayed
        p_valid, p_last = flags[0], flags[1]

        # Accumulate; a finished sum moves to `result` and the accumulator restarts from 0.
        acc = Signal(ACCUMULATOR, reset_less=True)
        total = Signal(ACCUMULATOR)
        m.d.comb += total.eq(acc + product)
        m.d.sync += self.done.eq(p_valid & p_last)
        with m.If(clear):
            m.d.sync += acc.eq(0)
        with m.Elif(p_valid):
            m.d.sync += acc.eq(total)
        with m.If(p_valid & p_last):
            m.d.sync += self.result.eq(total)
        return m

    def _generic_product(self, m):
        # Stage 1 is the forwarding register (a_out/b_out), as a DSP's input register would
        # hold the same value.
        stage = Signal(PRODUCT, name="product_d2", reset_less=True)
        m.d.sync += stage.eq(self.a_out * self.b_out)
        for n in range(self.PRODUCT_STAGES - 2):
            nxt = Signal(PRODUCT, name=f"product_d{n + 3}", reset_less=True)
            m.d.sync += nxt.eq(stage)
            stage = nxt
        return stage

    def _ecp5_product(self, m):
        assert self.PRODUCT_STAGES >= 3, "MULT18X18D has input, pipeline and output registers"
        m.submodules.mult = mult = Ecp5Mult18(8, 8)
        m.d.comb += [mult.a.eq(self.a), mult.b.eq(self.b), mult.ce.eq(1)]
        product = mult.p[:16].as_signed()
        for n in range(self.PRODUCT_STAGES - 3):
            nxt = Signal(PRODUCT, name=f"product_d{n + 4}", reset_less=True)
            m.d.sync += nxt.eq(product)
            product = nxt
        return product


class Ecp5Mult18(wiring.Component):
    """A Lattice ECP5 ``MULT18X18D`` with its input, pipeline and output registers enabled:
    ``p`` = ``a * b`` (signed, sign-extended to 18 bits) of 3 ``ce`` cycles earlier.

    ``synth_ecp5`` does not pack fabric registers into the DSP, and a DSP used
    combinationally costs about 4 ns; with its own registers it closes timing on its own."""

    def __init__(self, a_width, b_width):
        if not (1 <= a_width <= 18 and 1 <= b_width <= 18):
            raise ValueError(f"MULT18X18D operands are at most 18 bits, got {a_width} x {b_width}")
        super().__init__({"a": In(signed(a_width)), "b": In(signed(b_width)), "ce": In(1),
                          "p": Out(signed(a_width + b_width))})

    def elaborate(self, platform):
        m = Module()
        p = Signal(36)
        a, b = self.a, self.b
        ports = {}
        for n in range(18):
            ports[f"i_A{n}"] = a[min(n, len(a) - 1)]        # sign-extended to 18 bits
            ports[f"i_B{n}"] = b[min(n, len(b) - 1)]
            ports[f"i_C{n}"] = Const(0)
        for n in range(36):
            ports[f"o_P{n}"] = p[n]
        # Only clock/enable/reset 0 are used; the others stay unconnected (tying them to
        # constants leaves nextpnr with unroutable constant arcs). The registers are never
        # reset: the flags that qualify the product are.
        m.submodules.mult = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK="CLK0", p_REG_INPUTB_CLK="CLK0",
            p_REG_PIPELINE_CLK="CLK0", p_REG_OUTPUT_CLK="CLK0",
            p_REG_INPUTC_CLK="NONE", p_GSR="DISABLED", p_RESETMODE="SYNC",
            p_CLK0_DIV="ENABLED", p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED",
            p_CAS_MATCH_REG="FALSE", p_HIGHSPEED_CLK="NONE",
            i_CLK0=ClockSignal(), i_CE0=self.ce, i_RST0=Const(0),
            i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0), i_SOURCEB=Const(0),
            **ports)
        m.d.comb += self.p.eq(p[:len(self.p)])
        return m


class RegisteredMultiplier(wiring.Component):
    """``p`` = ``a * b`` (signed) of :attr:`STAGES` (3) ``ce`` cycles earlier, for any target:
    ``dsp="ecp5"`` is an :class:`Ecp5Mult18` (operands up to 18 bits), ``"generic"`` a
    multiplier between an input register and two output registers (what a DSP block's
    registers do; tools that retime or pack registers can use them)."""

    STAGES = 3

    def __init__(self, a_width, b_width, dsp="generic"):
        self.dsp = check_dsp(dsp)
        self.a_width, self.b_width = a_width, b_width
        if dsp == "ecp5" and not (a_width <= 18 and b_width <= 18):
            raise ValueError(f"MULT18X18D operands are at most 18 bits, got {a_width} x {b_width}")
        super().__init__({"a": In(signed(a_width)), "b": In(signed(b_width)), "ce": In(1),
                          "p": Out(signed(a_width + b_width))})

    def elaborate(self, platform):
        m = Module()
        if self.dsp == "ecp5":
            m.submodules.mult = mult = Ecp5Mult18(self.a_width, self.b_width)
            m.d.comb += [mult.a.eq(self.a), mult.b.eq(self.b), mult.ce.eq(self.ce),
                         self.p.eq(mult.p)]
            return m
        a = Signal.like(self.a, name="a_d1", reset_less=True)
        b = Signal.like(self.b, name="b_d1", reset_less=True)
        p2 = Signal.like(self.p, name="p_d2", reset_less=True)
        p3 = Signal.like(self.p, name="p_d3", reset_less=True)
        with m.If(self.ce):
            m.d.sync += [a.eq(self.a), b.eq(self.b), p2.eq(a * b), p3.eq(p2)]
        m.d.comb += self.p.eq(p3)
        return m
