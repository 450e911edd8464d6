"""Stage 6: the rubric from the solutions (subgoals / interactions / forbidden, structured checks
where possible), then KEEP or DISCARD by whether the solutions agree.

Agreement: every solution is scored with `rewards.rubric.score_batch` under the new rubric, the
way training rewards are: structured checks in code, every item without a check by the judge
(`rewards.judge.HTTPJudge` played by the teacher, as the paper's pipeline has its LLM grade the
solutions; one batched judge call per stage batch). The task is kept when at least
`min_agreement` of them pass (reward >= `pass_reward`) and the teacher's own verdict is KEEP. An
item the judge could not grade scores 0, as in training. The first passing solution becomes the
task's reference trajectory (a passing one without malformed turns when there is one).
"""

from __future__ import annotations

import json
from typing import Sequence

from synthagent_jax.envs import task as task_lib
from synthagent_jax.synthesis import assemble
from synthagent_jax.synthesis import teacher as teacher_lib
from synthagent_jax.synthesis.teacher import Reject, require

NAME = "rubric"
SECTIONS = (("subgoals", "sg"), ("interactions", "ia"), ("forbidden", "fb"))


def summarize_solution(j: int, sol: dict) -> str:
  """One attempt as short text for the rubric prompt."""
  lines = [f"Attempt {j + 1} ({sol['status']}):"]
  for m in sol["messages"][1:]:
    if m["role"] == "assistant" and m.get("tool_calls"):
      for c in m["tool_calls"]:
        fn = c["function"]
        lines.append(f"  call {fn['name']}({json.dumps(fn['arguments'], ensure_ascii=False)})")
    elif m["role"] == "tool":
      lines.append(f"    -> {m['content'][:200]}")
    elif m["role"] == "assistant":
      lines.append(f"  assistant: {m['content'][:200]}")
    elif m["role"] == "user":
      lines.append(f"  user: {m['content'][:200]}")
  return "\n".join(lines)


def parse_rubric(obj: dict) -> dict:
  """Teacher sections -> a Task-schema rubric with ids sg_i / ia_i / fb_i."""
  rubric = {}
  for section, prefix in SECTIONS:
    raw = require(obj, section, list)
    if not raw:
      raise Reject("missing_section", f"{section} is empty")
    items = []
    for i, it in enumerate(raw):
      where = f"{section}[{i}]"
      text = require(it, "text", str, where).strip()
      if not text:
        raise Reject("missing_field", f"{where}.text (empty)")
      check = it.get("check")
      if check is not None and not isinstance(check, dict):
        raise Reject("bad_check", f"{where}.check should be an object or null")
      weight = it.get("weight", 1.0)
      if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise Reject("bad_field", f"{where}.weight should be a number > 0, got {weight!r}")
      items.append({"id": f"{prefix}_{i}", "text": text, "weight": float(weight), "check": check})
    rubric[section] = items
  return rubric


def parse_reply(rec: dict, obj: dict) -> dict:
  rubric = parse_rubric(obj)
  verdict = str(require(obj, "verdict", str)).strip().upper()
  if verdict not in ("KEEP", "DISCARD"):
    raise Reject("bad_field", f"verdict must be KEEP or DISCARD, got {verdict!r}")
  try:  # checks must name real tools / private slots
    task_lib.Task.from_dict(assemble.task_dict(rec, rubric))
  except task_lib.TaskValidationError as e:
    raise Reject("bad_check", str(e)) from e
  return {"rubric": rubric, "verdict": verdict, "verdict_reason": str(obj.get("reason", ""))}


def conversation(rec: dict) -> list[dict]:
  sols = "\n".join(summarize_solution(j, s) for j, s in enumerate(rec["solutions"]))
  prompt = teacher_lib.render_prompt(
      NAME, full_task=rec["full_task"], instruction=rec["instruction"],
      private_info=json.dumps(rec["private_info"], ensure_ascii=False),
      tool_names=", ".join(t["function"]["name"] for t in rec["tools"]),
      forbidden=json.dumps(rec["forbidden"], ensure_ascii=False), solutions=sols)
  return [{"role": "system", "content": prompt}, {"role": "user", "content": "Write the rubric now."}]


def judge_agreements(pairs: Sequence[tuple[dict, dict]], pass_reward: float, judge=None,
                     aggregation: str = "synthagent") -> list[tuple[list[float], list | None]]:
  """For each (record, rubric): the rewards of its solutions under the rubric and the first
  passing solution's messages (None if none passes). All solutions of all records are scored in
  one `score_batch`, so the judge gets one batched call. With `judge=None`, items without a check
  score 0 (unjudged), so such a rubric can only pass when those items carry no weight."""
  from synthagent_jax.rewards import rubric as rubric_lib  # pylint: disable=g-import-not-at-top
  tasks, conversations, owner = [], [], []
  for k, (rec, rubric) in enumerate(pairs):
    task = task_lib.Task.from_dict(assemble.task_dict(rec, rubric))
    for sol in rec["solutions"]:
      tasks.append(task)
      conversations.append(sol["messages"])
      owner.append(k)
  results = rubric_lib.score_batch(tasks, conversations, judge, aggregation)
  out = []
  for k, (rec, _) in enumerate(pairs):
    rewards = [float(r.reward) for r, o in zip(results, owner) if o == k]
    passing = [s for s, r in zip(rec["solutions"], rewards) if r >= pass_reward]
    # Prefer a clean trajectory (no malformed turns) as the SFT reference.
    passing.sort(key=lambda s: s.get("num_errors", 0) > 0)
    out.append((rewards, passing[0]["messages"] if passing else None))
  return out


def judge_agreement(rec: dict, rubric: dict, pass_reward: float, judge=None,
                    aggregation: str = "synthagent") -> tuple[list[float], list | None]:
  """Rewards of one record's solutions under `rubric` and the first passing solution's messages."""
  return judge_agreements([(rec, rubric)], pass_reward, judge, aggregation)[0]


def make_judge(teacher, cfg):
  """The teacher as the rubric judge (JSON verdicts, the protocol `reward.judge=http` uses)."""
  from synthagent_jax.rewards import judge as judge_lib  # pylint: disable=g-import-not-at-top
  return judge_lib.HTTPJudge(teacher, max_retries=cfg.max_retries)


def run(records: Sequence[dict], teacher, cfg) -> list[teacher_lib.Answer]:
  answers = teacher_lib.ask_json(teacher, [conversation(r) for r in records],
                                 lambda i, obj: parse_reply(records[i], obj),
                                 cfg.max_retries, cfg.sampling)
  todo = []
  for rec, ans in zip(records, answers):
    if not ans.ok:
      continue
    got = ans.value
    if got["verdict"] == "DISCARD":
      ans.value, ans.reason, ans.detail = None, "discarded_by_teacher", got["verdict_reason"]
      continue
    todo.append((rec, ans))
  scored = judge_agreements([(rec, ans.value["rubric"]) for rec, ans in todo], cfg.pass_reward,
                            make_judge(teacher, cfg)) if todo else []
  for (rec, ans), (rewards, reference) in zip(todo, scored):
    rubric = ans.value["rubric"]
    share = sum(r >= cfg.pass_reward for r in rewards) / max(len(rewards), 1)
    if share < cfg.min_agreement or reference is None:
      ans.value, ans.reason = None, "solutions_disagree"
      ans.detail = f"{share:.2f} of solutions pass (rewards {[round(r, 2) for r in rewards]})"
      continue
    ans.value = {**rec, "rubric": rubric, "reference": reference, "solution_rewards": rewards}
  return answers
