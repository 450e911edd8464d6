"""Slot aliases: training variants of a task whose private id slot has another name.

Each toy domain gives the user one id slot (it_helpdesk's employee_id, retail's order_id, ...), so a
small policy learns "in the helpdesk, ask for the employee ID" by heart and has nothing to ask in a
domain it never trained on: with banking held out, the SFT policy asks a banking user for their
order or flight number (docs/benchmarks.md, session 12). A variant renames such a slot in the whole
task to `<word>_<head>` (employee_id -> badge_id) with a word drawn from ALIAS_WORDS: the tool
parameters, the scripted calls and their effects, the rubric, the user's private info, the
reference's calls, its question (`question`: 'What is your "badge_id"?') and the user's reply. The
slot's name is then only to be found in the task's own tool list, and asking for it means reading it
from there: the skill a domain never seen in training asks for. The mock world makes such variants
for free; this is the paper's many synthesized tool ecosystems in miniature.

Only slots whose head noun is generic ("id", "number", ...: `slots.GENERIC_HEADS`) are renamed: a
"date" or "city" slot is asked for by its head noun alone, which is the same in every domain.
ALIAS_WORDS share no word with any slot, tool or parameter name of the shipped worlds and tasks
(tests/synthesis/test_aliases.py), so no held-out domain's slot is ever trained under an alias.

Used by the trainer on every batch of training tasks it draws, SFT's and GRPO's
(`launch.builders.draw_train_tasks`; `data.alias_slots`: the share of drawn tasks replaced by a
variant); evaluation tasks keep their names.
"""

from __future__ import annotations

import random
import re
from typing import Any, Sequence

from synthagent_jax.envs import slots as slots_lib
from synthagent_jax.envs.task import Task
from synthagent_jax.synthesis import offline

# Nouns of 4+ letters; none is a word of a shipped slot, tool or parameter name, of the slot
# matcher's synonyms or of its common details (tests/synthesis/test_aliases.py).
ALIAS_WORDS = (
    "badge", "voucher", "licence", "invoice", "parcel", "client", "contract", "claim", "locker",
    "library", "permit", "tenant", "student", "shipment", "policy", "loyalty", "coupon", "vehicle",
    "plate", "visa", "insurance", "pension", "meter", "lease", "loan", "mortgage", "wallet",
    "vault", "token", "serial", "batch", "cargo", "crate", "pallet", "route", "gate", "dock",
    "berth", "cabin", "suite", "unit", "campus", "course", "exam", "grade", "team", "league",
    "club", "tutor", "mentor", "donor", "sponsor", "vendor", "supplier", "partner", "broker",
    "carrier", "courier", "driver", "rider", "pilot", "crew", "staff", "worker", "intern",
    "trainee", "applicant", "voter", "resident", "visitor", "patron", "subscriber", "viewer",
    "reader", "author", "artist", "project", "shift", "grant", "asset", "warehouse", "branch",
    "region", "district", "zone", "sector", "sample", "specimen", "trial", "survey", "ballot",
    "docket", "court", "warrant", "sensor", "node", "server", "cluster", "repo", "build",
    "release", "patch", "incident", "alarm", "beacon", "antenna", "channel", "circuit", "cable",
    "modem", "router", "printer", "scanner", "kiosk", "terminal", "ferry", "taxi", "parking",
    "garage", "toll", "fuel", "charger", "battery", "solar", "harbor", "museum", "gallery",
    "theater", "stadium", "arena", "hangar", "tower", "bridge", "tunnel", "canal", "orchard",
    "farm", "barn", "kennel", "stable", "aquarium",
)


def aliasable_slots(task: Task) -> list[str]:
  """The user's slots with a generic head noun ("employee_id") that name a parameter of a tool the
  rubric wants called (so the task's tool list shows the name), in private_info order. A slot
  passed under another name (banking's account_id as transfer_funds' from_account) is not one."""
  called = {it.check.name for it in task.rubric.subgoals
            if it.check is not None and it.check.type == "tool_called"}
  params = set()
  for t in task.tools:
    if t.name in called:
      params.update((t.parameters.get("properties") or {}).keys())
  out = []
  for slot in task.user.private_info:
    tokens = slots_lib.slot_tokens(slot)
    if len(tokens) >= 2 and tokens[-1] in slots_lib.GENERIC_HEADS and slot in params:
      out.append(slot)
  return out


def _rename(value: Any, old: str, new: str) -> Any:
  """`value` with every dict key and every string equal to `old` replaced by `new`; a dotted
  path ("actions.0.employee_id") has its components renamed."""
  if isinstance(value, dict):
    return {(new if k == old else k): _rename(v, old, new) for k, v in value.items()}
  if isinstance(value, list):
    return [_rename(v, old, new) for v in value]
  if isinstance(value, str):
    if value == old:
      return new
    if "." in value and old in value.split("."):
      return ".".join(new if part == old else part for part in value.split("."))
  return value


def _replace_phrase(text: str, old: str, new: str, phrase=offline.slot_phrase) -> str:
  """`text` with the human words for slot `old` ("employee id", "employee ID") made
  `phrase(new)`."""
  pattern = r"\b" + r"[ _]".join(map(re.escape, slots_lib.slot_tokens(old))) + r"\b"
  return re.sub(pattern, phrase(new), text, flags=re.IGNORECASE)


def question(slot: str) -> str:
  """The variant's question: the parameter's name as the tool list spells it, quoted
  ('What is your "badge_id"?'). The shipped tokenizer splits `"badge_id"` into the same tokens
  here as in the tool list's `{"badge_id": ...}`, so asking is copying those tokens; the natural
  words ("your badge ID") are other tokens (" b", "ad", "ge", " I", "D"). (The tiny policy
  copied neither form: it makes up names; docs/benchmarks.md, session 12.)"""
  return f'What is your "{slot}"?'


def _rewrite_question(text: str, old: str, new: str, others: Sequence[str]) -> str:
  """An agent's question with each sentence that asks for `old` replaced by `question(new)`.
  Raises ValueError when such a sentence also asks for another of the user's slots (it cannot
  be split)."""
  out = []
  for sentence in re.findall(r"[^?.!]+[?.!]?\s*", text):
    asked = slots_lib.asked_slots(sentence, [old, *others])
    if old not in asked:
      out.append(sentence)
      continue
    if len(asked) > 1:
      raise ValueError(f"question {sentence.strip()!r} asks for {asked} at once")
    tail = sentence[len(sentence.rstrip()):]
    out.append(f"{question(new)}{tail}")
  return "".join(out)


def _rewrite_reference(messages: list[dict], old: str, new: str,
                       others: Sequence[str]) -> list[dict]:
  out = []
  for m in messages:
    m = dict(m)
    content = m.get("content")
    if isinstance(content, str) and content:
      if m.get("role") == "assistant" and not m.get("tool_calls") and "<answer>" not in content:
        content = _rewrite_question(content, old, new, others)
      elif m.get("role") == "user":  # the rule user's words ("My badge id is ...")
        content = _replace_phrase(content, old, new, slots_lib.slot_phrase)
      m["content"] = content
    if m.get("tool_calls"):
      m["tool_calls"] = _rename(m["tool_calls"], old, new)
    out.append(m)
  return out


def alias_task(task: Task, rng: random.Random) -> Task:
  """A variant of `task` with each aliasable slot renamed to `<word>_<head>` (words drawn from
  ALIAS_WORDS by `rng`, none colliding with the task's tool or parameter names); `task` itself
  when it has none. The variant keeps the id and records `metadata["slot_aliases"]`.

  Raises ValueError when the renamed reference no longer asks for every private slot (the task
  is then kept unaliased by `alias_tasks`)."""
  slots = aliasable_slots(task)
  if not slots:
    return task
  d = task.to_dict()
  taken = {t.name for t in task.tools} | set(task.user.private_info)
  for t in task.tools:
    taken.update((t.parameters.get("properties") or {}).keys())
  aliases = {}
  for old in slots:
    head = slots_lib.slot_tokens(old)[-1]
    choices = [w for w in ALIAS_WORDS if f"{w}_{head}" not in taken]
    new = f"{rng.choice(choices)}_{head}"
    taken.add(new)
    aliases[old] = new
    others = [s for s in d["user"]["private_info"] if s != old]
    for key in ("tools", "world", "user"):
      d[key] = _rename(d[key], old, new)
    d["rubric"] = _rename(d["rubric"], old, new)
    for section in d["rubric"].values():
      for item in section:  # ids such as "ask_employee_id" and the item's words
        item["id"] = item["id"].replace(old, new)
        item["text"] = _replace_phrase(item["text"], old, new)
    d["full_task"] = _replace_phrase(d["full_task"], old, new)
    if isinstance(d["user"].get("reason"), str):
      d["user"]["reason"] = _replace_phrase(d["user"]["reason"], old, new)
    if d.get("reference"):
      d["reference"] = _rewrite_reference(d["reference"], old, new, others)
  d["metadata"] = {**d.get("metadata", {}), "slot_aliases": aliases}
  variant = Task.from_dict(d)
  _check_reference_asks(variant)
  return variant


def _check_reference_asks(task: Task) -> None:
  """The reference's questions still ask for every private slot (else SFT would teach the agent
  to invent a value the rule user never gave)."""
  if not task.reference:
    return
  asked = set()
  for m in task.reference:
    if m.get("role") == "assistant" and not m.get("tool_calls") and m.get("content"):
      asked.update(slots_lib.asked_slots(m["content"], task.user.private_info))
  missing = [s for s in task.user.private_info if s not in asked]
  if missing:
    raise ValueError(f"task {task.id}: the aliased reference no longer asks for {missing}")


def alias_tasks(tasks: Sequence[Task], share: float,
                key: str) -> tuple[list[Task], int, list[str]]:
  """(tasks with about `share` of them replaced by `alias_task` variants, how many were, why
  each variant that failed its checks did: that task is kept as it is).

  Which tasks and which words depend only on (key, position, task id): the trainer draws with a
  new key for every batch (`launch.builders.draw_train_tasks`), so a task comes back under a new
  name each time and no name can be learned by heart."""
  if not 0.0 <= share <= 1.0:
    raise ValueError(f"data.alias_slots must be a share in [0, 1], got {share}")
  out, n, errors = [], 0, []
  for j, task in enumerate(tasks):
    rng = random.Random(f"alias:{key}:{j}:{task.id}")
    if share > 0 and rng.random() < share and aliasable_slots(task):
      try:
        task = alias_task(task, rng)
        n += 1
      except ValueError as e:
        errors.append(f"task {task.id}: {e}")
    out.append(task)
  return out, n, errors
