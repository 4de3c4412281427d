"""Streaming N-lane max / average pooling of NHWC int8 feature maps with line buffers.

Bit-exact with :func:`golden.pooling.max_pool2d` and :func:`golden.pooling.avg_pool2d`
(padding never wins a max; in an average it counts as the zero point, divisor ``k*k``, rounded
half away from zero by the multiplier and shift of :func:`golden.pooling.avg_pool_multiplier`).

Streams and order
-----------------
``input`` (in): one image per frame in NHWC raster order with channels grouped by lanes: for
``y`` in ``0..H-1``, for ``x`` in ``0..W-1``, for channel group ``g`` in ``0..G-1``
(``G = ceil(C / lanes)``), one beat carries channels ``g*lanes .. g*lanes + lanes - 1`` of pixel
``(y, x)``. Lanes past ``C`` in the last group are don't-care. ``last`` is not needed (the unit
counts ``H*W*G`` beats); it only ends a frame that is being dropped (see ``error``).

``result`` (out): the ``Ho x Wo x C`` output in the same order (``G`` beats per output pixel),
``last`` on the final beat of the image. Lanes past ``C`` are don't-care.

``config`` (in): ``h, w, c, k, stride, pad, mode`` (0 max, 1 average) and ``zero_point``
(average padding). While the unit is idle it reads these ports directly; a frame latches them
in the cycle it starts (its first beat valid), so hold them from the first beat's ``valid``
until that beat is accepted. They may change between frames without draining the unit: mode and
kernel size travel with every beat through the pipeline. With ``registered_config=True`` the
unit instead registers the ports and checks them in register stages, and a frame uses what
they held when it starts: the configuration must then be set at least
:data:`CONFIG_LATENCY` (3) cycles before the frame's first beat, and no path runs from the
ports into the datapath (for timing; ``npu_top``'s PoolEngine holds its configuration for the
whole instruction).

``error`` (out): the last frame's configuration was refused: ``h``, ``w``, ``c`` outside
``1..max_h/max_w/max_c``, ``k`` outside ``1..max_k``, ``stride`` 0, ``pad > k // 2``,
``k > h + 2*pad`` or ``k > w + 2*pad``, or more than ``slots`` overlapping windows (see
``slots`` in :class:`Pooling`). A refused frame is
consumed up to its ``last`` beat and produces no output, so nothing hangs. The Python-side
check :meth:`Pooling.check_config` raises ``ValueError`` naming the parameter for the same
cases.

Architecture
------------
The unit walks the *padded* image (``H + 2*pad`` rows of ``W + 2*pad`` columns, ``G`` beats
each); a position inside the image consumes an input beat, a padding position makes a beat of
the padding value (max: -128, which never wins; average: the zero point) without consuming one.
Pooling is separable (both max and sum):

1. horizontal stage: window ``ox`` of the current row is reduced in a running accumulator; up
   to ``slots`` windows overlap (``stride < k``), each in its own slot memory of ``G`` entries
   (one per channel group). When a window's last column arrives its row result leaves;
2. vertical stage: row results are reduced into line buffers, one per slot, of ``Wo*G``
   entries each (``Wo <= max_w + 1``); when an output row's last input row arrives, each
   finished ``(ox, g)`` leaves;
3. finalize: max passes through; average computes ``sign(S) * ((2|S| + k*k) * M >> 32)``
   in nine stages: S2b registers each slot's new value (also what the line buffer is written
   with), S3 the closing slot's, S3b its magnitude, then registered
   16 x 16-bit multipliers (:class:`hw.pe.RegisteredMultiplier`, 3 stages; MULT18X18D with
   ``dsp="ecp5"``), two adds of their partial products and the rounded output.

In the code each stage is a method that :meth:`Pooling.elaborate` calls in pipeline order, and
passes on what the next one needs: :meth:`~Pooling._config_check` and
:meth:`~Pooling._frame_latch` (configuration), :meth:`~Pooling._pipeline_enable`,
:meth:`~Pooling._front` (the walk: :meth:`~Pooling._position`, :meth:`~Pooling._walk`,
:meth:`~Pooling._windows`, :meth:`~Pooling._frame_state`), :meth:`~Pooling._horizontal` (S1),
:meth:`~Pooling._s1b`, :meth:`~Pooling._vertical` (S2, S2b) and :meth:`~Pooling._finalize`
(:meth:`~Pooling._magnitude`, :meth:`~Pooling._products`, :meth:`~Pooling._output`), built
from :meth:`~Pooling._tracker` and :meth:`~Pooling._accumulate`.

Every input beat is read-modify-written into at most ``slots`` accumulators at one address per
stage, so the unit accepts one beat (one element per lane) per cycle. Each accumulation is
register -> 8-bit compare (max) or add (sum) -> select -> register: the old values come from
operand registers loaded a cycle ahead (with the identity, -128 or 0, when the beat opens
the window) and the new value is registered before it is written (see ``_accumulate``). The
horizontal slot memories (``G`` entries, distributed RAM) are read asynchronously when the
beat is at the front, or forwarded from the write register when the beat ahead writes the same
address; that read-modify-write takes two cycles, so frames of one channel group (``C <=
lanes``) take one beat every :data:`NARROW_SPACING` (2) cycles. The line buffers are
:class:`hw.ram.BlockRam` (DP16KD with its output register on ECP5): a beat's read is issued
when it is at the front, three cycles before its accumulation (S1, S1b, S2; the RAM's two
cycles and the operand registers), whose result is registered and written one cycle later.
The same address comes
round one padded row later, ``(W + 2*pad) * G`` beats; when that is fewer than
:data:`TINY_ROW` (5; ``tiny`` frames, e.g. global pooling of a 2 x 2 to 4 x 4 map) the unit
takes one beat every :data:`TINY_SPACING` (3) cycles so that every read follows the write it
needs. The whole pipeline advances when its output register is empty or ``result.ready`` is
high.

Throughput: inside a row the unit takes one beat per cycle, and a frame starts in the cycle
its first beat arrives. Padding positions cost one cycle each (``2*pad*G`` per row, ``2*pad``
padded rows per image), so an image takes ``(H + 2*pad) * (W + 2*pad) * G`` cycles (times
:func:`beat_spacing`: 3 for ``tiny`` frames, 2 for frames with ``C <= lanes``): with
``pad = 0`` images stream back to back at one beat per cycle (measured 1.000 over two
32 x 32 x 64 images); with ``pad = 1`` on 32 x 32 x 64 it takes
0.943 beats per cycle between its first and last input beat, 0.886 over the whole image.
(With ``pad = k/2`` and even ``k`` there are more output beats than input beats, so one output
port cannot sustain one input beat per cycle anyway.)

Resources: horizontal ``slots`` x ``G`` x ``lanes`` accumulators, vertical ``slots`` x
``(max_w + 1) * G`` x ``lanes`` accumulators (the line buffers), ``acc_width = 8 + 2 *
bits(max_k - 1) + 1`` bits each; ``2 * ceil(nw / 16)`` 16 x 16-bit multipliers per lane for the
average (``nw`` = bits of ``2*128*max_k**2 + max_k**2``: 2 per lane for ``max_k <= 15``).
"""

from dataclasses import dataclass
from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.pooling import AVG_SHIFT, MAX_POOL_K, avg_pool_multiplier

from .pe import RegisteredMultiplier, check_dsp
from .ram import RAM_LATENCY, BlockRam
from .requantizer import check_lanes

__all__ = ["Pooling", "config_layout", "lanes_layout", "MAX_SIZE", "MODE_MAX", "MODE_AVG",
           "CONFIG_LATENCY", "TINY_ROW", "TINY_SPACING", "NARROW_SPACING", "beat_spacing"]

MODE_MAX = 0
MODE_AVG = 1
#: With ``registered_config``: cycles from a configuration change to a frame that may use it.
CONFIG_LATENCY = 3
#: A line-buffer address is read 3 cycles before its beat reaches the vertical stage and
#: written 1 cycle after, so a read must come at least 5 cycles after the read before it that
#: wrote the value it needs. That one was a padded row earlier, ``(W + 2*pad) * G`` beats;
#: frames with fewer than TINY_ROW beats per padded row take one beat every TINY_SPACING
#: cycles. (A value is needed only if the window has ``k >= 2`` rows, and then
#: ``W + 2*pad >= k >= 2``: 2 beats at 3 cycles each are 6 cycles.)
TINY_ROW = 5
TINY_SPACING = 3
#: The horizontal accumulators' read-modify-write takes two cycles, so frames of one channel
#: group (``C <= lanes``), whose beats all use the same address, take one beat every
#: NARROW_SPACING cycles.
NARROW_SPACING = 2


def beat_spacing(wp, groups):
    """Cycles per beat of the walk of a frame with ``wp`` padded columns and ``groups``
    channel groups (see :data:`TINY_ROW` and :data:`NARROW_SPACING`)."""
    if wp * groups < TINY_ROW:
        return TINY_SPACING
    return NARROW_SPACING if groups == 1 else 1
#: Largest max_h / max_w / max_c accepted at elaboration.
MAX_SIZE = 4096


def lanes_layout(lanes):
    return data.StructLayout({"data": data.ArrayLayout(signed(8), lanes), "last": 1})


def config_layout():
    return data.StructLayout({
        "h": unsigned(16), "w": unsigned(16), "c": unsigned(16),
        "k": unsigned(8), "stride": unsigned(8), "pad": unsigned(8),
        "mode": unsigned(1), "zero_point": signed(8),
    })


def _check_int(name, v, lo, hi):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {v}")
    return v


# The front's frame state (Pooling._frame_state): IDLE between frames, RUN walking one, DROP
# consuming a refused one up to its last beat.
_IDLE, _RUN, _DROP = 0, 1, 2


@dataclass(frozen=True)
class _CheckedConfig:
    """The configuration check's result (:meth:`Pooling._config_check`)."""
    config: Value       # the config ports, or their registered copy (registered_config)
    hp: Signal          # padded height h + 2*pad, in step with ``config``
    wp: Signal          # padded width w + 2*pad
    ok: Signal          # every check passes (registered_config: CONFIG_LATENCY after the ports)


@dataclass(frozen=True)
class _Pipeline:
    """The pipeline enable and the valid flags read before the stage that drives them."""
    en: Signal          # every stage advances (the output register is free or taken)
    s1_valid: Signal    # a beat in S1 (driven by S1; the front spaces beats behind it)
    s1_history: list    # s1_valid 1 .. TINY_SPACING - 2 cycles ago (kept by S1, for the same)
    out_valid: Signal   # a beat in the output register (driven by the output; ``en`` reads it)


@dataclass(frozen=True)
class _Windows:
    """One dimension's windows at the front's position (what :meth:`Pooling._tracker`
    returns), per slot: in the window, the window opens here, it closes here; then whether
    one closes and whether the closing one is the last along the dimension."""
    use: Value
    first: Value
    close: Value
    close_any: Signal
    closing_last: Signal


@dataclass(frozen=True)
class _Walk:
    """What the walk hands the front (:meth:`Pooling._walk`)."""
    g_last: Signal      # the position is its pixel's last channel group
    frame_end: Value    # the walk leaves the image's last position
    h: _Windows         # windows along the row
    v: _Windows         # windows down the image


@dataclass(frozen=True)
class _FrontBeat:
    """The beat at the front, as S1 registers it (:meth:`Pooling._front`)."""
    advance: Signal     # it moves on to S1 this cycle
    real: Signal        # it is an input beat (else padding)
    data: Value         # the input beat's lanes
    g: Signal           # channel group: the horizontal slot memories' address
    g_last: Signal
    addr: Signal        # the line-buffer address of its row result (``hr_count``)
    h: _Windows         # windows along the row
    v: _Windows         # windows down the image


class Pooling(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    lanes : int
        Channels per beat, 1 .. 64.
    max_h, max_w, max_c : int
        Largest image accepted at run time (line buffers are sized for them).
    max_k : int
        Largest kernel, 1 .. ``golden.pooling.MAX_POOL_K`` (global pooling of an ``H x W``
        image needs ``max_k >= H``).
    slots : int
        Overlapping windows held at once, 1 .. max_k: run-time configurations need
        ``ceil(k / stride) <= slots``, unless the image is so small that at most ``slots``
        windows fit along that dimension (``slots*stride + k > size + 2*pad``; e.g. global
        pooling, ``k = H = W``, works with any stride).
    registered_config : bool
        See the module docstring.
    dsp : str
        Target of the line buffers and the average's multipliers (:data:`hw.pe.DSP_KINDS`);
        the cycle behaviour is the same for all.
    """

    def __init__(self, lanes=4, max_h=32, max_w=32, max_c=64, max_k=32, slots=3,
                 registered_config=False, dsp="generic"):
        check_lanes(lanes)
        self.dsp = check_dsp(dsp)
        self.registered_config = bool(registered_config)
        _check_int("max_h", max_h, 1, MAX_SIZE)
        _check_int("max_w", max_w, 1, MAX_SIZE)
        _check_int("max_c", max_c, 1, MAX_SIZE)
        _check_int("max_k", max_k, 1, MAX_POOL_K)
        _check_int("slots", slots, 1, max_k)
        self.lanes, self.max_h, self.max_w, self.max_c = lanes, max_h, max_w, max_c
        self.max_k, self.slots = max_k, slots
        self.groups = -(-max_c // lanes)
        #: Bits of an accumulator: a sum of up to max_k**2 int8 values.
        self.acc_width = 8 + 2 * max(1, (max_k - 1).bit_length()) + 1
        #: Bits of a position in the padded image.
        self.pos_width = (max(max_h, max_w) + 2 * (max_k // 2)).bit_length()
        super().__init__({
            "config": In(config_layout()),
            "input": In(stream.Signature(lanes_layout(lanes))),
            "result": Out(stream.Signature(lanes_layout(lanes))),
            "error": Out(1),
            "config_ok": Out(1),
        })

    def check_config(self, h, w, c, k, stride, pad):
        """Raise ``ValueError`` naming the parameter if the hardware would refuse this
        configuration (it would set ``error``); returns ``(Ho, Wo)``."""
        _check_int("h", h, 1, self.max_h)
        _check_int("w", w, 1, self.max_w)
        _check_int("c", c, 1, self.max_c)
        _check_int("k", k, 1, self.max_k)
        _check_int("stride", stride, 1, 255)
        _check_int("pad", pad, 0, k // 2)
        if k > h + 2 * pad or k > w + 2 * pad:
            raise ValueError(f"k={k} is larger than the padded image {h + 2 * pad} x "
                             f"{w + 2 * pad}")
        for size in (h, w):
            if -(-k // stride) > self.slots and self.slots * stride + k <= size + 2 * pad:
                raise ValueError(f"stride={stride} too small for k={k}: more than slots="
                                 f"{self.slots} windows overlap (ceil(k / stride) > slots)")
        return (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1

    # ------------------------------------------------------------------------------------
    def _tracker(self, m, name, length, f, step, reset):
        """Windows along one dimension of the padded image, at position ``pos`` (0 after
        ``reset``, + 1 at each ``step``).

        Window ``o`` covers positions ``o*s .. o*s + k - 1`` and lives in slot ``o % slots``.
        Returns per-slot ``use``/``first``/``close`` for position ``pos``, plus whether the
        closing window is the last one (``last``) and whether any closes (``close_any``).

        For timing, every decision at ``pos`` is a register or one gate away from one: the
        distance to the next window's start counts down (``at_open``: it starts here), each
        slot counts down to its window's end (``will_close``), and whether the next window is
        the last one and whether it fits are kept one window ahead. ``f`` holds the frame's
        values: ``s``, ``k_s`` (k + s), ``last0`` (k + s > length: window 0 is the last),
        ``s_is_1``, ``k_is_1``, ``k_is_2``. The first window of a frame always fits (the
        configuration check guarantees ``k <= length``)."""
        A = self.slots
        cw = len(length) + 1
        s = f["s"]
        at_start = Signal(init=1, name=f"{name}_at_start")  # no window opened since reset
        dist = Signal(max(cw, len(s) + 1), name=f"{name}_dist")  # next window start - pos
        at_open = Signal(init=1, name=f"{name}_at_open")    # dist == 0
        nxt = Signal(cw + 9, name=f"{name}_nxt")            # end + 1 of the window after next
        nl = Signal(name=f"{name}_nl")                      # the next window is the last
        fits = Signal(name=f"{name}_fits")                  # the next window fits
        slot_next = Signal(range(A), name=f"{name}_slot")
        active = [Signal(name=f"{name}_act{j}") for j in range(A)]
        count = [Signal(cw, name=f"{name}_count{j}") for j in range(A)]    # end - pos
        will_close = [Signal(name=f"{name}_will_close{j}") for j in range(A)]  # count == 0
        lastwin = [Signal(name=f"{name}_lastwin{j}") for j in range(A)]

        nxt_eff = Signal.like(nxt, name=f"{name}_nxt_eff")
        new_last = Signal(name=f"{name}_newlast")
        opening = Signal(name=f"{name}_opening")
        m.d.comb += [
            nxt_eff.eq(Mux(at_start, f["k_s"], nxt)),
            new_last.eq(Mux(at_start, f["last0"], nl)),
            opening.eq(at_open & (at_start | fits)),
        ]
        use, first, close, last_eff = [], [], [], []
        for j in range(A):
            new = Signal(name=f"{name}_new{j}")
            m.d.comb += new.eq(opening & (slot_next == j))
            act = Signal(name=f"{name}_use{j}")
            lw = Signal(name=f"{name}_lweff{j}")
            cl = Signal(name=f"{name}_close{j}")
            m.d.comb += [
                act.eq(active[j] | new),
                lw.eq(Mux(new, new_last, lastwin[j])),
                cl.eq(act & Mux(new, f["k_is_1"], will_close[j])),
            ]
            with m.If(reset):
                m.d.sync += active[j].eq(0)
            with m.Elif(step):
                m.d.sync += [active[j].eq(act & ~cl), lastwin[j].eq(lw)]
                with m.If(new):             # its end is pos + k - 1: k - 2 after this step
                    m.d.sync += [count[j].eq(f["k"] - 2), will_close[j].eq(f["k_is_2"])]
                with m.Else():
                    m.d.sync += [count[j].eq(count[j] - 1), will_close[j].eq(count[j] == 1)]
            use.append(act)
            first.append(new)
            close.append(cl)
            last_eff.append(lw)
        with m.If(reset):
            m.d.sync += [dist.eq(0), at_open.eq(1), slot_next.eq(0), at_start.eq(1)]
        with m.Elif(step & opening):
            m.d.sync += [dist.eq(s - 1), at_open.eq(f["s_is_1"]), at_start.eq(0),
                         nxt.eq(nxt_eff + s), nl.eq(nxt_eff + s > length), fits.eq(~new_last),
                         slot_next.eq(Mux(slot_next == A - 1, 0, slot_next + 1))]
        with m.Elif(step):
            m.d.sync += [dist.eq(dist - 1), at_open.eq(dist == 1)]
        close_any = Signal(name=f"{name}_close_any")
        closing_last = Signal(name=f"{name}_closing_last")
        m.d.comb += [close_any.eq(Cat(*close).any()),
                     closing_last.eq(Cat(*[c & lw for c, lw in zip(close, last_eff)]).any())]
        return Cat(*use), Cat(*first), Cat(*close), close_any, closing_last

    def _accumulate(self, m, name, depth, rd_addr, wr_addr, en, valid, value, use, next_first,
                    close, is_max, block_ram=False):
        """Slot memories with read-modify-write: ``slots`` memories of ``depth`` entries of
        ``lanes`` accumulators. Returns the value of the closing slot (``close``) one ``en``
        cycle after its beat, from the registered write.

        The beat being accumulated (``valid``, ``value`` at ``wr_addr``, slots ``use``) takes
        its old values from operand registers: one of 8 bits for max (every value is int8
        then) and one for the sum, so that the compare and the adder share nothing. They are
        loaded one ``en`` cycle ahead, with the identities -128 and 0 for a slot whose window
        the beat opens (``next_first``, known one stage ahead), else with the stored value.
        The new value is registered, then written. So the accumulation is register -> 8-bit
        compare or add -> select -> register.

        Without ``block_ram`` the memories are read asynchronously at ``rd_addr`` (the next
        beat's address); if the registered write ahead is to that address the operands take
        it instead. The read-modify-write loop takes two cycles, so the caller must not send
        the next beat of the same address right behind a beat (``G = 1``: see
        :data:`NARROW_SPACING`).

        With ``block_ram`` each slot is a :class:`hw.ram.BlockRam` read at ``rd_addr``
        ``RAM_LATENCY + 1`` (3) ``en`` cycles before the beat is here (the RAM's output
        register, then the operand registers in the fabric next to the accumulation; the
        block RAMs sit in their own columns), and the write lands one ``en`` cycle after it.
        The caller guarantees that no address is read before the write it needs has landed
        (see :data:`TINY_ROW` and ``hold`` in :meth:`_front`)."""
        L, A, AW = self.lanes, self.slots, self.acc_width
        row = data.ArrayLayout(signed(AW), L)
        result = Signal(row, name=f"{name}_result")
        close_r = Signal(A, name=f"{name}_close_r")
        with m.If(en):
            m.d.sync += close_r.eq(close)
        results = []
        for j in range(A):
            w_en = Signal(name=f"{name}_w_en{j}")
            w_addr = Signal.like(wr_addr, name=f"{name}_w_addr{j}")
            w_data = Signal(row, name=f"{name}_w_data{j}")
            if block_ram:
                ram = m.submodules[f"{name}_ram{j}"] = BlockRam(AW * L, depth, reads=1,
                                                                 dsp=self.dsp)
                m.d.comb += [
                    ram.r0_en.eq(en), ram.r0_addr.eq(rd_addr),
                    ram.w_en.eq(en & w_en), ram.w_addr.eq(w_addr), ram.w_data.eq(w_data),
                ]
                stored = row(ram.r0_data)
                forward = Const(0)
            else:
                mem = m.submodules[f"{name}_mem{j}"] = Memory(shape=row, depth=depth, init=[])
                wp = mem.write_port()
                rp = mem.read_port(domain="comb")
                m.d.comb += [
                    rp.addr.eq(rd_addr),
                    wp.en.eq(en & w_en), wp.addr.eq(w_addr), wp.data.eq(w_data),
                ]
                stored = rp.data
                forward = w_en & (w_addr == rd_addr)
            old_max = Signal(data.ArrayLayout(signed(8), L), name=f"{name}_oldmax{j}")
            old_sum = Signal(row, name=f"{name}_oldsum{j}")
            new = Signal(row, name=f"{name}_new{j}")
            with m.If(en):
                m.d.sync += [w_en.eq(valid & use[j]), w_addr.eq(wr_addr), w_data.eq(new)]
                for lane in range(L):
                    with m.If(next_first[j]):
                        m.d.sync += [old_max[lane].eq(-128), old_sum[lane].eq(0)]
                    with m.Elif(forward):
                        m.d.sync += [old_max[lane].eq(w_data[lane]),
                                     old_sum[lane].eq(w_data[lane])]
                    with m.Else():
                        m.d.sync += [old_max[lane].eq(stored[lane]),
                                     old_sum[lane].eq(stored[lane])]
            for lane in range(L):
                mx, v = old_max[lane], value[lane]
                v8 = v[:8].as_signed()
                m.d.comb += new[lane].eq(Mux(is_max, Mux(mx > v8, mx, v8), old_sum[lane] + v))
            results.append(w_data)
        m.d.comb += result.eq(results[0])
        for j in range(1, A):
            with m.If(close_r[j]):
                m.d.comb += result.eq(results[j])
        return result

    def elaborate(self, platform):
        # The stages in pipeline order (module docstring, "Architecture"). Together they emit
        # their statements in one fixed order: Amaranth numbers the netlist's cells in that
        # order and Yosys's LUT mapping depends on it, so reordering them changes the logic
        # depth and Fmax (not the behaviour). Re-measure (hw.logic_depth) after doing so.
        m = Module()
        checked = self._config_check(m)
        state = Signal(2, name="state")     # the front's _IDLE / _RUN / _DROP
        idle = Signal()
        m.d.comb += idle.eq(state == _IDLE)
        frame = self._frame_latch(m, idle, checked)
        pipe = self._pipeline_enable(m)
        beat = self._front(m, state, idle, checked.ok, frame, pipe)
        s1 = self._horizontal(m, frame, pipe, beat)
        s1b = self._s1b(m, pipe, s1)
        s2b = self._vertical(m, pipe, beat, s1b)
        self._finalize(m, pipe, s2b)
        return m

    # ---- configuration check and latch --------------------------------------------------
    def _config_check(self, m):
        """Checks the ``config`` ports against the unit's limits in three steps: padded sizes
        and ``stride * slots``, the individual checks, their AND. With ``registered_config``
        the ports are registered and each step is a register stage (``CONFIG_LATENCY`` in
        all); otherwise all of it is combinational. Hands :meth:`_frame_latch` and the front
        a :class:`_CheckedConfig`."""
        A, K = self.slots, self.max_k
        cfg_in = self.config
        stage = m.d.sync if self.registered_config else m.d.comb
        if self.registered_config:
            ch = Signal(config_layout(), name="cfg_r")
            m.d.sync += ch.eq(cfg_in)
        else:
            ch = cfg_in
        hp_c = Signal(18, name="cfg_hp")
        wp_c = Signal(18, name="cfg_wp")
        s_slots = Signal(8 + A.bit_length(), name="cfg_s_slots")    # stride * slots
        stage += [hp_c.eq(cfg_in.h + (cfg_in.pad << 1)), wp_c.eq(cfg_in.w + (cfg_in.pad << 1)),
                  s_slots.eq(_balanced_sum([cfg_in.stride << i for i in range(A.bit_length())
                                            if (A >> i) & 1]))]
        checks = [
            (ch.h >= 1) & (ch.h <= self.max_h), (ch.w >= 1) & (ch.w <= self.max_w),
            (ch.c >= 1) & (ch.c <= self.max_c), (ch.k >= 1) & (ch.k <= K), ch.stride >= 1,
            (ch.pad << 1) <= ch.k, ch.k <= hp_c, ch.k <= wp_c,
            (ch.k <= s_slots) | (s_slots + ch.k > hp_c),
            (ch.k <= s_slots) | (s_slots + ch.k > wp_c),
        ]
        flags = Signal(len(checks), name="cfg_checks")
        stage += flags.eq(Cat(*checks))
        ok = Signal()
        stage += ok.eq(flags.all())
        # The check's result, for an engine that refuses a configuration before streaming
        # (valid CONFIG_LATENCY cycles after the configuration with registered_config).
        m.d.comb += self.config_ok.eq(ok)
        return _CheckedConfig(config=ch, hp=hp_c, wp=wp_c, ok=ok)

    def _frame_latch(self, m, idle, checked):
        """The values a frame runs with, derived from the checked configuration once per frame
        (so that the walk and the trackers compare registers without adding) and latched while
        the front is ``idle``. Without ``registered_config`` an idle front reads them straight
        from the ports, so that a frame starts in the cycle its first beat arrives; with it,
        always from the latch. Hands the front and S1 a namespace of them (``cur_*``)."""
        L, K, pos_w = self.lanes, self.max_k, self.pos_width
        ch, hp_c, wp_c = checked.config, checked.hp, checked.wp
        values = {                                          # name: (shape, value at the ports)
            "hp": (pos_w, hp_c), "wp": (pos_w, wp_c), "k": (range(K + 1), ch.k),
            "s": (8, ch.stride), "pad": (range(K // 2 + 1), ch.pad),
            "is_max": (1, ch.mode == MODE_MAX),
            "padval": (signed(8), Mux(ch.mode == MODE_MAX, -128, ch.zero_point)),
            # fewer than TINY_ROW beats per padded row: see the front's `hold`
            "tiny": (1, Cat(*[(wp_c == wp) & (ch.c <= L * (-(-TINY_ROW // wp) - 1))
                              for wp in range(1, TINY_ROW)]).any()),
            "narrow": (1, ch.c <= L),       # one channel group: see NARROW_SPACING
            "hp1": (pos_w, hp_c - 1), "wp1": (pos_w, wp_c - 1), "pad0": (1, ch.pad == 0),
            "pad_m1": (pos_w, ch.pad - 1), "pad_h1": (pos_w, ch.pad + ch.h - 1),
            "pad_w1": (pos_w, ch.pad + ch.w - 1), "c_lb": (16, Mux(ch.c > L, ch.c - L, 0)),
            "k_s": (9, ch.k + ch.stride),
            "last0_h": (1, ch.k + ch.stride > hp_c), "last0_w": (1, ch.k + ch.stride > wp_c),
            "s_is_1": (1, ch.stride == 1), "k_is_1": (1, ch.k == 1), "k_is_2": (1, ch.k == 2),
        }
        cur = {}
        for name, (shape, at_ports) in values.items():
            latched = Signal(shape, name=f"frame_{name}")
            cur[name] = Signal(shape, name=f"cur_{name}")
            m.d.comb += cur[name].eq(latched if self.registered_config
                                     else Mux(idle, at_ports, latched))
            with m.If(idle):
                m.d.sync += latched.eq(at_ports)
        return SimpleNamespace(**cur)

    # ---- pipeline enable -----------------------------------------------------------------
    def _pipeline_enable(self, m):
        """The whole pipeline advances (``en``) when its output register is empty or
        ``result`` takes its beat. Hands every stage a :class:`_Pipeline`."""
        s1_valid = Signal(name="s1_valid")
        s1_history = [Signal(name=f"adv_d{n}") for n in range(2, TINY_SPACING)]
        out_valid = Signal(name="sout_valid")   # the name it has always had in the netlist
        en = Signal()
        m.d.comb += en.eq(~out_valid | self.result.ready)
        return _Pipeline(en=en, s1_valid=s1_valid, s1_history=s1_history, out_valid=out_valid)

    # ---- front: walk the padded image ---------------------------------------------------
    def _front(self, m, state, idle, config_ok, frame, pipe):
        """The front: walks the padded image (:meth:`_walk`), one position per ``advance``.
        A position inside the image (``real``) takes an input beat, a padding position makes
        one without consuming any. The walk advances when the pipeline does and the beat is
        there, unless it holds to space the beats; the frame state (:meth:`_frame_state`)
        says whether a frame runs. Hands S1 the beat at the front (:class:`_FrontBeat`)."""
        inp = self.input
        pos = self._position(idle, frame)
        real = Signal()
        m.d.comb += real.eq(pos.row_in_eff & pos.col_in_eff)
        walking = Signal()          # RUN, or IDLE with a valid first beat and a good config
        m.d.comb += walking.eq((state == _RUN) | (idle & inp.valid & config_ok))
        # The line buffers are read when a beat is at the front and written four cycles
        # later (after S2). In a padded row of TINY_ROW or more beats the same address comes
        # round at least 5 cycles later; `tiny` frames (fewer beats per row) take one beat
        # every TINY_SPACING cycles instead (see TINY_ROW), and frames of one channel group
        # one beat every NARROW_SPACING (2) cycles for the horizontal accumulators.
        hold = Signal()
        m.d.comb += hold.eq((frame.tiny & Cat(pipe.s1_valid, *pipe.s1_history).any())
                            | (frame.narrow & pipe.s1_valid))
        front_valid = Signal()
        m.d.comb += front_valid.eq(walking & (~real | inp.valid) & ~hold)
        advance = Signal()
        m.d.comb += advance.eq(pipe.en & front_valid)
        m.d.comb += inp.ready.eq((walking & pipe.en & real & ~hold) | (state == _DROP))
        walk = self._walk(m, idle, frame, pos, advance)
        self._frame_state(m, state, config_ok, walk.frame_end)
        return _FrontBeat(advance=advance, real=real, data=inp.payload.data, g=pos.g,
                          g_last=walk.g_last, addr=pos.hr_count, h=walk.h, v=walk.v)

    def _position(self, idle, frame):
        """The registers of the walk's position (no logic: :meth:`_walk` moves them): row
        ``yp``, column ``xp``, channel group ``g`` (``gbase = g * lanes``), ``hr_count``, the
        line-buffer address of the beat's row result (``G`` per horizontal window closed so
        far in the row, plus ``g``), and whether the row and the column are inside
        the image (``row_in``, ``col_in``: between frames the walk is at (0, 0), inside iff
        pad == 0, which ``*_eff`` take while ``idle``)."""
        L, G, pos_w = self.lanes, self.groups, self.pos_width
        row_in = Signal(name="row_in")
        col_in = Signal(name="col_in")
        return SimpleNamespace(
            yp=Signal(pos_w, name="yp"), xp=Signal(pos_w, name="xp"),
            g=Signal(range(G), name="g"), gbase=Signal(range(G * L + 1), name="gbase"),
            hr_count=Signal(range((self.max_w + 1) * G + 1), name="hr_count"),
            row_in=row_in, col_in=col_in,
            row_in_eff=Mux(idle, frame.pad0, row_in), col_in_eff=Mux(idle, frame.pad0, col_in))

    def _walk(self, m, idle, frame, pos, advance):
        """Moves the position ``pos`` on ``advance``: the next channel group, column, row, back
        to (0, 0, 0) after the frame's last. ``row_in`` / ``col_in`` are set when the walk
        steps onto position pad, cleared when it steps past pad + h/w - 1. Runs the window
        trackers (:meth:`_windows`) alongside. Hands the front a :class:`_Walk`."""
        L = self.lanes
        yp, xp, g, gbase = pos.yp, pos.xp, pos.g, pos.gbase
        g_last = Signal()
        x_last = Signal()
        y_last = Signal()
        m.d.comb += [g_last.eq(gbase >= frame.c_lb), x_last.eq(xp == frame.wp1),
                     y_last.eq(yp == frame.hp1)]
        row_end = advance & g_last & x_last
        frame_end = row_end & y_last
        h, v = self._windows(m, frame, next_col=advance & g_last & ~x_last, row_end=row_end,
                             next_row=row_end & ~y_last, frame_end=frame_end)

        with m.If(idle):
            m.d.sync += [pos.row_in.eq(frame.pad0), pos.col_in.eq(frame.pad0)]
        with m.If(advance):
            with m.If(h.close_any):
                m.d.sync += pos.hr_count.eq(pos.hr_count + 1)
            with m.If(~g_last):
                m.d.sync += [g.eq(g + 1), gbase.eq(gbase + L)]
            with m.Else():
                m.d.sync += [g.eq(0), gbase.eq(0)]
                with m.If(~x_last):
                    m.d.sync += [xp.eq(xp + 1),
                                 pos.col_in.eq((~frame.pad0 & (xp == frame.pad_m1))
                                               | (pos.col_in_eff & (xp != frame.pad_w1)))]
                with m.Else():
                    m.d.sync += [xp.eq(0), pos.hr_count.eq(0), pos.col_in.eq(frame.pad0)]
                    with m.If(~y_last):
                        m.d.sync += [yp.eq(yp + 1),
                                     pos.row_in.eq((~frame.pad0 & (yp == frame.pad_m1))
                                                   | (pos.row_in_eff & (yp != frame.pad_h1)))]
                    with m.Else():
                        m.d.sync += [yp.eq(0), pos.row_in.eq(frame.pad0)]
        return _Walk(g_last=g_last, frame_end=frame_end, h=h, v=v)

    def _windows(self, m, frame, next_col, row_end, next_row, frame_end):
        """The windows at the walk's position: a :meth:`_tracker` along the row (``htr``: a
        step per column, reset at the row's end) and one down the image (``vtr``: a step per
        row, reset at the frame's end), so that both rest in their reset state between
        frames. Hands the walk ``(h, v)``, each a :class:`_Windows`."""
        win = {name: getattr(frame, name) for name in ("s", "k_s", "s_is_1", "k_is_1",
                                                       "k_is_2", "k")}
        h = _Windows(*self._tracker(m, "htr", frame.wp, dict(win, last0=frame.last0_w),
                                    next_col, row_end))
        v = _Windows(*self._tracker(m, "vtr", frame.hp, dict(win, last0=frame.last0_h),
                                    next_row, frame_end))
        return h, v

    def _frame_state(self, m, state, config_ok, frame_end):
        """IDLE between frames; a first beat starts a frame: RUN until its last position (or
        straight back to IDLE if that was its only one), or DROP up to its ``last`` beat if
        its configuration is refused, which ``error`` reports until the next frame starts."""
        inp = self.input
        with m.Switch(state):
            with m.Case(_IDLE):
                with m.If(inp.valid):
                    m.d.sync += [self.error.eq(~config_ok),
                                 state.eq(Mux(~config_ok, _DROP,
                                              Mux(frame_end, _IDLE, _RUN)))]
            with m.Case(_DROP):
                with m.If(inp.valid & inp.payload.last):
                    m.d.sync += state.eq(_IDLE)
            with m.Case(_RUN):
                with m.If(frame_end):
                    m.d.sync += state.eq(_IDLE)
            with m.Default():                   # unreachable state: recover
                m.d.sync += state.eq(_IDLE)

    # ---- S1: horizontal accumulation ----------------------------------------------------
    def _horizontal(self, m, frame, pipe, beat):
        """S1: registers the beat at the front (its data, or the padding value; its windows;
        the average's k*k and multiplier, which travel with every beat since k may change
        between frames) and accumulates it into the horizontal slot memories (``hacc``, one
        entry per channel group). Also keeps ``pipe.s1_history`` for the front's hold.
        Hands S1b the S1 registers and ``row_result``, the closing horizontal window's value
        one cycle later (from the registered write)."""
        L, K, en = self.lanes, self.max_k, pipe.en
        mults = Array([Const(avg_pool_multiplier(i)[0] if i else 0, 32) for i in range(K + 1)])
        squares = Array([Const(i * i, (K * K).bit_length()) for i in range(K + 1)])
        h, v = beat.h, beat.v
        s1, load_s1 = _stage(
            "s1", g=beat.g, max=frame.is_max, kk=squares[frame.k], m=mults[frame.k],
            huse=h.use, hfirst=h.first, hclose=h.close, hany=h.close_any,
            vuse=v.use, vfirst=v.first, vclose=v.close, vany=v.close_any, addr=beat.addr,
            last=v.close_any & v.closing_last & h.close_any & h.closing_last & beat.g_last)
        s1.value = Signal(data.ArrayLayout(signed(self.acc_width), L), name="s1_value")
        if pipe.s1_history:
            with m.If(en):
                m.d.sync += Cat(*pipe.s1_history).eq(Cat(pipe.s1_valid,
                                                         *pipe.s1_history[:-1]))
        with m.If(en):
            m.d.sync += [pipe.s1_valid.eq(beat.advance)] + load_s1
            for lane in range(L):
                m.d.sync += s1.value[lane].eq(Mux(beat.real, beat.data[lane], frame.padval))
        # h.first: the slots whose window the *next* beat opens (one stage ahead).
        s1.row_result = self._accumulate(m, "hacc", self.groups, beat.g, s1.g, en,
                                         pipe.s1_valid, s1.value, s1.huse, h.first, s1.hclose,
                                         s1.max)
        return s1

    # ---- S1b ------------------------------------------------------------------------------
    def _s1b(self, m, pipe, s1):
        """S1b: a stage while the line-buffer read issued at the front is in flight. Its value
        is S1's row result; the beat goes on only if a horizontal window closed in S1. Hands
        S2 the row result (``value``), its vertical windows and its line-buffer address."""
        s1b, load_s1b = _stage(
            "s1b", valid=pipe.s1_valid & s1.hany, max=s1.max, kk=s1.kk, m=s1.m,
            vuse=s1.vuse, vfirst=s1.vfirst, vclose=s1.vclose, vany=s1.vany, addr=s1.addr,
            last=s1.last)
        with m.If(pipe.en):
            m.d.sync += load_s1b
        s1b.value = s1.row_result
        return s1b

    # ---- S2: vertical accumulation (line buffers) ---------------------------------------
    def _vertical(self, m, pipe, beat, s1b):
        """S2: accumulates the row result into the line buffers (``vacc``, ``(max_w + 1) * G``
        entries per slot). Their read was issued at the front (``beat.addr`` is the address
        of the beat that reaches S2 three cycles later): RAM_LATENCY cycles and a fabric
        register. Hands the finalize stage S2b: the closing vertical window's value
        (``value``, from the registered write) if one closed (``valid``), with ``last``,
        ``max``, ``kk`` and ``m``."""
        en = pipe.en
        s2, load_s2 = _stage(
            "s2", valid=s1b.valid, value=s1b.value, max=s1b.max, kk=s1b.kk, m=s1b.m,
            vuse=s1b.vuse, vfirst=s1b.vfirst, vclose=s1b.vclose, vany=s1b.vany,
            addr=s1b.addr, last=s1b.last)
        with m.If(en):
            m.d.sync += load_s2
        assert RAM_LATENCY == 2
        # s1b.vfirst: the slots whose window the next beat opens (one stage ahead).
        column_result = self._accumulate(
            m, "vacc", (self.max_w + 1) * self.groups, beat.addr, s2.addr, en, s2.valid,
            s2.value, s2.vuse, s1b.vfirst, s2.vclose, s2.max, block_ram=True)
        s2b, load_s2b = _stage("s2b", valid=s2.valid & s2.vany, last=s2.last, max=s2.max,
                               kk=s2.kk, m=s2.m)
        with m.If(en):
            m.d.sync += load_s2b
        s2b.value = column_result
        return s2b

    # ---- finalize: S3, S3b, multiplier, two adds, output ---------------------------------
    def _finalize(self, m, pipe, s2b):
        """Max passes through; the average computes ``sign(S) * ((2|S| + k*k) * M >> 32)``:
        the magnitude (S3, S3b), registered multipliers, two adds and the output register,
        which drives ``result``."""
        s3b = self._magnitude(m, pipe, s2b)
        products, beside = self._products(m, pipe, s3b)
        self._output(m, pipe, products, beside)

    def _magnitude(self, m, pipe, s2b):
        """S3 registers the closing window's value (selected from the line buffers'
        registered new values); S3b takes ``n = 2|S| + k*k``, its sign and its low 8 bits
        (the max). Hands the multipliers S3b: ``n`` (per lane), ``neg``, ``val8``, ``m``
        and the beat's ``valid``, ``last`` and ``max``."""
        L = self.lanes
        s3, load_s3 = _stage("s3", valid=s2b.valid, val=s2b.value, last=s2b.last,
                             max=s2b.max, kk=s2b.kk, m=s2b.m)
        s3b, load_s3b = _stage("s3b", valid=s3.valid, last=s3.last, max=s3.max, m=s3.m)
        s3b.n = [Signal(_magnitude_bits(self.max_k), name=f"s3b_n{lane}") for lane in range(L)]
        s3b.neg = Signal(L, name="s3b_neg")
        s3b.val8 = Signal(data.ArrayLayout(signed(8), L), name="s3b_val8")
        with m.If(pipe.en):
            m.d.sync += load_s3 + load_s3b
            for lane in range(L):
                v = s3.val[lane]
                m.d.sync += [s3b.n[lane].eq((Mux(v < 0, -v, v) << 1) + s3.kk),
                             s3b.neg[lane].eq(v < 0), s3b.val8[lane].eq(v[:8])]
        return s3b

    def _products(self, m, pipe, s3b):
        """``n * M`` in 16 x 16-bit products: per lane, each 16-bit chunk of ``n`` times each
        16-bit half of ``M``, on :class:`hw.pe.RegisteredMultiplier` (``STAGES`` cycles); the
        beat's other fields travel beside them through as many registers. Hands the adds
        ``products[lane][chunk] = (low half, high half)`` (32 bits each) and those fields."""
        n_chunks = -(-_magnitude_bits(self.max_k) // 16)
        products = []
        for lane in range(self.lanes):
            per_chunk = []
            for c_i in range(n_chunks):
                halves = []
                for h_i in range(2):
                    mul = RegisteredMultiplier(17, 17, self.dsp)
                    m.submodules[f"avg_mul{lane}_{c_i}_{h_i}"] = mul
                    m.d.comb += [mul.a.eq(s3b.n[lane][16 * c_i:16 * c_i + 16]),
                                 mul.b.eq(s3b.m[16 * h_i:16 * h_i + 16]), mul.ce.eq(pipe.en)]
                    halves.append(mul.p[:32])
                per_chunk.append(halves)
            products.append(per_chunk)
        beside = SimpleNamespace(**{
            name: _delayed(m, pipe.en, getattr(s3b, name), name, RegisteredMultiplier.STAGES)
            for name in ("valid", "neg", "val8", "last", "max")})
        return products, beside

    def _output(self, m, pipe, products, beside):
        """Two adds, A each chunk's two halves, B the chunks; then the output register: B's
        sum shifted by AVG_SHIFT with the sign (average) or the value itself (max). Drives
        ``result``."""
        L, res = self.lanes, self.result
        n_chunks = len(products[0])
        a_sum = [[Signal(49, name=f"a_sum{lane}_{c_i}") for c_i in range(n_chunks)]
                 for lane in range(L)]
        a, load_a = _stage("a", valid=beside.valid, neg=beside.neg, val8=beside.val8,
                           last=beside.last, max=beside.max)
        b_sum = [Signal(_magnitude_bits(self.max_k) + 32, name=f"b_sum{lane}")
                 for lane in range(L)]
        b, load_b = _stage("b", valid=a.valid, neg=a.neg, val8=a.val8, last=a.last,
                           max=a.max)
        out = Signal(data.ArrayLayout(signed(8), L))
        out_last = Signal()
        with m.If(pipe.en):
            m.d.sync += load_a + load_b + [pipe.out_valid.eq(b.valid), out_last.eq(b.last)]
            for lane in range(L):
                for c_i in range(n_chunks):
                    lo, hi = products[lane][c_i]
                    m.d.sync += a_sum[lane][c_i].eq(lo + (hi << 16))
                m.d.sync += b_sum[lane].eq(_balanced_sum(
                    [a_sum[lane][c_i] << (16 * c_i) for c_i in range(n_chunks)]))
                q = (b_sum[lane] >> AVG_SHIFT)[:8]
                m.d.sync += out[lane].eq(Mux(b.max, b.val8[lane], Mux(b.neg[lane], -q, q)))
        m.d.comb += [
            res.valid.eq(pipe.out_valid),
            res.payload.last.eq(out_last),
            res.payload.data.as_value().eq(out.as_value()),
        ]


def _stage(stage, **values):
    """A pipeline stage's registers ``{stage}_{name}``, one per value, as a namespace (the
    stage may add its other values to it), and the assignments that load them (the caller
    puts them under the enable)."""
    regs = {name: Signal.like(value, name=f"{stage}_{name}") for name, value in values.items()}
    return SimpleNamespace(**regs), [regs[name].eq(value) for name, value in values.items()]


def _delayed(m, en, value, name, cycles):
    """``value`` through ``cycles`` registers ``{name}_m1 ..``, each loaded when ``en``."""
    for n in range(cycles):
        reg = Signal.like(value, name=f"{name}_m{n + 1}")
        with m.If(en):
            m.d.sync += reg.eq(value)
        value = reg
    return value


def _magnitude_bits(max_k):
    """Bits of the average's ``n = 2|S| + k*k`` (``|S| <= 128 k*k``)."""
    return (2 * 128 * max_k * max_k + max_k * max_k).bit_length()


def _balanced_sum(terms):
    """Sum as a balanced tree (a long left-nested chain overflows Python's recursion limit)."""
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]
