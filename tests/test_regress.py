"""`make regress`: the long random GEMM sweep, sharded over pytest-xdist workers.

Each shard runs one array configuration with its own seed (derived from --regress-seed), so the
shards together cover many shapes, seeds and array sizes. JUnit XML goes to build/regress.xml.
"""

import pytest

from flow.simulate import run

CONFIGS = [(8, 8), (4, 4), (3, 5), (1, 1), (16, 16), (2, 7), (7, 2), (8, 1)]
SHARDS = 20


@pytest.mark.regress
@pytest.mark.parametrize("shard", range(SHARDS))
def test_regress_shard(shard, request):
    base = request.config.getoption("--regress-seed")
    total = request.config.getoption("--regress-count")
    count = -(-total // SHARDS)
    rows, cols = CONFIGS[shard % len(CONFIGS)]
    seed = base * 1000 + shard
    r = run("gemm", {"rows": rows, "cols": cols}, "sim.tb_gemm", testcase="random_gemms",
            env={"NPU_ROWS": rows, "NPU_COLS": cols, "NPU_SEED": seed, "NPU_COUNT": count,
                 "NPU_MAXDIM": 3 * max(rows, cols) + 2, "NPU_MAXK": 80},
            tag=f"regress{seed}")
    print(f"shard {shard}: {rows}x{cols}, {count} GEMMs, seed={seed}")
    assert r.ok, f"{rows}x{cols} seed={seed}: replay with NPU_SEED; log in {r.results_xml.parent}"
