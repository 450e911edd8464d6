"""Policy-gradient and SFT losses over per-token log-probabilities, registered by name.

All inputs are token-aligned [B, T] arrays: `logp_bt[b, t]` is the learner's log-probability of
token t of sequence b, `mask_bt[b, t]` is 1 where token t was sampled by the policy (the loss mask).

Aggregation (`agg`, registry LOSS_AGGREGATIONS) turns masked token losses into a scalar:
  token-mean               sum(l * m) / sum(m)                       over the whole batch
  seq-mean-token-mean      mean over sequences with >= 1 token of  sum_t(l * m) / sum_t(m)
  seq-mean-token-sum-norm  sum(l * m) / (B * L), L = `norm_tokens`, a constant  (Dr. GRPO)

Dr. GRPO divides each sequence's summed token loss by one constant for the whole run, the
generation budget (the learner passes `LearnerConfig.loss_norm_tokens`, by default the rollouts'
`max_total_tokens`): dividing by the batch's padded length T instead would rescale the gradient
whenever a batch happens to hold a longer episode, which is the length bias Dr. GRPO removes.

Gradient accumulation needs the denominator of the *whole* minibatch, not of each micro-batch:
compute it once with `agg_denominator(mask_bt_of_minibatch, agg)` and pass it as `denom` to every
micro-batch call; the micro-batch losses then sum exactly to the minibatch loss.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LossAggregation:
  """A registered aggregation: `denominator(mask_bt, norm_tokens)` (before the floor at 1) and
  `numerator(masked_loss_bt, mask_bt)`; the loss is numerator / denominator."""

  denominator: Callable[[jnp.ndarray, int | None], jnp.ndarray]
  numerator: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


LOSS_AGGREGATIONS: dict[str, LossAggregation] = {}


def register_aggregation(name: str, *, numerator):
  """Decorator: registers a denominator `f(mask_bt, norm_tokens)` and its `numerator` under
  `name` (duplicates refused)."""

  def deco(fn):
    if name in LOSS_AGGREGATIONS:
      raise ValueError(f"loss aggregation {name!r} registered twice")
    LOSS_AGGREGATIONS[name] = LossAggregation(fn, numerator)
    return fn

  return deco


def get_aggregation(agg: str) -> LossAggregation:
  if agg not in LOSS_AGGREGATIONS:
    raise ValueError(f"unknown loss aggregation {agg!r}; known: {list(LOSS_AGGREGATIONS)}")
  return LOSS_AGGREGATIONS[agg]


def _total(masked_bt, mask_bt):
  del mask_bt
  return masked_bt.sum()


def _sum_of_sequence_means(masked_bt, mask_bt):
  return (masked_bt.sum(axis=1) / jnp.maximum(mask_bt.sum(axis=1), 1.0)).sum()


@register_aggregation("token-mean", numerator=_total)
def _token_count(mask_bt, norm_tokens):
  del norm_tokens
  return mask_bt.sum()


@register_aggregation("seq-mean-token-mean", numerator=_sum_of_sequence_means)
def _sequence_count(mask_bt, norm_tokens):
  del norm_tokens
  return (mask_bt.sum(axis=1) > 0).sum().astype(jnp.float32)


@register_aggregation("seq-mean-token-sum-norm", numerator=_total)
def _sequences_times_budget(mask_bt, norm_tokens):
  if norm_tokens is None or norm_tokens < 1:
    raise ValueError("agg='seq-mean-token-sum-norm' needs norm_tokens >= 1 (the constant "
                     f"generation budget Dr. GRPO divides by), got {norm_tokens!r}")
  return jnp.float32(mask_bt.shape[0] * norm_tokens)


def agg_denominator(mask_bt: jnp.ndarray, agg: str,
                    norm_tokens: int | None = None) -> jnp.ndarray:
  """Float32 scalar the aggregated loss divides by (>= 1 so an empty batch gives loss 0).

  `norm_tokens` is the constant L of seq-mean-token-sum-norm (required there, unused otherwise).
  """
  entry = get_aggregation(agg)
  return jnp.maximum(entry.denominator(mask_bt.astype(jnp.float32), norm_tokens), 1.0)


def aggregate(token_loss_bt: jnp.ndarray, mask_bt: jnp.ndarray, agg: str,
              denom: jnp.ndarray | None = None, norm_tokens: int | None = None) -> jnp.ndarray:
  """Scalar loss from token losses [B, T] and mask [B, T]; see the module docstring."""
  entry = get_aggregation(agg)
  mask_bt = mask_bt.astype(jnp.float32)
  if denom is None:
    denom = agg_denominator(mask_bt, agg, norm_tokens)
  return entry.numerator(token_loss_bt * mask_bt, mask_bt) / denom


def _masked_mean(x_bt: jnp.ndarray, mask_bt: jnp.ndarray) -> jnp.ndarray:
  return (x_bt * mask_bt).sum() / jnp.maximum(mask_bt.sum(), 1.0)


def policy_loss(logp_bt, old_logp_bt, adv_bt, mask_bt, *, clip_low: float = 0.2,
                clip_high: float = 0.2, agg: str = "token-mean", ref_logp_bt=None,
                kl_coef: float = 0.0, sampler_logp_bt=None, is_cap: float | None = None,
                clip_ratio_c: float | None = None, norm_tokens: int | None = None,
                denom=None) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Token-level PPO-clip loss with asymmetric clipping and optional dual clip.

  ratio = exp(logp - old_logp), clipped to [1 - clip_low, 1 + clip_high];
  pg = max(-A * ratio, -A * clip(ratio)); with dual clip, pg = min(pg, -A * c) where A < 0;
  token loss = pg [* w_is] [+ kl_coef * k3(ref || policy)].

  Args:
    logp_bt: learner log-probs [B, T] (gradients flow through these only).
    old_logp_bt: log-probs [B, T] of the policy that the ratio is taken against.
    adv_bt: advantages [B, T] (rewards/credit.py; only their values on the mask matter).
    mask_bt: 1 on policy tokens, 0 elsewhere [B, T].
    clip_low, clip_high: clip range below / above 1 (DAPO's "clip-higher" uses clip_high > clip_low).
    agg: aggregation name, see LOSS_AGGREGATIONS.
    ref_logp_bt: reference-policy log-probs [B, T]; needed when kl_coef > 0. The KL penalty is
      the k3 estimator exp(ref - logp) - (ref - logp) - 1 (Schulman, "Approximating KL").
    sampler_logp_bt: log-probs [B, T] reported by the sampler; with `is_cap` set, the PG term is
      weighted by the truncated importance ratio min(exp(old - sampler), is_cap), no gradient.
    is_cap: cap of that ratio; None disables the correction.
    clip_ratio_c: dual-clip constant c > 1 (verl's `clip_ratio_c`, Ye et al. 2020): for tokens
      with a negative advantage the PG loss is capped at -A * c, so one token whose ratio has run
      far above 1 cannot dominate the update. None disables it.
    norm_tokens: the constant L of seq-mean-token-sum-norm (see `agg_denominator`).
    denom: aggregation denominator (see `agg_denominator`); computed from `mask_bt` when None.

  Returns:
    (loss scalar, metrics) where metrics are token means over the mask: pg_loss, clip_frac,
    approx_kl (k3 of old vs new), ratio_mean, ratio_min, ratio_max, and kl_ref / tis_weight_mean /
    tis_clip_frac / dual_clip_frac when enabled; plus num_tokens.
  """
  get_aggregation(agg)
  if not 0.0 <= clip_low < 1.0:
    raise ValueError(f"clip_low must be in [0, 1), got {clip_low}")
  if clip_high < 0.0:
    raise ValueError(f"clip_high must be >= 0, got {clip_high}")
  if kl_coef < 0.0:
    raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
  if kl_coef > 0.0 and ref_logp_bt is None:
    raise ValueError("kl_coef > 0 needs ref_logp_bt (reference-policy log-probs)")
  if is_cap is not None and (is_cap <= 0.0 or sampler_logp_bt is None):
    raise ValueError(f"is_cap must be > 0 and needs sampler_logp_bt, got cap={is_cap}")
  if clip_ratio_c is not None and not clip_ratio_c > 1.0:
    raise ValueError(f"clip_ratio_c (dual clip) must be > 1, got {clip_ratio_c}")
  mask_bt = mask_bt.astype(jnp.float32)
  adv_bt = jnp.asarray(adv_bt, jnp.float32)
  old_logp_bt = jax.lax.stop_gradient(old_logp_bt)

  log_ratio_bt = (logp_bt - old_logp_bt) * mask_bt
  ratio_bt = jnp.exp(log_ratio_bt)
  clipped_bt = jnp.clip(ratio_bt, 1.0 - clip_low, 1.0 + clip_high)
  pg_unclipped_bt = -adv_bt * ratio_bt
  pg_clipped_bt = -adv_bt * clipped_bt
  pg_bt = jnp.maximum(pg_unclipped_bt, pg_clipped_bt)
  metrics = {}
  if clip_ratio_c is not None:
    pg_dual_bt = -adv_bt * clip_ratio_c
    negative_bt = adv_bt < 0
    metrics["dual_clip_frac"] = _masked_mean(
        (negative_bt & (pg_bt > pg_dual_bt)).astype(jnp.float32), mask_bt)
    pg_bt = jnp.where(negative_bt, jnp.minimum(pg_bt, pg_dual_bt), pg_bt)
  if is_cap is not None:
    raw_w_bt = jnp.exp((old_logp_bt - jax.lax.stop_gradient(sampler_logp_bt)) * mask_bt)
    w_bt = jnp.minimum(raw_w_bt, is_cap)
    pg_bt = pg_bt * w_bt
    metrics["tis_weight_mean"] = _masked_mean(w_bt, mask_bt)
    metrics["tis_clip_frac"] = _masked_mean((raw_w_bt > is_cap).astype(jnp.float32), mask_bt)
  token_loss_bt = pg_bt
  if kl_coef > 0.0:
    d_bt = (jax.lax.stop_gradient(ref_logp_bt) - logp_bt) * mask_bt
    kl_bt = jnp.exp(d_bt) - d_bt - 1.0
    token_loss_bt = token_loss_bt + kl_coef * kl_bt
    metrics["kl_ref"] = _masked_mean(kl_bt, mask_bt)

  loss = aggregate(token_loss_bt, mask_bt, agg, denom, norm_tokens)
  big = jnp.float32(jnp.finfo(jnp.float32).max)
  metrics.update(
      pg_loss=_masked_mean(pg_bt, mask_bt),
      clip_frac=_masked_mean((pg_clipped_bt > pg_unclipped_bt).astype(jnp.float32), mask_bt),
      approx_kl=_masked_mean(jnp.exp(-log_ratio_bt) + log_ratio_bt - 1.0, mask_bt),
      ratio_mean=_masked_mean(ratio_bt, mask_bt),
      ratio_min=jnp.where(mask_bt > 0, ratio_bt, big).min(),
      ratio_max=jnp.where(mask_bt > 0, ratio_bt, -big).max(),
      num_tokens=mask_bt.sum(),
  )
  return loss, metrics


def sft_loss(logp_bt, mask_bt, *, agg: str = "token-mean", norm_tokens: int | None = None,
             denom=None) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Masked negative log-likelihood (cross-entropy on the mask's tokens).

  Returns (loss, metrics) with metrics nll (token mean over the mask) and num_tokens.
  """
  mask_bt = mask_bt.astype(jnp.float32)
  loss = aggregate(-logp_bt, mask_bt, agg, denom, norm_tokens)
  return loss, {"nll": _masked_mean(-logp_bt, mask_bt), "num_tokens": mask_bt.sum()}


@dataclasses.dataclass(frozen=True)
class Loss:
  """A registered learner loss: `fn(logp_bt, batch, mask_bt, learner_cfg, denom) -> (loss,
  metrics)`, the batch keys it reads, and whether it needs old log-probs (then the learner
  computes them when the batch lacks them)."""

  fn: Callable[..., tuple[jnp.ndarray, dict[str, jnp.ndarray]]]
  batch_keys: tuple[str, ...]
  needs_old_logprobs: bool = False


LOSSES: dict[str, Loss] = {}


def register_loss(name: str, *, batch_keys: tuple[str, ...], needs_old_logprobs: bool = False):
  """Decorator: registers a learner loss under `name` (`LearnerConfig.loss`; duplicates refused)."""

  def deco(fn):
    if name in LOSSES:
      raise ValueError(f"learner loss {name!r} registered twice")
    LOSSES[name] = Loss(fn, tuple(batch_keys), needs_old_logprobs)
    return fn

  return deco


def get_loss(name: str) -> Loss:
  if name not in LOSSES:
    raise ValueError(f"learner loss must be one of {sorted(LOSSES)}, got {name!r}")
  return LOSSES[name]


@register_loss("policy", needs_old_logprobs=True,
               batch_keys=("input_ids", "attention_mask", "loss_mask", "advantages",
                           "sampler_logprobs"))
def _policy_from_batch(logp_bt, batch, mask_bt, cfg, denom):
  return policy_loss(
      logp_bt, batch["old_logprobs"], batch["advantages"], mask_bt, clip_low=cfg.clip_low,
      clip_high=cfg.clip_high, agg=cfg.agg, ref_logp_bt=batch.get("ref_logprobs"),
      kl_coef=cfg.kl_coef, sampler_logp_bt=batch.get("sampler_logprobs"),
      is_cap=cfg.is_cap, clip_ratio_c=cfg.clip_ratio_c, norm_tokens=cfg.loss_norm_tokens,
      denom=denom)


@register_loss("sft", batch_keys=("input_ids", "attention_mask", "loss_mask"))
def _sft_from_batch(logp_bt, batch, mask_bt, cfg, denom):
  del batch
  return sft_loss(logp_bt, mask_bt, agg=cfg.agg, norm_tokens=cfg.loss_norm_tokens, denom=denom)
