"""Issue 21, Deliver 4: malformed input of every class the host tools read, generated from a
seed, ends with one line (``error: ...``, no traceback), a non-zero exit status and no
simulation, within a time bound.

The classes: model files (.npz: truncated, corrupt bytes, a member whose header declares
more data than it holds, header fields out of range or of the wrong type, a member of the
wrong dtype or missing), ONNX files (random bytes, truncated or with flipped bytes) and
their calibration files, .tflite files (the same corruptions), --data files (images of a wrong dtype, shape, NaN or Inf; labels
not one integer per image) and option values. ``npu`` runs in-process (:func:`npu.cli.main`)
with its simulation replaced by :class:`Simulated`, which a refusal must come before.

A generated input is malformed by construction, so it must be refused, except where a
corruption may leave a valid file (flipped bytes of an ONNX protobuf can change a weight,
those of a zip archive its timestamp): there the tool may also accept it (exit 0), never
anything else.
"""

import io
import json
import time
import zipfile

import numpy as np
import pytest

from npu import cli
from npu.cli import REFERENCE_MODEL, main

SEEDS = range(2)
TIME_BOUND_S = 5.0          # per input; the whole test takes a few seconds


class Simulated(Exception):
    """``npu run`` reached the simulation."""


@pytest.fixture
def no_simulation(monkeypatch):
    def run(*args, **kwargs):
        raise Simulated()
    monkeypatch.setattr(cli, "run", run)
    monkeypatch.setattr(cli, "missing_simulator", lambda sim: None)


def outcome(argv, capsys):
    """``(status, stderr, seconds)`` of ``npu ARGV``; status "simulated" if it reached the
    simulation."""
    t0 = time.perf_counter()
    try:
        status = main(argv)
    except SystemExit as e:
        status = e.code
    except Simulated:
        status = "simulated"
    seconds = time.perf_counter() - t0
    return status, capsys.readouterr().err, seconds


def check(seed, label, argv, capsys, may_be_valid=False):
    status, err, seconds = outcome(argv, capsys)
    where = f"seed {seed}, {label}: npu {' '.join(argv)} -> {status!r}, stderr {err!r}"
    assert seconds < TIME_BOUND_S, f"{where}: {seconds:.1f} s"
    assert "Traceback" not in err, where
    if may_be_valid and status in (0, "simulated"):
        return
    assert status not in (0, None, "simulated"), where
    assert err.startswith("error: ") and err.count("\n") == 1, where


# ---- the generators: each returns [(label, argv, may_be_valid)] ------------------------------

def _npz(path, arrays):
    np.savez(path, **arrays)
    return str(path)


def _lying_member(path, name, shape):
    """An .npz whose member ``name`` declares ``shape`` of float32 and holds 16 bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": shape})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.npy", buf.getvalue() + bytes(16))
    return str(path)


def _corrupt(rng, data):
    """Truncated, some bytes flipped, or random bytes of the same length."""
    kind = rng.integers(3)
    if kind == 0:
        return "truncated", data[:int(rng.integers(0, len(data)))]
    if kind == 1:
        b = bytearray(data)
        for i in rng.integers(0, len(b), int(rng.integers(1, 8))):
            b[i] ^= int(rng.integers(1, 256))
        return "flipped bytes", bytes(b)
    return "random bytes", rng.integers(0, 256, len(data), dtype=np.uint8).tobytes()


def _corrupt_model_files(rng, good, tmp, what, suffix, count, extra=()):
    """``count`` corrupted copies of the ``what`` model file ``good`` (``tmp/bad<i><suffix>``),
    each a case of ``npu compile --model`` (with ``extra`` arguments). Flipped bytes may leave
    a valid model (a zip's timestamps or padding, a weight), which may then compile."""
    cases = []
    for i in range(count):
        label, bad = _corrupt(rng, good)
        path = tmp / f"bad{i}{suffix}"
        path.write_bytes(bad)
        cases.append((f"{what} file: {label}", ["compile", "--model", str(path), *extra],
                      label == "flipped bytes"))
    return cases


BAD_SCALES = [float("nan"), float("inf"), -1.0, 0.0, "x", None]
BAD_ZERO_POINTS = [200, -129, 1.5, "x", None]
BAD_SIZES = [0, -1, 10 ** 9, "3", 2.5]


def model_cases(rng, tmp):
    with np.load(REFERENCE_MODEL) as f:
        arrays = {k: f[k] for k in f.files}
    header = json.loads(arrays["header"].tobytes())
    data = REFERENCE_MODEL.read_bytes()
    cases = []

    def with_header(label, edit):
        h = json.loads(json.dumps(header))
        edit(h)
        path = tmp / f"model{len(cases)}.npz"
        _npz(path, {**arrays, "header": np.frombuffer(json.dumps(h).encode(), np.uint8)})
        cases.append((f"model header: {label}", ["compile", "--model", str(path)], False))

    cases += _corrupt_model_files(rng, data, tmp, "model", ".npz", 3)
    layer = int(rng.integers(len(header["layers"])))
    side = str(rng.choice(["input", "output"]))
    scale = BAD_SCALES[rng.integers(len(BAD_SCALES))]
    zp = BAD_ZERO_POINTS[rng.integers(len(BAD_ZERO_POINTS))]
    size = BAD_SIZES[rng.integers(len(BAD_SIZES))]
    with_header(f"layer {layer} {side} scale {scale!r}",
                lambda h: h["layers"][layer][side].update(scale=scale))
    with_header(f"layer {layer} {side} zero point {zp!r}",
                lambda h: h["layers"][layer][side].update(zero_point=zp))
    with_header(f"conv1 kernel {size!r}", lambda h: h["layers"][0].update(kernel=size))
    with_header(f"input shape with {size!r}",
                lambda h: h["input"].update(shape=[8, size, 1]))
    with_header("version 99", lambda h: h.update(version=99))
    member = str(rng.choice([k for k in arrays if k != "header"]))
    path = tmp / f"model{len(cases)}.npz"
    _npz(path, {k: v for k, v in arrays.items() if k != member})
    cases.append((f"model without {member}", ["compile", "--model", str(path)], False))
    path = tmp / f"model{len(cases)}.npz"
    _npz(path, {**arrays, member: arrays[member].astype(np.float32)})
    cases.append((f"model {member} as float32", ["compile", "--model", str(path)], False))
    path = _lying_member(tmp / f"model{len(cases)}.npz", member, (10 ** 6, 10 ** 6))
    cases.append((f"model {member} declaring 4 TB", ["compile", "--model", path], False))
    return cases


def _small_onnx():
    from npu import zoo
    b = zoo.OnnxBuilder("small", [2, 6, 6], seed=0)
    b.conv(4, 3, pad=1)
    return b.model().SerializeToString()


def onnx_cases(rng, tmp):
    calib = _npz(tmp / "calib.npz",
                 {"images": rng.uniform(-1, 1, (4, 2, 6, 6)).astype(np.float32)})
    good = _small_onnx()
    cases = _corrupt_model_files(rng, good, tmp, "onnx", ".onnx", 3, ["--calib", calib])
    (tmp / "good.onnx").write_bytes(good)
    images = rng.uniform(-1, 1, (4, 2, 6, 6)).astype(np.float32)
    images[rng.integers(4), rng.integers(2), rng.integers(6), rng.integers(6)] = \
        rng.choice([np.nan, np.inf, -np.inf])
    bad_calibs = {
        "NaN or Inf": {"images": images},
        "no images": {"x": images},
        "images of another shape": {"images": images[:, :1]},
        "no image": {"images": images[:0]},
        "negative input_scale": {"images": np.nan_to_num(images), "input_scale": -0.5},
    }
    for label, arrays in bad_calibs.items():
        path = _npz(tmp / f"calib{len(cases)}.npz", arrays)
        cases.append((f"calibration: {label}", ["compile", "--model", str(tmp / "good.onnx"),
                                                "--calib", path], False))
    path = _lying_member(tmp / "calib_lying.npz", "images", (10 ** 5, 2, 6, 6, 10 ** 4))
    cases.append(("calibration declaring 2 TB", ["compile", "--model", str(tmp / "good.onnx"),
                                                 "--calib", path], False))
    cases.append(("--calib with an .npz model", ["compile", "--calib", calib], False))
    return cases


def tflite_cases(rng, tmp):
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (make venv)")
    from tflite_nets import small_resnet
    good = small_resnet(np.random.default_rng(401))
    return _corrupt_model_files(rng, good, tmp, "tflite", ".tflite", 4)


def data_cases(rng, tmp):
    n = int(rng.integers(1, 5))
    good = rng.integers(-128, 128, (n, 8, 8, 1)).astype(np.int8)
    dtype = rng.choice([np.int16, np.uint8, np.int64, np.bool_, np.complex64])
    nan = good.astype(np.float32)
    nan.flat[rng.integers(nan.size)] = rng.choice([np.nan, np.inf, -np.inf])
    bad = {
        f"images of {np.dtype(dtype)}": {"images": good.astype(dtype)},
        "NaN or Inf images": {"images": nan},
        "int8 images of another shape": {"images": good[:, :, :int(rng.integers(1, 8))]},
        "images of no image": {"images": good[:0]},
        "a scalar as images": {"images": np.int8(1)},
        "no images": {"labels": np.zeros(n, np.int64)},
        "fewer labels": {"images": good, "labels": np.zeros(n - 1, np.int64)},
        "float labels": {"images": good, "labels": np.zeros(n)},
        "2-D labels": {"images": good, "labels": np.zeros((n, 2), np.int64)},
    }
    cases = [(f"--data {label}", ["run", "--data", _npz(tmp / f"data{i}.npz", arrays),
                                  "--images", "0:1"], False)
             for i, (label, arrays) in enumerate(bad.items())]
    path = _lying_member(tmp / "data_lying.npz", "images", (10 ** 9, 8, 8, 1))
    cases.append(("--data declaring 256 GB", ["run", "--data", path], False))
    label, corrupt = _corrupt(rng, (tmp / "data0.npz").read_bytes())
    (tmp / "data_corrupt.npz").write_bytes(corrupt)     # of a malformed file: refused anyway
    cases.append((f"--data file: {label}", ["run", "--data", str(tmp / "data_corrupt.npz")],
                  False))
    cases.append(("--data missing", ["run", "--data", str(tmp / "missing.npz")], False))
    return cases


def option_cases(rng, tmp):
    def pick(values):
        return str(values[rng.integers(len(values))])

    bad = [
        ("--stall", pick(["nan", "inf", "-inf", "1", "1.5", "-1e-9", "x", ""])),
        ("--seed", pick([str(-int(rng.integers(1, 10 ** 6))), "1.5", "x"])),
        ("--chunk", pick(["0", str(-int(rng.integers(1, 100))), "x"])),
        ("--batch", pick(["0", str(-int(rng.integers(1, 100))), "x"])),
        ("--images", pick(["5:2", "a:b", "1:2:3", ":0", "-1:", "0:100000", "3"])),
        ("--sim", pick(["spice", ""])),
        ("-p", pick([f"nosuch{rng.integers(100)}=1", "act_depth=-16", "act_depth=12",
                     "imem_depth=100000", "pool_max_k=x", "=3", "rows"])),
        ("--rows", pick(["0", "65", "-1", "x"])),
        ("--cols", pick(["0", "65", "x"])),
        ("--model", pick([str(tmp / "missing.npz"), str(tmp / "missing.onnx"),
                          str(tmp / "missing.tflite"), str(tmp)])),
    ]
    return [(f"option {opt} {val!r}", ["run", "--images", "0:1", f"{opt}={val}"], False)
            for opt, val in bad]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("generate", [model_cases, onnx_cases, tflite_cases, data_cases,
                                      option_cases])
def test_malformed_input_is_refused_in_one_line(seed, generate, tmp_path, capsys,
                                                no_simulation):
    rng = np.random.default_rng([seed, sum(generate.__name__.encode())])
    for label, argv, may_be_valid in generate(rng, tmp_path):
        check(seed, label, argv, capsys, may_be_valid)
