"""`python -m launch.eval` through its real entry point (subprocess): an oracle run and its
resume, and bad input answered with one clear line on stderr, a non-zero exit, no traceback."""

import concurrent.futures
import json
import os
import re
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _eval(*args, timeout=300):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", "launch.eval", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout, env=env)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_oracle_run_writes_results_and_resumes(tmp_path):
  out = tmp_path / "out"
  args = ["--suite=math", "--dataset=aime25", "--policy=oracle", f"--out={out}", "--limit=3",
          "--k=2"]
  proc = _eval(*args)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "| accuracy | 1.0000 |" in proc.stdout and "| status: answered | 6/6 |" in proc.stdout
  results = json.loads((out / "results.json").read_text())
  assert (results["suite"], results["policy"], results["dataset"], results["k"],
          results["episodes"]) == ("math", "oracle", "aime25", 2, 6)
  assert results["metrics"] == {"accuracy": 1.0, "avg@2": 1.0, "pass@2": 1.0}
  before = (out / "episodes.jsonl").read_text()
  proc = _eval(*args)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (out / "episodes.jsonl").read_text() == before  # nothing re-run


@pytest.mark.parametrize("args,expected", [
    (["--suite=bfcl_multi_turn", "--category=base,miss_param", "--limit=1", "--policy=oracle"],
     ["| overall | 1.0000 |", "| accuracy/base | 1.0000 |", "| accuracy/miss_param | 1.0000 |"]),
    (["--suite=bfcl_multi_turn", "--category=miss_func", "--limit=1", "--policy=null"],
     ["| overall | 0.0000 |"]),
    # tau2 tasks 10-11: 10 only reads (the do-nothing floor passes it), 11 writes.
    (["--suite=tau2_airline", "--offset=10", "--limit=2", "--policy=oracle"],
     ["| pass^1 | 1.0000 |", "| floor | 0.5000 |", "not comparable to the gpt-4.1-user"]),
    (["--suite=tau2_airline", "--offset=10", "--limit=2", "--policy=null"],
     ["| pass^1 | 0.5000 |", "| floor | 0.5000 |"]),
])
def test_benchmark_self_tests_through_the_cli(tmp_path, args, expected):
  """oracle / null through `python -m launch.eval`: the suite's own budgets (no cut turns), the
  self-test user for tau2, and the benchmark's own checker."""
  proc = _eval(*args, f"--out={tmp_path / 'out'}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  for line in expected:
    assert line in proc.stdout, proc.stdout
  results = json.loads((tmp_path / "out" / "results.json").read_text())
  assert "context_full" not in results["statuses"]


def _bad_inputs(tmp_path):
  port = _free_port()  # closed again: connections are refused
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": 4\n')
  out = f"--out={tmp_path / 'out'}"
  return [
      (["--suite=nope", "--policy=null", out], "unknown suite 'nope'; known: .*math"),
      (["--suite=bfcl_multi_turn", "--category=web_search", "--policy=null", out],
       "web_search"),
      (["--suite=math", "--dataset=aime23", "--policy=null", out], "unknown math dataset 'aime23'"),
      (["--suite=math", "--dataset=aime24", "--category=base", "--policy=null", out],
       "suite math has no categories"),
      (["--suite=math", f"--dataset={tmp_path}/none.jsonl", "--policy=null", out],
       "unknown math dataset .*none.jsonl"),
      (["--suite=math", "--dataset=hmmt25", "--policy=null", out], "'hmmt25' is not shipped"),
      (["--suite=math", f"--dataset={bad}", "--policy=null", out], f"{bad}:2: not valid JSON"),
      (["--suite=math", "--dataset=aime24", f"--policy=sglang:http://127.0.0.1:{port}", out],
       f"cannot reach the SGLang server at http://127.0.0.1:{port}/health: .*refused"),
      (["--suite=math", "--dataset=aime24", f"--policy=openai:http://127.0.0.1:{port}/v1:m", out],
       f"cannot reach the OpenAI-compatible endpoint at http://127.0.0.1:{port}/v1/models"),
      (["--suite=math", "--dataset=aime24", "--policy=gpt4", out], "--policy='gpt4' is neither"),
      (["--suite=math", "--dataset=aime24", "--policy=null"], "--out is required"),
      (["--suite=math", "--dataset=aime24", "--policy=null", "--k=0", out], "--k must be >= 1"),
      (["--suite=math", "--dataset=aime24", "--policy=null", "--user=gpt", out], "--user='gpt'"),
      (["--suite=math", "--dataset=aime24", "--policy=null", "--user=openai:http://x", out],
       "--user='openai:http://x': expected openai:BASE_URL:MODEL"),
      (["--suite=math", "--dataset=aime24", "--policy=null", "--option=split", out],
       "--option='split': expected KEY=VALUE"),
      (["--suite=math", "--dataset=aime24", "--policy=null", "--option=qestion_field=x", out],
       "suite math: unknown options \\['qestion_field'\\]"),
  ]


def test_bad_input_is_one_line(tmp_path):
  cases = _bad_inputs(tmp_path)
  with concurrent.futures.ThreadPoolExecutor(4) as pool:  # each is a short process
    procs = list(pool.map(lambda case: _eval(*case[0]), cases))
  for (args, message), proc in zip(cases, procs):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0, args
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert re.search(message, lines[0]), (message, lines[0])
