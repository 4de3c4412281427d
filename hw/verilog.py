"""Verilog generation for every top-level design, with a content-addressed cache.

``python -m hw.verilog gemm --rows 16 --cols 16 -o build/npu_gemm_16x16.v`` writes one
self-contained Verilog file whose top module is named after the design (``npu_gemm``).
"""

import argparse
import hashlib
import importlib
import json
import sys
import time
from pathlib import Path

from amaranth.back import verilog

__all__ = ["DESIGNS", "design", "generate", "cached_verilog"]

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "verilog"


#: design name -> ("module:Class", top module name). The class is built with the design's
#: parameters as keyword arguments. One line per top-level design.
DESIGNS = {
    "gemm": ("hw.stream_top:GemmTop", "npu_gemm"),
    "npu": ("hw.npu:NpuTop", "npu_top"),
    "pooling": ("hw.stream_top:PoolingTop", "npu_pooling"),
    "activation": ("hw.stream_top:ActivationTop", "npu_activation"),
    "requant": ("hw.stream_top:RequantTop", "npu_requant"),
    "softmax": ("hw.stream_top:SoftmaxTop", "npu_softmax"),
}


def design(name, **params):
    if name not in DESIGNS:
        raise ValueError(f"unknown design {name!r}; known: {', '.join(sorted(DESIGNS))}")
    target, top = DESIGNS[name]
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(**params), top


def generate(name, **params):
    """Return ``(verilog_text, top_module_name)``."""
    component, top = design(name, **params)
    return verilog.convert(component, name=top, emit_src=False), top


def _source_hash():
    h = hashlib.sha256()
    for p in sorted((ROOT / "hw").rglob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cached_verilog(name, **params):
    """Generate (or reuse) the Verilog of a design; returns ``(path, top_module_name)``.

    The cache key covers the design, its parameters and the source of every file in hw/."""
    key = json.dumps({"design": name, "params": params, "src": _source_hash()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = CACHE / f"{name}-{digest}.v"
    top = DESIGNS[name][1] if name in DESIGNS else None
    if not path.exists():
        text, top = generate(name, **params)
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{id(text)}")
        tmp.write_text(text)
        tmp.replace(path)
    return path, top


def _param(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return key, int(value, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{key}: {value!r} is not an integer") from None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("design", choices=sorted(DESIGNS))
    ap.add_argument("--rows", type=int, help="array rows (gemm, npu)")
    ap.add_argument("--cols", type=int, help="array columns (gemm, npu)")
    ap.add_argument("--param", "-p", type=_param, action="append", default=[],
                    metavar="NAME=VALUE", help="any constructor parameter, e.g. max_len=256")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    params = dict(args.param)
    for name in ("rows", "cols"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    t0 = time.perf_counter()
    try:
        text, top = generate(args.design, **params)
    except (ValueError, TypeError) as e:
        sys.exit(f"error: {args.design}: {e}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output} (top module {top}, {len(text.splitlines())} lines, "
          f"{time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
