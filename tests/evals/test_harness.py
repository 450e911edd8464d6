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


def test_evaluate_scores_unfinished_episodes_zero_as_training_does():
  # Rubric rewards 0.5 and 1.0 for task a, 0.8 and 0.6 for b; a's second and b's first episode
  # ran out of turns / context: as trained with rl.zero_unfinished they score 0.
  rewards = {"a": [0.5, 1.0], "b": [0.8, 0.6]}
  status = {("a", 0): "answered", ("a", 1): "max_turns", ("b", 0): "context_full",
            ("b", 1): "answered"}

  def run(ts, k):
    return [types.SimpleNamespace(task=t, i=i, status=status[t, i]) for t in ts for i in range(k)]

  def score(ts, trajs):
    return [types.SimpleNamespace(reward=rewards[t.task][t.i]) for t in trajs]

  plain = evaluate(run, score, ["a", "b"], k=2)
  assert plain.metrics["eval/reward_mean"] == pytest.approx(2.9 / 4)
  assert "eval/rubric_reward_mean" not in plain.metrics
  res = evaluate(run, score, ["a", "b"], k=2, zero_unfinished=True)
  m = res.metrics
  np.testing.assert_allclose(res.rewards, [[0.5, 0.0], [0.0, 0.6]])
  assert m["eval/reward_mean"] == pytest.approx(1.1 / 4)
  assert m["eval/reward_stderr"] == pytest.approx(np.std([0.5, 0, 0, 0.6], ddof=1) / 2)
  assert m["eval/rubric_reward_mean"] == pytest.approx(2.9 / 4)
  assert m["eval/rubric_reward_stderr"] == pytest.approx(np.std([0.5, 1, 0.8, 0.6], ddof=1) / 2)
  assert m["eval/pass_rate"] == 0.0  # the one full-reward episode never answered
  assert plain.metrics["eval/pass_rate"] == 0.25
  assert (m["eval/status_answered"], m["eval/status_max_turns"]) == (0.5, 0.25)


def test_paired_gain_by_hand():
  from synthagent_jax.evals.harness import paired_gain
  base = {"a": [0.0, 0.5], "b": [1.0, 1.0], "c": [0.2, 0.2], "only_base": [1.0]}
  new = {"a": [0.5, 0.5], "b": [1.0, 0.5], "c": [0.6, 0.2], "only_new": [0.0]}
  # Per-task differences of the k-means: a 0.5 - 0.25 = 0.25, b 0.75 - 1 = -0.25, c 0.4 - 0.2 = 0.2.
  gain, se, n = paired_gain(new, base)
  assert n == 3
  assert gain == pytest.approx(0.2 / 3)
  d = np.array([0.25, -0.25, 0.2])
  assert se == pytest.approx(np.sqrt(np.sum((d - d.mean()) ** 2) / 2) / np.sqrt(3))
  assert paired_gain({"x": [1.0]}, {"y": [0.0]}) == (0.0, 0.0, 0)


def test_item_rates_by_section_and_check_type():
  from synthagent_jax.envs.task import Rubric
  from synthagent_jax.evals.harness import item_rates
  from synthagent_jax.rewards.rubric import Verdict
  rubric = Rubric.from_dict({
      "subgoals": [{"id": "call", "text": "calls f", "check": {"type": "tool_called", "name": "f",
                                                             "arguments": {}}},
                   {"id": "judged", "text": "is polite"}],
      "interactions": [{"id": "ask", "text": "asks", "check": {"type": "asked_user_for",
                                                              "slot": "s"}}],
      "forbidden": [{"id": "no_g", "text": "calls g", "check": {"type": "tool_not_called",
                                                               "name": "g"}}]})
  task = types.SimpleNamespace(rubric=rubric)

  def result(call, judged, ask, no_g):
    return types.SimpleNamespace(verdicts=[
        Verdict("subgoals", "call", "", call == 1.0, call, "check"),
        Verdict("subgoals", "judged", "", judged, float(judged), "judge"),
        Verdict("interactions", "ask", "", ask, float(ask), "check"),
        Verdict("forbidden", "no_g", "", no_g, float(no_g), "check")])

  rates = item_rates([task, task], [result(1.0, True, False, True), result(0.5, False, True, True)],
                     prefix="rollout")
  assert rates == {
      "rollout/met/subgoals.tool_called": 0.5, "rollout/score/subgoals.tool_called": 0.75,
      "rollout/met/subgoals.judged": 0.5, "rollout/score/subgoals.judged": 0.5,
      "rollout/met/interactions.asked_user_for": 0.5,
      "rollout/score/interactions.asked_user_for": 0.5,
      "rollout/met/forbidden.tool_not_called": 1.0, "rollout/score/forbidden.tool_not_called": 1.0}
  with pytest.raises(ValueError, match="2 tasks for 1 results"):
    item_rates([task, task], [result(1.0, True, True, True)])

  # The same verdicts per task: episodes 0-1 of task "a", episode 2 of task "b".
  from synthagent_jax.evals.harness import task_items
  a, b = (types.SimpleNamespace(id=i, rubric=rubric) for i in "ab")
  items = task_items([a, a, b], [result(1.0, True, False, True), result(0.5, False, True, True),
                                 result(0.0, True, True, False)])
  assert items == {
      "a": {"subgoals.tool_called": [1.0, 0.0], "subgoals.judged": [1.0, 0.0],
            "interactions.asked_user_for": [0.0, 1.0], "forbidden.tool_not_called": [1.0, 1.0]},
      "b": {"subgoals.tool_called": [0.0], "subgoals.judged": [1.0],
            "interactions.asked_user_for": [1.0], "forbidden.tool_not_called": [0.0]}}
  with pytest.raises(ValueError, match="1 tasks for 2 results"):
    task_items([a], [result(1.0, True, True, True)] * 2)


def test_paired_gain_by_domain_by_hand():
  from synthagent_jax.evals.harness import paired_gain_by
  domain_of = {"a1": "alpha", "a2": "alpha", "b1": "beta", "c1": "gamma"}
  sft = {"a1": [0.0, 1.0], "a2": [0.5, 0.5], "b1": [0.25, 0.25], "c1": [0.0, 0.0], "x": [1.0]}
  grpo = {"a1": [1.0, 1.0], "a2": [0.5, 1.0], "b1": [0.5, 0.0], "x": [0.0]}
  got = paired_gain_by(domain_of, grpo, sft)
  # alpha: task means SFT 0.5, 0.5; GRPO 1.0, 0.75; differences 0.5, 0.25: mean 0.375, s.d.
  # (ddof 1) 0.25 / sqrt(2), s.e. 0.125. beta: one task, 0.25 -> 0.25. gamma: no GRPO
  # episodes; x: no domain.
  assert list(got) == ["alpha", "beta"]
  assert got["alpha"] == pytest.approx((0.375, 0.125, 2, 0.5, 0.875))
  assert got["beta"] == (0.0, 0.0, 1, 0.25, 0.25)
