"""``npu``: the command-line tool of the accelerator generator.

    npu verilog [--rows R --cols C -p NAME=VALUE] [-o FILE]   Verilog of npu_top
    npu compile --model FILE [--batch B] [-o FILE.npz]        program, memory plan, cycle model
    npu run --model FILE --images A:B [--sim verilator|icarus] [--batch B] [--waves] [--json]
                                                                inference on the RTL vs golden

``npu run`` compiles the model, builds (or reuses) the simulator, runs the images through the
RTL in chunks (a progress bar on stderr), checks every output against the golden integer
inference and prints per image the class, the cycles and whether it matched, then a per-layer
table: cycle model against the hardware counters, PE utilization against the ideal bound
MACs / (R*C), and the SCALE-Sim textbook prediction. It exits 1 on any mismatch.
Images: ``A:B`` indexes the reference test set (scikit-learn digits, committed), or the
``images`` array of ``--data FILE.npz`` (int8 N x H x W x C, optional ``labels``).
``--waves`` writes the whole run's trace (one simulator run) as FST, with Icarus or Verilator
(Verilator needs zlib's header, ``zlib1g-dev``; without it the trace is VCD).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from golden.model import ModelFormatError, load_model
from hw.npu import NpuConfig
from npu.compiler import CompileError, compile_model
from npu.perf import layer_table, program_cycles

REFERENCE_MODEL = Path(__file__).resolve().parent.parent / "golden" / "data" / "digits_cnn_int8.npz"


def _config(args):
    params = dict(args.param or [])
    if args.rows is not None:
        params["rows"] = args.rows
    if args.cols is not None:
        params["cols"] = args.cols
    return params


def _add_config_args(p):
    p.add_argument("--rows", type=int, help="array rows R (default 8)")
    p.add_argument("--cols", type=int, help="array columns C (default 8)")
    from flow.verilog import _param
    p.add_argument("-p", "--param", type=_param, action="append", metavar="NAME=VALUE",
                   help="other NpuConfig parameters, e.g. act_depth=4096")


def cmd_verilog(args):
    from hw.verilog import generate
    params = _config(args)
    t0 = time.perf_counter()
    text, top = generate("npu", **params)
    out = Path(args.output or "build/npu_top.v")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}: top module {top}, {NpuConfig(**params)}, "
          f"{len(text.splitlines())} lines, {time.perf_counter() - t0:.1f} s")
    return 0


def _load(args):
    if str(args.model).lower().endswith(".onnx"):     # import + quantize (or reuse), see
        from npu.onnx_import import load_or_quantize    # npu/onnx_import.py
        args.model = str(load_or_quantize(args.model, args.calib))
    model = load_model(args.model)
    return model, compile_model(model, _config(args), batch=args.batch)


def cmd_compile(args):
    model, prog = _load(args)
    cfg = prog.config
    print(f"model {model.name!r} on {cfg}, batch {prog.batch}")
    print(f"  setup program: {len(prog.setup)} instructions, {len(prog.setup_stream)} beats of "
          f"resident weights and parameters")
    print(f"  inference program: {len(prog.infer)} instructions at pc {prog.infer_pc}, "
          f"{program_cycles(prog.infer, cfg)} cycles predicted per batch "
          f"({program_cycles(prog.infer, cfg) / prog.batch:.0f} per image)")
    print(f"  ACT: 2 regions of {prog.region_words} words of {cfg.act_depth}")
    for row in layer_table(prog):
        M, K, N = row["gemm"]
        print(f"  {row['layer']:10s} {row['type']:10s} M={M:<6d} K={K:<5d} N={N:<4d} "
              f"predicted {row['predicted']} cycles")
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, instructions=np.array(prog.instructions, np.uint64),
                 setup_stream=prog.setup_stream, infer_pc=np.int64(prog.infer_pc),
                 summary=np.frombuffer(json.dumps({
                     "config": cfg.as_dict(), "batch": prog.batch,
                     "layers": [{"name": L.name, "type": L.type, "gemm": L.gemm, "pc": L.conv_pc,
                                 "regs": L.regs} for L in prog.layers]}).encode(), np.uint8))
        print(f"wrote {out}")
    return 0


def _images(args):
    if args.data:
        d = np.load(args.data)
        images = d["images"]
        labels = d["labels"] if "labels" in d else None
    else:
        from golden import digits
        x, labels = digits.load_test()
        images = digits.to_int8(x)
    try:
        a, b = (int(v) if v else None for v in args.images.split(":"))
    except ValueError:
        raise SystemExit(f"error: --images wants A:B, got {args.images!r}") from None
    a = 0 if a is None else a
    b = len(images) if b is None else b
    if not 0 <= a < b <= len(images):
        raise SystemExit(f"error: --images {args.images}: the set has {len(images)} images")
    return np.arange(a, b), images[a:b], (None if labels is None else labels[a:b])


class Progress:
    def __init__(self, total, enabled):
        self.total, self.done, self.enabled, self.t0 = total, 0, enabled, time.perf_counter()

    def update(self, n):
        self.done += n
        if self.enabled:
            w = 30
            fill = w * self.done // self.total
            el = time.perf_counter() - self.t0
            print(f"\r[{'#' * fill}{'.' * (w - fill)}] {self.done}/{self.total} images "
                  f"{el:.0f} s", end="", file=sys.stderr, flush=True)

    def close(self):
        if self.enabled:
            print(file=sys.stderr)


def cmd_run(args):
    from flow.simulate import missing_simulator, run
    problem = missing_simulator(args.sim)
    if problem:
        raise SystemExit(f"error: {problem}")
    model, prog = _load(args)
    index, images, labels = _images(args)
    if images.dtype.kind == "f":        # float images in the ONNX layout (N, C, H, W)
        from npu.onnx_import import to_model_input
        images = to_model_input(model, images)
    if images.shape[1:] != tuple(model.input_shape) or images.dtype != np.int8:
        raise SystemExit(f"error: images are {images.dtype} {images.shape[1:]}, the model takes "
                         f"int8 {tuple(model.input_shape)}")
    params = _config(args)
    cfg = NpuConfig(**params)
    chunk = len(images) if args.waves else max(args.batch, (args.chunk // args.batch) * args.batch)
    progress = Progress(len(images), not args.json and sys.stderr.isatty() or args.progress)
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
    if labels is not None:
        for rec, lab in zip(records, labels):
            rec["label"] = int(lab)
        result["accuracy"] = float(np.mean([r["pred"] == r["label"] for r in records]))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        _print_result(result, cfg, args)
    return 0 if exact else 1


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
    if "accuracy" in res:
        print(f"accuracy on the RTL: {100 * res['accuracy']:.2f} %")
    print(f"cycles per batch: {res['cycles_per_batch']} measured, "
          f"{res['predicted_cycles_per_batch']} predicted; per image {res['cycles_per_image']:.0f}")
    print(f"wall time: {res['wall_seconds']:.1f} s in all (build, start-up, {len(res['images'])} "
          f"images); {res['hw_wall_seconds_per_batch']:.3f} s per batch of {B} on the simulator")
    print(f"\n{'layer':10s} {'type':10s} {'M x K x N':>16} {'measured':>9} {'model':>7} "
          f"{'ideal':>7} {'PE util':>8} {'SCALE-Sim':>10} {'its util':>9}")
    for row in res["layers"]:
        M, K, N = row["gemm"]
        if row["macs"]:
            util = f"{100 * row['utilization']:.1f}%" if row["utilization"] else "-"
            ss = row["scalesim"]
            ss_util = f"{100 * row['macs'] / (cfg.rows * cfg.cols * ss):.1f}%"
            print(f"{row['layer']:10s} {row['type']:10s} {f'{M}x{K}x{N}':>16} "
                  f"{row['measured']:>9} {row['predicted']:>7} {row['ideal']:>7.0f} {util:>8} "
                  f"{ss:>10} {ss_util:>9}")
        else:
            print(f"{row['layer']:10s} {row['type']:10s} {'':>16} {row['measured']:>9} "
                  f"{row['predicted']:>7}")
    macs = sum(r["macs"] for r in res["layers"])
    print(f"end to end: {macs} MACs in {res['cycles_per_batch']} cycles = "
          f"{100 * macs / (cfg.rows * cfg.cols * res['cycles_per_batch']):.1f}% of the "
          f"{cfg.rows}x{cfg.cols} array's peak")
    if res["waves"]:
        print(f"waves: {res['waves']}")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="npu", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("verilog", help="write the Verilog of npu_top")
    _add_config_args(p)
    p.add_argument("-o", "--output", help="output file (default build/npu_top.v)")
    p.set_defaults(func=cmd_verilog)
    for name, func, help_ in (("compile", cmd_compile, "compile a model to a program"),
                              ("run", cmd_run, "run a model on the RTL against golden")):
        p = sub.add_parser(name, help=help_)
        _add_config_args(p)
        p.add_argument("--model", default=str(REFERENCE_MODEL),
                       help="model file (golden.model format; default: the reference CNN)")
        p.add_argument("--batch", type=int, default=1)
        p.add_argument("--calib", help="with an .onnx --model: .npz of float calibration images "
                       "(N, C, H, W); quantizes and saves <model>.int8.npz for later runs")
        p.set_defaults(func=func)
        if name == "compile":
            p.add_argument("-o", "--output", help="write the program as .npz")
        else:
            p.add_argument("--images", default="0:32", help="A:B range of images (default 0:32)")
            p.add_argument("--data", help=".npz with int8 'images' (and 'labels')")
            p.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
            p.add_argument("--waves", action="store_true",
                           help="write an FST trace (Verilator needs zlib1g-dev, else VCD)")
            p.add_argument("--json", action="store_true", help="print the result as JSON")
            p.add_argument("--seed", type=int, default=1, help="seed of the backpressure")
            p.add_argument("--stall", type=float, default=0.0,
                           help="pause probability on both AXI streams")
            p.add_argument("--chunk", type=int, default=64, help="images per simulator run")
            p.add_argument("--progress", action="store_true", help="progress bar even if not a tty")
            p.add_argument("-v", "--verbose", action="store_true", help="a line per image")
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except (CompileError, ModelFormatError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
