"""Model file format: round trip, random topologies through PTQ + golden inference, and the
refusal of malformed files with a message naming the layer and the problem.

The random topologies are checked layer by layer against an independent float computation:
the int8 input of each layer is dequantized, the layer is evaluated in float64 with the
*dequantized* int8 parameters (``Wq * S_w``, ``bq * S_x * S_w``), and the result is quantized
with the layer's output quantization. The integer path (im2col with zero-point padding, bias
folding, fixed-point requantization, tables, pooling, softmax) must agree to 1 LSB.
"""

import dataclasses
import json

import numpy as np
import pytest

from golden import float_model
from golden.activation import ACTIVATIONS
from golden.inference import run, run_layer
from golden.model import (ModelFormatError, load_model, model_from_arrays, model_to_arrays,
                          save_model)
from golden.ptq import INT8_FILE, activation_qparams, quantize_model, round_half_away

RANDOM_SEEDS = [11, 22, 33, 44]


# ----------------------------------------------------------------------------- random models

def random_arch(rng):
    """A random sequential CNN made of every supported layer type."""
    while True:
        h, w = int(rng.integers(6, 13)), int(rng.integers(6, 13))
        c = int(rng.integers(1, 4))
        layers = []
        cin = c
        n_conv = int(rng.integers(2, 4))
        for i in range(n_conv):
            k = int(rng.choice([1, 2, 3, 5]))
            cout = int(rng.integers(2, 13))
            layers.append({"type": "conv2d", "name": f"conv{i}", "kernel": k,
                           "stride": int(rng.integers(1, 3)), "padding": int(rng.integers(0, k)),
                           "in_channels": cin, "out_channels": cout,
                           "activation": str(rng.choice(["none", "relu", "relu6"]))})
            cin = cout
            if rng.random() < 0.5:
                layers.append({"type": "activation", "name": f"act{i}",
                               "function": str(rng.choice(sorted(ACTIVATIONS)))})
            if rng.random() < 0.6:
                k = int(rng.integers(2, 4))
                layers.append({"type": str(rng.choice(["maxpool2d", "avgpool2d"])),
                               "name": f"pool{i}", "kernel": k,
                               "stride": int(rng.integers(1, 3)),
                               "padding": int(rng.integers(0, k // 2 + 1))})
        layers.append({"type": "flatten", "name": "flatten"})
        arch = {"name": "random", "input_shape": [h, w, c], "layers": layers}
        try:
            feat = float_model.output_shapes(arch)[-1][0]
        except ValueError:
            continue     # the random geometry does not fit; draw again
        if feat > 2000 or not any(L["type"] == "conv2d" and L["in_channels"] > 1
                                  for L in layers):
            continue
        hidden = int(rng.integers(4, 24))
        layers.append({"type": "dense", "name": "fc0", "in_features": feat,
                       "out_features": hidden,
                       "activation": str(rng.choice(["none", "relu"]))})
        if rng.random() < 0.5:
            layers.append({"type": "activation", "name": "act_fc",
                           "function": str(rng.choice(sorted(ACTIVATIONS)))})
        layers.append({"type": "dense", "name": "fc1", "in_features": hidden,
                       "out_features": int(rng.integers(2, 12)), "activation": "none"})
        layers.append({"type": "softmax", "name": "softmax"})
        float_model.output_shapes(arch)
        return arch


def random_model(seed):
    rng = np.random.default_rng(seed)
    arch = random_arch(rng)
    params = float_model.init_params(arch, rng)
    for p in params.values():
        p["bias"] = (0.1 * rng.standard_normal(p["bias"].shape)).astype(np.float32)
    calib = rng.uniform(-1, 1, (64, *arch["input_shape"])).astype(np.float32)
    s_in, z_in = activation_qparams(calib.min(), calib.max())
    return arch, quantize_model(arch, params, calib, s_in, z_in), rng


def dequant(q, scale, zp):
    return scale * (q.astype(np.float64) - zp)


def float_reference(L, x):
    """Layer ``L`` of a validated model on int8 ``x``, computed in float64 (independent of the
    integer path), then quantized to the layer's output quantization."""
    a = L.attrs
    s_x, z_x = a["input"]["scale"], a["input"]["zero_point"]
    s_y, z_y = a["output"]["scale"], a["output"]["zero_point"]
    xf = dequant(x, s_x, z_x)
    t = L.type
    if t in ("conv2d", "dense"):
        w = L.tensors["weights"].astype(np.float64) * L.tensors["weight_scale"]
        b = L.tensors["bias"].astype(np.float64) * s_x * L.tensors["weight_scale"]
        if t == "dense":
            yf = xf @ w + b
        else:
            win = L.window
            n, hh, ww, c = xf.shape
            xp = np.pad(xf, ((0, 0), (win.pt, win.pb), (win.pl, win.pr), (0, 0)))
            ho, wo = win.out_size(hh, ww)
            wk = w.reshape(win.kh, win.kw, c, -1)
            yf = np.zeros((n, ho, wo, wk.shape[-1]))
            for i in range(ho):          # direct convolution, no im2col
                for j in range(wo):
                    patch = xp[:, i * win.sy:i * win.sy + win.kh,
                               j * win.sx:j * win.sx + win.kw, :]
                    yf[:, i, j, :] = np.einsum("nabc,abcd->nd", patch, wk)
            yf += b
        q = round_half_away(yf / s_y) + z_y
        return np.clip(q, a["qmin"], a["qmax"])
    if t in ("maxpool2d", "avgpool2d"):
        g = L.window
        n, hh, ww, c = xf.shape
        ho, wo = g.out_size(hh, ww)
        fill = -np.inf if t == "maxpool2d" else 0.0
        xp = np.pad(xf, ((0, 0), (g.pt, g.pb), (g.pl, g.pr), (0, 0)), constant_values=fill)
        yf = np.zeros((n, ho, wo, c))
        for i in range(ho):
            for j in range(wo):
                win = xp[:, i * g.sy:i * g.sy + g.kh, j * g.sx:j * g.sx + g.kw, :]
                yf[:, i, j, :] = win.max(axis=(1, 2)) if t == "maxpool2d" else win.mean(axis=(1, 2))
        return np.clip(round_half_away(yf / s_y) + z_y, -128, 127)
    if t == "flatten":
        return x.reshape(len(x), -1).astype(np.float64)
    if t == "activation":
        yf = ACTIVATIONS[a["function"]](xf)
        return np.clip(round_half_away(yf / s_y) + z_y, -128, 127)
    if t == "softmax":
        e = np.exp(xf - xf.max(axis=-1, keepdims=True))
        return np.clip(round_half_away(e / e.sum(axis=-1, keepdims=True) / s_y) + z_y,
                       -128, 127)
    raise AssertionError(t)


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_topology_loads_and_matches_float(seed, tmp_path):
    arch, model, rng = random_model(seed)
    path = tmp_path / f"random{seed}.npz"
    save_model(path, model)
    loaded = load_model(path)
    types = [L.type for L in loaded.layers]
    assert [L["type"] for L in arch["layers"]] == types, f"seed {seed}"
    x = rng.integers(-128, 128, (16, *loaded.input_shape)).astype(np.int8)
    outs = run(loaded, x, keep=True)
    assert outs[-1].shape == (16, *loaded.output_shape), f"seed {seed}"
    assert all(o.dtype == np.int8 for o in outs), f"seed {seed}"
    prev = x
    for L, out in zip(loaded.layers, outs):
        ref = float_reference(L, prev)
        err = np.abs(out.astype(np.int64) - ref).max()
        tol = 0 if L.type in ("maxpool2d", "flatten") else 1
        assert err <= tol, (f"seed {seed}: layer {L.index} {L.name} ({L.type}, "
                            f"{L.attrs}) differs from float by {err} LSB")
        prev = out
    # the same file gives the same result as the in-memory model
    assert np.array_equal(run(model, x), outs[-1]), f"seed {seed}"


def test_reference_model_layers_match_float():
    """The same layer-by-layer check on the committed reference model and test images."""
    from golden import digits
    m = load_model(INT8_FILE)
    images, _ = digits.load_test()
    prev = digits.to_int8(images[:64])
    for L, out in zip(m.layers, run(m, prev, keep=True)):
        err = np.abs(out.astype(np.int64) - float_reference(L, prev)).max()
        assert err <= (0 if L.type in ("maxpool2d", "flatten") else 1), (L.name, err)
        prev = out


def test_random_topologies_cover_every_layer_type():
    seen = set()
    for seed in RANDOM_SEEDS:
        arch, _, _ = random_model(seed)
        seen |= {L["type"] for L in arch["layers"]}
        seen |= {L.get("activation") for L in arch["layers"]} - {None}
    assert seen >= {"conv2d", "dense", "maxpool2d", "avgpool2d", "flatten", "activation",
                    "softmax", "relu", "none"}, seen


def test_round_trip(tmp_path):
    m = load_model(INT8_FILE)
    p = tmp_path / "copy.npz"
    save_model(p, m)
    m2 = load_model(p)
    assert m2.header() == m.header()
    a1, a2 = model_to_arrays(m), model_to_arrays(m2)
    assert a1.keys() == a2.keys()
    for k in a1:
        assert a1[k].dtype == a2[k].dtype and np.array_equal(a1[k], a2[k]), k


def test_inference_uses_no_float_parameter():
    """Remove every float from the model: the integer inference gives the same result."""
    m = load_model(INT8_FILE)
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (8, *m.input_shape)).astype(np.int8)
    want = run(m, x)
    for L in m.layers:
        for q in ("input", "output"):
            L.attrs[q] = {"scale": None, "zero_point": L.attrs[q]["zero_point"]}
        L.tensors.pop("weight_scale", None)
        for a in L.tensors.values():
            assert a.dtype.kind == "i", (L.name, a.dtype)
        if L.gemm_bias is not None:
            assert L.gemm_bias.dtype == np.int32
    assert np.array_equal(run(m, x), want)


# ----------------------------------------------------------------------------- malformed files

def _ref_parts():
    """The reference model as a version 2 header and its tensors."""
    m = load_model(INT8_FILE)
    arrays = model_to_arrays(m)
    header = json.loads(arrays.pop("header").tobytes().decode())
    return header, arrays


def _v1_parts():
    """The committed reference model file, a version 1 chain, as it is on disk."""
    with np.load(INT8_FILE, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    header = json.loads(arrays.pop("header").tobytes().decode())
    assert header["version"] == 1
    return header, arrays


def _write(tmp_path, header, arrays, name="bad.npz"):
    p = tmp_path / name
    np.savez(p, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    return p


def _refused(path, *needles):
    with pytest.raises(ModelFormatError) as e:
        load_model(path)
    msg = str(e.value)
    assert msg.startswith(str(path)), msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    return msg


def test_missing_tensor(tmp_path):
    h, a = _ref_parts()
    del a["conv2/bias"]
    _refused(_write(tmp_path, h, a), "'conv2'", "missing tensor 'conv2/bias'")


def test_shape_mismatch(tmp_path):
    h, a = _ref_parts()
    a["fc1/weights"] = a["fc1/weights"][:, :16]
    _refused(_write(tmp_path, h, a), "'fc1'", "shape (256, 16), expected (256, 32)")


def test_dtype_mismatch(tmp_path):
    h, a = _ref_parts()
    a["conv1/m0"] = a["conv1/m0"].astype(np.int64)
    _refused(_write(tmp_path, h, a), "'conv1'", "dtype int64, expected int32")


def test_unknown_layer_type(tmp_path):
    h, a = _ref_parts()
    h["layers"][2]["type"] = "lstm"
    _refused(_write(tmp_path, h, a), "layer 2 'pool'", "unknown layer type 'lstm'")


def test_wrong_version(tmp_path):
    h, a = _ref_parts()
    h["version"] = 99
    _refused(_write(tmp_path, h, a), "unsupported format version 99")


def test_channel_mismatch_between_layers(tmp_path):
    h, a = _ref_parts()
    h["layers"][1]["in_channels"] = 4
    _refused(_write(tmp_path, h, a), "layer 1 'conv2'", "in_channels is 4")


def test_dense_needs_flatten(tmp_path):
    h, a = _ref_parts()
    del h["layers"][3]
    _refused(_write(tmp_path, h, a), "'fc1'", "flatten")


def test_requantization_mismatch(tmp_path):
    h, a = _ref_parts()
    a["fc2/m0"] = a["fc2/m0"].copy()
    a["fc2/m0"][3] += 1
    _refused(_write(tmp_path, h, a), "'fc2'", "channel 3")


def test_weight_out_of_range(tmp_path):
    h, a = _ref_parts()
    a["conv1/weights"] = a["conv1/weights"].copy()
    a["conv1/weights"][0, 0] = -128
    _refused(_write(tmp_path, h, a), "'conv1'", "[-127, 127]")


def test_quantization_chain_broken_in_a_version_1_file(tmp_path):
    h, a = _v1_parts()
    h["layers"][4]["input"]["zero_point"] = 0
    _refused(_write(tmp_path, h, a), "'fc1'", "previous layer's output")


def test_version_1_loads_as_the_same_chain():
    h, a = _v1_parts()
    v1 = model_from_arrays(h, a)
    v2 = load_model(_write_v2(v1))
    assert v1.is_chain and v2.is_chain and v2.version == 2
    assert [(L.name, L.type, L.window) for L in v1.layers] == \
        [(L.name, L.type, L.window) for L in v2.layers]


def _write_v2(model):
    import tempfile
    path = tempfile.mkdtemp() + "/v2.npz"
    save_model(path, model)
    return path


def test_missing_attribute(tmp_path):
    h, a = _ref_parts()
    del h["layers"][0]["kernel"]
    _refused(_write(tmp_path, h, a), "'conv1'", "bad window")
    h, a = _ref_parts()
    del h["layers"][0]["in_channels"]
    _refused(_write(tmp_path, h, a), "'conv1'", "missing attribute 'in_channels'")


def test_graph_refusals(tmp_path):
    """A read of a later layer (a cycle), of an unknown tensor, add inputs of different
    shapes: each refused naming the layer."""
    h, a = _ref_parts()
    h["layers"][1]["inputs"] = ["pool"]
    _refused(_write(tmp_path, h, a), "'conv2'", "computed later", "no cycles")
    h, a = _ref_parts()
    h["layers"][1]["inputs"] = ["nowhere"]
    _refused(_write(tmp_path, h, a), "'conv2'", "'nowhere'", "no layer computes")
    h, a = _ref_parts()
    h["layers"].insert(2, {"name": "sum", "type": "add", "inputs": ["conv1", "conv2"],
                           "fused_activation": "none", "qmin": -128, "qmax": 127,
                           "params": {}, "output": h["layers"][1]["output"]})
    _refused(_write(tmp_path, h, a), "'sum'", "different shapes")
    h, a = _ref_parts()
    h["output"] = "ghost"
    _refused(_write(tmp_path, h, a), "output 'ghost'")


def test_rounding_attribute(tmp_path):
    """``rounding`` of a conv/dense layer: "single" loads (and changes inference only where
    the two roundings differ), anything else is refused naming the layer."""
    h, a = _ref_parts()
    h["layers"][0]["rounding"] = "single"
    assert load_model(_write(tmp_path, h, a)).layers[0].attrs["rounding"] == "single"
    h["layers"][0]["rounding"] = "nearest"
    _refused(_write(tmp_path, h, a), "'conv1'", "rounding must be one of")


def test_extra_tensor(tmp_path):
    h, a = _ref_parts()
    a["ghost/weights"] = np.zeros((2, 2), np.int8)
    _refused(_write(tmp_path, h, a), "ghost/weights")


def test_softmax_params_mismatch(tmp_path):
    h, a = _ref_parts()
    h["layers"][-1]["params"]["multiplier"] += 1
    _refused(_write(tmp_path, h, a), "'softmax'", "multiplier")


def test_softmax_tflite_variant(tmp_path):
    """variant "tflite": the params of golden.tflite.softmax_params(input scale, beta), checked
    on load; inference is golden.tflite.softmax_tflite. A wrong field, an unknown variant and
    a beta on the project variant are refused naming the layer."""
    from golden.tflite import softmax_params as tflite_softmax_params, softmax_tflite
    h, a = _ref_parts()
    L = h["layers"][-1]
    s_x = h["layers"][-2]["output"]["scale"]             # the softmax reads the layer before
    L.update({"variant": "tflite", "beta": 1.0,
              "params": dataclasses.asdict(tflite_softmax_params(s_x, 1.0))})
    m = load_model(_write(tmp_path, h, a))
    x = np.random.default_rng(7).integers(-128, 128, (3, 10)).astype(np.int8)
    np.testing.assert_array_equal(run_layer(m.layers[-1], x),
                                  softmax_tflite(x, tflite_softmax_params(s_x, 1.0)))
    L["params"]["diff_min"] += 1
    _refused(_write(tmp_path, h, a), "'softmax'", "diff_min")
    L["variant"] = "exact"
    _refused(_write(tmp_path, h, a), "'softmax'", "variant must be one of")
    h, a = _ref_parts()
    h["layers"][-1]["beta"] = 2.0
    _refused(_write(tmp_path, h, a), "'softmax'", "only for variant 'tflite'")


def test_not_an_npz_and_pickle(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"not a zip file at all")
    _refused(p, "cannot read")
    q = tmp_path / "pickled.npz"
    np.savez(q, header=np.array([{"a": 1}], dtype=object))
    _refused(q, "cannot read")
    r = tmp_path / "badjson.npz"
    np.savez(r, header=np.frombuffer(b"{not json", np.uint8))
    _refused(r, "header is not valid")
    npy = tmp_path / "single.npy"
    np.save(npy, np.zeros(3))
    _refused(npy, "not an .npz")
    _refused(tmp_path / "does_not_exist.npz", "cannot read")


def test_validation_of_in_memory_header():
    h, a = _ref_parts()
    h["layers"][0]["kernel"] = 20
    with pytest.raises(ModelFormatError, match="layer 0 'conv1'"):
        model_from_arrays(h, a)


FUZZ_VALUES = [None, "x", -1, 0, 1.5, True, [], {}, 10 ** 9, -(10 ** 12)]


@pytest.mark.parametrize("seed", [101, 202])
def test_fuzzed_headers_and_tensors_are_refused_cleanly(seed, tmp_path):
    """Random corruption of any header field or tensor either still loads (the value was
    valid) or raises ModelFormatError; never another exception from inside NumPy."""
    rng = np.random.default_rng(seed)
    refused = 0
    for trial in range(60):
        h, a = _ref_parts()
        what = rng.integers(0, 3)
        if what == 0:                           # a layer attribute
            L = h["layers"][rng.integers(len(h["layers"]))]
            key = sorted(L)[rng.integers(len(L))]
            L[key] = FUZZ_VALUES[rng.integers(len(FUZZ_VALUES))]
            desc = f"layer {L.get('name')!r} attribute {key!r} = {L[key]!r}"
        elif what == 1:                         # a quantization field or a top-level field
            target = h if rng.random() < 0.3 else h["layers"][rng.integers(len(h["layers"]))]
            if target is h:
                key = ["format", "version", "input", "layers", "name"][rng.integers(5)]
                h[key] = FUZZ_VALUES[rng.integers(len(FUZZ_VALUES))]
                desc = f"header {key!r} = {h[key]!r}"
            else:
                q = target["output"]
                key = ["scale", "zero_point"][rng.integers(2)]
                q[key] = FUZZ_VALUES[rng.integers(len(FUZZ_VALUES))]
                desc = f"layer {target['name']!r} quantization {key!r} = {q[key]!r}"
        else:                                   # a tensor: wrong dtype, shape or values
            key = sorted(a)[rng.integers(len(a))]
            t = a[key]
            kind = rng.integers(0, 4)
            if kind == 0:
                a[key] = t.astype([np.float32, np.int16, np.uint8, np.int64][rng.integers(4)])
            elif kind == 1:
                a[key] = t.reshape(-1)[: max(0, t.size - 1)]
            elif kind == 2:
                a[key] = np.full(t.shape, np.iinfo(t.dtype).max if t.dtype.kind == "i"
                                 else -1.0, t.dtype)
            else:
                del a[key]
            desc = f"tensor {key!r} corruption {kind}"
        p = _write(tmp_path, h, a, name=f"fuzz{trial}.npz")
        try:
            load_model(p)
        except ModelFormatError as e:
            refused += 1
            assert str(e).startswith(str(p)), f"seed {seed}: {desc}: {e}"
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"seed {seed}: {desc}: {type(e).__name__}: {e}")
    assert refused >= 30, f"seed {seed}: only {refused} corruptions refused"


def test_hostile_archives_refused_before_allocating(tmp_path):
    """A member whose .npy header declares far more data than it holds, and a header of
    deeply nested JSON: each a ModelFormatError naming the problem (no MemoryError or
    RecursionError)."""
    import io
    import zipfile
    nested = tmp_path / "nested.npz"
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(("[" * 100000 + "]" * 100000).encode(), np.uint8))
    with zipfile.ZipFile(nested, "w") as z:
        z.writestr("header.npy", buf.getvalue())
    with pytest.raises(ModelFormatError, match="nested too deeply"):
        load_model(nested)
    huge = tmp_path / "huge.npz"
    d = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000,), }"
    d = d + " " * (117 - len(d)) + "\n"
    with zipfile.ZipFile(huge, "w") as z:
        z.writestr("header.npy", buf.getvalue())
        z.writestr("conv1/m0.npy", b"\x93NUMPY\x01\x00" + len(d).to_bytes(2, "little")
                   + d.encode())
    with pytest.raises(ModelFormatError, match=r"conv1/m0.npy declares shape \(100000000000,\)"):
        load_model(huge)
