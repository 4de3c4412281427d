"""The deepest register-to-register paths of a design after Yosys ``synth_ecp5``, in minutes.

``npu depth npu`` synthesizes the design as :mod:`flow.fpga` does (same harness,
same Yosys script, no place-and-route) and ranks the paths of the design module by a rough
delay model. A full ``npu_top`` place-and-route takes 40 minutes or more here; this takes
about two, so it is the quick way to find which logic to pipeline next. ``--netlist`` reads a
``netlist.json`` kept by ``npu synth ... --keep DIR`` instead of synthesizing.

The model is an estimate of logic depth, not a timing figure (``make synth`` gives Fmax):
every path starts at a register, block RAM or multiplier output (clock-to-out 0.5 ns) and ends
at one of their inputs; a LUT4 costs 0.24 ns, a PFUMX or L6MUX21 0.25 ns, a CCU2C 0.45 ns into
its sum and 0.07 ns along its carry, a distributed-RAM read 0.9 ns, and every net 0.9 ns of
routing, except the dedicated carry and wide-mux wires inside a slice. After placement
nextpnr's routing is usually slower than 0.9 ns per net in a large design (npu_top: 1.5 to 3 ns
per net), so the ranking is what counts.
"""

import argparse
import collections
import json
import re
import tempfile
from pathlib import Path

__all__ = ["deepest_paths", "DELAYS"]

#: Rough ECP5 delays (ns) of the model above.
DELAYS = {"clk_to_q": 0.5, "route": 0.9, "LUT4": 0.24, "mux": 0.25, "ccu2c_sum": 0.45,
          "ccu2c_cout": 0.5, "carry": 0.07, "dpram_read": 0.9}

# Ports on wires inside a slice (no general routing).
_LOCAL = ("CIN", "ALUT", "BLUT", "D0", "D1")
# Sequential cells: their outputs start paths, their inputs (but the clock) end them.
_SEQUENTIAL = ("TRELLIS_FF", "DP16KD", "PDPW16KD", "MULT18X18D", "ALU54B")
_CLOCKS = ("CLK", "CLKA", "CLKB", "CLK0", "CLK1", "CLK2", "CLK3", "WCK")


def _arcs(cell_type):
    """(input ports, output ports, logic delay) of a combinational cell type."""
    d = DELAYS
    if cell_type == "LUT4":
        return [(("A", "B", "C", "D"), ("Z",), d["LUT4"])]
    if cell_type in ("PFUMX", "L6MUX21"):
        return [(("ALUT", "BLUT", "C0", "D0", "D1", "SD"), ("Z",), d["mux"])]
    if cell_type == "CCU2C":
        first = ("A0", "B0", "C0", "D0")
        return [(first, ("S0",), d["ccu2c_sum"]),
                (first + ("A1", "B1", "C1", "D1"), ("S1", "COUT"), d["ccu2c_cout"]),
                (("CIN",), ("S0", "S1"), d["ccu2c_sum"]), (("CIN",), ("COUT",), d["carry"])]
    if cell_type == "TRELLIS_DPR16X4":
        return [(("RAD",), ("DO",), d["dpram_read"])]
    return []


def deepest_paths(module: dict, count: int = 20) -> list[tuple[float, str, list[str]]]:
    """The ``count`` deepest paths of a Yosys JSON ``module`` (one per end register group):
    list of ``(delay_ns, end "cell.port", [net names from start to end])``."""
    cells = module["cells"]
    names = {}
    for name, net in module["netnames"].items():
        for bit in net["bits"]:
            if isinstance(bit, int) and (bit not in names or len(name) < len(names[bit])):
                names[bit] = name
    fanin = collections.defaultdict(list)          # net bit -> [(input bit, delay)]
    for cell in cells.values():
        conn = cell["connections"]
        for ins, outs, logic in _arcs(cell["type"]):
            for port in ins:
                route = 0.0 if port in _LOCAL and cell["type"] != "LUT4" else DELAYS["route"]
                src = [b for p, bits in conn.items()
                       if p == port or re.fullmatch(re.escape(port) + r"\[\d+\]", p)
                       for b in bits if isinstance(b, int)]
                for out in outs:
                    for ob in conn.get(out, []):
                        if isinstance(ob, int):
                            fanin[ob].extend((b, logic + route) for b in src)
    arrival = {}                                   # bit -> (ns, predecessor bit)
    opened = set()
    for root in list(fanin):
        stack = [root]
        while stack:                               # iterative depth-first, no recursion limit
            bit = stack[-1]
            if bit in arrival:
                stack.pop()
                continue
            todo = [b for b, _ in fanin.get(bit, ()) if b not in arrival]
            if todo:
                if bit in opened:                  # a combinational loop: cut it here
                    arrival[bit] = (DELAYS["clk_to_q"], None)
                    stack.pop()
                    continue
                opened.add(bit)
                stack.extend(todo)
                continue
            best = (DELAYS["clk_to_q"], None)
            for b, delay in fanin.get(bit, ()):
                t = arrival.get(b, (DELAYS["clk_to_q"], None))[0] + delay
                if t > best[0]:
                    best = (t, b)
            arrival[bit] = best
            stack.pop()
    ends = []
    for cname, cell in cells.items():
        if cell["type"] not in _SEQUENTIAL:
            continue
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) != "input" or port in _CLOCKS:
                continue
            for bit in bits:
                if isinstance(bit, int):
                    t = arrival.get(bit, (DELAYS["clk_to_q"], None))[0] + DELAYS["route"]
                    ends.append((t, bit, cname, port))
    ends.sort(key=lambda e: -e[0])
    out, seen = [], set()
    for t, bit, cname, port in ends:
        group = re.sub(r"(_TRELLIS_FF_Q|\[).*", "", cname)
        if group in seen:
            continue
        seen.add(group)
        path, b = [], bit
        while b is not None:
            path.append(names.get(b, str(b)))
            b = arrival.get(b, (0, None))[1]
        out.append((round(t, 2), f"{cname}.{port}", path[::-1]))
        if len(out) == count:
            break
    return out


def _short(name):
    return re.sub(r"_(TRELLIS_FF_Q|LUT4|CCU2C|PFUMX|L6MUX21).*", "", name)


# ---- `npu depth` -----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--netlist", type=Path, help="a netlist.json kept by npu synth --keep")
    parser.add_argument("--top", help="module to analyse (default: the design's top)")
    parser.add_argument("-n", type=int, default=20, help="paths to list")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every net of a path")


def main(args: argparse.Namespace) -> int:
    """Print the deepest paths of ``args.design`` (or of ``args.netlist``)."""
    if args.netlist:
        netlist = json.loads(args.netlist.read_text())
    else:
        netlist = _synthesized_netlist(args.design, dict(args.params))
    mods = {k: v for k, v in netlist["modules"].items()
            if k != "fpga_harness" and not v.get("attributes", {}).get("blackbox")}
    top = args.top or max(mods, key=lambda k: len(mods[k]["cells"]))
    print(f"deepest paths of {top} (rough delay model of flow.logic_depth, not post-route):")
    for t, end, path in deepest_paths(mods[top], args.n):
        via = sorted({_short(n) for n in path[1:-1]})
        print(f"{t:6.1f} ns  {len(path) - 1:2d} nets  {_short(path[0])} -> {end}")
        if via:
            print(f"                     via {' / '.join(via)[:300]}")
        if args.verbose:
            for n in path:
                print(f"                       {n}")
    return 0


def _synthesized_netlist(design: str, params: dict) -> dict:
    """The Yosys JSON netlist of ``design`` after ``synth_ecp5``, as :mod:`flow.fpga` makes it."""
    from .fpga import synth_pnr
    rows, cols = params.pop("rows", 8), params.pop("cols", 8)
    with tempfile.TemporaryDirectory(prefix="npu-depth-") as tmp:
        synth_pnr(design, rows, cols, "ecp5", pnr=False, keep=tmp, params=params)
        return json.loads((Path(tmp) / "netlist.json").read_text())
