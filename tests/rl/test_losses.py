"""Policy / SFT losses against hand-derived numbers.

The batch: old log-probs 0, so ratio = exp(logp).
  seq 0 (A=+1): ratios 1.0, 1.5, 0.5 (all masked in) -> token losses -1.0, -1.28 (clipped at
               1+0.28), -0.5 (not clipped: -A*0.5 > -A*0.8)
  seq 1 (A=-2): ratios 1.1 (masked out), 0.9, 0.7 -> token losses 1.8, 1.6 (clipped at 1-0.2)
Sum of masked token losses = -2.78 + 3.4 = 0.62 over 5 tokens; B*T = 6 (seq-mean-token-sum-norm
is given the constant L = 3 = T here, so its denominator B*L is 6 too).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synthagent_jax.rl import losses

RATIOS = np.array([[1.0, 1.5, 0.5], [1.1, 0.9, 0.7]], np.float32)
LOGP = np.log(RATIOS)
OLD = np.zeros_like(LOGP)
MASK = np.array([[1, 1, 1], [0, 1, 1]], np.float32)
ADV = np.repeat(np.array([[1.0], [-2.0]], np.float32), 3, axis=1)  # [B, T]: one A per sequence
CLIP = dict(clip_low=0.2, clip_high=0.28)


@pytest.mark.parametrize("agg,want", [
    ("token-mean", 0.62 / 5),
    ("seq-mean-token-mean", ((-1.0 - 1.28 - 0.5) / 3 + (1.8 + 1.6) / 2) / 2),
    ("seq-mean-token-sum-norm", 0.62 / 6),
])
def test_policy_loss_each_agg(agg, want):
  loss, m = losses.policy_loss(LOGP, OLD, ADV, MASK, agg=agg, norm_tokens=3, **CLIP)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(m["clip_frac"]), 2 / 5, rtol=1e-6)
  np.testing.assert_allclose(float(m["ratio_mean"]), (1.0 + 1.5 + 0.5 + 0.9 + 0.7) / 5, rtol=1e-6)
  np.testing.assert_allclose(float(m["ratio_min"]), 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(m["ratio_max"]), 1.5, rtol=1e-6)
  k3 = [1 / r + math.log(r) - 1 for r in (1.0, 1.5, 0.5, 0.9, 0.7)]
  np.testing.assert_allclose(float(m["approx_kl"]), sum(k3) / 5, rtol=1e-5)
  assert float(m["num_tokens"]) == 5


def test_policy_grad_hand_derived():
  # d/dlogp of -A*ratio is -A*ratio on unclipped tokens and 0 where the clip is active.
  g = jax.grad(lambda lp: losses.policy_loss(lp, OLD, ADV, MASK, agg="token-mean", **CLIP)[0])(
      jnp.asarray(LOGP))
  want = np.array([[-1.0, 0.0, -0.5], [0.0, 2 * 0.9, 0.0]]) / 5
  np.testing.assert_allclose(np.asarray(g), want, rtol=1e-5, atol=1e-7)


def test_k3_kl_to_reference():
  ref = LOGP.copy()
  ref[1, 1] += math.log(2.0)  # d = ln 2 -> k3 = 2 - ln 2 - 1
  base, _ = losses.policy_loss(LOGP, OLD, ADV, MASK, **CLIP)
  loss, m = losses.policy_loss(LOGP, OLD, ADV, MASK, ref_logp_bt=ref, kl_coef=0.1, **CLIP)
  k3 = 1.0 - math.log(2.0)
  np.testing.assert_allclose(float(loss) - float(base), 0.1 * k3 / 5, rtol=1e-4)
  np.testing.assert_allclose(float(m["kl_ref"]), k3 / 5, rtol=1e-5)


def test_truncated_importance_sampling():
  sampler = OLD.copy()
  sampler[1, 1] = -math.log(3.0)  # old/sampler ratio 3, capped at 2
  loss, m = losses.policy_loss(LOGP, OLD, ADV, MASK, sampler_logp_bt=sampler, is_cap=2.0,
                               **CLIP)
  np.testing.assert_allclose(float(loss), (0.62 + 1.8) / 5, rtol=1e-5)  # token 1.8 counted twice
  np.testing.assert_allclose(float(m["tis_weight_mean"]), (4 + 2) / 5, rtol=1e-5)
  np.testing.assert_allclose(float(m["tis_clip_frac"]), 1 / 5, rtol=1e-6)


def test_sft_loss_hand_derived():
  probs = np.array([[0.5, 0.25, 1.0], [0.1, 0.2, 0.4]], np.float32)
  mask = np.array([[0, 1, 1], [1, 0, 1]], np.float32)
  loss, m = losses.sft_loss(np.log(probs), mask)
  want = -(math.log(0.25) + 0.0 + math.log(0.1) + math.log(0.4)) / 4
  np.testing.assert_allclose(float(loss), want, rtol=1e-6)
  np.testing.assert_allclose(float(m["nll"]), want, rtol=1e-6)


@pytest.mark.parametrize("agg", list(losses.LOSS_AGGREGATIONS))
def test_global_denominator_splits_exactly(agg):
  # Micro-batches with the minibatch's denominator sum to the minibatch loss.
  denom = losses.agg_denominator(jnp.asarray(MASK), agg, norm_tokens=7)
  full, _ = losses.policy_loss(LOGP, OLD, ADV, MASK, agg=agg, norm_tokens=7, **CLIP)
  parts = [losses.policy_loss(LOGP[i:i + 1], OLD[i:i + 1], ADV[i:i + 1], MASK[i:i + 1], agg=agg,
                              denom=denom, **CLIP)[0] for i in range(2)]
  np.testing.assert_allclose(float(sum(parts)), float(full), rtol=1e-6)


def _pad_columns(x, n):
  return np.concatenate([x, np.zeros((x.shape[0], n), x.dtype)], axis=1)


def test_drgrpo_normaliser_is_the_constant_budget():
  # Dr. GRPO: sum of masked token losses / (B * L) with L the generation budget, here 10:
  # 0.62 / (2 * 10) = 0.031, whatever the batch's padded length.
  want = 0.62 / (2 * 10)
  for extra in (0, 4, 13):  # T = 3, 7, 16: padding columns have mask 0
    loss, _ = losses.policy_loss(_pad_columns(LOGP, extra), _pad_columns(OLD, extra),
                                 _pad_columns(ADV, extra),
                                 _pad_columns(MASK, extra), agg="seq-mean-token-sum-norm",
                                 norm_tokens=10, **CLIP)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  with pytest.raises(ValueError, match="norm_tokens"):
    losses.policy_loss(LOGP, OLD, ADV, MASK, agg="seq-mean-token-sum-norm", **CLIP)


# Dual clip batch: seq 1's middle token now has ratio 4 (A = -2).
#   plain clip: max(-A * 4, -A * 1.28) = 8;  dual clip c = 3: min(8, -A * 3 = 6) = 6.
#   seq 1's last token (ratio 0.7): max(1.4, 1.6) = 1.6 < 6, untouched. Seq 0 (A > 0) untouched,
#   even its token with ratio 1.5.
# Sums: plain -2.78 + 8 + 1.6 = 6.82; dual -2.78 + 6 + 1.6 = 4.82; over 5 tokens.
DUAL_RATIOS = np.array([[1.0, 1.5, 0.5], [1.1, 4.0, 0.7]], np.float32)


def test_dual_clip_hand_derived():
  logp = np.log(DUAL_RATIOS)
  plain, _ = losses.policy_loss(logp, OLD, ADV, MASK, **CLIP)
  dual, m = losses.policy_loss(logp, OLD, ADV, MASK, clip_ratio_c=3.0, **CLIP)
  np.testing.assert_allclose(float(plain), 6.82 / 5, rtol=1e-5)
  np.testing.assert_allclose(float(dual), 4.82 / 5, rtol=1e-5)
  np.testing.assert_allclose(float(m["dual_clip_frac"]), 1 / 5, rtol=1e-6)
  # The capped token is a constant -A * c: no gradient; without the cap it is -A * ratio / 5.
  grad = lambda c: np.asarray(jax.grad(lambda lp: losses.policy_loss(
      lp, OLD, ADV, MASK, clip_ratio_c=c, **CLIP)[0])(jnp.asarray(logp)))
  np.testing.assert_allclose(grad(None)[1, 1], 2 * 4.0 / 5, rtol=1e-5)
  assert grad(3.0)[1, 1] == 0.0
  np.testing.assert_allclose(grad(3.0)[0], grad(None)[0], rtol=1e-6)  # A > 0: no change
  # A cap above every -A * ratio changes nothing.
  np.testing.assert_allclose(float(losses.policy_loss(logp, OLD, ADV, MASK, clip_ratio_c=5.0,
                                                      **CLIP)[0]), 6.82 / 5, rtol=1e-5)


def test_bad_config_raises():
  with pytest.raises(ValueError, match="unknown loss aggregation"):
    losses.policy_loss(LOGP, OLD, ADV, MASK, agg="mean")
  with pytest.raises(ValueError, match="clip_low"):
    losses.policy_loss(LOGP, OLD, ADV, MASK, clip_low=1.5)
  with pytest.raises(ValueError, match="ref_logp_bt"):
    losses.policy_loss(LOGP, OLD, ADV, MASK, kl_coef=0.1)
  with pytest.raises(ValueError, match="is_cap"):
    losses.policy_loss(LOGP, OLD, ADV, MASK, is_cap=2.0)
  with pytest.raises(ValueError, match="clip_ratio_c"):
    losses.policy_loss(LOGP, OLD, ADV, MASK, clip_ratio_c=1.0)
