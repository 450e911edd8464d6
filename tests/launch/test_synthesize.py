"""launch.synthesize: the offline CLI end to end, killed mid-run (SIGKILL) and rerun."""

import json
import os
import signal
import subprocess
import sys
import time

import ml_collections
import pytest

from launch import synthesize
from synthagent_jax.synthesis import offline
from synthagent_jax.synthesis import split
from synthagent_jax.synthesis import store

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(out, num_tasks):
  return [sys.executable, "-m", "launch.synthesize", "--config=configs/synth_offline.py",
          f"--out={out}", f"--config.num_tasks={num_tasks}"]


def _complete_lines(path):
  if not os.path.exists(path):
    return 0
  with open(path, "rb") as f:
    return f.read().count(b"\n")


def test_kill_mid_run_and_rerun_loses_nothing_and_duplicates_nothing(tmp_path):
  out = str(tmp_path / "tasks.jsonl")
  n = 400
  proc = subprocess.Popen(_cli(out, n), cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
  deadline = time.time() + 120
  while _complete_lines(out) < 40 and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be killed; raise num_tasks"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  with open(out, "rb") as f:
    raw = f.read()
  finished = [json.loads(line) for line in raw.split(b"\n")[:-1]]  # every newline-ended line
  assert 40 <= len(finished) < n

  res = subprocess.run(_cli(out, n), cwd=REPO, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  final = store.load_done(out)
  ids = [r["id"] for r in final]
  assert len(ids) == n == len(set(ids))
  assert final[:len(finished)] == finished  # nothing finished was lost or rewritten
  assert set(ids) == {t["id"] for t in offline.generate(n, seed=0)}  # same as an uninterrupted run

  summary = json.loads(res.stdout.strip().splitlines()[-1])
  train, evals = store.load_done(summary["train"]), store.load_done(summary["eval"])
  assert len(train) + len(evals) == n
  assert {r["id"] for r in evals} == {i for i in ids if split.is_heldout(i, 0.2)}
  assert not {r["id"] for r in train} & {r["id"] for r in evals}

  # A third run with everything done adds nothing.
  res = subprocess.run(_cli(out, n), cwd=REPO, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0 and "0 new tasks" in res.stderr
  assert [r["id"] for r in store.load_done(out)] == ids


def _config(**overrides):
  c = ml_collections.ConfigDict({"kind": "offline", "num_tasks": 10, "seed": 0,
                                 "worlds_dir": os.path.join(REPO, "data/worlds"),
                                 "eval_frac": 0.2, "validate": True})
  c.update(overrides)
  return c


@pytest.mark.parametrize("overrides,match", [
    ({"kind": "magic"}, "kind must be"),
    ({"num_tasks": 0}, "num_tasks must be"),
    ({"eval_frac": 1.5}, "eval_frac must be"),
    ({"worlds_dir": "/nonexistent"}, "worlds_dir"),
])
def test_bad_config_fails_clearly(overrides, match):
  with pytest.raises(synthesize.SynthConfigError, match=match):
    synthesize.check_config(_config(**overrides))


def test_teacher_config_needs_base_url():
  from configs import synth_teacher  # pylint: disable=g-import-not-at-top
  c = synth_teacher.get_config()
  c.seeds_dir = os.path.join(REPO, "data/seeds")
  with pytest.raises(synthesize.SynthConfigError, match="base_url"):
    synthesize.check_config(c)
  c.teacher.base_url = "http://localhost:1/v1"
  c.teacher.model = "m"
  synthesize.check_config(c)


def test_in_process_offline_run_and_split(tmp_path):
  out = str(tmp_path / "t.jsonl")
  assert synthesize.run_offline(_config(num_tasks=25), out) == 25
  assert synthesize.run_offline(_config(num_tasks=30), out) == 5
  summary = synthesize.finish(_config(), out)
  assert summary["tasks"] == 30 and summary["num_train"] + summary["num_eval"] == 30


def test_teacher_cli_path_wires_config_to_pipeline(tmp_path):
  """The teacher path end to end with a teacher that never returns JSON: every seed is rejected
  at the first stage with its reason, after the configured retries."""
  from configs import synth_teacher  # pylint: disable=g-import-not-at-top
  from synthagent_jax.llm import scripted  # pylint: disable=g-import-not-at-top
  c = synth_teacher.get_config()
  c.seeds_dir = os.path.join(REPO, "data/seeds")
  c.num_tasks = 3
  c.pipeline.max_retries = 1
  teacher = scripted.ScriptedLLM(default="Sorry, I can't do that.")
  out = str(tmp_path / "teacher.jsonl")
  report = synthesize.run_teacher(c, out, teacher=teacher)
  assert report["tools_task"] == {"in": 3, "out": 0, "rejected": {"no_json": 3},
                                  "retried": {"no_json": 3}}
  assert len(teacher.calls) == 6
  assert synthesize.finish(c, out)["tasks"] == 0


# --- one writer per output; torn UTF-8 (issue 19 item 9) ------------------------------------------

def test_second_run_on_the_same_out_fails_clearly_and_writes_nothing(tmp_path):
  out = str(tmp_path / "tasks.jsonl")
  with store.OutputLock(out):  # a first run, still writing
    res = subprocess.run(_cli(out, 5), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "being written by another run" in lines[0], res.stderr
    assert f"pid {os.getpid()}" in lines[0]
    assert not os.path.exists(out)
    with pytest.raises(store.OutputLocked):  # a second lock in this process conflicts too
      store.OutputLock(out).acquire()
  res = subprocess.run(_cli(out, 5), cwd=REPO, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]  # released: the next run writes
  assert len(store.load_done(out)) == 5


def test_resume_after_a_line_torn_inside_a_utf8_character(tmp_path):
  out = str(tmp_path / "t.jsonl")
  records = list(offline.generate(6, seed=0))
  with open(out, "w", encoding="utf-8") as f:
    for r in records[:5]:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
  finished = os.path.getsize(out)
  torn = json.dumps(dict(records[5], instruction="Réservez pour moi"), ensure_ascii=False).encode()
  cut = torn.index("é".encode()) + 1  # inside the two-byte character
  with open(out, "ab") as f:
    f.write(torn[:cut])
  assert [r["id"] for r in store.load_done(out)] == [r["id"] for r in records[:5]]
  assert os.path.getsize(out) == finished  # the torn tail (only it) was cut off
  with open(out, "ab") as f:
    f.write(torn[:cut])
  assert synthesize.run_offline(_config(num_tasks=8), out) == 3
  ids = [r["id"] for r in store.load_done(out)]
  assert ids == [r["id"] for r in offline.generate(8, seed=0)]


def test_bad_utf8_in_the_middle_is_an_error_naming_the_line(tmp_path):
  out = tmp_path / "t.jsonl"
  out.write_bytes(b'{"id": "a"}\n{"id": "\xff"}\n{"id": "c"}\n')
  with pytest.raises(ValueError, match=r"t\.jsonl:2: malformed JSON line"):
    store.load_done(str(out))
