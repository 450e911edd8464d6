"""launch.builders data loading: `data.holdout_domains` drops whole domains from training only."""

import json

import ml_collections
import pytest

from configs import base
from launch import builders
from launch import plan
from synthagent_jax.synthesis import offline


def _write(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


@pytest.fixture(scope="module")
def records():
  return list(offline.generate(32, seed=5))  # 4 tasks of each of the 8 domains


def _config(tmp_path, records, holdout):
  c = base.base_config()
  c.data.train_file = _write(tmp_path / "train.jsonl", records[:24])
  c.data.eval_file = _write(tmp_path / "eval.jsonl", records[24:])
  c.data.holdout_domains = holdout
  return c


def test_holdout_domains_leave_training_and_stay_in_eval(tmp_path, records):
  train, evals = builders.task_splits(_config(tmp_path, records, "clinic, weather"))
  in_train = [r for r in records[:24]]
  assert {t.domain for t in train} == {r["domain"] for r in in_train} - {"clinic", "weather"}
  assert len(train) == sum(r["domain"] not in ("clinic", "weather") for r in in_train)
  assert {t.id for t in evals} == {r["id"] for r in records[24:]}
  assert {"clinic", "weather"} <= {t.domain for t in evals}


def test_no_holdout_keeps_everything(tmp_path, records):
  train, _ = builders.task_splits(_config(tmp_path, records, ""))
  assert len(train) == 24


def test_tuple_form_and_errors(tmp_path, records):
  assert builders.holdout_domain_names(("clinic", " travel ")) == ("clinic", "travel")
  with pytest.raises(ValueError, match=r"\['clnic'\] appear in no task"):
    builders.task_splits(_config(tmp_path, records, "clnic"))
  everything = ",".join(sorted({r["domain"] for r in records}))
  with pytest.raises(ValueError, match="leaves no training task"):
    builders.task_splits(_config(tmp_path, records, everything))


def test_config_key_overridable_from_the_command_line():
  c = base.base_config()
  assert isinstance(c.data.holdout_domains, str)
  locked = ml_collections.ConfigDict(c)
  locked.lock()
  locked.data.holdout_domains = "clinic,weather"  # what --config.data.holdout_domains=... sets
  assert builders.holdout_domain_names(locked.data.holdout_domains) == ("clinic", "weather")


@pytest.mark.parametrize("from_scratch", [True, False])
def test_train_plan_and_eval_build_one_model_config(tmp_path, from_scratch):
  """launch.train, launch.plan and the eval of a training workdir (its saved config.json) build
  the same ModelConfig: one builder, models.ModelConfig.from_config."""
  import transformers  # pylint: disable=g-import-not-at-top
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from synthagent_jax import models  # pylint: disable=g-import-not-at-top
  from synthagent_jax.evals import policies  # pylint: disable=g-import-not-at-top
  c = tiny.get_config()
  tok = transformers.AutoTokenizer.from_pretrained(c.tokenizer)
  if not from_scratch:  # a checkpoint's config.json gives the dims; the section its numerics
    (tmp_path / "config.json").write_text(json.dumps(
        models.ModelConfig.from_config(c.model, tok).replace(num_layers=3).to_hf_dict()))
    c.model.update(dict(from_scratch=False, checkpoint=str(tmp_path), remat="full"))
  built = builders.model_config(c, tok)
  assert built.num_layers == (4 if from_scratch else 3)
  assert (built.attention, built.attention_chunk) == ("blocked", 128)
  assert built.remat == ("none" if from_scratch else "full")
  assert plan.model_config(c) == built
  assert policies.run_model_config(json.loads(json.dumps(c.to_dict())), tok) == built
