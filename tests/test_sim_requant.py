"""The requantizer testbench (sim/tb_requant.py) on the generated Verilog, Verilator and Icarus."""

import json

import pytest

from flow.simulate import missing_simulator, run

LANES = 4


def run_tb(sim, seed, testcase=None, report=None, **env):
    problem = missing_simulator(sim)
    if problem:
        pytest.skip(problem)
    env = {"NPU_LANES": LANES, "NPU_SEED": seed, **env}
    if report is not None:
        env["NPU_REPORT"] = report
    r = run("requant", {"lanes": LANES}, "sim.tb_requant", sim=sim, testcase=testcase, env=env,
            tag=f"requant{seed}")
    assert r.ok, (f"{sim} requant: {r.failures} failing test(s), seed={seed} "
                  f"(replay with NPU_SEED={seed}); log in {r.results_xml.parent}")
    return r


def test_verilator_requant(tmp_path, sim_seed):
    """100 random cases, the bad-shift error flag, and steady-state throughput (1 beat/cycle)."""
    report = tmp_path / "perf.jsonl"
    r = run_tb("verilator", sim_seed(31), report=report)
    assert r.tests == 3
    for rec in map(json.loads, report.read_text().splitlines()):
        print(f"requant {rec['lanes']} lanes: in {rec['in']:.3f}, out {rec['out']:.3f} "
              f"beats/cycle, latency {rec['latency']}")
        assert rec["in"] == 1.0 and rec["out"] == 1.0, rec


@pytest.mark.icarus
def test_icarus_requant(sim_seed):
    run_tb("icarus", sim_seed(32), ["random_cases", "bad_shift_sets_error"], NPU_COUNT=25)


@pytest.mark.regress
@pytest.mark.parametrize("shard", range(4))
def test_regress_requant(shard, request):
    seed = request.config.getoption("--regress-seed") * 1000 + 300 + shard
    run_tb("verilator", seed, "random_cases", NPU_COUNT=1000)
