"""The tau2 airline adapter's self-test on all 50 tasks: oracle and null through the real AgentLoop
(ReplayEngine, the shipped tokenizer, the scripted self-test user), scored by tau2's evaluator.

    python -m benchmarks.tau2_selftest                       # all 50 tasks
    python -m benchmarks.tau2_selftest --offset=10 --limit=5 --out=/tmp/tau2_selftest.json

Expected: oracle 50/50; null = floor = 19/50 (the floor: tasks an agent that ends at once passes,
by the same evaluator). Prints the counts, the tasks where null and floor differ (none expected),
and the wall time of each part.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import transformers

from synthagent_jax.evals import tau2_airline as ta
from synthagent_jax.evals.replay import ReplayEngine
from synthagent_jax.evals.suite import SuiteOptions
from synthagent_jax.rollout.agent_loop import AgentLoop, AgentLoopConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
# Room for tau2's policy + 14 tool schemas (~6.5k tokens) and untruncated tool results.
LOOP = dict(max_new_tokens=2048, max_total_tokens=131072, max_tool_response_tokens=65536)


def run_policy(suite, tasks, tok, policy: str) -> tuple[list, float]:
  """Runs every task once with the oracle's or the null policy's turns; returns scores, seconds."""
  start = time.perf_counter()
  cfg = AgentLoopConfig(**LOOP, **suite.loop_overrides())
  scores = []
  for task in tasks:  # one task per run: a ReplayEngine replays one task's turns
    turns = suite.oracle_turns(task) if policy == "oracle" else []
    loop = AgentLoop(ReplayEngine(tok, turns, skip=len(task.opening)), tok, suite.tool_env(),
                     suite.user_env(ta.selftest_user_llm()), cfg)
    (traj,) = loop.run([task], 1)
    scores.append(suite.score(task, traj))
  return scores, time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--offset", type=int, default=0)
  parser.add_argument("--limit", type=int, default=0, help="0 = all 50")
  parser.add_argument("--out", default="", help="optional JSON file for the figures")
  args = parser.parse_args()
  t0 = time.perf_counter()
  tok = transformers.AutoTokenizer.from_pretrained(str(REPO / "data" / "tokenizer"))
  suite = ta.Tau2AirlineSuite(SuiteOptions(offset=args.offset, limit=args.limit))
  tasks = suite.load()
  load_s = time.perf_counter() - t0
  oracle, oracle_s = run_policy(suite, tasks, tok, "oracle")
  null, null_s = run_policy(suite, tasks, tok, "null")
  t1 = time.perf_counter()
  floors = [suite.floor_passes(task) for task in tasks]
  floor_s = time.perf_counter() - t1
  n = len(tasks)
  result = {
      "tasks": n, "oracle_passed": sum(s.passed for s in oracle),
      "oracle_failed_ids": [t.id for t, s in zip(tasks, oracle) if not s.passed],
      "null_passed": sum(s.passed for s in null), "floor_passed": sum(floors),
      "null_vs_floor_differs": [t.id for t, s, f in zip(tasks, null, floors) if s.passed != f],
      "floor_task_ids": [t.id for t, f in zip(tasks, floors) if f],
      "seconds": {"load": round(load_s, 1), "oracle": round(oracle_s, 1),
                  "null": round(null_s, 1), "floor": round(floor_s, 1),
                  "total": round(time.perf_counter() - t0, 1)},
  }
  print(f"oracle {result['oracle_passed']}/{n}   null {result['null_passed']}/{n}   "
        f"floor {result['floor_passed']}/{n}   null != floor on {result['null_vs_floor_differs']}")
  print(json.dumps(result, indent=1))
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
  main()
