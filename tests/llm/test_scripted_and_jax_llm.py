import json

import pytest
import transformers

from synthagent_jax.inference.engine import Completion, SamplingParams
from synthagent_jax.llm.base import LLM
from synthagent_jax.llm.jax_llm import JaxChatLLM
from synthagent_jax.llm.scripted import ScriptedLLM, conversation_key


def _conv(text):
  return [{"role": "user", "content": text}]


def test_scripted_precedence_and_recording(tmp_path):
  llm = ScriptedLLM(rules=[(r"weather", "sunny")], replies=["first", "second"], default="dunno")
  assert isinstance(llm, LLM)
  assert llm.chat([_conv("the weather?"), _conv("x"), _conv("y"), _conv("z")]) == [
      "sunny", "first", "second", "dunno"]
  assert len(llm.calls) == 4
  path = tmp_path / "rec.jsonl"
  path.write_text(json.dumps({"messages": _conv("hi"), "reply": "hello"}) + "\n")
  rec = ScriptedLLM.from_recording_file(str(path))
  assert rec.chat([_conv("hi")]) == ["hello"]
  with pytest.raises(LookupError, match="no reply"):
    rec.chat([_conv("other")])
  path.write_text("{oops\n")
  with pytest.raises(ValueError, match="rec.jsonl:1"):
    ScriptedLLM.from_recording_file(str(path))
  assert conversation_key(_conv("a")) == conversation_key([{"content": "a", "role": "user"}])


class _EchoEngine:
  """Fake Engine: replies with the ids of a fixed text, then <|im_end|>."""

  def __init__(self, tokenizer, reply):
    self.reply_ids = tokenizer.encode(reply, add_special_tokens=False)
    self.calls = []

  def generate(self, prompt_ids, sampling):
    self.calls.append((prompt_ids, sampling))
    stop = sampling.stop_token_ids[0]
    return [Completion(self.reply_ids + [stop], [0.0] * (len(self.reply_ids) + 1), "stop")
            for _ in prompt_ids]

  def update_weights(self, weights, step):
    return {}  # a fixed reply: no weights

  def wait_ready(self):
    pass


def test_jax_llm_renders_template_and_strips_stop():
  tok = transformers.AutoTokenizer.from_pretrained("data/tokenizer")
  engine = _EchoEngine(tok, "Sure <tool_call> x")
  llm = JaxChatLLM(engine, tok)
  assert isinstance(llm, LLM)
  out = llm.chat([_conv("hi"), [{"role": "system", "content": "S"}] + _conv("yo")],
                 SamplingParams(max_new_tokens=8, stop_token_ids=(5,)))
  assert out == ["Sure <tool_call> x"] * 2
  prompts, sampling = engine.calls[0]
  text = tok.decode(prompts[0], skip_special_tokens=False)
  assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")
  im_end = tok.convert_tokens_to_ids("<|im_end|>")
  assert 5 in sampling.stop_token_ids and im_end in sampling.stop_token_ids
  assert llm.chat([]) == []
