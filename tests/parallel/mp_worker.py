"""One process of the two-process training test (run by tests/parallel/test_multiprocess.py).

    python -m tests.parallel.mp_worker PORT PROCESS_ID NUM_PROCESSES OUT_NPZ NUM_STEPS

Joins the run with jax.distributed.initialize (CPU, gloo collectives), builds the toy TrainState
on a (2, 2, 1) mesh spanning every process's devices, trains NUM_STEPS steps on the shared toy
batches and, on process 0, writes the gathered parameters to OUT_NPZ. NUM_STEPS=0 is the quick
check: a batch placed with learner.make_batch and reduced across processes under jit.
"""

import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from synthagent_jax import parallel
from synthagent_jax.rl import learner, optim
from synthagent_jax.rl import state as state_lib
from tests import toys
from tests.rl import learner_toys


def main(port: int, process_id: int, num_processes: int, out: str, num_steps: int) -> None:
  parallel.initialize(parallel.DistributedConfig(
      coordinator_address=f"localhost:{port}", num_processes=num_processes,
      process_id=process_id, initialization_timeout_s=120))
  assert jax.process_count() == num_processes, jax.process_count()
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(2, 2, 1)))
  if num_steps == 0:
    batch = learner.make_batch(learner_toys.make_host_batch(0), mesh)
    total = jax.jit(lambda b: (b["input_ids"] * b["loss_mask"]).sum(),
                    out_shardings=parallel.replicated(mesh))(batch)
    if parallel.is_process0():
      np.savez(out, total=np.asarray(total))
    multihost_utils.sync_global_devices("done")
    return
  tx = optim.make_optimizer(optim.OptimConfig(lr=1e-2, clip_norm=1.0))
  state, spec = state_lib.create_train_state(toys.tiny_model_config(), tx, mesh,
                                             parallel.DEFAULT_RULES, seed=0)
  cfg = learner_toys.DEFAULT_LEARNER
  step = learner.make_train_step(spec, tx, cfg, mesh)
  for i in range(num_steps):
    batch = learner.make_batch(learner_toys.make_host_batch(i), mesh)
    state, metrics = step(state, batch)
  params = multihost_utils.process_allgather(state.params, tiled=True)
  loss = float(metrics["learner/loss"])
  if parallel.is_process0():
    leaves = {f"p{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))}
    np.savez(out, loss=loss, **leaves)
  multihost_utils.sync_global_devices("done")


if __name__ == "__main__":
  a = sys.argv[1:]
  main(int(a[0]), int(a[1]), int(a[2]), a[3], int(a[4]))
