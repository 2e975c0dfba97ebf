"""Returns, n-step targets and windows against plain-loop references and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtransformer.returns import (
    discounted_return_to_go,
    find_episodes,
    nstep_targets,
    window_indices,
)


def reference_nstep(rewards, terminals, timeouts, gamma, n):
    """Plain per-step loop: walk forward n steps inside the episode."""
    T = len(rewards)
    ends = [t for t in range(T) if terminals[t] or timeouts[t] or t == T - 1]
    out = []
    for t in range(T):
        end = next(e for e in ends if e >= t)
        terminated = bool(terminals[end])
        total, m = 0.0, 0
        for k in range(n):
            if t + k > end:
                break
            if not terminated and t + k == end:
                break  # a truncated episode has no observation after `end`
            total += gamma**k * rewards[t + k]
            m += 1
        if terminated and t + m - 1 == end:
            out.append((total, t, 0.0, True))
        elif m == 0:
            out.append((rewards[t], t, 0.0, False))
        else:
            out.append((total, t + m, gamma**m, True))
    return out


def flags(T, terminal_at=(), timeout_at=()):
    term = np.zeros(T, bool)
    tout = np.zeros(T, bool)
    term[list(terminal_at)] = True
    tout[list(timeout_at)] = True
    return term, tout


def test_mc_return_to_go_hand_computed() -> None:
    r = np.array([0, 0, 1, 0, 0, 0, 2.0])
    term, tout = flags(7, terminal_at=[2], timeout_at=[5])
    ep = find_episodes(term, tout)
    mc = discounted_return_to_go(r, ep, 0.5)
    np.testing.assert_allclose(mc, [0.25, 0.5, 1.0, 0.0, 0.0, 0.0, 2.0])


def reference_mc(rewards, terminals, timeouts, gamma, tail):
    """Plain loop: sum forward to the episode's end, then add gamma^m * tail after a cut."""
    T = len(rewards)
    ends = [t for t in range(T) if terminals[t] or timeouts[t] or t == T - 1]
    out = []
    for t in range(T):
        end = next(e for e in ends if e >= t)
        total = sum(gamma ** (k - t) * rewards[k] for k in range(t, end + 1))
        if not terminals[end]:
            total += gamma ** (end + 1 - t) * tail
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("tail", [0.0, -10.0])
def test_mc_return_to_go_with_negative_rewards_bounds_the_cut_future(tail) -> None:
    rng = np.random.default_rng(3)
    r = -rng.integers(0, 3, 12).astype(float)  # costs of 0, 1 or 2 per step
    term, tout = flags(12, terminal_at=[3], timeout_at=[8])
    mc = discounted_return_to_go(r, find_episodes(term, tout), 0.9, truncated_value=tail)
    np.testing.assert_allclose(mc, reference_mc(r, term, tout, 0.9, tail), rtol=1e-12)
    # Hand-computed: the last step before the cut at 8 gets its reward plus gamma times the
    # tail; the terminal episode (steps 0-3) never sees the tail.
    np.testing.assert_allclose(mc[8], r[8] + 0.9 * tail)
    np.testing.assert_allclose(mc[3], r[3])


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize(
    "terminal_at,timeout_at",
    [((4,), (9,)), ((), (4, 9)), ((4, 9), ()), ((0,), (1, 6)), ((), ())],
)
def test_nstep_matches_reference(n, terminal_at, timeout_at) -> None:
    rng = np.random.default_rng(n)
    r = rng.uniform(0, 1, 10)
    term, tout = flags(10, terminal_at, timeout_at)
    got = nstep_targets(r, find_episodes(term, tout), 0.9, n)
    ref = reference_nstep(r, term, tout, 0.9, n)
    np.testing.assert_allclose(got.reward_sum, [x[0] for x in ref])
    assert got.bootstrap_index.tolist() == [x[1] for x in ref]
    np.testing.assert_allclose(got.bootstrap_discount, [x[2] for x in ref])
    assert got.td_valid.tolist() == [x[3] for x in ref]


def test_nstep_hand_computed_terminal_vs_truncation() -> None:
    # Episode A: steps 0-2, terminal at 2 with reward 1. Episode B: steps 3-5, truncated.
    r = np.array([0, 0, 1.0, 0, 0, 0])
    term, tout = flags(6, terminal_at=[2], timeout_at=[5])
    got = nstep_targets(r, find_episodes(term, tout), 0.5, 2)
    # t=0: r0 + .5 r1, bootstrap from s2 with .25; t=1: r1 + .5 r2 then terminal: no bootstrap.
    np.testing.assert_allclose(got.reward_sum[:3], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(got.bootstrap_discount, [0.25, 0.0, 0.0, 0.25, 0.5, 0.0])
    assert got.bootstrap_index.tolist() == [2, 1, 2, 5, 5, 5]
    # The truncated episode's last step has no successor: out of the TD loss, not terminal.
    assert got.td_valid.tolist() == [True, True, True, True, True, False]


def test_nstep_never_crosses_into_next_episode() -> None:
    r = np.array([0, 0, 0, 1.0, 1.0])
    term, tout = flags(5, terminal_at=[2, 4])
    got = nstep_targets(r, find_episodes(term, tout), 0.9, 4)
    assert got.reward_sum[0] == 0.0  # the next episode's rewards never leak in
    assert got.bootstrap_discount[0] == 0.0


def test_window_pads_with_first_frame_of_episode() -> None:
    term, tout = flags(6, terminal_at=[1], timeout_at=[5])
    w = window_indices(find_episodes(term, tout), 3)
    assert w.tolist() == [[0, 0, 0], [0, 0, 1], [2, 2, 2], [2, 2, 3], [2, 3, 4], [3, 4, 5]]


episode_lengths = st.lists(st.integers(1, 12), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(lengths=episode_lengths, w=st.integers(1, 5), data=st.data())
def test_windows_and_episodes_properties(lengths, w, data) -> None:
    T = sum(lengths)
    ends = np.cumsum(lengths) - 1
    kinds = data.draw(st.lists(st.booleans(), min_size=len(lengths), max_size=len(lengths)))
    term, tout = np.zeros(T, bool), np.zeros(T, bool)
    for e, is_term in zip(ends, kinds, strict=True):
        (term if is_term else tout)[e] = True
    ep = find_episodes(term, tout)
    assert ep.lengths.tolist() == lengths
    idx = window_indices(ep, w)
    start = ep.starts[ep.episode_of_step]
    assert np.all(idx[:, -1] == np.arange(T))
    assert np.all(idx >= start[:, None])  # never reaches into the previous episode
    assert np.all(np.diff(idx, axis=1) >= 0)
    assert np.all(ep.episode_of_step[idx] == ep.episode_of_step[:, None])
