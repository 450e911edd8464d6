"""Train a small agent: SFT warm start on reference trajectories, then GRPO on simulated worlds.

    python -m launch.train --config=configs/tiny.py --workdir=runs/tiny
    python -m launch.train --config=configs/qwen_3b.py --config.model.checkpoint=/ckpt/Qwen2.5-3B-Instruct ...
    python -m launch.train --config=configs/qwen_3b.py --dry_run      # memory plan, no weights

Rerunning the same command on the same workdir resumes from its last checkpoint (raise
--config.rl.num_steps to train longer). main() reads as the table of contents of one run; every
piece it calls is a small function of a room (see launch/builders.py for the wiring).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file with get_config().", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics, rollouts and plots go.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Build the abstract state on the configured mesh, print its memory plan, exit.")
_PLAN_JSON = flags.DEFINE_string("plan_json", None, "With --dry_run: also write the plan as JSON.")


class ConfigError(ValueError):
  """A config or file problem found before any heavy work; printed as one line."""


# (key, bound): numbers only the loop reads (no room's dataclass owns them; the sections one
# owns are checked by that dataclass: _check_owned_sections); "ge0" allows 0.
_BOUNDS = (
    ("rl.num_steps", "ge0"), ("rl.tasks_per_step", "ge1"), ("rl.num_generations", "ge1"),
    ("rl.dynamic_max_rounds", "ge1"),
    ("sft.num_steps", "ge0"), ("sft.batch_size", "ge1"), ("sft.lr", "gt0"),
    ("checkpoint.every_steps", "ge1"), ("checkpoint.keep", "ge1"),
    ("eval.every_steps", "ge0"), ("eval.num_tasks", "ge0"), ("eval.k", "ge1"),
    ("log.every_steps", "ge1"),
)
_CHOICES = (("env.user", ("rule", "llm")), ("reward.judge", ("none", "http", "jax")),
            ("engine.kind", ("jax", "sglang")))
_PROMPT_PROBE_TASKS = 8  # training tasks whose prompt length bounds rollout.max_total_tokens


def _get(config, key: str):
  section, name = key.split(".")
  return config[section][name]


def _non_finite(node, prefix: str = "") -> tuple[str, float] | None:
  """The first float in the config that is NaN or infinite: (dotted key, value)."""
  for k, v in node.items():
    key = f"{prefix}{k}"
    if isinstance(v, float) and not math.isfinite(v):
      return key, v
    if hasattr(v, "items"):
      found = _non_finite(v, key + ".")
      if found:
        return found
  return None


def _owned(section: str, err: Exception, names=(), prefixes=()) -> ConfigError:
  """An owner dataclass's ValueError as one line naming `section.key`."""
  msg = str(err).splitlines()[0]
  for prefix in prefixes:
    msg = msg.replace(prefix, f"{section}.")
  for name in sorted(names, key=len, reverse=True):
    msg = re.sub(rf"(?<![\w.]){re.escape(name)}\b", f"{section}.{name}", msg)
  return ConfigError(msg if f"{section}." in msg else f"{section}: {msg}")


def _check_values(config) -> None:
  """One key at a time: finite numbers, bounds, known names."""
  bad = _non_finite(config)
  if bad:
    raise ConfigError(f"{bad[0]} must be a finite number, got {bad[1]}")
  for key, bound in _BOUNDS:
    value = _get(config, key)
    ok = value > 0 if bound == "gt0" else value >= (1 if bound == "ge1" else 0)
    if isinstance(value, bool) or not ok:
      want = {"gt0": "> 0", "ge0": ">= 0", "ge1": ">= 1"}[bound]
      raise ConfigError(f"{key} must be {want}, got {value!r}")
  for key, choices in _CHOICES:
    if _get(config, key) not in choices:
      raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {_get(config, key)!r}")
  from synthagent_jax.rewards import aggregation  # pylint: disable=g-import-not-at-top
  from synthagent_jax.rewards.advantages import ESTIMATORS  # pylint: disable=g-import-not-at-top
  from synthagent_jax.rewards.credit import CREDITS  # pylint: disable=g-import-not-at-top
  for key, known in (("reward.aggregation", aggregation.AGGREGATIONS), ("rl.advantage", ESTIMATORS),
                     ("rl.credit", CREDITS)):
    if _get(config, key) not in known:
      raise ConfigError(f"{key} must be one of {', '.join(known)}, got {_get(config, key)!r}")


def _check_owned_sections(config):
  """The sections a room's dataclass owns, built now by the run's own builders (launch/builders.py)
  so each is validated once, by its owner, before any heavy work: (loop config, learner config)."""
  from launch import builders  # pylint: disable=g-import-not-at-top
  from synthagent_jax import models  # pylint: disable=g-import-not-at-top
  from synthagent_jax.parallel.mesh import MeshConfig  # pylint: disable=g-import-not-at-top
  try:
    loop_cfg = builders.agent_loop_config(config)
  except ValueError as e:
    raise _owned("rollout", e, prefixes=("AgentLoopConfig.", "SamplingParams.")) from None
  try:
    learner_cfg = builders.rl_learner_config(config)
  except ValueError as e:
    raise _owned("rl", e, names=config.rl.keys()) from None
  rows = config.rl.tasks_per_step * config.rl.num_generations
  mini = learner_cfg.minibatch_size or rows
  n_updates = config.rl.num_steps * learner_cfg.ppo_epochs * -(-rows // mini)
  n_sft = config.sft.num_steps
  try:
    builders.optimizer(config.optim, n_updates)
  except ValueError as e:
    raise _owned("optim", e) from None
  if n_sft > 0:  # the SFT phase's optimizer (launch/train_sft.py)
    try:
      builders.sft_optimizer(config)
    except ValueError as e:
      raise _owned("sft", e) from None
  try:
    builders.engine_min_batch(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  m = config.model
  try:
    MeshConfig.from_config(config.mesh)
    # The section's own values; vocab_size 0 (the tokenizer's size) is read when the run builds.
    dims = {} if m.checkpoint and not m.from_scratch else {"vocab_size": m.vocab_size or 1}
    models.ModelConfig.from_config(m, **dims)
  except ValueError as e:
    raise _owned("model", e, prefixes=("ModelConfig.",)) from None
  return loop_cfg, learner_cfg


def _check_endpoints(config) -> None:
  """The LLM endpoints the run will call: set, and never sending a key in cleartext off-host."""
  from synthagent_jax.llm import openai_http  # pylint: disable=g-import-not-at-top
  used = []
  if config.env.user == "llm" or config.env.tool_llm:
    used.append("env.llm")
  if config.reward.judge == "http":
    used.append("reward.judge_llm")
  if config.reward.judge == "jax" and not config.reward.judge_checkpoint:
    raise ConfigError("reward.judge='jax' needs --config.reward.judge_checkpoint=/hf/dir")
  for name in used:
    section = config[name.split(".")[0]][name.split(".")[1]]
    for key in ("base_url", "model"):
      if not section[key]:
        user = "reward.judge=http" if name.startswith("reward") else "env.user=llm or env.tool_llm"
        raise ConfigError(f"{name}.{key} is not set (needed by {user})")
    try:
      openai_http.check_key_transport(
          openai_http.OpenAIConfig(base_url=section.base_url, model=section.model,
                                   api_key_env=section.api_key_env),
          bool(os.environ.get(section.api_key_env)))
    except ValueError as e:
      raise ConfigError(f"{name}.base_url: {e}") from None


def _check_context(config, loop_cfg) -> None:
  """rollout.max_total_tokens leaves room to sample after the shortest of the first training
  prompts (else every episode ends "context_full" and the run trains nothing)."""
  tok_path, path = config.tokenizer or config.model.checkpoint, config.data.train_file
  if not tok_path or not path:
    return
  from synthagent_jax.envs import task as task_lib  # pylint: disable=g-import-not-at-top
  from synthagent_jax.models import chat_format as cf  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  tasks = []
  with open(path, "rb") as f:
    for line in f:
      try:
        tasks.append(task_lib.Task.from_dict(json.loads(line)))
      except (ValueError, RecursionError):
        continue  # reported with file:line when the tasks are loaded
      if len(tasks) == _PROMPT_PROBE_TASKS:
        break
  if not tasks:
    return
  try:
    tok = transformers.AutoTokenizer.from_pretrained(tok_path)
  except (OSError, ValueError):
    return  # reported when the run loads it
  shortest = min(len(cf.render_prompt_ids(
      tok, [{"role": "system", "content": loop_cfg.system_prompt},
            {"role": "user", "content": t.instruction}],
      [cf.compact_tool_schema(x) if loop_cfg.compact_tools else x for x in t.tools]))
      for t in tasks)
  if loop_cfg.max_total_tokens < shortest + 2:
    raise ConfigError(
        f"rollout.max_total_tokens={loop_cfg.max_total_tokens} is too small: the shortest prompt "
        f"of the first {len(tasks)} training tasks is {shortest} tokens, and an episode needs "
        f"room for a sampled token and the end-of-turn token (>= {shortest + 2})")


def check_config(config) -> None:
  """Fails fast, with the flag to set, on problems that would otherwise surface deep in the run.

  Every bad value gives one ConfigError naming its key, before any heavy work: files, then the
  numbers and names only the loop reads, then the sections a room's dataclass owns (rollout,
  rl, optim, mesh, model: built now by the run's builders, so each is validated once, by its
  owner, with its own defaults), then cross-section rules, endpoints and the prompt length.
  """
  m = config.model
  if not m.from_scratch and not m.checkpoint:
    raise ConfigError(
        "model.checkpoint is not set: pass --config.model.checkpoint=/path/to/hf_model_dir "
        "(a local Hugging Face directory with config.json and *.safetensors)")
  if m.checkpoint and not os.path.isfile(os.path.join(m.checkpoint, "config.json")):
    raise ConfigError(f"model.checkpoint={m.checkpoint!r} has no config.json "
                      "(expected a Hugging Face model directory)")
  tok = config.tokenizer or m.checkpoint
  if tok and not os.path.isdir(tok):
    raise ConfigError(f"tokenizer={tok!r} is not a directory")
  check_task_files(config)
  _check_values(config)
  loop_cfg, learner_cfg = _check_owned_sections(config)
  if config.engine.kind == "sglang" and not config.engine.urls:
    raise ConfigError("engine.kind='sglang' needs --config.engine.urls=\"('http://host:port',)\"")
  if config.rl.num_generations < 2 and config.rl.advantage in ("grpo", "rloo"):
    raise ConfigError(f"rl.advantage={config.rl.advantage!r} needs rl.num_generations >= 2")
  if config.rl.num_steps > 0 and not config.rollout.temperature > 0:
    raise ConfigError(f"rollout.temperature={config.rollout.temperature}: GRPO trains on sampled "
                      "rollouts and the learner scores that tempered policy; use a temperature > 0")
  if config.rl.dynamic_sampling and not config.rl.drop_zero_variance:
    raise ConfigError("rl.dynamic_sampling=True keeps sampling until the step has groups with "
                      "non-zero reward variance, so it needs rl.drop_zero_variance=True")
  rows = config.rl.tasks_per_step * config.rl.num_generations
  mini = (f"rl.minibatch_tasks={config.rl.minibatch_tasks} x rl.num_generations="
          f"{config.rl.num_generations} = {learner_cfg.minibatch_size} rollouts per update")
  if learner_cfg.minibatch_size % config.rl.micro_batch_size:
    raise ConfigError(f"{mini} is not a multiple of rl.micro_batch_size="
                      f"{config.rl.micro_batch_size}")
  if rows < learner_cfg.minibatch_size:
    raise ConfigError(f"rl.tasks_per_step x rl.num_generations = {rows} rollouts per step is "
                      f"fewer than {mini}")
  sft_micro = min(config.sft.batch_size, config.rl.micro_batch_size)
  if config.sft.num_steps > 0 and config.sft.batch_size % sft_micro:
    raise ConfigError(f"sft.batch_size={config.sft.batch_size} is not a multiple of its "
                      f"micro-batch min(sft.batch_size, rl.micro_batch_size)={sft_micro}")
  _check_endpoints(config)
  _check_context(config, loop_cfg)


def check_task_files(config) -> None:
  """Names a missing task file and the one command that makes it (before any heavy work)."""
  for key in ("train_file", "eval_file"):
    path = config.data[key]
    if not path or os.path.isfile(path):
      continue
    out = re.sub(r"_(train|eval)\.jsonl$", ".jsonl", path)
    if "teacher" in os.path.basename(path):
      how = (f"python -m launch.synthesize --config=configs/synth_teacher.py --out={out} "
             "--config.teacher.base_url=http://TEACHER_HOST/v1 --config.teacher.model=MODEL")
    else:
      how = f"python -m launch.synthesize --config=configs/synth_offline.py --out={out}"
    raise ConfigError(f"data.{key}={path!r} does not exist; make it with: {how} "
                      f"(or set --config.data.{key})")


def parse_flags(argv):
  """absl's flag parsing, where a --config.KEY=VALUE override naming a key the (locked) config
  does not have is one line naming it, not a traceback."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:  # what ml_collections raises for the missing field
    while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(msg))
      e = e.args[0]
    lines = str(e.args[0] if e.args else e).splitlines() or [""]
    name = lines[0].strip("\"'")
    hint = " ".join(line.strip() for line in lines[1:])  # ml_collections' "Did you mean ..."
    keys = [a[2:].split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    key = next((k for k in keys if name in k[len("config."):].split(".")), f"config.{name}")
    sys.exit(f"error: --{key}: the config has no such key (mistyped, or no longer a key: see "
             f"the config file and configs/base.py){' ' + hint if hint else ''}")


def enable_compile_cache(path: str) -> None:
  """Points JAX's persistent compilation cache at `path` ("" leaves JAX's own setting, e.g.
  JAX_COMPILATION_CACHE_DIR): programs that took over a second to compile (the sampler's, the
  train steps) are stored there, keyed by program, compile options and device, and a later run
  loads them. Before any compilation: it sets a config value and compiles nothing itself."""
  if path:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  # Our progress at INFO; orbax and other libraries log through absl at INFO: keep those quiet.
  logging.getLogger().setLevel(logging.WARNING)
  logging.getLogger("absl").setLevel(logging.WARNING)
  logging.getLogger("synthagent_jax").setLevel(logging.INFO)
  if _DRY_RUN.value:  # needs only dims: a checkpoint's config.json, or the config's own
    from launch import plan  # pylint: disable=g-import-not-at-top
    try:
      plan.print_plan(config, _PLAN_JSON.value)
    except (ValueError, OSError) as e:
      sys.exit(f"error: {e}")
    return
  try:
    check_config(config)
    if _WORKDIR.value is None:
      raise ConfigError("--workdir is required (where checkpoints, metrics and rollouts go)")
  except ConfigError as e:
    sys.exit(f"error: {e}")
  # A multi-process run checks its plan in train_loop.train, once joined (a JAX call here would
  # come before jax.distributed.initialize).
  if config.mesh.get("device_memory_gib", 0.0) and config.mesh.num_processes <= 1:
    from launch import plan  # pylint: disable=g-import-not-at-top
    try:  # refuse before any work a run whose memory plan does not fit the devices
      plan.check_fits(plan.plan(config))
    except (plan.PlanError, ValueError) as e:  # ValueError: a mesh the devices cannot hold
      sys.exit(f"error: {e}")
  enable_compile_cache(config.get("compile_cache_dir", ""))
  # Heavy imports only once the config is known to be good.
  from launch import train_loop  # pylint: disable=g-import-not-at-top
  try:
    train_loop.train(config, _WORKDIR.value)
  except train_loop.SetupError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main, flags_parser=parse_flags)
