"""The policy server's OpenAI chat completions (as `launch.serve` wires it: tool calls parsed by
`rollout.turns`), driven by the official openai client over HTTP.

A scripted engine stands in for the policy (a random model never emits a well-formed tool call):
it returns the tokens of a fixed assistant turn, so the test checks the server's rendering,
decoding and tool-call parsing, not the model.
"""

import json
import pathlib

import httpx
import openai
import pytest
import transformers

from launch import serve
from synthagent_jax.inference import engine as engine_lib
from synthagent_jax.inference import server
from synthagent_jax.models import chat_format

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


class ScriptedEngine:
  """Engine that answers every prompt with the next scripted text (+ <|im_end|>)."""

  def __init__(self, tokenizer, texts):
    self.tokenizer = tokenizer
    self.texts = list(texts)
    self.prompts = []
    self.sampling = []

  def generate(self, prompt_ids, sampling):
    self.prompts += [list(p) for p in prompt_ids]
    self.sampling.append(sampling)
    end = chat_format.token_id(self.tokenizer, chat_format.IM_END)
    out = []
    for _ in prompt_ids:
      ids = chat_format.encode(self.tokenizer, self.texts.pop(0)) + [end]
      out.append(engine_lib.Completion(ids, [-0.1] * len(ids), "stop"))
    return out

  def update_weights(self, weights, step):
    return {}  # a script: no weights

  def wait_ready(self):
    pass


@pytest.fixture(scope="module")
def tokenizer():
  root = pathlib.Path(__file__).resolve().parents[2]
  return transformers.AutoTokenizer.from_pretrained(str(root / "data" / "tokenizer"))


def _serve(tokenizer, texts):
  engine = ScriptedEngine(tokenizer, texts)
  api = server.create_app(engine, tokenizer, config=server.ServerConfig(model_name="toy"),
                          tool_parser=serve.tool_calls_from_text)
  return engine, server.BackgroundServer(api)


def test_tool_calls_come_back_as_openai_tool_calls(tokenizer):
  call = chat_format.format_tool_call("get_weather", {"city": "Paris"})
  engine, background = _serve(tokenizer, [f"Let me check.\n{call}"])
  messages = [{"role": "system", "content": "You are helpful."},
              {"role": "user", "content": "Weather in Paris?"}]
  with background:
    client = openai.OpenAI(base_url=f"{background.url}/v1", api_key="unused", max_retries=0)
    response = client.chat.completions.create(model="toy", messages=messages, tools=TOOLS,
                                              max_tokens=64, temperature=0.0, seed=3)
  choice = response.choices[0]
  assert choice.finish_reason == "tool_calls"
  assert choice.message.content == "Let me check."
  (tool_call,) = choice.message.tool_calls
  assert tool_call.function.name == "get_weather"
  assert json.loads(tool_call.function.arguments) == {"city": "Paris"}
  # The prompt is the chat template's rendering with the tool schemas.
  assert engine.prompts[0] == chat_format.render_prompt_ids(tokenizer, messages, tools=TOOLS)
  sp = engine.sampling[0]
  assert (sp.max_new_tokens, sp.temperature, sp.seed) == (64, 0.0, 3)
  assert set(sp.stop_token_ids) == {chat_format.token_id(tokenizer, chat_format.IM_END),
                                    chat_format.token_id(tokenizer, chat_format.ENDOFTEXT)}
  assert response.usage.prompt_tokens == len(engine.prompts[0])


def test_plain_message_and_tool_history_round_trip(tokenizer):
  engine, background = _serve(tokenizer, ["It is sunny."])
  messages = [
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": None, "tool_calls": [{
          "id": "call_1", "type": "function",
          "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
      {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "sunny"},
  ]
  with background:
    client = openai.OpenAI(base_url=f"{background.url}/v1", api_key="unused", max_retries=0)
    response = client.chat.completions.create(model="toy", messages=messages, tools=TOOLS)
  choice = response.choices[0]
  assert choice.finish_reason == "stop"
  assert choice.message.content == "It is sunny." and not choice.message.tool_calls
  expected = [dict(messages[0]),
              {"role": "assistant", "content": "", "tool_calls": [{
                  "type": "function",
                  "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
              dict(messages[2])]
  assert engine.prompts[0] == chat_format.render_prompt_ids(tokenizer, expected, tools=TOOLS)


def test_malformed_call_stays_text(tokenizer):
  engine, background = _serve(tokenizer, ['<tool_call>\n{"name": "get_weather", oops}\n'
                                          '</tool_call>'])
  with background:
    r = httpx.post(f"{background.url}/v1/chat/completions",
                   json={"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS})
  message = r.json()["choices"][0]["message"]
  assert "tool_calls" not in message and "oops" in message["content"]
  assert len(engine.prompts) == 1


@pytest.mark.parametrize("body,match", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n=1"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": -1}, "temperature"),
    ({"messages": [{"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{bad"}}]}]}, "not JSON"),
])
def test_bad_chat_requests_get_400(tokenizer, body, match):
  _, background = _serve(tokenizer, [])
  with background:
    r = httpx.post(f"{background.url}/v1/chat/completions", json=body)
  assert r.status_code == 400 and match in r.json()["error"]["message"]


USER = b'[{"role": "user", "content": "hi"}]'
BAD_CHAT_RAW = [
    (b'{"messages": [{"role": "user", "content": 5}]}', "content must be"),
    (b'{"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}', "text parts"),
    (b'{"messages": [{"role": "user", "content": "hi", "name": 5}]}', "name"),
    (b'{"messages": ' + USER + b', "tools": 5}', "tools must be"),
    (b'{"messages": ' + USER + b', "tools": [5]}', "tools[0]"),
    (b'{"messages": ' + USER + b', "tools": [{"type": "function", "function": {"name": "f", '
     b'"parameters": 3}}]}', "parameters"),
    (b'{"messages": [{"role": "assistant", "content": "", "tool_calls": 5}]}', "tool_calls"),
    (b'{"messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": '
     b'"f", "arguments": "{\\"x\\": NaN}"}}]}]}', "not JSON"),
    (b'{"messages": ' + USER + b', "temperature": NaN}', "NaN"),
    (b'{"messages": ' + USER + b', "seed": 1e999}', "finite"),
    (b'{"messages": ' + USER + b', "max_tokens": Infinity}', "Infinity"),
    (b'{"messages": ' + USER + b', "max_tokens": 100000}', "--max_new_tokens"),
    (b'{"messages": [{"role": "user", "content": "hi\\udfff"}]}', "Unicode"),
    (b'{"messages": ' + USER + b', "stream": "yes"}', "stream"),
    (b'{"messages": ' + USER + b', "stream": true, "stream_options": 3}', "stream_options"),
    (b'{"messages": ' + USER + b', "tool_choice": {"type": "function"}}', "tool_choice"),
    (b'{"messages": "hi"}', "messages"),
]


@pytest.mark.parametrize("raw,match", BAD_CHAT_RAW)
def test_malformed_chat_bodies_get_400_never_500(tokenizer, raw, match):
  engine, background = _serve(tokenizer, [])
  with background:
    r = httpx.post(f"{background.url}/v1/chat/completions", content=raw,
                   headers={"Content-Type": "application/json"})
  assert r.status_code == 400, (r.status_code, r.text)
  assert match in r.json()["error"]["message"], r.text
  assert not engine.prompts


def test_a_conversation_longer_than_the_context_is_refused_before_generation(tokenizer):
  engine = ScriptedEngine(tokenizer, [])
  limits = server.Limits(context_len=256)
  api = server.create_app(engine, tokenizer, config=server.ServerConfig(limits=limits))
  junk = [{"type": "function", "function": {"name": f"t{i}", "description": "junk " * 20}}
          for i in range(50)]
  with server.BackgroundServer(api) as background:
    r = httpx.post(f"{background.url}/v1/chat/completions",
                   json={"messages": [{"role": "user", "content": "hi"}], "tools": junk})
  assert r.status_code == 400 and "context is 256 tokens" in r.text, r.text
  assert not engine.prompts


def test_streaming_with_the_openai_client(tokenizer):
  call = chat_format.format_tool_call("get_weather", {"city": "Paris"})
  engine, background = _serve(tokenizer, [f"Let me check.\n{call}", "It is sunny.",
                                          "Plain again."])
  messages = [{"role": "user", "content": "Weather in Paris?"}]
  with background:
    client = openai.OpenAI(base_url=f"{background.url}/v1", api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(
        model="toy", messages=messages, tools=TOOLS, max_tokens=64, temperature=0.0,
        stream=True, stream_options={"include_usage": True}))
    plain = list(client.chat.completions.create(model="toy", messages=messages, stream=True))
    # Non-streaming still works on the same server.
    response = client.chat.completions.create(model="toy", messages=messages)
  # Tool-call deltas, assembled the way OpenAI's docs tell clients to.
  assert chunks[0].choices[0].delta.role == "assistant"
  content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
  calls = {}
  for c in chunks:
    for d in (c.choices[0].delta.tool_calls or []) if c.choices else []:
      entry = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
      entry["id"] = d.id or entry["id"]
      entry["name"] += (d.function.name or "") if d.function else ""
      entry["arguments"] += (d.function.arguments or "") if d.function else ""
  assert content == "Let me check."
  assert list(calls) == [0] and calls[0]["name"] == "get_weather"
  assert calls[0]["id"].startswith("call_")
  assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
  finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
  assert finishes[-1] == "tool_calls" and all(f is None for f in finishes[:-1])
  assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(
      chat_format.encode(tokenizer, f"Let me check.\n{call}")) + 1
  assert {c.id for c in chunks} == {chunks[0].id}
  assert "".join(c.choices[0].delta.content or "" for c in plain) == "It is sunny."
  assert plain[-1].choices[0].finish_reason == "stop"
  assert response.choices[0].message.content == "Plain again."


def test_an_abandoned_stream_is_never_generated(tokenizer):
  import threading
  import time

  class Gated(ScriptedEngine):
    def __init__(self, *args):
      super().__init__(*args)
      self.gate, self.entered = threading.Event(), threading.Event()

    def generate(self, prompt_ids, sampling):
      self.entered.set()
      assert self.gate.wait(30)
      return super().generate(prompt_ids, sampling)

  engine = Gated(tokenizer, ["first", "never"])
  api = server.create_app(engine, tokenizer, config=server.ServerConfig(batch_wait_s=0.0))
  chat = lambda text: {"messages": [{"role": "user", "content": text}], "max_tokens": 8}
  with server.BackgroundServer(api) as background:
    url = f"{background.url}/v1/chat/completions"
    first = {}
    thread = threading.Thread(target=lambda: first.update(r=httpx.post(url, json=chat("a"),
                                                                         timeout=60)))
    thread.start()
    assert engine.entered.wait(30)
    with httpx.stream("POST", url, json=dict(chat("b"), stream=True), timeout=60) as r:
      assert '"role": "assistant"' in next(r.iter_lines())  # the role chunk comes at once
    time.sleep(0.5)  # the client has gone; the server notices
    engine.gate.set()
    thread.join(60)
    assert first["r"].status_code == 200
    deadline = time.monotonic() + 10
    while api.state.batcher.num_abandoned < 1 and time.monotonic() < deadline:
      time.sleep(0.05)
  assert api.state.batcher.num_abandoned == 1
  assert len(engine.prompts) == 1 and engine.texts == ["never"]


def test_stream_is_server_sent_events_ending_with_done(tokenizer):
  _, background = _serve(tokenizer, ["Hi there."])
  with background:
    with httpx.stream("POST", f"{background.url}/v1/chat/completions",
                      json={"messages": [{"role": "user", "content": "hi"}],
                            "stream": True}) as r:
      assert r.headers["content-type"].startswith("text/event-stream")
      lines = [line for line in r.iter_lines() if line]
  assert all(line.startswith("data: ") for line in lines)
  assert lines[-1] == "data: [DONE]"
  objects = [json.loads(line[len("data: "):]) for line in lines[:-1]]
  assert {o["object"] for o in objects} == {"chat.completion.chunk"}
  assert objects[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                       "finish_reason": "stop"}


def test_health_models_and_text_generate(tokenizer):
  engine, background = _serve(tokenizer, ["abc"])
  with background:
    assert httpx.get(f"{background.url}/health").status_code == 200
    assert httpx.get(f"{background.url}/v1/models").json()["data"][0]["id"] == "toy"
    r = httpx.post(f"{background.url}/generate",
                   json={"text": "hello", "return_logprob": True,
                         "sampling_params": {"max_new_tokens": 8, "temperature": 0}})
    body = r.json()
    assert body["text"] == "abc<|im_end|>"
    assert engine.prompts[0] == chat_format.encode(tokenizer, "hello")
    assert [e[1] for e in body["meta_info"]["output_token_logprobs"]] == body["output_ids"]
    # Without an API key, weight updates are refused with a clear message.
    r = httpx.post(f"{background.url}/update_weights_from_disk", json={"model_path": "/x"})
    assert r.status_code == 403 and "API key" in r.text


@pytest.mark.slow  # a subprocess that imports jax and loads a model: ~50 s on a shared CPU
def test_sigterm_stops_the_server_mid_generation(tmp_path, tokenizer):
  """A real `python -m launch.serve` process: SIGTERM while a long generation runs exits in
  seconds (the old server waited for the generation, then for ever on the open connection)."""
  import signal
  import subprocess
  import sys
  import time
  from synthagent_jax import models
  from tests import toys

  path = str(tmp_path / "policy")
  models.save_pretrained(toys.tiny_model(vocab_size=len(tokenizer), seed=0), path)
  root = pathlib.Path(__file__).resolve().parents[2]
  port = server.free_port()
  url = f"http://127.0.0.1:{port}"
  proc = subprocess.Popen(
      [sys.executable, "-m", "launch.serve", f"--checkpoint={path}", "--tokenizer=data/tokenizer",
       f"--port={port}", "--shutdown_timeout_s=1", "--max_new_tokens=100000",
       "--context_len=100000"],
      cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
      try:
        if httpx.get(f"{url}/health", timeout=1).status_code == 200:
          break
      except httpx.HTTPError:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      long = pool.submit(httpx.post, f"{url}/generate", timeout=60, json={
          "input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 60000}})
      queued = pool.submit(httpx.post, f"{url}/generate", timeout=60, json={
          "input_ids": [5], "sampling_params": {"max_new_tokens": 4}})
      time.sleep(1.5)
      assert not long.done()
      start = time.monotonic()
      proc.send_signal(signal.SIGTERM)
      proc.wait(timeout=30)
      took = time.monotonic() - start
      # The queued request is answered (503, shutting down) or its connection is closed.
      for f in (long, queued):
        try:
          assert f.result(timeout=30).status_code != 200
        except httpx.HTTPError:
          pass
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert took < 15, took


def test_binds_localhost_by_default():
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[2]
  out = subprocess.run([sys.executable, "-m", "launch.serve", "--helpfull"], cwd=root,
                       capture_output=True, text=True, timeout=120).stdout
  host_help = out[out.index("--host: "):][:200]
  assert "(default: '127.0.0.1')" in host_help, host_help


@pytest.mark.slow
def test_build_app_serves_a_real_checkpoint(tmp_path, tokenizer):
  from synthagent_jax import models
  from tests import toys

  path = str(tmp_path / "policy")
  models.save_pretrained(toys.tiny_model(vocab_size=len(tokenizer), seed=0), path)
  root = pathlib.Path(__file__).resolve().parents[2]
  api = server.build_app(path, str(root / "data" / "tokenizer"),
                         tool_parser=serve.tool_calls_from_text)
  with server.BackgroundServer(api) as background:
    client = openai.OpenAI(base_url=f"{background.url}/v1", api_key="unused", max_retries=0)
    response = client.chat.completions.create(
        model="synthagent_jax", messages=[{"role": "user", "content": "hi"}], tools=TOOLS,
        max_tokens=5, temperature=0.0)
    info = httpx.get(f"{background.url}/get_model_info").json()
  choice = response.choices[0]
  assert choice.finish_reason in ("stop", "length", "tool_calls")
  assert response.usage.completion_tokens <= 5
  assert isinstance(choice.message.content, str) or choice.message.tool_calls
  assert info["model_path"] == path
