"""Staged decoding (decode_stages > 1): the batch shrinks as rows finish, with the same samples,
log-probs and KV cache as decoding every row to the end."""

import jax
import numpy as np
import pytest
from flax import nnx

from synthagent_jax.inference import decode
from synthagent_jax.inference import engine as engine_lib
from synthagent_jax.inference import sampler
from synthagent_jax.models import config as config_lib
from synthagent_jax.models import qwen

BUCKETS = sampler.Buckets(min_batch=8, min_prompt_len=16, min_new_tokens=32)
# Frequent stop ids (16 of 128): rows finish after a few tokens, at different steps.
STOP = tuple(range(0, 128, 8))


@pytest.fixture(scope="module")
def model():
  model = qwen.init_model(config_lib.ModelConfig.tiny(vocab_size=128), seed=0)
  state = nnx.state(model, nnx.Param)  # sharper than the 0.02 init: fewer near-ties
  nnx.update(model, jax.tree.map(lambda p: p * 10.0 if p.ndim >= 2 else p, state))
  return model


def _prompts(n, seed=0):
  rng = np.random.default_rng(seed)
  return [[int(t) for t in rng.integers(1, 128, size=int(rng.integers(2, 14)))] for _ in range(n)]


def _sampling(n=32):
  return engine_lib.SamplingParams(max_new_tokens=n, temperature=1.0, stop_token_ids=STOP)


def _run(model, stages, prompts, sp, seeds, prefix=0):
  eng = sampler.JaxEngine(model, buckets=BUCKETS, decode_stages=stages,
                          prefix_cache_bytes=prefix)
  return eng, eng.generate(prompts, sp, row_seeds=seeds)


def test_stage_sizes():
  assert decode.stage_sizes(16, 1) == (16,)
  assert decode.stage_sizes(16, 3) == (16, 8, 4)
  assert decode.stage_sizes(5, 4) == (5, 3, 2, 1)
  assert decode.stage_sizes(2, 5) == (2, 1)
  with pytest.raises(ValueError, match="decode stages must be >= 1"):
    decode.stage_sizes(8, 0)
  with pytest.raises(ValueError, match="decode stages must be >= 1"):
    sampler.JaxEngine(qwen.init_model(config_lib.ModelConfig.tiny(vocab_size=128)),
                      decode_stages=0)


@pytest.mark.parametrize("num_prompts", [5, 8])  # 5: three rows of batch padding from the start
def test_staged_decode_samples_what_the_full_batch_samples(model, num_prompts):
  prompts, seeds = _prompts(num_prompts), list(range(100, 100 + num_prompts))
  full_eng, full = _run(model, 1, prompts, _sampling(), seeds)
  staged_eng, staged = _run(model, 3, prompts, _sampling(), seeds)
  lengths = sorted(len(c.token_ids) for c in full)
  assert lengths[0] < lengths[-1] // 2, lengths  # rows finish far apart: later stages ran
  for f, s in zip(full, staged, strict=True):
    assert s.token_ids == f.token_ids
    np.testing.assert_allclose(s.logprobs, f.logprobs, atol=1e-5)
    assert s.finish_reason == f.finish_reason
  assert staged_eng.last_num_steps == full_eng.last_num_steps


def test_staged_decode_returns_every_rows_cache(model):
  """The next turn reuses each row's keys/values from the staged call's cache (written back from
  the smaller stages): its samples equal a fresh engine's that prefills everything."""
  prompts, seeds = _prompts(6, seed=1), list(range(6))
  eng, first = _run(model, 3, prompts, _sampling(), seeds, prefix=1 << 26)
  follow = [p + c.token_ids + [7, 9] for p, c in zip(prompts, first)]
  sp = _sampling(16)
  reused = eng.generate(follow, sp, row_seeds=[50 + s for s in seeds])
  assert eng.stats.reused_tokens > 0
  _, fresh = _run(model, 1, follow, sp, [50 + s for s in seeds])
  for r, f in zip(reused, fresh, strict=True):
    assert r.token_ids == f.token_ids
    np.testing.assert_allclose(r.logprobs, f.logprobs, atol=1e-4)
