"""Verilog files of the designs of :data:`hw.verilog.DESIGNS`, with a content-addressed cache,
and ``npu verilog``.

:func:`cached_verilog` writes a design's Verilog under ``build/verilog/`` once per design,
parameters and source. The source is what generates Verilog: every module of ``hw/`` and the
``golden/`` modules they import (their constants size the hardware), and nothing else, so
editing a flow tool reuses the cached Verilog files and the simulator builds keyed on them.
"""

import argparse
import ast
import functools
import hashlib
import inspect
import importlib
import json
import time
from pathlib import Path

from hw.npu import NpuConfig
from hw.verilog import DESIGNS, generate

__all__ = ["ROOT", "design_class", "check_params", "verilog_sources", "cached_verilog",
           "describe_params"]

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "verilog"


def design_class(name: str) -> type:
    """The class :func:`hw.verilog.design` builds for design ``name``."""
    if name not in DESIGNS:
        raise ValueError(f"unknown design {name!r}; known: {', '.join(sorted(DESIGNS))}")
    module, cls = DESIGNS[name][0].split(":")
    return getattr(importlib.import_module(module), cls)


def check_params(name: str, params: dict) -> None:
    """Refuse a parameter design ``name`` does not take, naming it and the ones it does.

    A class that takes ``**kwargs`` (``NpuTop``: ``NpuConfig``'s parameters) checks them
    itself, with the same kind of message."""
    signature = inspect.signature(design_class(name).__init__)
    kinds = {p.kind for p in signature.parameters.values()}
    if inspect.Parameter.VAR_KEYWORD in kinds:
        return
    known = [p for p in signature.parameters if p != "self"]
    for param in params:
        if param not in known:
            raise ValueError(f"unknown parameter {param!r} of design {name}; "
                             f"known: {', '.join(known)}")


def _golden_imports(path: Path) -> set[Path]:
    """The files of the ``golden`` modules that source file ``path`` imports."""
    files = set()
    for module in _imported_modules(path.parent.name, path.read_text()):
        parts = module.split(".")
        if parts[0] != "golden":
            continue
        files.add(ROOT / "golden" / "__init__.py")
        if len(parts) > 1 and (ROOT / "golden" / f"{parts[1]}.py").exists():
            files.add(ROOT / "golden" / f"{parts[1]}.py")
    return files


@functools.lru_cache(maxsize=256)
def _imported_modules(package: str, source: str) -> frozenset[str]:
    """Every module name a source text of ``package`` may import. Cached by content: parsing
    is the slow part of a cache lookup, and the tests look up hundreds of designs."""
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # Relative imports stay inside the file's own (flat) package.
            base = node.module or ""
            if node.level:
                base = f"{package}.{base}" if base else package
            modules.add(base)
            # `from golden import digits` imports the module golden.digits.
            modules.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(modules)


def verilog_sources() -> list[Path]:
    """The source files that generate Verilog: ``hw/`` and the golden modules it imports,
    directly or through other golden modules."""
    hw = sorted((ROOT / "hw").rglob("*.py"))
    seen, todo = set(hw), list(hw)
    while todo:
        for path in _golden_imports(todo.pop()):
            if path not in seen:
                seen.add(path)
                todo.append(path)
    return sorted(seen)


def _source_hash() -> str:
    h = hashlib.sha256()
    for path in verilog_sources():
        h.update(path.relative_to(ROOT).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cached_verilog(name: str, **params) -> tuple[Path, str]:
    """Generate (or reuse) the Verilog of a design; returns ``(path, top_module_name)``.

    The cache key covers the design, its parameters and :func:`verilog_sources`."""
    check_params(name, params)
    key = json.dumps({"design": name, "params": params, "src": _source_hash()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = CACHE / f"{name}-{digest}.v"
    top = DESIGNS[name][1]
    if not path.exists():
        text, top = generate(name, **params)
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{id(text)}")
        tmp.write_text(text)
        tmp.replace(path)
    return path, top


def describe_params(params: dict) -> str:
    """Parameters in words for a report line: ``8x8`` for rows and cols, ``name=value`` else."""
    sized = "rows" in params and "cols" in params
    words = [f"{k}={v}" for k, v in params.items() if not (sized and k in ("rows", "cols"))]
    if sized:
        words.insert(0, f"{params['rows']}x{params['cols']}")
    return " ".join(words) or "default parameters"


# ---- `npu verilog` ----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path,
                        help="output file (default build/<top module>.v)")


def main(args: argparse.Namespace) -> int:
    """Write the Verilog of ``args.design`` with ``args.params``, and say what was written."""
    t0 = time.perf_counter()
    check_params(args.design, args.params)
    text, top = generate(args.design, **args.params)
    out = args.output or Path("build") / f"{top}.v"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as e:            # one line naming the path, like every refusal of npu
        raise ValueError(f"-o {out}: cannot write it ({e.strerror or e})") from None
    # The accelerator's line lists its whole configuration, defaults included.
    config = NpuConfig(**args.params) if args.design == "npu" else describe_params(args.params)
    print(f"wrote {out}: top module {top}, {config}, {len(text.splitlines())} lines, "
          f"{time.perf_counter() - t0:.1f} s")
    return 0
