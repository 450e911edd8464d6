"""The bfcl_multi_turn adapter's self-test on every entry: the oracle (BFCL's ground truth replayed
as tool calls) and the null policy (never calls a tool), each through the real AgentLoop with the
shipped tokenizer, scored by BFCL's own multi_turn_checker.

    python -m benchmarks.bfcl_oracle               # all four categories, all entries
    python -m benchmarks.bfcl_oracle --category=base --limit=20 --out=/tmp/bfcl_oracle.json

Prints per category the oracle and null accuracy, wall time, the failing ids with the checker's
error, the longest prompt / trajectory / tool response (tokens); `--out` writes it all as JSON.
Expected: oracle 1.0 and null 0.0 in every category.
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import time

import transformers

from synthagent_jax.evals import bfcl
from synthagent_jax.evals.replay import ReplayEngine
from synthagent_jax.evals.suite import SuiteOptions
from synthagent_jax.models import chat_format as cf
from synthagent_jax.rollout.agent_loop import AgentLoop, AgentLoopConfig

REPO = pathlib.Path(__file__).resolve().parents[1]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--category", default=None, help="base,miss_func,miss_param,long_context")
  parser.add_argument("--offset", type=int, default=0)
  parser.add_argument("--limit", type=int, default=0, help="entries per category (0 = all)")
  parser.add_argument("--policies", default="oracle,null")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()

  tok = transformers.AutoTokenizer.from_pretrained(str(REPO / "data" / "tokenizer"))
  suite = bfcl.BfclMultiTurn(SuiteOptions(category=args.category, offset=args.offset,
                                          limit=args.limit))
  t0 = time.perf_counter()
  tasks = suite.load()
  load_s = time.perf_counter() - t0
  # The suite's budget (4096 new tokens per step, 131072 in all): what launch.eval uses for a
  # policy without a context length of its own, such as the replayed oracle.
  config = AgentLoopConfig.from_mapping({}, **suite.loop_overrides())
  tools, user = suite.tool_env(), suite.user_env(None)
  report = {"load_s": load_s, "tasks": len(tasks), "policies": {}}
  for policy in args.policies.split(","):
    t0 = time.perf_counter()
    scores, failures = [], []
    longest = collections.Counter()
    for task in tasks:
      turns = suite.oracle_turns(task) if policy == "oracle" else []
      (traj,) = AgentLoop(ReplayEngine(tok, turns), tok, tools, user, config).run([task])
      score = suite.score(task, traj)
      scores.append([score])
      if not score.passed:
        failures.append({"id": task.id, "status": traj.status,
                         "error_type": score.verdict.get("error_type"),
                         "error_message": score.verdict.get("error_message")})
      longest["prompt_tokens"] = max(longest["prompt_tokens"], traj.prompt_len)
      longest["trajectory_tokens"] = max(longest["trajectory_tokens"], len(traj.token_ids))
      for m in traj.messages:
        if m["role"] == "tool":
          longest["tool_response_tokens"] = max(longest["tool_response_tokens"],
                                                len(cf.encode(tok, m["content"])))
    wall = time.perf_counter() - t0
    metrics = suite.metrics(tasks, scores)
    report["policies"][policy] = {"metrics": metrics, "wall_s": wall, "failures": failures,
                                  "longest": dict(longest)}
    print(f"{policy}: {json.dumps(metrics)}  wall {wall:.1f}s  failures {len(failures)}  "
          f"longest {dict(longest)}", flush=True)
    if policy == "oracle":
      for f in failures:
        print(f"  FAIL {f['id']} [{f['status']}] {f['error_type']}: {f['error_message']}")
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
