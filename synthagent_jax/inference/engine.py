"""The `Engine` contract: token ids in, sampled token ids (+ logprobs) out; new weights in.

Every rollout backend satisfies it: the in-process JAX sampler (`inference/sampler.py`), the
SGLang HTTP engine (`inference/sglang.py`), and engines that hold no weights of their own
(replayed references, scripted test engines: their `update_weights` and `wait_ready` are no-ops).
Token-in/token-out: engines never see text. Everything a caller needs from an engine is here, so
no caller branches on which engine it has.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

FinishReason = Literal["stop", "length"]


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How to sample one batch of completions.

  Attributes:
    max_new_tokens: upper bound on sampled tokens per prompt.
    temperature: 0.0 means greedy (argmax); logprobs are then those of the untempered softmax.
    top_p: nucleus mass in (0, 1]; 1.0 disables.
    top_k: keep the k most likely tokens; 0 disables.
    stop_token_ids: sampling a token in this set ends that sequence (the token is kept in the
      completion, so a turn's end token is trained on).
    seed: PRNG seed; the same seed, prompts and params give the same samples.
  """

  max_new_tokens: int = 256
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  stop_token_ids: tuple[int, ...] = ()
  seed: int = 0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if self.temperature < 0:
      raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
    if self.top_k < 0:
      raise ValueError(f"SamplingParams.top_k must be >= 0, got {self.top_k}")
    object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))


@dataclasses.dataclass
class Completion:
  """One sampled continuation.

  Attributes:
    token_ids: sampled ids, in order; includes the stop token when finish_reason == "stop".
    logprobs: log-probability under the sampling policy of each sampled id (same length).
    finish_reason: "stop" (a stop token was sampled) or "length" (max_new_tokens reached).
  """

  token_ids: list[int]
  logprobs: list[float]
  finish_reason: FinishReason

  def __post_init__(self):
    if len(self.token_ids) != len(self.logprobs):
      raise ValueError(
          f"Completion has {len(self.token_ids)} token ids but {len(self.logprobs)} logprobs")


@runtime_checkable
class Engine(Protocol):
  """Anything that turns batches of prompt token ids into completions."""

  def generate(self, prompt_ids: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Completion]:
    """Returns one Completion per prompt, in prompt order."""
    ...

  def update_weights(self, weights: Any, step: int) -> dict[str, float]:
    """Samples from `weights` from now on: an nnx model or a `(graphdef, params)` pair (params may
    be sharded), the learner's after `step` updates. Returns what the update cost as metrics
    (e.g. perf/sync_bytes, perf/sync_s; {} when it costs nothing worth logging). With several
    JAX processes every process calls it (an export may be collective)."""
    ...

  def wait_ready(self) -> None:
    """Blocks until the engine can generate (e.g. its servers answer); raises if it never can."""
    ...
