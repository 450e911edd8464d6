"""The offline teacher: procedural tasks from toy-world specs, no LLM.

For the embedded default and for tests. Each task comes from one intent of one domain
(`data/worlds/*.json`, see `synthesis/worlds.py`): slot values are sampled, the instruction
template is filled with the visible slots only, and the withheld (private) slots go to
`user.private_info`. The world scripts the mock tools' answers to exactly the reference calls, so
a call with an invented private value is unscripted and gets "no record found".

Rubric (every item has a structured check):
  subgoals      tool_called for each reference call (all its arguments), answer_contains for each
                value the agent can only learn from a tool output (codes, ids, statuses).
  interactions  asked_user_for each private slot.
  forbidden     (text names the forbidden behaviour; the check holds when it is avoided)
                "Calls <tool>" for the intent's destructive/distractor write tool, checked as
                tool_not_called, and "Invents the <slot>" for each private slot, checked as
                asked_user_for: the check vocabulary has no "used a value before the user gave
                it", and an agent that never asks can only have invented (or skipped) the value.

The reference trajectory (SFT warm start) starts at the user's instruction (no system message:
the trainer renders the system prompt and the tools), asks for the private slots in one message,
makes the reference calls with the mock tools' outputs, and ends with `<answer>...</answer>`.

Deterministic: task `index` under `seed` depends only on (seed, index) and on the instructions
already produced (a repeated instruction is redrawn), so a stream can be regenerated to resume.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Iterator, Sequence

from synthagent_jax.envs import slots as slots_lib
from synthagent_jax.synthesis import worlds as worlds_lib

_MAX_DRAWS = 64  # redraws per task before a repeated instruction is accepted as exhausted


def _private_leaks(instruction: str, private: dict) -> list[str]:
  low = instruction.casefold()
  return [slot for slot, v in private.items() if v.casefold() in low]


def slot_phrase(slot: str) -> str:
  """'patient_id' -> 'patient ID' (for rubric texts and questions)."""
  words = slot.split("_")
  return " ".join("ID" if w == "id" else w for w in words)


def ask_text(world: worlds_lib.WorldSpec, slots: Sequence[str]) -> str:
  """The expert's question for the private slots (one message)."""
  return " ".join(world.questions.get(s, f"What is your {slot_phrase(s)}?") for s in slots)


def user_answer_text(question: str, private: dict) -> str:
  """The rule user's reply to `question` (same words as `envs.user.RuleUserSimulator`).

  Raises ValueError when the question does not ask for every private slot: a reference that
  never gets the value from the user would teach the agent to invent it.
  """
  asked = slots_lib.asked_slots(question, private)
  missing = [s for s in private if s not in asked]
  if missing:
    raise ValueError(f"question {question!r} does not ask for private slot(s) {missing}")
  return " ".join(f"My {slots_lib.slot_phrase(s)} is {private[s]}." for s in asked)


def _discovered_slots(intent: dict) -> list[str]:
  """Slots in the answer the agent can only learn from a tool output."""
  visible = {f for t in intent["templates"] for f in worlds_lib.template_fields(t)}
  hidden = visible | set(intent["private"])
  answer = worlds_lib.template_fields(intent["answer"])
  from_tools = {f for c in intent["calls"] for f in worlds_lib.template_fields(c["response"])}
  seen, out = set(), []
  for f in answer:
    if f in from_tools and f not in hidden and f not in seen:
      seen.add(f)
      out.append(f)
  return out


def _tool_call_msg(name: str, arguments: dict) -> dict:
  return {"role": "assistant", "content": "",
          "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}]}


def build_task(world: worlds_lib.WorldSpec, intent: dict, values: dict, template: str,
               persona: str, seed: int, index: int) -> dict:
  """One Task dict from sampled slot values."""
  private = {s: values[s] for s in intent["private"]}
  instruction = template.format(**values)
  calls = [(c["tool"], worlds_lib.fill(c.get("arguments", {}), values),
            worlds_lib.fill(c["response"], values)) for c in intent["calls"]]
  answer = worlds_lib.fill(intent["answer"], values)
  details = "; ".join(f"{slot_phrase(s)}: {v}" for s, v in private.items())
  full_task = f"{instruction} ({details})"

  responses = []
  for name, args, output in calls:
    entry = {"tool": name, "arguments": args, "output": output}
    if world.tool(name)["kind"] == "write":
      entry["effects"] = [{"op": "append", "path": "actions", "value": {"tool": name, **args}}]
    responses.append(entry)
  world_dict = {"facts": {"domain": world.domain, "intent": intent["name"],
                          "values": {s: values[s] for s in sorted(values)}},
                "state": {"actions": []}, "responses": responses}

  subgoals = []
  for i, (name, args, _) in enumerate(calls):
    shown = ", ".join(f"{k}={v}" for k, v in args.items())
    subgoals.append({"id": f"call_{i}_{name}", "text": f"Calls {name}({shown}).", "weight": 1.0,
                     "check": {"type": "tool_called", "name": name, "arguments": dict(args)}})
  for slot in _discovered_slots(intent):
    subgoals.append({"id": f"answer_{slot}",
                     "text": f"The final answer gives the {slot_phrase(slot)} {values[slot]}.",
                     "weight": 1.0, "check": {"type": "answer_contains", "text": values[slot]}})
  interactions = [{"id": f"ask_{s}", "text": f"Asks the user for their {slot_phrase(s)}.",
                   "weight": 1.0, "check": {"type": "asked_user_for", "slot": s}}
                  for s in private]
  forb = intent["forbidden"]
  forbidden = [{"id": f"no_{forb['tool']}",
                "text": f"Calls {forb['tool']} ({forb.get('reason', 'not requested')})",
                "weight": 1.0, "check": {"type": "tool_not_called", "name": forb["tool"]}}]
  forbidden += [{"id": f"no_invented_{s}",
                 "text": f"Invents the {slot_phrase(s)} instead of asking the user.",
                 "weight": 1.0, "check": {"type": "asked_user_for", "slot": s}} for s in private]

  question = ask_text(world, list(private))
  reference = [{"role": "user", "content": instruction},
               {"role": "assistant", "content": question},
               {"role": "user", "content": user_answer_text(question, private)}]
  for name, args, output in calls:
    reference.append(_tool_call_msg(name, args))
    reference.append({"role": "tool", "name": name, "content": output})
  reference.append({"role": "assistant", "content": f"<answer>{answer}</answer>"})

  body = {"domain": world.domain, "instruction": instruction, "private": private,
          "world": world_dict}
  digest = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
  return {"id": f"{world.domain}-{digest}", "domain": world.domain, "instruction": instruction,
          "full_task": full_task, "tools": world.task_tools(), "world": world_dict,
          "user": {"persona": persona, "private_info": private,
                   "reason": intent.get("reason", "")},
          "rubric": {"subgoals": subgoals, "interactions": interactions, "forbidden": forbidden},
          "reference": reference,
          "metadata": {"generator": "offline", "seed": seed, "index": index,
                       "intent": intent["name"]}}


def _draw(world: worlds_lib.WorldSpec, rng: random.Random):
  intent = rng.choice(world.intents)
  template = rng.choice(intent["templates"])
  values = {}
  for slot in sorted(world.slots):  # sorted: draws do not depend on JSON key order
    values[slot] = worlds_lib.sample_value(world.slots[slot], rng)
  return intent, template, values, rng.choice(world.personas)


def sample_task(world: worlds_lib.WorldSpec, seed: int, index: int, attempt: int = 0) -> dict:
  """Task `index` of `world` under `seed` (a redraw if `attempt` > 0)."""
  rng = random.Random(f"{seed}:{world.domain}:{index}:{attempt}")
  for _ in range(_MAX_DRAWS):
    intent, template, values, persona = _draw(world, rng)
    instruction = template.format(**values)
    private = {s: values[s] for s in intent["private"]}
    if not _private_leaks(instruction, private):
      return build_task(world, intent, values, template, persona, seed, index)
  raise RuntimeError(f"{world.path}: could not draw an instruction that hides the private values "
                     f"in {_MAX_DRAWS} tries; widen the slot spaces")


def generate(num_tasks: int, seed: int = 0,
             worlds: Sequence[worlds_lib.WorldSpec] | None = None) -> Iterator[dict]:
  """Yields `num_tasks` Task dicts, domains round-robin, no repeated instruction or id.

  Raises RuntimeError when the world specs cannot supply that many distinct instructions.
  """
  worlds = list(worlds) if worlds is not None else worlds_lib.load_worlds()
  seen_instructions: set[str] = set()
  seen_ids: set[str] = set()
  exhausted: set[str] = set()
  index = 0
  produced = 0
  while produced < num_tasks:
    live = [w for w in worlds if w.domain not in exhausted]
    if not live:
      raise RuntimeError(f"the world specs ran out of distinct instructions after {produced} "
                         f"tasks (asked for {num_tasks})")
    world = live[index % len(live)]
    task = None
    for attempt in range(_MAX_DRAWS):
      cand = sample_task(world, seed, index, attempt)
      if cand["instruction"] not in seen_instructions and cand["id"] not in seen_ids:
        task = cand
        break
    index += 1
    if task is None:
      exhausted.add(world.domain)
      continue
    seen_instructions.add(task["instruction"])
    seen_ids.add(task["id"])
    produced += 1
    yield task
