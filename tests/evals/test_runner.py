"""evals/runner: k episodes per task through the agent loop, episodes.jsonl readable by inspect,
resume (skip finished episodes, drop a line cut short, extend k), refusal of another run."""

import json

import pytest

from synthagent_jax import inspect as insp
from synthagent_jax.evals import math_sets, policies, runner
from synthagent_jax.evals.suite import SuiteOptions
from synthagent_jax.utils import metrics as metrics_lib

ROLLOUT = {"max_turns": 4, "max_new_tokens": 32, "max_total_tokens": 1024}


def _suite(tmp_path, n=3):
  path = tmp_path / "set.jsonl"
  path.write_text("".join(json.dumps({"question": f"{i} + {i} = ?", "answer": str(2 * i)}) + "\n"
                          for i in range(n)))
  return math_sets.MathSuite(SuiteOptions(dataset=str(path)))


class _Counting:
  """Wraps a policy to count the episodes its engines are asked to start."""

  def __init__(self, policy):
    self.policy, self.tasks = policy, []
    self.spec, self.tokenizer, self.per_task = policy.spec, policy.tokenizer, policy.per_task
    self.max_context = policy.max_context

  def engine_for(self, task):
    self.tasks.append(task.id)
    return self.policy.engine_for(task)


def _lines(out):
  with open(out / runner.EPISODES) as f:
    return [json.loads(line) for line in f]


def test_records_results_and_inspect(tmp_path):
  suite = _suite(tmp_path)
  out = tmp_path / "out"
  res = runner.run_suite(suite, policies.make_policy("oracle", suite=suite), ROLLOUT, str(out),
                         k=2, options=SuiteOptions(dataset="set"), progress=False)
  with open(out / runner.RESULTS) as f:
    results = json.load(f)
  assert results == res.results
  assert {k: results[k] for k in ("suite", "policy", "dataset", "k", "episodes", "tasks")} == {
      "suite": "math", "policy": "oracle", "dataset": "set", "k": 2, "episodes": 6, "tasks": 3}
  assert results["metrics"]["accuracy"] == 1.0 and results["statuses"] == {"answered": 6}
  records = _lines(out)
  assert sorted((r["task_id"], r["sample_index"]) for r in records) == [
      (f"set.jsonl_{i}", g) for i in range(3) for g in range(2)]
  for rec in records:
    metrics_lib.validate_rollout_record(rec)  # the rollout-log format inspect.py reads
    assert rec["verdict"]["correct"] and rec["passed"] and rec["reward"] == rec["score"] == 1.0
  html = insp.episode_html(records[0])
  assert "&lt;answer&gt;0&lt;/answer&gt;" in html and "correct" in html
  loaded = insp.load_eval_episodes(str(out))
  assert len(loaded) == 6 and insp.step_summary({0: loaded})[0]["reward_mean"] == 1.0
  table = runner.markdown_table(results)
  assert "| accuracy | 1.0000 |" in table and "| status: answered | 6/6 |" in table


def test_resume_skips_finished_drops_a_cut_line_and_extends_k(tmp_path):
  suite = _suite(tmp_path)
  out = tmp_path / "out"
  first = runner.run_suite(suite, policies.make_policy("null", suite=suite), ROLLOUT, str(out),
                           k=2, progress=False)
  lines = (out / runner.EPISODES).read_text().splitlines(keepends=True)
  # Keep 3 finished episodes and half of the 4th (a run killed mid-write).
  (out / runner.EPISODES).write_text("".join(lines[:3]) + lines[3][:40])
  policy = _Counting(policies.make_policy("null", suite=suite))
  again = runner.run_suite(suite, policy, ROLLOUT, str(out), k=2, progress=False)
  assert again.results == first.results
  # Task 0 is finished; task 1 misses sample 1 and task 2 both: only they run again.
  assert sorted(policy.tasks) == ["set.jsonl_1", "set.jsonl_2"]
  records = _lines(out)
  assert len(records) == 6 and len({(r["task_id"], r["sample_index"]) for r in records}) == 6
  # Nothing left: a rerun starts no episode. A larger k runs only the new samples.
  policy = _Counting(policies.make_policy("null", suite=suite))
  runner.run_suite(suite, policy, ROLLOUT, str(out), k=2, progress=False)
  assert policy.tasks == []
  more = runner.run_suite(suite, policy, ROLLOUT, str(out), k=3, progress=False)
  assert more.results["episodes"] == 9 and len(_lines(out)) == 9
  assert sorted(r["sample_index"] for r in _lines(out)[6:]) == [2, 2, 2]


def test_refuses_another_run_and_broken_lines(tmp_path):
  suite = _suite(tmp_path, n=1)
  out = tmp_path / "out"
  runner.run_suite(suite, policies.make_policy("null", suite=suite), ROLLOUT, str(out),
                   progress=False)
  with pytest.raises(runner.RunError, match="holds another run .*policy"):
    runner.run_suite(suite, policies.make_policy("oracle", suite=suite), ROLLOUT, str(out),
                     progress=False)
  (out / runner.EPISODES).write_text("not json\n" + (out / runner.EPISODES).read_text())
  with pytest.raises(runner.RunError, match="episodes.jsonl:1: not an episode record"):
    runner.run_suite(suite, policies.make_policy("null", suite=suite), ROLLOUT, str(out),
                     progress=False)


def test_context_full_is_reported(tmp_path):
  suite = _suite(tmp_path, n=2)
  res = runner.run_suite(suite, policies.make_policy("oracle", suite=suite),
                         dict(ROLLOUT, max_total_tokens=20), None, progress=False)
  assert res.results["statuses"] == {"context_full": 2}
  assert res.results["metrics"]["accuracy"] == 0.0
  assert "status: context_full (prompt longer than the policy's context) | 2/2" in (
      runner.markdown_table(res.results))


def test_loop_config_and_spec_options(tmp_path):
  suite = _suite(tmp_path, n=1)
  cfg = runner.loop_config(dict(ROLLOUT, system_prompt=""), suite, max_context=256)
  assert cfg.max_total_tokens == 256 and cfg.max_steps_per_user_turn == 1
  opts = runner.options_from_spec("math:aime24", math_sets.MathSuite, limit=2)
  assert (opts.dataset, opts.category, opts.limit) == ("aime24", None, 2)
  assert runner.options_from_spec("other:base", object).category == "base"


def test_a_checker_that_raises_scores_zero_and_is_counted(tmp_path):
  suite = _suite(tmp_path, n=2)
  real_score = suite.score

  def flaky(task, traj):
    if task.id.endswith("_1"):
      raise KeyError("gold")
    return real_score(task, traj)

  suite.score = flaky
  res = runner.run_suite(suite, policies.make_policy("oracle", suite=suite), ROLLOUT, None,
                         progress=False)
  assert res.results["scorer_errors"] == 1 and res.results["metrics"]["accuracy"] == 0.5
  assert res.records[1]["verdict"] == {"scorer_error": "KeyError: 'gold'"}
  assert "| scorer errors (scored 0, see episodes.jsonl) | 1/2 |" in runner.markdown_table(
      res.results)
