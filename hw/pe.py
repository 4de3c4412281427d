"""One output-stationary processing element (PE) of the systolic array.

Contract
--------
Every cycle the PE registers its operand inputs and forwards them: ``a`` and the control flags
to the right-hand neighbour, ``b`` to the one below. Products are pipelined one stage; the
accumulator is updated only on ``valid`` beats:

* ``first`` starts a new dot product (the accumulator restarts from the product);
* ``last`` ends it: the finished sum is copied into ``result`` and ``done`` pulses for one
  cycle, the cycle in which ``result`` first shows it.

``result`` holds until the next ``last``, so the accumulator can start the next tile at once
(the fill and drain of one tile overlap the next). Arithmetic: int8 x int8 -> int16 product,
int32 accumulation, modulo 2**32 (the golden model and the feeders keep K small enough that it
never wraps).

Timing: operands at the inputs in cycle t reach the outputs ``a_out``/``b_out`` in t+1, and a
``last`` beat in cycle t shows in ``result`` (with ``done``) in cycle t+2.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ProcessingElement"]

OPERAND = signed(8)
ACCUMULATOR = signed(32)


class ProcessingElement(wiring.Component):
    a: In(OPERAND)
    b: In(OPERAND)
    valid: In(1)
    first: In(1)
    last: In(1)

    a_out: Out(OPERAND)
    b_out: Out(OPERAND)
    valid_out: Out(1)
    first_out: Out(1)
    last_out: Out(1)

    result: Out(ACCUMULATOR)
    done: Out(1)

    def elaborate(self, platform):
        m = Module()

        # Systolic forwarding.
        m.d.sync += [
            self.a_out.eq(self.a),
            self.b_out.eq(self.b),
            self.valid_out.eq(self.valid),
            self.first_out.eq(self.first),
            self.last_out.eq(self.last),
        ]

        # Stage 1: registered product (maps onto a DSP's pipeline register).
        product = Signal(signed(16))
        p_valid = Signal()
        p_first = Signal()
        p_last = Signal()
        m.d.sync += [
            product.eq(self.a * self.b),
            p_valid.eq(self.valid),
            p_first.eq(self.first),
            p_last.eq(self.last),
        ]

        # Stage 2: accumulate; a finished sum moves to `result`.
        acc = Signal(ACCUMULATOR)
        total = Signal(ACCUMULATOR)
        m.d.comb += total.eq(Mux(p_first, 0, acc) + product)
        m.d.sync += self.done.eq(p_valid & p_last)
        with m.If(p_valid):
            m.d.sync += acc.eq(total)
            with m.If(p_last):
                m.d.sync += self.result.eq(total)
        return m
