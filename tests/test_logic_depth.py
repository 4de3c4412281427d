"""flow.logic_depth on small hand-made netlists: the ranking and the delay model."""

import pytest

from flow.logic_depth import DELAYS, deepest_paths


def _ff(d, q):
    return {"type": "TRELLIS_FF", "port_directions": {"CLK": "input", "DI": "input",
                                                      "Q": "output"},
            "connections": {"CLK": [1], "DI": [d], "Q": [q]}}


def _lut(ins, z):
    return {"type": "LUT4", "port_directions": {}, "connections": {
        **{p: [b] for p, b in zip("ABCD", ins)}, "Z": [z]}}


def _module(cells):
    nets = {c: {"bits": [b]} for c, b in (("q0", 10), ("n1", 11), ("n2", 12), ("q3", 13),
                                          ("n4", 14), ("c5", 15), ("s6", 16))}
    return {"cells": cells, "netnames": nets}


def test_ranks_the_deeper_path_first():
    # q0 -> LUT -> LUT -> ff_a, and q0 -> LUT -> ff_b
    mod = _module({"src": _ff(2, 10), "l1": _lut([10], 11), "l2": _lut([11], 12),
                   "ff_a": _ff(12, 3), "l3": _lut([10], 14), "ff_b": _ff(14, 4)})
    paths = deepest_paths(mod, 5)
    route, lut, cq = DELAYS["route"], DELAYS["LUT4"], DELAYS["clk_to_q"]
    assert [p[1] for p in paths[:2]] == ["ff_a.DI", "ff_b.DI"], paths
    assert paths[0][0] == pytest.approx(round(cq + 2 * (route + lut) + route, 2))
    assert paths[0][2] == ["q0", "n1", "n2"]
    assert paths[1][0] == pytest.approx(round(cq + (route + lut) + route, 2))


def test_carry_chain_and_wide_mux_wires_are_local():
    # q0 -> CCU2C (COUT) -> CCU2C (CIN -> S0) -> PFUMX (ALUT) -> ff
    ccu = {"type": "CCU2C", "port_directions": {}, "connections": {"A0": [10], "COUT": [15]}}
    ccu2 = {"type": "CCU2C", "port_directions": {}, "connections": {"CIN": [15], "S0": [16]}}
    mux = {"type": "PFUMX", "port_directions": {}, "connections": {"ALUT": [16], "Z": [12]}}
    mod = _module({"src": _ff(2, 10), "c1": ccu, "c2": ccu2, "m": mux, "dst": _ff(12, 3)})
    (t, end, path), = [p for p in deepest_paths(mod, 5) if p[1] == "dst.DI"]
    want = (DELAYS["clk_to_q"] + DELAYS["route"] + DELAYS["ccu2c_cout"] + DELAYS["ccu2c_sum"]
            + DELAYS["mux"] + DELAYS["route"])
    assert t == pytest.approx(round(want, 2)) and path == ["q0", "c5", "s6", "n2"], (t, path)
