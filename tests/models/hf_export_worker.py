"""One process of the two-process export test (run by tests/models/test_hf_export.py).

    python -m tests.models.hf_export_worker PORT PROCESS_ID NUM_PROCESSES OUT_DIR

Joins the run with jax.distributed.initialize (CPU, gloo collectives), creates the toy params
sharded over a (1, 4, 1) mesh spanning both processes' devices, and calls
`hf_export.save_pretrained_streaming` into OUT_DIR from every process. Writes, beside OUT_DIR,
stats_<process>.json and (process 0) params.npz: the params gathered, for the one-process export.
"""

import dataclasses
import json
import os
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from synthagent_jax import parallel
from synthagent_jax.models import hf_export
from synthagent_jax.rl import optim
from synthagent_jax.rl import state as state_lib
from tests import toys


def main(port: int, process_id: int, num_processes: int, out: str) -> None:
  parallel.initialize(parallel.DistributedConfig(
      coordinator_address=f"localhost:{port}", num_processes=num_processes,
      process_id=process_id, initialization_timeout_s=120))
  assert jax.process_count() == num_processes, jax.process_count()
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(1, 4, 1)))
  tx = optim.make_optimizer(optim.OptimConfig(lr=1e-3))
  state, spec = state_lib.create_train_state(toys.tiny_model_config(tie_word_embeddings=False),
                                             tx, mesh, parallel.DEFAULT_RULES, seed=0)
  across = sum(not p.is_fully_addressable for p in jax.tree.leaves(state.params))
  stats = hf_export.save_pretrained_streaming((spec.graphdef, state.params), out,
                                          max_shard_bytes=20_000)
  parent = os.path.dirname(out)
  with open(os.path.join(parent, f"stats_{process_id}.json"), "w") as f:
    json.dump(dict(dataclasses.asdict(stats), across_processes=across), f)
  params = multihost_utils.process_allgather(state.params, tiled=True)
  if jax.process_index() == 0:
    np.savez(os.path.join(parent, "params.npz"),
             **{f"p{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))})
  multihost_utils.sync_global_devices("done")


if __name__ == "__main__":
  a = sys.argv[1:]
  main(int(a[0]), int(a[1]), int(a[2]), a[3])
