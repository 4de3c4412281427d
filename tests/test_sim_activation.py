"""cocotb testbench of ``npu_activation`` on Verilator (and a subset on Icarus)."""

import os

import pytest

from sim.runner import missing_simulator, run

SEED = int(os.environ.get("NPU_SEED", 1))
LANES = 4


def _run(sim, testcase, **env):
    return run("activation", {"lanes": LANES}, "sim.tb_activation", sim=sim, testcase=testcase,
               env={"NPU_LANES": LANES, "NPU_SEED": SEED, **env}, tag=f"activation{SEED}")


def test_activation_verilator():
    r = _run("verilator", None)
    assert r.ok, f"activation testbench failed on Verilator (seed={SEED}), see {r.results_xml}"
    assert r.tests == 2


@pytest.mark.icarus
def test_activation_icarus():
    problem = missing_simulator("icarus")
    if problem:
        pytest.skip(problem)
    r = _run("icarus", ["random_cases"], NPU_COUNT=30)
    assert r.ok, f"activation testbench failed on Icarus (seed={SEED}), see {r.results_xml}"
