"""The shipped tokenizer (data/tokenizer): loading, special tokens, byte-level round trip, and the
Qwen2.5 chat template checked against hand-written expected renderings of the published format."""

import pathlib
import subprocess
import sys

import hypothesis
from hypothesis import strategies as st
import pytest
import transformers

TOKENIZER_DIR = pathlib.Path(__file__).resolve().parents[2] / "data" / "tokenizer"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>",
           "<tool_response>", "</tool_response>", "<think>", "</think>"]


@pytest.fixture(scope="module")
def tok():
  return transformers.AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))


def test_loads_with_expected_size_and_tokens(tok):
  assert len(tok) == 4096
  assert tok.eos_token == "<|im_end|>"
  assert tok.pad_token == "<|endoftext|>"
  assert tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.parametrize("token", SPECIAL)
def test_special_tokens_are_single_ids(tok, token):
  ids = tok.encode(token, add_special_tokens=False)
  assert len(ids) == 1
  assert tok.decode(ids) == token
  # Also inside running text, with no whitespace around it.
  ids = tok.encode(f"abc{token}def", add_special_tokens=False)
  assert tok.convert_tokens_to_ids(token) in ids


def test_all_special_ids_distinct(tok):
  assert len({tok.convert_tokens_to_ids(t) for t in SPECIAL}) == len(SPECIAL)


def test_tool_tags_survive_skip_special_tokens(tok):
  # As in Qwen: ChatML tokens are special, tool/think tags are plain added tokens.
  ids = tok.encode("<|im_start|>assistant\n<tool_call>\n{}\n</tool_call><|im_end|>",
                   add_special_tokens=False)
  assert tok.decode(ids, skip_special_tokens=True) == "assistant\n<tool_call>\n{}\n</tool_call>"


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.text(max_size=200))
def test_round_trip_any_unicode(tok, text):
  ids = tok.encode(text, add_special_tokens=False)
  assert tok.decode(ids) == text


def test_round_trip_fixed_examples(tok):
  for text in ["", " ", "\n\n", "héllo 世界 🤖\x00\t", "2026-03-14 12:30 $1,234.56",
               '{"name": "book_flight", "arguments": {"date": "2026-01-02"}}', "  leading  spaces "]:
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
    {"role": "tool", "name": "get_weather", "content": "sunny"},
    {"role": "tool", "name": "get_weather", "content": "rain"},
    {"role": "assistant", "content": "<answer>Paris sunny, Rome rain.</answer>"},
    {"role": "user", "content": "Thanks"},
]

# Written by hand from the published Qwen2.5-Instruct format (not produced by the template).
EXPECTED_TOOLS = (
    "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with "
    "the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Current weather", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}\n'
    "</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\nWeather in Paris and Rome?<|im_end|>\n"
    "<|im_start|>assistant\nChecking.\n<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n'
    '{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\nrain\n"
    "</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n<answer>Paris sunny, Rome rain.</answer><|im_end|>\n"
    "<|im_start|>user\nThanks<|im_end|>\n"
    "<|im_start|>assistant\n")


def test_template_with_tools_matches_hand_written(tok):
  text = tok.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=False, add_generation_prompt=True)
  assert text == EXPECTED_TOOLS


def test_template_without_tools_and_default_system(tok):
  text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                 add_generation_prompt=False)
  assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                  "<|im_start|>user\nHi<|im_end|>\n")


def test_template_string_arguments_inserted_verbatim(tok):
  msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [
      {"type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}]
  text = tok.apply_chat_template(msgs, tokenize=False)
  assert text.endswith('<|im_start|>assistant\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n'
                       "</tool_call><|im_end|>\n")


def test_template_tokenize_true_matches_encode(tok):
  ids = tok.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=True, add_generation_prompt=True,
                                return_dict=False)
  assert list(ids) == tok.encode(EXPECTED_TOOLS, add_special_tokens=False)
  assert tok.decode(ids) == EXPECTED_TOOLS


@pytest.mark.slow  # retrains the BPE (~6 s of CPU)
def test_shipped_files_are_what_the_script_produces(tmp_path):
  subprocess.run([sys.executable, str(TOKENIZER_DIR / "train_tokenizer.py"), f"--out_dir={tmp_path}"],
                 check=True, capture_output=True)
  for name in ("tokenizer.json", "tokenizer_config.json"):
    assert (tmp_path / name).read_bytes() == (TOKENIZER_DIR / name).read_bytes(), name


def _stderr_without_torch(code: str) -> str:
  """stderr of `code` in a fresh interpreter where torch cannot be found (as on a JAX-only
  machine: transformers then logs its "PyTorch was not found" advisory at import)."""
  root = pathlib.Path(__file__).resolve().parents[2]
  done = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None\n" + code],
                        cwd=root, capture_output=True, text=True, timeout=300, check=True)
  return done.stderr


def test_no_pytorch_advisory_once_the_package_is_imported():
  # The control: transformers alone prints it (so the check below can fail).
  assert "PyTorch was not found" in _stderr_without_torch("import transformers")
  # The training path: launch.train imports the package before launch/builders' transformers.
  err = _stderr_without_torch(
      "import synthagent_jax.evals.policies as p\n"
      "from launch import builders\n"
      "assert p.load_tokenizer(p.DEFAULT_TOKENIZER).chat_template\n")
  assert "PyTorch was not found" not in err, err
