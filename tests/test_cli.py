"""The `npu` command: one parser of the configuration options for every subcommand, one-line
errors for bad parameters, and a Verilog cache keyed on what generates Verilog only."""

import argparse

import pytest

from flow.verilog import ROOT, check_params, verilog_sources
from npu.cli import build_parser, main, parse_param, subcommands

CONFIGURED = {"verilog", "compile", "run", "sim-gemm", "synth", "depth", "stat", "bench"}


def test_parse_param():
    assert parse_param("act_depth=4096") == ("act_depth", 4096)
    assert parse_param("lanes=0x8") == ("lanes", 8)
    for bad in ("act_depth", "=3", "rows=x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_param(bad)


def test_every_configured_subcommand_shares_the_options():
    assert {c.name for c in subcommands() if c.configured} == CONFIGURED
    parser = build_parser()
    for name in CONFIGURED:
        args = parser.parse_args([name, "--rows", "4", "-p", "cols=2", "-p", "x=0x10"])
        assert (args.rows, args.param) == (4, [("cols", 2), ("x", 16)])


@pytest.mark.parametrize("argv,words", [
    (["compile", "-p", "act_dpth=4096"], ["'act_dpth'", "act_depth", "softmax_max_len"]),
    (["verilog", "gemm", "-p", "lanes=4"], ["'lanes'", "design gemm", "rows, cols"]),
    (["stat", "pooling", "--rows", "4"], ["'rows'", "design pooling", "lanes"]),
    (["compile", "--rows", "65"], ["rows must be between 1 and 64"]),
])
def test_bad_parameter_is_one_line(argv, words, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    for word in words:
        assert word in err


def test_check_params_leaves_npu_config_to_npu_config():
    check_params("gemm", {"rows": 2, "dsp": "ecp5"})
    check_params("npu", {"act_depth": 4096})       # NpuTop(**config): NpuConfig checks them
    with pytest.raises(ValueError, match="'depth' of design requant"):
        check_params("requant", {"depth": 1})


def test_verilog_cache_key_covers_hw_and_the_golden_it_imports_only():
    sources = {p.relative_to(ROOT).as_posix() for p in verilog_sources()}
    assert {"hw/npu.py", "hw/verilog.py", "golden/gemm.py", "golden/quant.py"} <= sources
    assert not any(s.startswith(("flow/", "sim/", "npu/")) for s in sources)
    assert "golden/train.py" not in sources and "golden/model.py" not in sources
