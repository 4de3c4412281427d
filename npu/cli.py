"""``npu``: the one command of the accelerator generator.

    npu verilog [DESIGN] [--rows R --cols C -p NAME=VALUE] [-o FILE]   Verilog of a design
    npu compile [--model FILE] [--batch B] [-o FILE.npz]         program, memory plan, cycle model
    npu run [--model FILE] [--images A:B] [--sim verilator|icarus] [--batch B] [--waves] [--json]
                                                                  inference on the RTL vs golden
    npu sim-gemm | synth | depth | stat | scaling | bench | report | onnx | vector-perf |
        junit-summary                              (``npu --help``; ``npu COMMAND --help``)

Every subcommand that builds a configuration takes it the same way: ``--rows``, ``--cols`` and
``-p NAME=VALUE`` for any other integer parameter of the design (``NpuConfig``'s for npu_top);
a bad value or an unknown name is refused in one line that names it, with exit status 2.
DESIGN is a name of :data:`hw.verilog.DESIGNS` (default ``npu``, the accelerator ``npu_top``).

``npu run`` compiles the model, builds (or reuses) the simulator, runs the images through the
RTL in chunks (a progress bar on stderr), checks every output against the golden integer
inference and prints per image the class, the cycles and whether it matched, then a per-layer
table: cycle model against the hardware counters, PE utilization against the ideal bound
MACs / (R*C), and the SCALE-Sim textbook prediction. It exits 1 on any mismatch.
Images: ``A:B`` indexes the reference test set (scikit-learn digits, committed; only for a
model whose input is theirs, 8 x 8 x 1 at the reference CNN's input quantization), or the
``images`` array of ``--data FILE.npz`` (int8 N x H x W x C, or float in the ONNX input
layout; optional ``labels``, one integer per image), checked before any simulation. Every
bad input (an option value, a file, a model too big) ends in one line, exit status 2. With an ``.onnx`` model and float images, ``npu run`` also
reports the float reference (:mod:`npu.float_reference`: onnxruntime's float graph on the same
images against the int8 outputs of the RTL, and onnxruntime's own static quantization).
A ``.tflite`` ``--model`` (int8) is imported as it is (npu/tflite_import.py) and its images
also go through LiteRT's reference kernels (npu/litert_reference.py): ``npu run`` prints
whether every output equals LiteRT's, puts ``"litert_reference"`` in ``--json`` and exits 1 on
a difference. ``--json`` records carry each image's int8 ``"output"`` vector.
``--waves`` writes the whole run's trace (one simulator run) as FST, with Icarus or Verilator
(Verilator needs zlib's header, ``zlib1g-dev``; without it the trace is VCD).
"""

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from flow.simulate import SIMULATORS, missing_simulator, run
from golden.model import ModelFormatError, load_model, read_npz
from hw.npu import NpuConfig
from hw.verilog import DESIGNS
from npu.compiler import CompileError, compile_model
from npu.perf import layer_table, program_cycles

REFERENCE_MODEL = Path(__file__).resolve().parent.parent / "golden" / "data" / "digits_cnn_int8.npz"


# ---- Options shared by the subcommands ------------------------------------------------------

class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose refusal of a bad option is one line (``error: npu run:
    argument --stall: ...``) with exit status 2, like every other refusal of ``npu``; the usage
    is one ``--help`` away."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def probability(text: str) -> float:
    """A pause probability in [0, 1): at 1 (or above) a stream never moves, NaN is no number."""
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= p < 1:              # also refuses NaN
        raise argparse.ArgumentTypeError(f"{text} is not a probability in [0, 1) (at 1 the "
                                         f"streams never move)")
    return p


def int_at_least(low: int) -> Callable[[str], int]:
    """The type of an integer option of at least ``low``."""
    def parse(text: str) -> int:
        try:
            v = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{text} is below {low}, the smallest it can be")
        return v
    parse.__name__ = f"integer >= {low}"
    return parse


def parse_param(text: str) -> tuple[str, int]:
    """``NAME=VALUE`` of ``-p`` as ``(name, value)``; the value is an integer (``0x..`` too)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, int(value, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: {value!r} is not an integer") from None


def config_parser() -> argparse.ArgumentParser:
    """The configuration options, the parent parser of every subcommand that takes them."""
    parser = OneLineParser(add_help=False)
    group = parser.add_argument_group("configuration")
    group.add_argument("--rows", type=int, help="array rows R (default 8)")
    group.add_argument("--cols", type=int, help="array columns C (default 8)")
    group.add_argument("-p", "--param", type=parse_param, action="append", default=[],
                       metavar="NAME=VALUE",
                       help="another parameter of the design, e.g. act_depth=4096 (npu_top) "
                       "or lanes=8")
    return parser


def design_parser() -> argparse.ArgumentParser:
    """The design argument, the parent parser of every subcommand that builds any design."""
    parser = OneLineParser(add_help=False)
    parser.add_argument("design", nargs="?", default="npu", choices=sorted(DESIGNS),
                        metavar="DESIGN", help=f"one of {', '.join(sorted(DESIGNS))} "
                        "(hw/verilog.py DESIGNS; default npu, the accelerator npu_top)")
    return parser


def config_params(args: argparse.Namespace) -> dict[str, int]:
    """The configuration as one dict: the ``-p`` parameters, ``--rows``/``--cols`` over them."""
    params = dict(args.param)
    for name in ("rows", "cols"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    return params


# ---- npu compile / npu run ---------------------------------------------------------------

def _native_model(args):
    """Dispatch on the suffix of ``--model``: an ``.onnx`` or ``.tflite`` file is imported
    (``args.onnx`` / ``args.tflite`` keep its path, for the float reference and LiteRT);
    returns the golden.model file."""
    suffix = Path(args.model).suffix.lower()
    args.tflite = args.model if suffix == ".tflite" else None
    args.onnx = args.model if suffix == ".onnx" else None
    if args.calib and not args.onnx:
        raise ValueError(f"--calib is for an .onnx --model; {args.model} is already quantized")
    if args.onnx:                                      # import + quantize (or reuse), see
        from npu.onnx_import import load_or_quantize    # npu/onnx_import.py
        return str(load_or_quantize(args.model, args.calib))
    if args.tflite:                                    # int8 as it is, see npu/tflite_import.py
        from npu.tflite_import import load_tflite
        return str(load_tflite(args.model))
    return args.model


def _load(args):
    args.model = _native_model(args)
    model = load_model(args.model)
    return model, compile_model(model, args.params, batch=args.batch)


def cmd_compile(args: argparse.Namespace) -> int:
    model, prog = _load(args)
    cfg = prog.config
    print(f"model {model.name!r} on {cfg}, batch {prog.batch}")
    print(f"  setup program: {len(prog.setup)} instructions, {len(prog.setup_stream)} beats of "
          f"resident weights and parameters")
    print(f"  inference program: {len(prog.infer)} instructions at pc {prog.infer_pc}, "
          f"{program_cycles(prog.infer, cfg)} cycles predicted per batch "
          f"({program_cycles(prog.infer, cfg) / prog.batch:.0f} per image)")
    print(f"  ACT: {prog.act_peak} of {cfg.act_depth} words at the peak (a layer's input and "
          f"output tensors)")
    for row in layer_table(prog):
        M, K, N = row["gemm"]
        print(f"  {row['layer']:10s} {row['type']:10s} M={M:<6d} K={K:<5d} N={N:<4d} "
              f"predicted {row['predicted']} cycles")
    if args.output:
        out = Path(args.output)
        with output_file(out) as f:
            np.savez(f, instructions=np.array(prog.instructions, np.uint64),
                     setup_stream=prog.setup_stream, infer_pc=np.int64(prog.infer_pc),
                     summary=np.frombuffer(json.dumps({
                         "config": cfg.as_dict(), "batch": prog.batch,
                         "layers": [{"name": L.name, "type": L.type, "gemm": L.gemm,
                                     "pc": L.conv_pc, "regs": L.regs}
                                    for L in prog.layers]}).encode(), np.uint8))
        print(f"wrote {out}")
    return 0


@contextmanager
def output_file(path: Path, option: str = "-o"):
    """``path`` open for writing in binary, its directory made first; a path that cannot be
    written is a ``ValueError`` naming the option, the path and why (one line, exit 2)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "wb")
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot write it ({e.strerror or e})") from None
    with f:
        yield f


def load_data(path: str):
    """``(images, labels or None)`` of a ``--data`` file, checked before any simulation:
    ``images`` int8 or float (NaN and Inf refused), N >= 1 of them; ``labels``, if present,
    one integer per image."""
    from npu.onnx_import import check_finite
    source = f"--data {path}"
    arrays = read_npz(path, source)
    if "images" not in arrays:
        raise ValueError(f"{source}: no 'images' array (it has: "
                         f"{', '.join(sorted(arrays)) or 'nothing'})")
    images, labels = arrays["images"], arrays.get("labels")
    if images.ndim < 2 or not len(images):
        raise ValueError(f"{source}: 'images' of shape {images.shape}; want (N, ...) with "
                         f"N >= 1 images")
    if images.dtype != np.int8 and images.dtype.kind != "f":
        raise ValueError(f"{source}: 'images' are {images.dtype}; want int8 in the model's "
                         f"input layout or float in the ONNX input layout")
    check_finite(images, f"{source}: 'images'")
    if labels is not None and (labels.dtype.kind not in "iu" or labels.ndim != 1):
        raise ValueError(f"{source}: 'labels' are {labels.dtype} of shape {labels.shape}; "
                         f"want one integer per image")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{source}: {len(labels)} labels for {len(images)} images; want one "
                         f"label per image")
    return images, labels


def _reference_digits(args, model):
    """The reference test set (the images without ``--data``), if it is this model's input:
    int8 at the reference CNN's input shape and quantization; otherwise refused, naming both."""
    from golden import digits
    x, labels = digits.load_test()
    images = digits.to_int8(x)
    want = (tuple(images.shape[1:]), digits.INPUT_SCALE, digits.INPUT_ZERO_POINT)
    got = (tuple(model.input_shape), model.input_scale, model.input_zero_point)
    if got != want:
        kind = "float images in the ONNX input layout" if args.onnx else "its images"
        raise ValueError(
            f"{args.onnx or args.model}: pass --data with {kind}: without --data the images are "
            f"the reference digits, int8 {want[0]} at input scale {want[1]:.6g} and zero point "
            f"{want[2]}, while this model takes {got[0]} at scale {got[1]:.6g} and zero point "
            f"{got[2]}")
    return images, labels


def _images(args, model):
    """``(indices, images, labels or None)``: ``--images A:B`` of the ``--data`` file or of the
    reference digits, each checked."""
    images, labels = load_data(args.data) if args.data else _reference_digits(args, model)
    try:
        a, b = (int(v) if v else None for v in args.images.split(":"))
    except ValueError:
        raise ValueError(f"--images wants A:B, got {args.images!r}") from None
    a = 0 if a is None else a
    b = len(images) if b is None else b
    if not 0 <= a < b <= len(images):
        raise ValueError(f"--images {args.images}: the set has {len(images)} images")
    return np.arange(a, b), images[a:b], (None if labels is None else labels[a:b])


def cmd_run(args: argparse.Namespace) -> int:
    problem = missing_simulator(args.sim)
    if problem:
        raise SystemExit(f"error: {problem}")
    model, prog = _load(args)
    index, images, labels = _images(args, model)
    float_images = None
    if images.dtype.kind == "f" and not args.tflite:   # float images in ONNX's (N, C, H, W)
        from npu.onnx_import import to_model_input
        float_images, images = images, to_model_input(model, images)
    if images.shape[1:] != tuple(model.input_shape) or images.dtype != np.int8:
        raise ValueError(f"images are {images.dtype} {images.shape[1:]}, the model takes "
                         f"int8 {tuple(model.input_shape)}")
    params = args.params
    cfg = NpuConfig(**params)
    chunk = len(images) if args.waves else max(args.batch, (args.chunk // args.batch) * args.batch)
    show_progress = args.progress or (sys.stderr.isatty() and not args.json)
    progress = tqdm(total=len(images), unit="image", file=sys.stderr, disable=not show_progress)
    records, batches, waves = [], [], None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for start in range(0, len(images), chunk):
            part = images[start:start + chunk]
            np.savez(tmp / "images.npz", images=part)
            report = tmp / "report.json"
            r = run("npu", params, "sim.tb_npu", sim=args.sim, testcase="model_inference",
                    env={"NPU_CONFIG": json.dumps(cfg.as_dict()), "NPU_MODEL": Path(args.model).resolve(),
                         "NPU_IMAGES": tmp / "images.npz", "NPU_BATCH": args.batch,
                         "NPU_SEED": args.seed, "NPU_STALL": args.stall, "NPU_REPORT": report},
                    waves=args.waves, tag=f"cli{start}")
            if not report.exists():
                progress.close()
                print(f"error: the simulation of images {index[start]}.. failed to report; "
                      f"log in {r.results_xml.parent}", file=sys.stderr)
                return 1
            rep = json.loads(report.read_text())
            for rec in rep["records"]:
                rec["image"] = int(index[start + rec["image"]])
            records += rep["records"]
            batches += rep["batches"]
            if args.waves:
                dumps = [p for ext in ("fst", "vcd") for p in r.results_xml.parent.glob(f"*.{ext}")]
                waves = str(dumps[0]) if dumps else None
            progress.update(len(part))
    progress.close()
    wall = time.perf_counter() - t0
    measured = batches[-1]["instr"] if batches else None
    table = layer_table(prog, measured)
    exact = all(r["exact"] for r in records)
    litert = _litert_reference(args, images, records)
    per_batch = [b["cycles"] for b in batches]
    result = {
        "model": str(args.model), "config": cfg.as_dict(), "batch": args.batch,
        "simulator": args.sim, "images": records, "all_exact": exact,
        "cycles_per_batch": per_batch[-1] if per_batch else None,
        "cycles_per_image": (per_batch[-1] / args.batch) if per_batch else None,
        "predicted_cycles_per_batch": program_cycles(prog.infer, cfg),
        "wall_seconds": wall,
        "hw_wall_seconds_per_batch": float(np.mean([b["wall_s"] for b in batches])),
        "layers": table, "waves": waves,
    }
    if litert is not None:
        result["litert_reference"] = litert
    if labels is not None:
        for rec, lab in zip(records, labels):
            rec["label"] = int(lab)
        result["accuracy"] = float(np.mean([r["pred"] == r["label"] for r in records]))
    outputs = [rec["output"] for rec in records]
    if args.onnx and float_images is not None:       # how far is int8 from the float graph
        from npu.float_reference import run_report
        result["float_reference"] = run_report(args.onnx, float_images, outputs, model, labels,
                                               args.calib)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        _print_result(result, cfg, args)
    return 0 if exact and (litert is None or litert["exact"]) else 1


def _litert_reference(args, images, records):
    """A ``.tflite`` model's images through LiteRT's reference kernels against the RTL's
    outputs (npu/litert_reference.py); None for other models."""
    if not args.tflite:
        return None
    from npu.litert_reference import compare
    return compare(args.tflite, images, [r["output"] for r in records])


def _print_result(res, cfg, args):
    B = res["batch"]
    print(f"\nnpu_top {cfg.rows}x{cfg.cols} on {res['simulator']}, batch {B}: "
          f"{len(res['images'])} images")
    if args.verbose or len(res["images"]) <= 16:
        print(f"{'image':>6} {'class':>5} {'label':>5} {'golden':>6} {'cycles':>7}  match")
        for r in res["images"]:
            print(f"{r['image']:>6} {r['pred']:>5} {r.get('label', '-'):>5} {r['golden_pred']:>6} "
                  f"{res['cycles_per_image']:>7.0f}  {'bit-exact' if r['exact'] else 'MISMATCH'}")
    bad = [r["image"] for r in res["images"] if not r["exact"]]
    print(f"bit-exact against golden: {len(res['images']) - len(bad)}/{len(res['images'])}"
          + (f"  MISMATCH on images {bad[:20]}" if bad else ""))
    if "litert_reference" in res:
        lr = res["litert_reference"]
        print(f"bit-exact against LiteRT (reference kernels): "
              + ("yes" if lr["exact"] else f"NO, up to {lr['max_abs_diff_lsb']} LSB apart")
              + f", {lr['images']} images")
    if "accuracy" in res:
        print(f"accuracy on the RTL: {100 * res['accuracy']:.2f} %")
    print(f"cycles per batch: {res['cycles_per_batch']} measured, "
          f"{res['predicted_cycles_per_batch']} predicted; per image {res['cycles_per_image']:.0f}")
    print(f"wall time: {res['wall_seconds']:.1f} s in all (build, start-up, {len(res['images'])} "
          f"images); {res['hw_wall_seconds_per_batch']:.3f} s per batch of {B} on the simulator")
    nw = max([10] + [len(r["layer"]) for r in res["layers"]])
    tw = max([10] + [len(r["type"]) for r in res["layers"]])
    print(f"\n{'layer':{nw}s} {'type':{tw}s} {'M x K x N':>16} {'measured':>9} {'model':>7} "
          f"{'ideal':>7} {'PE util':>8} {'SCALE-Sim':>10} {'its util':>9}")
    for row in res["layers"]:
        M, K, N = row["gemm"]
        if row["macs"]:
            util = f"{100 * row['utilization']:.1f}%" if row["utilization"] else "-"
            ss = row["scalesim"]
            ss_util = f"{100 * row['macs'] / (cfg.rows * cfg.cols * ss):.1f}%"
            print(f"{row['layer']:{nw}s} {row['type']:{tw}s} {f'{M}x{K}x{N}':>16} "
                  f"{row['measured']:>9} {row['predicted']:>7} {row['ideal']:>7.0f} {util:>8} "
                  f"{ss:>10} {ss_util:>9}")
        else:
            print(f"{row['layer']:{nw}s} {row['type']:{tw}s} {'':>16} {row['measured']:>9} "
                  f"{row['predicted']:>7}")
    macs = sum(r["macs"] for r in res["layers"])
    print(f"end to end: {macs} MACs in {res['cycles_per_batch']} cycles = "
          f"{100 * macs / (cfg.rows * cfg.cols * res['cycles_per_batch']):.1f}% of the "
          f"{cfg.rows}x{cfg.cols} array's peak")
    if "float_reference" in res:
        from npu.float_reference import format_report
        print("\n" + "\n".join(format_report(res["float_reference"])))
    if res["waves"]:
        print(f"waves: {res['waves']}")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=str(REFERENCE_MODEL),
                        help="model file: golden.model .npz (default: the reference CNN), "
                        ".onnx (with --calib) or int8 .tflite (imported as it is)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--calib", help="with an .onnx --model: .npz of float calibration images "
                        "(N, C, H, W); quantizes and saves <model>.int8.npz for later runs")


def _add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    _add_model_arguments(parser)
    parser.add_argument("-o", "--output", help="write the program as .npz")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    _add_model_arguments(parser)
    parser.add_argument("--images", default="0:32", help="A:B range of images (default 0:32)")
    parser.add_argument("--data", help=".npz with 'images' (and 'labels', one integer per "
                        "image): int8 in the model's input layout, N x H x W x C (a .tflite "
                        "model's NHWC input without its batch axis), or float in the ONNX input "
                        "layout (an .onnx --model then also reports the float reference: "
                        "onnxruntime on the same images). Required unless the model takes the "
                        "reference digits (the default set: 8 x 8 x 1 at the reference CNN's "
                        "input quantization)")
    parser.add_argument("--sim", default="verilator", choices=SIMULATORS)
    parser.add_argument("--waves", action="store_true",
                        help="write an FST trace (Verilator needs zlib1g-dev, else VCD)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--seed", type=int_at_least(0), default=1,
                        help="seed of the backpressure (an integer >= 0)")
    parser.add_argument("--stall", type=probability, default=0.0,
                        help="pause probability on both AXI streams, in [0, 1)")
    parser.add_argument("--chunk", type=int_at_least(1), default=64,
                        help="images per simulator run")
    parser.add_argument("--progress", action="store_true",
                        help="progress bar even if stderr is not a terminal")
    parser.add_argument("-v", "--verbose", action="store_true", help="a line per image")


# ---- The command ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Subcommand:
    """One subcommand: ``add_arguments(parser)`` declares its own options (None: it has none)
    and ``main(args)`` runs it, returning the exit status. With ``configured``, it takes the
    configuration options and finds them in ``args.params``; with ``design``, a design name in
    ``args.design``."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None] | None
    main: Callable[[argparse.Namespace], int]
    configured: bool = False
    design: bool = False


def subcommands() -> list[Subcommand]:
    """Every subcommand of ``npu``, in the order of ``npu --help``."""
    # Imported here, not at the top: npu.bench imports this module.
    from flow import fpga, gemm_perf, junit_summary, logic_depth, scaling, synth, vector_perf
    from flow import verilog
    from golden import report
    from npu import bench, onnx_export
    return [
        Subcommand("verilog", "write the Verilog of a design (npu_top by default)",
                   verilog.add_arguments, verilog.main, configured=True, design=True),
        Subcommand("compile", "compile a model to a program",
                   _add_compile_arguments, cmd_compile, configured=True),
        Subcommand("run", "run a model on the RTL against golden",
                   _add_run_arguments, cmd_run, configured=True),
        Subcommand("sim-gemm", "the GEMM engine alone on the RTL: cycles, PE utilization",
                   gemm_perf.add_arguments, gemm_perf.main, configured=True),
        Subcommand("synth", "FPGA synthesis and place-and-route: resources, Fmax",
                   fpga.add_arguments, fpga.main, configured=True, design=True),
        Subcommand("depth", "deepest register-to-register paths after synth_ecp5 (no P&R)",
                   logic_depth.add_arguments, logic_depth.main, configured=True, design=True),
        Subcommand("stat", "Yosys generic synthesis statistics",
                   None, synth.main, configured=True, design=True),
        Subcommand("scaling", "scaling table of the GEMM array (build/scaling/)",
                   scaling.add_arguments, scaling.main),
        Subcommand("bench", "the performance report (docs/bench/)",
                   None, bench.main, configured=True),
        Subcommand("report", "accuracy, size and MACs per layer of the reference CNN",
                   report.add_arguments, report.main),
        Subcommand("onnx", "ONNX export of the reference CNN; --compare: onnxruntime vs golden",
                   onnx_export.add_arguments, onnx_export.main),
        Subcommand("vector-perf", "throughput of the vector units on the RTL",
                   vector_perf.add_arguments, vector_perf.main),
        Subcommand("junit-summary", "counts and failures of a JUnit XML file (make regress)",
                   junit_summary.add_arguments, junit_summary.main),
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="npu", description="The one command of the int8 accelerator generator.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config, design = config_parser(), design_parser()
    for cmd in subcommands():
        parents = ([design] if cmd.design else []) + ([config] if cmd.configured else [])
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, parents=parents)
        if cmd.add_arguments:
            cmd.add_arguments(p)
        p.set_defaults(command_main=cmd.main, configured=cmd.configured)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.configured:
        args.params = config_params(args)
    try:
        return args.command_main(args)
    except (CompileError, ModelFormatError, ValueError) as e:
        # A bad parameter, model or program: one line naming it, not a traceback.
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2


def one_line(text: str) -> str:
    """``text`` as one printable line: runs of white space (the newlines of a message quoted
    from a library, such as the ONNX checker's) become one space, other control characters
    (a corrupt file's names) are escaped."""
    text = " ".join(text.split())
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


if __name__ == "__main__":
    sys.exit(main())
