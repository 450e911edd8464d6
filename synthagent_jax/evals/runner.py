"""Runs an outside benchmark (a Suite) with a policy through `rollout.AgentLoop`: k episodes per
task, in chunks, resumable, scored by the suite's own checker.

    policy = policies.make_policy("checkpoint:/ckpt", suite=suite)
    result = run_suite(suite, policy, loop_section, out_dir, k=4, user_llm=None)

Outputs under `out_dir`:
  episodes.jsonl  one line per finished episode, appended after every chunk. Each line is a
                  rollout-log record (rewards/rollout_log.rollout_record: step 0, task_id,
                  sample_index, domain = the suite, messages, status, reward = the episode's
                  score, ...; so synthagent_jax/inspect.py and notebooks/inspect_rollouts.ipynb
                  read it) plus "suite", "score", "passed", "verdict" (the checker's details),
                  "user_stop".
  results.json    {"suite", "policy", "category", "dataset", "k", "episodes", "tasks", "metrics",
                  "statuses", "scorer_errors", "user"}: metrics are the suite's own (suite.metrics);
                  statuses count how episodes ended (context_full: the conversation outgrew the
                  token budget); scorer_errors count episodes whose checker raised (scored 0).
  run.json        what the run is (suite, policy, options, k): a rerun with the same values
                  resumes, skipping every (task_id, sample_index) already in episodes.jsonl; a
                  different run in the same directory is refused.

A line cut short by a kill is dropped on resume. Replay policies (oracle / null) script one task,
so they run one task per loop run; others run `chunk_size` tasks per loop run (every episode of a
chunk in one batched loop).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Sequence

from synthagent_jax.evals.suite import EpisodeScore, EvalTask, SuiteError, SuiteOptions
from synthagent_jax.rewards import rollout_log
from synthagent_jax.rollout.agent_loop import AgentLoop, AgentLoopConfig

EPISODES = "episodes.jsonl"
RESULTS = "results.json"
RUN = "run.json"


class RunError(ValueError):
  """A run that cannot go on (a different run in the output directory, a broken episodes file);
  the message is one line for the user."""


@dataclasses.dataclass
class SuiteRun:
  """What one `run_suite` call produced."""

  results: dict
  tasks: list[EvalTask]
  scores: list[list[EpisodeScore]]  # [task][sample]
  records: list[dict]               # task-major, sample-minor


def loop_config(section: Any, suite: Any, max_context: int | None = None) -> AgentLoopConfig:
  """The config's rollout section + the suite's fixed fields, capped to the policy's context."""
  values = dict(section.to_dict() if hasattr(section, "to_dict") else dict(section or {}))
  if not values.get("system_prompt"):
    values.pop("system_prompt", None)
  values.update(suite.loop_overrides())
  if max_context:
    values["max_total_tokens"] = min(values.get("max_total_tokens", max_context), max_context)
  return AgentLoopConfig.from_mapping(values)


def stable_seed(*parts: Any) -> int:
  digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


# ---- episodes.jsonl -------------------------------------------------------------------------------
def read_episodes(path: str) -> dict[tuple[str, int], dict]:
  """{(task_id, sample_index): record}; a last line cut short by a kill is dropped (and the file
  rewritten without it); any other broken line is an error naming file:line."""
  if not os.path.isfile(path):
    return {}
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  out: dict[tuple[str, int], dict] = {}
  for n, line in enumerate(lines, 1):
    try:
      rec = json.loads(line)
      key = (str(rec["task_id"]), int(rec["sample_index"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
      if n == len(lines):
        with open(path, "w", encoding="utf-8") as f:
          f.writelines(lines[:-1])
        break
      raise RunError(f"{path}:{n}: not an episode record ({e.__class__.__name__}); remove the "
                     "line or use another --out") from None
    out[key] = rec
  return out


def episode_record(suite_name: str, traj: Any, score: EpisodeScore) -> dict:
  rec = rollout_log.rollout_record(0, traj, domain=suite_name, reward=float(score.score),
                                   advantage=0.0)
  rec.update({"suite": suite_name, "score": float(score.score), "passed": bool(score.passed),
              "verdict": score.verdict, "user_stop": getattr(traj, "user_stop", None)})
  return rec


def _score(suite: Any, task: EvalTask, traj: Any) -> EpisodeScore:
  """The checker's score; a checker that raises on one episode scores it 0 and records why
  (results.json counts them as "scorer_errors"), instead of losing the whole run."""
  try:
    return suite.score(task, traj)
  except Exception as e:  # pylint: disable=broad-except
    return EpisodeScore(0.0, False, {"scorer_error": f"{e.__class__.__name__}: {e}"[:500]})


def _check_run(out_dir: str, run_info: dict) -> None:
  path = os.path.join(out_dir, RUN)
  if os.path.isfile(path):
    with open(path) as f:
      old = json.load(f)
    diff = sorted(k for k in set(old) | set(run_info) if old.get(k) != run_info.get(k))
    if diff:
      raise RunError(f"{out_dir} holds another run (differs in {', '.join(diff)}: "
                     f"{ {k: old.get(k) for k in diff} }); use another --out")
  with open(path, "w") as f:
    json.dump(run_info, f, indent=2, sort_keys=True)


# ---- the run --------------------------------------------------------------------------------------
def run_suite(suite: Any, policy: Any, rollout_section: Any, out_dir: str | None, *, k: int = 1,
              tasks: Sequence[EvalTask] | None = None, user_llm: Any = None,
              chunk_size: int = 16, options: SuiteOptions | None = None, user_spec: str = "",
              seed: int = 0, progress: bool = True) -> SuiteRun:
  """Runs k episodes of every task (default: suite.load()) and scores them.

  Args:
    suite: a Suite. policy: a policies.Policy. rollout_section: the config's rollout section.
    out_dir: where episodes.jsonl / results.json / run.json go; None keeps everything in memory
      (no resume).
    k: episodes per task. chunk_size: tasks per AgentLoop.run (replay policies: 1).
    options: the SuiteOptions (recorded in results.json / run.json).
  """
  if k < 1:
    raise RunError(f"k must be >= 1, got {k}")
  if chunk_size < 1:
    raise RunError(f"chunk_size must be >= 1, got {chunk_size}")
  tasks = list(suite.load() if tasks is None else tasks)
  if not tasks:
    raise SuiteError(f"suite {suite.name} has no tasks for these options")
  ids = [t.id for t in tasks]
  if len(set(ids)) != len(ids):
    raise SuiteError(f"suite {suite.name} returned duplicate task ids")
  options = options or SuiteOptions()
  run_info = {"suite": suite.name, "policy": policy.spec, "category": options.category,
              "dataset": options.dataset, "offset": options.offset, "limit": options.limit,
              "user": user_spec or None}
  done: dict[tuple[str, int], dict] = {}
  episodes_path = None
  if out_dir is not None:
    os.makedirs(out_dir, exist_ok=True)
    _check_run(out_dir, run_info)
    episodes_path = os.path.join(out_dir, EPISODES)
    done = read_episodes(episodes_path)
  cfg = loop_config(rollout_section, suite, policy.max_context)
  tools, user = suite.tool_env(), suite.user_env(user_llm)
  # Pending work: tasks grouped by how many samples they still miss (usually all k or none).
  pending: dict[tuple[int, ...], list[EvalTask]] = {}
  for task in tasks:
    missing = tuple(g for g in range(k) if (task.id, g) not in done)
    if missing:
      pending.setdefault(missing, []).append(task)
  total = len(tasks) * k
  bar = None
  if progress:
    import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=total, initial=total - sum(len(m) * len(ts) for m, ts in pending.items()),
                    desc=f"eval {suite.name}", unit="ep")
  step = 1 if policy.per_task else chunk_size
  try:
    for missing, group in pending.items():
      for start in range(0, len(group), step):
        chunk = group[start:start + step]
        loop = AgentLoop(policy.engine_for(chunk[0]), policy.tokenizer, tools, user, cfg)
        trajs = loop.run(chunk, len(missing), seed=stable_seed(seed, suite.name, chunk[0].id,
                                                                missing[0]))
        lines = []
        for i, traj in enumerate(trajs):
          task, g = chunk[i // len(missing)], missing[i % len(missing)]
          traj.sample_index = g
          rec = episode_record(suite.name, traj, _score(suite, task, traj))
          done[(task.id, g)] = rec
          lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
        if episodes_path is not None:
          with open(episodes_path, "a", encoding="utf-8") as f:
            f.writelines(lines)
        if bar is not None:
          bar.update(len(trajs))
  finally:
    if bar is not None:
      bar.close()
  records = [done[(t.id, g)] for t in tasks for g in range(k)]
  scores = [[EpisodeScore(float(done[(t.id, g)]["score"]), bool(done[(t.id, g)]["passed"]),
                          done[(t.id, g)].get("verdict") or {}) for g in range(k)] for t in tasks]
  statuses: dict[str, int] = {}
  for rec in records:
    statuses[rec["status"]] = statuses.get(rec["status"], 0) + 1
  results = {**run_info, "k": k, "episodes": len(records), "tasks": len(tasks),
             "metrics": {m: float(v) for m, v in suite.metrics(tasks, scores).items()},
             "statuses": dict(sorted(statuses.items())),
             "scorer_errors": sum(bool((r.get("verdict") or {}).get("scorer_error"))
                                  for r in records)}
  notes = getattr(suite, "notes", None)
  if callable(notes):
    results["notes"] = list(notes())
  if out_dir is not None:
    with open(os.path.join(out_dir, RESULTS), "w") as f:
      json.dump(results, f, indent=2)
  return SuiteRun(results, tasks, scores, records)


def markdown_table(results: dict) -> str:
  """results.json as a markdown table: the suite's metrics, then how episodes ended."""
  what = results.get("category") or results.get("dataset") or ""
  head = f"**{results['suite']}{' / ' + what if what else ''}** · policy `{results['policy']}` · " \
         f"k={results['k']} · {results['tasks']} tasks, {results['episodes']} episodes"
  rows = ["| metric | value |", "| --- | --- |"]
  for name, value in results["metrics"].items():
    rows.append(f"| {name} | {'nan' if math.isnan(value) else f'{value:.4f}'} |")
  for status, count in results.get("statuses", {}).items():
    note = " (prompt longer than the policy's context)" if status == "context_full" else ""
    rows.append(f"| status: {status}{note} | {count}/{results['episodes']} |")
  if results.get("scorer_errors"):
    rows.append(f"| scorer errors (scored 0, see episodes.jsonl) | {results['scorer_errors']}/"
                f"{results['episodes']} |")
  notes = "".join(f"\n\n{line}" for line in results.get("notes", ()))
  return head + "\n\n" + "\n".join(rows) + notes


# ---- specs like "math:aime24" (launch.train's eval.suites) ----------------------------------------
def options_from_spec(spec: str, factory: Any, **fields: Any) -> SuiteOptions:
  """SuiteOptions of "SUITE[:VALUE]": VALUE is the suite's `spec_option` field ("dataset" for
  math; "category" by default)."""
  _, _, value = spec.partition(":")
  if value:
    fields[getattr(factory, "spec_option", "category")] = value
  return SuiteOptions(**fields)
