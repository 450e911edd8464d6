"""benchmarks/e2e_tiny: the per-domain table, against values worked out by hand."""

import pytest

from benchmarks import e2e_tiny


def test_domain_gains_by_hand():
  domain_of = {"a1": "alpha", "a2": "alpha", "b1": "beta", "c1": "gamma"}
  sft = {"a1": [0.0, 1.0], "a2": [0.5, 0.5], "b1": [0.25, 0.25], "c1": [0.0, 0.0]}
  grpo = {"a1": [1.0, 1.0], "a2": [0.5, 1.0], "b1": [0.5, 0.0]}  # c1 not evaluated after GRPO
  rows = e2e_tiny.domain_gains(domain_of, sft, grpo, unseen={"beta"})
  # alpha: task means SFT 0.5, 0.5 -> 0.5; GRPO 1.0, 0.75 -> 0.875; differences 0.5 and 0.25:
  # mean 0.375, s.d. (ddof 1) 0.1768, s.e. 0.125. beta: one task, 0.25 -> 0.25, s.e. 0.
  assert rows == ["| alpha |  | 2 | 0.500 | 0.875 | +0.375 ± 0.125 |",
                  "| beta | unseen | 1 | 0.250 | 0.250 | +0.000 ± 0.000 |"]


def test_task_mean():
  assert e2e_tiny._task_mean({"x": [1.0, 0.0], "y": [1.0]}, ["x", "y"]) == pytest.approx(0.75)
