"""The policy server's safety rules over real HTTP on 127.0.0.1, with fake engines.

Each test is the regression test of one hostile-input finding (issue 19): Origin/key/content
type, per-request validation before batching (one bad request never fails the good ones batched
with it), body and token limits, abandoned requests, the health watchdog, the pending cap.
"""

import concurrent.futures
import json
import threading
import time

import httpx
import pytest

from synthagent_jax.inference import engine as engine_lib
from synthagent_jax.inference import server

VOCAB = 100
KEY = "k-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


class FakeEngine:
  """Answers [last id + 1]; fails the whole call on an id >= VOCAB (as JaxEngine does); its
  calls can be held at a gate."""

  def __init__(self):
    self.calls = []
    self.gate = threading.Event()
    self.gate.set()
    self.entered = threading.Event()

  def generate(self, prompt_ids, sampling):
    self.calls.append([list(p) for p in prompt_ids])
    self.entered.set()
    assert self.gate.wait(30)
    for i, p in enumerate(prompt_ids):
      if max(p) >= VOCAB:
        raise ValueError(f"prompt {i} has token id {max(p)} >= vocab_size {VOCAB}")
    return [engine_lib.Completion([(p[-1] + 1) % VOCAB], [-0.5], "length") for p in prompt_ids]

  def prompts(self):
    return [p for call in self.calls for p in call]

  def update_weights(self, weights, step):
    return {}  # no weights

  def wait_ready(self):
    pass


def _serve(engine, limits=None, **config):
  config = server.ServerConfig(limits=limits or server.Limits(), **config)
  return server.BackgroundServer(server.create_app(engine, config=config, vocab_size=VOCAB))


LIMITS = server.Limits(max_new_tokens=32, context_len=64, max_prompts=4, max_body_bytes=16384)


@pytest.fixture(scope="module")
def shared():
  engine = FakeEngine()
  with _serve(engine, LIMITS) as background:
    yield engine, background


def _raw(url, content, ctype="application/json", headers=None):
  return httpx.post(url, content=content, headers={"Content-Type": ctype, **(headers or {})},
                    timeout=30)


def test_key_is_needed_on_every_endpoint_but_health_and_origin_is_checked():
  engine = FakeEngine()
  with _serve(engine, api_key=KEY) as bg:
    # /health stays open (as in SGLang: load balancers probe it); everything else needs the key.
    assert httpx.get(f"{bg.url}/health").status_code == 200
    for path in ("/v1/models", "/get_model_info"):
      assert httpx.get(f"{bg.url}{path}").status_code == 401
      assert httpx.get(f"{bg.url}{path}", headers={"Authorization": "Bearer nope"}
                       ).status_code == 401
      assert httpx.get(f"{bg.url}{path}", headers=AUTH).status_code == 200
    r = httpx.post(f"{bg.url}/generate", json={"input_ids": [1]})
    assert r.status_code == 401 and "Bearer" in r.text
    # A browser page's cross-origin "simple" POST (text/plain, no preflight) is refused first.
    r = _raw(f"{bg.url}/update_weights_from_disk", '{"model_path": "/tmp"}', "text/plain",
             {"Origin": "http://evil.example", **AUTH})
    assert r.status_code == 403 and "Origin" in r.text
    # With the key but not JSON: 415.
    r = _raw(f"{bg.url}/generate", '{"input_ids": [1]}', "text/plain", AUTH)
    assert r.status_code == 415 and "application/json" in r.text
    r = httpx.post(f"{bg.url}/generate", json={"input_ids": [1]}, headers=AUTH)
    assert r.status_code == 200 and r.json()["output_ids"] == [2]
  assert engine.prompts() == [[1]]


def test_weight_updates_need_a_key_and_listed_origins_pass():
  with _serve(FakeEngine(), allowed_origins=("http://ui.local:8080",)) as bg:
    r = httpx.post(f"{bg.url}/update_weights_from_disk", json={"model_path": "/x"})
    assert r.status_code == 403 and "API key" in r.text
    r = httpx.post(f"{bg.url}/generate", json={"input_ids": [3]},
                   headers={"Origin": "http://ui.local:8080"})
    assert r.status_code == 200
    r = httpx.post(f"{bg.url}/generate", json={"input_ids": [3]},
                   headers={"Origin": "http://ui.local:8081"})
    assert r.status_code == 403


G = "/generate"
BAD_GENERATE = [
    (b'{"input_ids": [1, 2], "sampling_params": {"temperature": NaN}}', "NaN"),
    (b'{"input_ids": [1, 2], "sampling_params": {"top_k": Infinity}}', "Infinity"),
    (b'{"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 1e999}}', "finite"),
    (b'{"input_ids": [1, 2], "sampling_params": {"sampling_seed": -1e999}}', "finite"),
    (b'{"input_ids": [1, 2], "sampling_params": {"sampling_seed": 1e30}}', "2**63"),
    (b'{"input_ids": [1, 2], "sampling_params": {"temperature": "hot"}}', "temperature"),
    (b'{"input_ids": [1, 2], "sampling_params": {"temperature": -1}}', "temperature"),
    (b'{"input_ids": [1, 2], "sampling_params": {"top_p": 1.5}}', "top_p"),
    (b'{"input_ids": [1, 2], "sampling_params": {"min_p": 0.1}}', "min_p"),
    (b'{"input_ids": [1, 2], "sampling_params": [1]}', "sampling_params"),
    (b'{"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 0}}', ">= 1"),
    (b'{"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 33}}', "limit of 32"),
    (b'{"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 65536}}', "--max_new_tokens"),
    (b'{"input_ids": [1], "sampling_params": {"stop_token_ids": "x"}}', "stop_token_ids"),
    (b'{"input_ids": [1], "sampling_params": {"stop_token_ids": [1000]}}', "vocabulary"),
    (b'{"input_ids": [1], "sampling_params": {"stop_token_ids": [1.5]}}', "stop_token_ids"),
    (b'{"input_ids": {"a": 1}}', "input_ids"),
    (b'{"input_ids": 5}', "input_ids"),
    (b'{"input_ids": []}', "input_ids"),
    (b'{"input_ids": [true]}', "input_ids[0]"),
    (b'{"input_ids": [-5]}', "vocabulary"),
    (b'{"input_ids": [100]}', "vocabulary [0, 100)"),
    (b'{"input_ids": [[1], [2], [3], [4], [5]]}', "--max_prompts"),
    (b'{"input_ids": [[1], 2]}', "input_ids[1]"),
    (b'{"input_ids": [' + b"1, " * 60 + b'1]}', "context of 64"),
    (b'{"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 32}, "x": "'
     + b"y" * 40 + b'"}', None),  # fits: 2 + 32 <= 64 (a control: must be 200)
    (b'{"input_ids": [' + b"1, " * 40 + b'1], "sampling_params": {"max_new_tokens": 32}}',
     "exceeds the model's context"),
    (b'{"text": "hi"}', "tokenizer"),
    (b'{"text": "\\ud800 lone surrogate"}', "Unicode"),
    (b'{"text": ""}', "text"),
    (b'{}', "input_ids or text"),
    (b'[1, 2]', "JSON object"),
    (b'', "not JSON"),
    (b'{"input_ids": [1]', "not JSON"),
    (b'[' * 5000 + b']' * 5000, "too deeply"),
    (b'{"input_ids": [' + b"1" * 4400 + b']}', "not JSON"),
    (b'\xff\xfe{}', "UTF-8"),
]


@pytest.mark.parametrize("raw,match", BAD_GENERATE)
def test_malformed_generate_requests_get_400_never_500(shared, raw, match):
  engine, bg = shared
  before = len(engine.prompts())
  r = _raw(f"{bg.url}{G}", raw)
  if match is None:
    assert r.status_code == 200, r.text
    return
  assert r.status_code == 400, (r.status_code, r.text)
  assert match in r.json()["error"]["message"], r.text
  assert len(engine.prompts()) == before  # refused before it reached the engine


def test_body_limit_is_413(shared):
  _, bg = shared
  r = _raw(f"{bg.url}{G}", b'{"input_ids": [1], "pad": "' + b"x" * 20000 + b'"}')
  assert r.status_code == 413 and "--max_body_bytes" in r.text

  def chunks():  # no Content-Length: the limit holds while reading
    yield b'{"input_ids": [1], "pad": "'
    for _ in range(20):
      yield b"x" * 1000
    yield b'"}'
  r = httpx.post(f"{bg.url}{G}", content=chunks(), headers={"Content-Type": "application/json"})
  assert r.status_code == 413


def test_one_bad_request_does_not_fail_its_batch():
  engine = FakeEngine()
  with _serve(engine, batch_wait_s=0.3) as bg:
    def go(ids):
      return httpx.post(f"{bg.url}{G}", json={"input_ids": ids}, timeout=60)
    with concurrent.futures.ThreadPoolExecutor(11) as pool:
      good = [pool.submit(go, [i + 1]) for i in range(10)]
      bad = pool.submit(go, [1, VOCAB + 5])
      statuses = [f.result().status_code for f in good]
      bad_response = bad.result()
  assert statuses == [200] * 10
  assert bad_response.status_code == 400 and "vocabulary" in bad_response.text
  assert sorted(engine.prompts()) == [[i + 1] for i in range(10)]


def test_abandoned_request_is_never_generated_and_health_watchdog():
  engine = FakeEngine()
  engine.gate.clear()
  limits = server.Limits(watchdog_s=0.3)
  with _serve(engine, limits, batch_wait_s=0.0) as bg:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    first = pool.submit(httpx.post, f"{bg.url}{G}", json={"input_ids": [7]}, timeout=60)
    assert engine.entered.wait(30)
    # The engine is stuck in one call: health says so once the watchdog passes.
    time.sleep(0.5)
    r = httpx.get(f"{bg.url}/health")
    assert r.status_code == 503 and "watchdog" in r.json()["reason"]
    # A client that gives up while its request waits behind the stuck call.
    with pytest.raises(httpx.ReadTimeout):
      httpx.post(f"{bg.url}{G}", json={"input_ids": [42]}, timeout=0.5)
    time.sleep(0.5)  # the server notices the disconnect (it polls every 0.1 s)
    engine.gate.set()
    assert first.result().status_code == 200
    assert httpx.post(f"{bg.url}{G}", json={"input_ids": [9]}).status_code == 200
    assert httpx.get(f"{bg.url}/health").status_code == 200
    pool.shutdown()
    assert bg.server.config.app.state.batcher.num_abandoned == 1
  assert engine.prompts() == [[7], [9]]  # [42] was never generated


def test_pending_cap_answers_503_and_clients_can_retry():
  engine = FakeEngine()
  engine.gate.clear()
  with _serve(engine, server.Limits(max_pending=3), batch_wait_s=0.0) as bg:
    batcher = bg.server.config.app.state.batcher

    def wait_pending(n):
      deadline = time.monotonic() + 30
      while batcher.num_pending != n and time.monotonic() < deadline:
        time.sleep(0.02)
      assert batcher.num_pending == n

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
      futures = [pool.submit(httpx.post, f"{bg.url}{G}", json={"input_ids": [i]}, timeout=60)
                 for i in (1, 2)]
      wait_pending(2)
      # Two prompts with room for one: the request is queued whole or not at all.
      r = httpx.post(f"{bg.url}{G}", json={"input_ids": [[4], [5]]})
      assert r.status_code == 503 and r.headers["retry-after"] == "1"
      wait_pending(2)
      futures.append(pool.submit(httpx.post, f"{bg.url}{G}", json={"input_ids": [3]}, timeout=60))
      wait_pending(3)
      r = httpx.post(f"{bg.url}{G}", json={"input_ids": [6]})
      assert r.status_code == 503 and "retry later" in r.text
      engine.gate.set()
      assert [f.result().status_code for f in futures] == [200, 200, 200]
    assert httpx.post(f"{bg.url}{G}", json={"input_ids": [7]}).status_code == 200
  assert sorted(engine.prompts()) == [[1], [2], [3], [7]]


def test_limits_and_config_validate_at_construction():
  with pytest.raises(ValueError, match="max_new_tokens"):
    server.Limits(max_new_tokens=0)
  with pytest.raises(ValueError, match="watchdog_s"):
    server.Limits(watchdog_s=float("nan"))
  with pytest.raises(ValueError, match="context_len"):
    server.Limits(context_len=1)
  with pytest.raises(ValueError, match="api_key"):
    server.ServerConfig(api_key=" ")
  assert json.loads(json.dumps(server.Limits().__dict__))["max_body_bytes"] == 4 * 2**20
