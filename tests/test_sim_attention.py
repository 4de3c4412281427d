"""Attention on the npu_top RTL (sim/tb_attention.py): random S and d including 1 and 64,
masked and unmasked, multi-head, Sq != Sk, random backpressure on both AXI streams; every
output bit-exact against golden.attention, the error against float attention printed, and
the cycle model (npu/perf.py) checked against the hardware counters of the unstalled runs."""

import json

import numpy as np
import pytest

from hw.isa import Op, decode
from npu.attention import compile_attention, random_case
from npu.perf import predict
from flow.simulate import missing_simulator, run

# Same build as tests/test_sim_npu.py (default configuration, 8 x 8 array).
CONFIG = {"rows": 8, "cols": 8}
# SOFTMAX timing depends on the unit's pipeline, which the model approximates (npu/perf.py).
APPROXIMATE = {Op.SOFTMAX: 6}


def random_cases(seed, count):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        cases.append({"S": int(rng.integers(1, 65)), "d": int(rng.integers(1, 65)),
                      "causal": bool(i % 2), "stall": float(rng.choice([0.2, 0.5]))})
    return cases


# The extremes of S and d (1 and 64), both masks, one multi-head and one Sq != Sk case.
FIXED = [
    {"S": 1, "d": 1, "causal": False, "stall": 0.3},
    {"S": 1, "d": 1, "causal": True, "stall": 0.0},
    {"S": 64, "d": 64, "causal": False, "stall": 0.0},
    {"S": 64, "d": 64, "causal": True, "stall": 0.0},
    {"S": 64, "d": 64, "causal": True, "stall": 0.4},
    {"S": 64, "d": 1, "causal": True, "stall": 0.3},
    {"S": 1, "d": 64, "causal": False, "stall": 0.3},
    {"S": 24, "d": 16, "heads": 3, "causal": True, "stall": 0.2},
    {"S": 13, "kv_len": 40, "d": 9, "v_dim": 20, "causal": False, "stall": 0.2},
]


def run_attention(tmp_path, sim, seed, cases, config=CONFIG):
    problem = missing_simulator(sim)
    if problem:
        pytest.skip(problem)
    report = tmp_path / "report.json"
    r = run("npu", config, "sim.tb_attention", sim=sim, testcase="attention_cases",
            env={"ATT_CONFIG": json.dumps(config), "ATT_CASES": json.dumps(cases),
                 "ATT_SEED": seed, "ATT_REPORT": report}, tag=f"attention{seed}")
    assert r.ok, (f"{sim} attention: seed={seed} (replay with NPU_SEED={seed}); "
                  f"log in {r.results_xml.parent}")
    rep = json.loads(report.read_text())
    print(f"\n{sim} attention, seed {seed}: error of the RTL output vs float64 attention")
    print(f"{'S':>3} {'Sk':>3} {'d':>3} {'H':>2} {'mask':>6} {'stall':>5} {'cycles':>7} "
          f"{'cosine':>9} {'max err':>9} {'LSB':>6}")
    for res in rep["results"]:
        c = res["case"]
        print(f"{c['S']:>3} {c.get('kv_len', c['S']):>3} {c['d']:>3} {c.get('heads', 1):>2} "
              f"{'causal' if c['causal'] else 'none':>6} {c.get('stall', 0):>5} "
              f"{res['cycles']:>7} {res['cos']:>9.6f} {res['max_err']:>9.5f} "
              f"{res['max_err_lsb']:>6.3f}")
    assert all(res["exact"] for res in rep["results"])
    return rep


def check_cycle_model(rep, seed, config=CONFIG):
    """Per-instruction counters of the unstalled cases against npu.perf.predict."""
    for n, res in enumerate(rep["results"]):
        c = res["case"]
        if c.get("stall", 0):
            continue
        rng = np.random.default_rng([seed, n])
        S, d, H = c["S"], c["d"], c.get("heads", 1)
        params = random_case(rng, S, d, H, c["causal"], c.get("kv_len"), c.get("v_dim"))[3]
        prog = compile_attention(S, d, params, c.get("kv_len"), c.get("v_dim"), H, c["causal"],
                                 config)
        pred = predict(prog.instructions, prog.config)
        for i, (word, meas, p) in enumerate(zip(prog.instructions, res["instr"], pred)):
            op = decode(word)["op"]
            assert abs(meas - p) <= APPROXIMATE.get(op, 0), (
                f"case {c}: instruction {i} ({Op(op).name}): hardware {meas} cycles, model {p}")


def test_verilator_attention(tmp_path, sim_seed):
    seed = sim_seed(5)
    rep = run_attention(tmp_path, "verilator", seed, FIXED + random_cases(seed, 6))
    check_cycle_model(rep, seed)


# Icarus is far slower than Verilator on npu_top: a small configuration (the one of the
# Icarus subset of tests/test_sim_npu.py, so the build is shared) and small shapes.
ICARUS_CONFIG = {"rows": 2, "cols": 4, "act_depth": 256, "wgt_depth": 512, "param_depth": 16,
                 "imem_depth": 128, "pool_max_size": 8, "pool_max_c": 16, "pool_max_k": 3,
                 "softmax_max_len": 16}


@pytest.mark.icarus
def test_icarus_attention_subset(tmp_path, sim_seed):
    seed = sim_seed(6)
    cases = [{"S": 5, "d": 3, "causal": True, "stall": 0.3},
             {"S": 9, "d": 6, "heads": 2, "causal": False, "stall": 0.3},
             {"S": 1, "d": 1, "causal": True, "stall": 0.0}]
    rep = run_attention(tmp_path, "icarus", seed, cases, ICARUS_CONFIG)
    check_cycle_model(rep, seed, ICARUS_CONFIG)
