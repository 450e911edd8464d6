"""SGLangEngine against our policy server (`inference/server.py`) over real HTTP on localhost.

One server (a tiny checkpoint on disk, an API key) serves every test: greedy outputs equal the
in-process JaxEngine, 500s injected by the client's transport are retried until they stop,
seeds travel per request, and a weight sync (bf16 streaming export + /update_weights_from_disk)
makes the server generate with the exported weights. A real `python -m launch.serve` process:
tests/inference/test_sglang_sync.py.
"""

import os

import httpx
import jax
import numpy as np
import pytest
from flax import nnx

from synthagent_jax import models
from synthagent_jax.inference import engine as engine_lib
from synthagent_jax.inference import sampler
from synthagent_jax.inference import server as server_lib
from synthagent_jax.inference import sglang
from tests import toys

BUCKETS = sampler.Buckets(min_batch=8, min_prompt_len=16, min_new_tokens=16)
PROMPTS = [[5, 17, 3], [9, 2, 44, 61, 7, 8, 30, 12, 1], [100]]
GREEDY = engine_lib.SamplingParams(max_new_tokens=8, temperature=0.0)
KEY = "test-key-123"


def _sharp_model(seed):
  """A tiny random model with weights x10, so greedy outputs depend clearly on the weights."""
  model = toys.tiny_model(vocab_size=128, seed=seed)
  state = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(lambda p: p * 10.0 if p.ndim >= 2 else p, state))
  return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("ckpt") / "policy")
  models.save_pretrained(_sharp_model(seed=0), path)
  return path


@pytest.fixture(scope="module")
def server(checkpoint):
  engine = sampler.JaxEngine(models.from_pretrained(checkpoint), buckets=BUCKETS)
  api = server_lib.create_app(engine, model_path=checkpoint,
                              config=server_lib.ServerConfig(api_key=KEY, batch_wait_s=0.02))
  with server_lib.BackgroundServer(api) as background:
    yield background, api


class FailingFirst(httpx.BaseTransport):
  """Real HTTP, except that the first `fail` requests are answered 500 by the transport."""

  def __init__(self, fail):
    self.fail = fail
    self.inner = httpx.HTTPTransport()

  def handle_request(self, request):
    if self.fail > 0:
      self.fail -= 1
      return httpx.Response(500, text="injected failure (test transport)")
    return self.inner.handle_request(request)


def _local(path_or_model, prompts=PROMPTS, sp=GREEDY, **kw):
  model = path_or_model
  if isinstance(path_or_model, str):
    model = models.from_pretrained(path_or_model)
  return sampler.JaxEngine(model, buckets=BUCKETS).generate(prompts, sp, **kw)


def test_greedy_over_http_equals_in_process(server, checkpoint):
  background, _ = server
  with sglang.SGLangEngine(background.url, backoff_s=0.01, api_key=KEY) as eng:
    eng.wait_healthy(timeout_s=30)
    remote = eng.generate(PROMPTS, GREEDY)
  local = _local(checkpoint)
  for r, l in zip(remote, local):
    assert r.token_ids == l.token_ids and r.finish_reason == l.finish_reason
    np.testing.assert_allclose(r.logprobs, l.logprobs, atol=1e-5)


def test_server_failing_then_recovering(server, checkpoint):
  background, _ = server
  transport = FailingFirst(4)
  with sglang.SGLangEngine(background.url, max_concurrency=1, max_retries=5, backoff_s=0.01,
                           api_key=KEY, transport=transport) as eng:
    remote = eng.generate(PROMPTS[:1], GREEDY)
  assert transport.fail == 0
  assert remote[0].token_ids == _local(checkpoint, PROMPTS[:1])[0].token_ids
  with sglang.SGLangEngine(background.url, max_retries=1, backoff_s=0.0, api_key=KEY,
                           transport=FailingFirst(10)) as eng:
    with pytest.raises(sglang.SGLangError, match="HTTP 500"):
      eng.generate(PROMPTS[:1], GREEDY)


def test_api_key_is_required_and_sent(server, monkeypatch):
  background, _ = server
  monkeypatch.delenv("SGLANG_API_KEY", raising=False)
  with sglang.SGLangEngine(background.url, max_retries=0) as eng:
    with pytest.raises(sglang.SGLangError, match="HTTP 401.*SGLANG_API_KEY"):
      eng.generate(PROMPTS[:1], GREEDY)
  monkeypatch.setenv("SGLANG_API_KEY", KEY)  # the default comes from the environment
  with sglang.SGLangEngine(background.url, max_retries=0) as eng:
    assert len(eng.generate(PROMPTS[:1], GREEDY)[0].token_ids) >= 1


@pytest.mark.slow
def test_seeds_travel_per_request(server, checkpoint):
  background, _ = server
  sp = engine_lib.SamplingParams(max_new_tokens=8, temperature=1.0, seed=5)
  with sglang.SGLangEngine(background.url, send_seed=True, api_key=KEY) as eng:
    first = eng.generate(PROMPTS, sp)
    again = eng.generate(PROMPTS, sp)
  assert [c.token_ids for c in first] == [c.token_ids for c in again]
  # The client sends seed + i for prompt i; the server samples each request on its own stream.
  local = _local(checkpoint, sp=sp, row_seeds=[5, 6, 7])
  assert [c.token_ids for c in first] == [c.token_ids for c in local]


def test_weight_sync_changes_outputs(server, checkpoint):
  background, _ = server
  new_model = _sharp_model(seed=1)
  # Exports go under the model root (the served checkpoint's parent by default).
  exports = os.path.join(os.path.dirname(checkpoint), "exports")
  with sglang.SGLangEngine(background.url, export_dir=exports, keep_exports=1,
                           api_key=KEY) as eng:
    before = eng.generate(PROMPTS, GREEDY)
    stats = eng.sync_weights(new_model, step=7)
    after = eng.generate(PROMPTS, GREEDY)
    path = stats.path
    assert eng.weight_version == 7 and path.endswith("step_000007") and stats.step == 7
    assert eng.last_sync_stats is stats and stats.dtype == "bfloat16"
    n_params = sum(p.size for p in jax.tree.leaves(nnx.state(new_model, nnx.Param)))
    assert stats.bytes_written == stats.total_bytes == 2 * n_params  # bf16: 2 bytes a weight
    assert stats.export_s > 0 and stats.load_s > 0
    assert stats.metrics() == {"perf/sync_bytes": 2.0 * n_params, "perf/sync_s": stats.seconds}
    info = httpx.get(f"{background.url}/get_model_info",
                     headers={"Authorization": f"Bearer {KEY}"}).json()
    assert info["model_path"] == path
    exported = models.from_pretrained(path)  # the server's view: bf16 on disk, fp32 in memory
    # The old export is removed once the next one is loaded.
    eng.sync_weights(new_model, step=8)
    assert not os.path.exists(path) and os.path.isdir(path.replace("07", "08"))
    # Back to the original weights for the other tests.
    eng.load_weights_from_disk(checkpoint)
  assert [c.token_ids for c in before] != [c.token_ids for c in after]
  local = _local(exported)
  assert [c.token_ids for c in after] == [c.token_ids for c in local]
  for r, l in zip(after, local):
    np.testing.assert_allclose(r.logprobs, l.logprobs, atol=1e-5)


def test_fp32_sync_serves_the_exact_weights(server, checkpoint):
  background, _ = server
  new_model = _sharp_model(seed=2)
  exports = os.path.join(os.path.dirname(checkpoint), "exports_fp32")
  with sglang.SGLangEngine(background.url, export_dir=exports, sync_dtype="float32",
                           api_key=KEY) as eng:
    graphdef, params = nnx.split(new_model, nnx.Param)
    stats = eng.sync_weights((graphdef, params), step=3)
    after = eng.generate(PROMPTS, GREEDY)
    eng.load_weights_from_disk(checkpoint)
  assert stats.dtype == "float32" and stats.bytes_written == 4 * sum(
      p.size for p in jax.tree.leaves(params))
  local = _local(new_model)
  assert [c.token_ids for c in after] == [c.token_ids for c in local]
  for r, l in zip(after, local):
    np.testing.assert_allclose(r.logprobs, l.logprobs, atol=1e-5)


def test_bad_sync_dtype_is_refused():
  with pytest.raises(ValueError, match="sync_dtype must be one of"):
    sglang.SGLangEngine("http://127.0.0.1:1", sync_dtype="int8")


def test_bad_weight_path_is_refused(server, checkpoint):
  background, _ = server
  with sglang.SGLangEngine(background.url, max_retries=0, api_key=KEY) as eng:
    with pytest.raises(sglang.SGLangError, match="refused"):
      eng.load_weights_from_disk(os.path.join(os.path.dirname(checkpoint), "nonexistent"))
    with pytest.raises(sglang.SGLangError, match="outside the model root"):
      eng.load_weights_from_disk("/nonexistent/dir")


def test_bad_generate_requests_get_400(server):
  background, _ = server
  url = f"{background.url}/generate"
  post = lambda body: httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"})
  r = post({"input_ids": [1, 2], "sampling_params": {"min_p": 0.1}})
  assert r.status_code == 400 and "min_p" in r.text
  r = post({"sampling_params": {}})
  assert r.status_code == 400 and "input_ids" in r.text
  r = post({"input_ids": [1], "sampling_params": {"top_p": 0}})
  assert r.status_code == 400 and "top_p" in r.text
  r = post({"text": "hi"})
  assert r.status_code == 400 and "tokenizer" in r.text
