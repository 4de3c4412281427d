"""Instruction set, register map and memory map of the accelerator (``npu_top``).

Shared by the hardware (:mod:`hw.npu`), the compiler (:mod:`npu.compiler`) and the cycle model
(:mod:`npu.perf`), so the three cannot disagree on an encoding.

Instructions are 64 bits, ``opcode`` in bits [7:0]:

=========  ====  ==========================================================================
name       code  fields and meaning
=========  ====  ==========================================================================
NOP        0x00  nothing
SET        0x01  [15:8] configuration register (``Reg``), [63:32] value: sets the register
LOAD       0x02  [11:8] memory (``Mem``), [35:12] word address, [36] background, [63:40] count:
                 take words from ``s_axis`` into the memory. ACT/WGT: one beat per word (C
                 bytes). PARAM: one entry per column block = 9 beats (4 of C int32 bias, 4 of
                 C int32 M0, 1 of C int8 shift). LUT: ``ceil(256 / C)`` beats, the 256 table
                 bytes in order (count and address ignored).
                 Background (bit 36, WGT and PARAM only): the sequencer checks the range and
                 goes on to the next instruction while the LOAD runs, so a LOAD of the next
                 weights overlaps CONV/POOL/SOFTMAX/STORE (double buffering). The program
                 must not read what a background LOAD writes before a WAIT.
STORE      0x03  [35:12] ACT word address, [63:40] count: send words to ``m_axis``, ``tlast``
                 on the last one
CONV       0x04  convolution / dense layer described by the configuration registers: im2col
                 addressing in hardware, the systolic array, requantization, optional table
                 activation, results written back to ACT
POOL       0x05  max / average pooling (KH x KH window, STRIDE, PAD) of BATCH images of
                 IN_H x IN_W x CIN at IN_ADDR into OUT_ADDR (OUT_H x OUT_W), streaming
SOFTMAX    0x06  integer softmax over the CIN channels of each of BATCH * IN_H * IN_W pixels
                 at IN_ADDR into OUT_ADDR (scale 1/256, zero point -128)
WAIT       0x07  barrier: waits until no background LOAD is running
DONE       0x0F  finish (after any background LOAD): status DONE, interrupt, back to idle
=========  ====  ==========================================================================

A LOAD (of either kind) waits for a running background LOAD to finish first, since both
take their beats from ``s_axis`` in program order.

Any other opcode stops the program with ``Error.ILLEGAL_OPCODE``; an instruction whose
addresses or sizes fall outside the configured memories or limits stops it with
``Error.ADDRESS`` or ``Error.CONFIG`` before touching any memory. Running past the end of
instruction memory without DONE is ``Error.PC_OVERFLOW``. After an error the accelerator is
idle and can be started again.

Memories (C = array columns = lanes; ACT/WGT words are C bytes):

* ACT: activations, channels-last; a pixel occupies ``ceil(channels / C)`` consecutive words,
  channel ``c`` in lane ``c % C`` of word ``c // C``; images of a batch are contiguous.
  Replicated once per array row so that im2col can read R pixels per cycle; writes go to
  every copy.
* WGT: the GEMM B matrix of each layer, column block by column block: block ``nb`` is K words,
  word ``k`` = ``B[k, nb*C : nb*C + C]``.
* PARAM: per column block of a layer: bias, M0 and shift for its C output channels.
* LUT: the 256-entry activation table.

Configuration registers (``Reg``; SET before CONV/POOL/SOFTMAX; they keep their values
across instructions). POOL uses IN_ADDR, IN_H, IN_W, IN_CW, CIN, KH (window), STRIDE, PAD,
IN_ZP, OUT_ADDR, OUT_H, OUT_W, BATCH, POOL_MODE; SOFTMAX uses IN_ADDR, IN_H, IN_W, IN_CW,
CIN, OUT_ADDR, BATCH, SM_MULT, SM_SHIFT, SM_CAUSAL.

Causal mask (SM_CAUSAL = 1, for attention scores, :mod:`npu.attention`): vector ``v``
(``v = 0 .. BATCH*IN_H*IN_W - 1``, pixel order) is the softmax of its first ``(v mod CIN) + 1``
channels only; its other channels are written as -128 (probability 0). With BATCH = S score
rows of CIN = S channels this is ``golden.attention.attention(causal=True)``: row ``i`` is the
softmax of ``scores[i, :i+1]``. SM_CAUSAL = 0 (the reset value) is the plain softmax.
"""

from enum import IntEnum

__all__ = ["Op", "Reg", "Mem", "Error", "encode_set", "encode_load", "encode_store",
           "encode", "decode", "CSR", "ID_MAGIC", "PARAM_BEATS"]

ID_MAGIC = 0x4E505531          # "NPU1"
PARAM_BEATS = 9                # beats per PARAM entry (4 bias + 4 M0 + 1 shift)


class Op(IntEnum):
    NOP = 0x00
    SET = 0x01
    LOAD = 0x02
    STORE = 0x03
    CONV = 0x04
    POOL = 0x05
    SOFTMAX = 0x06
    WAIT = 0x07
    DONE = 0x0F


class Mem(IntEnum):
    ACT = 0
    WGT = 1
    PARAM = 2
    LUT = 3


class Reg(IntEnum):
    """Configuration registers of CONV (all unsigned unless noted)."""
    IN_ADDR = 0        # ACT word address of the first input pixel of image 0
    IN_H = 1
    IN_W = 2
    IN_CW = 3          # words per input pixel = ceil(CIN / C)
    CIN = 4            # input channels
    KH = 5
    KW = 6
    STRIDE = 7
    PAD = 8
    IN_ZP = 9          # int8: value of padding taps (the input zero point)
    OUT_ADDR = 10      # ACT word address of the first output pixel
    OUT_H = 11
    OUT_W = 12
    OUT_CW = 13        # words per output pixel = column blocks = ceil(COUT / C)
    W_ADDR = 14        # WGT word address of column block 0
    P_ADDR = 15        # PARAM entry of column block 0
    BATCH = 16         # images
    OUT_ZP = 17        # int8
    QMIN = 18          # int8: requantizer clamp (fused ReLU: QMIN = OUT_ZP)
    QMAX = 19          # int8
    USE_LUT = 20       # 1: apply the activation table after requantization
    POOL_MODE = 21     # POOL: 0 max, 1 average (padding counts as IN_ZP, divisor KH*KH)
    SM_MULT = 22       # SOFTMAX: M0 of golden.softmax.softmax_params (31 bits)
    SM_SHIFT = 23      # SOFTMAX: its right shift (-shift, 0..31)
    SM_CAUSAL = 24     # SOFTMAX: 1 = causal mask (vector v uses its first (v mod CIN) + 1
    OUT_NB = 25        # CONV: column blocks this instruction computes, 0 = all OUT_CW of them
                       # (a layer whose weights do not fit WGT runs as several CONVs, each on
                       # a slice of its output channels; OUT_ADDR then points at the slice)
                       # values, the rest of its CIN outputs are -128, probability 0)


class Error(IntEnum):
    NONE = 0
    ILLEGAL_OPCODE = 1
    ADDRESS = 2        # an access outside ACT / WGT / PARAM / IMEM
    CONFIG = 3         # a configuration the hardware cannot run (zero size, K too long, a
                       # background LOAD into ACT or LUT..)
    PC_OVERFLOW = 4    # ran past the end of instruction memory


class CSR(IntEnum):
    """AXI4-Lite register byte addresses (32-bit registers)."""
    ID = 0x000         # ro: ID_MAGIC
    CONFIG = 0x004     # ro: rows [7:0], cols [15:8], ISA version [31:24]
    ACT_DEPTH = 0x008  # ro: words per ACT copy
    WGT_DEPTH = 0x00C  # ro
    PARAM_DEPTH = 0x010  # ro: entries
    IMEM_DEPTH = 0x014   # ro: instructions
    CTRL = 0x020       # wo: bit 0 START at instruction [31:16], bit 1 clear DONE/ERROR
    STATUS = 0x024     # ro: bit 0 BUSY, bit 1 DONE, bit 2 ERROR
    ERROR = 0x028      # ro: Error code of the last run
    ERROR_PC = 0x02C   # ro: instruction index that raised it
    PC = 0x030         # ro: current instruction index
    CYCLES = 0x034     # ro: cycles of the last (or current) run, START to DONE/error
    IRQ_EN = 0x038     # rw: bit 0 enables the irq output (level: DONE or ERROR)
    IMEM = 0x1000      # wo: instruction n at IMEM + 8n (low word) and IMEM + 8n + 4 (high)
    COUNTERS = 0x2000  # ro: cycles taken by instruction n at COUNTERS + 4n (last run)


ISA_VERSION = 2                # 2: background LOAD, WAIT

_FIELD = {  # name: (lsb, width)
    "op": (0, 8), "reg": (8, 8), "value": (32, 32),
    "mem": (8, 4), "addr": (12, 24), "background": (36, 1), "count": (40, 24),
}


def encode(op, **fields):
    word = int(op) & 0xFF
    for name, v in fields.items():
        lsb, width = _FIELD[name]
        v = int(v)
        if name == "value":
            v &= 0xFFFFFFFF           # SET values may be negative (two's complement)
        if not 0 <= v < (1 << width):
            raise ValueError(f"instruction field {name}={v} does not fit {width} bits")
        word |= v << lsb
    return word


def decode(word):
    op = word & 0xFF
    return {name: (word >> lsb) & ((1 << width) - 1) for name, (lsb, width) in _FIELD.items()} | {"op": op}


def encode_set(reg, value):
    return encode(Op.SET, reg=int(reg), value=value)


def encode_load(mem, addr, count, background=False):
    """LOAD; ``background=True`` lets the program go on while it runs (WGT and PARAM only)."""
    if background and mem not in (Mem.WGT, Mem.PARAM):
        raise ValueError(f"a background LOAD must target WGT or PARAM, not {Mem(mem).name}")
    return encode(Op.LOAD, mem=int(mem), addr=addr, count=count, background=int(background))


def encode_store(addr, count):
    return encode(Op.STORE, addr=addr, count=count)
