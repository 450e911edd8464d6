"""/update_weights_from_disk on a real JaxEngine: who may call it, what it loads, how it fails.

Regression tests of issue 19 items 1 and 4: a cross-origin text/plain POST, a request without
the key and a path outside the model root change nothing; a malformed checkpoint answers
`success: false` with the reason (not 500); a vocabulary that does not match the served model or
the tokenizer is refused; a shard index naming a file outside the checkpoint is refused (by
`models.from_pretrained` itself).
"""

import json
import os
import pathlib
import shutil

import httpx
import pytest
import transformers

from synthagent_jax import models
from synthagent_jax.inference import sampler
from synthagent_jax.inference import server
from tests import toys

KEY = "weights-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tokenizer():
  return transformers.AutoTokenizer.from_pretrained(str(ROOT / "data" / "tokenizer"))


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, tokenizer):
  root = tmp_path_factory.mktemp("models")
  vocab = len(tokenizer)
  models.save_pretrained(toys.tiny_model(vocab_size=vocab, seed=0), str(root / "a"))
  models.save_pretrained(toys.tiny_model(vocab_size=vocab, seed=1), str(root / "b"))
  models.save_pretrained(toys.tiny_model(vocab_size=128, seed=2), str(root / "small_vocab"))
  (root / "bad").mkdir()
  (root / "bad" / "config.json").write_text('{"vocab_size": "many"}')
  (root / "bad_index").mkdir()
  shutil.copy(root / "a" / "config.json", root / "bad_index" / "config.json")
  (root / "bad_index" / "model.safetensors.index.json").write_text('{"weight_map": 5}')
  (root / "escape").mkdir()
  shutil.copy(root / "a" / "config.json", root / "escape" / "config.json")
  (root / "escape" / "model.safetensors.index.json").write_text(json.dumps(
      {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "../b/model.safetensors"}}))
  return root


@pytest.fixture(scope="module")
def served(dirs, tokenizer):
  path = str(dirs / "a")
  engine = sampler.JaxEngine(models.from_pretrained(path))
  api = server.create_app(engine, tokenizer, config=server.ServerConfig(api_key=KEY),
                          model_path=path)
  with server.BackgroundServer(api) as background:
    yield background


def _update(bg, path, headers=AUTH, **kw):
  return httpx.post(f"{bg.url}/update_weights_from_disk", json={"model_path": str(path)},
                    headers=headers, timeout=120, **kw)


def _version(bg):
  return httpx.get(f"{bg.url}/get_model_info", headers=AUTH).json()["weight_version"]


def test_unauthorised_updates_change_nothing(served, dirs):
  r = httpx.post(f"{served.url}/update_weights_from_disk",
                 content=json.dumps({"model_path": str(dirs / "b")}),
                 headers={"Content-Type": "text/plain", "Origin": "http://evil.example"})
  assert r.status_code == 403
  assert _update(served, dirs / "b", headers={}).status_code == 401
  r = httpx.post(f"{served.url}/update_weights_from_disk",
                 content=json.dumps({"model_path": str(dirs / "b")}),
                 headers={"Content-Type": "text/plain", **AUTH})
  assert r.status_code == 415
  r = _update(served, "/etc")
  assert r.status_code == 403 and "outside the model root" in r.text
  r = _update(served, dirs / ".." / ".." / "elsewhere")
  assert r.status_code == 403
  assert _version(served) == "0"


@pytest.mark.parametrize("name,reason", [
    ("bad", "model_type"),
    ("bad_index", "weight_map"),
    ("missing", "config.json"),
    ("escape", "outside the checkpoint directory"),
    ("small_vocab", "differs from the served model's"),
])
def test_bad_checkpoints_are_refused_with_the_reason(served, dirs, name, reason):
  r = _update(served, dirs / name)
  assert r.status_code == 200, r.text
  body = r.json()
  assert body["success"] is False and reason in body["message"], body
  assert _version(served) == "0"


def test_small_vocab_names_the_tokenizer_too(served, dirs, tokenizer):
  message = _update(served, dirs / "small_vocab").json()["message"]
  assert f"smaller than the tokenizer's {len(tokenizer)} tokens" in message


def test_a_good_update_still_works(served, dirs):
  r = _update(served, dirs / "b")
  assert r.json()["success"] is True and _version(served) == "1"
  r = _update(served, dirs / "a")
  assert r.json()["success"] is True and _version(served) == "2"


def test_updates_reach_any_engine_through_the_protocol(dirs, tokenizer):
  """The endpoint hands the loaded model to `Engine.update_weights` with the new version, whatever
  the engine is (here one that only records what it got)."""

  class Recording:
    def __init__(self):
      self.updates = []

    def generate(self, prompt_ids, sampling):
      raise AssertionError("not called")

    def update_weights(self, weights, step):
      self.updates.append((type(weights).__name__, weights.config.vocab_size, step))
      return {}

    def wait_ready(self):
      pass

  engine = Recording()
  api = server.create_app(engine, tokenizer, config=server.ServerConfig(api_key=KEY),
                          model_path=str(dirs / "a"), vocab_size=len(tokenizer))
  with server.BackgroundServer(api) as bg:
    assert _update(bg, dirs / "b").json()["success"] is True
    assert _update(bg, dirs / "a").json()["weight_version"] == "2"
  assert engine.updates == [("Qwen", len(tokenizer), 1), ("Qwen", len(tokenizer), 2)]


def test_from_pretrained_refuses_shards_outside_the_directory(dirs):
  with pytest.raises(ValueError, match="outside the checkpoint directory"):
    models.from_pretrained(str(dirs / "escape"))
  # A shard in a subdirectory is outside too (HF writes shards beside the index).
  sub = dirs / "nested"
  sub.mkdir()
  shutil.copy(dirs / "a" / "config.json", sub / "config.json")
  (sub / "deeper").mkdir()
  shutil.copy(dirs / "a" / "model.safetensors", sub / "deeper" / "model.safetensors")
  (sub / "model.safetensors.index.json").write_text(json.dumps(
      {"weight_map": {"model.embed_tokens.weight": "deeper/model.safetensors"}}))
  with pytest.raises(ValueError, match="outside the checkpoint directory"):
    models.from_pretrained(str(sub))
  assert os.path.isdir(dirs / "a")
