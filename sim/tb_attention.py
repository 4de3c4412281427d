"""cocotb test of attention on ``npu_top`` (:mod:`npu.attention`): every case's output
against ``golden.attention`` bit for bit, under random backpressure on both AXI streams, with
the error against float64 attention reported (cosine similarity, max abs error). Run through
:mod:`flow.simulate` (tests/test_sim_attention.py); parameters by environment:

* ``ATT_CONFIG``: JSON of the hardware configuration the Verilog was built with;
* ``ATT_CASES``: JSON list of cases ``{"S", "d", "heads", "causal", "kv_len", "v_dim",
  "stall"}`` (``kv_len``, ``v_dim`` optional);
* ``ATT_SEED``: seed of the data (``npu.attention.random_case``) and of the backpressure;
* ``ATT_REPORT``: JSON file receiving, per case, cycles, per-instruction counters and errors.

After the cases, a SOFTMAX with SM_CAUSAL = 2 must end with ``Error.CONFIG``.
"""

import json
import os

import cocotb
import numpy as np

from hw.isa import Error, Op, Reg, encode, encode_set
from npu.attention import compile_attention, error_vs_float, random_case
from sim.npu_env import bring_up


@cocotb.test()
async def attention_cases(dut):
    seed = int(os.environ.get("ATT_SEED", 1))
    config = json.loads(os.environ.get("ATT_CONFIG", "{}"))
    cases = json.loads(os.environ["ATT_CASES"])
    host = await bring_up(dut)
    results = []
    bad = []
    for n, case in enumerate(cases):
        rng = np.random.default_rng([seed, n])
        S, d, H, causal = case["S"], case["d"], case.get("heads", 1), bool(case["causal"])
        kv, dv = case.get("kv_len"), case.get("v_dim")
        q, k, v, params, scales = random_case(rng, S, d, H, causal, kv_len=kv, v_dim=dv)
        prog = compile_attention(S, d, params, kv_len=kv, v_dim=dv, num_heads=H, causal=causal,
                                 config=config)
        want = prog.golden(q, k, v)
        what = (f"case {n} (S={S}, Sk={prog.kv_len}, d={d}, dv={prog.v_dim}, heads={H}, "
                f"causal={causal}, stall={case.get('stall', 0)}, seed={seed})")
        await host.load_program(prog.instructions)
        host.set_backpressure(rng, float(case.get("stall", 0)))
        st = await host.run(0, prog.stream(q, k, v))
        assert st.done and not st.failed, f"{what}: {st}"
        got = prog.decode_output(await host.receive(prog.out_words))
        counters = await host.counters(0, len(prog.instructions))
        exact = bool(np.array_equal(got, want))
        if not exact:
            diff = np.argwhere(got != want)
            dut._log.error("%s: %d outputs differ from golden, first at %s: %s vs %s", what,
                           len(diff), diff[0], got[tuple(diff[0])], want[tuple(diff[0])])
            bad.append(what)
        cos, err, lsb = error_vs_float(q, k, v, params, scales, H, causal, out=got)
        dut._log.info("%s: %s, %d cycles; vs float attention: cosine %.6f, max abs err %.5f "
                      "(%.3f output LSB)", what, "bit-exact" if exact else "MISMATCH",
                      st.cycles, cos, err, lsb)
        results.append({"case": case, "exact": exact, "cycles": st.cycles,
                        "instr": counters, "cos": cos, "max_err": err, "max_err_lsb": lsb})
    # SM_CAUSAL other than 0/1 is refused (Error.CONFIG) and leaves the NPU usable.
    regs = {Reg.IN_ADDR: 0, Reg.IN_H: 1, Reg.IN_W: 1, Reg.IN_CW: 1, Reg.CIN: 1, Reg.BATCH: 1,
            Reg.OUT_ADDR: 1, Reg.SM_MULT: 1 << 30, Reg.SM_SHIFT: 20, Reg.SM_CAUSAL: 2}
    await host.load_program([encode_set(r, v) for r, v in regs.items()]
                            + [encode(Op.SOFTMAX), encode(Op.DONE)])
    host.set_backpressure(np.random.default_rng(seed), 0.0)
    st = await host.run(0, timeout_cycles=20_000)
    assert st.failed and st.error == Error.CONFIG, f"SM_CAUSAL=2: expected CONFIG, got {st}"
    await host.load_program([encode_set(Reg.SM_CAUSAL, 0), encode(Op.DONE)])
    st = await host.run(0, timeout_cycles=20_000)
    assert st.done and not st.failed, f"after the refused SOFTMAX: {st}"
    report = os.environ.get("ATT_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump({"seed": seed, "results": results}, f)
    assert not bad, f"{len(bad)} of {len(cases)} cases differ from golden: {bad}"
