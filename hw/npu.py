"""``npu_top``: the accelerator. One component an FPGA design drops in.

It holds the systolic array, requantizer and activation table (in :class:`ConvEngine`), the
pooling unit (:class:`PoolEngine`), the softmax unit (:class:`SoftmaxEngine`), the
scratchpads (ACT banked by pixel, WGT in R banks where the CONV engine has its K-split mode,
PARAM), an instruction memory and the
sequencer that runs the instruction set of :mod:`hw.isa`, the LOAD/STORE engines
(:mod:`hw.dma`), and an AXI4-Lite register block (:mod:`hw.axil`).

Ports
-----
* ``s_axil_*``: AXI4-Lite slave, 32-bit data, register map :class:`hw.isa.CSR`.
* ``s_axis_tdata`` (8*C bits), ``s_axis_tvalid/tready/tlast``: data for LOAD instructions
  (``tlast`` is ignored: LOAD's count says how many beats it takes).
* ``m_axis_tdata`` (8*C bits), ``m_axis_tvalid/tready/tlast``: data of STORE instructions,
  ``tlast`` on each STORE's last word.
* ``irq``: level, high while DONE or ERROR is set and IRQ_EN bit 0 is 1.

Execution
---------
The host writes a program into IMEM (AXI4-Lite), writes CTRL.START and streams the data that
the program's LOADs take. The sequencer runs one instruction at a time from instruction 0:
FETCH and LATCH (2 cycles: IMEM's block RAM read and output register), DECODE (1 cycle), EXEC
(the engine's cycles, and one more: the sequencer registers the engine's done), NEXT (1 cycle:
the instruction's cycle count is stored in COUNTERS[pc]). SET, NOP and WAIT finish in DECODE,
store their count there and start the next instruction's IMEM read in the same cycle, so
that instruction has no FETCH: a run of SETs costs 2 cycles each. DONE or an error ends the
run and the accelerator is idle again; a reset at any time leaves it idle with cleared status.

The one exception is a background LOAD (WGT or PARAM; :mod:`hw.isa`): after its range check
(BG_CHECK, 2 cycles) the sequencer goes on while the LoadEngine keeps taking beats, so the next
layer's weights stream in while CONV/POOL/SOFTMAX/STORE run; those engines use other memory
ports. LOAD, WAIT and DONE wait in DECODE until the LoadEngine is idle. An error stops a
background LOAD too.
"""

from dataclasses import asdict, dataclass, field, fields
from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .act_memory import ActMemory, banks
from .axil import AxiLiteSlave
from .conv_engine import ConvEngine
from .eltwise_engine import EltwiseEngine
from .sizes import cfg_layout
from .dma import LoadEngine, StoreEngine
from .pool_engine import PoolEngine
from .ram import BlockRam
from .softmax_engine import SoftmaxEngine
from .isa import (CSR, ID_MAGIC, ISA_VERSION, Ctrl, Error, HwConfig, Instruction, IrqEnable,
                  Mem, Op, Reg, Status, param_entry_layout)
from .systolic import _check_dim

__all__ = ["NpuTop", "NpuConfig"]

MAX_IMEM = 512          # the AXI4-Lite map has room for 512 instructions


def _bounded(default: int, lowest: int, highest: int):
    """A parameter of :class:`NpuConfig` that must be an integer in [lowest, highest]."""
    return field(default=default, metadata={"bounds": (lowest, highest)})


@dataclass(frozen=True)
class NpuConfig:
    """Hardware configuration, validated: every bad value raises ``ValueError`` naming it."""

    rows: int = 8
    cols: int = 8
    act_depth: int = _bounded(16384, 16, 1 << 20)
    wgt_depth: int = _bounded(8192, 16, 1 << 20)
    param_depth: int = _bounded(64, 1, 1 << 16)
    imem_depth: int = _bounded(512, 4, MAX_IMEM)
    pool_max_size: int = _bounded(32, 1, 4096)
    pool_max_c: int = _bounded(64, 1, 4096)
    pool_max_k: int = _bounded(8, 1, 32)
    softmax_max_len: int = _bounded(256, 1, 4096)

    def __new__(cls, *args, **params):
        # The generated __init__ would refuse an unknown keyword with a TypeError; like a bad
        # value, it is a configuration error, a ValueError that names it.
        known = [f.name for f in fields(cls)]
        for name in params:
            if name not in known:
                raise ValueError(f"unknown NpuConfig parameter {name!r}; "
                                 f"known: {', '.join(known)}")
        return super().__new__(cls)

    def __post_init__(self):
        _check_dim("rows", self.rows)
        _check_dim("cols", self.cols)
        for f in fields(self):
            if "bounds" not in f.metadata:
                continue
            lo, hi = f.metadata["bounds"]
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{f.name} must be an integer between {lo} and {hi}, got {v!r}")
        if self.act_depth % banks(self.rows):
            raise ValueError(f"act_depth must be a multiple of the {banks(self.rows)} ACT banks "
                             f"of {self.rows} rows, got {self.act_depth}")

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class NpuTop(wiring.Component):
    """The accelerator; ``config`` are :class:`NpuConfig`'s parameters.

    ``dsp`` is the implementation target of the multipliers and block RAMs of the array, the
    requantizer, the setup multipliers and the softmax unit (:data:`hw.pe.DSP_KINDS`):
    ``"generic"`` for simulation and most targets, ``"ecp5"`` for Lattice ECP5 (MULT18X18D and
    DP16KD primitives with their own registers; same cycle behaviour, so it is not part of
    the configuration the compiler sees).
    """

    def __init__(self, dsp="generic", **config):
        self.config = cfg = NpuConfig(**config)
        self.dsp = dsp
        C = cfg.cols
        self.axil = AxiLiteSlave(addr_width=14, read_latency=2)
        self.conv = ConvEngine(cfg.rows, cfg.cols, cfg.act_depth, cfg.wgt_depth, cfg.param_depth,
                               dsp=dsp)
        self.load = LoadEngine(C, cfg.act_depth, cfg.wgt_depth, cfg.param_depth)
        self.store = StoreEngine(C, cfg.act_depth)
        self.pool = PoolEngine(C, cfg.act_depth, rows=cfg.rows, max_h=cfg.pool_max_size,
                               max_w=cfg.pool_max_size, max_c=cfg.pool_max_c,
                               max_k=cfg.pool_max_k, dsp=dsp)
        self.softmax = SoftmaxEngine(C, cfg.act_depth, rows=cfg.rows,
                                     max_len=cfg.softmax_max_len, dsp=dsp)
        self.eltwise = EltwiseEngine(C, cfg.act_depth, rows=cfg.rows, dsp=dsp)
        self.act = ActMemory(C, cfg.act_depth, cfg.rows, ports=cfg.rows, dsp=dsp)
        #: The engines in the order of the sequencer's one-hot ``active`` register.
        self.engine_order = [self.load, self.store, self.conv, self.pool, self.softmax,
                             self.eltwise]
        members = {name: (In if flow == wiring.In else Out)(shape)
                   for name, flow, shape in _axil_members(self.axil)}
        members.update({
            "s_axis_tdata": In(8 * C), "s_axis_tvalid": In(1), "s_axis_tready": Out(1),
            "s_axis_tlast": In(1),
            "m_axis_tdata": Out(8 * C), "m_axis_tvalid": Out(1), "m_axis_tready": In(1),
            "m_axis_tlast": Out(1),
            "irq": Out(1),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for name in ("axil", "conv", "load", "store", "pool", "softmax", "eltwise", "act"):
            m.submodules[name] = getattr(self, name)
        for name, flow, _ in _axil_members(self.axil):
            if flow == wiring.In:
                m.d.comb += getattr(self.axil, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(self.axil, name))
        seq = self._sequencer_state(m)
        self._memories(m, seq)
        self._streams(m)
        self._register_bus(m, seq)
        self._sequencer(m, seq)
        return m

    # ---- Sequencer state --------------------------------------------------------------------
    def _sequencer_state(self, m):
        """The registers the sequencer, the register bus and the memories share."""
        cfg = self.config
        s = SimpleNamespace()
        s.regs = Signal(cfg_layout())         # the configuration registers (SET)
        s.busy = Signal()
        s.done_flag = Signal()
        s.err_flag = Signal()
        s.err_code = Signal(4)
        s.err_pc = Signal(range(cfg.imem_depth))
        s.pc = Signal(range(cfg.imem_depth))
        s.run_cycles = Signal(32)
        s.instr_cycles = Signal(32)
        s.irq_en = Signal()
        s.instr = Signal(Instruction)
        s.cnt_we = Signal()                   # store instr_cycles into COUNTERS[pc]
        s.fetch_next = Signal()               # DECODE ends the instruction: read pc + 1
        s.act_conflict = Signal()             # sticky: ACT reads hit one bank twice
        s.active = Signal(len(self.engine_order))  # one-hot: the engine EXEC waits for
        m.d.comb += [self.conv.cfg.eq(s.regs), self.pool.cfg.eq(s.regs),
                     self.softmax.cfg.eq(s.regs), self.eltwise.cfg.eq(s.regs),
                     self.irq.eq(s.irq_en & (s.done_flag | s.err_flag))]
        return s

    # ---- Memories ---------------------------------------------------------------------------
    def _memories(self, m, s):
        """IMEM, the per-instruction cycle counters, ACT, WGT and PARAM, and who reads and
        writes them. Block RAMs read in RAM_LATENCY (2) cycles: the array read, then an
        output register (on ECP5 the DP16KD's own), so no logic follows a block RAM's
        clock-to-output."""
        cfg, dsp = self.config, self.dsp
        C = cfg.cols
        conv, load = self.conv, self.load
        imem_lo = m.submodules.imem_lo = BlockRam(32, cfg.imem_depth, reads=1, dsp=dsp)
        imem_hi = m.submodules.imem_hi = BlockRam(32, cfg.imem_depth, reads=1, dsp=dsp)
        s.imem = (imem_lo, imem_hi)
        counters = s.counters = m.submodules.counters = BlockRam(32, cfg.imem_depth, reads=1,
                                                                 dsp=dsp)
        # WGT in banks (hw.conv_engine.wgt_banks): word w in bank w mod banks, at row
        # w // banks; the CONV engine reads one row of every bank.
        nbanks = conv.wgt_banks
        bank_bits = (nbanks - 1).bit_length()
        wgt = [BlockRam(8 * C, -(-cfg.wgt_depth // nbanks), reads=1, dsp=dsp)
               for _ in range(nbanks)]
        for b, bank in enumerate(wgt):
            m.submodules[f"wgt{b}" if nbanks > 1 else "wgt"] = bank
        prm = m.submodules.prm = BlockRam(param_entry_layout(C).size, cfg.param_depth, reads=1,
                                          dsp=dsp)

        # IMEM reads pc in FETCH (or pc + 1 in the DECODE of an instruction that ends there);
        # the word is in IMEM's output register from DECODE on (the LATCH cycle is the block
        # RAM's second read cycle) and stays there until pc moves.
        fetch_addr = Mux(s.fetch_next, s.pc + 1, s.pc)
        m.d.comb += [imem_lo.r0_addr.eq(fetch_addr), imem_hi.r0_addr.eq(fetch_addr),
                     imem_lo.r0_en.eq(1),
                     imem_hi.r0_en.eq(1),
                     s.instr.as_value().eq(Cat(imem_lo.r0_data, imem_hi.r0_data)),
                     counters.w_addr.eq(s.pc), counters.w_data.eq(s.instr_cycles),
                     counters.w_en.eq(s.cnt_we)]
        self._act_ports(m, s)
        for b, bank in enumerate(wgt):
            m.d.comb += [bank.w_en.eq(load.wgt_we & (load.wgt_addr[:bank_bits] == b)),
                         bank.w_addr.eq(load.wgt_addr >> bank_bits),
                         bank.w_data.eq(load.wgt_data), bank.r0_en.eq(1),
                         bank.r0_addr.eq(conv.wgt_rd_addr),
                         conv.wgt_rd_data[b].eq(bank.r0_data)]
        m.d.comb += [prm.w_en.eq(load.prm_we), prm.w_addr.eq(load.prm_addr),
                     prm.w_data.eq(load.prm_data), prm.r0_en.eq(1),
                     prm.r0_addr.eq(conv.prm_rd_addr), conv.prm_rd_data.eq(prm.r0_data)]
        wiring.connect(m, load.lut_table, conv.lut_table)
        wiring.connect(m, load.sm_table, self.softmax.exp_table)
        # The ELTWISE engine borrows the CONV engine's requantizer and activation table.
        elt = self.eltwise
        wiring.connect(m, elt.acc, conv.ext_acc)
        wiring.connect(m, elt.params, conv.ext_params)
        wiring.connect(m, conv.ext_result, elt.result)
        m.d.comb += conv.lend.eq(elt.lend)

    def _act_ports(self, m, s):
        """ACT (:class:`hw.act_memory.ActMemory`): one engine writes at a time, so the write
        port is an OR of enables and a priority multiplexer, registered before it fans out
        to the banks (a write lands long before any later instruction can read ACT). Read
        port 0 serves STORE, POOL and SOFTMAX or the CONV engine's row 0; the other ports the
        CONV engine's rows."""
        conv, load, store, pool, smx, elt, act = (self.conv, self.load, self.store, self.pool,
                                                  self.softmax, self.eltwise, self.act)
        writers = [(load.act_we, load.act_addr, load.act_shift, load.act_data),
                   (pool.act_wr_en, pool.act_wr_addr, pool.act_wr_shift, pool.act_wr_data),
                   (smx.act_wr_en, smx.act_wr_addr, smx.act_wr_shift, smx.act_wr_data),
                   (elt.act_wr_en, elt.act_wr_addr, elt.act_wr_shift, elt.act_wr_data),
                   (conv.act_wr_en, conv.act_wr_addr, conv.act_wr_shift, conv.act_wr_data)]
        sel = writers[-1][1:]
        for en, *fields in reversed(writers[:-1]):
            sel = [Mux(en, f, d) for f, d in zip(fields, sel)]
        m.d.sync += [act.w_en.eq(Cat(*[w[0] for w in writers]).any()), act.w_addr.eq(sel[0]),
                     act.w_shift.eq(sel[1]), act.w_data.eq(sel[2])]
        # Port 0's owner is the engine the sequencer started (a register), not a decision
        # from the engines' state.
        en0, addr0, shift0 = conv.act_rd_en[0], conv.act_rd_addr[0], conv.act_rd_shift
        for eng in (elt, smx, pool, store):
            owner = s.active[self.engine_order.index(eng)]
            en0, addr0, shift0 = (Mux(owner, eng.act_rd_en, en0),
                                  Mux(owner, eng.act_rd_addr, addr0),
                                  Mux(owner, eng.act_rd_shift, shift0))
        m.d.comb += [act.r0_en.eq(en0), act.r0_addr.eq(addr0), act.r_shift.eq(shift0)]
        for i in range(1, self.config.rows):
            m.d.comb += [getattr(act, f"r{i}_en").eq(conv.act_rd_en[i]),
                         getattr(act, f"r{i}_addr").eq(conv.act_rd_addr[i])]
        for i in range(self.config.rows):
            m.d.comb += conv.act_rd_data[i].eq(getattr(act, f"r{i}_data"))
        m.d.comb += [store.act_rd_data.eq(act.r0_data), pool.act_rd_data.eq(act.r0_data),
                     smx.act_rd_data.eq(act.r0_data), elt.act_rd_data.eq(act.r0_data)]
        # A bank conflict (never, for programs whose CONVs pass their layout check) is kept
        # in STATUS until the next START (see _register_bus), for tests.
        with m.If(act.conflict):
            m.d.sync += s.act_conflict.eq(1)

    # ---- Streams ----------------------------------------------------------------------------
    def _streams(self, m):
        """``s_axis`` feeds the LoadEngine, the StoreEngine drives ``m_axis``."""
        load, store = self.load, self.store
        m.d.comb += [
            load.data.payload.data.eq(self.s_axis_tdata),
            load.data.payload.last.eq(self.s_axis_tlast),
            load.data.valid.eq(self.s_axis_tvalid),
            self.s_axis_tready.eq(load.data.ready),
            self.m_axis_tdata.eq(store.data.payload.data),
            self.m_axis_tlast.eq(store.data.payload.last),
            self.m_axis_tvalid.eq(store.data.valid),
            store.data.ready.eq(self.m_axis_tready),
        ]

    # ---- AXI4-Lite register bus ---------------------------------------------------------------
    def _register_bus(self, m, s):
        """CTRL, IRQ_EN and IMEM writes; the read-only registers and COUNTERS (both read in
        two cycles, the COUNTERS block RAM's latency)."""
        cfg, axil = self.config, self.axil
        imem_lo, imem_hi = s.imem
        ctrl = Ctrl(axil.wr_data)
        s.start_req = axil.wr_en & (axil.wr_addr == CSR.CTRL) & ctrl.start
        s.start_pc = ctrl.start_pc
        s.clear_req = axil.wr_en & (axil.wr_addr == CSR.CTRL) & ctrl.clear
        with m.If(s.start_req):
            m.d.sync += s.act_conflict.eq(0)
        with m.If(axil.wr_en & (axil.wr_addr == CSR.IRQ_EN)):
            m.d.sync += s.irq_en.eq(IrqEnable(axil.wr_data).enable)
        imem_sel = (axil.wr_addr >= CSR.IMEM) & (axil.wr_addr < CSR.IMEM + 8 * cfg.imem_depth)
        imem_idx = (axil.wr_addr - CSR.IMEM)[3:]
        imem_we = axil.wr_en & imem_sel & ~s.busy   # the program cannot change while it runs
        m.d.comb += [imem_lo.w_addr.eq(imem_idx), imem_hi.w_addr.eq(imem_idx),
                     imem_lo.w_data.eq(axil.wr_data), imem_hi.w_data.eq(axil.wr_data),
                     imem_lo.w_en.eq(imem_we & ~axil.wr_addr[2]),
                     imem_hi.w_en.eq(imem_we & axil.wr_addr[2])]

        m.d.comb += [s.counters.r0_addr.eq((axil.rd_addr - CSR.COUNTERS)[2:]),
                     s.counters.r0_en.eq(1)]
        rd_value = Signal(32)
        rd_from_counters = Signal()
        status = Signal(Status)
        m.d.comb += [status.busy.eq(s.busy), status.done.eq(s.done_flag),
                     status.error.eq(s.err_flag), status.act_conflict.eq(s.act_conflict)]
        hw_config = HwConfig.const({"rows": cfg.rows, "cols": cfg.cols,
                                    "isa_version": ISA_VERSION}).as_bits()
        with m.If(axil.rd_en):
            m.d.sync += rd_from_counters.eq(axil.rd_addr >= CSR.COUNTERS)
            with m.Switch(axil.rd_addr):
                for addr, value in ((CSR.ID, ID_MAGIC), (CSR.CONFIG, hw_config),
                                    (CSR.ACT_DEPTH, cfg.act_depth),
                                    (CSR.WGT_DEPTH, cfg.wgt_depth),
                                    (CSR.PARAM_DEPTH, cfg.param_depth),
                                    (CSR.IMEM_DEPTH, cfg.imem_depth),
                                    (CSR.STATUS, status), (CSR.ERROR, s.err_code),
                                    (CSR.ERROR_PC, s.err_pc), (CSR.PC, s.pc),
                                    (CSR.CYCLES, s.run_cycles), (CSR.IRQ_EN, s.irq_en)):
                    with m.Case(addr):
                        m.d.sync += rd_value.eq(value)
                with m.Default():
                    m.d.sync += rd_value.eq(0)
        # The AXI4-Lite slave takes rd_data 2 cycles after rd_en: COUNTERS' read latency.
        rd_value_d = Signal(32)
        from_counters_d = Signal()
        m.d.sync += [rd_value_d.eq(rd_value), from_counters_d.eq(rd_from_counters)]
        m.d.comb += axil.rd_data.eq(Mux(from_counters_d, s.counters.r0_data, rd_value_d))

    # ---- Sequencer ----------------------------------------------------------------------------
    def _sequencer(self, m, s):
        """FETCH -> LATCH -> DECODE -> EXEC (one engine) -> NEXT, BG_CHECK for a background
        LOAD; errors stop the run (and a background LOAD)."""
        cfg = self.config
        load = self.load
        xfer = s.instr.transfer
        m.d.comb += [load.mem.eq(xfer.mem), load.addr.eq(xfer.addr), load.count.eq(xfer.count),
                     load.shift.eq(xfer.shift), self.store.addr.eq(xfer.addr),
                     self.store.count.eq(xfer.count), self.store.shift.eq(xfer.shift)]
        with m.If(s.clear_req & ~s.busy):
            m.d.sync += [s.done_flag.eq(0), s.err_flag.eq(0)]
        with m.If(s.busy):
            m.d.sync += [s.run_cycles.eq(s.run_cycles + 1), s.instr_cycles.eq(s.instr_cycles + 1)]

        dispatch = [(Op.LOAD, load), (Op.STORE, self.store), (Op.CONV, self.conv),
                    (Op.POOL, self.pool), (Op.SOFTMAX, self.softmax),
                    (Op.ELTWISE, self.eltwise)]
        engines = self.engine_order
        assert engines == [engine for _, engine in dispatch]
        # The engine EXEC waits for (a background LOAD may finish while another engine runs).
        # Its done and error are registered here, one cycle later: the engines' done/error
        # logic sits far from the sequencer and must not share a cycle with its state logic.
        active = s.active
        done_any = Signal()
        error_any = Signal(4)
        m.d.comb += done_any.eq((Cat(*[e.done for e in engines]) & active).any())
        for n, e in enumerate(engines):
            with m.If(e.done & active[n]):
                m.d.comb += error_any.eq(e.error)
        # Only done pulses during EXEC count (a background LOAD may end in DECODE, while
        # `active` still names it).
        engine_done = Signal()
        engine_error = Signal(4)
        m.d.sync += engine_done.eq(0)
        load_idle = ~load.busy
        background_ok = (xfer.mem == Mem.WGT) | (xfer.mem == Mem.PARAM)

        # The LoadEngine's abort is a synchronous reset of all its registers: registered, so
        # the sequencer's error logic does not drive that fan-out in the same cycle (the
        # LoadEngine stops one cycle after the error; nothing can start it in between).
        abort = Signal()
        m.d.sync += load.abort.eq(abort)

        def fail(code):
            m.d.sync += [s.busy.eq(0), s.err_flag.eq(1), s.err_code.eq(code), s.err_pc.eq(s.pc)]
            m.d.comb += abort.eq(1)             # a background LOAD stops too
            m.next = "IDLE"

        def advance():
            """End an instruction that finishes in DECODE (NOP, SET, WAIT) and fetch the next
            one in the same cycle: its IMEM read starts now, so it skips FETCH."""
            m.d.comb += s.cnt_we.eq(1)
            m.d.sync += s.instr_cycles.eq(1)
            with m.If(s.pc == cfg.imem_depth - 1):
                fail(Error.PC_OVERFLOW)
            with m.Else():
                m.d.comb += s.fetch_next.eq(1)
                m.d.sync += s.pc.eq(s.pc + 1)
                m.next = "LATCH"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(s.start_req & (s.start_pc >= cfg.imem_depth)):
                    m.d.sync += [s.done_flag.eq(0), s.err_flag.eq(1),
                                 s.err_code.eq(Error.PC_OVERFLOW), s.err_pc.eq(0),
                                 s.run_cycles.eq(0)]
                with m.Elif(s.start_req):
                    m.d.sync += [s.busy.eq(1), s.done_flag.eq(0), s.err_flag.eq(0),
                                 s.err_code.eq(Error.NONE), s.err_pc.eq(s.start_pc),
                                 s.pc.eq(s.start_pc), s.run_cycles.eq(1), s.instr_cycles.eq(1)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.next = "LATCH"
            with m.State("LATCH"):
                m.next = "DECODE"
            with m.State("DECODE"):
                with m.Switch(s.instr.op):
                    with m.Case(Op.NOP):
                        advance()
                    with m.Case(Op.SET):
                        with m.If(s.instr.set.reg < len(Reg)):
                            m.d.sync += s.regs[s.instr.set.reg].eq(s.instr.set.value)
                            advance()
                        with m.Else():
                            fail(Error.CONFIG)
                    with m.Case(Op.LOAD):
                        with m.If(xfer.background & ~background_ok):
                            fail(Error.CONFIG)
                        with m.Elif(load_idle):     # else wait for the background LOAD
                            m.d.comb += load.start.eq(1)
                            m.d.sync += active.eq(1 << engines.index(load))
                            with m.If(xfer.background):
                                m.next = "BG_CHECK"
                            with m.Else():
                                m.next = "EXEC"
                    for n, (code, engine) in enumerate(dispatch):
                        if code == Op.LOAD:
                            continue
                        with m.Case(code):
                            m.d.comb += engine.start.eq(1)
                            m.d.sync += active.eq(1 << n)
                            m.next = "EXEC"
                    with m.Case(Op.WAIT):
                        with m.If(load_idle):
                            advance()
                    with m.Case(Op.DONE):
                        with m.If(load_idle):
                            m.d.comb += s.cnt_we.eq(1)
                            m.d.sync += [s.busy.eq(0), s.done_flag.eq(1)]
                            m.next = "IDLE"
                    with m.Default():
                        fail(Error.ILLEGAL_OPCODE)
            with m.State("BG_CHECK"):
                # The LoadEngine checks the range in the two cycles after start: it ends with
                # an error (done), or accepts and runs on in the background.
                with m.If(load.done):
                    fail(load.error)
                with m.Elif(load.accepted):
                    m.next = "NEXT"
            with m.State("EXEC"):
                m.d.sync += [engine_done.eq(done_any), engine_error.eq(error_any)]
                with m.If(engine_done):
                    with m.If(engine_error != Error.NONE):
                        fail(engine_error)
                    with m.Else():
                        m.next = "NEXT"
            with m.State("NEXT"):
                m.d.comb += s.cnt_we.eq(1)
                m.d.sync += s.instr_cycles.eq(1)
                with m.If(s.pc == cfg.imem_depth - 1):
                    m.d.sync += s.pc.eq(s.pc)
                    fail(Error.PC_OVERFLOW)
                with m.Else():
                    m.d.sync += s.pc.eq(s.pc + 1)
                    m.next = "FETCH"


def _axil_members(axil):
    for name, member in axil.signature.members.items():
        if name.startswith("s_axil_"):
            yield name, member.flow, member.shape
