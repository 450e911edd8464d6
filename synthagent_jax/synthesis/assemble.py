"""Pipeline records -> Task dicts (provisional for solving, final after the rubric)."""

from __future__ import annotations


def provisional_rubric(rec: dict) -> dict:
  """Before the rubric stage: the workflow as unchecked subgoals (the schema needs one)."""
  return {"subgoals": [{"id": f"wf_{i}", "text": s, "weight": 1.0, "check": None}
                       for i, s in enumerate(rec["workflow"])],
          "interactions": [], "forbidden": []}


def task_dict(rec: dict, rubric: dict | None = None, reference: list | None = None,
              task_id: str | None = None) -> dict:
  """The Task schema dict of a pipeline record."""
  return {"id": task_id or rec["id"], "domain": rec["domain"], "instruction": rec["instruction"],
          "full_task": rec["full_task"], "tools": rec["tools"],
          "world": {"facts": rec["facts"], "state": {}, "responses": rec["responses"]},
          "user": {"persona": rec["persona"], "private_info": rec["private_info"],
                   "reason": rec.get("reason", "")},
          "rubric": rubric or provisional_rubric(rec), "reference": reference,
          "metadata": {"generator": "teacher", "seed_id": rec["id"],
                       "forbidden_rule": rec["forbidden"],
                       "distractors": rec.get("distractors", []),
                       "dropped_tools": rec.get("dropped_tools", [])}}
