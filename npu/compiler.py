"""Compiler: a model in the project's format (:mod:`golden.model`) -> a program for ``npu_top``.

The result is a :class:`Program`:

* ``setup``: instructions that LOAD every layer's weights (WGT), per-channel parameters
  (PARAM) and end with DONE; run once, with ``setup_stream`` on ``s_axis``;
* ``infer``: instructions for one batch of B images: LOAD the images into ACT, one CONV per
  conv/dense layer (the hardware tiles it into R x C output tiles and generates the im2col
  addresses itself), STORE the output, DONE; run per batch (START at ``infer_pc``), with
  ``infer_stream(images)`` on ``s_axis``. Pooling layers become POOL, softmax SOFTMAX.

Memory plan: activations ping-pong between two ACT regions of ``region_words`` each (the
largest tensor of the batch); all parameters stay resident in PARAM; all weights stay resident
in WGT when they fit, otherwise each conv/dense layer streams its weights in the inference
program, in slices of column blocks, one CONV (OUT_NB) per slice. Streamed weights are double
buffered: WGT is split into two halves, and while the CONV of one slice runs, the next slice
(of the same or the next layer) streams into the other half as a background LOAD; the CONV
that needs it comes after a WAIT (or after the next background LOAD, which waits for it
too). A layer with K > wgt_depth / 2 uses the whole WGT, in slices loaded in the foreground.
Anything that does not fit is refused with :class:`CompileError` naming the layer and the
limit. ``flatten`` costs nothing (NHWC is already the dense layers' order); an ``activation``
layer right after a conv/dense layer is fused into it (its table is loaded just before).
"""

from dataclasses import dataclass, field

import numpy as np

from golden.gemm import MAX_K
from hw.dma import LUT_BEATS
from hw.isa import (Mem, Op, Reg, decode, encode, encode_load, encode_set, encode_store,
                    pack_param_entries)
from hw.npu import NpuConfig

__all__ = ["CompileError", "Program", "LayerPlan", "compile_model", "check_background_loads"]

SUPPORTED = ("conv2d", "dense", "flatten", "activation", "maxpool2d", "avgpool2d", "softmax")


class CompileError(ValueError):
    """A model that cannot run on the given hardware configuration."""


@dataclass
class LayerPlan:
    name: str
    type: str
    gemm: tuple            # (M, K, N) for the whole batch
    conv_pc: int           # index of its CONV / POOL / SOFTMAX instruction in IMEM
    regs: dict             # the CONV registers
    macs: int
    extra_pcs: list = field(default_factory=list)   # further CONVs of a sliced layer


@dataclass
class Program:
    config: NpuConfig
    batch: int
    setup: list
    infer: list
    setup_stream: np.ndarray          # uint8, beats x C
    infer_chunks: list                # "input" or a uint8 beats x C array, in LOAD order
    input_shape: tuple
    input_addr: int
    output_shape: tuple
    output_addr: int
    output_words: int                 # per image
    layers: list = field(default_factory=list)
    region_words: int = 0

    @property
    def infer_pc(self):
        return len(self.setup)

    @property
    def instructions(self):
        return self.setup + self.infer

    def words(self, channels):
        return -(-channels // self.config.cols)

    def input_beats(self, images):
        """int8 images (B, H, W, C) -> uint8 beats (ACT words) for the input LOAD."""
        x = np.asarray(images)
        if x.dtype != np.int8 or x.shape != (self.batch, *self.input_shape):
            raise ValueError(f"images must be int8 of shape {(self.batch, *self.input_shape)}, "
                             f"got {x.dtype} {x.shape}")
        C = self.config.cols
        ch = self.input_shape[-1]
        padded = np.zeros((*x.shape[:-1], self.words(ch) * C), np.int8)
        padded[..., :ch] = x
        return padded.reshape(-1, C).view(np.uint8)

    def infer_stream(self, images):
        beats = [self.input_beats(images) if c is None else c for c in self.infer_chunks]
        return np.concatenate(beats, axis=0)

    def decode_output(self, beats):
        """uint8 beats of the output STORE -> int8 (B, *output_shape)."""
        C = self.config.cols
        ch = self.output_shape[-1]
        w = np.asarray(beats, np.uint8).reshape(self.batch, -1, self.words(ch) * C)
        return w[..., :ch].view(np.int8).reshape(self.batch, *self.output_shape)


def check_background_loads(instructions):
    """Refuse a program that reads what a running background LOAD writes: a CONV whose WGT
    (or PARAM) region overlaps a background LOAD not yet waited for (WAIT, LOAD or DONE)."""
    regs, pending = {}, []
    for pc, word in enumerate(instructions):
        f = decode(word)
        op = f["op"]
        if op == Op.SET:
            regs[f["reg"]] = f["value"]
        elif op in (Op.WAIT, Op.DONE) or (op == Op.LOAD and not f["background"]):
            pending = []
        if op == Op.LOAD and f["background"]:
            pending = [(f["mem"], f["addr"], f["addr"] + f["count"])]
        elif op == Op.CONV and pending:
            g = lambda r: regs.get(r, 0)  # noqa: E731
            nb = g(Reg.OUT_NB) or g(Reg.OUT_CW)
            K = g(Reg.KH) * g(Reg.KW) * g(Reg.CIN)
            reads = {Mem.WGT: (g(Reg.W_ADDR), g(Reg.W_ADDR) + nb * K),
                     Mem.PARAM: (g(Reg.P_ADDR), g(Reg.P_ADDR) + nb)}
            for mem, lo, hi in pending:
                rlo, rhi = reads[mem]
                if lo < rhi and rlo < hi:
                    raise CompileError(
                        f"instruction {pc}: CONV reads {Mem(mem).name} [{rlo}, {rhi}) while a "
                        f"background LOAD writes [{lo}, {hi}); a WAIT must come first")


def _s8(v):
    return int(v) & 0xFFFFFFFF


def compile_model(model, config=None, batch=1, double_buffer=True):
    """Lower a validated :class:`golden.model.Model` to a :class:`Program`.

    ``double_buffer=False`` streams weights that do not fit WGT in foreground LOADs, in slices
    of the whole WGT (for comparison: ``npu.bench`` reports both)."""
    cfg = config if isinstance(config, NpuConfig) else NpuConfig(**(config or {}))
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise CompileError(f"batch must be an integer >= 1, got {batch!r}")
    C = cfg.cols
    words = lambda ch: -(-ch // C)  # noqa: E731

    layers = list(model.layers)
    for L in layers:
        if L.type not in SUPPORTED:
            raise CompileError(
                f"layer {L.index} {L.name!r}: type {L.type!r} is not supported by npu_top yet "
                f"(supported: {', '.join(SUPPORTED)})")

    # ---- Shapes and memory plan -------------------------------------------------------
    shape = tuple(model.input_shape)                  # (H, W, C) or (F,)
    tensors = [shape]
    for L in layers:
        tensors.append(tuple(L.out_shape))

    def tensor_words(s):
        if len(s) == 1:
            return batch * words(s[0])
        return batch * s[0] * s[1] * words(s[2])

    region = max(tensor_words(s) for s in tensors)
    if 2 * region > cfg.act_depth:
        big = max(range(len(tensors)), key=lambda i: tensor_words(tensors[i]))
        where = "the input" if big == 0 else f"layer {layers[big - 1].name!r}"
        fits = cfg.act_depth // (2 * (region // batch))
        hint = (f"the largest batch that fits is {fits}" if fits else
                f"even one image needs {2 * (region // batch)} words")
        raise CompileError(
            f"{where}: activations of a batch of {batch} need 2 x {region} ACT words "
            f"(ping-pong), the hardware has act_depth={cfg.act_depth}; {hint} "
            f"(or use a larger act_depth)")

    # Weights stay resident in WGT (loaded once by the setup program) when they all fit;
    # otherwise every conv/dense layer streams its weights in the inference program, in slices
    # of column blocks (slice_blocks: half of WGT, double buffered), one CONV per slice.
    total_w, geo = 0, shape if len(shape) == 3 else (1, 1, shape[0])
    for L in layers:
        if L.type in ("conv2d", "dense"):
            k_ = (L.attrs["kernel"] ** 2 if L.type == "conv2d" else geo[0] * geo[1]) * geo[2]
            total_w += k_ * words(L.out_shape[-1])
        if L.type not in ("flatten", "activation"):
            geo = L.out_shape if len(L.out_shape) == 3 else (1, 1, L.out_shape[0])
    streamed = total_w > cfg.wgt_depth
    half = cfg.wgt_depth // 2 if double_buffer else 0

    def slice_blocks(K, nb):
        """Column blocks per streamed slice of a layer: half of WGT if K fits in it."""
        room = half if K <= half else cfg.wgt_depth
        return max(1, min(nb, room // K))

    # Every streamed slice in program order, (K, column blocks), to prefetch across layers.
    slices, geo = [], shape if len(shape) == 3 else (1, 1, shape[0])
    for L in layers:
        if L.type in ("conv2d", "dense"):
            k_ = (L.attrs["kernel"] ** 2 if L.type == "conv2d" else geo[0] * geo[1]) * geo[2]
            nb_ = words(L.out_shape[-1])
            per_ = slice_blocks(k_, nb_)
            slices += [(k_, min(per_, nb_ - b)) for b in range(0, nb_, per_)]
        if L.type not in ("flatten", "activation"):
            geo = L.out_shape if len(L.out_shape) == 3 else (1, 1, L.out_shape[0])
    slice_base = []          # WGT address of each slice: alternating halves when they fit
    for j, (k_, n_) in enumerate(slices):
        if k_ * n_ > half:
            slice_base.append(0)
        else:
            prev = slice_base[-1] if slice_base else half
            slice_base.append(half if prev == 0 and slices[j - 1][0] * slices[j - 1][1] <= half
                              else 0)
    slice_blocks_data = {}   # slice index -> uint8 beats, filled as layers are lowered
    prefetched = set()       # slices already loaded in the background

    setup, infer = [], []
    setup_wgt, setup_prm, infer_chunks = [], [], []
    wgt_words = 0
    prm_entries = 0
    regs_known = {}
    plans = []
    addr = 0
    other = region

    def set_reg(reg, value):
        value = _s8(value)
        if regs_known.get(reg) != value:
            infer.append(encode_set(reg, value))
            regs_known[reg] = value

    infer.append(encode_load(Mem.ACT, 0, tensor_words(shape)))
    infer_chunks.append(None)

    geometry = shape if len(shape) == 3 else (1, 1, shape[0])   # (H, W, C) of the tensor
    i = 0
    while i < len(layers):
        L = layers[i]
        if L.type == "flatten":
            i += 1
            continue          # NHWC words are already in the dense layers' (h, w, c) order
        if L.type == "activation":
            raise CompileError(f"layer {L.index} {L.name!r}: a standalone activation is only "
                               f"supported right after a conv2d or dense layer")
        H, W, Cin = geometry
        a = L.attrs
        if L.type in ("maxpool2d", "avgpool2d", "softmax"):
            if L.type == "softmax":
                if Cin > cfg.softmax_max_len:
                    raise CompileError(f"layer {L.index} {L.name!r}: softmax over {Cin} values "
                                       f"exceeds softmax_max_len={cfg.softmax_max_len}")
                p_ = L.softmax_params
                regs = {Reg.IN_ADDR: addr, Reg.IN_H: H, Reg.IN_W: W, Reg.IN_CW: words(Cin),
                        Reg.CIN: Cin, Reg.OUT_ADDR: other, Reg.BATCH: batch,
                        Reg.SM_MULT: p_.multiplier, Reg.SM_SHIFT: p_.right_shift,
                        Reg.SM_CAUSAL: 0}
                op, out_geo, gemm = Op.SOFTMAX, (H, W, Cin), (batch * H * W, Cin, 0)
            else:
                k, s_, p_ = a["kernel"], a["stride"], a["padding"]
                Ho, Wo, _ = L.out_shape
                for what, v, lim in (("height", H, cfg.pool_max_size),
                                     ("width", W, cfg.pool_max_size),
                                     ("channels", Cin, cfg.pool_max_c),
                                     ("kernel", k, cfg.pool_max_k)):
                    if v > lim:
                        raise CompileError(f"layer {L.index} {L.name!r}: pooling {what} {v} "
                                           f"exceeds the pooling unit's limit {lim}")
                regs = {Reg.IN_ADDR: addr, Reg.IN_H: H, Reg.IN_W: W, Reg.IN_CW: words(Cin),
                        Reg.CIN: Cin, Reg.KH: k, Reg.STRIDE: s_, Reg.PAD: p_,
                        Reg.IN_ZP: L.in_zero_point, Reg.OUT_ADDR: other, Reg.OUT_H: Ho,
                        Reg.OUT_W: Wo, Reg.BATCH: batch,
                        Reg.POOL_MODE: int(L.type == "avgpool2d")}
                op, out_geo, gemm = Op.POOL, (Ho, Wo, Cin), (batch * Ho * Wo, k * k, 0)
            for reg, value in regs.items():
                set_reg(reg, value)
            plans.append(LayerPlan(L.name, L.type, gemm, len(infer),
                                   {r.name: int(v) for r, v in regs.items()}, 0))
            infer.append(encode(op))
            geometry = out_geo
            addr, other = other, addr
            i += 1
            continue
        if L.type == "conv2d":
            k, s, p = a["kernel"], a["stride"], a["padding"]
            KH = KW = k
            Ho, Wo, Cout = L.out_shape
        else:                                           # dense over the whole input map
            KH, KW, s, p = H, W, 1, 0
            Ho, Wo, Cout = 1, 1, L.out_shape[-1]
        K = KH * KW * Cin
        if K > MAX_K:
            raise CompileError(f"layer {L.index} {L.name!r}: reduction K={K} exceeds "
                               f"MAX_K={MAX_K} (int32 accumulators could overflow)")
        wq = L.tensors["weights"]
        nb = words(Cout)
        wpad = np.zeros((K, nb * C), np.int8)
        wpad[:, :Cout] = wq
        blocks = wpad.reshape(K, nb, C).transpose(1, 0, 2).reshape(nb * K, C).view(np.uint8)
        if not streamed:
            setup_wgt.append(blocks)
            w_addr = wgt_words
            wgt_words += nb * K
        elif K > cfg.wgt_depth:
            raise CompileError(f"layer {L.index} {L.name!r}: one column block of weights needs "
                               f"K={K} WGT words, the hardware has wgt_depth={cfg.wgt_depth}")
        bias = np.zeros(nb * C, np.int32)
        m0 = np.zeros(nb * C, np.int32)
        sh = np.zeros(nb * C, np.int8)
        bias[:Cout] = L.gemm_bias
        m0[:Cout] = L.tensors["m0"]
        sh[:Cout] = L.tensors["shift"]
        setup_prm.append(pack_param_entries(bias, m0, sh, C))
        p_addr = prm_entries
        prm_entries += nb
        if prm_entries > cfg.param_depth:
            raise CompileError(f"layer {L.index} {L.name!r}: needs {prm_entries} PARAM entries "
                               f"in total, the hardware has param_depth={cfg.param_depth}")

        use_lut = i + 1 < len(layers) and layers[i + 1].type == "activation"
        if use_lut:
            table = layers[i + 1].tensors["table"]
            lut = np.zeros(LUT_BEATS(C) * C, np.int8)
            lut[:256] = table
            infer.append(encode_load(Mem.LUT, 0, 1))
            infer_chunks.append(lut.view(np.uint8).reshape(-1, C))
        regs = {
            Reg.IN_ADDR: addr, Reg.IN_H: H, Reg.IN_W: W, Reg.IN_CW: words(Cin), Reg.CIN: Cin,
            Reg.KH: KH, Reg.KW: KW, Reg.STRIDE: s, Reg.PAD: p, Reg.IN_ZP: L.in_zero_point,
            Reg.OUT_ADDR: other, Reg.OUT_H: Ho, Reg.OUT_W: Wo, Reg.OUT_CW: nb,
            Reg.W_ADDR: 0 if streamed else w_addr, Reg.P_ADDR: p_addr, Reg.BATCH: batch,
            Reg.OUT_ZP: L.out_zero_point, Reg.QMIN: a["qmin"], Reg.QMAX: a["qmax"],
            Reg.USE_LUT: int(use_lut), Reg.OUT_NB: 0,
        }
        if use_lut:        # the table's output quantization is the block's output
            nxt = layers[i + 1]
            if nxt.in_zero_point != L.out_zero_point:
                raise CompileError(f"layer {nxt.name!r}: input zero point differs from "
                                   f"{L.name!r}'s output")
        per = slice_blocks(K, nb) if streamed else nb
        pcs = []
        for nb0 in range(0, nb, per):
            n = min(per, nb - nb0)
            if streamed:
                j = len(slice_blocks_data)
                slice_blocks_data[j] = blocks[nb0 * K:(nb0 + n) * K]
                base = slice_base[j]
                if j not in prefetched:
                    infer.append(encode_load(Mem.WGT, base, n * K))
                    infer_chunks.append(slice_blocks_data[j])
                regs.update({Reg.OUT_ADDR: other + nb0, Reg.P_ADDR: p_addr + nb0,
                             Reg.OUT_NB: 0 if n == nb else n, Reg.W_ADDR: base})
                nxt = j + 1
                if nxt < len(slices) and slice_base[nxt] != base and K * n <= half \
                        and slices[nxt][0] * slices[nxt][1] <= half:
                    # The next slice streams into the other half while this CONV runs; this
                    # LOAD first waits for a background LOAD of this slice, if any.
                    infer.append(encode_load(Mem.WGT, slice_base[nxt],
                                             slices[nxt][0] * slices[nxt][1], background=True))
                    infer_chunks.append(lambda nxt=nxt: slice_blocks_data[nxt])
                    prefetched.add(nxt)
                elif j in prefetched:
                    infer.append(encode(Op.WAIT))
            for reg, value in regs.items():
                set_reg(reg, value)
            pcs.append(len(infer))
            infer.append(encode(Op.CONV))
        plans.append(LayerPlan(L.name, L.type, (batch * Ho * Wo, K, Cout), pcs[0],
                               {r.name: int(v) for r, v in regs.items()},
                               batch * Ho * Wo * K * Cout, pcs[1:]))
        geometry = (Ho, Wo, Cout)
        addr, other = other, addr
        i += 2 if use_lut else 1

    out_shape = tuple(layers[-1].out_shape) if layers else shape
    out_words = tensor_words(out_shape) // batch
    infer.append(encode_store(addr, batch * out_words))
    infer.append(encode(Op.DONE))

    if wgt_words:
        setup.append(encode_load(Mem.WGT, 0, wgt_words))
    if prm_entries:
        setup.append(encode_load(Mem.PARAM, 0, prm_entries))
    setup.append(encode(Op.DONE))
    # the two WGT/PARAM loads take the beats in this order
    parts = setup_wgt + setup_prm
    stream = np.concatenate(parts, axis=0) if parts else np.zeros((0, C), np.uint8)

    # background LOADs of a later layer's first slice were emitted before its weights existed
    infer_chunks = [c() if callable(c) else c for c in infer_chunks]
    check_background_loads(infer)
    total = len(setup) + len(infer)
    if total > cfg.imem_depth:
        raise CompileError(f"model {model.name!r}: program of {total} instructions exceeds "
                           f"imem_depth={cfg.imem_depth}")
    for plan in plans:
        plan.conv_pc += len(setup)
        plan.extra_pcs = [pc + len(setup) for pc in plan.extra_pcs]
    return Program(cfg, batch, setup, infer, stream, infer_chunks, tuple(model.input_shape), 0,
                   out_shape, addr, out_words, plans, region)
