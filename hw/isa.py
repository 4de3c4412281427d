"""Instruction set, register map and memory map of the accelerator (``npu_top``), as data.

Every encoding is defined once here, as an :mod:`amaranth.lib.data` layout or a table:

* the 64-bit instruction and its views (:class:`Instruction`: ``op``, ``set``, ``transfer``);
* the configuration registers that SET writes (:data:`REGISTERS`, :class:`Reg`);
* the PARAM entry (:func:`param_entry_layout`) and its beats on ``s_axis``;
* the AXI4-Lite registers (:data:`CSR_MAP`, :class:`CSR`) and the bits of CTRL, STATUS, CONFIG
  and IRQ_EN (:class:`Ctrl`, :class:`Status`, :class:`HwConfig`, :class:`IrqEnable`).

The hardware (:mod:`hw.npu` and the engines) decodes with these layouts; the compiler, the
cycle model and the testbenches encode and decode with :func:`encode` / :func:`decode`, the
``.const`` / ``from_bits`` of the same layouts, or NumPy dtypes derived from them
(:func:`numpy_dtype`). Adding a field is one line in a layout plus its use. The README's
instruction, register and error tables are generated from these tables
(``python -m hw.isa`` prints them) and a test checks that the README matches.
"""

from enum import IntEnum

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

__all__ = ["Op", "Reg", "Mem", "Error", "CSR", "ID_MAGIC", "ISA_VERSION",
           "Instruction", "SetFields", "TransferFields", "OPCODES", "REGISTERS", "ERRORS",
           "CSR_MAP", "Ctrl", "Status", "HwConfig", "IrqEnable",
           "encode", "decode", "encode_set", "encode_load", "encode_store",
           "param_entry_layout", "param_beats", "pack_param_entries", "numpy_dtype",
           "markdown_tables", "SM_EXP_ENTRIES", "SM_EXP_ENTRY_BYTES", "sm_exp_beats",
           "pack_sm_exp_table"]

ID_MAGIC = 0x4E505531          # "NPU1"
ISA_VERSION = 3                # 2: background LOAD, WAIT; 3: banked ACT, pitches, depthwise,
                               # ELTWISE


# ---- Instructions --------------------------------------------------------------------------

class SetFields(data.Struct):
    """SET: write ``value`` into configuration register ``reg``."""
    op: unsigned(8)
    reg: unsigned(8)
    _reserved: unsigned(16)
    value: unsigned(32)


class TransferFields(data.Struct):
    """LOAD and STORE: ``count`` words (entries for PARAM) at ``addr`` of memory ``mem``;
    ACT words belong to a tensor of ``2**shift`` words per pixel (hw.act_memory)."""
    op: unsigned(8)
    mem: unsigned(4)
    addr: unsigned(24)
    background: unsigned(1)
    shift: unsigned(3)
    count: unsigned(24)


class Instruction(data.Union):
    """A 64-bit instruction: the opcode in bits [7:0], and the view of its opcode."""
    op: unsigned(8)
    set: SetFields
    transfer: TransferFields


INSTRUCTION_BITS = data.Layout.cast(Instruction).size

#: (name, code, view, fields it uses, meaning). The view names the Instruction member that
#: holds the fields.
OPCODES = (
    ("NOP", 0x00, None, (), "nothing"),
    ("SET", 0x01, "set", ("reg", "value"),
     "sets a configuration register (below); registers keep their value across instructions"),
    ("LOAD", 0x02, "transfer", ("mem", "addr", "background", "shift", "count"),
     "takes `count` words from `s_axis` into memory `mem` at `addr` (PARAM: `count` entries of "
     "`param_beats(C)` beats each; LUT: ceil(256/C) beats of table bytes, `addr` and `count` "
     "ignored; SM_EXP: `sm_exp_beats(C)` beats of the softmax exp table's 256 little-endian "
     "int32 entries, `addr` and `count` ignored). With `background` (WGT, PARAM only) the "
     "sequencer goes on after the range check while the LOAD runs; any LOAD first waits for a background LOAD still running"),
    ("STORE", 0x03, "transfer", ("addr", "shift", "count"),
     "sends ACT words `addr` .. `addr + count - 1` on `m_axis`, `tlast` on the last"),
    ("CONV", 0x04, None, (), "conv / dense layer: im2col addressing, the systolic array, "
                             "requantization (+ activation table), results written to ACT"),
    ("POOL", 0x05, None, (), "max / average pooling, streaming through the pooling unit"),
    ("SOFTMAX", 0x06, None, (), "integer softmax over the channels of every pixel"),
    ("ELTWISE", 0x08, None, (), "elementwise: two tensors (IN, IN2) to OUT, every word; "
                                "ELT_MODE 0: TFLite ADD (golden.eltwise), through the CONV "
                                "engine's requantizer"),
    ("WAIT", 0x07, None, (), "waits until no background LOAD runs"),
    ("DONE", 0x0F, None, (), "end of program (after any background LOAD): DONE status, "
                             "interrupt, idle"),
)

Op = IntEnum("Op", [(name, code) for name, code, *_ in OPCODES], module=__name__)
Op.__doc__ = "Opcodes (bits [7:0] of an instruction); see :data:`OPCODES`."
_VIEW = {code: view for _, code, view, _, _ in OPCODES}
_FIELDS = {code: fields for _, code, _, fields, _ in OPCODES}


class Mem(IntEnum):
    """Memories a LOAD writes (``transfer.mem``)."""
    ACT = 0
    WGT = 1
    PARAM = 2
    LUT = 3
    SM_EXP = 4


#: How the README's instruction table names each field.
_FIELD_DOC = {"reg": "register", "value": "value",
              "mem": "memory (0 ACT, 1 WGT, 2 PARAM, 3 LUT, 4 SM_EXP)",
              "addr": "address", "background": "background", "count": "count",
              "shift": "pixel shift (ACT: 2**shift words per pixel)"}


def encode(op, **fields):
    """The 64-bit word of instruction ``op`` with the fields of its view; a field that does
    not fit (or does not exist for ``op``) raises ``ValueError`` naming it. SET values may be
    negative (two's complement)."""
    op = Op(op)
    view = _VIEW[op]
    layout = data.Layout.cast(Instruction)
    if view is None:
        if fields:
            raise ValueError(f"{op.name} has no fields, got {', '.join(fields)}")
        return int(op)
    members = data.Layout.cast(layout[view].shape)
    init = {"op": int(op)}
    for name, v in fields.items():
        if name not in _FIELDS[op]:
            raise ValueError(f"{op.name} has no field {name!r}")
        width = members[name].width
        v = int(v)
        if name == "value":
            v &= (1 << width) - 1
        if not 0 <= v < (1 << width):
            raise ValueError(f"instruction field {name}={v} does not fit {width} bits")
        init[name] = v
    return layout.const({view: init}).as_bits()


def decode(word):
    """``{"op": .., <fields of the op's view>..}`` of a 64-bit word (reserved bits left out;
    an unknown opcode gives only ``op``)."""
    word = int(word)
    layout = data.Layout.cast(Instruction)
    view = layout.from_bits(word)
    op = int(view.op)
    name = _VIEW.get(op)
    if name is None:
        return {"op": op}
    fields = getattr(view, name)
    return {"op": op} | {n: int(getattr(fields, n)) for n in _FIELDS[op]}


def encode_set(reg, value):
    return encode(Op.SET, reg=int(reg), value=value)


def encode_load(mem, addr, count, background=False, shift=0):
    """LOAD; ``background=True`` lets the program go on while it runs (WGT and PARAM only);
    ``shift``: the ACT tensor's pixel shift."""
    if background and mem not in (Mem.WGT, Mem.PARAM):
        raise ValueError(f"a background LOAD must target WGT or PARAM, not {Mem(mem).name}")
    return encode(Op.LOAD, mem=int(mem), addr=addr, count=count, background=int(background),
                  shift=shift)


def encode_store(addr, count, shift=0):
    """STORE of ``count`` ACT words of a tensor with pixel shift ``shift``."""
    return encode(Op.STORE, addr=addr, count=count, shift=shift)


# ---- Configuration registers ---------------------------------------------------------------

#: (name, int8: the low byte is a signed value, meaning). One line per register; its index
#: is its position. A tensor in ACT is described by its address, its sizes and three pitches
#: in words: per pixel (``*_CW``, a power of two: the ACT banks interleave whole pixels), per
#: row and per image (see hw.act_memory and the compiler's memory plan).
REGISTERS = (
    ("IN_ADDR", False, "ACT word address of the input tensor (pixel (0, 0) of image 0)"),
    ("IN_H", False, "input height"),
    ("IN_W", False, "input width"),
    ("IN_CW", False, "input pixel pitch in words, a power of two >= ceil(CIN / C)"),
    ("IN_ROW", False, "input row pitch in words (a multiple of IN_CW)"),
    ("IN_IMG", False, "input image pitch in words (a multiple of IN_CW)"),
    ("CIN", False, "input channels"),
    ("KH", False, "kernel height (POOL: the window)"),
    ("KW", False, "kernel width"),
    ("STRIDE_Y", False, "vertical stride (POOL: the stride)"),
    ("STRIDE_X", False, "horizontal stride"),
    ("PAD_TOP", False, "padding rows above the input (POOL: padding on every side); taps "
                       "below or right of the input are padding too"),
    ("PAD_LEFT", False, "padding columns left of the input"),
    ("IN_ZP", True, "input zero point: the value of padding taps"),
    ("OUT_ADDR", False, "ACT word address of the output tensor (CONV: plus the first column "
                        "block it computes)"),
    ("OUT_H", False, "output height"),
    ("OUT_W", False, "output width"),
    ("OUT_CW", False, "output pixel pitch in words, a power of two"),
    ("OUT_ROW", False, "output row pitch in words (a multiple of OUT_CW)"),
    ("OUT_IMG", False, "output image pitch in words (a multiple of OUT_CW)"),
    ("OUT_NB", False, "CONV: column blocks (groups of C output channels) it computes, <= "
                      "OUT_CW (a layer whose weights do not fit WGT runs as several CONVs)"),
    ("W_ADDR", False, "WGT word address of column block 0"),
    ("P_ADDR", False, "PARAM entry of column block 0"),
    ("BATCH", False, "images"),
    ("OUT_ZP", True, "output zero point"),
    ("QMIN", True, "requantizer clamp, low (a fused ReLU is QMIN = OUT_ZP)"),
    ("QMAX", True, "requantizer clamp, high"),
    ("ROUNDING", False, "CONV: requantizer rounding, 0 double (SRDHM then RDBPOT: TFLite "
                        "convolution), 1 single, half away from zero (TFLite fully connected, "
                        "average pool as a convolution)"),
    ("USE_LUT", False, "1: apply the activation table after requantization"),
    ("CONV_MODE", False, "CONV: 0 convolution / dense, 1 depthwise (channel c of the output "
                         "from channel c of the input; K = KH*KW), 2 K-split (R == C, C a "
                         "power of two: a tile is one output pixel's column block, output "
                         "channels on the rows, each beat one input word across the columns; "
                         "W_ADDR a multiple of R)"),
    ("POOL_MODE", False, "POOL: 0 max, 1 average (padding counts as IN_ZP, divisor KH*KH)"),
    ("SM_MULT", False, "SOFTMAX: M0 of golden.softmax.softmax_params (31 bits)"),
    ("SM_SHIFT", False, "SOFTMAX: its right shift (-shift, 0..31)"),
    ("SM_CAUSAL", False, "SOFTMAX: 1 = causal mask: vector v uses its first (v mod CIN) + 1 "
                         "values, its other outputs are -128 (probability 0)"),
    ("IN2_ADDR", False, "ELTWISE: ACT word address of the second input (pixel pitch IN_CW)"),
    ("IN2_ROW", False, "ELTWISE: its row pitch in words"),
    ("IN2_IMG", False, "ELTWISE: its image pitch in words"),
    ("IN2_ZP", True, "ELTWISE: its zero point"),
    ("ELT_MODE", False, "ELTWISE: 0 add"),
    ("ELT_M1", False, "ELTWISE add: the first input's multiplier (golden.eltwise.AddParams.m1)"),
    ("ELT_S1", False, "ELTWISE add: its right shift (-shift1, 0..31)"),
    ("ELT_M2", False, "ELTWISE add: the second input's multiplier"),
    ("ELT_S2", False, "ELTWISE add: its right shift (-shift2, 0..31)"),
    ("ELT_MO", False, "ELTWISE add: the output multiplier"),
    ("ELT_SO", True, "ELTWISE add: the output shift (<= 0)"),
    ("SM_MODE", False, "SOFTMAX: 0 golden.softmax (SM_MULT, SM_SHIFT), 1 TFLite "
                       "(golden.tflite.softmax_tflite with the exp table last loaded into "
                       "SM_EXP; CIN <= 511)"),
)

Reg = IntEnum("Reg", [(name, i) for i, (name, _, _) in enumerate(REGISTERS)], module=__name__)
Reg.__doc__ = "Configuration registers (SET ``reg``); see :data:`REGISTERS`."


# ---- Errors ----------------------------------------------------------------------------------

class Error(IntEnum):
    """Error codes (CSR.ERROR); see :data:`ERRORS`."""
    NONE = 0
    ILLEGAL_OPCODE = 1
    ADDRESS = 2
    CONFIG = 3
    PC_OVERFLOW = 4


ERRORS = {
    Error.ILLEGAL_OPCODE: "an opcode not in the table",
    Error.ADDRESS: "a LOAD, STORE, CONV, POOL, SOFTMAX or ELTWISE region outside its memory, or a "
                   "layer's output overlapping its input",
    Error.CONFIG: "a configuration the hardware cannot run: a zero size, K > 131071, a size "
                  "over a unit's limit, int8 fields out of range, an unknown SET register, a "
                  "background LOAD into ACT or LUT, an unknown SM_MODE, SOFTMAX in TFLite mode "
                  "before any SM_EXP LOAD",
    Error.PC_OVERFLOW: "no DONE before the end of IMEM, or a start address past it",
}


# ---- PARAM entries ---------------------------------------------------------------------------

def param_entry_layout(cols):
    """One PARAM entry: the requantization parameters of one column block of C channels."""
    return data.StructLayout({
        "bias": data.ArrayLayout(signed(32), cols),
        "m0": data.ArrayLayout(signed(32), cols),
        "shift": data.ArrayLayout(signed(8), cols),
    })


def param_beats(cols):
    """``s_axis`` beats (of ``8 * cols`` bits) per PARAM entry, little-endian, field order."""
    return -(-param_entry_layout(cols).size // (8 * cols))


def numpy_dtype(layout):
    """A NumPy structured dtype with the byte layout of ``layout`` (fields of byte-aligned
    signed/unsigned integers of 8/16/32/64 bits, or arrays of them), little-endian."""
    layout = data.Layout.cast(layout)
    names, formats, offsets = [], [], []
    for name, field in layout:
        shape, count = field.shape, None
        if isinstance(shape, data.ArrayLayout):
            shape, count = shape.elem_shape, shape.length
        shape = shape if not isinstance(shape, data.Layout) else None
        if shape is None or field.offset % 8 or shape.width not in (8, 16, 32, 64):
            raise ValueError(f"field {name!r} has no NumPy equivalent")
        fmt = f"<{'i' if shape.signed else 'u'}{shape.width // 8}"
        names.append(name)
        formats.append((fmt, (count,)) if count else fmt)
        offsets.append(field.offset // 8)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": -(-layout.size // 8)})


def pack_param_entries(bias, m0, shift, cols):
    """Per-channel ``bias``, ``m0``, ``shift`` (length ``nb * cols``) -> the uint8 ``s_axis``
    beats (``nb * param_beats(cols)`` x ``cols``) of ``nb`` PARAM entries."""
    dt = numpy_dtype(param_entry_layout(cols))
    nb = len(bias) // cols
    entries = np.zeros(nb, dt)
    entries["bias"] = np.asarray(bias, np.int32).reshape(nb, cols)
    entries["m0"] = np.asarray(m0, np.int32).reshape(nb, cols)
    entries["shift"] = np.asarray(shift).astype(np.int8).reshape(nb, cols)
    beats = param_beats(cols) * cols
    raw = np.zeros((nb, beats), np.uint8)
    raw[:, :dt.itemsize] = entries.view(np.uint8).reshape(nb, dt.itemsize)
    return raw.reshape(-1, cols)


# ---- The SOFTMAX unit's exp table (TFLite mode) ------------------------------------------------

#: Entries of the exp table (one per difference max(x) - x = 0 .. 255) and bytes per entry:
#: a little-endian int32, 0 .. 2**31 - 1 (golden.tflite.softmax_exp_table).
SM_EXP_ENTRIES = 256
SM_EXP_ENTRY_BYTES = 4


def sm_exp_beats(cols):
    """``s_axis`` beats of a LOAD into SM_EXP."""
    return -(-SM_EXP_ENTRIES * SM_EXP_ENTRY_BYTES // cols)


def pack_sm_exp_table(table, cols):
    """The uint8 beats (``sm_exp_beats(cols)`` x ``cols``) of a LOAD into SM_EXP; ``table``
    must be 256 integers in 0 .. 2**31 - 1 (``ValueError`` otherwise)."""
    table = np.asarray(table)
    if table.shape != (SM_EXP_ENTRIES,) or not np.issubdtype(table.dtype, np.integer):
        raise ValueError(f"the exp table must be {SM_EXP_ENTRIES} integers, got {table.dtype} "
                         f"{table.shape}")
    if table.min() < 0 or table.max() > (1 << 31) - 1:
        raise ValueError("exp table entries must be in 0 .. 2**31 - 1")
    raw = np.zeros(sm_exp_beats(cols) * cols, np.uint8)
    raw[:SM_EXP_ENTRIES * SM_EXP_ENTRY_BYTES] = table.astype("<i4").view(np.uint8)
    return raw.reshape(-1, cols)


# ---- AXI4-Lite registers --------------------------------------------------------------------
# Each bits layout is 32 bits wide, the register's width.

class Ctrl(data.Struct):
    start: unsigned(1)         # start the program at start_pc
    clear: unsigned(1)         # clear DONE / ERROR
    _reserved: unsigned(14)
    start_pc: unsigned(16)


class Status(data.Struct):
    busy: unsigned(1)
    done: unsigned(1)
    error: unsigned(1)
    act_conflict: unsigned(1)  # ACT reads of one cycle hit one bank twice (never, for
                               # programs whose CONVs pass their layout check): a self-check
    _reserved: unsigned(28)


class HwConfig(data.Struct):
    rows: unsigned(8)
    cols: unsigned(8)
    _reserved: unsigned(8)
    isa_version: unsigned(8)


class IrqEnable(data.Struct):
    enable: unsigned(1)        # the irq output = DONE or ERROR
    _reserved: unsigned(31)


#: (name, byte address, access, bits layout or None, meaning). 32-bit registers; IMEM and
#: COUNTERS are arrays (instruction n at IMEM + 8n, its cycles at COUNTERS + 4n).
CSR_MAP = (
    ("ID", 0x000, "ro", None, f'{ID_MAGIC:#x} ("NPU1")'),
    ("CONFIG", 0x004, "ro", HwConfig, "rows, cols and ISA version"),
    ("ACT_DEPTH", 0x008, "ro", None, "ACT words"),
    ("WGT_DEPTH", 0x00C, "ro", None, "WGT words"),
    ("PARAM_DEPTH", 0x010, "ro", None, "PARAM entries"),
    ("IMEM_DEPTH", 0x014, "ro", None, "instructions"),
    ("CTRL", 0x020, "wo", Ctrl, "START (at instruction start_pc), clear DONE/ERROR"),
    ("STATUS", 0x024, "ro", Status, "BUSY, DONE, ERROR; ACT_CONFLICT (sticky until START): "
                                    "a self-check of the ACT bank layout"),
    ("ERROR", 0x028, "ro", None, "error code of the last run"),
    ("ERROR_PC", 0x02C, "ro", None, "instruction that raised it"),
    ("PC", 0x030, "ro", None, "current instruction"),
    ("CYCLES", 0x034, "ro", None, "cycles of the last run, START to DONE"),
    ("IRQ_EN", 0x038, "rw", IrqEnable, "`irq` = DONE or ERROR when set"),
    ("IMEM", 0x1000, "wo", None, "instruction n at +8n: low word at +0, high word at +4"),
    ("COUNTERS", 0x2000, "ro", None, "cycles taken by instruction n in the last run, at +4n"),
)

CSR = IntEnum("CSR", [(name, addr) for name, addr, _, _, _ in CSR_MAP], module=__name__)
CSR.__doc__ = "AXI4-Lite register byte addresses; see :data:`CSR_MAP`."


# ---- Documentation -------------------------------------------------------------------------

def _bits(layout, names=None):
    """``[hi:lo] name`` of the fields ``names`` (default: all but reserved ones) of a layout
    (``[n] name`` for one bit)."""
    out = []
    for name, field in data.Layout.cast(layout):
        if name.startswith("_") or (names is not None and name not in names):
            continue
        lo, hi = field.offset, field.offset + field.width - 1
        out.append((f"[{hi}:{lo}]" if hi != lo else f"[{lo}]", name))
    return out


def markdown_tables():
    """The README's tables, generated from the definitions above: ``{title: markdown}``."""
    layout = data.Layout.cast(Instruction)
    rows = ["| instruction | code | fields | does |", "| --- | --- | --- | --- |"]
    for name, code, view, names, doc in OPCODES:
        fields = ""
        if view is not None:
            fields = ", ".join(f"{bits} {_FIELD_DOC[n]}"
                               for bits, n in _bits(layout[view].shape, names))
        rows.append(f"| {name} | {code:#04X} | {fields} | {doc} |".replace("0X", "0x"))
    instructions = "\n".join(rows)

    rows = ["| register | index | meaning |", "| --- | ---: | --- |"]
    for i, (name, int8, doc) in enumerate(REGISTERS):
        rows.append(f"| {name} | {i} | {doc}{' (int8)' if int8 else ''} |")
    registers = "\n".join(rows)

    rows = ["| code | error | raised by |", "| ---: | --- | --- |"]
    for err, doc in ERRORS.items():
        rows.append(f"| {int(err)} | {err.name} | {doc} |")
    errors = "\n".join(rows)

    rows = ["| address | name | access | bits | meaning |", "| --- | --- | --- | --- | --- |"]
    for name, addr, access, bits, doc in CSR_MAP:
        fields = ", ".join(f"{b} {n}" for b, n in _bits(bits)) if bits else ""
        rows.append(f"| {addr:#05x} | {name} | {access} | {fields} | {doc} |")
    csrs = "\n".join(rows)
    return {"instructions": instructions, "registers": registers, "errors": errors,
            "csr": csrs}


if __name__ == "__main__":
    for title, table in markdown_tables().items():
        print(f"<!-- {title}: generated by `python -m hw.isa` -->\n{table}\n")
