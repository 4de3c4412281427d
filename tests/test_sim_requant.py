"""cocotb testbench of ``npu_requant`` on Verilator (and a subset on Icarus)."""

import os

import pytest

from sim.runner import missing_simulator, run

SEED = int(os.environ.get("NPU_SEED", 1))
LANES = 4


def _run(sim, testcase, **env):
    return run("requant", {"lanes": LANES}, "sim.tb_requant", sim=sim, testcase=testcase,
               env={"NPU_LANES": LANES, "NPU_SEED": SEED, **env}, tag=f"requant{SEED}")


def test_requant_verilator():
    r = _run("verilator", None)
    assert r.ok, f"requant testbench failed on Verilator (seed={SEED}), see {r.results_xml}"
    assert r.tests == 3


@pytest.mark.icarus
def test_requant_icarus():
    problem = missing_simulator("icarus")
    if problem:
        pytest.skip(problem)
    r = _run("icarus", ["random_cases", "throughput"], NPU_COUNT=30, NPU_PERF_BEATS=64)
    assert r.ok, f"requant testbench failed on Icarus (seed={SEED}), see {r.results_xml}"
