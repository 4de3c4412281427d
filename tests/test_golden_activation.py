"""golden.activation against an independent per-entry formulation (Python floats, Decimal
rounding) and the table/error contract."""

import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

from golden.activation import (ACTIVATIONS, DEFAULT_QPARAMS, activation_table, apply_table,
                               build_table, error_report)

SCALAR = {   # independent scalar definitions (math module)
    "identity": lambda v: v,
    "relu": lambda v: max(v, 0.0),
    "relu6": lambda v: min(max(v, 0.0), 6.0),
    "leaky_relu": lambda v: v if v >= 0 else 0.01 * v,
    "sigmoid": lambda v: 1.0 / (1.0 + math.exp(-v)),
    "tanh": math.tanh,
    "gelu": lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))),
    "silu": lambda v: v / (1.0 + math.exp(-v)),
}


def entry(f, x, si, zi, so, zo):
    y = f(si * (x - zi)) / so
    # ROUND_HALF_UP on the magnitude = half away from zero
    r = int(Decimal(abs(y)).quantize(Decimal(1), rounding=ROUND_HALF_UP)) * (1 if y >= 0 else -1)
    return min(max(r + zo, -128), 127)


@pytest.mark.parametrize("name", sorted(SCALAR))
@pytest.mark.parametrize("qp", [None, (0.02, 10, 0.01, -3), (0.1, -20, 0.05, 7)])
def test_table_matches_scalar_formulation(name, qp):
    si, zi, so, zo = DEFAULT_QPARAMS[name] if qp is None else qp
    table = activation_table(name, si, zi, so, zo)
    assert table.dtype == np.int8 and table.shape == (256,)
    want = [entry(SCALAR[name], x, si, zi, so, zo) for x in range(-128, 128)]
    got = table.astype(int).tolist()
    # float64 vs math-module functions may differ by an ulp exactly at a rounding tie
    diff = [i for i in range(256) if got[i] != want[i]]
    assert all(abs(got[i] - want[i]) <= 1 for i in diff) and len(diff) <= 2, diff


def test_apply_table_is_indexing():
    rng = np.random.default_rng(5)
    table = rng.integers(-128, 128, 256, dtype=np.int8)
    x = rng.integers(-128, 128, (7, 9), dtype=np.int8)
    want = np.array([[table[int(v) + 128] for v in row] for row in x], np.int8)
    np.testing.assert_array_equal(apply_table(x, table), want)


def test_error_within_bound():
    for name, r in error_report(20001).items():
        assert r["grid"] <= 0.5 + 1e-9, name
        assert r["dense"] <= r["bound"] + 1e-6, name


@pytest.mark.parametrize("table,msg", [
    (np.zeros(255, np.int8), "table"), (np.zeros(257, np.int8), "table"),
    (np.zeros(256, np.int16), "table"), (np.zeros((16, 16), np.int8), "table"),
])
def test_bad_table(table, msg):
    with pytest.raises(ValueError, match=msg):
        apply_table(np.zeros(3, np.int8), table)


@pytest.mark.parametrize("args,name", [
    ((0.0, 0, 1.0, 0), "in_scale"), ((1.0, 0, -1.0, 0), "out_scale"),
    ((1.0, 200, 1.0, 0), "in_zp"), ((1.0, 0, 1.0, 1.5), "out_zp"),
])
def test_bad_qparams(args, name):
    with pytest.raises(ValueError, match=name):
        build_table(ACTIVATIONS["relu"], *args)
