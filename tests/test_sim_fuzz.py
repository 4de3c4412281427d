"""The instruction fuzzer of npu_top (sim/tb_fuzz.py, issue 21) on the cached Verilator build of
the default configuration: a short run in the suite, at least 10,000 words per seed in
`make regress`; and the host-side model it relies on (sim/fuzz.py) against compiled programs.

NPU_FUZZ_WORDS overrides the number of words of the short run, NPU_SEED its seed."""

import json
import os

import numpy as np
import pytest

from flow.simulate import missing_simulator, run
from golden.mlperf_archs import quantized, residual_net
from hw.isa import Error, Op, decode
from hw.npu import NpuConfig
from npu.compiler import compile_model
from npu.perf import program_cycles
from sim.fuzz import Machine, ProgramGenerator, act_rows, walk_words

# The default configuration (8 x 8): the Verilator build test_sim_npu uses.
CONFIG = {"rows": 8, "cols": 8}


def run_fuzz(tmp_path, testcase, seed, words):
    problem = missing_simulator("verilator")
    if problem:
        pytest.skip(problem)
    report = tmp_path / "fuzz.json"
    r = run("npu", CONFIG, "sim.tb_fuzz", testcase=testcase,
            env={"NPU_CONFIG": json.dumps(CONFIG), "NPU_SEED": seed, "NPU_FUZZ_WORDS": words,
                 "NPU_REPORT": report}, tag=f"{testcase}{seed}")
    rep = json.loads(report.read_text()) if report.exists() else None
    print(rep["summary"] if rep and "summary" in rep else rep)
    assert r.ok, (f"{testcase}: seed={seed} (replay with NPU_SEED={seed}); {rep}; "
                  f"log in {r.results_xml.parent}")
    return rep


def check_counts(rep, words, endings):
    """No hang, stray write or wrong outcome, every recovery bit-exact, and at least
    ``endings`` different ways (DONE, error codes) in which the starts ended."""
    assert rep["words"] >= words and rep["starts"] > rep["programs"] > 0
    assert rep["hangs"] == 0 and rep["stray_writes"] == 0 and rep["wrong_outcomes"] == 0
    assert rep["recoveries"] > 0 and rep["recoveries_exact"] == rep["recoveries"]
    assert (rep["done"] > 0) + len(rep["errors"]) >= endings, rep["summary"]


def test_verilator_instruction_fuzz(tmp_path, sim_seed):
    words = int(os.environ.get("NPU_FUZZ_WORDS", 300))
    check_counts(run_fuzz(tmp_path, "instruction_fuzz", sim_seed(1), words), words, 4)


def test_verilator_fuzzer_checks(tmp_path, sim_seed):
    """A stray write, a hang bound of 1 cycle and corrupted weights each make it fail; a
    legal CONV of 2 * 10**6 cycles is ended by a reset, and is no failure."""
    seen = run_fuzz(tmp_path, "fuzzer_checks", sim_seed(2), 0)
    assert set(seen) == {"stray", "bound", "recovery", "long"}


@pytest.mark.regress
def test_regress_instruction_fuzz(tmp_path, request):
    seed = request.config.getoption("--regress-seed")
    words = request.config.getoption("--fuzz-words")
    # DONE and every error code (all of Error but NONE)
    check_counts(run_fuzz(tmp_path, "instruction_fuzz", seed, words), words, len(Error))


# ---- the host-side model (no simulator) ---------------------------------------------------

@pytest.fixture(scope="module")
def resnet_program():
    arch = residual_net("fuzz_res", [8, 8, 3], 8, ((8, 1), (16, 2)), 10)
    return compile_model(quantized(arch, seed=3)[0], CONFIG, batch=2)


def test_walk_and_bound_of_a_compiled_program(resnet_program):
    """A compiled inference walks to its DONE, takes exactly its LOAD beats, and the bound
    is at least the exact cycle model of the whole program."""
    prog = resnet_program
    cfg = NpuConfig(**CONFIG)
    m = Machine(cfg)
    m.write(0, prog.instructions)
    w = m.walk(prog.infer_pc)
    assert w.end == "DONE" and w.pcs == list(range(prog.infer_pc, len(prog.instructions)))
    images = np.zeros((2, *prog.input_shape), np.int8)
    assert m.beats(w) == len(prog.infer_stream(images))
    m.run_instructions(range(prog.infer_pc))       # the setup's registers (none) first
    assert program_cycles(prog.infer, cfg) <= m.cycle_bound(w, 10**6)


def test_regions_cover_the_compiled_outputs(resnet_program):
    """The ACT regions of a compiled program's layers are the words of its tensor layouts
    (independently: the compiler's TensorLayout), and nothing of WGT or PARAM."""
    prog = resnet_program
    cfg = NpuConfig(**CONFIG)
    m = Machine(cfg)
    m.write(0, prog.instructions)
    regions = m.run_instructions(range(prog.infer_pc, len(prog.instructions)))
    assert regions.allowed("WGT") == set() and regions.allowed("PARAM") == set()
    act = regions.allowed("ACT")
    for t in prog.tensors:
        words = walk_words(t.addr, ((t.batch, t.img), (t.h, t.row), (t.w, t.cw)),
                           -(-t.c // cfg.cols))
        assert set(act_rows(words, t.shift, cfg).tolist()) <= act, t


def test_generator_reaches_every_ending():
    """Generated programs walk to DONE and to each certain error, and are reproducible."""
    cfg = NpuConfig(**CONFIG)
    arch = residual_net("fuzz_res", [8, 8, 3], 8, ((8, 1),), 10)
    corpus = [compile_model(quantized(arch, seed=4)[0], CONFIG, batch=1).instructions]
    ends = set()
    programs = []
    for _ in range(2):
        gen = ProgramGenerator(np.random.default_rng(7), corpus, cfg)
        programs.append([gen.program() for _ in range(200)])
    assert programs[0] == programs[1]
    for p in programs[0]:
        m = Machine(cfg)            # NOPs after the program: no DONE runs to the end of IMEM
        m.write(100, p)
        ends.add(m.walk(100).end)
    assert ends >= {"DONE", Error.ILLEGAL_OPCODE, Error.ADDRESS, Error.CONFIG,
                    Error.PC_OVERFLOW}
    ops = {decode(w)["op"] for p in programs[0] for w in p}
    assert ops >= {int(o) for o in (Op.SET, Op.LOAD, Op.STORE, Op.CONV, Op.POOL, Op.ELTWISE,
                                    Op.SOFTMAX, Op.DONE)}
