import copy
import json

import pytest

from synthagent_jax.envs import task as task_lib
from tests.envs.fixtures import TASK_DICT, make_task, task_dict


def test_round_trip_is_exact():
  task = make_task()
  assert task.to_dict() == TASK_DICT
  assert task_lib.Task.from_dict(task.to_dict()) == task
  assert task.tool_names == ["get_order", "cancel_order", "find_user"]
  assert task.tool("cancel_order").kind == "write"
  assert "kind" not in task.openai_tools()[0]


def test_save_load_round_trip(tmp_path):
  tasks = [make_task(id=f"t{i}") for i in range(3)]
  path = tmp_path / "tasks.jsonl"
  assert task_lib.save_tasks(tasks, path) == 3
  loaded, errors = task_lib.load_tasks(path)
  assert errors == []
  assert loaded == tasks


def _bad(mutate):
  d = task_dict()
  mutate(d)
  return d


BAD_RECORDS = [
    (lambda d: d.pop("instruction"), "instruction", "missing"),
    (lambda d: d["tools"].append(copy.deepcopy(d["tools"][0])), "tools[3].function.name",
     "duplicate tool name"),
    (lambda d: d["tools"][1]["function"]["parameters"].update(type="array"),
     "tools[1].function.parameters.type", "object"),
    (lambda d: d["tools"][0]["function"]["parameters"]["properties"].update(
        order_id={"type": "no-such-type"}), "tools[0].function.parameters", "invalid JSON schema"),
    (lambda d: d["tools"][0].update(kind="delete"), "tools[0].kind", "must be one of"),
    (lambda d: d["rubric"]["subgoals"][0].update(weight=0), "rubric.subgoals[0].weight", "> 0"),
    (lambda d: d["rubric"]["subgoals"][1].pop("id"), "rubric.subgoals[1].id", "missing"),
    (lambda d: d["rubric"]["interactions"][1].update(id="s1"), "rubric.interactions[1].id",
     "duplicate"),
    (lambda d: d["rubric"]["forbidden"][0].update(check={"type": "regex", "name": "x"}),
     "rubric.forbidden[0].check.type", "unknown check type"),
    (lambda d: d["rubric"]["subgoals"][0]["check"].update(name="refund"),
     "rubric.subgoals[0].check.name", "unknown tool"),
    (lambda d: d["rubric"]["interactions"][0]["check"].update(slot="phone"),
     "rubric.interactions[0].check.slot", "not in user.private_info"),
    (lambda d: d["user"]["private_info"].update(email="  "), "user.private_info.email",
     "non-empty"),
    (lambda d: d["world"]["responses"][0].update(tool="nope"), "world.responses[0].tool",
     "unknown tool"),
    (lambda d: d["world"]["responses"][2].update(state_path="x"), "world.responses[2]",
     "exactly one"),
    (lambda d: d["world"]["responses"][2]["arguments"].update(phone="1"),
     "world.responses[2].arguments.phone", "not a parameter"),
    (lambda d: d["world"]["responses"][0].update(effects=[{"op": "set", "path": "a", "value": 1}]),
     "world.responses[0].effects", "read tool"),
    (lambda d: d["world"]["responses"][1]["effects"][0].update(op="exec"),
     "world.responses[1].effects[0].op", "must be one of"),
    (lambda d: d.update(reference=[{"role": "robot", "content": "hi"}]), "reference[0].role",
     "must be one of"),
    (lambda d: d.update(surprise=1), "surprise", "unknown field"),
    # Values a rollout cannot use (issue 19 item 8).
    (lambda d: d["rubric"]["subgoals"][0].update(weight=float("inf")), "rubric.subgoals[0].weight",
     "finite"),
    (lambda d: d.update(instruction="cancel \ud800 now"), "instruction", "cannot be encoded"),
    (lambda d: d["world"]["facts"].update(deep=json.loads("[" * 80 + "]" * 80)),
     "world.facts.deep" + "[0]" * 61, "nested deeper than 64"),  # 64 levels from the record
    # Tool schemas never reach the network and cannot hang a match (issue 19 item 6).
    (lambda d: d["tools"][0]["function"]["parameters"]["properties"].update(
        order_id={"$ref": "http://127.0.0.1:9/schema.json"}),
     "tools[0].function.parameters.properties.order_id.$ref", "only local references"),
    (lambda d: d["tools"][0]["function"]["parameters"].update(
        **{"$id": "https://example.com/s.json", "$defs": {"x": {"type": "string"}}}),
     "tools[0].function.parameters.$id", "rebase"),
    (lambda d: d["tools"][0]["function"]["parameters"]["properties"].update(
        order_id={"type": "string", "pattern": "^(a+)+$"}),
     "tools[0].function.parameters.properties.order_id.pattern", "repeats a repeated group"),
    (lambda d: d["tools"][0]["function"]["parameters"].update(
        patternProperties={"^(?:x\\d*)*(?:y*)*$": {"type": "string"}}),
     "tools[0].function.parameters.patternProperties.^(?:x\\d*)*(?:y*)*$", "repeats a repeated"),
    (lambda d: d["tools"][0]["function"]["parameters"]["properties"].update(
        order_id={"type": "string", "pattern": "(unclosed"}),
     "tools[0].function.parameters.properties.order_id.pattern", "not a valid regular expression"),
    (lambda d: d["tools"][0]["function"]["parameters"]["properties"].update(
        order_id={"type": "string", "pattern": "(?:" * 40 + "a" + ")" * 40}),
     "tools[0].function.parameters.properties.order_id.pattern", "nests groups deeper than 32"),
]


@pytest.mark.parametrize("mutate,field,msg", BAD_RECORDS)
def test_validation_names_the_field(mutate, field, msg):
  with pytest.raises(task_lib.TaskValidationError) as e:
    task_lib.Task.from_dict(_bad(mutate))
  assert e.value.field == field
  assert msg in e.value.message


def test_load_reports_file_line_field_and_skips_bad_records(tmp_path):
  good = json.dumps(task_dict(id="ok1"))
  lines = [
      good,
      "",  # blank lines are not records
      "{not json",
      json.dumps(_bad(lambda d: d["rubric"]["subgoals"][0].update(weight=-1))),
      json.dumps(task_dict(id="ok2")),
      good,  # duplicate id
  ]
  path = tmp_path / "mixed.jsonl"
  path.write_text("\n".join(lines) + "\n")
  tasks, errors = task_lib.load_tasks(path)
  assert [t.id for t in tasks] == ["ok1", "ok2"]
  assert len(errors) == 3
  rendered = [str(e) for e in errors]
  assert rendered[0].startswith(f"{path}:3: <json>: invalid JSON")
  assert rendered[1] == f"{path}:4: rubric.subgoals[0].weight: must be a number > 0, got -1"
  assert rendered[2] == f"{path}:6: id: duplicate task id 'ok1'"


def test_tasks_are_hashable_by_id():
  a, b = make_task(), make_task(id="other")
  assert len({a, make_task(), b}) == 2


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"a": {"$ref": "#/$defs/code"}},
     "$defs": {"code": {"type": "string", "pattern": "^[A-Z]{2}\\d{4}$"}}},
    {"type": "object", "properties": {"email": {"type": "string",
                                                "pattern": "^[\\w.]+@\\w+(\\.\\w+)+$"}}},
    {"type": "object", "properties": {"id": {"type": "string"}}, "enum": [{"$ref": "http://x"}]},
])
def test_safe_schemas_still_load(schema):
  d = task_dict()
  d["tools"][0]["function"]["parameters"] = schema
  d["world"]["responses"] = []
  task_lib.Task.from_dict(d)


def test_one_bad_line_of_any_kind_loses_only_that_line(tmp_path):
  """Each hostile line is a file:line error; the good lines around it are kept (issue 19, 8)."""
  good = [json.dumps(task_dict(id=f"ok{i}")).encode() for i in range(3)]
  weight_inf = json.dumps(task_dict(id="inf")).replace('"weight": 2.0', '"weight": Infinity', 1)
  assert "Infinity" in weight_inf
  bad = {
      "big integer": b'{"id": ' + b"7" * 5000 + b"}",
      "deep nesting": b"[" * 100_000 + b"]" * 100_000,
      "invalid utf-8": json.dumps(task_dict(id="bytes")).encode().replace(b"cancel", b"canc\xffel"),
      "infinite weight": weight_inf.encode(),
      "lone surrogate": json.dumps(task_dict(id="sur", instruction="x \ud800 y")).encode(),
      "nan": json.dumps(task_dict(id="nan")).replace('"weight": 2.0', '"weight": NaN').encode(),
  }
  lines = [good[0], *bad.values(), good[1], b"", good[2]]
  path = tmp_path / "hostile.jsonl"
  path.write_bytes(b"\n".join(lines) + b"\n")
  tasks, errors = task_lib.load_tasks(path)
  assert [t.id for t in tasks] == ["ok0", "ok1", "ok2"]
  assert [e.line for e in errors] == [2, 3, 4, 5, 6, 7]
  rendered = [str(e) for e in errors]
  assert all(r.startswith(f"{path}:{n}: ") for r, n in zip(rendered, range(2, 8)))
  assert "digits" in rendered[0]
  assert "nested too deeply" in rendered[1]
  assert "invalid UTF-8: byte 0xff" in rendered[2]
  assert "Infinity is not a JSON number" in rendered[3]
  assert rendered[4].startswith(f"{path}:6: instruction: string cannot be encoded")
  assert "NaN is not a JSON number" in rendered[5]
