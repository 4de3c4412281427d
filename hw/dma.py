"""LOAD and STORE engines: AXI4-Stream beats to and from the accelerator's memories.

:class:`LoadEngine` takes ``count`` beats of ``8*C`` bits from its ``data`` stream:

* ACT / WGT: beat n is written to word ``addr + n``;
* PARAM: ``hw.isa.param_beats(C)`` beats make one entry (``hw.isa.param_entry_layout``:
  C int32 bias, C int32 M0, C int8 shift, little-endian, lane 0 first), written to entry
  ``addr + n``;
* LUT: ``ceil(256 / C)`` beats carry the 256 table bytes in index order (entry for input
  ``x`` at index ``x + 128``); ``addr`` and ``count`` are ignored.

:class:`StoreEngine` sends ACT words ``addr .. addr + count - 1`` on its ``data`` stream,
``last`` on the final beat, under backpressure; ACT reads take ``hw.ram.RAM_LATENCY`` (2)
cycles.

``abort`` returns the LoadEngine to idle at once (the sequencer stops a background LOAD when
another instruction fails).

Both latch their arguments when ``start`` pulses and check the range in the next two cycles
(registered, for timing): ``count >= 1`` and ``addr + count <= depth``, else they finish with
``Error.ADDRESS`` having touched nothing; the LoadEngine pulses ``accepted`` when the check
passes. ``done`` pulses for one cycle.
"""

from amaranth.hdl import Cat, Module, ResetInserter, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .activation import table_layout
from .isa import Error, Mem, param_beats, param_entry_layout
from .ram import RAM_LATENCY
from .sizes import addr_bits

__all__ = ["LoadEngine", "StoreEngine", "beat_layout", "LUT_BEATS"]


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
            "busy": Out(1),
            "done": Out(1),
            "error": Out(4),
            "data": In(stream.Signature(beat_layout(cols))),
            "act_we": Out(1), "act_addr": Out(addr_bits(act_depth)), "act_data": Out(8 * cols),
            "wgt_we": Out(1), "wgt_addr": Out(addr_bits(wgt_depth)), "wgt_data": Out(8 * cols),
            "prm_we": Out(1), "prm_addr": Out(addr_bits(param_depth)),
            "prm_data": Out(param_entry_layout(cols)),
            "lut_table": Out(stream.Signature(table_layout())),
        })

    def elaborate(self, platform):
        m = Module()
        C = self.cols
        mem = Signal(4)
        ptr = Signal(25)            # next word / entry address
        left = Signal(25)           # words / entries still to write
        beats = param_beats(C)
        beat = Signal(range(beats))
        entry = Signal(8 * C * beats)      # the beats of one entry, the newest at the top
        lut_idx = Signal(9)
        lut_word = Signal(data.ArrayLayout(unsigned(8), C))
        lut_lane = Signal(range(C))
        ok_r = Signal()
        end = Signal(26)            # addr + count, registered at the start (timing)

        take = self.data.valid & self.data.ready
        word = self.data.payload.data
        m.d.comb += [self.act_addr.eq(ptr), self.act_data.eq(word),
                     self.wgt_addr.eq(ptr), self.wgt_data.eq(word),
                     self.prm_addr.eq(ptr),
                     self.prm_data.as_value().eq(Cat(entry[8 * C:], word))]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [mem.eq(self.mem), ptr.eq(self.addr), left.eq(self.count),
                                 end.eq(self.addr + self.count), beat.eq(0), lut_idx.eq(0)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += self.busy.eq(1)
                ok = Signal()
                with m.Switch(mem):
                    for kind, depth in self.depths.items():
                        with m.Case(kind):
                            m.d.comb += ok.eq((left != 0) & (end <= depth))
                    with m.Case(Mem.LUT):
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
                    with m.Case(Mem.LUT):
                        m.d.comb += self.data.ready.eq(1)
                        with m.If(take):
                            m.d.sync += [lut_word.eq(word), lut_lane.eq(0)]
                            m.next = "LUT_WRITE"
            with m.State("LUT_WRITE"):
                m.d.comb += [self.busy.eq(1),
                             self.lut_table.valid.eq(lut_idx < 256),
                             self.lut_table.payload.index.eq(lut_idx[:8]),
                             self.lut_table.payload.value.eq(lut_word[lut_lane])]
                m.d.sync += [lut_idx.eq(lut_idx + 1), lut_lane.eq(lut_lane + 1)]
                with m.If((lut_lane == C - 1) | (lut_idx == 255)):
                    m.next = "LUT_NEXT"
            with m.State("LUT_NEXT"):
                m.d.comb += self.busy.eq(1)
                with m.If(lut_idx >= 256):
                    m.next = "DONE"
                with m.Else():
                    m.next = "RUN"
            with m.State("DONE"):
                m.d.comb += [self.busy.eq(1), self.done.eq(1)]
                m.next = "IDLE"
        # abort = a synchronous reset of the whole engine (idle, nothing pending).
        return ResetInserter(self.abort)(m)


class StoreEngine(wiring.Component):
    FIFO_DEPTH = 4

    def __init__(self, cols, act_depth):
        self.cols = cols
        self.act_depth = act_depth
        super().__init__({
            "start": In(1),
            "addr": In(24),
            "count": In(24),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(4),
            "data": Out(stream.Signature(beat_layout(cols))),
            "act_addr": Out(addr_bits(act_depth)),
            "act_data": In(8 * cols),
        })

    def elaborate(self, platform):
        m = Module()
        C = self.cols
        fifo = m.submodules.fifo = SyncFIFO(width=8 * C + 1, depth=self.FIFO_DEPTH)
        ptr = Signal(25)
        to_read = Signal(25)
        to_send = Signal(25)
        # ACT reads take RAM_LATENCY (2) cycles: two reads in flight.
        st_ok = Signal()
        end = Signal(26)            # addr + count, registered at the start (timing)
        inflight = Signal(RAM_LATENCY)
        inflight_last = Signal(RAM_LATENCY)
        issue = Signal()
        m.d.comb += [
            issue.eq((to_read != 0) &
                     (fifo.level + sum(inflight) < self.FIFO_DEPTH)),
            self.act_addr.eq(ptr),
            fifo.w_en.eq(inflight[-1]),
            fifo.w_data.eq(Cat(self.act_data, inflight_last[-1])),
            self.data.payload.as_value().eq(fifo.r_data),
            self.data.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.data.ready),
        ]
        m.d.sync += [inflight.eq(Cat(issue, inflight[:-1])),
                     inflight_last.eq(Cat(issue & (to_read == 1), inflight_last[:-1]))]
        with m.If(issue):
            m.d.sync += [ptr.eq(ptr + 1), to_read.eq(to_read - 1)]
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += to_send.eq(to_send - 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [ptr.eq(self.addr), to_send.eq(self.count),
                                 end.eq(self.addr + self.count)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += st_ok.eq((to_send != 0) & (end <= self.act_depth))
                m.next = "CHECK2"
            with m.State("CHECK2"):
                m.d.comb += self.busy.eq(1)
                with m.If(st_ok):
                    m.d.sync += to_read.eq(to_send)
                    m.next = "RUN"
                with m.Else():
                    m.d.comb += [self.done.eq(1), self.error.eq(Error.ADDRESS)]
                    m.next = "IDLE"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.If((to_send == 1) & self.data.valid & self.data.ready):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m
