"""ELTWISE execution engine: two ACT tensors -> per-element arithmetic -> ACT.

ELT_MODE 0 is TFLite's ADD (:mod:`golden.eltwise`, bit for bit): for every word of the
inputs A (IN_ADDR, IN_CW words per pixel, IN_ROW / IN_IMG pitches) and B (IN2_ADDR, the same
pixel pitch, IN2_ROW / IN2_IMG), every lane::

    a1  = RoundingDivideByPOT(SRDHM((a - IN_ZP) * 2**20, ELT_M1), ELT_S1)
    a2  = RoundingDivideByPOT(SRDHM((b - IN2_ZP) * 2**20, ELT_M2), ELT_S2)
    y   = requantize(a1 + a2, ELT_MO, ELT_SO, OUT_ZP, QMIN, QMAX)   (+ the table: USE_LUT)

written to the same word of the output (OUT_ADDR, OUT_CW = IN_CW, OUT_ROW / OUT_IMG). The
last line runs on the CONV engine's requantizer (and activation table), which the engine
borrows: it sends the sums on ``acc`` with the constant ``params`` and takes the int8
``result`` back (:class:`hw.conv_engine.ConvEngine`'s ``ext_*`` ports). Because ``(v * 2**20)``
with ``|v| <= 255`` times a 31-bit multiplier, rounded half up by 2**31, is ``(v * m + 2**10)
>> 11``, each input's scaling is a 10 x 31-bit product (two 17 x 17 multipliers per lane),
shared by A and B: the engine reads A and B words alternately on one ACT port, one word per
cycle, so each lane's multiplier works every cycle and the engine writes one word every two
cycles.

Everything is checked before the first read (sizes, pitches, shifts (0..31), multipliers, int8
fields, regions inside ACT, the output disjoint from both inputs): ``Error.CONFIG`` /
``Error.ADDRESS`` otherwise. The pipeline never stalls (the requantizer is always ready when
its parameters are), so the cycle count is exact: see :mod:`npu.perf`.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .act_memory import READ_LATENCY as ACT_LATENCY
from .act_memory import banks
from .dma import TensorWalker
from .isa import Error, Reg
from .pe import RegisteredMultiplier
from .requantizer import acc_layout, params_layout, result_layout
from .sizes import (SIZE_BITS, ProductSteps, addr_bits, aligned, engine_fsm, pixel_shift,
                    regions_disjoint, streaming_engine_members, tensor_end)

__all__ = ["EltwiseEngine", "SETUP_STEPS", "SETUP_DEPS", "PIPELINE"]

#: The setup products (destinations in issue order) and their dependencies.
SETUP_STEPS = ("a_total", "b_total", "out_total", "last_row", "a_last_row", "b_last_row")
SETUP_DEPS = [(), (), (), (), (), ()]
#: Register stages of a word from the ACT read data to the requantizer's input: lane
#: offsets, the multiplier (3), the partial-product sum, the rounding of the high product,
#: the two halves of RoundingDivideByPOT, the sum of the pair.
PIPELINE = 1 + RegisteredMultiplier.STAGES + 1 + 1 + 2 + 1
LEFT_SHIFT = 20


class EltwiseEngine(wiring.Component):
    def __init__(self, cols, act_depth, rows=1, dsp="generic"):
        self.cols, self.act_depth, self.nbanks, self.dsp = cols, act_depth, banks(rows), dsp
        aw = addr_bits(act_depth)
        self.walk_a, self.walk_b = TensorWalker(aw), TensorWalker(aw)
        self.writer = TensorWalker(aw)
        super().__init__({
            **streaming_engine_members(cols, act_depth),
            "acc": Out(stream.Signature(acc_layout(cols))),
            "params": Out(stream.Signature(params_layout(cols))),
            "result": In(stream.Signature(result_layout(cols))),
            "lend": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.walk_a, m.submodules.walk_b = self.walk_a, self.walk_b
        m.submodules.writer = self.writer
        g, sizes, checks = self._setup(m)
        progress = self._read(m, g)
        self._lanes(m, g, progress)
        self._write(m, g, progress)
        self._control(m, sizes, checks, progress)
        return m

    def _reg(self, r):
        return self.cfg[r]

    # ---- setup -------------------------------------------------------------------------
    def _setup(self, m):
        reg = self._reg
        g = SimpleNamespace(**{n: Signal(32, name=n) for n in SETUP_STEPS})
        factors = {"a_total": (reg(Reg.IN_IMG), reg(Reg.BATCH)),
                   "b_total": (reg(Reg.IN2_IMG), reg(Reg.BATCH)),
                   "out_total": (reg(Reg.OUT_IMG), reg(Reg.BATCH)),
                   "last_row": (reg(Reg.OUT_ROW), reg(Reg.IN_H) - 1),
                   "a_last_row": (reg(Reg.IN_ROW), reg(Reg.IN_H) - 1),
                   "b_last_row": (reg(Reg.IN2_ROW), reg(Reg.IN_H) - 1)}
        sizes = ProductSteps([(getattr(g, n), *factors[n]) for n in SETUP_STEPS], SETUP_DEPS,
                             dsp=self.dsp)
        size_regs = [Reg.IN_H, Reg.IN_W, Reg.IN_CW, Reg.BATCH]
        int8 = [Reg.IN_ZP, Reg.IN2_ZP, Reg.OUT_ZP, Reg.QMIN, Reg.QMAX, Reg.ELT_SO]
        sizes_ok = (Cat(*[(reg(r) != 0) & (reg(r) < (1 << SIZE_BITS)) for r in size_regs]).all()
                    & Cat(*[(reg(r) < 128) | (reg(r) >= (1 << 32) - 128) for r in int8]).all()
                    & (reg(Reg.QMIN)[:8].as_signed() <= reg(Reg.QMAX)[:8].as_signed())
                    & (reg(Reg.ELT_MODE) == 0) & (reg(Reg.USE_LUT) <= 1)
                    & (reg(Reg.OUT_CW) == reg(Reg.IN_CW))
                    & (reg(Reg.ELT_S1) <= 31) & (reg(Reg.ELT_S2) <= 31)
                    & (reg(Reg.ELT_SO)[:8].as_signed() <= 0)
                    & (reg(Reg.ELT_SO)[:8].as_signed() >= -31)
                    & ~reg(Reg.ELT_M1)[31] & ~reg(Reg.ELT_M2)[31] & ~reg(Reg.ELT_MO)[31])
        g.shift, pow2 = pixel_shift(m, reg(Reg.IN_CW), "cw")
        pitch_ok = Signal()
        m.d.sync += pitch_ok.eq(pow2 & Cat(*[aligned(m, reg(r), reg(Reg.IN_CW), r.name.lower())
                                             for r in (Reg.IN_ROW, Reg.IN_IMG, Reg.IN2_ROW,
                                                       Reg.IN2_IMG, Reg.OUT_ROW,
                                                       Reg.OUT_IMG)]).all())
        last_col = Signal(32)
        m.d.sync += last_col.eq((reg(Reg.IN_W) - 1)[:SIZE_BITS] << g.shift)
        ends = {}
        for name, addr, total, img, last_row in (
                ("a", Reg.IN_ADDR, g.a_total, Reg.IN_IMG, g.a_last_row),
                ("b", Reg.IN2_ADDR, g.b_total, Reg.IN2_IMG, g.b_last_row),
                ("out", Reg.OUT_ADDR, g.out_total, Reg.OUT_IMG, g.last_row)):
            ends[name] = tensor_end(m, reg(addr), total, reg(img), last_row, last_col,
                                    reg(Reg.IN_CW), name)
        inside = Cat(*[e <= self.act_depth for e in ends.values()]).all()
        disjoint = [regions_disjoint(m, self.nbanks, reg(addr), ends[n], g.shift,
                                     reg(Reg.OUT_ADDR), ends["out"], g.shift)
                    for n, addr in (("a", Reg.IN_ADDR), ("b", Reg.IN2_ADDR))]
        checks = [(pitch_ok, Error.CONFIG), (inside & disjoint[0] & disjoint[1], Error.ADDRESS)]
        return g, sizes, (sizes_ok, checks)

    # ---- reads: A and B alternately on one port ----------------------------------------------
    def _read(self, m, g):
        """Walk A and B together, reading A's word then B's, one read per cycle."""
        reg = self._reg
        wa, wb = self.walk_a, self.walk_b
        p = SimpleNamespace(reading=Signal(), turn_b=Signal(), in_done=Signal())
        for walk, addr, row, img in ((wa, Reg.IN_ADDR, Reg.IN_ROW, Reg.IN_IMG),
                                     (wb, Reg.IN2_ADDR, Reg.IN2_ROW, Reg.IN2_IMG)):
            m.d.comb += [walk.geometry.base.eq(reg(addr)), walk.geometry.batch.eq(reg(Reg.BATCH)),
                         walk.geometry.h.eq(reg(Reg.IN_H)), walk.geometry.w.eq(reg(Reg.IN_W)),
                         walk.geometry.groups.eq(reg(Reg.IN_CW)),
                         walk.geometry.cw.eq(reg(Reg.IN_CW)), walk.geometry.row.eq(reg(row)),
                         walk.geometry.img.eq(reg(img))]
        issue = p.reading
        m.d.comb += [self.act_rd_en.eq(issue),
                     self.act_rd_addr.eq(Mux(p.turn_b, wb.addr, wa.addr)),
                     self.act_rd_shift.eq(g.shift),
                     wa.step.eq(issue & ~p.turn_b), wb.step.eq(issue & p.turn_b)]
        with m.If(issue):
            m.d.sync += p.turn_b.eq(~p.turn_b)
            with m.If(p.turn_b & wb.last):
                m.d.sync += [p.reading.eq(0), p.in_done.eq(1)]
        # Which word comes back: a tag per cycle of the ACT read.
        p.arrive_valid = Signal(ACT_LATENCY)
        p.arrive_b = Signal(ACT_LATENCY)
        m.d.sync += [p.arrive_valid.eq(Cat(issue, p.arrive_valid[:-1])),
                     p.arrive_b.eq(Cat(p.turn_b, p.arrive_b[:-1]))]
        p.on_start = [p.reading.eq(1), p.turn_b.eq(0), p.in_done.eq(0)]
        return p

    # ---- the lanes: offsets, scaling, rounding, the pair's sum -------------------------------
    def _lanes(self, m, g, p):
        """Per lane: v = word - zero point; SRDHM(v * 2**20, M) = (v * M + 2**10) >> 11 (a
        10 x 31-bit product from two 17 x 17 multipliers); RoundingDivideByPOT by the input's
        shift; the A value held until its B partner arrives, then their sum to ``acc``."""
        reg = self._reg
        C = self.cols
        valid = p.arrive_valid[-1]
        is_b = p.arrive_b[-1]
        word = data.ArrayLayout(signed(8), C)(self.act_rd_data)
        # The per-input constants, selected by the word's tag (registers: stable).
        zp = Mux(is_b, reg(Reg.IN2_ZP)[:8].as_signed(), reg(Reg.IN_ZP)[:8].as_signed())
        mult = Mux(is_b, reg(Reg.ELT_M2), reg(Reg.ELT_M1))
        # Stage V: the offsets and the multiplier halves.
        v = Signal(data.ArrayLayout(signed(10), C))
        m_lo = Signal(signed(17))
        m_hi = Signal(signed(17))
        tags = [Signal(2, name=f"tag{n}") for n in range(PIPELINE)]     # (valid, is_b)
        m.d.sync += [v[j].eq(word[j] - zp) for j in range(C)]
        m.d.sync += [m_lo.eq(mult[:16]), m_hi.eq(mult[16:31]), tags[0].eq(Cat(valid, is_b))]
        for n in range(1, PIPELINE):
            m.d.sync += tags[n].eq(tags[n - 1])
        shift = Mux(tags[5][1], reg(Reg.ELT_S2), reg(Reg.ELT_S1))[:5]
        sums = Signal(data.ArrayLayout(signed(32), C))
        held = Signal(data.ArrayLayout(signed(32), C))
        for j in range(C):
            lo = RegisteredMultiplier(10, 17, self.dsp)
            hi = RegisteredMultiplier(10, 17, self.dsp)
            m.submodules[f"mul_lo{j}"], m.submodules[f"mul_hi{j}"] = lo, hi
            m.d.comb += [lo.a.eq(v[j]), lo.b.eq(m_lo), lo.ce.eq(1),
                         hi.a.eq(v[j]), hi.b.eq(m_hi), hi.ce.eq(1)]
            prod = Signal(signed(42), name=f"prod{j}")
            high = Signal(signed(31), name=f"high{j}")
            m.d.sync += [prod.eq((hi.p << 16) + lo.p),
                         high.eq((prod + (1 << (10))) >> 11)]
            # RoundingDivideByPOT(high, shift): half away from zero.
            q = Signal(signed(31), name=f"q{j}")
            rem = Signal(31, name=f"rem{j}")
            thr = Signal(31, name=f"thr{j}")
            mask = (Const(1, 32) << shift) - 1
            m.d.sync += [q.eq(high >> shift), rem.eq(high & mask),
                         thr.eq((mask >> 1) + (high < 0))]
            scaled = Signal(signed(32), name=f"scaled{j}")
            m.d.sync += scaled.eq(q + (rem > thr))
            with m.If(tags[-2][0] & ~tags[-2][1]):
                m.d.sync += held[j].eq(scaled)
            m.d.sync += sums[j].eq(held[j] + scaled)
        out_valid = Signal()
        m.d.sync += out_valid.eq(tags[-2][0] & tags[-2][1])
        m.d.comb += [self.acc.valid.eq(out_valid), self.acc.payload.data.eq(sums),
                     self.acc.payload.last.eq(1)]
        # The requantizer's parameters: bias 0, the output multiplier and shift in every
        # lane, the output zero point and clamp; always valid (every word is a frame).
        par = self.params.payload
        m.d.comb += [self.params.valid.eq(1),
                     par.zero_point.eq(reg(Reg.OUT_ZP)[:8].as_signed()),
                     par.qmin.eq(reg(Reg.QMIN)[:8].as_signed()),
                     par.qmax.eq(reg(Reg.QMAX)[:8].as_signed()),
                     par.rounding.eq(0)]        # TFLite ADD rounds its output twice
        for j in range(C):
            m.d.comb += [par.bias[j].eq(0), par.m0[j].eq(reg(Reg.ELT_MO)),
                         par.shift[j].eq(reg(Reg.ELT_SO)[:8].as_signed())]

    # ---- writes ------------------------------------------------------------------------------
    def _write(self, m, g, p):
        reg = self._reg
        wr = self.writer
        p.out_done = Signal()
        m.d.comb += [wr.geometry.base.eq(reg(Reg.OUT_ADDR)), wr.geometry.batch.eq(reg(Reg.BATCH)),
                     wr.geometry.h.eq(reg(Reg.IN_H)), wr.geometry.w.eq(reg(Reg.IN_W)),
                     wr.geometry.groups.eq(reg(Reg.IN_CW)), wr.geometry.cw.eq(reg(Reg.OUT_CW)),
                     wr.geometry.row.eq(reg(Reg.OUT_ROW)), wr.geometry.img.eq(reg(Reg.OUT_IMG)),
                     self.result.ready.eq(1), wr.step.eq(self.result.valid)]
        m.d.comb += [self.act_wr_en.eq(self.result.valid & ~p.out_done),
                     self.act_wr_addr.eq(wr.addr), self.act_wr_shift.eq(g.shift),
                     self.act_wr_data.eq(self.result.payload.data.as_value())]
        with m.If(self.result.valid & wr.last):
            m.d.sync += p.out_done.eq(1)
        p.on_start.append(p.out_done.eq(0))

    def _control(self, m, sizes, checks, p):
        sizes_ok, registered = checks

        def enter_run():
            m.d.comb += [self.walk_a.start.eq(1), self.walk_b.start.eq(1),
                         self.writer.start.eq(1)]
            m.d.sync += p.on_start

        def run_state():
            m.d.comb += self.lend.eq(1)
            with m.If(p.out_done):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"

        engine_fsm(m, self, sizes, sizes_ok, registered, enter_run, run_state)
