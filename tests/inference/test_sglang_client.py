"""SGLangEngine against an in-memory fake of SGLang's documented /generate response format."""

import json

import httpx
import pytest

from synthagent_jax.inference import engine as engine_lib
from synthagent_jax.inference import sglang

SP = engine_lib.SamplingParams(max_new_tokens=3, temperature=0.0, stop_token_ids=(7,))


def _sglang_body(prompt, stop_at=None):
  """What SGLang returns: a finish_reason dict and (logprob, id, text) triples."""
  ids = [prompt[-1] + 1, prompt[-1] + 2, prompt[-1] + 3]
  finish = {"type": "length", "length": 3}
  if stop_at is not None:
    ids = ids[:stop_at]
    finish = {"type": "stop", "matched": ids[-1]}
  return {"text": "", "output_ids": ids,
          "meta_info": {"id": "x", "finish_reason": finish, "prompt_tokens": len(prompt),
                        "completion_tokens": len(ids),
                        "output_token_logprobs": [[-0.5 * (i + 1), t, None]
                                                  for i, t in enumerate(ids)]}}


class FakeServer:
  """Records requests; fails the first `fail` /generate calls with `fail_status`."""

  def __init__(self, fail=0, fail_status=503):
    self.requests = []
    self.fail = fail
    self.fail_status = fail_status

  def __call__(self, request: httpx.Request) -> httpx.Response:
    self.requests.append(request)
    if request.url.path == "/health":
      return httpx.Response(200)
    body = json.loads(request.content)
    if request.url.path == "/update_weights_from_disk":
      return httpx.Response(200, json={"success": True, "message": "ok"})
    if self.fail > 0:
      self.fail -= 1
      return httpx.Response(self.fail_status, text="overloaded")
    prompt = body["input_ids"]
    return httpx.Response(200, json=_sglang_body(prompt, stop_at=1 if prompt[-1] == 6 else None))


def _engine(server, urls=("http://a:1", "http://b:2"), **kw):
  kw.setdefault("backoff_s", 0.0)
  return sglang.SGLangEngine(list(urls), transport=httpx.MockTransport(server), **kw)


def test_generate_parses_tokens_logprobs_and_finish_reason():
  server = FakeServer()
  with _engine(server) as eng:
    assert isinstance(eng, engine_lib.Engine)
    out = eng.generate([[1, 2], [6]], SP)
  assert out[0].token_ids == [3, 4, 5] and out[0].finish_reason == "length"
  assert out[0].logprobs == [-0.5, -1.0, -1.5]
  assert out[1].token_ids == [7] and out[1].finish_reason == "stop"
  sent = json.loads(server.requests[0].content)
  assert sent["return_logprob"] is True
  assert sent["sampling_params"] == {"max_new_tokens": 3, "temperature": 0.0, "top_p": 1.0,
                                     "top_k": -1, "stop_token_ids": [7]}


def test_round_robin_over_urls():
  server = FakeServer()
  with _engine(server, max_concurrency=1) as eng:
    eng.generate([[1]] * 4, SP)
  hosts = [r.url.host for r in server.requests]
  assert hosts == ["a", "b", "a", "b"]


def test_retries_5xx_then_succeeds():
  server = FakeServer(fail=3)
  with _engine(server, max_concurrency=1, max_retries=3) as eng:
    out = eng.generate([[1]], SP)
  assert out[0].token_ids == [2, 3, 4]
  assert len(server.requests) == 4


def test_gives_up_after_max_retries():
  server = FakeServer(fail=10)
  with _engine(server, max_retries=2) as eng, pytest.raises(sglang.SGLangError, match="3 attempts"):
    eng.generate([[1]], SP)


def test_4xx_fails_without_retry():
  server = FakeServer(fail=5, fail_status=400)
  with _engine(server, max_retries=3) as eng, pytest.raises(sglang.SGLangError, match="HTTP 400"):
    eng.generate([[1]], SP)
  assert len(server.requests) == 1


def test_abort_is_retried():
  calls = []

  def handler(request):
    calls.append(1)
    if len(calls) == 1:
      body = _sglang_body([1])
      body["meta_info"]["finish_reason"] = {"type": "abort", "message": "weights updating"}
      return httpx.Response(200, json=body)
    return httpx.Response(200, json=_sglang_body([1]))

  with _engine(handler, max_retries=1) as eng:
    assert eng.generate([[1]], SP)[0].token_ids == [2, 3, 4]
  assert len(calls) == 2


@pytest.mark.parametrize("body,match", [
    ({"text": "hi"}, "meta_info"),
    ({"meta_info": {"finish_reason": {"type": "length"}}}, "return_logprob"),
    ({"meta_info": {"finish_reason": {"type": "weird"}, "output_token_logprobs": []}}, "weird"),
    ({"output_ids": [1, 2], "meta_info": {"finish_reason": {"type": "length"},
                                          "output_token_logprobs": [[-1.0, 1, None]]}},
     "disagree"),
])
def test_malformed_responses_are_named(body, match):
  with pytest.raises(sglang.SGLangError, match=match):
    sglang.parse_generate_response(body)


def test_wait_healthy_times_out_naming_server():
  def handler(request):
    return httpx.Response(503)

  with _engine(handler) as eng, pytest.raises(TimeoutError, match="http://a:1"):
    eng.wait_healthy(timeout_s=0.0, poll_s=0.0)


def test_bad_arguments():
  with pytest.raises(ValueError, match="at least one"):
    sglang.SGLangEngine([])
  with pytest.raises(ValueError, match="http://"):
    sglang.SGLangEngine("localhost:30000")
  with _engine(FakeServer()) as eng, pytest.raises(ValueError, match="export_dir"):
    eng.sync_weights(None, 1)
  with _engine(FakeServer()) as eng, pytest.raises(ValueError, match="prompt 1 is empty"):
    eng.generate([[1], []], SP)
