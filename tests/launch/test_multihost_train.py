"""`python -m launch.train` as two processes (jax.distributed on localhost, CPU) computes what one
process computes (issue 15, multi-host rollouts).

Process 0 drives the rollouts and broadcasts the learner batch (launch/train_loop.py); both run
the learner over a (1, 2, 1) mesh that spans them. The reference is one process with two local
devices and the same mesh. Both run 2 SFT steps then 2 GRPO steps of the tiny config; their
metrics (SFT, rollouts, rewards, learner) and final parameters must agree.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = [
    "--config=configs/tiny.py:smoke", "--config.rl.micro_batch_size=2",
    "--config.eval.num_tasks=1", "--config.rl.drop_zero_variance=False", "--config.optim.lr=1e-2",
    "--config.mesh.shape=(1,-1,1)",
]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)


def _run(procs_args, devices: int, timeout: int = 900) -> None:
  procs = [subprocess.Popen([sys.executable, "-m", "launch.train", *a], cwd=ROOT,
                            env=_env(devices), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for a in procs_args]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=timeout)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for i, p in enumerate(procs):
    assert p.returncode == 0, f"process {i} failed:\n{logs[i][-4000:]}"


def _metric_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _rl_rows(workdir):
  return {r["step"]: r for r in _metric_rows(workdir) if "rl/reward_mean" in r}


def _params(workdir, step=2) -> list[np.ndarray]:
  """The checkpointed params of `step` as host arrays (whatever mesh saved them)."""
  path = os.path.join(workdir, "checkpoints", "rl", str(step), "state")
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(path)
  tree = getattr(getattr(meta, "item_metadata", meta), "tree", getattr(meta, "item_metadata", meta))
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return [np.asarray(x) for x in jax.tree.leaves(ckptr.restore(path, restore_args=args)["params"])]


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  _run([[f"--workdir={one}", *ARGS]], devices=2)
  port = _free_port()
  mp = [f"--config.mesh.coordinator_address=127.0.0.1:{port}", "--config.mesh.num_processes=2"]
  _run([[f"--workdir={two}", *ARGS, *mp, f"--config.mesh.process_id={i}"] for i in range(2)],
       devices=1)
  a, b = _rl_rows(one), _rl_rows(two)
  assert sorted(a) == sorted(b) == [1, 2]
  for step in (1, 2):
    assert "learner/loss" in a[step]
    for key, want in a[step].items():
      if key.startswith(("rl/", "rollout/")):
        assert b[step][key] == want, (step, key)
      elif key.startswith("learner/"):
        assert b[step][key] == pytest.approx(want, rel=1e-4, abs=1e-6), (step, key)
  sa, sb = (_metric_rows(os.path.join(w, "sft")) for w in (one, two))
  assert len(sa) == len(sb) == 2
  for key in ("sft/loss", "sft/grad_norm"):  # the SFT warm start ran the same on both
    assert [r[key] for r in sb] == pytest.approx([r[key] for r in sa], rel=1e-4), key
  assert all(r["sft/grad_norm"] > 0 for r in sa)  # real updates: agreeing is not trivial
  pa, pb = _params(one), _params(two)
  assert len(pa) == len(pb) > 0
  for x, y in zip(pa, pb):
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-5)


def test_two_processes_refuse_a_plan_that_does_not_fit(tmp_path):
  """The memory-fit check of a multi-process run happens once joined, on the global mesh: both
  processes refuse before any work, naming the largest parts (one-process runs are checked in
  launch.train before any JAX call)."""
  port = _free_port()
  mp = [f"--config.mesh.coordinator_address=127.0.0.1:{port}", "--config.mesh.num_processes=2",
        "--config.mesh.device_memory_gib=0.01"]
  procs = [subprocess.Popen([sys.executable, "-m", "launch.train", f"--workdir={tmp_path}", *ARGS,
                             *mp, f"--config.mesh.process_id={i}"], cwd=ROOT, env=_env(1),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  try:
    logs = [p.communicate(timeout=300)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode != 0, log[-2000:]
    assert "per device but mesh.device_memory_gib is 0.0 GiB; largest parts" in log, log[-2000:]
    assert "sampler's params copy" in log or "sampler KV cache" in log
  assert not (tmp_path / "checkpoints").exists()
