import json

import pytest

from synthagent_jax.envs.task import Task
from synthagent_jax.rewards import aggregation, rubric
from synthagent_jax.envs.rubric_schema import Check
from synthagent_jax.rewards.checks import check_score, evaluate_check, final_answer
from synthagent_jax.rewards.judge import HTTPJudge, ItemScore, parse_json_verdicts
from synthagent_jax.rewards.math_answers import verify_math
from synthagent_jax.llm.scripted import ScriptedLLM
from tests.envs.fixtures import make_task, task_dict


def _call(name, **args):
  return {"role": "assistant", "content": "",
          "tool_calls": [{"type": "function", "function": {"name": name, "arguments": args}}]}


GOOD = [
    {"role": "user", "content": "Please cancel my order."},
    {"role": "assistant", "content": "Sure, what is your order number?"},
    {"role": "user", "content": "My order id is A17."},
    _call("cancel_order", order_id="a17 ", reason="size"),
    {"role": "tool", "name": "cancel_order", "content": '{"ok": true}'},
    {"role": "assistant", "content": "<answer>Order A17 has been CANCELLED.</answer>"},
]
BAD = [
    {"role": "user", "content": "Please cancel my order."},
    _call("find_user", email="ada@example.com"),
    {"role": "tool", "name": "find_user", "content": "..."},
    _call("cancel_order", order_id="B1"),
    {"role": "assistant", "content": "<answer>Done.</answer>"},
]


def test_checks_on_messages():
  task = make_task()
  checks = {it.id: it.check for _, it in task.rubric.items() if it.check}
  assert [evaluate_check(checks[k], task, GOOD) for k in ("s1", "s2", "i1", "f1")] == [
      True, True, True, True]
  assert [evaluate_check(checks[k], task, BAD) for k in ("s1", "s2", "i1", "f1")] == [
      False, False, False, False]
  # OpenAI wire format (JSON-string arguments) is understood too.
  wire = [{"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
      "name": "cancel_order", "arguments": json.dumps({"order_id": "A17"})}}]}]
  assert evaluate_check(checks["s1"], task, wire)
  assert final_answer(GOOD) == "Order A17 has been CANCELLED."
  assert final_answer(GOOD[:3]) is None


def test_partial_credit_for_tool_called():
  task = make_task()
  check = Check(type="tool_called", name="book", arguments={"day": "Mon", "size": 3})
  grade = lambda *calls: check_score(check, task, list(calls), partial_credit=True)
  assert grade() == (False, 0.0)                                  # never called
  assert grade(_call("other", day="Mon", size=3)) == (False, 0.0)  # wrong tool
  assert grade(_call("book")) == (False, pytest.approx(1 / 3))     # name only
  assert grade(_call("book", day="mon ", size=4)) == (False, pytest.approx(2 / 3))
  # The best single call counts; matches are not pooled across calls.
  assert grade(_call("book", day="Mon", size=4),
               _call("book", day="Tue", size=3)) == (False, pytest.approx(2 / 3))
  assert grade(_call("book", day="Mon", size=3, extra=1)) == (True, 1.0)
  assert check_score(check, task, [_call("book")]) == (False, 0.0)  # off by default
  # In a rubric: s1 (weight 2) gets 1/2 for the right tool with the wrong order id; s2, i1 and
  # the unjudged i2 (weight 1 each) score 0; f1 is respected: weighted = 2 * 0.5 / 5.
  convo = [_call("cancel_order", order_id="B1"),
           {"role": "assistant", "content": "<answer>x</answer>"}]
  res = rubric.score(task, convo, aggregation="weighted", partial_credit=True)
  assert res.reward == pytest.approx(0.2)
  s1 = next(v for v in res.verdicts if v.item_id == "s1")
  assert (s1.met, s1.score) == (False, 0.5)
  assert rubric.score(task, convo, aggregation="weighted").reward == 0.0


def _sections(sub, inter, forb):
  return {"subgoals": sub, "interactions": inter, "forbidden": forb}


def test_aggregation_presets_against_hand_computed_values():
  syn = aggregation.get("synthagent")
  wtd = aggregation.get("weighted")
  sub = [(2.0, 1.0, True), (1.0, 0.0, False)]       # weighted subgoal ratio 2/3
  inter = [(1.0, 1.0, True), (1.0, 0.0, False)]     # 1/2
  ok_forb = [(1.0, 1.0, True), (1.0, 0.0, False)]   # 1 of 2 respected: exactly half -> allowed
  assert syn(_sections(sub, inter, ok_forb)) == pytest.approx(0.7 * 2 / 3 + 0.3 * 0.5)
  bad_forb = [(1.0, 1.0, True), (1.0, 0.0, False), (1.0, 0.0, False)]  # 1 of 3 < half
  assert syn(_sections(sub, inter, bad_forb)) == 0.0
  low_sub = [(1.0, 1.0, True), (3.0, 0.0, False)]   # ratio 0.25 < 0.3
  assert syn(_sections(low_sub, inter, [])) == 0.0
  assert syn(_sections(sub, [], [])) == pytest.approx(2 / 3)  # no interaction items
  # P(yes)-style scores enter the ratios: 0.7 * 0.8 + 0.3 * 0.4
  assert syn(_sections([(1.0, 0.8, True)], [(1.0, 0.4, False)], [])) == pytest.approx(0.68)
  # weighted: sum(w * met) / sum(w) over subgoals + interactions: (2 + 1) / (2 + 1 + 1 + 1)
  assert wtd(_sections(sub, inter, [(1.0, 1.0, True)])) == pytest.approx(3 / 5)
  assert wtd(_sections(sub, inter, ok_forb)) == 0.0  # any forbidden violated
  with pytest.raises(ValueError, match="unknown aggregation 'nope'"):
    aggregation.get("nope")


def test_binary_task_completed_preset():
  binary = aggregation.get("binary")
  all_sub = [(2.0, 1.0, True), (1.0, 1.0, True)]
  assert binary(_sections(all_sub, [(1.0, 0.0, False)], [(1.0, 1.0, True)])) == 1.0  # asks ignored
  assert binary(_sections(all_sub, [], [])) == 1.0                       # empty sections
  assert binary(_sections([(2.0, 1.0, True), (1.0, 0.0, False)], [], [])) == 0.0  # one missed
  assert binary(_sections(all_sub, [], [(1.0, 1.0, True), (1.0, 0.0, False)])) == 0.0
  # P(yes) 0.9 but judged "no": not met, so not completed; a failed judge item (0.0, False) too.
  assert binary(_sections([(1.0, 0.9, False)], [], [])) == 0.0
  assert binary(_sections([], [], [])) == 0.0  # nothing to complete
  # On the fixture task: GOOD meets s1 and s2 and respects f1 -> 1.0 whatever i2's judge says.
  assert rubric.score(make_task(), GOOD, aggregation="binary").reward == 1.0
  assert rubric.score(make_task(), GOOD[:3], aggregation="binary").reward == 0.0


class _FixedJudge:
  def __init__(self, score):
    self.score, self.calls = score, []

  def judge(self, requests):
    self.calls.append(requests)
    return [[ItemScore(self.score, self.score >= 0.5) for _ in r.items] for r in requests]


def test_score_batch_mixes_checks_and_one_judge_call():
  task = make_task()
  judge = _FixedJudge(0.9)
  good, bad = rubric.score_batch([task, task], [GOOD, BAD], judge)
  assert len(judge.calls) == 1 and len(judge.calls[0]) == 2
  assert [(v.item_id, v.source) for v in good.verdicts] == [
      ("s1", "check"), ("s2", "check"), ("i1", "check"), ("i2", "judge"), ("f1", "check")]
  # good: subgoals 1.0; interactions (1 + 0.9) / 2; forbidden respected.
  assert good.reward == pytest.approx(0.7 + 0.3 * 0.95)
  assert bad.reward == 0.0  # The only forbidden item was violated.
  assert good.verdicts[3].to_dict() == {"section": "interactions", "id": "i2", "text": "Is polite.",
                                        "met": True, "score": 0.9, "source": "judge"}
  weighted = rubric.score(task, GOOD, judge, aggregation="weighted")
  assert weighted.reward == pytest.approx((2 + 1 + 1 + 0.9) / 5)
  unjudged = rubric.score(task, GOOD)
  assert unjudged.num_unjudged == 1 and unjudged.verdicts[3].source == "unjudged"
  assert unjudged.reward == pytest.approx(0.7 + 0.3 * 0.5)


def _judge_only_task():
  d = task_dict()
  for section in ("subgoals", "interactions", "forbidden"):
    for item in d["rubric"][section]:
      item["check"] = None
  return Task.from_dict(d)


def test_http_judge_one_call_per_trajectory_retries_then_scores_zero():
  task = _judge_only_task()
  ids = [it.id for _, it in task.rubric.items()]
  replies = {
      "A": ['```json\n{"s1": true, "s2": "yes", "i1": {"met": false}, "i2": 1, "f1": "no"}\n```'],
      "B": ["I think it went well!", '{"verdicts": [{"id": "s1", "met": true}]}',
            '{"s2": true}'],
  }

  def fn(conv):
    key = "A" if "TRAJ-A" in conv[1]["content"] else "B"
    return replies[key].pop(0)

  llm = ScriptedLLM(fn)
  judge = HTTPJudge(llm, max_retries=2)
  conv_a = [{"role": "user", "content": "TRAJ-A"}]
  conv_b = [{"role": "user", "content": "TRAJ-B"}]
  a, b = rubric.score_batch([task, task], [conv_a, conv_b], judge)
  assert [v.met for v in a.verdicts] == [True, True, False, True, False]
  assert a.judge_failures == 0
  # B: s1 from the 2nd reply, s2 from the 3rd; i1, i2, f1 never graded -> 0 and counted.
  assert [(v.met, v.score) for v in b.verdicts] == [(True, 1.0), (True, 1.0), (False, 0.0),
                                                    (False, 0.0), (False, 0.0)]
  assert b.judge_failures == 3
  assert len(llm.calls) == 4  # A once, B three times.
  prompt = llm.calls[0][1]["content"]
  assert task.full_task in prompt and all(f'id "{i}"' in prompt for i in ids)
  assert parse_json_verdicts('{"s1": "maybe"}', ["s1"]) == {}


def test_math_verifier():
  assert verify_math("<answer>\\frac{1}{2}</answer>", "0.5")
  assert verify_math("The answer is <answer>\\sqrt{4}</answer>", "2")
  assert not verify_math("<answer>4</answer>", "5")
  assert not verify_math("no idea", "2")


def test_http_judge_keeps_successes_of_a_partly_failed_batch():
  from synthagent_jax.llm.openai_http import ChatResult, LLMBatchError
  task = _judge_only_task()
  all_true = json.dumps({it.id: True for _, it in task.rubric.items()})

  class HalfBroken:
    calls = 0

    def chat(self, convs, sampling=None):
      HalfBroken.calls += 1
      raise LLMBatchError([ChatResult(all_true, None, 1)] +
                          [ChatResult(None, "HTTP 500", 3)] * (len(convs) - 1))

  judge = HTTPJudge(HalfBroken(), max_retries=1)
  conv = [{"role": "user", "content": "x"}]
  ok, failed = rubric.score_batch([task, task], [conv, conv], judge)
  assert all(v.met for v in ok.verdicts) and ok.judge_failures == 0
  # The second trajectory failed on the first try; its retry (alone, index 0) succeeded.
  assert all(v.met for v in failed.verdicts) and HalfBroken.calls == 2
