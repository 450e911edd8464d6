"""Which batch rows go into which minibatch / micro-batch: pure index arithmetic for the learner.

A batch of B rows is cut into n chunks by `split` (chunk i = rows i, i + n, ...: every chunk stays
spread over all data-parallel devices). The learner pads a batch to a fixed row count with rows
whose attention_mask is 0; `blocks_first` and `shuffle` order rows so that, after `split`, the
real rows fill the first chunks and the padding rows the last, so a chunk of padding only can be
skipped outright (`rl.learner`: no compute for it).
"""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec


def split(x, n: int, batch_axes=None, mesh=None):
  """[B, ...] -> [n, B // n, ...], chunk i = rows i, i + n, ... (keeps every chunk spread over
  all data-parallel devices instead of putting chunk i on a subset of them)."""
  y = jnp.swapaxes(x.reshape((x.shape[0] // n, n) + x.shape[1:]), 0, 1)
  if mesh is not None:
    spec = PartitionSpec(None, batch_axes, *([None] * (x.ndim - 1)))
    y = jax.lax.with_sharding_constraint(y, NamedSharding(mesh, spec))
  return y


def unsplit(y):
  """The inverse of `split`: [n, B // n, ...] -> [B, ...]."""
  return jnp.swapaxes(y, 0, 1).reshape((y.shape[0] * y.shape[1],) + y.shape[2:])


def _as_chunks(order, n: int):
  """A permutation whose `split(n)` chunks are the consecutive blocks of `order`."""
  bsz = order.shape[0]
  q = jnp.arange(bsz)
  return order[(q % n) * (bsz // n) + q // n]


def blocks_first(pad_rows_b, n: int):
  """Row order whose `split(n)` chunks hold the real rows (in their order) first and the padding
  rows last: with p padding rows, the last p // (B // n) chunks are padding only."""
  return _as_chunks(jnp.argsort(pad_rows_b, stable=True), n)


def shuffle(rng, pad_rows_b, n: int):
  """Row order for one epoch whose `split(n)` chunks are consecutive blocks of a random order of
  the real rows, padding rows last.

  Each row's sort key is drawn from (rng, its index) alone, so padding a batch with more rows
  leaves its real chunks unchanged: they fill the first chunks, and chunks of padding only come
  last.
  """
  bsz = pad_rows_b.shape[0]
  u_b = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(rng, i)))(jnp.arange(bsz))
  return _as_chunks(jnp.argsort(jnp.where(pad_rows_b, 2.0, u_b)), n)  # u < 1: real rows first
