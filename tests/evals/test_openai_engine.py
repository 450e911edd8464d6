"""evals/openai_engine: an OpenAI-compatible chat endpoint as an Engine (prompt ids -> chat
messages -> reply -> our turn format), through the real AgentLoop with a fake client."""

import json
import types

import pytest
import transformers

from synthagent_jax.evals import openai_engine
from synthagent_jax.evals import policies
from synthagent_jax.models import chat_format as cf
from synthagent_jax.rollout.agent_loop import AgentLoop, AgentLoopConfig


@pytest.fixture(scope="module")
def tok():
  return transformers.AutoTokenizer.from_pretrained(policies.DEFAULT_TOKENIZER)


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}}}}}]


def test_prompt_to_messages_inverts_the_template(tok):
  messages = [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Weather in Paris and Rome?"},
      {"role": "assistant", "content": "Checking.", "tool_calls": [
          {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
          {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
      {"role": "tool", "content": "sunny"}, {"role": "tool", "content": "rain"},
      {"role": "assistant", "content": "Paris sunny, Rome rain. More?"},
      {"role": "user", "content": "No."}]
  text = cf.render_text(tok, messages, tools=TOOLS, add_generation_prompt=True)
  got, tools = openai_engine.prompt_to_messages(text)
  assert tools == TOOLS
  assert got == messages
  # Re-rendering what was recovered gives the same prompt, token for token.
  assert cf.render_text(tok, got, tools=tools, add_generation_prompt=True) == text


class _FakeChat:
  """Stands in for openai.OpenAI: records requests, answers with a tool call then text."""

  def __init__(self):
    self.requests = []
    self.chat = types.SimpleNamespace(completions=types.SimpleNamespace(create=self.create))

  def create(self, **kwargs):
    self.requests.append(kwargs)
    if len(self.requests) == 1:
      call = types.SimpleNamespace(function=types.SimpleNamespace(
          name="get_weather", arguments=json.dumps({"city": "Paris"})))
      msg = types.SimpleNamespace(content=None, tool_calls=[call])
    else:
      msg = types.SimpleNamespace(content="<answer>sunny</answer>", tool_calls=None)
    return types.SimpleNamespace(choices=[types.SimpleNamespace(message=msg,
                                                                finish_reason="stop")])


def test_openai_adapter_through_the_agent_loop(tok):
  fake = _FakeChat()
  engine = openai_engine.OpenAIChatEngine("http://127.0.0.1:1/v1", "m", tok, client=fake)

  class Tools:
    def new_episode(self, task):
      return None

    def call(self, task, call, state):
      return f"{call.arguments['city']}: sunny"

  class User:
    def reply(self, task, messages):
      return "", True

  task = types.SimpleNamespace(id="t", instruction="Weather in Paris?", tools=TOOLS)
  (traj,) = AgentLoop(engine, tok, Tools(), User(), AgentLoopConfig()).run([task], 1)
  assert traj.status == "answered" and traj.num_tool_calls == 1
  assert traj.messages[2]["tool_calls"][0]["function"] == {"name": "get_weather",
                                                           "arguments": {"city": "Paris"}}
  assert traj.messages[-1]["content"] == "<answer>sunny</answer>"
  first, second = fake.requests
  assert first["tools"] == TOOLS and first["model"] == "m"
  assert [m["role"] for m in first["messages"]] == ["system", "user"]
  # The second request carries the call (OpenAI wire format) and its result as a tool message.
  assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "tool"]
  assert json.loads(second["messages"][2]["tool_calls"][0]["function"]["arguments"]) == {
      "city": "Paris"}
  assert second["messages"][3]["content"] == "Paris: sunny"
  assert second["messages"][3]["tool_call_id"] == second["messages"][2]["tool_calls"][0]["id"]
