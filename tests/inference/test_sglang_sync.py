"""SGLangEngine.sync_weights against a real `python -m launch.serve` process on 127.0.0.1.

The learner's params are sharded over the 8 simulated devices (conftest); the engine exports them
in bf16 tensor by tensor under the server's --model_root, the server reloads them (casting to its
fp32), and its greedy generations then equal an in-process JaxEngine on the exported weights.
"""

import os
import subprocess
import sys
import time

import httpx
import jax
import numpy as np
import pytest
from flax import nnx

from synthagent_jax import models
from synthagent_jax import parallel
from synthagent_jax.inference import engine as engine_lib
from synthagent_jax.inference import sampler
from synthagent_jax.inference import server as server_lib
from synthagent_jax.inference import sglang
from synthagent_jax.rl import state as state_lib
from tests import toys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY = "sync-test-key"
PROMPTS = [[5, 17, 3], [9, 2, 44, 61, 7, 8, 30, 12, 1], [100]]
GREEDY = engine_lib.SamplingParams(max_new_tokens=8, temperature=0.0)


def _sharp_params(seed):
  """(graphdef, params) of a tiny model with weights x10 (greedy outputs follow the weights)."""
  graphdef, params = state_lib.split_params(toys.tiny_model(vocab_size=128, seed=seed,
                                                            tie_word_embeddings=False))
  return graphdef, jax.tree.map(lambda p: p * 10.0 if p.ndim >= 2 else p, params)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  """(url, model_root) of a `launch.serve` process serving a seed-0 checkpoint."""
  root = str(tmp_path_factory.mktemp("models"))
  checkpoint = os.path.join(root, "policy")
  models.save_pretrained(nnx.merge(*_sharp_params(0)), checkpoint)
  port = server_lib.free_port()
  env = dict(os.environ, SYNTHAGENT_API_KEY=KEY, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(
      [sys.executable, "-m", "launch.serve", f"--checkpoint={checkpoint}", f"--port={port}",
       f"--model_root={root}", "--shutdown_timeout_s=1"],
      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
      try:
        if httpx.get(f"{url}/health", timeout=1).status_code == 200:
          break
      except httpx.HTTPError:
        time.sleep(0.3)
    if proc.poll() is not None:
      pytest.fail(f"launch.serve exited: {proc.stderr.read()[-3000:]}")
    yield url, root
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


@pytest.mark.slow  # a subprocess that imports jax and loads a model
def test_sync_of_sharded_params_reaches_a_real_server(served):
  url, root = served
  graphdef, host = _sharp_params(1)
  _, abstract, logical = state_lib.abstract_params(toys.tiny_model_config(
      vocab_size=128, tie_word_embeddings=False))
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(2, 2, 2)))
  params = jax.device_put(host, parallel.tree_shardings(logical, abstract, mesh,
                                                        parallel.DEFAULT_RULES))
  exports = os.path.join(root, "exports")
  with sglang.SGLangEngine(url, export_dir=exports, keep_exports=1, api_key=KEY,
                           backoff_s=0.05) as eng:
    eng.wait_healthy(timeout_s=30)
    before = eng.generate(PROMPTS, GREEDY)
    stats = eng.sync_weights((graphdef, params), step=1)
    after = eng.generate(PROMPTS, GREEDY)
    info = httpx.get(f"{url}/get_model_info", headers={"Authorization": f"Bearer {KEY}"}).json()
    exported = models.from_pretrained(stats.path)
    synced = eng.update_weights((graphdef, params), step=2)  # the Engine protocol's sync
    second = eng.last_sync_stats
  assert synced == second.metrics() and set(synced) == {"perf/sync_bytes", "perf/sync_s"}
  assert second.step == eng.weight_version == 2
  assert info["model_path"] == stats.path and stats.dtype == "bfloat16"
  assert stats.bytes_written == 2 * sum(p.size for p in jax.tree.leaves(host))
  assert not os.path.exists(stats.path) and os.path.isdir(second.path)  # keep_exports=1
  assert [c.token_ids for c in before] != [c.token_ids for c in after]
  local = sampler.JaxEngine(exported).generate(PROMPTS, GREEDY)
  assert [c.token_ids for c in after] == [c.token_ids for c in local]
  for r, l in zip(after, local):
    np.testing.assert_allclose(r.logprobs, l.logprobs, atol=1e-4)
