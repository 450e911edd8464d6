"""Decode throughput of our JaxEngine vs transformers' generate (torch), same model + batch + device.

    python -m benchmarks.sampler_throughput --models=tiny,qwen_0_5b --batch=16 --new_tokens=128
    python -m benchmarks.sampler_throughput --models=qwen_0_5b --dtype=bfloat16   # on a GPU

Both sides run on the same kind of device: torch on CUDA when torch sees a GPU (else CPU), JAX on
its default backend (GPU when jax[cuda] is installed); the devices used are printed.

One random-weight Qwen2 checkpoint per model size is written by transformers, loaded by both
sides (ours through models.from_pretrained), and both decode greedily `batch` prompts of
`prompt_len` tokens for exactly `new_tokens` tokens (no stop token). Each side runs once to warm
up (our jit compile, torch's allocator), then `repeats` timed runs; tokens/s = batch * new_tokens /
wall seconds (prefill included on both sides). Also reports how many greedy tokens agree.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

SIZES = {
    # hidden, layers, heads, kv heads, intermediate, vocab, tied
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=128, vocab_size=4096),
    "qwen_0_5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2, intermediate_size=4864, vocab_size=151936),
}


def _write_checkpoint(size: str, layers: int | None, path: str) -> dict:
  import torch
  import transformers

  kwargs = dict(SIZES[size], tie_word_embeddings=True, max_position_embeddings=4096,
                rope_theta=1000000.0, rms_norm_eps=1e-6)
  if layers:
    kwargs["num_hidden_layers"] = layers
  config = transformers.Qwen2Config(**kwargs)
  torch.manual_seed(0)
  model = transformers.Qwen2ForCausalLM(config).to(torch.float32).eval()
  model.save_pretrained(path)
  return kwargs


def _torch_device():
  import torch
  return "cuda" if torch.cuda.is_available() else "cpu"


def _time_hf(path, prompts_bp, new_tokens, repeats, dtype):
  import torch
  import transformers

  torch.set_num_threads(os.cpu_count() or 1)
  device = _torch_device()
  model = transformers.AutoModelForCausalLM.from_pretrained(
      path, dtype=getattr(torch, dtype)).to(device).eval()
  ids = torch.as_tensor(prompts_bp, dtype=torch.long, device=device)

  def run():
    with torch.no_grad():
      return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                            max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                            do_sample=False, num_beams=1, eos_token_id=None, pad_token_id=0,
                            temperature=None, top_p=None, top_k=None)

  run()
  times, out = [], None
  for _ in range(repeats):
    start = time.perf_counter()
    out = run().cpu()  # waits for the device
    times.append(time.perf_counter() - start)
  return times, out[:, prompts_bp.shape[1]:].numpy()


def _time_ours(path, prompts_bp, new_tokens, repeats, dtype):
  from synthagent_jax import models
  from synthagent_jax.inference import engine as engine_lib
  from synthagent_jax.inference import sampler

  model = models.from_pretrained(path, dtype=dtype, param_dtype=dtype)
  eng = sampler.JaxEngine(model)
  sp = engine_lib.SamplingParams(max_new_tokens=new_tokens, temperature=0.0)
  prompts = prompts_bp.tolist()
  start = time.perf_counter()
  eng.generate(prompts, sp)
  compile_s = time.perf_counter() - start
  times, out = [], None
  for _ in range(repeats):
    start = time.perf_counter()
    out = eng.generate(prompts, sp)
    times.append(time.perf_counter() - start)
  return times, np.array([c.token_ids for c in out]), compile_s


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="tiny,qwen_0_5b")
  parser.add_argument("--layers_0_5b", type=int, default=0,
                      help="override qwen_0_5b's 24 layers (0 = keep 24)")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--prompt_len", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="parameter and compute dtype of both sides")
  args = parser.parse_args()
  import jax
  print(f"devices: ours {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"transformers {_torch_device()}; dtype {args.dtype}", flush=True)

  rows = []
  for size in args.models.split(","):
    with tempfile.TemporaryDirectory() as tmp:
      layers = args.layers_0_5b if size == "qwen_0_5b" else None
      dims = _write_checkpoint(size, layers, tmp)
      rng = np.random.default_rng(0)
      prompts_bp = rng.integers(1, dims["vocab_size"], (args.batch, args.prompt_len))
      ours_t, ours_ids, compile_s = _time_ours(tmp, prompts_bp, args.new_tokens, args.repeats,
                                                   args.dtype)
      hf_t, hf_ids = _time_hf(tmp, prompts_bp, args.new_tokens, args.repeats, args.dtype)
    tokens = args.batch * args.new_tokens
    ours_tps, hf_tps = tokens / min(ours_t), tokens / min(hf_t)
    agree = float(np.mean(ours_ids == hf_ids))
    rows.append((f"{size} ({dims['num_hidden_layers']} layers)", ours_tps, hf_tps, compile_s,
                 agree))
    print(f"{size}: ours {ours_tps:.1f} tok/s (runs {['%.2fs' % t for t in ours_t]}, "
          f"compile+first {compile_s:.1f}s), transformers {hf_tps:.1f} tok/s "
          f"(runs {['%.2fs' % t for t in hf_t]}), ratio {ours_tps / hf_tps:.2f}x, "
          f"greedy tokens agreeing {agree:.3f}", flush=True)

  print("\n| model | ours tok/s | transformers tok/s | ratio | first call (compile) s | "
        "greedy agreement |")
  print("|---|---|---|---|---|---|")
  for name, ours_tps, hf_tps, compile_s, agree in rows:
    print(f"| {name} | {ours_tps:.1f} | {hf_tps:.1f} | {ours_tps / hf_tps:.2f}x | "
          f"{compile_s:.1f} | {agree:.3f} |")


if __name__ == "__main__":
  main()
