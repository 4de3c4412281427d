"""Block RAM with a registered read (2 cycles), for any target.

A block RAM read straight into logic costs its whole clock-to-output (5.8 ns on an ECP5
DP16KD without its output register, as Yosys maps inferred memories) on top of that logic.
:class:`BlockRam` reads in :data:`RAM_LATENCY` cycles: on ECP5 (``dsp="ecp5"``) it
instantiates DP16KD primitives with their output register on (REGMODE OUTREG, 0.96 ns), tiled
across the width; elsewhere a :class:`~amaranth.lib.memory.Memory` read port and a register,
the same cycle behaviour.
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .pe import check_dsp

__all__ = ["BlockRam", "RAM_LATENCY"]

#: Read latency of :class:`BlockRam`: the array read, then the output register.
RAM_LATENCY = 2


def _dp16kd(m, name, width, ports, init=None):
    """A Lattice ECP5 ``DP16KD`` in ``width`` (9 or 18) bit mode. ``ports``: ``{"A": port,
    "B": port}``, a port being ``("read", addr, en, data)`` (REGMODE OUTREG: ``data`` is the
    word of two ``en`` cycles earlier) or ``("write", addr, en, wdata)``."""
    shift = {9: 3, 18: 4}[width]
    params = {"p_DATA_WIDTH_A": width, "p_DATA_WIDTH_B": width,
              "p_CSDECODE_A": "0b000", "p_CSDECODE_B": "0b000", "p_GSR": "DISABLED",
              "p_RESETMODE": "SYNC", "p_ASYNC_RESET_RELEASE": "SYNC",
              "p_CLKAMUX": "CLKA", "p_CLKBMUX": "CLKB"}
    if init is not None:
        assert width == 18 and len(init) <= 1024
        for idx in range(64):
            v = 0
            for i, word in enumerate(init[idx * 16:idx * 16 + 16]):
                v |= (word & 0x3FFFF) << (20 * i)
            params[f"p_INITVAL_{idx:02X}"] = Const(v, 320)
    conns = {}
    for p, (kind, addr, en, dat) in ports.items():
        read = kind == "read"
        params[f"p_REGMODE_{p}"] = "OUTREG" if read else "NOREG"
        params[f"p_WRITEMODE_{p}"] = "NORMAL"
        conns[f"i_CLK{p}"] = ClockSignal()
        conns[f"i_CE{p}"] = en if read else Const(1)
        conns[f"i_OCE{p}"] = en if read else Const(1)
        conns[f"i_WE{p}"] = Const(0) if read else en
        conns[f"i_RST{p}"] = Const(0)
        for n in range(3):
            conns[f"i_CS{p}{n}"] = Const(0)
        for n in range(14):
            bit = addr[n - shift] if n >= shift and n - shift < len(addr) else \
                Const(int(not read and width == 18 and n < 2))     # byte enables
            conns[f"i_AD{p}{n}"] = bit
        for n in range(18):
            conns[f"i_DI{p}{n}"] = dat[n] if not read and n < len(dat) else Const(0)
            if read and n < len(dat):
                conns[f"o_DO{p}{n}"] = dat[n]
    m.submodules[name] = Instance("DP16KD", **params, **conns)


class BlockRam(wiring.Component):
    """``width`` x ``depth`` memory, optionally one write port (``w_*``), ``reads`` read ports
    (``r{i}_addr``, ``r{i}_en``, ``r{i}_data``). A read returns the word of :data:`RAM_LATENCY`
    ``en`` cycles earlier (the array read, then an output register), the write happens at the
    clock edge; a location is never read and written in the same cycle (no collision logic).

    ``dsp="ecp5"`` and a depth of at most 2048 (9-bit slices) or 1024 (18-bit slices):
    ``DP16KD`` instances with their output registers (REGMODE OUTREG), ``ceil(width / 9 or
    18)`` side by side per read port with the write port on A, or one per two read ports of a
    ROM (18 bits wide at most). Otherwise a :class:`~amaranth.lib.memory.Memory` read port
    followed by a register.
    """

    def __init__(self, width, depth, reads, write=True, init=None, dsp="generic"):
        self.width, self.depth, self.reads, self.write = width, depth, reads, write
        self.init = list(init) if init is not None else None
        self.dsp = check_dsp(dsp)
        abits = max(1, (depth - 1).bit_length())
        members = {}
        if write:
            members.update(w_addr=In(abits), w_data=In(width), w_en=In(1))
        for i in range(reads):
            members.update({f"r{i}_addr": In(abits), f"r{i}_en": In(1),
                            f"r{i}_data": Out(width)})
        super().__init__(members)

    def _ecp5_width(self):
        """DP16KD data width (9 or 18) that needs the fewest slices, or None."""
        slices = {mode: -(-self.width // mode) for mode, depth in ((9, 2048), (18, 1024))
                  if self.depth <= depth and (self.write or self.width <= mode)}
        if self.init is not None:           # a ROM's contents are packed for 18-bit mode
            slices.pop(9, None)
        return min(slices, key=lambda mode: (slices[mode], mode)) if slices else None

    def elaborate(self, platform):
        m = Module()
        reads = [(getattr(self, f"r{i}_addr"), getattr(self, f"r{i}_en"),
                  getattr(self, f"r{i}_data")) for i in range(self.reads)]
        mode = self._ecp5_width() if self.dsp == "ecp5" else None
        if mode is not None:
            if self.write:
                if self.init is not None and self.width > mode:
                    raise ValueError("BlockRam: initial contents need a single DP16KD slice")
                for k in range(0, self.width, mode):        # slices across the width
                    hi = min(self.width, k + mode)
                    wport = ("write", self.w_addr, self.w_en, self.w_data[k:hi])
                    for i, (addr, en, dat) in enumerate(reads):
                        _dp16kd(m, f"ram{i}_{k // mode}", mode,
                                {"A": wport, "B": ("read", addr, en, dat[k:hi])},
                                init=self.init)
            else:
                for j in range(0, len(reads), 2):
                    ports = {p: ("read", *reads[j + n]) for n, p in enumerate("AB")
                             if j + n < len(reads)}
                    _dp16kd(m, f"rom{j // 2}", mode, ports, init=self.init)
            return m
        attrs = {"no_rw_check": 1} if self.write else None
        mem = m.submodules.mem = Memory(shape=unsigned(self.width), depth=self.depth,
                                        init=self.init or [], attrs=attrs)
        if self.write:
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.w_addr), wp.data.eq(self.w_data), wp.en.eq(self.w_en)]
        for i, (addr, en, dat) in enumerate(reads):
            rp = mem.read_port()
            q = Signal(self.width, name=f"r{i}_q", reset_less=True)
            m.d.comb += [rp.addr.eq(addr), rp.en.eq(en), dat.eq(q)]
            with m.If(en):
                m.d.sync += q.eq(rp.data)
        return m


