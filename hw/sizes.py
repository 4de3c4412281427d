"""Start-of-instruction size arithmetic shared by the engines.

Engines compute the sizes they must check (``K = KH*KW*CIN``, region lengths ...) with one
shared 32 x 16 multiplier, one product per cycle, instead of a multiplier per product.
"""

from amaranth.hdl import Signal

__all__ = ["ProductSteps", "SIZE_BITS"]

SIZE_BITS = 16          # sizes (H, W, K*, stride, pad, batch, channel words) are < 2**16


class ProductSteps:
    """``steps`` is a list of ``(destination, a, b)``: ``destination = a * b`` in that order, one
    per cycle while ``run`` is high, starting from step 0 after ``restart``. ``a`` may be any
    32-bit value (earlier destinations included), ``b`` must be < 2**16. ``overflow`` is set
    when any product leaves 32 bits; ``last`` is high during the final step."""

    def __init__(self, steps):
        self.steps = steps
        self.step = Signal(range(len(steps) + 1))
        self.overflow = Signal()
        self.last = Signal()

    def elaborate_into(self, m, run, restart):
        mul_a = Signal(32)
        mul_b = Signal(SIZE_BITS)
        product = Signal(48)
        m.d.comb += [product.eq(mul_a * mul_b), self.last.eq(self.step == len(self.steps) - 1)]
        with m.If(restart):
            m.d.sync += [self.step.eq(0), self.overflow.eq(0)]
        with m.Elif(run):
            for n, (dst, a, b) in enumerate(self.steps):
                with m.If(self.step == n):
                    m.d.comb += [mul_a.eq(a), mul_b.eq(b)]
                    m.d.sync += dst.eq(product[:32])
            m.d.sync += [self.step.eq(self.step + 1),
                         self.overflow.eq(self.overflow | (product[32:] != 0))]
