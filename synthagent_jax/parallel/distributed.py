"""Multi-host start-up (`jax.distributed.initialize`) and process-0-only helpers.

One process per host runs the same program (JAX's multi-controller model). Coordinates come from
the config (`mesh.coordinator_address`, `mesh.num_processes`, `mesh.process_id`) or, when the
config leaves them empty, from the environment variables JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID. `coordinator_address="auto"` lets JAX detect a cluster
(SLURM, Cloud TPU, Open MPI) on its own.
"""

import dataclasses
import logging
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """Where this process sits among the processes of one run.

  Attributes:
    coordinator_address: "host:port" of process 0, "auto", or "" for a single process.
    num_processes: total processes (hosts).
    process_id: this process's index in [0, num_processes).
    local_device_ids: devices this process drives (None: all visible).
    initialization_timeout_s: how long to wait for every process to join.
  """

  coordinator_address: str = ""
  num_processes: int = 1
  process_id: int = 0
  local_device_ids: tuple[int, ...] | None = None
  initialization_timeout_s: int = 300

  def __post_init__(self):
    if self.num_processes < 1:
      raise ValueError(f"num_processes must be >= 1, got {self.num_processes}")
    if not 0 <= self.process_id < self.num_processes:
      raise ValueError(f"process_id must be in [0, {self.num_processes}), got {self.process_id}")
    if self.num_processes > 1 and not self.coordinator_address:
      raise ValueError("num_processes > 1 needs a coordinator_address (host:port of process 0)")
    if self.initialization_timeout_s <= 0:
      raise ValueError("initialization_timeout_s must be > 0")

  @property
  def multi_process(self) -> bool:
    return bool(self.coordinator_address)

  @classmethod
  def from_config(cls, mesh_cfg=None, environ=None) -> "DistributedConfig":
    """From `config.mesh` (coordinator_address, num_processes, process_id), then the environment."""
    environ = os.environ if environ is None else environ
    get = (lambda k, d: mesh_cfg.get(k, d)) if mesh_cfg is not None else (lambda k, d: d)
    address = get("coordinator_address", "") or environ.get("JAX_COORDINATOR_ADDRESS", "")
    num = int(get("num_processes", 1))
    pid = int(get("process_id", 0))
    if num == 1 and "JAX_NUM_PROCESSES" in environ:
      num = int(environ["JAX_NUM_PROCESSES"])
    if pid == 0 and "JAX_PROCESS_ID" in environ:
      pid = int(environ["JAX_PROCESS_ID"])
    return cls(coordinator_address=address, num_processes=num, process_id=pid)


_initialized = False


def initialize(cfg: DistributedConfig) -> bool:
  """Joins the multi-process runtime when configured; a no-op for one process.

  Must run before anything touches a JAX device. Returns True when the runtime was initialized.
  """
  global _initialized
  if not cfg.multi_process or _initialized:
    return _initialized
  if cfg.coordinator_address == "auto":
    jax.distributed.initialize(initialization_timeout=cfg.initialization_timeout_s)
  else:
    jax.distributed.initialize(
        coordinator_address=cfg.coordinator_address, num_processes=cfg.num_processes,
        process_id=cfg.process_id,
        local_device_ids=list(cfg.local_device_ids) if cfg.local_device_ids else None,
        initialization_timeout=cfg.initialization_timeout_s)
  _initialized = True
  _log.info("process %d/%d joined: %d local / %d global devices", jax.process_index(),
            jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def is_process0() -> bool:
  return jax.process_index() == 0


def process0_print(*args, **kwargs) -> None:
  """print() on process 0 only (logs, plans and metrics come out once, not once per host)."""
  if is_process0():
    print(*args, **kwargs)


def broadcast_from_process0(tree):
  """Process 0's value of `tree` (host numpy arrays / scalars) on every process.

  Every process must call it with a tree of the same structure, shapes and dtypes (the other
  processes' values are ignored). One process: returned unchanged.
  """
  if jax.process_count() == 1:
    return tree
  out = multihost_utils.broadcast_one_to_all(tree)
  return jax.tree.map(np.asarray, out)


def gather_to_host(tree):
  """The global values of a tree of (possibly multi-process) sharded arrays, as host numpy
  arrays on every process (a collective: every process must call it). One process: the tree
  unchanged, still on device."""
  if jax.process_count() == 1:
    return tree
  return multihost_utils.process_allgather(tree, tiled=True)
