"""Report of the reference CNN: accuracy of the float and int8 models, and their cost.

    npu report                    # or .venv/bin/python -m golden.report

Uses only committed files (golden/data/): the float weights, the int8 model and the test
images; no scikit-learn, no training. Prints

* float test accuracy (float model, float input ``p / 16``),
* int8 test accuracy (golden integer inference, input ``15 p - 128``, argmax of the int8
  softmax output, ties to the lowest class),
* top-1 agreement between the two, and the time of integer inference of the whole test set,
* per layer: output shape, parameters, int8 weight bytes, MACs per image, and the GEMM shape
  ``M x K x N`` per image that the systolic array computes.
"""

import argparse
import time
from pathlib import Path

from . import digits
from .float_model import load_float, predict as float_predict
from .inference import run
from .model import layer_stats, load_model
from .ptq import INT8_FILE
from .train import FLOAT_FILE

__all__ = ["evaluate", "main"]


def evaluate(model_path=INT8_FILE, float_path=FLOAT_FILE):
    """Figures of the report as a dict (used by the tests too)."""
    images, labels = digits.load_test()
    arch, params = load_float(float_path)
    model = load_model(model_path)
    pf = float_predict(arch, params, digits.to_float(images))
    xq = digits.to_int8(images)
    t0 = time.perf_counter()
    out = run(model, xq)
    seconds = time.perf_counter() - t0
    pq = out.reshape(len(out), -1).argmax(axis=-1)
    return {"n": len(labels), "float_acc": float((pf == labels).mean()),
            "int8_acc": float((pq == labels).mean()), "agreement": float((pf == pq).mean()),
            "seconds": seconds, "model": model, "float_pred": pf, "int8_pred": pq,
            "labels": labels}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=str(INT8_FILE))
    parser.add_argument("--float", dest="float_path", default=str(FLOAT_FILE))


def main(args: argparse.Namespace) -> int:
    """Print the report (``npu report``)."""
    r = evaluate(args.model, args.float_path)
    m, n = r["model"], r["n"]
    print(f"model {m.name!r} ({args.model}), {n} test images "
          f"(load_digits, stratified 80/20 split, seed {digits.SPLIT_SEED})")
    print(f"float test accuracy : {100 * r['float_acc']:6.2f} %  "
          f"({int(round(r['float_acc'] * n))}/{n})")
    print(f"int8  test accuracy : {100 * r['int8_acc']:6.2f} %  "
          f"({int(round(r['int8_acc'] * n))}/{n})")
    print(f"top-1 agreement     : {100 * r['agreement']:6.2f} %  "
          f"({int(round(r['agreement'] * n))}/{n})")
    print(f"int8 golden inference of {n} images: {r['seconds']:.3f} s")
    print(f"model file: {Path(args.model).stat().st_size} bytes")
    print()
    print(f"{'layer':<10} {'type':<10} {'output':<12} {'params':>7} {'w bytes':>8} "
          f"{'MACs/image':>11} {'GEMM M x K x N / image':>24}")
    tot_p = tot_b = tot_m = 0
    for (name, typ, shape, params, macs), L in zip(layer_stats(m), m.layers):
        gemm_shape = ""
        wbytes = 0
        if typ in ("conv2d", "dense"):
            k_dim, n_dim = L.tensors["weights"].shape
            rows = shape[0] * shape[1] if typ == "conv2d" else 1
            gemm_shape = f"{rows} x {k_dim} x {n_dim}"
            wbytes = k_dim * n_dim + 4 * n_dim     # int8 weights + int32 bias
        tot_p += params
        tot_b += wbytes
        tot_m += macs
        print(f"{name:<10} {typ:<10} {'x'.join(map(str, shape)):<12} {params:>7} {wbytes:>8} "
              f"{macs:>11} {gemm_shape:>24}")
    print(f"{'total':<10} {'':<10} {'':<12} {tot_p:>7} {tot_b:>8} {tot_m:>11}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
