"""Tests for launch/sweep.py: grid parsing, job commands, running a fake trainer, the summary."""

import csv
import json
import os
import pathlib
import shlex
import subprocess
import sys
import textwrap

import ml_collections
import pytest

from launch import sweep

ROOT = pathlib.Path(__file__).resolve().parents[2]

FAKE_CONFIG = textwrap.dedent("""\
    import ml_collections

    def get_config(arg=None):
      c = ml_collections.ConfigDict()
      c.rl = ml_collections.ConfigDict()
      c.rl.num_generations = 4
      c.rl.clip_high = 0.28
      c.rl.advantage = "grpo"
      c.rl.num_steps = 10
      c.optim = ml_collections.ConfigDict()
      c.optim.clip_high = 1.0
      c.tag = arg or ""
      return c
    """)

# Stands in for launch.train: records its argv and writes metrics that depend on the overrides.
FAKE_TRAIN = textwrap.dedent("""\
    import json, os, sys
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
    workdir = args["workdir"]
    g = int(args.get("config.rl.num_generations", "4"))
    clip = float(args.get("config.rl.clip_high", "0.28"))
    if g == 16:
      sys.exit(3)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "argv.json"), "w") as f:
      json.dump(sys.argv[1:], f)
    summary = os.path.join(os.path.dirname(workdir), "summary.csv")
    if os.path.exists(summary):  # What the sweep's summary said when this point started.
      with open(summary) as src, open(os.path.join(workdir, "seen_summary.csv"), "w") as dst:
        dst.write(src.read())
    steps = int(args.get("config.rl.num_steps", "10"))
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      for step in range(1, steps + 1):
        f.write(json.dumps({"step": step, "time": 0.0, "rl/reward_mean": g * clip * step}) + "\\n")
        if step == 1:
          f.write(json.dumps({"step": 1, "time": 0.0, "eval/reward_mean": g + clip}) + "\\n")
    """)


@pytest.fixture
def fake_env(tmp_path):
  (tmp_path / "fake_config.py").write_text(FAKE_CONFIG)
  (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
  return tmp_path


def run_sweep(tmp_path, *args):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
  return subprocess.run([sys.executable, "-m", "launch.sweep", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)


def test_parse_sweep_values_are_literals():
  axes = sweep.parse_sweep("rl.num_generations=4,8  rl.clip_high=0.2,0.28 rl.advantage=grpo,'rloo'"
                           " mesh.shape=(1, 2, 4),(8,1,1) x.flag=True,False")
  assert axes == [("rl.num_generations", [4, 8]), ("rl.clip_high", [0.2, 0.28]),
                  ("rl.advantage", ["grpo", "rloo"]), ("mesh.shape", [(1, 2, 4), (8, 1, 1)]),
                  ("x.flag", [True, False])]
  assert sweep.parse_sweep("a.b='x, y',-1e-3") == [("a.b", ["x, y", -1e-3])]


@pytest.mark.parametrize("text,match", [
    ("", "empty sweep"),
    ("   ", "empty sweep"),
    ("rl.num_generations", "no '='"),
    ("rl.num_generations=4,,8", "empty value"),
    ("rl.num_generations=", "empty value"),
    ("rl.x=1 rl.x=2", "appears twice"),
    ("rl.x=1,1", "twice"),
    ("config.rl.x=1", "drop the 'config.' prefix"),
    ("rl..x=1", "not a dotted config key"),
    ("rl.x=(1,2", "unclosed"),
    ("rl.x=1,2)", "unbalanced"),
    ("rl.x='abc", "unclosed"),
    ("rl.x=4 8", "no '='"),
    ("rl.x=@!", "cannot parse value"),
])
def test_malformed_sweep_is_a_clear_error(text, match):
  with pytest.raises(sweep.SweepError, match=match):
    sweep.parse_sweep(text)


def test_grid_is_cartesian_product_in_order():
  points = sweep.grid([("a", [1, 2]), ("b", ["x", "y", "z"])])
  assert len(points) == 6
  assert points[:3] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"}]
  assert points[-1] == {"a": 2, "b": "z"}


def test_point_names_are_readable_and_unique():
  points = sweep.grid([("rl.num_generations", [4, 8]), ("rl.clip_high", [0.2])])
  assert sweep.point_names(points) == ["num_generations=4,clip_high=0.2",
                                       "num_generations=8,clip_high=0.2"]
  # Two keys with the same last component keep their full path.
  points = sweep.grid([("rl.clip_high", [0.2]), ("optim.clip_high", [1.0])])
  assert sweep.point_names(points) == ["rl.clip_high=0.2,optim.clip_high=1.0"]
  assert sweep.point_names([{"m.s": (1, 2)}]) == ["s=_1__2_"]
  assert sweep.point_names([{"a": "x y"}, {"a": "x_y"}]) == ["a=x_y", "a=x_y#2"]


def test_job_command_formats_overrides_for_config_flags():
  cmd = sweep.job_command("python", "launch.train", "configs/tiny.py", "r/p",
                          {"rl.advantage": "rloo", "rl.clip_high": 0.2, "mesh.shape": (1, 8, 1)})
  assert cmd == ["python", "-m", "launch.train", "--config=configs/tiny.py", "--workdir=r/p",
                 "--config.rl.advantage=rloo", "--config.rl.clip_high=0.2",
                 "--config.mesh.shape=(1, 8, 1)"]


def test_check_against_config():
  c = ml_collections.ConfigDict({"rl": {"num_generations": 4, "clip_high": 0.2}})
  sweep.check_against_config(c, {"rl.num_generations": 8, "rl.clip_high": 1})
  assert c.rl.num_generations == 4, "the check must not modify the config"
  with pytest.raises(sweep.SweepError, match="no key 'rl.num_gen'"):
    sweep.check_against_config(c, {"rl.num_gen": 8})
  with pytest.raises(sweep.SweepError, match="no key 'optim'"):
    sweep.check_against_config(c, {"optim.lr": 8})
  with pytest.raises(sweep.SweepError, match="rejects value 'many'"):
    sweep.check_against_config(c, {"rl.num_generations": "many"})


def test_the_real_tiny_config_accepts_the_documented_sweep():
  config = sweep.load_config(str(ROOT / "configs" / "tiny.py"))
  for point in sweep.grid(sweep.parse_sweep("rl.num_generations=4,8 rl.clip_high=0.2,0.28")):
    sweep.check_against_config(config, point)


def test_print_only(fake_env):
  res = run_sweep(fake_env, f"--config={fake_env}/fake_config.py:abc", "--workdir=R",
                  "--sweep=rl.num_generations=4,8 rl.advantage=grpo,rloo", "--print_only",
                  "--overrides=rl.num_steps=3")
  assert res.returncode == 0, res.stderr
  lines = res.stdout.strip().splitlines()
  assert len(lines) == 4
  first = shlex.split(lines[0])
  assert first == ["python", "-m", "launch.train", f"--config={fake_env}/fake_config.py:abc",
                   "--workdir=R/num_generations=4,advantage=grpo", "--config.rl.num_steps=3",
                   "--config.rl.num_generations=4", "--config.rl.advantage=grpo"]
  assert shlex.split(lines[3])[4] == "--workdir=R/num_generations=8,advantage=rloo"
  assert not (ROOT / "R").exists()


@pytest.mark.parametrize("args,match", [
    (["--sweep=rl.num_generations=4,,8"], "empty value"),
    (["--sweep=rl.nope=1"], "no key 'rl.nope'"),
    (["--sweep=rl.num_generations=four"], "rejects value 'four'"),
    (["--sweep=rl.num_generations=4", "--overrides=rl.num_generations=8"], "both swept"),
    (["--sweep=rl.num_generations=4", "--overrides=rl.num_steps=1,2"], "one value"),
])
def test_cli_errors_before_running_anything(fake_env, args, match):
  res = run_sweep(fake_env, f"--config={fake_env}/fake_config.py", f"--workdir={fake_env}/R",
                  "--train_module=fake_train", *args)
  assert res.returncode != 0
  assert match in res.stderr
  assert not (fake_env / "R").exists()


def test_missing_config_file(fake_env):
  res = run_sweep(fake_env, "--config=nope.py", "--sweep=a=1", "--print_only")
  assert res.returncode != 0 and "no such file" in res.stderr


def test_runs_grid_with_fake_trainer_and_writes_summary(fake_env):
  root = fake_env / "R"
  res = run_sweep(fake_env, f"--config={fake_env}/fake_config.py", f"--workdir={root}",
                  "--sweep=rl.num_generations=4,8 rl.clip_high=0.2,0.5", "--train_module=fake_train",
                  "--overrides=rl.num_steps=3", "--metrics=rl/reward_mean,eval/reward_mean,x/absent")
  assert res.returncode == 0, res.stderr + res.stdout
  names = sorted(p.name for p in root.iterdir() if p.is_dir())
  assert names == ["num_generations=4,clip_high=0.2", "num_generations=4,clip_high=0.5",
                   "num_generations=8,clip_high=0.2", "num_generations=8,clip_high=0.5"]
  argv = json.loads((root / "num_generations=8,clip_high=0.5" / "argv.json").read_text())
  assert "--config.rl.num_generations=8" in argv and "--config.rl.clip_high=0.5" in argv
  assert "--config.rl.num_steps=3" in argv

  with open(root / "summary.csv") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["point", "rl.num_generations", "rl.clip_high", "status", "step",
                           "rl/reward_mean", "eval/reward_mean", "x/absent"]
  by_point = {(r["rl.num_generations"], r["rl.clip_high"]): r for r in rows}
  assert set(by_point) == {("4", "0.2"), ("4", "0.5"), ("8", "0.2"), ("8", "0.5")}
  r = by_point[("8", "0.5")]
  # Final reward = g * clip * last_step; eval was logged only at step 1 and keeps its last value.
  assert r["status"] == "ok" and r["step"] == "3"
  assert float(r["rl/reward_mean"]) == pytest.approx(8 * 0.5 * 3)
  assert float(r["eval/reward_mean"]) == pytest.approx(8.5)
  assert r["x/absent"] == ""
  md = (root / "summary.md").read_text().splitlines()
  assert md[0] == ("| point | rl.num_generations | rl.clip_high | status | step | rl/reward_mean "
                   "| eval/reward_mean | x/absent |")
  assert len(md) == 2 + 4
  assert "| num_generations=4,clip_high=0.2 | 4 | 0.2 | ok | 3 | 2.4 | 4.2 | – |" in md


def test_failed_point_is_reported_and_others_still_run(fake_env):
  root = fake_env / "R"
  res = run_sweep(fake_env, f"--config={fake_env}/fake_config.py", f"--workdir={root}",
                  "--sweep=rl.num_generations=16,4", "--train_module=fake_train",
                  "--overrides=rl.num_steps=2")
  assert res.returncode != 0
  assert "1 of 2 points failed" in res.stderr
  with open(root / "summary.csv") as f:
    rows = {r["point"]: r for r in csv.DictReader(f)}
  assert rows["num_generations=16"]["status"] == "failed (rc=3)"
  assert rows["num_generations=16"]["step"] == ""
  assert rows["num_generations=4"]["status"] == "ok"
  assert float(rows["num_generations=4"]["rl/reward_mean"]) == pytest.approx(4 * 0.28 * 2)
  # The summary is refreshed after every point: the second point saw the first one's failure.
  with open(root / "num_generations=4" / "seen_summary.csv") as f:
    seen = {r["point"]: r["status"] for r in csv.DictReader(f)}
  assert seen == {"num_generations=16": "failed (rc=3)", "num_generations=4": "pending"}


def test_summarize_only_reads_existing_runs(fake_env):
  root = fake_env / "R"
  point = root / "num_generations=8"
  point.mkdir(parents=True)
  (point / "metrics.jsonl").write_text('{"step": 5, "time": 0, "rl/reward_mean": 0.75}\n')
  res = run_sweep(fake_env, f"--config={fake_env}/fake_config.py", f"--workdir={root}",
                  "--sweep=rl.num_generations=4,8", "--train_module=fake_train", "--summarize_only")
  assert res.returncode == 0, res.stderr
  with open(root / "summary.csv") as f:
    rows = {r["point"]: r for r in csv.DictReader(f)}
  assert rows["num_generations=8"]["status"] == "done"
  assert rows["num_generations=8"]["rl/reward_mean"] == "0.75"
  assert rows["num_generations=4"]["status"] == "no metrics"
  assert not (root / "num_generations=4").exists()


def test_corrupt_metrics_file_is_reported_in_its_row(tmp_path):
  (tmp_path / "p1").mkdir()
  (tmp_path / "p1" / "metrics.jsonl").write_text("garbage\n{}\n")
  (tmp_path / "p2").mkdir()
  (tmp_path / "p2" / "metrics.jsonl").write_text('{"step": 2, "rl/r": 0.5}\n')
  rows = sweep.summary_rows(tmp_path, [{"a": 1}, {"a": 2}], ["p1", "p2"], ["ok", "ok"], ["rl/r"])
  assert rows[0]["status"].startswith("ok; unreadable metrics") and "metrics.jsonl:1" in rows[0]["status"]
  assert rows[1] == {"point": "p2", "a": 2, "status": "ok", "step": 2, "rl/r": 0.5}


def test_config_that_fails_to_load(tmp_path):
  (tmp_path / "bad.py").write_text("import does_not_exist_anywhere\n")
  with pytest.raises(sweep.SweepError, match="loading .*bad.py failed: ModuleNotFoundError"):
    sweep.load_config(str(tmp_path / "bad.py"))
  (tmp_path / "noget.py").write_text("x = 1\n")
  with pytest.raises(sweep.SweepError, match="defines no get_config"):
    sweep.load_config(str(tmp_path / "noget.py"))
