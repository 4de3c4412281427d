"""Networks of the shapes real users deploy, as float ONNX models with seeded random weights,
for the tests and ``npu bench``: the seed documents' Keras MNIST network and MLPerf Tiny's
anomaly-detection autoencoder (more as the hardware runs them).

Each builder returns ``(onnx.ModelProto, calibration images, test images)``: float32 in the
ONNX input layout, drawn from the same seeded distribution. Weights are He-initialized, so
activations keep their scale through the layers, as in a trained network; they are not
trained, so accuracies mean nothing here: what the tests check is that the RTL computes what
the golden model computes, and how far int8 is from the float graph.
"""

import numpy as np

__all__ = ["OnnxBuilder", "keras_mnist", "autoencoder", "MODELS"]


class OnnxBuilder:
    """A float ONNX graph in NCHW, built node by node with onnx.helper."""

    def __init__(self, name, input_shape, seed):
        from onnx import TensorProto, helper
        self.helper, self.TensorProto = helper, TensorProto
        self.name, self.input_shape = name, list(input_shape)
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.cur, self.shape = "x", list(input_shape)

    def const(self, name, value):
        from onnx import numpy_helper
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op, ins, **attrs):
        out = f"t{len(self.nodes)}"
        self.nodes.append(self.helper.make_node(op, ins, [out], name=f"{op.lower()}{len(self.nodes)}",
                                                **attrs))
        self.cur = out
        return out

    def conv(self, cout, k, stride=1, pad=0, relu=True):
        cin, h, w = self.shape
        wt = self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2 / (k * k * cin))
        n = len(self.nodes)
        self.node("Conv", [self.cur, self.const(f"w{n}", wt.astype(np.float32)),
                           self.const(f"b{n}", (0.05 * self.rng.standard_normal(cout))
                                      .astype(np.float32))],
                  kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        self.shape = [cout, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1]
        if relu:
            self.node("Relu", [self.cur])

    def maxpool(self, k, stride):
        c, h, w = self.shape
        self.node("MaxPool", [self.cur], kernel_shape=[k, k], strides=[stride, stride])
        self.shape = [c, (h - k) // stride + 1, (w - k) // stride + 1]

    def flatten(self):
        self.node("Flatten", [self.cur], axis=1)
        self.shape = [int(np.prod(self.shape))]

    def dense(self, n, relu=True):
        f = self.shape[0]
        wt = self.rng.standard_normal((n, f)) * np.sqrt(2 / f)
        k = len(self.nodes)
        self.node("Gemm", [self.cur, self.const(f"fw{k}", wt.astype(np.float32)),
                           self.const(f"fb{k}", (0.05 * self.rng.standard_normal(n))
                                      .astype(np.float32))], transB=1)
        self.shape = [n]
        if relu:
            self.node("Relu", [self.cur])

    def softmax(self):
        self.node("Softmax", [self.cur], axis=-1)

    def model(self):
        h, T = self.helper, self.TensorProto
        g = h.make_graph(self.nodes, self.name,
                         [h.make_tensor_value_info("x", T.FLOAT, ["N", *self.input_shape])],
                         [h.make_tensor_value_info(self.cur, T.FLOAT, ["N", *self.shape])],
                         initializer=self.inits)
        m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
        m.ir_version = 8
        return m

    def images(self, n, low=0.0, high=1.0):
        return self.rng.uniform(low, high, (n, *self.input_shape)).astype(np.float32)


def keras_mnist(seed=1, calib=32, test=4):
    """The seed documents' Keras MNIST network: Conv2D(32, 3x3, relu) on 28x28x1 ->
    MaxPool 2 -> Flatten -> Dense(64, relu) -> Dense(10, softmax)."""
    b = OnnxBuilder("keras_mnist", [1, 28, 28], seed)
    b.conv(32, 3)
    b.maxpool(2, 2)
    b.flatten()
    b.dense(64)
    b.dense(10, relu=False)
    b.softmax()
    return b.model(), b.images(calib), b.images(test)


def autoencoder(seed=1, calib=32, test=4):
    """MLPerf Tiny's anomaly-detection autoencoder: 640 -> 128 x 4 -> 8 -> 128 x 4 -> 640,
    dense with ReLU (the last layer linear)."""
    b = OnnxBuilder("ad_autoencoder", [640], seed)
    for n in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        b.dense(n)
    b.dense(640, relu=False)
    return b.model(), b.images(calib, -1, 1), b.images(test, -1, 1)


#: name -> builder, for `npu bench` and the tests.
MODELS = {"keras_mnist": keras_mnist, "ad_autoencoder": autoencoder}
