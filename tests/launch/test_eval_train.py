"""launch.train runs `eval.suites` benchmarks at every evaluation on the current params and logs
bench/<suite>_<value>/<metric> next to the rubric eval (train-smoke style, real main, tiny)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--config=configs/tiny.py:smoke", "--config.sft.num_steps=0"]  # RL only


def _train(workdir, *extra):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", "launch.train", f"--workdir={workdir}", *TINY,
                         *extra], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def test_train_logs_bench_metrics(tmp_path):
  data = tmp_path / "two.jsonl"
  data.write_text('{"question": "1 + 1 = ?", "answer": "2"}\n'
                  '{"question": "2 + 3 = ?", "answer": "5"}\n')
  wd = tmp_path / "run"
  proc = _train(wd, "--config.rl.num_steps=1", f"--config.eval.suites=('math:{data}',)",
                "--config.eval.suites_k=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
  bench = {r["step"]: r for r in rows if "bench/math_two/accuracy" in r}
  assert sorted(bench) == [0, 1]  # the starting policy and the final one
  for row in bench.values():
    assert {"bench/math_two/avg_at_2", "bench/math_two/pass_at_2", "eval/reward_mean"} <= set(row)
    assert 0.0 <= row["bench/math_two/accuracy"] <= 1.0
    assert abs(sum(v for k, v in row.items() if "/frac_" in k) - 1.0) < 1e-9
  results = json.loads((wd / "eval/bench/math_two/step_000001/results.json").read_text())
  assert results["episodes"] == 4 and results["metrics"]["accuracy"] == (
      bench[1]["bench/math_two/accuracy"])
  episodes = (wd / "eval/bench/math_two/step_000001/episodes.jsonl").read_text().splitlines()
  assert len(episodes) == 4


def test_bad_suite_fails_before_training(tmp_path):
  proc = _train(tmp_path / "run", "--config.rl.num_steps=1", "--config.eval.suites=('math:nope',)")
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown math dataset 'nope'")
