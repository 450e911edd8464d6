"""The learner step: `train_step(state, batch) -> (state, metrics)`, pure, jitted once, sharded.

Batch format (a dict of arrays; B sequences of padded length T; build it with `make_batch`):
  input_ids        int32   [B, T]  full multi-turn token ids (prompt, responses, env turns, pad)
  attention_mask   int32   [B, T]  1 real token, 0 padding (left or right padding both work)
  loss_mask        int32   [B, T]  1 where token t was sampled by the policy (Trajectory.loss_mask)
  advantages       float32 [B, T]  one per token (rewards/credit.py: episode or turn credit)
  sampler_logprobs float32 [B, T]  log-prob the sampler gave token t (0 where loss_mask is 0)
  old_logprobs     float32 [B, T]  optional; log-probs of the pre-update policy. When absent, the
                                   step computes them with the incoming params in a first
                                   forward pass; a step of one update uses stop_gradient(logp).
  ref_logprobs     float32 [B, T]  optional; reference policy, needed when kl_coef > 0.
All per-token arrays are aligned to token positions: entry t is about token t. The learner's
log-prob of token t comes from the logits at position t - 1, so token 0 is never trained on.
For SFT (`loss="sft"`) only input_ids, attention_mask and loss_mask are read.

One call runs `ppo_epochs` epochs over the batch in minibatches of `minibatch_size` sequences
(one optimizer update each, shuffled per epoch when there are several), each accumulated over
micro-batches of `micro_batch_size`. Per-token losses are normalised with the whole minibatch's
denominator, so accumulation is exact. A minibatch whose loss or gradient is not finite leaves
params and optimizer state untouched and is counted in `learner/skipped_updates`.

B is part of the compiled shape: pad a short batch with rows whose attention_mask is 0. Such
padding rows are sorted after the real ones when minibatches are shuffled (each row's shuffle key
depends only on its index), a minibatch of padding only is skipped (no compute, no optimizer
step), and within a minibatch the padding rows fill the last micro-batches, which are skipped
too (`rl/rows.py`). So padding a batch to a fixed row count changes neither the updates nor the
metrics (up to float summation order) and, at a micro-batch of one group, costs no compute for
dropped groups; `learner/updates` counts the minibatches trained.
"""

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from synthagent_jax import parallel
from synthagent_jax.rl import losses
from synthagent_jax.rl import rows
from synthagent_jax.rl.logprobs import token_logprobs  # re-exported: rl.learner.token_logprobs
from synthagent_jax.rl.state import StateSpec, TrainState



@dataclasses.dataclass(frozen=True)
class LearnerConfig:
  """Loss and batching of one train_step (the `config.rl` section, or SFT settings).

  Attributes:
    loss: "policy" (PPO-clip, rl/losses.policy_loss) or "sft" (masked cross-entropy).
    clip_low, clip_high: PPO ratio clip range [1 - clip_low, 1 + clip_high].
    clip_ratio_c: dual-clip constant (> 1) for negative advantages (verl's clip_ratio_c); None = off.
    agg: loss aggregation, see losses.LOSS_AGGREGATIONS.
    loss_norm_tokens: the constant token count seq-mean-token-sum-norm divides each sequence's
      summed loss by (Dr. GRPO's generation budget); required by that aggregation only.
    kl_coef: k3 KL penalty to ref_logprobs (0 = off).
    is_cap: truncated importance-sampling cap for sampler/learner mismatch (None or 0 = off).
    ppo_epochs: passes over each batch.
    minibatch_size: SEQUENCES per optimizer update (None: the whole batch). The learner does not
      know about groups; `from_config` derives it from the config's `rl.minibatch_tasks` (tasks
      per update, verl's ppo_mini_batch_size) x `rl.num_generations`.
    micro_batch_size: sequences per accumulation micro-step (None: the whole minibatch).
    temperature: the temperature the sampler drew the rollouts with. The policy being trained is
      the distribution the sampler's log-probs are of, so old/new log-probs, the ratio and the
      entropy are all of it: softmax(logits / temperature), and for 0 (greedy) the untempered
      softmax(logits), whose log-probs a greedy sampler reports (inference.SamplingParams);
      `logprob_temperature` is that scoring temperature. SFT uses 1.0. Greedy rollouts carry no
      exploration to learn from; launch.train refuses them for RL steps.
  """

  loss: str = "policy"
  clip_low: float = 0.2
  clip_high: float = 0.28
  clip_ratio_c: float | None = None
  agg: str = "token-mean"
  loss_norm_tokens: int | None = None
  kl_coef: float = 0.0
  is_cap: float | None = None
  ppo_epochs: int = 1
  minibatch_size: int | None = None
  micro_batch_size: int | None = None
  temperature: float = 1.0

  def __post_init__(self):
    losses.get_loss(self.loss)
    if self.agg not in losses.LOSS_AGGREGATIONS:
      raise ValueError(f"agg must be one of {tuple(losses.LOSS_AGGREGATIONS)}, got {self.agg!r}")
    if not 0 <= self.clip_low < 1:
      raise ValueError(f"clip_low must be in [0, 1), got {self.clip_low}")
    if not self.clip_high >= 0:
      raise ValueError(f"clip_high must be >= 0, got {self.clip_high}")
    if self.clip_ratio_c is not None and not self.clip_ratio_c > 1:
      raise ValueError(f"clip_ratio_c (dual clip) must be > 1, got {self.clip_ratio_c}")
    if self.loss_norm_tokens is not None and (isinstance(self.loss_norm_tokens, bool) or
                                              not isinstance(self.loss_norm_tokens, int) or
                                              self.loss_norm_tokens < 1):
      raise ValueError(f"loss_norm_tokens must be an integer >= 1, got {self.loss_norm_tokens!r}")
    if self.agg == "seq-mean-token-sum-norm" and self.loss_norm_tokens is None:
      raise ValueError("agg='seq-mean-token-sum-norm' needs loss_norm_tokens (the constant "
                       "generation budget it divides by)")
    if self.kl_coef < 0:
      raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
    if self.is_cap is not None:
      if self.is_cap < 0:
        raise ValueError(f"is_cap must be >= 0 (0 or None = off), got {self.is_cap}")
      if self.is_cap == 0:
        object.__setattr__(self, "is_cap", None)
    if not self.temperature >= 0:
      raise ValueError(f"temperature must be >= 0 (the rollouts' sampling temperature, 0 = "
                       f"greedy), got {self.temperature}")
    if self.ppo_epochs < 1:
      raise ValueError(f"ppo_epochs must be >= 1, got {self.ppo_epochs}")
    for name in ("minibatch_size", "micro_batch_size"):
      v = getattr(self, name)
      if v is not None and v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")

  @property
  def logprob_temperature(self) -> float:
    """The temperature the learner scores tokens at: the sampler's, or 1.0 for greedy (0)."""
    return self.temperature if self.temperature > 0 else 1.0

  @classmethod
  def from_config(cls, rl_cfg, **overrides) -> "LearnerConfig":
    """From `config.rl`: clip_low, clip_high, dual_clip / clip_ratio_c, agg, loss_norm_tokens,
    kl_coef, is_cap, ppo_epochs, minibatch_tasks (x num_generations = minibatch_size sequences),
    micro_batch_size (other keys of the section belong to the loop and are ignored); the
    defaults are this dataclass's own.

    Raises ValueError naming the config key (`rl.minibatch_tasks`, ...) for a bad value.
    """
    get = rl_cfg.get
    kw = {k: rl_cfg[k] for k in ("clip_low", "clip_high", "agg", "kl_coef", "is_cap", "ppo_epochs",
                                 "micro_batch_size") if k in rl_cfg}
    kw["minibatch_size"] = cls._minibatch_sequences(rl_cfg)
    if get("loss_norm_tokens", None):  # 0 = unset
      kw["loss_norm_tokens"] = rl_cfg["loss_norm_tokens"]
    if get("dual_clip", False):
      kw["clip_ratio_c"] = get("clip_ratio_c", 3.0)
      if not kw["clip_ratio_c"] > 1:
        raise ValueError(f"rl.clip_ratio_c must be > 1 with rl.dual_clip=True, got "
                         f"{kw['clip_ratio_c']}")
    kw.update(overrides)
    return cls(**kw)

  @staticmethod
  def _minibatch_sequences(rl_cfg) -> int | None:
    """Sequences per optimizer update: `rl.minibatch_tasks` x `rl.num_generations` (verl's
    ppo_mini_batch_size counts prompts, each with its n rollouts); None without minibatch_tasks
    (the whole batch). The sequence count has no config key of its own: one knob, one name."""
    get = rl_cfg.get
    if get("minibatch_size", None) is not None:
      raise ValueError(f"rl.minibatch_size={get('minibatch_size')} is not a config key (sequences "
                       "per update are derived): set rl.minibatch_tasks, tasks per update, each "
                       "with its rl.num_generations rollouts")
    tasks = get("minibatch_tasks", None)
    if tasks is None:
      return None
    if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 1:
      raise ValueError(f"rl.minibatch_tasks must be >= 1 (an integer: tasks, each with its "
                       f"rl.num_generations rollouts, per optimizer update), got {tasks!r}")
    per_step = get("tasks_per_step", None)
    if per_step is not None and per_step % tasks:
      raise ValueError(f"rl.minibatch_tasks={tasks} does not divide rl.tasks_per_step={per_step}")
    return tasks * get("num_generations", 1)

  def sizes(self, batch_size: int) -> tuple[int, int, int]:
    """(num_minibatches, minibatch_size, micro_batch_size) for a batch; raises if not divisible."""
    mini = self.minibatch_size or batch_size
    micro = self.micro_batch_size or mini
    if batch_size % mini:
      raise ValueError(f"batch of {batch_size} sequences is not divisible by minibatch_size {mini}")
    if mini % micro:
      raise ValueError(f"minibatch_size {mini} is not divisible by micro_batch_size {micro}")
    return batch_size // mini, mini, micro


def _policy_mask(batch) -> jnp.ndarray:
  mask_bt = (batch["loss_mask"] * batch["attention_mask"]).astype(jnp.float32)
  return mask_bt.at[:, 0].set(0.0)


_MIN_KEYS = ("ratio_min",)
_MAX_KEYS = ("ratio_max",)


def _micro_loss(params, mb, denom, graphdef, cfg):
  mask_bt = _policy_mask(mb)
  logp_bt, ent_bt = token_logprobs(graphdef, params, mb["input_ids"], mb["attention_mask"],
                                   cfg.logprob_temperature, needed_bt=mask_bt)
  if losses.LOSSES[cfg.loss].needs_old_logprobs and "old_logprobs" not in mb:
    mb = dict(mb, old_logprobs=jax.lax.stop_gradient(logp_bt))
  loss, metrics = losses.LOSSES[cfg.loss].fn(logp_bt, mb, mask_bt, cfg, denom)
  metrics = dict(metrics)
  metrics["entropy"] = (ent_bt * mask_bt).sum() / jnp.maximum(mask_bt.sum(), 1.0)
  return loss, metrics


def _accumulate(params, minibatch, graphdef, cfg, n_micro, mesh):
  """Summed grads and loss over micro-batches, token-weighted metric means. The padding rows
  are gathered into the last micro-batches, and a micro-batch of padding only is skipped (no
  compute): a step whose batch was padded with dropped groups' rows pays for its real rows."""
  denom = losses.agg_denominator(_policy_mask(minibatch), cfg.agg, cfg.loss_norm_tokens)
  if n_micro > 1:
    order = rows.blocks_first(minibatch["attention_mask"].sum(axis=1) == 0, n_micro)
    minibatch = jax.tree.map(lambda x: x[order], minibatch)
  micro = jax.tree.map(functools.partial(rows.split, n=n_micro, batch_axes=parallel.BATCH_AXES,
                                         mesh=mesh), minibatch)
  grad_fn = jax.value_and_grad(_micro_loss, has_aux=True)

  def run(carry, mb):
    g_acc, loss_acc, m_acc = carry
    (loss, m), g = grad_fn(params, mb, denom, graphdef, cfg)
    n = m["num_tokens"]
    new_m = {}
    for k, v in m.items():
      if k in _MIN_KEYS:
        new_m[k] = jnp.where(n > 0, jnp.minimum(m_acc[k], v), m_acc[k])
      elif k in _MAX_KEYS:
        new_m[k] = jnp.where(n > 0, jnp.maximum(m_acc[k], v), m_acc[k])
      elif k == "num_tokens":
        new_m[k] = m_acc[k] + n
      else:
        new_m[k] = m_acc[k] + v * n
    return (jax.tree.map(jnp.add, g_acc, g), loss_acc + loss, new_m)

  def body(carry, mb):
    return jax.lax.cond(mb["attention_mask"].sum() > 0, run, lambda c, _: c, carry, mb), None

  first = jax.tree.map(lambda x: x[0], micro)
  _, m_shape = jax.eval_shape(functools.partial(_micro_loss, graphdef=graphdef, cfg=cfg), params,
                              first, denom)
  big = jnp.finfo(jnp.float32).max
  m0 = {k: jnp.full((), big if k in _MIN_KEYS else -big if k in _MAX_KEYS else 0.0, jnp.float32)
        for k in m_shape}
  g0 = jax.tree.map(jnp.zeros_like, params)
  (grads, loss, m), _ = jax.lax.scan(body, (g0, jnp.float32(0.0), m0), micro)
  n = jnp.maximum(m["num_tokens"], 1.0)
  metrics = {k: (v if k in _MIN_KEYS + _MAX_KEYS + ("num_tokens",) else v / n)
             for k, v in m.items()}
  return grads, loss, metrics


def _logprobs_only(params, batch, graphdef, n_micro, mesh, temperature):
  """Log-probs [B, T] in micro-batches; padding rows gathered last, padding-only ones skipped
  (their log-probs are 0, as a padding row's are)."""
  pad_rows_b = batch["attention_mask"].sum(axis=1) == 0
  order = rows.blocks_first(pad_rows_b, n_micro)
  split = functools.partial(rows.split, n=n_micro, batch_axes=parallel.BATCH_AXES, mesh=mesh)
  micro = jax.tree.map(lambda x: split(x[order]), {
      "ids": batch["input_ids"], "mask": batch["attention_mask"], "needed": _policy_mask(batch)})

  def one(mb):
    return jax.lax.cond(
        mb["mask"].sum() > 0,
        lambda m: token_logprobs(graphdef, params, m["ids"], m["mask"], temperature,
                                 needed_bt=m["needed"])[0],
        lambda m: jnp.zeros(m["ids"].shape, jnp.float32), mb)

  lp = rows.unsplit(jax.lax.map(one, micro))
  return jnp.zeros_like(lp).at[order].set(lp)  # back to the batch's row order


def train_step(state: TrainState, batch: Mapping[str, jax.Array], *, graphdef,
               tx: optax.GradientTransformation, cfg: LearnerConfig,
               mesh: Mesh | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
  """One learner step over a rollout batch (see the module docstring). Pure."""
  batch = dict(batch)
  bsz = batch["input_ids"].shape[0]
  n_mini, _, micro = cfg.sizes(bsz)
  rng, shuffle_rng = jax.random.split(state.rng)
  one_update = n_mini == 1 and cfg.ppo_epochs == 1
  if losses.LOSSES[cfg.loss].needs_old_logprobs and "old_logprobs" not in batch and not one_update:
    old = _logprobs_only(state.params, batch, graphdef, bsz // micro, mesh, cfg.logprob_temperature)
    batch["old_logprobs"] = jax.lax.stop_gradient(old)

  def apply(carry, minibatch):
    params, opt_state = carry
    grads, loss, metrics = _accumulate(params, minibatch, graphdef, cfg,
                                       minibatch["input_ids"].shape[0] // micro, mesh)
    grad_norm = optax.global_norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                   skipped_updates=1.0 - ok.astype(jnp.float32), updates=jnp.float32(1.0))
    return (keep(new_params, params), keep(new_opt, opt_state)), metrics

  def update(carry, minibatch):
    # A minibatch made only of padding rows (the batch's rows are fixed at the step's maximum,
    # rollout/batching.py) is no update at all: no compute, no optimizer step, no metrics.
    big = jnp.finfo(jnp.float32).max
    empty = {k: jnp.full(v.shape, big if k in _MIN_KEYS else -big if k in _MAX_KEYS else 0.0,
                         v.dtype)
             for k, v in jax.eval_shape(apply, carry, minibatch)[1].items()}
    return jax.lax.cond(minibatch["attention_mask"].sum() > 0, apply,
                        lambda c, _: (c, empty), carry, minibatch)

  pad_rows_b = batch["attention_mask"].sum(axis=1) == 0

  def epoch(carry, epoch_rng):
    epoch_batch = batch
    if n_mini > 1:
      perm = rows.shuffle(epoch_rng, pad_rows_b, n_mini)
      epoch_batch = jax.tree.map(lambda x: x[perm], batch)
    minibatches = jax.tree.map(functools.partial(rows.split, n=n_mini), epoch_batch)
    return jax.lax.scan(update, carry, minibatches)

  carry, stacked = jax.lax.scan(epoch, (state.params, state.opt_state),
                                jax.random.split(shuffle_rng, cfg.ppo_epochs))
  out = {}
  n_updates = stacked["updates"].sum()
  for k, v in stacked.items():
    if k in _MIN_KEYS:
      out[k] = v.min()
    elif k in _MAX_KEYS:
      out[k] = v.max()
    elif k in ("skipped_updates", "num_tokens", "updates"):
      out[k] = v.sum()
    else:  # mean over the minibatches that were updates (skipped empty ones add 0)
      out[k] = v.sum() / jnp.maximum(n_updates, 1.0)
  metrics = {f"learner/{k}": v for k, v in out.items()}
  params, opt_state = carry
  new_state = TrainState(params=params, opt_state=opt_state, step=state.step + 1, rng=rng)
  return new_state, metrics


def make_train_step(spec: StateSpec, tx: optax.GradientTransformation, cfg: LearnerConfig,
                    mesh: Mesh):
  """train_step jitted once: state in/out on its shardings (donated), batch split over
  data x fsdp, metrics replicated."""
  dp = mesh.shape["data"] * mesh.shape["fsdp"]
  rows = cfg.micro_batch_size or cfg.minibatch_size
  if rows is not None and rows % dp:
    raise ValueError(f"micro_batch_size {rows} is not a multiple of data x fsdp = {dp}: every "
                     "micro-batch is split over those devices (raise micro_batch_size or shrink "
                     "the data/fsdp axes)")
  fn = functools.partial(train_step, graphdef=spec.graphdef, tx=tx, cfg=cfg, mesh=mesh)
  return jax.jit(fn, in_shardings=(spec.shardings, parallel.batch_sharding(mesh)),
                 out_shardings=(spec.shardings, parallel.replicated(mesh)), donate_argnums=0)


def make_logprobs_fn(spec: StateSpec, cfg: LearnerConfig, mesh: Mesh):
  """`(params, batch) -> logprobs [B, T]` of the tempered policy, jitted once, no gradient.

  For the reference policy of the KL penalty: `batch["ref_logprobs"] = fn(ref_params, batch)`
  with the frozen params the run started from; same micro-batching as `train_step`.
  """
  def fn(params, batch):
    bsz = batch["input_ids"].shape[0]
    micro = cfg.sizes(bsz)[2]
    return _logprobs_only(params, batch, spec.graphdef, bsz // micro, mesh, cfg.logprob_temperature)
  return jax.jit(fn, in_shardings=(spec.shardings.params, parallel.batch_sharding(mesh)))


_DTYPES = {"input_ids": np.int32, "attention_mask": np.int32, "loss_mask": np.int32,
           "advantages": np.float32, "sampler_logprobs": np.float32,
           "old_logprobs": np.float32, "ref_logprobs": np.float32}


def validate_batch(batch: Mapping[str, Any], loss: str = "policy") -> dict[str, np.ndarray]:
  """Host-side check of a batch dict; returns numpy arrays in the documented dtypes."""
  required = losses.get_loss(loss).batch_keys
  missing = [k for k in required if k not in batch]
  if missing:
    raise ValueError(f"batch is missing {missing} (loss={loss!r} needs {list(required)})")
  unknown = sorted(set(batch) - set(_DTYPES))
  if unknown:
    raise ValueError(f"batch has unknown keys {unknown}; known: {sorted(_DTYPES)}")
  out = {k: np.asarray(v, _DTYPES[k]) for k, v in batch.items()}
  if out["input_ids"].ndim != 2:
    raise ValueError(f"input_ids must be [B, T], got shape {out['input_ids'].shape}")
  b, t = out["input_ids"].shape
  for k, v in out.items():
    if v.shape != (b, t):
      raise ValueError(f"batch[{k!r}] has shape {v.shape}, expected {(b, t)}")
  if "advantages" in required and not np.all(np.isfinite(out["advantages"])):
    raise ValueError("batch['advantages'] contains NaN or inf")
  return out


def make_batch(batch: Mapping[str, Any], mesh: Mesh, loss: str = "policy") -> dict[str, jax.Array]:
  """Validates a global host batch (the same on every process) and places it on the mesh,
  rows split over data x fsdp; each process only materialises its own shards."""
  arrays = validate_batch(batch, loss)
  sharding = parallel.batch_sharding(mesh)
  return {k: jax.make_array_from_callback(v.shape, sharding, lambda idx, v=v: v[idx])
          for k, v in arrays.items()}
