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
