"""DAPO dynamic sampling (rollout/dynamic_sampling.fill) on scripted rounds."""

import pytest

from synthagent_jax.rollout import dynamic_sampling


def _script(*rounds):
  """sample_round(r) -> the r-th scripted list of informative flags; records calls."""
  calls = []

  def sample_round(r):
    calls.append(r)
    return rounds[r]
  return sample_round, calls


def test_keeps_the_first_informative_groups_across_rounds():
  sample, calls = _script([False, True, False, False], [True, False, True, True], [True] * 4)
  filled = dynamic_sampling.fill(sample, lambda flags: flags, want=3, max_rounds=5)
  assert calls == [0, 1]  # the third round is never drawn: 1 + 3 >= 3 after round 1
  assert filled.kept == [(0, 1), (1, 0), (1, 2)]
  assert filled.short == 0
  assert filled.metrics() == {"rl/dynamic_rounds": 2.0, "rl/dynamic_groups_sampled": 8.0,
                              "rl/dynamic_frac_informative": 4 / 8,
                              "rl/dynamic_groups_short": 0.0}


def test_bounded_rounds_leave_a_short_step():
  sample, calls = _script([False, False], [False, True], [False, False], [True, True])
  filled = dynamic_sampling.fill(sample, lambda flags: flags, want=2, max_rounds=3)
  assert calls == [0, 1, 2]
  assert filled.kept == [(1, 1)]
  assert filled.short == 1
  assert filled.metrics()["rl/dynamic_groups_short"] == 1.0


def test_one_round_is_plain_grpo_with_drops():
  sample, calls = _script([True, False, True, True])
  filled = dynamic_sampling.fill(sample, lambda flags: flags, want=4, max_rounds=1)
  assert calls == [0]
  assert filled.kept == [(0, 0), (0, 2), (0, 3)]


@pytest.mark.parametrize("want,max_rounds", [(0, 1), (2, 0)])
def test_bad_bounds(want, max_rounds):
  with pytest.raises(ValueError, match="want|max_rounds"):
    dynamic_sampling.fill(lambda r: [True], lambda f: f, want=want, max_rounds=max_rounds)
