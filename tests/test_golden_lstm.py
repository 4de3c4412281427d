"""golden.lstm against independent formulations.

* Gate functions: the tables against ``math`` rounding, the interpolation against the exact
  rational (and float where exact) "nearest integer, ties up" of the interpolated value, over all
  65,536 inputs; error bounds, symmetry.
* Requantizations (pre-activations, cell update, hidden state): against exact rationals
  (``fractions.Fraction``), ties included; a whole step against a scalar pure-Python cell.
* The float LSTM against onnxruntime's LSTM operator and against PyTorch's equations.
* The integer LSTM against the float LSTM with an elementwise error bound propagated from the
  quantization (input, weight and bias rounding, requantization rounding, table errors).
* Edge cases (T = 1, hidden 1, saturation) and ``ValueError`` for bad shapes and parameters.
"""

import math
from fractions import Fraction

import numpy as np
import pytest

from golden import lstm as L
from golden.quant import INT32_MAX, INT32_MIN, quantize_multiplier

SEED = 20261219
HALF = Fraction(1, 2)


# ----------------------------------------------------------------------------- references

def ref_srdhm(a, b):
    """Nearest integer to a*b/2**31; ties away from zero if a*b >= 0, toward zero otherwise."""
    if a == b == INT32_MIN:
        return INT32_MAX
    v = Fraction(a * b, 1 << 31)
    return math.floor(v + HALF) if v >= 0 else -math.ceil(-v - HALF)


def ref_rdbpot(x, e):
    """Nearest integer to x / 2**e, ties away from zero."""
    v = Fraction(x, 1 << e)
    return math.floor(v + HALF) if v >= 0 else -math.floor(-v + HALF)


def ref_mbqm(x, m0, shift):
    xs = min(max(x * (1 << max(shift, 0)), INT32_MIN), INT32_MAX)
    return ref_rdbpot(ref_srdhm(xs, m0), max(-shift, 0))


def clamp(v, lo, hi):
    return min(max(v, lo), hi)


def sat16(v):
    return clamp(v, -32768, 32767)


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def ref_table(fn):
    return [min(math.floor(fn(k / 64) * 32768 + 0.5), 32767) for k in range(512)]


REF_SIGMOID = ref_table(sigmoid)
REF_TANH = ref_table(math.tanh)


def ref_gate(table, v, frac_bits, odd):
    """The interpolated table value as an exact rational, rounded to nearest, ties up."""
    u = min(Fraction(abs(v), 1 << (frac_bits - 6)), 511)     # position in table steps
    k = math.floor(u)
    lo, hi = table[k], table[min(k + 1, 511)]
    y = math.floor(lo + (hi - lo) * (u - k) + HALF)
    if v >= 0:
        return y
    return -y if odd else 32768 - y


def gate_float_exact(table, v, frac_bits):
    """Vectorized form of ref_gate's magnitude in float64 (exact: dyadic values below 2**25)."""
    t = np.asarray(table, np.float64)
    u = np.minimum(np.abs(v.astype(np.float64)) / 2.0 ** (frac_bits - 6), 511.0)
    k = np.floor(u).astype(np.int64)
    lo, hi = t[k], t[np.minimum(k + 1, 511)]
    return np.floor(lo + (hi - lo) * (u - k) + 0.5).astype(np.int64)


def ref_cell(x, h, c, p, w, r, bias):
    """One step for one sequence in Python integers, from the raw int8 weights and int32 bias
    (zero points applied as ``x - z_x``, not folded)."""
    hid, zx, zh, e = p.hidden_size, p.input_zero_point, p.hidden_zero_point, p.cell_exponent
    pre = []
    for row in range(4 * hid):
        g = row // hid
        ax = sum(int(w[row, k]) * (int(x[k]) - zx) for k in range(len(x))) + int(bias[row])
        ah = sum(int(r[row, k]) * (int(h[k]) - zh) for k in range(hid))
        px = sat16(ref_mbqm(ax, int(p.input_multiplier[g]), int(p.input_shift[g])))
        ph = sat16(ref_mbqm(ah, int(p.recurrent_multiplier[g]), int(p.recurrent_shift[g])))
        pre.append(sat16(px + ph))
    gate = {name: pre[k * hid:(k + 1) * hid] for k, name in enumerate(L.GATES)}
    h_new, c_new = [], []
    for j in range(hid):
        i = ref_gate(REF_SIGMOID, gate["i"][j], 12, False)
        o = ref_gate(REF_SIGMOID, gate["o"][j], 12, False)
        f = ref_gate(REF_SIGMOID, gate["f"][j], 12, False)
        g = ref_gate(REF_TANH, gate["c"][j], 12, True)
        cj = sat16(ref_rdbpot(f * int(c[j]), 15) + ref_rdbpot(i * g, 30 + e))
        if p.cell_clip:
            cj = clamp(cj, -p.cell_clip, p.cell_clip)
        t = ref_gate(REF_TANH, cj, -e, True)
        h_new.append(clamp(ref_mbqm(o * t, p.hidden_multiplier, p.hidden_shift) + zh, -128, 127))
        c_new.append(cj)
    return h_new, c_new


# ----------------------------------------------------------------------------- gate functions

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)


def test_tables_are_rounded_samples():
    assert L.SIGMOID_TABLE.dtype == np.int16 and L.SIGMOID_TABLE.shape == (512,)
    assert L.SIGMOID_TABLE.tolist() == REF_SIGMOID
    assert L.TANH_TABLE.tolist() == REF_TANH
    assert L.SIGMOID_TABLE[0] == 16384 and L.TANH_TABLE[0] == 0
    assert np.all(np.diff(L.TANH_TABLE) >= 0) and np.all(np.diff(L.SIGMOID_TABLE) >= 0)


def test_gate_functions_match_exact_interpolation_on_all_inputs():
    v = ALL_INT16.astype(np.int64)
    want_sig = gate_float_exact(REF_SIGMOID, v, 12)
    assert np.array_equal(L.sigmoid_q15(ALL_INT16), np.where(v < 0, 32768 - want_sig, want_sig))
    for fb in range(9, 16):
        want = gate_float_exact(REF_TANH, v, fb)
        assert np.array_equal(L.tanh_q15(ALL_INT16, fb), np.where(v < 0, -want, want)), fb


def test_gate_functions_match_rationals_including_ties():
    rng = np.random.default_rng(SEED)
    for fb in (9, 12, 15):
        s = fb - 6
        # r = 2**(s-1) is an exact tie whenever the two table entries differ by an odd number
        ties = [(k << s) + (1 << (s - 1)) for k in range(0, 511, 7)
                if (k << s) + (1 << (s - 1)) < 32768]
        sample = ties + [-t for t in ties] + rng.integers(-32768, 32768, 300).tolist() + [
            -32768, -32767, -1, 0, 1, 32767, min((511 << s) - 1, 32767), min(511 << s, 32767)]
        v = np.array(sample, np.int64).astype(np.int16)
        got = L.tanh_q15(v, fb).tolist()
        assert got == [ref_gate(REF_TANH, int(a), fb, True) for a in v], fb
        if fb == 12:
            got = L.sigmoid_q15(v).tolist()
            assert got == [ref_gate(REF_SIGMOID, int(a), 12, False) for a in v]
    # one tie by hand: halfway between two entries that differ by an odd number rounds up
    odd = next(k for k in range(511) if (REF_TANH[k + 1] - REF_TANH[k]) % 2)
    x = np.array([(odd << 6) + 32], np.int16)
    assert L.tanh_q15(x)[0] == REF_TANH[odd] + (REF_TANH[odd + 1] - REF_TANH[odd] + 1) // 2


def test_gate_function_errors_and_symmetry():
    x = ALL_INT16.astype(np.float64) / 4096
    sig = L.sigmoid_q15(ALL_INT16).astype(np.float64)
    tanh = L.tanh_q15(ALL_INT16).astype(np.float64)
    want_sig = np.array([sigmoid(v) for v in x[::97]]) * 32768
    assert np.abs(sig[::97] - want_sig).max() <= 1.0
    assert np.abs(tanh - np.tanh(x) * 32768).max() <= 1.6
    for name, mx, mean in L.gate_function_errors():
        limit = 1.0 if name.startswith("sigmoid") else 1.6
        assert mx <= limit and mean <= 1.0, (name, mx, mean)
    pos = ALL_INT16[1:]                                  # -32768 has no positive twin
    assert np.array_equal(L.sigmoid_q15(pos).astype(np.int64) + L.sigmoid_q15(-pos),
                          np.full(pos.shape, 32768))
    assert np.array_equal(L.tanh_q15(-pos), -L.tanh_q15(pos))
    assert L.sigmoid_q15(np.int16([0]))[0] == 16384 and L.tanh_q15(np.int16([0]))[0] == 0
    assert np.all(np.diff(sig) >= 0) and np.all(np.diff(tanh) >= 0)


# ----------------------------------------------------------------------------- requantizations

def make_params(rng, feat, hid, m_in=None, m_rec=None, hidden_scale=None, cell_range=None,
                cell_clip=None, zx=None, zh=None):
    """Random int8 weights / int32 bias and scales chosen so that each gate multiplier
    ``s_x s_W 2**12`` is ``m_in[g]`` (random in [2**-9, 1] if not given)."""
    w = rng.integers(-128, 128, (4 * hid, feat)).astype(np.int8)
    r = rng.integers(-128, 128, (4 * hid, hid)).astype(np.int8)
    bias = rng.integers(-(1 << 16), 1 << 16, 4 * hid).astype(np.int32)
    s_x = float(rng.uniform(0.005, 0.05))
    s_h = hidden_scale if hidden_scale is not None else float(rng.uniform(1 / 200, 1 / 40))
    m_in = m_in if m_in is not None else 2.0 ** rng.uniform(-9, 0, 4)
    m_rec = m_rec if m_rec is not None else 2.0 ** rng.uniform(-9, 0, 4)
    s_w = [m / (4096 * s_x) for m in m_in]
    s_r = [m / (4096 * s_h) for m in m_rec]
    zx = int(rng.integers(-128, 128)) if zx is None else zx
    zh = int(rng.integers(-128, 128)) if zh is None else zh
    cell_range = cell_range if cell_range is not None else float(2.0 ** rng.integers(0, 7))
    p = L.lstm_params(w, r, bias, s_x, zx, s_w, s_r, s_h, zh, cell_range, cell_clip)
    return p, w, r, bias


def test_lstm_params_constants():
    rng = np.random.default_rng(SEED + 1)
    p, w, r, bias = make_params(rng, 5, 3, zx=-7, zh=11)
    for m0, shift in zip(p.input_multiplier, p.input_shift):
        assert 1 << 30 <= m0 < 1 << 31
    s_x, s_h = p.input_scale, p.hidden_scale
    want = -11 * r.astype(np.int64).sum(axis=1)
    assert p.recurrent_bias.tolist() == want.tolist()
    assert p.input_bias.tolist() == (bias + 7 * w.astype(np.int64).sum(axis=1)).tolist()
    real = Fraction(int(p.hidden_multiplier), 1 << 31) * Fraction(2) ** p.hidden_shift
    assert abs(real / Fraction(2.0 ** -30 / s_h) - 1) <= Fraction(1, 1 << 30)
    assert (p.hidden_multiplier, p.hidden_shift) == quantize_multiplier(2.0 ** -30 / s_h)
    assert p.cell_clip == 0
    clip = L.lstm_params(w, r, bias, s_x, 0, [1e-3] * 4, [1e-3] * 4, s_h, 0, 3.0, 2.5)
    assert clip.cell_exponent == -13 and clip.cell_clip == 2.5 * 2 ** 13
    big = L.lstm_params(w, r, bias, s_x, 0, [1e-3] * 4, [1e-3] * 4, s_h, 0, 64.0, 1000.0)
    assert big.cell_exponent == -9 and big.cell_clip == 32767


@pytest.mark.parametrize("cell_range, e", [(1e-9, -15), (0.3, -15), (1.0, -15), (1.5, -14),
                                           (2.0, -14), (2.0001, -13), (8.0, -12), (11, -11),
                                           (33.3, -9), (64.0, -9)])
def test_cell_exponent_is_the_power_of_two_above_the_range(cell_range, e):
    assert L.cell_exponent(cell_range) == e
    assert 2.0 ** (e + 15) >= cell_range and (e == -15 or 2.0 ** (e + 14) < cell_range)


def test_gate_preactivations_match_rationals_including_ties():
    rng = np.random.default_rng(SEED + 2)
    # M = 2**30: shift 0 halves (SRDHM ties on odd acc), shift -2 quarters (RDBPOT ties too)
    for m_in, m_rec in (([0.5, 0.125, 0.5, 0.125], [0.125, 0.5, 0.125, 0.5]),
                        (None, None), ([2.0, 100.0, 1.0, 0.01], [3.0, 0.002, 50.0, 1.0])):
        p, _, _, _ = make_params(rng, 3, 2, m_in=m_in, m_rec=m_rec)
        small = rng.integers(-64, 64, (6, 8))
        big = rng.integers(INT32_MIN, INT32_MAX, (6, 8), endpoint=True)
        mid = rng.integers(-(1 << 17), 1 << 17, (6, 8))
        acc_x = np.concatenate([small, mid, big, small * 4 + 2, -small]).astype(np.int32)
        acc_h = np.concatenate([small[::-1], big, mid, -small * 4 - 2, small]).astype(np.int32)
        acc_x[0, :] = [1, -1, 3, -3, 5, -5, INT32_MIN, INT32_MAX]
        acc_h[0, :] = [-1, 1, 3, -3, 4, -4, INT32_MAX, INT32_MIN]
        got = L.gate_preactivations(acc_x, acc_h, p)
        assert got.dtype == np.int16
        for n in range(acc_x.shape[0]):
            for col in range(8):
                g = col // 2
                px = sat16(ref_mbqm(int(acc_x[n, col]), int(p.input_multiplier[g]),
                                    int(p.input_shift[g])))
                ph = sat16(ref_mbqm(int(acc_h[n, col]), int(p.recurrent_multiplier[g]),
                                    int(p.recurrent_shift[g])))
                assert got[n, col] == sat16(px + ph), (n, col, m_in)
    # by hand, M = 2**30, shift 0 (x / 2, gemmlowp ties): 1 -> 1, -1 -> 0, 3 -> 2, -3 -> -1
    p, _, _, _ = make_params(rng, 1, 1, m_in=[0.5] * 4, m_rec=[0.5] * 4)
    acc = np.array([[1, -1, 3, -3]], np.int32)
    assert L.gate_preactivations(acc, np.zeros_like(acc), p).tolist() == [[1, 0, 2, -1]]


def test_cell_update_matches_rationals_including_ties():
    rng = np.random.default_rng(SEED + 3)
    for e in range(-15, -8):
        # f*c = odd * 2**14 (tie at >> 15); i*g = 3 * 2**(29 + e) (tie at >> 30 + e)
        a = (29 + e) // 2
        tie_f = [32767, 1, 3, 32767, 12345]
        tie_c = [16384, -16384, 16384, -16384, 16384]
        tie_i = [3 << a, 3 << a, 1 << a, 32767, 5]
        tie_g = [1 << (29 + e - a), -(1 << (29 + e - a)), -(3 << (29 + e - a)), -32767, 7]
        f = np.array(tie_f + rng.integers(0, 32768, 60).tolist(), np.int16)
        c = np.array(tie_c + rng.integers(-32768, 32768, 60).tolist(), np.int16)
        i = np.array(tie_i + rng.integers(0, 32768, 60).tolist(), np.int16)
        g = np.array(tie_g + rng.integers(-32767, 32768, 60).tolist(), np.int16)
        for clip in (0, 1000):
            got = L.cell_update(f, i, g, c, e, clip).tolist()
            want = []
            for fj, ij, gj, cj in zip(f.tolist(), i.tolist(), g.tolist(), c.tolist()):
                v = sat16(ref_rdbpot(fj * cj, 15) + ref_rdbpot(ij * gj, 30 + e))
                want.append(clamp(v, -clip, clip) if clip else v)
            assert got == want, (e, clip)
    # by hand at e = -15: 32767 * 16384 / 2**15 = 16383.5 -> 16384; 3 * 5 / 2**15 -> 0
    assert L.cell_update(np.int16([32767, 1]), np.int16([16384, 3]), np.int16([3, 5]),
                         np.int16([16384, -16384]), -15).tolist() == [16386, -1]


def test_hidden_output_matches_rationals_including_ties():
    rng = np.random.default_rng(SEED + 4)
    for s_h, zh in ((2.0 ** -7, 0), (2.0 ** -7, -5), (1 / 100, 17), (1 / 300, -128), (0.5, 3)):
        p, _, _, _ = make_params(rng, 1, 1, hidden_scale=s_h, zh=zh)
        # s_h = 2**-7: M = 2**30, shift -22, so o*t = 3 * 2**22 is a tie (1.5 -> 2), o*t = 3 an
        # SRDHM tie (1.5 -> 2, then 0)
        o = np.array([6144, 6144, 3, 3, 32767, 0] + rng.integers(0, 32768, 80).tolist(), np.int16)
        t = np.array([2048, -2048, 1, -1, -32767, 5] + rng.integers(-32767, 32768, 80).tolist(),
                     np.int16)
        got = L.hidden_output(o, t, p)
        assert got.dtype == np.int8
        want = [clamp(ref_mbqm(a * b, p.hidden_multiplier, p.hidden_shift) + zh, -128, 127)
                for a, b in zip(o.tolist(), t.tolist())]
        assert got.tolist() == want, s_h
    p, _, _, _ = make_params(rng, 1, 1, hidden_scale=2.0 ** -7, zh=0)
    assert L.hidden_output(np.int16([6144, 6144]), np.int16([2048, -2048]), p).tolist() == [2, -2]


@pytest.mark.parametrize("case", range(8))
def test_cell_matches_scalar_reference(case):
    rng = np.random.default_rng(SEED + 10 + case)
    feat, hid = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    p, w, r, bias = make_params(rng, feat, hid, cell_clip=(None, 0.7)[case % 2],
                                cell_range=float(2.0 ** (case % 7)))
    x = rng.integers(-128, 128, (3, feat)).astype(np.int8)
    h = rng.integers(-128, 128, (3, hid)).astype(np.int8)
    c = rng.integers(-32768, 32768, (3, hid)).astype(np.int16)
    x[0], h[0], c[0, 0] = 127, -128, -32768                 # extremes
    if hid > 1:
        c[1, 1] = 16384                                     # f*c ties for odd f
    for _ in range(3):
        h_new, c_new, mid = L.lstm_cell_int(x, h, c, p, intermediates=True)
        for n in range(x.shape[0]):
            want_h, want_c = ref_cell(x[n], h[n], c[n], p, w, r, bias)
            assert h_new[n].tolist() == want_h and c_new[n].tolist() == want_c, (case, n)
        assert set(mid) == {"acc_x", "acc_h", "pre", "gates", "tanh_c"}
        h, c = h_new, c_new


# ----------------------------------------------------------------------------- float LSTM

def random_float_lstm(rng, feat, hid, gain=1.0, forget_bias=0.0):
    k = gain / math.sqrt(hid)
    w = rng.uniform(-k, k, (4 * hid, feat))
    r = rng.uniform(-k, k, (4 * hid, hid))
    b = rng.uniform(-k, k, 8 * hid)
    b[2 * hid:3 * hid] += forget_bias
    return w, r, b


def test_float_lstm_matches_onnxruntime():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(SEED + 20)
    n, steps, feat, hid = 2, 5, 3, 4
    w, r, b = random_float_lstm(rng, feat, hid, gain=2.0)
    x = rng.standard_normal((n, steps, feat))
    h0, c0 = rng.uniform(-1, 1, (n, hid)), rng.uniform(-2, 2, (n, hid))
    inits = [numpy_helper.from_array(v.astype(np.float32), name) for name, v in
             (("W", w[None]), ("R", r[None]), ("B", b[None]), ("h0", h0[None]),
              ("c0", c0[None]))]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "c0"], ["Y", "Yh", "Yc"],
                            hidden_size=hid)
    graph = helper.make_graph(
        [node], "lstm", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [steps, n, feat])],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in ("Y", "Yh", "Yc")],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8                        # what any onnxruntime of the last years reads
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y, yh, yc = sess.run(None, {"X": x.transpose(1, 0, 2).astype(np.float32)})
    got_y, got_h, got_c = L.lstm_float(x, w[None], r[None], b[None], h0, c0)
    assert np.allclose(got_y, y[:, 0].transpose(1, 0, 2), atol=1e-5)
    assert np.allclose(got_h, yh[0], atol=1e-5) and np.allclose(got_c, yc[0], atol=1e-5)


def test_pytorch_mapping_follows_pytorch_equations():
    rng = np.random.default_rng(SEED + 21)
    feat, hid, steps = 3, 2, 4
    w_ih, w_hh = rng.standard_normal((4 * hid, feat)), rng.standard_normal((4 * hid, hid))
    b_ih, b_hh = rng.standard_normal(4 * hid), rng.standard_normal(4 * hid)
    x = rng.standard_normal((1, steps, feat))
    h, c = np.zeros(hid), np.zeros(hid)
    for t in range(steps):     # torch.nn.LSTM: chunks i, f, g, o
        z = w_ih @ x[0, t] + b_ih + w_hh @ h + b_hh
        i, f, g, o = (z[k * hid:(k + 1) * hid] for k in range(4))
        c = np.vectorize(sigmoid)(f) * c + np.vectorize(sigmoid)(i) * np.tanh(g)
        h = np.vectorize(sigmoid)(o) * np.tanh(c)
    w, r, b = L.onnx_from_pytorch(w_ih, w_hh, b_ih, b_hh)
    assert np.array_equal(w[hid:2 * hid], w_ih[3 * hid:]) and np.array_equal(
        w[3 * hid:], w_ih[2 * hid:3 * hid])
    _, got_h, got_c = L.lstm_float(x, w, r, b)
    assert np.allclose(got_h[0], h, atol=1e-12) and np.allclose(got_c[0], c, atol=1e-12)


def test_float_cell_clip():
    rng = np.random.default_rng(SEED + 22)
    w, r, b = random_float_lstm(rng, 2, 3, gain=3.0, forget_bias=5.0)
    x = rng.standard_normal((2, 20, 2)) * 3
    _, c_free = L._lstm_float_trace(x, w, r, b, None, None, None)
    _, c_clip = L._lstm_float_trace(x, w, r, b, None, None, 0.5)
    assert np.abs(c_free).max() > 0.5 and np.abs(c_clip).max() <= 0.5


# ----------------------------------------------------------------------------- int vs float

Q12, Q15 = 2.0 ** -12, 2.0 ** -15
SIGMOID_TABLE_ERR, TANH_TABLE_ERR = 1.0 * Q15, 1.6 * Q15


def _gate_weight_scales(m):
    return np.array([max(np.abs(blk).max() / 127, 0) or 1 / 127 for blk in np.split(m, 4)])


def error_bound(w, r, b, x, p):
    """Elementwise bound (N, T, H) on |dequantized lstm_int - float LSTM|, propagated step by
    step, plus the float LSTM's own h. Exact where the error is known (input, weight and bias
    rounding of the input product); first-order-free worst case elsewhere: sigmoid' <= 1/4,
    tanh' <= 1, each requantization <= 1 LSB (double rounding) with a multiplier within
    2**-30 relative, the table errors, 2**e for the two cell roundings, the hidden rounding and
    any clamp at the int8 range's edge. Returns (bound, h_float, ok) where ``ok`` says that no
    half of a pre-activation can saturate (which the bound does not cover)."""
    hid = p.hidden_size
    sw, sr = _gate_weight_scales(w), _gate_weight_scales(r)
    wd = p.input_weights * np.repeat(sw, hid)[:, None]
    rd = p.recurrent_weights * np.repeat(sr, hid)[:, None]
    bias_q = p.input_bias.astype(np.int64) + p.input_zero_point * p.input_weights.astype(
        np.int64).sum(axis=1)
    bd = bias_q * p.input_scale * np.repeat(sw, hid)
    xd = L.quantize_input(x, p).astype(np.float64)
    xd = p.input_scale * (xd - p.input_zero_point)
    e = p.cell_exponent
    cell_lsb, cell_top = 2.0 ** e, 2.0 ** (e + 15) - 2.0 ** e
    s_h = p.hidden_scale
    h_lo, h_hi = s_h * (-128 - p.hidden_zero_point), s_h * (127 - p.hidden_zero_point)
    hidden_round = s_h * (0.5 + 0.5 * 2.0 ** p.hidden_shift)   # RDBPOT + SRDHM's 2**-right
    n, steps, _ = x.shape
    bias_f = b[:4 * hid] + b[4 * hid:]
    h, c = np.zeros((n, hid)), np.zeros((n, hid))
    dh, dc = np.zeros((n, hid)), np.zeros((n, hid))
    bound, h_all, ok = np.empty((n, steps, hid)), np.empty((n, steps, hid)), True
    sig = np.vectorize(sigmoid)
    for t in range(steps):
        part_x = x[:, t] @ w.T + bias_f
        part_h = h @ r.T
        err_x = np.abs(xd[:, t] @ wd.T + bd - part_x)
        err_h = dh @ np.abs(rd).T + np.abs(h @ (rd - r).T)
        dpx = err_x + Q12 + 2.0 ** -30 * (np.abs(part_x) + err_x)
        dph = err_h + Q12 + 2.0 ** -30 * (np.abs(part_h) + err_h)
        ok &= bool(np.all(np.abs(part_x) + dpx < 8 - Q12)
                   and np.all(np.abs(part_h) + dph < 8 - Q12))
        z, dz = part_x + part_h, dpx + dph
        saturates = np.abs(z) + dz >= 8 - Q12
        zs, dzs = L._split_gates(z, hid), L._split_gates(dz, hid)
        sat = L._split_gates(saturates, hid)
        gate, dgate = {}, {}
        for k in ("i", "o", "f"):
            gate[k] = sig(zs[k])
            dgate[k] = dzs[k] / 4 + SIGMOID_TABLE_ERR + sat[k] * (1 - sigmoid(8 - Q12))
        gate["c"] = np.tanh(zs["c"])
        dgate["c"] = dzs["c"] + TANH_TABLE_ERR + sat["c"] * (1 - math.tanh(8 - Q12))
        c_new = gate["f"] * c + gate["i"] * gate["c"]
        dc = ((gate["f"] + dgate["f"]) * dc + np.abs(c) * dgate["f"]
              + (gate["i"] + dgate["i"]) * dgate["c"] + np.abs(gate["c"]) * dgate["i"] + cell_lsb)
        dc = dc + cell_lsb * (c_new > cell_top)               # the clamp at 2**(e+15) - 2**e
        c = c_new
        tc, dtc = np.tanh(c), dc + TANH_TABLE_ERR
        h = gate["o"] * tc
        dh = ((gate["o"] + dgate["o"]) * dtc + np.abs(tc) * dgate["o"] + hidden_round
              + 2.0 ** -30 * np.abs(h) + np.maximum(h - h_hi, 0) + np.maximum(h_lo - h, 0))
        bound[:, t], h_all[:, t] = dh, h
    return bound, h_all, ok


@pytest.mark.parametrize("case", range(12))
def test_integer_lstm_within_propagated_bound(case):
    rng = np.random.default_rng(SEED + 100 + case)
    feat, hid = int(rng.integers(1, 17)), int(rng.integers(1, 17))
    steps = int(rng.integers(1, 13))
    w, r, b = random_float_lstm(rng, feat, hid, gain=float(rng.uniform(0.5, 1.5)),
                                forget_bias=float(rng.uniform(0, 2)))
    x = rng.standard_normal((3, steps, feat))
    p = L.quantize_lstm(w, r, b, x)                       # calibrated on x: no range clipping
    y_int, h_last, c_last = L.lstm_int(L.quantize_input(x, p), p)
    got = L.dequantize_hidden(y_int, p)
    bound, want, ok = error_bound(w, r, b, x, p)
    assert ok, f"case {case}: a pre-activation half may saturate; the bound does not apply"
    y_float, _, _ = L.lstm_float(x, w, r, b)
    assert np.allclose(y_float, want, atol=1e-12)
    err = np.abs(got - want)
    assert np.all(err <= bound + 1e-12), (
        f"case {case}: worst error/bound {np.max(err / bound):.3f}, seed {SEED + 100 + case}")
    assert np.array_equal(h_last, y_int[:, -1]) and c_last.dtype == np.int16
    # the quantization's own scale: well inside a few hidden-state LSB on average
    assert err.mean() / p.hidden_scale < 1.0 and err.max() / p.hidden_scale < 8.0


def test_integer_lstm_statistics_against_float():
    """A sweep like the report's (error_report), smaller: mean error near the rounding's
    0.25 LSB, cosine similarity near 1."""
    rows = L.error_report(cases=40, seed=SEED)
    assert len(rows) == 40
    assert np.mean([row["mean_lsb"] for row in rows]) < 0.6
    assert max(row["max_lsb"] for row in rows) < 8.0
    assert min(row["cos"] for row in rows) > 0.999


# ----------------------------------------------------------------------------- edge cases

def test_t1_hidden1_input1():
    rng = np.random.default_rng(SEED + 200)
    w, r, b = random_float_lstm(rng, 1, 1)
    x = rng.standard_normal((4, 1, 1))
    p = L.quantize_lstm(w, r, b, x)
    assert (p.input_size, p.hidden_size) == (1, 1)
    y, h, c = L.lstm_int(L.quantize_input(x, p), p)
    assert y.shape == (4, 1, 1) and h.shape == (4, 1) and c.shape == (4, 1)
    bound, want, ok = error_bound(w, r, b, x, p)
    assert ok and np.all(np.abs(L.dequantize_hidden(y, p) - want) <= bound + 1e-12)


def test_sequence_is_repeated_cell_and_default_state():
    rng = np.random.default_rng(SEED + 201)
    p, _, _, _ = make_params(rng, 3, 2, zh=-9)
    x = rng.integers(-128, 128, (2, 4, 3)).astype(np.int8)
    y, h_last, c_last = L.lstm_int(x, p)
    h = np.full((2, 2), -9, np.int8)                 # default h0 is the zero point: real 0
    c = np.zeros((2, 2), np.int16)
    for t in range(4):
        h, c = L.lstm_cell_int(x[:, t], h, c, p)
        assert np.array_equal(y[:, t], h)
    assert np.array_equal(h_last, h) and np.array_equal(c_last, c)
    h0 = rng.integers(-128, 128, (2, 2)).astype(np.int8)
    c0 = rng.integers(-32768, 32768, (2, 2)).astype(np.int16)
    y0, _, _ = L.lstm_int(x[:, :1], p, h0, c0)
    assert np.array_equal(y0[:, 0], L.lstm_cell_int(x[:, 0], h0, c0, p)[0])


def test_saturating_inputs():
    """Pre-activations far beyond +-8 saturate at Q3.12's ends, the gates at the tables' ends,
    the cell at int16's ends, and h at int8's; nothing wraps."""
    hid, feat = 2, 4
    w = np.full((4 * hid, feat), 127, np.int8)
    w[3 * hid:] = -127                              # cell gate driven negative
    r = np.full((4 * hid, hid), 127, np.int8)
    r[3 * hid:] = -127
    p = L.lstm_params(w, r, None, 0.05, 0, [0.02] * 4, [0.02] * 4, 1 / 128, 0, 1.0)
    x = np.full((1, 40, feat), 127, np.int8)
    c0 = np.full((1, hid), 32767, np.int16)
    h, c, mid = L.lstm_cell_int(x[:, 0], np.full((1, hid), 127, np.int8), c0, p, True)
    assert np.all(mid["pre"]["i"] == 32767) and np.all(mid["pre"]["c"] == -32768)
    assert np.all(mid["gates"]["i"] == L.SIGMOID_TABLE[-1])
    assert np.all(mid["gates"]["c"] == -L.TANH_TABLE[-1])
    y, h_last, c_last = L.lstm_int(x, p, c0=c0)
    assert np.all(c_last == -32768)                 # c walks to the negative end and stays
    assert np.all(y[0, -1] < 0)
    h, c = np.zeros(hid, np.int8), c0[0]
    for t in range(x.shape[1]):                     # every step against the scalar reference
        h, c = ref_cell(x[0, t], h, c, p, w, r, np.zeros(4 * hid, np.int32))
        assert y[0, t].tolist() == h, t
    xneg = np.full((1, 3, feat), -128, np.int8)
    y, _, c = L.lstm_int(xneg, p)
    assert y.dtype == np.int8 and c.dtype == np.int16


# ----------------------------------------------------------------------------- refusals

@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(SEED + 300)
    w, r, b = random_float_lstm(rng, 3, 2)
    x = rng.standard_normal((2, 4, 3))
    return w, r, b, x, L.quantize_lstm(w, r, b, x)


@pytest.mark.parametrize("x, match", [
    (np.zeros((2, 4, 3), np.float32), "x must be int8"),
    (np.zeros((4, 3), np.int8), r"x must have shape \(N, T, F\)"),
    (np.zeros((2, 4, 5), np.int8), "input_size = 3"),
    (np.zeros((2, 0, 3), np.int8), "T >= 1"),
    (np.zeros((0, 4, 3), np.int8), "N, T >= 1"),
])
def test_lstm_int_refuses_bad_x(small, x, match):
    with pytest.raises(ValueError, match=match):
        L.lstm_int(x, small[4])


def test_lstm_int_refuses_bad_states(small):
    p, x = small[4], np.zeros((2, 4, 3), np.int8)
    with pytest.raises(ValueError, match=r"h0 must have shape \(N, H\) = \(2, 2\)"):
        L.lstm_int(x, p, h0=np.zeros((2, 3), np.int8))
    with pytest.raises(ValueError, match="h0 must be int8"):
        L.lstm_int(x, p, h0=np.zeros((2, 2), np.int16))
    with pytest.raises(ValueError, match="c0 must be int16"):
        L.lstm_int(x, p, c0=np.zeros((2, 2), np.int8))
    with pytest.raises(ValueError, match="params must be LstmParams"):
        L.lstm_int(x, {"hidden_size": 2})
    with pytest.raises(ValueError, match="x_t must have shape"):
        L.lstm_cell_int(np.zeros((2, 4), np.int8), np.zeros((2, 2), np.int8),
                        np.zeros((2, 2), np.int16), p)
    with pytest.raises(ValueError, match=r"acc_x must be int32 of shape \(N, 4H\)"):
        L.gate_preactivations(np.zeros((1, 4), np.int32), np.zeros((1, 8), np.int32), p)


def _params_kwargs():
    return dict(input_weights=np.zeros((8, 3), np.int8),
                recurrent_weights=np.zeros((8, 2), np.int8),
                bias=np.zeros(8, np.int32), input_scale=0.02, input_zero_point=0,
                input_weight_scales=[0.01] * 4, recurrent_weight_scales=[0.01] * 4,
                hidden_scale=1 / 128, hidden_zero_point=0, cell_range=1.0)


@pytest.mark.parametrize("change, match", [
    ({"input_weights": np.zeros((8, 3), np.int16)}, "input_weights must be int8"),
    ({"input_weights": np.zeros((6, 3), np.int8)}, "4H rows"),
    ({"recurrent_weights": np.zeros((8, 3), np.int8)},
     r"recurrent_weights must have shape \(8, 2\)"),
    ({"bias": np.zeros(8, np.int64)}, "bias must be int32"),
    ({"bias": np.zeros(4, np.int32)}, r"bias must be int32 of shape \(8,\)"),
    ({"input_scale": 0.0}, "input_scale must be finite and > 0"),
    ({"hidden_scale": float("nan")}, "hidden_scale must be finite"),
    ({"input_zero_point": 128}, "input_zero_point must be an integer in"),
    ({"hidden_zero_point": 1.5}, "hidden_zero_point must be an integer"),
    ({"input_weight_scales": [0.01] * 3}, "input_weight_scales must have 4 entries"),
    ({"recurrent_weight_scales": [0.01, 0.01, -1, 0.01]}, r"recurrent_weight_scales\[f\]"),
    ({"input_weight_scales": [0.01, 10.0, 0.01, 0.01]}, "input gate o .* does not fit"),
    ({"cell_range": 65.0}, "cell_range 65.0 needs a cell scale"),
    ({"cell_range": 0}, "cell_range must be finite and > 0"),
    ({"cell_clip": 1e-9}, "cell_clip .* rounds to 0"),
])
def test_lstm_params_refusals(change, match):
    kwargs = _params_kwargs()
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        L.lstm_params(**kwargs)


def test_gate_function_and_float_refusals(small):
    w, r, b, x, _ = small
    with pytest.raises(ValueError, match="x_q12 must be int16"):
        L.sigmoid_q15(np.zeros(3, np.int32))
    with pytest.raises(ValueError, match=r"frac_bits must be an integer in \[9, 15\]"):
        L.tanh_q15(np.zeros(3, np.int16), 16)
    with pytest.raises(ValueError, match="cell_exponent must be an integer in"):
        L.cell_update(*(np.zeros(2, np.int16),) * 4, -8)
    with pytest.raises(ValueError, match=r"W must have shape \(4H, F\)"):
        L.lstm_float(x, w[:7], r, b)
    with pytest.raises(ValueError, match=r"R must have shape \(4H, H\) = \(8, 2\)"):
        L.lstm_float(x, w, r[:, :1], b)
    with pytest.raises(ValueError, match=r"B must have shape \(8H,\)"):
        L.lstm_float(x, w, r, b[:8])
    with pytest.raises(ValueError, match="F = 3"):
        L.lstm_float(x[:, :, :2], w, r, b)
    with pytest.raises(ValueError, match=r"h0 must have shape \(N, H\)"):
        L.lstm_float(x, w, r, b, h0=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="F = 3"):
        L.quantize_lstm(w, r, b, x[:, :, :1])


def test_report_command_runs(capsys):
    L.main(["--report", "--cases", "3"])
    out = capsys.readouterr().out
    assert "| all | 3 |" in out and "sigmoid_q15" in out and "Held-out" in out
