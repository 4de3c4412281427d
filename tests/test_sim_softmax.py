"""The softmax testbench (sim/tb_softmax.py) on the generated Verilog, Verilator and Icarus.

Verilator: L_max = 256 (the issue's minimum), >= 200 vectors bit-exact under random
backpressure, over-long frames, steady-state throughput. Icarus: a subset on L_max = 32.
"""

import json

import pytest

from hw.softmax import DIV_STEPS
from sim.runner import missing_simulator, run

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


def _dp16kd_model():
    """DP16KD as hw.softmax.BlockRam configures it: both ports DATA_WIDTH 9 or 18, a port
    either written (WE) or read with REGMODE OUTREG (the array read on CE, the output register
    on OCE), INITVAL in the 18-bit layout (word 16 n + i in bits 20 i .. 20 i + 17 of
    INITVAL_n). No resets, chip selects or write-through are used."""
    def port(p):
        return [f"AD{p}{n}" for n in range(14)] + [f"DI{p}{n}" for n in range(18)] + \
            [f"CE{p}", f"OCE{p}", f"CLK{p}", f"WE{p}", f"RST{p}", f"CS{p}0", f"CS{p}1",
             f"CS{p}2"]
    outs = [f"DO{p}{n}" for p in "AB" for n in range(18)]
    ins = port("A") + port("B")
    lines = [f"module DP16KD({', '.join(ins + outs)});",
             f"  input {', '.join(ins)};", f"  output {', '.join(outs)};"]
    for name, value in [("DATA_WIDTH_A", "18"), ("DATA_WIDTH_B", "18"),
                        ("REGMODE_A", '"NOREG"'), ("REGMODE_B", '"NOREG"'),
                        ("WRITEMODE_A", '"NORMAL"'), ("WRITEMODE_B", '"NORMAL"'),
                        ("CSDECODE_A", '"0b000"'), ("CSDECODE_B", '"0b000"'), ("GSR", '"ENABLED"'),
                        ("RESETMODE", '"SYNC"'), ("ASYNC_RESET_RELEASE", '"SYNC"'),
                        ("CLKAMUX", '"CLKA"'), ("CLKBMUX", '"CLKB"')]:
        lines.append(f"  parameter {name} = {value};")
    lines += [f"  parameter [319:0] INITVAL_{i:02X} = 320'h0;" for i in range(64)]
    lines += ["  reg [17:0] mem [0:1023];", "  integer i;", "  initial begin"]
    lines += [f"    for (i = 0; i < 16; i = i + 1) "
              f"mem[{16 * n} + i] = INITVAL_{n:02X}[i * 20 +: 18];" for n in range(64)]
    lines += ["  end"]
    for p in "AB":
        ad = "{" + ", ".join(f"AD{p}{n}" for n in reversed(range(14))) + "}"
        di = "{" + ", ".join(f"DI{p}{n}" for n in reversed(range(18))) + "}"
        do = "{" + ", ".join(f"DO{p}{n}" for n in reversed(range(18))) + "}"
        w = f"DATA_WIDTH_{p}"
        lines += [
            f"  wire [13:0] ad{p} = {ad};",
            f"  wire [17:0] di{p} = {di};",
            f"  wire [10:0] w9{p} = ad{p}[13:3];",          # 9-bit word address
            f"  reg [17:0] lat{p}, out{p};",
            f"  always @(posedge CLK{p}) begin",
            f"    if (CE{p}) begin",
            f"      if (WE{p}) begin",
            f"        if ({w} == 18) mem[ad{p}[13:4]] <= di{p};",
            f"        else if (w9{p}[0]) mem[w9{p}[10:1]][17:9] <= di{p}[8:0];",
            f"        else mem[w9{p}[10:1]][8:0] <= di{p}[8:0];",
            f"      end else if ({w} == 18) lat{p} <= mem[ad{p}[13:4]];",
            f"      else lat{p} <= w9{p}[0] ? mem[w9{p}[10:1]][17:9] : mem[w9{p}[10:1]][8:0];",
            "    end",
            f"    if (OCE{p}) out{p} <= lat{p};",
            "  end",
            f"  assign {do} = REGMODE_{p} == \"OUTREG\" ? out{p} : lat{p};",
        ]
    lines += ["endmodule", ""]
    return "\n".join(lines)


def _mult18x18d_model():
    """MULT18X18D as hw.pe.Ecp5Mult18 configures it: signed A/B input registers, pipeline
    register, output register, all on CLK0 with CE0."""
    a = ", ".join(f"A{n}" for n in range(18))
    b = ", ".join(f"B{n}" for n in range(18))
    c = ", ".join(f"C{n}" for n in range(18))
    p = ", ".join(f"P{n}" for n in range(36))
    params = ["REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_PIPELINE_CLK", "REG_OUTPUT_CLK",
              "REG_INPUTC_CLK", "GSR", "RESETMODE", "CLK0_DIV", "SOURCEB_MODE", "MULT_BYPASS",
              "CAS_MATCH_REG", "HIGHSPEED_CLK"]
    return "\n".join([
        f"module MULT18X18D({a}, {b}, {c}, CLK0, CE0, RST0, SIGNEDA, SIGNEDB, SOURCEA, "
        f"SOURCEB, {p});",
        *(f'  parameter {x} = "NONE";' for x in params),
        f"  input {a}, {b}, {c}, CLK0, CE0, RST0, SIGNEDA, SIGNEDB, SOURCEA, SOURCEB;",
        f"  output {p};",
        "  reg signed [17:0] ra, rb; reg signed [35:0] pp, po;",
        "  always @(posedge CLK0) if (CE0) begin",
        f"    ra <= {{{', '.join(f'A{n}' for n in reversed(range(18)))}}};",
        f"    rb <= {{{', '.join(f'B{n}' for n in reversed(range(18)))}}};",
        "    pp <= ra * rb; po <= pp;",
        "  end",
        f"  assign {{{', '.join(f'P{n}' for n in reversed(range(36)))}}} = po;",
        "endmodule", ""])


@pytest.mark.icarus
def test_icarus_ecp5_primitives(tmp_path, sim_seed):
    """npu_softmax with dsp="ecp5" (DP16KD with output registers for the buffer and the
    exponent table, MULT18X18D with their registers; behavioural models of the primitives in
    the configuration used) at L_max = 256: bit-exact, and the same steady-state throughput
    bound as the generic unit."""
    sim = "icarus"
    if missing_simulator(sim):
        pytest.skip(missing_simulator(sim))
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    from hw.verilog import cached_verilog
    from sim.runner import TIMESCALE, _apply_env
    seed = sim_seed(43)
    vpath, top = cached_verilog("softmax", max_len=MAXLEN, dsp="ecp5")
    text = vpath.read_text()
    assert text.count("DP16KD") >= 3 and text.count("MULT18X18D") >= 5
    model = tmp_path / "ecp5_models.v"
    model.write_text(_dp16kd_model() + _mult18x18d_model())
    _apply_env(sim)
    runner = get_runner(sim)
    runner.build(sources=[vpath, model], hdl_toplevel=top, build_dir=tmp_path / "build",
                 timescale=TIMESCALE, always=True, log_file=tmp_path / "build.log")
    xml = tmp_path / "results.xml"
    report = tmp_path / "perf.json"
    try:
        runner.test(test_module="sim.tb_softmax", hdl_toplevel=top, hdl_toplevel_lang="verilog",
                    testcase=["random_vectors", "throughput"], build_dir=tmp_path / "build",
                    test_dir=tmp_path, results_xml=str(xml), timescale=TIMESCALE,
                    extra_env={"NPU_MAXLEN": str(MAXLEN), "NPU_SEED": str(seed),
                               "NPU_COUNT": "30", "NPU_LENS": "256,16,1",
                               "NPU_REPORT": str(report)},
                    log_file=tmp_path / "test.log")
    except (Exception, SystemExit):     # failures are read from results.xml
        pass
    tests, fails = get_results(xml)
    assert tests == 2 and fails == 0, f"ECP5 softmax failed (NPU_SEED={seed}), see {tmp_path}"
    for rec in json.loads(report.read_text())["records"]:
        L, cpv = rec["length"], rec["cycles_per_vector"]
        assert cpv <= max(L + 1, DIV_STEPS + 2), f"L={L}: {cpv} cycles/vector"
