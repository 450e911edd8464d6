"""Small pieces: JSON extraction, the leak check, near-duplicates, the difficulty filter, the
id-hash split, the crash-safe store, teacher retries."""

import json

import pytest

from synthagent_jax.llm import scripted
from synthagent_jax.synthesis import filters
from synthagent_jax.synthesis import jsonx
from synthagent_jax.synthesis import seeds as seeds_lib
from synthagent_jax.synthesis import split
from synthagent_jax.synthesis import stage_underspecify
from synthagent_jax.synthesis import store
from synthagent_jax.synthesis import teacher as teacher_lib


@pytest.mark.parametrize("text,want", [
    ('{"a": 1}', {"a": 1}),
    ('Sure!\n```json\n{"a": [1, 2,],}\n```\nBye', {"a": [1, 2]}),
    ('<think>{"draft": 0}</think> final: {"a": "x}"} done', {"a": "x}"}),
    ("Here: {'a': 1}".replace("'", '"'), {"a": 1}),
    ('{"a": True, "b": None}', {"a": True, "b": None}),
])
def test_extract_json(text, want):
  assert jsonx.extract_json(text) == want


@pytest.mark.parametrize("text,reason", [
    ('```json\n{"tools": [{"name": "x", ', "malformed_json"),
    ("I cannot help with that.", "no_json"),
    ("", "no_json"),
    ("[1, 2]", "wrong_json_type"),
])
def test_extract_json_failures(text, reason):
  with pytest.raises(jsonx.JsonExtractError) as e:
    jsonx.extract_json(text)
  assert e.value.reason == reason


def test_leak_check_ignores_case_spacing_and_punctuation():
  info = {"account_number": "CH-4471", "date": "2025-03-14"}
  assert stage_underspecify.leaked_values("Use account ch 4471 please", info) == ["account_number"]
  assert stage_underspecify.leaked_values("Fly on 2025 03 14.", info) == ["date"]
  assert stage_underspecify.leaked_values("Use my account CH-44712", info) == []
  with pytest.raises(teacher_lib.Reject, match="leaks_private_value"):
    stage_underspecify.parse_reply({"instruction": "Move money from CH-4471.",
                                    "private_info": info})
  with pytest.raises(teacher_lib.Reject, match="nothing_withheld"):
    stage_underspecify.parse_reply({"instruction": "Move money.", "private_info": {}})


def _task(tid, instruction, tools=("a", "b")):
  return {"id": tid, "instruction": instruction,
          "tools": [{"function": {"name": n}} for n in tools]}


def test_near_duplicates():
  index = filters.NearDupIndex(threshold=0.6)
  index.add(_task("t1", "Book Maria Lopez on a flight from Denver to Chicago."))
  with pytest.raises(teacher_lib.Reject, match="near_duplicate"):
    index.check(_task("t2", "Book Maria Lopez on a flight from Denver to Chicago please."))
  index.check(_task("t3", "Find a hotel in Chicago near the airport for Maria Lopez."))
  index.check(_task("t4", "Cancel my gym membership at the downtown club."))


def test_difficulty_filter_keeps_strictly_between_zero_and_one():
  rates = {"easy": 1.0, "hard": 0.0, "mid": 0.25}
  tasks = [{"id": k} for k in rates]
  kept, dropped = filters.difficulty_filter(tasks, lambda t, n: rates[t["id"]], num_samples=4)
  assert [t["id"] for t in kept] == ["mid"]
  assert dropped == {"too_easy": ["easy"], "too_hard": ["hard"]}
  with pytest.raises(ValueError, match="expected a value in"):
    filters.difficulty_filter(tasks, lambda t, n: 2.0)


def test_split_is_stable_and_near_fraction():
  ids = [f"task-{i}" for i in range(4000)]
  held = [i for i in ids if split.is_heldout(i, 0.2)]
  assert 0.17 < len(held) / len(ids) < 0.23
  assert held == [i for i in ids if split.is_heldout(i, 0.2)]
  assert set(held) <= {i for i in ids if split.is_heldout(i, 0.3)}  # nested fractions
  assert split.split_paths("d/x.jsonl") == ("d/x_train.jsonl", "d/x_eval.jsonl")
  with pytest.raises(ValueError):
    split.is_heldout("a", 1.5)


def test_store_repairs_only_a_torn_last_line(tmp_path):
  p = str(tmp_path / "o.jsonl")
  with store.JsonlAppender(p) as out:
    out.write({"id": "a"})
    out.write({"id": "b"})
  with open(p, "a") as f:
    f.write('{"id": "c", "x": [1, 2')  # killed mid-write
  assert [r["id"] for r in store.load_done(p)] == ["a", "b"]
  with store.JsonlAppender(p) as out:
    out.write({"id": "c"})
  assert [r["id"] for r in store.load_done(p)] == ["a", "b", "c"]
  with open(p, "w") as f:
    f.write('{"id": "a"}\nnot json\n{"id": "b"}\n')
  with pytest.raises(ValueError, match=":2: malformed JSON"):
    store.load_done(p)


def test_ask_json_retries_with_reason_and_counts():
  teacher = scripted.ScriptedLLM(replies=["no json here", '{"y": 2}', '{"x": 1}', '{"y": 3}'])

  def parse(i, obj):
    if "x" not in obj:
      raise teacher_lib.Reject("missing_field", "x")
    return obj["x"]

  convs = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
  answers = teacher_lib.ask_json(teacher, convs, parse, max_retries=1)
  assert answers[0].ok and answers[0].value == 1 and answers[0].retries == ["no_json"]
  assert not answers[1].ok and answers[1].reason == "missing_field"
  assert answers[1].retries == ["missing_field"]
  retry_prompt = teacher.calls[2][-1]["content"]
  assert "no_json" in retry_prompt


def test_seeds_are_deterministic_and_distinct():
  a = seeds_lib.make_seeds(50, seed=1)
  assert a == seeds_lib.make_seeds(50, seed=1)
  assert len({(s["persona"], s["domain"]) for s in a}) == 50
  assert len({s["id"] for s in a}) == 50


def test_truncated_reply_is_malformed_not_its_inner_object():
  text = '```json\n{"tools": [{"name": "a", "parameters": {"type": "object"}}, {"name": "b'
  with pytest.raises(jsonx.JsonExtractError) as e:
    jsonx.extract_json(text)
  assert e.value.reason == "malformed_json"


def test_unexpected_json_shapes_are_rejections_not_crashes():
  from synthagent_jax.synthesis import stage_rubric, stage_tools_task  # pylint: disable=g-import-not-at-top
  teacher = scripted.ScriptedLLM(default='{"tools": "not a list of tools"}')
  answers = teacher_lib.ask_json(teacher, [[{"role": "user", "content": "x"}]],
                                 lambda i, obj: stage_tools_task.parse_reply(obj), max_retries=0)
  assert answers[0].reason == "bad_field"
  teacher = scripted.ScriptedLLM(default='{"tools": [1, 2, 3]}')
  answers = teacher_lib.ask_json(teacher, [[{"role": "user", "content": "x"}]],
                                 lambda i, obj: stage_tools_task.parse_reply(obj), max_retries=0)
  assert answers[0].reason == "bad_field"
  with pytest.raises(teacher_lib.Reject, match="weight"):
    stage_rubric.parse_rubric({s: [{"text": "t", "weight": "heavy"}] for s in
                               ("subgoals", "interactions", "forbidden")})
