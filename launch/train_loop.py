"""The body of `python -m launch.train`: one run, in sections (see `train`).

Phases: held-out evaluation of the initial policy (`eval.before_sft`), SFT warm start on
reference trajectories (optional, `launch/train_sft.py`), then the GRPO loop (checkpoints under
checkpoints/rl): rollouts (G per task) -> rubric rewards -> per-token advantages
(`rewards.credit`, the scheme of `rl.credit`; zero-variance groups dropped and counted, or
refilled by DAPO dynamic sampling rounds: `launch/train_rollouts.py`) -> PPO epochs /
minibatches -> `engine.update_weights` -> metrics and rollout logs -> checkpoint -> held-out
evaluation with paired gains over the earlier phases (`launch/train_eval.py`); the console ends
with the phases side by side (`train_eval.summary`).

Shapes: the train step sees `fixed_shapes` only (rows fixed at the step's maximum, lengths
in power-of-two buckets up to rollout.max_total_tokens), so a run compiles it at most once per
length bucket; `perf/train_step_compiles` and `perf/sampler_compiles` are logged every step.

State: params are created (`state.create_params`) or loaded (`from_pretrained` with the state's
sharding tree) already sharded on the mesh; no device ever holds the whole model.

Several processes (jax.distributed, `config.mesh.num_processes`): the learner is one SPMD
program over every process's devices, and process 0 drives the rollouts. It alone runs the
agent loop (an HTTP engine pool, or the JAX sampler on a copy of the params gathered onto its
own devices, `state.process_local_params`; see `builders.ENGINE_KINDS`), the environments, the
judge, the evaluations and the logs; it then broadcasts the learner batch (`share_batch`) and every process places its rows on
the mesh and runs the same train step. So N processes compute exactly what one process does, and
rollouts scale out through the engine (a pool of SGLang servers behind the driver), not through
the learner's processes; the other processes wait at the broadcast while process 0 rolls out.
"""

from __future__ import annotations

import itertools
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from launch import builders
from launch.train_eval import bench_suites, eval_file, evaluate, summary
from launch.train_rollouts import combine_rounds, log_rollouts, rollout_metrics, sample_rounds
from launch.train_rollouts import share_rounds
from launch.train_run import Run, SetupError, task_iterator
from synthagent_jax.evals import harness
from launch.train_sft import sft_warm_start
from synthagent_jax import parallel
from synthagent_jax.rl import learner as learner_lib
from synthagent_jax.rl import state as state_lib
from synthagent_jax.rollout import batching
from synthagent_jax.rollout.agent_loop import AgentLoop
from synthagent_jax.utils import checkpoint as ckpt_lib
from synthagent_jax.utils import metrics as metrics_lib
from synthagent_jax.utils import plots


log = logging.getLogger("synthagent_jax.train")


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


def share_batch(batch, rows: int):
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
    batch["advantages"] = np.zeros((rows, t_len), np.float32)
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
  if config.mesh.get("device_memory_gib", 0.0) and jax.process_count() > 1:
    # launch.train checked one-process runs before any JAX call; a multi-process run checks its
    # plan here, once joined, on its global mesh (every process computes the same plan).
    from launch import plan  # pylint: disable=g-import-not-at-top
    try:
      plan.check_fits(plan.plan(config, mesh))
    except ValueError as e:  # plan.PlanError is a ValueError
      raise SetupError(str(e)) from e
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
  data = task_iterator(len(train_tasks), config.rl.tasks_per_step, config.data.shuffle_seed)

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

  on_device = driver and builders.engine_kind(config).device_params

  def engine_view(params):
    """The engine's copy of `params` on the driver (None elsewhere); every process calls it."""
    view = state_lib.process_local_params(params, run.model_cfg, rules, on_device=on_device)
    return view if driver else None

  view = engine_view(engine_params)
  engine = builders.engine(config, graphdef, view, workdir) if driver else None
  # Every process keeps a loop: SFT replays references through it (no engine needed).
  loop = AgentLoop(engine, tok, run.tools, run.user, builders.agent_loop_config(config))
  if driver:
    engine.wait_ready()

  def sync(params, step) -> dict:
    params = engine_view(params)  # a collective in a multi-process run
    return engine.update_weights((graphdef, params), step) if driver else {}

  writer = metrics_lib.MetricWriter(workdir, resume_step=start)
  if not restored:
    if config.sft.num_steps > 0:
      if config.eval.before_sft and not os.path.exists(eval_file(run, "init.json")):
        evaluate(run, loop, 0, writer, name="init")  # the engine holds the initial params
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
    evaluate(run, loop, 0, writer)
  pad = tok.pad_token_id or 0
  last: dict = {}

  # 7. The GRPO loop.
  bar = tqdm.trange(start, config.rl.num_steps, desc="grpo", initial=start,
                    total=config.rl.num_steps, disable=not builders.is_process0())
  for step in bar:
    t0 = time.perf_counter()
    batch, m, filled = None, {}, None
    if driver:
      rounds = itertools.count()
      filled = sample_rounds(run, loop, lambda: builders.draw_train_tasks(
          config, [train_tasks[i] for i in next(data)], f"rl:{step}:{next(rounds)}"), step)
    n_rounds = share_rounds(filled)  # a collective: every process calls it
    for _ in range(0 if driver else n_rounds):
      next(data)  # the data state stays in step with the driver's rounds
    if driver:
      got = combine_rounds(filled, config.rl.num_generations)
      m = rollout_metrics(got["trajs"], got["rewards_gn"], got["dropped_g"], got["results"],
                          got["stats"])
      g = config.rl.num_generations
      m.update(harness.item_rates([t for t in got["tasks"] for _ in range(g)], got["results"],
                                  "rollout"))
      if config.rl.dynamic_sampling:
        m.update(filled.metrics())
      if got["kept"]:
        batch = batching.to_batch([got["trajs"][i] for i in got["kept"]],
                                  [got["advs"][i] for i in got["kept"]], pad_id=pad, **shapes)
    batch = share_batch(batch, shapes["rows"])
    t_rollout = time.perf_counter() - t0
    t1 = time.perf_counter()
    if batch is not None:
      device_batch = learner_lib.make_batch(batch, mesh)
      if ref is not None:
        device_batch["ref_logprobs"] = ref(device_batch)
      state, lm = train_step(state, device_batch)
      m.update(sync(state.params, step + 1))
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
      m.update(evaluate(run, loop, done, writer))
    writer.write(done, m)
    last = m
    if driver:
      bar.set_postfix(reward=f"{m['rl/reward_mean']:.3f}",
                      tok_s=f"{m['perf/sampled_tokens_per_s']:.0f}")
    if done % config.checkpoint.every_steps == 0 or done == config.rl.num_steps:
      ckpt.save(done, state, data_state=data.get_state(), config=config)
    if builders.is_process0():
      plots.plot_curves(workdir, every_s=60.0)

  # 8. Final evaluation and plots.
  final_step = max(start, config.rl.num_steps)
  if start < config.rl.num_steps:
    last.update(evaluate(run, loop, final_step, writer))
  ckpt.close()
  writer.close()
  if builders.is_process0():
    plots.plot_curves(workdir, force=True)
    print(summary(run), flush=True)
  log.info("done: step %d, %s", final_step, {k: v for k, v in last.items()
                                                  if k.startswith(("eval/", "rl/reward"))})
  return last
