"""Verification environment of ``npu_activation``: driver, monitor and scoreboard kept apart.

The driver loads a table (one ``s_axis_tab`` beat per entry: index, value) and sends an int8
tensor flattened into beats of ``lanes`` values, the last beat zero-padded, as one frame. The
monitor receives the result frame; the scoreboard drops the padding and compares with
:func:`golden.activation.apply_table` on the same table.
"""

import numpy as np

from golden.activation import apply_table, check_table
from sim.bus import set_pause, sink, source
from sim.scoreboard import Scoreboard
from sim.vector_env import unpack

__all__ = ["ActivationDriver", "ActivationMonitor", "ActivationScoreboard"]


class ActivationDriver:
    def __init__(self, dut, lanes):
        self.lanes = lanes
        self.tab = source(dut, "s_axis_tab")
        self.inp = source(dut, "s_axis_in")

    def set_backpressure(self, rng, p):
        set_pause(self.tab, rng, p)
        set_pause(self.inp, rng, p)

    async def load_table(self, table):
        """Write all 256 entries (shuffled order is fine: each beat carries its index)."""
        t = check_table(table)
        beats = np.stack([np.arange(256, dtype=np.uint8), t.view(np.uint8)], axis=1)
        for b in beats:
            await self.tab.send(b.tobytes())
        await self.tab.wait()

    def send(self, x):
        """Queue tensor ``x`` (any shape, int8) as one frame; returns the number of beats."""
        flat = np.asarray(x, np.int8).ravel()
        beats = -(-flat.size // self.lanes)
        buf = np.zeros(beats * self.lanes, np.int8)
        buf[:flat.size] = flat
        self.inp.send_nowait(buf.tobytes())
        return beats


class ActivationMonitor:
    def __init__(self, dut, lanes):
        self.lanes = lanes
        self.sink = sink(dut, "m_axis_res")

    def set_backpressure(self, rng, p):
        set_pause(self.sink, rng, p)

    async def receive(self, beats):
        frame = await self.sink.recv()
        data = unpack(frame.tdata, "i1", self.lanes)
        assert data.shape[0] == beats, (f"result frame has {data.shape[0]} beats, expected "
                                        f"{beats} (tlast misplaced?)")
        return data.ravel()


class ActivationScoreboard(Scoreboard):
    def __init__(self, seed):
        super().__init__("activation", seed)

    def check_case(self, label, x, table, flat):
        x = np.asarray(x, np.int8)
        self.check(label, flat[:x.size].reshape(x.shape), apply_table(x, table))
