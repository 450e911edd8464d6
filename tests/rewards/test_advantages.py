"""Advantage estimators against hand-derived numbers."""

import math

import numpy as np
import pytest

from synthagent_jax.rewards import advantages

REWARDS = [[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [1.0, 2.0, 3.0, 6.0]]


def test_grpo_hand_derived():
  adv = np.asarray(advantages.group_advantages(REWARDS, "grpo"))
  s0 = math.sqrt(1.0 / 3.0) + 1e-6          # deviations +-0.5, sum sq 1, ddof=1 -> var 1/3
  s2 = math.sqrt(14.0 / 3.0) + 1e-6         # deviations -2,-1,0,3, sum sq 14 -> var 14/3
  want = [[0.5 / s0, -0.5 / s0, -0.5 / s0, 0.5 / s0], [0, 0, 0, 0],
          [-2 / s2, -1 / s2, 0.0, 3 / s2]]
  np.testing.assert_allclose(adv, want, rtol=1e-6, atol=1e-7)


def test_drgrpo_hand_derived():
  adv = np.asarray(advantages.group_advantages(REWARDS, "drgrpo"))
  np.testing.assert_allclose(adv, [[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0], [-2, -1, 0, 3]],
                             atol=1e-7)


def test_rloo_hand_derived():
  adv = np.asarray(advantages.group_advantages(REWARDS, "rloo"))
  # Row 3: sum 12, r_i - (12 - r_i) / 3.
  want = [[1 - 1 / 3, 0 - 2 / 3, 0 - 2 / 3, 1 - 1 / 3], [0, 0, 0, 0],
          [1 - 11 / 3, 2 - 10 / 3, 3 - 3, 6 - 2]]
  np.testing.assert_allclose(adv, want, rtol=1e-6, atol=1e-6)


def test_zero_variance_groups():
  flags = np.asarray(advantages.zero_variance_groups(REWARDS))
  assert flags.tolist() == [False, True, False]


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="unknown advantage estimator"):
    advantages.group_advantages(REWARDS, "ppo")
  with pytest.raises(ValueError, match=r"\[num_groups, G\]"):
    advantages.group_advantages([1.0, 2.0], "grpo")
  with pytest.raises(ValueError, match="at least 2"):
    advantages.group_advantages([[1.0], [2.0]], "rloo")
  with pytest.raises(ValueError, match="NaN"):
    advantages.group_advantages([[1.0, float("nan")]], "drgrpo")


def test_zero_unfinished_zeroes_exactly_the_cut_off_episodes():
  rewards = [[0.5, 0.25, 1.0], [0.75, 0.0, 0.5]]
  statuses = [["answered", "max_turns", "user_stopped"], ["context_full", "answered", "error"]]
  out = np.asarray(advantages.zero_unfinished(rewards, statuses))
  np.testing.assert_array_equal(out, [[0.5, 0.0, 1.0], [0.0, 0.0, 0.5]])
  # The shaped group now has variance where the rubric alone said 0.5 vs 0.5.
  tie = np.asarray(advantages.zero_unfinished([[0.5, 0.5]], [["answered", "max_turns"]]))
  assert not bool(advantages.zero_variance_groups(tie)[0])


def test_zero_unfinished_rejects_mismatched_statuses():
  with pytest.raises(ValueError, match="statuses must match"):
    advantages.zero_unfinished([[1.0, 0.0]], [["answered"]])
