"""Start-of-instruction size arithmetic shared by the engines.

Engines compute the sizes they must check (``K = KH*KW*CIN``, region lengths ...) with one
shared, pipelined 32 x 16 multiplier instead of a multiplier per product, and check them in
registered steps, so that none of this start-up logic limits the clock.
"""

from amaranth.hdl import Cat, Const, Signal, Value, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from .act_memory import SHIFT_BITS
from .isa import Error, Reg
from .pe import RegisteredMultiplier

__all__ = ["ProductSteps", "SIZE_BITS", "STEP_LATENCY", "CHECK_SETTLE", "step_schedule",
           "setup_cycles",
           "engine_fsm", "addr_bits", "cfg_layout", "streaming_engine_members",
           "act_write_members", "pixel_shift", "aligned", "tensor_end", "regions_disjoint"]


def addr_bits(depth):
    """Address width of a memory of ``depth`` words."""
    return max(1, (depth - 1).bit_length())


def cfg_layout():
    """The configuration registers (``Reg``) as the engines see them."""
    return data.ArrayLayout(unsigned(32), len(Reg))


def act_write_members(cols, act_depth):
    """An engine's ACT write port (hw.act_memory): enable, word address, the tensor's pixel
    shift, data."""
    return {"act_wr_en": Out(1), "act_wr_addr": Out(addr_bits(act_depth)),
            "act_wr_shift": Out(SHIFT_BITS), "act_wr_data": Out(8 * cols)}


def streaming_engine_members(cols, act_depth):
    """Ports of an engine that streams ACT words through a unit and writes them back to ACT
    (POOL, SOFTMAX): control, one ACT read port and the ACT write port."""
    return {
        "cfg": In(cfg_layout()),
        "start": In(1),
        "busy": Out(1),
        "done": Out(1),
        "error": Out(4),
        "act_rd_en": Out(1),
        "act_rd_addr": Out(addr_bits(act_depth)),
        "act_rd_shift": Out(SHIFT_BITS),
        "act_rd_data": In(8 * cols),
        **act_write_members(cols, act_depth),
    }


def tensor_end(m, addr, batch_span, img, last_row, last_col, groups, name):
    """Registered end (one past the last word) of a tensor walk: ``addr + batch_span - img +
    last_row + last_col + groups``, where ``batch_span = BATCH * img``, ``last_row = (H - 1)
    * row`` and ``last_col = (W - 1) * cw``; in three registered adds."""
    a, b, end = (Signal(34, name=f"{name}_{n}") for n in ("a", "b", "end"))
    m.d.sync += [a.eq(addr + groups + last_col), b.eq(batch_span - img + last_row),
                 end.eq(a + b)]
    return end


def regions_disjoint(m, nbanks, in_addr, in_end, in_shift, out_addr, out_end, out_shift):
    """Registered: the input and output regions share no ACT bank row. Each is widened to
    whole groups of ``nbanks`` pixels (the unit in which tensors of different pixel shifts
    share the banks, see hw.act_memory) before they are compared."""
    k = (nbanks - 1).bit_length()
    in_unit, out_unit = Signal(34, name="in_unit"), Signal(34, name="out_unit")
    in_lo, in_hi, out_lo, out_hi = (Signal(34, name=n) for n in
                                    ("in_lo", "in_hi", "out_lo", "out_hi"))
    m.d.sync += [in_unit.eq(Const(1, 34) << (in_shift + k)),
                 out_unit.eq(Const(1, 34) << (out_shift + k)),
                 in_lo.eq(in_addr & ~(in_unit - 1)),
                 in_hi.eq((in_end + in_unit - 1) & ~(in_unit - 1)),
                 out_lo.eq(out_addr & ~(out_unit - 1)),
                 out_hi.eq((out_end + out_unit - 1) & ~(out_unit - 1))]
    ok = Signal()
    m.d.sync += ok.eq((out_hi <= in_lo) | (in_hi <= out_lo))
    return ok


def pixel_shift(m, words, name):
    """Registered ``(shift, ok)`` of a pixel pitch register: ``words = 2**shift`` with
    ``shift < 2**SHIFT_BITS``, else ``ok`` is low. Two register levels (the register is
    stable for the whole instruction): its low bits and whether the rest is zero, then the
    one-hot decode."""
    n = 1 << SHIFT_BITS
    low = Signal(n, name=f"{name}_low")
    high_zero = Signal(name=f"{name}_high_zero")
    m.d.sync += [low.eq(words[:n]), high_zero.eq(words[n:] == 0)]
    shift = Signal(SHIFT_BITS, name=f"{name}_shift")
    ok = Signal(name=f"{name}_pow2")
    with m.Switch(low):
        for i in range(n):
            with m.Case(1 << i):
                m.d.sync += [shift.eq(i), ok.eq(high_zero)]
        with m.Default():
            m.d.sync += [shift.eq(0), ok.eq(0)]
    return shift, ok


def aligned(m, value, words, name):
    """Registered: ``value`` is a multiple of ``words`` (a power of two, from a register that
    is stable for the whole instruction); the mask ``words - 1`` is registered first."""
    mask = Signal(32, name=f"{name}_mask")
    ok = Signal(name=f"{name}_aligned")
    m.d.sync += [mask.eq(words - 1), ok.eq((value & mask) == 0)]
    return ok

SIZE_BITS = 16          # sizes (H, W, K*, stride, pad, batch, channel words) are < 2**16

#: Cycles between the end of SETUP and CHECK: an engine's checks may use intermediate values
#: registered in up to CHECK_SETTLE - 1 levels after the setup products. The deepest is the
#: regions' disjointness: an end address as two registered adds (:func:`tensor_end`), then
#: its rounding to whole bank groups and the comparison (:func:`regions_disjoint`): four.
#: (With three, a second ELTWISE compared its output against the previous one's input ends,
#: and failed with ADDRESS; a check that passes on stale values would be worse.)
CHECK_SETTLE = 5


def setup_cycles(deps):
    """Cycles of :func:`engine_fsm`'s start-up states (CHECK_SIZES, CHECK_SIZES2, SETUP,
    SETTLE, CHECK) for setup products with dependencies ``deps``; the cycle model uses it."""
    return 2 + step_schedule(deps)[1] + CHECK_SETTLE + 1


#: Cycles from a ProductSteps step's issue to its destination being readable: operand
#: registers (the multipliers' input registers), multiplier pipeline and output registers,
#: the partial-product sum, the destination register.
STEP_LATENCY = 5


def step_schedule(deps):
    """Greedy list schedule of products with dependencies (``deps[n]``: indices of earlier
    steps that step ``n`` reads): returns ``(issue cycle of each step, total cycles)``. One
    product issues per cycle; a step issues :data:`STEP_LATENCY` cycles after the steps it
    reads, so independent products overlap in the pipeline."""
    issue = [None] * len(deps)
    cycle = 0
    while None in issue:
        for n, ds in enumerate(deps):
            if issue[n] is None and all(issue[d] is not None and issue[d] + STEP_LATENCY <= cycle
                                        for d in ds):
                issue[n] = cycle
                break
        cycle += 1
    return issue, (max(issue) + STEP_LATENCY if issue else 0)


class ProductSteps:
    """``steps`` is a list of ``(destination, a, b)``: ``destination = a * b``, computed by one
    pipelined 32 x 16 multiplier (two 16 x 16 partial products) while ``run`` is high,
    starting after ``restart``; ``a`` may be any 32-bit value (earlier destinations
    included), ``b`` must be < 2**16. ``deps`` declares, per step, the earlier steps it reads
    (checked against the expressions); the steps are scheduled by :func:`step_schedule` and
    take :attr:`cycles` cycles in all. ``overflow`` is set when any product leaves 32 bits;
    ``last`` is high during the final cycle. Every path is short (a multiplexer, a
    registered multiplier, one adder), for timing."""

    def __init__(self, steps, deps, dsp="generic"):
        if len(deps) != len(steps):
            raise ValueError("ProductSteps: one deps entry per step")
        dsts = [dst for dst, _, _ in steps]
        for n, ((_, a, b), ds) in enumerate(zip(steps, deps)):
            reads = {i for i, dst in enumerate(dsts) if any(
                sig is dst for v in (a, b) for sig in Value.cast(v)._rhs_signals())}
            if reads != set(ds) or any(d >= n for d in ds):
                raise ValueError(f"ProductSteps step {n}: declared deps {sorted(ds)}, "
                                 f"reads {sorted(reads)}")
        self.steps = steps
        self.dsp = dsp
        self.issue, self.cycles = step_schedule(deps)
        self.cycle = Signal(range(self.cycles + 1))
        self.overflow = Signal()
        self.last = Signal()

    def elaborate_into(self, m, run, restart):
        mul_a = Signal(32)
        mul_b = Signal(SIZE_BITS)
        lo = RegisteredMultiplier(17, 17, self.dsp)
        hi = RegisteredMultiplier(17, 17, self.dsp)
        m.submodules += [lo, hi]
        m.d.comb += [lo.a.eq(mul_a[:16]), lo.b.eq(mul_b), lo.ce.eq(1),
                     hi.a.eq(mul_a[16:]), hi.b.eq(mul_b), hi.ce.eq(1),
                     self.last.eq(self.cycle == self.cycles - 1)]
        product = Signal(48)
        m.d.sync += product.eq((hi.p[:32] << 16) + lo.p[:32])
        with m.If(restart):
            m.d.sync += [self.cycle.eq(0), self.overflow.eq(0)]
        with m.Elif(run):
            m.d.sync += self.cycle.eq(self.cycle + 1)
            with m.Switch(self.cycle):
                for (dst, a, b), c in zip(self.steps, self.issue):
                    with m.Case(c):
                        m.d.comb += [mul_a.eq(a), mul_b.eq(b)]
            with m.Switch(self.cycle):
                for (dst, a, b), c in zip(self.steps, self.issue):
                    with m.Case(c + STEP_LATENCY - 1):
                        m.d.sync += [dst.eq(product[:32]),
                                     self.overflow.eq(self.overflow | (product[32:] != 0))]


def engine_fsm(m, engine, sizes, sizes_ok, checks, enter_run, run_state):
    """The control FSM every engine shares:

    IDLE -> CHECK_SIZES, CHECK_SIZES2 (registered ``sizes_ok``, or end with ``Error.CONFIG``)
    -> SETUP (the products of ``sizes``, ``sizes.cycles``) -> SETTLE (:data:`CHECK_SETTLE`
    cycles) -> CHECK (a product overflow is ``Error.CONFIG``; then each registered
    ``(ok, error)`` of ``checks`` in order) -> RUN, calling ``enter_run()`` in the cycle it
    gets there; the whole start-up takes :func:`setup_cycles` cycles;
    ``run_state()`` describes RUN (it ends with ``m.next = "IDLE"`` and a ``done`` pulse). An
    instruction that fails a check ends (``done`` with ``error``) before touching memory.
    ``engine`` has ``start``, ``busy``, ``done`` and ``error``. Returns ``setup_run``, high
    during SETUP (with ``sizes.cycle`` counting its cycles), for work that may start before
    the checks because it writes no memory."""
    setup_run = Signal()
    restart = Signal()
    sizes.elaborate_into(m, setup_run, restart)

    def finish(code):
        m.d.comb += [engine.done.eq(1), engine.error.eq(code)]
        m.next = "IDLE"

    # Every check is registered (and recomputed each cycle: its inputs are stable once SETUP
    # ended); CHECK_SETTLE cycles let registered intermediate values of the checks settle.
    sizes_ok_r = Signal()
    oks = Signal(len(checks))
    m.d.sync += [sizes_ok_r.eq(sizes_ok), oks.eq(Cat(*[ok for ok, _ in checks]))]
    settle = Signal(range(CHECK_SETTLE + 1))

    with m.FSM():
        with m.State("IDLE"):
            with m.If(engine.start):
                m.next = "CHECK_SIZES"
        with m.State("CHECK_SIZES"):
            m.d.comb += [engine.busy.eq(1), restart.eq(1)]
            m.next = "CHECK_SIZES2"
        with m.State("CHECK_SIZES2"):
            m.d.comb += engine.busy.eq(1)
            with m.If(sizes_ok_r):
                m.next = "SETUP"
            with m.Else():
                finish(Error.CONFIG)
        with m.State("SETUP"):
            m.d.comb += [engine.busy.eq(1), setup_run.eq(1)]
            m.d.sync += settle.eq(0)
            with m.If(sizes.last):
                m.next = "SETTLE"
        with m.State("SETTLE"):
            m.d.comb += engine.busy.eq(1)
            m.d.sync += settle.eq(settle + 1)
            with m.If(settle == CHECK_SETTLE - 1):
                m.next = "CHECK"
        with m.State("CHECK"):
            m.d.comb += engine.busy.eq(1)
            with m.If(sizes.overflow):
                finish(Error.CONFIG)
            for n, (ok, code) in enumerate(checks):
                with m.Elif(~oks[n]):
                    finish(code)
            with m.Else():
                enter_run()
                m.next = "RUN"
        with m.State("RUN"):
            m.d.comb += engine.busy.eq(1)
            run_state()
    return setup_run
