"""Memory plan of a training config on its mesh, without weights.

    python -m launch.plan --config=configs/qwen_3b.py
    python -m launch.plan --config=configs/qwen_3b.py --config.mesh.shape="(1,8,1)" --devices=8

    python -m launch.train --config=configs/qwen_3b.py --dry_run --plan_json=plan.json

Builds the TrainState abstractly (jax.eval_shape) on the configured mesh (simulated CPU devices
when --devices is given) and prints the parameter count and the bytes each device holds for
parameters, optimizer state, gradients, the KL reference's params (kl_coef > 0), an activation
estimate of one micro-batch (with the configured attention and the learner's blocked log-probs),
the in-process sampler's KV cache (engine.kind=jax; with several processes also the driver's own
params copy) and the share reserved for co-located SGLang servers (engine.mem_fraction of
mesh.device_memory_gib). A plan whose total exceeds `mesh.device_memory_gib` (0 = unchecked) is
refused: `check_fits` raises, `--dry_run` and `launch.plan` exit non-zero naming the largest
parts; `launch.train` checks one-process runs before any work and multi-process runs once joined
(`train_loop.train`, on the global mesh).

Model dims come from `config.model.checkpoint`'s config.json when that is set and
model.from_scratch is not (only config.json is read), else from config.model's dims (hidden_size,
..., and vocab_size, or the tokenizer's vocabulary when vocab_size is 0): the ModelConfig the run
builds (models.ModelConfig.from_config).
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def model_config(config):
  """ModelConfig for the plan (models.ModelConfig.from_config): checkpoint config.json, else
  config.model's dims; the tokenizer is read only for its size when model.vocab_size is 0."""
  from synthagent_jax import models  # pylint: disable=g-import-not-at-top
  m = config.model
  tok = None
  if not m.get("vocab_size", 0) and (m.get("from_scratch", False) or not m.get("checkpoint", "")):
    path = config.get("tokenizer", "") or m.get("checkpoint", "")
    if not path:
      raise ValueError("the plan needs model dims: set --config.model.checkpoint=DIR (only its "
                       "config.json is read) or config.model.vocab_size and the other dims")
    import transformers  # pylint: disable=g-import-not-at-top
    tok = transformers.AutoTokenizer.from_pretrained(path)
  return models.ModelConfig.from_config(m, tok)


def _device_bytes(abstract_tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings (the largest shard)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  total = 0
  for leaf in jax.tree.leaves(abstract_tree):
    shard = leaf.sharding.shard_shape(leaf.shape)
    total += int(np.prod(shard, dtype=np.int64)) * leaf.dtype.itemsize
  return total


def activation_bytes(model_cfg, mesh_shape, micro_batch_size: int, seq_len: int) -> int:
  """Rough per-device activation bytes of one micro-batch's forward + backward.

  Sequences split over data x fsdp, heads / MLP / vocab over tensor. Saved per layer: the layer
  input only under remat "full"; otherwise ~10 D-wide and 3 F-wide tensors per token plus the
  attention's own residuals. Add one layer's working set (recomputed under remat) and the LM
  head's. Attention working set: "naive" float32 scores and probabilities [H, T, T]; "chunked"
  ~3 float32 [H, T, attention_chunk] blocks plus the float32 accumulator and log-normaliser;
  "xla" counted like "chunked" (cuDNN flash on GPU; elsewhere XLA materialises [H, T, T]).
  LM head: ~3 float32 [rows, logprob_chunk, V] blocks (learner.head_logprobs: logits,
  probabilities and their gradient; measured by benchmarks/logprob_memory) plus the final hidden
  states and float32 log-normalisers.
  """
  data, fsdp, tensor = mesh_shape
  rows = max(1, -(-micro_batch_size // (data * fsdp)))
  tokens = rows * seq_len
  c = _BYTES[model_cfg.dtype]
  d, f = model_cfg.hidden_size, model_cfg.intermediate_size // tensor
  heads = max(1, model_cfg.num_heads // tensor)
  attention = getattr(model_cfg, "attention", "naive")
  if attention == "naive":
    attn = 2 * rows * heads * seq_len * seq_len * 4
  else:
    block = min(getattr(model_cfg, "attention_chunk", seq_len), seq_len)
    attn = 3 * rows * heads * seq_len * block * 4 + tokens * heads * (model_cfg.head_dim + 2) * 4
  layer_full = tokens * (10 * d + 3 * f) * c + attn
  saved = tokens * d * c if model_cfg.remat == "full" else layer_full
  vocab = -(-model_cfg.vocab_size // tensor)
  chunk = min(getattr(model_cfg, "logprob_chunk", seq_len), seq_len)
  head = 3 * rows * chunk * vocab * 4 + tokens * (d * c + 4)
  return model_cfg.num_layers * saved + layer_full + head


def sampler_kv_bytes(model_cfg, config) -> int:
  """Bytes of the in-process sampler's KV cache for one rollout round (engine.kind=jax): every
  episode of the step in one batch (rows rounded up to a power of two, prompt slots to
  `sampler.prompt_bucket`, as the sampler buckets them), keys and values of every layer in the
  compute dtype, not sharded (the cache is created inside the sampler's jit without a
  sharding), with engine.decode_stages > 1 also the smaller stages' copies
  (decode.stage_sizes), plus the prefix cache's default budget
  (inference.sampler.JaxEngine keeps earlier turns' caches for KV reuse)."""
  from synthagent_jax.inference import decode  # pylint: disable=g-import-not-at-top
  from synthagent_jax.inference import sampler  # pylint: disable=g-import-not-at-top
  if config.engine.get("kind", "jax") != "jax":
    return 0
  batch = sampler.bucket(config.rl.tasks_per_step * config.rl.num_generations)
  rows = sum(decode.stage_sizes(batch, int(config.engine.get("decode_stages", 1))))
  slots = sampler.prompt_bucket(config.rollout.max_total_tokens,
                               fine_above=sampler.Buckets().prompt_fine_above) + sampler.bucket(
      config.rollout.max_new_tokens)
  per_slot = 2 * model_cfg.num_layers * model_cfg.num_kv_heads * model_cfg.head_dim
  prefix_default = 1 << 30  # JaxEngine(prefix_cache_bytes=...) default
  return rows * slots * per_slot * _BYTES[model_cfg.dtype] + prefix_default


class PlanError(ValueError):
  """The config's memory plan does not fit `mesh.device_memory_gib`."""


def engine_params_bytes(config, params_total_bytes: int, mesh) -> int:
  """Bytes per device of the driver's own copy of the params in a multi-process run with the
  in-process sampler (`rl.state.process_local_params`: gathered from every process and sharded
  over process 0's local devices only); 0 otherwise (one process reads the learner's params)."""
  processes = int(config.mesh.get("num_processes", 1) or 1)
  if config.engine.get("kind", "jax") != "jax" or processes <= 1:
    return 0
  local = max(1, mesh.devices.size // processes)
  return -(-params_total_bytes // local)


def plan(config, mesh=None) -> dict:
  """The memory plan of `config` as a dict (see module docstring); allocates no weights.

  `mesh`: the run's own mesh (a multi-process run checks its plan after joining, on its global
  mesh); None builds one from config.mesh on the visible devices."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from synthagent_jax import parallel  # pylint: disable=g-import-not-at-top
  from synthagent_jax.rl import optim  # pylint: disable=g-import-not-at-top
  from synthagent_jax.rl import state as state_lib  # pylint: disable=g-import-not-at-top

  model_cfg = model_config(config)
  mesh_cfg = parallel.MeshConfig.from_config(config.mesh)
  mesh = mesh if mesh is not None else parallel.make_mesh(mesh_cfg)
  optim_cfg = optim.OptimConfig.from_config(config.optim, schedule="constant")
  tx = optim.make_optimizer(optim_cfg)
  spec = state_lib.plan_state(model_cfg, tx, mesh, mesh_cfg.rules, config.get("seed", 0))
  n_params = sum(int(np.prod(x.shape, dtype=np.int64))
                 for x in jax.tree.leaves(spec.abstract.params))
  params_total_b = sum(int(np.prod(x.shape, dtype=np.int64)) * x.dtype.itemsize
                       for x in jax.tree.leaves(spec.abstract.params))
  params_b = _device_bytes(spec.abstract.params)
  opt_b = _device_bytes(spec.abstract.opt_state)
  seq_len = config.rollout.max_total_tokens
  micro = config.rl.micro_batch_size
  act_b = activation_bytes(model_cfg, tuple(mesh.devices.shape), micro, seq_len)
  notes = list(spec.notes)
  dp = mesh.shape["data"] * mesh.shape["fsdp"]
  if micro % dp:
    notes.append(f"rl.micro_batch_size={micro} is not a multiple of data x fsdp = {dp}: "
                 "rl.learner.make_train_step will refuse it")
  ref_b = params_b if config.rl.get("kl_coef", 0.0) > 0 else 0
  kv_b = sampler_kv_bytes(model_cfg, config)
  device_gib = float(config.mesh.get("device_memory_gib", 0.0))
  mem_fraction = float(config.engine.get("mem_fraction", 0.0))
  if not 0.0 <= mem_fraction < 1.0:
    raise ValueError(f"engine.mem_fraction must be in [0, 1), got {mem_fraction}")
  if mem_fraction and not device_gib:
    raise ValueError("engine.mem_fraction needs mesh.device_memory_gib (the share is of that)")
  sglang_b = int(mem_fraction * device_gib * 2**30)
  engine_b = engine_params_bytes(config, params_total_b, mesh)
  total = 2 * params_b + opt_b + act_b + ref_b + kv_b + sglang_b + engine_b
  return {
      "model": model_cfg, "mesh_shape": dict(zip(mesh.axis_names, mesh.devices.shape)),
      "num_devices": mesh.devices.size, "num_params": n_params,
      "params_bytes_per_device": params_b, "opt_state_bytes_per_device": opt_b,
      "grads_bytes_per_device": params_b, "activation_bytes_per_device": act_b,
      "ref_params_bytes_per_device": ref_b, "sampler_kv_bytes_per_device": kv_b,
      "sglang_reserved_bytes_per_device": sglang_b, "engine_params_bytes_per_device": engine_b,
      "total_bytes_per_device": total, "device_memory_bytes": int(device_gib * 2**30),
      "fits": (not device_gib) or total <= device_gib * 2**30,
      "micro_batch_size": micro, "seq_len": seq_len, "notes": notes,
  }


_PARTS = (("params", "params_bytes_per_device"), ("optimizer state", "opt_state_bytes_per_device"),
          ("gradients", "grads_bytes_per_device"), ("activations", "activation_bytes_per_device"),
          ("KL reference params", "ref_params_bytes_per_device"),
          ("sampler KV cache", "sampler_kv_bytes_per_device"),
          ("SGLang share", "sglang_reserved_bytes_per_device"),
          ("sampler's params copy", "engine_params_bytes_per_device"))


def check_fits(p: dict) -> None:
  """Raises PlanError, naming the largest parts, when the plan exceeds the device memory."""
  if p["fits"]:
    return
  parts = sorted(((p[k], name) for name, k in _PARTS), reverse=True)[:3]
  raise PlanError(
      f"the plan needs {p['total_bytes_per_device'] / 2**30:.1f} GiB per device but "
      f"mesh.device_memory_gib is {p['device_memory_bytes'] / 2**30:.1f} GiB; largest parts: "
      + ", ".join(f"{name} {b / 2**30:.1f} GiB" for b, name in parts)
      + " (shrink rl.micro_batch_size, use model.remat=full, model.attention=chunked, a smaller "
        "model.logprob_chunk, more fsdp devices, or a smaller engine.mem_fraction)")


def to_json(p: dict) -> dict:
  """The plan as JSON-ready values (the ModelConfig as a dict)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  return dict(p, model=dataclasses.asdict(p["model"]))


def _gib(n: int) -> str:
  return f"{n / 2**30:8.3f} GiB"


def format_plan(p: dict) -> str:
  m = p["model"]
  lines = [
      f"model: {m.family} L={m.num_layers} D={m.hidden_size} F={m.intermediate_size} "
      f"H={m.num_heads} K={m.num_kv_heads} Dh={m.head_dim} V={m.vocab_size} "
      f"compute={m.dtype} remat={m.remat}",
      f"mesh: {p['mesh_shape']} ({p['num_devices']} devices)",
      f"parameters: {p['num_params']:,} ({p['num_params'] / 1e9:.3f} B)",
      "per device:",
      f"  params (fp32)      {_gib(p['params_bytes_per_device'])}",
      f"  optimizer state    {_gib(p['opt_state_bytes_per_device'])}",
      f"  gradients (fp32)   {_gib(p['grads_bytes_per_device'])}",
      f"  activations (est.) {_gib(p['activation_bytes_per_device'])}   "
      f"(micro-batch {p['micro_batch_size']} x {p['seq_len']} tokens, attention={m.attention}, "
      f"logprob_chunk={m.logprob_chunk})",
      f"  KL reference       {_gib(p['ref_params_bytes_per_device'])}",
      f"  sampler KV cache   {_gib(p['sampler_kv_bytes_per_device'])}",
      f"  SGLang share       {_gib(p['sglang_reserved_bytes_per_device'])}",
      f"  sampler's params   {_gib(p['engine_params_bytes_per_device'])}   (multi-process "
      "jax engine: process 0's own copy)",
      f"  total (est.)       {_gib(p['total_bytes_per_device'])}",
  ]
  if p["device_memory_bytes"]:
    lines.append(f"  device memory      {_gib(p['device_memory_bytes'])}   "
                 f"({'fits' if p['fits'] else 'DOES NOT FIT'})")
  lines += [f"note: {n}" for n in p["notes"]]
  return "\n".join(lines)


def print_plan(config, json_path: str | None = None) -> dict:
  """Prints the plan (process 0 only), writes it to `json_path` when given, and returns it;
  raises PlanError (after printing) when it does not fit. `launch.train --dry_run` calls this."""
  _simulate_devices(config, 0)
  import json  # pylint: disable=g-import-not-at-top
  from synthagent_jax import parallel  # pylint: disable=g-import-not-at-top
  p = plan(config)
  parallel.process0_print(format_plan(p), flush=True)
  if json_path:
    with open(json_path, "w") as f:
      json.dump(to_json(p), f, indent=1)
  check_fits(p)
  return p


def _simulate_devices(config, requested: int) -> None:
  """Sets XLA_FLAGS for simulated CPU devices (the plan is shape arithmetic, so CPU stand-ins
  give the same per-device bytes); has no effect once jax has initialised a backend."""
  shape = tuple(config.mesh.shape)
  n = requested or (abs(int(shape[0] * shape[1] * shape[2])) if -1 not in shape else 0)
  if n > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={n}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _define_flags():
  """Flags of `python -m launch.plan` only: importing this module (launch.train --dry_run does)
  must not define a second --config."""
  global _CONFIG, _DEVICES  # pylint: disable=global-statement
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Config file with get_config().",
                                            lock_config=True)
  _DEVICES = flags.DEFINE_integer(
      "devices", 0, "Simulate this many CPU devices (0: the real ones, or the mesh's size when "
      "the real ones are too few).")
  flags.DEFINE_string("plan_json", None, "Also write the plan as JSON to this file.")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  _simulate_devices(config, _DEVICES.value)
  try:
    print_plan(config, flags.FLAGS.plan_json)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  _define_flags()
  flags.mark_flag_as_required("config")
  app.run(main)
