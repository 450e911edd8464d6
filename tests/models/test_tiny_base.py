"""The shipped tiny base (data/tiny_base): it is what configs/tiny.py loads, transformers reads it
to the same logits, it copies ids it never saw (the skill it exists for), and its script runs."""

import importlib.util
import os
import pathlib
import random
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from launch import builders
from synthagent_jax import models
from tests import toys

BASE_DIR = pathlib.Path(__file__).resolve().parents[2] / "data" / "tiny_base"


def _pretrain_module():
  spec = importlib.util.spec_from_file_location("tiny_base_pretrain", BASE_DIR / "pretrain.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def tok():
  return builders.tokenizer(tiny.get_config())


def test_the_default_config_loads_the_shipped_base(tok):
  c = tiny.get_config()
  assert not c.model.from_scratch and pathlib.Path(c.model.checkpoint).resolve() == BASE_DIR
  cfg = builders.model_config(c, tok)
  assert (cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads,
          cfg.head_dim) == (len(tok), 128, 4, 4, 2, 32)
  # The section's numerics still apply to a checkpoint's dims.
  assert (cfg.attention, cfg.attention_chunk) == ("blocked", 128)


def test_transformers_reads_the_shipped_base_to_the_same_logits():
  pytest.importorskip("torch")
  ids = np.random.RandomState(0).randint(0, 4096, (2, 17)).astype(np.int32)
  ours = np.asarray(models.from_pretrained(str(BASE_DIR))(jnp.asarray(ids)))
  ref = toys.hf_logits(toys.load_hf_reference(str(BASE_DIR)), ids)
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)


def _answers_exact(model, tok, seed):
  """Teacher-forced: the share of <answer> turns that copy a reference id from the tool response
  right in every token (pretrain.copy_figures_of)."""
  pretrain = _pretrain_module()
  b = pretrain.batch(random.Random(seed), tok, 16, 256, tok.pad_token_id)
  pred = pretrain.next_token_argmax(model, jnp.asarray(b["input_ids"]),
                                    jnp.asarray(b["attention_mask"]))
  return pretrain.copy_figures_of(np.asarray(pred), b)["answers_exact"]


def test_the_shipped_base_copies_ids_it_never_saw(tok):
  # Documents from a seed the script never trains or evaluates on: every id is new to the model.
  base = models.from_pretrained(str(BASE_DIR))
  scratch = models.init_model(base.config, seed=0)
  assert _answers_exact(scratch, tok, seed=777) == 0.0
  assert _answers_exact(base, tok, seed=777) > 0.8


def test_the_corpus_is_deterministic(tok):
  pretrain = _pretrain_module()
  a = pretrain.batch(random.Random(3), tok, 4, 128, tok.pad_token_id)
  b = pretrain.batch(random.Random(3), tok, 4, 128, tok.pad_token_id)
  assert all(np.array_equal(a[k], b[k]) for k in a)
  text = tok.decode(a["input_ids"][0][a["attention_mask"][0] == 1])
  assert "<tool_call>" in text or "Repeat" in text


def test_the_script_writes_a_base_that_loads(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as run by hand
  subprocess.run([sys.executable, str(BASE_DIR / "pretrain.py"), f"--out_dir={tmp_path}",
                  "--steps=2", "--batch_size=2", "--seq_len=64", "--eval_every=1"],
                 check=True, env=env, cwd=BASE_DIR.parents[1])
  model = models.from_pretrained(str(tmp_path))
  assert model.config.hidden_size == 128 and model.config.vocab_size == 4096
