"""Backdoor to the memories of ``npu_top`` in a simulation: read (and, to inject faults,
write) every word of ACT, WGT, PARAM, the activation table (LUT) and the softmax exp table
(SM_EXP) through the simulator's VPI, without a bus cycle.

The paths are the generated Verilog's hierarchy (hw.npu: ``act.bank<b>``, ``wgt<b>``, ``prm``,
``conv.lut.table<lane>``, ``softmax.unit.ttab``; each a block RAM whose array is ``mem``), so
they belong to the RTL, not to the ISA: a renamed submodule fails here with the path named.

Locations: ACT is indexed by bank row (``bank * bank_depth + row``, see
hw.act_memory.act_location), LUT by ``lane * 256 + index`` (one copy per lane), the others by
word / entry. A snapshot is a dict memory -> list of bit strings.
"""

from hw.act_memory import banks
from hw.conv_engine import wgt_banks

__all__ = ["NpuMemories"]


def _array(dut, path):
    h = dut
    for part in path.split("."):
        try:
            h = getattr(h, part)
        except AttributeError as e:
            raise AttributeError(f"npu_top has no memory at {path!r} (no {part!r}); "
                                 f"sim/npu_memories.py names the generated hierarchy") from e
    return [h.mem[i] for i in range(len(h.mem))]


def _wgt_words(dut, cfg):
    """WGT by word address: word w is row w // n of bank w mod n (``wgt<b>``, n =
    hw.conv_engine.wgt_banks; one memory ``wgt`` when n is 1)."""
    n = wgt_banks(cfg.rows, cfg.cols)
    if n == 1:
        return _array(dut, "wgt")
    bank = [_array(dut, f"wgt{b}") for b in range(n)]
    return [bank[w % n][w // n] for w in range(cfg.wgt_depth)]


class NpuMemories:
    def __init__(self, dut, cfg):
        nb = banks(cfg.rows)
        self.handles = {
            "ACT": [w for b in range(nb) for w in _array(dut, f"act.bank{b}")],
            "WGT": _wgt_words(dut, cfg),
            "PARAM": _array(dut, "prm"),
            "LUT": [w for lane in range(cfg.cols) for w in _array(dut, f"conv.lut.table{lane}")],
            "SM_EXP": _array(dut, "softmax.unit.ttab"),
        }
        for name, depth in (("ACT", cfg.act_depth), ("WGT", cfg.wgt_depth),
                            ("PARAM", cfg.param_depth)):
            assert len(self.handles[name]) == depth, \
                f"{name}: {len(self.handles[name])} words in the RTL, configuration {depth}"

    def snapshot(self):
        # The GPI's binary string is several times faster than building a LogicArray.
        return {name: [h._handle.get_signal_val_binstr() for h in hs]
                for name, hs in self.handles.items()}

    def width(self, name):
        return len(self.handles[name][0].value)

    def write(self, name, index, value):
        self.handles[name][index].value = int(value)

    def fill(self, rng):
        """Seeded random contents in every memory, so that a stray write of any value is
        likely to change a word."""
        for name, hs in self.handles.items():
            bits = self.width(name)
            for h in hs:
                h.value = int.from_bytes(rng.bytes((bits + 7) // 8), "little") & ((1 << bits) - 1)
