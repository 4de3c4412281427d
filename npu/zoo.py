"""Networks of the shapes real users deploy, as float ONNX models with seeded random weights,
for the tests and ``npu bench``: the seed documents' Keras MNIST network, MLPerf Tiny's
anomaly-detection autoencoder, and the graph CNNs of MLPerf Tiny: ResNet-8 (residual Adds,
1x1 stride-2 projections), DS-CNN (a 10x4 kernel, asymmetric padding, depthwise convolutions,
a 25x5 average pool) and MobileNetV1-0.25 (depthwise stride 2, ReLU6, global pooling).

Each builder returns ``(onnx.ModelProto, calibration images, test images)``: float32 in the
ONNX input layout, drawn from the same seeded distribution. Weights are He-initialized, so
activations keep their scale through the layers, as in a trained network; they are not
trained, so accuracies mean nothing here: what the tests check is that the RTL computes what
the golden model computes, and how far int8 is from the float graph.
"""

import numpy as np

__all__ = ["OnnxBuilder", "keras_mnist", "autoencoder", "resnet8", "ds_cnn",
           "mobilenet_v1", "MODELS"]


def _pair(v):
    return [v, v] if isinstance(v, int) else list(v)


class OnnxBuilder:
    """A float ONNX graph in NCHW, built node by node with onnx.helper. Each method reads
    ``x`` (default: the last output, ``cur``) and returns its output's name; ``shapes`` holds
    every data tensor's (C, H, W) or (F,)."""

    def __init__(self, name, input_shape, seed):
        from onnx import TensorProto, helper
        self.helper, self.TensorProto = helper, TensorProto
        self.name, self.input_shape = name, list(input_shape)
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.cur, self.shapes = "x", {"x": list(input_shape)}

    @property
    def shape(self):
        return self.shapes[self.cur]

    def const(self, name, value):
        from onnx import numpy_helper
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op, ins, shape=None, **attrs):
        out = f"t{len(self.nodes)}"
        self.nodes.append(self.helper.make_node(op, ins, [out], name=f"{op.lower()}{len(self.nodes)}",
                                                **attrs))
        self.shapes[out] = list(shape or self.shapes[ins[0]])
        self.cur = out
        return out

    def conv(self, cout, k, stride=1, pad=0, relu=True, x=None, group=1, auto_pad=None,
             relu6=False, bn=False):
        """Conv (``k``, ``stride``: int or [h, w]; ``pad``: int or [top, left, bottom,
        right]; or ``auto_pad``), then BatchNormalization (``bn``) and ReLU or ReLU6."""
        x = x or self.cur
        cin, h, w = self.shapes[x]
        (kh, kw), (sy, sx) = _pair(k), _pair(stride)
        pads = [pad] * 4 if isinstance(pad, int) else list(pad)
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            ho, wo = -(-h // sy), -(-w // sx)
        else:
            if auto_pad == "VALID":
                pads = [0] * 4
            ho = (h + pads[0] + pads[2] - kh) // sy + 1
            wo = (w + pads[1] + pads[3] - kw) // sx + 1
        fan_in = kh * kw * cin // group
        wt = self.rng.standard_normal((cout, cin // group, kh, kw)) * np.sqrt(2 / fan_in)
        n = len(self.nodes)
        geo = {"auto_pad": auto_pad} if auto_pad else {"pads": pads}
        self.node("Conv", [x, self.const(f"w{n}", wt.astype(np.float32)),
                           self.const(f"b{n}", (0.05 * self.rng.standard_normal(cout))
                                      .astype(np.float32))], [cout, ho, wo],
                  kernel_shape=[kh, kw], strides=[sy, sx], group=group, **geo)
        if bn:
            self.batchnorm()
        if relu6:
            self.node("Clip", [self.cur, self.const(f"lo{n}", np.float32(0)),
                               self.const(f"hi{n}", np.float32(6))])
        elif relu:
            self.node("Relu", [self.cur])
        return self.cur

    def batchnorm(self):
        c = self.shape[0]
        n = len(self.nodes)
        stats = [self.rng.uniform(0.5, 1.5, c), 0.1 * self.rng.standard_normal(c),
                 0.1 * self.rng.standard_normal(c), self.rng.uniform(0.5, 1.5, c)]
        names = [self.const(f"bn{n}_{i}", v.astype(np.float32)) for i, v in enumerate(stats)]
        return self.node("BatchNormalization", [self.cur, *names], epsilon=1e-3)

    def add(self, a, b, relu=True):
        self.node("Add", [a, b])
        if relu:
            self.node("Relu", [self.cur])
        return self.cur

    def maxpool(self, k, stride):
        c, h, w = self.shape
        self.node("MaxPool", [self.cur], [c, (h - k) // stride + 1, (w - k) // stride + 1],
                  kernel_shape=[k, k], strides=[stride, stride])

    def avgpool(self, k):
        """AveragePool with a ``k`` window (int or [h, w]) and stride = window."""
        c, h, w = self.shape
        kh, kw = _pair(k)
        return self.node("AveragePool", [self.cur], [c, h // kh, w // kw], kernel_shape=[kh, kw],
                         strides=[kh, kw])

    def global_avgpool(self):
        return self.node("GlobalAveragePool", [self.cur], [self.shape[0], 1, 1])

    def flatten(self):
        self.node("Flatten", [self.cur], [int(np.prod(self.shape))], axis=1)

    def dense(self, n, relu=True):
        f = self.shape[0]
        wt = self.rng.standard_normal((n, f)) * np.sqrt(2 / f)
        k = len(self.nodes)
        self.node("Gemm", [self.cur, self.const(f"fw{k}", wt.astype(np.float32)),
                           self.const(f"fb{k}", (0.05 * self.rng.standard_normal(n))
                                      .astype(np.float32))], [n], transB=1)
        if relu:
            self.node("Relu", [self.cur])

    def softmax(self):
        self.node("Softmax", [self.cur], axis=-1)

    def center_classifier(self, images, gain=3.0):
        """Make the last Gemm a classifier of these images, as training would: its bias
        removes the mean of its logits over ``images`` and its weights are scaled so that the
        logits spread by ``gain`` (standard deviation), so the classes vary from image to
        image instead of one bias winning them all. Uses onnxruntime on the graph so far."""
        import onnxruntime as ort
        from onnx import numpy_helper
        gemm = next(n for n in reversed(self.nodes) if n.op_type == "Gemm")
        m = self.model()
        del m.graph.output[:]
        m.graph.output.append(self.helper.make_tensor_value_info(
            gemm.input[0], self.TensorProto.FLOAT, None))
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        f = sess.run(None, {"x": np.asarray(images, np.float32)})[0].astype(np.float64)
        inits = {t.name: i for i, t in enumerate(self.inits)}
        w = numpy_helper.to_array(self.inits[inits[gemm.input[1]]]).astype(np.float64)
        mean = f.mean(axis=0)
        w = gain * w / max(((f - mean) @ w.T).std(), 1e-12)     # logits of spread ``gain``
        b = -(w @ mean)
        self.inits[inits[gemm.input[1]]] = numpy_helper.from_array(w.astype(np.float32),
                                                                   gemm.input[1])
        self.inits[inits[gemm.input[2]]] = numpy_helper.from_array(b.astype(np.float32),
                                                                   gemm.input[2])

    def model(self, opset=13):
        h, T = self.helper, self.TensorProto
        g = h.make_graph(self.nodes, self.name,
                         [h.make_tensor_value_info("x", T.FLOAT, ["N", *self.input_shape])],
                         [h.make_tensor_value_info(self.cur, T.FLOAT, ["N", *self.shape])],
                         initializer=self.inits)
        m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
        m.ir_version = 8
        return m

    def images(self, n, low=0.0, high=1.0):
        return self.rng.uniform(low, high, (n, *self.input_shape)).astype(np.float32)

    def smooth_images(self, n, low=0.0, high=1.0, grid=4, noise=0.1):
        """Images with structure that survives global pooling: a random ``grid`` x ``grid``
        pattern per channel, upsampled (nearest) to H x W, plus uniform noise, in [low, high]."""
        c, h, w = self.input_shape
        coarse = self.rng.uniform(0, 1, (n, c, grid, grid))
        up = coarse[:, :, (np.arange(h) * grid) // h][:, :, :, (np.arange(w) * grid) // w]
        x = (1 - noise) * up + noise * self.rng.uniform(0, 1, up.shape)
        return (low + (high - low) * x).astype(np.float32)


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


def resnet8(seed=1, calib=32, test=4, widths=(16, 32, 64), style="pytorch"):
    """MLPerf Tiny's image-classification ResNet-8 on 32x32x3: conv 3x3 + BN + ReLU, three
    residual stacks (``widths``; the 2nd and 3rd start with a 3x3 stride-2 conv and a 1x1
    stride-2 projection on the shortcut; ReLU after each Add), average pool 8, dense 10
    (centred on the calibration images, :meth:`OnnxBuilder.center_classifier`), softmax.
    ``style`` "pytorch": symmetric pads 1; "tf": tf2onnx's ``auto_pad`` SAME_UPPER."""
    b = OnnxBuilder("resnet8", [3, 32, 32], seed)
    same = {"auto_pad": "SAME_UPPER"} if style == "tf" else {"pad": 1}
    x = b.conv(widths[0], 3, bn=True, **same)
    for i, c in enumerate(widths):
        s = 1 if i == 0 else 2
        y = b.conv(c, 3, stride=s, bn=True, x=x, **same)
        y = b.conv(c, 3, bn=True, relu=False, x=y, **same)
        short = x if i == 0 else b.conv(c, 1, stride=2, relu=False, x=x)
        x = b.add(y, short)
    b.avgpool(b.shape[1])
    b.flatten()
    b.dense(10, relu=False)
    b.softmax()
    cal, tst = b.smooth_images(calib), b.smooth_images(test)
    b.center_classifier(cal)
    return b.model(), cal, tst


def ds_cnn(seed=1, calib=32, test=4, channels=64, blocks=4):
    """MLPerf Tiny's keyword-spotting DS-CNN on 49x10 MFCC: conv 10x4 stride 2 with Keras
    'same' padding (top 4, left 1, bottom 5, right 1) + BN + ReLU, ``blocks`` x (depthwise 3x3
    + BN + ReLU, pointwise 1x1 + BN + ReLU), average pool 25x5, dense 12, softmax."""
    b = OnnxBuilder("ds_cnn", [1, 49, 10], seed)
    b.conv(channels, (10, 4), stride=2, pad=[4, 1, 5, 1], bn=True)
    for _ in range(blocks):
        b.conv(channels, 3, pad=1, group=channels, bn=True)
        b.conv(channels, 1, bn=True)
    b.avgpool(b.shape[1:])
    b.flatten()
    b.dense(12, relu=False)
    b.softmax()
    cal, tst = b.smooth_images(calib, -1, 1), b.smooth_images(test, -1, 1)
    b.center_classifier(cal)
    return b.model(), cal, tst


#: MobileNetV1's depthwise-separable blocks at alpha 1: (pointwise channels, depthwise stride).
MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1),
                    (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def mobilenet_v1(seed=1, calib=16, test=2, alpha=0.25, blocks=13, size=96, classes=2):
    """MLPerf Tiny's visual-wake-words MobileNetV1 (``alpha`` 0.25) on 96x96x3: conv 3x3
    stride 2 (Keras 'same': pads bottom/right) + ReLU6, the first ``blocks`` of the 13
    depthwise-separable blocks (depthwise 3x3 + ReLU6, pointwise + ReLU6), global average
    pooling, dense ``classes``, softmax."""
    b = OnnxBuilder("mobilenet_v1", [3, size, size], seed)
    b.conv(int(32 * alpha), 3, stride=2, pad=[0, 0, 1, 1], relu6=True)
    for c, s in MOBILENET_BLOCKS[:blocks]:
        cin = b.shape[0]
        b.conv(cin, 3, stride=s, pad=[1, 1, 1, 1] if s == 1 else [0, 0, 1, 1], group=cin,
               relu6=True)
        b.conv(int(c * alpha), 1, relu6=True)
    b.global_avgpool()
    b.flatten()
    b.dense(classes, relu=False)
    b.softmax()
    cal, tst = b.smooth_images(calib, -1, 1), b.smooth_images(test, -1, 1)
    b.center_classifier(cal)
    return b.model(), cal, tst


#: name -> builder, for `npu bench` and the tests.
MODELS = {"keras_mnist": keras_mnist, "ad_autoencoder": autoencoder, "resnet8": resnet8,
          "ds_cnn": ds_cnn, "mobilenet_v1": mobilenet_v1}
