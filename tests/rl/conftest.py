"""Shared learner fixture (see tests/rl/learner_toys.py)."""

import pytest

from tests.rl.learner_toys import get_env


@pytest.fixture(scope="session")
def learner_env():
  """get(shape=(1, 1, 1), cfg=DEFAULT_LEARNER) -> Env, built once per (shape, cfg)."""
  return get_env
