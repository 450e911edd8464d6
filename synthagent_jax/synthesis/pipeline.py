"""The LLM teacher pipeline: seed -> tools+task -> underspecify -> tool check -> solve -> rubric ->
filters (schema, near-duplicates), with a stage report.

Every stage is a function over records (`stage.run(records, teacher, cfg) -> [Answer]`). Its
outputs go to `<work_dir>/<stage>.jsonl` and its rejections, with reasons, to
`<work_dir>/<stage>.rejected.jsonl`, appended per batch; a rerun skips every record id already in
either file, so an interrupted run resumes each stage and loses at most one batch in flight. Final
tasks are appended to `out_path` (fsynced per task); a task already there is never written again.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Callable, Sequence

from synthagent_jax.envs import tools as tools_lib
from synthagent_jax.inference.engine import SamplingParams
from synthagent_jax.synthesis import assemble
from synthagent_jax.synthesis import filters
from synthagent_jax.synthesis import stage_rubric
from synthagent_jax.synthesis import stage_solve
from synthagent_jax.synthesis import stage_tool_check
from synthagent_jax.synthesis import stage_tools_task
from synthagent_jax.synthesis import stage_underspecify
from synthagent_jax.synthesis import store
from synthagent_jax.synthesis.teacher import Reject

STAGES = (stage_tools_task, stage_underspecify, stage_tool_check, stage_solve, stage_rubric)
FILTER_STAGE = "filters"


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Attributes:
    max_retries: extra teacher calls per record and stage after an unusable reply.
    num_solutions: k solver episodes per task.
    min_agreement: share of solutions that must pass the rubric for KEEP.
    pass_reward: a solution passes with reward >= this.
    max_turns: assistant turns per solver episode.
    dedup_threshold: near-duplicate when the n-gram Jaccard is >= this.
    dedup_ngram: n of the word n-grams.
    batch_size: records per batched teacher call (and per resume checkpoint).
    simulate_tools: let the teacher simulate unscripted tool calls while solving.
    user: the user simulator the solver talks to: "rule" (envs.user.RuleUserSimulator) or "llm"
      (envs.user.LLMUserSimulator played by the teacher).
    difficulty_samples: policy samples per task for the optional difficulty filter.
    difficulty_band: (low, high): the filter keeps tasks whose pass rate is strictly inside.
    sampling: teacher sampling parameters.
  """

  max_retries: int = 2
  num_solutions: int = 3
  min_agreement: float = 0.67
  pass_reward: float = 1.0
  max_turns: int = 10
  dedup_threshold: float = 0.6
  dedup_ngram: int = 3
  batch_size: int = 8
  simulate_tools: bool = True
  user: str = "rule"
  difficulty_samples: int = 8
  difficulty_band: tuple[float, float] = (0.0, 1.0)
  sampling: SamplingParams = dataclasses.field(
      default_factory=lambda: SamplingParams(max_new_tokens=2048, temperature=0.7))

  def __post_init__(self):
    if self.max_retries < 0:
      raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
    if self.num_solutions < 1:
      raise ValueError(f"num_solutions must be >= 1, got {self.num_solutions}")
    if not 0.0 < self.min_agreement <= 1.0:
      raise ValueError(f"min_agreement must be in (0, 1], got {self.min_agreement}")
    if not 0.0 < self.dedup_threshold <= 1.0:
      raise ValueError(f"dedup_threshold must be in (0, 1], got {self.dedup_threshold}")
    if self.max_turns < 1 or self.batch_size < 1 or self.dedup_ngram < 1:
      raise ValueError("max_turns, batch_size and dedup_ngram must be >= 1")
    if self.user not in ("rule", "llm"):
      raise ValueError(f"user must be 'rule' or 'llm', got {self.user!r}")
    if self.difficulty_samples < 1:
      raise ValueError(f"difficulty_samples must be >= 1, got {self.difficulty_samples}")
    low, high = self.difficulty_band
    if not 0.0 <= low < high <= 1.0:
      raise ValueError(f"difficulty_band must satisfy 0 <= low < high <= 1, got "
                       f"{self.difficulty_band}")

  @classmethod
  def from_config(cls, config) -> "PipelineConfig":
    p, t = config.pipeline, config.teacher
    return cls(max_retries=p.max_retries, num_solutions=p.num_solutions,
               min_agreement=p.min_agreement, pass_reward=p.pass_reward,
               max_turns=p.max_turns, dedup_threshold=p.dedup_threshold,
               dedup_ngram=p.dedup_ngram, batch_size=p.batch_size,
               simulate_tools=p.simulate_tools, user=p.user,
               difficulty_samples=p.get("difficulty_samples", 8),
               difficulty_band=tuple(p.get("difficulty_band", (0.0, 1.0))),
               sampling=SamplingParams(max_new_tokens=t.max_new_tokens,
                                       temperature=t.temperature, seed=config.seed))


def _paths(work_dir: str, name: str) -> tuple[str, str]:
  return (os.path.join(work_dir, f"{name}.jsonl"),
          os.path.join(work_dir, f"{name}.rejected.jsonl"))


def run_stage(name: str, fn: Callable[[Sequence[dict]], list], inputs: Sequence[dict],
              work_dir: str, batch_size: int, progress=None) -> list[dict]:
  """Runs `fn` over the inputs not yet done; returns all outputs of the stage (old and new)."""
  out_path, rej_path = _paths(work_dir, name)
  outputs = store.load_done(out_path)
  done = {r["id"] for r in outputs} | {r["id"] for r in store.load_done(rej_path)}
  todo = [r for r in inputs if r["id"] not in done]
  bar = progress(len(todo), name) if progress and todo else None
  with store.JsonlAppender(out_path) as out, store.JsonlAppender(rej_path) as rej:
    for start in range(0, len(todo), batch_size):
      batch = todo[start:start + batch_size]
      for rec, ans in zip(batch, fn(batch)):
        if ans.ok:
          value = {**ans.value, "retries": {**rec.get("retries", {}), name: ans.retries}}
          out.write(value)
          outputs.append(value)
        else:
          rej.write({"id": rec["id"], "reason": ans.reason, "detail": ans.detail,
                     "retries": ans.retries})
      if bar is not None:
        bar.update(len(batch))
  if bar is not None:
    bar.close()
  return outputs


def run_filters(records: Sequence[dict], cfg: PipelineConfig, out_path: str, work_dir: str,
                pass_rate: Callable[[dict, int], float] | None = None) -> list[dict]:
  """Schema validation, near-duplicate removal and (with `pass_rate`) the difficulty filter;
  appends kept tasks to `out_path`."""
  _, rej_path = _paths(work_dir, FILTER_STAGE)
  kept = store.load_done(out_path)
  index = filters.NearDupIndex(cfg.dedup_threshold, cfg.dedup_ngram)
  for task in kept:
    index.add(task)
  done = {t["metadata"].get("seed_id", t["id"]) for t in kept}
  done |= {r["id"] for r in store.load_done(rej_path)}
  with store.JsonlAppender(out_path) as out, store.JsonlAppender(rej_path) as rej:
    for rec in records:
      if rec["id"] in done:
        continue
      try:
        task = filters.validate(assemble.task_dict(rec, rec["rubric"], rec["reference"],
                                                   task_id=f"teacher-{rec['id']}"))
        index.check(task)
        if pass_rate is not None:
          _, dropped = filters.difficulty_filter([task], pass_rate, cfg.difficulty_samples,
                                                 cfg.difficulty_band)
          for reason, ids in dropped.items():
            if ids:
              raise Reject(reason, f"policy pass rate over {cfg.difficulty_samples} samples")
      except Reject as e:
        rej.write({"id": rec["id"], "reason": e.reason, "detail": e.detail, "retries": []})
        continue
      out.write(task)
      index.add(task)
      kept.append(task)
  return kept


def stage_report(work_dir: str, num_seeds: int, out_path: str) -> dict:
  """{stage: {"in", "out", "rejected": {reason: n}, "retried": {reason: n}}} from the files."""
  report, n_in = {}, num_seeds
  for name in [s.NAME for s in STAGES] + [FILTER_STAGE]:
    out_path_s, rej_path = _paths(work_dir, name)
    rejected = store.load_done(rej_path)
    if name == FILTER_STAGE:
      n_out = len(store.load_done(out_path))
      outs = []
    else:
      outs = store.load_done(out_path_s)
      n_out = len(outs)
    retried = collections.Counter()
    for r in outs:
      retried.update(r.get("retries", {}).get(name, []))
    for r in rejected:
      retried.update(r.get("retries", []))
    report[name] = {"in": n_in, "out": n_out,
                    "rejected": dict(collections.Counter(r["reason"] for r in rejected)),
                    "retried": dict(retried)}
    n_in = n_out
  return report


def run_pipeline(seeds: Sequence[dict], teacher, cfg: PipelineConfig, out_path: str,
                 work_dir: str, progress=None, tool_env=None, user_env=None,
                 pass_rate: Callable[[dict, int], float] | None = None) -> dict:
  """Runs every stage over `seeds`; returns (and saves to work_dir/report.json) the report.

  `pass_rate(task_dict, n)`, if given, samples the current policy n times on a task and returns
  its pass rate (synthesis/difficulty.make_pass_rate); tasks whose rate is not strictly inside
  `cfg.difficulty_band` are rejected (too_hard / too_easy).
  """
  os.makedirs(work_dir, exist_ok=True)
  if tool_env is None:  # simulated tool answers persist across reruns next to the stage files
    tool_env = tools_lib.MockToolSystem(llm=teacher if cfg.simulate_tools else None,
                                        cache_path=os.path.join(work_dir, "tool_cache.sqlite"))
  if user_env is None and cfg.user == "llm":
    from synthagent_jax.envs import user as user_lib  # pylint: disable=g-import-not-at-top
    user_env = user_lib.LLMUserSimulator(teacher)
  records = list(seeds)
  for stage in STAGES:
    if stage is stage_solve:
      fn = lambda batch: stage_solve.run(batch, teacher, cfg, tool_env, user_env)  # pylint: disable=cell-var-from-loop
    else:
      fn = lambda batch, stage=stage: stage.run(batch, teacher, cfg)
    records = run_stage(stage.NAME, fn, records, work_dir, cfg.batch_size, progress)
  run_filters(records, cfg, out_path, work_dir, pass_rate)
  report = stage_report(work_dir, len(seeds), out_path)
  with open(os.path.join(work_dir, "report.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  return report
