"""The encodings of hw/isa.py: host encode/decode against the layouts, the PARAM entry's
NumPy packing against the LoadEngine's beat order, and the README's generated tables."""

from pathlib import Path

import numpy as np
import pytest
from amaranth.lib import data

from hw.isa import (CSR, Instruction, Mem, Op, Reg, decode, encode, encode_load, encode_set,
                    encode_store, markdown_tables, pack_param_entries, param_beats,
                    param_entry_layout)

README = Path(__file__).resolve().parent.parent / "README.md"


def test_set_round_trip_and_bit_positions():
    word = encode_set(Reg.QMIN, -5)
    assert word & 0xFF == Op.SET
    assert (word >> 8) & 0xFF == Reg.QMIN
    assert word >> 32 == (-5) & 0xFFFFFFFF
    assert decode(word) == {"op": Op.SET, "reg": Reg.QMIN, "value": (-5) & 0xFFFFFFFF}


def test_transfer_fields_are_where_the_layout_says():
    layout = data.Layout.cast(data.Layout.cast(Instruction)["transfer"].shape)
    word = encode_load(Mem.PARAM, 0x123456, 0xABCDEF, background=True)
    for name, value in (("mem", Mem.PARAM), ("addr", 0x123456), ("background", 1),
                        ("count", 0xABCDEF)):
        f = layout[name]
        assert (word >> f.offset) & ((1 << f.width) - 1) == value, name
    assert decode(encode_store(7, 9, shift=2)) == {"op": Op.STORE, "addr": 7, "shift": 2,
                                                   "count": 9}


@pytest.mark.parametrize("bad", [lambda: encode_load(Mem.ACT, 1 << 24, 1),
                                 lambda: encode_store(0, 1 << 24),
                                 lambda: encode(Op.CONV, reg=1),
                                 lambda: encode(Op.STORE, mem=1, addr=0, count=1),
                                 lambda: encode_load(Mem.ACT, 0, 1, background=True)])
def test_bad_fields_are_refused(bad):
    with pytest.raises(ValueError):
        bad()


def test_param_entry_packing_matches_the_beat_order():
    """The LoadEngine assembles an entry little-endian, beat 0 lowest: the packed beats,
    concatenated, are the entry's bits."""
    C = 3
    rng = np.random.default_rng(1)
    bias = rng.integers(-2**31, 2**31, 2 * C)
    m0 = rng.integers(0, 2**31, 2 * C)
    shift = rng.integers(-31, 8, 2 * C)
    beats = pack_param_entries(bias, m0, shift, C)
    assert beats.shape == (2 * param_beats(C), C)
    layout = param_entry_layout(C)
    for e in range(2):
        raw = beats[e * param_beats(C):(e + 1) * param_beats(C)].reshape(-1)
        bits = int.from_bytes(raw.tobytes(), "little") & ((1 << layout.size) - 1)
        view = layout.from_bits(bits)
        for j in range(C):
            assert view.bias[j] == bias[e * C + j]
            assert view.m0[j] == m0[e * C + j]
            assert view.shift[j] == shift[e * C + j]


def test_csr_addresses_are_distinct_words():
    addrs = [int(c) for c in CSR]
    assert len(set(addrs)) == len(addrs) and all(a % 4 == 0 for a in addrs)


def test_readme_tables_are_generated_from_isa():
    text = README.read_text()
    for title, table in markdown_tables().items():
        assert table in text, (f"README's {title} table differs from hw.isa's; paste the output "
                               f"of `python -m hw.isa`")
