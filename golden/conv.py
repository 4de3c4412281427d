"""2-D convolution lowered to a GEMM by im2col (NHWC, channels last, batch first).

Geometry, for an input ``(N, H, W, Cin)``, a square ``k x k`` kernel, ``stride`` s and symmetric
zero-extension ``pad`` p on all four sides::

    Ho = (H + 2p - k) // s + 1,   Wo = (W + 2p - k) // s + 1          (both must be >= 1)

im2col builds the GEMM's ``A`` matrix, one row per output pixel, rows ordered ``(n, oh, ow)``,
columns ordered ``(kh, kw, cin)``::

    A[(n*Ho + oh)*Wo + ow, (kh*k + kw)*Cin + ci] = Xp[n, oh*s + kh, ow*s + kw, ci]

where ``Xp`` is the input padded with ``pad_value``. For int8 tensors the padding value is the
input zero point (TFLite), so a padded tap stands for the real value 0.

The filters are the GEMM's ``B`` matrix, ``K x N`` with ``K = k*k*Cin`` ordered ``(kh, kw, cin)``
and ``N = Cout``; the convolution is ``gemm(A, B, bias)`` reshaped to ``(N, Ho, Wo, Cout)``.

With an input zero point ``z_x`` and weight zero point 0 (TFLite int8), the accumulator the
spec wants is ``sum_k (A[m,k] - z_x) * B[k,n] + bias[n]``. The hardware multiplies raw int8
operands, so the zero point is folded into the bias once, ahead of time::

    gemm_bias[n] = bias[n] - z_x * sum_k B[k, n]
    acc[m, n]    = sum_k A[m,k] * B[k,n] + gemm_bias[n]        (= golden.gemm(A, B, gemm_bias))

This is exact, padded taps included, because they hold ``z_x``.
"""

from dataclasses import dataclass

import numpy as np

from .gemm import gemm
from .quant import INT32_MAX, INT32_MIN

__all__ = ["Window", "conv_output_size", "im2col", "im2col_window", "fold_zero_point",
           "conv2d_int8", "depthwise_conv2d_int8"]


def _pair(name, v, n):
    """An int (the same for all ``n``) or a list of ``n`` ints."""
    if isinstance(v, (list, tuple)):
        if len(v) != n:
            raise ValueError(f"{name} must be an integer or a list of {n}, got {v!r}")
        vals = list(v)
    else:
        vals = [v] * n
    for x in vals:
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
            raise ValueError(f"{name} must be integers, got {v!r}")
    return [int(x) for x in vals]


@dataclass(frozen=True)
class Window:
    """The geometry of a convolution or pooling window: kernel ``kh x kw``, strides ``sy, sx``
    and zero-extension ``pt`` (top), ``pl`` (left), ``pb`` (bottom), ``pr`` (right).
    Output ``Ho = (H + pt + pb - kh) // sy + 1`` and ``Wo = (W + pl + pr - kw) // sx + 1``;
    window ``(oy, ox)`` covers input rows ``oy*sy - pt .. + kh - 1`` and columns ``ox*sx - pl ..
    + kw - 1``."""
    kh: int
    kw: int
    sy: int = 1
    sx: int = 1
    pt: int = 0
    pl: int = 0
    pb: int = 0
    pr: int = 0

    @classmethod
    def from_attrs(cls, kernel, stride=1, padding=0):
        """From a model file's attributes: ints (square, symmetric: format version 1) or
        lists ``[kh, kw]``, ``[sy, sx]``, ``[top, left, bottom, right]``."""
        kh, kw = _pair("kernel", kernel, 2)
        sy, sx = _pair("stride", stride, 2)
        pt, pl, pb, pr = _pair("padding", padding, 4)
        win = cls(kh, kw, sy, sx, pt, pl, pb, pr)
        if min(kh, kw, sy, sx) < 1 or min(pt, pl, pb, pr) < 0:
            raise ValueError(f"kernel and stride must be >= 1 and padding >= 0, got {win}")
        return win

    def attrs(self):
        return {"kernel": [self.kh, self.kw], "stride": [self.sy, self.sx],
                "padding": [self.pt, self.pl, self.pb, self.pr]}

    @property
    def square(self):
        """``(k, stride, pad)`` when the window is square and symmetric, else None."""
        if (self.kh == self.kw and self.sy == self.sx
                and self.pt == self.pl == self.pb == self.pr):
            return self.kh, self.sy, self.pt
        return None

    def out_size(self, h, w):
        """``(Ho, Wo)``; ``ValueError`` if the window does not fit the padded input."""
        ho = (h + self.pt + self.pb - self.kh) // self.sy + 1
        wo = (w + self.pl + self.pr - self.kw) // self.sx + 1
        if h + self.pt + self.pb < self.kh or w + self.pl + self.pr < self.kw:
            raise ValueError(f"a {self.kh}x{self.kw} window does not fit an input of "
                             f"{h}x{w} with padding {self.attrs()['padding']}")
        return ho, wo

    @classmethod
    def same(cls, h, w, kh, kw, sy, sx):
        """TensorFlow's SAME padding: output ``ceil(H / sy) x ceil(W / sx)``, the total padding
        split with the extra row and column at the bottom and right."""
        ho, wo = -(-h // sy), -(-w // sx)
        ph = max((ho - 1) * sy + kh - h, 0)
        pw = max((wo - 1) * sx + kw - w, 0)
        return cls(kh, kw, sy, sx, ph // 2, pw // 2, ph - ph // 2, pw - pw // 2)


def conv_output_size(size, kernel, stride, pad):
    """Output length along one spatial axis; ``ValueError`` if the geometry is impossible."""
    for name, v, lo in (("kernel", kernel, 1), ("stride", stride, 1), ("pad", pad, 0)):
        if int(v) != v or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if pad >= kernel:
        raise ValueError(f"pad ({pad}) must be smaller than the kernel ({kernel})")
    out = (size + 2 * pad - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"kernel {kernel} with pad {pad} does not fit an input of size {size}")
    return int(out)


def im2col_window(x, win, pad_value=0):
    """NHWC ``x`` -> ``A`` of shape ``(N*Ho*Wo, kh*kw*C)`` for a :class:`Window`, columns
    ordered ``(kh, kw, cin)``; returns ``(A, (N, Ho, Wo))``."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"im2col needs an NHWC 4-D input, got shape {x.shape}")
    n, h, w, c = x.shape
    ho, wo = win.out_size(h, w)
    xp = np.full((n, h + win.pt + win.pb, w + win.pl + win.pr, c), pad_value, dtype=x.dtype)
    xp[:, win.pt:win.pt + h, win.pl:win.pl + w, :] = x
    cols = np.empty((n, ho, wo, win.kh, win.kw, c), dtype=x.dtype)
    for i in range(win.kh):
        for j in range(win.kw):
            cols[:, :, :, i, j, :] = xp[:, i:i + win.sy * (ho - 1) + 1:win.sy,
                                        j:j + win.sx * (wo - 1) + 1:win.sx, :]
    return cols.reshape(n * ho * wo, win.kh * win.kw * c), (n, ho, wo)


def im2col(x, kernel, stride=1, pad=0, pad_value=0):
    """NHWC ``x`` -> ``A`` of shape ``(N*Ho*Wo, kernel*kernel*C)`` (same dtype as ``x``)."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"im2col needs an NHWC 4-D input, got shape {x.shape}")
    n, h, w, c = x.shape
    ho = conv_output_size(h, kernel, stride, pad)
    wo = conv_output_size(w, kernel, stride, pad)
    if pad:
        xp = np.full((n, h + 2 * pad, w + 2 * pad, c), pad_value, dtype=x.dtype)
        xp[:, pad:pad + h, pad:pad + w, :] = x
    else:
        xp = x
    cols = np.empty((n, ho, wo, kernel, kernel, c), dtype=x.dtype)
    for kh in range(kernel):
        for kw in range(kernel):
            cols[:, :, :, kh, kw, :] = xp[:, kh:kh + stride * (ho - 1) + 1:stride,
                                          kw:kw + stride * (wo - 1) + 1:stride, :]
    return cols.reshape(n * ho * wo, kernel * kernel * c), (n, ho, wo)


def fold_zero_point(bias, weights, input_zero_point):
    """``bias - z_x * colsum(B)`` as int32; ``ValueError`` if it leaves int32."""
    b = np.asarray(bias).astype(np.int64)
    folded = b - int(input_zero_point) * np.asarray(weights).astype(np.int64).sum(axis=0)
    if folded.size and (folded.min() < INT32_MIN or folded.max() > INT32_MAX):
        raise ValueError("bias with the input zero point folded in overflows int32")
    return folded.astype(np.int32)


def conv2d_int8(x, weights, gemm_bias, kernel, stride=1, pad=0, input_zero_point=0):
    """int8 NHWC ``x`` and int8 ``B`` (``K x Cout``) -> int32 accumulators ``(N, Ho, Wo, Cout)``.

    ``gemm_bias`` already has the input zero point folded in (:func:`fold_zero_point`); padded
    taps are filled with ``input_zero_point``. ``kernel`` may be a :class:`Window` (then
    ``stride`` and ``pad`` are ignored).
    """
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ValueError(f"conv input must be int8, got {x.dtype}")
    win = kernel if isinstance(kernel, Window) else Window.from_attrs(kernel, stride, pad)
    a, (n, ho, wo) = im2col_window(x, win, pad_value=input_zero_point)
    if a.shape[1] != np.shape(weights)[0]:
        raise ValueError(f"im2col gives K={a.shape[1]} but the weights have K="
                         f"{np.shape(weights)[0]}")
    acc = gemm(a, weights, gemm_bias)
    return acc.reshape(n, ho, wo, -1)


def depthwise_conv2d_int8(x, weights, gemm_bias, win, input_zero_point=0):
    """Depthwise convolution, channel multiplier 1: output channel ``c`` is the ``kh x kw``
    window of input channel ``c`` times ``weights[:, c]`` (``weights`` is ``(kh*kw, C)``,
    rows ordered ``(kh, kw)``), plus ``gemm_bias[c]`` (input zero point folded in, as
    :func:`fold_zero_point` does per channel). Padded taps hold ``input_zero_point``.
    int8 NHWC ``x`` -> int32 ``(N, Ho, Wo, C)``, exact in int64 and checked to fit int32."""
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ValueError(f"depthwise conv input must be int8, got {x.dtype}")
    n, h, w, c = x.shape
    weights = np.asarray(weights)
    if weights.shape != (win.kh * win.kw, c):
        raise ValueError(f"depthwise weights must be (kh*kw, C) = {(win.kh * win.kw, c)}, got "
                         f"{weights.shape}")
    a, (n, ho, wo) = im2col_window(x, win, pad_value=input_zero_point)
    taps = a.reshape(n * ho * wo, win.kh * win.kw, c).astype(np.int64)
    acc = (taps * weights.astype(np.int64)[None]).sum(axis=1) + np.asarray(gemm_bias, np.int64)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise ValueError("depthwise accumulator leaves int32")
    return acc.astype(np.int32).reshape(n, ho, wo, c)
