"""SFT warm start of a training run: masked cross-entropy on the training tasks' reference
trajectories, replayed through the real agent loop (`rollout/replay.py`), so SFT trains on the
token layout RL samples in. Own checkpoints under checkpoints/sft."""

from __future__ import annotations

import logging
import os
import time

import tqdm

from launch import builders
from launch.train_run import Run, SetupError, task_iterator
from synthagent_jax.rl import learner as learner_lib
from synthagent_jax.rl import state as state_lib
from synthagent_jax.rollout import batching
from synthagent_jax.rollout.agent_loop import AgentLoop
from synthagent_jax.rollout.replay import reference_trajectory
from synthagent_jax.utils import checkpoint as ckpt_lib
from synthagent_jax.utils import metrics as metrics_lib

log = logging.getLogger("synthagent_jax.train")

# SFT batches are padded to their longest reference rounded up to this: a few compiled lengths,
# and less padding than 128 (tiny's references: 16 x <= 570 tokens -> 576 instead of 640 slots).
SFT_LENGTH_MULTIPLE = 64


def sft_warm_start(run: Run, params, graphdef, loop: AgentLoop):
  """Masked cross-entropy on reference trajectories; returns the trained params.

  Resumable: checkpoints under checkpoints/sft every `checkpoint.every_steps` steps.
  """
  cfg = run.config
  n_steps = cfg.sft.num_steps
  tx = builders.sft_optimizer(cfg)
  spec = state_lib.plan_state(run.model_cfg, tx, run.mesh, builders.rules(cfg), cfg.seed)
  step_fn = learner_lib.make_train_step(spec, tx, builders.sft_learner_config(cfg), run.mesh)
  ckpt = ckpt_lib.Checkpointer(os.path.join(run.workdir, "checkpoints", "sft"),
                              keep=cfg.checkpoint.keep)
  references = [t for t in run.train_tasks if t.reference]
  if not references:
    raise SetupError("sft.num_steps > 0 but no training task has a reference trajectory")
  data = task_iterator(len(references), cfg.sft.batch_size, cfg.data.shuffle_seed)
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
    tasks = builders.draw_train_tasks(cfg, [references[i] for i in next(data)], f"sft:{step}")
    trajs = [reference_trajectory(loop, t) for t in tasks]
    batch = batching.to_batch(trajs, pad_id=pad, rows_multiple=cfg.sft.batch_size,
                              length_multiple=SFT_LENGTH_MULTIPLE)
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
