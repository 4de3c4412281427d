"""cocotb testbench of ``npu_pooling`` on Verilator (and a subset on Icarus)."""

import os

import pytest

from sim.runner import missing_simulator, run

SEED = int(os.environ.get("NPU_SEED", 1))
# Small line buffers keep the build and the run short; the defaults (32x32x64) are elaborated
# by tests/test_hw_pooling.py and covered by `make regress`-style runs with larger NPU_MAX_*.
PARAMS = {"lanes": 4, "max_h": 10, "max_w": 10, "max_c": 12, "max_k": 10, "slots": 3}
ENV = {"NPU_LANES": 4, "NPU_MAX_H": 10, "NPU_MAX_W": 10, "NPU_MAX_C": 12, "NPU_MAX_K": 10,
       "NPU_SLOTS": 3, "NPU_SEED": SEED}


def _run(sim, testcase, params=PARAMS, **env):
    return run("pooling", params, "sim.tb_pooling", sim=sim, testcase=testcase,
               env={**ENV, **env}, tag=f"pooling{SEED}")


def test_pooling_verilator():
    r = _run("verilator", None)
    assert r.ok, f"pooling testbench failed on Verilator (seed={SEED}), see {r.results_xml}"
    assert r.tests == 3


@pytest.mark.icarus
def test_pooling_icarus():
    problem = missing_simulator("icarus")
    if problem:
        pytest.skip(problem)
    r = _run("icarus", ["random_cases", "bad_config_sets_error"], NPU_COUNT=20)
    assert r.ok, f"pooling testbench failed on Icarus (seed={SEED}), see {r.results_xml}"
