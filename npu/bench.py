"""``npu bench`` (``make bench``): the performance report, regenerated from measurements.

It runs the reference CNN on the RTL (Verilator) at batch 1 and at batch R, reads the hardware
cycle counters and the cycle model, the wall time per inference, and the Fmax of the last
``make synth`` run (``build/synth/npu-RxC-ecp5.json``, if there is one), and prints one table.
A third run gives the reference CNN a WGT of 512 words, too small to keep its weights
resident, so every batch streams them, double buffered; the foreground-only alternative
comes from the cycle model. It also reports LeNet-5 (CIFAR-10 shape, random weights: only the shapes matter for cycles)
from the cycle model, whose CONV predictions agree with the RTL counters to the cycle, against
the SCALE-Sim textbook formula.

Outputs: ``docs/bench/bench.json``, ``docs/bench/utilization.png`` and, when a scaling table
exists (``build/scaling/scaling.json`` from ``npu scaling``),
``docs/bench/scaling.png``.
"""

import argparse
import contextlib
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np

from golden import float_model
from golden.ptq import activation_qparams, quantize_model
from hw.npu import NpuConfig
from npu.cli import main as npu_main
from npu.compiler import compile_model
from npu.perf import layer_table, predict, program_cycles

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "bench"
STREAMED_WGT_DEPTH = 512    # too small to keep the reference CNN's weights resident

LENET5 = {
    "name": "lenet5", "input_shape": [32, 32, 3],
    "layers": [
        {"type": "conv2d", "name": "conv1", "kernel": 5, "stride": 1, "padding": 0,
         "in_channels": 3, "out_channels": 6, "activation": "relu"},
        {"type": "maxpool2d", "name": "pool1", "kernel": 2, "stride": 2, "padding": 0},
        {"type": "conv2d", "name": "conv2", "kernel": 5, "stride": 1, "padding": 0,
         "in_channels": 6, "out_channels": 16, "activation": "relu"},
        {"type": "maxpool2d", "name": "pool2", "kernel": 2, "stride": 2, "padding": 0},
        {"type": "flatten", "name": "flatten"},
        {"type": "dense", "name": "fc1", "in_features": 400, "out_features": 120,
         "activation": "relu"},
        {"type": "dense", "name": "fc2", "in_features": 120, "out_features": 84,
         "activation": "relu"},
        {"type": "dense", "name": "fc3", "in_features": 84, "out_features": 10,
         "activation": "none"},
        {"type": "softmax", "name": "softmax"},
    ],
}


def last_synthesis(params: dict) -> tuple[dict | None, str | None]:
    """``(result, stale)`` of the last ``make synth`` of npu_top RxC on ECP5: ``stale`` is a
    message when the design's Verilog (of ``params``) changed since (its Fmax no longer
    applies), else None."""
    from flow.verilog import cached_verilog
    cfg = NpuConfig(**params)
    path = ROOT / "build" / "synth" / f"npu-{cfg.rows}x{cfg.cols}-ecp5.json"
    if not path.exists():
        return None, None
    synth = json.loads(path.read_text())
    vpath, _ = cached_verilog("npu", **params, dsp="ecp5")
    now = hashlib.sha256(vpath.read_bytes()).hexdigest()[:16]
    if synth.get("verilog_sha256") != now:
        return synth, (f"the last synthesis ({path.relative_to(ROOT)}) is of an older design; "
                       f"run make synth")
    return synth, None


def run_reference(params: dict, batch: int, images: str, model: list | None = None) -> dict:
    """``npu run --json`` of the reference CNN (or of ``model``: extra arguments such as
    ``--model F --data D``) on the configuration ``params``."""
    out = io.StringIO()
    config = [a for name, value in params.items() for a in ("-p", f"{name}={value}")]
    with contextlib.redirect_stdout(out):
        code = npu_main(["run", "--images", images, "--batch", str(batch), "--json",
                         *(model or []), *config])
    text = out.getvalue()
    result = json.loads(text[text.index("{"):])
    result["exit_code"] = code
    return result


def lenet5(params: dict) -> tuple[list[dict], int]:
    rng = np.random.default_rng(5)
    weights = float_model.init_params(LENET5, rng)
    calib = rng.uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
    model = quantize_model(LENET5, weights, calib, *activation_qparams(-1, 1))
    prog = compile_model(model, {**params, "wgt_depth": 8192}, batch=1)
    return layer_table(prog), sum(predict(prog.infer, prog.config))


#: The reference CNN at batch 8 on 8x8 before the banked activation memory (the ACT copied
#: once per array row), measured by make bench at 1b808c2: cycles per layer.
REPLICATED_ACT_BATCH8 = {"conv1": 668, "conv2": 9308, "pool": 1069, "fc1": 1116, "fc2": 156,
                         "softmax": 258}

#: The autoencoder's 33,024 WGT words exceed the default WGT (8192): at batch 1 it streams
#: them all through s_axis each inference. This configuration keeps them resident (and needs
#: little ACT), so its batch-1 latency shows the array, not the stream.
AUTOENCODER_RESIDENT = {"wgt_depth": 40960, "act_depth": 4096}

#: MLPerf Tiny v1.1 closed division, Zynq-7020 (fpgaconvnet, ZedBoard): ms per inference.
MLPERF_ANCHORS_MS = {"resnet8": 0.41, "ds_cnn": 0.32, "mobilenet_v1": 9.5}


def mlperf_shapes(params: dict) -> list[dict]:
    """The MLPerf Tiny networks' shapes (:mod:`golden.mlperf_archs`, seeded weights) on the
    RTL at batch 1, one image each: MACs, measured and predicted cycles, exactness."""
    import tempfile

    from golden.mlperf_archs import ARCHS, quantized
    from golden.model import save_model
    rows = []
    runs = [(name, name, build, params) for name, build in ARCHS.items()]
    runs.append(("autoencoder", "autoencoder (wgt 40960)", ARCHS["autoencoder"],
                 {**params, **AUTOENCODER_RESIDENT}))
    with tempfile.TemporaryDirectory() as tmp:
        for name, label, build, config in runs:
            model, rng = quantized(build())
            path, data = Path(tmp) / f"{name}.npz", Path(tmp) / f"{name}_data.npz"
            save_model(path, model)
            np.savez(data, images=rng.integers(-128, 128, (1, *model.input_shape), np.int8))
            res = run_reference(config, 1, "0:1", ["--model", str(path), "--data", str(data)])
            macs = sum(r["macs"] or 0 for r in res["layers"])
            rows.append({"model": label, "macs": macs, "cycles": res["cycles_per_batch"],
                         "predicted": res["predicted_cycles_per_batch"],
                         "exact": res["all_exact"], "anchor_ms": MLPERF_ANCHORS_MS.get(name),
                         "layers": res["layers"]})
    return rows


#: The official MLPerf Tiny int8 models, where ../shared/mlperf_tiny (beside the project)
#: holds them: name -> (file, the shape's name in MLPERF_ANCHORS_MS).
OFFICIAL = {"resnet8 (official)": ("pretrainedResnet_quant.tflite", "resnet8"),
            "ds_cnn (official)": ("kws_ref_model.tflite", "ds_cnn")}


def mlperf_official(params: dict) -> list[dict]:
    """The official int8 .tflite models on the RTL at batch 1 (one random input each), through
    ``npu run`` (bit-exact against golden and LiteRT's reference kernels); [] without them."""
    import tempfile

    from npu.tflite_import import import_tflite
    folder = ROOT.parent / "shared" / "mlperf_tiny"
    rows = []
    for name, (file, shape) in OFFICIAL.items():
        path = folder / file
        if not path.exists():
            continue
        model = import_tflite(path)
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data.npz"
            rng = np.random.default_rng(1)
            np.savez(data, images=rng.integers(-128, 128, (1, *model.input_shape), np.int8))
            res = run_reference(params, 1, "0:1", ["--model", str(path), "--data", str(data)])
        rows.append({"model": name, "macs": sum(r["macs"] or 0 for r in res["layers"]),
                     "cycles": res["cycles_per_batch"],
                     "predicted": res["predicted_cycles_per_batch"],
                     "exact": res["all_exact"] and res["litert_reference"]["exact"],
                     "anchor_ms": MLPERF_ANCHORS_MS.get(shape), "layers": res["layers"]})
    return rows


def print_mlperf(rows: list[dict], R: int, C: int, fmax: float | None, stale: str | None):
    print(f"\nMLPerf Tiny shapes on npu_top {R}x{C} at batch 1 (Verilator; seeded weights, "
          f"golden.mlperf_archs; the official int8 models where ../shared/mlperf_tiny has "
          f"them, bit-exact against LiteRT too), against MLPerf Tiny v1.1 on a Zynq-7020 "
          f"(fpgaconvnet):")
    clock = f"@{fmax:.0f} MHz" if fmax else "@100 MHz*"
    print(f"  {'model':18s} {'MACs':>10} {'cycles':>8} {'model':>8} {'PE util':>7} "
          f"{'ms ' + clock:>12} {'Zynq ms':>7} {'bit-exact':>9}")
    for r in rows:
        ms = r["cycles"] / ((fmax or 100.0) * 1e3)
        anchor = f"{r['anchor_ms']:.2f}" if r["anchor_ms"] else "-"
        print(f"  {r['model']:18s} {r['macs']:>10,} {r['cycles']:>8} {r['predicted']:>8} "
              f"{100 * r['macs'] / (R * C * r['cycles']):>6.1f}% {ms:>12.3f} {anchor:>7} "
              f"{'yes' if r['exact'] else 'NO':>9}")
    if not fmax:
        print(f"  * no current synthesis result ({stale or 'run make synth'}): latency at a "
              f"nominal 100 MHz, not a measured clock")
    for r in rows:
        dw = [x for x in r["layers"] if x["type"] == "depthwise_conv2d"]
        if dw:
            macs, cyc = sum(x["macs"] for x in dw), sum(x["measured"] for x in dw)
            low = min(dw, key=lambda x: x["utilization"])
            print(f"  {r['model']}: depthwise layers {100 * macs / (R * C * cyc):.1f}% PE "
                  f"utilization together; lowest {low['layer']} {low['gemm']} "
                  f"{100 * low['utilization']:.1f}%")


def float_agreement() -> list[dict]:
    """How far int8 is from float on the MLPerf-shaped ONNX graphs of :mod:`npu.zoo`: top-1
    agreement with onnxruntime's float output of the project's quantization (golden, which
    the RTL matches bit for bit) and of onnxruntime's quantize_static, on the same images."""
    from npu.float_reference import zoo_agreement
    return [zoo_agreement(name) for name in ("resnet8", "ds_cnn", "mobilenet_v1")]


def print_float_agreement(rows: list[dict]):
    print("\nint8 against the float ONNX graph (npu.zoo, seeded weights; top-1 agreement with "
          "onnxruntime's float output):")
    print(f"  {'model':13s} {'images':>6} {'this project':>12} {'ORT quantize_static':>19}")
    for r in rows:
        print(f"  {r['model']:13s} {r['images']:>6} {100 * r['top1_agreement']:>11.1f}% "
              f"{100 * r['ort_static_top1_agreement']:>18.1f}%")


def print_layers(run: dict, R: int, C: int, batch: int):
    """The per-layer table of a reference CNN run, with (at batch 8 on 8x8) the cycles before
    the banked activation memory beside it."""
    before = REPLICATED_ACT_BATCH8 if (R, C, batch) == (8, 8, 8) else {}
    print(f"\nper layer at batch {batch}: measured / model cycles, PE utilization vs MACs/(R*C)"
          + (", and with the replicated ACT (1b808c2, measured)" if before else ""))
    for row in run["layers"]:
        u = f"{100 * row['utilization']:.1f}%" if row["utilization"] else ""
        was = before.get(row["layer"])
        then = (f"   before: {was} cycles"
                + (f", {100 * row['macs'] / (R * C * was):.1f}%" if row["macs"] else "")
                if was else "")
        print(f"  {row['layer']:8s} {row['type']:10s} {row['measured']:>7} / "
              f"{row['predicted']:<7} {u:>6}{then}")


def main(args: argparse.Namespace) -> int:
    """Measure, print the report and write ``docs/bench/`` (``npu bench``)."""
    params = args.params
    cfg = NpuConfig(**params)
    R, C = cfg.rows, cfg.cols
    runs = {1: run_reference(params, 1, "0:4"), R: run_reference(params, R, f"0:{2 * R}")}
    synth, stale = last_synthesis(params)
    fmax = synth["fmax_mhz"] if synth and not stale else None
    lenet_rows, lenet_cycles = lenet5(params)
    mlperf = mlperf_shapes(params) + mlperf_official(params)
    agreement = float_agreement()
    # Double buffering: WGT too small for the resident weights, so they stream per batch.
    streamed_params = {**params, "wgt_depth": STREAMED_WGT_DEPTH}
    streamed = run_reference(streamed_params, 1, "0:4")
    from golden.digits import DATA_DIR
    from golden.model import load_model
    reference = load_model(DATA_DIR / "digits_cnn_int8.npz")
    single = compile_model(reference, streamed_params, batch=1, double_buffer=False)
    single_cycles = program_cycles(single.infer, single.config)

    print(f"\nreference CNN on npu_top {R}x{C} (Verilator)")
    print(f"{'batch':>5} {'cycles/batch':>12} {'model':>8} {'cycles/image':>12} {'wall s/image':>12} "
          f"{'inferences/s @Fmax':>19} {'bit-exact':>9}")
    for b, res in runs.items():
        cpi = res["cycles_per_image"]
        ips = f"{fmax * 1e6 / cpi:,.0f}" if fmax else "run make synth"
        print(f"{b:>5} {res['cycles_per_batch']:>12} {res['predicted_cycles_per_batch']:>8} "
              f"{cpi:>12.0f} "
              f"{res['hw_wall_seconds_per_batch'] / b:>12.3f} {ips:>19} "
              f"{'yes' if res['all_exact'] else 'NO':>9}")
    for b in runs:
        print_layers(runs[b], R, C, b)
    sc = streamed["cycles_per_batch"]
    print(f"\nweights streamed (wgt_depth={STREAMED_WGT_DEPTH}), batch 1: {sc} cycles measured "
          f"(model {streamed['predicted_cycles_per_batch']}), double buffered; "
          f"{single_cycles} predicted with foreground loads only: {single_cycles / sc:.2f}x; "
          f"resident weights: {runs[1]['cycles_per_batch']}; "
          f"bit-exact: {'yes' if streamed['all_exact'] else 'NO'}")
    print(f"\nFmax (ECP5-85F, last make synth): "
          f"{f'{fmax:.1f} MHz' if fmax else stale or 'no synthesis result yet (make synth)'}")
    print(f"\nLeNet-5 (32x32x3, batch 1) on {R}x{C}, cycle model vs SCALE-Sim formula:")
    macs = ss = 0
    for row in lenet_rows:
        if row["macs"]:
            macs += row["macs"]
            ss += row["scalesim"]
            print(f"  {row['layer']:6s} model {row['predicted']:>6} cycles "
                  f"({100 * row['macs'] / (R * C * row['predicted']):.1f}%), "
                  f"SCALE-Sim {row['scalesim']:>6} ({100 * row['macs'] / (R * C * row['scalesim']):.1f}%)")
    conv_model = sum(r["predicted"] for r in lenet_rows if r["macs"])
    print(f"  conv+dense: model {100 * macs / (R * C * conv_model):.1f}% utilization, "
          f"SCALE-Sim {100 * macs / (R * C * ss):.1f}%; whole program {lenet_cycles} cycles")

    print_mlperf(mlperf, R, C, fmax, stale)
    print_float_agreement(agreement)

    OUT.mkdir(parents=True, exist_ok=True)
    report = {"rows": R, "cols": C, "reference": {str(b): {k: v for k, v in r.items()
                                                           if k != "images"}
                                                   for b, r in runs.items()},
              "streamed_weights": {"wgt_depth": STREAMED_WGT_DEPTH,
                                   "double_buffered": {k: v for k, v in streamed.items()
                                                       if k != "images"},
                                   "foreground_only_predicted": single_cycles},
              "fmax_mhz": fmax, "synth": synth, "lenet5": {"layers": lenet_rows,
                                                            "cycles": lenet_cycles},
              "mlperf_shapes": mlperf, "float_agreement": agreement}
    (OUT / "bench.json").write_text(json.dumps(report, indent=1))
    _plots(runs, R, C)
    print(f"\nwrote {OUT / 'bench.json'} and plots in {OUT}")
    exact = all(r["all_exact"] for r in [*runs.values(), streamed])
    return 0 if exact and all(r["exact"] for r in mlperf) else 1


def _plots(runs, R, C):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [r["layer"] for r in runs[1]["layers"] if r["macs"]]
    x = np.arange(len(names))
    for n, (b, res) in enumerate(runs.items()):
        u = [100 * r["utilization"] for r in res["layers"] if r["macs"]]
        ax.bar(x + 0.4 * n - 0.2, u, 0.4, label=f"batch {b}")
    ax.set_xticks(x, names)
    ax.set_ylabel("PE utilization (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"reference CNN on npu_top {R}x{C}: MACs / (R*C*cycles), RTL counters")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "utilization.png", dpi=100)
    plot_scaling(OUT)


def plot_scaling(out: Path) -> None:
    """``out/scaling.png``: Fmax and LUT4 equivalents of npu_gemm against array size, from
    ``build/scaling/scaling.json`` (``make scaling``), if it exists."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    scaling = ROOT / "build" / "scaling" / "scaling.json"
    if scaling.exists():
        rows = json.loads(scaling.read_text())
        rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
        # flow.scaling keeps the ECP5 figures of each size under "ecp5"; sizes too large for
        # the device have resources but no Fmax.
        pts = [(r["rows"] * r["cols"], r["ecp5"]) for r in rows if r.get("ecp5")]
        if pts:
            fig, ax = plt.subplots(figsize=(6, 3.5))
            placed = [(p, e["fmax_mhz"]) for p, e in pts if e.get("fmax_mhz")]
            ax.plot([p for p, _ in placed], [f for _, f in placed], "o-",
                    label="Fmax, post-route (MHz)")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("PEs (R x C)")
            ax.set_ylabel("MHz")
            ax2 = ax.twinx()
            ax2.plot([p for p, _ in pts], [e["lut4_equiv"] for _, e in pts], "s--",
                     color="tab:red", label="LUT4 equivalents (Yosys)")
            ax2.set_yscale("log")
            ax2.set_ylabel("LUT4 equivalents")
            lines = ax.get_legend_handles_labels()
            lines2 = ax2.get_legend_handles_labels()
            ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower left",
                      fontsize="small")
            ax.set_title("npu_gemm: resources and Fmax against array size (ECP5-85F)")
            fig.tight_layout()
            fig.savefig(out / "scaling.png", dpi=100)


if __name__ == "__main__":
    sys.exit(npu_main(["bench", *sys.argv[1:]]))
