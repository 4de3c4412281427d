"""Tensor layouts in ACT: pixel, row and image pitches that keep the CONV engine's R reads per
beat in distinct ACT banks, and the host-side packing of tensors into ACT words.

A tensor of ``batch`` images of ``h x w`` pixels of ``c`` channels occupies, from its address,
``batch`` images of ``img_px`` pixels; pixel ``(y, x)`` of an image is pixel ``y * row_px + x``
of it, and a pixel is ``cw`` words (a power of two >= ceil(c / C); channel ``ch`` is lane
``ch % C`` of word ``ch // C``). Pixels in the padding (``x >= w`` or past ``h * row_px``) hold
nothing anyone reads.

Why pitches: the ACT memory keeps a pixel in bank ``pixel index mod B`` (:mod:`hw.act_memory`),
and a CONV reads, each beat, the same tap of R consecutive output pixels. Their input pixels
step by STRIDE_X along a row; :func:`conv_constraints` gives the row and image pitches that
make the steps across a row end and an image end look the same modulo B, so the R pixels are
``q0 + STRIDE_X * i`` modulo B: distinct for the strides the banks allow. The compiler picks,
per tensor, the smallest pitches that satisfy every consumer (:func:`choose_layout`).
"""

from dataclasses import dataclass
import numpy as np

from hw.act_memory import act_location, banks, conflict_free
from hw.conv_engine import layout_ok

__all__ = ["TensorLayout", "ConvUse", "LayoutError", "words_per_pixel", "conv_constraints",
           "choose_layout", "pack_tensor", "unpack_tensor", "act_words_of"]


class LayoutError(ValueError):
    """No pitches satisfy every consumer of a tensor."""


def words_per_pixel(channels, cols):
    """The pixel pitch: a power of two >= ceil(channels / cols)."""
    need = -(-channels // cols)
    return 1 << (need - 1).bit_length()


@dataclass(frozen=True)
class ConvUse:
    """How a CONV reads a tensor: its strides and output size, and the batch."""
    stride_y: int
    stride_x: int
    out_h: int
    out_w: int
    batch: int


@dataclass(frozen=True)
class TensorLayout:
    """A tensor's place and shape in ACT (see the module docstring). Pitches in pixels."""
    batch: int
    h: int
    w: int
    c: int
    cw: int
    row_px: int
    img_px: int
    addr: int = 0

    @property
    def shift(self):
        return self.cw.bit_length() - 1

    @property
    def row(self):
        """Row pitch in words."""
        return self.row_px * self.cw

    @property
    def img(self):
        """Image pitch in words."""
        return self.img_px * self.cw

    @property
    def words(self):
        """Words of the whole tensor (all images)."""
        return self.batch * self.img

    def footprint(self, nbanks):
        """Words it occupies: rounded up to whole groups of ``nbanks`` pixels, the unit in
        which tensors of different pixel pitches share the ACT banks."""
        unit = nbanks * self.cw
        return -(-self.words // unit) * unit

    def at(self, addr):
        return TensorLayout(self.batch, self.h, self.w, self.c, self.cw, self.row_px,
                            self.img_px, addr)


def conv_constraints(use, rows):
    """``(row, img)``: each None or ``(a, b)`` meaning the pitch ``p`` in pixels must satisfy
    ``a * p == b (mod B)``; the image condition also involves the row pitch, so it is a
    function of it. :func:`choose_layout` solves them."""
    B = banks(rows)
    row = None
    if use.out_h > 1:
        row = (use.stride_y % B, (use.stride_x * use.out_w) % B)

    def img(row_px):
        if use.batch <= 1:
            return None
        return (1, (use.stride_y * (use.out_h - 1) * row_px + use.stride_x * use.out_w) % B)
    return row, img


def _smallest(lo, a, b, B):
    """The smallest ``p >= lo`` with ``a * p == b (mod B)``, or None."""
    for p in range(lo, lo + B):
        if (a * p - b) % B == 0:
            return p
    return None


def choose_layout(batch, h, w, c, uses, rows, cols, what="tensor"):
    """The smallest pitches for a tensor read by the CONVs ``uses`` (a list of
    :class:`ConvUse`; other readers take any pitch). Raises :class:`LayoutError` naming
    ``what`` when no pitch satisfies them all, or a stride the banks cannot serve."""
    B = banks(rows)
    cw = words_per_pixel(c, cols)
    row_px, img_px = w, h * w
    if rows == 1 or not uses:
        return TensorLayout(batch, h, w, c, cw, row_px, img_px)
    for u in uses:
        if not conflict_free(u.stride_x, rows, B):
            raise LayoutError(f"{what}: a horizontal stride of {u.stride_x} puts the "
                              f"{rows} rows' reads in the same ACT banks ({B} banks); "
                              f"strides 1, 2 and odd ones are supported")
    rows_c = [r for r, _ in (conv_constraints(u, rows) for u in uses) if r]
    for p in range(w, w + B):
        if all((a * p - b) % B == 0 for a, b in rows_c):
            row_px = p
            break
    else:
        raise LayoutError(f"{what}: no row pitch satisfies its readers' strides and widths "
                          f"({', '.join(f'{u.stride_y}x{u.stride_x} to width {u.out_w}' for u in uses)})")
    imgs_c = [f(row_px) for _, f in (conv_constraints(u, rows) for u in uses)]
    imgs_c = [c_ for c_ in imgs_c if c_]
    img_px = h * row_px
    if imgs_c:
        targets = {b for _, b in imgs_c}
        if len(targets) > 1:
            raise LayoutError(f"{what}: its readers need different image pitches modulo {B}")
        img_px = _smallest(h * row_px, 1, targets.pop(), B)
    out = TensorLayout(batch, h, w, c, cw, row_px, img_px)
    for u in uses:
        assert layout_ok(rows, u.stride_y, u.stride_x, row_px, img_px, u.out_h, u.out_w,
                         u.batch), (out, u)
    return out


def pack_tensor(x, layout, cols):
    """int8 ``(batch, h, w, c)`` -> uint8 ACT words ``(layout.words, cols)`` in the layout
    (padding pixels and lanes 0)."""
    x = np.asarray(x)
    L = layout
    if x.shape != (L.batch, L.h, L.w, L.c):
        raise ValueError(f"tensor of shape {x.shape}, the layout holds "
                         f"{(L.batch, L.h, L.w, L.c)}")
    out = np.zeros((L.batch, L.img_px, L.cw * cols), np.int8)
    pix = (np.arange(L.h)[:, None] * L.row_px + np.arange(L.w)[None, :]).reshape(-1)
    out[:, pix, :L.c] = x.reshape(L.batch, L.h * L.w, L.c)
    return out.reshape(-1, cols).view(np.uint8)


def unpack_tensor(words, layout, cols):
    """uint8 ACT words ``(layout.words, cols)`` -> int8 ``(batch, h, w, c)``."""
    L = layout
    w = np.asarray(words, np.uint8).reshape(L.batch, L.img_px, L.cw * cols).view(np.int8)
    pix = (np.arange(L.h)[:, None] * L.row_px + np.arange(L.w)[None, :]).reshape(-1)
    return w[:, pix, :L.c].reshape(L.batch, L.h, L.w, L.c)


def act_words_of(layout, nbanks):
    """``{(bank, row): word index}`` of the tensor's words (for tests of the address map)."""
    return {act_location(layout.addr + i, layout.shift, nbanks): i
            for i in range(layout.words)}

