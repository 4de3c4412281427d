"""Behavioural Verilog models of the Lattice ECP5 primitives the ``dsp="ecp5"`` builds
instantiate (MULT18X18D, DP16KD), as this project configures them, so that those builds can
be simulated (Icarus) and compared with the generic ones. They model only the modes used."""

from pathlib import Path

__all__ = ["dp16kd_model", "mult18x18d_model", "ecp5_models", "run_ecp5_build"]


def ecp5_models() -> str:
    """Verilog of both models."""
    return mult18x18d_model() + dp16kd_model()


def dp16kd_model() -> str:
    """DP16KD as hw.ram.BlockRam configures it: both ports DATA_WIDTH 9 or 18, a port
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


def mult18x18d_model() -> str:
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


def run_ecp5_build(vpath: Path, top: str, test_module: str, testcase: str, env: dict,
                   work: Path, sim: str = "icarus") -> tuple[int, int]:
    """Build the ``dsp="ecp5"`` Verilog ``vpath`` (top ``top``) with these primitive models in
    ``work`` and run cocotb ``test_module``'s ``testcase`` with ``env``; returns
    ``(tests, failures)`` read from results.xml (the runner raises only under pytest's own
    collection, so failures are read back rather than caught)."""
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    from .simulate import TIMESCALE, apply_tool_env
    model = work / "ecp5_models.v"
    model.write_text(ecp5_models())
    apply_tool_env(sim)
    runner = get_runner(sim)
    runner.build(sources=[vpath, model], hdl_toplevel=top, build_dir=work / "build",
                 timescale=TIMESCALE, always=True, log_file=work / "build.log")
    xml = work / "results.xml"
    try:
        runner.test(test_module=test_module, hdl_toplevel=top, hdl_toplevel_lang="verilog",
                    testcase=testcase, build_dir=work / "build", test_dir=work,
                    results_xml=str(xml), timescale=TIMESCALE,
                    extra_env={k: str(v) for k, v in env.items()}, log_file=work / "test.log")
    except (Exception, SystemExit):     # failures are read from results.xml
        pass
    return get_results(xml)
