"""The reward -> advantage stage (rewards/credit.py): turn-level credit against hand-derived values
on the hand-written fixture task, and episode credit as the one-component case.

The fixture's rubric has one item of each kind: s1 (tool_called, weight 2) and f1 (forbidden
tool_not_called) decide tool-call turns, s2 (answer_contains) the answer turn, i1
(asked_user_for) the turns addressed to the user, and i2 (no check: judged) every turn.
"""

import numpy as np
import pytest

from synthagent_jax.rewards import rubric
from synthagent_jax.rewards.rubric import Verdict
from synthagent_jax.rewards import advantages, credit
from synthagent_jax.rollout import batching
from synthagent_jax.rollout.trajectory import Trajectory, TurnRecord
from tests.envs.fixtures import make_task
from tests.rewards.test_rubric import BAD, GOOD


def _verdicts(scores: dict[str, float]) -> list[Verdict]:
  """Verdicts of the fixture's items: score per id (met = score 1; forbidden: met = respected)."""
  task = make_task()
  return [Verdict(section, item.id, item.text, scores[item.id] == 1.0, scores[item.id], "check")
          for section, item in task.rubric.items()]


class _Result:
  def __init__(self, verdicts):
    self.verdicts = verdicts


def _traj(kinds, status="answered", span=2, gap=3):
  """A trajectory whose turns have the given kinds, `span` sampled tokens each, `gap` prompt /
  environment tokens before each turn."""
  turns, ids, mask = [], [], []
  for i, kind in enumerate(kinds):
    ids += [7] * gap
    mask += [0] * gap
    turns.append(TurnRecord(index=i, kind=kind, start=len(ids), num_sampled=span,
                            finish_reason="stop"))
    ids += [5] * span
    mask += [1] * span
  return Trajectory(task_id="shop-001", sample_index=0, token_ids=ids, loss_mask=mask,
                    sampler_logprobs=[0.0] * len(ids), prompt_len=gap, messages=[],
                    turns=turns, status=status, num_turns=len(kinds))


def test_item_kinds_follow_the_check_types():
  assert credit.item_kinds(make_task()) == {"s1": "tool_calls", "s2": "answer", "i1": "message",
                                            "i2": "episode", "f1": "tool_calls"}


def test_component_rewards_of_real_rubric_verdicts():
  task = make_task()
  good, bad = rubric.score_batch([task, task], [GOOD, BAD], judge=None)
  # GOOD: f1 respected and s1 met; "cancelled" answered; asked for the order id; i2 unjudged (0).
  assert credit.component_rewards(task, good.verdicts) == {
      "tool_calls": 1.0, "answer": 1.0, "message": 1.0, "episode": 0.0}
  # BAD: looked the user up by email (f1 violated: its kind's component is 0), never asked.
  assert credit.component_rewards(task, bad.verdicts) == {
      "tool_calls": 0.0, "answer": 0.0, "message": 0.0, "episode": 0.0}


def test_component_rewards_weight_scores_and_gate_on_forbidden():
  task = make_task()
  # s1 (weight 2) half right with f1 respected: tool_calls = 0.5; i2 judged 0.25.
  comps = credit.component_rewards(
      task, _verdicts({"s1": 0.5, "s2": 0.0, "i1": 1.0, "i2": 0.25, "f1": 1.0}))
  assert comps == {"tool_calls": 0.5, "answer": 0.0, "message": 1.0, "episode": 0.25}
  comps = credit.component_rewards(
      task, _verdicts({"s1": 1.0, "s2": 1.0, "i1": 1.0, "i2": 1.0, "f1": 0.0}))
  assert comps["tool_calls"] == 0.0 and comps["answer"] == 1.0
  stray = _verdicts({"s1": 1.0, "s2": 1.0, "i1": 1.0, "i2": 1.0, "f1": 1.0})
  stray.append(Verdict("subgoals", "zz", "not in the rubric", True, 1.0, "check"))
  with pytest.raises(ValueError, match="'zz'.*not in task"):
    credit.component_rewards(task, stray)


def test_turn_advantages_by_hand_drgrpo():
  # Sample 0 asks, calls and answers; sample 1 never asks (calls, then answers).
  task = make_task()
  r0 = _Result(_verdicts({"s1": 1.0, "s2": 0.0, "i1": 1.0, "i2": 0.5, "f1": 1.0}))
  r1 = _Result(_verdicts({"s1": 0.5, "s2": 0.0, "i1": 0.0, "i2": 0.0, "f1": 1.0}))
  t0 = _traj(["message", "tool_calls", "answer"])
  t1 = _traj(["tool_calls", "answer"])
  advs, zero_g = credit.turn_advantages([task], [r0, r1], [t0, t1], 2, "drgrpo")
  # Components (answer, episode, message, tool_calls): s0 (0, .5, 1, 1), s1 (0, 0, 0, .5).
  # drgrpo (r - group mean): s0 (0, .25, .5, .25), s1 (0, -.25, -.5, -.25).
  # s0: message turn .5 + .25 (episode); tool turn .25 + .25; answer turn 0 + .25.
  assert advs[0] == pytest.approx([0.75, 0.5, 0.25])
  # s1 has no message turn, so the message component (-.5) goes to all of its turns.
  assert advs[1] == pytest.approx([-0.25 - 0.25 - 0.5, -0.25 - 0.5])
  assert zero_g.tolist() == [False]


def test_turn_advantages_zero_unfinished_and_zero_variance():
  task = make_task()
  same = lambda: _Result(_verdicts({"s1": 1.0, "s2": 1.0, "i1": 1.0, "i2": 1.0, "f1": 1.0}))
  trajs = [_traj(["message", "answer"]), _traj(["message", "answer"], status="max_turns")]
  advs, zero_g = credit.turn_advantages([task], [same(), same()], trajs, 2, "grpo")
  assert zero_g.tolist() == [True] and advs == [[0.0, 0.0], [0.0, 0.0]]
  # The cut-off episode scores 0 on every component: grpo with G=2 gives -+1/sqrt(2) each,
  # and each of its turns collects all four components (it has no tool-call turn either).
  advs, zero_g = credit.turn_advantages([task], [same(), same()], trajs, 2, "grpo",
                                        zero_unfinished=True)
  h = 1 / np.sqrt(2)
  assert zero_g.tolist() == [False]
  # s0: message turn gets message + episode + tool_calls (no tool turn) = 3h; answer turn
  # answer + episode + tool_calls = 3h.
  assert advs[0] == pytest.approx([3 * h, 3 * h], rel=1e-5)
  assert advs[1] == pytest.approx([-3 * h, -3 * h], rel=1e-5)


def test_turn_advantages_reject_mismatched_inputs():
  task = make_task()
  r = _Result(_verdicts({"s1": 1.0, "s2": 1.0, "i1": 1.0, "i2": 1.0, "f1": 1.0}))
  with pytest.raises(ValueError, match="needs 2 results"):
    credit.turn_advantages([task], [r], [_traj(["answer"])], 2, "grpo")
  short = _Result([v for v in r.verdicts if v.item_id != "s2"])  # no answer item at all
  with pytest.raises(ValueError, match="different rubric items"):
    credit.turn_advantages([task], [r, short], [_traj(["answer"])] * 2, 2, "grpo")


def test_token_advantages_cover_exactly_the_sampled_tokens():
  traj = _traj(["message", "tool_calls"], span=2, gap=3)
  adv = credit.token_advantages(traj, [0.5, -1.0])
  np.testing.assert_array_equal(adv, [0, 0, 0, .5, .5, 0, 0, 0, -1, -1])
  assert ((adv != 0) == np.asarray(traj.loss_mask, bool)).all()
  with pytest.raises(ValueError, match="1 turn advantages for 2 turns"):
    credit.token_advantages(traj, [0.5])


def test_to_batch_takes_per_token_advantages():
  a, b = _traj(["message"]), _traj(["message", "answer"])
  batch = batching.to_batch([a, b], [credit.token_advantages(a, [1.0]),
                                     credit.token_advantages(b, [2.0, -1.0])],
                            pad_id=0, length_multiple=4, rows_multiple=4)
  assert batch["advantages"].shape == batch["input_ids"].shape == (4, 12)
  np.testing.assert_array_equal(batch["advantages"][1, :10], [0, 0, 0, 2, 2, 0, 0, 0, -1, -1])
  assert not batch["advantages"][2:].any()
  with pytest.raises(ValueError, match="has 5 tokens but advantages of shape"):
    batching.to_batch([a], [np.zeros(3)], pad_id=0)


class _Scored(_Result):
  def __init__(self, reward, verdicts=()):
    super().__init__(list(verdicts))
    self.reward = reward


def test_episode_credit_is_the_episode_advantage_on_the_loss_mask():
  """Same numbers as the per-episode advantage [num_groups, G] the loop broadcast before."""
  task = make_task()
  trajs = [_traj(["message", "answer"]), _traj(["tool_calls"]), _traj(["answer"], "max_turns"),
           _traj(["message"])]
  rewards = [0.25, 1.0, 0.75, 0.75]
  for zero_unfinished in (False, True):
    c = credit.assign([task, task], [_Scored(r) for r in rewards], trajs, num_generations=2,
                      estimator="grpo", zero_unfinished=zero_unfinished)
    want_gn = np.asarray(rewards, np.float32).reshape(2, 2)
    if zero_unfinished:
      want_gn = np.asarray(advantages.zero_unfinished(want_gn, [["answered"] * 2,
                                                                ["max_turns", "answered"]]))
    old_gn = np.asarray(advantages.group_advantages(want_gn, "grpo"))
    np.testing.assert_array_equal(c.rewards_gn, want_gn)
    np.testing.assert_array_equal(c.episode_advantages, old_gn.reshape(-1))
    assert c.zero_groups.tolist() == [False, not zero_unfinished]
    assert c.log_fields == [{}] * 4
    batch = batching.to_batch(trajs, c.token_advantages, pad_id=0, length_multiple=8)
    broadcast_bt = old_gn.reshape(-1, 1) * batch["loss_mask"]
    np.testing.assert_array_equal(batch["advantages"], broadcast_bt.astype(np.float32))


def test_turn_credit_through_the_stage():
  task = make_task()
  r0 = _Scored(0.0, _verdicts({"s1": 1.0, "s2": 0.0, "i1": 1.0, "i2": 0.5, "f1": 1.0}))
  r1 = _Scored(0.0, _verdicts({"s1": 0.5, "s2": 0.0, "i1": 0.0, "i2": 0.0, "f1": 1.0}))
  t0, t1 = _traj(["message", "tool_calls", "answer"]), _traj(["tool_calls", "answer"])
  c = credit.assign([task], [r0, r1], [t0, t1], num_generations=2, estimator="drgrpo",
                    scheme="turn")
  # The hand-derived turn advantages of test_turn_advantages_by_hand_drgrpo, on their tokens.
  assert c.log_fields[0]["turn_advantages"] == pytest.approx([0.75, 0.5, 0.25])
  np.testing.assert_allclose(c.token_advantages[1], credit.token_advantages(t1, [-1.0, -0.75]))
  np.testing.assert_allclose(c.episode_advantages, [0.5, -0.875])
  assert c.zero_groups.tolist() == [False]
  with pytest.raises(ValueError, match="unknown credit scheme 'item'; known: episode, turn"):
    credit.assign([task], [r0, r1], [t0, t1], num_generations=2, estimator="grpo", scheme="item")
  with pytest.raises(ValueError, match="needs 2 results"):
    credit.assign([task], [r0], [t0], num_generations=2, estimator="grpo")
