"""The Verilog of `make verilog` synthesizes in Yosys (generic `synth`), not only simulates."""

from flow.synth import yosys_generic_stat
from flow.verilog import cached_verilog


def test_gemm_2x2_synthesizes():
    path, top = cached_verilog("gemm", rows=2, cols=2)
    cells, types, report = yosys_generic_stat(path, top)
    assert "Warning: Wire" not in report
    # 2x2 PEs: flip-flops for operands, products and accumulators must survive synthesis.
    dffs = sum(n for t, n in types.items() if "DFF" in t)
    assert dffs > 4 * (8 + 8 + 16 + 32 + 32), types
    assert cells > dffs
