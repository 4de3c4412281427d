"""FPGA flow checks that stay fast (no place-and-route; that is `make synth`).

* one PE costs one DSP and few LUTs on ECP5 and iCE40 (Yosys synth_ecp5 / synth_ice40 alone);
* the timing harness of flow.fpga wires every port of the design;
* the ECP5 array (MULT18X18D instances, simulated with a behavioural model of the primitive in
  the configuration hw.pe uses) gives bit-exact results in exactly the same cycle counts as
  the generic array that all other simulations use.
"""

import json

import pytest

from flow.fpga import does_not_fit, harness_verilog, pe_cost, verilog_ports
from hw.pe import ProcessingElement
from flow.verilog import cached_verilog
from flow.ecp5_models import ecp5_models, run_ecp5_build
from flow.simulate import TIMESCALE, missing_simulator, run


def test_pe_cost_ecp5():
    c = pe_cost("ecp5")
    assert c["mult"] == 1, c
    assert c["carry"] == 16, c          # the 32-bit accumulator adder, 2 bits per CCU2C
    assert c["lut4"] <= 4, c            # the clear and done logic only


def test_pe_cost_ice40():
    c = pe_cost("ice40")
    assert c["mult"] == 1, c            # one SB_MAC16 per 8x8 multiply
    # The 32-bit accumulator is in logic cells (LUT + SB_CARRY): with PRODUCT_STAGES = 4 the
    # SB_MAC16's own accumulator register cannot take it.
    assert c["lut4"] <= 40, c


def _stat(top, mults, cell):
    # The shape of Yosys 0.70 `stat` output, as flow.fpga parses it.
    return (f"=== fpga_harness ===\n\n      321 cells\n       37   LUT4\n\n"
            f"=== {top} ===\n\n    51672 cells\n     5790   CCU2C\n"
            f"     {mults}   {cell}\n    25739   TRELLIS_FF\n")


def test_does_not_fit_names_the_count_and_the_limit():
    assert does_not_fit(_stat("npu_gemm", 156, "MULT18X18D"), "npu_gemm", "ecp5") is None
    msg = does_not_fit(_stat("npu_gemm", 1024, "MULT18X18D"), "npu_gemm", "ecp5")
    assert msg == "1024 MULT18X18D needed, the LFE5U-85F-6BG381C has 156", msg
    assert does_not_fit(_stat("npu_gemm", 8, "SB_MAC16"), "npu_gemm", "ice40") is None
    msg = does_not_fit(_stat("npu_gemm", 16, "SB_MAC16"), "npu_gemm", "ice40")
    assert msg == "16 SB_MAC16 needed, the iCE40UP5K-SG48 has 8", msg


def test_harness_wires_every_port():
    path, top = cached_verilog("gemm", rows=2, cols=3, dsp="ecp5")
    text = path.read_text()
    ports = verilog_ports(text, top)
    widths = {n: w for _, n, w in ports}
    assert widths["s_axis_op_tdata"] == 8 * (2 + 3) and widths["m_axis_res_tdata"] == 32 * 3
    harness, info = harness_verilog(text, top)
    assert info["input_bits"] == sum(w for d, n, w in ports if d == "input" and n != "clk")
    assert info["output_bits"] == sum(w for d, n, w in ports if d == "output")
    for _, n, _ in ports:
        assert f".{n}(" in harness


def _cycles(report):
    return [(tuple(r["shape"]), r["cycles"], r["ok"]) for r in json.loads(report.read_text())["records"]]


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_ecp5_array_matches_generic_cycle_for_cycle(sim, tmp_path):
    if missing_simulator(sim):
        pytest.skip(missing_simulator(sim))
    if sim == "verilator" and not missing_simulator("icarus"):
        pytest.skip("checked on Icarus (faster to build)")
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    from flow.simulate import apply_tool_env
    rows, cols = 3, 2
    env = {"NPU_ROWS": rows, "NPU_COLS": cols, "NPU_SEED": 11,
           "NPU_SHAPES": "7x5x5,3x1x4,6x12x2"}
    # Generic array through the usual runner.
    generic = tmp_path / "generic.json"
    r = run("gemm", {"rows": rows, "cols": cols}, "sim.tb_gemm", sim=sim, testcase="perf_gemms",
            env={**env, "NPU_REPORT": generic}, tag="ecp5cmp")
    assert r.ok
    # ECP5 array with the primitive model.
    vpath, top = cached_verilog("gemm", rows=rows, cols=cols, dsp="ecp5")
    model = tmp_path / "ecp5_models.v"
    model.write_text(ecp5_models())
    apply_tool_env(sim)
    runner = get_runner(sim)
    args = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL"] \
        if sim == "verilator" else []
    runner.build(sources=[vpath, model], hdl_toplevel=top, build_dir=tmp_path / "build",
                 build_args=args, timescale=TIMESCALE, always=True,
                 log_file=tmp_path / "build.log")
    ecp5 = tmp_path / "ecp5.json"
    xml = tmp_path / "results.xml"
    for testcase, extra in [("perf_gemms", {"NPU_REPORT": ecp5}),
                            ("random_gemms", {"NPU_COUNT": 8})]:
        try:
            runner.test(test_module="sim.tb_gemm", hdl_toplevel=top, hdl_toplevel_lang="verilog",
                        testcase=testcase, build_dir=tmp_path / "build", test_dir=tmp_path,
                        results_xml=str(xml), timescale=TIMESCALE,
                        extra_env={k: str(v) for k, v in {**env, **extra}.items()},
                        log_file=tmp_path / f"{testcase}.log")
        except Exception:
            pass
        tests, fails = get_results(xml)
        assert tests == 1 and fails == 0, f"ECP5 array {testcase} failed, see {tmp_path}"
    assert _cycles(ecp5) == _cycles(generic)
    assert all(ok for _, _, ok in _cycles(ecp5))


def test_product_stages_constant():
    assert ProcessingElement.PRODUCT_STAGES == 4


def test_ecp5_requantizer_is_bit_exact_on_icarus(tmp_path):
    """The requantizer with dsp="ecp5" (16 MULT18X18D instances for 4 lanes, simulated with
    the primitive's behavioural model) runs sim/tb_requant's random cases bit-exact against
    golden."""
    sim = "icarus"
    if missing_simulator(sim):
        pytest.skip(missing_simulator(sim))
    lanes = 4
    vpath, top = cached_verilog("requant", lanes=lanes, dsp="ecp5")
    assert vpath.read_text().count("MULT18X18D") >= 4 * lanes
    tests, fails = run_ecp5_build(vpath, top, "sim.tb_requant",
                                  ["random_cases", "bad_shift_sets_error"],
                                  {"NPU_LANES": lanes, "NPU_SEED": 33, "NPU_COUNT": 25},
                                  tmp_path, sim)
    assert tests == 2 and fails == 0, f"ECP5 requantizer failed (NPU_SEED=33), see {tmp_path}"
