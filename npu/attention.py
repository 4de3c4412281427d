"""Scaled dot-product attention on ``npu_top``: a program of existing instructions.

Nothing here is a new datapath. One head (``golden.attention.attention``, bit for bit) is::

    LOAD ACT   Q (Sq rows = Sq "images" of 1 x 1 x d)           region A
    LOAD WGT   K^T (the B matrix of Q K^T: block nb, word k = K[nb*C:(nb+1)*C, k])
    CONV       dense, K = d, N = Sk: scores = requant(Q K^T, M_s, shift_s, 0)   A -> B
               (the 1/sqrt(d) scale is folded into M_s; bias 0)
    SOFTMAX    over the Sk channels of each of the Sq rows (SM_CAUSAL for the causal mask)
               B -> A, int8 probabilities, scale 1/256, zero point -128
    LOAD WGT   V (block nb, word j = V[j, nb*C:(nb+1)*C])
    LOAD PARAM bias 128 * colsum(V) (the zero-point fold of the probabilities), M_o, shift_o
    CONV       dense, K = Sk, N = dv: out = requant(P V + 128 colsum(V), M_o, shift_o, z_o)
               A -> OUT + h * Sq * ceil(dv / C)

Multi-head (``golden.attention.multi_head_attention``): the heads run one after another in
the same program on column slices of Q, K, V; their outputs sit side by side in the OUT
region and one STORE returns them all; :meth:`AttentionProgram.decode_output` concatenates
them along the columns in head order. The score PARAM entries (bias 0, M_s, shift_s) are the
same for every head and loaded once.

The program depends only on the shapes, the parameters and ``causal``, not on the data: it
can be loaded once and run for many (Q, K, V), streaming :meth:`AttentionProgram.stream` on
``s_axis`` each time. It ends with SM_CAUSAL = 0 so that a later compiled model's SOFTMAX is
the plain one.

ACT plan (words): A = Sq * max(ceil(d/C), ceil(Sk/C)), B = Sq * ceil(Sk/C), OUT = H * Sq *
ceil(dv/C). With the default configuration (8 x 8, act_depth 2048, wgt_depth 2048,
param_depth 64, imem_depth 256) S = d = 64 needs 512 + 512 + 512 ACT words, 1024 WGT words,
16 PARAM entries and 42 instructions (43 causal); it runs in 15 116 cycles (13 265
causal), of which the two CONVs take 8 374 (524 288 MACs on the 64-MAC array: 98 %).

Every refusal is a ``ValueError`` naming what is wrong: mismatched Q/K/V shapes, a size over
what the configuration holds, a multiplier that does not fit the requantizer.

``python -m npu.attention --report`` prints the error of the integer attention (golden, which
the RTL matches bit for bit in tests/test_sim_attention.py) against float64 attention.
"""

import argparse
import math
from dataclasses import dataclass

import numpy as np

from golden.attention import (AttentionParams, attention, attention_float, attention_params,
                              multi_head_attention, split_heads)
from golden.gemm import MAX_K
from golden.quant import MAX_SHIFT, MIN_SHIFT
from golden.softmax import SoftmaxParams
from hw.act_memory import banks
from hw.isa import (Mem, Op, Reg, encode, encode_load, encode_set, encode_store,
                    pack_param_entries)
from hw.npu import NpuConfig
from hw.sizes import SIZE_BITS
from npu.layout import words_per_pixel

__all__ = ["AttentionProgram", "compile_attention", "check_params", "random_case",
           "error_vs_float", "report_rows", "main"]


def _words(n, C):
    return -(-n // C)


def _u32(v):
    return int(v) & 0xFFFFFFFF


def check_params(params, head_dim=None):
    """``ValueError`` unless ``params`` is an :class:`AttentionParams` whose integers the
    hardware can take (requantizer: 1 <= M0 < 2**31, MIN_SHIFT <= shift <= MAX_SHIFT; softmax:
    M0 < 2**31, right shift 0..31; output zero point int8)."""
    if not isinstance(params, AttentionParams):
        raise ValueError(f"params must be AttentionParams (golden.attention.attention_params), "
                         f"got {params!r}")
    for what, m0, sh in (("score", params.score_multiplier, params.score_shift),
                         ("output", params.out_multiplier, params.out_shift)):
        if (isinstance(m0, bool) or not isinstance(m0, (int, np.integer))
                or not 1 <= m0 < (1 << 31)):
            raise ValueError(f"{what} multiplier M0={m0!r} does not fit the requantizer "
                             f"(needs 1 <= M0 < 2**31)")
        if isinstance(sh, bool) or not isinstance(sh, (int, np.integer)) or not (
                MIN_SHIFT <= sh <= MAX_SHIFT):
            raise ValueError(f"{what} multiplier shift={sh!r} does not fit the requantizer "
                             f"(needs {MIN_SHIFT} <= shift <= {MAX_SHIFT}, i.e. a real "
                             f"multiplier in [2**-32, 2**{MAX_SHIFT}))")
    sm = params.softmax
    if not isinstance(sm, SoftmaxParams) or not (0 < sm.multiplier < (1 << 31)) or not (
            0 <= sm.right_shift <= 31):
        raise ValueError(f"softmax multiplier {sm!r} does not fit the softmax unit "
                         f"(needs 0 < M0 < 2**31, right shift 0..31)")
    zp = params.out_zero_point
    if isinstance(zp, bool) or not isinstance(zp, (int, np.integer)) or not -128 <= zp <= 127:
        raise ValueError(f"out_zero_point must be an int8, got {zp!r}")
    if head_dim is not None and params.head_dim != head_dim:
        raise ValueError(f"params.head_dim is {params.head_dim}, the heads have d = {head_dim}")
    return params


@dataclass
class AttentionProgram:
    config: NpuConfig
    seq_len: int            # Sq
    kv_len: int             # Sk
    head_dim: int           # d
    v_dim: int              # dv (per head)
    num_heads: int
    causal: bool
    params: AttentionParams
    instructions: list
    out_addr: int
    out_words: int          # words of the final STORE (all heads)
    out_slot: int           # pixels (output rows) per head in it, Sq rounded up to the banks
    act_words: int          # ACT words the plan uses
    wgt_words: int
    param_entries: int
    conv_pcs: list          # per head: (scores CONV, SOFTMAX, output CONV) instruction indices

    @property
    def C(self):
        return self.config.cols

    def _beats(self, mat, width):
        """int8 rows -> uint8 beats, each row a pixel of ``words_per_pixel(width)`` words."""
        C = self.C
        rows = mat.shape[0]
        pad = np.zeros((rows, words_per_pixel(width, C) * C), np.int8)
        pad[:, :mat.shape[1]] = mat
        return pad.reshape(-1, C).view(np.uint8)

    def _blocks(self, b):
        """The GEMM B matrix (K x N int8) as WGT blocks: block nb, word k = B[k, nb*C:+C]."""
        C = self.C
        K, N = b.shape
        nb = _words(N, C)
        pad = np.zeros((K, nb * C), np.int8)
        pad[:, :N] = b
        return pad.reshape(K, nb, C).transpose(1, 0, 2).reshape(nb * K, C).view(np.uint8)

    def _param_beats(self, bias, m0, shift, n):
        C = self.C
        nb = _words(n, C)
        b = np.zeros(nb * C, np.int32)
        b[:n] = bias
        m = np.zeros(nb * C, np.int32)
        m[:n] = m0
        s = np.zeros(nb * C, np.int8)
        s[:n] = shift
        return pack_param_entries(b, m, s, C)

    def check_inputs(self, q, k, v):
        """``ValueError`` naming the problem unless Q, K, V are int8 of this program's shapes."""
        H, d = self.num_heads, self.head_dim
        arrs = []
        for name, x in (("Q", q), ("K", k), ("V", v)):
            x = np.asarray(x)
            if x.dtype != np.int8:
                raise ValueError(f"{name} must be int8, got {x.dtype}")
            if x.ndim != 2:
                raise ValueError(f"{name} must be 2-D (sequence x features), got shape {x.shape}")
            arrs.append(x)
        q, k, v = arrs
        want = {"Q": (self.seq_len, H * d), "K": (self.kv_len, H * d),
                "V": (self.kv_len, H * self.v_dim)}
        for name, x in (("Q", q), ("K", k), ("V", v)):
            if x.shape != want[name]:
                raise ValueError(f"mismatched Q/K/V shapes: {name} is {x.shape}, this program "
                                 f"needs {want[name]} (Q {want['Q']}, K {want['K']}, "
                                 f"V {want['V']}; {H} head(s) of d={d}, dv={self.v_dim})")
        return q, k, v

    def stream(self, q, k, v):
        """uint8 beats (n x C) for ``s_axis``, in the order of the program's LOADs."""
        q, k, v = self.check_inputs(q, k, v)
        H = self.num_heads
        p = self.params
        chunks = []
        qs, ks, vs = (split_heads(x, H) for x in (q, k, v))
        for h in range(H):
            if h == 0:
                n = self.kv_len
                chunks.append(self._param_beats(np.zeros(n, np.int32),
                                                np.full(n, p.score_multiplier, np.int32),
                                                np.full(n, p.score_shift, np.int8), n))
            chunks.append(self._beats(qs[h], self.head_dim))
            chunks.append(self._blocks(np.ascontiguousarray(ks[h].T)))
            chunks.append(self._blocks(vs[h]))
            n = self.v_dim
            colsum = vs[h].astype(np.int64).sum(axis=0)
            chunks.append(self._param_beats((128 * colsum).astype(np.int32),
                                            np.full(n, p.out_multiplier, np.int32),
                                            np.full(n, p.out_shift, np.int8), n))
        return np.concatenate(chunks, axis=0)

    def decode_output(self, beats):
        """uint8 beats of the STORE -> int8 Sq x (H * dv), heads concatenated by column."""
        C = self.C
        w = words_per_pixel(self.v_dim, C) * C
        x = np.asarray(beats, np.uint8).reshape(self.num_heads, self.out_slot, w)
        x = x[:, :self.seq_len, :self.v_dim].view(np.int8)
        return np.ascontiguousarray(np.concatenate(list(x), axis=1))

    def golden(self, q, k, v):
        q, k, v = self.check_inputs(q, k, v)
        if self.num_heads == 1:
            return attention(q, k, v, self.params, self.causal)
        return multi_head_attention(q, k, v, self.params, self.num_heads, self.causal)


def _size(name, v, lo=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def compile_attention(seq_len, head_dim, params, kv_len=None, v_dim=None, num_heads=1,
                      causal=False, config=None):
    """The npu_top program of (multi-head) attention for Q: ``seq_len x (H*head_dim)``,
    K: ``kv_len x (H*head_dim)``, V: ``kv_len x (H*v_dim)`` (``kv_len`` and ``v_dim`` default
    to ``seq_len`` and ``head_dim``). ``ValueError`` names what does not fit."""
    cfg = config if isinstance(config, NpuConfig) else NpuConfig(**(config or {}))
    C = cfg.cols
    Sq = _size("seq_len", seq_len)
    d = _size("head_dim", head_dim)
    Sk = Sq if kv_len is None else _size("kv_len", kv_len)
    dv = d if v_dim is None else _size("v_dim", v_dim)
    H = _size("num_heads", num_heads)
    causal = bool(causal)
    check_params(params, d)
    if causal and Sq != Sk:
        raise ValueError(f"causal mask needs Sq == Sk, got seq_len {Sq} and kv_len {Sk}")
    for name, v in (("seq_len", Sq), ("kv_len", Sk), ("head_dim", d), ("v_dim", dv)):
        if v >= 1 << SIZE_BITS:
            raise ValueError(f"{name}={v} exceeds the engines' size limit {(1 << SIZE_BITS) - 1}")
    for name, v in (("head_dim (K of Q K^T)", d), ("kv_len (K of P V)", Sk)):
        if v > MAX_K:
            raise ValueError(f"{name}={v} exceeds MAX_K={MAX_K}")
    if Sk > cfg.softmax_max_len:
        raise ValueError(f"kv_len={Sk}: a softmax row of {Sk} scores exceeds "
                         f"softmax_max_len={cfg.softmax_max_len}")
    # ACT: Q and later the probabilities (region A), the scores (B), the outputs of every
    # head (OUT); each tensor is Sq one-pixel images (pixel pitches dw, sw, vw words, powers of
    # two, see npu.layout), and each region starts on a whole group of ACT banks.
    nbanks = banks(cfg.rows)
    dw, sw, vw = (words_per_pixel(n, C) for n in (d, Sk, dv))
    nb_s, nb_v = _words(Sk, C), _words(dv, C)        # column blocks of the two CONVs
    unit = nbanks * max(dw, sw, vw)
    slot = -(-Sq // nbanks) * nbanks                  # output pixels per head, whole groups

    def span(words):
        return -(-words // unit) * unit

    a_words = span(Sq * max(dw, sw))
    b_words = span(Sq * sw)
    out_words = H * slot * vw
    A, B, OUT = 0, a_words, a_words + b_words
    act = OUT + span(out_words)
    if act > cfg.act_depth:
        raise ValueError(f"S={Sq}, Sk={Sk}, d={d}, dv={dv}, {H} head(s): attention needs {act} "
                         f"ACT words (Q/probabilities {a_words}, scores {b_words}, outputs "
                         f"{out_words}), the hardware has act_depth={cfg.act_depth}")
    w_k, w_v = 0, nb_s * d
    wgt = w_v + nb_v * Sk
    if wgt > cfg.wgt_depth:
        raise ValueError(f"Sk={Sk}, d={d}, dv={dv}: K^T and V need {wgt} WGT words, the "
                         f"hardware has wgt_depth={cfg.wgt_depth}")
    p_s, p_o = 0, nb_s
    prm = nb_s + nb_v
    if prm > cfg.param_depth:
        raise ValueError(f"Sk={Sk}, dv={dv}: {prm} PARAM entries needed, the hardware has "
                         f"param_depth={cfg.param_depth}")

    prog = []
    known = {}

    def set_reg(reg, value):
        value = _u32(value)
        if known.get(reg) != value:
            prog.append(encode_set(reg, value))
            known[reg] = value

    dense = {Reg.IN_H: 1, Reg.IN_W: 1, Reg.KH: 1, Reg.KW: 1, Reg.STRIDE_Y: 1,
             Reg.STRIDE_X: 1, Reg.PAD_TOP: 0, Reg.PAD_LEFT: 0, Reg.OUT_H: 1, Reg.OUT_W: 1,
             Reg.BATCH: Sq, Reg.QMIN: -128, Reg.QMAX: 127, Reg.USE_LUT: 0, Reg.CONV_MODE: 0,
             Reg.ROUNDING: 0}

    def pixels(prefix, addr, cw):
        """A tensor of Sq one-pixel images: address and the three pitches."""
        return {getattr(Reg, f"{prefix}_ADDR"): addr, getattr(Reg, f"{prefix}_CW"): cw,
                getattr(Reg, f"{prefix}_ROW"): cw, getattr(Reg, f"{prefix}_IMG"): cw}

    def shift(cw):
        return cw.bit_length() - 1

    pcs = []
    for h in range(H):
        if h == 0:
            prog.append(encode_load(Mem.PARAM, p_s, nb_s))
        prog.append(encode_load(Mem.ACT, A, Sq * dw, shift=shift(dw)))
        prog.append(encode_load(Mem.WGT, w_k, nb_s * d))
        prog.append(encode_load(Mem.WGT, w_v, nb_v * Sk))
        prog.append(encode_load(Mem.PARAM, p_o, nb_v))
        # scores = requant(Q K^T): A -> B
        for reg, value in {**dense, **pixels("IN", A, dw), Reg.CIN: d, Reg.IN_ZP: 0,
                           **pixels("OUT", B, sw), Reg.OUT_NB: nb_s, Reg.W_ADDR: w_k,
                           Reg.P_ADDR: p_s, Reg.OUT_ZP: 0}.items():
            set_reg(reg, value)
        pc_s = len(prog)
        prog.append(encode(Op.CONV))
        # probabilities: B -> A
        for reg, value in {**pixels("IN", B, sw), Reg.IN_H: 1, Reg.IN_W: 1, Reg.CIN: Sk,
                           **pixels("OUT", A, sw), Reg.BATCH: Sq,
                           Reg.SM_MULT: params.softmax.multiplier,
                           Reg.SM_SHIFT: params.softmax.right_shift,
                           Reg.SM_CAUSAL: int(causal), Reg.SM_MODE: 0}.items():
            set_reg(reg, value)
        pc_p = len(prog)
        prog.append(encode(Op.SOFTMAX))
        # out = requant(P V + 128 colsum(V)): A -> OUT slot of head h
        for reg, value in {**dense, **pixels("IN", A, sw), Reg.CIN: Sk, Reg.IN_ZP: -128,
                           **pixels("OUT", OUT + h * slot * vw, vw), Reg.OUT_NB: nb_v,
                           Reg.W_ADDR: w_v, Reg.P_ADDR: p_o,
                           Reg.OUT_ZP: params.out_zero_point}.items():
            set_reg(reg, value)
        pc_o = len(prog)
        prog.append(encode(Op.CONV))
        pcs.append((pc_s, pc_p, pc_o))
    set_reg(Reg.SM_CAUSAL, 0)
    prog.append(encode_store(OUT, out_words, shift=shift(vw)))
    prog.append(encode(Op.DONE))
    if len(prog) > cfg.imem_depth:
        raise ValueError(f"{H} heads: the program has {len(prog)} instructions, the hardware "
                         f"has imem_depth={cfg.imem_depth}; run fewer heads per program")
    return AttentionProgram(cfg, Sq, Sk, d, dv, H, causal, params, prog, OUT, out_words, slot,
                            act, wgt, prm, pcs)


# ---- Random cases and the error against float attention ------------------------------------

def random_case(rng, seq_len, head_dim, num_heads=1, causal=False, kv_len=None, v_dim=None):
    """Seeded test case: int8 Q, K, V (roughly Gaussian, clipped) and calibrated parameters
    (score and output scales from the float ranges, as post-training quantization would).
    Returns ``(q, k, v, params, scales)`` with ``scales = (s_q, s_k, s_v, s_s, s_o)``."""
    Sk = seq_len if kv_len is None else kv_len
    dv = head_dim if v_dim is None else v_dim
    H = num_heads
    std = float(rng.uniform(15, 60))

    def mat(r, c):
        return np.clip(np.rint(rng.normal(0, std, (r, c))), -128, 127).astype(np.int8)

    q, k, v = mat(seq_len, H * head_dim), mat(Sk, H * head_dim), mat(Sk, H * dv)
    sq, sk, sv = (float(rng.uniform(0.5, 2.0)) / 64 for _ in range(3))
    # score scale: the largest |score| over the heads maps to ~127
    big = sq * sk / math.sqrt(head_dim)        # at least one product LSB (all-zero rows)
    for qh, kh in zip(split_heads(q, H), split_heads(k, H)):
        s = (qh.astype(np.float64) @ kh.T.astype(np.float64)) * sq * sk / math.sqrt(head_dim)
        big = max(big, float(np.abs(s).max()))
    ss = big / 127
    zp = int(rng.integers(-10, 11))
    so = max(float(np.abs(v.astype(np.int64)).max()) * sv, 1e-6) / (127 - abs(zp))   # no clipping
    params = attention_params(sq, sk, sv, ss, so, head_dim, out_zero_point=zp)
    return q, k, v, params, (sq, sk, sv, ss, so)


def error_vs_float(q, k, v, params, scales, num_heads=1, causal=False, out=None):
    """``(cosine similarity, max abs error, max abs error in output LSBs)`` of the int8
    attention (``out``, default golden) dequantized, against float64 attention."""
    sq, sk, sv, ss, so = scales
    if out is None:
        out = (attention(q, k, v, params, causal) if num_heads == 1 else
               multi_head_attention(q, k, v, params, num_heads, causal))
    ref = np.concatenate([attention_float(qh, kh, vh, sq, sk, sv, causal) for qh, kh, vh in
                          zip(*(split_heads(x, num_heads) for x in (q, k, v)))], axis=1)
    got = (out.astype(np.float64) - params.out_zero_point) * so
    a, b = got.reshape(-1), ref.reshape(-1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = float(a @ b / (na * nb)) if na > 0 and nb > 0 else float(na == nb)
    err = float(np.abs(got - ref).max())
    return cos, err, err / so


#: (S, d, heads, causal) of the report; every shape runs ``count`` seeded cases.
REPORT_SHAPES = ((1, 1, 1, False), (1, 64, 1, False), (8, 8, 1, False), (8, 8, 1, True),
                 (16, 32, 1, False), (16, 32, 1, True), (32, 16, 2, False), (32, 16, 2, True),
                 (64, 64, 1, False), (64, 64, 1, True))


def report_rows(count=20, seed=1, shapes=REPORT_SHAPES):
    rng = np.random.default_rng(seed)
    rows = []
    for S, d, H, causal in shapes:
        cos, err, lsb = [], [], []
        for _ in range(count):
            q, k, v, p, sc = random_case(rng, S, d, H, causal)
            c, e, l = error_vs_float(q, k, v, p, sc, H, causal)
            cos.append(c)
            err.append(e)
            lsb.append(l)
        rows.append((S, d, H, causal, count, min(cos), float(np.mean(cos)), max(err),
                     max(lsb), float(np.mean(lsb))))
    return rows


def print_report(rows, seed):
    print(f"int8 attention (golden.attention, == npu_top RTL bit for bit) vs float64 attention "
          f"on the dequantized Q, K, V; seed {seed}")
    print("error = |dequantized int8 output - float output|; 'LSB' = that in output scale "
          "units")
    print(f"{'S':>3} {'d':>3} {'H':>2} {'mask':>6} {'cases':>5} {'min cos':>9} {'mean cos':>9} "
          f"{'max err':>9} {'max LSB':>8} {'mean max LSB':>12}")
    for S, d, H, causal, n, cmin, cmean, e, l, lm in rows:
        print(f"{S:>3} {d:>3} {H:>2} {'causal' if causal else 'none':>6} {n:>5} {cmin:>9.6f} "
              f"{cmean:>9.6f} {e:>9.5f} {l:>8.3f} {lm:>12.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description="Attention on npu_top: program size and the "
                                 "error of the integer attention against float64.")
    ap.add_argument("--report", action="store_true",
                    help="print the attention-vs-float table over seeded random cases")
    ap.add_argument("--count", type=int, default=20, help="cases per shape")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.report:
        print_report(report_rows(args.count, args.seed), args.seed)
    else:
        p = attention_params(1 / 64, 1 / 64, 1 / 64, 1 / 16, 1 / 64, 64)
        prog = compile_attention(64, 64, p)
        print(f"S = d = 64, one head: {len(prog.instructions)} instructions, "
              f"{prog.act_words} ACT words, {prog.wgt_words} WGT words, "
              f"{prog.param_entries} PARAM entries, {prog.config}")


if __name__ == "__main__":
    main()
