"""The base of every cocotb scoreboard: bit-exact comparison of a unit's outputs with what its
golden model gives (the scoreboards call the golden functions, never copy them).

A failure is an ``AssertionError`` that names the unit, the case and the seed, so that the run
can be replayed (``NPU_SEED=<seed>``); ``checked`` and ``elements`` count what matched.
"""

import numpy as np

__all__ = ["Scoreboard"]


class Scoreboard:
    def __init__(self, unit, seed):
        self.unit = unit
        self.seed = seed
        self.checked = 0
        self.elements = 0

    def fail(self, label, problem):
        raise AssertionError(f"{self.unit} {label}: {problem} (seed={self.seed})")

    def check(self, label, got, want, explain=None):
        """Compare two arrays element for element. ``explain(index)``: more words on the first
        difference for the message (e.g. the inputs that produced it)."""
        got = np.asarray(got)
        want = np.asarray(want)
        if got.shape != want.shape:
            self.fail(label, f"shape {got.shape}, expected {want.shape}")
        if not np.array_equal(got, want):
            bad = np.argwhere(got != want)
            idx = tuple(int(v) for v in bad[0])
            more = f"; {explain(idx)}" if explain else ""
            self.fail(label, f"{len(bad)} of {want.size} elements differ, first at {idx}: got "
                             f"{got[idx]}, expected {want[idx]}{more}")
        self.checked += 1
        self.elements += want.size
