"""sim.scoreboard: the base of every cocotb scoreboard names the unit, the case and the seed."""

import numpy as np
import pytest

from sim.activation_env import ActivationScoreboard
from sim.gemm_env import GemmScoreboard
from sim.pooling_env import PoolScoreboard
from sim.requant_env import RequantScoreboard
from sim.scoreboard import Scoreboard
from sim.softmax_env import SoftmaxScoreboard


def test_counts_and_messages():
    sb = Scoreboard("unit", seed=7)
    sb.check("case 0", [[1, 2], [3, 4]], np.array([[1, 2], [3, 4]]))
    assert (sb.checked, sb.elements) == (1, 4)
    with pytest.raises(AssertionError,
                       match=r"^unit case 1: 1 of 4 elements differ, first at \(1, 0\): got 5, "
                             r"expected 3; lane 0 \(seed=7\)$"):
        sb.check("case 1", [[1, 2], [5, 4]], [[1, 2], [3, 4]], explain=lambda i: f"lane {i[1]}")
    with pytest.raises(AssertionError, match=r"shape \(3,\), expected \(2,\) \(seed=7\)"):
        sb.check("case 2", [1, 2, 3], [1, 2])


def test_every_scoreboard_derives_from_the_base():
    for cls in (GemmScoreboard, SoftmaxScoreboard, ActivationScoreboard, PoolScoreboard,
                RequantScoreboard):
        assert issubclass(cls, Scoreboard), cls
