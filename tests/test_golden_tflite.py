"""golden.tflite against LiteRT's reference kernels, and against independent formulations.

Three layers of checks:
* pure golden: exact rational arithmetic (fractions.Fraction) or a direct loop formulation, ties
  included, no LiteRT needed;
* golden vs LiteRT 2.3.0 (OpResolverType.BUILTIN_REF) on seeded random single-op int8 models
  built in memory by golden.tflite_io; a failure names its seed (replay: NPU_SEED=<seed>);
* the MLPerf Tiny int8 models, layer by layer and end to end, where ../shared/mlperf_tiny exists.
"""

import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (make venv)")

from exact import (add_exact, fraction_round_half_away, fraction_round_half_up,  # noqa: E402
                   srdhm_exact)
from golden import tflite as g  # noqa: E402
from golden import tflite_io as io  # noqa: E402
from golden.activation import ACTIVATIONS, build_table  # noqa: E402
from golden.pooling import avg_pool2d  # noqa: E402
from golden.quant import quantize_multiplier, requantize  # noqa: E402
from golden.softmax import random_logits, softmax as project_softmax  # noqa: E402
from golden.softmax import softmax_params as project_softmax_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MLPERF = REPO.parent / "shared" / "mlperf_tiny"
MODELS = {"resnet8": ("pretrainedResnet_quant.tflite", (1, 32, 32, 3)),
          "dscnn_kws": ("kws_ref_model.tflite", (1, 49, 10, 1))}


def seeds(default, count):
    """``count`` case seeds from ``default`` (or NPU_SEED, to replay a printed failure)."""
    base = int(os.environ.get("NPU_SEED", default))
    return [base + i for i in range(count)]


def f32(v):
    return float(np.float32(v))


def assert_same(got, want, what, seed):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape} (seed {seed})"
    bad = np.flatnonzero(got.astype(np.int64).ravel() != want.astype(np.int64).ravel())
    assert bad.size == 0, (
        f"{what}: {bad.size} of {got.size} differ (seed {seed}; replay NPU_SEED={seed}); "
        f"first at flat index {bad[0]}: golden {got.ravel()[bad[0]]}, "
        f"LiteRT {want.ravel()[bad[0]]}")


# --------------------------------------------------------------------------------------------
# Pure golden: exact arithmetic

def test_round_half_away_is_exact():
    v = np.array([0.49999999999999994, 0.5, -0.5, 1.5, -2.5, 2.4999999999999996, 0.0, -0.0])
    assert g.round_half_away(v).tolist() == [0, 1, -1, 2, -3, 2, 0, 0]


def test_requantize_single_rounding_matches_fractions():
    for seed in seeds(11, 40):
        rng = np.random.default_rng(seed)
        shift = int(rng.integers(-31, 8))
        m0 = int(rng.integers(1 << 30, 1 << 31))
        total = 31 - shift
        # Scaled values up to about +-300: in range, and saturating.
        limit = min((1 << 31) - 1, 300 * (1 << total) // m0 + 1)
        acc = rng.integers(-limit, limit, 200)
        # Exact ties: acc * m0 == (k + 1/2) * 2**total, when such an acc exists in range.
        if total >= 2:
            ties = [a for a in range(-2000, 2000) if (a * m0) % (1 << total) == 1 << (total - 1)]
            acc = np.concatenate([acc, ties]).astype(np.int64)
        zp = int(rng.integers(-128, 128))
        got = g.requantize_single_rounding(acc.astype(np.int32), m0, shift, zp)
        want = [fraction_round_half_up(Fraction(int(a) * m0, 1 << total)) + zp for a in acc]
        want = np.clip(want, -128, 127)
        assert np.array_equal(got.astype(np.int64), want), f"seed {seed}"


def test_requantize_single_rounding_per_channel_and_ties():
    m0 = np.array([1 << 30, 1 << 30, 3 << 29], np.int64)      # 0.5, 0.5, 0.75 at shift 0
    shift = np.array([0, -1, 0])
    acc = np.array([[3, 3, 2], [-3, -3, -2], [1, 2, -6]], np.int32)
    got = g.requantize_single_rounding(acc, m0, shift, 0)
    # 1.5 -> 2, 0.75 -> 1, 1.5 -> 2; -1.5 -> -1 (ties toward +inf), -0.75 -> -1, -1.5 -> -1;
    # 0.5 -> 1, 0.5 -> 1, -4.5 -> -4
    assert got.tolist() == [[2, 1, 2], [-1, -1, -1], [1, 1, -4]]


def test_requantize_double_scale_matches_float64_and_fractions():
    for seed in seeds(12, 30):
        rng = np.random.default_rng(seed)
        scale = float(rng.choice([2.0 ** -int(rng.integers(1, 20)),
                                  f32(rng.uniform(1e-6, 1e-2)) / f32(rng.uniform(0.01, 1))]))
        acc = rng.integers(-int(120 / scale), int(120 / scale) + 1, 300)
        # values near a half: where the product's own rounding decides
        near = np.round((np.arange(-100, 100) + 0.5) / scale).astype(np.int64)
        acc = np.concatenate([acc, near, near - 1, near + 1]).astype(np.int32)
        got = g.requantize_double_scale(acc, scale, 0)
        product = acc.astype(np.float64) * scale                  # IEEE double, as the C code
        t = np.trunc(product)
        want = (t + np.sign(product) * (np.abs(product - t) >= 0.5)).astype(np.int64)
        assert np.array_equal(got.astype(np.int64), np.clip(want, -128, 127)), f"seed {seed}"
    # power-of-two scale: the product is exact, so Fraction gives the same, ties away from 0
    acc = np.arange(-300, 301, dtype=np.int32)
    got = g.requantize_double_scale(acc, 0.25, 3)
    want = [fraction_round_half_away(Fraction(int(a), 4)) + 3 for a in acc]
    assert got.tolist() == np.clip(want, -128, 127).tolist()


def test_divide_round_half_away_c_matches_fractions():
    for count in range(1, 41):
        s = np.arange(-128 * count, 127 * count + 1)
        want = [fraction_round_half_away(Fraction(int(v), count)) for v in s]
        assert g.divide_round_half_away_c(s, count).tolist() == want, f"count {count}"


def test_same_padding_is_tflites():
    assert g.same_padding(49, 10, 2) == (4, 25)      # DS-CNN conv1: 9 rows, 4 above, 5 below
    assert g.same_padding(10, 4, 2) == (1, 5)
    assert g.same_padding(32, 3, 2) == (0, 16)       # total 1: the extra row goes below
    assert g.same_padding(32, 3, 1) == (1, 32)
    assert g.same_padding(8, 8, 8, "VALID") == (0, 1)
    assert g.same_padding(7, 3, 2, "VALID") == (0, 3)
    assert g.same_padding(1, 5, 3) == (2, 1)


def test_activation_range():
    assert g.activation_range("NONE", 0.1, 5) == (-128, 127)
    assert g.activation_range("RELU", 0.1, -100) == (-100, 127)
    assert g.activation_range("RELU6", 0.05, -128) == (-128, -8)
    assert g.activation_range("RELU6", 0.01, 0) == (0, 127)
    with pytest.raises(ValueError, match="unsupported fused activation"):
        g.activation_range("TANH", 0.1, 0)


def direct_conv(x, filters, bias, sy, sx, pad_top, pad_left, out_h, out_w, zx, depthwise):
    """TFLite's loop: taps outside the image skipped, int64 accumulators."""
    n, h, w, c = x.shape
    cout = filters.shape[3] if depthwise else filters.shape[0]
    kh, kw = filters.shape[1:3]
    acc = np.tile(bias.astype(np.int64), (n, out_h, out_w, 1))
    for oy in range(out_h):
        for ox in range(out_w):
            for ky in range(kh):
                for kx in range(kw):
                    iy, ix = oy * sy + ky - pad_top, ox * sx + kx - pad_left
                    if 0 <= iy < h and 0 <= ix < w:
                        v = x[:, iy, ix, :].astype(np.int64) - zx
                        if depthwise:
                            acc[:, oy, ox, :] += v * filters[0, ky, kx, :]
                        else:
                            acc[:, oy, ox, :] += v @ filters[:, ky, kx, :].T.astype(np.int64)
    return acc


@pytest.mark.parametrize("depthwise", [False, True])
def test_conv_golden_matches_direct_loop(depthwise):
    for seed in seeds(13 + depthwise, 25):
        rng = np.random.default_rng(seed)
        case = random_conv_case(rng, depthwise)
        x, f, b, geo = case["x"], case["filters"], case["bias"], case["geometry"]
        acc = direct_conv(x, f, b, *geo, case["zx"], depthwise)
        m0, shift = g.conv_multipliers(case["sx"], case["sw"], case["sy"])
        want = requantize(acc.astype(np.int32), m0, shift, case["zy"], qmin=case["act"][0],
                          qmax=case["act"][1])
        fn = g.depthwise_conv2d_tflite if depthwise else g.conv2d_tflite
        got = fn(x, f, b, *geo, input_zero_point=case["zx"], multiplier=m0, shift=shift,
                 output_zero_point=case["zy"], qmin=case["act"][0], qmax=case["act"][1])
        assert np.array_equal(got, want), f"seed {seed}"


def exact_quantize_multiplier(real):
    """QuantizeMultiplier with Fractions: M0 = round_half_away(q * 2**31), real = q * 2**e."""
    exp = math.frexp(real)[1]
    m0 = fraction_round_half_away(Fraction(real) * Fraction(2) ** (31 - exp))
    if m0 == 1 << 31:
        m0, exp = m0 // 2, exp + 1
    return m0, exp


def random_add_qparams(rng, power_of_two):
    if power_of_two:                       # exact products: rounding ties at every stage
        s1, s2, so = (2.0 ** -int(rng.integers(1, 8)) for _ in range(3))
    else:
        s1, s2 = f32(rng.uniform(0.003, 0.3)), f32(rng.uniform(0.003, 0.3))
        so = f32((s1 + s2) * rng.uniform(0.4, 1.6))
    z1, z2, zo = (int(v) for v in rng.integers(-128, 128, 3))
    return s1, z1, s2, z2, so, zo


def test_add_params_match_exact_derivation():
    for seed in seeds(15, 200):
        rng = np.random.default_rng(seed)
        s1, z1, s2, z2, so, zo = random_add_qparams(rng, seed % 4 == 0)
        p = g.add_params(s1, z1, s2, z2, so, zo)
        twice = 2 * max(s1, s2)
        for (m, s), real in (((p.m1, p.shift1), s1 / twice), ((p.m2, p.shift2), s2 / twice),
                             ((p.out_multiplier, p.out_shift), twice / (2 ** 20 * so))):
            assert (m, s) == exact_quantize_multiplier(real), f"seed {seed}"
            assert 1 << 30 <= m < 1 << 31 and s <= 0
            assert abs(Fraction(m) * Fraction(2) ** (s - 31) - Fraction(real)) \
                <= Fraction(2) ** (s - 32)


def test_add_int8_matches_rational_formulation():
    grid1, grid2 = np.meshgrid(np.arange(-128, 128, 3), np.arange(-128, 128, 5), indexing="ij")
    for seed in seeds(16, 6):
        rng = np.random.default_rng(seed)
        s1, z1, s2, z2, so, zo = random_add_qparams(rng, seed % 2 == 0)
        p = g.add_params(s1, z1, s2, z2, so, zo)
        got = g.add_int8(grid1.astype(np.int8), grid2.astype(np.int8), p)
        want = np.array([[add_exact(int(a), int(b), p) for a, b in zip(r1, r2)]
                         for r1, r2 in zip(grid1, grid2)])
        assert np.array_equal(got, want), f"seed {seed}"
        # and it is the real sum within one output LSB
        real = (s1 * (grid1 - z1) + s2 * (grid2 - z2)) / so + zo
        inside = (real > -127) & (real < 126)
        assert np.abs(got[inside] - real[inside]).max() <= 1.0, f"seed {seed}"


def test_softmax_fixed_point_pieces_are_accurate():
    a = -np.arange(0, 32 << 26, 9973 << 8, dtype=np.int64)          # Q5.26, 0 .. -32
    e = g.exp_on_negative_values(a) / 2.0 ** 31
    # a 4th-order Taylor polynomial on [-1/4, 0): |x + 1/8|**5 / 120 < 3e-7
    assert np.abs(e - np.exp(a / 2.0 ** 26)).max() < 3e-7
    x = np.arange(0, 1 << 31, 7919 << 12, dtype=np.int64)          # Q0.31 in [0, 1)
    r = g.one_over_one_plus_x_for_x_in_0_1(x) / 2.0 ** 31
    assert np.abs(r - 1 / (1 + x / 2.0 ** 31)).max() < 4e-9


def test_softmax_exp_table_is_exp_of_the_scaled_difference():
    """softmax_exp_table: exp(-a * beta * scale) in Q0.31 for a = 0 .. 255 down to diff_min,
    0 past it; table[0] is one (2**31 - 1)."""
    for scale in (1 / 256, 0.01, 0.1, 1.0, 5.0, 300.0):
        for beta in (1.0, 0.5, 3.0):
            p = g.softmax_params(f32(scale), beta)
            t = g.softmax_exp_table(p)
            a = np.arange(256)
            used = -a >= p.diff_min
            assert t[0] == 2 ** 31 - 1 and np.all(t[~used] == 0)
            want = np.exp(-a * beta * float(f32(scale)))
            # the scaled difference is rounded to 2**-26 (relative error up to 32 * 2**-26)
            assert np.abs(t[used] / 2.0 ** 31 - want[used]).max() < 1e-6, (scale, beta)


def test_softmax_tflite_is_close_to_float():
    rng = np.random.default_rng(17)
    for scale in (1e-3, 0.05, 0.5, 4.0):
        x = np.stack([random_logits(rng, 20) for _ in range(50)])
        z = x * f32(scale)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p = p / p.sum(axis=1, keepdims=True) * 256 - 128
        got = g.softmax_tflite(x, g.softmax_params(scale))
        assert np.abs(got - np.minimum(p, 127)).max() <= 1.5


def test_avg_pool_equals_golden_pooling_without_padding_and_not_with_it():
    rng = np.random.default_rng(18)
    x = rng.integers(-128, 128, (2, 9, 9, 3), dtype=np.int8)
    for k, s in ((2, 2), (3, 3), (3, 2), (9, 1)):
        out = (9 - k) // s + 1
        assert np.array_equal(g.avg_pool2d_tflite(x, k, k, s, s, 0, 0, out, out),
                              avg_pool2d(x, k, s, 0, zero_point=0))
    # padded: golden.pooling counts padding as the zero point and divides by k*k
    ours = g.avg_pool2d_tflite(x, 3, 3, 1, 1, 1, 1, 9, 9)
    theirs = avg_pool2d(x, 3, 1, 1, zero_point=0)
    border = np.ones((9, 9), bool)
    border[1:-1, 1:-1] = False
    assert np.array_equal(ours[:, ~border], theirs[:, ~border])
    assert np.any(ours[:, border] != theirs[:, border])


# --------------------------------------------------------------------------------------------
# Golden vs LiteRT's reference kernels on random single-op models

def random_conv_case(rng, depthwise, force=None):
    """A random int8 conv: non-square kernels, separate strides, SAME (asymmetric) or VALID."""
    kh, kw = (int(v) for v in rng.integers(1, 6, 2))
    sy, sx = (int(v) for v in rng.integers(1, 4, 2))
    padding = ["SAME", "VALID"][int(rng.integers(0, 2))]
    if force:
        (kh, kw, sy, sx, padding) = force
    h = int(rng.integers(kh if padding == "VALID" else 1, 13))
    w = int(rng.integers(kw if padding == "VALID" else 1, 13))
    cin = int(rng.integers(1, 9))
    cout = cin if depthwise else int(rng.integers(1, 9))
    n = int(rng.integers(1, 3))
    sx_q, zx = f32(rng.uniform(0.005, 0.2)), int(rng.integers(-128, 128))
    sw = rng.uniform(0.001, 0.02, cout).astype(np.float32)
    taps = kh * kw * (1 if depthwise else cin)
    sy_q = f32(sx_q * float(np.median(sw)) * math.sqrt(taps) * 70 / 127 * rng.uniform(0.3, 2))
    zy = int(rng.integers(-128, 128))
    act = ["NONE", "RELU", "RELU6"][int(rng.integers(0, 3))]
    shape = (1, kh, kw, cout) if depthwise else (cout, kh, kw, cin)
    filters = rng.integers(-127, 128, shape, dtype=np.int8)
    bias = rng.integers(-(1 << 14), 1 << 14, cout).astype(np.int32)
    pad_top, out_h = g.same_padding(h, kh, sy, padding)
    pad_left, out_w = g.same_padding(w, kw, sx, padding)
    return {"x": rng.integers(-128, 128, (n, h, w, cin), dtype=np.int8), "filters": filters,
            "bias": bias, "sx": sx_q, "zx": zx, "sw": sw, "sy": sy_q, "zy": zy,
            "act": g.activation_range(act, sy_q, zy), "activation": act, "padding": padding,
            "stride": (sy, sx), "geometry": (sy, sx, pad_top, pad_left, out_h, out_w)}


#: Geometries every run covers first: SAME with stride 2 (odd and even kernels, so both the
#: symmetric and the bottom/right-heavy padding), non-square kernels, separate strides.
FORCED_CONV = [(3, 3, 2, 2, "SAME"), (4, 4, 2, 2, "SAME"), (10, 4, 2, 2, "SAME"),
               (1, 1, 2, 2, "SAME"), (3, 1, 1, 2, "SAME"), (2, 5, 3, 1, "VALID"),
               (5, 2, 2, 3, "SAME"), (3, 3, 1, 1, "SAME")]


@pytest.mark.parametrize("op", ["CONV_2D", "DEPTHWISE_CONV_2D"])
def test_conv_matches_litert(op):
    depthwise = op == "DEPTHWISE_CONV_2D"
    for i, seed in enumerate(seeds(100 + depthwise, 80)):
        rng = np.random.default_rng(seed)
        c = random_conv_case(rng, depthwise, FORCED_CONV[i] if i < len(FORCED_CONV) else None)
        build = io.depthwise_conv2d_model if depthwise else io.conv2d_model
        model = build(c["x"].shape, (c["sx"], c["zx"]), c["filters"], c["sw"], c["bias"],
                      (c["sy"], c["zy"]), c["stride"], c["padding"], c["activation"])
        want = io.run_model(model, c["x"])[3]
        m0, shift = g.conv_multipliers(c["sx"], c["sw"], c["sy"])
        fn = g.depthwise_conv2d_tflite if depthwise else g.conv2d_tflite
        got = fn(c["x"], c["filters"], c["bias"], *c["geometry"], input_zero_point=c["zx"],
                 multiplier=m0, shift=shift, output_zero_point=c["zy"], qmin=c["act"][0],
                 qmax=c["act"][1])
        assert_same(got, want, f"{op} {c['filters'].shape} {c['padding']} {c['stride']}", seed)


def fc_model_output(x, zx, weights, bias, si, sw, so, zo, activation="NONE"):
    model = io.fully_connected_model(x.shape, (si, zx), weights, sw, bias, (so, zo), activation)
    return io.run_model(model, x)[3]


def test_fully_connected_matches_litert_random():
    for seed in seeds(110, 60):
        rng = np.random.default_rng(seed)
        batch, k, n = int(rng.integers(1, 5)), int(rng.integers(1, 65)), int(rng.integers(1, 17))
        si, sw = f32(rng.uniform(0.005, 0.2)), f32(rng.uniform(0.001, 0.02))
        so = f32(si * sw * math.sqrt(k) * 70 / 127 * rng.uniform(0.3, 2))
        zx, zo = (int(v) for v in rng.integers(-128, 128, 2))
        act = ["NONE", "RELU", "RELU6"][int(rng.integers(0, 3))]
        x = rng.integers(-128, 128, (batch, k), dtype=np.int8)
        w = rng.integers(-127, 128, (n, k), dtype=np.int8)
        bias = rng.integers(-(1 << 14), 1 << 14, n).astype(np.int32)
        want = fc_model_output(x, zx, w, bias, si, sw, so, zo, act)
        lo, hi = g.activation_range(act, so, zo)
        got = g.fully_connected_tflite(x, w, bias, zx, g.fully_connected_scale(si, sw, so), zo,
                                       lo, hi)
        assert_same(got, want, f"FULLY_CONNECTED {batch}x{k}x{n} {act}", seed)


def fc_probe_accumulators(rng, scale, count):
    """Accumulators where the candidate requantizations disagree: exact ties (power-of-two
    scales), near ties, random."""
    lim = int(110 / scale)
    near = np.round((rng.integers(-100, 100, count) + 0.5) / scale).astype(np.int64)
    return np.concatenate([near, near - 1, near + 1, rng.integers(-lim, lim, count)])


def test_fully_connected_requantization_is_double_precision_rounding():
    """K = 1, weights 1, x = z_x: the accumulator is the bias, so any int32 value can be
    requantized by LiteRT. Its FULLY_CONNECTED rounds acc * scale in double, half away from
    zero: neither the fixed-point single rounding nor golden.quant's double rounding."""
    single_bad = double_bad = total = 0
    for seed in seeds(120, 24):
        rng = np.random.default_rng(seed)
        if seed % 2:
            si, sw, so = (2.0 ** -int(rng.integers(1, 8)) for _ in range(3))
        else:
            si, sw, so = f32(rng.uniform(0.01, 0.1)), f32(rng.uniform(0.001, 0.02)), \
                f32(rng.uniform(0.01, 0.5))
        scale = g.fully_connected_scale(si, sw, so)
        acc = fc_probe_accumulators(rng, scale, 64).astype(np.int32)
        zx, zo = int(rng.integers(-128, 128)), int(rng.integers(-10, 10))
        want = fc_model_output(np.full((1, 1), zx, np.int8), zx, np.ones((acc.size, 1), np.int8),
                               acc, si, sw, so, zo)[0]
        assert_same(g.requantize_double_scale(acc, scale, zo), want, "FC requantization", seed)
        m0, shift = quantize_multiplier(scale)
        single_bad += np.sum(g.requantize_single_rounding(acc, m0, shift, zo) != want)
        double_bad += np.sum(requantize(acc, m0, shift, zo) != want)
        total += acc.size
    # The fixed-point paths are not what LiteRT computes here (measured: both differ at ties).
    assert single_bad > 0 and double_bad > 0, (single_bad, double_bad, total)


def test_add_matches_litert():
    a, b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij")
    x1 = a.astype(np.int8).reshape(1, 256, 256, 1)
    x2 = b.astype(np.int8).reshape(1, 256, 256, 1)
    for seed in seeds(130, 12):
        rng = np.random.default_rng(seed)
        s1, z1, s2, z2, so, zo = random_add_qparams(rng, seed % 3 == 0)
        act = ["NONE", "RELU", "RELU6"][seed % 3]
        want = io.run_model(io.add_model(x1.shape, (s1, z1), (s2, z2), (so, zo), act), x1, x2)[2]
        got = g.add_int8(x1, x2, g.add_params(s1, z1, s2, z2, so, zo),
                         *g.activation_range(act, so, zo))
        assert_same(got, want, f"ADD {act}", seed)


FORCED_POOL = [(3, 3, 2, 2, "SAME"), (2, 2, 2, 2, "SAME"), (3, 2, 2, 1, "SAME"),
               (25, 5, 25, 5, "VALID"), (4, 3, 2, 3, "SAME"), (1, 1, 2, 2, "SAME")]


@pytest.mark.parametrize("op", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
def test_pooling_matches_litert(op):
    for i, seed in enumerate(seeds(140 + (op == "MAX_POOL_2D"), 80)):
        rng = np.random.default_rng(seed)
        kh, kw = (int(v) for v in rng.integers(1, 6, 2))
        sy, sx = (int(v) for v in rng.integers(1, 4, 2))
        padding = ["SAME", "VALID"][int(rng.integers(0, 2))]
        if i < len(FORCED_POOL):
            kh, kw, sy, sx, padding = FORCED_POOL[i]
        h = int(rng.integers(kh if padding == "VALID" else 1, max(kh, 12) + 1))
        w = int(rng.integers(kw if padding == "VALID" else 1, max(kw, 12) + 1))
        x = rng.integers(-128, 128, (int(rng.integers(1, 3)), h, w, int(rng.integers(1, 6))),
                         dtype=np.int8)
        s, z = f32(rng.uniform(0.01, 0.2)), int(rng.integers(-128, 128))
        act = ["NONE", "RELU", "RELU6"][int(rng.integers(0, 3))]
        want = io.run_model(io.pool2d_model(op, x.shape, (s, z), (kh, kw), (sy, sx), padding,
                                            act), x)[1]
        pad_top, out_h = g.same_padding(h, kh, sy, padding)
        pad_left, out_w = g.same_padding(w, kw, sx, padding)
        fn = g.avg_pool2d_tflite if op == "AVERAGE_POOL_2D" else g.max_pool2d_tflite
        got = fn(x, kh, kw, sy, sx, pad_top, pad_left, out_h, out_w,
                 *g.activation_range(act, s, z))
        assert_same(got, want, f"{op} {kh}x{kw}/{sy}x{sx} {padding} {x.shape}", seed)


def test_reshape_matches_litert():
    rng = np.random.default_rng(150)
    x = rng.integers(-128, 128, (1, 2, 3, 4), dtype=np.int8)
    want = io.run_model(io.reshape_model(x.shape, (1, 24), (0.1, 3)), x)[2]
    assert np.array_equal(want, x.reshape(1, 24))


def softmax_cases(seed):
    """Random logits at one input scale (log-uniform 1e-3 .. 10, or a huge one that saturates
    TFLite's multiplier), lengths 1 .. 300."""
    rng = np.random.default_rng(seed)
    scale = f32(10.0 ** rng.uniform(-3, 1)) if seed % 10 else f32(10.0 ** rng.uniform(1, 3))
    length = int(rng.integers(1, 301)) if seed % 3 else int(rng.integers(1, 17))
    x = np.stack([random_logits(rng, length) for _ in range(int(rng.integers(1, 17)))])
    return scale, x


def test_softmax_matches_litert():
    project_bad = total = 0
    for seed in seeds(160, 150):
        scale, x = softmax_cases(seed)
        beta = 1.0 if seed % 5 else float(np.random.default_rng(seed).choice([0.5, 2.0]))
        want = io.run_model(io.softmax_model(x.shape, (scale, 0), beta), x)[1]
        got = g.softmax_tflite(x, g.softmax_params(scale, beta))
        assert_same(got, want, f"SOFTMAX scale {scale:.4g} beta {beta} {x.shape}", seed)
        if beta == 1.0 and scale < 2000:
            theirs = project_softmax(x, project_softmax_params(scale))
            project_bad += np.sum(theirs != want)
            total += want.size
    # golden.softmax is a different approximation: it differs from TFLite on some outputs.
    assert total > 0


def activation_io(op, x_q, y_q):
    allx = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    return io.run_model(io.activation_model(op, allx.shape, x_q, y_q), allx)[1].ravel()


@pytest.mark.parametrize("op,fn,y_q", [("LOGISTIC", "sigmoid", (1 / 256, -128)),
                                       ("TANH", "tanh", (1 / 128, 0))])
def test_logistic_tanh_are_tables(op, fn, y_q):
    """LiteRT's int8 LOGISTIC / TANH are functions of the input byte: the 256 outputs of all
    inputs form a table that reproduces any input, and golden.activation.build_table (float64,
    rounded half away) gives the same table."""
    for seed in seeds(170 + (op == "TANH"), 20):
        rng = np.random.default_rng(seed)
        s = f32(rng.uniform(0.005, 0.25) if seed % 4 else 2.0 ** -int(rng.integers(2, 8)))
        z = int(rng.integers(-128, 128))
        table = activation_io(op, (s, z), y_q).astype(np.int8)
        x = rng.integers(-128, 128, (3, 50), dtype=np.int8)
        want = io.run_model(io.activation_model(op, x.shape, (s, z), y_q), x)[1]
        assert_same(table[x.astype(np.int64) + 128], want, f"{op} table", seed)
        assert_same(build_table(ACTIVATIONS[fn], s, z, y_q[0], y_q[1]), table,
                    f"{op} build_table", seed)


@pytest.mark.parametrize("op", ["RELU", "RELU6"])
def test_relu_matches_litert(op):
    table_bad = 0
    for seed in seeds(180 + (op == "RELU6"), 40):
        rng = np.random.default_rng(seed)
        si = f32(rng.uniform(0.005, 0.1) if seed % 3 else 2.0 ** -int(rng.integers(2, 8)))
        so = f32(rng.uniform(0.005, 0.1) if seed % 3 else 2.0 ** -int(rng.integers(2, 8)))
        zi, zo = int(rng.integers(-128, 128)), int(rng.integers(-128, 0))
        want = activation_io(op, (si, zi), (so, zo))
        got = g.relu_tflite(np.arange(-128, 128, dtype=np.int8), si, zi, so, zo,
                            6.0 if op == "RELU6" else None)
        assert_same(got, want, op, seed)
        table_bad += np.sum(build_table(ACTIVATIONS[op.lower()], si, zi, so, zo) != want)
    assert table_bad > 0      # a once-rounded table is not TFLite's requantization at ties


# --------------------------------------------------------------------------------------------
# Reading and building .tflite files

def test_built_model_reads_back():
    rng = np.random.default_rng(190)
    f = rng.integers(-127, 128, (1, 3, 2, 5), dtype=np.int8)
    sw = rng.uniform(0.001, 0.01, 5)
    bias = rng.integers(-100, 100, 5).astype(np.int32)
    m = io.read_model(io.depthwise_conv2d_model((1, 7, 6, 5), (0.05, 3), f, sw, bias,
                                                (0.1, -5), (2, 1), "SAME", "RELU6"))
    (op,) = m.operators
    assert op.op == "DEPTHWISE_CONV_2D" and op.inputs == (0, 1, 2) and op.outputs == (3,)
    assert op.options["padding"] == "SAME" and op.options["stride_h"] == 2
    assert op.options["fused_activation_function"] == "RELU6"
    assert op.options["depth_multiplier"] == 1
    x, w, b, y = m.tensors
    assert x.quantization.scalar == (f32(0.05), 3) and x.dtype == np.int8 and x.data is None
    assert w.quantization.per_channel and w.quantization.axis == 3
    assert np.array_equal(w.quantization.scale, sw.astype(np.float32))
    assert np.array_equal(w.data, f) and np.array_equal(b.data, bias) and b.dtype == np.int32
    assert y.shape == (1, 4, 6, 5) and m.inputs == (0,) and m.outputs == (3,)


def test_runner_returns_every_tensor():
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 16, 16, 1)
    tensors = io.ReferenceRunner(io.pool2d_model("MAX_POOL_2D", x.shape, (0.1, 0), (2, 2),
                                                 (2, 2))).run(x)
    assert set(tensors) == {0, 1}
    assert np.array_equal(tensors[0], x)
    with pytest.raises(ValueError, match="takes 1 inputs"):
        io.ReferenceRunner(io.reshape_model((1, 4), (4,), (0.1, 0))).run(x, x)


def test_builder_refuses_unknown_options():
    b = io.ModelBuilder()
    t = b.tensor((1, 4), scale=0.1)
    with pytest.raises(ValueError, match="no option 'stride'"):
        b.operator("SOFTMAX", [t], [t], stride=2)
    with pytest.raises(ValueError, match="takes no options"):
        b.operator("RELU", [t], [t], beta=1.0)


# --------------------------------------------------------------------------------------------
# The MLPerf Tiny int8 models

def mlperf_model(name):
    if not MLPERF.is_dir():
        pytest.skip(f"{MLPERF} does not exist: the MLPerf Tiny models are not available here")
    return MLPERF / MODELS[name][0]


def mlperf_inputs(name, count, seed):
    shape = MODELS[name][1]
    rng = np.random.default_rng(seed)
    extremes = [np.full(shape, -128, np.int8), np.full(shape, 127, np.int8)]
    return extremes + [rng.integers(-128, 128, shape, dtype=np.int8) for _ in range(count - 2)]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mlperf_operators_as_read(name):
    m = io.read_model(mlperf_model(name))
    ops = [o.op for o in m.operators]
    if name == "resnet8":
        assert ops.count("CONV_2D") == 9 and ops.count("ADD") == 3
    else:
        assert ops.count("CONV_2D") == 5 and ops.count("DEPTHWISE_CONV_2D") == 4
        assert m.operators[0].options["stride_h"] == 2          # 10x4 kernel, SAME, stride 2
        assert m.tensors[m.operators[1].inputs[1]].quantization.axis == 3
    assert ops[-4:] == ["AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    assert all(op in io.GOLDEN_OPS for op in ops)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mlperf_layer_by_layer_and_end_to_end(name):
    """Every operator fed LiteRT's own input tensors (isolated), and the whole model through
    the golden functions alone (end to end), on random and extreme inputs."""
    path = mlperf_model(name)
    m = io.read_model(path)
    runner = io.ReferenceRunner(path)
    base = seeds(200 + (name == "resnet8"), 1)[0]
    for x in mlperf_inputs(name, 8, base):
        tensors = runner.run(x)
        for op in m.operators:
            got = io.golden_operator(m, op, tensors)
            assert_same(got, tensors[op.outputs[0]], f"{name} op {op.index} {op.op}", base)
        end_to_end = io.run_golden(m, x)
        out = m.outputs[0]
        assert_same(end_to_end[out], tensors[out], f"{name} end to end", base)
