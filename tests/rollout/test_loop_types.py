"""Validation of the agent loop's data types: Trajectory fields and AgentLoopConfig values
(no loop run; the loop itself is tested in test_agent_loop.py)."""

import pytest

from synthagent_jax.rollout.agent_loop import AgentLoopConfig
from synthagent_jax.rollout.trajectory import Trajectory


def test_trajectory_validates():
  with pytest.raises(ValueError, match="status"):
    Trajectory("t", 0, [1], [1], [0.0], 0, [], [], "done")
  with pytest.raises(ValueError, match="same length"):
    Trajectory("t", 0, [1, 2], [1], [0.0], 0, [], [], "answered")
  with pytest.raises(ValueError, match="missing keys"):
    Trajectory.from_dict({"task_id": "t"})


@pytest.mark.parametrize("field,value", [("max_turns", 0), ("max_new_tokens", 0),
                                         ("max_total_tokens", -1), ("max_tool_response_tokens", 0),
                                         ("temperature", -1.0), ("top_p", 0.0)])
def test_config_validates(field, value):
  with pytest.raises(ValueError, match=field):
    AgentLoopConfig(**{field: value})


def test_config_from_mapping():
  ml_collections = pytest.importorskip("ml_collections")
  section = ml_collections.ConfigDict({"max_turns": 3, "max_new_tokens": 16, "top_k": 5})
  cfg = AgentLoopConfig.from_mapping(section, seed=7)
  assert (cfg.max_turns, cfg.max_new_tokens, cfg.top_k, cfg.seed) == (3, 16, 5, 7)
  with pytest.raises(ValueError, match="unknown keys \\['max_turn'\\]"):
    AgentLoopConfig.from_mapping({"max_turn": 3})
