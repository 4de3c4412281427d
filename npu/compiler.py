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
from hw.act_memory import banks
from hw.isa import Mem, Reg, decode, encode, encode_load, encode_set, encode_store
from hw.isa import Op as Op_
from hw.isa import pack_param_entries
from hw.npu import NpuConfig
from npu.layout import (ConvUse, LayoutError, TensorLayout, choose_layout, pack_tensor,
                        unpack_tensor)

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
    input_layout: TensorLayout        # the input tensor in ACT (all images of the batch)
    output_shape: tuple
    output_layout: TensorLayout
    layers: list = field(default_factory=list)
    tensors: list = field(default_factory=list)     # every tensor's TensorLayout, in order
    act_peak: int = 0                                # ACT words live at once, at most

    @property
    def infer_pc(self):
        return len(self.setup)

    @property
    def instructions(self):
        return self.setup + self.infer

    def input_beats(self, images):
        """int8 images (B, *input_shape) -> uint8 beats (ACT words) for the input LOAD."""
        x = np.asarray(images)
        if x.dtype != np.int8 or x.shape != (self.batch, *self.input_shape):
            raise ValueError(f"images must be int8 of shape {(self.batch, *self.input_shape)}, "
                             f"got {x.dtype} {x.shape}")
        L = self.input_layout
        return pack_tensor(x.reshape(L.batch, L.h, L.w, L.c), L, self.config.cols)

    def infer_stream(self, images):
        beats = [self.input_beats(images) if c is None else c for c in self.infer_chunks]
        return np.concatenate(beats, axis=0)

    def decode_output(self, beats):
        """uint8 beats of the output STORE -> int8 (B, *output_shape)."""
        out = unpack_tensor(beats, self.output_layout, self.config.cols)
        return out.reshape(self.batch, *self.output_shape)


def check_background_loads(instructions):
    """Refuse a program that reads what a running background LOAD writes: a CONV whose WGT
    (or PARAM) region overlaps a background LOAD not yet waited for (WAIT, LOAD or DONE)."""
    regs, pending = {}, []
    for pc, word in enumerate(instructions):
        f = decode(word)
        op = f["op"]
        if op == Op_.SET:
            regs[f["reg"]] = f["value"]
        elif op in (Op_.WAIT, Op_.DONE) or (op == Op_.LOAD and not f["background"]):
            pending = []
        if op == Op_.LOAD and f["background"]:
            pending = [(f["mem"], f["addr"], f["addr"] + f["count"])]
        elif op == Op_.CONV and pending:
            g = lambda r: regs.get(r, 0)  # noqa: E731
            nb = g(Reg.OUT_NB)
            K = g(Reg.KH) * g(Reg.KW) * (1 if g(Reg.CONV_MODE) else g(Reg.CIN))
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


@dataclass
class Op:
    """A hardware operation: a conv/dense layer (with its fused activation table), a pooling
    layer or a softmax, reading tensor ``src`` and writing tensor ``dst``."""
    kind: str                 # "conv", "dense", "pool", "softmax"
    layer: object
    act: object = None        # a fused "activation" layer
    src: int = 0
    dst: int = 0


def plan_ops(model):
    """The hardware operations of a sequential model and the shape (H, W, C) of each tensor
    between them: ``flatten`` costs nothing (NHWC is already the dense layers' order), an
    ``activation`` right after a conv/dense layer is fused into it."""
    layers = list(model.layers)
    for L in layers:
        if L.type not in SUPPORTED:
            raise CompileError(
                f"layer {L.index} {L.name!r}: type {L.type!r} is not supported by npu_top yet "
                f"(supported: {', '.join(SUPPORTED)})")
    shape = tuple(model.input_shape)
    shapes = [shape if len(shape) == 3 else (1, 1, shape[0])]
    ops, i = [], 0
    while i < len(layers):
        L = layers[i]
        if L.type == "flatten":
            i += 1
            continue
        if L.type == "activation":
            raise CompileError(f"layer {L.index} {L.name!r}: a standalone activation is only "
                               f"supported right after a conv2d or dense layer")
        kind = {"conv2d": "conv", "dense": "dense", "maxpool2d": "pool", "avgpool2d": "pool",
                "softmax": "softmax"}[L.type]
        act = None
        if kind in ("conv", "dense") and i + 1 < len(layers) and layers[i + 1].type == "activation":
            act = layers[i + 1]
            if act.in_zero_point != L.out_zero_point:
                raise CompileError(f"layer {act.name!r}: input zero point differs from "
                                   f"{L.name!r}'s output")
        out = tuple(L.out_shape)
        shapes.append(out if len(out) == 3 else (1, 1, out[0]))
        ops.append(Op(kind, L, act, len(shapes) - 2, len(shapes) - 1))
        i += 2 if act is not None else 1
    return ops, shapes


def _conv_geometry(op, in_shape):
    """(KH, KW, stride, pad, Ho, Wo, Cout) of a conv or dense op on ``in_shape``."""
    H, W, _ = in_shape
    L = op.layer
    if op.kind == "conv":
        a = L.attrs
        Ho, Wo, Cout = L.out_shape
        return a["kernel"], a["kernel"], a["stride"], a["padding"], Ho, Wo, Cout
    return H, W, 1, 0, 1, 1, L.out_shape[-1]


def plan_layouts(ops, shapes, cfg, batch):
    """A :class:`npu.layout.TensorLayout` per tensor, with the pitches its CONV readers need."""
    uses = {t: [] for t in range(len(shapes))}
    for op in ops:
        if op.kind in ("conv", "dense"):
            _, _, s, _, Ho, Wo, _ = _conv_geometry(op, shapes[op.src])
            uses[op.src].append(ConvUse(s, s, Ho, Wo, batch))
    names = ["the input"] + [f"layer {op.layer.name!r}'s output" for op in ops]
    try:
        return [choose_layout(batch, *shapes[t], uses[t], cfg.rows, cfg.cols, names[t])
                for t in range(len(shapes))]
    except LayoutError as e:
        raise CompileError(str(e)) from None


def place_tensors(layouts, cfg):
    """ACT addresses: each operation's input and output must not overlap, so tensors
    alternate between the bottom of ACT and its top (an operation's input and output need
    their two footprints together, not twice the largest). Returns the placed layouts, or
    None and the first (index, words needed) that does not fit."""
    B = banks(cfg.rows)
    placed = []
    for t, L in enumerate(layouts):
        fp = L.footprint(B)
        if t % 2 == 0:
            addr = 0
        else:
            unit = B * L.cw
            addr = (cfg.act_depth - fp) // unit * unit
        placed.append(L.at(addr))
    for t in range(1, len(placed)):
        lo, hi = (placed[t - 1], placed[t]) if t % 2 else (placed[t], placed[t - 1])
        if lo.footprint(B) > hi.addr or hi.addr < 0:
            return None, (t, placed[t - 1].footprint(B) + placed[t].footprint(B))
    return placed, None


def _largest_batch(ops, shapes, cfg, limit):
    for b in range(limit, 0, -1):
        if place_tensors(plan_layouts(ops, shapes, cfg, b), cfg)[0] is not None:
            return b
    return 0


@dataclass
class Slice:
    """The column blocks ``nb0 .. nb0 + n - 1`` of a conv/dense op, run as one CONV, and where
    its weights (``w_addr``, ``K * n`` WGT words) and parameters (``p_addr``, ``n`` PARAM
    entries) sit: resident (loaded by the setup program) or streamed (loaded by the
    inference program, into one half of the memory while the other half is in use)."""
    op: int                   # index of the op in the op list
    nb0: int
    n: int
    K: int
    w_addr: int
    p_addr: int
    w_streamed: bool
    p_streamed: bool

    @property
    def w_region(self):
        return (self.w_addr, self.w_addr + self.K * self.n)

    @property
    def p_region(self):
        return (self.p_addr, self.p_addr + self.n)


def plan_slices(ops, shapes, cfg, double_buffer=True):
    """Weights and parameters: resident when all of them fit their memory, otherwise
    streamed slice by slice, double buffered (each slice in one half, alternating, so the
    next slice loads in the background while the current CONV runs). A slice is as many
    column blocks as a half holds (a layer whose one column block of weights exceeds half of
    WGT uses all of it, and is loaded in the foreground)."""
    C = cfg.cols
    gemm = [(i, op) for i, op in enumerate(ops) if op.kind in ("conv", "dense")]
    Ks = {i: _conv_k(op, shapes) for i, op in gemm}
    nbs = {i: -(-shapes[op.dst][2] // C) for i, op in gemm}
    w_stream = sum(Ks[i] * nbs[i] for i, _ in gemm) > cfg.wgt_depth
    p_stream = sum(nbs.values()) > cfg.param_depth
    w_half = cfg.wgt_depth // 2 if double_buffer else 0
    p_half = cfg.param_depth // 2 if double_buffer else 0
    slices = []
    w_next = p_next = 0               # resident: next free word / entry
    for i, op in gemm:
        K, nb, L = Ks[i], nbs[i], op.layer
        per = nb
        if w_stream:
            if K > cfg.wgt_depth:
                raise CompileError(f"layer {L.index} {L.name!r}: one column block of weights "
                                   f"needs K={K} WGT words, the hardware has "
                                   f"wgt_depth={cfg.wgt_depth}")
            per = min(per, max(1, (w_half if K <= w_half else cfg.wgt_depth) // K))
        if p_stream:
            per = min(per, max(1, p_half or cfg.param_depth))
        for nb0 in range(0, nb, per):
            n = min(per, nb - nb0)
            if w_stream:
                w_addr = _other_half(slices, "w", K * n, w_half)
            else:
                w_addr, w_next = w_next, w_next + K * n
            if p_stream:
                p_addr = _other_half(slices, "p", n, p_half)
            else:
                p_addr, p_next = p_next, p_next + n
            slices.append(Slice(i, nb0, n, K, w_addr, p_addr, w_stream, p_stream))
    return slices


def _other_half(slices, mem, size, half):
    """Base of a streamed slice: the half its predecessor does not use, when both fit a
    half; else 0 (it is loaded in the foreground)."""
    if not slices or not half or size > half:
        return 0
    prev = slices[-1]
    lo, hi = prev.w_region if mem == "w" else prev.p_region
    return half if (lo == 0 and hi <= half) else 0


def _conv_k(op, shapes):
    KH, KW = _conv_geometry(op, shapes[op.src])[:2]
    return KH * KW * shapes[op.src][2]


def _overlap(a, b):
    return a[0] < b[1] and b[0] < a[1]


def compile_model(model, config=None, batch=1, double_buffer=True):
    """Lower a validated :class:`golden.model.Model` to a :class:`Program`.

    ``double_buffer=False`` streams weights and parameters that do not fit in foreground
    LOADs, in slices of the whole memory (for comparison: ``npu.bench`` reports both)."""
    cfg = config if isinstance(config, NpuConfig) else NpuConfig(**(config or {}))
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise CompileError(f"batch must be an integer >= 1, got {batch!r}")
    C = cfg.cols

    # ---- Shapes and memory plan -------------------------------------------------------
    ops, shapes = plan_ops(model)
    layouts, problem = place_tensors(plan_layouts(ops, shapes, cfg, batch), cfg)
    if layouts is None:
        t, need = problem
        op = ops[t - 1]
        fits = _largest_batch(ops, shapes, cfg, batch - 1) if batch > 1 else 0
        hint = (f"the largest batch that fits is {fits}" if fits else
                "even one image does not fit")
        raise CompileError(
            f"layer {op.layer.index} {op.layer.name!r}: its input and output tensors at batch "
            f"{batch} need {need} ACT words together, the hardware has "
            f"act_depth={cfg.act_depth}; {hint} (or use a larger act_depth)")
    slices = plan_slices(ops, shapes, cfg, double_buffer)
    for op in ops:
        if op.kind in ("conv", "dense") and _conv_k(op, shapes) > MAX_K:
            L = op.layer
            raise CompileError(f"layer {L.index} {L.name!r}: reduction K={_conv_k(op, shapes)} "
                               f"exceeds MAX_K={MAX_K} (int32 accumulators could overflow)")

    # ---- Weights and parameters of every slice, as LOAD beats ------------------------------
    w_beats, p_beats = {}, {}
    for j, sl in enumerate(slices):
        w, p = _slice_data(ops[sl.op], sl, shapes, C)
        w_beats[j], p_beats[j] = w, p
    setup_w = [w_beats[j] for j, sl in enumerate(slices) if not sl.w_streamed]
    setup_p = [p_beats[j] for j, sl in enumerate(slices) if not sl.p_streamed]

    # ---- Emit ---------------------------------------------------------------------------
    infer, infer_chunks = [], []
    regs_known = {}
    plans = []

    def set_reg(reg, value):
        value = _s8(value)
        if regs_known.get(reg) != value:
            infer.append(encode_set(reg, value))
            regs_known[reg] = value

    def load(mem, addr, beats, count, background=False):
        infer.append(encode_load(mem, addr, count, background=background))
        infer_chunks.append(beats)

    def stream_in(j, background):
        """The streamed parts of slice j: PARAM first (short), then WGT."""
        sl = slices[j]
        if sl.p_streamed:
            load(Mem.PARAM, sl.p_addr, p_beats[j], sl.n, background)
        if sl.w_streamed:
            load(Mem.WGT, sl.w_addr, w_beats[j], sl.K * sl.n, background)

    def tensor_regs(prefix, L):
        return {getattr(Reg, f"{prefix}_ADDR"): L.addr, getattr(Reg, f"{prefix}_CW"): L.cw,
                getattr(Reg, f"{prefix}_ROW"): L.row, getattr(Reg, f"{prefix}_IMG"): L.img}

    src0 = layouts[0]
    infer.append(encode_load(Mem.ACT, src0.addr, src0.words, shift=src0.shift))
    infer_chunks.append(None)
    prefetched = set()       # slices loaded in the background
    for k, op in enumerate(ops):
        L = op.layer
        a = L.attrs
        src, dst = layouts[op.src], layouts[op.dst]
        H, W, Cin = shapes[op.src]
        if op.kind in ("pool", "softmax"):
            regs, code, gemm = _stream_op_regs(op, L, src, dst, shapes, cfg, batch,
                                               tensor_regs)
            for reg, value in regs.items():
                set_reg(reg, value)
            plans.append(LayerPlan(L.name, L.type, gemm, len(infer),
                                   {r.name: int(v) for r, v in regs.items()}, 0))
            infer.append(encode(code))
            continue
        KH, KW, s, p, Ho, Wo, Cout = _conv_geometry(op, shapes[op.src])
        K = KH * KW * Cin
        use_lut = op.act is not None
        if use_lut:
            lut = np.zeros(LUT_BEATS(C) * C, np.int8)
            lut[:256] = op.act.tensors["table"]
            load(Mem.LUT, 0, lut.view(np.uint8).reshape(-1, C), 1)
        regs = {
            **tensor_regs("IN", src), Reg.IN_H: H, Reg.IN_W: W, Reg.CIN: Cin,
            Reg.KH: KH, Reg.KW: KW, Reg.STRIDE_Y: s, Reg.STRIDE_X: s, Reg.PAD_TOP: p,
            Reg.PAD_LEFT: p, Reg.IN_ZP: L.in_zero_point,
            **tensor_regs("OUT", dst), Reg.OUT_H: Ho, Reg.OUT_W: Wo, Reg.BATCH: batch,
            Reg.OUT_ZP: L.out_zero_point, Reg.QMIN: a["qmin"], Reg.QMAX: a["qmax"],
            Reg.USE_LUT: int(use_lut), Reg.CONV_MODE: 0,
        }
        pcs = []
        for j in [j for j, sl in enumerate(slices) if sl.op == k]:
            sl = slices[j]
            streamed = sl.w_streamed or sl.p_streamed
            if streamed and j not in prefetched:
                stream_in(j, background=False)
            nxt = j + 1
            if streamed and nxt < len(slices) and not any(
                    _overlap(getattr(slices[nxt], r), getattr(sl, r))
                    for r, on in (("w_region", sl.w_streamed), ("p_region", sl.p_streamed))
                    if on):
                # The next slice streams into the other halves while this CONV runs; its
                # first LOAD waits for a background LOAD of this slice, if any.
                stream_in(nxt, background=True)
                prefetched.add(nxt)
            elif j in prefetched:
                infer.append(encode(Op_.WAIT))
            regs.update({Reg.OUT_ADDR: dst.addr + sl.nb0, Reg.OUT_NB: sl.n,
                         Reg.W_ADDR: sl.w_addr, Reg.P_ADDR: sl.p_addr})
            for reg, value in regs.items():
                set_reg(reg, value)
            pcs.append(len(infer))
            infer.append(encode(Op_.CONV))
        plans.append(LayerPlan(L.name, L.type, (batch * Ho * Wo, K, Cout), pcs[0],
                               {r.name: int(v) for r, v in regs.items()},
                               batch * Ho * Wo * K * Cout, pcs[1:]))

    out = layouts[-1]
    infer.append(encode_store(out.addr, out.words, shift=out.shift))
    infer.append(encode(Op_.DONE))

    setup = []
    wgt_words = sum(len(b) for b in setup_w)
    prm_entries = sum(sl.n for sl in slices if not sl.p_streamed)
    if wgt_words:
        setup.append(encode_load(Mem.WGT, 0, wgt_words))
    if prm_entries:
        setup.append(encode_load(Mem.PARAM, 0, prm_entries))
    setup.append(encode(Op_.DONE))
    # the two WGT/PARAM loads take the beats in this order
    parts = setup_w + setup_p
    stream = np.concatenate(parts, axis=0) if parts else np.zeros((0, C), np.uint8)

    check_background_loads(infer)
    total = len(setup) + len(infer)
    if total > cfg.imem_depth:
        raise CompileError(f"model {model.name!r}: program of {total} instructions exceeds "
                           f"imem_depth={cfg.imem_depth}")
    for plan in plans:
        plan.conv_pc += len(setup)
        plan.extra_pcs = [pc + len(setup) for pc in plan.extra_pcs]
    out_shape = tuple(model.layers[-1].out_shape) if model.layers else tuple(model.input_shape)
    B = banks(cfg.rows)
    peak = max((layouts[op.src].footprint(B) + layouts[op.dst].footprint(B) for op in ops),
               default=layouts[0].footprint(B))
    return Program(cfg, batch, setup, infer, stream, infer_chunks, tuple(model.input_shape),
                   layouts[0], out_shape, layouts[-1], plans, layouts, peak)


def _slice_data(op, sl, shapes, C):
    """uint8 LOAD beats of a slice: its WGT words (block nb, word k = B[k, nb*C .. +C]) and
    its PARAM entries."""
    L = op.layer
    Cout = shapes[op.dst][2]
    K = sl.K
    lo, hi = sl.nb0 * C, (sl.nb0 + sl.n) * C
    w = np.zeros((K, sl.n * C), np.int8)
    cols = min(hi, Cout) - lo
    w[:, :cols] = L.tensors["weights"][:, lo:lo + cols]
    wbeats = w.reshape(K, sl.n, C).transpose(1, 0, 2).reshape(sl.n * K, C).view(np.uint8)
    bias = np.zeros(sl.n * C, np.int32)
    m0 = np.zeros(sl.n * C, np.int32)
    sh = np.zeros(sl.n * C, np.int8)
    bias[:cols] = L.gemm_bias[lo:lo + cols]
    m0[:cols] = L.tensors["m0"][lo:lo + cols]
    sh[:cols] = L.tensors["shift"][lo:lo + cols]
    return wbeats, pack_param_entries(bias, m0, sh, C)


def _stream_op_regs(op, L, src, dst, shapes, cfg, batch, tensor_regs):
    """Registers, opcode and (M, K, 0) of a POOL or SOFTMAX op."""
    a = L.attrs
    C = cfg.cols
    H, W, Cin = shapes[op.src]
    if op.kind == "softmax":
        if Cin > cfg.softmax_max_len:
            raise CompileError(f"layer {L.index} {L.name!r}: softmax over {Cin} values "
                               f"exceeds softmax_max_len={cfg.softmax_max_len}")
        p_ = L.softmax_params
        regs = {**tensor_regs("IN", src), Reg.IN_H: H, Reg.IN_W: W, Reg.CIN: Cin,
                **tensor_regs("OUT", dst), Reg.BATCH: batch,
                Reg.SM_MULT: p_.multiplier, Reg.SM_SHIFT: p_.right_shift, Reg.SM_CAUSAL: 0}
        return regs, Op_.SOFTMAX, (batch * H * W, Cin, 0)
    k, s_, p_ = a["kernel"], a["stride"], a["padding"]
    Ho, Wo, _ = L.out_shape
    for what, v, lim in (("height", H, cfg.pool_max_size), ("width", W, cfg.pool_max_size),
                         ("channels", src.cw * C, cfg.pool_max_c),
                         ("kernel", k, cfg.pool_max_k)):
        if v > lim:
            raise CompileError(f"layer {L.index} {L.name!r}: pooling {what} {v} "
                               f"exceeds the pooling unit's limit {lim}")
    regs = {**tensor_regs("IN", src), Reg.IN_H: H, Reg.IN_W: W, Reg.CIN: Cin,
            Reg.KH: k, Reg.KW: k, Reg.STRIDE_Y: s_, Reg.STRIDE_X: s_,
            Reg.PAD_TOP: p_, Reg.PAD_LEFT: p_, Reg.IN_ZP: L.in_zero_point,
            **tensor_regs("OUT", dst), Reg.OUT_H: Ho, Reg.OUT_W: Wo,
            Reg.BATCH: batch, Reg.POOL_MODE: int(L.type == "avgpool2d")}
    return regs, Op_.POOL, (batch * Ho * Wo, k * k, 0)
