"""Device mesh from config: axes (data, fsdp, tensor).

`data` replicates parameters and splits the batch; `fsdp` splits the batch *and* shards
parameters / optimizer state (ZeRO-3 style, gathered per layer by XLA); `tensor` shards matmul
dimensions (Megatron style). Which parameter dimension goes to which axis is decided by the
logical-axis rules (parallel/rules.py), not here.
"""

import dataclasses
import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

AXES = ("data", "fsdp", "tensor")
# Batch dimension of activations and of the learner batch: split over both data-parallel axes.
BATCH_AXES = ("data", "fsdp")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh shape (data, fsdp, tensor); one slot may be -1 = all remaining devices.

  Attributes:
    shape: sizes of the (data, fsdp, tensor) axes.
    rules: logical-axis rules, ((logical_name, mesh_axis | tuple of axes | None), ...).
  """

  shape: tuple[int, int, int] = (1, 1, 1)
  rules: tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    shape = tuple(int(s) for s in self.shape)
    if len(shape) != 3:
      raise ValueError(f"mesh.shape must have 3 entries (data, fsdp, tensor), got {self.shape}")
    if any(s == 0 or s < -1 for s in shape) or shape.count(-1) > 1:
      raise ValueError(f"mesh.shape entries must be positive, with at most one -1; got {shape}")
    object.__setattr__(self, "shape", shape)
    rules = tuple((str(k), _norm_axis(v)) for k, v in self.rules)
    object.__setattr__(self, "rules", rules)

  @classmethod
  def from_config(cls, mesh_cfg) -> "MeshConfig":
    """From the `config.mesh` section (ConfigDict or mapping with `shape` and `rules`)."""
    from synthagent_jax.parallel import rules as rules_lib  # pylint: disable=g-import-not-at-top
    get = mesh_cfg.get if hasattr(mesh_cfg, "get") else lambda k, d=None: getattr(mesh_cfg, k, d)
    return cls(shape=tuple(get("shape", (1, 1, 1))),
               rules=tuple(get("rules", None) or rules_lib.DEFAULT_RULES))

  def resolved_shape(self, num_devices: int) -> tuple[int, int, int]:
    """The shape with -1 filled in; raises if it does not use exactly `num_devices` devices."""
    known = math.prod(s for s in self.shape if s != -1)
    if -1 in self.shape:
      if num_devices % known:
        raise ValueError(f"mesh.shape {self.shape}: {num_devices} devices are not divisible by "
                         f"the fixed axes' product {known}")
      return tuple(num_devices // known if s == -1 else s for s in self.shape)
    if known != num_devices:
      raise ValueError(f"mesh.shape {self.shape} needs {known} devices, {num_devices} available "
                       "(use -1 in one slot to take all of them)")
    return self.shape


def _norm_axis(v):
  if v is None or isinstance(v, str):
    if v is not None and v not in AXES:
      raise ValueError(f"mesh rule target {v!r} is not a mesh axis {AXES}")
    return v
  v = tuple(v)
  bad = [a for a in v if a not in AXES]
  if bad:
    raise ValueError(f"mesh rule targets {bad} are not mesh axes {AXES}")
  return v


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A Mesh over `devices` (default: all global devices, across processes)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = cfg.resolved_shape(len(devices))
  try:
    from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
    grid = mesh_utils.create_device_mesh(shape, devices)
  except (ValueError, NotImplementedError, AssertionError):
    # Topology-aware placement is for TPU/GPU slices; plain order is right for CPU/simulated.
    grid = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(grid, AXES)
