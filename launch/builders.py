"""Builds the run's components from a config: the wiring shared by the launch entry points.

Each function turns one config section into the object a room provides; none holds loop logic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Callable

import transformers

from synthagent_jax import models
from synthagent_jax import parallel
from synthagent_jax.envs import task as task_lib
from synthagent_jax.envs.tools import MockToolSystem
from synthagent_jax.envs.user import LLMUserSimulator, RuleUserSimulator
from synthagent_jax.inference.engine import Engine
from synthagent_jax.llm.openai_http import OpenAIChatLLM, OpenAIConfig
from synthagent_jax.rewards.judge import HTTPJudge
from synthagent_jax.rl import learner as learner_lib
from synthagent_jax.rl import optim as optim_lib
from synthagent_jax.rl import state as state_lib
from synthagent_jax.rollout.agent_loop import AgentLoopConfig
from synthagent_jax.synthesis import aliases

log = logging.getLogger("synthagent_jax.train")


def tokenizer(config):
  path = config.tokenizer or config.model.checkpoint
  tok = transformers.AutoTokenizer.from_pretrained(path)
  if tok.chat_template is None:
    raise ValueError(f"tokenizer at {path!r} has no chat template")
  return tok


def model_config(config, tok) -> models.ModelConfig:
  """The checkpoint's config.json, or the config's dims: models.ModelConfig.from_config."""
  return models.ModelConfig.from_config(config.model, tok)


def mesh(config):
  parallel.initialize(parallel.DistributedConfig.from_config(config.mesh))
  return parallel.make_mesh(parallel.MeshConfig.from_config(config.mesh))


def initial_params(config, model_cfg: models.ModelConfig, spec):
  """The run's starting params, created or loaded already sharded on `spec`'s mesh: random
  (model.from_scratch, the values of `models.init_model`) or the HF checkpoint's. No device
  ever holds the whole model."""
  if config.model.from_scratch:
    return state_lib.create_params(model_cfg, spec, config.seed)
  return state_lib.load_params(config.model.checkpoint, spec, dtype=config.model.dtype,
                               remat=config.model.remat)


def rules(config):
  return tuple((k, v) for k, v in config.mesh.rules)


def optimizer(optim_cfg, total_steps: int, **overrides):
  cfg = optim_lib.OptimConfig.from_config(optim_cfg, total_steps=max(1, total_steps), **overrides)
  return optim_lib.make_optimizer(cfg)


def rl_learner_config(config) -> learner_lib.LearnerConfig:
  """`config.rl`'s loss settings, scoring the policy the rollouts sample: their temperature (0,
  greedy, scores the untempered softmax the sampler reports log-probs of; LearnerConfig)."""
  return learner_lib.LearnerConfig.from_config(
      config.rl, temperature=config.rollout.temperature,
      loss_norm_tokens=config.rl.get("loss_norm_tokens") or config.rollout.max_total_tokens)


def sft_optimizer(config):
  """The SFT phase's optimizer: config.optim's settings at sft.lr, min(10, steps / 10) warmup
  steps, then sft.schedule over sft.num_steps."""
  n, schedule = config.sft.num_steps, config.sft.get("schedule", "cosine")
  if schedule not in optim_lib.SCHEDULES:
    raise ValueError(f"sft.schedule must be one of {optim_lib.SCHEDULES}, got {schedule!r}")
  return optimizer(config.optim, n, lr=config.sft.lr, warmup_steps=min(10, n // 10),
                   schedule=schedule)


def sft_learner_config(config) -> learner_lib.LearnerConfig:
  return learner_lib.LearnerConfig(loss="sft", minibatch_size=config.sft.batch_size,
                                   micro_batch_size=min(config.sft.batch_size,
                                                        config.rl.micro_batch_size))


def load_tasks(path: str, what: str) -> list[task_lib.Task]:
  """Loads a task file; bad records are reported (file:line:field), counted and skipped."""
  tasks, errors = task_lib.load_tasks(path)
  for err in errors[:20]:
    log.warning("skipped %s task: %s", what, err)
  if errors:
    log.warning("%d bad %s task records skipped in %s", len(errors), what, path)
  if not tasks:
    raise ValueError(f"no valid {what} tasks in {path}")
  return tasks


def holdout_domain_names(value) -> tuple[str, ...]:
  """`data.holdout_domains` as a tuple: a tuple/list of names or one comma-separated string."""
  names = value.split(",") if isinstance(value, str) else list(value or ())
  if not all(isinstance(n, str) for n in names):
    raise ValueError(f"data.holdout_domains must be domain names, got {value!r}")
  return tuple(n.strip() for n in names if n.strip())


def drop_holdout_domains(train: list[task_lib.Task], evals: list[task_lib.Task],
                         domains) -> list[task_lib.Task]:
  """The training tasks outside the held-out `domains` (eval tasks are all kept).

  Raises ValueError when a listed domain has no task in either split (a typo would otherwise hold
  out nothing), or when nothing is left to train on.
  """
  names = holdout_domain_names(domains)
  if not names:
    return train
  known = {t.domain for t in train} | {t.domain for t in evals}
  unknown = [n for n in names if n not in known]
  if unknown:
    raise ValueError(f"data.holdout_domains: {unknown} appear in no task; known domains: "
                     f"{sorted(known)}")
  kept = [t for t in train if t.domain not in names]
  if not kept:
    raise ValueError(f"data.holdout_domains={list(names)} leaves no training task")
  log.info("held out domains %s: %d of %d training tasks kept", list(names), len(kept), len(train))
  return kept


def task_splits(config) -> tuple[list[task_lib.Task], list[task_lib.Task]]:
  """(train, eval) tasks; fails if an eval task id also appears in training. Training tasks of
  `data.holdout_domains` are dropped (the eval set keeps every domain)."""
  train = load_tasks(config.data.train_file, "train")
  evals = load_tasks(config.data.eval_file, "eval") if config.data.eval_file else []
  train = drop_holdout_domains(train, evals, config.data.get("holdout_domains", ()))
  overlap = {t.id for t in train} & {t.id for t in evals}
  if overlap:
    raise ValueError(f"{len(overlap)} eval task ids also appear in the training file, e.g. "
                     f"{sorted(overlap)[:3]}: training must never see evaluation tasks")
  return train, evals


def draw_train_tasks(config, tasks: list[task_lib.Task], key: str) -> list[task_lib.Task]:
  """A batch of training tasks as the trainer uses it: with `data.alias_slots`, about that share
  get their private id slot renamed, with new names for every `key` (synthesis/aliases.py)."""
  share = float(config.data.get("alias_slots", 0.0))
  if not share:
    return tasks
  out, _, errors = aliases.alias_tasks(tasks, share, f"{config.data.shuffle_seed}:{key}")
  for err in errors:
    log.warning("slot alias not applied (task kept as it is): %s", err)
  return out


def _openai(section) -> OpenAIChatLLM:
  if not section.base_url or not section.model:
    raise ValueError("an LLM endpoint needs base_url and model set (e.g. --config.env.llm.base_url)")
  return OpenAIChatLLM(OpenAIConfig(base_url=section.base_url, model=section.model,
                                    api_key_env=section.api_key_env))


def tools(config, workdir: str) -> MockToolSystem:
  cache = config.env.cache_dir or os.path.join(workdir, "tool_cache")
  os.makedirs(cache, exist_ok=True)
  llm = _openai(config.env.llm) if config.env.tool_llm else None
  return MockToolSystem(llm=llm, cache_path=os.path.join(cache, "tools.sqlite"))


def user(config):
  adversarial = config.env.get("adversarial_user", False)
  if config.env.user == "rule":
    if adversarial:
      raise ValueError("env.adversarial_user=True needs env.user='llm' (the rule user only answers)")
    return RuleUserSimulator()
  if config.env.user == "llm":
    return LLMUserSimulator(_openai(config.env.llm), adversarial=adversarial)
  raise ValueError(f"env.user must be 'rule' or 'llm', got {config.env.user!r}")


def judge(config, tok):
  kind = config.reward.judge
  if kind == "none":
    return None
  if kind == "http":
    return HTTPJudge(_openai(config.reward.judge_llm))
  if kind == "jax":
    from synthagent_jax.rewards.pyes_judge import PYesJudge  # pylint: disable=g-import-not-at-top
    if not config.reward.judge_checkpoint:
      raise ValueError("reward.judge='jax' needs --config.reward.judge_checkpoint=/hf/dir")
    judge_tok = transformers.AutoTokenizer.from_pretrained(config.reward.judge_checkpoint)
    return PYesJudge(models.from_pretrained(config.reward.judge_checkpoint), judge_tok)
  raise ValueError(f"reward.judge must be none, http or jax, got {kind!r}")


def agent_loop_config(config, seed: int = 0) -> AgentLoopConfig:
  section = config.rollout.to_dict()
  if not section.get("system_prompt"):
    section.pop("system_prompt", None)
  return AgentLoopConfig.from_mapping(section, seed=seed)


@dataclasses.dataclass(frozen=True)
class EngineKind:
  """How to build one `engine.kind`: `build(config, graphdef, params, workdir) -> Engine`, and
  whether the engine reads params on this process's devices (`device_params`; otherwise a host
  view of the learner's params is enough, see `rl.state.process_local_params`)."""

  build: Callable[..., Engine]
  device_params: bool


ENGINE_KINDS: dict[str, EngineKind] = {}


def register_engine(name: str, *, device_params: bool):
  """Decorator: registers an engine builder under its `engine.kind` (duplicates refused)."""

  def deco(fn):
    if name in ENGINE_KINDS:
      raise ValueError(f"engine kind {name!r} registered twice")
    ENGINE_KINDS[name] = EngineKind(fn, device_params)
    return fn

  return deco


def engine_kind(config) -> EngineKind:
  name = config.engine.kind
  if name not in ENGINE_KINDS:
    raise ValueError(f"unknown engine.kind {name!r}; known: {', '.join(sorted(ENGINE_KINDS))}")
  return ENGINE_KINDS[name]


@register_engine("jax", device_params=True)
def _jax_engine(config, graphdef, params, workdir: str) -> Engine:
  del workdir
  from synthagent_jax.inference import sampler  # pylint: disable=g-import-not-at-top
  return sampler.JaxEngine((graphdef, params),
                           buckets=sampler.Buckets(min_batch=engine_min_batch(config)),
                           decode_stages=int(config.engine.get("decode_stages", 1)))


def engine_min_batch(config) -> int:
  """engine.min_batch, where -1 means a GRPO step's episodes (rl.tasks_per_step x
  rl.num_generations): turns whose active episodes are fewer still run at that batch bucket, so
  the sampler compiles a handful of shapes instead of one per batch size as episodes finish."""
  n = int(config.engine.get("min_batch", -1))
  if n == -1:
    return config.rl.tasks_per_step * config.rl.num_generations
  if n < 1:
    raise ValueError(f"engine.min_batch must be >= 1 or -1 (the step's episodes), got {n}")
  return n


@register_engine("sglang", device_params=False)
def _sglang_engine(config, graphdef, params, workdir: str) -> Engine:
  del graphdef, params, workdir  # the servers load their own weights; updates come by sync
  from synthagent_jax.inference.sglang import SGLangEngine  # pylint: disable=g-import-not-at-top
  if not config.engine.weights_dir:
    raise ValueError("engine.kind='sglang' needs --config.engine.weights_dir (a directory the "
                     "servers can read; each step's weights are exported there)")
  return SGLangEngine(list(config.engine.urls), export_dir=config.engine.weights_dir,
                      sync_dtype=config.engine.sync_dtype)


def engine(config, graphdef, params, workdir: str) -> Engine:
  """The rollout engine of `engine.kind` (ENGINE_KINDS) over `params`."""
  return engine_kind(config).build(config, graphdef, params, workdir)


def stable_seed(*parts) -> int:
  """A seed from strings/ints that is the same on every host and Python run."""
  digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


is_process0 = parallel.is_process0  # one definition (parallel/distributed.py); callers use builders.
