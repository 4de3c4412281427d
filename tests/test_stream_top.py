"""hw.stream_top: the ports every unit top exposes (the names and widths the cocotb testbenches
and the README use) and the adapter's rules on a small component."""

import pytest
from amaranth.hdl import Module, Shape, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.stream_top import StreamTop
from hw.verilog import design


def ports(component):
    """``{port: (direction, width)}`` of a top, ``"in"``/``"out"`` seen from outside."""
    return {name: ("in" if member.flow == In else "out", Shape.cast(member.shape).width)
            for name, member in component.signature.members.items()}


def axis(prefix, direction, width, last=True):
    back = "out" if direction == "in" else "in"
    p = {f"{prefix}_tdata": (direction, width), f"{prefix}_tvalid": (direction, 1),
         f"{prefix}_tready": (back, 1)}
    if last:
        p[f"{prefix}_tlast"] = (direction, 1)
    return p


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("name,params,want", [
    ("gemm", {"rows": 3, "cols": 5}, {**axis("s_axis_op", "in", 8 * (3 + 5)),
                                      **axis("s_axis_bias", "in", 32 * 5, last=False),
                                      **axis("m_axis_res", "out", 32 * 5)}),
    ("requant", {"lanes": 2}, {**axis("s_axis_acc", "in", 64),
                               **axis("s_axis_par", "in", 8 * (9 * 2 + 4), last=False),
                               **axis("m_axis_res", "out", 16), "error": ("out", 1)}),
    ("activation", {"lanes": 3}, {**axis("s_axis_tab", "in", 16, last=False),
                                  **axis("s_axis_in", "in", 24),
                                  **axis("m_axis_res", "out", 24)}),
    ("pooling", {"lanes": 4}, {"cfg_h": ("in", 16), "cfg_w": ("in", 16), "cfg_c": ("in", 16),
                               "cfg_k": ("in", 8), "cfg_stride": ("in", 8), "cfg_pad": ("in", 8),
                               "cfg_mode": ("in", 1), "cfg_zero_point": ("in", 8),
                               **axis("s_axis_in", "in", 32), **axis("m_axis_out", "out", 32),
                               "error": ("out", 1), "config_ok": ("out", 1)}),
    ("softmax", {"max_len": 8, "banks": 2}, {**axis("s_axis_x", "in", 8),
                                             **axis("m_axis_y", "out", 8),
                                             "cfg_multiplier": ("in", 31),
                                             "cfg_right_shift": ("in", 5),
                                             "cfg_mode": ("in", 1),
                                             **axis("s_axis_exp_table", "in", 8 + 31,
                                                    last=False),
                                             "overflow": ("out", 1), "dropped": ("out", 16)}),
])
def test_unit_top_ports(name, params, want):
    top, _ = design(name, **params)
    got = ports(top)
    assert list(got) == list(want), "port order"
    assert got == want


class Toy(wiring.Component):
    """A stream with ``last`` in the middle of its payload, one without, a struct and a plain
    configuration input, an output flag."""

    def __init__(self):
        super().__init__({
            "words": In(stream.Signature(data.StructLayout(
                {"lo": 3, "last": 1, "hi": signed(5)}))),
            "sums": Out(stream.Signature(12)),
            "mode": In(data.StructLayout({"a": 2, "b": signed(4)})),
            "gain": In(7),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        return Module()


def test_adapter_rules():
    toy = Toy()
    top = StreamTop(toy, stems={"sums": "out"})
    assert ports(top) == {
        **axis("s_axis_words", "in", 3 + 5), **axis("m_axis_out", "out", 12, last=False),
        "cfg_a": ("in", 2), "cfg_b": ("in", 4), "cfg_gain": ("in", 7), "busy": ("out", 1)}
    assert top.signature.members["cfg_b"].shape == signed(4)

    async def bench(ctx):
        # tdata = the payload without last, in bit order: lo in bits 0..2, hi in 3..7
        ctx.set(top.s_axis_words_tdata, 0b10110_101)
        ctx.set(top.s_axis_words_tlast, 1)
        ctx.set(top.cfg_b, -3)
        ctx.set(toy.sums.payload, 0xABC)
        ctx.set(toy.busy, 1)
        await ctx.delay(1e-9)
        assert ctx.get(toy.words.payload.lo) == 0b101
        assert ctx.get(toy.words.payload.hi) == -10
        assert ctx.get(toy.words.payload.last) == 1
        assert ctx.get(toy.mode.b) == -3
        assert ctx.get(top.m_axis_out_tdata) == 0xABC
        assert ctx.get(top.busy) == 1

    sim = Simulator(top)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_adapter_refuses_unknown_stem():
    with pytest.raises(ValueError, match="stems: nope"):
        StreamTop(Toy(), stems={"nope": "x"})
