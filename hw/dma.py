"""LOAD and STORE engines: AXI4-Stream beats to and from the accelerator's memories.

:class:`LoadEngine` takes ``count`` beats of ``8*C`` bits from its ``data`` stream:

* ACT / WGT: beat n is written to word ``addr + n``;
* PARAM: ``hw.isa.param_beats(C)`` beats make one entry (``hw.isa.param_entry_layout``:
  C int32 bias, C int32 M0, C int8 shift, little-endian, lane 0 first), written to entry
  ``addr + n``;
* LUT: ``ceil(256 / C)`` beats carry the 256 table bytes in index order (entry for input
  ``x`` at index ``x + 128``); ``addr`` and ``count`` are ignored.
* SM_EXP: ``hw.isa.sm_exp_beats(C)`` beats carry the softmax exp table's 256 little-endian
  int32 entries in index order (``sm_table``, one entry per 4 bytes; bit 31, always 0 in a
  valid table, is not stored); ``addr`` and ``count`` are ignored.

LUT and SM_EXP bytes are written one per cycle, each beat taking one cycle more to arrive
and one to finish: ``bytes + 2 * beats`` cycles.

:class:`StoreEngine` sends ACT words ``addr .. addr + count - 1`` on its ``data`` stream,
``last`` on the final beat, under backpressure, through a :class:`TensorReader`; ACT reads
take ``hw.act_memory.READ_LATENCY`` cycles. ACT words are addressed with the pixel shift of
their tensor (``shift``, see :mod:`hw.act_memory`). :class:`TensorReader` and
:class:`TensorWalker` also read the POOL and SOFTMAX engines' inputs, with row and image
pitches.

``abort`` returns the LoadEngine to idle at once (the sequencer stops a background LOAD when
another instruction fails).

Both latch their arguments when ``start`` pulses and check the range in the next two cycles
(registered, for timing): ``count >= 1`` and ``addr + count <= depth``, else they finish with
``Error.ADDRESS`` having touched nothing; the LoadEngine pulses ``accepted`` when the check
passes. ``done`` pulses for one cycle.
"""

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .activation import table_layout
from .softmax import table_entry_layout
from .act_memory import READ_LATENCY as ACT_LATENCY
from .act_memory import SHIFT_BITS
from .isa import SM_EXP_ENTRIES, SM_EXP_ENTRY_BYTES, Error, Mem, param_beats, param_entry_layout
from .sizes import SIZE_BITS, addr_bits

__all__ = ["LoadEngine", "StoreEngine", "TensorWalker", "TensorReader", "geometry_layout",
           "beat_layout", "LUT_BEATS"]


def beat_layout(cols):
    return data.StructLayout({"data": 8 * cols, "last": 1})


def LUT_BEATS(cols):
    return -(-256 // cols)


class LoadEngine(wiring.Component):
    def __init__(self, cols, act_depth, wgt_depth, param_depth):
        self.cols = cols
        self.depths = {Mem.ACT: act_depth, Mem.WGT: wgt_depth, Mem.PARAM: param_depth}
        super().__init__({
            "start": In(1),
            "abort": In(1),
            "accepted": Out(1),
            "mem": In(4),
            "addr": In(24),
            "count": In(24),
            "shift": In(SHIFT_BITS),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(4),
            "data": In(stream.Signature(beat_layout(cols))),
            "act_we": Out(1), "act_addr": Out(addr_bits(act_depth)),
            "act_shift": Out(SHIFT_BITS), "act_data": Out(8 * cols),
            "wgt_we": Out(1), "wgt_addr": Out(addr_bits(wgt_depth)), "wgt_data": Out(8 * cols),
            "prm_we": Out(1), "prm_addr": Out(addr_bits(param_depth)),
            "prm_data": Out(param_entry_layout(cols)),
            "lut_table": Out(stream.Signature(table_layout())),
            "sm_table": Out(stream.Signature(table_entry_layout())),
        })

    def elaborate(self, platform):
        m = Module()
        C = self.cols
        mem = Signal(4)
        shift = Signal(SHIFT_BITS)  # the ACT tensor's pixel shift
        ptr = Signal(25)            # next word / entry address
        left = Signal(25)           # words / entries still to write
        beats = param_beats(C)
        beat = Signal(range(beats))
        entry = Signal(8 * C * beats)      # the beats of one entry, the newest at the top
        lut_idx = Signal(11)        # byte of the LUT / SM_EXP table
        lut_last = Signal(11)       # its last byte
        lut_end = Signal()          # the last byte is written
        sm_low = Signal(8 * (SM_EXP_ENTRY_BYTES - 1))   # SM_EXP: an entry's bytes so far
        lut_word = Signal(data.ArrayLayout(unsigned(8), C))
        lut_lane = Signal(range(C))
        ok_r = Signal()
        end = Signal(26)            # addr + count, registered at the start (timing)

        take = self.data.valid & self.data.ready
        word = self.data.payload.data
        m.d.comb += [self.act_addr.eq(ptr), self.act_data.eq(word), self.act_shift.eq(shift),
                     self.wgt_addr.eq(ptr), self.wgt_data.eq(word),
                     self.prm_addr.eq(ptr),
                     self.prm_data.as_value().eq(Cat(entry[8 * C:], word))]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [mem.eq(self.mem), shift.eq(self.shift), ptr.eq(self.addr),
                                 left.eq(self.count),
                                 end.eq(self.addr + self.count), beat.eq(0), lut_idx.eq(0),
                                 lut_end.eq(0),
                                 lut_last.eq(Mux(self.mem == Mem.SM_EXP,
                                                 SM_EXP_ENTRIES * SM_EXP_ENTRY_BYTES - 1, 255))]
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += self.busy.eq(1)
                ok = Signal()
                with m.Switch(mem):
                    for kind, depth in self.depths.items():
                        with m.Case(kind):
                            m.d.comb += ok.eq((left != 0) & (end <= depth))
                    with m.Case(Mem.LUT, Mem.SM_EXP):
                        m.d.comb += ok.eq(1)
                m.d.sync += ok_r.eq(ok)     # registered: the check is a carry chain
                m.next = "CHECK2"
            with m.State("CHECK2"):
                m.d.comb += self.busy.eq(1)
                with m.If(ok_r):
                    m.d.comb += self.accepted.eq(1)
                    m.next = "RUN"
                with m.Else():
                    m.d.comb += [self.done.eq(1), self.error.eq(Error.ADDRESS)]
                    m.next = "IDLE"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.Switch(mem):
                    with m.Case(Mem.ACT, Mem.WGT):
                        m.d.comb += [self.data.ready.eq(1),
                                     self.act_we.eq(take & (mem == Mem.ACT)),
                                     self.wgt_we.eq(take & (mem == Mem.WGT))]
                        with m.If(take):
                            m.d.sync += [ptr.eq(ptr + 1), left.eq(left - 1)]
                            with m.If(left == 1):
                                m.next = "DONE"
                    with m.Case(Mem.PARAM):
                        m.d.comb += [self.data.ready.eq(1),
                                     self.prm_we.eq(take & (beat == beats - 1))]
                        with m.If(take):
                            # Little-endian assembly: the newest beat enters at the top.
                            m.d.sync += entry.eq(Cat(entry[8 * C:], word))
                            with m.If(beat == beats - 1):
                                m.d.sync += [beat.eq(0), ptr.eq(ptr + 1), left.eq(left - 1)]
                                with m.If(left == 1):
                                    m.next = "DONE"
                            with m.Else():
                                m.d.sync += beat.eq(beat + 1)
                    with m.Case(Mem.LUT, Mem.SM_EXP):
                        m.d.comb += self.data.ready.eq(1)
                        with m.If(take):
                            m.d.sync += [lut_word.eq(word), lut_lane.eq(0)]
                            m.next = "LUT_WRITE"
            with m.State("LUT_WRITE"):
                byte = lut_word[lut_lane]
                entry_done = lut_idx[:2] == SM_EXP_ENTRY_BYTES - 1
                m.d.comb += [self.busy.eq(1),
                             self.lut_table.valid.eq(mem == Mem.LUT),
                             self.lut_table.payload.index.eq(lut_idx[:8]),
                             self.lut_table.payload.value.eq(byte),
                             self.sm_table.valid.eq((mem == Mem.SM_EXP) & entry_done),
                             self.sm_table.payload.index.eq(lut_idx[2:]),
                             self.sm_table.payload.value.eq(Cat(sm_low, byte))]
                m.d.sync += [lut_idx.eq(lut_idx + 1), lut_lane.eq(lut_lane + 1),
                             sm_low.eq(Cat(sm_low[8:], byte))]
                with m.If(lut_idx == lut_last):
                    m.d.sync += lut_end.eq(1)
                with m.If((lut_lane == C - 1) | (lut_idx == lut_last)):
                    m.next = "LUT_NEXT"
            with m.State("LUT_NEXT"):
                m.d.comb += self.busy.eq(1)
                with m.If(lut_end):
                    m.next = "DONE"
                with m.Else():
                    m.next = "RUN"
            with m.State("DONE"):
                m.d.comb += [self.busy.eq(1), self.done.eq(1)]
                m.next = "IDLE"
        # abort = a synchronous reset of the whole engine (idle, nothing pending).
        return ResetInserter(self.abort)(m)


def geometry_layout():
    """A tensor walk (:class:`TensorWalker`): ``batch`` images of ``h`` rows of ``w`` pixels of
    ``groups`` words, from ``base``, with pitches ``cw`` (pixel), ``row`` and ``img`` words."""
    return data.StructLayout({"base": 32, "batch": SIZE_BITS, "h": SIZE_BITS,
                              "w": SIZE_BITS, "groups": SIZE_BITS, "cw": 32, "row": 32,
                              "img": 32})


class TensorWalker(wiring.Component):
    """The word addresses of a tensor in raster order: for each image, row, pixel, the
    ``groups`` words of the pixel. ``start`` loads the first address (the geometry must stay
    stable until the walk ends); each ``step`` moves to the next word; ``last`` is high on
    the final word. Incremental, for timing: no multiplier, and whether each counter is at
    its last value is kept in a register, decided one step ahead."""

    def __init__(self, addr_width):
        super().__init__({"geometry": In(geometry_layout()), "start": In(1), "step": In(1),
                          "addr": Out(addr_width), "last": Out(1)})

    def elaborate(self, platform):
        m = Module()
        geo = self.geometry
        names = ("groups", "w", "h", "batch")          # innermost first
        count = {n: Signal(SIZE_BITS, name=f"{n}_count") for n in names}
        # Per counter, registered from the (stable) geometry: is its bound 1, and bound - 2
        # (a counter one short of its last value moves to it on the next step).
        one = {n: Signal(name=f"{n}_is_1") for n in names}
        before_last = {n: Signal(SIZE_BITS, name=f"{n}_before_last") for n in names}
        end = {n: Signal(name=f"{n}_end") for n in names}       # count == bound - 1
        for n in names:
            m.d.sync += [one[n].eq(getattr(geo, n) == 1),
                         before_last[n].eq(getattr(geo, n) - 2)]
        pixel, row, img = (Signal(32, name=v) for v in ("pixel", "row_start", "img_start"))
        addr = Signal(32)
        m.d.comb += [self.addr.eq(addr), self.last.eq(Cat(*end.values()).all())]

        def restart(n):
            return [count[n].eq(0), end[n].eq(one[n])]

        def advance(n):
            return [count[n].eq(count[n] + 1), end[n].eq(count[n] == before_last[n])]

        with m.If(self.start):
            m.d.sync += [pixel.eq(geo.base), row.eq(geo.base), img.eq(geo.base),
                         addr.eq(geo.base)] + sum((restart(n) for n in names), [])
        with m.Elif(self.step):
            with m.If(~end["groups"]):
                m.d.sync += [addr.eq(addr + 1)] + advance("groups")
            with m.Elif(~end["w"]):
                m.d.sync += [pixel.eq(pixel + geo.cw), addr.eq(pixel + geo.cw)] + \
                    restart("groups") + advance("w")
            with m.Elif(~end["h"]):
                m.d.sync += [row.eq(row + geo.row), pixel.eq(row + geo.row),
                             addr.eq(row + geo.row)] + \
                    restart("groups") + restart("w") + advance("h")
            with m.Else():
                nxt = img + geo.img
                m.d.sync += [img.eq(nxt), row.eq(nxt), pixel.eq(nxt), addr.eq(nxt)] + \
                    restart("groups") + restart("w") + restart("h") + advance("batch")
        return m


class TensorReader(wiring.Component):
    """Streams the words of a tensor walk (:class:`TensorWalker`) out of ACT on ``data``,
    ``last`` on the final word, under backpressure; ACT reads take
    :data:`hw.act_memory.READ_LATENCY` cycles. ``start`` begins a walk of ``geometry`` (read
    with pixel shift ``shift``); ``done`` pulses the cycle after the last word was taken."""

    FIFO_DEPTH = ACT_LATENCY + 3

    def __init__(self, cols, act_depth):
        self.cols = cols
        aw = addr_bits(act_depth)
        super().__init__({
            "geometry": In(geometry_layout()), "shift": In(SHIFT_BITS),
            "start": In(1), "busy": Out(1), "done": Out(1),
            "data": Out(stream.Signature(beat_layout(cols))),
            "act_rd_en": Out(1), "act_rd_addr": Out(aw), "act_rd_shift": Out(SHIFT_BITS),
            "act_rd_data": In(8 * cols),
        })
        self.walker = TensorWalker(aw)

    def elaborate(self, platform):
        m = Module()
        C = self.cols
        walk = m.submodules.walker = self.walker
        fifo = m.submodules.fifo = SyncFIFO(width=8 * C + 1, depth=self.FIFO_DEPTH)
        reading = Signal()
        # Reads in flight (issued, data not yet in the FIFO), one bit per cycle of latency,
        # and the FIFO entries promised to them or holding data, counted in a register (for
        # timing: no adder of the FIFO level and the bits in flight).
        inflight = Signal(ACT_LATENCY)
        inflight_last = Signal(ACT_LATENCY)
        promised = Signal(range(self.FIFO_DEPTH + 1))
        issue = Signal()
        taken = Signal()
        m.d.comb += [
            walk.geometry.eq(self.geometry), walk.start.eq(self.start), walk.step.eq(issue),
            issue.eq(reading & (promised != self.FIFO_DEPTH)),
            taken.eq(self.data.valid & self.data.ready),
            self.act_rd_en.eq(issue), self.act_rd_addr.eq(walk.addr),
            self.act_rd_shift.eq(self.shift),
            fifo.w_en.eq(inflight[-1]),
            fifo.w_data.eq(Cat(self.act_rd_data, inflight_last[-1])),
            self.data.payload.as_value().eq(fifo.r_data),
            self.data.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.data.ready),
        ]
        m.d.sync += [inflight.eq(Cat(issue, inflight[:-1])),
                     inflight_last.eq(Cat(issue & walk.last, inflight_last[:-1])),
                     promised.eq(promised + issue - taken)]
        with m.If(self.start):
            m.d.sync += [reading.eq(1), self.busy.eq(1)]
        with m.Elif(issue & walk.last):
            m.d.sync += reading.eq(0)
        # done is registered: it pulses the cycle after the last word was taken.
        m.d.sync += self.done.eq(taken & self.data.payload.last)
        with m.If(self.done):
            m.d.sync += self.busy.eq(0)
        return m


class StoreEngine(wiring.Component):
    """STORE: ``count`` ACT words from ``addr`` (a tensor of pixel shift ``shift``) on
    ``data``, ``last`` on the final one. The range is checked first (2 registered cycles):
    ``count >= 1`` and ``addr + count <= depth``, else ``Error.ADDRESS``."""

    def __init__(self, cols, act_depth):
        self.cols = cols
        self.act_depth = act_depth
        aw = addr_bits(act_depth)
        super().__init__({
            "start": In(1),
            "addr": In(24),
            "count": In(24),
            "shift": In(SHIFT_BITS),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(4),
            "data": Out(stream.Signature(beat_layout(cols))),
            "act_rd_en": Out(1), "act_rd_addr": Out(aw), "act_rd_shift": Out(SHIFT_BITS),
            "act_rd_data": In(8 * cols),
        })
        self.reader = TensorReader(cols, act_depth)

    def elaborate(self, platform):
        m = Module()
        rd = m.submodules.reader = self.reader
        addr = Signal(24)
        count = Signal(24)
        shift = Signal(SHIFT_BITS)
        ok = Signal()
        end = Signal(26)            # addr + count, registered at the start (timing)
        # One image of one row of `count` one-word pixels: addr .. addr + count - 1.
        m.d.comb += [rd.geometry.base.eq(addr), rd.geometry.batch.eq(1), rd.geometry.h.eq(1),
                     rd.geometry.w.eq(count), rd.geometry.groups.eq(1), rd.geometry.cw.eq(1),
                     rd.shift.eq(shift)]
        wiring.connect(m, rd.data, wiring.flipped(self.data))
        m.d.comb += [self.act_rd_en.eq(rd.act_rd_en), self.act_rd_addr.eq(rd.act_rd_addr),
                     self.act_rd_shift.eq(rd.act_rd_shift), rd.act_rd_data.eq(self.act_rd_data)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [addr.eq(self.addr), count.eq(self.count), shift.eq(self.shift),
                                 end.eq(self.addr + self.count)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += ok.eq((count != 0) & (end <= self.act_depth))
                m.next = "CHECK2"
            with m.State("CHECK2"):
                m.d.comb += self.busy.eq(1)
                with m.If(ok):
                    m.d.comb += rd.start.eq(1)
                    m.next = "RUN"
                with m.Else():
                    m.d.comb += [self.done.eq(1), self.error.eq(Error.ADDRESS)]
                    m.next = "IDLE"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.If(rd.done):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m
