"""Sampling math against hand-derived numbers and empirical frequencies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synthagent_jax.inference import sampling

PROBS = np.array([0.5, 0.3, 0.15, 0.05])


def _logits(probs=PROBS):
  return jnp.log(jnp.asarray(probs, jnp.float32))[None, :]


def test_mode_for():
  assert sampling.mode_for(0.0, 0.5, 3) == "greedy"
  assert sampling.mode_for(1.0, 1.0, 0) == "sample"
  assert sampling.mode_for(0.7, 0.9, 0) == "filtered"
  assert sampling.mode_for(0.7, 1.0, 5) == "filtered"


@pytest.mark.parametrize("k,expected", [
    (0, [True, True, True, True]),
    (1, [False, True, False, False]),
    (2, [False, True, True, False]),
    (4, [True, True, True, True]),
    (9, [True, True, True, True]),
])
def test_top_k_mask(k, expected):
  logits = jnp.array([[1.0, 5.0, 3.0, 2.0]])
  np.testing.assert_array_equal(sampling.top_k_mask(logits, jnp.int32(k))[0], expected)


def test_top_k_keeps_ties():
  logits = jnp.array([[2.0, 2.0, 1.0]])
  np.testing.assert_array_equal(sampling.top_k_mask(logits, jnp.int32(1))[0], [True, True, False])


@pytest.mark.parametrize("p,expected", [
    (1.0, [True, True, True, True]),
    (0.4, [True, False, False, False]),   # the top token alone already passes 0.4
    (0.7, [True, True, False, False]),    # 0.5 < 0.7 so 0.3 joins; 0.8 >= 0.7 stops
    (0.85, [True, True, True, False]),
    (0.99, [True, True, True, True]),
])
def test_top_p_mask(p, expected):
  np.testing.assert_array_equal(sampling.top_p_mask(_logits(), jnp.float32(p))[0], expected)


def test_top_p_ignores_masked_tokens():
  logits = _logits().at[0, 0].set(-jnp.inf)  # remaining probs renormalise to .6, .3, .1
  np.testing.assert_array_equal(
      sampling.top_p_mask(logits, jnp.float32(0.65))[0], [False, True, True, False])


def test_greedy_picks_argmax_with_untempered_logprob():
  logits = jnp.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
  tokens, logprobs = sampling.sample_step(logits, jax.random.key(0), jnp.float32(0.0),
                                          jnp.float32(1.0), jnp.int32(0), "greedy")
  np.testing.assert_array_equal(tokens, [1, 0])
  expected = jax.nn.log_softmax(logits, axis=-1)[jnp.arange(2), jnp.array([1, 0])]
  np.testing.assert_allclose(logprobs, expected, rtol=1e-6)
  assert logprobs.dtype == jnp.float32


def _draw(logits, temperature, top_p, top_k, mode, n=20000):
  keys = jax.random.split(jax.random.key(1), n)
  step = lambda key: sampling.sample_step(logits, key, jnp.float32(temperature),
                                          jnp.float32(top_p), jnp.int32(top_k), mode)
  tokens, logprobs = jax.jit(jax.vmap(step))(keys)
  return np.asarray(tokens[:, 0]), np.asarray(logprobs[:, 0])


def test_sampling_frequencies_follow_tempered_softmax():
  temperature = 0.5
  tokens, logprobs = _draw(_logits(), temperature, 1.0, 0, "sample")
  tempered = PROBS ** (1 / temperature) / np.sum(PROBS ** (1 / temperature))
  freq = np.bincount(tokens, minlength=4) / len(tokens)
  np.testing.assert_allclose(freq, tempered, atol=0.012)
  np.testing.assert_allclose(logprobs, np.log(tempered[tokens]), rtol=1e-5)


def test_filtered_sampling_stays_in_support_and_renormalises():
  tokens, logprobs = _draw(_logits(), 1.0, 0.7, 0, "filtered")
  freq = np.bincount(tokens, minlength=4) / len(tokens)
  np.testing.assert_allclose(freq, [0.5 / 0.8, 0.3 / 0.8, 0, 0], atol=0.012)
  # Logprobs are those of the unfiltered tempered policy.
  np.testing.assert_allclose(logprobs, np.log(PROBS[tokens]), rtol=1e-5)
  tokens_k, _ = _draw(_logits(), 1.0, 1.0, 1, "filtered", n=500)
  assert set(tokens_k.tolist()) == {0}


def test_same_key_same_sample():
  logits = jax.random.normal(jax.random.key(3), (4, 50))
  args = (jnp.float32(1.0), jnp.float32(0.9), jnp.int32(10), "filtered")
  a, _ = sampling.sample_step(logits, jax.random.key(7), *args)
  b, _ = sampling.sample_step(logits, jax.random.key(7), *args)
  np.testing.assert_array_equal(a, b)


def test_unknown_mode_raises():
  with pytest.raises(ValueError, match="unknown sampling mode"):
    sampling.sample_step(_logits(), jax.random.key(0), jnp.float32(1.0), jnp.float32(1.0),
                         jnp.int32(0), "beam")


def test_per_row_keys_make_rows_independent_of_the_batch():
  logits = jax.random.normal(jax.random.key(3), (3, 50))
  keys = jax.random.split(jax.random.key(5), 3)
  args = (jnp.float32(1.0), jnp.float32(1.0), jnp.int32(0), "sample")
  batch, _ = sampling.sample_step(logits, keys, *args)
  alone, _ = sampling.sample_step(logits[1:2], keys[1:2], *args)
  assert int(batch[1]) == int(alone[0])


def test_inverse_cdf_picks_the_first_token_above_u_and_never_a_zero_probability_one():
  # cumulative sums [0.5, 0.5, 0.8, 1.0] and [0.6, 1.0, 1.0, 1.0], worked out by hand
  probs = np.array([[0.5, 0.0, 0.3, 0.2], [0.6, 0.4, 0.0, 0.0]], np.float32)
  with np.errstate(divide="ignore"):
    logp = jnp.asarray(np.log(probs))
  almost_one = float(np.nextafter(np.float32(1.0), np.float32(0.0)))
  cases = [(0.0, [0, 0]), (0.49, [0, 0]), (0.5, [2, 0]), (0.79, [2, 1]), (0.8, [3, 1]),
           (almost_one, [3, 1])]
  for u, expected in cases:
    tokens = sampling.inverse_cdf(logp, jnp.full((2,), u, jnp.float32))
    np.testing.assert_array_equal(tokens, expected, err_msg=f"u={u}")
