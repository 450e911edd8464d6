"""The LLM teacher pipeline against a scripted teacher replaying recorded replies
(tests/synthesis/fixtures/teacher_recording.json): a clean task, malformed JSON then a fix, a
missing field on every attempt, a rewrite leaking a private value, a near-duplicate, and a task
whose solutions invent the private value. The stage report counts each."""

import json
import os
import re

import pytest

from synthagent_jax.envs import task as task_lib
from synthagent_jax.llm import scripted
from synthagent_jax.rewards import rubric as rubric_lib
from synthagent_jax.synthesis import pipeline
from synthagent_jax.synthesis import store

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "teacher_recording.json")


def load_recording():
  with open(FIXTURE, encoding="utf-8") as f:
    return json.load(f)


def recorded_teacher(records):
  """A ScriptedLLM that finds the record a conversation is about and replays its replies:
  the n-th reply of a stage for the conversation's n-th assistant turn (retries and solver turns)."""

  def reply(conv):
    system = conv[0]["content"]
    stage = re.match(r"### STAGE: (\w+)", system).group(1)
    if stage == "tools_task":
      rec = next(r for r in records if r["seed"]["persona"] in system
                 and r["seed"]["domain"] in system)
    elif stage == "solve":
      rec = next(r for r in records if r["instruction"] == conv[1]["content"])
    else:
      rec = max((r for r in records if r["match"] in system), key=lambda r: len(r["match"]))
    replies = rec["replies"][stage]
    n = sum(m["role"] == "assistant" for m in conv)
    return replies[min(n, len(replies) - 1)]

  return scripted.ScriptedLLM(fn=reply)


CFG = pipeline.PipelineConfig(max_retries=1, num_solutions=2, min_agreement=0.5, max_turns=6,
                              dedup_threshold=0.6, batch_size=4, simulate_tools=False)


@pytest.fixture()
def run(tmp_path):
  records = load_recording()
  seeds = [r["seed"] for r in records]
  teacher = recorded_teacher(records)
  out = str(tmp_path / "teacher.jsonl")
  work = str(tmp_path / "work")
  report = pipeline.run_pipeline(seeds, teacher, CFG, out_path=out, work_dir=work)
  return report, out, work, seeds, teacher


def test_stage_report_counts_every_rejection(run):
  report, out, work, _, _ = run
  assert report["tools_task"] == {"in": 6, "out": 5, "rejected": {"missing_field": 1},
                                  "retried": {"malformed_json": 1, "missing_field": 1}}
  assert report["underspecify"] == {"in": 5, "out": 4, "rejected": {"leaks_private_value": 1},
                                    "retried": {"leaks_private_value": 2}}
  assert report["tool_check"]["out"] == 4 and not report["tool_check"]["rejected"]
  assert report["solve"]["out"] == 4
  assert report["rubric"] == {"in": 4, "out": 3, "rejected": {"solutions_disagree": 1},
                              "retried": {}}
  assert report["filters"] == {"in": 3, "out": 2, "rejected": {"near_duplicate": 1},
                               "retried": {}}
  assert json.load(open(os.path.join(work, "report.json"))) == report


def test_kept_tasks_are_valid_and_references_score_one(run):
  _, out, _, _, _ = run
  tasks, errors = task_lib.load_tasks(out)
  assert not errors
  assert sorted(t.metadata["seed_id"] for t in tasks) == ["s1", "s2"]
  for t in tasks:
    assert t.rubric.subgoals and t.rubric.interactions and t.rubric.forbidden
    for value in t.user.private_info.values():
      assert value not in t.instruction
    assert rubric_lib.score(t, t.reference).reward == pytest.approx(1.0)
    names = t.tool_names
    assert "calculate_fare" not in names  # dropped by the tool check: arithmetic
    assert t.metadata["distractors"] and set(t.metadata["distractors"]) <= set(names)
    assert {t.kind for t in t.tools} == {"read", "write"}


def test_rerun_resumes_without_teacher_calls_or_duplicates(run):
  report, out, work, seeds, teacher = run
  before = open(out).read()
  calls = len(teacher.calls)
  again = pipeline.run_pipeline(seeds, teacher, CFG, out_path=out, work_dir=work)
  assert len(teacher.calls) == calls
  assert again == report
  assert open(out).read() == before


def test_interrupted_stage_resumes(tmp_path):
  records = load_recording()
  seeds = [r["seed"] for r in records]
  work = str(tmp_path / "work")
  # Stage outputs of a run killed after tools_task's first batch of 4 seeds...
  first = pipeline.run_stage("tools_task", lambda b: pipeline.stage_tools_task.run(
      b, recorded_teacher(records), CFG), seeds[:4], work, batch_size=4)
  assert len(first) == 3
  # ... then the full run only asks about the 2 seeds not done yet in that stage.
  teacher = recorded_teacher(records)
  report = pipeline.run_pipeline(seeds, teacher, CFG, out_path=str(tmp_path / "o.jsonl"),
                                 work_dir=work)
  asked = [c for c in teacher.calls if c[0]["content"].startswith("### STAGE: tools_task")]
  assert len(asked) == 2
  assert report["filters"]["out"] == 2
  assert len(store.load_done(str(tmp_path / "o.jsonl"))) == 2


def test_difficulty_filter_in_the_pipeline(tmp_path):
  records = load_recording()
  seeds = [r["seed"] for r in records]
  # s1 is too easy, so s5 is no longer a near-duplicate of a kept task; it is too hard.
  rates = {"teacher-s1": 1.0, "teacher-s2": 0.5, "teacher-s5": 0.0}
  report = pipeline.run_pipeline(seeds, recorded_teacher(records), CFG,
                                 out_path=str(tmp_path / "o.jsonl"), work_dir=str(tmp_path / "w"),
                                 pass_rate=lambda task, n: rates[task["id"]])
  assert report["filters"]["out"] == 1
  assert report["filters"]["rejected"] == {"too_easy": 1, "too_hard": 1}
