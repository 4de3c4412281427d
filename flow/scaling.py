"""Scaling table of the GEMM array: resources, Fmax, generation/build times, simulation speed.

``npu scaling --sizes 4,8,16,32`` measures, for each square R x R ``npu_gemm``:

* Verilog generation time (Amaranth elaboration + ``verilog.convert``, in this process);
* ECP5-85F resources of the design (Yosys ``synth_ecp5``, design apart from the timing
  harness) and post-route Fmax (nextpnr-ecp5, via :mod:`flow.fpga`) when its R*R MULT18X18D fit
  the device's 156; larger arrays are synthesized only (no Fmax);
* Verilator build time (a fresh build with the flags of :func:`flow.simulate.build`);
* simulation speed in clock cycles per second of wall time, under Verilator and Icarus, running
  the cocotb GEMM testbench (``sim.tb_gemm`` ``perf_gemms``, no backpressure, one
  2R x K x 2R GEMM): simulated time / wall time of the test as cocotb reports them in
  ``results.xml``. This is the speed of the whole cocotb testbench (drivers, monitor and
  scoreboard in Python), not of the bare simulator.

Writes ``build/scaling/scaling.json`` and ``build/scaling/scaling.md``. Every figure is
measured by the run; nothing is estimated. A P&R result in ``build/synth/`` made from the same
Verilog (same hash) is reused unless ``--fresh`` is given.
"""

import argparse
import json
import shutil
import time
import xml.etree.ElementTree as ET

from hw.verilog import generate

from .verilog import ROOT, cached_verilog

OUT = ROOT / "build" / "scaling"
CLOCK_NS = 10             # the testbench's clock period


def _verilog_time(n):
    t0 = time.perf_counter()
    text, _ = generate("gemm", rows=n, cols=n)
    return time.perf_counter() - t0, len(text.splitlines())


def _fresh_verilator_build(n):
    """Seconds for a from-scratch Verilator build, same flags as flow.simulate.build."""
    from cocotb_tools.runner import get_runner

    from .simulate import TIMESCALE, VERILATOR_ARGS, apply_tool_env
    vpath, top = cached_verilog("gemm", rows=n, cols=n)
    build_dir = OUT / f"verilator-{n}x{n}"
    if build_dir.exists():
        shutil.rmtree(build_dir)
    apply_tool_env("verilator")
    t0 = time.perf_counter()
    get_runner("verilator").build(sources=[vpath], hdl_toplevel=top, build_dir=build_dir,
                                  build_args=list(VERILATOR_ARGS), timescale=TIMESCALE,
                                  always=True,
                                  log_file=OUT / f"verilator-{n}x{n}.build.log")
    seconds = time.perf_counter() - t0
    shutil.rmtree(build_dir, ignore_errors=True)
    return seconds


def _sim_speed(n, sim, k):
    from .simulate import missing_simulator, run
    problem = missing_simulator(sim)
    if problem:
        return {"error": problem}
    shape = f"{2 * n}x{k}x{2 * n}"
    report = OUT / f"perf-{sim}-{n}x{n}.json"
    r = run("gemm", {"rows": n, "cols": n}, "sim.tb_gemm", sim=sim, testcase="perf_gemms",
            env={"NPU_ROWS": n, "NPU_COLS": n, "NPU_SEED": 1, "NPU_SHAPES": shape,
                 "NPU_REPORT": report}, tag="scaling")
    if not r.ok:
        return {"error": f"testbench failed, see {r.results_xml.parent}"}
    case = next(ET.parse(r.results_xml).iter("testcase"))
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props.get("sim_time_unit") == "ns", props
    sim_ns = float(props["sim_time_duration"])
    wall = float(case.get("time"))
    cycles = sim_ns / CLOCK_NS
    rec = json.loads(report.read_text())["records"][0]
    return {"shape": shape, "cycles": round(cycles), "wall_s": round(wall, 3),
            "cycles_per_s": round(cycles / wall), "utilization": round(rec["utilization"], 4),
            "build_s": round(r.build_seconds, 1)}


def _fpga(n, fresh, freq):
    from .fpga import output_path, synth_pnr
    vpath, _ = cached_verilog("gemm", rows=n, cols=n, dsp="ecp5")
    import hashlib
    sha = hashlib.sha256(vpath.read_bytes()).hexdigest()[:16]
    probe = {"design": "gemm", "rows": n, "cols": n, "arch": "ecp5"}
    path = output_path(probe)
    if not fresh and path.exists():
        old = json.loads(path.read_text())
        # A result is final when placed, or when flow.fpga refused to place it (too many DSPs).
        if old.get("verilog_sha256") == sha and (old.get("placed") or old.get("not_placed")):
            old["reused"] = str(path.relative_to(ROOT))
            return old
    r = synth_pnr("gemm", n, n, "ecp5", freq=freq)     # refuses P&R when it cannot fit
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=1) + "\n")
    return r


def measure(n: int, args: argparse.Namespace) -> dict:
    row = {"rows": n, "cols": n, "pes": n * n}
    print(f"== {n}x{n}", flush=True)
    row["verilog_s"], row["verilog_lines"] = _verilog_time(n)
    row["verilog_s"] = round(row["verilog_s"], 2)
    if not args.no_fpga:
        r = _fpga(n, args.fresh, args.freq)
        d = r["design_cells"]
        row["ecp5"] = {
            "lut4": d["lut4"], "ccu2c": d["carry"], "lut4_equiv": d["lut4_equiv"],
            "ff": d["ff"], "mult18x18d": d["mult"], "ram": d["ram"],
            "lut4_equiv_per_pe": r["lut4_equiv_per_pe"], "fmax_mhz": r["fmax_mhz"],
            "critical_path": (r.get("critical_path") or {}).get("delay_ns"),
            "not_placed": r.get("not_placed"), "yosys_s": r["seconds"]["yosys"],
            "nextpnr_s": r["seconds"]["nextpnr"], "reused": r.get("reused")}
        print(f"   ecp5: {row['ecp5']}", flush=True)
    if not args.no_sim:
        from .simulate import build
        # The runner's cached build is reused by the speed runs; if it had to be made now,
        # that was a fresh build and its time counts, else time a fresh one elsewhere.
        _, _, seconds = build("gemm", {"rows": n, "cols": n}, "verilator")
        if seconds == 0.0:
            seconds = _fresh_verilator_build(n)
        row["verilator_build_s"] = round(seconds, 1)
        row["verilator"] = _sim_speed(n, "verilator", args.k)
        print(f"   verilator: build {row['verilator_build_s']} s, {row['verilator']}",
              flush=True)
        row["icarus"] = _sim_speed(n, "icarus", args.k)
        print(f"   icarus: {row['icarus']}", flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    head = ["array", "PEs", "LUT4 + CCU2C (LUT4-eq)", "LUT4-eq/PE", "FF", "MULT18X18D",
            "RAM", "Fmax ECP5-85F", "Verilog gen", "Verilator build", "Verilator cyc/s",
            "Icarus cyc/s"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        e = r.get("ecp5") or {}
        ram = ", ".join(f"{v} {k}" for k, v in (e.get("ram") or {}).items()) or "-"
        fmax = (f"{e['fmax_mhz']:.1f} MHz" if e.get("fmax_mhz")
                else ("not placed (> 156 DSP)" if e.get("not_placed") else "-"))

        def speed(s):
            s = r.get(s) or {}
            return f"{s['cycles_per_s']:,}" if "cycles_per_s" in s else s.get("error", "-")
        vb = r.get("verilator_build_s")
        out.append("| " + " | ".join([
            f"{r['rows']}x{r['cols']}", str(r["pes"]),
            f"{e.get('lut4', '-')} + {e.get('ccu2c', '-')} ({e.get('lut4_equiv', '-')})",
            str(e.get("lut4_equiv_per_pe", "-")), str(e.get("ff", "-")),
            str(e.get("mult18x18d", "-")), ram, fmax, f"{r['verilog_s']:.1f} s",
            f"{vb:.0f} s" if vb is not None else "-", speed("verilator"), speed("icarus"),
        ]) + " |")
    return "\n".join(out)


# ---- `npu scaling` ---------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="4,8,16,32",
                        help="square array sizes, comma-separated")
    parser.add_argument("-k", type=int, default=512, help="reduction length of the speed GEMM")
    parser.add_argument("--freq", type=float, default=150.0)
    parser.add_argument("--fresh", action="store_true",
                        help="re-run P&R even if a result exists")
    parser.add_argument("--no-fpga", action="store_true")
    parser.add_argument("--no-sim", action="store_true")


def main(args: argparse.Namespace) -> int:
    """Measure every size of ``args.sizes``, merge them into the table, print and write it."""
    OUT.mkdir(parents=True, exist_ok=True)
    jpath = OUT / "scaling.json"
    # Rows of other sizes from an earlier run are kept (sizes can be measured one at a time).
    rows = json.loads(jpath.read_text())["rows"] if jpath.exists() else []
    for n in (int(x) for x in args.sizes.split(",")):
        old = next((r for r in rows if r["rows"] == n), {})
        new = {**old, **measure(n, args)}      # --no-fpga / --no-sim keep the other half
        rows = sorted([r for r in rows if r["rows"] != n] + [new], key=lambda r: r["rows"])
        # Re-read before writing: another run (e.g. --no-sim beside --no-fpga) may have
        # written other sizes or fields meanwhile.
        if jpath.exists():
            latest = {r["rows"]: r for r in json.loads(jpath.read_text())["rows"]}
            rows = sorted([{**latest.get(r["rows"], {}), **r} for r in rows]
                          + [r for k, r in latest.items() if k not in {x["rows"] for x in rows}],
                          key=lambda r: r["rows"])
        jpath.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    md = markdown(rows)
    (OUT / "scaling.md").write_text(md + "\n")
    print(md)
    print(f"wrote {jpath.relative_to(ROOT)} and build/scaling/scaling.md")
    return 0

