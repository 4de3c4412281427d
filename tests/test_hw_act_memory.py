"""ActMemory (hw/act_memory.py) in the Amaranth simulator against a model of its address map:
words written with one pixel shift read back through R ports at once, the latency, and the
conflict flag."""

import numpy as np
import pytest
from amaranth.sim import Simulator  # ports, not streams: driven directly

from hw.act_memory import READ_LATENCY, ActMemory, act_location, banks, conflict_free


def test_banks_and_strides():
    assert [banks(r) for r in (1, 2, 3, 4, 8, 16)] == [2, 4, 8, 8, 16, 32]
    for rows in (1, 3, 8):
        B = banks(rows)
        assert conflict_free(1, rows, B) and conflict_free(2, rows, B)
        assert conflict_free(3, rows, B)
        assert conflict_free(4, rows, B) == (rows <= max(1, B // 4))


def test_location_is_a_bijection_per_shift():
    B, depth = 16, 512
    for shift in range(4):
        seen = {act_location(a, shift, B) for a in range(depth)}
        assert len(seen) == depth
        assert all(0 <= bank < B and 0 <= row < depth // B for bank, row in seen)


def test_aligned_regions_share_rows_across_shifts():
    """A region aligned to B * 2**shift words occupies the same bank rows for any shift."""
    B = 16
    for shift in range(4):
        base, n = 3 * B * (1 << shift), 2 * B * (1 << shift)
        rows = {act_location(a, shift, B)[1] for a in range(base, base + n)}
        assert rows == set(range(base // B, (base + n) // B))


@pytest.mark.parametrize("rows,cols,seed", [(8, 8, 1), (3, 5, 2), (1, 4, 3)])
def test_parallel_reads_return_what_was_written(rows, cols, seed):
    rng = np.random.default_rng(seed)
    B = banks(rows)
    depth = B * 16
    dut = ActMemory(cols, depth, rows, ports=rows)
    model = {}
    writes = [(int(rng.integers(depth)), int(rng.integers(3)),
               int.from_bytes(rng.bytes(cols), "little"))
              for _ in range(4 * depth)]
    for a, shift, v in writes:
        model[act_location(a, shift, B)] = v
    # Read bursts: R pixels of a strided run, one word each, all through the same shift.
    bursts = []
    for _ in range(40):
        shift = int(rng.integers(3))
        stride = int(rng.choice([1, 2, 3]))
        pixels = depth >> shift
        q0 = int(rng.integers(pixels - stride * rows))
        g = int(rng.integers(1 << shift))
        en = [bool(rng.random() < 0.9) for _ in range(rows)]
        addrs = [((q0 + stride * i) << shift) | g for i in range(rows)]
        bursts.append((shift, addrs, en))
    got, conflicts = [], []

    async def bench(ctx):
        for a, shift, v in writes:
            ctx.set(dut.w_en, 1)
            ctx.set(dut.w_addr, a)
            ctx.set(dut.w_shift, shift)
            ctx.set(dut.w_data, v)
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        await ctx.tick().repeat(2)
        issued = []
        for n in range(len(bursts) + READ_LATENCY):
            if n < len(bursts):
                shift, addrs, en = bursts[n]
                ctx.set(dut.r_shift, shift)
                for i in range(rows):
                    ctx.set(getattr(dut, f"r{i}_en"), en[i])
                    ctx.set(getattr(dut, f"r{i}_addr"), addrs[i])
            await ctx.tick()
            conflicts.append(ctx.get(dut.conflict))
            if n >= READ_LATENCY - 1 and len(got) < len(bursts):
                got.append([ctx.get(getattr(dut, f"r{i}_data")) for i in range(rows)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not any(conflicts)
    for n, (shift, addrs, en) in enumerate(bursts):
        for i in range(rows):
            if en[i]:
                want = model.get(act_location(addrs[i], shift, B), 0)
                assert got[n][i] == want, f"burst {n} port {i} (seed {seed})"


def test_conflict_is_flagged():
    rows, cols = 4, 2
    B = banks(rows)
    dut = ActMemory(cols, B * 8, rows, ports=rows)
    flags = []

    async def bench(ctx):
        ctx.set(dut.r0_en, 1)
        ctx.set(dut.r1_en, 1)
        ctx.set(dut.r0_addr, 0)
        ctx.set(dut.r1_addr, B)          # same bank, next row
        await ctx.tick()
        ctx.set(dut.r1_addr, 1)          # another bank
        for _ in range(8):
            await ctx.tick()
            flags.append(ctx.get(dut.conflict))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert flags.count(1) == 1, flags    # the one conflicting cycle, and only it
