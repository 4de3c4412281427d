"""The MLPerf Tiny shapes of golden.mlperf_archs: their geometry is the reference models'
(TFLite 'same' padding, shapes, MAC counts as published), and each compiles for the default
8x8 npu_top at batch 1 (ACT, WGT, PARAM and IMEM hold it)."""

import pytest

from golden import float_model
from golden.mlperf_archs import ARCHS, quantized, same_padding
from npu.compiler import compile_model


@pytest.mark.parametrize("size,k,stride,want", [
    (49, 10, 2, (4, 5)), (10, 4, 2, (1, 1)), (32, 3, 2, (0, 1)), (96, 3, 2, (0, 1)),
    (25, 3, 1, (1, 1)), (8, 1, 2, (0, 0)), (7, 3, 2, (1, 1))])
def test_same_padding_is_tflites(size, k, stride, want):
    """TFLite: out = ceil(size / stride), total = max((out - 1) * stride + k - size, 0), the
    odd one after."""
    assert same_padding(size, k, stride) == want


# Output shapes of the reference models' first and last feature maps, and their MACs
# (conv, depthwise and dense; MLPerf Tiny's papers: ResNet-8 12.5 M, DS-CNN 2.7 M,
# MobileNetV1-0.25 at 96x96 7.5 M, the autoencoder 0.26 M).
SHAPES = {"resnet8": ((32, 32, 16), (8, 8, 64), 12.5e6),
          "ds_cnn": ((25, 5, 64), (25, 5, 64), 2.7e6),
          "mobilenet_v1": ((48, 48, 8), (3, 3, 256), 7.5e6),
          "autoencoder": ((128,), (640,), 0.26e6)}


def _macs(arch):
    total = 0
    for L, out in zip(arch["layers"], float_model.output_shapes(arch)):
        if L["type"] == "conv2d":
            kh, kw = L["kernel"]
            total += out[0] * out[1] * out[2] * kh * kw * L["in_channels"]
        elif L["type"] == "depthwise_conv2d":
            kh, kw = L["kernel"]
            total += out[0] * out[1] * out[2] * kh * kw
        elif L["type"] == "dense":
            total += L["in_features"] * L["out_features"]
    return total


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_mlperf_shapes_compile_at_the_default_configuration(name):
    arch = ARCHS[name]()
    first, last, macs = SHAPES[name]
    shapes = [tuple(s) for s in float_model.output_shapes(arch)]
    gemm_shapes = [s for L, s in zip(arch["layers"], shapes)
                   if L["type"] in ("conv2d", "depthwise_conv2d", "dense")]
    assert gemm_shapes[0] == first and gemm_shapes[-2 if name != "autoencoder" else -1] == last
    assert abs(_macs(arch) - macs) / macs < 0.03
    model, _ = quantized(arch)
    prog = compile_model(model, {"rows": 8, "cols": 8}, batch=1)
    assert sum(p.macs for p in prog.layers) >= _macs(arch)
