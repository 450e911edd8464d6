"""Every config file parses, overrides reach it, a mistyped key fails, bad setups fail in one line."""

import glob
import importlib.util
import os
import subprocess
import sys

import ml_collections
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                      if not p.endswith("__init__.py"))


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_parses(path):
  module = _load(path)
  if not hasattr(module, "get_config"):
    assert os.path.basename(path) == "base.py"
    return
  config = module.get_config()
  assert isinstance(config, ml_collections.ConfigDict)
  assert "python -m launch." in module.__doc__, "docstring must hold the launch command"


def _flat(node, prefix=""):
  out = {}
  for k, v in node.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


# The keys base.smoke sets: a smoke variant differs from its config in these only.
SMOKE_KEYS = {
    "model.checkpoint", "model.from_scratch", "model.vocab_size", "model.hidden_size",
    "model.intermediate_size", "model.num_layers", "model.num_heads", "model.num_kv_heads",
    "model.head_dim", "tokenizer", "mesh.shape", "data.train_file", "data.eval_file",
    "rollout.max_turns", "rollout.max_new_tokens", "rollout.max_total_tokens", "rl.num_steps",
    "rl.tasks_per_step", "rl.num_generations", "rl.minibatch_tasks", "rl.micro_batch_size",
    "sft.num_steps", "sft.batch_size", "eval.num_tasks", "eval.k", "eval.suites_limit",
    "checkpoint.every_steps",
}
TRAIN_CONFIGS = [p for p in CONFIG_FILES if "base" not in p and "synth_" not in p]


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_smoke_variant_is_the_same_recipe_small(path):
  module = _load(path)
  if not hasattr(module, "get_config"):
    return
  full, small = module.get_config().to_dict(), module.get_config("smoke").to_dict()
  assert module.get_config(None).to_dict() == full
  full, small = _flat(full), _flat(small)
  assert set(full) == set(small)
  changed = {k for k in full if full[k] != small[k]}
  assert changed, "the smoke variant changes nothing"
  if path in TRAIN_CONFIGS:
    assert changed <= SMOKE_KEYS, changed - SMOKE_KEYS
  with pytest.raises(ValueError, match="unknown config variant 'huge'"):
    module.get_config("huge")


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=os.path.basename)
def test_smoke_variant_builds_on_one_cpu_device(path):
  """The smoke variant passes launch.train's checks (given endpoints) and every room's section
  builds: model, learner, loop, optimizer, tasks."""
  import transformers  # pylint: disable=g-import-not-at-top
  from launch import builders  # pylint: disable=g-import-not-at-top
  from launch import train  # pylint: disable=g-import-not-at-top
  config = _load(path).get_config("smoke")
  for section in (config.env.llm, config.reward.judge_llm):  # endpoints are the user's to give
    section.base_url, section.model = "http://127.0.0.1:1/v1", "m"
  config.engine.weights_dir = "/tmp/unused"
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    train.check_config(config)  # every section, the task files, the prompt fits the context
    tok = transformers.AutoTokenizer.from_pretrained(config.tokenizer)
    model_cfg = builders.model_config(config, tok)
    train, evals = builders.task_splits(config)
  finally:
    os.chdir(cwd)
  assert (model_cfg.num_layers, model_cfg.hidden_size, model_cfg.vocab_size) == (1, 32, len(tok))
  assert builders.rl_learner_config(config).minibatch_size == 4
  assert builders.agent_loop_config(config).max_turns == 2
  builders.optimizer(config.optim, 2)
  assert train and evals


def test_smoke_variants_plan_on_one_cpu_device():
  """The real `launch.train --config=X.py:smoke --dry_run` for tiny, and the memory plan of every
  training config's smoke variant, in one process with one CPU device (as a user's run)."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  names = [os.path.basename(p)[:-3] for p in TRAIN_CONFIGS]
  script = ("import sys, importlib; from launch import plan\n"
            "for name in sys.argv[1:]:\n"
            "  p = plan.plan(importlib.import_module('configs.' + name).get_config('smoke'))\n"
            "  print(name, p['model'].num_layers, p['model'].hidden_size, p['fits'])\n")
  proc = subprocess.run([sys.executable, "-c", script, *names], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split("\n")[:-1] == [f"{n} 1 32 True" for n in names], proc.stdout
  proc = subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/tiny.py:smoke",
                         "--dry_run"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                        env=env)
  assert proc.returncode == 0 and "L=1 D=32" in proc.stdout, proc.stderr[-2000:]


def _run_train(*args):
  return subprocess.run([sys.executable, "-m", "launch.train", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


def test_qwen_3b_without_checkpoint_fails_in_one_line(tmp_path):
  proc = _run_train("--config=configs/qwen_3b.py", f"--workdir={tmp_path}")
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1, proc.stderr
  assert "--config.model.checkpoint" in lines[0]
  assert "Traceback" not in proc.stderr


def test_mistyped_override_fails(tmp_path):
  proc = _run_train("--config=configs/tiny.py", f"--workdir={tmp_path}", "--config.rl.lrr=1")
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: --config.rl.lrr: the config has no such "
                                                 "key"), proc.stderr


def test_derived_minibatch_size_is_not_a_second_key(tmp_path):
  # Sequences per update are rl.minibatch_tasks x rl.num_generations: one knob, one name.
  proc = _run_train("--config=configs/tiny.py", f"--workdir={tmp_path}",
                    "--config.rl.minibatch_size=16")
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith(
      "error: --config.rl.minibatch_size: the config has no such key"), proc.stderr


def test_override_reaches_config(tmp_path):
  # A missing checkpoint directory is reported with the overridden value: the override reached it.
  proc = _run_train("--config=configs/qwen_3b.py", f"--workdir={tmp_path}",
                    "--config.model.checkpoint=/nonexistent/qwen")
  assert proc.returncode != 0
  assert "/nonexistent/qwen" in proc.stderr and "Traceback" not in proc.stderr


def test_negative_kl_coef_fails_before_work(tmp_path):
  proc = _run_train("--config=configs/tiny.py", f"--workdir={tmp_path}", "--config.rl.kl_coef=-0.1")
  assert proc.returncode != 0
  assert "rl.kl_coef" in proc.stderr and "Traceback" not in proc.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_unknown_credit_fails_before_work(tmp_path):
  proc = _run_train("--config=configs/tiny.py", f"--workdir={tmp_path}", "--config.rl.credit=item")
  assert proc.returncode != 0
  assert "rl.credit must be one of episode, turn, got 'item'" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_greedy_rollouts_for_rl_fail_before_work(tmp_path):
  proc = _run_train("--config=configs/tiny.py", f"--workdir={tmp_path}",
                    "--config.rollout.temperature=0.0")
  assert proc.returncode != 0
  assert "rollout.temperature" in proc.stderr and "Traceback" not in proc.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_learner_trains_the_rollout_temperature():
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from launch import builders  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.rollout.temperature = 0.7
  learner_cfg = builders.rl_learner_config(config)
  assert (learner_cfg.temperature, learner_cfg.logprob_temperature) == (0.7, 0.7)
  config.rollout.temperature = 0.0  # greedy: the sampler's temperature, passed through as is
  learner_cfg = builders.rl_learner_config(config)
  assert (learner_cfg.temperature, learner_cfg.logprob_temperature) == (0.0, 1.0)


def test_greedy_sampler_logprobs_are_what_the_learner_scores_at_temperature_0():
  """A greedy sampler reports log-probs of the untempered softmax; LearnerConfig(temperature=0)
  scores exactly those (so old/sampler log-prob ratios of greedy rollouts are 1)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from synthagent_jax import models  # pylint: disable=g-import-not-at-top
  from synthagent_jax.inference import engine as engine_lib  # pylint: disable=g-import-not-at-top
  from synthagent_jax.inference import sampler  # pylint: disable=g-import-not-at-top
  from synthagent_jax.rl import learner  # pylint: disable=g-import-not-at-top
  from synthagent_jax.rl import state as state_lib  # pylint: disable=g-import-not-at-top
  model = models.init_model(models.ModelConfig.tiny(vocab_size=128), seed=0)
  state = nnx.state(model, nnx.Param)  # sharper than the init: greedy far from ties
  nnx.update(model, jax.tree.map(lambda p: p * 10.0 if p.ndim >= 2 else p, state))
  prompt = [5, 17, 3, 9]
  out = sampler.JaxEngine(model).generate(
      [prompt], engine_lib.SamplingParams(max_new_tokens=6, temperature=0.0))[0]
  ids = jnp.asarray([prompt + out.token_ids], jnp.int32)
  graphdef, params = state_lib.split_params(model)
  cfg = learner.LearnerConfig(temperature=0.0)
  logp_bt, _ = learner.token_logprobs(graphdef, params, ids, jnp.ones_like(ids),
                                      cfg.logprob_temperature)
  np.testing.assert_allclose(np.asarray(logp_bt[0, len(prompt):]), out.logprobs, atol=1e-4)
  tempered, _ = learner.token_logprobs(graphdef, params, ids, jnp.ones_like(ids), 0.5)
  assert not np.allclose(np.asarray(tempered[0, len(prompt):]), out.logprobs, atol=1e-3)


def test_adversarial_user_is_an_llm_user_switch():
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from launch import builders  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  assert not builders.user(config).__dict__.get("adversarial")  # off by default, rule user
  config.env.adversarial_user = True
  with pytest.raises(ValueError, match="env.adversarial_user=True needs env.user='llm'"):
    builders.user(config)
  config.env.user = "llm"
  config.env.llm.base_url, config.env.llm.model = "http://127.0.0.1:1/v1", "m"
  assert builders.user(config).adversarial is True


@pytest.mark.slow  # a real launch up to the learner config (~50 s on the shared CPU)
def test_bad_minibatch_tasks_fails_in_one_line(tmp_path):
  # Caught when the learner config is built (after tasks load, before any model or checkpoint);
  # the test process's 8 fake CPU devices are left out so the 1-device mesh builds.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/tiny.py",
                         f"--workdir={tmp_path}", "--config.rl.minibatch_tasks=0"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert lines and "rl.minibatch_tasks must be" in lines[-1], proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))
# --- every bad override: one line naming the key, before any work (issue 19 item 10) -------------

BAD_OVERRIDES = [
    ("rl.micro_batch_size=0", "rl.micro_batch_size must be >= 1"),
    ("rl.minibatch_tasks=3", "rl.minibatch_tasks=3 does not divide rl.tasks_per_step=4"),
    ("rl.num_steps=-5", "rl.num_steps must be >= 0"),
    ("rl.tasks_per_step=0", "rl.tasks_per_step must be >= 1"),
    ("rl.num_generations=0", "rl.num_generations must be >= 1"),
    ("rl.ppo_epochs=0", "rl.ppo_epochs must be >= 1"),
    ("rl.clip_low=1.5", "rl.clip_low"),
    ("rl.clip_high=-0.1", "rl.clip_high must be >= 0"),
    ("rl.agg=mean", "rl.agg must be one of"),
    ("rl.advantage=ppo", "rl.advantage must be one of"),
    ("rl.is_cap=-1.0", "rl.is_cap must be >= 0"),
    ("rl.kl_coef=nan", "rl.kl_coef must be a finite number"),
    ("rl.micro_batch_size=5", "= 16 rollouts per update is not a multiple of rl.micro_batch_size=5"),
    ("rl.minibatch_tasks=0", "rl.minibatch_tasks must be >= 1"),
    ("checkpoint.every_steps=0", "checkpoint.every_steps must be >= 1"),
    ("checkpoint.keep=0", "checkpoint.keep must be >= 1"),
    ("log.every_steps=0", "log.every_steps must be >= 1"),
    ("eval.k=0", "eval.k must be >= 1"),
    ("eval.every_steps=-1", "eval.every_steps must be >= 0"),
    ("eval.num_tasks=-3", "eval.num_tasks must be >= 0"),
    ("rollout.max_total_tokens=10", "rollout.max_total_tokens=10 is too small"),
    ("rollout.max_turns=0", "rollout.max_turns must be >= 1"),
    ("rollout.max_new_tokens=0", "rollout.max_new_tokens must be >= 1"),
    ("rollout.max_tool_response_tokens=0", "rollout.max_tool_response_tokens must be >= 1"),
    ("rollout.top_p=1.5", "rollout.top_p must be in (0, 1]"),
    ("rollout.top_k=-1", "rollout.top_k must be >= 0"),
    ("optim.lr=-0.0001", "optim.lr must be > 0"),
    ("sft.lr=-0.003", "sft.lr must be > 0"),
    ("sft.num_steps=-1", "sft.num_steps must be >= 0"),
    ("sft.batch_size=0", "sft.batch_size must be >= 1"),
    ("optim.schedule=linear", "optim.schedule must be one of"),
    ("sft.schedule=linear", "sft.schedule must be one of"),
    ("engine.min_batch=0", "engine.min_batch must be >= 1 or -1"),
    ("optim.warmup_steps=-1", "optim.warmup_steps must be >= 0"),
    ("optim.b1=1.0", "optim.b1/b2 must be in [0, 1)"),
    ("optim.weight_decay=-0.1", "optim.weight_decay must be >= 0"),
    ("env.user=robot", "env.user must be one of rule, llm"),
    ("env.user=llm", "env.llm.base_url is not set"),
    ("reward.judge=gpt", "reward.judge must be one of none, http, jax"),
    ("reward.judge=jax", "reward.judge='jax' needs --config.reward.judge_checkpoint"),
    ("reward.aggregation=mean", "reward.aggregation must be one of"),
    ("model.dtype=float8", "model.dtype must be one of"),
    ("model.remat=some", "model.remat must be one of"),
    # configs/tiny.py starts from a checkpoint, whose config.json gives the dims: from scratch, the
    # section's own dims are checked.
    ("model.from_scratch=True model.num_layers=0", "model.num_layers must be a positive int"),
    ("mesh.shape=(0,1,1)", "mesh.shape entries must be positive"),
]


@pytest.fixture(scope="module")
def train_main():
  """launch.train's real main, run in this process (one import, then cheap calls per case); the
  heavy part (train_loop.train) is replaced by a marker a bad config must never reach."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from launch import train  # pylint: disable=g-import-not-at-top
  from launch import train_loop  # pylint: disable=g-import-not-at-top

  class ReachedTraining(Exception):
    pass

  def fake_train(config, workdir):
    raise ReachedTraining(workdir)

  def run(workdir, *overrides):
    saved_train, saved_argv = train_loop.train, sys.argv
    # The memory-fit check builds tiny's 1-device mesh on this process's devices, and another
    # test module may have given the process 8 simulated ones: these cases test check_config
    # (tests/launch/test_plan.py tests the fit check), so it is off here.
    # No compilation cache: this process's JAX config stays as the other tests expect it.
    argv = ["train", "--config=configs/tiny.py", f"--workdir={workdir}",
            "--config.mesh.device_memory_gib=0", "--config.compile_cache_dir=",
            *[f"--config.{o}" for o in overrides]]
    train_loop.train, sys.argv = fake_train, argv  # config_flags reads overrides from sys.argv
    flags.FLAGS.unparse_flags()
    try:
      flags.FLAGS(argv)
      train.main(["train"])
    except SystemExit as e:
      return e.code
    finally:
      train_loop.train, sys.argv = saved_train, saved_argv
      flags.FLAGS.unparse_flags()
      for name in [n for n in flags.FLAGS if n.startswith("config.")]:
        delattr(flags.FLAGS, name)  # each parse defines its override flags anew
    raise AssertionError("main returned without an error")

  run.ReachedTraining = ReachedTraining
  cwd = os.getcwd()
  os.chdir(ROOT)
  yield run
  os.chdir(cwd)


@pytest.mark.parametrize("override,expected", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_override_is_one_line_naming_the_key_before_work(train_main, tmp_path, override,
                                                             expected):
  message = train_main(tmp_path / "wd", *override.split())
  assert isinstance(message, str) and message.startswith("error: "), message
  assert "\n" not in message.strip(), message
  assert expected in message, message
  assert override.split()[-1].split("=")[0] in message  # names the key
  assert not (tmp_path / "wd").exists()  # nothing written: no work was started


def test_good_tiny_config_reaches_training(train_main, tmp_path):
  with pytest.raises(train_main.ReachedTraining):
    train_main(tmp_path / "wd")
  with pytest.raises(train_main.ReachedTraining):  # an SFT/eval-only run is legitimate
    train_main(tmp_path / "wd", "rl.num_steps=0")


def test_cleartext_key_to_a_remote_judge_fails_before_work(train_main, tmp_path, monkeypatch):
  monkeypatch.setenv("OPENAI_API_KEY", "sk-canary")
  message = train_main(tmp_path / "wd", "reward.judge=http",
                       "reward.judge_llm.base_url=http://10.9.8.7:30000/v1",
                       "reward.judge_llm.model=m")
  assert message.startswith("error: reward.judge_llm.base_url: refusing to send the API key")
  assert "sk-canary" not in message


def test_division_by_zero_override_through_the_cli_is_one_line(tmp_path):
  proc = _run_train("--config=configs/tiny.py", f"--workdir={tmp_path}/wd",
                    "--config.rl.micro_batch_size=0")
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert lines == ["error: rl.micro_batch_size must be >= 1, got 0"], proc.stderr
  assert not os.path.exists(os.path.join(tmp_path, "wd"))
