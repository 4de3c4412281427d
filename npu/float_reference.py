"""How far is the int8 hardware from the float model? The float ONNX graph, run by onnxruntime,
as the reference (a model this project did not write).

    from npu.float_reference import float_outputs, compare_outputs, ort_static_top1
    ref = float_outputs("model.onnx", images)                  # onnxruntime, float32
    report = compare_outputs(ref, int8_out, scale, zero_point, labels)
    ort = ort_static_top1("model.onnx", calib, images, ref)    # onnxruntime's own int8

``npu run --model X.onnx --data D.npz`` (float images in the ONNX input layout) prints the
comparison and puts it in ``--json`` as ``"float_reference"``:

``top1_agreement``
    fraction of images whose int8 top-1 (argmax of the int8 output, ties to the lowest index)
    equals the float top-1;
``max_abs_error_lsb``
    ``max |(q - z) - y / S|`` over every output value: the int8 output ``q`` dequantized with
    the output quantization ``(S, z)`` against the float output ``y``, in output LSBs;
``mean_cosine``
    the mean over images of the cosine similarity of the dequantized int8 output and the float
    output (1.0 when both are zero);
``float_accuracy``, ``int8_accuracy``
    with labels, the fraction of top-1 equal to the label, of each;
``ort_static_top1_agreement``
    the top-1 agreement with float of onnxruntime's own static quantization of the same graph
    (:func:`ort_static_top1`: ``quantize_static``, QDQ, per-channel int8 weights, int8
    activations, MinMax calibration on the same calibration images), side by side.

Outputs are compared in the project's layout: a 4-D float output in NCHW is transposed to
NHWC first. Everything here is float; the int8 side comes from the hardware (or golden).
"""

import contextlib
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["float_outputs", "compare_outputs", "ort_static_top1", "float_reference",
           "run_report", "format_report", "zoo_agreement"]


def _session(model):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _static_batch(sess):
    d = sess.get_inputs()[0].shape[0]
    return d if isinstance(d, int) and d > 0 else None


def _run(sess, images, chunk=256):
    """The session's first output on float32 ``images``, in chunks (or one image at a time
    for a model exported with a static batch of 1)."""
    x = np.asarray(images, np.float32)
    name = sess.get_inputs()[0].name
    step = _static_batch(sess) or chunk
    if len(x) % step and _static_batch(sess):
        raise ValueError(f"the ONNX model takes batches of {step}; {len(x)} images")
    return np.concatenate([sess.run(None, {name: x[i:i + step]})[0]
                           for i in range(0, len(x), step)])


def float_outputs(onnx_model, images):
    """onnxruntime's float output of ``onnx_model`` (a path or a ModelProto) on ``images`` in
    the ONNX input layout."""
    return _run(_session(onnx_model), images)


def _project_layout(y, shape):
    y = np.asarray(y, np.float64)
    if y.ndim == 4 and tuple(y.shape[1:]) != tuple(shape):
        y = y.transpose(0, 2, 3, 1)
    if tuple(y.shape[1:]) != tuple(shape):
        raise ValueError(f"float output of shape {y.shape[1:]} does not match the int8 "
                         f"output {tuple(shape)}")
    return y


def compare_outputs(float_out, int8_out, scale, zero_point, labels=None):
    """The comparison figures (module docstring) of float outputs and int8 outputs ``(N,
    *shape)`` (project layout) quantized with ``(scale, zero_point)``."""
    q = np.asarray(int8_out)
    n = len(q)
    y = _project_layout(float_out, q.shape[1:]).reshape(n, -1)
    d = scale * (q.reshape(n, -1).astype(np.float64) - zero_point)
    top_f, top_q = y.argmax(-1), q.reshape(n, -1).argmax(-1)
    norm = np.linalg.norm(y, axis=1) * np.linalg.norm(d, axis=1)
    both_zero = (np.linalg.norm(y, axis=1) == 0) & (np.linalg.norm(d, axis=1) == 0)
    cos = np.where(norm > 0, (y * d).sum(axis=1) / np.where(norm > 0, norm, 1.0),
                   np.where(both_zero, 1.0, 0.0))
    r = {"images": int(n), "top1_agreement": float((top_f == top_q).mean()),
         "max_abs_error_lsb": float(np.abs(d - y).max() / scale),
         "mean_cosine": float(cos.mean())}
    if labels is not None:
        lab = np.asarray(labels).reshape(-1)[:n]
        r["float_accuracy"] = float((top_f == lab).mean())
        r["int8_accuracy"] = float((top_q == lab).mean())
    return r


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization logs advice on the root logger; keep ``npu run``'s output
    clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader protocol over an array."""

    def __init__(self, name, images, step):
        self.batches = iter([{name: images[i:i + step]} for i in range(0, len(images), step)])

    def get_next(self):
        return next(self.batches, None)


def ort_static_top1(onnx_model, calib_images, images, float_out=None, pre_process=True):
    """onnxruntime's static quantization of the float graph (``quantize_static``: QDQ,
    per-channel, int8 weights and activations, MinMax on ``calib_images``), run on
    ``images``: ``{"ort_static_top1_agreement", "ort_static_seconds"}`` (top-1 agreement of
    its output with the float output ``float_out``, computed if not given)."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    t0 = time.perf_counter()
    if float_out is None:
        float_out = float_outputs(onnx_model, images)
    proto = onnx_model if isinstance(onnx_model, onnx.ModelProto) else onnx.load(str(onnx_model))
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        onnx.save(proto, str(src))
        sess = _session(proto)
        x = np.asarray(calib_images, np.float32)
        reader = _Reader(sess.get_inputs()[0].name, x, _static_batch(sess) or len(x))
        with _quiet():
            if pre_process:     # onnxruntime's recommended first step (BN folded, shapes)
                from onnxruntime.quantization.shape_inference import quant_pre_process
                quant_pre_process(str(src), str(src), skip_symbolic_shape=True)
            quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        q = _run(_session(dst), images)
    n = len(q)
    agree = (q.reshape(n, -1).argmax(-1) == np.asarray(float_out).reshape(n, -1).argmax(-1))
    return {"ort_static_top1_agreement": float(agree.mean()),
            "ort_static_seconds": time.perf_counter() - t0}


def float_reference(onnx_model, images, int8_out, scale, zero_point, labels=None,
                    calib_images=None):
    """Everything ``npu run`` reports: :func:`compare_outputs` of onnxruntime's float output
    against ``int8_out``, and, given the calibration images, :func:`ort_static_top1`."""
    y = float_outputs(onnx_model, images)
    r = compare_outputs(y, int8_out, scale, zero_point, labels)
    if calib_images is not None:
        r.update(ort_static_top1(onnx_model, calib_images, images, y))
    return r


def run_report(onnx_path, images, outputs, model, labels=None, calib=None):
    """The ``"float_reference"`` block of ``npu run``: float ``images`` (ONNX layout), the
    int8 ``outputs`` of the hardware, the int8 ``model``; ``calib``: the calibration file
    (default: the one recorded next to the saved int8 model), for onnxruntime's static
    quantization."""
    from npu.onnx_import import int8_path, load_calibration
    if calib is None:
        meta = int8_path(onnx_path).with_suffix(".json")
        if meta.exists():
            import json
            calib = json.loads(meta.read_text()).get("calib")
    calib_images = load_calibration(calib)[0] if calib and Path(calib).exists() else None
    out = np.asarray(outputs, np.int8).reshape(len(images), *model.output_shape)
    return float_reference(onnx_path, images, out, model.output_scale,
                           model.output_zero_point, labels, calib_images)


def format_report(r):
    """The lines ``npu run`` prints."""
    lines = [f"float reference (onnxruntime, {r['images']} images): top-1 agreement "
             f"{100 * r['top1_agreement']:.2f} %, max |error| {r['max_abs_error_lsb']:.2f} "
             f"output LSB, mean cosine {r['mean_cosine']:.5f}"]
    if "float_accuracy" in r:
        lines.append(f"accuracy: float {100 * r['float_accuracy']:.2f} %, int8 "
                     f"{100 * r['int8_accuracy']:.2f} %")
    if "ort_static_top1_agreement" in r:
        lines.append(f"onnxruntime quantize_static (QDQ, per-channel, MinMax, same calibration): "
                     f"top-1 agreement with float {100 * r['ort_static_top1_agreement']:.2f} % "
                     f"(int8 hardware: {100 * r['top1_agreement']:.2f} %)")
    return lines


def zoo_agreement(name, seed=1, calib=64, test=200, **kw):
    """For ``npu bench``: a graph of :mod:`npu.zoo` imported and quantized by the project
    (its int8 outputs from the golden inference, which the RTL matches bit for bit), against
    onnxruntime's float output, with onnxruntime's static quantization side by side."""
    from golden.inference import run
    from npu import zoo
    from npu.onnx_import import import_onnx, to_model_input
    m, cal, images = zoo.MODELS[name](seed=seed, calib=calib, test=test, **kw)
    model = import_onnx(m, cal)
    q = run(model, to_model_input(model, images))
    return {"model": name, "seed": seed, "calibration_images": calib,
            **float_reference(m, images, q, model.output_scale, model.output_zero_point,
                              calib_images=cal)}
