"""benchmarks/finish.py's approach analysis against hand-computed episodes."""

from __future__ import annotations

import numpy as np
import pytest
from factories import load_benchmark


def episode(hand: list, obj: list, actions: list, success: bool = True) -> dict:
    return {"success": success, "hand": hand, "object": obj, "actions": actions}


def test_approach_measures_an_l_shaped_and_a_straight_approach() -> None:
    finish = load_benchmark("finish")
    still, moved = [0.5, 0.5, 0.0], [0.6, 0.5, 0.0]
    # Over, then down: two unit legs (path 2, displacement sqrt 2), rising 0.1 on the way;
    # the object first moves after the third decision, the episode ends two decisions later.
    l_shape = episode(
        hand=[[0, 0, 0], [1, 0, 0.1], [1, 0, 0], [1, 0, -1], [1, 0, -1], [1, 0, -1]],
        obj=[still, still, still, moved, moved, moved],
        actions=[[1, 0, 0.5, 0], [0, 0, -0.5, 0.0], [0, 0, -1, 0.6], [1, 0, 0, 1], [1, 0, 0, 1]],
    )
    straight = episode(
        hand=[[0, 0, 0], [0.5, 0, -0.5], [1, 0, -1], [1, 0, -1]],
        obj=[still, still, moved, moved],
        actions=[[1, 0, -1, 0.4], [1, 0, -1, 0.4], [1, 0, 0, 1]],
    )
    failed = episode(
        hand=[[0, 0, 0], [9, 9, 9]], obj=[still, moved], actions=[[0] * 4], success=False
    )
    never_moved = episode(hand=[[0, 0, 0], [1, 0, 0]], obj=[still, still], actions=[[0] * 4])

    one = finish.approach([l_shape, failed, never_moved])
    assert one["episodes"] == 1  # failures and episodes whose object never moved are left out
    assert one["approach"] == 3 and one["after"] == 2
    path = np.hypot(1, 0.1) + 0.1 + 1  # over 1 while rising 0.1, down 0.1, down 1
    assert one["path_ratio"] == pytest.approx(path / np.sqrt(2))
    assert one["rise"] == pytest.approx(0.1)
    assert one["mean_z_command"] == pytest.approx((0.5 - 0.5 - 1) / 3)
    assert one["grip_closes"] == 2

    both = finish.approach([l_shape, straight])
    assert both["episodes"] == 2 and both["approach"] == 2.5 and both["after"] == 1.5
    assert both["path_ratio"] == pytest.approx((path / np.sqrt(2) + 1) / 2)
    assert both["rise"] == pytest.approx(0.05)
    assert both["grip_closes"] == pytest.approx(1.0)  # 2 and 0
    assert finish.approach([failed]) == {}
