"""KEEP / DISCARD by judge-backed agreement: a rubric item without a structured check is graded
by the judge (the teacher, through the HTTP judge protocol), as training rewards are.

Hand-derived rewards under the `synthagent` preset for the rubric below (2 subgoals, 1
interaction, 1 forbidden item; both solutions do everything the checks look for):
  judge says sg_1 is met:     0.7 * (2 / 2) + 0.3 * 1 = 1.0   -> passes pass_reward 1.0: KEEP
  judge says sg_1 is not met: 0.7 * (1 / 2) + 0.3 * 1 = 0.65  -> fails: DISCARD
  no judge (the old code):    sg_1 unjudged, scores 0 -> 0.65 -> DISCARD whatever the solutions
"""

import json

import pytest

from synthagent_jax.llm import scripted
from synthagent_jax.rewards import judge as judge_lib
from synthagent_jax.synthesis import pipeline
from synthagent_jax.synthesis import stage_rubric


def _tool(name, kind):
  return {"type": "function", "kind": kind, "function": {
      "name": name, "description": f"{name} by order id",
      "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                     "required": ["order_id"]}}}


def _solution():
  return {"status": "answered", "num_errors": 0, "messages": [
      {"role": "user", "content": "Where is my order?"},
      {"role": "assistant", "content": "Could you tell me your order id?"},
      {"role": "user", "content": "My order id is A1."},
      {"role": "assistant", "content": "", "tool_calls": [
          {"type": "function", "function": {"name": "get_order",
                                            "arguments": {"order_id": "A1"}}}]},
      {"role": "tool", "name": "get_order", "content": '{"status": "shipped"}'},
      {"role": "assistant", "content": "<answer>Your order A1 has shipped.</answer>"}]}


REC = {"id": "r1", "domain": "retail", "instruction": "Where is my order?",
       "full_task": "Order A1 has shipped; tell the user its status.",
       "tools": [_tool("get_order", "read"), _tool("cancel_order", "write")],
       "facts": {"A1": "shipped"}, "responses": [], "persona": "a customer",
       "private_info": {"order_id": "A1"}, "forbidden": "never cancel an order",
       "workflow": ["look up the order"], "solutions": [_solution(), _solution()]}

RUBRIC_REPLY = json.dumps({
    "subgoals": [
        {"text": "Looks up order A1",
         "check": {"type": "tool_called", "name": "get_order", "arguments": {"order_id": "A1"}}},
        {"text": "Tells the user the order has shipped", "check": None}],
    "interactions": [{"text": "Asks for the order id",
                      "check": {"type": "asked_user_for", "slot": "order_id"}}],
    "forbidden": [{"text": "Cancels the order",
                   "check": {"type": "tool_not_called", "name": "cancel_order"}}],
    "verdict": "KEEP", "reason": "clear"})

CFG = pipeline.PipelineConfig(max_retries=0, num_solutions=2, min_agreement=1.0, pass_reward=1.0)


def _teacher(judge_met: bool):
  def reply(conv):
    if conv[0]["content"] == judge_lib.JSON_JUDGE_SYSTEM:
      return json.dumps({"sg_1": judge_met})
    return RUBRIC_REPLY
  return scripted.ScriptedLLM(fn=reply)


@pytest.mark.parametrize("judge_met,kept,rewards", [(True, True, [1.0, 1.0]),
                                                    (False, False, [0.65, 0.65])])
def test_keep_follows_the_judge(judge_met, kept, rewards):
  teacher = _teacher(judge_met)
  (ans,) = stage_rubric.run([REC], teacher, CFG)
  judge_calls = [c for c in teacher.calls if c[0]["content"] == judge_lib.JSON_JUDGE_SYSTEM]
  assert len(judge_calls) == 2  # one per solution, in one batch
  assert "Tells the user the order has shipped" in judge_calls[0][1]["content"]
  assert "Your order A1 has shipped." in judge_calls[0][1]["content"]  # it saw the solution
  if kept:
    assert ans.ok and ans.value["solution_rewards"] == pytest.approx(rewards)
    assert ans.value["reference"] == REC["solutions"][0]["messages"]
  else:
    assert not ans.ok and ans.reason == "solutions_disagree"
    assert "0.65" in ans.detail


def test_without_a_judge_judged_items_score_zero():
  rubric = stage_rubric.parse_rubric(json.loads(RUBRIC_REPLY))
  rewards, reference = stage_rubric.judge_agreement(REC, rubric, 1.0)
  assert rewards == pytest.approx([0.65, 0.65]) and reference is None


def test_unparsable_judge_reply_is_not_a_pass():
  # A judge reply without verdicts: the item scores 0 (as in training), so the task is dropped.
  teacher = scripted.ScriptedLLM(fn=lambda conv: "I think so." if conv[0]["content"] ==
                                 judge_lib.JSON_JUDGE_SYSTEM else RUBRIC_REPLY)
  (ans,) = stage_rubric.run([REC], teacher, CFG)
  assert not ans.ok and ans.reason == "solutions_disagree"
