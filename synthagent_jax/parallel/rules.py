"""Logical-axis rules: parameter dimension names -> mesh axes -> NamedSharding.

A model names each parameter dimension with a logical axis (vocab, embed, mlp, heads, kv_heads,
head_dim). A rules table maps a logical name to a mesh axis, a tuple of mesh axes, or None
(replicated). Two guards keep every table valid on every mesh:
  * a mesh axis already used by an earlier dimension of the same array is not reused (an axis can
    shard only one dimension); the later dimension is replicated;
  * a dimension whose size is not divisible by the mesh axes' product is replicated (e.g. 2 KV
    heads on tensor=4). `spec_report` lists such fallbacks so a plan can show them.
"""

from typing import Any, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# FSDP on the model width, tensor parallelism on heads / MLP / vocab.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
)


def _axes_of(target) -> tuple[str, ...]:
  if target is None:
    return ()
  return (target,) if isinstance(target, str) else tuple(target)


def logical_to_spec(logical_axes: Sequence[str | None], rules, shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None) -> tuple[PartitionSpec, list[str]]:
  """PartitionSpec for one array, plus notes on dimensions that fell back to replication.

  Args:
    logical_axes: one logical name (or None) per array dimension.
    rules: ((logical_name, target), ...); every non-None name must appear.
    shape, mesh: when given, dimensions not divisible by their mesh axes are replicated.

  Raises:
    ValueError: a logical name with no rule, or a rank mismatch with `shape`.
  """
  table = dict(rules)
  if shape is not None and len(shape) != len(logical_axes):
    raise ValueError(f"logical axes {tuple(logical_axes)} do not match array shape {tuple(shape)}")
  used: set[str] = set()
  spec, notes = [], []
  for dim, name in enumerate(logical_axes):
    if name is None:
      spec.append(None)
      continue
    if name not in table:
      raise ValueError(f"logical axis {name!r} has no rule; rules cover {sorted(table)}")
    axes = tuple(a for a in _axes_of(table[name]) if a not in used)
    if axes and mesh is not None:
      axes = tuple(a for a in axes if mesh.shape[a] > 1)
    if axes and shape is not None and mesh is not None:
      size = 1
      for a in axes:
        size *= mesh.shape[a]
      if shape[dim] % size:
        notes.append(f"{name}={shape[dim]} not divisible by {axes} (size {size}): replicated")
        axes = ()
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*spec), notes


def _is_axes_leaf(x) -> bool:
  return isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x)


def tree_shardings(logical_tree, abstract_tree, mesh: Mesh, rules):
  """NamedSharding tree for `abstract_tree` (arrays / ShapeDtypeStructs) from its logical axes.

  `logical_tree` has the same structure, with a tuple of logical names (or None) per leaf.
  """
  def one(axes, leaf):
    spec, _ = logical_to_spec(axes, rules, leaf.shape, mesh)
    return NamedSharding(mesh, spec)
  return jax.tree.map(one, logical_tree, abstract_tree, is_leaf=_is_axes_leaf)


def spec_report(logical_tree, abstract_tree, mesh: Mesh, rules) -> list[str]:
  """Human-readable notes on every replication fallback in a parameter tree."""
  notes = []
  flat_axes, _ = jax.tree_util.tree_flatten_with_path(logical_tree, is_leaf=_is_axes_leaf)
  flat_arrays = jax.tree.leaves(abstract_tree)
  for (path, axes), leaf in zip(flat_axes, flat_arrays):
    _, n = logical_to_spec(axes, rules, leaf.shape, mesh)
    notes.extend(f"{jax.tree_util.keystr(path)}: {x}" for x in n)
  return notes


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, batch_axes=("data", "fsdp")) -> NamedSharding:
  """Sharding of arrays whose leading dimension is the batch: split over data x fsdp."""
  return NamedSharding(mesh, PartitionSpec(batch_axes))
