"""Rubric judging throughput: in-process P(yes) scoring vs generating and parsing verdicts.

    python -m benchmarks.judge_throughput --trajectories=16 --repeats=2 [--json_tokens=64]
    python -m benchmarks.judge_throughput --dims=qwen_0_5b --dtype=bfloat16 --trajectories=64 \
        --batch=64      # on a GPU

Same random-weight Qwen2 model (--dims=tiny: configs/tiny.py dims, hidden 128, 4 layers, vocab
4096 = data/tokenizer; --dims=qwen_0_5b: Qwen2.5-0.5B's dims, 24 layers, vocab 151936, fed the
shipped tokenizer's ids), on JAX's default device, same trajectories and rubric items (every item without a check, so all go to
the judge). Three judges, timed in the same run after one warm-up call each (jit compiles):
  pyes      rewards.pyes_judge.PYesJudge: one batched forward per batch, no decoding;
  gen_json  rewards.judge.HTTPJudge over llm.jax_llm.JaxChatLLM over inference.sampler.JaxEngine:
            one greedy generation per trajectory asking for a JSON verdict object (the paper's way),
            `--json_tokens` new tokens, no retries (0: the length of the shortest valid verdict,
            `{"s0": false, ...}` over the trajectory's items plus the end token: the least any
            generative judge can write);
  gen_item  the same generative stack asked one item at a time, `--item_tokens` new tokens each
            (0: the shortest valid one-item verdict plus the end token).
A random model never emits a stop token or valid JSON, so every generation runs to its token
limit (the cost of a real judge that writes a short verdict) and every verdict is unparsed; the
figure is items graded per second.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import transformers

from synthagent_jax import models
from synthagent_jax.envs.task import Task
from synthagent_jax.inference.engine import SamplingParams
from synthagent_jax.inference.sampler import JaxEngine
from synthagent_jax.llm.jax_llm import JaxChatLLM
from synthagent_jax.rewards.judge import HTTPJudge, JudgeRequest
from synthagent_jax.rewards.pyes_judge import PYesJudge


DIMS = {  # vocab_size 0: the shipped tokenizer's
    "tiny": dict(vocab_size=0, hidden_size=128, intermediate_size=256, num_layers=4, num_heads=4,
                 num_kv_heads=2),
    "qwen_0_5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_layers=24,
                      num_heads=14, num_kv_heads=2),
}


def _hf_random(cfg, dtype):
  import tempfile

  import torch
  hf = transformers.Qwen2Config(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
      intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
      rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=True)
  torch.manual_seed(0)
  with tempfile.TemporaryDirectory() as tmp:
    transformers.Qwen2ForCausalLM(hf).save_pretrained(tmp)
    return models.from_pretrained(tmp, dtype=dtype, param_dtype=dtype)


def _task() -> Task:
  tools = [{"type": "function", "kind": "read", "function": {
      "name": "get_order", "description": "Look up an order.",
      "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}}]
  items = lambda prefix, texts: [{"id": f"{prefix}{i}", "text": t, "weight": 1.0, "check": None}
                                 for i, t in enumerate(texts)]
  return Task.from_dict({
      "id": "bench", "domain": "retail", "instruction": "Cancel my order.",
      "full_task": "Cancel order A17 for Ada and confirm the refund amount of $12.",
      "tools": tools, "world": {}, "user": {"persona": "Ada", "private_info": {"order_id": "A17"}},
      "rubric": {"subgoals": items("s", ["Cancels order A17.", "States the refund of $12."]),
                 "interactions": items("i", ["Asks for the order id.", "Is polite."]),
                 "forbidden": items("f", ["Cancels a different order."])}})


def _conversation(k: int) -> list[dict]:
  return [
      {"role": "user", "content": "Please cancel my order."},
      {"role": "assistant", "content": "Of course. Could you tell me the order id?"},
      {"role": "user", "content": f"It is A{17 + k}."},
      {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
          "name": "get_order", "arguments": {"order_id": f"A{17 + k}"}}}]},
      {"role": "tool", "name": "get_order",
       "content": '{"item": "teapot", "price": 12, "status": "pending"}'},
      {"role": "assistant", "content": f"<answer>Order A{17 + k} is cancelled; $12 will be "
                                       "refunded.</answer>"},
  ]


def _time(fn, repeats):
  fn()  # warm-up: compiles every shape used below
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--trajectories", type=int, default=16)
  ap.add_argument("--repeats", type=int, default=2)
  ap.add_argument("--json_tokens", type=int, default=0)
  ap.add_argument("--item_tokens", type=int, default=0)
  ap.add_argument("--batch", type=int, default=16,
                  help="rows per call: pyes items, gen_json trajectories, gen_item items")
  ap.add_argument("--dims", default="tiny", choices=sorted(DIMS))
  ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  args = ap.parse_args()

  tok = transformers.AutoTokenizer.from_pretrained("data/tokenizer")
  dims = dict(DIMS[args.dims])
  dims["vocab_size"] = dims["vocab_size"] or len(tok)
  cfg = models.ModelConfig(family="qwen2", rope_theta=1e6, rms_norm_eps=1e-6,
                           tie_word_embeddings=True, dtype=args.dtype, param_dtype=args.dtype,
                           **dims)
  if args.dims == "tiny":
    model = models.init_model(cfg, seed=0)
  else:  # random weights written by transformers: XLA compiles a 0.5B initializer very slowly
    model = _hf_random(cfg, args.dtype)
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); dims {args.dims}, "
        f"dtype {args.dtype}", flush=True)
  task = _task()
  requests = [JudgeRequest(task, _conversation(k), task.rubric.items())
              for k in range(args.trajectories)]
  n_items = sum(len(r.items) for r in requests)

  shortest = lambda ids: len(tok.encode(json.dumps({i: False for i in ids}))) + 1
  json_tokens = args.json_tokens or shortest([it.id for _, it in task.rubric.items()])
  item_tokens = args.item_tokens or max(shortest([it.id]) for _, it in task.rubric.items())
  print(f"new tokens per generated verdict: json {json_tokens}, item {item_tokens}")

  pyes = PYesJudge(model, tok, max_batch_size=args.batch)
  engine = JaxEngine(model, max_batch_size=args.batch)
  llm = JaxChatLLM(engine, tok)
  gen_json = HTTPJudge(llm, max_retries=0,
                       sampling=SamplingParams(max_new_tokens=json_tokens, temperature=0.0))
  gen_item = HTTPJudge(llm, max_retries=0,
                       sampling=SamplingParams(max_new_tokens=item_tokens, temperature=0.0))
  per_item = [JudgeRequest(r.task, r.messages, [it]) for r in requests for it in r.items]

  results = {
      "pyes": _time(lambda: pyes.judge(requests), args.repeats),
      "gen_json": _time(lambda: gen_json.judge(requests), args.repeats),
      "gen_item": _time(lambda: gen_item.judge(per_item), args.repeats),
  }
  print(f"items per repeat: {n_items} ({args.trajectories} trajectories x "
        f"{len(task.rubric.items())} items); pyes forward calls per repeat: "
        f"{pyes.forward_calls // (args.repeats + 1)}")
  rates = {k: [n_items / t for t in v] for k, v in results.items()}
  for k, v in rates.items():
    print(f"{k:9s} items/s: " + ", ".join(f"{x:.1f}" for x in v))
  for peer in ("gen_json", "gen_item"):
    print(f"pyes / {peer}: " + ", ".join(f"{a / b:.1f}x" for a, b in zip(rates["pyes"],
                                                                          rates[peer])))


if __name__ == "__main__":
  main()
