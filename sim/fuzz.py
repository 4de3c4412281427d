"""Instruction fuzzing of ``npu_top``: the programs, and the host's model of what a start may do.

Nothing here touches a simulator; :mod:`sim.tb_fuzz` drives the RTL with it.

* :class:`ProgramGenerator`: seeded programs, fully random (random 64-bit words, or random
  opcodes with random fields) or near-valid (a slice of a compiled program, or one of its
  engine instructions after SETs of the registers it ran with, with mutations: flipped
  bits, boundary and random SET values, out-of-range LOAD/STORE addresses and counts,
  random opcodes, inserted SETs of any register, dropped DONE ...).
* :class:`Machine`: the architectural state the host can know (IMEM, the configuration
  registers SET writes) and, for a start at some pc, its :class:`Walk`: the instructions the
  run may execute, in order, up to the first DONE or the first instruction that must fail
  whatever the registers hold (an unknown opcode, a SET of an unknown register, a LOAD or
  STORE out of range, a background LOAD into ACT/LUT/SM_EXP, the end of IMEM).
* The cycle bound of a start (:meth:`Machine.cycle_bound`): per instruction, the cycles the
  exact cycle model (:mod:`npu.perf`) gives it *as if it were legal*, with the registers it
  would see; an instruction an engine refuses ends in its start-up, before the work of the
  smallest legal instance of its opcode, which bounds it from below (:func:`refusal_cycles`).
  No single bound covers every legal instruction of the configuration: with zero pitches a
  legal CONV may compute 2**32 output pixels of K = 131071 (:func:`largest_legal_conv`, some
  10**13 cycles), so the bound is the largest each instruction may legally take.
* The memory words a start may write (:meth:`Machine.write_regions`): for each instruction
  that ran, its output words as the engine walks them (hw.dma.TensorWalker: base, image, row
  and pixel pitches, channel groups) mapped to their ACT bank rows (hw.act_memory), its LOAD
  words in WGT/PARAM, the whole table for a LUT or SM_EXP LOAD. A refused instruction
  writes nothing.
"""

from dataclasses import dataclass, field
from functools import lru_cache
import numpy as np

from golden.gemm import MAX_K
from hw.act_memory import act_location, banks
from hw.dma import LUT_BEATS
from hw.isa import (Error, Mem, Op, Reg, decode, encode, encode_set, encode_store,
                    param_beats, sm_exp_beats)
from npu import perf

__all__ = ["ProgramGenerator", "Machine", "Walk", "refusal_cycles", "largest_legal_conv",
           "MEMORIES"]

#: The memories a start is checked on (sim.npu_memories reads them).
MEMORIES = ("ACT", "WGT", "PARAM", "LUT", "SM_EXP")
OPCODES = frozenset(int(op) for op in Op)
WORD_MASK = (1 << 64) - 1
#: Engines whose writes go to ACT through a tensor walk.
ENGINES = (Op.CONV, Op.POOL, Op.SOFTMAX, Op.ELTWISE)
#: A tensor walk of more words than this is taken as its whole span (a superset).
MAX_WALK_WORDS = 1 << 20
#: Mutations of near-valid programs (ProgramGenerator._mutate), and those that change the
#: configuration an engine instruction runs with.
MUTATIONS = ("flip", "set_value", "flip_value", "transfer", "opcode", "insert_set", "delete",
             "duplicate", "random_word", "drop_done")
CONFIG_MUTATIONS = ("set_value", "flip_value", "insert_set", "delete")


@lru_cache(maxsize=1 << 16)
def fields(word):
    """:func:`hw.isa.decode` of ``word``, cached (fuzz programs start many times)."""
    return decode(word)


def to_signed(v):
    return v - (1 << 32) if v >= 1 << 31 else v


# ---- LOAD and STORE: their range checks and beats ---------------------------------------------

def transfer_beats(f, cfg):
    """``s_axis`` beats a LOAD takes if its range check passes, or ``None`` if it fails
    (hw.dma: ``count >= 1`` and ``addr + count <= depth`` for ACT/WGT/PARAM; LUT and SM_EXP
    are always accepted; any other memory is refused)."""
    mem, C = f["mem"], cfg.cols
    if mem == Mem.LUT:
        return LUT_BEATS(C)
    if mem == Mem.SM_EXP:
        return sm_exp_beats(C)
    depth = {Mem.ACT: cfg.act_depth, Mem.WGT: cfg.wgt_depth,
             Mem.PARAM: cfg.param_depth}.get(mem)
    if depth is None or f["count"] == 0 or f["addr"] + f["count"] > depth:
        return None
    return f["count"] * (param_beats(C) if mem == Mem.PARAM else 1)


def store_accepted(f, cfg):
    return f["count"] >= 1 and f["addr"] + f["count"] <= cfg.act_depth


def certain_error(f, cfg):
    """The error an instruction ends with whatever the registers hold, or ``None``."""
    op = f["op"]
    if op not in OPCODES:
        return Error.ILLEGAL_OPCODE
    if op == Op.SET and f["reg"] >= len(Reg):
        return Error.CONFIG
    if op == Op.LOAD:
        if f["background"] and f["mem"] not in (Mem.WGT, Mem.PARAM):
            return Error.CONFIG
        if transfer_beats(f, cfg) is None:
            return Error.ADDRESS
    if op == Op.STORE and not store_accepted(f, cfg):
        return Error.ADDRESS
    return None


# ---- Cycle bounds -------------------------------------------------------------------------------

def refusal_cycles(op, cfg):
    """Upper bound of an instruction of ``op`` that its engine refuses: the checks end the
    engine's start-up, which the smallest legal instance of the opcode runs in full."""
    R, C = cfg.rows, cfg.cols
    if op == Op.CONV:
        return perf.conv_cycles(R, C, 1, 1, C)
    if op == Op.POOL:
        return perf.pool_cycles(C, 1, 1, 1, C, 1, 1, 0)
    if op == Op.SOFTMAX:
        return max(perf.softmax_cycles(C, 1, 1, mode=m) for m in (0, 1))
    if op == Op.ELTWISE:
        return perf.eltwise_cycles(1)
    return perf.EXEC_SEQ + perf.LOAD_EXTRA + 1         # LOAD / STORE: the range check


def largest_legal_conv(cfg):
    """Cycles of the largest legal CONV: 2**32 - 1 output pixels (zero pitches let BATCH *
    OUT_H * OUT_W reach the 32-bit products' limit with a one-pixel output region), K =
    MAX_K, OUT_NB = 128 column blocks (OUT_CW = 2**7)."""
    return perf.conv_cycles(cfg.rows, cfg.cols, (1 << 32) - 1, MAX_K, 128 * cfg.cols, True)


def instruction_bound(word, regs, cfg, long_cycles):
    """Cycles instruction ``word`` may take with configuration registers ``regs`` (a list,
    unsigned): the cycle model's count as if legal, at least :func:`refusal_cycles`.
    Returns ``long_cycles + 1`` for a SOFTMAX of more vectors than could end in
    ``long_cycles`` (the model's schedule walks every vector)."""
    f = fields(word)
    op = f["op"]
    if op in (Op.NOP, Op.SET, Op.WAIT, Op.DONE) or op not in OPCODES:
        return perf.SEQ - 1
    refused = refusal_cycles(op, cfg)
    if op == Op.LOAD and f["background"]:
        beats = transfer_beats(f, cfg)
        return perf.BG_LOAD + (beats + perf.BG_BUSY if beats is not None else 0)
    if op == Op.LOAD and transfer_beats(f, cfg) is None:
        return refused
    if op == Op.STORE and not store_accepted(f, cfg):
        return refused
    g = {r: to_signed(regs[r]) for r in Reg}
    if op == Op.SOFTMAX:
        vectors = g[Reg.BATCH] * g[Reg.IN_H] * g[Reg.IN_W]
        if vectors <= 0 or g[Reg.CIN] <= 0:
            return refused              # sizes must be >= 1
        if vectors * perf.SOFTMAX_DIVIDE > long_cycles:
            return long_cycles + 1
    if op == Op.POOL and (g[Reg.STRIDE_Y] <= 0 or g[Reg.KH] <= 0):
        return refused
    return max(refused, perf.instruction_cycles(word, g, cfg))


# ---- Tensor walks -> ACT bank rows --------------------------------------------------------------

def walk_words(base, dims, groups):
    """Word addresses of a tensor walk (hw.dma.TensorWalker): ``base + sum(i_k * pitch_k) +
    g`` over ``dims`` = ((count, pitch), ...) and ``g < groups``. A walk of more than
    :data:`MAX_WALK_WORDS` words is returned as its span (first to last word)."""
    dims = [(n, p) for n, p in dims if n > 1 and p != 0] + [(groups, 1)]
    total = 1
    for n, _ in dims:
        total *= n
    if total > MAX_WALK_WORDS:
        return np.arange(base, base + sum((n - 1) * p for n, p in dims) + 1, dtype=np.int64)
    words = np.array([base], dtype=np.int64)
    for n, p in dims:
        words = np.add.outer(words, np.arange(n, dtype=np.int64) * p).ravel()
    return np.unique(words)


def engine_output(f_op, g):
    """(base, dims, groups, pixel pitch) of the output walk of engine ``f_op`` (hw.*_engine:
    CONV writes OUT_NB column blocks of its OUT_H x OUT_W pixels; POOL its OUT_H x OUT_W
    pixels of IN_CW words; SOFTMAX and ELTWISE IN_H x IN_W pixels of IN_CW words)."""
    if f_op == Op.CONV:
        h, w, groups, cw = g[Reg.OUT_H], g[Reg.OUT_W], g[Reg.OUT_NB], g[Reg.OUT_CW]
    elif f_op == Op.POOL:
        h, w, groups, cw = g[Reg.OUT_H], g[Reg.OUT_W], g[Reg.IN_CW], g[Reg.IN_CW]
    else:
        h, w, groups, cw = g[Reg.IN_H], g[Reg.IN_W], g[Reg.IN_CW], g[Reg.IN_CW]
    dims = ((g[Reg.BATCH], g[Reg.OUT_IMG]), (h, g[Reg.OUT_ROW]), (w, g[Reg.OUT_CW]))
    return g[Reg.OUT_ADDR], dims, groups, cw


def act_rows(words, shift, cfg):
    """Flat ACT locations (bank * bank depth + row) of ``words`` of a tensor with pixel shift
    ``shift`` (hw.act_memory.act_location)."""
    nb = banks(cfg.rows)
    words = words[(words >= 0) & (words < cfg.act_depth)]
    bank, row = act_location(words, shift, nb)
    return bank * (cfg.act_depth // nb) + row


# ---- The host's model of the machine ------------------------------------------------------------

@dataclass
class Walk:
    """The instructions (pcs) a start may execute, in order, and how the run ends if no
    engine refuses one of them first: ``"DONE"`` or an :class:`hw.isa.Error`."""
    start: int
    pcs: list
    end: object


@dataclass
class Regions:
    """Locations (index arrays) of each memory that the instructions which ran may write."""
    words: dict = field(default_factory=lambda: {m: [] for m in MEMORIES})
    whole: set = field(default_factory=set)     # memories written as a whole (LUT, SM_EXP)

    def add(self, mem, idx):
        self.words[mem].append(np.asarray(idx, dtype=np.int64))

    def allowed(self, mem):
        """The set of allowed locations of ``mem`` (``None``: all of it)."""
        if mem in self.whole:
            return None
        parts = self.words[mem]
        return set(np.concatenate(parts).tolist()) if parts else set()


class Machine:
    """IMEM and the configuration registers, as the host knows them (both keep their contents
    from start to start; a reset clears the registers, not IMEM)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.imem = [encode(Op.NOP)] * cfg.imem_depth
        self.regs = [0] * len(Reg)

    def write(self, base, words):
        self.imem[base:base + len(words)] = [w & WORD_MASK for w in words]

    def reset(self):
        self.regs = [0] * len(Reg)

    def walk(self, start):
        depth = self.cfg.imem_depth
        if start >= depth:
            return Walk(start, [], Error.PC_OVERFLOW)
        pcs = []
        for pc in range(start, depth):
            pcs.append(pc)
            f = fields(self.imem[pc])
            err = certain_error(f, self.cfg)
            if err is not None:
                return Walk(start, pcs, err)
            if f["op"] == Op.DONE:
                return Walk(start, pcs, "DONE")
        return Walk(start, pcs, Error.PC_OVERFLOW)

    def beats(self, walk):
        """``s_axis`` beats the walk's LOADs take (those refused take none)."""
        n = 0
        for pc in walk.pcs:
            f = fields(self.imem[pc])
            if f["op"] == Op.LOAD:
                n += transfer_beats(f, self.cfg) or 0
        return n

    def cycle_bound(self, walk, long_cycles):
        """Upper bound of CSR.CYCLES for the walk (see the module docstring)."""
        regs = list(self.regs)
        total = perf.RUN_OVERHEAD
        for pc in walk.pcs:
            word = self.imem[pc]
            total += instruction_bound(word, regs, self.cfg, long_cycles)
            self._apply_set(fields(word), regs)
        return total

    @staticmethod
    def _apply_set(f, regs):
        if f["op"] == Op.SET and f["reg"] < len(Reg):
            regs[f["reg"]] = f["value"]

    def executed(self, walk, status, reset_pc=None):
        """The pcs that ran: up to a reset's pc (included), else up to DONE or the end of
        IMEM, or before the failing instruction; ``None`` if the run left the walk."""
        if reset_pc is not None:
            return walk.pcs[:walk.pcs.index(reset_pc) + 1] if reset_pc in walk.pcs else None
        if not status.failed or status.error == Error.PC_OVERFLOW:
            return list(walk.pcs)       # at the end of IMEM the last instruction ran too
        if status.error_pc in walk.pcs:
            return walk.pcs[:walk.pcs.index(status.error_pc)]
        return None

    def run_instructions(self, pcs):
        """The memory regions instructions ``pcs`` (in the order they ran) may write; the
        registers take the values of their SETs."""
        cfg = self.cfg
        regions = Regions()
        for pc in pcs:
            f = fields(self.imem[pc])
            op = f["op"]
            if op == Op.LOAD:
                self._load_region(f, regions)
            elif op in ENGINES:
                g = dict(enumerate(self.regs))
                base, dims, groups, cw = engine_output(op, g)
                shift = max(0, int(cw).bit_length() - 1)
                regions.add("ACT", act_rows(walk_words(base, dims, groups), shift, cfg))
            self._apply_set(f, self.regs)
        return regions

    def _load_region(self, f, regions):
        mem = f["mem"]
        if mem in (Mem.LUT, Mem.SM_EXP):
            regions.whole.add(Mem(mem).name)
            return
        words = np.arange(f["addr"], f["addr"] + f["count"], dtype=np.int64)
        if mem == Mem.ACT:
            regions.add("ACT", act_rows(words, f["shift"], self.cfg))
        else:
            regions.add(Mem(mem).name, words)


# ---- Program generation -------------------------------------------------------------------------

class ProgramGenerator:
    """Seeded fuzz programs: a fraction ``random_fraction`` fully random, the others mutated
    slices of the ``corpus`` (lists of compiled instruction words)."""

    def __init__(self, rng, corpus, cfg, random_fraction=0.25, max_len=40):
        self.rng, self.corpus, self.cfg = rng, corpus, cfg
        self.random_fraction, self.max_len = random_fraction, max_len
        depths = (cfg.act_depth, cfg.wgt_depth, cfg.param_depth, cfg.imem_depth)
        self.boundaries = sorted({v + d for v in depths for d in (-2, -1, 0, 1)}
                                 | {0, 1, 2, 3, 4, 7, 8, 127, 128, 255, 256, (1 << 16) - 1,
                                    1 << 16, (1 << 31) - 1, 1 << 31, (1 << 32) - 1})
        # Every engine instruction of the corpus with the registers it ran with (the
        # compiler's SETs replayed): mutations of a whole configuration run more often than
        # those of a slice, whose registers are whatever the machine holds.
        self.anchors = []
        for src in corpus:
            regs = [0] * len(Reg)
            for w in src:
                f = fields(w)
                Machine._apply_set(f, regs)
                if f["op"] in ENGINES:
                    self.anchors.append((w, tuple(regs)))

    def program(self):
        if self.rng.random() < self.random_fraction:
            return self._random_program()
        return self._near_valid_program()

    # -- fully random
    def _random_program(self):
        rng = self.rng
        n = int(rng.integers(1, self.max_len // 2 + 1))
        words = [self._random_word() for _ in range(n)]
        if rng.random() < 0.7:
            words.append(encode(Op.DONE))
        return words

    def _random_word(self):
        rng = self.rng
        if rng.random() < 0.5:
            return int(rng.integers(0, 1 << 63)) << 1 | int(rng.integers(0, 2))
        op = Op(int(rng.choice([int(o) for o in Op])))
        if op == Op.SET:
            return encode_set(int(rng.integers(0, len(Reg) + 4)), self._value(0))
        if op in (Op.LOAD, Op.STORE):
            return self._transfer(op)
        return encode(op)

    def _transfer(self, op):
        rng = self.rng
        addr = int(rng.choice(self.boundaries[:12])) if rng.random() < 0.5 else \
            int(rng.integers(0, 1 << 24))
        addr = min(addr, (1 << 24) - 1)
        count = int(rng.integers(0, 64)) if rng.random() < 0.7 else int(rng.integers(0, 1 << 24))
        shift = int(rng.integers(0, 8))
        if op == Op.STORE:
            return encode_store(addr, count, shift)
        mem = int(rng.integers(0, 16)) if rng.random() < 0.2 else int(rng.integers(0, 5))
        return encode(Op.LOAD, mem=mem, addr=addr, count=count,
                      background=int(rng.random() < 0.2), shift=shift)

    def _value(self, v):
        """A SET value: a boundary, a neighbour or multiple of ``v``, or random bits."""
        rng = self.rng
        r = rng.random()
        if r < 0.35:
            return int(rng.choice(self.boundaries))
        if r < 0.7:
            return (v + int(rng.choice([-1, 1, 2, -2, v, -v // 2 if v else 1]))) % (1 << 32)
        if r < 0.85:
            return int(rng.integers(0, 256))
        return int(rng.integers(0, 1 << 32))

    # -- near-valid
    def _near_valid_program(self):
        """A mutated slice of a compiled program, or (half of the time) an engine instruction
        of the corpus after SETs of the registers it ran with, with up to two mutations of
        that configuration."""
        rng = self.rng
        if self.anchors and rng.random() < 0.5:
            word, regs = self.anchors[int(rng.integers(len(self.anchors)))]
            words = [encode_set(r, v) for r, v in enumerate(regs) if v]
            words += [word, encode(Op.DONE)]
            for _ in range(int(rng.integers(0, 3))):   # none: a legal run on random data
                words = self._mutate(words, CONFIG_MUTATIONS)
            return words
        src = self.corpus[int(rng.integers(len(self.corpus)))]
        n = int(rng.integers(2, min(self.max_len, len(src)) + 1))
        i = int(rng.integers(0, len(src) - n + 1))
        words = list(src[i:i + n])
        if fields(words[-1])["op"] != Op.DONE and rng.random() < 0.85:
            words.append(encode(Op.DONE))
        for _ in range(1 + int(rng.geometric(0.5))):
            words = self._mutate(words)
        return words[:self.max_len + 8] or [encode(Op.DONE)]

    def _mutate(self, words, kinds=MUTATIONS):
        """One mutation of a kind in ``kinds`` at a random position; a kind that does not
        apply to the instruction there flips one of its bits instead."""
        rng = self.rng
        if not words:
            return [self._random_word()]
        k = int(rng.integers(len(words)))
        w = words[k]
        f = fields(w)
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "set_value" and f["op"] == Op.SET:     # a boundary / near value
            words[k] = encode_set(f["reg"], self._value(f["value"]))
        elif kind == "flip_value" and f["op"] == Op.SET:
            words[k] = encode_set(f["reg"], f["value"] ^ (1 << int(rng.integers(32))))
        elif kind == "transfer" and f["op"] in (Op.LOAD, Op.STORE):
            words[k] = self._mutate_transfer(f)
        elif kind == "opcode":
            words[k] = (w & ~0xFF) | int(rng.integers(256))
        elif kind == "insert_set":          # a SET of any register (some unknown)
            reg = int(rng.integers(0, len(Reg) + 4))
            words.insert(k, encode_set(reg, self._value(int(rng.integers(0, 64)))))
        elif kind == "delete" and len(words) > 1:
            del words[k]
        elif kind == "duplicate":
            words.insert(k, w)
        elif kind == "random_word":
            words.insert(k, self._random_word())
        elif kind == "drop_done":           # run on into what IMEM holds
            words = [x for x in words if fields(x)["op"] != Op.DONE] or words
        else:
            words[k] = w ^ (1 << int(rng.integers(64)))
        return words

    def _mutate_transfer(self, f):
        rng = self.rng
        depth = {Mem.ACT: self.cfg.act_depth, Mem.WGT: self.cfg.wgt_depth,
                 Mem.PARAM: self.cfg.param_depth}.get(f.get("mem", Mem.ACT), self.cfg.act_depth)
        addr, count = f["addr"], f["count"]
        choice = int(rng.integers(5))
        if choice == 0:
            addr = max(0, depth - count + int(rng.integers(-1, 3)))
        elif choice == 1:
            count = max(0, depth - addr + int(rng.integers(-1, 3)))
        elif choice == 2:
            count = int(rng.choice([0, 1, (1 << 24) - 1, depth, depth + 1]))
        elif choice == 3:
            addr = int(rng.choice([depth - 1, depth, (1 << 24) - 1]))
        else:
            return self._transfer(f["op"])
        addr, count = min(max(addr, 0), (1 << 24) - 1), min(max(count, 0), (1 << 24) - 1)
        if f["op"] == Op.STORE:
            return encode_store(addr, count, f["shift"])
        return encode(Op.LOAD, mem=f["mem"], addr=addr, count=count,
                      background=f["background"], shift=f["shift"])
