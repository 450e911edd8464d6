"""The body of `python -m launch.train`: one run, in sections (see `train`).

Phases: SFT warm start on reference trajectories (optional, own checkpoints under
checkpoints/sft), then the GRPO loop (checkpoints under checkpoints/rl): rollouts (G per task) ->
rubric rewards -> group advantages (zero-variance groups dropped and counted) -> PPO epochs /
minibatches -> weight sync -> metrics and rollout logs -> checkpoint -> held-out evaluation.

Shapes: the train step sees `fixed_shapes` only (rows fixed at the step's maximum, lengths
in power-of-two buckets up to rollout.max_total_tokens), so a run compiles it at most once per
length bucket; `perf/train_step_compiles` and `perf/sampler_compiles` are logged every step.

State: params are created (`state.create_params`) or loaded (`from_pretrained` with the state's
sharding tree) already sharded on the mesh; no device ever holds the whole model.

Several processes (jax.distributed, `config.mesh.num_processes`): the learner is one SPMD
program over every process's devices, and process 0 drives the rollouts. It alone runs the
agent loop (an HTTP engine pool, or the JAX sampler on a copy of the params gathered onto its
own devices, `state.process_local_params`), the environments, the judge, the evaluations and the
logs; it then broadcasts the learner batch (`share_batch`) and every process places its rows on
the mesh and runs the same train step. So N processes compute exactly what one process does, and
rollouts scale out through the engine (a pool of SGLang servers behind the driver), not through
the learner's processes; the other processes wait at the broadcast while process 0 rolls out.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from launch import builders
from synthagent_jax import models
from synthagent_jax import parallel
from synthagent_jax.evals import harness
from synthagent_jax.rewards import rubric
from synthagent_jax.rl import advantages as adv_lib
from synthagent_jax.rl import credit as credit_lib
from synthagent_jax.rl import learner as learner_lib
from synthagent_jax.rl import state as state_lib
from synthagent_jax.rollout import batching
from synthagent_jax.rollout import dynamic_sampling
from synthagent_jax.rollout.agent_loop import AgentLoop
from synthagent_jax.rollout.replay import reference_trajectory
from synthagent_jax.utils import checkpoint as ckpt_lib
from synthagent_jax.utils import metrics as metrics_lib
from synthagent_jax.utils import plots


log = logging.getLogger("synthagent_jax.train")


class SetupError(ValueError):
  """A problem with the run's inputs found while building it; printed as one line."""


@dataclasses.dataclass
class Run:
  """What the phases share (built once in `train`)."""

  config: Any
  workdir: str
  mesh: Any
  tokenizer: Any
  model_cfg: models.ModelConfig
  train_tasks: list
  eval_tasks: list
  tools: Any
  user: Any
  judge: Any
  bench: list = dataclasses.field(default_factory=list)  # (log name, Suite) of eval.suites


def _task_iterator(num_tasks: int, batch_size: int, seed: int):
  """A checkpointable, endlessly repeating, shuffled stream of task-index batches (grain)."""
  ds = grain.MapDataset.source(np.arange(num_tasks)).shuffle(seed=seed).repeat().batch(batch_size)
  return iter(ds.to_iter_dataset())


def _score(run: Run, tasks, trajectories):
  return rubric.score_batch(tasks, [t.messages for t in trajectories], run.judge,
                            run.config.reward.aggregation, run.config.reward.partial_credit)


def bench_suites(config) -> list:
  """(log name, Suite) for each `eval.suites` entry ("SUITE[:VALUE]"); bad entries fail here,
  before the model is built."""
  from synthagent_jax.evals import runner as bench_runner  # pylint: disable=g-import-not-at-top
  from synthagent_jax.evals import suite as suite_lib  # pylint: disable=g-import-not-at-top
  cfg, out = config.eval, []
  for spec in cfg.suites:
    name, _, value = spec.partition(":")
    factory = suite_lib.get(name)
    suite = factory(bench_runner.options_from_spec(spec, factory, limit=cfg.suites_limit,
                                                   data_dir=cfg.suites_data_dir or None))
    suite.load()  # data present and well-formed
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(os.path.basename(value))[0])
    out.append((f"{name}_{tag}" if tag else name, suite))
  return out


def _bench_evaluate(run: Run, loop: AgentLoop, step: int) -> dict:
  """Every eval.suites benchmark on the current params through the loop's engine:
  bench/<name>/<metric> and bench/<name>/frac_<status>; episodes under eval/bench/<name>/.
  The in-process policy also plays the user of suites that need one."""
  from synthagent_jax.evals import policies as bench_policies  # pylint: disable=g-import-not-at-top
  from synthagent_jax.evals import runner as bench_runner  # pylint: disable=g-import-not-at-top
  from synthagent_jax.llm.jax_llm import JaxChatLLM  # pylint: disable=g-import-not-at-top
  cfg, out = run.config.eval, {}
  policy = bench_policies.Policy(
      f"train:step_{step}", "train", run.tokenizer, lambda task: loop.engine,
      max_context=run.model_cfg.max_position_embeddings,
      chat_llm=lambda: JaxChatLLM(loop.engine, run.tokenizer))
  for name, suite in run.bench:
    out_dir = (os.path.join(run.workdir, "eval", "bench", name, f"step_{step:06d}")
               if builders.is_process0() else None)
    res = bench_runner.run_suite(suite, policy, run.config.rollout, out_dir, k=cfg.suites_k,
                                 user_llm=policy.chat_llm(), seed=builders.stable_seed(
                                     "bench", name, step), progress=False).results
    # Metric keys allow [A-Za-z0-9_.-^]: "pass@k" is logged as "pass_at_k".
    out.update({f"bench/{name}/{re.sub(r'[^A-Za-z0-9_.^-]', '_', m.replace('@', '_at_'))}": v
                for m, v in res["metrics"].items()})
    out.update({f"bench/{name}/frac_{s}": c / res["episodes"] for s, c in res["statuses"].items()})
  return out


def _eval_file(run: Run, name: str) -> str:
  return os.path.join(run.workdir, "eval", name)


def _load_rewards(run: Run, name: str) -> dict | None:
  """Per-task held-out rewards an earlier evaluation wrote (eval/<name>_rewards.json), if any."""
  try:
    with open(_eval_file(run, f"{name}_rewards.json")) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def _gains(run: Run, rewards: dict, prefix: str, unseen: set) -> dict:
  """Paired gains of `rewards` over the evaluations before it on the same held-out tasks:
  `<prefix>/gain_vs_sft` (vs the policy GRPO starts from, step 0: after SFT, or the initial
  policy when there is no SFT) and `<prefix>/gain_vs_init` (vs the policy before SFT), each with
  its `_se` (harness.paired_gain). With `data.holdout_domains`, the same over the eval tasks of
  those domains, never trained on (`..._unseen`): the transfer figure."""
  out = {}
  for base_name, key in (("step_000000", "gain_vs_sft"), ("init", "gain_vs_init")):
    base = _load_rewards(run, base_name)
    if base is None:
      continue
    for suffix, ids in (("", rewards), ("_unseen", unseen)):
      if suffix and not unseen:
        continue
      gain, se, n = harness.paired_gain({i: rewards[i] for i in ids if i in rewards}, base)
      if n:
        out[f"{prefix}/{key}{suffix}"], out[f"{prefix}/{key}{suffix}_se"] = gain, se
  return out


def _evaluate(run: Run, loop: AgentLoop, step: int, writer, name: str | None = None) -> dict:
  """Held-out evaluation of the engine's current params (and the eval.suites benchmarks), logged
  at `step`. `name="init"` is the policy before SFT: its metrics are logged as `eval_init/...`
  and its files are eval/init*.json. Every evaluation after the first also logs its paired gain
  over the earlier ones (`_gains`)."""
  if not builders.is_process0():  # the driver's job
    return {}
  bench = _bench_evaluate(run, loop, step) if run.bench and name is None else {}
  cfg = run.config.eval
  if not run.eval_tasks or cfg.num_tasks <= 0:
    if bench:
      writer.write(step, bench)
    return bench
  tasks = run.eval_tasks[:cfg.num_tasks]
  prefix = "eval" if name is None else f"eval_{name}"
  seed = builders.stable_seed("eval", step)
  res = harness.evaluate(lambda ts, k: loop.run(ts, k, seed=seed),
                         lambda ts, trajs: _score(run, ts, trajs), tasks, cfg.k, prefix=prefix)
  rewards = {t.id: [float(r) for r in row] for t, row in zip(tasks, res.rewards)}
  metrics = {**res.metrics,
             **harness.item_rates([t for t in tasks for _ in range(cfg.k)], res.results, prefix)}
  file_name = name or f"step_{step:06d}"
  held_out = set(builders.holdout_domain_names(run.config.data.get("holdout_domains", ())))
  unseen = {t.id for t in tasks if t.domain in held_out}
  if unseen:
    vals = [r for i in unseen for r in rewards[i]]
    metrics[f"{prefix}/reward_mean_unseen"] = float(np.mean(vals))
    metrics[f"{prefix}/reward_stderr_unseen"] = (
        float(np.std(vals, ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else 0.0)
  if name is None:
    metrics.update(_gains(run, rewards, prefix, unseen))
  os.makedirs(os.path.join(run.workdir, "eval"), exist_ok=True)
  with open(_eval_file(run, f"{file_name}.json"), "w") as f:
    json.dump(metrics, f, indent=2, sort_keys=True)
  # Per-episode rewards by task id, so two evaluations of the same tasks can be compared pairwise.
  with open(_eval_file(run, f"{file_name}_rewards.json"), "w") as f:
    json.dump(rewards, f)
  writer.write(step, {**metrics, **bench})
  return {**metrics, **bench}


def summary(run: Run) -> str:
  """The run's held-out story in a few lines: reward before SFT, after SFT and after GRPO (each
  ± its standard error), the paired gains, and the met-rate of tool-call subgoals. Read from
  the eval/ files, so a resumed run reports its whole history."""
  def load(name):
    try:
      with open(_eval_file(run, f"{name}.json")) as f:
        return json.load(f)
    except FileNotFoundError:
      return None
  finals = sorted(n for n in os.listdir(os.path.join(run.workdir, "eval"))
                  if re.fullmatch(r"step_\d{6}\.json", n)) if os.path.isdir(
                      os.path.join(run.workdir, "eval")) else []
  phases = [("before SFT", load("init"), "eval_init")]
  if finals:
    phases.append(("after SFT" if run.config.sft.num_steps > 0 else "start",
                   load("step_000000"), "eval"))
  if len(finals) > 1:
    phases.append(("after GRPO", load(finals[-1][:-5]), "eval"))
  lines = ["held-out reward (mean ± s.e.; tool-call subgoals met):"]
  for label, m, prefix in phases:
    if not m:
      continue
    tool = m.get(f"{prefix}/met/subgoals.tool_called")
    lines.append(f"  {label:<11} {m[f'{prefix}/reward_mean']:.3f} ± {m[f'{prefix}/reward_stderr']:.3f}"
                 f"   pass {m[f'{prefix}/pass_rate']:.3f}"
                 + (f"   tool calls right {tool:.3f}" if tool is not None else "")
                 + f"   ({int(m[f'{prefix}/episodes'])} episodes)")
  last = phases[-1][1] if len(phases) > 2 else None
  for key, label in (("gain_vs_sft", "GRPO - SFT"), ("gain_vs_init", "GRPO - init"),
                     ("gain_vs_sft_unseen", "GRPO - SFT, unseen domains")):
    if last and f"eval/{key}" in last:
      gain, se = last[f"eval/{key}"], last[f"eval/{key}_se"]
      lines.append(f"  {label} {gain:+.3f} ± {se:.3f} paired by task"
                   + (f" ({gain / se:+.1f} s.e.)" if se > 0 else ""))
  return "\n".join(lines)


# ---- SFT warm start ----------------------------------------------------------------------------
def sft_warm_start(run: Run, params, graphdef, loop: AgentLoop):
  """Masked cross-entropy on reference trajectories; returns the trained params.

  Resumable: checkpoints under checkpoints/sft every `checkpoint.every_steps` steps.
  """
  cfg = run.config
  n_steps = cfg.sft.num_steps
  tx = builders.optimizer(cfg.optim, n_steps, lr=cfg.sft.lr, warmup_steps=min(10, n_steps // 10),
                          schedule="cosine")
  spec = state_lib.plan_state(run.model_cfg, tx, run.mesh, builders.rules(cfg), cfg.seed)
  step_fn = learner_lib.make_train_step(spec, tx, builders.sft_learner_config(cfg), run.mesh)
  ckpt = ckpt_lib.Checkpointer(os.path.join(run.workdir, "checkpoints", "sft"),
                              keep=cfg.checkpoint.keep)
  references = [t for t in run.train_tasks if t.reference]
  if not references:
    raise SetupError("sft.num_steps > 0 but no training task has a reference trajectory")
  data = _task_iterator(len(references), cfg.sft.batch_size, cfg.data.shuffle_seed)
  start = ckpt.latest_step()
  if start is not None:
    state, data_state, _ = ckpt.restore(start, abstract_state=spec.abstract)
    data.set_state(data_state)
    log.info("SFT: resumed from checkpoint step %d", start)
  else:
    state, start = state_lib.state_from_params(params, spec, tx, cfg.seed), 0
  if start >= n_steps:
    return state.params
  writer = metrics_lib.MetricWriter(os.path.join(run.workdir, "sft"), resume_step=start or None)
  pad = run.tokenizer.pad_token_id or 0
  for step in tqdm.trange(start, n_steps, desc="sft", initial=start, total=n_steps,
                          disable=not builders.is_process0()):
    trajs = [reference_trajectory(loop, references[i]) for i in next(data)]
    batch = batching.to_batch(trajs, pad_id=pad, rows_multiple=cfg.sft.batch_size)
    t0 = time.perf_counter()
    state, m = step_fn(state, learner_lib.make_batch(batch, run.mesh, loss="sft"))
    m = {k.replace("learner/", "sft/"): float(v) for k, v in m.items()}
    m["perf/sft_tokens_per_s"] = float(batch["attention_mask"].sum()) / (time.perf_counter() - t0)
    if (step + 1) % cfg.log.every_steps == 0 or step + 1 == n_steps:
      writer.write(step + 1, m)
    if (step + 1) % cfg.checkpoint.every_steps == 0 or step + 1 == n_steps:
      ckpt.save(step + 1, state, data_state=data.get_state(), config=cfg)
  ckpt.close()
  writer.close()
  return state.params


# ---- one GRPO step ------------------------------------------------------------------------------
def rollout_and_score(run: Run, loop: AgentLoop, tasks, step: int, round_index: int = 0):
  """G rollouts per task, rubric rewards, advantages, dropped-group mask.

  Advantages are per episode [num_groups, G] under `rl.credit = "episode"`, and a list of
  per-turn advantages per episode under "turn" (rl/credit.py). `round_index` > 0 (a dynamic
  sampling round after the first) draws from its own seed.
  """
  cfg = run.config.rl
  g = cfg.num_generations
  seed_parts = (run.config.seed, "rollout", step) + ((round_index,) if round_index else ())
  trajs = loop.run(tasks, g, seed=builders.stable_seed(*seed_parts))
  results = _score(run, [t for t in tasks for _ in range(g)], trajs)
  rewards_gn = np.asarray([r.reward for r in results], np.float32).reshape(len(tasks), g)
  if cfg.zero_unfinished:
    statuses_gn = [[t.status for t in trajs[i * g:(i + 1) * g]] for i in range(len(tasks))]
    rewards_gn = np.asarray(adv_lib.zero_unfinished(rewards_gn, statuses_gn))
  if cfg.credit == "turn":
    advs, zero_g = credit_lib.turn_advantages(tasks, results, trajs, g, cfg.advantage,
                                              cfg.zero_unfinished)
  else:
    advs = np.asarray(adv_lib.group_advantages(rewards_gn, cfg.advantage))
    zero_g = np.asarray(adv_lib.zero_variance_groups(rewards_gn))
  dropped_g = zero_g if cfg.drop_zero_variance else np.zeros(len(tasks), bool)
  return trajs, results, rewards_gn, advs, dropped_g


@dataclasses.dataclass
class Round:
  """One sampling round of a GRPO step: its tasks, their G episodes each, scored."""

  tasks: list
  trajs: list
  results: list
  rewards_gn: np.ndarray
  advs: Any            # as rollout_and_score returns them
  dropped_g: np.ndarray
  stats: Any           # the loop's LoopStats of this round


def sample_rounds(run: Run, loop: AgentLoop, next_tasks, step: int) -> dynamic_sampling.Filled:
  """The step's rollouts: one round, or under `rl.dynamic_sampling` rounds of fresh tasks (each
  `next_tasks()`) until `rl.tasks_per_step` groups with non-zero reward variance are in hand or
  `rl.dynamic_max_rounds` rounds were drawn (DAPO; rollout/dynamic_sampling.py). Without it the
  kept groups are the undropped ones of the single round (plain GRPO)."""
  cfg = run.config.rl

  def one_round(r):
    tasks = next_tasks()
    trajs, results, rewards_gn, advs, dropped_g = rollout_and_score(run, loop, tasks, step, r)
    return Round(tasks, trajs, results, rewards_gn, advs, dropped_g,
                 dataclasses.replace(loop.stats))

  return dynamic_sampling.fill(one_round, lambda rd: ~rd.dropped_g, cfg.tasks_per_step,
                               cfg.dynamic_max_rounds if cfg.dynamic_sampling else 1)


def share_rounds(filled) -> int:
  """The number of sampling rounds the driver drew (None off the driver), on every process: the
  others advance their task stream by as many batches, so the data state stays in step."""
  n = np.asarray([0 if filled is None else len(filled.rounds)], np.int64)
  if jax.process_count() > 1:
    n = parallel.broadcast_from_process0(n)
  return int(n[0])


def combine_rounds(filled, g: int):
  """(tasks, trajs, results, rewards_gn, dropped_g, per-trajectory advantages, stats, kept
  trajectory indices) over every round, task-major, in sampling order."""
  tasks = [t for rd in filled.rounds for t in rd.tasks]
  trajs = [t for rd in filled.rounds for t in rd.trajs]
  results = [r for rd in filled.rounds for r in rd.results]
  rewards_gn = np.concatenate([rd.rewards_gn for rd in filled.rounds])
  dropped_g = np.concatenate([rd.dropped_g for rd in filled.rounds])
  advs = [a for rd in filled.rounds for a in learner_advantages(rd.trajs, rd.advs)]
  stats = dataclasses.replace(filled.rounds[0].stats)
  for rd in filled.rounds[1:]:
    for f in dataclasses.fields(stats):
      setattr(stats, f.name, getattr(stats, f.name) + getattr(rd.stats, f.name))
  offsets = np.cumsum([0] + [len(rd.tasks) for rd in filled.rounds])
  kept = [(offsets[r] + grp) * g + j for r, grp in filled.kept for j in range(g)]
  return tasks, trajs, results, rewards_gn, dropped_g, advs, stats, kept


def learner_advantages(trajs, advs) -> list:
  """One entry per trajectory for `batching.to_batch`: its episode advantage, or its per-token
  advantages under turn credit."""
  if isinstance(advs, np.ndarray):
    return list(advs.reshape(-1))
  return [credit_lib.token_advantages(t, a) for t, a in zip(trajs, advs)]


def rollout_metrics(trajs, rewards_gn, dropped_g, results, stats) -> dict:
  n = len(trajs)
  m = {
      "rl/reward_mean": float(rewards_gn.mean()),  # the training reward (after any shaping)
      "rl/rubric_reward_mean": float(np.mean([r.reward for r in results])),
      "rl/reward_std": float(rewards_gn.std()),
      "rl/frac_groups_dropped": float(dropped_g.mean()),
      "rl/pass_rate": float((rewards_gn >= 1 - 1e-6).mean()),
      "rollout/response_tokens_mean": float(np.mean([t.num_response_tokens for t in trajs])),
      "rollout/length_mean": float(np.mean([len(t.token_ids) for t in trajs])),
      "rollout/turns_mean": float(np.mean([t.num_turns for t in trajs])),
      "rollout/tool_calls_mean": float(np.mean([t.num_tool_calls for t in trajs])),
      "rollout/judge_failures": float(sum(getattr(r, "judge_failures", 0) for r in results)),
      "perf/rollout_s": stats.total_s,
      "perf/generate_frac": stats.generate_s / max(stats.total_s, 1e-9),
      "perf/sampled_tokens_per_s": stats.sampled_tokens / max(stats.generate_s, 1e-9),
  }
  for status in ("answered", "user_stopped", "max_turns", "context_full", "error"):
    m[f"rollout/status_{status}"] = sum(t.status == status for t in trajs) / n
  return m


def log_rollouts(run: Run, logger, step: int, rounds):
  """One rollout-log record per episode of every sampling round of the step."""
  g = run.config.rl.num_generations
  records = []
  for rd in rounds:
    for i, (traj, res) in enumerate(zip(rd.trajs, rd.results)):
      task = rd.tasks[i // g]
      if isinstance(rd.advs, np.ndarray):
        adv, extra = float(rd.advs.flat[i]), {}
      else:  # turn credit: the episode's advantage is its turns' mean; each turn's is logged too
        adv = float(np.mean(rd.advs[i])) if rd.advs[i] else 0.0
        extra = {"turn_advantages": rd.advs[i]}
      rec = metrics_lib.rollout_record(step, traj, domain=task.domain, reward=res.reward,
                                       advantage=adv, verdicts=res.verdicts)
      rec.update(extra)
      records.append(rec)
  logger.write(step, records)


# ---- fixed shapes ----------------------------------------------------------------------------
LENGTH_FLOOR = 128  # the smallest padded length the train step is compiled for


def fixed_shapes(config, minibatch_size: int) -> dict:
  """`batching.to_batch` keywords that give the train step a bounded set of shapes: rows fixed at
  the step's maximum (tasks x generations, rounded to the learner's minibatch) and lengths in
  `batching.length_buckets(LENGTH_FLOOR, rollout.max_total_tokens)`. A run compiles its train
  step (and the KL reference's log-probs) at most `len(buckets)` times."""
  rows = config.rl.tasks_per_step * config.rl.num_generations
  return dict(rows=batching.round_up(rows, minibatch_size), rows_multiple=minibatch_size,
              buckets=batching.length_buckets(LENGTH_FLOOR, config.rollout.max_total_tokens))


def share_batch(batch, rows: int, per_token: bool):
  """The driver's learner batch (or None: nothing to learn from this step) on every process.

  One process: `batch` unchanged. Several: a small header (has a batch, T) first, then the
  arrays, whose shapes every process knows from it (rows are fixed, see `fixed_shapes`).
  """
  if jax.process_count() == 1:
    return batch
  header = np.zeros(2, np.int64)
  if batch is not None:
    header[:] = (1, batch["input_ids"].shape[1])
  has_batch, t_len = (int(x) for x in parallel.broadcast_from_process0(header))
  if not has_batch:
    return None
  if batch is None:
    batch = {k: np.zeros((rows, t_len), np.int32)
             for k in ("input_ids", "attention_mask", "loss_mask")}
    batch["sampler_logprobs"] = np.zeros((rows, t_len), np.float32)
    batch["advantages"] = np.zeros((rows, t_len) if per_token else (rows,), np.float32)
  return parallel.broadcast_from_process0(batch)


def compile_metrics(train_step) -> dict:
  """Compilations so far in this process: the jitted train step's cache entries, and the
  in-process sampler's traces (0 with an HTTP engine)."""
  from synthagent_jax.inference import sampler  # pylint: disable=g-import-not-at-top
  compiles = train_step._cache_size()  # pylint: disable=protected-access
  return {"perf/train_step_compiles": float(compiles),
          "perf/sampler_compiles": float(sampler.trace_count())}


# ---- KL reference --------------------------------------------------------------------------------
def reference_policy(run: Run, spec, state, start: int, rl_cfg):
  """`batch -> ref_logprobs` of the frozen policy GRPO started from (after any SFT).

  Its params are saved once under checkpoints/ref (step 0 of the RL phase) and restored from
  there on resume, so a resumed run keeps penalising KL to the same reference.
  """
  ref_ckpt = ckpt_lib.Checkpointer(os.path.join(run.workdir, "checkpoints", "ref"), keep=1,
                                   async_save=False)
  if ref_ckpt.latest_step() is not None:
    params = ref_ckpt.restore(abstract_state=spec.abstract.params)[0]
  elif start > 0:
    raise SetupError(f"rl.kl_coef > 0 but {ref_ckpt.directory} has no reference policy: this run "
                     f"was at step {start} without the KL penalty; restart it in a new workdir")
  else:
    # train_step donates the state, so the reference needs its own copy of the params.
    params = jax.tree.map(jnp.copy, state.params)
    ref_ckpt.save(0, params, config=run.config)  # params only: no optimizer moments
  ref_ckpt.close()
  fn = learner_lib.make_logprobs_fn(spec, rl_cfg, run.mesh)
  return lambda batch: fn(params, batch)


# ---- the run -----------------------------------------------------------------------------------
def train(config, workdir: str) -> dict:
  """Runs (or resumes) the whole job; returns the last metrics written."""
  # 1. Mesh first: joining a multi-process run must precede any other JAX call. Then the workdir.
  mesh = builders.mesh(config)
  os.makedirs(workdir, exist_ok=True)
  if builders.is_process0():
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  # 2. Tokenizer, tasks and environments (cheap; fail before the model is built).
  try:
    tok = builders.tokenizer(config)
    train_tasks, eval_tasks = builders.task_splits(config)
    run = Run(config, workdir, mesh, tok, builders.model_config(config, tok), train_tasks,
              eval_tasks, builders.tools(config, workdir), builders.user(config),
              builders.judge(config, tok))
    run.bench = bench_suites(config)
  except (ValueError, OSError) as e:
    raise SetupError(str(e)) from e
  log.info("%d train tasks, %d eval tasks; model %s", len(train_tasks), len(eval_tasks),
               run.model_cfg)

  # 3. RL learner: state layout on the mesh and the jitted step.
  try:
    rl_cfg = builders.rl_learner_config(config)
  except ValueError as e:
    raise SetupError(str(e)) from e
  rows = config.rl.tasks_per_step * config.rl.num_generations
  n_updates = config.rl.num_steps * config.rl.ppo_epochs * -(-rows // rl_cfg.minibatch_size)
  tx = builders.optimizer(config.optim, n_updates)
  spec = state_lib.plan_state(run.model_cfg, tx, mesh, builders.rules(config), config.seed)
  train_step = learner_lib.make_train_step(spec, tx, rl_cfg, mesh)
  shapes = fixed_shapes(config, rl_cfg.minibatch_size or rows)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints", "rl"),
                              keep=config.checkpoint.keep)
  data = _task_iterator(len(train_tasks), config.rl.tasks_per_step, config.data.shuffle_seed)

  # 4. Resume, or initialise (checkpoint or scratch) and warm-start with SFT.
  start = ckpt.latest_step()
  restored = start is not None
  if restored:
    state, data_state, _ = ckpt.restore(start, abstract_state=spec.abstract)
    data.set_state(data_state)
    print(f"Resuming from checkpoint step {start} in {ckpt.directory}", flush=True)
    engine_params = state.params
  else:
    start = 0
    params = builders.initial_params(config, run.model_cfg, spec)  # already sharded
    engine_params = params
  graphdef = spec.graphdef

  # 5. Engine and agent loop, on the driver (process 0) only: see "Several processes" above. In
  # one process the engine reads the learner's params (no copy).
  rules = builders.rules(config)
  driver = builders.is_process0()

  def engine_view(params):
    """The engine's copy of `params` on the driver (None elsewhere); every process calls it."""
    view = state_lib.process_local_params(params, run.model_cfg, rules,
                                          on_device=driver and config.engine.kind == "jax")
    return view if driver else None

  view = engine_view(engine_params)
  engine = builders.engine(config, graphdef, view, workdir) if driver else None
  # Every process keeps a loop: SFT replays references through it (no engine needed).
  loop = AgentLoop(engine, tok, run.tools, run.user, builders.agent_loop_config(config))
  if driver and config.engine.kind == "sglang":
    engine.wait_healthy()

  def sync(params, step):
    params = engine_view(params)  # a collective in a multi-process run
    if not driver:
      return
    if config.engine.kind == "jax":
      engine.update_params(params)
    else:
      return engine.sync_weights((graphdef, params), step).metrics()  # perf/sync_bytes, _s

  writer = metrics_lib.MetricWriter(workdir, resume_step=start)
  if not restored:
    if config.sft.num_steps > 0:
      if config.eval.before_sft and not os.path.exists(_eval_file(run, "init.json")):
        _evaluate(run, loop, 0, writer, name="init")  # the engine holds the initial params
      params = sft_warm_start(run, params, graphdef, loop)
    state = state_lib.state_from_params(params, spec, tx, config.seed)
    sync(state.params, 0)
    ckpt.save(0, state, data_state=data.get_state(), config=config)
  else:
    sync(state.params, start)
  ref = reference_policy(run, spec, state, start, rl_cfg) if config.rl.kl_coef > 0 else None

  # 6. Rollout logs; evaluation of the starting policy.
  rollout_logger = metrics_lib.RolloutLogger(workdir)
  rollout_logger.truncate_after(start)
  if not restored:
    _evaluate(run, loop, 0, writer)
  pad = tok.pad_token_id or 0
  last: dict = {}

  # 7. The GRPO loop.
  bar = tqdm.trange(start, config.rl.num_steps, desc="grpo", initial=start,
                    total=config.rl.num_steps, disable=not builders.is_process0())
  for step in bar:
    t0 = time.perf_counter()
    batch, m, filled = None, {}, None
    if driver:
      filled = sample_rounds(run, loop, lambda: [train_tasks[i] for i in next(data)], step)
    n_rounds = share_rounds(filled)  # a collective: every process calls it
    for _ in range(0 if driver else n_rounds):
      next(data)  # the data state stays in step with the driver's rounds
    if driver:
      tasks, trajs, results, rewards_gn, dropped_g, advs, stats, kept_idx = combine_rounds(
          filled, config.rl.num_generations)
      m = rollout_metrics(trajs, rewards_gn, dropped_g, results, stats)
      m.update(harness.item_rates([t for t in tasks for _ in range(config.rl.num_generations)],
                                  results, "rollout"))
      if config.rl.dynamic_sampling:
        m.update(filled.metrics())
      kept = [trajs[i] for i in kept_idx]
      if kept:
        batch = batching.to_batch(kept, [advs[i] for i in kept_idx], pad_id=pad, **shapes)
    batch = share_batch(batch, shapes["rows"], per_token=config.rl.credit == "turn")
    t_rollout = time.perf_counter() - t0
    t1 = time.perf_counter()
    if batch is not None:
      device_batch = learner_lib.make_batch(batch, mesh)
      if ref is not None:
        device_batch["ref_logprobs"] = ref(device_batch)
      state, lm = train_step(state, device_batch)
      m.update(sync(state.params, step + 1) or {})
      m.update({k: float(v) for k, v in lm.items()})
      m["perf/learner_tokens_per_s"] = float(batch["attention_mask"].sum()) / max(
          time.perf_counter() - t1, 1e-9)
    else:  # every group had equal rewards: nothing to learn from; the step still counts
      state = state.replace(step=state.step + 1)
      m["learner/skipped_updates"] = 0.0
    m["perf/learner_s"] = time.perf_counter() - t1
    m.update(compile_metrics(train_step))
    m["perf/step_s"] = time.perf_counter() - t0
    m["perf/rollout_frac"] = t_rollout / max(m["perf/step_s"], 1e-9)
    done = step + 1
    if driver:
      log_rollouts(run, rollout_logger, done, filled.rounds)
    if (config.eval.every_steps and done % config.eval.every_steps == 0
        and done != config.rl.num_steps):
      m.update(_evaluate(run, loop, done, writer))
    writer.write(done, m)
    last = m
    if driver:
      bar.set_postfix(reward=f"{m['rl/reward_mean']:.3f}",
                      tok_s=f"{m['perf/sampled_tokens_per_s']:.0f}")
    if done % config.checkpoint.every_steps == 0 or done == config.rl.num_steps:
      ckpt.save(done, state, data_state=data.get_state(), config=config)
    if builders.is_process0():
      plots.plot_curves(workdir)

  # 8. Final evaluation and plots.
  final_step = max(start, config.rl.num_steps)
  if start < config.rl.num_steps:
    last.update(_evaluate(run, loop, final_step, writer))
  ckpt.close()
  writer.close()
  if builders.is_process0():
    plots.plot_curves(workdir)
    print(summary(run), flush=True)
  log.info("done: step %d, %s", final_step, {k: v for k, v in last.items()
                                                  if k.startswith(("eval/", "rl/reward"))})
  return last
