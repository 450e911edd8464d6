"""JaxEngine: ragged greedy decoding vs. step-by-step full forwards, stop ids, seeds, buckets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from synthagent_jax.inference import decode
from synthagent_jax.inference import engine as engine_lib
from synthagent_jax.inference import sampler
from synthagent_jax.models import config as config_lib
from synthagent_jax.models import qwen

BUCKETS = sampler.Buckets(min_batch=4, min_prompt_len=16, min_new_tokens=16)
PROMPTS = [[5, 17, 3], [9, 2, 44, 61, 7, 8, 30, 12, 1], [100]]


def _model(seed=0):
  cfg = config_lib.ModelConfig.tiny(vocab_size=128)
  model = qwen.init_model(cfg, seed=seed)
  # Sharper than the 0.02 init so greedy choices are far from ties.
  state = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(lambda p: p * 10.0 if p.ndim >= 2 else p, state))
  return model


@pytest.fixture(scope="module")
def model():
  return _model()


@nnx.jit
def _full_forward(model, ids_bt):
  return model(ids_bt)


def _reference_greedy(model, prompt, n, width=32):
  """Argmax decoding with the uncached full forward pass, one token at a time.

  Sequences are right-padded to a fixed width (causal attention: padding after a position does
  not change its logits) so the forward compiles once.
  """
  ids, logprobs = list(prompt), []
  for _ in range(n):
    padded = np.zeros((1, width), np.int32)
    padded[0, :len(ids)] = ids
    logits_v = _full_forward(model, jnp.asarray(padded))[0, len(ids) - 1]
    token = int(jnp.argmax(logits_v))
    logprobs.append(float(jax.nn.log_softmax(logits_v)[token]))
    ids.append(token)
  return ids[len(prompt):], logprobs


def _greedy(n, stop=()):
  return engine_lib.SamplingParams(max_new_tokens=n, temperature=0.0, stop_token_ids=stop)


def test_ragged_greedy_matches_uncached_forward(model):
  eng = sampler.JaxEngine(model, buckets=BUCKETS)
  assert isinstance(eng, engine_lib.Engine)
  out = eng.generate(PROMPTS, _greedy(8))
  for prompt, completion in zip(PROMPTS, out):
    ref_ids, ref_logprobs = _reference_greedy(model, prompt, 8)
    assert completion.token_ids == ref_ids
    np.testing.assert_allclose(completion.logprobs, ref_logprobs, atol=1e-4)
    assert completion.finish_reason == "length"
    assert len(set(ref_ids)) > 1  # the model is not degenerate: the test can fail


def test_stop_token_ends_row_and_is_kept(model):
  eng = sampler.JaxEngine(model, buckets=BUCKETS)
  free = eng.generate(PROMPTS, _greedy(8))
  stop = free[1].token_ids[2]
  out = eng.generate(PROMPTS, _greedy(8, stop=(stop,)))
  for f, o in zip(free, out):
    if stop in f.token_ids:
      cut = f.token_ids.index(stop) + 1
      assert o.token_ids == f.token_ids[:cut] and o.finish_reason == "stop"
      np.testing.assert_allclose(o.logprobs, f.logprobs[:cut], atol=1e-6)
    else:
      assert o.token_ids == f.token_ids and o.finish_reason == "length"


def test_loop_stops_early_when_all_rows_finish(model):
  eng = sampler.JaxEngine(model, buckets=BUCKETS)
  first = eng.generate([PROMPTS[0]], _greedy(12))[0].token_ids
  assert eng.last_num_steps == 12
  out = eng.generate([PROMPTS[0]], _greedy(12, stop=(first[1],)))
  assert out[0].token_ids == first[:first.index(first[1]) + 1]
  assert eng.last_num_steps == len(out[0].token_ids) < 12


def test_decode_counters_by_hand(model):
  # 3 prompts (3, 9 and 1 tokens) in a batch bucket of 4, 16 prompt + 16 new slots; 8 greedy
  # tokens each, no stop: 7 decode steps (the first token comes from the prefill).
  eng = sampler.JaxEngine(model, buckets=BUCKETS, prefix_cache_bytes=0)
  eng.generate(PROMPTS, _greedy(8))
  s = eng.stats
  assert (s.decode_rows, s.decode_keys) == (4 * 7, 4 * 7 * 32)
  assert s.decode_needed == 3 * 7
  # Row with a p-token prompt: its tokens 1..7 attend to p + 1, ..., p + 7 keys = 7p + 28.
  assert s.decode_keys_needed == (7 * 3 + 28) + (7 * 9 + 28) + (7 * 1 + 28)


def test_repeated_calls_reuse_compiled_code(model):
  # KV reuse off: a reused prefix makes its own (bucketed) prefill-window shape.
  eng = sampler.JaxEngine(model, buckets=BUCKETS, prefix_cache_bytes=0)
  eng.generate(PROMPTS, _greedy(8))
  before = decode.trace_count()
  # Other lengths, batch sizes, max_new_tokens and stop ids inside the same buckets.
  eng.generate(PROMPTS[:2], _greedy(5, stop=(3, 4)))
  eng.generate([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]], _greedy(16))
  sampler.generate(model, [[7], [8], [9], [10]], 3)  # a fresh engine shares the compiled code
  assert decode.trace_count() == before
  # Repeated prompts prefill their distinct ones (a smaller prefill batch): one more shape.
  eng.generate([[7]] * 4, _greedy(3))
  eng.generate([[8]] * 3, _greedy(3))
  assert decode.trace_count() == before + 1
  before += 1
  eng.generate([[1] * 17], _greedy(8))  # a longer prompt bucket compiles once more
  assert decode.trace_count() == before + 1
  eng.generate([[1] * 20], _greedy(8))
  assert decode.trace_count() == before + 1


def test_sampling_is_seeded_and_logprobs_are_tempered(model):
  eng = sampler.JaxEngine(model, buckets=BUCKETS)
  sp = engine_lib.SamplingParams(max_new_tokens=6, temperature=0.7, top_p=0.95, seed=3)
  a = eng.generate(PROMPTS, sp)
  b = eng.generate(PROMPTS, sp)
  c = eng.generate(PROMPTS, engine_lib.SamplingParams(max_new_tokens=6, temperature=0.7,
                                                      top_p=0.95, seed=4))
  assert [x.token_ids for x in a] == [x.token_ids for x in b]
  assert [x.token_ids for x in a] != [x.token_ids for x in c]
  prompt, completion = PROMPTS[1], a[1]
  ids = np.zeros((1, 32), np.int32)
  ids[0, :len(prompt) + 6] = prompt + completion.token_ids
  logits_tv = _full_forward(model, jnp.asarray(ids))[0, len(prompt) - 1:len(prompt) + 5]
  expected = jax.nn.log_softmax(logits_tv / 0.7)[jnp.arange(6), jnp.asarray(completion.token_ids)]
  np.testing.assert_allclose(completion.logprobs, expected, atol=1e-4)


def test_top_k_one_is_greedy(model):
  eng = sampler.JaxEngine(model, buckets=BUCKETS)
  greedy = eng.generate(PROMPTS, _greedy(6))
  top1 = eng.generate(PROMPTS, engine_lib.SamplingParams(max_new_tokens=6, temperature=1.5,
                                                         top_k=1, seed=9))
  assert [x.token_ids for x in top1] == [x.token_ids for x in greedy]


def test_params_are_shared_not_copied(model):
  other = _model(seed=1)
  eng = sampler.JaxEngine(nnx.split(model), buckets=BUCKETS)
  graphdef, state = eng.split()
  assert jax.tree.leaves(state)[0] is jax.tree.leaves(nnx.split(model)[1])[0]
  before = eng.generate(PROMPTS[:1], _greedy(8))
  new_state = nnx.split(other)[1]
  eng.update_params(new_state)
  assert eng.split()[1] is new_state
  after = eng.generate(PROMPTS[:1], _greedy(8))
  assert after[0].token_ids == _reference_greedy(other, PROMPTS[0], 8)[0]
  assert after[0].token_ids != before[0].token_ids
  # Parameters passed for one call only.
  once = eng.generate(PROMPTS[:1], _greedy(8), params=nnx.split(model)[1])
  assert once[0].token_ids == before[0].token_ids
  assert eng.generate(PROMPTS[:1], _greedy(8))[0].token_ids == after[0].token_ids
  # Holding the model itself: in-place learner updates are seen without any call.
  held = sampler.JaxEngine(other, buckets=BUCKETS)
  nnx.update(other, nnx.split(model)[1])
  assert held.generate(PROMPTS[:1], _greedy(8))[0].token_ids == before[0].token_ids


def test_chunking_matches_one_batch(model):
  whole = sampler.JaxEngine(model, buckets=BUCKETS).generate(PROMPTS, _greedy(4))
  chunked = sampler.JaxEngine(model, buckets=BUCKETS, max_batch_size=2).generate(PROMPTS,
                                                                                 _greedy(4))
  assert [x.token_ids for x in whole] == [x.token_ids for x in chunked]


def test_bad_inputs_are_named(model):
  eng = sampler.JaxEngine(model)
  with pytest.raises(ValueError, match="at least one prompt"):
    eng.generate([], _greedy(2))
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    eng.generate([[1], []], _greedy(2))
  with pytest.raises(ValueError, match="vocab_size"):
    eng.generate([[1, 128]], _greedy(2))
  with pytest.raises(ValueError, match="negative"):
    eng.generate([[-1]], _greedy(2))
  with pytest.raises(TypeError, match="nnx.Module"):
    sampler.JaxEngine("not a model")
  with pytest.raises(ValueError, match="Buckets.min_batch"):
    sampler.Buckets(min_batch=0)


def test_bucket():
  assert [sampler.bucket(n, 4) for n in (0, 1, 4, 5, 16, 17)] == [4, 4, 4, 8, 16, 32]


def test_prompt_bucket_is_finer_above_the_threshold():
  ns = (5, 300, 512, 513, 600, 768, 769, 1025, 1537)
  assert [sampler.prompt_bucket(n, 16, 512) for n in ns] == [16, 512, 512, 768, 768, 768, 1024,
                                                             1536, 2048]
  assert [sampler.prompt_bucket(n, 16, 0) for n in ns] == [sampler.bucket(n, 16) for n in ns]
  with pytest.raises(ValueError, match="prompt_fine_above"):
    sampler.Buckets(prompt_fine_above=-1)


@pytest.mark.slow
def test_row_seeds_make_samples_independent_of_batching(model):
  eng = sampler.JaxEngine(model, buckets=BUCKETS)
  sp = engine_lib.SamplingParams(max_new_tokens=6, temperature=1.0, top_p=0.95, seed=0)
  batch = eng.generate(PROMPTS, sp, row_seeds=[11, 12, 13])
  alone = eng.generate([PROMPTS[1]], sp, row_seeds=[12])
  assert alone[0].token_ids == batch[1].token_ids
  # Default streams: prompt i of a call is independent of chunking.
  whole = eng.generate(PROMPTS, sp)
  chunked = sampler.JaxEngine(model, buckets=BUCKETS, max_batch_size=1).generate(PROMPTS, sp)
  assert [c.token_ids for c in whole] == [c.token_ids for c in chunked]
  with pytest.raises(ValueError, match="row_seeds"):
    eng.generate(PROMPTS, sp, row_seeds=[1])


def test_chunked_prefill_matches_uncached_forward(model):
  prompts = [list(range(1, 25)), [7, 8, 9]]  # 32 prompt slots, prefilled as 2 chunks of 16
  # 4 rows x 16 query slots x 4 heads x 64 cache slots of float32 scores are 64 KiB (the MLP's
  # 4 x 16 x 128 activations are smaller).
  assert decode.prefill_chunk_size(4, 32, 64, 4, 128, 64 * 1024) == 16
  assert decode.prefill_chunk_size(4, 32, 64, 4, 128, 64 * 1024 * 2) == 32
  assert decode.prefill_chunk_size(4, 32, 64, 1, 1024, 4 * 16 * 1024 * 4) == 16  # MLP-bound
  chunked = sampler.JaxEngine(model, buckets=BUCKETS, prefill_bytes=1)  # the smallest chunks
  out = chunked.generate(prompts, _greedy(4))
  for prompt, completion in zip(prompts, out):
    ref_ids, ref_logprobs = _reference_greedy(model, prompt, 4)
    assert completion.token_ids == ref_ids
    np.testing.assert_allclose(completion.logprobs, ref_logprobs, atol=1e-4)


def test_repeated_prompts_are_prefilled_once(model):
  """A GRPO group's first turn: equal prompts run through the model once, each row samples with
  its own stream from a copy of that prefill; the same tokens as each prompt generated alone
  (greedy: as the uncached forward), and a next turn reuses the copied keys/values."""
  a, b = PROMPTS[1], PROMPTS[0]
  eng = sampler.JaxEngine(model, buckets=BUCKETS)
  out = eng.generate([a, b, a, a], _greedy(6))
  ref = {tuple(p): _reference_greedy(model, p, 6) for p in (a, b)}
  for prompt, completion in zip([a, b, a, a], out):
    assert completion.token_ids == ref[tuple(prompt)][0]
    np.testing.assert_allclose(completion.logprobs, ref[tuple(prompt)][1], atol=1e-4)
  assert eng.stats.prefill_tokens == len(a) + len(b)
  assert eng.stats.reused_tokens == 2 * len(a)
  assert eng.stats.prefill_slots == 2 * 16  # two distinct prompts of one 16-slot bucket
  sp = engine_lib.SamplingParams(max_new_tokens=6, temperature=1.0, seed=0)
  group = eng.generate([a, a, a, b], sp, row_seeds=[21, 22, 23, 24])
  assert len({tuple(c.token_ids) for c in group[:3]}) > 1  # rows sample their own streams
  off = sampler.JaxEngine(model, buckets=BUCKETS, prefix_cache_bytes=0)
  for i, prompt in enumerate([a, a, a, b]):
    alone = off.generate([prompt], sp, row_seeds=[21 + i])[0]
    assert alone.token_ids == group[i].token_ids
    np.testing.assert_allclose(alone.logprobs, group[i].logprobs, atol=1e-4)
  # The next turn of row 1 reuses its copied prefill: the same as a cache-less engine.
  nxt = [a + group[1].token_ids + [3, 4]]
  assert eng.generate(nxt, sp)[0].token_ids == off.generate(nxt, sp)[0].token_ids
  assert eng.stats.reused_tokens > 2 * len(a) + 2 * len(a)


def _multi_turn(eng, turns=3, seed=0, update=None):
  """Agent-like rounds: each prompt is the last prompt + its completion + a few new tokens."""
  rng = np.random.RandomState(seed)
  history = [list(rng.randint(1, 128, n)) for n in (5, 12, 3)]
  out = []
  for turn in range(turns):
    if update is not None and turn == update[0]:
      eng.update_params(update[1])
    sp = engine_lib.SamplingParams(max_new_tokens=8, temperature=1.0, seed=turn)
    completions = eng.generate(history, sp)
    out.append(completions)
    history = [h + c.token_ids + list(rng.randint(1, 128, rng.randint(2, 6)))
               for h, c in zip(history, completions)]
  return out


def test_prefix_cache_reuses_kv_with_token_parity(model):
  """Token-in/token-out parity with the cache off: same ids under the same seeds, logprobs within
  1e-4, while later turns prefill only their new tokens."""
  on = sampler.JaxEngine(model, buckets=BUCKETS)
  off = sampler.JaxEngine(model, buckets=BUCKETS, prefix_cache_bytes=0)
  got, want = _multi_turn(on), _multi_turn(off)
  for round_got, round_want in zip(got, want):
    for a, b in zip(round_got, round_want):
      assert a.token_ids == b.token_ids
      np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
  assert off.stats.reused_tokens == 0
  assert on.stats.prompt_tokens == off.stats.prompt_tokens
  # Turns 2 and 3 reuse everything but the last completion token and the new tokens.
  first = sum(n for n in (5, 12, 3))
  new_later = on.stats.prompt_tokens - first - on.stats.reused_tokens
  assert on.stats.prefill_tokens == first + new_later
  assert on.stats.reused_tokens > on.stats.prompt_tokens // 2


def test_prefix_cache_is_dropped_when_params_change(model):
  other = _model(seed=1)
  eng = sampler.JaxEngine(nnx.split(model), buckets=BUCKETS)
  fresh = sampler.JaxEngine(nnx.split(model), buckets=BUCKETS, prefix_cache_bytes=0)
  new_state = nnx.split(other)[1]
  got = _multi_turn(eng, turns=2, update=(1, new_state))
  want = _multi_turn(fresh, turns=2, update=(1, new_state))
  assert eng.stats.reused_tokens == 0  # the only reuse chance came after the update
  for a, b in zip(got[1], want[1]):
    assert a.token_ids == b.token_ids


def test_prefix_cache_is_bounded_lru(model):
  eng = sampler.JaxEngine(model, buckets=BUCKETS, prefix_cache_bytes=1)
  _multi_turn(eng, turns=2)
  assert len(eng.prefix_cache) == 0 and eng.stats.reused_tokens == 0  # nothing fits in 1 byte
  one = sampler.JaxEngine(model, buckets=BUCKETS)
  _multi_turn(one, turns=1)
  block_bytes = one.prefix_cache.nbytes
  eng = sampler.JaxEngine(model, buckets=BUCKETS, prefix_cache_bytes=block_bytes * 3)
  _multi_turn(eng, turns=3)
  assert eng.stats.reused_tokens > 0
  assert eng.prefix_cache.nbytes <= block_bytes * 3  # older calls evicted first
  with pytest.raises(ValueError, match="max_bytes"):
    sampler.PrefixCache(-1)
