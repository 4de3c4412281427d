"""``npu bench``'s parts that need no simulator: the LeNet-5 cycle-model table on the
configuration the command passes, and the report tables' formatting (the RTL runs are
``make bench`` itself)."""

from npu import bench


def test_lenet5_table_on_the_given_configuration():
    rows, cycles = bench.lenet5({"rows": 8, "cols": 8})
    assert [r["layer"] for r in rows if r["macs"]] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert cycles >= sum(r["predicted"] for r in rows)


def test_mlperf_table_prints_every_row(capsys):
    layers = [{"layer": "dw", "type": "depthwise_conv2d", "gemm": (9, 9, 128), "macs": 10368,
               "measured": 381, "utilization": 10368 / (64 * 381)}]
    rows = [{"model": "mobilenet_v1", "macs": 7491968, "cycles": 165063, "predicted": 165063,
             "exact": True, "anchor_ms": 9.5, "layers": layers},
            {"model": "autoencoder", "macs": 264192, "cycles": 44450, "predicted": 44450,
             "exact": False, "anchor_ms": None, "layers": []}]
    bench.print_mlperf(rows, 8, 8, None, None)
    out = capsys.readouterr().out
    assert "mobilenet_v1" in out and "9.50" in out and "1.651" in out and "NO" in out
    assert "nominal 100 MHz" in out and "dw (9, 9, 128) 42.5%" in out


def test_layer_table_shows_the_replicated_act_cycles(capsys):
    run = {"layers": [{"layer": "conv2", "type": "conv2d", "macs": 589824, "measured": 9309,
                       "predicted": 9309, "utilization": 589824 / (64 * 9309)},
                      {"layer": "pool", "type": "maxpool2d", "macs": 0, "measured": 1065,
                       "predicted": 1065, "utilization": None}]}
    bench.print_layers(run, 8, 8, 8)
    out = capsys.readouterr().out
    assert "before: 9308 cycles, 99.0%" in out and "before: 1069 cycles" in out
