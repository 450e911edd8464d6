"""What the phases of one training run share: the `Run` record, its setup error, the task stream
and rubric scoring (`launch/train_loop.py` builds the Run; `train_sft` and `train_eval` read it)."""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from synthagent_jax import models
from synthagent_jax.rewards import rubric


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


def task_iterator(num_tasks: int, batch_size: int, seed: int):
  """A checkpointable, endlessly repeating, shuffled stream of task-index batches (grain)."""
  ds = grain.MapDataset.source(np.arange(num_tasks)).shuffle(seed=seed).repeat().batch(batch_size)
  return iter(ds.to_iter_dataset())


def score(run: Run, tasks, trajectories):
  return rubric.score_batch(tasks, [t.messages for t in trajectories], run.judge,
                            run.config.reward.aggregation, run.config.reward.partial_credit)
