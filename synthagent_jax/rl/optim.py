"""Optimizer from config: AdamW + linear warmup + constant/cosine schedule + global-norm clip."""

import dataclasses

import jax
import optax

SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW settings (the `config.optim` section).

  Attributes:
    lr: peak learning rate.
    warmup_steps: optimizer updates of linear warmup from 0 to `lr`.
    schedule: "constant" (hold `lr` after warmup) or "cosine" (decay to lr * end_lr_frac).
    total_steps: optimizer updates the cosine schedule spans (warmup included); cosine only.
    end_lr_frac: final learning rate of the cosine schedule as a fraction of `lr`.
    weight_decay: decoupled weight decay, applied to matrices only (not norms / biases).
    b1, b2, eps: Adam moments.
    clip_norm: global gradient-norm clip; 0 disables clipping.
  """

  lr: float = 1e-6
  warmup_steps: int = 0
  schedule: str = "constant"
  total_steps: int | None = None
  end_lr_frac: float = 0.0
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  clip_norm: float = 1.0

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
    if not self.lr > 0:
      raise ValueError(f"optim.lr must be > 0, got {self.lr}")
    if self.warmup_steps < 0:
      raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
    if self.schedule == "cosine":
      if self.total_steps is None or self.total_steps <= self.warmup_steps:
        raise ValueError("optim.schedule='cosine' needs total_steps > warmup_steps, got "
                         f"total_steps={self.total_steps}, warmup_steps={self.warmup_steps}")
    if not 0.0 <= self.end_lr_frac <= 1.0:
      raise ValueError(f"optim.end_lr_frac must be in [0, 1], got {self.end_lr_frac}")
    for name in ("weight_decay", "clip_norm", "eps"):
      if not getattr(self, name) >= 0:
        raise ValueError(f"optim.{name} must be >= 0, got {getattr(self, name)}")
    if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
      raise ValueError(f"optim.b1/b2 must be in [0, 1), got {self.b1}, {self.b2}")

  @classmethod
  def from_config(cls, optim_cfg, **overrides) -> "OptimConfig":
    """From `config.optim` (keys named like the fields; unknown keys are refused)."""
    d = dict(optim_cfg.items() if hasattr(optim_cfg, "items") else optim_cfg)
    d.update(overrides)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"config.optim: unknown keys {unknown}; known: {sorted(names)}")
    return cls(**d)


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
  """Learning rate as a function of the optimizer-update count."""
  if cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.lr, warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.total_steps, end_value=cfg.lr * cfg.end_lr_frac)
  if cfg.warmup_steps == 0:
    return optax.constant_schedule(cfg.lr)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps), optax.constant_schedule(cfg.lr)],
      [cfg.warmup_steps])


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
  parts = []
  if cfg.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(cfg.clip_norm))
  parts.append(optax.adamw(make_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay, mask=_decay_mask))
  return optax.chain(*parts)
