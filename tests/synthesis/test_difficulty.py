"""The difficulty filter's pass rate: a scripted policy plays the fixture task (tests/envs) through
the solve stage's episode loop, scored like training rewards.

The policy alternates between two behaviours on the episodes of a batch (episodes step in
lockstep, so call i of the first turn is episode i):
  even episodes: ask for the order number, cancel A17, answer "Order A17 is cancelled."
    -> s1, s2, i1 met, f1 respected; the scripted judge says i2 ("Is polite") is met:
       synthagent = 0.7 * 1 + 0.3 * 1 = 1.0 -> pass
  odd episodes: answer at once -> no subgoal met -> 0.0 -> fail
so n = 4 episodes pass at rate 2 / 4 = 0.5.
"""

import json
import os

import pytest

from synthagent_jax.envs import tools as tools_lib
from synthagent_jax.envs import user as user_lib
from synthagent_jax.llm import scripted
from synthagent_jax.rewards import judge as judge_lib
from synthagent_jax.synthesis import difficulty, filters, pipeline
from tests.envs.fixtures import task_dict

CANCEL = '<tool_call>\n{"name": "cancel_order", "arguments": {"order_id": "A17"}}\n</tool_call>'


def _policy(good_every: int = 2):
  first_turns = []

  def reply(conv):
    last = conv[-1]["content"]
    if len(conv) == 2:  # system + instruction: the episode's first turn
      first_turns.append(1)
      good = (len(first_turns) - 1) % good_every == 0
      return "Could you tell me your order number?" if good else "<answer>Done.</answer>"
    if "order id is A17" in last:
      return CANCEL
    return "<answer>Order A17 is cancelled.</answer>"
  return scripted.ScriptedLLM(fn=reply)


JUDGE = scripted.ScriptedLLM(fn=lambda conv: json.dumps({"i2": True}))


def _pass_rate(policy):
  return difficulty.make_pass_rate(policy, tools_lib.MockToolSystem(),
                                   user_lib.RuleUserSimulator(), judge_lib.HTTPJudge(JUDGE),
                                   max_turns=4)


@pytest.mark.parametrize("good_every,rate", [(2, 0.5), (1, 1.0), (10 ** 6, 0.25)])
def test_pass_rate_of_a_scripted_policy(good_every, rate):
  # good_every=1: every episode passes; a huge good_every: only the first of 4 passes.
  assert _pass_rate(_policy(good_every))(task_dict(), 4) == pytest.approx(rate)


def test_band_decides_what_the_filter_keeps():
  rates = {"a": 0.0, "b": 0.25, "c": 0.5, "d": 1.0}
  tasks = [{"id": i} for i in rates]
  kept, dropped = filters.difficulty_filter(tasks, lambda t, n: rates[t["id"]], 4)
  assert [t["id"] for t in kept] == ["b", "c"] and dropped == {"too_easy": ["d"],
                                                                 "too_hard": ["a"]}
  kept, dropped = filters.difficulty_filter(tasks, lambda t, n: rates[t["id"]], 4,
                                            band=(0.25, 0.75))
  assert [t["id"] for t in kept] == ["c"] and dropped == {"too_easy": ["d"],
                                                          "too_hard": ["a", "b"]}
  with pytest.raises(ValueError, match="band"):
    filters.difficulty_filter(tasks, lambda t, n: 0.5, 4, band=(0.5, 0.5))
  with pytest.raises(ValueError, match="difficulty_band"):
    pipeline.PipelineConfig(difficulty_band=(0.8, 0.2))


def test_teacher_cli_builds_the_filter_from_config(tmp_path, monkeypatch):
  """launch.synthesize passes a pass rate to the pipeline when a policy is configured."""
  from configs import synth_teacher  # pylint: disable=g-import-not-at-top
  from launch import synthesize  # pylint: disable=g-import-not-at-top
  c = synth_teacher.get_config()
  c.seeds_dir = os.path.join(os.path.dirname(__file__), "..", "..", "data", "seeds")
  c.num_tasks = 1
  c.pipeline.difficulty_samples = 3
  c.pipeline.difficulty_band = (0.1, 0.9)
  seen = {}

  def fake_run_pipeline(seeds, teacher, cfg, out_path, work_dir, progress=None, pass_rate=None):
    seen.update(cfg=cfg, rate=pass_rate(task_dict(), cfg.difficulty_samples))
    return {}

  monkeypatch.setattr(pipeline, "run_pipeline", fake_run_pipeline)
  synthesize.run_teacher(c, str(tmp_path / "t.jsonl"), teacher=JUDGE, policy=_policy(1))
  assert seen["cfg"].difficulty_band == (0.1, 0.9) and seen["cfg"].difficulty_samples == 3
  assert seen["rate"] == 1.0
  c.difficulty.base_url = "http://127.0.0.1:1/v1"
  c.teacher.base_url, c.teacher.model = "http://127.0.0.1:1/v1", "m"
  with pytest.raises(synthesize.SynthConfigError, match="difficulty.model"):
    synthesize.check_config(c)
