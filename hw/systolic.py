"""Output-stationary R x C systolic MAC array with skew, deskew and streaming I/O.

Dataflow and why
----------------
Output-stationary: PE (i, j) owns output element (i, j) of an R x C output tile and accumulates
it over the whole reduction length K, so int32 partial sums never move until they are final
and only int8 operands travel between PEs. Weight-stationary would instead move int32 partial
sums every cycle and reload all R*C weights for each new weight tile; for the short reductions
of CNNs (K = 9 for a 3x3 conv on one channel) that reload dominates. Output-stationary keeps
every tile's cost at K beats plus an overlapped drain.

Streams
-------
``operands`` (in): one beat per reduction step k of a tile, carrying column k of the A tile
(``a[i] = A[m0+i, k]``, i < R) and row k of the B tile (``b[j] = B[k, n0+j]``, j < C).
``last`` marks the final beat of a tile; the beat after it starts the next tile. A tile's beats
may have gaps (``valid`` low) anywhere. Rows/columns beyond the matrix edge are fed as zeros.

``bias`` (in): one beat per tile, C int32 values added to every row of that tile's result. It
is consumed while the tile's result is emitted, so it may arrive late.

``result`` (out): R beats per tile, row i of the tile (``C[m0+i, n0+j] + bias[j]``) in order;
``last`` marks row R-1. Tiles come out in the order they went in.

Throughput
----------
With no backpressure, one operand beat is accepted per cycle, so each PE does one MAC per
cycle; the drain of a tile (R cycles through a per-column shift chain) overlaps the next tile.
Two rules keep the pipeline correct without stalling the array itself:

* a tile is admitted only when the output memory (a FIFO in block RAM) has room reserved for
  all R of its rows (credit counter), so results never need backpressure inside the array;
* consecutive ``last`` beats are at least R cycles apart (the per-column drain chain needs R
  cycles), so tiles with K < R run at one tile per R cycles.

Latency: the first row of a tile is written into the output memory R + C + 2 + P cycles after
its last beat, where P = :attr:`ProcessingElement.PRODUCT_STAGES` (4: the DSP input, pipeline
and output registers and a fabric register), so R + C + 6; with no backpressure it is on the ``result`` stream 5
cycles later (2-cycle memory read, queue, bias add register). The latency is the same for
every implementation target (``dsp="generic"`` for simulation and other targets; ``"ecp5"``:
MULT18X18D instantiated directly with its own pipeline registers, DP16KD block RAM with its
output register), so
cycle counts measured in simulation hold on the FPGA.
"""

from math import ceil

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .pe import ProcessingElement, check_dsp
from .ram import RAM_LATENCY, BlockRam

__all__ = ["SystolicArray", "MAX_DIM", "default_out_depth"]

#: Largest supported rows/cols. Bigger arrays elaborate, but are not tested.
MAX_DIM = 64


def _check_dim(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not 1 <= value <= MAX_DIM:
        raise ValueError(f"{name} must be between 1 and {MAX_DIM}, got {value}")


#: Cycles of the admission-to-pop round trip beyond 3R + C: input register, skew, PE product
#: pipeline and accumulator, drain load, FIFO write and read, the registered credit return.
ROUND_TRIP_EXTRA = 6 + ProcessingElement.PRODUCT_STAGES


def default_out_depth(rows, cols):
    """Output FIFO rows needed for full throughput with K >= rows (see module docstring)."""
    return rows * (ceil((3 * rows + cols + ROUND_TRIP_EXTRA) / rows) + 1)


def operand_layout(rows, cols, word_operands=False):
    """``a``: one int8 per row, or with ``word_operands`` one word of C int8 per row (PE
    (i, j) takes lane j: depthwise convolution); ``b``: one int8 per column."""
    a_elem = data.ArrayLayout(signed(8), cols) if word_operands else signed(8)
    return data.StructLayout({
        "a": data.ArrayLayout(a_elem, rows),
        "b": data.ArrayLayout(signed(8), cols),
        "last": 1,
    })


def result_layout(cols):
    return data.StructLayout({
        "data": data.ArrayLayout(signed(32), cols),
        "last": 1,
    })


class SystolicArray(wiring.Component):
    """R x C output-stationary int8 MAC array. See the module docstring for the contract.

    Parameters
    ----------
    rows, cols : int
        Array size R x C, 1 .. ``MAX_DIM`` each.
    out_depth : int or None
        Output FIFO depth in rows (at least ``rows``); default :func:`default_out_depth`.
    word_operands : bool
        Each row's ``a`` operand is a word of C int8 lanes and PE (i, j) multiplies lane j
        (:func:`operand_layout`): every PE of a row gets its own operand, as a depthwise
        convolution needs (a plain GEMM sends the same value in every lane). Costs a
        triangular chain of lane registers per row instead of one 8-bit chain.
    dsp : str
        Implementation target of the multipliers and the output memory, one of
        :data:`hw.pe.DSP_KINDS`, same cycle behaviour for all: ``"generic"`` (inferred) or
        ``"ecp5"`` (MULT18X18D primitives with their own registers enabled, output memory in
        DP16KD block RAM with its output register).
    """

    #: Read latency of the output memory (a BlockRam: array read, output register).
    READ_LATENCY = RAM_LATENCY

    def __init__(self, rows=8, cols=8, out_depth=None, word_operands=False, dsp="generic"):
        _check_dim("rows", rows)
        _check_dim("cols", cols)
        if out_depth is None:
            out_depth = default_out_depth(rows, cols)
        if isinstance(out_depth, bool) or not isinstance(out_depth, int) or out_depth < rows:
            raise ValueError(f"out_depth must be an integer >= rows ({rows}), got {out_depth!r}")
        self.rows = rows
        self.cols = cols
        self.out_depth = out_depth
        self.word_operands = bool(word_operands)
        self.dsp = check_dsp(dsp)
        super().__init__({
            "operands": In(stream.Signature(operand_layout(rows, cols, self.word_operands))),
            "bias": In(stream.Signature(data.ArrayLayout(signed(32), cols))),
            "result": Out(stream.Signature(result_layout(cols))),
        })

    def elaborate(self, platform):
        m = Module()
        R, C, D = self.rows, self.cols, self.out_depth
        ops = self.operands

        # ---- Admission control -------------------------------------------------------
        in_tile = Signal()                      # a tile has started and not yet ended
        reserved = Signal(range(D + 1))         # output FIFO rows promised to admitted tiles
        since_last = Signal(range(R), init=R - 1)   # cycles since the last `last`, saturating
        credit_ok = reserved <= D - R
        spacing_ok = since_last == R - 1
        m.d.comb += ops.ready.eq((in_tile | credit_ok) & (~ops.payload.last | spacing_ok))
        accept = ops.valid & ops.ready

        pop = Signal()                          # a result row left the output memory (the
                                                # cycle before: registered, for timing)
        starting = accept & ~in_tile
        m.d.sync += reserved.eq(reserved + Mux(starting, R, 0) - pop)
        with m.If(accept):
            m.d.sync += in_tile.eq(~ops.payload.last)
        with m.If(accept & ops.payload.last):
            m.d.sync += since_last.eq(0)
        with m.Elif(since_last != R - 1):
            m.d.sync += since_last.eq(since_last + 1)

        # ---- Input register and skew ------------------------------------------------
        # Row i's operand passes through i+1 registers, column j's through j+1, so PE(i, j)
        # sees beat t in cycle t + 1 + i + j from both directions.
        beat_valid = Signal()
        beat_last = Signal()
        m.d.sync += [
            beat_valid.eq(accept),
            beat_last.eq(accept & ops.payload.last),
        ]
        a_skew = [self._delay(m, ops.payload.a[i], i + 1, f"a_skew{i}") for i in range(R)]
        b_skew = [self._delay(m, ops.payload.b[j], j + 1, f"b_skew{j}") for j in range(C)]
        ctl = Cat(beat_valid, beat_last)
        ctl_skew = [self._delay(m, ctl, i, f"ctl_skew{i}") for i in range(R)]

        # ---- PE grid -------------------------------------------------------------------
        # With word operands, row i's word moves right through a triangular chain: after j
        # registers it holds lanes j .. C-1 and PE (i, j) takes lane j, in the cycle a byte
        # operand would reach it through j PEs' forwarding registers.
        lanes = [self._lane_chain(m, a_skew[i], C, f"lanes{i}") if self.word_operands else None
                 for i in range(R)]
        pes = [[ProcessingElement(self.dsp) for _ in range(C)] for _ in range(R)]
        for i in range(R):
            for j in range(C):
                pe = pes[i][j]
                m.submodules[f"pe_{i}_{j}"] = pe
                if self.word_operands:
                    m.d.comb += pe.a.eq(lanes[i][j])
                if j == 0:
                    if not self.word_operands:
                        m.d.comb += pe.a.eq(a_skew[i])
                    m.d.comb += Cat(pe.valid, pe.last).eq(ctl_skew[i])
                else:
                    left = pes[i][j - 1]
                    if not self.word_operands:
                        m.d.comb += pe.a.eq(left.a_out)
                    m.d.comb += [pe.valid.eq(left.valid_out), pe.last.eq(left.last_out)]
                m.d.comb += pe.b.eq(b_skew[j] if i == 0 else pes[i - 1][j].b_out)

        # ---- Drain: per-column shift chains, loaded when the bottom PE finishes ---------
        # The bottom PE of column j finishes last; all R results of that column are final
        # then, and leave upwards one per cycle, row 0 first.
        col_out = []
        col_valid = []
        for j in range(C):
            chain = [Signal(signed(32), name=f"chain_{i}_{j}") for i in range(R)]
            chain_v = [Signal(name=f"chain_v_{i}_{j}") for i in range(R)]
            load = pes[R - 1][j].done
            for i in range(R):
                with m.If(load):
                    m.d.sync += [chain[i].eq(pes[i][j].result), chain_v[i].eq(1)]
                with m.Else():
                    if i + 1 < R:
                        m.d.sync += [chain[i].eq(chain[i + 1]), chain_v[i].eq(chain_v[i + 1])]
                    else:
                        m.d.sync += chain_v[i].eq(0)
            col_out.append(chain[0])
            col_valid.append(chain_v[0])

        # ---- Deskew: column j is delayed C-1-j cycles so a whole row lines up ----------
        row = [self._delay(m, col_out[j], C - 1 - j, f"deskew{j}") for j in range(C)]
        row_valid = col_valid[C - 1]

        # ---- Output FIFO (block RAM), prefetch queue, bias add --------------------------
        # Rows are written with no full check: the credit counter guarantees room (`reserved`
        # counts every row in flight or in the memory, and a tile is admitted only if all its
        # rows fit). A row leaves the memory (and returns its credit) when it is read.
        # The read side is a prefetch pipeline whose control depends on registers only, so the
        # result stream's `ready` never reaches the block RAM or a wide register enable
        # through a chain of logic:
        #   read (READ_LATENCY cycles: array read, output register) -> small
        #   queue in distributed RAM (QUEUE rows) -> row + bias into the output register.
        # A read is issued only when the queue has room for it and for the reads in flight.
        w_ptr = Signal(range(D))
        r_ptr = Signal(range(D))
        level = Signal(range(D + 1))            # rows in the memory
        copy = self._row_memory(m, 32 * C, D, w_ptr, Cat(*row), row_valid, r_ptr)
        with m.If(row_valid):
            m.d.sync += w_ptr.eq(Mux(w_ptr == D - 1, 0, w_ptr + 1))

        QUEUE = 8
        queue = m.submodules.out_queue = Memory(shape=32 * C, depth=QUEUE, init=[])
        qw = queue.write_port()
        qr = queue.read_port(domain="comb")
        q_w = Signal(range(QUEUE))
        q_r = Signal(range(QUEUE))
        q_count = Signal(range(QUEUE + 1))      # rows in the queue
        rd_d = [Signal(name=f"rd_d{n + 1}") for n in range(self.READ_LATENCY)]  # in flight
        rd = (level != 0) & (q_count + sum(rd_d) < QUEUE)
        m.d.sync += pop.eq(rd)
        with m.If(rd):
            m.d.sync += r_ptr.eq(Mux(r_ptr == D - 1, 0, r_ptr + 1))
        m.d.sync += [
            level.eq(level + row_valid - rd),
            Cat(*rd_d).eq(Cat(rd, *rd_d[:-1])),
        ]
        m.d.comb += [qw.addr.eq(q_w), qw.data.eq(copy), qw.en.eq(rd_d[-1]), qr.addr.eq(q_r)]
        with m.If(rd_d[-1]):
            m.d.sync += q_w.eq(q_w + 1)

        out = self.result
        valid_b = Signal()
        row_in_tile = Signal(range(R))
        is_last_row = row_in_tile == R - 1
        adv = (q_count != 0) & self.bias.valid & (~valid_b | out.ready)   # queue -> output
        m.d.sync += q_count.eq(q_count + rd_d[-1] - adv)
        rows_q = data.ArrayLayout(signed(32), C)(qr.data)
        with m.If(adv):
            m.d.sync += [
                q_r.eq(q_r + 1),
                valid_b.eq(1),
                row_in_tile.eq(Mux(is_last_row, 0, row_in_tile + 1)),
            ]
        with m.Elif(out.ready):
            m.d.sync += valid_b.eq(0)
        # The wide output register loads whenever it may (empty or being taken), whether or
        # not a row advances (then valid_b is 0 and the value is ignored): its enable depends
        # on two flip-flops only and is a different net from `adv`'s small fan-out.
        with m.If(~valid_b | out.ready):
            m.d.sync += out.payload.last.eq(is_last_row)
            m.d.sync += [out.payload.data[j].eq(rows_q[j] + self.bias.payload[j])
                         for j in range(C)]
        m.d.comb += [
            out.valid.eq(valid_b),
            self.bias.ready.eq(adv & is_last_row),
        ]
        return m

    def _row_memory(self, m, width, depth, w_addr, w_data, w_en, r_addr):
        """Simple dual-port memory with a read latency of ``READ_LATENCY`` (2) cycles: returns
        the data at ``r_addr`` of 2 cycles earlier (``r_addr`` is read every cycle).

        A :class:`hw.ram.BlockRam`: on ECP5 (``dsp="ecp5"``) DP16KD block RAMs with their
        output registers on, so neither the RAM's clock-to-output nor a read-address fan-out
        over hundreds of distributed-RAM cells (which limited the 8 x 8 array to 139 MHz)
        sits on a path; elsewhere a memory read port and a register."""
        ram = m.submodules.out_mem = BlockRam(width, depth, reads=1, dsp=self.dsp)
        m.d.comb += [ram.w_addr.eq(w_addr), ram.w_data.eq(w_data), ram.w_en.eq(w_en),
                     ram.r0_addr.eq(r_addr), ram.r0_en.eq(1)]
        return ram.r0_data

    @staticmethod
    def _lane_chain(m, word, cols, name):
        """Lane j of ``word`` delayed by j registers, for j < ``cols`` (each register holds
        only the lanes still needed further right)."""
        out = [word[0]]
        rest = [word[j] for j in range(1, cols)]
        for j in range(1, cols):
            regs = [Signal(signed(8), name=f"{name}_{j}_{n}") for n in range(len(rest))]
            m.d.sync += [r.eq(v) for r, v in zip(regs, rest)]
            out.append(regs[0])
            rest = regs[1:]
        return out

    @staticmethod
    def _delay(m, value, cycles, name):
        """``value`` delayed by ``cycles`` registers (0 = combinational pass-through)."""
        for n in range(cycles):
            reg = Signal(value.shape(), name=f"{name}_d{n}")
            m.d.sync += reg.eq(value)
            value = reg
        return value

