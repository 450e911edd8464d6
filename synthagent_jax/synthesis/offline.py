"""The offline teacher: procedural tasks from toy-world specs, no LLM.

For the embedded default and for tests. Each task comes from one intent of one domain
(`data/worlds/*.json`, see `synthesis/worlds.py`): slot values are sampled, the instruction
template is filled with the visible slots only, and the withheld (private) slots go to
`user.private_info`. An intent's `maybe_private` slots are withheld in some tasks and stated in
the instruction (the world's `givens` phrase) in others, so which details the agent must ask for
varies per task. The world scripts the mock tools' answers to exactly the reference calls, so a
call with an invented private value is unscripted and gets "no record found". Calls chain: an id
one tool returns (a slot no earlier message showed) is an argument of a later call.

Tools: each task lists the tools its reference calls, the intent's forbidden tool and up to
`_NUM_DISTRACTORS` other tools of the domain (drawn per task), in the world's order.

Rubric (every item has a structured check):
  subgoals      tool_called for each reference call (all its arguments), answer_contains for each
                value the agent can only learn from a tool output (codes, ids, statuses), and
                world_state when the reference writes: every write call is scripted with an
                effect that records it in `state.actions`, so the state check grades writes by
                their effect (a missing, repeated or wrong-argument write leaves another state).
  interactions  asked_user_for each private slot.
  forbidden     (text names the forbidden behaviour; the check holds when it is avoided)
                "Calls <tool>" for the intent's destructive/distractor write tool, checked as
                tool_not_called, and "Invents the <slot>" for each private slot, checked as
                asked_user_for: the check vocabulary has no "used a value before the user gave
                it", and an agent that never asks can only have invented (or skipped) the value.
                And no_over_asking: asks for a detail the task does not need (e.g. one the
                instruction already gives) or asks again for one already given.

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
_NUM_DISTRACTORS = 2  # most unused domain tools listed per task (besides the forbidden one)


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
  hidden = visible | set(intent["private"]) | set(intent.get("maybe_private", ()))
  answer = worlds_lib.template_fields(intent["answer"])
  from_tools = {f for c in intent["calls"] for f in worlds_lib.template_fields(c["response"])}
  seen, out = set(), []
  for f in answer:
    if f in from_tools and f not in hidden and f not in seen:
      seen.add(f)
      out.append(f)
  return out


def _used_values(intent: dict, values: dict) -> dict:
  """The slot values an intent's texts use (templates, calls, answer)."""
  fields = {f for t in intent["templates"] for f in worlds_lib.template_fields(t)}
  fields |= set(intent["private"]) | set(intent.get("maybe_private", ()))
  for c in intent["calls"]:
    for tpl in [c["response"], *c.get("arguments", {}).values()]:
      fields |= set(worlds_lib.template_fields(tpl))
  fields |= set(worlds_lib.template_fields(intent["answer"]))
  return {f: values[f] for f in sorted(fields)}


def _tool_call_msg(name: str, arguments: dict) -> dict:
  return {"role": "assistant", "content": "",
          "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}]}


def instruction_text(world: worlds_lib.WorldSpec, template: str, values: dict,
                     given: Sequence[str]) -> str:
  """The instruction: the template, then the `givens` phrase of each maybe-private slot shown."""
  return " ".join([template.format(**values)] + [world.givens[s].format(**values) for s in given])


def task_tools(world: worlds_lib.WorldSpec, intent: dict, distractors: Sequence[str]) -> list[dict]:
  """The task's tool list: called tools, the forbidden tool and `distractors`, in world order."""
  keep = {c["tool"] for c in intent["calls"]} | {intent["forbidden"]["tool"]} | set(distractors)
  return [t for t in world.task_tools() if t["function"]["name"] in keep]


def build_task(world: worlds_lib.WorldSpec, intent: dict, values: dict, template: str,
               persona: str, seed: int, index: int, withheld: Sequence[str] = (),
               distractors: Sequence[str] | None = None) -> dict:
  """One Task dict from sampled slot values.

  `withheld`: the intent's maybe-private slots withheld this time (the others are stated in the
  instruction); `distractors`: unused tools listed anyway (None: every tool of the domain).
  """
  private_slots = list(intent["private"]) + [s for s in intent.get("maybe_private", ())
                                             if s in withheld]
  given = [s for s in intent.get("maybe_private", ()) if s not in withheld]
  private = {s: values[s] for s in private_slots}
  instruction = instruction_text(world, template, values, given)
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
  writes = [name for name, _, _ in calls if world.tool(name)["kind"] == "write"]
  if writes:
    subgoals.append({"id": "world_state",
                     "text": f"Leaves the world as the reference's writes do ({', '.join(writes)}), "
                             "and changes nothing else.",
                     "weight": 1.0, "check": {"type": "world_state"}})
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
  forbidden.append({"id": "no_over_asking",
                    "text": "Asks the user for a detail the task does not need, or for one "
                            "already given.",
                    "weight": 1.0, "check": {"type": "no_over_asking"}})

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
          "full_task": full_task,
          "tools": world.task_tools() if distractors is None else task_tools(world, intent,
                                                                              distractors),
          "world": world_dict,
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
  withheld = [s for s in intent.get("maybe_private", ()) if rng.random() < 0.5]
  used = {c["tool"] for c in intent["calls"]} | {intent["forbidden"]["tool"]}
  spare = [t["name"] for t in world.tools if t["name"] not in used]
  distractors = rng.sample(spare, min(len(spare), rng.randint(1, _NUM_DISTRACTORS))) if spare else []
  return intent, template, values, rng.choice(world.personas), withheld, distractors


def _ambiguous(values: dict) -> bool:
  """Two slots share a value (a payer's and a payee's account drawn from one pattern, an old and a
  new date): the rubric could not tell them apart, so the draw is redone."""
  vals = list(values.values())
  return len(set(vals)) != len(vals)


def sample_task(world: worlds_lib.WorldSpec, seed: int, index: int, attempt: int = 0) -> dict:
  """Task `index` of `world` under `seed` (a redraw if `attempt` > 0)."""
  rng = random.Random(f"{seed}:{world.domain}:{index}:{attempt}")
  for _ in range(_MAX_DRAWS):
    intent, template, values, persona, withheld, distractors = _draw(world, rng)
    given = [s for s in intent.get("maybe_private", ()) if s not in withheld]
    instruction = instruction_text(world, template, values, given)
    private = {s: values[s] for s in list(intent["private"]) + list(withheld)}
    if not _private_leaks(instruction, private) and not _ambiguous(_used_values(intent, values)):
      return build_task(world, intent, values, template, persona, seed, index, withheld,
                        distractors)
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
