"""The activation LUT testbench (sim/tb_activation.py) on the generated Verilog, Verilator and
Icarus."""

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
    r = run("activation", {"lanes": LANES}, "sim.tb_activation", sim=sim, testcase=testcase,
            env=env, tag=f"activation{seed}")
    assert r.ok, (f"{sim} activation: {r.failures} failing test(s), seed={seed} "
                  f"(replay with NPU_SEED={seed}); log in {r.results_xml.parent}")
    return r


def test_verilator_activation(tmp_path, sim_seed):
    """100 random cases over every activation and random tables reloaded at run time, and
    steady-state throughput (1 beat/cycle)."""
    report = tmp_path / "perf.jsonl"
    r = run_tb("verilator", sim_seed(41), report=report)
    assert r.tests == 2
    for rec in map(json.loads, report.read_text().splitlines()):
        print(f"activation {rec['lanes']} lanes: in {rec['in']:.3f}, out {rec['out']:.3f} "
              f"beats/cycle, latency {rec['latency']}")
        assert rec["in"] == 1.0 and rec["out"] == 1.0, rec


@pytest.mark.icarus
def test_icarus_activation(sim_seed):
    run_tb("icarus", sim_seed(42), "random_cases", NPU_COUNT=25)


@pytest.mark.regress
@pytest.mark.parametrize("shard", range(4))
def test_regress_activation(shard, request):
    seed = request.config.getoption("--regress-seed") * 1000 + 400 + shard
    run_tb("verilator", seed, "random_cases", NPU_COUNT=1000)
