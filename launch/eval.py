"""Score a policy on an outside benchmark through the project's own agent loop.

    python -m launch.eval --suite=math --dataset=aime24 --policy=checkpoint:/ckpt/run --out=runs/ev
    python -m launch.eval --suite=bfcl_multi_turn --category=base --policy=sglang:http://127.0.0.1:30000 --out=DIR
    python -m launch.eval --suite=tau2_airline --policy=oracle --out=DIR            # adapter self-test
    python -m launch.eval --suite=tau2_airline --policy=runs/tiny --user=openai:http://127.0.0.1:8000/v1:qwen --out=DIR

Writes DIR/results.json, DIR/episodes.jsonl and DIR/run.json (evals/runner.py), prints a markdown
table. Rerunning the same command resumes. --config supplies the rollout section (turn and token
limits, temperature) and eval_bench.<suite> options; default configs/base.py. See docs/evals.md.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_SUITE = flags.DEFINE_string("suite", None, "Benchmark suite: math | bfcl_multi_turn | tau2_airline.")
_POLICY = flags.DEFINE_string(
    "policy", None, "checkpoint:PATH | PATH | sglang:URL[,URL] | openai:BASE_URL:MODEL | oracle | null")
_OUT = flags.DEFINE_string("out", None, "Output directory (results.json, episodes.jsonl).")
_K = flags.DEFINE_integer("k", 1, "Episodes per task.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Tasks to run (0 = all).")
_OFFSET = flags.DEFINE_integer("offset", 0, "Tasks to skip first.")
_CATEGORY = flags.DEFINE_string("category", None, "Suite subset (BFCL: base,miss_func,...).")
_DATASET = flags.DEFINE_string("dataset", None, "math: aime24 | aime25 | hmmt25 | olympiadbench | FILE | tfds:NAME.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where benchmark files not shipped by a package live.")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Tokenizer directory (default: the checkpoint's, else data/tokenizer).")
_USER = flags.DEFINE_string("user", None, "User simulator LLM: openai:BASE_URL:MODEL | policy | scripted:REPLY.")
_OPTION = flags.DEFINE_multi_string(
    "option", [], "Suite option KEY=VALUE (repeatable; VALUE parsed as JSON when it is), e.g. "
    "--option=question_field=problem; overrides the config's eval_bench.<suite>.")
_CHUNK = flags.DEFINE_integer("chunk_size", 16, "Tasks per batched agent-loop run.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "In-process compute dtype.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file whose rollout section (and eval_bench.<suite>) the evaluation "
    "uses (default: configs/base.py's defaults).", lock_config=True)


def _extra(config, suite: str, options: list[str]) -> dict:
  """Suite options: the config's eval_bench.<suite> section, then each --option=KEY=VALUE."""
  bench = config.get("eval_bench") if hasattr(config, "get") else None
  section = bench.get(suite) if bench is not None and hasattr(bench, "get") else None
  out = {} if section is None else (section.to_dict() if hasattr(section, "to_dict")
                                    else dict(section))
  for item in options:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise ValueError(f"--option={item!r}: expected KEY=VALUE")
    try:
      out[key.strip()] = json.loads(value)
    except json.JSONDecodeError:
      out[key.strip()] = value
  return out


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.WARNING)
  logging.getLogger("absl").setLevel(logging.WARNING)
  # Flag and suite checks first (cheap), then the policy (may load a model or reach a server).
  from synthagent_jax import evals  # pylint: disable=g-import-not-at-top,unused-import  # registers
  from synthagent_jax.evals import policies  # pylint: disable=g-import-not-at-top
  from synthagent_jax.evals import suite as suite_lib  # pylint: disable=g-import-not-at-top
  from configs import base  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value if _CONFIG.value is not None else base.base_config()
  policy = None
  try:  # setup: every problem here is the user's input, one line each
    for name, flag in (("--suite", _SUITE), ("--policy", _POLICY), ("--out", _OUT)):
      if not flag.value:
        raise ValueError(f"{name} is required")
    if _K.value < 1:
      raise ValueError(f"--k must be >= 1, got {_K.value}")
    if _DATA_DIR.value and not os.path.isdir(_DATA_DIR.value):
      raise ValueError(f"--data_dir={_DATA_DIR.value!r} is not a directory")
    policies.parse_spec(_POLICY.value)
    policies.check_user_spec(_USER.value)
    factory = suite_lib.get(_SUITE.value)
    options = suite_lib.SuiteOptions(
        category=_CATEGORY.value, dataset=_DATASET.value, offset=_OFFSET.value,
        limit=_LIMIT.value, data_dir=_DATA_DIR.value,
        extra=_extra(config, _SUITE.value, _OPTION.value))
    suite = factory(options)
    tasks = suite.load()
    from synthagent_jax.evals import runner  # pylint: disable=g-import-not-at-top  # loads JAX
    policy = policies.make_policy(_POLICY.value, suite=suite, tokenizer=_TOKENIZER.value,
                                  dtype=_DTYPE.value)
    user_llm = policies.make_user_llm(_USER.value, policy, suite)
  except (ValueError, OSError) as e:  # SuiteError, PolicyError are ValueErrors
    if policy is not None:
      policy.close()
    sys.exit(f"error: {' '.join(str(e).split())}")
  try:  # the run: only its known failures are one line; anything else is a bug to see in full
    result = runner.run_suite(suite, policy, config.rollout, _OUT.value, k=_K.value,
                              tasks=tasks, user_llm=user_llm, chunk_size=_CHUNK.value,
                              options=options, user_spec=_USER.value or "",
                              seed=config.seed)
  except (suite_lib.SuiteError, policies.PolicyError, runner.RunError, OSError) as e:
    sys.exit(f"error: {' '.join(str(e).split())}")
  finally:
    policy.close()
  print(runner.markdown_table(result.results))
  print(f"\nwrote {os.path.join(_OUT.value, runner.RESULTS)} and "
        f"{os.path.join(_OUT.value, runner.EPISODES)}")


if __name__ == "__main__":
  app.run(main)
