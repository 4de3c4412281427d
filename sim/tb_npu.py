"""cocotb tests of ``npu_top``: whole models on the RTL against the golden integer inference,
and the error and reset paths. Run through :mod:`flow.simulate`; parameters by environment:

* ``NPU_CONFIG``: JSON of the hardware configuration the Verilog was built with;
* ``NPU_MODEL``: model file (:mod:`golden.model` format); ``NPU_IMAGES``: ``.npz`` with an int8
  ``images`` array (N, H, W, C); ``NPU_BATCH``: images per run;
* ``NPU_SEED``: seed of the backpressure; ``NPU_STALL``: pause probability on both streams;
* ``NPU_REPORT``: JSON file receiving per-image results and per-instruction cycle counters.
"""

import json
import os
import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from golden.inference import run as golden_run
from golden.model import load_model
from hw.isa import (CSR, SM_EXP_ENTRIES, Error, Mem, Op, Reg, encode, encode_load, encode_set,
                    encode_store, pack_sm_exp_table)
from npu.compiler import compile_model
from sim.npu_env import bring_up, start_word


def _env(name, default=None):
    return os.environ.get(name, default)


def hw_config():
    return json.loads(_env("NPU_CONFIG", "{}"))


async def run_batches(host, prog, model, images, rng, stall, log):
    """Run every batch; returns (per-image records, per-batch counter lists)."""
    B = prog.batch
    want = golden_run(model, images)
    records, counters = [], []
    host.set_backpressure(rng, stall)
    for start in range(0, len(images), B):
        chunk = images[start:start + B]
        n = len(chunk)
        if n < B:      # pad the last batch with copies of its first image
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], B - n, axis=0)])
        t0 = time.perf_counter()
        st = await host.run(prog.infer_pc, prog.infer_stream(chunk))
        wall = time.perf_counter() - t0
        assert st.done and not st.failed, f"batch at image {start}: {st}"
        out = prog.decode_output(await host.receive(prog.output_layout.words))
        cnt = await host.counters(prog.infer_pc, len(prog.infer))
        counters.append({"cycles": st.cycles, "instr": cnt, "wall_s": wall})
        for j in range(n):
            exact = bool(np.array_equal(out[j], want[start + j]))
            records.append({"image": start + j, "exact": exact,
                            "pred": int(np.argmax(out[j].reshape(-1))),
                            "output": [int(v) for v in out[j].reshape(-1)],
                            "golden_pred": int(np.argmax(want[start + j].reshape(-1)))})
            if not exact:
                diff = np.argwhere(out[j] != want[start + j])
                log.error("image %d: %d outputs differ from golden, first at %s: %s vs %s",
                          start + j, len(diff), diff[0], out[j][tuple(diff[0])],
                          want[start + j][tuple(diff[0])])
    return records, counters


@cocotb.test()
async def model_inference(dut):
    """Compile a model, run it on the RTL batch by batch, compare with golden bit for bit."""
    seed = int(_env("NPU_SEED", 1))
    host = await bring_up(dut)
    model = load_model(_env("NPU_MODEL"))
    data = np.load(_env("NPU_IMAGES"))
    images = data["images"]
    labels = data["labels"] if "labels" in data else None
    prog = compile_model(model, hw_config(), batch=int(_env("NPU_BATCH", 1)))
    rng = np.random.default_rng(seed)
    dut._log.info("model %s: %d images, batch %d, seed %d", model.name, len(images),
                  prog.batch, seed)
    await host.load_program(prog.instructions)
    st = await host.run(0, prog.setup_stream)
    assert st.done and not st.failed, f"setup program: {st}"
    records, counters = await run_batches(host, prog, model, images, rng,
                                          float(_env("NPU_STALL", 0)), dut._log)
    if labels is not None:
        for r in records:
            r["label"] = int(labels[r["image"]])
        hits = sum(r["pred"] == r["label"] for r in records)
        dut._log.info("accuracy on the RTL: %d/%d = %.2f %%", hits, len(records),
                      100 * hits / len(records))
    report = _env("NPU_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump({"records": records, "batches": counters, "infer_pc": prog.infer_pc,
                       "layers": [{"name": p.name, "conv_pc": p.conv_pc, "gemm": p.gemm,
                                   "regs": p.regs} for p in prog.layers]}, f)
    bad = [r["image"] for r in records if not r["exact"]]
    assert not bad, f"{len(bad)} images differ from golden: {bad[:10]} (seed={seed})"
    dut._log.info("%d images bit-exact against golden", len(records))


async def expect_error(host, program, code, beats=None, what=""):
    await host.load_program(program)
    st = await host.run(0, beats, timeout_cycles=20_000)
    assert st.failed and not st.busy and st.error == code, (
        f"{what}: expected error {Error(code).name}, got {st}")
    return st


async def expect_refused_untouched(host, program, code, pattern, addr, what):
    """``program`` (a LOAD of ``pattern`` to ``addr``, ..., the instruction, DONE) ends with
    ``code`` at the instruction's pc, and ACT at ``addr`` still holds ``pattern``."""
    st = await expect_error(host, program, code, pattern, what=what)
    assert st.error_pc == len(program) - 2, st
    await host.load_program([encode_store(addr, len(pattern)), encode(Op.DONE)])
    st = await host.run(0)
    assert st.done and not st.failed, st
    assert np.array_equal(await host.receive(len(pattern)), pattern), f"{what}: it wrote ACT"


@cocotb.test()
async def error_paths(dut):
    """Illegal instruction and out-of-range accesses set ERROR and leave the NPU idle and
    usable; a CONV that would write outside ACT writes nothing."""
    host = await bring_up(dut)
    cfg = hw_config()
    act = await host.read(CSR.ACT_DEPTH)
    wgt = await host.read(CSR.WGT_DEPTH)
    imem = await host.read(CSR.IMEM_DEPTH)
    C = host.cols
    # Fill ACT word 0..3 with a known pattern, read it back: the reference for "untouched".
    pattern = (np.arange(4 * C) % 251).astype(np.uint8).reshape(4, C)
    ok_prog = [encode_load(Mem.ACT, 0, 4), encode_store(0, 4), encode(Op.DONE)]
    await host.load_program(ok_prog)
    st = await host.run(0, pattern)
    assert st.done and not st.failed, st
    assert np.array_equal(await host.receive(4), pattern)

    await expect_error(host, [encode(Op.NOP), 0xEE], Error.ILLEGAL_OPCODE, what="opcode 0xEE")
    st = await host.status()
    assert st.error_pc == 1, st
    await expect_error(host, [encode_load(Mem.ACT, act - 2, 4), encode(Op.DONE)], Error.ADDRESS,
                       what="LOAD past ACT")
    await expect_error(host, [encode_load(Mem.WGT, wgt, 1), encode(Op.DONE)], Error.ADDRESS,
                       what="LOAD past WGT")
    await expect_error(host, [encode_store(act - 1, 2), encode(Op.DONE)], Error.ADDRESS,
                       what="STORE past ACT")
    await expect_error(host, [encode_load(Mem.ACT, 0, 0), encode(Op.DONE)], Error.ADDRESS,
                       what="LOAD of 0 words")
    await expect_error(host, [encode_set(len(Reg), 1), encode(Op.DONE)], Error.CONFIG,
                       what="SET of an unknown register")
    # A 1x1 conv whose output region runs past the end of ACT: refused before any write.
    conv = {Reg.IN_ADDR: 0, Reg.IN_H: 1, Reg.IN_W: 2, Reg.IN_CW: 1, Reg.IN_ROW: 2,
            Reg.IN_IMG: 2, Reg.CIN: 1, Reg.KH: 1, Reg.KW: 1, Reg.STRIDE_Y: 1, Reg.STRIDE_X: 1,
            Reg.PAD_TOP: 0, Reg.PAD_LEFT: 0, Reg.IN_ZP: 0, Reg.OUT_ADDR: act - 1,
            Reg.OUT_H: 1, Reg.OUT_W: 2, Reg.OUT_CW: 1, Reg.OUT_ROW: 2, Reg.OUT_IMG: 2,
            Reg.OUT_NB: 1, Reg.W_ADDR: 0, Reg.P_ADDR: 0, Reg.BATCH: 1, Reg.OUT_ZP: 0,
            Reg.QMIN: -128, Reg.QMAX: 127, Reg.USE_LUT: 0, Reg.CONV_MODE: 0}
    prog = [encode_set(r, v) for r, v in conv.items()] + [encode(Op.CONV), encode(Op.DONE)]
    await expect_error(host, prog, Error.ADDRESS, what="CONV output past ACT")
    conv[Reg.OUT_ADDR] = 1
    conv[Reg.KH] = 0
    prog = [encode_set(r, v) for r, v in conv.items()] + [encode(Op.CONV), encode(Op.DONE)]
    await expect_error(host, prog, Error.CONFIG, what="CONV with KH = 0")
    conv[Reg.KH] = 1
    conv[Reg.OUT_ADDR] = 1      # overlaps the input region [0, 2)
    prog = [encode_set(r, v) for r, v in conv.items()] + [encode(Op.CONV), encode(Op.DONE)]
    await expect_error(host, prog, Error.ADDRESS, what="CONV output overlapping its input")
    # Back to back: a valid ELTWISE, then one whose output overlaps its second input. Each
    # instruction's checks must see its own registers (hw.sizes.CHECK_SETTLE), not the
    # previous one's: the second is refused at its own pc and writes nothing.
    a, b, out = act // 4, act // 2, 3 * act // 4   # far apart: other groups of ACT banks
    elt = {Reg.IN_ADDR: a, Reg.IN2_ADDR: b, Reg.OUT_ADDR: out, Reg.IN_CW: 1, Reg.OUT_CW: 1,
           Reg.IN_H: 1, Reg.IN_W: 4, Reg.BATCH: 1, Reg.IN_ROW: 4, Reg.IN_IMG: 4,
           Reg.IN2_ROW: 4, Reg.IN2_IMG: 4, Reg.OUT_ROW: 4, Reg.OUT_IMG: 4, Reg.IN_ZP: 0,
           Reg.IN2_ZP: 0, Reg.OUT_ZP: 0, Reg.QMIN: -128, Reg.QMAX: 127, Reg.USE_LUT: 0,
           Reg.ELT_MODE: 0, Reg.ELT_M1: 1 << 30, Reg.ELT_S1: 0, Reg.ELT_M2: 1 << 30,
           Reg.ELT_S2: 0, Reg.ELT_MO: 1 << 30, Reg.ELT_SO: 0}
    prog = ([encode_load(Mem.ACT, b, 4)] + [encode_set(r, v) for r, v in elt.items()]
            + [encode(Op.ELTWISE), encode_set(Reg.OUT_ADDR, b + 2), encode(Op.ELTWISE),
               encode(Op.DONE)])
    await expect_refused_untouched(host, prog, Error.ADDRESS, pattern, b,
                                   "ELTWISE output overlapping its input, after a valid ELTWISE")
    # A POOL whose OUT_H disagrees with its input geometry (4x4, 2x2 windows, stride 2: 2
    # rows, not 3) ends with CONFIG before it writes: its output region keeps the pattern.
    pool = {Reg.IN_ADDR: a, Reg.IN_ROW: 4, Reg.IN_IMG: 16, Reg.IN_CW: 1, Reg.IN_H: 4,
            Reg.IN_W: 4, Reg.CIN: C, Reg.KH: 2, Reg.KW: 2, Reg.STRIDE_Y: 2, Reg.STRIDE_X: 2,
            Reg.PAD_TOP: 0, Reg.PAD_LEFT: 0, Reg.IN_ZP: 0, Reg.OUT_ADDR: b, Reg.OUT_ROW: 2,
            Reg.OUT_IMG: 6, Reg.OUT_CW: 1, Reg.OUT_H: 3, Reg.OUT_W: 2, Reg.BATCH: 1,
            Reg.POOL_MODE: 0}
    prog = ([encode_load(Mem.ACT, b, 4)] + [encode_set(r, v) for r, v in pool.items()]
            + [encode(Op.POOL), encode(Op.DONE)])
    await expect_refused_untouched(host, prog, Error.CONFIG, pattern, b,
                                   "POOL with OUT_H = 3 for 2 output rows")
    # CONV in K-split mode (CONV_MODE 2) from a W_ADDR that is not a multiple of R (the
    # banks read at one row), and an unknown CONV_MODE: refused before any write (a
    # configuration without the K-split mode refuses mode 2 alike).
    ksplit = {Reg.IN_ADDR: a, Reg.IN_H: 1, Reg.IN_W: 1, Reg.IN_CW: 1, Reg.IN_ROW: 1,
              Reg.IN_IMG: 1, Reg.CIN: C, Reg.KH: 1, Reg.KW: 1, Reg.STRIDE_Y: 1,
              Reg.STRIDE_X: 1, Reg.PAD_TOP: 0, Reg.PAD_LEFT: 0, Reg.IN_ZP: 0, Reg.OUT_ADDR: b,
              Reg.OUT_H: 1, Reg.OUT_W: 1, Reg.OUT_CW: 1, Reg.OUT_ROW: 1, Reg.OUT_IMG: 1,
              Reg.OUT_NB: 1, Reg.W_ADDR: 1, Reg.P_ADDR: 0, Reg.BATCH: 1, Reg.OUT_ZP: 0,
              Reg.QMIN: -128, Reg.QMAX: 127, Reg.USE_LUT: 0, Reg.CONV_MODE: 2}
    for mode, w_addr, what in ((2, 1, "K-split CONV from W_ADDR 1"),
                               (3, 0, "CONV with CONV_MODE 3")):
        ksplit.update({Reg.CONV_MODE: mode, Reg.W_ADDR: w_addr})
        prog = ([encode_load(Mem.ACT, b, 4)] + [encode_set(r, v) for r, v in ksplit.items()]
                + [encode(Op.CONV), encode(Op.DONE)])
        await expect_refused_untouched(host, prog, Error.CONFIG, pattern, b, what)
    # SOFTMAX: SM_MODE 1 before any SM_EXP LOAD since reset, and an unknown SM_MODE after
    # one, are refused before any write (the output words 2, 3 keep the pattern).
    smx = {Reg.IN_ADDR: 0, Reg.IN_H: 1, Reg.IN_W: 1, Reg.IN_CW: 1, Reg.IN_ROW: 1,
           Reg.IN_IMG: 1, Reg.CIN: C, Reg.OUT_ADDR: 2, Reg.OUT_CW: 1, Reg.OUT_ROW: 1,
           Reg.OUT_IMG: 1, Reg.BATCH: 2, Reg.SM_MULT: 1 << 30, Reg.SM_SHIFT: 20,
           Reg.SM_CAUSAL: 0, Reg.SM_MODE: 1}
    prog = [encode_set(r, v) for r, v in smx.items()] + [encode(Op.SOFTMAX), encode(Op.DONE)]
    await expect_error(host, prog, Error.CONFIG, what="SOFTMAX mode 1 without its exp table")
    table = pack_sm_exp_table(np.zeros(SM_EXP_ENTRIES, np.int64), C)
    smx[Reg.SM_MODE] = 2
    prog = ([encode_load(Mem.SM_EXP, 0, 1)] + [encode_set(r, v) for r, v in smx.items()]
            + [encode(Op.SOFTMAX), encode(Op.DONE)])
    await expect_error(host, prog, Error.CONFIG, beats=table, what="SOFTMAX mode 2")
    # Running off the end of IMEM without DONE.
    await expect_error(host, [encode(Op.NOP)] * imem, Error.PC_OVERFLOW, what="no DONE")
    # Background LOADs: only into WGT or PARAM, range-checked before the program goes on.
    await expect_error(host, [encode(Op.LOAD, mem=Mem.ACT, addr=0, count=4, background=1),
                              encode(Op.DONE)], Error.CONFIG, what="background LOAD into ACT")
    await expect_error(host, [encode_load(Mem.WGT, wgt - 1, 2, background=True),
                              encode(Op.DONE)], Error.ADDRESS, what="background LOAD past WGT")
    # Still usable, and nothing was written: the pattern is intact.
    await host.load_program(ok_prog[1:])
    st = await host.run(0)
    assert st.done and not st.failed, st
    assert np.array_equal(await host.receive(4), pattern), "a refused instruction wrote ACT"
    # An error while a background LOAD waits for data stops that LOAD too: the next program's
    # LOAD takes the next beats.
    await expect_error(host, [encode_load(Mem.WGT, 0, 64, background=True), encode(Op.NOP),
                              0xEE], Error.ILLEGAL_OPCODE, what="error during a background LOAD")
    await host.load_program(ok_prog)
    st = await host.run(0, pattern[::-1])
    assert st.done and not st.failed, st
    assert np.array_equal(await host.receive(4), pattern[::-1]), \
        "the LOAD after an aborted background LOAD got the wrong beats"
    dut._log.info("error paths OK (config %s)", cfg)


@cocotb.test()
async def reset_mid_run(dut):
    """Reset asserted in the middle of an inference leaves a clean, usable accelerator."""
    host = await bring_up(dut)
    model = load_model(_env("NPU_MODEL"))
    images = np.load(_env("NPU_IMAGES"))["images"]
    prog = compile_model(model, hw_config(), batch=int(_env("NPU_BATCH", 1)))
    B = prog.batch
    await host.load_program(prog.instructions)
    st = await host.run(0, prog.setup_stream)
    assert st.done, st
    # Start an inference and pull reset while it computes.
    await host.write(CSR.IRQ_EN, 1)
    host.send(prog.infer_stream(images[:B]))
    await host.write(CSR.CTRL, start_word(prog.infer_pc))
    await ClockCycles(dut.clk, 200)
    assert (await host.status()).busy, "expected the NPU to be busy 200 cycles after START"
    await host.reset()
    host.source.clear()
    host.sink.clear()
    st = await host.status()
    assert not st.busy and not st.done and not st.failed, f"after reset: {st}"
    # Memories keep their contents across reset but the program must be reloaded as a whole.
    await host.load_program(prog.instructions)
    st = await host.run(0, prog.setup_stream)
    assert st.done and not st.failed, st
    records, _ = await run_batches(host, prog, model, images[:B], np.random.default_rng(0),
                                   0.0, dut._log)
    assert all(r["exact"] for r in records), "results after reset differ from golden"
