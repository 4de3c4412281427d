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

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
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
        (see :data:`TINY_ROW` and ``tiny`` in :meth:`elaborate`)."""
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
        m = Module()
        L, A = self.lanes, self.slots
        G = self.groups
        K = self.max_k
        self.acc_width = AW = 8 + 2 * max(1, (K - 1).bit_length()) + 1
        cfg_in = self.config
        inp, res = self.input, self.result

        # ---- configuration check and latch ---------------------------------------------
        pos_w = (max(self.max_h, self.max_w) + 2 * (K // 2)).bit_length()
        # The check in three steps: padded sizes and stride * slots, the individual checks,
        # their AND. With registered_config each step is a register stage (the ports, then
        # CONFIG_LATENCY - 1 more), otherwise all of it is combinational.
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
        # Frame parameters: latched when a frame starts; while idle the front reads the
        # configuration ports directly (or their registered copy, registered_config), so a
        # frame starts in the cycle its first beat arrives.
        IDLE, RUN, DROP = 0, 1, 2
        state = Signal(2, name="state")
        idle = Signal()
        m.d.comb += idle.eq(state == IDLE)
        port_vals = {
            "hp": hp_c, "wp": wp_c, "k": ch.k, "s": ch.stride, "pad": ch.pad, "is_max": ch.mode == MODE_MAX,
            "padval": Mux(ch.mode == MODE_MAX, -128, ch.zero_point),
            # fewer than TINY_ROW beats per padded row: see `hold` below
            "tiny": Cat(*[(wp_c == wp) & (ch.c <= L * (-(-TINY_ROW // wp) - 1))
                          for wp in range(1, TINY_ROW)]).any(),
            "narrow": ch.c <= L,            # one channel group: see NARROW_SPACING
            # derived once per frame, so the walk compares registers without adding
            "hp1": hp_c - 1, "wp1": wp_c - 1, "pad0": ch.pad == 0, "pad_m1": ch.pad - 1,
            "pad_h1": ch.pad + ch.h - 1, "pad_w1": ch.pad + ch.w - 1,
            "c_lb": Mux(ch.c > L, ch.c - L, 0), "k_s": ch.k + ch.stride,
            "last0_h": ch.k + ch.stride > hp_c, "last0_w": ch.k + ch.stride > wp_c,
            "s_is_1": ch.stride == 1, "k_is_1": ch.k == 1, "k_is_2": ch.k == 2,
        }
        shapes = {"hp": pos_w, "wp": pos_w, "k": range(K + 1), "s": 8, "pad": range(K // 2 + 1), "is_max": 1,
                  "padval": signed(8), "tiny": 1, "narrow": 1, "hp1": pos_w, "wp1": pos_w,
                  "pad0": 1, "pad_m1": pos_w, "pad_h1": pos_w, "pad_w1": pos_w, "c_lb": 16,
                  "k_s": 9, "last0_h": 1,
                  "last0_w": 1, "s_is_1": 1, "k_is_1": 1, "k_is_2": 1}
        cur = {}
        for name, shape in shapes.items():
            reg = Signal(shape, name=f"frame_{name}")
            cur[name] = Signal(shape, name=f"cur_{name}")
            m.d.comb += cur[name].eq(reg if self.registered_config
                                     else Mux(idle, port_vals[name], reg))
            with m.If(idle):
                m.d.sync += reg.eq(port_vals[name])
        hp, wp_ = cur["hp"], cur["wp"]
        k, is_max, padval = cur["k"], cur["is_max"], cur["padval"]
        tiny = cur["tiny"]
        # The average's k*k and multiplier travel with each beat (k may change between frames).
        mults = Array([Const(avg_pool_multiplier(i)[0] if i else 0, 32) for i in range(K + 1)])
        squares = Array([Const(i * i, (K * K).bit_length()) for i in range(K + 1)])

        yp = Signal(pos_w, name="yp")
        xp = Signal(pos_w, name="xp")
        g = Signal(range(G), name="g")
        gbase = Signal(range(G * L + 1), name="gbase")
        hr_count = Signal(range((self.max_w + 1) * G + 1), name="hr_count")

        # ---- pipeline enable -----------------------------------------------------------
        s1_valid, s2_valid, s3_valid, out_valid = (Signal(name=f"s{i}_valid")
                                                   for i in ("1", "2", "3", "out"))
        en = Signal()
        m.d.comb += en.eq(~out_valid | res.ready)

        # ---- front: walk the padded image ----------------------------------------------
        # Whether the position is inside the image, kept in registers per row and column:
        # set when the walk steps onto position pad, cleared when it steps past pad + h/w - 1.
        # Between frames (IDLE) the walk is at (0, 0), inside iff pad == 0.
        row_in = Signal(name="row_in")
        col_in = Signal(name="col_in")
        row_eff = Mux(idle, cur["pad0"], row_in)
        col_eff = Mux(idle, cur["pad0"], col_in)
        real = Signal()
        m.d.comb += real.eq(row_eff & col_eff)
        walking = Signal()          # RUN, or IDLE with a valid first beat and a good config
        m.d.comb += walking.eq((state == RUN) | (idle & inp.valid & ok))
        # The line buffers are read when a beat is at the front and written four cycles
        # later (after S2). In a padded row of TINY_ROW or more beats the same address comes
        # round at least 5 cycles later; `tiny` frames (fewer beats per row) take one beat
        # every TINY_SPACING cycles instead (see TINY_ROW), and frames of one channel group
        # one beat every NARROW_SPACING (2) cycles for the horizontal accumulators.
        recent = [Signal(name=f"adv_d{n}") for n in range(2, TINY_SPACING)]
        hold = Signal()
        m.d.comb += hold.eq((tiny & Cat(s1_valid, *recent).any()) | (cur["narrow"] & s1_valid))
        front_valid = Signal()
        m.d.comb += front_valid.eq(walking & (~real | inp.valid) & ~hold)
        advance = Signal()
        m.d.comb += advance.eq(en & front_valid)
        m.d.comb += inp.ready.eq((walking & en & real & ~hold) | (state == DROP))

        g_last = Signal()
        x_last = Signal()
        y_last = Signal()
        m.d.comb += [g_last.eq(gbase >= cur["c_lb"]), x_last.eq(xp == cur["wp1"]),
                     y_last.eq(yp == cur["hp1"])]
        row_end = advance & g_last & x_last
        frame_end = row_end & y_last

        # Trackers rest in their reset state between frames (reset by the last advance).
        h_step = advance & g_last & ~x_last
        h_reset = row_end
        v_step = row_end & ~y_last
        v_reset = frame_end
        win = {name: cur[name] for name in ("s", "k_s", "s_is_1", "k_is_1", "k_is_2")}
        win["k"] = k
        h_use, h_first, h_close, h_any, h_lastwin = self._tracker(
            m, "htr", wp_, dict(win, last0=cur["last0_w"]), h_step, h_reset)
        v_use, v_first, v_close, v_any, v_lastwin = self._tracker(
            m, "vtr", hp, dict(win, last0=cur["last0_h"]), v_step, v_reset)

        with m.If(idle):
            m.d.sync += [row_in.eq(cur["pad0"]), col_in.eq(cur["pad0"])]
        with m.If(advance):
            with m.If(h_any):
                m.d.sync += hr_count.eq(hr_count + 1)
            with m.If(~g_last):
                m.d.sync += [g.eq(g + 1), gbase.eq(gbase + L)]
            with m.Else():
                m.d.sync += [g.eq(0), gbase.eq(0)]
                with m.If(~x_last):
                    m.d.sync += [xp.eq(xp + 1),
                                 col_in.eq((~cur["pad0"] & (xp == cur["pad_m1"]))
                                           | (col_eff & (xp != cur["pad_w1"])))]
                with m.Else():
                    m.d.sync += [xp.eq(0), hr_count.eq(0), col_in.eq(cur["pad0"])]
                    with m.If(~y_last):
                        m.d.sync += [yp.eq(yp + 1),
                                     row_in.eq((~cur["pad0"] & (yp == cur["pad_m1"]))
                                               | (row_eff & (yp != cur["pad_h1"])))]
                    with m.Else():
                        m.d.sync += [yp.eq(0), row_in.eq(cur["pad0"])]

        with m.Switch(state):
            with m.Case(IDLE):
                with m.If(inp.valid):
                    m.d.sync += [self.error.eq(~ok),
                                 state.eq(Mux(~ok, DROP, Mux(frame_end, IDLE, RUN)))]
            with m.Case(DROP):
                with m.If(inp.valid & inp.payload.last):
                    m.d.sync += state.eq(IDLE)
            with m.Case(RUN):
                with m.If(frame_end):
                    m.d.sync += state.eq(IDLE)
            with m.Default():                   # unreachable state: recover
                m.d.sync += state.eq(IDLE)

        # ---- S1: horizontal accumulation -------------------------------------------------
        row = data.ArrayLayout(signed(AW), L)
        s1_value = Signal(row)
        s1_g = Signal(range(G))
        s1_h = [Signal(A, name=f"s1_h{n}") for n in ("use", "first", "close")]
        s1_hany = Signal()
        s1_v = [Signal(A, name=f"s1_v{n}") for n in ("use", "first", "close")]
        s1_vany = Signal()
        s1_addr = Signal.like(hr_count)
        s1_last = Signal()
        s1_max = Signal()
        s1_kk = Signal(len(squares[0]))
        s1_m = Signal(32)
        if recent:
            with m.If(en):
                m.d.sync += Cat(*recent).eq(Cat(s1_valid, *recent[:-1]))
        with m.If(en):
            m.d.sync += [
                s1_valid.eq(advance), s1_g.eq(g), s1_max.eq(is_max),
                s1_kk.eq(squares[k]), s1_m.eq(mults[k]),
                s1_h[0].eq(h_use), s1_h[1].eq(h_first), s1_h[2].eq(h_close), s1_hany.eq(h_any),
                s1_v[0].eq(v_use), s1_v[1].eq(v_first), s1_v[2].eq(v_close), s1_vany.eq(v_any),
                s1_addr.eq(hr_count),
                s1_last.eq(v_any & v_lastwin & h_any & h_lastwin & g_last),
            ]
            for lane in range(L):
                m.d.sync += s1_value[lane].eq(Mux(real, inp.payload.data[lane], padval))
        hr = self._accumulate(m, "hacc", G, g, s1_g, en, s1_valid, s1_value,
                              s1_h[0], h_first, s1_h[2], s1_max)

        # ---- S1b: the horizontal result, from the registered writes (the line buffer read is
        # in flight) ----
        s1b_valid = Signal()
        s1b_value = hr
        s1b_v = [Signal(A, name=f"s1b_v{n}") for n in ("use", "first", "close")]
        s1b_vany = Signal()
        s1b_addr = Signal.like(hr_count)
        s1b_last = Signal()
        s1b_max = Signal()
        s1b_kk = Signal.like(s1_kk)
        s1b_m = Signal.like(s1_m)
        with m.If(en):
            m.d.sync += [
                s1b_valid.eq(s1_valid & s1_hany),
                s1b_max.eq(s1_max), s1b_kk.eq(s1_kk), s1b_m.eq(s1_m),
                Cat(*s1b_v).eq(Cat(*s1_v)), s1b_vany.eq(s1_vany), s1b_addr.eq(s1_addr),
                s1b_last.eq(s1_last),
            ]

        # ---- S2: vertical accumulation (line buffers) ----------------------------------
        s2_value = Signal(row)
        s2_v = [Signal(A, name=f"s2_v{n}") for n in ("use", "first", "close")]
        s2_vany = Signal()
        s2_addr = Signal.like(hr_count)
        s2_last = Signal()
        s2_max = Signal()
        s2_kk = Signal.like(s1_kk)
        s2_m = Signal.like(s1_m)
        with m.If(en):
            m.d.sync += [
                s2_valid.eq(s1b_valid), s2_value.eq(s1b_value),
                s2_max.eq(s1b_max), s2_kk.eq(s1b_kk), s2_m.eq(s1b_m),
                Cat(*s2_v).eq(Cat(*s1b_v)), s2_vany.eq(s1b_vany), s2_addr.eq(s1b_addr),
                s2_last.eq(s1b_last),
            ]
        # Read issued at the front (hr_count is the beat's s1_addr): RAM_LATENCY cycles and a
        # fabric register, so it arrives in S2; the result is the closing slot's registered
        # new value, in S2b.
        assert RAM_LATENCY == 2
        vr = self._accumulate(m, "vacc", (self.max_w + 1) * G, hr_count, s2_addr, en, s2_valid,
                              s2_value, s2_v[0], s1b_v[1], s2_v[2], s2_max, block_ram=True)
        s2b_valid = Signal()
        s2b_last = Signal()
        s2b_max = Signal()
        s2b_kk = Signal.like(s1_kk)
        s2b_m = Signal.like(s1_m)
        with m.If(en):
            m.d.sync += [s2b_valid.eq(s2_valid & s2_vany), s2b_last.eq(s2_last),
                         s2b_max.eq(s2_max), s2b_kk.eq(s2_kk), s2b_m.eq(s2_m)]

        # ---- finalize: S3, S3b, multiplier (3), two adds, output --------------------------
        # Average: sign(S) * ((2|S| + k*k) * M >> 32). S3 registers the closing slot's value
        # (selected from the registered new values), S3b takes its magnitude; n * M is summed
        # from 16 x 16-bit products of registered multipliers (hw.pe.RegisteredMultiplier).
        nw = (2 * 128 * K * K + K * K).bit_length()
        n_chunks = -(-nw // 16)
        s3_val = Signal(row)
        s3_last = Signal()
        s3_max = Signal()
        s3_kk = Signal.like(s1_kk)
        s3_m = Signal.like(s1_m)
        s3b_valid = Signal()
        s3b_n = [Signal(nw, name=f"s3b_n{lane}") for lane in range(L)]
        s3b_neg = Signal(L)
        s3b_val8 = Signal(data.ArrayLayout(signed(8), L))
        s3b_last = Signal()
        s3b_max = Signal()
        s3b_m = Signal.like(s1_m)
        with m.If(en):
            m.d.sync += [s3_valid.eq(s2b_valid), s3_val.eq(vr), s3_last.eq(s2b_last),
                         s3_max.eq(s2b_max), s3_kk.eq(s2b_kk), s3_m.eq(s2b_m),
                         s3b_valid.eq(s3_valid), s3b_last.eq(s3_last), s3b_max.eq(s3_max),
                         s3b_m.eq(s3_m)]
            for lane in range(L):
                v = s3_val[lane]
                m.d.sync += [s3b_n[lane].eq((Mux(v < 0, -v, v) << 1) + s3_kk),
                             s3b_neg[lane].eq(v < 0), s3b_val8[lane].eq(v[:8])]

        # Multipliers: 3 en-cycles; the beat's other fields travel beside them.
        STAGES = RegisteredMultiplier.STAGES

        def delay(value, name):
            for n in range(STAGES):
                reg = Signal.like(value, name=f"{name}_m{n + 1}")
                with m.If(en):
                    m.d.sync += reg.eq(value)
                value = reg
            return value

        prod = []                           # prod[lane][chunk][half], unsigned 32 bits
        for lane in range(L):
            per_chunk = []
            for c_i in range(n_chunks):
                halves = []
                for h_i in range(2):
                    mul = RegisteredMultiplier(17, 17, self.dsp)
                    m.submodules[f"avg_mul{lane}_{c_i}_{h_i}"] = mul
                    m.d.comb += [mul.a.eq(s3b_n[lane][16 * c_i:16 * c_i + 16]),
                                 mul.b.eq(s3b_m[16 * h_i:16 * h_i + 16]), mul.ce.eq(en)]
                    halves.append(mul.p[:32])
                per_chunk.append(halves)
            prod.append(per_chunk)
        mv_valid = delay(s3b_valid, "valid")
        mv_neg = delay(s3b_neg, "neg")
        mv_val8 = delay(s3b_val8, "val8")
        mv_last = delay(s3b_last, "last")
        mv_max = delay(s3b_max, "max")

        # Two adds: each chunk's two halves, then the chunks.
        a_sum = [[Signal(49, name=f"a_sum{lane}_{c_i}") for c_i in range(n_chunks)]
                 for lane in range(L)]
        a_valid, a_neg, a_val8, a_last, a_max = (Signal.like(x, name=f"a_{n}") for x, n in (
            (mv_valid, "valid"), (mv_neg, "neg"), (mv_val8, "val8"), (mv_last, "last"),
            (mv_max, "max")))
        b_sum = [Signal(nw + 32, name=f"b_sum{lane}") for lane in range(L)]
        b_valid, b_neg, b_val8, b_last, b_max = (Signal.like(x, name=f"b_{n}") for x, n in (
            (mv_valid, "valid"), (mv_neg, "neg"), (mv_val8, "val8"), (mv_last, "last"),
            (mv_max, "max")))
        out = Signal(data.ArrayLayout(signed(8), L))
        out_last = Signal()
        with m.If(en):
            m.d.sync += [a_valid.eq(mv_valid), a_neg.eq(mv_neg), a_val8.eq(mv_val8),
                         a_last.eq(mv_last), a_max.eq(mv_max),
                         b_valid.eq(a_valid), b_neg.eq(a_neg), b_val8.eq(a_val8),
                         b_last.eq(a_last), b_max.eq(a_max),
                         out_valid.eq(b_valid), out_last.eq(b_last)]
            for lane in range(L):
                for c_i in range(n_chunks):
                    lo, hi = prod[lane][c_i]
                    m.d.sync += a_sum[lane][c_i].eq(lo + (hi << 16))
                m.d.sync += b_sum[lane].eq(_balanced_sum(
                    [a_sum[lane][c_i] << (16 * c_i) for c_i in range(n_chunks)]))
                q = (b_sum[lane] >> AVG_SHIFT)[:8]
                m.d.sync += out[lane].eq(Mux(b_max, b_val8[lane], Mux(b_neg[lane], -q, q)))
        m.d.comb += [
            res.valid.eq(out_valid),
            res.payload.last.eq(out_last),
            res.payload.data.as_value().eq(out.as_value()),
        ]
        return m


def _balanced_sum(terms):
    """Sum as a balanced tree (a long left-nested chain overflows Python's recursion limit)."""
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]
