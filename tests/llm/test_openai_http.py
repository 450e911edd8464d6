"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1 (stdlib http.server)."""

import http.server
import json
import logging
import socket
import threading
import time

import pytest

from synthagent_jax.inference.engine import SamplingParams
from synthagent_jax.llm.base import LLM
from synthagent_jax.llm.openai_http import (LLMBatchError, OpenAIChatLLM, OpenAIConfig,
                                            to_openai_messages)


class _Handler(http.server.BaseHTTPRequestHandler):
  """Behaviour keyed by the last message: "fail-once:X" answers 500 the first time it sees X,
  "slow" sleeps past the client's timeout, "bad" answers 400, anything else is echoed."""

  def log_message(self, *args):
    pass

  def do_POST(self):
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    state = self.server.state
    with state["lock"]:
      state["requests"].append({"path": self.path, "body": body,
                                "auth": self.headers.get("Authorization")})
    text = body["messages"][-1]["content"]
    if text.startswith("fail-once:"):
      with state["lock"]:
        first = text not in state["seen"]
        state["seen"].add(text)
      if first:
        return self._send(500, {"error": {"message": "boom"}})
    if text == "slow":
      time.sleep(1.5)
    if text == "bad":
      return self._send(400, {"error": {"message": "bad request"}})
    self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": f"echo {text}"}}]})

  def _send(self, code, payload):
    data = json.dumps(payload).encode()
    self.send_response(code)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    try:
      self.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
      pass  # The client timed out and left.


@pytest.fixture
def server():
  srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  srv.daemon_threads = True
  srv.state = {"lock": threading.Lock(), "requests": [], "seen": set()}
  thread = threading.Thread(target=srv.serve_forever, daemon=True)
  thread.start()
  yield srv
  srv.shutdown()
  srv.server_close()


def _llm(port, **kw):
  cfg = dict(base_url=f"http://127.0.0.1:{port}/v1", model="toy", api_key_env="TEST_SECRET_KEY",
             max_concurrency=4, max_retries=2, timeout_s=0.4, backoff_s=0.01)
  cfg.update(kw)
  return OpenAIChatLLM(OpenAIConfig(**cfg))


def _conv(text):
  return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def test_success_in_order_with_key_from_env(server, monkeypatch, caplog):
  monkeypatch.setenv("TEST_SECRET_KEY", "sk-very-secret")
  llm = _llm(server.server_port)
  assert isinstance(llm, LLM)
  texts = [f"q{i}" for i in range(10)]
  with caplog.at_level(logging.DEBUG):
    out = llm.chat([_conv(t) for t in texts], SamplingParams(max_new_tokens=7, temperature=0.0,
                                                             top_k=5))
  assert out == [f"echo {t}" for t in texts]
  req = server.state["requests"][0]
  assert req["path"] == "/v1/chat/completions"
  assert req["auth"] == "Bearer sk-very-secret"
  assert req["body"]["max_tokens"] == 7 and req["body"]["top_k"] == 5
  assert "sk-very-secret" not in repr(llm) and "sk-very-secret" not in caplog.text


def test_500_then_success_is_retried(server):
  llm = _llm(server.server_port)
  results = llm.chat_results([_conv("fail-once:a"), _conv("plain"), _conv("fail-once:b")])
  assert [r.text for r in results] == ["echo fail-once:a", "echo plain", "echo fail-once:b"]
  assert [r.attempts for r in results] == [2, 1, 2]


def test_timeout_and_client_error_are_reported_per_item(server):
  llm = _llm(server.server_port, max_retries=1)
  results = llm.chat_results([_conv("ok"), _conv("slow"), _conv("bad")])
  assert results[0].ok and results[0].text == "echo ok"
  assert not results[1].ok and "Timeout" in results[1].error and results[1].attempts == 2
  assert results[2].error == "HTTP 400 (BadRequestError)" and results[2].attempts == 1
  with pytest.raises(LLMBatchError) as e:
    llm.chat([_conv("ok"), _conv("bad")])
  assert e.value.failed_indices == [1]
  assert e.value.results[0].text == "echo ok"  # Successes are kept, not lost.


def test_refused_connection_is_retried_then_reported():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]  # Closed on exit: nothing listens there.
  llm = _llm(port, max_retries=2)
  results = llm.chat_results([_conv("a"), _conv("b")])
  assert [r.ok for r in results] == [False, False]
  assert all("APIConnectionError" in r.error and r.attempts == 3 for r in results)


def test_config_validation_and_wire_format():
  with pytest.raises(ValueError, match="base_url"):
    OpenAIConfig(base_url="localhost:1", model="m")
  with pytest.raises(ValueError, match="max_concurrency"):
    OpenAIConfig(base_url="http://x", model="m", max_concurrency=0)
  wire = to_openai_messages([
      {"role": "assistant", "content": "", "tool_calls": [
          {"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
      {"role": "tool", "name": "f", "content": "r"}])
  assert wire[0]["tool_calls"][0] == {"id": "call_0", "type": "function",
                                      "function": {"name": "f", "arguments": '{"a": 1}'}}
  assert wire[1]["tool_call_id"] == "call_0"


# --- the API key never travels in cleartext off this machine (issue 19 item 11) ------------------

_CANARY = "sk-canary-7d1e"


@pytest.mark.parametrize("base_url", ["http://10.1.2.3:30000/v1", "http://example.com/v1",
                                      "http://127.0.0.1.example.com/v1",
                                      "http://localhost.example.com/v1",
                                      "http://127.0.0.1@example.com/v1", "http://0.0.0.0:8000/v1"])
def test_key_over_plain_http_to_another_host_is_refused(base_url, monkeypatch):
  monkeypatch.setenv("TEST_SECRET_KEY", _CANARY)
  with pytest.raises(ValueError) as e:
    OpenAIChatLLM(OpenAIConfig(base_url=base_url, model="m", api_key_env="TEST_SECRET_KEY"))
  msg = str(e.value)
  assert "TEST_SECRET_KEY" in msg and "plain http://" in msg and "allow_insecure_key" in msg
  assert _CANARY not in msg
  # Explicitly allowed (a trusted network), or no key to send: accepted.
  OpenAIChatLLM(OpenAIConfig(base_url=base_url, model="m", api_key_env="TEST_SECRET_KEY",
                             allow_insecure_key=True))
  monkeypatch.delenv("TEST_SECRET_KEY")
  OpenAIChatLLM(OpenAIConfig(base_url=base_url, model="m", api_key_env="TEST_SECRET_KEY"))


@pytest.mark.parametrize("base_url", ["https://api.example.com/v1", "http://127.0.0.1:30000/v1",
                                      "http://127.8.9.10/v1", "http://localhost:30000/v1",
                                      "http://LOCALHOST/v1", "http://[::1]:30000/v1"])
def test_key_over_https_or_to_loopback_is_allowed(base_url, monkeypatch):
  monkeypatch.setenv("TEST_SECRET_KEY", _CANARY)
  llm = OpenAIChatLLM(OpenAIConfig(base_url=base_url, model="m", api_key_env="TEST_SECRET_KEY"))
  assert _CANARY not in repr(llm)


def test_teacher_built_by_synthesize_applies_the_rule(monkeypatch):
  from configs import synth_teacher  # pylint: disable=g-import-not-at-top
  from launch import synthesize  # pylint: disable=g-import-not-at-top
  c = synth_teacher.get_config()
  c.teacher.base_url, c.teacher.model = "http://192.168.7.7:30000/v1", "m"
  monkeypatch.setenv(c.teacher.api_key_env, _CANARY)
  with pytest.raises(ValueError, match=c.teacher.api_key_env):
    synthesize.build_teacher(c)
  c.seeds_dir = "data/seeds"
  with pytest.raises(synthesize.SynthConfigError, match="teacher.base_url: refusing"):
    synthesize.check_config(c)  # before any work: one line from the CLI
