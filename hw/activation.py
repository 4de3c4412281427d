"""N-lane int8 -> int8 activation through a run-time writable 256-entry lookup table.

One piece of hardware serves any activation: the table (built by
:func:`golden.activation.build_table`, the same function that makes the golden model) is
written through the ``table`` stream.

Streams
-------
``table`` (in): one beat writes one entry, ``index`` (0..255, the entry for input
``x = index - 128``) and ``value`` (int8), into the memory of every lane. Always ready: a
table loads in 256 cycles.

``input`` (in): ``lanes`` int8 values and ``last``. Lane ``i`` reads ``table[x + 128]``; the
memory address is ``x`` with its sign bit flipped.

``result`` (out): one beat per input beat, in order, ``last`` copied.

Table writes and lookups may overlap, but a lookup must not read the entry being written in
the same cycle (its value is then undefined); a lookup accepted later sees the new entry.
Reload the table between frames to switch activations.

Memory: one 256 x 8 :class:`hw.ram.BlockRam` per lane (one write port shared by all lanes,
a 2-cycle registered read port each). ``init`` sets the table after
configuration/reset of the FPGA image (e.g. identity), a table of the wrong length raises
``ValueError``.

Throughput: one beat (one element per lane) per cycle; latency :data:`LATENCY` (2) cycles
(a :class:`hw.ram.BlockRam` read: the array, then an output register, so that no logic
follows the RAM; on ECP5, ``dsp="ecp5"``, DP16KD primitives with their output registers, where
a lookup must not read an entry in the cycle it is written). The pipeline holds its output
under backpressure.
"""

import numpy as np
from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.activation import TABLE_SIZE, check_table

from .pe import check_dsp
from .ram import RAM_LATENCY, BlockRam
from .requantizer import check_lanes

__all__ = ["ActivationLUT", "LATENCY", "lanes_layout", "table_layout"]

#: Cycles from an accepted input beat to its result (a registered block RAM read).
LATENCY = RAM_LATENCY


def lanes_layout(lanes):
    return data.StructLayout({"data": data.ArrayLayout(signed(8), lanes), "last": 1})


def table_layout():
    return data.StructLayout({"index": unsigned(8), "value": signed(8)})


class ActivationLUT(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    lanes : int
        int8 values per beat, 1 .. 64.
    init : array of 256 int8 or None
        Table contents at start-up (default: all zeros).
    """

    def __init__(self, lanes=4, init=None, dsp="generic"):
        check_lanes(lanes)
        self.dsp = check_dsp(dsp)
        if init is None:
            init = np.zeros(TABLE_SIZE, np.int8)
        else:
            init = np.asarray(init)
            if init.dtype.kind in "iu" and init.dtype != np.int8 and init.shape == (TABLE_SIZE,) \
                    and init.min() >= -128 and init.max() <= 127:
                init = init.astype(np.int8)
            init = check_table(init)       # ValueError naming the table
        self.lanes = lanes
        self.init = [int(v) for v in init]
        super().__init__({
            "table": In(stream.Signature(table_layout())),
            "input": In(stream.Signature(lanes_layout(lanes))),
            "result": Out(stream.Signature(lanes_layout(lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        inp, res, tab = self.input, self.result, self.table
        valid = Signal(LATENCY)
        last = Signal(LATENCY)
        en = Signal()
        m.d.comb += [
            en.eq(~valid[-1] | res.ready),
            inp.ready.eq(en),
            tab.ready.eq(1),
            res.valid.eq(valid[-1]),
            res.payload.last.eq(last[-1]),
        ]
        with m.If(en):
            m.d.sync += [valid.eq(Cat(inp.valid, valid[:-1])),
                         last.eq(Cat(inp.payload.last, last[:-1]))]
        for i in range(self.lanes):
            mem = m.submodules[f"table{i}"] = BlockRam(8, TABLE_SIZE, reads=1,
                                                       init=[v & 0xFF for v in self.init],
                                                       dsp=self.dsp)
            x = inp.payload.data[i].as_unsigned()
            m.d.comb += [
                mem.w_en.eq(tab.valid),
                mem.w_addr.eq(tab.payload.index),
                mem.w_data.eq(tab.payload.value),
                mem.r0_en.eq(en),
                mem.r0_addr.eq(Cat(x[:7], ~x[7])),      # x + 128
                res.payload.data[i].eq(mem.r0_data),
            ]
        return m
