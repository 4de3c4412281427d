"""Cycle model of ``npu_top``: predicts the cycle count of every instruction of a program, as
the hardware's per-instruction counters (CSR.COUNTERS) measure it (FETCH to NEXT inclusive).

Every instruction costs 4 sequencer cycles (FETCH, LATCH, DECODE, NEXT) plus what its engine
takes, plus 1 when it runs an engine in EXEC (the sequencer registers the engine's done);
DONE, SET, NOP and WAIT cost 3 (they finish in DECODE), and SET, NOP and WAIT fetch the next
instruction in their DECODE cycle, so the instruction after them costs one cycle less (a run
of SETs: 2 cycles each). Engine costs, derived from the RTL (R x C array, beats per tile = K):

* LOAD ACT/WGT of n words: n + 3; PARAM of n entries: param_beats(C) * n + 3; LUT and SM_EXP
  (256 or 1024 bytes, one per cycle): bytes + 2 * ceil(bytes / C) + 3
  (with ``s_axis`` always valid; the range check takes 2 cycles);
* background LOAD: 6 (FETCH, LATCH, DECODE, 2 x BG_CHECK, NEXT); its engine stays busy until
  ``beats + 4`` cycles after its DECODE. LOAD, WAIT and DONE wait in DECODE for it, so
  :func:`predict` keeps a timeline: those instructions take the cycles they waited on top
  (WAIT alone costs 4);
* STORE of n words: n + 5 (with ``m_axis`` always ready; a 2-cycle range check, then ACT
  reads of 2 cycles);
* CONV: CONV_SETUP cycles to start (size check, 12 pipelined products, range checks), R
  cycles to prepare the first block of R output pixels, then the tiles: ceil(M/R) * ceil(N/C)
  tiles, each taking
  max(K, R) cycles except that the first takes only K (the drain-spacing rule of
  :mod:`hw.systolic` waits on the previous tile), and :func:`conv_tail` cycles (array
  latency, the tile's other rows, requantizer; the activation table's latency with it) until the
  last row is written. K-split mode (CONV_MODE 2): K = KH * KW * ceil(CIN / C) beats, a
  block is one pixel (M * ceil(N/C) tiles, the first ready after one pixel), and the row
  sums add :func:`hw.row_sum.latency` to the tail;
* POOL: POOL_SETUP cycles to start, then per image (H + 2p) * (W + 2p) * G cycles (padding
  positions cost a cycle each, G = words per pixel; 3 cycles per beat when (W + 2p) * G < 5);
  the instruction ends 15 cycles after the last beat any window needs, or 2 cycles after the
  last input beat, whichever is later;
* SOFTMAX: a stage-by-stage schedule of the unit (:func:`softmax_cycles`): input, exp-sum
  (L + 1 per vector), divider (19), output (L + 1), 8 vector banks; in steady state
  max(L + 1, 20, about (3L + 36) / 8) cycles per vector after a lone-vector latency of
  3L + 61. With SM_CAUSAL the vectors have lengths (v mod L) + 1, each masked word costs a
  cycle at the input, and the -128 words written after a vector stall the output. SM_MODE 1
  (TFLite) has the same schedule with the reciprocal sequence (TFLITE_RECIP_STEPS) in place
  of the divider and TFLITE_OUT_EXTRA more output stages.

``scalesim_cycles`` is the textbook prediction SCALE-Sim uses for a plain output-stationary
array, printed for comparison.
"""

from math import ceil

from hw.isa import SM_EXP_ENTRIES, SM_EXP_ENTRY_BYTES, Mem, Op, Reg, decode, param_beats
from hw.pe import ProcessingElement
from hw.pooling import beat_spacing as pool_beat_spacing
from hw.activation import LATENCY as LUT_LATENCY
from hw.conv_engine import SETUP_DEPS as CONV_SETUP_DEPS
from hw.pool_engine import SETUP_DEPS as POOL_SETUP_DEPS
from hw.requantizer import LATENCY as REQUANT_LATENCY
from hw.softmax import BANKS as SM_BANKS
from hw.softmax import DIV_STEPS as SM_DIV_STEPS
from hw.softmax import EXP_LATENCY as SM_EXP_LATENCY
from hw.softmax import MUL_STAGES as SM_MUL_STAGES
from hw.softmax import TFLITE_OUT_EXTRA as SM_TFLITE_OUT_EXTRA
from hw.softmax import TFLITE_RECIP_STEPS as SM_TFLITE_RECIP_STEPS
from hw.act_memory import READ_LATENCY as ACT_LATENCY
from hw.conv_engine import OPERAND_STAGES, STEPPER_START, beats_per_tile
from hw.conv_engine import Mode as ConvMode
from hw.row_sum import latency as row_sum_latency
from hw.ram import RAM_LATENCY
from hw.sizes import CHECK_SETTLE, setup_cycles, step_schedule
from hw.softmax_engine import SETUP_DEPS as SOFTMAX_SETUP_DEPS
from hw.eltwise_engine import PIPELINE as ELT_PIPELINE
from hw.eltwise_engine import SETUP_DEPS as ELT_SETUP_DEPS

__all__ = ["predict", "program_cycles", "instruction_cycles", "conv_cycles", "pool_cycles",
           "softmax_cycles", "scalesim_cycles", "layer_table"]

SEQ = 4                 # FETCH + LATCH + DECODE + NEXT
#: Instructions that run an engine in EXEC take one cycle more: the sequencer registers the
#: engine's done.
EXEC_SEQ = SEQ + 1
# STORE, POOL and SOFTMAX read ACT through a TensorReader, whose first word is on its stream
# 2 + ACT_READ_EXTRA cycles after its start (the reader's start register, the ACT memory's
# READ_LATENCY, its FIFO).
ACT_READ_EXTRA = ACT_LATENCY - 2
#: STORE beyond its words and ACT_READ_EXTRA: the range check (CHECK, CHECK2), the reader's
#: start and read, the FIFO to m_axis, the reader's registered done, done.
STORE_EXTRA = 6
DECODE = 2              # cycle of DECODE after FETCH
# Engine start-up (hw.sizes.engine_fsm: size check, setup products, settle, range check),
# from the same product schedule as the hardware.
CONV_SETUP = 1 + setup_cycles(CONV_SETUP_DEPS)
#: Cycles the first block waits for the pixel stepper, which starts in SETUP cycle
#: STEPPER_START and prepares R pixels, one per cycle, after a cycle that loads its start.
def conv_first_block(R):
    run_entry = step_schedule(CONV_SETUP_DEPS)[1] + CHECK_SETTLE + 1
    return max(0, STEPPER_START + 1 + R - run_entry)


#: The operand pipeline (OPERAND_STAGES) to the operand FIFO, the FIFO, the registered
#: writeback and done.
CONV_ENGINE_TAIL = OPERAND_STAGES + 1


def array_result_latency(R, C):
    """Cycles from a tile's last operand handshake to its first row on the array's ``result``
    stream, no backpressure (see :mod:`hw.systolic`)."""
    return R + C + 7 + ProcessingElement.PRODUCT_STAGES


def conv_tail(R, C):
    """From the last tile's last operand beat to the end of the CONV: the array, the other
    R - 1 rows of the tile, the requantizer."""
    return CONV_ENGINE_TAIL + array_result_latency(R, C) + (R - 1) + REQUANT_LATENCY
POOL_SETUP = 1 + setup_cycles(POOL_SETUP_DEPS) + ACT_READ_EXTRA
POOL_OUT_TAIL = 15      # pooling unit: S1, S1b, S2, S2b, S3, S3b, multiplier (3), 2 adds, output; write
POOL_IN_TAIL = 3       # the reader's registered done, the engine's done
SOFTMAX_SETUP = setup_cycles(SOFTMAX_SETUP_DEPS) - 1 + ACT_READ_EXTRA


def conv_cycles(R, C, M, K, N, use_lut=False, ksplit=False):
    """A CONV of M output pixels, K beats per tile and N output channels. K-split mode
    (``ksplit``; K = its beats, a word each): a tile is one pixel's column block, a block
    one pixel, and the tile's row sums (:mod:`hw.row_sum`) add their latency."""
    blk = 1 if ksplit else R
    tiles = ceil(M / blk) * ceil(N / C)
    body = K + (tiles - 1) * max(K, R)
    return (EXEC_SEQ + CONV_SETUP + conv_first_block(blk) + body + conv_tail(R, C) +
            (row_sum_latency(C) if ksplit else 0) + (LUT_LATENCY if use_lut else 0))


def pool_cycles(C, batch, H, W, cin, k, stride, pad):
    G = ceil(cin / C)
    Hp, Wp = H + 2 * pad, W + 2 * pad
    per_image = Hp * Wp * G
    Ho, Wo = (Hp - k) // stride + 1, (Wp - k) // stride + 1
    # walk position just after the last beat any window needs
    last_needed = (((Ho - 1) * stride + k - 1) * Wp + (Wo - 1) * stride + k - 1) * G + G
    # walk position just after the last real (not padding) input beat
    last_input = ((H + pad - 1) * Wp + W + pad - 1) * G + G

    def cycle(n):
        """Cycle just after the walk's n-th beat: one beat per cycle, or one every
        TINY_SPACING cycles (rows of fewer than TINY_ROW beats) or NARROW_SPACING cycles
        (one channel group), as hw.pooling.beat_spacing says."""
        return pool_beat_spacing(Wp, G) * (n - 1) + 1

    end = max(cycle((batch - 1) * per_image + last_needed) + POOL_OUT_TAIL,
              cycle((batch - 1) * per_image + last_input) + POOL_IN_TAIL)
    return EXEC_SEQ + POOL_SETUP + end


SOFTMAX_FIRST = 3        # instruction-relative cycle of the first element into the unit
SOFTMAX_BANKS = SM_BANKS                        # hw.softmax.SoftmaxUnit default
SOFTMAX_DESC = 2         # last element in to the exp-sum stage's start (registered descriptor)
# exp-sum pipeline: last element read to the sum in the divider FIFO (buffer read, ExpUnit,
# accumulator/FIFO write)
SOFTMAX_SUM_READY = RAM_LATENCY + SM_EXP_LATENCY + 1
SOFTMAX_DIVIDE = SM_DIV_STEPS + 1               # divider start to quotient available
# output stage: start to last probability, beyond L (buffer read, ExpUnit, e * R, v, clamp)
SOFTMAX_OUT = RAM_LATENCY + SM_EXP_LATENCY + SM_MUL_STAGES + 2
SOFTMAX_DONE = 4         # last probability (or -128 word) to the end of the instruction
# SM_MODE 1 (TFLite): the reciprocal sequence instead of the divider, a longer output path.
SOFTMAX_TFLITE_DIVIDE = SM_TFLITE_RECIP_STEPS + 1
SOFTMAX_TFLITE_OUT = SOFTMAX_OUT + SM_TFLITE_OUT_EXTRA


def softmax_cycles(C, vectors, L, causal=False, words=None, mode=0):
    """SOFTMAX of ``vectors`` vectors of ``L`` values in pixels of ``words`` words (default
    ``ceil(L / C)``; ``causal``: vector v uses ``(v mod L) + 1`` values, the rest of its
    words are masked).

    A schedule of the unit's stages (:mod:`hw.softmax`), vector by vector: the input takes
    one element per cycle (plus one cycle per dropped masked word) while a bank is free; the
    exp-sum stage starts after the input and after the previous vector (L + 1 cycles); the
    divider after the sum and after the output stage took the previous quotient; the output
    stage after the quotient and the previous vector; the engine's -128 words after a vector
    stall the output stage when the next vector's probabilities are already there.
    ``mode``: SM_MODE (1: TFLite, a longer stage D and output path)."""
    divide, out = ((SOFTMAX_TFLITE_DIVIDE, SOFTMAX_TFLITE_OUT) if mode
                   else (SOFTMAX_DIVIDE, SOFTMAX_OUT))
    W = words or ceil(L / C)
    lengths = [(v % L) + 1 if causal else L for v in range(vectors)]
    pads = [W - ceil(n / C) for n in lengths]
    give, c_load, out_last = [], [], []
    in_end = b_load = 0
    stall = 0
    for v, n in enumerate(lengths):
        start = SOFTMAX_FIRST if v == 0 else in_end + 1 + pads[v - 1]
        if v >= SOFTMAX_BANKS:
            start = max(start, give[v - SOFTMAX_BANKS] + 1)
        in_end = start + n - 1
        b_load = (in_end + SOFTMAX_DESC if v == 0
                  else max(in_end + SOFTMAX_DESC, b_load + lengths[v - 1] + 1))
        d_load = b_load + n + SOFTMAX_SUM_READY
        if v:
            d_load = max(d_load, c_load[v - 1] + 1)
        c = d_load + divide
        if v:
            c = max(c, c_load[v - 1] + lengths[v - 1] + 1 + stall)
            stall = max(0, out_last[v - 1] + pads[v - 1] + 1 - (c + 1 + out))
        give.append(c + n + stall)
        c_load.append(c)
        out_last.append(c + n + out + stall)
    return EXEC_SEQ + SOFTMAX_SETUP + out_last[-1] + pads[-1] + SOFTMAX_DONE


#: ELTWISE beyond its 2 reads per word: the engine's start-up, the ACT read, the lanes'
#: pipeline, the requantizer (its last result is written as the output walk ends).
ELT_EXTRA = 1 + setup_cycles(ELT_SETUP_DEPS) + ACT_LATENCY + ELT_PIPELINE + REQUANT_LATENCY


def eltwise_cycles(words, use_lut=False):
    """ELTWISE over ``words`` words of each input: one read per cycle, A and B alternately;
    with USE_LUT the activation table's latency after the requantizer (found by the
    instruction fuzzer: 2 cycles more than this model had)."""
    return EXEC_SEQ + 2 * words + ELT_EXTRA + (LUT_LATENCY if use_lut else 0)


def scalesim_cycles(R, C, M, K, N):
    """ceil(Sr/R) * ceil(Sc/C) * (R + C + T - 2) - 1 (Sr = output pixels, Sc = filters,
    T = reduction length)."""
    return ceil(M / R) * ceil(N / C) * (R + C + K - 2) - 1


def instruction_cycles(word, regs, cfg):
    """Cycles of one foreground instruction ``word`` that runs with the configuration
    registers ``regs`` (``{Reg: signed value}``, missing ones 0), as :func:`predict` counts
    it in isolation (no background LOAD to wait for, fetched by itself)."""
    f = decode(word)
    op = f["op"]
    R, C = cfg.rows, cfg.cols
    if op in FETCH_AHEAD or op == Op.DONE:
        return SEQ - 1          # FETCH, LATCH, DECODE
    if op == Op.LOAD:
        if f["mem"] in SERIAL_BYTES:
            nbytes = SERIAL_BYTES[f["mem"]]
            return EXEC_SEQ + nbytes + 2 * ceil(nbytes / C) + LOAD_EXTRA
        return EXEC_SEQ + load_beats(f, C) + LOAD_EXTRA
    if op == Op.STORE:
        return EXEC_SEQ + f["count"] + STORE_EXTRA + ACT_READ_EXTRA
    g = {r: regs.get(r, 0) for r in Reg}
    if op == Op.CONV:
        M = g[Reg.BATCH] * g[Reg.OUT_H] * g[Reg.OUT_W]
        mode = g[Reg.CONV_MODE]
        K = beats_per_tile(mode, g[Reg.KH], g[Reg.KW], g[Reg.CIN], C)
        return conv_cycles(R, C, M, K, g[Reg.OUT_NB] * C, g[Reg.USE_LUT],
                           mode == ConvMode.KSPLIT)
    if op == Op.POOL:
        return pool_cycles(C, g[Reg.BATCH], g[Reg.IN_H], g[Reg.IN_W], g[Reg.IN_CW] * C,
                           g[Reg.KH], g[Reg.STRIDE_Y], g[Reg.PAD_TOP])
    if op == Op.SOFTMAX:
        return softmax_cycles(C, g[Reg.BATCH] * g[Reg.IN_H] * g[Reg.IN_W], g[Reg.CIN],
                              bool(g[Reg.SM_CAUSAL]), g[Reg.IN_CW], g[Reg.SM_MODE])
    if op == Op.ELTWISE:
        return eltwise_cycles(g[Reg.BATCH] * g[Reg.IN_H] * g[Reg.IN_W] * g[Reg.IN_CW],
                              g[Reg.USE_LUT])
    raise ValueError(f"no cycle model for opcode {op:#x}")


#: CSR.CYCLES counts one cycle more than the instructions' counters: the START cycle.
RUN_OVERHEAD = 1


def program_cycles(instructions, cfg):
    """Predicted CSR.CYCLES of running ``instructions`` from the first to DONE."""
    return sum(predict(instructions, cfg)) + RUN_OVERHEAD


def load_beats(f, cols):
    """``s_axis`` beats of a decoded ACT/WGT/PARAM LOAD."""
    return param_beats(cols) * f["count"] if f["mem"] == Mem.PARAM else f["count"]


LOAD_EXTRA = 3          # LoadEngine: CHECK, CHECK2, DONE
#: LOADs whose bytes the LoadEngine writes one per cycle (hw.dma): their byte counts.
SERIAL_BYTES = {Mem.LUT: 256, Mem.SM_EXP: SM_EXP_ENTRIES * SM_EXP_ENTRY_BYTES}
BG_LOAD = SEQ + 2       # FETCH, LATCH, DECODE, BG_CHECK (2), NEXT
BG_BUSY = LOAD_EXTRA + 1    # the LoadEngine is idle again beats + 4 cycles after its start


#: Instructions that finish in DECODE and start the next one's IMEM read there: the next
#: instruction has no FETCH cycle (hw.npu).
FETCH_AHEAD = (Op.NOP, Op.SET, Op.WAIT)


def predict(instructions, cfg):
    """Predicted cycles of each instruction (a list the length of ``instructions``)."""
    regs = {}
    out = []
    t = 0               # first cycle of the current instruction
    load_idle = 0       # first cycle in which the LoadEngine is idle
    fetched = False     # the previous instruction fetched this one (it has no FETCH)
    for word in instructions:
        f = decode(word)
        op = f["op"]
        if op == Op.SET:
            v = f["value"]
            regs[f["reg"]] = v - (1 << 32) if v >= 1 << 31 else v
        decode_at = t + DECODE - fetched
        # LOAD, WAIT and DONE stay in DECODE until the LoadEngine is idle.
        wait = max(0, load_idle - decode_at) if op in (Op.LOAD, Op.WAIT, Op.DONE) else 0
        if op == Op.LOAD and f["background"]:
            load_idle = decode_at + wait + load_beats(f, cfg.cols) + BG_BUSY
            cycles = BG_LOAD + wait
        else:
            cycles = instruction_cycles(word, regs, cfg) + wait
        cycles -= fetched
        out.append(cycles)
        t += cycles
        fetched = op in FETCH_AHEAD
    return out


def layer_table(program, measured=None):
    """Rows per layer: name, type, GEMM, MACs, predicted and measured cycles of its instruction,
    ideal cycles MACs / (R*C), utilization, SCALE-Sim cycles."""
    cfg = program.config
    R, C = cfg.rows, cfg.cols
    pred = predict(program.infer, cfg)
    rows = []
    for L in program.layers:
        pcs = [pc - program.infer_pc for pc in [L.conv_pc] + list(L.extra_pcs)]
        M, K, N = L.gemm
        meas = sum(measured[i] for i in pcs) if measured is not None else None
        ideal = L.macs / (R * C) if L.macs else None
        rows.append({
            "layer": L.name, "type": L.type, "gemm": L.gemm, "macs": L.macs,
            "predicted": sum(pred[i] for i in pcs), "measured": meas, "ideal": ideal,
            "utilization": (L.macs / (R * C * meas)) if (L.macs and meas) else None,
            "scalesim": scalesim_cycles(R, C, M, K, N) if L.macs else None,
        })
    return rows
