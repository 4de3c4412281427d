"""`make sim`: run GEMMs on the generated RTL and print cycles and PE utilization.

Builds (or reuses) the simulator for the chosen array, runs GEMMs of CNN-like shapes without
backpressure plus a batch of random GEMMs under random backpressure, checks every result
bit for bit against golden.gemm, and exits non-zero on any mismatch.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from .simulate import missing_simulator, run

SHAPES = ["64x512x64", "64x9x64", "36x72x16", "16x576x64", "1x1024x10"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--sim", default="verilator")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=50, help="random GEMMs under backpressure")
    args = ap.parse_args(argv)
    problem = missing_simulator(args.sim)
    if problem:
        sys.exit(f"error: {problem}")
    params = {"rows": args.rows, "cols": args.cols}
    env = {"NPU_ROWS": args.rows, "NPU_COLS": args.cols, "NPU_SEED": args.seed}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "perf.json"
        perf = run("gemm", params, "sim.tb_gemm", sim=args.sim, testcase="perf_gemms",
                   env={**env, "NPU_SHAPES": ",".join(SHAPES), "NPU_REPORT": report}, tag="main")
        records = json.loads(report.read_text())["records"] if report.exists() else []
    rand = run("gemm", params, "sim.tb_gemm", sim=args.sim, testcase="random_gemms",
               env={**env, "NPU_COUNT": args.count}, tag="main")

    print(f"\nnpu_gemm {args.rows}x{args.cols} on {args.sim}, seed {args.seed}")
    print(f"{'GEMM M x K x N':>16} {'cycles':>8} {'MACs':>10} {'ideal':>8} {'PE util':>8}  golden")
    for r in records:
        M, K, N = r["shape"]
        ideal = -(-r["macs"] // (args.rows * args.cols))
        print(f"{f'{M}x{K}x{N}':>16} {r['cycles']:>8} {r['macs']:>10} {ideal:>8} "
              f"{100 * r['utilization']:>7.1f}%  {'bit-exact' if r['ok'] else 'MISMATCH'}")
    print(f"{args.count} random GEMMs under random backpressure: "
          f"{'all bit-exact' if rand.ok else 'FAILED'}")
    ok = perf.ok and rand.ok and len(records) == len(SHAPES)
    if not ok:
        print(f"FAILED (seed {args.seed}); logs under {perf.results_xml.parent.parent}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
