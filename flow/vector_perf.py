"""Throughput table of the vector units, measured on the generated Verilog.

``npu vector-perf`` runs the ``throughput`` testbench of ``npu_requant``,
``npu_activation`` and ``npu_pooling`` (default configuration, 32 x 32 x 64 images) without
backpressure and prints input beats per cycle (one beat = one element per lane), bit-exact
results included.
"""

import argparse
import json
import tempfile
from pathlib import Path

from .simulate import SIMULATORS, missing_simulator, run


def measure(sim: str = "verilator", lanes: int = 4, seed: int = 1,
            pool: tuple[int, int, int] = (32, 32, 64)) -> list[tuple[str, dict, float]]:
    h, w, c = pool
    pool_params = {"lanes": lanes, "max_h": h, "max_w": w, "max_c": c,
                   "max_k": min(32, max(h, w)), "slots": 3}
    jobs = [
        ("requant", {"lanes": lanes}, "sim.tb_requant", {}),
        ("activation", {"lanes": lanes}, "sim.tb_activation", {}),
        ("pooling", pool_params, "sim.tb_pooling",
         {"NPU_MAX_H": h, "NPU_MAX_W": w, "NPU_MAX_C": c, "NPU_MAX_K": pool_params["max_k"],
          "NPU_SLOTS": 3, "NPU_PERF": f"{h}x{w}x{c}"}),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for design, params, module, env in jobs:
            report = Path(tmp) / f"{design}.jsonl"
            r = run(design, params, module, sim=sim, testcase="throughput", tag=f"perf{seed}",
                    env={"NPU_LANES": lanes, "NPU_SEED": seed, "NPU_REPORT": report, **env})
            if not r.ok:
                raise RuntimeError(f"{design} throughput run failed (seed={seed}); log in "
                                   f"{r.results_xml.parent}")
            for rec in map(json.loads, report.read_text().splitlines()):
                rows.append((design, rec, r.build_seconds))
    return rows


# ---- `npu vector-perf` -----------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sim", default="verilator", choices=SIMULATORS)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)


def main(args: argparse.Namespace) -> int:
    """Print the throughput table of the vector units."""
    problem = missing_simulator(args.sim)
    if problem:
        raise SystemExit(problem)
    print(f"{'unit':<11} {'case':<44} {'beats':>6} {'beats/cycle':>11}  note")
    for design, rec, _ in measure(args.sim, args.lanes, args.seed):
        if design == "pooling":
            case = rec["case"]
            note = f"longest 1-beat/cycle burst {rec['burst']} (row {rec['row_beats']})"
        else:
            case = f"{rec['lanes']} lanes, one frame"
            note = f"out {rec['out']:.3f} beats/cycle, latency {rec['latency']} cycles"
        print(f"{design:<11} {case:<44} {rec['beats']:>6} {rec['in']:>11.3f}  {note}")
    return 0
