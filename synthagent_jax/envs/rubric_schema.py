"""The rubric part of a Task record: items, their optional structured checks, and the three
sections. Parsed by `Task.from_dict` (envs/task.py); checks are evaluated in rewards/checks.py and
items aggregated into a reward in rewards/rubric.py.

Record shape::

    {"subgoals": [Item], "interactions": [Item], "forbidden": [Item]}   # >= 1 subgoal
    Item  = {"id": str (unique in the rubric), "text": str, "weight": float > 0 (default 1),
             "check": null | Check}
    Check = {"type": "tool_called", "name": tool, "arguments": {subset of the call's arguments}}
          | {"type": "tool_not_called", "name": tool}
          | {"type": "asked_user_for", "slot": private_info slot}
          | {"type": "answer_contains", "text": str}
          | {"type": "no_over_asking"} | {"type": "world_state"}

Rubric semantics: every item's verdict `met` means "the item holds". Subgoal and interaction
items state what the agent should do. A forbidden item's `text` names the forbidden behaviour
(e.g. "Looks the user up by email") and it is `met` when the agent AVOIDED it (respected the
prohibition); a forbidden item's `check`, if any, states that respected condition (typically
`tool_not_called`). `asked_user_for` uses the shared slot matcher in envs/slots.py.
"""

from __future__ import annotations

import dataclasses
import math

from synthagent_jax.envs.validate import check_keys, fail, join, nonempty_str, req

CHECK_TYPES = ("tool_called", "tool_not_called", "asked_user_for", "answer_contains",
               "no_over_asking", "world_state")
RUBRIC_SECTIONS = ("subgoals", "interactions", "forbidden")


@dataclasses.dataclass(frozen=True)
class Check:
  """A structured rubric check evaluated in code (see rewards/checks.py)."""

  type: str
  name: str | None = None       # tool_called, tool_not_called
  arguments: dict | None = None  # tool_called: subset of the call's arguments ({} = any call)
  slot: str | None = None        # asked_user_for
  text: str | None = None        # answer_contains

  _FIELDS = {"tool_called": ("name", "arguments"), "tool_not_called": ("name",),
             "asked_user_for": ("slot",), "answer_contains": ("text",),
             "no_over_asking": (), "world_state": ()}

  @classmethod
  def from_dict(cls, d: dict, where: str = "check") -> "Check":
    if not isinstance(d, dict):
      fail(where, f"expected an object or null, got {type(d).__name__}")
    typ = req(d, "type", str, where)
    if typ not in CHECK_TYPES:
      fail(join(where, "type"), f"unknown check type {typ!r} (known: {', '.join(CHECK_TYPES)})")
    check_keys(d, ("type",) + cls._FIELDS[typ], where)
    if not cls._FIELDS[typ]:
      return cls(type=typ)
    if typ in ("tool_called", "tool_not_called"):
      name = nonempty_str(d, "name", where)
      args = None
      if typ == "tool_called":
        args = d.get("arguments") or {}
        if not isinstance(args, dict):
          fail(join(where, "arguments"), f"expected an object, got {type(args).__name__}")
      return cls(type=typ, name=name, arguments=args)
    if typ == "asked_user_for":
      return cls(type=typ, slot=nonempty_str(d, "slot", where))
    return cls(type=typ, text=nonempty_str(d, "text", where))

  def to_dict(self) -> dict:
    out = {"type": self.type}
    for f in self._FIELDS[self.type]:
      out[f] = getattr(self, f)
    return out


@dataclasses.dataclass(frozen=True)
class RubricItem:
  id: str
  text: str
  weight: float = 1.0
  check: Check | None = None

  @classmethod
  def from_dict(cls, d: dict, where: str = "item") -> "RubricItem":
    check_keys(d, ("id", "text", "weight", "check"), where)
    item_id = nonempty_str(d, "id", where)
    text = nonempty_str(d, "text", where)
    weight = d.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
      fail(join(where, "weight"), f"must be a number > 0, got {weight!r}")
    if not math.isfinite(weight):
      fail(join(where, "weight"), f"must be finite (it scales a reward), got {weight!r}")
    check = d.get("check")
    check = None if check is None else Check.from_dict(check, join(where, "check"))
    return cls(id=item_id, text=text, weight=float(weight), check=check)

  def to_dict(self) -> dict:
    return {"id": self.id, "text": self.text, "weight": self.weight,
            "check": None if self.check is None else self.check.to_dict()}


@dataclasses.dataclass(frozen=True)
class Rubric:
  subgoals: tuple[RubricItem, ...] = ()
  interactions: tuple[RubricItem, ...] = ()
  forbidden: tuple[RubricItem, ...] = ()

  @classmethod
  def from_dict(cls, d: dict, where: str = "rubric") -> "Rubric":
    check_keys(d, RUBRIC_SECTIONS, where)
    sections = {}
    seen = set()
    for section in RUBRIC_SECTIONS:
      raw = d.get(section, [])
      if not isinstance(raw, list):
        fail(join(where, section), f"expected a list, got {type(raw).__name__}")
      items = []
      for i, item in enumerate(raw):
        iwhere = f"{where}.{section}[{i}]"
        if not isinstance(item, dict):
          fail(iwhere, f"expected an object, got {type(item).__name__}")
        parsed = RubricItem.from_dict(item, iwhere)
        if parsed.id in seen:
          fail(join(iwhere, "id"), f"duplicate rubric item id {parsed.id!r}")
        seen.add(parsed.id)
        items.append(parsed)
      sections[section] = tuple(items)
    if not sections["subgoals"]:
      fail(join(where, "subgoals"), "a rubric needs at least one subgoal")
    return cls(**sections)

  def items(self) -> list[tuple[str, RubricItem]]:
    """All items as (section, item), in section order."""
    return [(s, it) for s in RUBRIC_SECTIONS for it in getattr(self, s)]

  def to_dict(self) -> dict:
    return {s: [it.to_dict() for it in getattr(self, s)] for s in RUBRIC_SECTIONS}
