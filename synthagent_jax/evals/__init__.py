"""Evaluation: the in-training rubric harness (harness.py) and the outside benchmarks, one Suite
module each (suite.py holds the contract). Importing this package registers every suite whose
module is present: math_sets (math), bfcl (bfcl_multi_turn), tau2_airline (tau2_airline). Each
suite imports its benchmark package lazily, so a missing benchmark fails only when it is run."""

import importlib

_SUITE_MODULES = ("math_sets", "bfcl", "tau2_airline")

for _name in _SUITE_MODULES:
  try:
    importlib.import_module(f"{__name__}.{_name}")
  except ModuleNotFoundError as _e:
    if _e.name != f"{__name__}.{_name}":  # only a module not written yet is skipped
      raise
