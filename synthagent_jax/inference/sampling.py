"""Sampling math for one decode step: temperature, top-k / top-p masks, logprobs.

Pure jnp functions usable inside `jit` and `lax.while_loop`. The knobs (temperature, top_p,
top_k) are traced scalars so changing them never recompiles; only the *mode* (greedy, plain
sampling, sampling with a top-k/top-p filter) is static, because the filtered mode needs a full
vocabulary sort that greedy and plain sampling can skip.

Logprob convention (what `Completion.logprobs` holds, and what the learner must reproduce):
  * greedy (temperature 0): log_softmax(logits)[token], the untempered policy;
  * sampling: log_softmax(logits / temperature)[token], the tempered policy *before* the
    top-k/top-p filter (the filter only restricts the support; the learner cannot see it, and
    SGLang reports the same quantity by default).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Mode = Literal["greedy", "sample", "filtered"]
MODES: tuple[str, ...] = ("greedy", "sample", "filtered")


def mode_for(temperature: float, top_p: float, top_k: int) -> Mode:
  """The static sampling mode a set of SamplingParams needs."""
  if temperature == 0.0:
    return "greedy"
  if top_p < 1.0 or top_k > 0:
    return "filtered"
  return "sample"


def top_k_mask(logits_bv: jax.Array, top_k: jax.Array) -> jax.Array:
  """True where a token is among the `top_k` largest logits of its row (ties kept).

  Args:
    logits_bv: float [B, V].
    top_k: int scalar; 0 (or >= V) disables the filter.

  Returns:
    bool [B, V].
  """
  vocab = logits_bv.shape[-1]
  sorted_desc_bv = -jnp.sort(-logits_bv, axis=-1)
  k = jnp.clip(top_k, 1, vocab)
  kth_b1 = jnp.take_along_axis(sorted_desc_bv, jnp.full((logits_bv.shape[0], 1), k - 1), axis=-1)
  keep_bv = logits_bv >= kth_b1
  return jnp.where(top_k > 0, keep_bv, jnp.ones_like(keep_bv))


def top_p_mask(logits_bv: jax.Array, top_p: jax.Array) -> jax.Array:
  """True for the smallest set of most likely tokens whose probability mass reaches `top_p`.

  A token is kept when the mass of the tokens strictly more likely than it is < top_p, so the
  most likely token is always kept and ties at the boundary are kept together.

  Args:
    logits_bv: float [B, V] (-inf entries have probability 0).
    top_p: float scalar in (0, 1]; 1.0 disables the filter.

  Returns:
    bool [B, V].
  """
  probs_bv = jax.nn.softmax(logits_bv.astype(jnp.float32), axis=-1)
  sorted_desc_bv = -jnp.sort(-probs_bv, axis=-1)
  mass_before_bv = jnp.cumsum(sorted_desc_bv, axis=-1) - sorted_desc_bv
  kept_bv = mass_before_bv < top_p
  # Smallest kept probability per row: every token at least that likely is kept.
  threshold_b1 = jnp.min(jnp.where(kept_bv, sorted_desc_bv, jnp.inf), axis=-1, keepdims=True)
  keep_bv = probs_bv >= threshold_b1
  return jnp.where(top_p < 1.0, keep_bv, jnp.ones_like(keep_bv))


def filter_logits(logits_bv: jax.Array, top_p: jax.Array, top_k: jax.Array) -> jax.Array:
  """Applies top-k, then top-p on what is left (the transformers / SGLang order); -inf elsewhere."""
  masked_bv = jnp.where(top_k_mask(logits_bv, top_k), logits_bv, -jnp.inf)
  return jnp.where(top_p_mask(masked_bv, top_p), masked_bv, -jnp.inf)


def inverse_cdf(logp_bv: jax.Array, u_b: jax.Array) -> jax.Array:
  """Inverse-transform sampling: row b's token is the first whose cumulative probability exceeds
  u_b[b] x the row's total (u in [0, 1)); tokens of probability 0 (-inf) are never drawn.

  One uniform per row instead of the Gumbel-max trick's one per vocabulary entry: on a 2-core CPU
  the draw of 16 rows x 4096 tokens takes ~0.7 ms instead of ~3.2 ms, a large share of a tiny
  model's decode step (docs/benchmarks.md, session 15). The float32 cumulative sum moves an
  interval's edges by ~1 ulp of the running mass (~6e-8 near 1); the logprob a token is reported
  with is log_softmax's, not the sum's.
  """
  cdf_bv = jnp.cumsum(jnp.exp(logp_bv), axis=-1)
  total_b = cdf_bv[:, -1]
  # x < total strictly (u x total can round up to it), so some entry exceeds x. The entries
  # <= x precede the chosen token; a zero-probability token repeats its predecessor's sum, so it
  # is never the first entry above x.
  x_b1 = jnp.minimum(u_b * total_b, jnp.nextafter(total_b, 0.0))[:, None]
  return jnp.sum(cdf_bv <= x_b1, axis=-1).astype(jnp.int32)


def sample_step(logits_bv: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array,
                top_k: jax.Array, mode: Mode) -> tuple[jax.Array, jax.Array]:
  """Picks one token per row and returns its logprob (see the module docstring).

  Args:
    logits_bv: float [B, V] next-token logits.
    key: PRNG key for this step: one key, or a [B] array of keys (one per row).
    temperature: float scalar (> 0 unless mode == "greedy").
    top_p: float scalar; used in mode "filtered".
    top_k: int scalar; used in mode "filtered".
    mode: static, one of MODES.

  Returns:
    (tokens_b int32 [B], logprobs_b float32 [B]).
  """
  logits_bv = logits_bv.astype(jnp.float32)
  if mode == "greedy":
    tokens_b = jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
    logp_bv = jax.nn.log_softmax(logits_bv, axis=-1)
  elif mode in ("sample", "filtered"):
    scaled_bv = logits_bv / temperature
    logp_bv = jax.nn.log_softmax(scaled_bv, axis=-1)
    draw_logp_bv = (jax.nn.log_softmax(filter_logits(scaled_bv, top_p, top_k), axis=-1)
                    if mode == "filtered" else logp_bv)
    if jnp.ndim(key) == 0:
      u_b = jax.random.uniform(key, logits_bv.shape[:1])
    else:  # one key per row: a row's draw does not depend on the rest of the batch
      u_b = jax.vmap(jax.random.uniform)(key)
    tokens_b = inverse_cdf(draw_logp_bv, u_b)
  else:
    raise ValueError(f"unknown sampling mode {mode!r}; expected one of {MODES}")
  logprobs_b = jnp.take_along_axis(logp_bv, tokens_b[:, None], axis=-1)[:, 0]
  return tokens_b, logprobs_b
