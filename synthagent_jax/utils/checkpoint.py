"""Checkpoints: an orbax CheckpointManager holding a training state pytree, the data iterator's
JSON state and the run config, saved asynchronously, keeping the last N steps.

Layout: <directory>/<step>/{state,data,config}/. `state` is any pytree of jax arrays (the
learner's TrainState: params, optimizer state, step, rng); it is restored onto whatever mesh and
shardings the caller's abstract state names, so a run can resume on a different topology.

    ckpt = Checkpointer(workdir / "checkpoints", keep=3)
    ckpt.save(step, state, data_state=loader.get_state(), config=config.to_dict())
    ...
    step = ckpt.latest_step()
    if step is not None:
      state, data_state, config = ckpt.restore(step, abstract_state=spec.abstract)
"""

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def _jsonable(obj: Any, what: str) -> Any:
  if obj is None:
    return {}
  if hasattr(obj, "to_dict"):
    obj = obj.to_dict()
  try:
    return json.loads(json.dumps(obj))
  except (TypeError, ValueError) as e:
    raise ValueError(f"checkpoint {what} must be JSON-serialisable: {e}") from e


class Checkpointer:
  """Async orbax checkpoints of (state, data-iterator state, config) with keep-last-N."""

  def __init__(self, directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True):
    if keep < 1:
      raise ValueError(f"keep must be >= 1, got {keep}")
    self.directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "data", "config"))

  def save(self, step: int, state: Any, data_state: Any = None, *, config: Any = None,
           force: bool = False) -> bool:
    """Starts saving `state` at `step` (returns before the write finishes when async).

    Args:
      step: the training step the state is *after*.
      state: pytree of jax arrays.
      data_state: JSON-serialisable state of the data iterator (e.g. grain's get_state()).
      config: dict, ConfigDict (anything with to_dict) or None.
      force: save even if a checkpoint for `step` is pending or exists (overwrites policy).

    Returns:
      Whether a save was started.
    """
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(_jsonable(data_state, "data_state")),
        config=ocp.args.JsonSave(_jsonable(config, "config")))
    return self._manager.save(int(step), args=args, force=force)

  def restore(self, step: int | None = None, abstract_state: Any = None) -> tuple[Any, Any, Any]:
    """(state, data_state, config) of `step` (default: the latest).

    Args:
      step: which checkpoint; None for the latest.
      abstract_state: pytree like the saved state with jax.ShapeDtypeStruct leaves carrying the
        target shardings, or an object with such a tree as `.abstract` (rl.state.StateSpec);
        arrays are placed accordingly.

    Raises:
      FileNotFoundError: there is no checkpoint (at that step).
    """
    if abstract_state is None:
      raise ValueError("restore needs abstract_state (the target shapes, dtypes and shardings)")
    self._manager.wait_until_finished()
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"no checkpoint in {self.directory}")
    if step not in self.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; "
                              f"have {self.all_steps()}")
    abstract_state = getattr(abstract_state, "abstract", abstract_state)
    out = self._manager.restore(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
        config=ocp.args.JsonRestore()))
    return out.state, out.data, out.config

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def wait_until_finished(self) -> None:
    """Blocks until pending async saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a concrete pytree: a restore target for it."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
