"""Reference digits CNN: accuracy floors, float/int8 agreement, speed, reproducibility of the
committed int8 model, and the pieces (split, im2col conv, float backward) it is built from.

Needs only the committed files in golden/data/ (no scikit-learn, no training).
"""

import time

import numpy as np
import pytest

from golden import digits, float_model
from golden.conv import conv2d_int8, fold_zero_point, im2col
from golden.inference import run
from golden.model import load_model, model_to_arrays
from golden.ptq import INT8_FILE, quantize_model
from golden.report import evaluate
from golden.train import FLOAT_FILE


@pytest.fixture(scope="module")
def report():
    return evaluate()


def test_float_accuracy_floor(report):
    assert report["n"] >= 350
    assert report["float_acc"] >= 0.97, report["float_acc"]


def test_int8_accuracy_within_one_point_of_float(report):
    assert report["int8_acc"] >= report["float_acc"] - 0.01, (report["int8_acc"],
                                                               report["float_acc"])
    assert report["int8_acc"] >= 0.96


def test_float_int8_top1_agreement(report):
    agree = (report["float_pred"] == report["int8_pred"]).mean()
    assert agree == pytest.approx(report["agreement"])
    assert agree >= 0.99, agree


def test_golden_inference_of_every_test_image_is_fast():
    model = load_model(INT8_FILE)
    images, _ = digits.load_test()
    x = digits.to_int8(images)
    t0 = time.perf_counter()
    out = run(model, x)
    dt = time.perf_counter() - t0
    assert out.shape == (len(images), 10) and out.dtype == np.int8
    assert dt < 5.0, f"integer inference of {len(images)} images took {dt:.2f} s"


def test_committed_int8_model_is_the_ptq_of_the_committed_float_model():
    """Re-running PTQ on the committed float weights and calibration images reproduces the
    committed int8 model bit for bit (so neither file is stale)."""
    arch, params = float_model.load_float(FLOAT_FILE)
    images, _ = digits.load_calibration()
    fresh = quantize_model(arch, params, digits.to_float(images), digits.INPUT_SCALE,
                           digits.INPUT_ZERO_POINT)
    committed = load_model(INT8_FILE)
    assert fresh.header() == committed.header()
    a, b = model_to_arrays(fresh), model_to_arrays(committed)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_reference_topology():
    m = load_model(INT8_FILE)
    types = [L.type for L in m.layers]
    assert types == ["conv2d", "conv2d", "maxpool2d", "flatten", "dense", "dense", "softmax"]
    assert m.layers[1].attrs["in_channels"] > 1
    assert m.layers[-1].attrs["output"] == {"scale": 1 / 256, "zero_point": -128}
    n_params = sum(L.tensors["weights"].size + L.tensors["bias"].size
                   for L in m.layers if L.type in ("conv2d", "dense"))
    assert 2_000 <= n_params <= 50_000, n_params
    for L in m.layers:
        if L.type in ("conv2d", "dense"):
            assert L.tensors["weights"].min() >= -127
            # per-channel symmetric: every column uses the full range
            assert np.all(np.abs(L.tensors["weights"]).max(axis=0) == 127), L.name


def test_data_files_and_split():
    te_x, te_y = digits.load_test()
    ca_x, ca_y = digits.load_calibration()
    assert te_x.dtype == np.uint8 and te_x.shape[1:] == (8, 8) and te_x.max() <= 16
    with np.load(digits.TEST_FILE, allow_pickle=False) as f:
        te_idx = f["indices"]
    with np.load(digits.CALIB_FILE, allow_pickle=False) as f:
        ca_idx = f["indices"]
    assert not set(te_idx) & set(ca_idx), "calibration images must come from the training set"
    assert len(ca_idx) == digits.CALIB_SIZE
    counts = np.bincount(te_y, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38, counts   # stratified: ~20% of ~180
    # the split function is deterministic and stratified on any label vector
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, 500)
    tr, te = digits.split_indices(labels)
    tr2, te2 = digits.split_indices(labels)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    assert not set(tr) & set(te) and len(tr) + len(te) == 500
    for c in range(5):
        assert abs((labels[te] == c).sum() - round(0.2 * (labels == c).sum())) == 0


def test_input_quantization_is_exact():
    p = np.arange(17, dtype=np.uint8).reshape(1, 17, 1)
    q = digits.to_int8(p)
    assert q.dtype == np.int8
    # real = S * (q - z) = (q + 128) / 240 must equal p / 16, i.e. 16 (q + 128) == 240 p
    assert np.array_equal(16 * (q[..., 0].astype(np.int64) + 128), 240 * p.astype(np.int64))
    with pytest.raises(ValueError, match="grey levels"):
        digits.to_int8(np.array([[17]]))


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_conv_im2col_matches_direct_convolution(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 5))
    s = int(rng.integers(1, 4))
    p = int(rng.integers(0, k))
    n, h, w, cin, cout = 2, int(rng.integers(k, 10)), int(rng.integers(k, 10)), \
        int(rng.integers(1, 6)), int(rng.integers(1, 9))
    x = rng.integers(-128, 128, (n, h, w, cin)).astype(np.int8)
    wts = rng.integers(-127, 128, (k * k * cin, cout)).astype(np.int8)
    bias = rng.integers(-5000, 5000, cout).astype(np.int32)
    zx = int(rng.integers(-128, 128))
    acc = conv2d_int8(x, wts, fold_zero_point(bias, wts, zx), k, s, p, zx)
    # direct: sum over the window of (x - zx) * w, with padded taps counting as 0
    xp = np.zeros((n, h + 2 * p, w + 2 * p, cin), np.int64)
    xp[:, p:p + h, p:p + w] = x.astype(np.int64) - zx
    wk = wts.astype(np.int64).reshape(k, k, cin, cout)
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    want = np.zeros((n, ho, wo, cout), np.int64)
    for i in range(ho):
        for j in range(wo):
            for a in range(k):
                for b in range(k):
                    want[:, i, j] += xp[:, i * s + a, j * s + b] @ wk[a, b]
    want += bias
    assert np.array_equal(acc, want), f"seed {seed}: k={k} s={s} p={p}"


def test_im2col_refuses_bad_geometry():
    x = np.zeros((1, 4, 4, 1), np.int8)
    with pytest.raises(ValueError, match="does not fit"):
        im2col(x, 7, 1, 1)
    with pytest.raises(ValueError, match="pad"):
        im2col(x, 3, 1, 3)
    with pytest.raises(ValueError, match="stride"):
        im2col(x, 3, 0, 0)


def test_float_backward_matches_finite_differences():
    seed = 9
    arch = {"input_shape": [6, 6, 2], "layers": [
        {"type": "conv2d", "name": "c1", "kernel": 3, "stride": 2, "padding": 1,
         "in_channels": 2, "out_channels": 3, "activation": "relu"},
        {"type": "conv2d", "name": "c2", "kernel": 2, "stride": 1, "padding": 1,
         "in_channels": 3, "out_channels": 4, "activation": "none"},
        {"type": "maxpool2d", "kernel": 2, "stride": 2, "padding": 0},
        {"type": "flatten"},
        {"type": "dense", "name": "d", "in_features": 16, "out_features": 5,
         "activation": "none"},
        {"type": "softmax"}]}
    rng = np.random.default_rng(seed)
    params = float_model.init_params(arch, rng)
    for p in params.values():
        p["weights"] = p["weights"].astype(np.float64)
        p["bias"] = 0.1 * rng.standard_normal(p["bias"].shape)
    x = rng.standard_normal((3, 6, 6, 2))
    y = np.array([0, 3, 4])
    _, grads = float_model.loss_and_grads(arch, params, x, y)
    eps = 1e-4
    for name, p in params.items():
        for t, w in p.items():
            for i in rng.choice(w.size, min(w.size, 6), replace=False):
                old = w.flat[i]
                w.flat[i] = old + eps
                lp, _ = float_model.loss_and_grads(arch, params, x, y)
                w.flat[i] = old - eps
                lm, _ = float_model.loss_and_grads(arch, params, x, y)
                w.flat[i] = old
                num = (lp - lm) / (2 * eps)
                assert abs(num - grads[name][t].flat[i]) < 1e-3 * max(1, abs(num)), \
                    f"seed {seed}: {name}/{t}[{i}]"
