"""The MLPerf Tiny networks' shapes as float architectures (:mod:`golden.float_model`), for the
tests, ``npu bench`` and the cycle model.

Layer for layer the reference models of MLPerf Tiny v1.1 (``mlcommons/tiny``,
``benchmark/training``): the same kernels, strides, TFLite 'same' padding (asymmetric at
stride 2: the extra row and column go to the bottom and right), channel counts, residual
adds, pooling and classifier. Batch normalization is folded into the convolutions, as the
TFLite converter does, and dropout is gone. The weights are He-initialized and seeded
(:func:`quantized`), not trained: these shapes measure cycles, utilization and the RTL's
exactness, not accuracy. The official int8 models themselves come in as ``.tflite`` files.

=============  =========  ==========================================================
name           input      network
=============  =========  ==========================================================
resnet8        32x32x3    conv 16; 3 residual stacks (16, 32 /2, 64 /2; 1x1 stride-2
                          projections), ReLU after each add; 8x8 average pool; dense 10
ds_cnn         49x10x1    conv 64 10x4 /2; 4 x (depthwise 3x3, pointwise 64), ReLU;
                          25x5 average pool; dense 12
mobilenet_v1   96x96x3    MobileNetV1 alpha 0.25: conv 8 /2; 13 depthwise-separable
                          blocks, ReLU6; 3x3 average pool; dense 2
autoencoder    640        anomaly detection: dense 128 x 4, 8, 128 x 4 with ReLU, 640
=============  =========  ==========================================================
"""

import numpy as np

__all__ = ["same_padding", "residual_net", "resnet8", "ds_cnn", "mobilenet_v1", "autoencoder", "ARCHS", "quantized"]


def same_padding(size, k, stride):
    """TFLite 'same' padding of one axis: ``(before, after)``, the odd one after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


class _Arch:
    """A float architecture being written layer by layer, tracking the (H, W, C) shape."""

    def __init__(self, name, shape):
        self.name, self.input_shape = name, list(shape)
        self.shape, self.layers = list(shape), []

    def _window(self, k, stride):
        kh, kw = k if isinstance(k, (list, tuple)) else (k, k)
        h, w, _ = self.shape
        (pt, pb), (pl, pr) = same_padding(h, kh, stride), same_padding(w, kw, stride)
        self.shape[:2] = [(h + pt + pb - kh) // stride + 1, (w + pl + pr - kw) // stride + 1]
        return {"kernel": [kh, kw], "stride": stride, "padding": [pt, pl, pb, pr]}

    def add_layer(self, layer, inputs=None):
        name = f"{layer['type'].split('2d')[0]}{len(self.layers)}"
        layer = {"name": name, **layer}
        if inputs is not None:
            layer["inputs"] = inputs
        self.layers.append(layer)
        return name

    def conv(self, cout, k, stride=1, act="relu", inputs=None):
        cin = self.shape[2]
        win = self._window(k, stride)
        self.shape[2] = cout
        return self.add_layer({"type": "conv2d", **win, "in_channels": cin,
                               "out_channels": cout, "activation": act}, inputs)

    def depthwise(self, k, stride=1, act="relu"):
        win = self._window(k, stride)
        return self.add_layer({"type": "depthwise_conv2d", **win, "channels": self.shape[2],
                               "activation": act})

    def global_avgpool(self):
        h, w, _ = self.shape
        self.shape[:2] = [1, 1]
        return self.add_layer({"type": "avgpool2d", "kernel": [h, w], "stride": 1,
                               "padding": 0})

    def classifier(self, n):
        self.add_layer({"type": "flatten"})
        self.add_layer({"type": "dense", "in_features": self.shape[2], "out_features": n,
                        "activation": "none"})
        self.add_layer({"type": "softmax"})
        return {"name": self.name, "input_shape": self.input_shape, "layers": self.layers}


def residual_net(name, input_shape, stem, stacks, classes):
    """A ResNet v1 of the MLPerf Tiny kind: a stem convolution, then per stack ``(channels,
    stride)`` two 3x3 convolutions (the first strided) added to the stack's input, or to its
    1x1 strided projection when the stride is not 1, with ReLU after the add; the global
    average pooling and the dense classifier."""
    a = _Arch(name, input_shape)
    x = a.conv(stem, 3)
    for cout, stride in stacks:
        shape = list(a.shape)
        a.conv(cout, 3, stride, inputs=[x])
        y = a.conv(cout, 3, 1, act="none")
        if stride != 1:
            a.shape = shape
            x = a.conv(cout, 1, stride, act="none", inputs=[x])
        x = a.add_layer({"type": "add", "inputs": [x, y], "activation": "relu"})
    a.global_avgpool()
    return a.classifier(classes)


def resnet8():
    return residual_net("resnet8", [32, 32, 3], 16, ((16, 1), (32, 2), (64, 2)), 10)


def ds_cnn(channels=64, blocks=4):
    a = _Arch("ds_cnn" if (channels, blocks) == (64, 4) else f"ds_cnn_{channels}x{blocks}",
              [49, 10, 1])
    a.conv(channels, [10, 4], 2)
    for _ in range(blocks):
        a.depthwise(3)
        a.conv(channels, 1)
    a.global_avgpool()
    return a.classifier(12)


def mobilenet_v1(alpha=0.25):
    a = _Arch("mobilenet_v1", [96, 96, 3])
    c = lambda n: int(n * alpha)  # noqa: E731
    a.conv(c(32), 3, 2, act="relu6")
    for n, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1),
                      (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)):
        a.depthwise(3, stride, act="relu6")
        a.conv(c(n), 1, act="relu6")
    a.global_avgpool()
    return a.classifier(2)


def autoencoder():
    layers, f = [], 640
    for i, n in enumerate((128, 128, 128, 128, 8, 128, 128, 128, 128, 640)):
        layers.append({"type": "dense", "name": f"dense{i}", "in_features": f,
                       "out_features": n, "activation": "relu" if n != 640 else "none"})
        f = n
    return {"name": "autoencoder", "input_shape": [640], "layers": layers}


#: name -> architecture builder
ARCHS = {"resnet8": resnet8, "ds_cnn": ds_cnn, "mobilenet_v1": mobilenet_v1,
         "autoencoder": autoencoder}


def quantized(arch, seed=1, calib_images=8):
    """The int8 model (:mod:`golden.model`) of ``arch`` with seeded He-initialized weights,
    calibrated by post-training quantization (:mod:`golden.ptq`) on uniform [-1, 1) images;
    returns ``(model, rng)`` (the generator continues, e.g. for test images)."""
    from . import float_model
    from .ptq import activation_qparams, quantize_model
    rng = np.random.default_rng(seed)
    params = float_model.init_params(arch, rng)
    for p in params.values():
        p["bias"] = (0.05 * rng.standard_normal(p["bias"].shape)).astype(np.float32)
    calib = rng.uniform(-1, 1, (calib_images, *arch["input_shape"])).astype(np.float32)
    s_in, z_in = activation_qparams(calib.min(), calib.max())
    return quantize_model(arch, params, calib, s_in, z_in), rng
