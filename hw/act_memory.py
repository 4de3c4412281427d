"""The activation memory (ACT) of ``npu_top``: banked by pixel, one copy of every word.

Why banks
---------
Every cycle the CONV engine reads one word for each of the R array rows: the same tap of R
consecutive output pixels. A single block RAM gives one word per cycle, so the first design
kept R copies of ACT (R x the block RAM for what one copy holds). Here ACT is split into
``B = banks(R)`` block RAMs (the power of two >= 2R) and a *pixel* lives in one bank: the R
reads of a beat hit R different banks whenever the R pixels' indices are distinct modulo B.
The compiler lays tensors out so that they are (:func:`conflict_free`), and the CONV engine
checks it before it starts.

Address map
-----------
Engines address ACT with linear word addresses, as before, plus the tensor's *pixel shift*
``ps``: a pixel of the tensor is ``2**ps`` consecutive words (the channel groups; the
compiler pads the words per pixel to a power of two). Word ``a`` is word ``a mod 2**ps`` of
pixel ``p = a >> ps``, which lives in bank ``p mod B``, row ``(p div B) * 2**ps + a mod 2**ps``
(:func:`act_location`). A tensor that starts at a multiple of ``B * 2**ps`` words and spans a
multiple of them occupies the same bank rows under any pixel shift, so tensors with different
shifts never overlap in the banks when their word ranges do not (the compiler aligns them).

Ports
-----
* write: ``w_en``, ``w_addr``, ``w_shift``, ``w_data`` (one word per cycle); the word is in
  its bank two cycles later (registered translation, then the block RAM write).
* ``ports`` read ports ``r{i}_en``, ``r{i}_addr`` with a common ``r_shift``: ``r{i}_data`` is
  the word :data:`READ_LATENCY` cycles after the request (request register, translation,
  bank address crossbar, the block RAM's two-cycle registered read, the data crossbar; every
  stage registered). Enabled reads of one cycle must hit different banks or the same word;
  ``conflict`` is high for a cycle (a few cycles later) when they do not, and the reads of
  that cycle then return wrong data. Tests watch it; the CONV engine's layout check makes it
  impossible for programs that pass it.
"""

import operator
from functools import reduce

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .ram import RAM_LATENCY, BlockRam

__all__ = ["ActMemory", "READ_LATENCY", "SHIFT_BITS", "banks", "act_location",
           "conflict_free"]

#: Cycles from a read request to its data: the request register (the read ports are
#: multiplexed between engines in front of it), translation, crossbar, block RAM (2), data
#: multiplexer.
READ_LATENCY = 3 + RAM_LATENCY + 1
#: Width of a pixel shift: up to 2**7 = 128 words per pixel.
SHIFT_BITS = 3


def banks(rows):
    """Banks of ACT for an array of ``rows`` rows: the power of two >= 2 * rows, so that R
    pixels with indices ``q0 + s*i`` (i < R) fall in distinct banks for s = 1, 2 and any odd
    s."""
    return 1 << (2 * rows - 1).bit_length()


def act_location(addr, shift, nbanks):
    """``(bank, row)`` of word ``addr`` of a tensor with ``2**shift`` words per pixel."""
    pixel = addr >> shift
    return pixel % nbanks, (pixel // nbanks << shift) | (addr & ((1 << shift) - 1))


def conflict_free(stride, rows, nbanks):
    """Whether R pixels at indices ``q0 + stride*i`` (i < rows) lie in distinct banks."""
    return len({(stride * i) % nbanks for i in range(rows)}) == rows


class ActMemory(wiring.Component):
    def __init__(self, cols, depth, rows, ports, dsp="generic"):
        self.cols, self.depth, self.ports, self.dsp = cols, depth, ports, dsp
        self.nbanks = banks(rows)
        if depth % self.nbanks:
            raise ValueError(f"act_depth ({depth}) must be a multiple of the {self.nbanks} "
                             f"ACT banks")
        self.bank_depth = depth // self.nbanks
        aw = max(1, (depth - 1).bit_length())
        members = {"w_en": In(1), "w_addr": In(aw), "w_shift": In(SHIFT_BITS),
                   "w_data": In(8 * cols), "r_shift": In(SHIFT_BITS), "conflict": Out(1)}
        for i in range(ports):
            members.update({f"r{i}_en": In(1), f"r{i}_addr": In(aw),
                            f"r{i}_data": Out(8 * cols)})
        super().__init__(members)

    def _translate(self, m, addr, shift, name):
        """Registered ``(bank, row)`` of ``addr`` (see :func:`act_location`)."""
        k = (self.nbanks - 1).bit_length()
        pixel = addr >> shift
        low = addr & ((1 << shift) - 1)
        bank = Signal(range(self.nbanks), name=f"{name}_bank")
        row = Signal(range(self.bank_depth), name=f"{name}_row")
        m.d.sync += [bank.eq(pixel[:k] if k else 0), row.eq(((pixel >> k) << shift) | low)]
        return bank, row

    def elaborate(self, platform):
        m = Module()
        B, C = self.nbanks, self.cols
        mems = []
        for b in range(B):
            mem = BlockRam(8 * C, self.bank_depth, reads=1, dsp=self.dsp)
            m.submodules[f"bank{b}"] = mem
            mems.append(mem)

        # ---- Write: translate (registered), then the bank's write port.
        w_bank, w_row = self._translate(m, self.w_addr, self.w_shift, "w")
        w_en = Signal()
        w_data = Signal(8 * C)
        m.d.sync += [w_en.eq(self.w_en), w_data.eq(self.w_data)]
        for b, mem in enumerate(mems):
            m.d.comb += [mem.w_en.eq(w_en & (w_bank == b)), mem.w_addr.eq(w_row),
                         mem.w_data.eq(w_data)]

        # ---- Read: translate, bank crossbar (each bank takes the address of the port that
        # maps to it), block RAM read, data crossbar (each port takes its bank's word).
        reqs = []
        shift = Signal(SHIFT_BITS)
        m.d.sync += shift.eq(self.r_shift)
        for i in range(self.ports):
            addr = Signal.like(getattr(self, f"r{i}_addr"), name=f"r{i}_addr_q")
            en_q = Signal(name=f"r{i}_en_q")
            m.d.sync += [addr.eq(getattr(self, f"r{i}_addr")), en_q.eq(getattr(self, f"r{i}_en"))]
            bank, row = self._translate(m, addr, shift, f"r{i}")
            en = Signal(name=f"r{i}_en_t")
            m.d.sync += en.eq(en_q)
            reqs.append((en, bank, row))
        for b, mem in enumerate(mems):
            addr = Signal(range(self.bank_depth), name=f"bank{b}_addr")
            # An AND-OR multiplexer: at most one port maps to the bank (or all that do read
            # the same word).
            terms = [Mux(en & (bank == b), row, 0) for en, bank, row in reqs]
            m.d.sync += addr.eq(reduce(operator.or_, terms))
            m.d.comb += [mem.r0_addr.eq(addr), mem.r0_en.eq(1)]

        # Every pair of ports compared in one register stage, their OR in the next (a
        # self-check, off the data path).
        pairs = Signal(max(1, len(reqs) * (len(reqs) - 1) // 2))
        m.d.sync += pairs.eq(Cat(*[en_i & en_j & (bank_i == bank_j) & (row_i != row_j)
                                   for i, (en_i, bank_i, row_i) in enumerate(reqs)
                                   for en_j, bank_j, row_j in reqs[i + 1:]]))
        m.d.sync += self.conflict.eq(pairs.any())

        words = data.ArrayLayout(unsigned(8 * C), B)
        bank_words = Signal(words)
        m.d.comb += bank_words.as_value().eq(Cat(*[mem.r0_data for mem in mems]))
        for i, (_, bank, _) in enumerate(reqs):
            # The port's bank, delayed to meet the block RAM's data.
            sel = bank
            for n in range(1 + RAM_LATENCY):
                d = Signal.like(bank, name=f"r{i}_bank_d{n}")
                m.d.sync += d.eq(sel)
                sel = d
            m.d.sync += getattr(self, f"r{i}_data").eq(bank_words[sel])
        return m
