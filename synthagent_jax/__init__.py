"""synthagent_jax: training small language models to be good agents (SynthAgent, in JAX).

Rooms (see ARCHITECTURE in the shared plan): models, parallel, inference, llm, envs,
rollout, rewards, synthesis, rl, evals, utils. Imports point up that table only.

Importing the package drops one console line of transformers: its import-time "PyTorch was not
found" advisory. We use transformers for tokenizers and HF configs only, which need no torch, so
the line would only be noise in every run's console; every other transformers message stays.
"""

import logging as _logging

__version__ = "0.1.0"


class _NoTorchAdvisory(_logging.Filter):
  """Drops the "PyTorch was not found..." record of the `transformers` logger."""

  def filter(self, record: _logging.LogRecord) -> bool:
    return not str(record.msg).startswith("PyTorch was not found")


_transformers_log = _logging.getLogger("transformers")
if not any(isinstance(f, _NoTorchAdvisory) for f in _transformers_log.filters):
  _transformers_log.addFilter(_NoTorchAdvisory())
