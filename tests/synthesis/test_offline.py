"""The offline teacher: coverage, distinctness, withheld private values, rubric sections, and
reference trajectories that the mock tools and the rule user reproduce exactly."""

import collections
import copy
import json

import pytest

from synthagent_jax.envs import base as env_base
from synthagent_jax.envs import task as task_lib
from synthagent_jax.envs import tools as tools_lib
from synthagent_jax.envs import user as user_lib
from synthagent_jax.synthesis import offline
from synthagent_jax.synthesis import worlds as worlds_lib


@pytest.fixture(scope="module")
def tasks():
  return list(offline.generate(2000, seed=0))


def test_stats(tasks):
  domains = collections.Counter(t["domain"] for t in tasks)
  assert len(domains) >= 8, domains
  assert set(domains) >= {"travel", "banking", "calendar", "retail", "weather", "restaurants",
                          "clinic", "it_helpdesk"}
  assert len({t["id"] for t in tasks}) == len(tasks)
  assert len({t["instruction"] for t in tasks}) / len(tasks) >= 0.9
  intents = {(t["domain"], t["metadata"]["intent"]) for t in tasks}
  assert len(intents) >= 15


def test_every_world_has_read_write_and_distractor_tools():
  for w in worlds_lib.load_worlds():
    kinds = {t["kind"] for t in w.tools}
    assert kinds == {"read", "write"}, w.domain
    assert 3 <= len(w.tools) <= 5, w.domain
    used = {c["tool"] for i in w.intents for c in i["calls"]}
    assert len(w.tools) - len(used) >= 1, f"{w.domain}: no distractor tool"


def test_private_values_withheld_and_rubric_sections(tasks):
  for t in tasks:
    private = t["user"]["private_info"]
    assert private, t["id"]
    for slot, value in private.items():
      assert value.casefold() not in t["instruction"].casefold(), (t["id"], slot)
      assert value in t["full_task"]
    r = t["rubric"]
    assert r["subgoals"] and r["interactions"] and r["forbidden"], t["id"]
    for section in ("subgoals", "interactions", "forbidden"):
      for item in r[section]:
        assert item["check"] is not None, (t["id"], item["id"])
    assert {i["check"]["slot"] for i in r["interactions"]} == set(private)
    assert any(i["check"]["type"] == "tool_not_called" for i in r["forbidden"])
    answer = t["reference"][-1]["content"]
    assert answer.startswith("<answer>") and answer.endswith("</answer>")


def test_deterministic_and_seed_dependent():
  a = [t["id"] for t in offline.generate(50, seed=3)]
  b = [t["id"] for t in offline.generate(50, seed=3)]
  c = [t["id"] for t in offline.generate(50, seed=4)]
  assert a == b
  assert len(set(a) & set(c)) < 5
  # A prefix of a longer stream is the shorter stream (resume relies on it).
  assert [t["id"] for t in offline.generate(80, seed=3)][:50] == a


def test_short_for_the_tiny_model(tasks):
  assert max(len(t["instruction"]) for t in tasks) <= 100
  for t in tasks[:200]:
    assert len(t["reference"]) <= 8
    assert all(len(m.get("content", "")) <= 120 for m in t["reference"])


def _one_per_intent(tasks):
  seen, out = set(), []
  for t in tasks:
    key = (t["domain"], t["metadata"]["intent"])
    if key not in seen:
      seen.add(key)
      out.append(t)
  return out


def test_reference_replays_against_mock_tools_and_rule_user(tasks):
  tool_env = tools_lib.MockToolSystem()
  user_env = user_lib.RuleUserSimulator()
  for d in _one_per_intent(tasks):
    task = task_lib.Task.from_dict(d)
    state = tool_env.new_episode(task)
    ref = task.reference
    for k, m in enumerate(ref):
      if m["role"] == "assistant" and m.get("tool_calls"):
        for j, c in enumerate(m["tool_calls"]):
          fn = c["function"]
          obs = tool_env.call(task, env_base.ToolCall(fn["name"], fn["arguments"]), state)
          assert ref[k + 1 + j] == {"role": "tool", "name": fn["name"], "content": obs}, task.id
      elif m["role"] == "assistant" and "<answer>" not in m["content"]:
        text, stop = user_env.reply(task, ref[:k + 1])
        assert not stop
        assert ref[k + 1] == {"role": "user", "content": text}, task.id


def test_invented_private_value_is_unscripted(tasks):
  tool_env = tools_lib.MockToolSystem()
  for d in _one_per_intent(tasks):
    task = task_lib.Task.from_dict(d)
    first = next(m for m in task.reference if m.get("tool_calls"))["tool_calls"][0]["function"]
    private = set(task.user.private_info.values())
    args = {k: ("WRONG-1" if v in private else v) for k, v in first["arguments"].items()}
    if args == first["arguments"]:
      continue  # the first call does not use a private value
    obs = tool_env.call(task, env_base.ToolCall(first["name"], args), tool_env.new_episode(task))
    ok = tool_env.call(task, env_base.ToolCall(first["name"], first["arguments"]),
                       tool_env.new_episode(task))
    assert obs != ok


def test_bad_world_spec_is_named():
  w = json.load(open(f"{worlds_lib.DEFAULT_WORLDS_DIR}/travel.json"))
  bad = copy.deepcopy(w)
  bad["intents"][0]["templates"] = ["Fly me on {date}."]
  with pytest.raises(worlds_lib.WorldSpecError, match="private slot"):
    worlds_lib.parse_world(bad, "travel.json")
  bad = copy.deepcopy(w)
  bad["intents"][0]["calls"][0]["tool"] = "teleport"
  with pytest.raises(worlds_lib.WorldSpecError, match=r"calls\[0\].tool"):
    worlds_lib.parse_world(bad, "travel.json")
  bad = copy.deepcopy(w)
  bad["intents"][0]["forbidden"]["tool"] = "book_flight"
  with pytest.raises(worlds_lib.WorldSpecError, match="also a reference call"):
    worlds_lib.parse_world(bad, "travel.json")
