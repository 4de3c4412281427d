"""``npu sim-gemm`` (``make sim-gemm``): GEMMs on the generated RTL of ``npu_gemm``, with cycles
and PE utilization.

Builds (or reuses) the simulator for the chosen array, runs GEMMs of CNN-like shapes without
backpressure plus a batch of random GEMMs under random backpressure, checks every result
bit for bit against golden.gemm, and exits non-zero on any mismatch.
"""

import argparse
import json
import tempfile
from pathlib import Path

from .simulate import SIMULATORS, missing_simulator, run

SHAPES = ["64x512x64", "64x9x64", "36x72x16", "16x576x64", "1x1024x10"]


# ---- `npu sim-gemm` --------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sim", default="verilator", choices=SIMULATORS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=50, help="random GEMMs under backpressure")


def main(args: argparse.Namespace) -> int:
    """Run the GEMMs on ``npu_gemm`` of ``args.params``; 1 on any mismatch."""
    problem = missing_simulator(args.sim)
    if problem:
        raise SystemExit(f"error: {problem}")
    # The testbench is told the array size too, so it is always explicit (GemmTop's 8x8).
    params = {"rows": 8, "cols": 8, **args.params}
    rows, cols = params["rows"], params["cols"]
    env = {"NPU_ROWS": rows, "NPU_COLS": cols, "NPU_SEED": args.seed}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "perf.json"
        perf = run("gemm", params, "sim.tb_gemm", sim=args.sim, testcase="perf_gemms",
                   env={**env, "NPU_SHAPES": ",".join(SHAPES), "NPU_REPORT": report}, tag="main")
        records = json.loads(report.read_text())["records"] if report.exists() else []
    rand = run("gemm", params, "sim.tb_gemm", sim=args.sim, testcase="random_gemms",
               env={**env, "NPU_COUNT": args.count}, tag="main")

    print(f"\nnpu_gemm {rows}x{cols} on {args.sim}, seed {args.seed}")
    print(f"{'GEMM M x K x N':>16} {'cycles':>8} {'MACs':>10} {'ideal':>8} {'PE util':>8}  golden")
    for r in records:
        M, K, N = r["shape"]
        ideal = -(-r["macs"] // (rows * cols))
        print(f"{f'{M}x{K}x{N}':>16} {r['cycles']:>8} {r['macs']:>10} {ideal:>8} "
              f"{100 * r['utilization']:>7.1f}%  {'bit-exact' if r['ok'] else 'MISMATCH'}")
    print(f"{args.count} random GEMMs under random backpressure: "
          f"{'all bit-exact' if rand.ok else 'FAILED'}")
    ok = perf.ok and rand.ok and len(records) == len(SHAPES)
    if not ok:
        print(f"FAILED (seed {args.seed}); logs under {perf.results_xml.parent.parent}")
    return 0 if ok else 1

