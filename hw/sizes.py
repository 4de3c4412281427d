"""Start-of-instruction size arithmetic shared by the engines.

Engines compute the sizes they must check (``K = KH*KW*CIN``, region lengths ...) with one
shared 32 x 16 multiplier, one product per cycle, instead of a multiplier per product.
"""

from amaranth.hdl import Signal, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from .isa import Error, Reg

__all__ = ["ProductSteps", "SIZE_BITS", "engine_fsm", "addr_bits", "cfg_layout",
           "streaming_engine_members"]


def addr_bits(depth):
    """Address width of a memory of ``depth`` words."""
    return max(1, (depth - 1).bit_length())


def cfg_layout():
    """The configuration registers (``Reg``) as the engines see them."""
    return data.ArrayLayout(unsigned(32), len(Reg))


def streaming_engine_members(cols, act_depth):
    """Ports of an engine that streams ACT words through a unit and writes them back to ACT
    (POOL, SOFTMAX): control, one ACT read port and the ACT write port."""
    aw = addr_bits(act_depth)
    return {
        "cfg": In(cfg_layout()),
        "start": In(1),
        "busy": Out(1),
        "done": Out(1),
        "error": Out(4),
        "act_rd_addr": Out(aw),
        "act_rd_data": In(8 * cols),
        "act_wr_en": Out(1),
        "act_wr_addr": Out(aw),
        "act_wr_data": Out(8 * cols),
    }

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


def engine_fsm(m, engine, sizes, sizes_ok, checks, enter_run, run_state):
    """The control FSM every engine shares:

    IDLE -> CHECK_SIZES (``sizes_ok`` or end with ``Error.CONFIG``) -> SETUP (the products of
    ``sizes``) -> CHECK (a product overflow is ``Error.CONFIG``; then each ``(ok, error)`` of
    ``checks`` in order) -> RUN, calling ``enter_run()`` in the cycle it gets there;
    ``run_state()`` describes RUN (it ends with ``m.next = "IDLE"`` and a ``done`` pulse). An
    instruction that fails a check ends (``done`` with ``error``) before touching memory.
    ``engine`` has ``start``, ``busy``, ``done`` and ``error``."""
    setup_run = Signal()
    restart = Signal()
    sizes.elaborate_into(m, setup_run, restart)

    def finish(code):
        m.d.comb += [engine.done.eq(1), engine.error.eq(code)]
        m.next = "IDLE"

    with m.FSM():
        with m.State("IDLE"):
            with m.If(engine.start):
                m.next = "CHECK_SIZES"
        with m.State("CHECK_SIZES"):
            m.d.comb += [engine.busy.eq(1), restart.eq(1)]
            with m.If(sizes_ok):
                m.next = "SETUP"
            with m.Else():
                finish(Error.CONFIG)
        with m.State("SETUP"):
            m.d.comb += [engine.busy.eq(1), setup_run.eq(1)]
            with m.If(sizes.last):
                m.next = "CHECK"
        with m.State("CHECK"):
            m.d.comb += engine.busy.eq(1)
            with m.If(sizes.overflow):
                finish(Error.CONFIG)
            for ok, code in checks:
                with m.Elif(~ok):
                    finish(code)
            with m.Else():
                enter_run()
                m.next = "RUN"
        with m.State("RUN"):
            m.d.comb += engine.busy.eq(1)
            run_state()
