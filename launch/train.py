"""Train a small agent: SFT warm start on reference trajectories, then GRPO on simulated worlds.

    python -m launch.train --config=configs/tiny.py --workdir=runs/tiny
    python -m launch.train --config=configs/qwen_3b.py --config.model.checkpoint=/ckpt/Qwen2.5-3B-Instruct ...
    python -m launch.train --config=configs/qwen_3b.py --dry_run      # memory plan, no weights

Rerunning the same command on the same workdir resumes from its last checkpoint (raise
--config.rl.num_steps to train longer). main() reads as the table of contents of one run; every
piece it calls is a small function of a room (see launch/builders.py for the wiring).
"""

from __future__ import annotations

import logging
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


class ConfigError(ValueError):
  """A config or file problem found before any heavy work; printed as one line."""


def check_config(config) -> None:
  """Fails fast, with the flag to set, on problems that would otherwise surface deep in the run."""
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
  if config.engine.kind not in ("jax", "sglang"):
    raise ConfigError(f"engine.kind must be 'jax' or 'sglang', got {config.engine.kind!r}")
  if config.engine.kind == "sglang" and not config.engine.urls:
    raise ConfigError("engine.kind='sglang' needs --config.engine.urls=\"('http://host:port',)\"")
  if config.rl.num_generations < 2 and config.rl.advantage in ("grpo", "rloo"):
    raise ConfigError(f"rl.advantage={config.rl.advantage!r} needs rl.num_generations >= 2")
  from synthagent_jax.rl.credit import CREDITS  # pylint: disable=g-import-not-at-top
  if config.rl.credit not in CREDITS:
    raise ConfigError(f"rl.credit must be one of {', '.join(CREDITS)}, "
                      f"got {config.rl.credit!r}")
  if config.rl.kl_coef < 0:
    raise ConfigError(f"rl.kl_coef must be >= 0 (0 = no KL penalty), got {config.rl.kl_coef}")
  if config.rl.num_steps > 0 and not config.rollout.temperature > 0:
    raise ConfigError(f"rollout.temperature={config.rollout.temperature}: GRPO trains on sampled "
                      "rollouts and the learner scores that tempered policy; use a temperature > 0")
  rows = config.rl.tasks_per_step * config.rl.num_generations
  if config.rl.minibatch_size % config.rl.micro_batch_size:
    raise ConfigError(f"rl.minibatch_size={config.rl.minibatch_size} is not a multiple of "
                      f"rl.micro_batch_size={config.rl.micro_batch_size}")
  if rows < config.rl.minibatch_size:
    raise ConfigError(f"rl.tasks_per_step x rl.num_generations = {rows} rollouts per step is "
                      f"fewer than rl.minibatch_size={config.rl.minibatch_size}")


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
      plan.print_plan(config)
    except (ValueError, OSError) as e:
      sys.exit(f"error: {e}")
    return
  try:
    check_config(config)
    if _WORKDIR.value is None:
      raise ConfigError("--workdir is required (where checkpoints, metrics and rollouts go)")
  except ConfigError as e:
    sys.exit(f"error: {e}")
  # Heavy imports only once the config is known to be good.
  from launch import train_loop  # pylint: disable=g-import-not-at-top
  try:
    train_loop.train(config, _WORKDIR.value)
  except train_loop.SetupError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
