"""Interaction checks that cannot be gamed by asking for everything, and state-based checks.

The task is tests/envs/fixtures.py's: the user holds order_id A17, email and reason; the task
needs only order_id (an asked_user_for item names it, and the cancel call's argument is its
value). Its world has order A17 pending; the scripted cancel_order(A17) sets its status to
"cancelled" and appends "cancelled A17" to a log.
"""

import dataclasses

import pytest

from synthagent_jax.envs import user as user_lib
from synthagent_jax.envs.rubric_schema import Check, Rubric, RubricItem
from synthagent_jax.rewards import checks, rubric
from tests.envs.fixtures import make_task

SHOTGUN = ("To help you, please share your full name, email, phone number, address, zip code, "
           "date of birth, password, reason and order number?")


def _call(name, **args):
  return {"role": "assistant", "content": "",
          "tool_calls": [{"type": "function", "function": {"name": name, "arguments": args}}]}


def _with_items(task, *extra, reference=None):
  """The fixture task plus forbidden items (the Task schema file format does not list the new
  check types yet, so they are built directly)."""
  r = task.rubric
  return dataclasses.replace(task, reference=reference, rubric=Rubric(
      subgoals=r.subgoals, interactions=r.interactions, forbidden=r.forbidden + tuple(extra)))


NO_OVER_ASKING = RubricItem(id="f2", text="Asks for details the task does not need, or asks "
                            "again for one already given.", check=Check(type="no_over_asking"))


def _episode(task, question, then=()):
  """Agent asks `question`, the rule user answers, then the agent cancels A17 and answers."""
  msgs = [{"role": "user", "content": task.instruction},
          {"role": "assistant", "content": question}]
  msgs.append({"role": "user", "content": user_lib.RuleUserSimulator().reply(task, msgs)[0]})
  msgs += list(then)
  msgs += [_call("cancel_order", order_id="A17"),
           {"role": "tool", "name": "cancel_order", "content": "{}"},
           {"role": "assistant", "content": "<answer>Order A17 is cancelled. Thank you!</answer>"}]
  return msgs


def test_needed_slots_come_from_items_and_reference_arguments():
  task = make_task()
  assert checks.needed_slots(task) == ["order_id"]
  # Without the asked_user_for item the cancel check's argument still names order_id's value.
  r = task.rubric
  bare = dataclasses.replace(task, rubric=Rubric(subgoals=r.subgoals))
  assert checks.needed_slots(bare) == ["order_id"]
  # A reference that looks the user up by email needs the email too.
  ref = [_call("find_user", email="ADA@example.com ")]
  assert checks.needed_slots(dataclasses.replace(bare, reference=ref)) == ["order_id", "email"]


def test_shotgun_question_meets_the_ask_item_but_fails_over_asking():
  task = _with_items(make_task(), NO_OVER_ASKING)
  msgs = _episode(task, SHOTGUN)
  res = rubric.score(task, msgs, aggregation="weighted")
  by_id = {v.item_id: v for v in res.verdicts}
  assert by_id["i1"].met  # the keyword match alone is gamed ...
  f2 = by_id["f2"]
  assert not f2.met       # ... the forbidden item is not
  assert f2.detail["asked"] == ["order_id", "email", "reason"]
  assert f2.detail["needed"] == ["order_id"]
  assert f2.detail["revealed"] == ["order_id", "email", "reason"]  # the rule user answered all
  assert f2.detail["asked_other"] == ["full_name", "phone", "address", "zip", "dob", "password"]
  assert f2.detail["unneeded"] == ["email", "reason", "full_name", "phone", "address", "zip",
                                   "dob", "password"]
  assert f2.detail["asked_again"] == []
  assert by_id["i1"].detail == {"asked": ["order_id", "email", "reason"], "needed": ["order_id"],
                                "revealed": ["order_id", "email", "reason"]}
  # weighted: a violated forbidden item zeroes the reward; synthagent: 1 of 2 forbidden items
  # respected is not fewer than half, so its gate passes and s1, s2, i1 count (i2 unjudged):
  # 0.7 * (2 + 1) / 3 + 0.3 * (1 + 0) / 2 = 0.85.
  assert res.reward == 0.0
  assert rubric.score(task, msgs).reward == pytest.approx(0.85)
  assert f2.to_dict()["detail"]["unneeded"][0] == "email"


def test_a_targeted_question_respects_over_asking():
  task = _with_items(make_task(), NO_OVER_ASKING)
  msgs = _episode(task, "Could you tell me your order number?")
  v = {v.item_id: v for v in rubric.score(task, msgs, aggregation="weighted").verdicts}
  assert v["i1"].met and v["f2"].met
  assert v["f2"].detail == {"asked": ["order_id"], "asked_other": [], "needed": ["order_id"],
                            "revealed": ["order_id"], "unneeded": [], "asked_again": []}


@pytest.mark.parametrize("opening,question_twice", [
    ("Please cancel my order.", True),           # asks again after the user answered
    ("Please cancel my order A17.", False),      # asks for what the opening message gave
])
def test_asking_again_for_a_given_slot_is_over_asking(opening, question_twice):
  task = _with_items(make_task(instruction=opening), NO_OVER_ASKING)
  again = [{"role": "assistant", "content": "Sorry, what was your order id again?"},
           {"role": "user", "content": "A17."}] if question_twice else []
  msgs = _episode(task, "What is your order id?", then=again)
  o = checks.outcome(NO_OVER_ASKING.check, task, msgs)
  assert not o.met and o.detail["asked_again"] == ["order_id"] and o.detail["unneeded"] == []


# ---- world_state ----------------------------------------------------------------------------------
WORLD_STATE = Check(type="world_state")
REFERENCE = [{"role": "user", "content": "Please cancel my order."},
             _call("get_order", order_id="A17"),
             _call("cancel_order", order_id="A17"),
             {"role": "assistant", "content": "<answer>cancelled</answer>"}]


@pytest.mark.parametrize("calls,met,differs", [
    # Different argument strings, same effect: "a17 " normalises to the scripted entry's "A17",
    # and the extra reason does not change which entry matches.
    ([("cancel_order", {"order_id": "a17 ", "reason": "size"})], True, []),
    # Reads and a write the world does not script (unscripted calls never change state).
    ([("get_order", {"order_id": "A17"}), ("cancel_order", {"order_id": "B1"})], False,
     ["log", "orders.A17.status"]),
    # Cancelling twice: the status is the same, but the log holds two entries instead of one.
    ([("cancel_order", {"order_id": "A17"})] * 2, False, ["log"]),
    ([], False, ["log", "orders.A17.status"]),
])
def test_world_state_compares_effects_not_strings(calls, met, differs):
  task = make_task(reference=REFERENCE)
  msgs = [_call(name, **args) for name, args in calls]
  o = checks.outcome(WORLD_STATE, task, msgs)
  assert o.met is met and o.score == float(met)
  assert o.detail["differs_at"] == differs
  assert o.detail["expected_writes"] == ["cancel_order"]
  assert o.detail["agent_writes"] == [n for n, _ in calls if n == "cancel_order"]


def test_world_state_replays_on_fresh_copies():
  task = make_task(reference=REFERENCE)
  msgs = [_call("cancel_order", order_id="A17")]
  assert checks.outcome(WORLD_STATE, task, msgs).met
  assert checks.outcome(WORLD_STATE, task, msgs).met  # no state carried over between replays
  assert task.world["state"]["orders"]["A17"]["status"] == "pending"  # the task is untouched
  state, writes = checks.replay_writes(task, checks.tool_calls(msgs))
  assert state == {"orders": {"A17": {"item": "teapot", "status": "cancelled"}},
                   "log": ["cancelled A17"]} and writes == ["cancel_order"]


def test_world_state_needs_a_reference_and_unknown_types_fail():
  with pytest.raises(ValueError, match="shop-001.*reference"):
    checks.outcome(WORLD_STATE, make_task(), [])
  with pytest.raises(ValueError, match="unknown check type 'db_hash'"):
    checks.outcome(Check(type="db_hash"), make_task(), [])
