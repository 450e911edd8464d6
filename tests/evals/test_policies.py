"""evals/policies: --policy specs, a training workdir's orbax checkpoint restored as the in-process
engine, the OpenAI-compatible chat adapter (prompt ids -> messages + tools -> reply in our turn
format) through the real agent loop, and --user specs."""

import json
import os

import jax
import numpy as np
import optax
import pytest
import transformers
from flax import nnx

from synthagent_jax import models
from synthagent_jax import parallel
from synthagent_jax.parallel import rules as rules_lib
from synthagent_jax.evals import policies
from synthagent_jax.inference.engine import SamplingParams
from synthagent_jax.models import chat_format as cf
from synthagent_jax.rl import state as state_lib
from synthagent_jax.utils import checkpoint as ckpt_lib


@pytest.fixture(scope="module")
def tok():
  return transformers.AutoTokenizer.from_pretrained(policies.DEFAULT_TOKENIZER)


@pytest.mark.parametrize("spec,expected", [
    ("oracle", ("oracle", "")), ("null", ("null", "")),
    ("checkpoint:/some/where", ("checkpoint", "/some/where")),
    ("sglang:http://127.0.0.1:1, http://127.0.0.1:2",
     ("sglang", "http://127.0.0.1:1,http://127.0.0.1:2")),
    ("openai:http://127.0.0.1:8000/v1:qwen2.5:7b", ("openai", "http://127.0.0.1:8000/v1:qwen2.5:7b")),
])
def test_parse_spec(spec, expected):
  assert policies.parse_spec(spec) == expected


def test_split_openai_keeps_colons_in_the_model_name():
  assert policies.split_openai("http://127.0.0.1:8000/v1:qwen2.5:7b") == (
      "http://127.0.0.1:8000/v1", "qwen2.5:7b")
  assert policies.split_openai("https://api.example.com/v1:gpt-4.1") == (
      "https://api.example.com/v1", "gpt-4.1")


@pytest.mark.parametrize("spec,message", [
    ("", "--policy is empty"), ("gpt4", "neither a known kind nor an existing directory"),
    ("sglang:localhost:30000", "sglang needs http"), ("openai:http://h:1/v1", "openai:BASE_URL:MODEL"),
    ("checkpoint:", "needs a path"),
])
def test_bad_specs(spec, message):
  with pytest.raises(policies.PolicyError, match=message):
    policies.parse_spec(spec)


def test_bare_directory_is_a_checkpoint(tmp_path):
  assert policies.parse_spec(str(tmp_path)) == ("checkpoint", str(tmp_path))


def test_unreachable_servers_fail_with_one_line(tmp_path):
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]  # closed again: nothing listens there
  for spec in (f"sglang:http://127.0.0.1:{port}", f"openai:http://127.0.0.1:{port}/v1:m"):
    with pytest.raises(policies.PolicyError, match=f"cannot reach .*127.0.0.1:{port}.*Connection refused"):
      policies.make_policy(spec)
  with pytest.raises(policies.PolicyError, match="does not exist"):
    policies.make_policy(f"checkpoint:{tmp_path}/missing")
  with pytest.raises(policies.PolicyError, match="neither a Hugging Face checkpoint"):
    policies.make_policy(f"checkpoint:{tmp_path}")


def _write_run(tmp_path, tok):
  """A training workdir as launch.train leaves it: config.json + checkpoints/rl/<step>."""
  dims = dict(family="qwen2", vocab_size=0, hidden_size=32, intermediate_size=64, num_layers=1,
              num_heads=4, num_kv_heads=2, head_dim=8, rope_theta=10000.0,
              tie_word_embeddings=True, max_position_embeddings=512, dtype="float32")
  run_config = {"model": dict(dims, from_scratch=True, checkpoint=""), "tokenizer": "data/tokenizer"}
  wd = tmp_path / "run"
  wd.mkdir()
  (wd / "config.json").write_text(json.dumps(run_config))
  model_cfg = policies.run_model_config(run_config, tok)
  mesh = parallel.make_mesh(parallel.MeshConfig(), jax.devices()[:1])
  tx = optax.adamw(1e-3)
  spec = state_lib.plan_state(model_cfg, tx, mesh, rules_lib.DEFAULT_RULES, seed=0)
  params_by_step = {}
  with ckpt_lib.Checkpointer(wd / "checkpoints" / "rl", async_save=False) as ckpt:
    for step, seed in ((3, 1), (7, 2)):
      _, params = state_lib.split_params(models.init_model(model_cfg, seed=seed))
      ckpt.save(step, state_lib.state_from_params(params, spec, tx, 0), data_state={},
                config=run_config)
      params_by_step[step] = params
  return wd, model_cfg, params_by_step


def test_training_workdir_checkpoint(tmp_path, tok):
  wd, model_cfg, params_by_step = _write_run(tmp_path, tok)
  ids = np.asarray([cf.encode(tok, "hello there, how are you")], np.int32)
  for path, step in ((wd, 7), (wd / "checkpoints" / "rl", 7), (wd / "checkpoints" / "rl" / "3", 3)):
    policy = policies.make_policy(f"checkpoint:{path}")
    assert policy.kind == "checkpoint" and policy.max_context == 512
    graphdef, params = policy.engine_for(None).split()
    ours = nnx.merge(graphdef, params)(ids)
    want = nnx.merge(graphdef, params_by_step[step])(ids)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(want), atol=0, rtol=0)
    out = policy.engine_for(None).generate([ids[0].tolist()], SamplingParams(max_new_tokens=3))
    assert len(out[0].token_ids) <= 3
  assert policies.resolve_run_checkpoint(str(wd))[2] == 7


def test_hf_checkpoint_directory(tmp_path):
  from tests import toys
  path = toys.write_hf_checkpoint(tmp_path, "qwen2", vocab_size=4096)
  policy = policies.make_policy(path)  # a bare directory
  assert policy.kind == "checkpoint" and policy.max_context == 256
  assert len(policy.tokenizer) == 4096  # data/tokenizer (the checkpoint has none)
  llm = policies.make_user_llm("policy", policy)
  assert isinstance(llm.chat([[{"role": "user", "content": "hi"}]],
                             SamplingParams(max_new_tokens=2))[0], str)


def test_user_llm_specs():
  assert policies.make_user_llm("") is None
  llm = policies.make_user_llm("scripted:I am done. ###STOP###")
  assert llm.chat([[{"role": "user", "content": "x"}]]) == ["I am done. ###STOP###"]
  with pytest.raises(policies.PolicyError, match="--user=policy needs a model policy"):
    policies.make_user_llm("policy", policies.Policy("null", "null", None, lambda t: None))
  with pytest.raises(policies.PolicyError, match="--user='gpt'"):
    policies.make_user_llm("gpt")
