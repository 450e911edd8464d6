"""Share of an in-process P(yes) judge call spent in its forward pass (issue 15: >= 80%).

    python -m benchmarks.pyes_forward_share [--trajectories 16 --repeats 3 --dims tiny] [--json]

Every judge has to prefill the transcript once, so the judge is "close to its limit" when nearly
all of a call is that forward pass. Times `PYesJudge.judge` on the judge_throughput task,
conversations and random-weight model (after one warm-up call that compiles), and splits the
wall time with the judge's own `timings`: rendering + tokenizing + padding (prepare), splitting
the model (split), the jitted forward pass blocked on its result (forward), and the rest.
"""

import argparse
import json
import time

import jax
import transformers

from benchmarks import judge_throughput as jt
from synthagent_jax import models
from synthagent_jax.rewards.judge import JudgeRequest
from synthagent_jax.rewards.pyes_judge import PYesJudge


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--trajectories", type=int, default=16)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--dims", default="tiny", choices=sorted(jt.DIMS))
  ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  ap.add_argument("--json", action="store_true")
  args = ap.parse_args()
  tok = transformers.AutoTokenizer.from_pretrained("data/tokenizer")
  dims = dict(jt.DIMS[args.dims])
  dims["vocab_size"] = dims["vocab_size"] or len(tok)
  cfg = models.ModelConfig(family="qwen2", rope_theta=1e6, rms_norm_eps=1e-6,
                           tie_word_embeddings=True, dtype=args.dtype, param_dtype=args.dtype,
                           **dims)
  model = models.init_model(cfg, seed=0) if args.dims == "tiny" else jt._hf_random(cfg, args.dtype)
  task = jt._task()
  requests = [JudgeRequest(task, jt._conversation(k), task.rubric.items())
              for k in range(args.trajectories)]
  judge = PYesJudge(model, tok, max_batch_size=args.batch)
  judge.judge(requests)  # warm-up: compiles
  judge.timings = dict.fromkeys(judge.timings, 0.0)
  t0 = time.perf_counter()
  for _ in range(args.repeats):
    judge.judge(requests)
  total = time.perf_counter() - t0
  shares = {f"{k[:-2]}_share": v / total for k, v in judge.timings.items()}
  per_call_ms = 1e3 * total / args.repeats
  print(f"device {jax.devices()[0].platform}, dims {args.dims}: {per_call_ms:.1f} ms per call of "
        f"{sum(len(r.items) for r in requests)} items; " +
        ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
  if args.json:
    print(json.dumps({"device": jax.devices()[0].platform, "dims": args.dims,
                      "per_call_ms": per_call_ms, **shares}))


if __name__ == "__main__":
  main()
