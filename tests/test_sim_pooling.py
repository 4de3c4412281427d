"""The pooling testbench (sim/tb_pooling.py) on the generated Verilog, Verilator and Icarus."""

import json

import pytest

from flow.simulate import missing_simulator, run

# Small line buffers keep the random sweep fast; FULL is the default generator configuration
# (32 x 32 x 64 images, kernels up to 32 so 32 x 32 global pooling fits).
SMALL = {"lanes": 4, "max_h": 10, "max_w": 10, "max_c": 12, "max_k": 10, "slots": 3}
FULL = {"lanes": 4, "max_h": 32, "max_w": 32, "max_c": 64, "max_k": 32, "slots": 3}


def run_tb(sim, params, seed, testcase=None, report=None, **env):
    problem = missing_simulator(sim)
    if problem:
        pytest.skip(problem)
    env = {"NPU_LANES": params["lanes"], "NPU_MAX_H": params["max_h"],
           "NPU_MAX_W": params["max_w"], "NPU_MAX_C": params["max_c"],
           "NPU_MAX_K": params["max_k"], "NPU_SLOTS": params["slots"], "NPU_SEED": seed, **env}
    if report is not None:
        env["NPU_REPORT"] = report
    r = run("pooling", params, "sim.tb_pooling", sim=sim, testcase=testcase, env=env,
            tag=f"pooling{seed}")
    assert r.ok, (f"{sim} pooling {params}: {r.failures} failing test(s), seed={seed} "
                  f"(replay with NPU_SEED={seed}); log in {r.results_xml.parent}")
    return r


def check_report(report):
    for rec in map(json.loads, report.read_text().splitlines()):
        print(f"pooling {rec['case']}: whole image {rec['in']:.3f} beats/cycle, longest burst "
              f"{rec['burst']} beats (row = {rec['row_beats']} beats)")
        assert rec["burst"] >= min(rec["beats"], rec["row_beats"]), rec
        if "p=0" in rec["case"]:
            assert rec["in"] == 1.0, rec


def test_verilator_pooling(tmp_path, sim_seed):
    """100 random cases, refused configurations, and throughput, on small line buffers."""
    report = tmp_path / "perf.jsonl"
    r = run_tb("verilator", SMALL, sim_seed(51), report=report)
    assert r.tests == 3
    check_report(report)


def test_verilator_pooling_full_size(tmp_path, sim_seed):
    """The default configuration: 32 x 32 x 64 images (throughput, 32 x 32 global average
    pooling) and a few random cases up to that size."""
    report = tmp_path / "perf.jsonl"
    run_tb("verilator", FULL, sim_seed(52), ["random_cases", "throughput"], report=report,
           NPU_COUNT=7)
    check_report(report)


@pytest.mark.icarus
def test_icarus_pooling(sim_seed):
    run_tb("icarus", SMALL, sim_seed(53), ["random_cases", "bad_config_sets_error"],
           NPU_COUNT=20)


@pytest.mark.regress
@pytest.mark.parametrize("shard", range(4))
def test_regress_pooling(shard, request):
    seed = request.config.getoption("--regress-seed") * 1000 + 500 + shard
    run_tb("verilator", SMALL, seed, "random_cases", NPU_COUNT=500)
