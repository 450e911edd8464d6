"""Per-token log-probs of a sequence batch without materialising [B, T, V] logits.

    logp_bt, entropy_bt = token_logprobs(graphdef, params, input_ids_bt, attention_mask_bt,
                                         temperature)

Both [B, T] float32, aligned to token positions (column 0 is 0). The LM head and the log-softmax
run over blocks of `ModelConfig.logprob_chunk` positions (`head_logprobs`), forward and backward
(a custom VJP recomputes each block's logits), so the largest temporary is one float32
[B, chunk, V] block. `rl.learner.token_logprobs` re-exports `token_logprobs` (the contract name).

Given the mask of the positions the caller uses (`needed_bt`, the loss mask), the head runs at
those positions only when they are at most `ModelConfig.head_fraction` of the batch's: a gather
into the smallest of three static sizes (the fraction, 1/2 and 1/4 of it) that holds them, so
shapes stay fixed (`lax.switch`; every position above the fraction). The head is ~40 % of a tiny
model's matmul FLOPs per token and an agent trains on a fifth of its tokens (docs/benchmarks.md,
session 10: "a learner step 1.6-1.9x faster").
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from synthagent_jax.models import qwen as qwen_lib


def token_logprobs(graphdef, params, input_ids_bt, attention_mask_bt, temperature: float = 1.0,
                   needed_bt=None):
  """Per-token log-probs and entropies [B, T] (float32), aligned to token positions.

  logp_bt[:, t] = log p(input_ids[:, t] | tokens < t), computed from the logits at t - 1 divided
  by `temperature`; column 0 is 0. entropy_bt[:, t] is the entropy of that same distribution
  (it carries no gradient). The [B, T, V] logits are never materialised: the LM head and the
  log-softmax run over blocks of `ModelConfig.logprob_chunk` positions (see `head_logprobs`).

  `needed_bt` (optional [B, T], nonzero where the caller reads the result, e.g. the loss mask):
  when at most `ModelConfig.head_fraction` of the B x T positions are needed, the head runs at
  those only and both outputs are 0 elsewhere (`head_logprobs_at`); otherwise at every position.
  """
  model = nnx.merge(graphdef, params)
  x_btd = model.hidden_states(input_ids_bt, attention_mask_bt=attention_mask_bt)
  layout, kernel = model.head_kernel()
  # Position t predicts token t + 1; the last position predicts nothing (target 0, dropped).
  target_bt = jnp.concatenate([input_ids_bt[:, 1:], jnp.zeros_like(input_ids_bt[:, :1])],
                              1).astype(jnp.int32)
  chunk, temperature = model.config.logprob_chunk, float(temperature)
  b, t = input_ids_bt.shape
  every = lambda: head_logprobs(x_btd, layout, kernel, target_bt, temperature, chunk)
  sizes = head_sizes(model.config.head_fraction, b * t)
  if needed_bt is None or not sizes:
    logp_bt, entropy_bt = every()
  else:
    # Token t's log-prob comes from position t - 1's logits.
    at_bt = jnp.concatenate([needed_bt[:, 1:] != 0, jnp.zeros((b, 1), bool)], 1)
    branches = [functools.partial(head_logprobs_at, x_btd, layout, kernel, target_bt, at_bt,
                                  temperature, chunk * b, size) for size in sizes] + [every]
    # The smallest gather that holds every needed position, else every position.
    level = jnp.sum(at_bt.sum() > jnp.asarray(sizes))
    logp_bt, entropy_bt = jax.lax.switch(level, branches)
  pad = jnp.zeros((logp_bt.shape[0], 1), jnp.float32)
  return (jnp.concatenate([pad, logp_bt[:, :-1]], 1),
          jnp.concatenate([pad, entropy_bt[:, :-1]], 1))


def _to_blocks(x_bt, chunk: int):
  """[B, T, ...] -> [ceil(T / chunk), B, chunk, ...], zero-padded along T."""
  b, t = x_bt.shape[:2]
  pad = -t % chunk
  if pad:
    x_bt = jnp.pad(x_bt, [(0, 0), (0, pad)] + [(0, 0)] * (x_bt.ndim - 2))
  x = x_bt.reshape((b, (t + pad) // chunk, chunk) + x_bt.shape[2:])
  return jnp.moveaxis(x, 1, 0)


def _from_blocks(x_nbc, t: int):
  n, b, c = x_nbc.shape[:3]
  return jnp.moveaxis(x_nbc, 0, 1).reshape((b, n * c) + x_nbc.shape[3:])[:, :t]


def head_logprobs(x_btd, layout: str, kernel, target_bt, temperature: float, chunk: int):
  """log softmax(head(x) / temperature)[target] and the entropy, [B, T] float32 each, in blocks.

  Args:
    x_btd: final-normed hidden states [B, T, D] (`Qwen.hidden_states`).
    layout, kernel: the LM head (`Qwen.head_kernel`: "vd" [V, D] or "dv" [D, V]).
    target_bt: int32 [B, T] the token whose log-prob position t gives.
    temperature: divides the logits (a Python float, static).
    chunk: positions per block (static); a block's float32 [B, chunk, V] logits are the largest
      temporaries, forward and backward.

  The gradient (to x and the kernel) is a custom VJP that recomputes each block's logits from
  the saved log-normaliser, so the backward pass never holds more than one block either; the
  entropy is returned without gradient (it is a metric).
  """
  chunk = max(1, min(int(chunk), x_btd.shape[1]))
  return _head_logprobs(layout, float(temperature), chunk, x_btd, kernel, target_bt)


def head_sizes(fraction: float, positions: int) -> list[int]:
  """The static gather sizes `token_logprobs` picks from: `fraction`, 1/2 and 1/4 of it, of
  `positions` (ascending, each below `positions`); [] when the head always runs everywhere."""
  sizes = sorted({int(fraction * positions / d) for d in (4, 2, 1)})
  return [n for n in sizes if 0 < n < positions]


def head_logprobs_at(x_btd, layout: str, kernel, target_bt, at_bt, temperature: float,
                     chunk: int, size: int):
  """`head_logprobs` at the positions where `at_bt` is true only, 0 elsewhere ([B, T] each).

  The first `size` (static) such positions are gathered into one [size, D] row and run through
  the blocked head; the caller guarantees there are at most `size` (`token_logprobs` checks it).
  Gradients flow through the gather and the scatter back.
  """
  b, t, d = x_btd.shape
  n = b * t
  (idx_p,) = jnp.nonzero(at_bt.reshape(n), size=size, fill_value=n)  # n: out of range, dropped
  x_pd = x_btd.reshape(n, d).at[idx_p].get(mode="fill", fill_value=0)
  target_p = target_bt.reshape(n).at[idx_p].get(mode="fill", fill_value=0)
  logp_p, entropy_p = head_logprobs(x_pd[None], layout, kernel, target_p[None], temperature,
                                    chunk)
  back = lambda v_p: jnp.zeros((n,), jnp.float32).at[idx_p].set(v_p[0], mode="drop").reshape(b, t)
  return back(logp_p), back(entropy_p)


def _block_logits(x_bcd, layout, kernel_c, temperature):
  logits_bcv = qwen_lib.head_logits(x_bcd, layout, kernel_c)
  return logits_bcv / temperature if temperature != 1.0 else logits_bcv


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _head_logprobs(layout, temperature, chunk, x_btd, kernel, target_bt):
  return _head_logprobs_fwd(layout, temperature, chunk, x_btd, kernel, target_bt)[0]


def _head_logprobs_fwd(layout, temperature, chunk, x_btd, kernel, target_bt):
  t = x_btd.shape[1]
  kernel_c = kernel.astype(x_btd.dtype)

  def body(_, xs):
    x_bcd, target_bc = xs
    logits_bcv = _block_logits(x_bcd, layout, kernel_c, temperature)
    logz_bc = jax.nn.logsumexp(logits_bcv, axis=-1)
    picked_bc = jnp.take_along_axis(logits_bcv, target_bc[..., None], axis=-1)[..., 0]
    probs_bcv = jnp.exp(logits_bcv - logz_bc[..., None])
    # As a dot: XLA:CPU runs the fused exp-multiply-sum over [B, C, V] ~35x slower than this
    # (36.8 vs 1.0 ms at [1, 768, 4096]; docs/benchmarks.md, session 18).
    entropy_bc = logz_bc - jnp.einsum("bcv,bcv->bc", probs_bcv, logits_bcv,
                                      preferred_element_type=jnp.float32)
    return None, (picked_bc - logz_bc, entropy_bc, logz_bc)

  _, (logp, entropy, logz) = jax.lax.scan(
      body, None, (_to_blocks(x_btd, chunk), _to_blocks(target_bt, chunk)))
  out = (_from_blocks(logp, t), _from_blocks(entropy, t))
  return out, (x_btd, kernel, target_bt, _from_blocks(logz, t))


def _head_logprobs_bwd(layout, temperature, chunk, res, cotangents):
  x_btd, kernel, target_bt, logz_bt = res
  g_logp_bt = cotangents[0].astype(jnp.float32)  # the entropy's cotangent is dropped (metric)
  t = x_btd.shape[1]
  kernel_c = kernel.astype(x_btd.dtype)
  vocab = kernel.shape[0] if layout == "vd" else kernel.shape[1]
  dx_spec, dk_spec = (("bcv,vd->bcd", "bcd,bcv->vd") if layout == "vd"
                      else ("bcv,dv->bcd", "bcd,bcv->dv"))

  def body(dk, xs):
    x_bcd, target_bc, g_bc, logz_bc = xs
    logits_bcv = _block_logits(x_bcd, layout, kernel_c, temperature)
    probs_bcv = jnp.exp(logits_bcv - logz_bc[..., None])
    onehot_bcv = target_bc[..., None] == jnp.arange(vocab, dtype=target_bc.dtype)
    # d logp / d logits = onehot - softmax; the 1 / temperature comes from logits = head / T.
    dlogits_bcv = ((onehot_bcv - probs_bcv) * (g_bc / temperature)[..., None]).astype(
        x_bcd.dtype)
    dx_bcd = jnp.einsum(dx_spec, dlogits_bcv, kernel_c,
                        preferred_element_type=jnp.float32).astype(x_bcd.dtype)
    dk = dk + jnp.einsum(dk_spec, x_bcd, dlogits_bcv, preferred_element_type=jnp.float32)
    return dk, dx_bcd

  xs = (_to_blocks(x_btd, chunk), _to_blocks(target_bt, chunk), _to_blocks(g_logp_bt, chunk),
        _to_blocks(logz_bt, chunk))
  dk, dx = jax.lax.scan(body, jnp.zeros(kernel.shape, jnp.float32), xs)
  return _from_blocks(dx, t), dk.astype(kernel.dtype), None


_head_logprobs.defvjp(_head_logprobs_fwd, _head_logprobs_bwd)
