"""Offline (procedural, no LLM) task synthesis for the embedded default.

    python -m launch.synthesize --config=configs/synth_offline.py --out=data/tasks/offline.jsonl
    python -m launch.synthesize --config=configs/synth_offline.py --out=/tmp/t.jsonl --config.num_tasks=5000

Writes FILE (all tasks) plus FILE's `<stem>_train.jsonl` / `<stem>_eval.jsonl` held-out split by id
hash. Rerunning on an existing FILE continues where it stopped.
"""

import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.kind = "offline"
  c.num_tasks = 800
  c.seed = 0
  c.worlds_dir = "data/worlds"
  c.eval_frac = 0.2          # share of ids in the held-out split
  c.validate = True          # run every record through envs.task.Task.from_dict before writing
  if arg == "smoke":  # seconds: a handful of tasks
    c.num_tasks = 10
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; known: ['smoke']")
  return c
