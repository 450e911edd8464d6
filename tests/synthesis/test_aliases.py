"""Slot aliases (synthesis/aliases.py): a variant renames the private id slot everywhere, and the
live environment (mock tools, rule user, rubric) agrees with its reference; the alias words are
new to every shipped world; with data.alias_slots the trainer renames each batch it draws anew."""

import glob
import json
import random

import pytest

from configs import tiny
from launch import builders
from synthagent_jax.envs import base as env_base
from synthagent_jax.envs import slots as slots_lib
from synthagent_jax.envs import task as task_lib
from synthagent_jax.envs import tools as tools_lib
from synthagent_jax.envs import user as user_lib
from synthagent_jax.rewards import rubric as rubric_lib
from synthagent_jax.synthesis import aliases
from synthagent_jax.synthesis import offline

V1_TRAIN = "data/tasks/offline_v1_train.jsonl"


@pytest.fixture(scope="module")
def shipped():
  return task_lib.load_tasks(V1_TRAIN)[0]


def _helpdesk(tasks):
  return next(t for t in tasks if t.domain == "it_helpdesk" and aliases.aliasable_slots(t))


def test_every_occurrence_is_renamed(shipped):
  task = _helpdesk(shipped)
  assert aliases.aliasable_slots(task) == ["employee_id"]
  variant = aliases.alias_task(task, random.Random(0))
  (old, new), = variant.metadata["slot_aliases"].items()
  assert old == "employee_id" and new.endswith("_id") and new.split("_")[0] in aliases.ALIAS_WORDS
  d = variant.to_dict()
  del d["metadata"]
  text = json.dumps(d)
  assert "employee_id" not in text and "employee id" not in text.lower()
  assert list(variant.user.private_info) == [new]
  assert variant.user.private_info[new] == task.user.private_info[old]
  called = [it.check for it in variant.rubric.subgoals if it.check.type == "tool_called"]
  assert any(new in c.arguments for c in called)
  assert {it.check.slot for it in variant.rubric.interactions} == {new}
  word = new.split("_")[0]
  ask = next(m["content"] for m in variant.reference
             if m["role"] == "assistant" and not m.get("tool_calls"))
  assert ask == f'What is your "{word}_id"?'
  tool = next(t for t in variant.tools if new in t.parameters["properties"])
  assert f'"{new}"' in json.dumps(tool.openai_function())  # the tool list spells it so
  assert variant.id == task.id and variant.instruction == task.instruction


def test_the_live_environment_agrees_with_the_variant(shipped):
  """Replaying the variant's reference: the rule user says its user turns, the mock tools its
  tool turns, and its rubric gives it 1.0; the original question gets no answer from the
  variant's user (only the other slots it asked for), and the original reference scores 0 under
  the variant's rubric."""
  tasks = [t for t in shipped if aliases.aliasable_slots(t)]
  assert len(tasks) > 100
  user = user_lib.RuleUserSimulator()
  tool_env = tools_lib.MockToolSystem()
  for i, task in enumerate(tasks[:60]):
    variant = aliases.alias_task(task, random.Random(i))
    state = tool_env.new_episode(variant)
    ref = variant.reference
    for j, m in enumerate(ref):
      if m["role"] == "user" and j > 0:
        assert user.reply(variant, ref[:j])[0] == m["content"], variant.id
      if m["role"] == "assistant" and m.get("tool_calls"):
        for c, obs in zip(m["tool_calls"], ref[j + 1:]):
          fn = c["function"]
          assert tool_env.call(variant, env_base.ToolCall(fn["name"], fn["arguments"]),
                               state) == obs["content"], variant.id
    for aggregation in ("weighted", "synthagent"):
      assert rubric_lib.score(variant, ref, aggregation=aggregation).reward == pytest.approx(1.0)
    first_ask = next(j for j, m in enumerate(task.reference)
                     if m["role"] == "assistant" and not m.get("tool_calls"))
    (old, new), = variant.metadata["slot_aliases"].items()
    value = variant.user.private_info[new]
    assert value not in user.reply(variant, task.reference[:first_ask + 1])[0]
    assert rubric_lib.score(variant, task.reference, aggregation="weighted").reward == 0.0


def test_a_slot_the_tools_do_not_show_is_kept(shipped):
  """banking's account_id passed as transfer_funds' from_account: the name is not in the called
  tool's parameters, so an alias could not be read off the tool list."""
  transfer = [t for t in shipped
              if t.domain == "banking" and "account_id" in t.user.private_info
              and not aliases.aliasable_slots(t)]
  assert transfer
  assert all(aliases.alias_task(t, random.Random(0)) is t for t in transfer)


def _names() -> set[str]:
  """Every word of a slot, tool or parameter name in the shipped worlds and task files."""
  names = set()
  for f in glob.glob("data/worlds/*.json"):
    with open(f) as fh:
      w = json.load(fh)
    names.update(w["slots"])
    for t in w["tools"]:
      names.add(t["name"])
      names.update(t["parameters"]["properties"])
  for f in glob.glob("data/tasks/*.jsonl"):
    with open(f) as fh:
      for line in fh:
        t = json.loads(line)
        names.update(t["user"]["private_info"])
        for tool in t["tools"]:
          names.add(tool["function"]["name"])
          names.update(tool["function"]["parameters"].get("properties") or {})
  return {w for n in names for w in slots_lib.slot_tokens(n)}


def test_alias_words_are_new_to_every_world():
  words = aliases.ALIAS_WORDS
  assert len(set(words)) == len(words) >= 100
  names = _names()
  assert not set(words) & names
  assert all(len(w) >= 4 and w.isalpha() and w.islower() for w in words)
  forms = {f for k, v in slots_lib.SYNONYMS.items() for f in (k, *v)}
  common = {w for d in slots_lib.COMMON_DETAILS for w in slots_lib.slot_tokens(d)}
  assert not set(words) & (forms | common | slots_lib.GENERIC_HEADS)
  # The held-out slots of the transfer benchmark are never an alias's words.
  assert {"account", "patient"} <= names


def test_alias_tasks_share_and_determinism(shipped):
  tasks = shipped[:200]
  n_aliasable = sum(bool(aliases.aliasable_slots(t)) for t in tasks)
  same, n, errors = aliases.alias_tasks(tasks, 0.0, key="0:sft:0")
  assert same == list(tasks) and n == 0 and not errors
  full, n, errors = aliases.alias_tasks(tasks, 1.0, key="0:sft:0")
  assert n == n_aliasable and not errors
  half, n_half, _ = aliases.alias_tasks(tasks, 0.5, key="0:sft:0")
  assert 0.35 * n_aliasable < n_half < 0.65 * n_aliasable
  again, _, _ = aliases.alias_tasks(tasks, 0.5, key="0:sft:0")
  assert [t.to_dict() for t in again] == [t.to_dict() for t in half]
  # Another draw (key) renames the same task anew.
  other, _, _ = aliases.alias_tasks(tasks, 1.0, key="0:sft:1")
  names = [(a.metadata["slot_aliases"], b.metadata["slot_aliases"]) for a, b in zip(full, other)
           if a.metadata.get("slot_aliases")]
  assert sum(a != b for a, b in names) > 0.9 * len(names)
  with pytest.raises(ValueError, match="alias_slots"):
    aliases.alias_tasks(tasks, 1.5, key="0")


def test_a_question_for_two_slots_at_once_is_refused():
  task = next(task_lib.Task.from_dict(d) for d in offline.generate(400, seed=3)
              if d["domain"] == "clinic" and len(d["user"]["private_info"]) == 2)
  d = task.to_dict()
  both = " and ".join(offline.slot_phrase(s) for s in task.user.private_info)
  for m in d["reference"]:
    if m["role"] == "assistant" and not m.get("tool_calls") and "<answer>" not in m["content"]:
      m["content"] = f"Could you give me your {both}?"
  merged = task_lib.Task.from_dict(d)
  assert aliases.aliasable_slots(merged) == ["patient_id"]
  with pytest.raises(ValueError, match="at once"):
    aliases.alias_task(merged, random.Random(0))
  _, n, errors = aliases.alias_tasks([merged], 1.0, key="0")
  assert n == 0 and len(errors) == 1


def test_the_trainer_draws_new_names_per_batch(shipped):
  c = tiny.get_config()
  tasks = [t for t in shipped if aliases.aliasable_slots(t)][:16]
  assert builders.draw_train_tasks(c, tasks, "sft:0") == tasks  # data.alias_slots = 0: as they are
  c.data.alias_slots = 1.0
  a = builders.draw_train_tasks(c, tasks, "sft:0")
  b = builders.draw_train_tasks(c, tasks, "sft:1")
  assert all(t.metadata["slot_aliases"] for t in a + b)
  assert [t.to_dict() for t in builders.draw_train_tasks(c, tasks, "sft:0")] == [
      t.to_dict() for t in a]
  assert [t.metadata["slot_aliases"] for t in a] != [t.metadata["slot_aliases"] for t in b]
  assert [t.id for t in a] == [t.id for t in tasks]
