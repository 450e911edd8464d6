"""Suite `math`: loading (mmath AIME, JSONL / JSON / parquet / HF-layout dirs / tfds), the answer
extraction and math-verify grading, oracle 100% and null 0% through the real agent loop."""

import json

import pytest
import transformers

from synthagent_jax.evals import math_sets, runner
from synthagent_jax.evals import policies
from synthagent_jax.evals.suite import SuiteError, SuiteOptions
from synthagent_jax.rollout.agent_loop import AgentLoop, AgentLoopConfig
from synthagent_jax.evals.replay import ReplayEngine

ROLLOUT = {"max_turns": 4, "max_new_tokens": 64, "max_total_tokens": 2048}


@pytest.fixture(scope="module")
def tok():
  return transformers.AutoTokenizer.from_pretrained(policies.DEFAULT_TOKENIZER)


def _suite(dataset, **kw):
  return math_sets.MathSuite(SuiteOptions(dataset=dataset, **kw))


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def test_aime_sets_come_from_mmath_with_their_published_sizes():
  aime24, aime25 = _suite("aime24").load(), _suite("aime25").load()
  assert (len(aime24), len(aime25)) == (30, 15)
  # AIME 2024 I problem 1 (Aya's walk) has answer 204.
  assert aime24[0].data["answer"] == "204" and "Aya" in aime24[0].instruction
  assert len({t.id for t in aime24 + aime25}) == 45
  assert [t.id for t in _suite("aime24", offset=3, limit=2).load()] == ["aime24_3", "aime24_4"]


@pytest.mark.parametrize("text,expected", [
    ("so <answer>1</answer> no, <answer> \\frac{1}{2} </answer>", "\\frac{1}{2}"),
    ("hence \\boxed{\\frac{a}{b}} and finally \\boxed{x^{2}}", "x^{2}"),
    ("the answer is 42", None),
    ("\\boxed{unclosed", None),
])
def test_extract_final(text, expected):
  assert math_sets.extract_final(text) == expected


class _Traj:
  def __init__(self, text):
    self.messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": text}]


@pytest.mark.parametrize("reply,gold,ok", [
    ("<answer>0.5</answer>", "\\frac{1}{2}", True),
    ("\\boxed{204}", "204", True),
    ("<answer>203</answer>", "204", False),
    ("204", "204", False),  # no <answer> and no \boxed: nothing to grade
])
def test_score_grades_the_final_answer(tmp_path, reply, gold, ok):
  suite = _suite(_write_jsonl(tmp_path / "s.jsonl", [{"question": "q", "answer": gold}]))
  (task,) = suite.load()
  s = suite.score(task, _Traj(reply))
  assert (s.score, s.passed, s.verdict["correct"]) == (float(ok), ok, ok)


def test_local_formats_and_fields(tmp_path):
  rows = [{"problem": "1+1?", "final_answer": ["$2$"], "id": "a"},
          {"problem": "2+2?", "final_answer": ["$4$"], "id": "b"}]
  jsonl = _suite(_write_jsonl(tmp_path / "o.jsonl", rows)).load()
  assert [(t.id, t.instruction, t.data["answer"]) for t in jsonl] == [
      ("o.jsonl_a", "1+1?", "$2$"), ("o.jsonl_b", "2+2?", "$4$")]
  (tmp_path / "o.json").write_text(json.dumps({"data": rows}))
  assert [t.data["answer"] for t in _suite(str(tmp_path / "o.json")).load()] == ["$2$", "$4$"]
  (tmp_path / "c.jsonl").write_text(json.dumps({"q": "x?", "a": 7}) + "\n")
  (task,) = _suite(str(tmp_path / "c.jsonl"), extra={"question_field": "q",
                                                     "answer_field": "a"}).load()
  assert (task.instruction, task.data["answer"]) == ("x?", "7")
  # A named local set is looked up in --data_dir.
  _write_jsonl(tmp_path / "hmmt25.jsonl", [{"problem": "p", "answer": "3"}])
  assert len(_suite("hmmt25", data_dir=str(tmp_path)).load()) == 1


def test_hf_layout_directory_and_parquet(tmp_path):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top  # the evals extra
  import pyarrow.parquet as pq
  (tmp_path / "ds" / "data").mkdir(parents=True)
  pq.write_table(pa.table({"problem": ["a?", "b?"], "answer": ["1", "2"]}),
                 tmp_path / "ds" / "data" / "test-00000-of-00001.parquet")
  pq.write_table(pa.table({"problem": ["c?"], "answer": ["3"]}),
                 tmp_path / "ds" / "data" / "train-00000-of-00001.parquet")
  assert [t.data["answer"] for t in _suite(str(tmp_path / "ds")).load()] == ["1", "2"]
  assert [t.data["answer"] for t in _suite(str(tmp_path / "ds"), extra={"split": "train"}).load()
          ] == ["3"]


def test_hf_layout_directory_of_jsonl(tmp_path):
  (tmp_path / "ds").mkdir()
  _write_jsonl(tmp_path / "ds" / "test.jsonl", [{"question": "a?", "answer": "1"}])
  _write_jsonl(tmp_path / "ds" / "train.jsonl", [{"question": "b?", "answer": "2"}])
  assert [t.instruction for t in _suite(str(tmp_path / "ds")).load()] == ["a?"]


@pytest.mark.parametrize("content,message", [
    ('{"question": "a", "answer": "1"}\n{"question": "b", "answer": \n', "bad.jsonl:2: not valid JSON"),
    ('{"question": "a", "answer": "1"}\n["x"]\n', "bad.jsonl:2: expected a JSON object"),
    ('{"question": "a"}\n', "bad.jsonl:1: record has no answer field"),
    ('{"question": "", "answer": "1"}\n', "bad.jsonl:1: question must be a non-empty string"),
])
def test_malformed_file_names_file_and_line(tmp_path, content, message):
  (tmp_path / "bad.jsonl").write_text(content)
  with pytest.raises(SuiteError, match=message.replace(".", r"\.")):
    _suite(str(tmp_path / "bad.jsonl")).load()


def test_bad_datasets(tmp_path):
  with pytest.raises(SuiteError, match="unknown math dataset 'aime23'"):
    _suite("aime23").load()
  with pytest.raises(SuiteError, match="'olympiadbench' is not shipped"):
    _suite("olympiadbench", data_dir=str(tmp_path)).load()
  with pytest.raises(SuiteError, match="needs --dataset"):
    math_sets.MathSuite(SuiteOptions())
  with pytest.raises(SuiteError, match="unknown options"):
    _suite("aime24", extra={"qestion_field": "x"})


def test_tfds_data_source(tmp_path):
  """A dataset prepared by tensorflow-datasets' own builder (array_record, no TensorFlow)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  # the evals extra

  class TinyMathSet(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
          {"question": tfds.features.Text(), "answer": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {"test": self._generate_examples()}

    def _generate_examples(self):
      for i in range(3):
        yield i, {"question": f"{i} + 1 = ?", "answer": str(i + 1)}

  TinyMathSet(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  tasks = _suite("tfds:tiny_math_set", data_dir=str(tmp_path)).load()
  assert sorted((t.instruction, t.data["answer"]) for t in tasks) == [
      ("0 + 1 = ?", "1"), ("1 + 1 = ?", "2"), ("2 + 1 = ?", "3")]
  with pytest.raises(SuiteError, match="tfds:tiny_math_set split 'train'"):
    _suite("tfds:tiny_math_set:train", data_dir=str(tmp_path)).load()


@pytest.mark.parametrize("policy,accuracy", [("oracle", 1.0), ("null", 0.0)])
def test_oracle_and_null_through_the_agent_loop(tmp_path, tok, policy, accuracy):
  suite = _suite("aime25", limit=4)
  pol = policies.make_policy(policy, suite=suite)
  res = runner.run_suite(suite, pol, ROLLOUT, str(tmp_path / "out"), k=2, progress=False)
  assert res.results["metrics"] == {"accuracy": accuracy, "avg@2": accuracy, "pass@2": accuracy}
  assert res.results["statuses"] == {"answered": 8}


def test_single_turn_user_stops_after_a_message(tok):
  suite = _suite("aime24", limit=1)
  (task,) = suite.load()
  loop = AgentLoop(ReplayEngine(tok, ["Let me think about it."]), tok, suite.tool_env(),
                   suite.user_env(None), AgentLoopConfig(**ROLLOUT, **suite.loop_overrides()))
  (traj,) = loop.run([task], 1)
  assert traj.status == "user_stopped" and traj.num_turns == 1
  assert suite.score(task, traj).score == 0.0
