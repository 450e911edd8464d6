"""DAPO dynamic sampling wired into the GRPO step (launch/train_rollouts.sample_rounds and
combine_rounds) on a scripted reward: tasks whose G rewards tie are refilled from fresh tasks, so
the learner always gets tasks_per_step informative groups."""

import types

import ml_collections
import numpy as np

from launch import train_eval
from launch import train_rollouts
from synthagent_jax.rollout.agent_loop import LoopStats

G = 4


def _config(dynamic, max_rounds=4, tasks_per_step=3):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.rl = ml_collections.ConfigDict(dict(
      num_generations=G, tasks_per_step=tasks_per_step, advantage="grpo", zero_unfinished=False,
      credit="episode", drop_zero_variance=True, dynamic_sampling=dynamic,
      dynamic_max_rounds=max_rounds))
  c.reward = ml_collections.ConfigDict(dict(aggregation="weighted", partial_credit=True))
  return c


class FakeLoop:
  """G 'episodes' per task; each remembers its task and sample index."""

  def __init__(self):
    self.stats = LoopStats()
    self.seeds = []

  def run(self, tasks, g, seed):
    self.seeds.append(seed)
    self.stats = LoopStats(rounds=1, sampled_tokens=10 * len(tasks) * g, total_s=1.0)
    return [types.SimpleNamespace(task=t, j=j, status="answered", token_ids=[1, 2, 3],
                                  loss_mask=[0, 1, 1]) for t in tasks for j in range(g)]


def scripted_score(run, tasks, trajs):
  """Task n scores j / G on sample j when n is a multiple of 3, else 0.5 on every sample (a tie:
  zero variance, no gradient)."""
  return [types.SimpleNamespace(reward=(t.j / G if t.task % 3 == 0 else 0.5), verdicts=[])
          for t in trajs]


def _sample(monkeypatch, dynamic, **kw):
  monkeypatch.setattr(train_rollouts, "score", scripted_score)
  run = types.SimpleNamespace(config=_config(dynamic, **kw))
  stream = iter(range(1000))
  next_tasks = lambda: [next(stream) for _ in range(run.config.rl.tasks_per_step)]  # 3 fresh tasks
  loop = FakeLoop()
  filled = train_rollouts.sample_rounds(run, loop, next_tasks, step=7)
  return filled, train_rollouts.combine_rounds(filled, G), loop


def test_dynamic_sampling_refills_the_batch(monkeypatch):
  filled, got, loop = _sample(monkeypatch, dynamic=True)
  tasks, trajs, dropped_g, advs, stats, kept = (got[k] for k in (
      "tasks", "trajs", "dropped_g", "advs", "stats", "kept"))
  # Tasks 0, 3, 6 are the informative ones: rounds [0,1,2], [3,4,5], [6,7,8].
  assert len(filled.rounds) == 3 and tasks == list(range(9))
  assert sorted({trajs[i].task for i in kept}) == [0, 3, 6]
  assert len(kept) == 3 * G  # a full batch: tasks_per_step groups of G
  assert [trajs[i].j for i in kept[:G]] == list(range(G))
  # Kept advantages are the group-normalised ones of rewards 0, 1/4, 2/4, 3/4 (non-zero, mean 0),
  # on the sampled tokens only.
  assert all(advs[i][0] == 0.0 and advs[i][1] == advs[i][2] for i in kept)
  kept_advs = np.asarray([advs[i][1] for i in kept]).reshape(3, G)
  np.testing.assert_allclose(kept_advs.mean(axis=1), 0.0, atol=1e-6)
  assert np.all(np.diff(kept_advs, axis=1) > 0)
  assert dropped_g.tolist() == [False, True, True] * 3
  assert stats.sampled_tokens == 3 * 10 * 3 * G and stats.rounds == 3
  # Round 0 keeps the seed of a run without dynamic sampling; later rounds draw their own.
  assert len(set(loop.seeds)) == 3
  m = filled.metrics()
  assert m["rl/dynamic_rounds"] == 3.0 and m["rl/dynamic_groups_short"] == 0.0
  assert m["rl/dynamic_frac_informative"] == 3 / 9


def test_without_dynamic_sampling_the_batch_shrinks(monkeypatch):
  filled, got, loop = _sample(monkeypatch, dynamic=False)
  tasks, trajs, kept = got["tasks"], got["trajs"], got["kept"]
  assert len(filled.rounds) == 1 and tasks == [0, 1, 2]
  assert sorted({trajs[i].task for i in kept}) == [0]  # the tied groups are dropped
  _, _, loop_dyn = _sample(monkeypatch, dynamic=True)
  assert loop.seeds[0] == loop_dyn.seeds[0]


def test_rounds_are_bounded(monkeypatch):
  filled, got, _ = _sample(monkeypatch, dynamic=True, max_rounds=2)
  kept = got["kept"]
  assert len(filled.rounds) == 2 and filled.short == 1 and len(kept) == 2 * G


def test_gains_pair_by_task_and_report_unseen_domains(tmp_path):
  import json
  import os
  os.makedirs(tmp_path / "eval")
  run = types.SimpleNamespace(workdir=str(tmp_path))
  sft = {"a": [0.0, 0.5], "b": [1.0, 1.0], "c": [0.0, 0.0]}
  init = {"a": [0.0, 0.0], "b": [0.0, 0.0], "c": [0.0, 0.0]}
  for name, rewards in (("step_000000", sft), ("init", init)):
    with open(tmp_path / "eval" / f"{name}_rewards.json", "w") as f:
      json.dump(rewards, f)
  grpo = {"a": [0.5, 0.5], "b": [1.0, 0.5], "c": [0.5, 0.5]}
  g = train_eval.gains(run, grpo, "eval", unseen={"a", "c"})
  # Differences vs SFT: a +0.25, b -0.25, c +0.5; unseen (a, c): +0.25, +0.5.
  assert g["eval/gain_vs_sft"] == np.mean([0.25, -0.25, 0.5])
  assert g["eval/gain_vs_sft_se"] == np.std([0.25, -0.25, 0.5], ddof=1) / np.sqrt(3)
  assert g["eval/gain_vs_sft_unseen"] == 0.375
  assert g["eval/gain_vs_sft_unseen_se"] == np.std([0.25, 0.5], ddof=1) / np.sqrt(2)
  assert g["eval/gain_vs_init"] == np.mean([0.5, 0.75, 0.5])
  assert "eval/gain_vs_init_unseen" in g
  assert "eval/gain_vs_sft_unseen" not in train_eval.gains(run, grpo, "eval", unseen=set())
  assert not any("/met/" in k for k in g)  # no items given: no item gains

  # Item met-rates, paired by task against step 0's: task a's tool-call rate 0.5 -> 1.0, b's
  # 0.0 -> 0.5 (its two items over one episode each side), c has no tool-call item; asks only
  # in a (0 -> 1).
  with open(tmp_path / "eval" / "step_000000_items.json", "w") as f:
    json.dump({"a": {"subgoals.tool_called": [1.0, 0.0], "interactions.asked_user_for": [0.0]},
               "b": {"subgoals.tool_called": [0.0, 0.0]}, "c": {}}, f)
  items = {"a": {"subgoals.tool_called": [1.0, 1.0], "interactions.asked_user_for": [1.0]},
           "b": {"subgoals.tool_called": [1.0, 0.0]}, "c": {}}
  g = train_eval.gains(run, grpo, "eval", unseen=set(), items=items)
  assert g["eval/gain_vs_sft/met/subgoals.tool_called"] == 0.5
  assert g["eval/gain_vs_sft_se/met/subgoals.tool_called"] == 0.0  # both tasks gain 0.5
  assert g["eval/gain_vs_sft/met/interactions.asked_user_for"] == 1.0
  assert g["eval/gain_vs_sft_se/met/interactions.asked_user_for"] == 0.0  # one task
  assert g["eval/gain_vs_sft"] == np.mean([0.25, -0.25, 0.5])  # the reward gains unchanged
