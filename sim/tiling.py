"""Tile schedule of a GEMM on the R x C output-stationary array (the feeder's side).

``C = A @ B + bias`` with ``A`` M x K and ``B`` K x N is cut into ceil(M/R) * ceil(N/C)
output tiles, row-block major. Each tile is K operand beats (A column k of the row block, B
row k of the column block, zero-padded past the matrix edge) and one bias beat; the array
returns R result rows per tile, and the padding rows and columns are dropped again.
"""

from dataclasses import dataclass

import numpy as np

from golden.gemm import check_operands, check_shape

__all__ = ["Tile", "tile_gemm", "untile"]


@dataclass
class Tile:
    row0: int
    col0: int
    a: np.ndarray      # K x R int8: beat k carries a[k]
    b: np.ndarray      # K x C int8
    bias: np.ndarray   # C int32


def tile_gemm(a, b, bias, rows, cols):
    a, b, bias = check_operands(a, b, bias)
    M, K = a.shape
    N = b.shape[1]
    check_shape(M, K, N)
    if bias is None:
        bias = np.zeros(N, np.int32)
    Mp = -(-M // rows) * rows
    Np = -(-N // cols) * cols
    ap = np.zeros((Mp, K), np.int8)
    ap[:M] = a
    bp = np.zeros((K, Np), np.int8)
    bp[:, :N] = b
    biasp = np.zeros(Np, np.int32)
    biasp[:N] = bias
    tiles = []
    for r0 in range(0, Mp, rows):
        for c0 in range(0, Np, cols):
            tiles.append(Tile(r0, c0, np.ascontiguousarray(ap[r0:r0 + rows].T),
                              np.ascontiguousarray(bp[:, c0:c0 + cols]), biasp[c0:c0 + cols]))
    return tiles


def untile(tiles, results, M, N):
    """Assemble per-tile R x C int32 results into the M x N matrix."""
    out = None
    for tile, res in zip(tiles, results, strict=True):
        res = np.asarray(res, np.int32)
        if out is None:
            R, C = res.shape
            out = np.zeros((-(-M // R) * R, -(-N // C) * C), np.int32)
        out[tile.row0:tile.row0 + res.shape[0], tile.col0:tile.col0 + res.shape[1]] = res
    return out[:M, :N]
