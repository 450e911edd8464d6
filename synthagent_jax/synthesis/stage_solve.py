"""Stage 5: the teacher solves each task k times as the agent, against the mock tools and a user
simulator. The teacher speaks the Qwen tool format (<tool_call>{json}</tool_call>, results in
<tool_response>); turns are parsed with rollout.turns.parse_turn. Episodes of all records step
in lockstep, one batched teacher call per turn."""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

from synthagent_jax.envs import base as env_base
from synthagent_jax.envs import task as task_lib
from synthagent_jax.envs import tools as tools_lib
from synthagent_jax.rollout import turns as turns_lib
from synthagent_jax.synthesis import assemble
from synthagent_jax.synthesis import teacher as teacher_lib

NAME = "solve"


@dataclasses.dataclass
class Episode:
  rec_index: int
  task: task_lib.Task
  state: object
  conv: list          # what the teacher sees (plain text turns)
  messages: list      # our chat-message format (assistant tool_calls, tool role)
  status: str | None = None
  error: str = ""
  num_errors: int = 0  # turns with malformed tool calls or other parse errors


def _new_episode(i: int, task: task_lib.Task, tool_env) -> Episode:
  tools_json = "\n".join(json.dumps(t.openai_function(), ensure_ascii=False) for t in task.tools)
  system = teacher_lib.render_prompt(NAME, tools=tools_json)
  return Episode(i, task, tool_env.new_episode(task),
                 conv=[{"role": "system", "content": system},
                       {"role": "user", "content": task.instruction}],
                 messages=[{"role": "user", "content": task.instruction}])


def _step(ep: Episode, reply: str, tool_env, user_env):
  turn = turns_lib.parse_turn(reply)
  ep.conv.append({"role": "assistant", "content": reply})
  if turn.kind == "answer":
    ep.messages.append({"role": "assistant", "content": f"<answer>{turn.answer}</answer>"})
    ep.status = "answered"
    return
  ep.num_errors += bool(turn.errors)
  if turn.kind == "tool_calls":
    calls = turn.calls
    if calls:
      ep.messages.append({"role": "assistant", "content": turn.content, "tool_calls": [
          {"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
          for c in calls]})
    else:  # nothing parseable: keep the raw turn so the record shows what happened
      ep.messages.append({"role": "assistant", "content": turn.text})
    outputs = []
    for c in calls:
      obs = tool_env.call(ep.task, env_base.ToolCall(c.name, c.arguments), ep.state)
      ep.messages.append({"role": "tool", "name": c.name, "content": obs})
      outputs.append(obs)
    outputs += [f"Error: {e}" for e in turn.errors]
    ep.conv.append({"role": "user", "content": "\n".join(
        f"<tool_response>\n{o}\n</tool_response>" for o in outputs)})
    return
  ep.messages.append({"role": "assistant", "content": turn.content})
  text, stop = user_env.reply(ep.task, ep.messages)
  ep.messages.append({"role": "user", "content": text})
  ep.conv.append({"role": "user", "content": text})
  if stop:
    ep.status = "user_stopped"


def solve(tasks: Sequence[task_lib.Task], teacher, tool_env, user_env, k: int, max_turns: int,
          sampling=None) -> list[list[dict]]:
  """k episodes per task; returns per task a list of {"messages", "status", "error",
  "num_errors"}."""
  episodes = [_new_episode(i, t, tool_env) for i, t in enumerate(tasks) for _ in range(k)]
  for _ in range(max_turns):
    active = [e for e in episodes if e.status is None]
    if not active:
      break
    try:
      replies = teacher.chat([e.conv for e in active], sampling)
    except Exception as e:  # pylint: disable=broad-except  # an outage fails these episodes only
      for ep in active:
        ep.status, ep.error = "error", f"{type(e).__name__}: {str(e)[:200]}"
      break
    for ep, reply in zip(active, replies):
      _step(ep, reply, tool_env, user_env)
  out = [[] for _ in tasks]
  for ep in episodes:
    out[ep.rec_index].append({"messages": ep.messages, "status": ep.status or "max_turns",
                              "error": ep.error, "num_errors": ep.num_errors})
  return out


def run(records: Sequence[dict], teacher, cfg, tool_env=None,
        user_env=None) -> list[teacher_lib.Answer]:
  from synthagent_jax.envs import user as user_lib  # pylint: disable=g-import-not-at-top
  tool_env = tool_env or tools_lib.MockToolSystem(llm=teacher if cfg.simulate_tools else None)
  user_env = user_env or user_lib.RuleUserSimulator()
  answers = [teacher_lib.Answer() for _ in records]
  tasks, index = [], []
  for i, rec in enumerate(records):
    try:
      tasks.append(task_lib.Task.from_dict(assemble.task_dict(rec)))
      index.append(i)
    except task_lib.TaskValidationError as e:
      answers[i].reason, answers[i].detail = "schema", str(e)
  solutions = solve(tasks, teacher, tool_env, user_env, cfg.num_solutions, cfg.max_turns,
                    cfg.sampling)
  for i, sols in zip(index, solutions):
    if not any(s["status"] == "answered" for s in sols):
      answers[i].reason = "unsolved"
      answers[i].detail = f"no attempt gave an answer (statuses {[s['status'] for s in sols]})"
    else:
      answers[i].value = {**records[i], "solutions": sols}
  return answers
