"""Two processes joined by jax.distributed.initialize on localhost (CPU collectives) train the
toy model to the same parameters as one process on one device."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.rl import learner_toys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_STEPS = 2


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run_workers(out: str, num_steps: int, timeout: int) -> None:
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  procs = [subprocess.Popen([sys.executable, "-m", "tests.parallel.mp_worker", str(port), str(i),
                             "2", out, str(num_steps)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=timeout)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, p in enumerate(procs):
    assert p.returncode == 0, f"process {i} failed:\n{logs[i][-3000:]}"


def test_two_processes_share_a_sharded_batch(tmp_path):
  # Quick multi-host check: each process places only its shards of the global batch, and a
  # jitted reduction over the (2, 2, 1) mesh sums across both processes.
  out = str(tmp_path / "total.npz")
  _run_workers(out, 0, timeout=240)
  b = learner_toys.make_host_batch(0)
  assert int(np.load(out)["total"]) == int((b["input_ids"] * b["loss_mask"]).sum())


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  out = str(tmp_path / "params.npz")
  _run_workers(out, NUM_STEPS, timeout=540)

  ref = learner_toys.get_env()
  state = ref.fresh_state()
  for i in range(NUM_STEPS):
    state, metrics = ref.step(state, ref.batch(i))
  want = jax.tree.leaves(jax.device_get(state.params))
  got = np.load(out)
  np.testing.assert_allclose(float(got["loss"]), float(metrics["learner/loss"]), rtol=1e-5)
  for i, w in enumerate(want):
    np.testing.assert_allclose(got[f"p{i}"], w, atol=1e-4, rtol=0)
