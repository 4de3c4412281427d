"""Amaranth-simulator checks of Pooling against golden.pooling (small configurations)."""

import numpy as np
import pytest

from golden.pooling import avg_pool2d, max_pool2d
from hw.pooling import CONFIG_LATENCY, MODE_AVG, MODE_MAX, Pooling
from sim.amaranth_streams import Stalls, as_array, frame, receive, send, simulate


def run_pool(dut, x, k, s, p, mode, zp, seed, stall=0.3, limit=20000, cfg_cycles=0):
    """Pool NHWC ``x`` (N images) on ``dut``; returns (N, Ho, Wo, C) int8."""
    n, h, w, c = x.shape
    L = dut.lanes
    G = -(-c // L)
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    xp = np.zeros((n, h, w, G * L), np.int8)
    xp[..., :c] = x
    out = []

    async def feed(ctx):
        ctx.set(dut.config, {"h": h, "w": w, "c": c, "k": k, "stride": s, "pad": p,
                             "mode": mode, "zero_point": zp})
        for _ in range(cfg_cycles):
            await ctx.tick()
        stalls = Stalls(stall, [seed, 0])
        for img in xp.reshape(n, h * w * G, L):
            await send(ctx, dut.input, frame(img.tolist()), stalls)

    async def collect(ctx):
        stalls = Stalls(stall, [seed, 1])
        for _ in range(n):
            beats = as_array(await receive(ctx, dut.result, ho * wo * G, stalls), dtype=np.int8)
            out.append(beats.reshape(ho, wo, G * L)[..., :c])

    simulate(dut, feed, collect, cycles=limit)
    return np.stack(out)


CASES = [  # h, w, c, k, s, p
    (5, 6, 3, 3, 1, 1), (4, 4, 5, 2, 2, 0), (6, 5, 2, 1, 1, 0), (7, 6, 4, 2, 3, 1),
    (4, 4, 6, 4, 4, 0), (5, 7, 1, 3, 2, 1), (4, 4, 3, 4, 1, 0), (5, 4, 2, 4, 1, 0),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_pysim_random(case):
    h, w, c, k, s, p = CASES[case]
    dut = Pooling(lanes=4, max_h=8, max_w=8, max_c=8, max_k=4, slots=3)
    rng = np.random.default_rng(case)
    x = rng.integers(-128, 128, (2, h, w, c), dtype=np.int8)
    x[1, 0] = -128
    zp = int(rng.integers(-128, 128))
    got = run_pool(dut, x, k, s, p, MODE_MAX, 0, seed=case)
    np.testing.assert_array_equal(got, max_pool2d(x, k, s, p), err_msg=f"max case {case}")
    dut = Pooling(lanes=4, max_h=8, max_w=8, max_c=8, max_k=4, slots=3)
    got = run_pool(dut, x, k, s, p, MODE_AVG, zp, seed=case + 100)
    np.testing.assert_array_equal(got, avg_pool2d(x, k, s, p, zp), err_msg=f"avg case {case}")


@pytest.mark.parametrize("case", [0, 3, 6])
def test_pysim_registered_config(case):
    """registered_config (as npu_top's PoolEngine builds the unit): the configuration is set
    CONFIG_LATENCY cycles before the first beat."""
    h, w, c, k, s, p = CASES[case]
    rng = np.random.default_rng(300 + case)
    x = rng.integers(-128, 128, (2, h, w, c), dtype=np.int8)
    zp = int(rng.integers(-128, 128))
    for mode in (MODE_MAX, MODE_AVG):
        dut = Pooling(lanes=4, max_h=8, max_w=8, max_c=8, max_k=4, slots=3,
                      registered_config=True)
        got = run_pool(dut, x, k, s, p, mode, zp, seed=case, cfg_cycles=CONFIG_LATENCY)
        want = max_pool2d(x, k, s, p) if mode == MODE_MAX else avg_pool2d(x, k, s, p, zp)
        np.testing.assert_array_equal(got, want, err_msg=f"case {case} mode {mode}")


NARROW = [  # h, w, c, k, s, p: 1 to 4 beats per padded row ("tiny"), and exactly 5 or 6
    (3, 1, 3, 1, 1, 0), (4, 2, 4, 2, 2, 0), (3, 1, 7, 1, 1, 0), (2, 2, 4, 2, 1, 0),
    (5, 2, 2, 2, 1, 0), (4, 3, 4, 3, 1, 0), (3, 1, 3, 3, 1, 1), (4, 1, 8, 1, 1, 0),
    (3, 1, 12, 1, 1, 0), (4, 4, 4, 4, 1, 0), (3, 2, 8, 2, 1, 0), (5, 4, 3, 3, 1, 0),
    (5, 5, 3, 3, 1, 0), (4, 3, 8, 3, 1, 0), (6, 5, 4, 4, 1, 0), (4, 2, 12, 2, 1, 0),
]


@pytest.mark.parametrize("case", range(len(NARROW)))
@pytest.mark.parametrize("stall", [0.0, 0.3])
def test_pysim_narrow_rows(case, stall):
    """Rows of 1 to 6 beats, where a line-buffer address comes round within a few cycles: the
    unit spaces the beats of rows shorter than TINY_ROW beats (its `tiny` hold), with and
    without gaps and backpressure."""
    h, w, c, k, s, p = NARROW[case]
    rng = np.random.default_rng(500 + case)
    x = rng.integers(-128, 128, (2, h, w, c), dtype=np.int8)
    zp = int(rng.integers(-128, 128))
    for mode in (MODE_MAX, MODE_AVG):
        dut = Pooling(lanes=4, max_h=8, max_w=8, max_c=16, max_k=4, slots=3)
        got = run_pool(dut, x, k, s, p, mode, zp, seed=case, stall=stall)
        want = max_pool2d(x, k, s, p) if mode == MODE_MAX else avg_pool2d(x, k, s, p, zp)
        np.testing.assert_array_equal(got, want, err_msg=f"case {case} mode {mode}")


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("kwargs,name", [
    ({"lanes": 0}, "lanes"), ({"max_h": 0}, "max_h"), ({"max_w": 5000}, "max_w"),
    ({"max_c": 2.5}, "max_c"), ({"max_k": 0}, "max_k"), ({"max_k": 3, "slots": 4}, "slots"),
])
def test_bad_elaboration(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Pooling(**kwargs)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("cfg,name", [
    ((4, 4, 2, 0, 1, 0), "k"), ((4, 4, 2, 2, 0, 0), "stride"), ((9, 4, 2, 2, 1, 0), "h"),
    ((4, 9, 2, 2, 1, 0), "w"), ((4, 4, 9, 2, 1, 0), "c"), ((4, 4, 2, 5, 1, 0), "k"),
    ((4, 4, 2, 3, 1, 2), "pad"), ((8, 8, 2, 4, 1, 0), "stride"),
])
def test_bad_runtime_config(cfg, name):
    dut = Pooling(lanes=4, max_h=8, max_w=8, max_c=8, max_k=4, slots=3)
    with pytest.raises(ValueError, match=name):
        dut.check_config(*cfg)


@pytest.mark.parametrize("lanes,slots,case", [
    (3, 1, (5, 6, 7, 2, 2, 1)), (1, 2, (4, 5, 2, 3, 2, 1)), (5, 4, (6, 4, 5, 4, 1, 2))])
def test_pysim_lanes_and_slots(lanes, slots, case):
    """Lane counts that are not powers of two, one lane, one slot (stride >= k)."""
    h, w, c, k, s, p = case
    rng = np.random.default_rng(lanes * 10 + slots)
    x = rng.integers(-128, 128, (1, h, w, c), dtype=np.int8)
    for mode, zp in ((MODE_MAX, 0), (MODE_AVG, int(rng.integers(-128, 128)))):
        dut = Pooling(lanes=lanes, max_h=8, max_w=8, max_c=8, max_k=4, slots=slots)
        dut.check_config(h, w, c, k, s, p)
        got = run_pool(dut, x, k, s, p, mode, zp, seed=lanes)
        want = max_pool2d(x, k, s, p) if mode == MODE_MAX else avg_pool2d(x, k, s, p, zp)
        np.testing.assert_array_equal(got, want, err_msg=f"lanes={lanes} mode={mode}")


def test_pysim_back_to_back_reconfigure():
    """Frames stream back to back while the configuration changes between them (mode, k,
    stride, pad, shape): every frame uses the configuration present at its first beat."""
    dut = Pooling(lanes=4, max_h=8, max_w=8, max_c=8, max_k=4, slots=3)
    rng = np.random.default_rng(21)
    cases = [((2, 5, 6, 3), 3, 1, 1, MODE_AVG, 9), ((1, 4, 4, 5), 2, 2, 0, MODE_MAX, 0),
             ((1, 3, 7, 2), 1, 1, 0, MODE_AVG, -4), ((2, 6, 5, 8), 4, 2, 2, MODE_AVG, 100)]
    frames = []
    for shape, k, s, p, mode, zp in cases:
        x = rng.integers(-128, 128, shape, dtype=np.int8)
        want = max_pool2d(x, k, s, p) if mode == MODE_MAX else avg_pool2d(x, k, s, p, zp)
        n, h, w, c = shape
        G = -(-c // 4)
        xp = np.zeros((n, h, w, G * 4), np.int8)
        xp[..., :c] = x
        cfg = {"h": h, "w": w, "c": c, "k": k, "stride": s, "pad": p, "mode": mode,
               "zero_point": zp}
        for img, wimg in zip(xp.reshape(n, h * w * G, 4), want):
            frames.append((cfg, img, wimg, G))
    got = []

    async def feed(ctx):
        for cfg, img, _, _ in frames:
            ctx.set(dut.config, cfg)
            await send(ctx, dut.input, frame(img.tolist()))

    async def collect(ctx):
        for _, _, wimg, G in frames:
            ho, wo, c = wimg.shape
            beats = as_array(await receive(ctx, dut.result, ho * wo * G), dtype=np.int8)
            got.append(beats.reshape(ho, wo, G * 4)[..., :c])

    simulate(dut, feed, collect, cycles=4000)
    for n, ((_, _, wimg, _), g) in enumerate(zip(frames, got)):
        np.testing.assert_array_equal(g, wimg, err_msg=f"frame {n}")
