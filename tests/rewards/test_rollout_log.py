"""rewards/rollout_log.rollout_record: one rollout log line from a Trajectory and its verdicts."""

import json

import numpy as np
import pytest

from synthagent_jax.rewards import rollout_log
from synthagent_jax.rewards.rubric import Verdict
from synthagent_jax.rollout.trajectory import Trajectory
from synthagent_jax.utils import metrics


def _trajectory(**overrides):
  fields = dict(task_id="t1", sample_index=3, token_ids=[1, 2, 3], loss_mask=[0, 1, 1],
                sampler_logprobs=[0.0, -0.5, -0.25], prompt_len=1,
                messages=[{"role": "user", "content": "q"}], turns=[], status="error",
                num_turns=1, num_tool_calls=0, num_response_tokens=2, error="tool crashed")
  return Trajectory(**{**fields, **overrides})


def test_rollout_record_from_real_trajectory_and_verdict():
  traj = _trajectory()
  verdict = Verdict(section="subgoals", item_id="s1", text="t", met=True, score=1.0, source="check")
  rec = rollout_log.rollout_record(2, traj, domain="d", reward=0.0, advantage=0.0,
                                   verdicts=[verdict])
  assert rec["verdicts"] == [verdict.to_dict()]
  assert rec["response_tokens"] == 2 and rec["sample_index"] == 3 and rec["error"] == "tool crashed"
  assert "error" not in rollout_log.rollout_record(
      2, {**traj.to_dict(), "error": None}, domain="d", reward=0.0, advantage=0.0)


def test_rollout_record_keeps_the_verdict_detail_and_takes_log_shaped_dicts():
  traj = _trajectory(status="max_turns", num_turns=4, num_tool_calls=2, num_response_tokens=33,
                     error=None)
  checked = Verdict("forbidden", "f1", "no refunds", False, 0.0, "check",
                    detail={"calls": ["refund"]})
  logged = {"section": "subgoals", "id": "s2", "text": "look up", "met": True, "score": 1.0,
            "source": "judge"}
  rec = rollout_log.rollout_record(5, traj, domain="airline", reward=np.float32(0.25),
                                   advantage=-0.5, verdicts=[checked, logged])
  assert rec["response_tokens"] == 33 and rec["reward"] == 0.25 and rec["status"] == "max_turns"
  assert rec["verdicts"] == [{"section": "forbidden", "id": "f1", "text": "no refunds",
                              "met": False, "score": 0.0, "source": "check",
                              "detail": {"calls": ["refund"]}}, logged]
  metrics.validate_rollout_record(rec)
  json.dumps(rec)


def test_rollout_record_refuses_a_verdict_outside_the_log_format():
  bad = {"section": "subgoals", "id": "s1", "text": "t", "met": "yes", "score": 1.0,
         "source": "check"}
  with pytest.raises(ValueError, match=r"verdicts\[0\] field 'met'"):
    rollout_log.rollout_record(1, _trajectory(), domain="d", reward=0.0, advantage=0.0,
                               verdicts=[bad])
