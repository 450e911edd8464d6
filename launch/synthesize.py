"""Synthesize training tasks: the offline procedural teacher or the LLM teacher pipeline.

    python -m launch.synthesize --config=configs/synth_offline.py --out=data/tasks/offline.jsonl
    python -m launch.synthesize --config=configs/synth_teacher.py --out=data/tasks/teacher.jsonl \
        --config.teacher.base_url=http://localhost:30000/v1 --config.teacher.model=MODEL \
        --config.difficulty.base_url=http://localhost:30001/v1 --config.difficulty.model=POLICY

The difficulty.* flags are optional: with them the policy plays each kept teacher task
pipeline.difficulty_samples times and tasks whose pass rate is not strictly inside
pipeline.difficulty_band are dropped (synthesis/difficulty.py).

Writes FILE one task per line (appended and fsynced per task), then the held-out split next to it:
`<stem>_train.jsonl` and `<stem>_eval.jsonl` (by id hash, `synthesis.split.is_heldout`).
Rerunning on an existing FILE continues where it stopped and never writes an id twice. One run
at a time writes FILE: a second run on the same FILE exits at once with an error (FILE.lock).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import tqdm

from synthagent_jax.envs import task as task_lib
from synthagent_jax.synthesis import offline
from synthagent_jax.synthesis import store
from synthagent_jax.synthesis import worlds as worlds_lib




class SynthConfigError(ValueError):
  """A config problem found before any work; printed as one line."""


def check_config(config) -> None:
  if config.kind not in ("offline", "teacher"):
    raise SynthConfigError(f"kind must be 'offline' or 'teacher', got {config.kind!r}")
  if config.num_tasks < 1:
    raise SynthConfigError(f"num_tasks must be >= 1, got {config.num_tasks}")
  if not 0.0 <= config.eval_frac < 1.0:
    raise SynthConfigError(f"eval_frac must be in [0, 1), got {config.eval_frac}")
  if config.kind == "offline" and not os.path.isdir(config.worlds_dir):
    raise SynthConfigError(f"worlds_dir={config.worlds_dir!r} is not a directory")
  if config.kind == "teacher":
    if not config.teacher.base_url:
      raise SynthConfigError("teacher.base_url is not set: pass "
                             "--config.teacher.base_url=http://HOST:PORT/v1")
    if not config.teacher.model:
      raise SynthConfigError("teacher.model is not set: pass --config.teacher.model=NAME")
    if not os.path.isdir(config.seeds_dir):
      raise SynthConfigError(f"seeds_dir={config.seeds_dir!r} is not a directory")
    d = config.get("difficulty")
    if d is not None and d.base_url and not d.model:
      raise SynthConfigError("difficulty.base_url is set but difficulty.model is not: pass "
                             "--config.difficulty.model=NAME (the policy the filter samples)")
    low, high = config.pipeline.get("difficulty_band", (0.0, 1.0))
    if not 0.0 <= low < high <= 1.0:
      raise SynthConfigError(f"pipeline.difficulty_band must satisfy 0 <= low < high <= 1, got "
                             f"{(low, high)}")
    from synthagent_jax.llm import openai_http  # pylint: disable=g-import-not-at-top
    try:
      openai_http.check_key_transport(_teacher_config(config),
                                      bool(os.environ.get(config.teacher.api_key_env)))
    except ValueError as e:
      raise SynthConfigError(f"teacher.base_url: {e}") from None


def run_offline(config, out_path: str) -> int:
  """Appends offline tasks to `out_path` until it holds `num_tasks`. Returns how many were added."""
  done_ids = {r["id"] for r in store.load_done(out_path)}
  worlds = worlds_lib.load_worlds(config.worlds_dir)
  added = 0
  bar = tqdm.tqdm(total=config.num_tasks, initial=min(len(done_ids), config.num_tasks),
                  desc="offline tasks", unit="task", file=sys.stderr)
  with store.JsonlAppender(out_path) as out:
    for record in offline.generate(config.num_tasks, seed=config.seed, worlds=worlds):
      if record["id"] in done_ids:
        continue
      if config.validate:
        record = task_lib.Task.from_dict(record).to_dict()
      out.write(record)
      done_ids.add(record["id"])
      added += 1
      bar.update(1)
  bar.close()
  return added


def _teacher_config(config):
  from synthagent_jax.llm import openai_http  # pylint: disable=g-import-not-at-top
  try:
    return openai_http.OpenAIConfig(base_url=config.teacher.base_url, model=config.teacher.model,
                                    api_key_env=config.teacher.api_key_env)
  except ValueError as e:
    raise SynthConfigError(str(e)) from None


def build_teacher(config):
  from synthagent_jax.llm import openai_http  # pylint: disable=g-import-not-at-top
  return openai_http.OpenAIChatLLM(_teacher_config(config))


def build_policy(config):
  """The difficulty filter's policy (an OpenAI-compatible endpoint), or None: no filter."""
  d = config.get("difficulty")
  if d is None or not d.base_url:
    return None
  from synthagent_jax.llm import openai_http  # pylint: disable=g-import-not-at-top
  return openai_http.OpenAIChatLLM(openai_http.OpenAIConfig(
      base_url=d.base_url, model=d.model, api_key_env=d.api_key_env))


def difficulty_pass_rate(config, cfg, teacher, policy, work_dir: str):
  """`pass_rate(task, n)` of `policy` with the pipeline's tools, user and judge (the teacher)."""
  # pylint: disable=g-import-not-at-top
  from synthagent_jax.envs import tools as tools_lib
  from synthagent_jax.envs import user as user_lib
  from synthagent_jax.inference.engine import SamplingParams
  from synthagent_jax.synthesis import difficulty, stage_rubric
  # pylint: enable=g-import-not-at-top
  d = config.difficulty
  tool_env = tools_lib.MockToolSystem(llm=teacher if cfg.simulate_tools else None,
                                      cache_path=os.path.join(work_dir, "tool_cache.sqlite"))
  user_env = (user_lib.LLMUserSimulator(teacher) if cfg.user == "llm"
              else user_lib.RuleUserSimulator())
  sampling = SamplingParams(max_new_tokens=d.max_new_tokens, temperature=d.temperature,
                            seed=config.seed)
  return difficulty.make_pass_rate(policy, tool_env, user_env, stage_rubric.make_judge(teacher, cfg),
                                   max_turns=cfg.max_turns, pass_reward=cfg.pass_reward,
                                   sampling=sampling)


def run_teacher(config, out_path: str, teacher=None, policy=None) -> dict:
  """Runs the LLM teacher pipeline; returns its stage report. With a policy (`difficulty.*`, or
  `policy=` any LLM), kept tasks must also pass the difficulty filter."""
  from synthagent_jax.synthesis import pipeline  # pylint: disable=g-import-not-at-top
  from synthagent_jax.synthesis import seeds as seeds_lib  # pylint: disable=g-import-not-at-top
  teacher = teacher if teacher is not None else build_teacher(config)
  policy = policy if policy is not None else build_policy(config)
  seed_records = seeds_lib.make_seeds(config.num_tasks, seed=config.seed,
                                      seeds_dir=config.seeds_dir)
  cfg = pipeline.PipelineConfig.from_config(config)
  work_dir = out_path + ".work"
  pass_rate = None
  if policy is not None:
    os.makedirs(work_dir, exist_ok=True)
    pass_rate = difficulty_pass_rate(config, cfg, teacher, policy, work_dir)
  return pipeline.run_pipeline(seed_records, teacher, cfg, out_path=out_path, work_dir=work_dir,
                               progress=lambda n, desc: tqdm.tqdm(total=n, desc=desc,
                                                                  file=sys.stderr),
                               pass_rate=pass_rate)


def finish(config, out_path: str) -> dict:
  """Writes the split files; returns a summary."""
  records = store.load_done(out_path)
  train_path, eval_path, n_train, n_eval = store.write_splits(records, out_path, config.eval_frac)
  return {"out": out_path, "tasks": len(records), "train": train_path, "num_train": n_train,
          "eval": eval_path, "num_eval": n_eval}


def main(argv):
  del argv
  config = _CONFIG.value
  out_path = _OUT.value
  if not out_path:
    raise app.UsageError("--out=FILE is required")
  try:
    check_config(config)
  except SynthConfigError as e:
    print(f"synthesize: config error: {e}", file=sys.stderr)
    sys.exit(2)
  lock = store.OutputLock(out_path)
  try:
    lock.acquire()
  except store.OutputLocked as e:
    print(f"synthesize: error: {e}", file=sys.stderr)
    sys.exit(2)
  try:
    if config.kind == "offline":
      added = run_offline(config, out_path)
      print(f"offline: {added} new tasks", file=sys.stderr)
    else:
      report = run_teacher(config, out_path)
      print(json.dumps(report, indent=2), file=sys.stderr)
    print(json.dumps(finish(config, out_path)))
  finally:
    lock.release()


def _define_flags():
  """Flags of this entry point, defined only when it runs as __main__, so tests (and other
  launch modules) can import it without a second --config."""
  global _CONFIG, _OUT  # pylint: disable=global-statement
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Path to a synthesis config file with get_config().", lock_config=True)
  _OUT = flags.DEFINE_string("out", None, "Output JSONL file (all tasks); resumed if it exists.")


if __name__ == "__main__":
  _define_flags()
  flags.mark_flag_as_required("config")
  app.run(main)
