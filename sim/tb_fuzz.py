"""Instruction fuzzer of ``npu_top`` (issue 21): random and near-valid programs (sim.fuzz), each
started a few times, every start checked; a small compiled model as the known-good program.

Per start:

* **no hang**: the run ends (DONE or an error) within the start's cycle bound (the exact cycle
  model of every instruction it may execute, as if legal: sim.fuzz.Machine.cycle_bound), read
  from CSR.CYCLES; a run still busy after the bound is a hang. A start whose bound exceeds
  ``NPU_FUZZ_LONG`` cycles (a legal but huge instruction) is not awaited: a reset ends it;
* **no stray write**: every word of ACT (all banks), WGT, PARAM, the activation table (every
  lane's copy) and the softmax exp table is read through the simulator (sim.npu_memories)
  before and after the start; a word that changed outside the regions of the instructions
  that ran (sim.fuzz.Machine.run_instructions) is a stray write. The memories start filled
  with random words, so a stray write is seen unless it writes the value the word held. Not
  compared: IMEM (only the host writes it), COUNTERS, the configuration registers, engine
  internals (FIFOs, the pooling unit's accumulators);
* **the outcome**: DONE, or the error the walk must end with (an unknown opcode, a SET of an
  unknown register, a LOAD/STORE out of range, the end of IMEM) at its pc, or CONFIG/ADDRESS
  from an engine instruction before it;
* **recovery**: after an error (with probability ``RECOVER_AFTER_ERROR``) and after every
  reset mid-run (drawn at random points of fuzz starts, and of the known-good inference), the
  known-good program runs (setup, then one inference) and its output must equal the golden
  integer inference bit for bit. Its runs are checked like any start, under random
  backpressure on ``s_axis`` and ``m_axis`` (independent rates, or long bursts) and random
  AXI4-Lite delays on all five channels (cocotbext-axi pause generators). A fraction of the
  fuzz starts (``STALLED_FUZZ_START``) runs under the same stalls: error paths and resets
  with stalled streams; their cycles are not the model's, so only a hang is checked there.

Environment: ``NPU_CONFIG`` (JSON; the Verilog's configuration), ``NPU_SEED``,
``NPU_FUZZ_WORDS`` (instruction words to generate, default 300), ``NPU_FUZZ_LONG`` (default
100000 cycles), ``NPU_REPORT`` (JSON receiving the counts). The test ``fuzzer_checks``
shows that each check fails when it should: a stray write made through the backdoor, a
cycle bound of 1, and corrupted weights before the known-good inference; and that a legal
instruction of millions of cycles is ended by a reset, not reported as a hang.
"""

import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, First, RisingEdge

from golden.inference import run as golden_run
from golden.mlperf_archs import ds_cnn, quantized, residual_net
from hw.isa import CSR, Error, Mem, Op, Reg, encode, encode_load, encode_set
from hw.npu import NpuConfig
from npu.compiler import compile_model
from sim.bus import set_pause
from sim.fuzz import ENGINES, MEMORIES, Machine, ProgramGenerator, fields, largest_legal_conv
from sim.npu_env import bring_up, start_word
from sim.npu_memories import NpuMemories

#: Probability that the known-good program runs after a fuzz start that ended in an error
#: (it always runs after a reset).
RECOVER_AFTER_ERROR = 0.5
#: Probability that a fuzz start is interrupted by a reset at a random cycle of its bound.
RESET_FUZZ_START = 0.05
#: Probability that a fuzz start runs under the known-good runs' random stalls (its cycles
#: are then not the model's: only a hang is checked, at STALL_FACTOR times the bound).
STALLED_FUZZ_START = 0.2
#: Probability that the known-good inference is interrupted by a reset (then run again).
RESET_KNOWN_GOOD = 0.2
#: Cycles allowed beyond a stall-free start's bound: the CTRL write and the interrupt.
BOUND_MARGIN = 16
#: A stalled run (known-good, under backpressure) is a hang after this many times its bound.
STALL_FACTOR = 60
STARTS_PER_PROGRAM = 4
#: Programs between two progress lines in the log.
PROGRESS_EVERY = 50


def _env(name, default=None):
    return os.environ.get(name, default)


def known_good_arch():
    """Every kind of memory write: the input LOAD, CONV with a fused table activation (LUT),
    POOL, a dense CONV, SOFTMAX, STORE."""
    return {"name": "fuzz_known_good", "input_shape": [6, 6, 3], "layers": [
        {"type": "conv2d", "name": "conv", "kernel": 3, "stride": 1, "padding": 1,
         "in_channels": 3, "out_channels": 8, "activation": "relu"},
        {"type": "activation", "name": "act", "function": "tanh"},
        {"type": "maxpool2d", "name": "pool", "kernel": 2, "stride": 2, "padding": 0},
        {"type": "flatten", "name": "flatten"},
        {"type": "dense", "name": "fc", "in_features": 72, "out_features": 10,
         "activation": "none"},
        {"type": "softmax", "name": "softmax"}]}


@dataclass
class Report:
    seed: int
    words: int = 0
    programs: int = 0
    starts: int = 0
    errors: Counter = field(default_factory=Counter)
    ran: Counter = field(default_factory=Counter)     # fuzz instructions that ran, by opcode
    done: int = 0
    hangs: int = 0
    stray_writes: int = 0
    wrong_outcomes: int = 0
    recoveries: int = 0
    recoveries_exact: int = 0
    resets_mid_run: int = 0
    long_starts: int = 0
    stalled_starts: int = 0
    drains: int = 0
    failures: list = field(default_factory=list)

    @property
    def failed(self):
        return bool(self.hangs or self.stray_writes or self.wrong_outcomes
                    or self.recoveries != self.recoveries_exact or self.failures)

    def fail(self, what):
        if len(self.failures) < 20:
            self.failures.append(what)

    def count_ran(self, words):
        for w in words:
            op = fields(w)["op"]
            if op not in (Op.NOP, Op.SET, Op.DONE):
                self.ran[Op(op).name] += 1

    def as_json(self):
        return asdict(self) | {"errors": dict(self.errors), "ran": dict(self.ran),
                               "failed": self.failed, "summary": self.summary()}

    def summary(self):
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items()))
        ran = ", ".join(f"{k} {v}" for k, v in sorted(self.ran.items()))
        return (f"seed {self.seed}: {self.words} words, {self.programs} programs, {self.starts} "
                f"starts ({self.done} DONE; errors: {errors or 'none'}; instructions run: "
                f"{ran or 'none'}), {self.hangs} hangs, "
                f"{self.stray_writes} stray writes, {self.wrong_outcomes} wrong outcomes, "
                f"{self.recoveries_exact}/{self.recoveries} recoveries bit-exact, "
                f"{self.resets_mid_run} resets mid-run ({self.long_starts} of long starts), "
                f"{self.stalled_starts} starts under stalls, {self.drains} stream drains")


class KnownGood:
    """The compiled known-good model at IMEM 0 and its golden outputs for a few images."""

    def __init__(self, cfg, seed):
        model, rng = quantized(known_good_arch(), seed=seed)
        self.prog = compile_model(model, cfg.as_dict(), batch=1)
        self.images = rng.integers(-128, 128, (4, 1, *model.input_shape), dtype=np.int8)
        self.golden = [golden_run(model, x) for x in self.images]


class Fuzzer:
    def __init__(self, dut, host, cfg, seed, long_cycles, inject=None):
        self.dut, self.host, self.cfg = dut, host, cfg
        # Resets mid-run are the point here: no warning with the flushed frame per reset.
        for port in ("s_axis", "m_axis"):
            logging.getLogger(f"cocotb.{dut._name}.{port}").setLevel(logging.ERROR)
        self.rng = np.random.default_rng(seed)
        self.long_cycles = long_cycles
        self.inject = inject
        self.report = Report(seed)
        self.machine = Machine(cfg)
        self.memories = NpuMemories(dut, cfg)
        self.good = KnownGood(cfg, seed=1)
        prog = self.good.prog
        # The drain program takes one beat left on s_axis (a LOAD that never ran) into the
        # last ACT word; fuzz programs go after it.
        self.drain_pc = len(prog.instructions)
        self.fuzz_base = self.drain_pc + 2
        corpus = [prog.instructions]
        for arch in (residual_net("fuzz_res", [8, 8, 3], 8, ((8, 1), (16, 2)), 10),
                     ds_cnn(channels=8, blocks=1)):
            corpus.append(compile_model(quantized(arch, seed=2)[0], cfg.as_dict(),
                                        batch=2).instructions)
        self.generator = ProgramGenerator(self.rng, corpus, cfg,
                                          max_len=min(40, (cfg.imem_depth - self.fuzz_base) // 2))

    async def prepare(self):
        """Random memory contents, IMEM = known-good, drain program, NOPs."""
        self.memories.fill(self.rng)
        words = (self.good.prog.instructions
                 + [encode_load(Mem.ACT, self.cfg.act_depth - 1, 1), encode(Op.DONE)])
        words += [encode(Op.NOP)] * (self.cfg.imem_depth - len(words))
        await self.host.load_program(words)
        self.machine.write(0, words)
        await ClockCycles(self.dut.clk, 1)
        self.snap = self.memories.snapshot()
        await self.host.write(CSR.IRQ_EN, 1)

    # ---- one start -----------------------------------------------------------------------------
    async def start(self, pc, stream=None, stalled=False, reset_at=None, what="fuzz"):
        """Start at ``pc`` with ``stream`` on s_axis (default: random beats for every LOAD the
        walk may run, one beat per frame, so that beats a refused LOAD leaves are at most one
        beat on the bus); check the outcome, the cycle bound and the memories. Returns the
        status, or ``None`` after a reset."""
        walk = self.machine.walk(pc)
        bound = 1 if self.inject == "bound" else self.machine.cycle_bound(walk, self.long_cycles)
        fuzz = stream is None
        self._feed(walk, stream)
        context = f"{what} start at pc {pc} (seed {self.report.seed})"
        status, reset_pc = await self._run(walk, bound, stalled, reset_at, context)
        if status is not None:
            self._check_outcome(walk, status, context, counted=fuzz)
        executed = self.machine.executed(walk, status, reset_pc=reset_pc)
        if executed is None:
            self.report.wrong_outcomes += 1
            self.report.fail(f"{context}: it ended outside its walk ({status}); "
                             f"{self._listing(walk)}")
            executed = list(walk.pcs)
        if fuzz:
            self.report.count_ran(self.machine.imem[pc] for pc in executed)
        regions = self.machine.run_instructions(executed)
        if status is None:
            self.machine.reset()
        if self.inject == "stray" and fuzz and status is not None and status.failed:
            self._inject_stray_write(regions)
            await ClockCycles(self.dut.clk, 1)
        await self._check_memories(regions, context, walk)
        if fuzz:
            self.host.sink.clear()
            self.host.source.clear()
        return status

    def _feed(self, walk, stream):
        if stream is None:
            n = self.machine.beats(walk)
            for beat in self.rng.integers(0, 256, (n, self.cfg.cols), dtype=np.uint8):
                self.host.send(beat[None])
        elif len(stream):
            self.host.send(stream)

    async def _run(self, walk, bound, stalled, reset_at, context):
        """START, then wait for the end: within ``bound`` cycles (stall-free; under stalls,
        STALL_FACTOR times it), or until ``reset_at`` or ``long_cycles``, which end the run
        with a reset. Returns ``(status, None)``, or ``(None, pc at the reset)``."""
        host, dut, rep = self.host, self.dut, self.report
        limit = bound * STALL_FACTOR + 20_000 if stalled else bound + BOUND_MARGIN
        long = bound > self.long_cycles
        wait = min(limit, self.long_cycles, reset_at or limit)
        await host.write(CSR.CTRL, start_word(walk.start))
        if dut.irq.value or await self._wait_irq(wait):
            status = await host.status()
            if not stalled and status.cycles > bound:
                rep.hangs += 1
                rep.fail(f"over the bound: {context} took {status.cycles} cycles, bound "
                         f"{bound}; {self._listing(walk)}")
            return status, None
        reset_pc = int(dut.pc.value)
        if reset_at is None and not long:
            rep.hangs += 1
            rep.fail(f"hang: {context} still busy after {wait} cycles (bound {bound}); "
                     f"pc {reset_pc}; {self._listing(walk)}")
        rep.resets_mid_run += reset_at is not None or long
        rep.long_starts += reset_at is None and long
        await self._reset()
        return None, reset_pc

    async def _drain(self):
        """Take a beat a refused (or never reached) LOAD left on s_axis with the drain
        program. Each fuzz beat is a frame of its own, so once the queue is cleared and the
        stream unpaused, at most the beat on the bus is left."""
        await ClockCycles(self.dut.clk, 2)
        if self.dut.s_axis_tvalid.value:
            self.report.drains += 1
            await self.start(self.drain_pc, stream=np.zeros((0, self.cfg.cols), np.uint8),
                             what="drain")

    async def _wait_irq(self, cycles):
        timeout = ClockCycles(self.dut.clk, max(1, cycles))
        return await First(RisingEdge(self.dut.irq), timeout) is not timeout

    async def _reset(self):
        await self.host.reset()
        self.host.source.clear()
        self.host.sink.clear()
        await self.host.write(CSR.IRQ_EN, 1)

    def _check_outcome(self, walk, st, context, counted):
        """DONE or the walk's certain error at its last pc, or an engine's CONFIG/ADDRESS
        before it; ``counted``: a fuzz start, whose ending the report counts."""
        rep = self.report
        if st.busy or st.done == st.failed:
            ok = False
        elif st.done:
            ok = walk.end == "DONE"
        else:
            last = walk.pcs[-1] if walk.pcs else 0
            certain = st.error == walk.end and st.error_pc == last
            engine = (st.error in (Error.CONFIG, Error.ADDRESS) and st.error_pc in walk.pcs
                      and fields(self.machine.imem[st.error_pc])["op"] in ENGINES)
            ok = certain or engine
        if counted and st.done:
            rep.done += 1
        elif counted and st.failed:
            rep.errors[Error(st.error).name] += 1
        if not ok:
            rep.wrong_outcomes += 1
            end = walk.end if walk.end == "DONE" else Error(walk.end).name
            rep.fail(f"wrong outcome: {context}: {st}, the walk ends with {end}; "
                     f"{self._listing(walk)}")

    async def _check_memories(self, regions, context, walk):
        after = self.memories.snapshot()
        for mem in MEMORIES:
            allowed = regions.allowed(mem)
            if allowed is None:
                continue
            before, now = self.snap[mem], after[mem]
            stray = [i for i, (a, b) in enumerate(zip(before, now)) if a != b and i not in allowed]
            if stray:
                self.report.stray_writes += len(stray)
                i = stray[0]
                self.report.fail(f"stray write: {context}: {len(stray)} {mem} locations changed "
                                 f"outside the regions of the instructions that ran, first "
                                 f"{i}: {int(before[i], 2):#x} -> {int(now[i], 2):#x}; "
                                 f"{self._listing(walk)}")
        self.snap = after

    def _inject_stray_write(self, regions):
        allowed = regions.allowed("ACT")
        free = [i for i in range(self.cfg.act_depth) if i not in allowed]
        i = int(self.rng.choice(free))
        inverted = ~int(self.snap["ACT"][i], 2) & ((1 << 8 * self.cfg.cols) - 1)
        self.memories.write("ACT", i, inverted)

    def _listing(self, walk):
        words = " ".join(f"{self.machine.imem[pc]:016x}" for pc in walk.pcs[:64])
        return f"words from pc {walk.start}: {words}"

    # ---- the known-good program ----------------------------------------------------------------
    def _stalls(self):
        """Random backpressure for a known-good run: s_axis and m_axis at independent rates
        (or long bursts), random delays on the AXI4-Lite channels."""
        host, rng = self.host, self.rng
        for endpoint in (host.source, host.sink):
            kind = rng.integers(4)
            set_pause(endpoint, rng, (0.0, 0.3, 0.8, 0.02)[kind], burst=200 if kind == 3 else 0)
        axil = host.axil
        delay = float(rng.choice([0.0, 0.5]))
        for channel in (axil.write_if.aw_channel, axil.write_if.w_channel, axil.write_if.b_channel,
                        axil.read_if.ar_channel, axil.read_if.r_channel):
            set_pause(channel, rng, delay)

    def _no_stalls(self):
        host = self.host
        axil = host.axil
        for endpoint in (host.source, host.sink, axil.write_if.aw_channel,
                         axil.write_if.w_channel, axil.write_if.b_channel,
                         axil.read_if.ar_channel, axil.read_if.r_channel):
            set_pause(endpoint, self.rng, 0.0)

    async def known_good(self):
        """Setup, then one inference (perhaps reset mid-run first), bit-exact against golden."""
        rep, prog = self.report, self.good.prog
        rep.recoveries += 1
        self._stalls()
        try:
            st = await self.start(0, prog.setup_stream, stalled=True, what="known-good setup")
            if st is None or not st.done:
                rep.fail(f"known-good setup did not end with DONE: {st} (seed {rep.seed})")
                return
            if self.inject == "recovery":
                for i in range(len(prog.setup_stream)):
                    self.memories.write("WGT", i, self.rng.integers(0, 1 << 62))
                await ClockCycles(self.dut.clk, 1)      # the writes land at the next step
                self.snap = self.memories.snapshot()
            k = int(self.rng.integers(len(self.good.images)))
            stream = prog.infer_stream(self.good.images[k])
            if self.rng.random() < RESET_KNOWN_GOOD:
                at = int(self.rng.integers(20, 2000))
                await self.start(prog.infer_pc, stream, stalled=True, reset_at=at,
                                 what="known-good inference (reset)")
                self.host.sink.clear()
                return await self.known_good_after_reset(k)
            await self._inference(k, stream)
        finally:
            self._no_stalls()

    async def known_good_after_reset(self, k):
        """A reset interrupted the inference (or it ended first): setup and inference again."""
        rep, prog = self.report, self.good.prog
        st = await self.start(0, prog.setup_stream, stalled=True, what="known-good setup")
        if st is None or not st.done:
            rep.fail(f"known-good setup after a reset: {st} (seed {rep.seed})")
            return
        await self._inference(k, prog.infer_stream(self.good.images[k]))

    async def _inference(self, k, stream):
        rep, prog = self.report, self.good.prog
        st = await self.start(prog.infer_pc, stream, stalled=True, what="known-good inference")
        if st is None or not st.done:
            rep.fail(f"known-good inference did not end with DONE: {st} (seed {rep.seed})")
            return
        out = prog.decode_output(await self.host.receive(prog.output_layout.words))
        wrong = int((out != self.good.golden[k]).sum())
        if wrong == 0:
            rep.recoveries_exact += 1
        else:
            rep.fail(f"recovery not bit-exact: image {k}, {wrong} outputs differ from golden "
                     f"(seed {rep.seed})")

    # ---- the fuzz loop -----------------------------------------------------------------------
    async def run(self, words):
        rep, rng, cfg = self.report, self.rng, self.cfg
        await self.prepare()
        await self.known_good()
        while rep.words < words and not (self.inject and rep.failed):
            prog = self.generator.program()
            base = int(rng.integers(self.fuzz_base, cfg.imem_depth - len(prog) + 1))
            await self.host.load_program(prog, base)
            self.machine.write(base, prog)
            rep.words += len(prog)
            rep.programs += 1
            if rep.programs % PROGRESS_EVERY == 0:
                self.dut._log.info("progress: %s", rep.summary())
            for n in range(int(rng.integers(1, STARTS_PER_PROGRAM + 1))):
                pc = base if n == 0 else int(rng.integers(base, base + len(prog)))
                if rng.random() < 0.02:
                    pc = int(rng.choice([cfg.imem_depth, cfg.imem_depth + 1, (1 << 16) - 1,
                                         int(rng.integers(0, cfg.imem_depth))]))
                reset_at = (int(rng.integers(1, 400)) if rng.random() < RESET_FUZZ_START
                            else None)
                stalled = rng.random() < STALLED_FUZZ_START
                if stalled:
                    self._stalls()
                rep.starts += 1
                rep.stalled_starts += stalled
                st = await self.start(pc, reset_at=reset_at, stalled=stalled)
                self._no_stalls()
                await self._drain()
                if st is None or (st.failed and rng.random() < RECOVER_AFTER_ERROR):
                    await self.known_good()
        return rep


def _config():
    return NpuConfig(**json.loads(_env("NPU_CONFIG", "{}")))


@cocotb.test()
async def instruction_fuzz(dut):
    seed = int(_env("NPU_SEED", 1))
    words = int(_env("NPU_FUZZ_WORDS", 300))
    host = await bring_up(dut)
    cfg = _config()
    fuzzer = Fuzzer(dut, host, cfg, seed, int(_env("NPU_FUZZ_LONG", 100_000)))
    dut._log.info("largest legal CONV of %s: %d cycles (hence a bound per start)",
                  cfg, largest_legal_conv(cfg))
    rep = await fuzzer.run(words)
    dut._log.info("fuzz counts: %s", rep.summary())
    for f in rep.failures:
        dut._log.error("%s", f)
    path = _env("NPU_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump(rep.as_json(), fh)
    assert not rep.failed, f"fuzzing failed ({rep.summary()}); replay with NPU_SEED={seed}"


def huge_conv(cfg):
    """A legal 1 x 1 CONV of BATCH * OUT_H * OUT_W = 1000 * 1000 * 16 output pixels into one
    row of 16 words: zero row and image pitches, the input all padding but its first pixels
    (some 2 * 10**6 cycles)."""
    regs = {Reg.IN_ADDR: 0, Reg.IN_H: 1, Reg.IN_W: 2, Reg.IN_CW: 1, Reg.IN_ROW: 0,
            Reg.IN_IMG: 0, Reg.CIN: 1, Reg.KH: 1, Reg.KW: 1, Reg.STRIDE_Y: 1, Reg.STRIDE_X: 1,
            Reg.PAD_TOP: 0, Reg.PAD_LEFT: 0, Reg.IN_ZP: 0, Reg.OUT_ADDR: cfg.act_depth // 2,
            Reg.OUT_H: 1000, Reg.OUT_W: 16, Reg.OUT_CW: 1, Reg.OUT_ROW: 0, Reg.OUT_IMG: 0,
            Reg.OUT_NB: 1, Reg.W_ADDR: 0, Reg.P_ADDR: 0, Reg.BATCH: 1000, Reg.OUT_ZP: 0,
            Reg.QMIN: -128, Reg.QMAX: 127, Reg.ROUNDING: 0, Reg.USE_LUT: 0, Reg.CONV_MODE: 0}
    return [encode_set(r, v) for r, v in regs.items()] + [encode(Op.CONV), encode(Op.DONE)]


@cocotb.test()
async def fuzzer_checks(dut):
    """Each check, given a fault on purpose, must make the fuzzer fail: a word written
    through the backdoor after a refused instruction (stray write), a cycle bound of 1
    (hang), weights corrupted before the known-good inference (recovery). And a legal CONV
    of some 2 * 10**6 cycles is no hang: a reset ends it, and the known-good program runs
    bit-exact after it."""
    seed = int(_env("NPU_SEED", 1))
    host = await bring_up(dut)
    cfg = _config()
    seen = {}
    for inject, count in (("stray", "stray_writes"), ("bound", "hangs"),
                          ("recovery", "recoveries")):
        fuzzer = Fuzzer(dut, host, cfg, seed, 100_000, inject=inject)
        rep = await fuzzer.run(200)
        seen[inject] = rep.summary()
        dut._log.info("with %s injected: %s", inject, rep.summary())
        assert rep.failed, f"the fuzzer missed the injected {inject} fault: {rep.summary()}"
        if inject == "recovery":
            assert rep.recoveries_exact < rep.recoveries, rep.summary()
        else:
            assert getattr(rep, count) > 0, rep.summary()
        await fuzzer._reset()
    seen["long"] = await long_instruction(dut, host, cfg, seed)
    report = _env("NPU_REPORT")
    if report:
        with open(report, "w") as fh:
            json.dump(seen, fh)


async def long_instruction(dut, host, cfg, seed):
    fuzzer = Fuzzer(dut, host, cfg, seed, long_cycles=5_000)
    await fuzzer.prepare()
    prog = huge_conv(cfg)
    fuzzer.machine.write(fuzzer.fuzz_base, prog)
    await host.load_program(prog, fuzzer.fuzz_base)
    walk = fuzzer.machine.walk(fuzzer.fuzz_base)
    bound = fuzzer.machine.cycle_bound(walk, fuzzer.long_cycles)
    assert bound > 2_000_000, bound
    st = await fuzzer.start(fuzzer.fuzz_base)
    await fuzzer.known_good()
    rep = fuzzer.report
    dut._log.info("a CONV of %d cycles: %s", bound, rep.summary())
    assert st is None and rep.long_starts == 1 and not rep.failed, rep.summary()
    return rep.summary()
