"""The shipped task sets are valid, disjoint, and exactly what the documented command makes."""

import os

from synthagent_jax.envs import task as task_lib
from synthagent_jax.synthesis import offline
from synthagent_jax.synthesis import split
from synthagent_jax.synthesis import store

TASKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "data", "tasks")


def test_shipped_sets_match_the_generator_and_split():
  train = [r["id"] for r in store.load_done(os.path.join(TASKS, "offline_train.jsonl"))]
  evals = [r["id"] for r in store.load_done(os.path.join(TASKS, "offline_eval.jsonl"))]
  assert len(train) >= 300 and len(evals) >= 128
  assert not set(train) & set(evals)
  assert all(split.is_heldout(i, 0.2) for i in evals)
  assert not any(split.is_heldout(i, 0.2) for i in train)
  assert set(train) | set(evals) == {t["id"] for t in offline.generate(len(train) + len(evals))}


def test_shipped_eval_set_loads_without_errors():
  tasks, errors = task_lib.load_tasks(os.path.join(TASKS, "offline_eval.jsonl"))
  assert not errors and len(tasks) >= 128
  assert len({t.domain for t in tasks}) >= 8
