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

import numpy as np

from .gemm import gemm
from .quant import INT32_MAX, INT32_MIN

__all__ = ["conv_output_size", "im2col", "fold_zero_point", "conv2d_int8"]


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
    taps are filled with ``input_zero_point``.
    """
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ValueError(f"conv input must be int8, got {x.dtype}")
    a, (n, ho, wo) = im2col(x, kernel, stride, pad, pad_value=input_zero_point)
    if a.shape[1] != np.shape(weights)[0]:
        raise ValueError(f"im2col gives K={a.shape[1]} but the weights have K="
                         f"{np.shape(weights)[0]}")
    acc = gemm(a, weights, gemm_bias)
    return acc.reshape(n, ho, wo, -1)
