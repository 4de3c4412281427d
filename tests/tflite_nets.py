"""Random int8 ``.tflite`` networks for the tests, written with the flatbuffer schema
(golden.tflite_io.ModelBuilder): :class:`Net` adds one operator at a time, with random weights
and a quantization chosen so that outputs spread over the int8 range (like the TFLite
converter's calibration would); the shapes follow TFLite's rules (golden.tflite.same_padding).

Also the shapes of the two MLPerf Tiny models that are not in ../shared: the visual wake words
MobileNetV1 0.25 (96x96x3, depthwise stride 2 SAME; fewer blocks for speed) and the anomaly
detection autoencoder (FULLY_CONNECTED 640 -> 128 x4 -> 8 -> 128 x4 -> 640, ReLU).
"""

import math

import numpy as np

from golden import tflite as g
from golden import tflite_io as io


def f32(v):
    return float(np.float32(v))


class Net:
    """A single-subgraph int8 model under construction; tensors are ``(index, shape, (scale,
    zero_point))``."""

    def __init__(self, rng, input_shape, scale=None, zero_point=None):
        self.rng = rng
        self.b = io.ModelBuilder()
        q = (f32(scale if scale is not None else rng.uniform(0.01, 0.1)),
             int(zero_point if zero_point is not None else rng.integers(-128, 128)))
        self.input = (self.b.tensor(input_shape, scale=q[0], zero_point=q[1], name="input"),
                      tuple(input_shape), q)

    def _out(self, shape, q, name):
        return (self.b.tensor(shape, scale=q[0], zero_point=q[1], name=name), tuple(shape), q)

    def _acc_scale(self, s_x, s_w, k):
        """An output scale for accumulators of ``k`` products of int8 values (each about 74
        steps from zero, uniform): a typical sum lands about 50 output steps from the zero
        point, randomly more or less."""
        return f32(s_x * s_w * math.sqrt(k) * 74 * 74 / 50 * self.rng.uniform(0.5, 1.5))

    def conv(self, x, cout, kernel, stride=(1, 1), padding="SAME", activation="NONE",
             per_channel=True, depthwise=False, out_q=None):
        """CONV_2D or DEPTHWISE_CONV_2D; the output quantization ``out_q`` or, as the
        converter chooses it, (6/255, -128) after RELU6 and a zero point of -128 after RELU."""
        xi, (n, h, w, cin), (s_x, z_x) = x
        kh, kw = kernel
        rng = self.rng
        c_scales = (rng.uniform(0.002, 0.02, cin if depthwise else cout) if per_channel
                    else np.full(1, rng.uniform(0.002, 0.02)))
        c_scales = c_scales.astype(np.float32)
        shape = (1, kh, kw, cin) if depthwise else (cout, kh, kw, cin)
        filters = rng.integers(-127, 128, shape, dtype=np.int8)
        cout = cin if depthwise else cout
        taps = kh * kw * (1 if depthwise else cin)
        s_y = self._acc_scale(s_x, float(np.median(c_scales)), taps)
        y_q = out_q or {"RELU6": (f32(6 / 255), -128), "RELU": (f32(s_y / 2), -128)}.get(
            activation, (s_y, int(rng.integers(-60, 60))))
        f = self.b.tensor(shape, scale=c_scales, zero_point=0, axis=3 if depthwise else 0,
                          data=filters)
        bias_scales = np.float64(s_x) * np.broadcast_to(c_scales, (cout,)).astype(np.float64)
        bias = rng.integers(-(1 << 12), 1 << 12, cout).astype(np.int32)
        bs = self.b.tensor((cout,), np.int32, scale=bias_scales, zero_point=0, data=bias)
        oh, ow = (g.output_size(h, kh, stride[0], padding),
                  g.output_size(w, kw, stride[1], padding))
        y = self._out((n, oh, ow, cout), y_q, f"conv{len(self.b.operators)}")
        extra = {"depth_multiplier": 1} if depthwise else {}
        self.b.operator("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [xi, f, bs], [y[0]],
                        padding=padding, stride_h=stride[0], stride_w=stride[1],
                        fused_activation_function=activation, **extra)
        return y

    def depthwise(self, x, kernel, stride=(1, 1), padding="SAME", activation="NONE",
                  per_channel=True):
        return self.conv(x, None, kernel, stride, padding, activation, per_channel, True)

    def fc(self, x, n_out, activation="NONE", bias=True):
        xi, shape, (s_x, z_x) = x
        k = int(np.prod(shape[1:]))
        s_w = f32(self.rng.uniform(0.002, 0.02))
        w = self.rng.integers(-127, 128, (n_out, k), dtype=np.int8)
        wt = self.b.tensor((n_out, k), scale=s_w, zero_point=0, data=w)
        ins = [xi, wt]
        if bias:
            b = self.rng.integers(-(1 << 12), 1 << 12, n_out).astype(np.int32)
            ins.append(self.b.tensor((n_out,), np.int32, scale=np.float64(s_x) * s_w,
                                     zero_point=0, data=b))
        y_q = (self._acc_scale(s_x, s_w, k), int(self.rng.integers(-60, 60)))
        y = self._out((1, n_out), y_q, f"fc{len(self.b.operators)}")
        self.b.operator("FULLY_CONNECTED", ins, [y[0]], fused_activation_function=activation)
        return y

    def add(self, a, c, activation="NONE"):
        s = max(a[2][0], c[2][0])
        y_q = (f32(s * self.rng.uniform(1.0, 2.0)), int(self.rng.integers(-40, 40)))
        y = self._out(a[1], y_q, f"add{len(self.b.operators)}")
        self.b.operator("ADD", [a[0], c[0]], [y[0]], fused_activation_function=activation)
        return y

    def pool(self, x, op, kernel, stride, padding="VALID", activation="NONE"):
        xi, (n, h, w, c), q = x
        oh = g.output_size(h, kernel[0], stride[0], padding)
        ow = g.output_size(w, kernel[1], stride[1], padding)
        y = self._out((n, oh, ow, c), q, f"pool{len(self.b.operators)}")
        self.b.operator(op, [xi], [y[0]], padding=padding, stride_h=stride[0],
                        stride_w=stride[1], filter_height=kernel[0], filter_width=kernel[1],
                        fused_activation_function=activation)
        return y

    def reshape(self, x, shape):
        s = self.b.tensor((len(shape),), np.int32, data=np.asarray(shape, np.int32))
        y = self._out(shape, x[2], f"reshape{len(self.b.operators)}")
        self.b.operator("RESHAPE", [x[0], s], [y[0]], new_shape=np.asarray(shape, np.int32))
        return y

    def softmax(self, x, beta=1.0):
        y = self._out(x[1], (1.0 / 256, -128), "softmax")
        self.b.operator("SOFTMAX", [x[0]], [y[0]], beta=float(beta))
        return y

    def activation(self, x, op):
        """LOGISTIC (output (1/256, -128)), TANH ((1/128, 0)), RELU or RELU6 (a random
        output quantization)."""
        y_q = {"LOGISTIC": (1.0 / 256, -128), "TANH": (1.0 / 128, 0)}.get(op)
        if y_q is None:
            y_q = (f32(x[2][0] * self.rng.uniform(0.3, 1.5)), int(self.rng.integers(-128, 0)))
        y = self._out(x[1], y_q, op.lower())
        self.b.operator(op, [x[0]], [y[0]])
        return y

    def build(self, y):
        return self.b.build([self.input[0]], [y[0]])


# ---- Networks --------------------------------------------------------------------------------

def mobilenet_v1_025(rng, blocks=((2, 16), (1, 16), (2, 32), (2, 64)), softmax=True):
    """MobileNetV1 0.25 shaped like the MLPerf Tiny visual wake words model: 96x96x3, a 3x3
    stride-2 SAME conv to 8 channels, then (depthwise 3x3 SAME with ``stride``, pointwise to
    ``channels``) blocks, ReLU6 fused, global average pool, reshape, dense to 2, softmax
    (without ``softmax``: the logits). ``blocks`` defaults to 4 of the 13 (test speed)."""
    net = Net(rng, (1, 96, 96, 3), scale=1 / 128, zero_point=0)
    x = net.conv(net.input, 8, (3, 3), (2, 2), "SAME", "RELU6")
    for stride, channels in blocks:
        x = net.depthwise(x, (3, 3), (stride, stride), "SAME", "RELU6")
        x = net.conv(x, channels, (1, 1), (1, 1), "SAME", "RELU6")
    h, w = x[1][1:3]
    x = net.pool(x, "AVERAGE_POOL_2D", (h, w), (h, w), "VALID")
    x = net.reshape(x, (1, x[1][3]))
    logits = net.fc(x, 2)
    return net.build(net.softmax(logits) if softmax else logits)


def small_resnet(rng):
    """A residual network of the operators the compiler takes today: SAME convs with stride
    1 and 2 (fused ReLU), a 1x1 stride-2 VALID shortcut, ADD with ReLU, a depthwise stride-2
    SAME conv, global average pooling, RESHAPE, FULLY_CONNECTED (the logits). Input (scale 1,
    zero point -128) like ResNet-8's."""
    net = Net(rng, (1, 16, 16, 3), scale=1.0, zero_point=-128)
    a = net.conv(net.input, 8, (3, 3), (1, 1), "SAME", "RELU")
    b = net.conv(a, 8, (3, 3), (2, 2), "SAME", "RELU")
    c = net.conv(b, 8, (3, 3), (1, 1), "SAME")
    d = net.conv(a, 8, (1, 1), (2, 2), "VALID")
    x = net.add(c, d, "RELU")
    x = net.depthwise(x, (3, 3), (2, 2), "SAME", "RELU")
    x = net.pool(x, "AVERAGE_POOL_2D", (4, 4), (4, 4), "VALID")
    x = net.reshape(x, (1, 8))
    return net.build(net.fc(x, 10))


def autoencoder(rng, width=128, inputs=640):
    """The MLPerf Tiny anomaly detection autoencoder's shape: FULLY_CONNECTED 640 -> 128 x4
    -> 8 -> 128 x4 -> 640, ReLU fused on every layer but the last."""
    net = Net(rng, (1, inputs))
    x = net.input
    for n in [width] * 4 + [8] + [width] * 4:
        x = net.fc(x, n, "RELU")
    return net.build(net.fc(x, inputs))


def two_residual_stages(rng, size=16):
    """ResNet-8's first two residual stages, narrowed: (conv, conv, ADD identity) at 16
    channels, then (stride-2 conv, conv, 1x1 stride-2 projection, ADD) at 32 channels; the
    second ADD is the one whose regions differ from the first's."""
    net = Net(rng, (1, size, size, 3), scale=1.0, zero_point=-128)
    a = net.conv(net.input, 16, (3, 3), (1, 1), "SAME", "RELU")
    b = net.conv(a, 16, (3, 3), (1, 1), "SAME", "RELU")
    x = net.add(a, net.conv(b, 16, (3, 3), (1, 1), "SAME"), "RELU")
    b = net.conv(x, 32, (3, 3), (2, 2), "SAME", "RELU")
    c = net.conv(b, 32, (3, 3), (1, 1), "SAME")
    return net.build(net.add(c, net.conv(x, 32, (1, 1), (2, 2), "SAME"), "RELU"))
