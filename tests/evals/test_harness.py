import types

import numpy as np
import pytest

from synthagent_jax.evals.harness import evaluate, pass_at_k_all


def test_pass_hat_k_hand_values():
  passed = np.array([[True, True], [True, False], [False, False]])
  assert pass_at_k_all(passed) == pytest.approx(1 / 3)


def test_evaluate_metrics_by_hand():
  tasks = ["a", "b"]
  rewards = {"a": [1.0, 1.0], "b": [1.0, 0.5]}

  def run(ts, k):
    return [types.SimpleNamespace(task=t, i=i, status="answered") for t in ts for i in range(k)]

  def score(ts, trajs):
    return [types.SimpleNamespace(reward=rewards[t.task][t.i]) for t in trajs]

  res = evaluate(run, score, tasks, k=2)
  m = res.metrics
  assert m["eval/reward_mean"] == pytest.approx(3.5 / 4)
  assert m["eval/pass_rate"] == pytest.approx(3 / 4)
  assert m["eval/pass^2"] == pytest.approx(1 / 2)
  assert m["eval/status_answered"] == 1.0
  # Sample std with ddof=1 over the 4 rewards, divided by sqrt(4).
  assert m["eval/reward_stderr"] == pytest.approx(np.std([1, 1, 1, .5], ddof=1) / 2)
