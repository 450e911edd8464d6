"""Weight-sync export: `save_pretrained` (the old sync) vs `save_pretrained_streaming`, same run.

    python -m benchmarks.weight_sync [--dims=qwen_0_5b] [--rounds=2] [--json]
    python -m benchmarks.weight_sync --layers=4 --json          # a quicker, smaller model

Random weights at Qwen2.5-0.5B's dims (494M params, vocab 151,936, tied embeddings) sit on the
default device as fp32 jax arrays, as the learner holds them. Each round writes, into a fresh
temporary directory on local disk (page cache, no fsync: what a server on the same machine reads):
  old:      models.save_pretrained(model, dir): fp32, every tensor gathered into one host dict,
            then one safetensors file (what SGLangEngine.sync_weights did before issue 15);
  new_bf16: hf_export.save_pretrained_streaming(model, dir): bf16, tensor by tensor (the sync now);
  new_fp32: the same in fp32 (isolates the format change from the streaming).
Rounds alternate the variants so load from other processes hits all alike; medians are reported.
A first, separately reported round ("cold") includes compiling the per-shape device cast and
transpose of the streaming export, which a training run pays on its first sync only.
Bytes are the safetensors files' sizes on disk. Peak host memory (a separate untimed pass) is
the growth of the process's peak resident set during one export (Linux: VmHWM reset through
/proc/self/clear_refs before it), which also counts XLA's CPU buffers, e.g. the converted copy
of each tensor; tracemalloc's peak (numpy and Python allocations only) is reported beside it.
With --json the last line is a JSON object of the figures.
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import tracemalloc
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from synthagent_jax import models
from synthagent_jax.models import hf_export

DIMS = {
    "qwen_0_5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_layers=24,
                      num_heads=14, num_kv_heads=2),
    "tiny": dict(vocab_size=4096, hidden_size=128, intermediate_size=256, num_layers=4,
                 num_heads=4, num_kv_heads=2),
}


def random_model(cfg: models.ModelConfig, seed: int = 0) -> models.Qwen:
  """The model with uniform random fp32 weights filled on the host (XLA compiles a 0.5B
  initializer very slowly on a CPU), one tensor at a time, then placed on the default device."""
  graphdef, state = nnx.split(models.abstract_model(cfg))
  rng = np.random.default_rng(seed)
  leaves, treedef = jax.tree.flatten(state)
  filled = [jnp.asarray(rng.random(leaf.shape, dtype=np.float32) - 0.5) for leaf in leaves]
  return nnx.merge(graphdef, jax.tree.unflatten(treedef, filled))


def _dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)
             if f.endswith(".safetensors"))


def _status_kb(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise KeyError(field)


def peak_memory(fn: Callable[[], object]) -> tuple[int, int]:
  """(peak resident set growth, tracemalloc peak) in bytes while fn() runs."""
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current resident set
  before = _status_kb("VmRSS")
  tracemalloc.start()
  try:
    fn()
    traced = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  return (_status_kb("VmHWM") - before) * 1024, traced


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--dims", default="qwen_0_5b", choices=sorted(DIMS))
  ap.add_argument("--layers", type=int, default=0, help="override the layer count (0: keep)")
  ap.add_argument("--rounds", type=int, default=2)
  ap.add_argument("--no_memory", action="store_true", help="skip the tracemalloc pass")
  ap.add_argument("--dir", default=None, help="parent of the export directories (default: tmp)")
  ap.add_argument("--json", action="store_true", help="print a final JSON line of the figures")
  args = ap.parse_args()

  dims = dict(DIMS[args.dims])
  if args.layers:
    dims["num_layers"] = args.layers
  cfg = models.ModelConfig(family="qwen2", rope_theta=1e6, rms_norm_eps=1e-6,
                           tie_word_embeddings=True, **dims)
  t0 = time.perf_counter()
  model = random_model(cfg)
  n_params = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  print(f"{args.dims} ({dims['num_layers']} layers): {n_params / 1e6:.1f}M params, built in "
        f"{time.perf_counter() - t0:.1f}s on {jax.devices()[0].device_kind}", flush=True)

  variants = {
      "old": lambda path: models.save_pretrained(model, path),
      "new_bf16": lambda path: hf_export.save_pretrained_streaming(model, path),
      "new_fp32": lambda path: hf_export.save_pretrained_streaming(model, path, dtype="float32"),
  }
  parent = tempfile.mkdtemp(prefix="weight_sync_", dir=args.dir)
  seconds = {k: [] for k in variants}
  nbytes = {}
  try:
    cold = {}
    for r in range(-1, args.rounds):
      for name, export in variants.items():
        path = os.path.join(parent, name)
        shutil.rmtree(path, ignore_errors=True)
        start = time.perf_counter()
        export(path)
        took = time.perf_counter() - start
        (seconds[name].append(took) if r >= 0 else cold.__setitem__(name, took))
        nbytes[name] = _dir_bytes(path)
        print(f"round {'cold' if r < 0 else r}: {name:9s} {nbytes[name] / 1e9:.3f} GB in "
              f"{took:.2f}s", flush=True)
        shutil.rmtree(path, ignore_errors=True)
    peak = {}
    if not args.no_memory:
      for name, export in variants.items():
        path = os.path.join(parent, name)
        try:
          peak[name] = peak_memory(lambda: export(path))  # pylint: disable=cell-var-from-loop
        finally:
          shutil.rmtree(path, ignore_errors=True)
        print(f"peak host memory: {name:9s} resident +{peak[name][0] / 1e9:.3f} GB, "
              f"tracemalloc {peak[name][1] / 1e9:.3f} GB", flush=True)
  finally:
    shutil.rmtree(parent, ignore_errors=True)

  med = {k: statistics.median(v) for k, v in seconds.items()}
  largest = max(p.nbytes for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  figures = {
      "dims": args.dims, "num_layers": dims["num_layers"], "params": int(n_params),
      "rounds": args.rounds, "device": jax.devices()[0].device_kind,
      "old_bytes": nbytes["old"], "new_bytes": nbytes["new_bf16"],
      "new_fp32_bytes": nbytes["new_fp32"],
      "old_s": round(med["old"], 3), "new_s": round(med["new_bf16"], 3),
      "new_fp32_s": round(med["new_fp32"], 3),
      "old_cold_s": round(cold["old"], 3), "new_cold_s": round(cold["new_bf16"], 3),
      "bytes_ratio": round(nbytes["new_bf16"] / nbytes["old"], 4),
      "seconds_ratio": round(med["new_bf16"] / med["old"], 4),
      "new_gb_per_s": round(nbytes["new_bf16"] / med["new_bf16"] / 1e9, 3),
      "largest_tensor_bytes": int(largest),
  }
  if peak:
    for key, name in (("old", "old"), ("new", "new_bf16"), ("new_fp32", "new_fp32")):
      figures[f"{key}_peak_rss_bytes"], figures[f"{key}_peak_traced_bytes"] = peak[name]
  print(f"new/old: bytes x{figures['bytes_ratio']}, seconds x{figures['seconds_ratio']}")
  if args.json:
    print(json.dumps(figures))


if __name__ == "__main__":
  main()
