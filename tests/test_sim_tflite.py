"""Imported ``.tflite`` models on the RTL (Verilator, the default 8x8 configuration): every
output bit-exact against golden (the testbench asserts it) and against LiteRT's reference
kernels (computed here), and the cycles as the cycle model predicts.

* ``npu run --model X.tflite --json`` end to end (the CLI's LiteRT check included);
* the shapes of the MLPerf Tiny visual wake words and anomaly detection models (written here);
* the official MLPerf Tiny models where ../shared/mlperf_tiny exists, whole.
"""

import json

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (make venv)")

from npu.litert_reference import litert_outputs  # noqa: E402
from npu.tflite_import import import_tflite  # noqa: E402
from test_sim_npu import check_cycle_model, run_npu  # noqa: E402
from test_tflite_import import MLPERF_MODELS, mlperf_path, random_inputs  # noqa: E402
from tflite_nets import (autoencoder, mobilenet_v1_025, small_resnet,  # noqa: E402
                         two_residual_stages)
from flow.simulate import missing_simulator  # noqa: E402


def test_npu_run_tflite_against_litert(tmp_path, capsys, sim_seed):
    """The CLI path: import, RTL, golden, LiteRT; --json has litert_reference and the int8
    output of every image, equal to LiteRT's outputs computed here."""
    problem = missing_simulator("verilator")
    if problem:
        pytest.skip(problem)
    from npu.cli import main
    seed = sim_seed(400)
    path = tmp_path / "small_resnet.tflite"
    path.write_bytes(small_resnet(np.random.default_rng(seed)))
    images = random_inputs((16, 16, 3), 3, seed)
    np.savez(tmp_path / "images.npz", images=images)
    status = main(["run", "--model", str(path), "--data", str(tmp_path / "images.npz"),
                   "--images", "0:3", "--rows", "8", "--cols", "8", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert status == 0 and res["all_exact"], f"seed {seed}"
    assert res["litert_reference"] == {"exact": True, "images": 3, "max_abs_diff_lsb": 0}
    want = litert_outputs(path, images)
    assert [r["output"] for r in res["images"]] == want.reshape(3, -1).tolist()
    assert res["cycles_per_batch"] == res["predicted_cycles_per_batch"]


def test_npu_run_tflite_refuses_wrong_images(tmp_path, capsys):
    from npu.cli import main
    path = tmp_path / "small_resnet.tflite"
    path.write_bytes(small_resnet(np.random.default_rng(401)))
    np.savez(tmp_path / "images.npz", images=np.zeros((2, 16, 16, 3), np.float32))
    assert main(["run", "--model", str(path), "--data", str(tmp_path / "images.npz"),
                 "--images", "0:2"]) == 2
    assert capsys.readouterr().err == ("error: images are float32 (16, 16, 3), the model takes "
                                       "int8 (16, 16, 3)\n")


def run_npu_images(model, seed):
    """The images test_sim_npu.run_npu draws for a given model on Verilator."""
    return np.random.default_rng(seed).integers(-128, 128, (4, *model.input_shape),
                                                dtype=np.int8)


def rtl_against_litert(tmp_path, tflite, seed, batch=1):
    """Run the imported model on the RTL (random images of the test helper); the outputs
    against LiteRT's, and the cycle model against the counters."""
    model = import_tflite(tflite)
    rep = run_npu(tmp_path, "verilator", "model_inference", seed, batch=batch, model=model)
    images = run_npu_images(model, seed)
    path = tmp_path / "model.tflite"
    path.write_bytes(tflite)
    want = litert_outputs(path, images).reshape(len(images), -1)
    got = np.array([r["output"] for r in rep["records"]])
    assert np.array_equal(got, want), f"RTL differs from LiteRT (seed {seed})"
    check_cycle_model(model, batch, rep)
    return rep


def test_visual_wake_words_shape_on_rtl(tmp_path, sim_seed):
    """MobileNetV1 0.25 at 96x96x3 (4 blocks, depthwise stride 2 SAME), with its SOFTMAX."""
    seed = sim_seed(402)
    rtl_against_litert(tmp_path, mobilenet_v1_025(np.random.default_rng(seed)), seed)


def test_anomaly_detection_autoencoder_on_rtl(tmp_path, sim_seed):
    seed = sim_seed(403)
    rtl_against_litert(tmp_path, autoencoder(np.random.default_rng(seed)), seed, batch=2)


# ---- The official MLPerf Tiny models --------------------------------------------------------

#: Images per official model on the RTL: ResNet-8 takes about a minute of simulation each.
MLPERF_RTL_IMAGES = {"resnet8": 1, "dscnn_kws": 2}


@pytest.mark.parametrize("name", sorted(MLPERF_MODELS))
def test_mlperf_model_on_rtl(tmp_path, capsys, sim_seed, name):
    """The whole official model through ``npu run``: every output bit-exact against golden
    and against LiteRT's reference kernels, the cycles as predicted."""
    path = mlperf_path(name)
    if missing_simulator("verilator"):
        pytest.skip(missing_simulator("verilator"))
    model = import_tflite(path)
    from npu.cli import main
    seed, n = sim_seed(404), MLPERF_RTL_IMAGES[name]
    images = np.random.default_rng(seed).integers(-128, 128, (n, *model.input_shape),
                                                  dtype=np.int8)
    np.savez(tmp_path / "images.npz", images=images)
    status = main(["run", "--model", str(path), "--data", str(tmp_path / "images.npz"),
                   "--images", f"0:{n}", "--batch", "1", "--rows", "8", "--cols", "8",
                   "--json"])
    res = json.loads(capsys.readouterr().out)
    assert status == 0 and res["all_exact"], f"{name}: seed {seed}"
    assert res["litert_reference"] == {"exact": True, "images": n, "max_abs_diff_lsb": 0}
    assert res["cycles_per_batch"] == res["predicted_cycles_per_batch"]
    want = litert_outputs(path, images)
    assert [r["output"] for r in res["images"]] == want.reshape(n, -1).tolist()


def test_two_residual_stages_on_rtl(tmp_path, sim_seed):
    """Two residual ADDs whose regions differ (16 then 32 channels): with the engines' checks
    settling for too few cycles (hw.sizes.CHECK_SETTLE), the second was checked against the
    first one's regions."""
    seed = sim_seed(406)
    rtl_against_litert(tmp_path, two_residual_stages(np.random.default_rng(seed)), seed)
