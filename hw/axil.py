"""AXI4-Lite slave (32-bit data) turned into a simple register bus.

Ports on the AXI side are flat and named as the AXI spec does (``s_axil_awaddr`` ...), so the
component's members become the top-level ports when the owner forwards them and a bus model
(cocotbext-axi ``AxiLiteMaster``) can drive them.

Register-bus side (all in the ``sync`` domain):

* ``wr_en`` pulses for one cycle with ``wr_addr`` (byte address) and ``wr_data`` the cycle
  after a write (AW and W both present) is accepted (they are registers, so no path runs from
  the AXI inputs into the owner's logic); B answers from the next cycle, once the owner has
  taken the write. ``wstrb`` is ignored:
  registers are written whole.
* ``rd_en`` pulses with ``rd_addr``; the owner drives ``rd_data`` ``read_latency`` cycles
  later (1: a register or a synchronous memory; 2: a memory read plus a register), which is
  returned on R.

One transaction of each kind is in flight at a time; responses are always OKAY (unmapped
reads return 0, unmapped writes are ignored).
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AxiLiteSlave"]


class AxiLiteSlave(wiring.Component):
    def __init__(self, addr_width=16, read_latency=1):
        if not 4 <= addr_width <= 32:
            raise ValueError(f"addr_width must be between 4 and 32, got {addr_width}")
        if read_latency not in (1, 2):
            raise ValueError(f"read_latency must be 1 or 2, got {read_latency!r}")
        self.addr_width = addr_width
        self.read_latency = read_latency
        super().__init__({
            "s_axil_awaddr": In(addr_width),
            "s_axil_awvalid": In(1),
            "s_axil_awready": Out(1),
            "s_axil_wdata": In(32),
            "s_axil_wstrb": In(4),
            "s_axil_wvalid": In(1),
            "s_axil_wready": Out(1),
            "s_axil_bresp": Out(2),
            "s_axil_bvalid": Out(1),
            "s_axil_bready": In(1),
            "s_axil_araddr": In(addr_width),
            "s_axil_arvalid": In(1),
            "s_axil_arready": Out(1),
            "s_axil_rdata": Out(32),
            "s_axil_rresp": Out(2),
            "s_axil_rvalid": Out(1),
            "s_axil_rready": In(1),

            "wr_en": Out(1),
            "wr_addr": Out(addr_width),
            "wr_data": Out(32),
            "rd_en": Out(1),
            "rd_addr": Out(addr_width),
            "rd_data": In(32),
        })

    def elaborate(self, platform):
        m = Module()

        # Write: take AW and W together, register them, answer on B.
        # (~wr_en: no second write while the registered one is being taken)
        take_w = self.s_axil_awvalid & self.s_axil_wvalid & ~self.s_axil_bvalid & ~self.wr_en
        m.d.comb += [
            self.s_axil_awready.eq(take_w),
            self.s_axil_wready.eq(take_w),
            self.s_axil_bresp.eq(0),
        ]
        m.d.sync += self.wr_en.eq(take_w)
        with m.If(take_w):
            m.d.sync += [self.wr_addr.eq(self.s_axil_awaddr), self.wr_data.eq(self.s_axil_wdata)]
        with m.If(self.wr_en):
            m.d.sync += self.s_axil_bvalid.eq(1)
        with m.Elif(self.s_axil_bready):
            m.d.sync += self.s_axil_bvalid.eq(0)

        # Read: AR -> rd_en; the owner's data arrives read_latency cycles later and is held
        # on R.
        pending = Signal()
        take_r = self.s_axil_arvalid & ~self.s_axil_rvalid & ~pending
        m.d.comb += [
            self.s_axil_arready.eq(take_r),
            self.s_axil_rresp.eq(0),
            self.rd_en.eq(take_r),
            self.rd_addr.eq(self.s_axil_araddr),
        ]
        waiting = [Signal(name=f"rd_wait{n}") for n in range(self.read_latency)]
        m.d.sync += [waiting[0].eq(take_r)] + [waiting[n].eq(waiting[n - 1])
                                               for n in range(1, self.read_latency)]
        m.d.comb += pending.eq(Cat(*waiting).any())
        with m.If(waiting[-1]):
            m.d.sync += [self.s_axil_rdata.eq(self.rd_data), self.s_axil_rvalid.eq(1)]
        with m.Elif(self.s_axil_rready):
            m.d.sync += self.s_axil_rvalid.eq(0)
        return m
