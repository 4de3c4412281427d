"""The softmax testbench (sim/tb_softmax.py) on the generated Verilog, Verilator and Icarus.

Verilator: L_max = 256 (the issue's minimum), >= 200 vectors bit-exact under random
backpressure, over-long frames, steady-state throughput. Icarus: a subset on L_max = 32.
"""

import json

import pytest

from hw.softmax import DIV_STEPS
from flow.ecp5_models import run_ecp5_build
from flow.simulate import missing_simulator, run

MAXLEN = 256


def run_tb(sim, max_len, testcase, seed, tag, **env):
    problem = missing_simulator(sim)
    if problem:
        pytest.skip(problem)
    r = run("softmax", {"max_len": max_len}, "sim.tb_softmax", sim=sim, testcase=testcase,
            env={"NPU_MAXLEN": max_len, "NPU_SEED": seed, **env}, tag=tag)
    assert r.ok, (f"{sim} softmax L_max={max_len} {testcase}: {r.failures} failing test(s), "
                  f"seed={seed} (replay with NPU_SEED={seed}); log in {r.results_xml.parent}")
    return r


def test_verilator_random_vectors(sim_seed):
    seed = sim_seed(31)
    r = run_tb("verilator", MAXLEN, "random_vectors", seed, f"random{seed}", NPU_COUNT=220)
    print(f"build {r.build_seconds:.1f} s, run {r.run_seconds:.1f} s")


def test_verilator_overlong(sim_seed):
    seed = sim_seed(32)
    run_tb("verilator", MAXLEN, "overlong_frames", seed, f"overlong{seed}")


def test_verilator_throughput(tmp_path, sim_seed):
    """Steady state without backpressure: L + 1 cycles per vector for L >= 19 (stages A, B
    and C each stream one element per cycle), 20 for short vectors (the divider)."""
    seed = sim_seed(33)
    report = tmp_path / "softmax_perf.json"
    run_tb("verilator", MAXLEN, "throughput", seed, "perf", NPU_LENS=f"{MAXLEN},64,16,1",
           NPU_REPORT=report)
    for rec in json.loads(report.read_text())["records"]:
        L, cpv = rec["length"], rec["cycles_per_vector"]
        print(f"softmax L={L}: {cpv:.1f} cycles/vector ({L / cpv:.3f} elements/cycle)")
        assert cpv <= max(L + 1, DIV_STEPS + 2), f"L={L}: {cpv} cycles/vector (seed={seed})"


@pytest.mark.icarus
def test_icarus_random_vectors(sim_seed):
    seed = sim_seed(41)
    run_tb("icarus", 32, "random_vectors", seed, f"random{seed}", NPU_COUNT=80)


@pytest.mark.icarus
def test_icarus_overlong(sim_seed):
    seed = sim_seed(42)
    run_tb("icarus", 32, "overlong_frames", seed, f"overlong{seed}")


@pytest.mark.regress
def test_verilator_regress_vectors(request):
    """Long sweep: --regress-count vectors (at least 1000) from --regress-seed, L_max = 256."""
    seed = request.config.getoption("--regress-seed")
    count = max(1000, request.config.getoption("--regress-count"))
    run_tb("verilator", MAXLEN, "random_vectors", seed, f"regress{seed}", NPU_COUNT=count)


@pytest.mark.icarus
def test_icarus_ecp5_primitives(tmp_path, sim_seed):
    """npu_softmax with dsp="ecp5" (DP16KD with output registers for the buffer and the
    exponent table, MULT18X18D with their registers; behavioural models of the primitives in
    the configuration used) at L_max = 256: bit-exact, and the same steady-state throughput
    bound as the generic unit."""
    sim = "icarus"
    if missing_simulator(sim):
        pytest.skip(missing_simulator(sim))
    from flow.verilog import cached_verilog
    seed = sim_seed(43)
    vpath, top = cached_verilog("softmax", max_len=MAXLEN, dsp="ecp5")
    text = vpath.read_text()
    assert text.count("DP16KD") >= 3 and text.count("MULT18X18D") >= 5
    report = tmp_path / "perf.json"
    tests, fails = run_ecp5_build(vpath, top, "sim.tb_softmax", ["random_vectors", "throughput"],
                                  {"NPU_MAXLEN": MAXLEN, "NPU_SEED": seed, "NPU_COUNT": 30,
                                   "NPU_LENS": "256,16,1", "NPU_REPORT": report}, tmp_path, sim)
    assert tests == 2 and fails == 0, f"ECP5 softmax failed (NPU_SEED={seed}), see {tmp_path}"
    for rec in json.loads(report.read_text())["records"]:
        L, cpv = rec["length"], rec["cycles_per_vector"]
        assert cpv <= max(L + 1, DIV_STEPS + 2), f"L={L}: {cpv} cycles/vector"
