"""Row sums of the array's result tiles, for the dense K-split mode of the CONV engine.

In that mode (:mod:`hw.conv_engine`, CONV_MODE 2) PE (i, j) accumulates output channel i of
the tile over the input lanes j (the reduction K is split across the C columns), so output
channel i is the sum of row i of the tile. :class:`RowSum` takes the tile's R result rows
(C int32 lanes each, ``last`` on row R - 1), sums each row through a registered adder tree
and gathers the R sums into one beat of R = C int32 lanes (lane i = row i), with ``last``
set: the requantizer then sees the tile as one output pixel's column block, as it sees a
row of a plain tile.

Contract
--------
Streams with valid/ready. The whole pipeline stalls while its output is held
(``input.ready`` is low exactly then), so it never drops or reorders a row. Every tile has
exactly ``lanes`` rows (the array's R, equal to C in this mode). Latency: the output beat is
valid :func:`latency` cycles after the tile's last row was taken, with no backpressure.
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .requantizer import acc_layout

__all__ = ["RowSum", "latency", "tree_levels"]


def tree_levels(lanes):
    """Register levels of the adder tree over ``lanes`` values (pairwise sums per level)."""
    return max(1, (lanes - 1).bit_length())


class RowSum(wiring.Component):
    """Sums each row of ``lanes`` int32 and packs a tile's ``lanes`` row sums into one beat."""

    def __init__(self, lanes):
        if not isinstance(lanes, int) or lanes < 2 or lanes & (lanes - 1):
            raise ValueError(f"RowSum lanes must be a power of two >= 2, got {lanes!r}")
        self.lanes = lanes
        super().__init__({"input": In(stream.Signature(acc_layout(lanes))),
                          "output": Out(stream.Signature(acc_layout(lanes)))})

    def elaborate(self, platform):
        m = Module()
        n = self.lanes
        advance = Signal()
        m.d.comb += [advance.eq(~self.output.valid | self.output.ready),
                     self.input.ready.eq(advance)]
        # The adder tree: level l holds n / 2**(l+1) partial sums, registered; sums of n
        # int32 fit 32 + log2(n) bits, kept at 32 (the requantizer's accumulator width, and
        # the array's sums wrap the same way).
        valid, last = self.input.valid, self.input.payload.last
        values = [self.input.payload.data[j] for j in range(n)]
        for level in range(tree_levels(n)):
            nxt_valid, nxt_last = Signal(name=f"v{level}"), Signal(name=f"l{level}")
            sums = [Signal(signed(32), name=f"s{level}_{j}") for j in range(len(values) // 2)]
            with m.If(advance):
                m.d.sync += [nxt_valid.eq(valid), nxt_last.eq(last)]
                m.d.sync += [s.eq(values[2 * j] + values[2 * j + 1]) for j, s in enumerate(sums)]
            valid, last, values = nxt_valid, nxt_last, sums
        # Gather: row sums shift in at the top lane; after the tile's n rows lane i holds
        # row i's sum, and the beat is valid.
        out = self.output.payload
        with m.If(advance):
            m.d.sync += self.output.valid.eq(valid & last)
            with m.If(valid):
                m.d.sync += [out.data[i].eq(out.data[i + 1]) for i in range(n - 1)]
                m.d.sync += [out.data[n - 1].eq(values[0]), out.last.eq(1)]
        return m


def latency(lanes):
    """Cycles from the tile's last row on ``input`` to its beat on ``output`` (tree levels
    and the gathering register), for the cycle model."""
    return tree_levels(lanes) + 1
