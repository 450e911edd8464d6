"""docs/SPECS.md names every field, status and check type the code defines (doc drift guard)."""

import pathlib

from synthagent_jax.envs import rubric_schema
from synthagent_jax.envs.task import Task
from synthagent_jax.rollout.trajectory import STATUSES
from synthagent_jax.utils import metrics

SPECS = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "SPECS.md").read_text()


def _section(title: str) -> str:
  return SPECS.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_task_record_lists_every_key():
  for key in Task._KEYS:  # pylint: disable=protected-access
    assert f'"{key}"' in _section("Task record"), key


def test_check_format_lists_every_check_type_and_section():
  text = _section("Rubric and check format")
  for name in rubric_schema.CHECK_TYPES + rubric_schema.RUBRIC_SECTIONS:
    assert f'"{name}"' in text, name


def test_rollout_line_lists_every_field_and_status():
  text = _section("Rollout log line")
  for key in (*metrics.ROLLOUT_FIELDS, *metrics.VERDICT_FIELDS, *STATUSES):
    assert f'"{key}"' in text, key
