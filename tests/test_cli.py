"""The `npu` command: one parser of the configuration options for every subcommand, one-line
errors for bad parameters, and a Verilog cache keyed on what generates Verilog only."""

import argparse

import numpy as np
import pytest

from flow.verilog import ROOT, check_params, verilog_sources
from npu.cli import REFERENCE_MODEL, build_parser, main, parse_param, subcommands

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


# ---- issue 21: every refusal of bad input is one line, a non-zero exit, no simulation ------

def refused(argv, capsys):
    """``(status, stderr)`` of ``npu ARGV`` in-process; parser refusals exit (SystemExit)."""
    try:
        status = main(argv)
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err
    return status, err


def assert_one_line(status, err, *needles):
    assert status not in (0, None) and "Traceback" not in err, (status, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def no_simulation(monkeypatch):
    """``npu run`` as far as the simulation, which must not start (a refusal comes first);
    a simulator counts as installed. Reaching it raises :class:`Simulated`."""
    import npu.cli

    def run(*args, **kwargs):
        raise Simulated()
    monkeypatch.setattr(npu.cli, "run", run)
    monkeypatch.setattr(npu.cli, "missing_simulator", lambda sim: None)


class Simulated(Exception):
    """``npu run`` reached the simulation."""


@pytest.mark.parametrize("option,value,needle", [
    ("--stall", "2.0", "not a probability in [0, 1)"),     # never finished
    ("--stall", "1", "not a probability in [0, 1)"),
    ("--stall", "nan", "not a probability in [0, 1)"),     # was no stall
    ("--stall", "-0.5", "not a probability in [0, 1)"),    # was no stall
    ("--stall", "often", "'often' is not a number"),
    ("--seed", "-1", "-1 is below 0"),                     # failed inside the testbench
    ("--chunk", "0", "0 is below 1"),
    ("--sim", "spice", "invalid choice: 'spice'"),
])
def test_run_option_values_are_refused_in_one_line(option, value, needle, capsys,
                                                   no_simulation):
    status, err = refused(["run", "--images", "0:1", f"{option}={value}"], capsys)
    assert status == 2
    assert_one_line(status, err, f"argument {option}", needle)


def test_data_file_is_checked_before_any_simulation(tmp_path, capsys, no_simulation):
    """A --data file that is missing, has no images, images of the wrong dtype or with NaN,
    or labels that are not one integer per image: refused before the first simulation
    (fewer labels than images was a traceback after the whole simulation)."""
    int8 = np.zeros((4, 8, 8, 1), np.int8)
    nan = np.zeros((4, 8, 8, 1), np.float32)
    nan[1, 4, 0, 0] = np.nan
    files = {
        "noimages": {"x": int8},
        "fewlabels": {"images": int8, "labels": np.arange(2)},
        "floatlabels": {"images": int8, "labels": np.zeros(4)},
        "int32": {"images": int8.astype(np.int32)},
        "nan": {"images": nan},
        "scalar": {"images": np.int8(3)},
    }
    for name, arrays in files.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
    cases = [("missing", "no such file"),
             ("noimages", "no 'images' array (it has: x)"),
             ("fewlabels", "2 labels for 4 images"),
             ("floatlabels", "'labels' are float64"),
             ("int32", "'images' are int32; want int8"),
             ("nan", "1 NaN or Inf values (first in image 1 at (4, 0, 0))"),
             ("scalar", "'images' of shape ()")]
    for name, needle in cases:
        path = tmp_path / f"{name}.npz"
        status, err = refused(["run", "--data", str(path), "--images", "0:1"], capsys)
        assert_one_line(status, err, f"--data {path}", needle)
    with pytest.raises(Simulated):          # the same images, well formed, do reach it
        np.savez(tmp_path / "good.npz", images=int8, labels=np.arange(4))
        main(["run", "--data", str(tmp_path / "good.npz"), "--images", "0:1"])


def _tiny_model(input_shape, scale_range=1.0):
    """A conv and a dense layer quantized on random images in +-scale_range."""
    from golden import float_model
    from golden.ptq import activation_qparams, quantize_model
    arch = {"name": "tiny", "input_shape": list(input_shape), "layers": [
        {"type": "conv2d", "name": "c", "kernel": 3, "stride": 1, "padding": 1,
         "in_channels": input_shape[-1], "out_channels": 4, "activation": "relu"},
        {"type": "flatten", "name": "f"},
        {"type": "dense", "name": "d", "in_features": 4 * input_shape[0] * input_shape[1],
         "out_features": 3, "activation": "none"}]}
    rng = np.random.default_rng(0)
    params = float_model.init_params(arch, rng)
    calib = rng.uniform(-scale_range, scale_range, (8, *input_shape)).astype(np.float32)
    return quantize_model(arch, params, calib, *activation_qparams(-scale_range, scale_range))


@pytest.mark.parametrize("shape", [(6, 6, 1), (8, 8, 1)])
def test_reference_digits_only_for_a_model_that_takes_them(shape, tmp_path, capsys,
                                                           no_simulation):
    """Without --data the images are the reference digits, int8 at the reference CNN's
    input quantization: a model with another input shape or scale must get --data (an ONNX
    model ran on them quantized for the reference CNN: 51 % of the pixels wrong)."""
    from golden.model import save_model
    save_model(tmp_path / "m.npz", _tiny_model(shape))
    status, err = refused(["run", "--model", str(tmp_path / "m.npz")], capsys)
    assert_one_line(status, err, "pass --data with its images", "the reference digits",
                    f"this model takes {shape}")
    with pytest.raises(Simulated):
        main(["run", "--images", "0:1"])            # the reference CNN takes them
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Required unless the model takes the reference digits" in help_text


def test_unwritable_output_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for argv in (["compile", "-o", str(tmp_path / "file" / "p.npz")],
                 ["compile", "-o", str(tmp_path)],
                 ["verilog", "gemm", "--rows", "2", "--cols", "2", "-o",
                  str(tmp_path / "file" / "g.v")]):
        status, err = refused(argv, capsys)
        assert_one_line(status, err, f"-o {argv[-1]}: cannot write it")


def test_compile_output_is_the_program(tmp_path, capsys):
    """-o writes exactly the named file (np.savez would have added .npz to another name)."""
    from npu.compiler import compile_model
    from golden.model import load_model
    assert main(["compile", "-o", str(tmp_path / "prog.bin")]) == 0
    with np.load(tmp_path / "prog.bin") as f:
        prog = compile_model(load_model(REFERENCE_MODEL), {})
        assert f["instructions"].tolist() == list(prog.instructions)
