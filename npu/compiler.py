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

import dataclasses
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from golden.conv import Window
from golden.gemm import MAX_K
from golden.model import GEMM_TYPES, INPUT
from golden.pooling import average_requantizer
from golden.tflite import SOFTMAX_TFLITE_MAX_LEN, softmax_exp_table
from hw.conv_engine import Mode as ConvMode
from hw.conv_engine import beats_per_tile, ksplit_supported, wgt_banks, wgt_words_per_block
from hw.dma import LUT_BEATS
from hw.act_memory import banks
from hw.isa import Mem, Reg, decode, encode, encode_load, encode_set, encode_store
from hw.isa import Op as Op_
from hw.isa import pack_param_entries, pack_sm_exp_table
from hw.npu import NpuConfig
from hw.softmax import MODES as SOFTMAX_MODES
from npu.perf import conv_cycles
from npu.layout import (ConvUse, LayoutError, TensorLayout, choose_layout, pack_tensor,
                        unpack_tensor)

__all__ = ["CompileError", "Program", "LayerPlan", "compile_model", "check_background_loads"]

SUPPORTED = ("conv2d", "depthwise_conv2d", "dense", "flatten", "activation", "maxpool2d",
             "avgpool2d", "softmax", "add")


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


def check_background_loads(instructions, rows, cols):
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
            words = wgt_words_per_block(g(Reg.CONV_MODE), g(Reg.KH), g(Reg.KW), g(Reg.CIN),
                                        rows, cols)
            reads = {Mem.WGT: (g(Reg.W_ADDR), g(Reg.W_ADDR) + nb * words),
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
    """A hardware operation: a conv/depthwise/dense layer (with its fused activation table),
    a pooling layer, a softmax or an add, reading tensors ``srcs`` and writing ``dst``
    (indices into the tensor list of :func:`plan_ops`)."""
    kind: str                 # "conv", "depthwise", "dense", "pool", "softmax", "add"
    layer: object
    act: object = None        # a fused "activation" layer
    srcs: list = field(default_factory=list)
    dst: int = 0
    mode: int = ConvMode.CONV  # conv/dense/depthwise: the CONV_MODE (:func:`plan_mappings`)

    @property
    def src(self):
        return self.srcs[0]


_KINDS = {"conv2d": "conv", "depthwise_conv2d": "depthwise", "dense": "dense",
          "maxpool2d": "pool", "avgpool2d": "pool", "softmax": "softmax", "add": "add"}
GEMM_KINDS = ("conv", "depthwise", "dense")


# ---- pass 1: normalize: the operations and the tensors between them ----------------------

def plan_ops(model):
    """The hardware operations of a model (a graph in topological order) and the shape
    (H, W, C) of each tensor they read and write. ``flatten`` costs nothing (NHWC is already
    the dense layers' order): its output is its input tensor. An ``activation`` that is the
    only reader of a conv/depthwise/dense layer's output is fused into it (the activation
    table after the requantizer). Returns ``(ops, shapes, tensor_of)``: ``tensor_of`` maps a
    layer name (and ``"input"``) to its tensor index."""
    for L in model.layers:
        if L.type not in SUPPORTED:
            raise CompileError(
                f"layer {L.index} {L.name!r}: type {L.type!r} is not supported by npu_top yet "
                f"(supported: {', '.join(SUPPORTED)})")
    shape = tuple(model.input_shape)
    shapes = [shape if len(shape) == 3 else (1, 1, shape[0])]
    tensor_of = {INPUT: 0}
    ops, fused = [], set()
    by_name = {L.name: L for L in model.layers}
    for L in model.layers:
        if L.type == "flatten":
            tensor_of[L.name] = tensor_of[L.inputs[0]]
            continue
        if L.type == "activation":
            if L.name in fused:
                continue
            raise CompileError(f"layer {L.index} {L.name!r}: a standalone activation is only "
                               f"supported as the one reader of a conv2d, depthwise_conv2d or "
                               f"dense layer")
        act = None
        readers = model.consumers(L.name)
        if (L.type in GEMM_TYPES and len(readers) == 1 and readers[0].type == "activation"
                and model.output != L.name):
            act = readers[0]
            if act.in_zero_point != L.out_zero_point:
                raise CompileError(f"layer {act.name!r}: input zero point differs from "
                                   f"{L.name!r}'s output")
            fused.add(act.name)
        out = tuple((act or L).out_shape)
        shapes.append(out if len(out) == 3 else (1, 1, out[0]))
        dst = len(shapes) - 1
        tensor_of[L.name] = dst
        if act is not None:
            tensor_of[act.name] = dst
        ops.append(Op(_KINDS[L.type], L, act, [tensor_of[n] for n in L.inputs], dst))
    del by_name
    return ops, shapes, tensor_of


# ---- pass 1b: average pooling the pooling unit cannot take -> depthwise convolution ------

def pool_window_problem(L):
    """Why no configuration of the pooling unit runs pooling layer ``L``, or None: it takes
    square windows and strides with equal padding of at most half the window."""
    sq = L.window.square
    if sq is None or sq[2] > sq[0] // 2:
        return (f"the pooling unit takes square windows and strides with equal padding of at "
                f"most half the window, got {L.window.attrs()}")
    if L.type == "avgpool2d" and L.attrs.get("count", "kernel") != "kernel" and sq[2]:
        return ("average pooling that counts only the taps inside the input, with padding, "
                "is not supported by the pooling unit")
    return None


def pool_unit_sizes(L, in_shape, cols):
    """What pooling layer ``L`` (a square window) asks of the pooling unit on an ``(H, W, C)``
    input: ``(what, value, the NpuConfig parameter that bounds it)``."""
    H, W, Cin = in_shape
    return (("height", H, "pool_max_size"), ("width", W, "pool_max_size"),
            ("channels", -(-Cin // cols) * cols, "pool_max_c"),
            ("kernel", L.window.square[0], "pool_max_k"))


def pool_unit_problem(L, in_shape, cfg):
    """Why the pooling unit cannot run pooling layer ``L`` on an ``(H, W, C)`` input, or
    None: its window (:func:`pool_window_problem`), then its size, channel and kernel
    limits."""
    problem = pool_window_problem(L)
    if problem:
        return problem
    for what, v, param in pool_unit_sizes(L, in_shape, cfg.cols):
        if v > getattr(cfg, param):
            return f"pooling {what} {v} exceeds the pooling unit's limit {getattr(cfg, param)}"
    return None


def avgpool_as_depthwise(L):
    """An average pooling layer as an equivalent depthwise convolution, or ``(None, why)``.

    Unit weights, zero bias and output zero point 0 make the accumulator the window sum
    ``S`` of the raw int8 values (padding is IN_ZP, the zero point, as average pooling with
    count "kernel" counts it); the requantizer then divides by the window size with the
    constants of :func:`golden.pooling.average_requantizer`, which equal the pooling
    golden's rounding on every possible sum. Count "valid" with padding has a divisor that
    varies per window, so it has no such form."""
    win = L.window
    if L.attrs.get("count", "kernel") == "valid" and (win.pt or win.pl or win.pb or win.pr):
        return None, "average pooling that counts only the taps inside the input, with padding"
    d = win.kh * win.kw
    found = average_requantizer(d)
    if found is None:
        return None, f"no requantizer divides every window sum by {d} exactly"
    m0, shift, rounding = found
    C = L.out_shape[-1]
    tensors = {"weights": np.ones((d, C), np.int8), "bias": np.zeros(C, np.int32),
               "m0": np.full(C, m0, np.int32), "shift": np.full(C, shift, np.int32)}
    attrs = {**L.attrs, "channels": C, "qmin": -128, "qmax": 127, "rounding": rounding,
             "output": {**L.attrs["output"], "zero_point": 0}}
    return dataclasses.replace(L, attrs=attrs, tensors=tensors,
                               gemm_bias=np.zeros(C, np.int32)), None


def lower_avgpools(ops, shapes, cfg):
    """Average pooling the pooling unit refuses (non-square, too many channels, too large)
    runs on the array as a depthwise convolution (:func:`avgpool_as_depthwise`); the op keeps
    the layer's name and type ``avgpool2d`` in the plan."""
    out = []
    for op in ops:
        if op.kind == "pool" and op.layer.type == "avgpool2d":
            L = op.layer
            problem = pool_unit_problem(L, shapes[op.src], cfg)
            if problem:
                dw, why = avgpool_as_depthwise(L)
                if dw is None:
                    raise CompileError(f"layer {L.index} {L.name!r}: {problem}; nor does "
                                       f"it run as a depthwise convolution ({why})")
                op = Op("depthwise", dw, None, op.srcs, op.dst)
        out.append(op)
    return out


def _conv_geometry(op, in_shape):
    """(Window, Ho, Wo, Cout) of a conv, depthwise or dense op on ``in_shape``."""
    H, W, C = in_shape
    L = op.layer
    if op.kind in ("conv", "depthwise"):
        Ho, Wo, Cout = L.out_shape
        return L.window, Ho, Wo, Cout
    return Window(H, W), 1, 1, L.out_shape[-1]


def _conv_k(op, shapes):
    """The reduction length K of a conv, depthwise or dense op (its MACs per output)."""
    win = _conv_geometry(op, shapes[op.src])[0]
    return win.kh * win.kw * (1 if op.kind == "depthwise" else shapes[op.src][2])


def _wgt_words(op, shapes, cfg):
    """WGT words of one column block of the op, in its mapping."""
    win = _conv_geometry(op, shapes[op.src])[0]
    return wgt_words_per_block(op.mode, win.kh, win.kw, shapes[op.src][2], cfg.rows, cfg.cols)


def _wgt_alignment(op, cfg):
    """K-split slices start at a multiple of the WGT banks (hw.conv_engine)."""
    return wgt_banks(cfg.rows, cfg.cols) if op.mode == ConvMode.KSPLIT else 1


def resident_wgt_words(ops, shapes, cfg):
    """WGT words that keep every conv/dense op's weights resident, laid out in op order
    (K-split ones aligned)."""
    end = 0
    for op in ops:
        if op.kind in GEMM_KINDS:
            align = _wgt_alignment(op, cfg)
            end = -(-end // align) * align
            end += _wgt_words(op, shapes, cfg) * -(-shapes[op.dst][2] // cfg.cols)
    return end


# ---- pass 1c: the mapping of each conv/dense op onto the array -----------------------------

def gemm_cycles(op, shapes, cfg, batch, mode):
    """Cycles of the op's CONV in ``mode`` (the whole layer as one instruction)."""
    win, Ho, Wo, Cout = _conv_geometry(op, shapes[op.src])
    K = beats_per_tile(mode, win.kh, win.kw, shapes[op.src][2], cfg.cols)
    N = -(-Cout // cfg.cols) * cfg.cols
    return conv_cycles(cfg.rows, cfg.cols, batch * Ho * Wo, K, N, op.act is not None,
                       mode == ConvMode.KSPLIT)


def plan_mappings(ops, shapes, cfg, batch):
    """Each conv/dense op runs in the mapping the cycle model finds faster: output pixels on
    the rows (CONV_MODE 0), or, where the configuration has it, the K-split mode (output
    channels on the rows, the reduction split across the columns: all R x C PEs busy on a
    single output pixel, a dense layer at batch 1). Depthwise ops run in depthwise mode."""
    def mapped(op):
        if op.kind == "depthwise":
            return dataclasses.replace(op, mode=ConvMode.DEPTHWISE)
        if op.kind in GEMM_KINDS and ksplit_supported(cfg.rows, cfg.cols) and (
                gemm_cycles(op, shapes, cfg, batch, ConvMode.KSPLIT) <
                gemm_cycles(op, shapes, cfg, batch, ConvMode.CONV)):
            return dataclasses.replace(op, mode=ConvMode.KSPLIT)
        return op
    return [mapped(op) for op in ops]


# ---- pass 2: layouts ------------------------------------------------------------------------

def plan_layouts(ops, shapes, cfg, batch, names=None):
    """A :class:`npu.layout.TensorLayout` per tensor, with the pitches its CONV readers need
    (pooling, softmax and add read any layout)."""
    uses = {t: [] for t in range(len(shapes))}
    for op in ops:
        if op.kind in GEMM_KINDS:
            win, Ho, Wo, _ = _conv_geometry(op, shapes[op.src])
            uses[op.src].append(ConvUse(win.sy, win.sx, Ho, Wo, batch))
    names = names or [f"tensor {t}" for t in range(len(shapes))]
    try:
        return [choose_layout(batch, *shapes[t], uses[t], cfg.rows, cfg.cols, names[t])
                for t in range(len(shapes))]
    except LayoutError as e:
        raise CompileError(str(e)) from None


def tensor_names(ops, shapes):
    return ["the input"] + [f"layer {op.layer.name!r}'s output" for op in ops]


# ---- pass 3: memory plan by liveness ---------------------------------------------------------

def liveness(ops, n_tensors):
    """``(first, last)`` op index of each tensor: written by op ``first`` (-1: the input, by
    the LOAD), read last by op ``last`` (``len(ops)``: the output, by the STORE)."""
    first = [-1] + [None] * (n_tensors - 1)
    last = [-1] * n_tensors
    for i, op in enumerate(ops):
        first[op.dst] = i
        for t in op.srcs:
            last[t] = max(last[t], i)
    if ops:
        last[ops[-1].dst] = len(ops)
    return list(zip(first, last))


def place_tensors(layouts, cfg, live=None, depth=None):
    """ACT addresses by liveness: each tensor, in the order they are written, takes the
    lowest address (aligned to whole groups of B pixels) free of the tensors alive at the
    same time (an operation's inputs and output are alive together). Returns the placed
    layouts and None, or None and ``(tensor, words live then)`` for the first that does
    not fit in ``depth`` words (default ``cfg.act_depth``; the placement does not depend on
    it, only whether it fits)."""
    B = banks(cfg.rows)
    depth = cfg.act_depth if depth is None else depth
    if live is None:                      # a chain: tensor t is written by op t - 1
        live = [(t - 1, t) for t in range(len(layouts))]
    placed = [None] * len(layouts)
    for t in sorted(range(len(layouts)), key=lambda t: live[t][0]):
        L = layouts[t]
        fp, unit = L.footprint(B), B * L.cw
        busy = sorted((placed[u].addr, placed[u].addr + placed[u].footprint(B))
                      for u in range(len(layouts)) if placed[u] is not None
                      and live[u][0] <= live[t][1] and live[t][0] <= live[u][1])
        addr = 0
        for lo, hi in busy:
            if addr + fp <= lo:
                break
            addr = max(addr, -(-hi // unit) * unit)
        if addr + fp > depth:
            return None, (t, sum(hi - lo for lo, hi in busy) + fp)
        placed[t] = L.at(addr)
    return placed, None


def plan_memory(ops, shapes, cfg, batch):
    """Layouts and addresses of every tensor at ``batch``; ``CompileError`` naming the tensor,
    its size, what is live with it and the capacity when ACT is too small (and the largest
    batch that fits)."""
    placed = place_tensors(plan_layouts(ops, shapes, cfg, batch, tensor_names(ops, shapes)),
                           cfg, liveness(ops, len(shapes)))[0]
    if placed is None:
        raise CompileError(f"{act_shortfall(ops, shapes, cfg, batch)}: the hardware has "
                           f"act_depth={cfg.act_depth}")
    return placed


def act_shortfall(ops, shapes, cfg, batch):
    """None when every tensor fits ACT at ``batch``; else why not: the first tensor that does
    not fit, its words and those alive with it, and the largest batch that fits."""
    names = tensor_names(ops, shapes)
    live = liveness(ops, len(shapes))
    layouts = plan_layouts(ops, shapes, cfg, batch, names)
    placed, problem = place_tensors(layouts, cfg, live)
    if placed is not None:
        return None
    t, need = problem
    fits = _largest_batch(ops, shapes, cfg, batch - 1, live) if batch > 1 else 0
    hint = (f"the largest batch that fits is {fits} at this act_depth" if fits
            else "even one image does not fit")
    return (f"{names[t]}: {layouts[t].footprint(banks(cfg.rows))} ACT words at batch {batch}, "
            f"with the tensors alive at the same time {need} ACT words; {hint}")


def _largest_batch(ops, shapes, cfg, limit, live):
    """A batch ``b <= limit`` that fits ACT while ``b + 1`` does not (0: not even one image),
    by bisection: a batch of billions is answered in a few dozen plans, not a loop."""
    def fits(b):
        try:
            layouts = plan_layouts(ops, shapes, cfg, b)
        except CompileError:
            return False
        return place_tensors(layouts, cfg, live)[0] is not None

    if fits(limit):
        return limit
    lo, hi = 0, limit                 # fits(lo) (0: trivially), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def act_words_needed(ops, shapes, cfg, batch):
    """The smallest ``act_depth`` (a multiple of the ACT banks) that holds every tensor at
    ``batch``: the end of the highest tensor, placed as :func:`place_tensors` places them."""
    B = banks(cfg.rows)
    layouts = plan_layouts(ops, shapes, cfg, batch)
    everything = sum(L.footprint(B) + B * L.cw for L in layouts)
    placed, _ = place_tensors(layouts, cfg, liveness(ops, len(shapes)), depth=everything)
    end = max(L.addr + L.footprint(B) for L in placed)
    return -(-end // B) * B


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
    gemm = [(i, op) for i, op in enumerate(ops) if op.kind in GEMM_KINDS]
    Ks = {i: _wgt_words(op, shapes, cfg) for i, op in gemm}
    nbs = {i: -(-shapes[op.dst][2] // C) for i, op in gemm}
    B = wgt_banks(cfg.rows, cfg.cols)
    align = {i: _wgt_alignment(op, cfg) for i, op in gemm}
    w_stream = resident_wgt_words(ops, shapes, cfg) > cfg.wgt_depth
    p_stream = sum(nbs.values()) > cfg.param_depth
    w_half = cfg.wgt_depth // 2 // B * B if double_buffer else 0
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
                w_addr = -(-w_next // align[i]) * align[i]
                w_next = w_addr + K * n
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


def _overlap(a, b):
    return a[0] < b[1] and b[0] < a[1]


# ---- capacity: every limit of the configuration the model exceeds, at once -----------------

def capacity_shortfalls(ops, shapes, cfg, batch):
    """``{NpuConfig parameter: (the smallest value that fits, why)}`` for every memory or unit
    limit the model exceeds at ``batch`` (ACT, WGT, the pooling and softmax units; the
    instruction memory is counted once the rest fits). What no configuration runs (a pooling
    window the unit does not take, ...) is a :class:`CompileError` at once."""
    short = {}

    def need(param, value, why):       # the largest need of a parameter, and its reason
        if value > max(getattr(cfg, param), short.get(param, (0, None))[0]):
            short[param] = (value, why)

    for op in ops:
        L, in_shape = op.layer, shapes[op.src]
        if op.kind == "pool":
            problem = pool_window_problem(L)
            if problem:
                raise CompileError(f"layer {L.index} {L.name!r}: {problem}")
            for what, v, param in pool_unit_sizes(L, in_shape, cfg.cols):
                need(param, v, f"layer {L.name!r}: pooling {what} {v}")
        elif op.kind == "softmax":
            need("softmax_max_len", in_shape[2], f"layer {L.name!r}: softmax over "
                 f"{in_shape[2]} values")
    gemm = [op for op in ops if op.kind in GEMM_KINDS]
    if gemm:
        C = cfg.cols
        words = resident_wgt_words(ops, shapes, cfg)
        widest = max(gemm, key=lambda op: _wgt_words(op, shapes, cfg))
        K = _wgt_words(widest, shapes, cfg)
        if words > cfg.wgt_depth:            # streamed: one column block at a time must fit
            need("wgt_depth", K, f"layer {widest.layer.name!r}: one column block of weights "
                 f"needs K={K} WGT words")
    why = act_shortfall(ops, shapes, cfg, batch)
    if why:
        need("act_depth", act_words_needed(ops, shapes, cfg, batch), why)
    return short


def _bounds(param):
    return next(f.metadata["bounds"] for f in dataclasses.fields(NpuConfig) if f.name == param)


def capacity_error(model, cfg, short):
    """One :class:`CompileError` naming every limit in ``short`` (see
    :func:`capacity_shortfalls`), what needs it, and the ``-p`` options that fit, or which
    value no configuration reaches."""
    limits = "; ".join(f"{p}={getattr(cfg, p)} is too small ({why})"
                       for p, (_, why) in short.items())
    beyond = [(p, v, _bounds(p)[1]) for p, (v, _) in short.items() if v > _bounds(p)[1]]
    if beyond:
        fix = "no configuration holds it: " + ", ".join(
            f"{p} would have to be {v}, at most {hi}" for p, v, hi in beyond)
    else:
        fix = "it fits with " + " ".join(f"-p {p}={v}" for p, (v, _) in short.items())
    n = len(short)
    return CompileError(f"model {model.name!r} exceeds {n} limit{'s' * (n > 1)} of this "
                        f"configuration: {limits}; {fix}")


def _instruction_shortfall(prog, cfg):
    total = len(prog.setup) + len(prog.infer)
    if total <= cfg.imem_depth:
        return {}
    return {"imem_depth": (total, f"a program of {total} instructions")}


def compile_model(model, config=None, batch=1, double_buffer=True):
    """Lower a validated :class:`golden.model.Model` to a :class:`Program`, pass by pass:
    :func:`plan_ops`, :func:`lower_avgpools`, :func:`plan_mappings` (each conv/dense layer
    on the array pixel-per-row or K-split, by the cycle model), :func:`plan_memory` (layouts
    and addresses by liveness),
    :func:`plan_slices` (weights and parameters), :func:`emit` (the instructions, one
    lowering function per operation kind, with the background loads scheduled).

    ``double_buffer=False`` streams weights and parameters that do not fit in foreground
    LOADs, in slices of the whole memory (for comparison: ``npu.bench`` reports both)."""
    cfg = config if isinstance(config, NpuConfig) else NpuConfig(**(config or {}))
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise CompileError(f"batch must be an integer >= 1, got {batch!r}")
    ops, shapes, tensor_of = plan_ops(model)
    ops = lower_avgpools(ops, shapes, cfg)
    ops = plan_mappings(ops, shapes, cfg, batch)
    for op in ops:
        if op.kind in GEMM_KINDS and _conv_k(op, shapes) > MAX_K:
            L = op.layer
            raise CompileError(f"layer {L.index} {L.name!r}: reduction K={_conv_k(op, shapes)} "
                               f"exceeds MAX_K={MAX_K} (int32 accumulators could overflow)")
    short = capacity_shortfalls(ops, shapes, cfg, batch)
    if short:      # how many instructions, once the rest fits (if any configuration holds it)
        if all(v <= _bounds(p)[1] for p, (v, _) in short.items()):
            fitting = dataclasses.replace(cfg, **{p: v for p, (v, _) in short.items()})
            short.update(_instruction_shortfall(
                _emit_all(ops, shapes, fitting, batch, model, tensor_of, double_buffer), cfg))
        raise capacity_error(model, cfg, short)
    prog = _emit_all(ops, shapes, cfg, batch, model, tensor_of, double_buffer)
    short = _instruction_shortfall(prog, cfg)
    if short:
        raise capacity_error(model, cfg, short)
    return prog


def _emit_all(ops, shapes, cfg, batch, model, tensor_of, double_buffer):
    layouts = plan_memory(ops, shapes, cfg, batch)
    slices = plan_slices(ops, shapes, cfg, double_buffer)
    return emit(ops, shapes, layouts, slices, cfg, batch, model, tensor_of)


class _Emitter:
    """The inference program being written: instructions, the beats of its LOADs, the
    registers it has set (only changed ones are SET again)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.infer, self.chunks, self.known, self.plans = [], [], {}, []

    def set_reg(self, reg, value):
        value = _s8(value)
        if self.known.get(reg) != value:
            self.infer.append(encode_set(reg, value))
            self.known[reg] = value

    def set_regs(self, regs):
        for reg, value in regs.items():
            self.set_reg(reg, value)

    def load(self, mem, addr, beats, count, background=False, shift=0):
        self.infer.append(encode_load(mem, addr, count, background=background, shift=shift))
        self.chunks.append(beats)

    def op(self, code):
        self.infer.append(encode(code))
        return len(self.infer) - 1


def tensor_regs(prefix, L):
    """The address and pitches of a tensor for the IN, IN2 or OUT registers."""
    return {getattr(Reg, f"{prefix}_ADDR"): L.addr, getattr(Reg, f"{prefix}_ROW"): L.row,
            getattr(Reg, f"{prefix}_IMG"): L.img,
            **({getattr(Reg, f"{prefix}_CW"): L.cw} if prefix != "IN2" else {})}


def emit(ops, shapes, layouts, slices, cfg, batch, model, tensor_of):
    """The setup and inference programs: LOAD the input, each op through its lowering
    function (:data:`LOWER`), STORE the output."""
    C = cfg.cols
    e = _Emitter(cfg)
    w_beats, p_beats = {}, {}
    for j, sl in enumerate(slices):
        w_beats[j], p_beats[j] = _slice_data(ops[sl.op], sl, shapes, cfg)
    src0 = layouts[0]
    e.load(Mem.ACT, src0.addr, None, src0.words, shift=src0.shift)
    sm_exp = resident_exp_table(ops, C)
    ctx = SimpleNamespace(ops=ops, shapes=shapes, layouts=layouts, slices=slices, cfg=cfg,
                          batch=batch, w_beats=w_beats, p_beats=p_beats, prefetched=set(),
                          sm_exp_resident=sm_exp is not None)
    for k, op in enumerate(ops):
        LOWER[op.kind](e, ctx, k, op)
    out = layouts[tensor_of[model.output]]
    e.infer.append(encode_store(out.addr, out.words, shift=out.shift))
    e.infer.append(encode(Op_.DONE))

    setup = []
    setup_w = [_resident_weights([(sl.w_addr, w_beats[j]) for j, sl in enumerate(slices)
                                  if not sl.w_streamed], C)]
    setup_p = [p_beats[j] for j, sl in enumerate(slices) if not sl.p_streamed]
    wgt_words = sum(len(b) for b in setup_w)
    prm_entries = sum(sl.n for sl in slices if not sl.p_streamed)
    if wgt_words:
        setup.append(encode_load(Mem.WGT, 0, wgt_words))
    if prm_entries:
        setup.append(encode_load(Mem.PARAM, 0, prm_entries))
    if sm_exp is not None:
        setup.append(encode_load(Mem.SM_EXP, 0, 1))
    setup.append(encode(Op_.DONE))
    # the setup LOADs take them in this order
    parts = setup_w + setup_p + ([sm_exp] if sm_exp is not None else [])
    stream = np.concatenate(parts, axis=0) if parts else np.zeros((0, C), np.uint8)
    check_background_loads(e.infer, cfg.rows, cfg.cols)
    for plan in e.plans:
        plan.conv_pc += len(setup)
        plan.extra_pcs = [pc + len(setup) for pc in plan.extra_pcs]
    B = banks(cfg.rows)
    live = liveness(ops, len(shapes))
    peak = max(sum(L.footprint(B) for u, L in enumerate(layouts)
                   if live[u][0] <= i <= live[u][1]) for i in range(-1, len(ops) + 1))
    return Program(cfg, batch, setup, e.infer, stream, e.chunks, tuple(model.input_shape),
                   layouts[0], tuple(model.output_shape), out, e.plans, layouts, peak)


def _resident_weights(placed, C):
    """The setup LOAD's WGT words from 0: each resident slice's words at its address, zeros
    in the gaps that K-split slices' alignment leaves."""
    end = max((addr + len(words) for addr, words in placed), default=0)
    image = np.zeros((end, C), np.uint8)
    for addr, words in placed:
        image[addr:addr + len(words)] = words
    return image


def _lower_gemm(e, ctx, k, op):
    """conv2d, depthwise_conv2d, dense: one CONV per slice of column blocks; the streamed
    slices loaded first (foreground) or while the previous CONV runs (background)."""
    L, a, cfg = op.layer, op.layer.attrs, ctx.cfg
    C = cfg.cols
    src, dst = ctx.layouts[op.src], ctx.layouts[op.dst]
    H, W, Cin = ctx.shapes[op.src]
    win, Ho, Wo, Cout = _conv_geometry(op, ctx.shapes[op.src])
    K = _conv_k(op, ctx.shapes)
    depthwise = op.kind == "depthwise"
    if op.act is not None:
        lut = np.zeros(LUT_BEATS(C) * C, np.int8)
        lut[:256] = op.act.tensors["table"]
        e.load(Mem.LUT, 0, lut.view(np.uint8).reshape(-1, C), 1)
    regs = {
        **tensor_regs("IN", src), Reg.IN_H: H, Reg.IN_W: W, Reg.CIN: Cin,
        Reg.KH: win.kh, Reg.KW: win.kw, Reg.STRIDE_Y: win.sy, Reg.STRIDE_X: win.sx,
        Reg.PAD_TOP: win.pt, Reg.PAD_LEFT: win.pl, Reg.IN_ZP: L.in_zero_point,
        **tensor_regs("OUT", dst), Reg.OUT_H: Ho, Reg.OUT_W: Wo, Reg.BATCH: ctx.batch,
        Reg.OUT_ZP: L.out_zero_point, Reg.QMIN: a["qmin"], Reg.QMAX: a["qmax"],
        Reg.USE_LUT: int(op.act is not None), Reg.CONV_MODE: op.mode,
        Reg.ROUNDING: int(a.get("rounding", "double") == "single"),
    }
    pcs = []
    slices = ctx.slices
    for j in [j for j, sl in enumerate(slices) if sl.op == k]:
        sl = slices[j]
        streamed = sl.w_streamed or sl.p_streamed
        if streamed and j not in ctx.prefetched:
            _stream_in(e, ctx, j, background=False)
        nxt = j + 1
        if streamed and nxt < len(slices) and not any(
                _overlap(getattr(slices[nxt], r), getattr(sl, r))
                for r, on in (("w_region", sl.w_streamed), ("p_region", sl.p_streamed)) if on):
            # The next slice streams into the other halves while this CONV runs; its first
            # LOAD waits for a background LOAD of this slice, if any.
            _stream_in(e, ctx, nxt, background=True)
            ctx.prefetched.add(nxt)
        elif j in ctx.prefetched:
            e.infer.append(encode(Op_.WAIT))
        regs.update({Reg.OUT_ADDR: dst.addr + sl.nb0, Reg.OUT_NB: sl.n,
                     Reg.W_ADDR: sl.w_addr, Reg.P_ADDR: sl.p_addr})
        if depthwise:            # the slice's channel groups of the input, too
            regs[Reg.IN_ADDR] = src.addr + sl.nb0
        e.set_regs(regs)
        pcs.append(e.op(Op_.CONV))
    M = ctx.batch * Ho * Wo
    macs = M * K * Cout
    e.plans.append(LayerPlan(L.name, L.type, (M, K, Cout), pcs[0],
                             {r.name: int(v) for r, v in regs.items()}, macs, pcs[1:]))


def _stream_in(e, ctx, j, background):
    """The streamed parts of slice j: PARAM first (short), then WGT."""
    sl = ctx.slices[j]
    if sl.p_streamed:
        e.load(Mem.PARAM, sl.p_addr, ctx.p_beats[j], sl.n, background)
    if sl.w_streamed:
        e.load(Mem.WGT, sl.w_addr, ctx.w_beats[j], sl.K * sl.n, background)


def _lower_pool(e, ctx, k, op):
    L, cfg = op.layer, ctx.cfg
    src, dst = ctx.layouts[op.src], ctx.layouts[op.dst]
    H, W, Cin = ctx.shapes[op.src]
    problem = pool_unit_problem(L, ctx.shapes[op.src], cfg)
    if problem:
        raise CompileError(f"layer {L.index} {L.name!r}: {problem}")
    kk, s_, p_ = L.window.square
    Ho, Wo, _ = L.out_shape
    regs = {**tensor_regs("IN", src), Reg.IN_H: H, Reg.IN_W: W, Reg.CIN: Cin,
            Reg.KH: kk, Reg.KW: kk, Reg.STRIDE_Y: s_, Reg.STRIDE_X: s_, Reg.PAD_TOP: p_,
            Reg.PAD_LEFT: p_, Reg.IN_ZP: L.in_zero_point, **tensor_regs("OUT", dst),
            Reg.OUT_H: Ho, Reg.OUT_W: Wo, Reg.BATCH: ctx.batch,
            Reg.POOL_MODE: int(L.type == "avgpool2d")}
    e.set_regs(regs)
    e.plans.append(LayerPlan(L.name, L.type, (ctx.batch * Ho * Wo, kk * kk, 0), e.op(Op_.POOL),
                             {r.name: int(v) for r, v in regs.items()}, 0))


def resident_exp_table(ops, cols):
    """The SM_EXP LOAD beats the setup program loads once, when every softmax of variant
    "tflite" uses the same exp table (one softmax, as in every MLPerf Tiny model); else None,
    and each such softmax LOADs its table in the inference program."""
    tables = {pack_sm_exp_table(softmax_exp_table(op.layer.softmax_params), cols).tobytes()
              for op in ops if op.kind == "softmax"
              and op.layer.attrs.get("variant", "project") == "tflite"}
    if len(tables) != 1:
        return None
    return np.frombuffer(tables.pop(), np.uint8).reshape(-1, cols)


def _softmax_mode_regs(e, ctx, L, Cin):
    """SM_MODE and its parameters: variant "project" SM_MULT / SM_SHIFT; "tflite" the LOAD of
    its exp table (golden.tflite.softmax_exp_table of the layer's SoftmaxTfliteParams), unless
    the setup program loads it (:func:`resident_exp_table`)."""
    p_ = L.softmax_params
    variant = L.attrs.get("variant", "project")
    if variant == "project":
        return {Reg.SM_MODE: SOFTMAX_MODES.index(variant), Reg.SM_MULT: p_.multiplier,
                Reg.SM_SHIFT: p_.right_shift}
    if Cin > SOFTMAX_TFLITE_MAX_LEN:
        raise CompileError(f"layer {L.index} {L.name!r}: softmax variant 'tflite' over {Cin} "
                           f"values exceeds {SOFTMAX_TFLITE_MAX_LEN} (TFLite's sum would "
                           "overflow its output shift)")
    if not ctx.sm_exp_resident:          # several different tables: each its own LOAD
        e.load(Mem.SM_EXP, 0, pack_sm_exp_table(softmax_exp_table(p_), ctx.cfg.cols), 1)
    return {Reg.SM_MODE: SOFTMAX_MODES.index(variant)}


def _lower_softmax(e, ctx, k, op):
    L, cfg = op.layer, ctx.cfg
    src, dst = ctx.layouts[op.src], ctx.layouts[op.dst]
    H, W, Cin = ctx.shapes[op.src]
    if Cin > cfg.softmax_max_len:
        raise CompileError(f"layer {L.index} {L.name!r}: softmax over {Cin} values exceeds "
                           f"softmax_max_len={cfg.softmax_max_len}")
    regs = {**tensor_regs("IN", src), Reg.IN_H: H, Reg.IN_W: W, Reg.CIN: Cin,
            **tensor_regs("OUT", dst), Reg.BATCH: ctx.batch, Reg.SM_CAUSAL: 0,
            **_softmax_mode_regs(e, ctx, L, Cin)}
    e.set_regs(regs)
    e.plans.append(LayerPlan(L.name, L.type, (ctx.batch * H * W, Cin, 0), e.op(Op_.SOFTMAX),
                             {r.name: int(v) for r, v in regs.items()}, 0))


def _lower_add(e, ctx, k, op):
    """ELTWISE (mode 0): TFLite ADD of the two inputs, the requantization and the fused
    activation's clamp on the CONV engine's requantizer."""
    L = op.layer
    a, b = (ctx.layouts[t] for t in op.srcs)
    dst = ctx.layouts[op.dst]
    H, W, _ = ctx.shapes[op.src]
    p = L.add_params
    regs = {**tensor_regs("IN", a), **tensor_regs("IN2", b), **tensor_regs("OUT", dst),
            Reg.IN_H: H, Reg.IN_W: W, Reg.BATCH: ctx.batch, Reg.IN_ZP: p.z1,
            Reg.IN2_ZP: p.z2, Reg.OUT_ZP: p.z_out, Reg.QMIN: L.attrs["qmin"],
            Reg.QMAX: L.attrs["qmax"], Reg.USE_LUT: 0, Reg.ELT_MODE: 0, Reg.ELT_M1: p.m1,
            Reg.ELT_S1: -p.shift1, Reg.ELT_M2: p.m2, Reg.ELT_S2: -p.shift2,
            Reg.ELT_MO: p.out_multiplier, Reg.ELT_SO: p.out_shift}
    e.set_regs(regs)
    e.plans.append(LayerPlan(L.name, L.type, (ctx.batch * H * W, 2, 0), e.op(Op_.ELTWISE),
                             {r.name: int(v) for r, v in regs.items()}, 0))


#: The lowering function of each operation kind (``_lower_<kind>(emitter, ctx, index, op)``).
LOWER = {"conv": _lower_gemm, "depthwise": _lower_gemm, "dense": _lower_gemm,
         "pool": _lower_pool, "softmax": _lower_softmax, "add": _lower_add}


def _slice_data(op, sl, shapes, cfg):
    """uint8 LOAD beats of a slice: its WGT words and its PARAM entries. WGT: block nb, word
    k = B[k, nb*C .. +C] (K-split: :func:`_ksplit_words`)."""
    L, C = op.layer, cfg.cols
    Cout = shapes[op.dst][2]
    lo, hi = sl.nb0 * C, (sl.nb0 + sl.n) * C
    cols = min(hi, Cout) - lo
    weights = L.tensors["weights"]
    w = np.zeros((weights.shape[0], sl.n * C), np.int8)
    w[:, :cols] = weights[:, lo:lo + cols]
    if op.mode == ConvMode.KSPLIT:
        wbeats = _ksplit_words(w, shapes[op.src][2], cfg.rows, C).view(np.uint8)
    else:
        K = sl.K
        wbeats = w.reshape(K, sl.n, C).transpose(1, 0, 2).reshape(sl.n * K, C).view(np.uint8)
    assert len(wbeats) == sl.K * sl.n
    bias = np.zeros(sl.n * C, np.int32)
    m0 = np.zeros(sl.n * C, np.int32)
    sh = np.zeros(sl.n * C, np.int8)
    bias[:cols] = L.gemm_bias[lo:lo + cols]
    m0[:cols] = L.tensors["m0"][lo:lo + cols]
    sh[:cols] = L.tensors["shift"][lo:lo + cols]
    return wbeats, pack_param_entries(bias, m0, sh, C)


def _ksplit_words(w, cin, R, C):
    """WGT words of K-split column blocks (R == C): ``w`` is (K, n * C), K = taps * cin in
    (kh, kw, cin) order. Beat t of block nb reads input word t (tap t // G, channels
    (t % G) * C ..., G = ceil(cin / C)) and row i multiplies its lanes with output channel
    nb * C + i: word (nb * T + t) * R + i holds B[those channels, nb * C + i], zero for
    channels past cin."""
    G = -(-cin // C)
    taps = w.shape[0] // cin
    n = w.shape[1] // C
    padded = np.zeros((taps, G * C, n, R), np.int8)
    padded[:, :cin] = w.reshape(taps, cin, n, R)
    # (taps, G, lane, nb, row) -> (nb, taps, G, row, lane)
    words = padded.reshape(taps, G, C, n, R).transpose(3, 0, 1, 4, 2)
    return words.reshape(n * taps * G * R, C)
